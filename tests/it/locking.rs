//! Locks: a held exclusive lock stops others with exit 11; stale ones do not; unlock.

use std::sync::Arc;

use cairn::backend::LocalBackend;
use cairn::repo::lock::LockKind;
use cairn::Repository;

use crate::common::*;

fn open(env: &Env) -> Repository {
    Repository::open(
        Arc::new(LocalBackend::new(env.repo.clone())),
        PASSWORD.as_bytes(),
    )
    .unwrap()
}

#[test]
fn exclusive_lock_blocks_with_exit_11_and_unlock_remove_all_clears_it() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let repo = open(&env);
    let guard = repo.lock(LockKind::Exclusive).unwrap();
    let out = env.run(["backup", src.to_str().unwrap()]);
    assert_eq!(code(&out), 11, "{}", stderr(&out));
    assert!(stderr(&out).contains("locked"), "{}", stderr(&out));
    // Read-only commands may skip the lock.
    env.ok(["--no-lock", "snapshots"]);
    assert_eq!(
        code(&env.run(["--no-lock", "backup", src.to_str().unwrap()])),
        1
    );
    // A live lock is not stale: plain unlock leaves it.
    env.ok(["unlock"]);
    assert_eq!(code(&env.run(["snapshots"])), 11);
    env.ok(["unlock", "--remove-all"]);
    env.ok(["backup", src.to_str().unwrap()]);
    drop(guard);
}

#[test]
fn a_shared_lock_does_not_block_backups_and_prunes_exclude_each_other() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let repo = open(&env);
    let _shared = repo.lock(LockKind::Shared).unwrap();
    let _prune = repo.lock(LockKind::Prune).unwrap();
    env.ok(["backup", src.to_str().unwrap()]);
    assert_eq!(code(&env.run(["prune"])), 11);
    assert_eq!(code(&env.run(["prune", "--instant-delete"])), 11);
}

#[test]
fn the_lock_of_a_killed_process_is_stale() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..200 {
        std::fs::write(src.join(format!("f{i}")), random_bytes(100_000, i)).unwrap();
    }
    let mut child = env
        .cmd()
        .args(["backup", src.to_str().unwrap()])
        .spawn()
        .unwrap();
    // Wait until its lock file exists, then kill it. (Names starting with a dot are
    // temporary files of a write in progress, not locks.)
    let locks = env.repo.join("locks");
    let lock_files = || {
        std::fs::read_dir(&locks)
            .unwrap()
            .filter(|e| {
                !e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with('.')
            })
            .count()
    };
    for _ in 0..500 {
        if lock_files() > 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    if lock_files() > 0 {
        // Its lock is left behind, but the pid is gone: others proceed.
        env.ok(["backup", src.to_str().unwrap()]);
        let out = env.ok(["--json", "unlock"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["removed"].as_array().unwrap().len(), 1, "{out}");
    }
    assert_eq!(lock_files(), 0);
}
