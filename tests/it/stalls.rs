//! Stalled storage (found by a hostile review of issue 7's fixes): one client's storage
//! calls hang (a suspended laptop, a lost network, a hung NFS mount) for longer than
//! its lock's stale window while other cairn processes go on. Whatever it was doing
//! when it stalled, when it wakes it must not write an index file or a snapshot, or
//! delete anything, that others' work since then makes wrong. The stalled client's
//! lock states a 6 s window; the others are real `cairn` processes.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use cairn::archiver::{self, BackupOptions};
use cairn::backend::{Backend, FileType, LocalBackend};
use cairn::repo::lock::LockKind;
use cairn::Repository;

use crate::common::*;

const STALE: Duration = Duration::from_secs(6);

/// When to stall: on this call (file type, operation name)?
type Trigger = dyn Fn(FileType, &str) -> bool + Send + Sync;

/// One client's storage: once `trigger` says so, every call (all threads) hangs until
/// `release`, as a suspended laptop or a lost network looks to everyone else.
struct Stall {
    inner: Arc<dyn Backend>,
    trigger: Box<Trigger>,
    triggered: AtomicBool,
    blocked: Mutex<bool>,
    cv: Condvar,
}

impl Stall {
    fn new(
        env: &Env,
        trigger: impl Fn(FileType, &str) -> bool + Send + Sync + 'static,
    ) -> Arc<Stall> {
        Arc::new(Stall {
            inner: Arc::new(LocalBackend::new(env.repo.clone())),
            trigger: Box::new(trigger),
            triggered: AtomicBool::new(false),
            blocked: Mutex::new(false),
            cv: Condvar::new(),
        })
    }

    /// Stalls at the first call of kind `op` on a file of type `ft`.
    fn at(env: &Env, op: &'static str, ft: FileType) -> Arc<Stall> {
        Stall::new(env, move |f, o| o == op && f == ft)
    }

    fn gate(&self, ft: FileType, op: &str) {
        if !self.triggered.load(Ordering::SeqCst) && (self.trigger)(ft, op) {
            *self.blocked.lock().unwrap() = true;
            self.triggered.store(true, Ordering::SeqCst);
        }
        let mut b = self.blocked.lock().unwrap();
        while *b {
            b = self.cv.wait(b).unwrap();
        }
    }

    fn release(&self) {
        *self.blocked.lock().unwrap() = false;
        self.cv.notify_all();
    }
}

impl Backend for Stall {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn create(&self) -> cairn::Result<()> {
        self.inner.create()
    }
    fn read(&self, ft: FileType, name: &str) -> cairn::Result<Vec<u8>> {
        self.gate(ft, "read");
        self.inner.read(ft, name)
    }
    fn read_range(&self, ft: FileType, name: &str, o: u64, l: usize) -> cairn::Result<Vec<u8>> {
        self.gate(ft, "read_range");
        self.inner.read_range(ft, name, o, l)
    }
    fn write(&self, ft: FileType, name: &str, data: &[u8]) -> cairn::Result<()> {
        self.gate(ft, "write");
        self.inner.write(ft, name, data)
    }
    fn list(&self, ft: FileType) -> cairn::Result<Vec<(String, u64)>> {
        self.gate(ft, "list");
        self.inner.list(ft)
    }
    fn delete(&self, ft: FileType, name: &str) -> cairn::Result<()> {
        self.gate(ft, "delete");
        self.inner.delete(ft, name)
    }
    fn size(&self, ft: FileType, name: &str) -> cairn::Result<u64> {
        self.gate(ft, "size");
        self.inner.size(ft, name)
    }
}

