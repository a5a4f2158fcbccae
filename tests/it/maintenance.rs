//! forget, prune, check, repair index: the commands cron runs unattended.

use std::fs;
use std::sync::Arc;

use cairn::backend::LocalBackend;
use cairn::repo::lock::{LockGuard, LockKind};
use cairn::Repository;

use crate::common::*;

/// Another client using the repository: a shared lock held by this test process, as a
/// running backup holds one.
fn busy(env: &Env) -> LockGuard {
    let repo = Repository::open(
        Arc::new(LocalBackend::new(env.repo.clone())),
        PASSWORD.as_bytes(),
    )
    .unwrap();
    repo.lock(LockKind::Shared).unwrap()
}

fn prune_at(env: &Env, now: i64, args: &[&str]) -> serde_json::Value {
    let out = env
        .cmd()
        .env("CAIRN_PRUNE_NOW", now.to_string())
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Three daily snapshots, for tests that need some history to forget.
const THREE_DAYS: &[&str] = &[
    "2026-01-01 10:00:00Z",
    "2026-01-02 10:00:00Z",
    "2026-01-03 10:00:00Z",
];

fn json(env: &Env, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&env.ok(&all)).unwrap()
}

fn snapshot_ids(env: &Env) -> Vec<String> {
    json(env, &["snapshots"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// Backs up `src` at the given times (one changed file each time); returns the ids.
fn history(env: &Env, times: &[&str], host: &str) -> Vec<String> {
    let src = env.path(&format!("src-{host}"));
    fs::create_dir_all(&src).unwrap();
    times
        .iter()
        .enumerate()
        .map(|(i, t)| {
            fs::write(src.join("v"), format!("{host} {i} {}", "x".repeat(i * 100))).unwrap();
            // One large file whose content changes each time: old versions die with
            // their snapshots.
            fs::write(src.join("blob"), random_bytes(300_000, i as u64 + 100)).unwrap();
            env.backup(["--time", t, "--host", host, src.to_str().unwrap()])
        })
        .collect()
}

#[test]
fn forget_keeps_exactly_the_policy_set_per_group() {
    let env = Env::new();
    env.init();
    let a = history(
        &env,
        &[
            "2026-01-01 10:00:00Z",
            "2026-01-01 11:00:00Z",
            "2026-01-02 10:00:00Z",
            "2026-01-09 10:00:00Z",
            "2026-02-15 10:00:00Z",
        ],
        "alpha",
    );
    let b = history(
        &env,
        &["2026-01-01 09:00:00Z", "2026-01-03 09:00:00Z"],
        "beta",
    );
    // Dry run: the plan, as JSON, removes nothing.
    let plan = json(
        &env,
        &[
            "forget",
            "--keep-daily",
            "2",
            "--keep-monthly",
            "2",
            "--dry-run",
        ],
    );
    assert_eq!(
        plan.as_array().unwrap().len(),
        2,
        "one group per host: {plan}"
    );
    assert_eq!(snapshot_ids(&env).len(), 7);
    env.ok(["forget", "--keep-daily", "2", "--keep-monthly", "2"]);
    let mut left = snapshot_ids(&env);
    left.sort();
    // alpha: daily keeps 02-15 and 01-09; monthly keeps 02-15 (Feb) and 01-09 (Jan).
    // beta: daily keeps both.
    let mut want = vec![a[3].clone(), a[4].clone(), b[0].clone(), b[1].clone()];
    want.sort();
    assert_eq!(left, want);
    let group = plan
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["host"] == "alpha")
        .unwrap();
    assert_eq!(group["keep"].as_array().unwrap().len(), 2);
    assert_eq!(group["remove"].as_array().unwrap().len(), 3);
    assert!(group["reasons"][0]["matches"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m == "daily snapshot"));
}

#[test]
fn forget_refuses_an_empty_policy() {
    let env = Env::new();
    env.init();
    history(&env, &["2026-01-01 10:00:00Z"], "h");
    let out = env.run(["forget"]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("empty policy"), "{}", stderr(&out));
    assert_eq!(snapshot_ids(&env).len(), 1);
}

#[test]
fn prune_on_an_idle_repository_frees_space_at_once() {
    let env = Env::new();
    env.init();
    history(&env, THREE_DAYS, "h");
    let before = env.repo_size();
    let out = json(&env, &["forget", "--keep-last", "1", "--prune"]);
    assert_eq!(out["prune"]["mode"], "idle", "{out}");
    assert!(out["prune"]["packs_deleted"].as_u64().unwrap() > 0, "{out}");
    assert_eq!(out["prune"]["packs_marked"], 0, "{out}");
    assert!(
        env.repo_size() < before * 2 / 3,
        "{} vs {before}",
        env.repo_size()
    );
    // Nothing is left marked, and no lock is left behind.
    let again = json(&env, &["prune"]);
    assert_eq!(again["packs_deleted"], 0, "{again}");
    assert_eq!(again["packs_still_waiting"], 0, "{again}");
    assert_eq!(fs::read_dir(env.repo.join("locks")).unwrap().count(), 0);
    env.ok(["check", "--read-data"]);
    let t = env.path("t");
    env.restore("latest", &t, &[]);
    let src = env.path("src-h");
    assert_same_tree(&src, &t.join(src.strip_prefix("/").unwrap()));
}

#[test]
fn prune_beside_another_client_marks_then_deletes_after_the_grace_period() {
    let env = Env::new();
    env.init();
    history(&env, THREE_DAYS, "h");
    let before = env.repo_size();
    let now = chrono::Utc::now().timestamp();
    let lock = busy(&env);
    // Marked two days "ago" (by prune's clock), while another client is active.
    let out = prune_at(
        &env,
        now - 48 * 3600,
        &["forget", "--keep-last", "1", "--prune"],
    );
    assert_eq!(out["prune"]["mode"], "busy", "{out}");
    assert!(out["prune"]["busy_because"]
        .as_str()
        .unwrap()
        .contains("shared lock"));
    assert!(out["prune"]["packs_marked"].as_u64().unwrap() > 0, "{out}");
    assert_eq!(
        out["prune"]["packs_deleted"], 0,
        "two-phase: nothing deleted yet"
    );
    // Within the grace period a second prune deletes nothing either.
    let again = prune_at(&env, now - 47 * 3600, &["prune"]);
    assert_eq!(again["packs_deleted"], 0);
    assert!(again["packs_still_waiting"].as_u64().unwrap() > 0);
    // After it, the marked packs go, though the repository is still busy: that client
    // took its lock after the mark, so it saw the mark and relies on none of them.
    let r = prune_at(&env, now, &["prune"]);
    assert_eq!(r["mode"], "busy", "{r}");
    assert!(r["packs_deleted"].as_u64().unwrap() > 0, "{r}");
    drop(lock);
    assert!(
        env.repo_size() < before * 2 / 3,
        "{} vs {before}",
        env.repo_size()
    );
    env.ok(["check", "--read-data"]);
    let t = env.path("t");
    env.restore("latest", &t, &[]);
    let src = env.path("src-h");
    assert_same_tree(&src, &t.join(src.strip_prefix("/").unwrap()));
}

#[test]
fn a_marked_pack_is_kept_while_a_client_older_than_the_mark_holds_its_lock() {
    let env = Env::new();
    env.init();
    history(&env, THREE_DAYS, "h");
    let lock = busy(&env);
    let out = json(&env, &["forget", "--keep-last", "1", "--prune"]);
    assert!(out["prune"]["packs_marked"].as_u64().unwrap() > 0, "{out}");
    // Long past the grace period: the old client may still rely on the marked packs.
    let later = chrono::Utc::now().timestamp() + 100 * 3600;
    let r = prune_at(&env, later, &["prune"]);
    assert_eq!(r["packs_deleted"], 0, "{r}");
    assert!(r["packs_held_by_locks"].as_u64().unwrap() > 0, "{r}");
    // Once it is gone, the repository is idle and they go at once.
    drop(lock);
    let r = prune_at(&env, later, &["prune"]);
    assert_eq!(r["mode"], "idle", "{r}");
    assert!(r["packs_deleted"].as_u64().unwrap() > 0, "{r}");
    env.ok(["check", "--read-data"]);
}

#[test]
fn prune_dry_run_and_instant_delete() {
    let env = Env::new();
    env.init();
    history(&env, &["2026-01-01 10:00:00Z", "2026-01-02 10:00:00Z"], "h");
    env.ok(["forget", "--keep-last", "1"]);
    let before = env.repo_size();
    let dry = json(&env, &["prune", "--dry-run", "--instant-delete"]);
    assert!(dry["packs_deleted"].as_u64().unwrap() > 0);
    assert_eq!(env.repo_size(), before, "dry run changed the repository");
    let done = json(&env, &["prune", "--instant-delete"]);
    assert_eq!(done["packs_deleted"], dry["packs_deleted"]);
    assert!(env.repo_size() < before);
    env.ok(["check", "--read-data"]);
}

#[test]
fn a_marked_pack_that_a_snapshot_needs_again_is_restored_not_deleted() {
    let env = Env::new();
    env.init();
    let ids = history(&env, &["2026-01-01 10:00:00Z", "2026-01-02 10:00:00Z"], "h");
    // Keep a copy of the first snapshot's file: a backup running during prune that
    // relied on the blobs prune marked would write just such a snapshot later.
    let snap_file = env.repo.join("snapshots").join(&ids[0]);
    let saved = fs::read(&snap_file).unwrap();
    env.ok(["forget", ids[0].as_str()]);
    let _busy = busy(&env);
    let r = json(&env, &["prune"]);
    assert!(r["packs_marked"].as_u64().unwrap() > 0);
    fs::write(&snap_file, saved).unwrap();
    let later = (chrono::Utc::now().timestamp() + 48 * 3600).to_string();
    let out = env
        .cmd()
        .env("CAIRN_PRUNE_NOW", &later)
        .args(["--json", "prune"])
        .output()
        .unwrap();
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["packs_resurrected"].as_u64().unwrap() > 0, "{r}");
    env.ok(["check", "--read-data"]);
    let t = env.path("t");
    env.restore(&ids[0], &t, &[]);
    let v = fs::read_to_string(
        t.join(env.path("src-h").strip_prefix("/").unwrap())
            .join("v"),
    )
    .unwrap();
    assert_eq!(v, "h 0 ");
}

#[test]
fn check_finds_damage_names_the_pack_and_what_it_affects() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("precious"), random_bytes(400_000, 1)).unwrap();
    let id = env.backup([&src]);
    env.ok(["check", "--read-data"]);
    // Damage the data pack (the one that is not a tree pack: the largest).
    let pack = walk(&env.repo.join("data"))
        .into_iter()
        .filter(|p| p.is_file())
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let mut b = fs::read(&pack).unwrap();
    b[1000] ^= 0x40;
    fs::write(&pack, b).unwrap();
    env.ok(["check"]); // structure alone cannot see it
    let out = env.run(["check", "--read-data"]);
    assert_eq!(code(&out), 13, "{}", stderr(&out));
    let err = stderr(&out);
    let name = pack.file_name().unwrap().to_str().unwrap();
    assert!(err.contains(name), "{err}");
    assert!(
        err.contains(&format!("{}:{}/precious", &id[..8], src.display())),
        "{err}"
    );
    // A missing pack is found without reading data.
    fs::remove_file(&pack).unwrap();
    let out = env.run(["check"]);
    assert_eq!(code(&out), 13);
    assert!(stderr(&out).contains("missing"), "{}", stderr(&out));
}

