//! One damaged (or newer-format) snapshot file must not lock the admin out: it is a
//! warning naming the file, skipped by listing, selection, parent choice and forget;
//! asked for by id it is an integrity error (13); check names it; prune refuses.

use std::fs;
use std::path::{Path, PathBuf};

use crate::common::*;

const DAYS: &[&str] = &[
    "2026-01-01 10:00:00Z",
    "2026-01-02 10:00:00Z",
    "2026-01-03 10:00:00Z",
];

fn json(env: &Env, args: &[&str]) -> (serde_json::Value, String) {
    let mut all = vec!["--no-cache", "--json"];
    all.extend_from_slice(args);
    let out = env.run(&all);
    assert_eq!(code(&out), 0, "{args:?}: {}", stderr(&out));
    (serde_json::from_slice(&out.stdout).unwrap(), stderr(&out))
}

/// Three snapshots of one source a day apart, the oldest then damaged by one flipped
/// byte. Returns the env, the source and the ids (oldest first).
fn damaged_history() -> (Env, PathBuf, Vec<String>) {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let ids: Vec<String> = DAYS
        .iter()
        .enumerate()
        .map(|(i, t)| {
            fs::write(src.join("f"), format!("version {i}")).unwrap();
            env.backup(["--time", t, src.to_str().unwrap()])
        })
        .collect();
    flip(&snapshot_file(&env, &ids[0]));
    (env, src, ids)
}

fn snapshot_file(env: &Env, id: &str) -> PathBuf {
    env.repo.join("snapshots").join(id)
}

fn flip(p: &Path) {
    let mut b = fs::read(p).unwrap();
    b[40] ^= 0x01;
    fs::write(p, b).unwrap();
}

/// The one warning line naming the damaged file.
fn assert_one_warning(err: &str, id: &str) {
    let hits: Vec<&str> = err.lines().filter(|l| l.contains(id)).collect();
    assert_eq!(hits.len(), 1, "one warning naming {id}: {err}");
    assert!(
        hits[0].contains("warning") && hits[0].contains(&format!("snapshots/{id}")),
        "{err}"
    );
}

fn repo_files(env: &Env) -> Vec<PathBuf> {
    walk(&env.repo)
        .into_iter()
        .filter(|p| p.is_file() && !p.starts_with(env.repo.join("locks")))
        .collect()
}

#[test]
fn damaged_snapshot_is_skipped_by_listing_and_selection() {
    let (env, _, ids) = damaged_history();
    let (list, err) = json(&env, &["snapshots"]);
    let listed: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, vec![ids[1].as_str(), ids[2].as_str()]);
    assert_one_warning(&err, &ids[0]);

    // Restore of another snapshot by full id.
    let t = env.path("t");
    let out = env.run([
        "--no-cache",
        "restore",
        &ids[1],
        "--target",
        t.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_one_warning(&stderr(&out), &ids[0]);
    let restored = t.join(env.path("src").strip_prefix("/").unwrap()).join("f");
    assert_eq!(fs::read(restored).unwrap(), b"version 1");

    // latest, @TIME and filters skip it.
    for (sel, want) in [
        ("latest", &ids[2]),
        ("@2026-01-02", &ids[1]),
        ("@2026-01-03T12:00Z", &ids[2]),
    ] {
        let (v, err) = json(&env, &["cat", "snapshot", sel]);
        assert_eq!(v["id"].as_str().unwrap(), want, "{sel}");
        assert_one_warning(&err, &ids[0]);
    }
    let out = env.run(["--no-cache", "ls", "latest", "--host", "nobody-has-this"]);
    assert_ne!(code(&out), 0);
    let src = env.path("src");
    let out = env.run([
        "--no-cache",
        "ls",
        "latest",
        "--path",
        src.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_one_warning(&stderr(&out), &ids[0]);

    // Asked for by full id or a unique prefix: integrity error naming the file.
    for sel in [ids[0].as_str(), &ids[0][..8]] {
        let out = env.run(["--no-cache", "ls", sel]);
        assert_eq!(code(&out), 13, "{sel}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("snapshots/{}", ids[0])),
            "{}",
            stderr(&out)
        );
    }
    // A time only the damaged snapshot could answer: damage, not "no snapshot".
    let out = env.run(["--no-cache", "ls", "@2026-01-01T12:00Z"]);
    assert_eq!(code(&out), 13, "{}", stderr(&out));
}

#[test]
fn damaged_snapshot_is_no_parent_and_forget_skips_it() {
    let (env, src, ids) = damaged_history();
    fs::write(src.join("g"), b"new").unwrap();
    let out = env.run(["--no-cache", "backup", src.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_one_warning(&stderr(&out), &ids[0]);
    let (list, _) = json(&env, &["snapshots"]);
    let new = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .find(|id| !ids.contains(id))
        .unwrap();
    let (snap, _) = json(&env, &["cat", "snapshot", &new]);
    assert_eq!(
        snap["parent"].as_str().unwrap(),
        ids[2],
        "newest readable parent"
    );

    let out = env.run(["--no-cache", "forget", "--keep-last", "1"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_one_warning(&stderr(&out), &ids[0]);
    let (list, _) = json(&env, &["snapshots"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"].as_str().unwrap(), new);
    assert!(
        snapshot_file(&env, &ids[0]).exists(),
        "forget leaves the damaged file for the admin"
    );
}

#[test]
fn check_names_a_damaged_snapshot_and_prune_deletes_nothing() {
    let (env, _, ids) = damaged_history();
    let out = env.run(["check"]);
    assert_eq!(code(&out), 13, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("snapshots/{}", ids[0])),
        "{}",
        stderr(&out)
    );

    // Forget the others so prune would have something to delete.
    env.ok(["--no-cache", "forget", &ids[1], &ids[2]]);
    let before = repo_files(&env);
    for args in [
        vec!["--no-cache", "prune"],
        vec!["--no-cache", "prune", "--instant-delete"],
    ] {
        let out = env.run(&args);
        assert_eq!(code(&out), 13, "{args:?}: {}", stderr(&out));
        assert_eq!(repo_files(&env), before, "{args:?} changed nothing");
    }
}

#[test]
fn newer_format_snapshot_is_skipped_and_refused_by_id() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    let good = env.backup([src.to_str().unwrap()]);
    use cairn::backend::{FileType, LocalBackend};
    let backend = std::sync::Arc::new(LocalBackend::new(env.repo.clone()));
    let repo = cairn::Repository::open(backend, PASSWORD.as_bytes()).unwrap();
    let mut s = repo.load_snapshot(&good).unwrap();
    s.version += 1;
    let newer = repo
        .write_file(FileType::Snapshot, &s.encode(&repo.key.sealing))
        .unwrap()
        .to_hex();
    let (list, err) = json(&env, &["snapshots"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_one_warning(&err, &newer);
    assert!(err.contains("newer than this cairn supports"), "{err}");
    let out = env.run(["--no-cache", "ls", &newer]);
    assert_ne!(code(&out), 0);
    assert!(stderr(&out).contains("newer than this cairn supports"));
}