#[test]
fn a_backup_stalled_in_its_last_lock_refresh_writes_no_snapshot() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..4 {
        std::fs::write(src.join(format!("f{i}")), random_bytes(300_000, 900 + i)).unwrap();
    }
    // The first lock `size` after an index file was written: the last refresh before
    // the snapshot, by the backup's own confirmation or by its refresher thread
    // (whichever comes first; a confirmation right after a refresh trusts it).
    let armed = AtomicBool::new(false);
    let lock_stats = AtomicUsize::new(0);
    let part = Stall::new(&env, move |ft, op| {
        if op == "write" && ft == FileType::Index && !armed.swap(true, Ordering::SeqCst) {
            // Past a tenth of the window, so the confirmation must look, not trust.
            std::thread::sleep(STALE / 5);
        }
        armed.load(Ordering::SeqCst)
            && op == "size"
            && ft == FileType::Lock
            && lock_stats.fetch_add(1, Ordering::SeqCst) + 1 == 1
    });
    let b: Arc<dyn Backend> = part.clone();
    let src2 = src.clone();
    let victim = std::thread::Builder::new()
        .name("victim".into())
        .spawn(move || {
            let mut repo = Repository::open(b, PASSWORD.as_bytes())?;
            repo.set_lock_stale_after(STALE);
            let _lock = repo.lock(LockKind::Shared)?;
            repo.load_index()?;
            let opts = BackupOptions {
                paths: vec![src2],
                ..Default::default()
            };
            archiver::backup(&mut repo, &opts, &|_| {}).map(|r| r.snapshot_id)
        })
        .unwrap();
    while !part.triggered.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20));
        assert!(!victim.is_finished(), "backup ended before the trigger");
    }
    // The stall outlives the stale window: for everyone else the lock is stale.
    std::thread::sleep(Duration::from_secs(7));
    let out = env
        .cmd()
        .env("CAIRN_LOCK_STALE_SECS", "6")
        .args(["prune"])
        .output()
        .unwrap();
    eprintln!(
        "prune: {}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    part.release();
    let r = victim.join().unwrap();
    eprintln!("victim backup returned: {r:?}");
    let out = env.run(["check"]);
    eprintln!(
        "check exit {}: {}{}",
        code(&out),
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    assert!(
        matches!(r, Err(cairn::Error::LockLost(_))),
        "a backup whose lock went stale went on: {r:?}"
    );
    assert_eq!(code(&out), 0, "the repository is damaged");
}

#[test]
fn a_prune_stalled_in_its_delete_loop_loses_nothing_a_backup_needs() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..4 {
        std::fs::write(src.join(format!("f{i}")), random_bytes(300_000, 700 + i)).unwrap();
    }
    env.backup([src.to_str().unwrap()]);
    // The only snapshot is forgotten; the files stay on disk.
    let snaps = env.ok(["--json", "snapshots"]);
    let v: serde_json::Value = serde_json::from_str(&snaps).unwrap();
    let id = v[0]["id"].as_str().unwrap().to_string();
    env.ok(["forget", &id]);

    let stall = Stall::at(&env, "delete", FileType::Pack);
    let b: Arc<dyn Backend> = stall.clone();
    let pruner = std::thread::spawn(move || {
        let mut repo = Repository::open(b, PASSWORD.as_bytes())?;
        repo.set_lock_stale_after(STALE);
        let _lock = repo.lock(LockKind::Prune)?;
        let opts = cairn::prune::PruneOptions {
            max_unused: 5.0,
            dry_run: false,
            instant_delete: false,
            delete_when_idle: true,
            grace: Duration::from_secs(24 * 3600),
            now: chrono::Utc::now().timestamp(),
        };
        cairn::prune::prune(&mut repo, &opts)
    });
    while !stall.triggered.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20));
        assert!(!pruner.is_finished(), "prune ended before deleting");
    }
    // Suspended past the stale window (laptop lid closed): a backup runs meanwhile.
    std::thread::sleep(Duration::from_secs(7));
    let out = env
        .cmd()
        .env("CAIRN_LOCK_STALE_SECS", "6")
        .args(["-v", "backup", src.to_str().unwrap()])
        .output()
        .unwrap();
    eprintln!(
        "backup exit {}: {}{}",
        code(&out),
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    stall.release();
    let r = pruner.join().unwrap();
    eprintln!("prune returned: {:?}", r.map(|r| (r.mode, r.packs_deleted)));
    let out = env.run(["check"]);
    eprintln!(
        "check exit {}: {}{}",
        code(&out),
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    assert_eq!(code(&out), 0, "a snapshot lost its data");
}

#[test]
fn a_backup_stalled_before_its_index_write_leaves_no_index_of_deleted_packs() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..4 {
        std::fs::write(src.join(format!("f{i}")), random_bytes(300_000, 500 + i)).unwrap();
    }
    let stall = Stall::at(&env, "write", FileType::Index);
    let b: Arc<dyn Backend> = stall.clone();
    let src2 = src.clone();
    let victim = std::thread::spawn(move || {
        let mut repo = Repository::open(b, PASSWORD.as_bytes())?;
        repo.set_lock_stale_after(STALE);
        let _lock = repo.lock(LockKind::Shared)?;
        repo.load_index()?;
        let opts = BackupOptions {
            paths: vec![src2],
            ..Default::default()
        };
        archiver::backup(&mut repo, &opts, &|_| {}).map(|r| r.snapshot_id)
    });
    while !stall.triggered.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20));
        assert!(!victim.is_finished(), "backup ended before its index write");
    }
    // Suspended past the stale window with its packs uploaded but not indexed.
    std::thread::sleep(Duration::from_secs(7));
    let out = env
        .cmd()
        .env("CAIRN_LOCK_STALE_SECS", "6")
        .args(["prune"])
        .output()
        .unwrap();
    eprintln!(
        "prune: {}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    stall.release();
    let r = victim.join().unwrap();
    eprintln!("suspended backup returned: {r:?}");
    // Another, healthy backup of the same data afterwards.
    let out = env.run(["backup", src.to_str().unwrap()]);
    eprintln!(
        "next backup exit {}: {}{}",
        code(&out),
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    let out = env.run(["check"]);
    eprintln!(
        "check exit {}: {}{}",
        code(&out),
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    assert_eq!(code(&out), 0, "a snapshot lost its data");
}
