//! `cairn copy` between two local repositories, and `init --copy-chunker-params`.
//! The target is the environment's repository; the source sits beside it with its own
//! password, handed to the child as CAIRN_FROM_PASSWORD.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use crate::common::*;

const SOURCE_PASSWORD: &str = "the source's own password";

struct Pair {
    env: Env,
    source: PathBuf,
}

impl Pair {
    /// A target repository (plain `init`) and a source repository, both empty.
    fn new() -> Pair {
        let p = Pair::uninit();
        p.env.init();
        p.at_source(["init"]);
        p
    }

    /// Neither repository exists yet.
    fn uninit() -> Pair {
        let env = Env::new();
        let source = env.path("source-repo");
        Pair { env, source }
    }

    fn source_run<I: IntoIterator<Item = S>, S: Into<OsString>>(&self, args: I) -> Output {
        self.env
            .bare()
            .env("CAIRN_PASSWORD", SOURCE_PASSWORD)
            .arg("-r")
            .arg(&self.source)
            .args(args.into_iter().map(Into::into))
            .output()
            .unwrap()
    }

    /// `cairn -r SOURCE args…`, which must succeed; returns stdout.
    fn at_source<I: IntoIterator<Item = S>, S: Into<OsString>>(&self, args: I) -> String {
        let out = self.source_run(args);
        assert_eq!(code(&out), 0, "source command failed: {}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    }

    fn backup_source(&self, args: &[&str]) -> String {
        let mut all = vec!["--json", "backup"];
        all.extend_from_slice(args);
        summary_line(&self.at_source(all))["snapshot_id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// `cairn -r TARGET [--json] copy --from-repo SOURCE args…` with the source password
    /// in the environment.
    fn copy_run(&self, args: &[&str]) -> Output {
        self.env
            .cmd()
            .env("CAIRN_FROM_PASSWORD", SOURCE_PASSWORD)
            .args(["--json", "copy", "--from-repo"])
            .arg(&self.source)
            .args(args)
            .output()
            .unwrap()
    }

    /// A copy that must succeed; its JSON result.
    fn copy(&self, args: &[&str]) -> Value {
        let out = self.copy_run(args);
        assert_eq!(code(&out), 0, "copy failed: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn source_snapshots(&self) -> Vec<Value> {
        json_list(&self.at_source(["--json", "snapshots"]))
    }

    fn target_snapshots(&self) -> Vec<Value> {
        json_list(&self.env.ok(["--json", "snapshots"]))
    }
}

fn json_list(s: &str) -> Vec<Value> {
    serde_json::from_str::<Value>(s)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// Files under `repo/DIR` (packs: every `data/xx/`).
fn count_files(repo: &Path, dir: &str) -> usize {
    walk(&repo.join(dir))
        .iter()
        .filter(|p| p.symlink_metadata().unwrap().is_file())
        .count()
}

/// Every file of a repository with its size, locks included.
fn listing(repo: &Path) -> Vec<(PathBuf, u64)> {
    walk(repo)
        .into_iter()
        .filter(|p| p.symlink_metadata().unwrap().is_file())
        .map(|p| {
            let len = p.symlink_metadata().unwrap().len();
            (p, len)
        })
        .collect()
}

/// A small tree: files of a few sizes (some several chunks long), a directory, a
/// symlink, an empty file and a hard link.
fn make_source(dir: &Path, seed: u64) {
    fs::create_dir_all(dir.join("sub/deeper")).unwrap();
    fs::write(dir.join("small"), b"hello").unwrap();
    fs::write(dir.join("empty"), b"").unwrap();
    fs::write(dir.join("sub/medium"), random_bytes(200_000, seed)).unwrap();
    fs::write(
        dir.join("sub/deeper/big"),
        random_bytes(3_000_000, seed + 1),
    )
    .unwrap();
    let text: Vec<u8> = (0..400_000u32)
        .flat_map(|i| format!("line {i}\n").into_bytes())
        .collect();
    fs::write(dir.join("text"), text).unwrap();
    std::os::unix::fs::symlink("sub/medium", dir.join("link")).unwrap();
    fs::hard_link(dir.join("small"), dir.join("sub/small-again")).unwrap();
}

/// Restores `id` from the source and `copy` from the target and compares the trees.
fn assert_same_restore(p: &Pair, id: &str, copy: &str, what: &str) {
    let a = p.env.path(&format!("restore-source-{what}"));
    let b = p.env.path(&format!("restore-target-{what}"));
    p.at_source(["restore", id, "--target", a.to_str().unwrap()]);
    p.env.restore(copy, &b, &[]);
    assert_same_tree(&a, &b);
    fs::remove_dir_all(&a).unwrap();
    fs::remove_dir_all(&b).unwrap();
}

/// The target snapshot that is a copy of source snapshot `id`.
fn copy_of<'a>(target: &'a [Value], id: &str) -> &'a Value {
    target
        .iter()
        .find(|t| t["original"]["snapshot"] == id)
        .unwrap_or_else(|| panic!("no copy of {id} in {target:?}"))
}

#[test]
fn copy_between_repositories_that_chunk_differently_restores_identically() {
    let p = Pair::new();
    let src = p.env.path("src");
    make_source(&src, 1);
    let s = src.to_str().unwrap();
    p.backup_source(&[s, "--tag", "one", "--host", "alpha"]);
    fs::write(src.join("sub/medium"), random_bytes(250_000, 7)).unwrap();
    fs::write(src.join("added"), random_bytes(900_000, 8)).unwrap();
    p.backup_source(&[s, "--tag", "two,extra", "--host", "alpha"]);
    p.backup_source(&[s, "--host", "beta", "--time", "2024-02-03 04:05:06.789"]);

    let r = p.copy(&[]);
    assert_eq!(r["mode"], "rechunk", "{r}");
    assert_eq!(r["snapshots_copied"], 3, "{r}");
    assert_eq!(r["snapshots_skipped"], 0, "{r}");
    assert!(r["data_blobs_copied"].as_u64().unwrap() > 3, "{r}");
    assert!(r["source_bytes_read"].as_u64().unwrap() > 3_000_000, "{r}");
    let out = p.env.run(["check", "--read-data"]);
    assert_eq!(code(&out), 0, "check: {}", stderr(&out));

    let sources = p.source_snapshots();
    let targets = p.target_snapshots();
    assert_eq!(targets.len(), 3);
    let source_repo = r["source_repository"].as_str().unwrap();
    for s in &sources {
        let id = s["id"].as_str().unwrap();
        let t = copy_of(&targets, id);
        assert_eq!(t["original"]["repository"], source_repo);
        for field in [
            "time", "hostname", "username", "tags", "paths", "uid", "gid",
        ] {
            assert_eq!(t[field], s[field], "{field} of the copy of {id}");
        }
        assert_ne!(t["tree"], s["tree"], "other id keys, other tree ids");
        assert_same_restore(&p, id, t["id"].as_str().unwrap(), &id[..8]);
    }
    // The parent is remapped to the parent's copy.
    let tagged = |t: &str| sources.iter().find(|s| s["tags"][0] == t).unwrap();
    let (one, two) = (tagged("one"), tagged("two"));
    assert_eq!(two["parent"], one["id"]);
    assert_eq!(
        copy_of(&targets, two["id"].as_str().unwrap())["parent"],
        copy_of(&targets, one["id"].as_str().unwrap())["id"]
    );
    // Human listing says where a copy came from.
    let listing = p.env.ok(["snapshots"]);
    assert_eq!(listing.matches("(copy of ").count(), 3, "{listing}");

    // Data re-chunked with the target's own chunker: a backup of the same files into
    // the target, reading everything again, stores no data blob.
    let out = p
        .env
        .ok(["--json", "backup", "--force", "--host", "beta", s]);
    assert_eq!(summary_line(&out)["data_blobs"], 0, "{out}");
}

#[test]
fn a_second_copy_copies_nothing_and_writes_no_pack() {
    let p = Pair::new();
    let src = p.env.path("src");
    make_source(&src, 2);
    let s = src.to_str().unwrap();
    p.backup_source(&[s]);
    fs::write(src.join("new"), random_bytes(100_000, 3)).unwrap();
    p.backup_source(&[s]);
    assert_eq!(p.copy(&[])["snapshots_copied"], 2);

    let packs = count_files(&p.env.repo, "data");
    let indexes = count_files(&p.env.repo, "index");
    let before = listing(&p.env.repo);
    let out = p
        .env
        .cmd()
        .env("CAIRN_FROM_PASSWORD", SOURCE_PASSWORD)
        .args(["-v", "--json", "copy", "--from-repo"])
        .arg(&p.source)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["snapshots_copied"], 0, "{r}");
    assert_eq!(r["snapshots_skipped"], 2, "{r}");
    assert_eq!(r["packs_written"], 0, "{r}");
    assert_eq!(r["data_blobs_copied"], 0, "{r}");
    assert_eq!(r["source_bytes_read"], 0, "{r}");
    for snap in r["snapshots"].as_array().unwrap() {
        assert_eq!(snap["status"], "skipped");
        assert!(snap["existing"].is_string(), "{snap}");
    }
    assert_eq!(count_files(&p.env.repo, "data"), packs);
    assert_eq!(count_files(&p.env.repo, "index"), indexes);
    assert_eq!(
        listing(&p.env.repo),
        before,
        "a copy of nothing wrote something"
    );
    // -v counts the requests to both repositories.
    assert!(
        stderr(&out).contains("cairn: storage: "),
        "{}",
        stderr(&out)
    );

    // A copy of a copy is recognised by its origin: copying the target back into the
    // source copies nothing either.
    let out = p
        .env
        .bare()
        .env("CAIRN_PASSWORD", SOURCE_PASSWORD)
        .env("CAIRN_FROM_PASSWORD", PASSWORD)
        .arg("-r")
        .arg(&p.source)
        .args(["--json", "copy", "--from-repo"])
        .arg(&p.env.repo)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["snapshots_copied"], 0, "{r}");
    assert_eq!(r["snapshots_skipped"], 2, "{r}");
}

#[test]
fn copy_chunker_params_makes_copies_and_backups_deduplicate() {
    let p = Pair::uninit();
    p.at_source(["init"]);
    let out = p
        .env
        .cmd()
        .env("CAIRN_FROM_PASSWORD", SOURCE_PASSWORD)
        .args(["init", "--copy-chunker-params", "--from-repo"])
        .arg(&p.source)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let config: Value = serde_json::from_str(&p.env.ok(["cat", "config"])).unwrap();
    assert_eq!(config["version"], 2, "{config}");
    assert_eq!(config["shared_keys"]["blob_id_key"], "(secret)", "{config}");
    let source_config: Value = serde_json::from_str(&p.at_source(["cat", "config"])).unwrap();
    assert_eq!(config["chunker"], source_config["chunker"]);
    assert_ne!(config["id"], source_config["id"]);

    let src = p.env.path("src");
    make_source(&src, 4);
    let s = src.to_str().unwrap();
    let first = p.backup_source(&[s]);
    let r = p.copy(&[]);
    assert_eq!(r["mode"], "same-ids", "{r}");
    assert_eq!(r["snapshots_copied"], 1, "{r}");
    let targets = p.target_snapshots();
    let sources = p.source_snapshots();
    assert_eq!(
        targets[0]["tree"], sources[0]["tree"],
        "same ids, same trees"
    );
    assert_same_restore(&p, &first, targets[0]["id"].as_str().unwrap(), "shared");

    // Backing up the same files into the target, reading all of them, adds no data.
    let size = p.env.repo_size();
    let out = p.env.ok(["--json", "backup", "--force", s]);
    let summary = summary_line(&out);
    assert_eq!(summary["data_blobs"], 0, "{out}");
    assert!(p.env.repo_size() - size < 20_000, "{out}");

    // New data backed up into the target first, then into the source: copying that
    // snapshot finds every data blob by id and reads none from the source.
    fs::write(src.join("fresh"), random_bytes(1_500_000, 5)).unwrap();
    fs::write(src.join("text"), b"changed").unwrap();
    p.env.backup([s]);
    p.backup_source(&[s]);
    let r = p.copy(&[]);
    assert_eq!(r["snapshots_copied"], 1, "{r}");
    assert_eq!(r["data_blobs_copied"], 0, "{r}");
    assert_eq!(r["source_bytes_read"], 0, "{r}");
    assert!(r["blobs_present"].as_u64().unwrap() > 5, "{r}");
    let out = p.env.run(["check", "--read-data"]);
    assert_eq!(code(&out), 0, "check: {}", stderr(&out));
    let sources = p.source_snapshots();
    let id = sources[1]["id"].as_str().unwrap();
    let targets = p.target_snapshots();
    assert_same_restore(&p, id, copy_of(&targets, id)["id"].as_str().unwrap(), "new");
}

#[test]
fn named_or_filtered_snapshots_are_the_only_ones_copied() {
    let p = Pair::new();
    let src = p.env.path("src");
    fs::create_dir_all(&src).unwrap();
    let s = src.to_str().unwrap();
    let mut ids = Vec::new();
    for (i, host) in ["h1", "h2", "h1"].iter().enumerate() {
        fs::write(src.join("f"), random_bytes(10_000, i as u64)).unwrap();
        ids.push(p.backup_source(&[s, "--host", host]));
    }
    let r = p.copy(&[&ids[2][..8]]);
    assert_eq!(r["snapshots_copied"], 1, "{r}");
    let targets = p.target_snapshots();
    assert_eq!(targets.len(), 1);
    assert_eq!(targets[0]["original"]["snapshot"], ids[2].as_str());
    assert_eq!(targets[0]["hostname"], "h1");
    // Its parent (ids[0]) has no copy in the target: the parent is dropped.
    let sources = p.source_snapshots();
    assert_eq!(sources[2]["parent"], ids[0].as_str());
    assert!(targets[0]["parent"].is_null(), "{}", targets[0]);

    // `latest` with a filter, and the filter alone.
    let r = p.copy(&["latest", "--host", "h2"]);
    assert_eq!(r["snapshots_copied"], 1, "{r}");
    assert_eq!(r["snapshots"][0]["source"], ids[1].as_str());
    let r = p.copy(&["--host", "h1"]);
    assert_eq!(r["snapshots_copied"], 1, "{r}");
    assert_eq!(r["snapshots_skipped"], 1, "{r}");
    assert_eq!(r["snapshots"][0]["source"], ids[0].as_str());
    assert_eq!(p.target_snapshots().len(), 3);
}

#[test]
fn a_wrong_or_missing_source_writes_nothing_to_the_target() {
    let p = Pair::new();
    let src = p.env.path("src");
    make_source(&src, 6);
    p.backup_source(&[src.to_str().unwrap()]);
    let before = listing(&p.env.repo);
    let copy = |password: Option<&str>, from: &Path| {
        let mut c = p.env.cmd();
        if let Some(pw) = password {
            c.env("CAIRN_FROM_PASSWORD", pw);
        }
        c.args(["copy", "--from-repo"]).arg(from).output().unwrap()
    };

    let out = copy(Some("not the password"), &p.source);
    assert_eq!(code(&out), 12, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("source repository"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stderr(&out).trim().lines().count(), 1, "{}", stderr(&out));

    let out = copy(Some(SOURCE_PASSWORD), &p.env.path("no-such-repo"));
    assert_eq!(code(&out), 10, "{}", stderr(&out));

    // No password source and no terminal: a clear message, not a hang.
    let out = copy(None, &p.source);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("CAIRN_FROM_PASSWORD"),
        "{}",
        stderr(&out)
    );
    assert_eq!(listing(&p.env.repo), before, "the target changed");

    // The same for init --copy-chunker-params: nothing is created.
    let fresh = p.env.path("fresh");
    let out = p
        .env
        .bare()
        .env("CAIRN_FROM_PASSWORD", "not the password")
        .arg("-r")
        .arg(&fresh)
        .args(["init", "--copy-chunker-params", "--from-repo"])
        .arg(&p.source)
        .output()
        .unwrap();
    assert_eq!(code(&out), 12, "{}", stderr(&out));
    assert!(!fresh.join("config").exists());
}

#[test]
fn a_large_file_is_rechunked_and_restores_identically() {
    let p = Pair::new();
    let src = p.env.path("src");
    fs::create_dir_all(&src).unwrap();
    let mut data = random_bytes(40 << 20, 11);
    // Some repetition, so chunks of equal content occur inside the file.
    let copy = data[1 << 20..3 << 20].to_vec();
    data[30 << 20..32 << 20].copy_from_slice(&copy);
    fs::write(src.join("large"), &data).unwrap();
    p.backup_source(&[src.to_str().unwrap()]);
    let r = p.copy(&[]);
    assert_eq!(r["mode"], "rechunk", "{r}");
    assert_eq!(r["source_bytes_read"], 40 << 20, "{r}");
    let out = p.env.run(["check", "--read-data"]);
    assert_eq!(code(&out), 0, "check: {}", stderr(&out));
    let target = p.env.path("t");
    p.env.restore("latest", &target, &[]);
    let restored = target.join(src.strip_prefix("/").unwrap()).join("large");
    assert!(fs::read(restored).unwrap() == data, "content differs");
}