#[test]
fn read_data_subsets_cover_every_pack_once() {
    let env = Env::new();
    env.init();
    history(&env, THREE_DAYS, "h");
    let all = json(&env, &["check", "--read-data"])["packs_read"]
        .as_u64()
        .unwrap();
    let mut sum = 0;
    for part in ["1/3", "2/3", "3/3"] {
        sum += json(&env, &["check", "--read-data-subset", part])["packs_read"]
            .as_u64()
            .unwrap();
    }
    assert_eq!(sum, all);
    let none = json(&env, &["check", "--read-data-subset", "0%"])["packs_read"]
        .as_u64()
        .unwrap();
    assert_eq!(none, 0);
    assert_eq!(code(&env.run(["check", "--read-data-subset", "4/3"])), 1);
}

#[test]
fn repair_index_rebuilds_a_lost_index() {
    let env = Env::new();
    env.init();
    history(&env, &["2026-01-01 10:00:00Z", "2026-01-02 10:00:00Z"], "h");
    for f in fs::read_dir(env.repo.join("index")).unwrap() {
        fs::remove_file(f.unwrap().path()).unwrap();
    }
    let out = env.run(["check"]);
    assert_eq!(code(&out), 13, "{}", stderr(&out));
    env.ok(["repair", "index"]);
    env.ok(["check", "--read-data"]);
    let t = env.path("t");
    env.restore("latest", &t, &[]);
    let src = env.path("src-h");
    assert_same_tree(&src, &t.join(src.strip_prefix("/").unwrap()));
}

