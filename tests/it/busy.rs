//! Readers that tolerate a busy repository: `check` and listings running beside
//! `forget` (deletes snapshot files) and `prune` (rewrites index files, deletes the
//! packs it marked) see no damage where there is none.

use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cairn::backend::{Backend, FileType, LocalBackend};
use cairn::check::{check, CheckReport, ReadData};

use crate::common::*;

#[test]
fn check_and_listing_beside_forget_and_prune_report_no_damage() {
    let env = Arc::new(Env::new());
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let round = |i: u64| {
        // Each round's big file is new data, so forgetting a round frees packs.
        fs::write(src.join("big"), random_bytes(200_000, 1000 + i)).unwrap();
        fs::write(src.join("small"), format!("round {i}")).unwrap();
        env.backup([src.to_str().unwrap()]);
    };
    for i in 0..3 {
        round(i);
    }
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (env, done, src) = (env.clone(), done.clone(), src.clone());
        std::thread::spawn(move || {
            // Each prune runs "two days later" than the last, so it deletes the packs
            // the previous one marked: index rewrites and pack deletions every round.
            let now = chrono::Utc::now().timestamp();
            for i in 0..6u64 {
                fs::write(src.join("big"), random_bytes(200_000, 2000 + i)).unwrap();
                env.backup([src.to_str().unwrap()]);
                env.ok(["forget", "--keep-last", "1"]);
                let later = (now + (i as i64 + 1) * 48 * 3600).to_string();
                let out = env
                    .cmd()
                    .env("CAIRN_PRUNE_NOW", &later)
                    .args(["prune", "--max-unused", "0"])
                    .output()
                    .unwrap();
                assert_eq!(code(&out), 0, "prune: {}", stderr(&out));
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let mut checks = 0;
    // Bounded: the writer does six rounds; at least three checks run in any case.
    while !done.load(Ordering::SeqCst) || checks < 3 {
        for args in [
            vec!["check"],
            vec!["check", "--read-data"],
            vec!["--no-cache", "snapshots"],
        ] {
            // Prune's delete step holds an exclusive lock for a moment: wait for it.
            let out = env
                .cmd()
                .env("CAIRN_RETRY_LOCK", "2m")
                .args(&args)
                .output()
                .unwrap();
            assert_eq!(
                code(&out),
                0,
                "{args:?} beside forget/prune: {}",
                stderr(&out)
            );
            assert!(
                !stderr(&out).contains("warning"),
                "{args:?}: a forgotten snapshot is no warning: {}",
                stderr(&out)
            );
        }
        checks += 1;
        assert!(checks < 500, "bounded");
    }
    writer.join().unwrap();
    env.ok(["check", "--read-data"]);
}

/// A pack the index still lists as live stays an error when it is missing, and so
/// does a snapshot's blob that was only in it.
#[test]
fn missing_live_pack_is_still_an_error() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big"), random_bytes(300_000, 7)).unwrap();
    env.backup([src.to_str().unwrap()]);
    let pack = walk(&env.repo.join("data"))
        .into_iter()
        .filter(|p| p.is_file())
        .max_by_key(|p| p.metadata().unwrap().len())
        .unwrap();
    fs::remove_file(&pack).unwrap();
    let out = env.run(["check"]);
    assert_eq!(code(&out), 13, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("missing from storage"), "{err}");
    assert!(
        err.contains("blob is not in the index") || err.contains("tree"),
        "{err}"
    );
}

/// Storage that runs `hook` (real cairn commands) just before the first read of one
/// kind of file: the worst moment for a concurrent forget/prune, made deterministic.
struct HookBackend {
    inner: Arc<dyn Backend>,
    on: FileType,
    hook: std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl Backend for HookBackend {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn create(&self) -> cairn::Result<()> {
        self.inner.create()
    }
    fn read(&self, ft: FileType, name: &str) -> cairn::Result<Vec<u8>> {
        if ft == self.on {
            if let Some(h) = self.hook.lock().unwrap().take() {
                h();
            }
        }
        self.inner.read(ft, name)
    }
    fn read_range(&self, ft: FileType, name: &str, o: u64, l: usize) -> cairn::Result<Vec<u8>> {
        self.inner.read_range(ft, name, o, l)
    }
    fn write(&self, ft: FileType, name: &str, data: &[u8]) -> cairn::Result<()> {
        self.inner.write(ft, name, data)
    }
    fn list(&self, ft: FileType) -> cairn::Result<Vec<(String, u64)>> {
        self.inner.list(ft)
    }
    fn delete(&self, ft: FileType, name: &str) -> cairn::Result<()> {
        self.inner.delete(ft, name)
    }
    fn size(&self, ft: FileType, name: &str) -> cairn::Result<u64> {
        self.inner.size(ft, name)
    }
}

/// Three snapshots of changing data; the first two forgotten and their packs marked.
fn history_with_marked_packs() -> Arc<Env> {
    let env = Arc::new(Env::new());
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..3 {
        fs::write(src.join("big"), random_bytes(200_000, 3000 + i)).unwrap();
        env.backup([src.to_str().unwrap()]);
    }
    env
}

/// forget (all but the newest) and a prune "two days later" (deletes what an earlier
/// prune marked, rewrites every index file), then another (deletes what that marked).
fn forget_and_prune(env: &Env) {
    env.ok(["forget", "--keep-last", "1"]);
    let now = chrono::Utc::now().timestamp();
    for days in [2, 4, 6] {
        let later = (now + days * 24 * 3600).to_string();
        let out = env
            .cmd()
            .env("CAIRN_PRUNE_NOW", &later)
            .args(["prune", "--max-unused", "0"])
            .output()
            .unwrap();
        assert_eq!(code(&out), 0, "prune: {}", stderr(&out));
    }
}

fn check_with_hook(env: Arc<Env>, on: FileType, pre: impl FnOnce(&Env)) -> CheckReport {
    pre(&env);
    let hook_env = env.clone();
    let backend = Arc::new(HookBackend {
        inner: Arc::new(LocalBackend::new(env.repo.clone())),
        on,
        hook: std::sync::Mutex::new(Some(Box::new(move || forget_and_prune(&hook_env)))),
    });
    let mut repo = cairn::Repository::open(backend.clone(), PASSWORD.as_bytes()).unwrap();
    let report = check(&mut repo, ReadData::All).unwrap();
    assert!(backend.hook.lock().unwrap().is_none(), "the hook ran");
    report
}

#[test]
fn index_files_replaced_while_check_reads_them_are_reloaded() {
    let report = check_with_hook(history_with_marked_packs(), FileType::Index, |env| {
        // A first prune so there are index files to replace and marked packs to delete.
        env.ok(["forget", "--keep-last", "2"]);
        env.ok(["prune", "--max-unused", "0"]);
    });
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[test]
fn snapshots_forgotten_and_packs_pruned_while_check_runs_are_no_damage() {
    let report = check_with_hook(history_with_marked_packs(), FileType::Snapshot, |_| {});
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(report.deleted_packs > 0, "the race happened: {report:?}");
    assert_eq!(report.snapshots, 1);
}

#[test]
fn snapshots_forgotten_while_listed_are_left_out_silently() {
    let env = history_with_marked_packs();
    let hook_env = env.clone();
    let backend = Arc::new(HookBackend {
        inner: Arc::new(LocalBackend::new(env.repo.clone())),
        on: FileType::Snapshot,
        hook: std::sync::Mutex::new(Some(Box::new(move || {
            hook_env.ok(["forget", "--keep-last", "1"]);
        }))),
    });
    let repo = cairn::Repository::open(backend, PASSWORD.as_bytes()).unwrap();
    let set = repo.snapshots().unwrap();
    assert_eq!(set.len(), 1);
    assert!(set.unreadable.is_empty(), "{:?}", set.unreadable);
}

/// A backup that writes its index and snapshot while check reads the index: check
/// listed the snapshots first, so it does not take the new snapshot's blobs for
/// missing ones (the stress test found this false alarm).
#[test]
fn a_backup_finishing_while_check_reads_the_index_is_no_damage() {
    let env = history_with_marked_packs();
    let hook_env = env.clone();
    let backend = Arc::new(HookBackend {
        inner: Arc::new(LocalBackend::new(env.repo.clone())),
        on: FileType::Index,
        hook: std::sync::Mutex::new(Some(Box::new(move || {
            let src = hook_env.path("other");
            fs::create_dir_all(&src).unwrap();
            fs::write(src.join("new"), random_bytes(300_000, 4242)).unwrap();
            hook_env.backup([src.to_str().unwrap()]);
        }))),
    });
    let mut repo = cairn::Repository::open(backend.clone(), PASSWORD.as_bytes()).unwrap();
    let report = check(&mut repo, ReadData::All).unwrap();
    assert!(backend.hook.lock().unwrap().is_none(), "the hook ran");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    env.ok(["check", "--read-data"]);
}
