//! Two cairn processes at the same moment (issue 7, items 1-5): a backup beside forget
//! and prune, a backup that waits for an exclusive lock, a backup whose lock went stale
//! while it was stopped, and many backups at once. Real processes, real timing; each
//! test asserts what must hold however the race turns out.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::backend::{FileType, LocalBackend};
use cairn::repo::lock::LockKind;
use cairn::Repository;

use crate::common::*;

fn open_lib(env: &Env) -> Repository {
    Repository::open(
        Arc::new(LocalBackend::new(env.repo.clone())),
        PASSWORD.as_bytes(),
    )
    .unwrap()
}

/// Lock files of the repository (names starting with a dot are writes in progress).
fn lock_count(env: &Env) -> usize {
    std::fs::read_dir(env.repo.join("locks"))
        .unwrap()
        .filter(|e| {
            !e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')
        })
        .count()
}

fn snapshot_count(env: &Env) -> usize {
    std::fs::read_dir(env.repo.join("snapshots"))
        .unwrap()
        .count()
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `backup --stdin` whose standard input the test writes when it chooses.
fn stdin_backup(env: &Env, extra_env: &[(&str, &str)]) -> Child {
    let mut c = env.cmd();
    for (k, v) in extra_env {
        c.env(k, v);
    }
    c.args(["backup", "--stdin", "--stdin-filename", "data"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(mut child: Child, data: &[u8]) -> std::process::Output {
    {
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(data);
    }
    child.wait_with_output().unwrap()
}

fn assert_restores(env: &Env, snap: &str, data: &[u8]) {
    let t = env.path(&format!("restore-{snap}"));
    env.restore(snap, &t, &[]);
    assert!(
        std::fs::read(t.join("data")).unwrap() == data,
        "restored bytes differ"
    );
}

/// Item 1: a backup that dedups against a pack, beside `forget` + `prune` + a prune
/// long past the grace period. Either the backup's snapshot is whole, or it fails
/// loudly; here it must succeed (its lock predates the mark, so the pack stays).
#[test]
fn a_backup_outliving_the_grace_period_keeps_the_data_it_relied_on() {
    let env = Env::new();
    env.init();
    let data = random_bytes(3 << 20, 7);
    let first = finish(stdin_backup(&env, &[]), &data);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    // The second backup loads the index (the first backup's pack is live) and waits
    // for its input.
    let child = stdin_backup(&env, &[]);
    wait_for("the backup's shared lock", || lock_count(&env) > 0);
    std::thread::sleep(Duration::from_millis(500));
    env.ok(["forget", "latest"]);
    env.ok(["prune"]);
    let later = (chrono::Utc::now().timestamp() + 25 * 3600).to_string();
    let out = env
        .cmd()
        .env("CAIRN_PRUNE_NOW", &later)
        .args(["--json", "prune"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = finish(child, &data);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    env.ok(["check", "--read-data"]);
    assert_restores(&env, "latest", &data);
    // With the backup gone, the old pack goes.
    env.ok(["prune"]);
    env.ok(["check", "--read-data"]);
    assert_restores(&env, "latest", &data);
}

/// Item 2: packs no index lists are adopted only while no one else holds a lock.
#[test]
fn unindexed_packs_are_adopted_only_under_an_exclusive_lock() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), random_bytes(2 << 20, 3)).unwrap();
    env.backup([&src]);
    // As if the backup had been killed before writing its index and snapshot.
    let drop_metadata = || {
        for d in ["index", "snapshots"] {
            for f in std::fs::read_dir(env.repo.join(d)).unwrap() {
                std::fs::remove_file(f.unwrap().path()).unwrap();
            }
        }
    };
    drop_metadata();
    // A prune holds its lock (it may be about to delete such packs): no adoption.
    let repo = open_lib(&env);
    let prune_lock = repo.lock(LockKind::Prune).unwrap();
    let out = env.ok(["--json", "backup", src.to_str().unwrap()]);
    assert!(
        summary_line(&out)["data_blobs"].as_u64().unwrap() > 0,
        "{out}"
    );
    drop(prune_lock);
    // Idle: the next backup adopts what an interrupted one left and stores nothing.
    drop_metadata();
    let out = env.ok(["--json", "backup", src.to_str().unwrap()]);
    // (A directory's tree may differ: its atime moved when the first backup read it.)
    assert_eq!(summary_line(&out)["data_blobs"], 0, "{out}");
    env.ok(["check", "--read-data"]);
}

/// Item 3: a backup that meets an exclusive lock waits for it, and reads the index only
/// once it holds its own lock, so it never deduplicates against packs deleted meanwhile.
#[test]
fn a_waiting_backup_reads_the_index_after_the_exclusive_lock_is_gone() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let content = random_bytes(2 << 20, 11);
    std::fs::write(src.join("f"), &content).unwrap();
    env.backup([&src]);
    let mut repo = open_lib(&env);
    let exclusive = repo.lock(LockKind::Exclusive).unwrap();
    let mut child = env
        .cmd()
        .env("CAIRN_RETRY_LOCK", "2m")
        .args(["backup", src.to_str().unwrap()])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.contains("waiting"), "{line}");
    // Under the exclusive lock: forget everything and delete the data at once.
    for (name, _) in repo.backend().list(FileType::Snapshot).unwrap() {
        repo.backend().delete(FileType::Snapshot, &name).unwrap();
    }
    let r = cairn::prune::prune(
        &mut repo,
        &cairn::prune::PruneOptions {
            max_unused: 5.0,
            dry_run: false,
            instant_delete: true,
            delete_when_idle: false,
            grace: Duration::ZERO,
            now: chrono::Utc::now().timestamp(),
        },
    )
    .unwrap();
    assert!(r.packs_deleted > 0);
    drop(exclusive);
    let status = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    assert!(status.success(), "{rest}");
    env.ok(["check", "--read-data"]);
    let t = env.path("t");
    env.restore("latest", &t, &[]);
    assert!(std::fs::read(t.join(src.strip_prefix("/").unwrap()).join("f")).unwrap() == content);
}

const STALE: &str = "6";

/// Item 4: a backup stopped (suspended) past the stale window has lost its lock; it
/// must not write a snapshot when it wakes, whatever happened meanwhile.
#[test]
fn a_backup_whose_lock_went_stale_writes_no_snapshot() {
    let env = Env::new();
    env.init();
    let data = random_bytes(1 << 20, 5);
    let first = finish(
        stdin_backup(&env, &[("CAIRN_LOCK_STALE_SECS", STALE)]),
        &data,
    );
    assert!(first.status.success());
    for removed_by in ["unlock", "prune"] {
        let before = snapshot_count(&env);
        let child = stdin_backup(&env, &[("CAIRN_LOCK_STALE_SECS", STALE)]);
        wait_for("the backup's shared lock", || lock_count(&env) > 0);
        std::thread::sleep(Duration::from_millis(300));
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
        std::thread::sleep(Duration::from_secs(9));
        let other = |args: &[&str]| {
            let out = env
                .cmd()
                .env("CAIRN_LOCK_STALE_SECS", STALE)
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        };
        if removed_by == "unlock" {
            other(&["unlock"]);
        } else {
            // Its lock looks stale: prune finds the repository idle and deletes what
            // the forgotten snapshots used, which the stopped backup relies on.
            for (name, _) in open_lib(&env).backend().list(FileType::Snapshot).unwrap() {
                std::fs::remove_file(env.repo.join("snapshots").join(name)).unwrap();
            }
            other(&["prune"]);
        }
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
        let out = finish(child, &data);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(code(&out), 11, "{removed_by}: {err}");
        assert!(err.contains("lost the repository lock"), "{err}");
        assert!(
            snapshot_count(&env) <= before,
            "{removed_by}: a snapshot was written"
        );
        env.ok(["check", "--read-data"]);
        if snapshot_count(&env) == 0 {
            // Start the next round with a snapshot to rely on again.
            let again = finish(stdin_backup(&env, &[]), &data);
            assert!(again.status.success());
        }
    }
}

/// Item 5: many backups into one repository at once, four at a time: every one
/// succeeds, however their temporary files and listings interleave.
#[test]
fn many_parallel_backups_all_succeed() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..20 {
        std::fs::write(src.join(format!("f{i}")), random_bytes(20_000, i)).unwrap();
    }
    let mut done = 0;
    for round in 0..15 {
        let children: Vec<Child> = (0..4)
            .map(|k| {
                env.cmd()
                    .args(["-q", "backup", "--host", &format!("host{k}")])
                    .arg(&src)
                    .args(["--time", &format!("2026-01-{:02} 10:00:0{k}", round + 1)])
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            done += 1;
        }
    }
    assert_eq!(snapshot_count(&env), done);
    env.ok(["check", "--read-data"]);
}