/// Issue 7, item 15: `--grace-hours 3000000000000000` once wrapped to a negative grace
/// period and deleted at once. Every numeric option of prune and locking is checked.
#[test]
fn out_of_range_numbers_are_refused_and_change_nothing() {
    let env = Env::new();
    env.init();
    history(&env, THREE_DAYS, "h");
    env.ok(["forget", "--keep-last", "1"]);
    let _busy = busy(&env);
    let before = env.repo_size();
    for args in [
        &["prune", "--grace-hours", "3000000000000000"][..],
        &["prune", "--grace-hours=-1"][..],
        &["prune", "--grace-hours", "87601"][..],
        &["prune", "--max-unused", "101"][..],
        &["prune", "--max-unused", "nan"][..],
        &["--retry-lock", "8d", "prune"][..],
        &["--retry-lock", "5x", "snapshots"][..],
    ] {
        let out = env.run(args);
        assert_eq!(code(&out), 1, "{args:?}: {}", stderr(&out));
        assert_eq!(
            stderr(&out).lines().count(),
            1,
            "{args:?}: {}",
            stderr(&out)
        );
        assert_eq!(env.repo_size(), before, "{args:?} changed the repository");
    }
    // In range, beside another client: marks, deletes nothing.
    let r = json(&env, &["prune", "--grace-hours", "87600"]);
    assert_eq!(r["packs_deleted"], 0, "{r}");
}

/// `check --read-data` streams each pack a blob at a time (it never holds a local data
/// pack whole): an index that lies about a blob's place is still caught, whether the
/// entry overlaps the blob before it, is shifted onto the next one (which is then read
/// again on its own), or reaches into the pack's header (then read on its own), and
/// only the lied-about blob is reported.
#[test]
fn streamed_check_catches_index_entries_that_overlap_or_reach_into_the_header() {
    use cairn::repo::index::IndexFile;
    for lie in ["overlap", "shifted onto the next", "into header"] {
        let env = Env::new();
        env.init();
        let src = env.path("src");
        fs::create_dir_all(&src).unwrap();
        for i in 0..3 {
            fs::write(src.join(format!("f{i}")), random_bytes(300_000, i)).unwrap();
        }
        env.backup([&src]);
        env.ok(["check", "--read-data"]);
        let backend = Arc::new(LocalBackend::new(env.repo.clone()));
        let mut repo = Repository::open(backend.clone(), PASSWORD.as_bytes()).unwrap();
        let (names, files) = repo.read_index_files().unwrap();
        let mut packs: Vec<_> = files.into_iter().flat_map(|f| f.packs).collect();
        // The data pack: the one with the most blobs.
        let data = packs
            .iter_mut()
            .max_by_key(|p| p.blobs.len())
            .expect("a data pack");
        assert!(data.blobs.len() >= 3, "{}", data.blobs.len());
        data.blobs.sort_by_key(|b| b.offset);
        match lie {
            "overlap" => data.blobs[1].offset -= 1,
            "shifted onto the next" => data.blobs[1].offset += 1,
            _ => data.blobs.last_mut().unwrap().length += 8,
        }
        let pack_name = data.id.to_hex();
        for n in &names {
            fs::remove_file(env.repo.join("index").join(n)).unwrap();
        }
        repo.save_index(IndexFile { packs }).unwrap();
        drop(repo);
        let out = env.run(["--no-cache", "check", "--read-data"]);
        assert_eq!(code(&out), 13, "{lie}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(&pack_name), "{lie}: {err}");
        assert!(
            err.contains("1 of ") && err.contains("blobs fail verification"),
            "{lie}: only the one entry is wrong: {err}"
        );
        assert!(!err.contains("does not match its name"), "{lie}: {err}");
        assert!(!err.contains("header"), "{lie}: the header is sound: {err}");
    }
}

/// The subtree id of directory `dir` and the content ids of file `file`, both entries of
/// the tree at `at` (`SNAP:/path`) of the latest snapshot.
fn entry_ids(env: &Env, at: &str, dir: &str, file: &str) -> (String, Vec<String>) {
    let tree = json(env, &["cat", "tree", at]);
    let node = |name: &str| {
        tree["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {tree}"))
    };
    let subtree = node(dir)["subtree"].as_str().unwrap().to_string();
    let content = match file {
        "" => Vec::new(),
        f => node(f)["content"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect(),
    };
    (subtree, content)
}

/// A file whose bytes are exactly a directory's tree has that tree's id (ids are the
/// keyed hash of the plaintext, whatever its type). Prune once took the file's content
/// for the tree already walked and skipped the directory: everything under it was
/// deleted. The walk now remembers trees apart from the blobs it marks used.
#[test]
fn prune_keeps_a_directory_whose_tree_has_the_bytes_of_a_file() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("d/e")).unwrap();
    fs::write(src.join("d/keep"), b"precious bytes, only here").unwrap();
    fs::write(src.join("d/e/deeper"), random_bytes(300_000, 7)).unwrap();
    // Twice: the first backup's reads may move the files' access times.
    env.backup([&src]);
    env.backup([&src]);
    let at = format!("latest:{}", src.display());
    let (tree, _) = entry_ids(&env, &at, "d", "");
    let bytes = env.cmd().args(["cat", "blob", &tree]).output().unwrap();
    assert!(bytes.status.success(), "{}", stderr(&bytes));
    fs::write(src.join("twin"), &bytes.stdout).unwrap();
    env.backup([&src]);
    // The setup holds: d's tree is unchanged and twin's only blob has its id.
    let (tree_now, twin) = entry_ids(&env, &at, "d", "twin");
    assert_eq!(tree_now, tree, "d's tree changed between backups");
    assert_eq!(twin, vec![tree.clone()], "twin is not the tree's twin");

    json(&env, &["forget", "--keep-last", "1", "--prune"]);
    env.ok(["check", "--read-data"]);
    let t = env.path("t");
    env.restore("latest", &t, &[]);
    assert_same_tree(&src, &t.join(src.strip_prefix("/").unwrap()));
}
