//! Locks (`locks/<id>`): who is using the repository, so that maintenance never
//! removes data a running command depends on.
//!
//! Three kinds. `Shared` (backup, restore, check, forget, listing) excludes only
//! `Exclusive`. `Prune` excludes other prunes and `Exclusive`, not backups: prune's
//! two-phase delete keeps it safe beside them. `Exclusive` (repair, the delete step of a
//! prune on an idle repository) excludes everything.
//!
//! A lock file has a random name for its whole life and is rewritten in place when it
//! is refreshed. It states its holder's stale window: it is stale when not refreshed
//! within it, or when its owner ran in this process space (same boot, same pid
//! namespace) and that process is gone. A holder that could not refresh its lock for
//! most of that window (suspended, clock jump, stalled storage) or whose lock file was
//! removed has *lost* it: others may already treat it as stale, so it stops before
//! writing an index file or a snapshot or deleting anything (`LockHandle::confirm`,
//! `LockHandle::ensure_alive`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, FileType};
use crate::crypto::SealingKey;
use crate::error::{Error, Result};
use crate::id::Id;

pub const LOCK_VERSION: u32 = 1;
/// A lock not refreshed for this long is stale (30 minutes).
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
/// The longest window a lock file may state: a hostile or broken one cannot make a lock
/// immortal.
const MAX_STALE_AFTER: Duration = Duration::from_secs(24 * 3600);

const AAD: &[u8] = b"cairn.lock.v1";

/// The stale window of the locks this process takes. `CAIRN_LOCK_STALE_SECS` shortens
/// it for tests that suspend a process past it; each lock file states its own window,
/// so every reader judges a lock by its holder's.
pub fn stale_after() -> Duration {
    std::env::var("CAIRN_LOCK_STALE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&s: &u64| s >= 1)
        .map(Duration::from_secs)
        .unwrap_or(STALE_AFTER)
        .min(MAX_STALE_AFTER)
}

fn default_stale_secs() -> u64 {
    STALE_AFTER.as_secs()
}

/// Refreshed six times per stale window: five refreshes can fail before it matters.
fn refresh_every(stale: Duration) -> Duration {
    stale / 6
}

/// A holder stops trusting its lock once this share of the window passed without a
/// refresh: the rest is margin for clock skew between hosts.
fn lost_after(stale: Duration) -> Duration {
    stale * 2 / 3
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockKind {
    Shared,
    Prune,
    Exclusive,
}

impl LockKind {
    fn conflicts_with(self, other: LockKind) -> bool {
        use LockKind::*;
        matches!(
            (self, other),
            (Exclusive, _) | (_, Exclusive) | (Prune, Prune)
        )
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LockFile {
    pub version: u32,
    pub kind: LockKind,
    pub hostname: String,
    pub username: String,
    pub pid: u32,
    /// Boot id and pid namespace of the holder: a pid is only meaningful there.
    /// Containers often share a hostname; they never share both of these.
    #[serde(default)]
    pub process_space: String,
    pub created: DateTime<Utc>,
    pub refreshed: DateTime<Utc>,
    /// The holder's stale window in seconds: the lock is stale once `refreshed` is
    /// older than this (taken as 1 s to 24 h whatever the file says).
    #[serde(default = "default_stale_secs")]
    pub stale_after_secs: u64,
}

/// This process's boot id and pid namespace, e.g. `3f2a…:pid:[4026531836]`.
pub fn process_space() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let ns = std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    format!("{}:{ns}", boot.trim())
}

impl LockFile {
    fn new(kind: LockKind, stale: Duration) -> LockFile {
        let now = Utc::now();
        LockFile {
            version: LOCK_VERSION,
            kind,
            hostname: crate::fsmeta::hostname(),
            username: crate::fsmeta::current_username(),
            pid: std::process::id(),
            process_space: process_space(),
            created: now,
            refreshed: now,
            stale_after_secs: stale.as_secs().max(1),
        }
    }

    pub fn encode(&self, key: &SealingKey) -> Vec<u8> {
        key.seal(AAD, &serde_json::to_vec(self).expect("lock serializes"))
    }

    pub fn decode(sealed: &[u8], key: &SealingKey, file: &str) -> Result<LockFile> {
        let plain = key
            .open(AAD, sealed)
            .map_err(|_| Error::integrity(file, "authentication failed"))?;
        serde_json::from_slice(&plain).map_err(|e| Error::integrity(file, e.to_string()))
    }

    /// Stale: not refreshed within its own stated window, or its process in this
    /// process space is gone.
    pub fn is_stale(&self, now: DateTime<Utc>) -> bool {
        let window = Duration::from_secs(self.stale_after_secs.max(1)).min(MAX_STALE_AFTER);
        let age = now.signed_duration_since(self.refreshed);
        if age.to_std().is_ok_and(|a| a > window) {
            return true;
        }
        self.is_ours_to_judge() && !crate::fsmeta::process_alive(self.pid)
    }

    /// Whether its pid can be looked up here: the same boot and pid namespace (locks of
    /// older cairns, without `process_space`, are judged by hostname as before).
    fn is_ours_to_judge(&self) -> bool {
        if self.hostname != crate::fsmeta::hostname() {
            return false;
        }
        self.process_space.is_empty() || self.process_space == process_space()
    }

    pub fn describe(&self) -> String {
        let kind = match self.kind {
            LockKind::Shared => "shared",
            LockKind::Prune => "prune",
            LockKind::Exclusive => "exclusive",
        };
        format!(
            "{kind} lock held by {}@{} (pid {}) since {}",
            self.username,
            self.hostname,
            self.pid,
            self.created.format("%Y-%m-%d %H:%M:%S UTC")
        )
    }
}

/// Every lock file: (name, decoded lock or the error reading it).
pub fn list_locks(
    backend: &dyn Backend,
    key: &SealingKey,
) -> Result<Vec<(String, Result<LockFile>)>> {
    list_locks_but(backend, key, &[])
}

/// Like `list_locks`, without reading the files named in `own` (this process's own:
/// a request each on remote storage, and nothing to learn).
fn list_locks_but(
    backend: &dyn Backend,
    key: &SealingKey,
    own: &[&str],
) -> Result<Vec<(String, Result<LockFile>)>> {
    let mut out = Vec::new();
    for (name, _) in backend.list(FileType::Lock)? {
        if own.contains(&name.as_str()) {
            continue;
        }
        let read = backend.read(FileType::Lock, &name);
        let lock = match read {
            Ok(bytes) => LockFile::decode(&bytes, key, &FileType::Lock.path(&name)),
            // Removed between list and read: its holder let go. (A refresh rewrites the
            // same file in place, so a live lock never vanishes from a listing.)
            Err(e) if e.is_not_found() => continue,
            Err(e) => Err(e),
        };
        out.push((name, lock));
    }
    Ok(out)
}

/// The first lock (other than `own`) that keeps a lock of `kind` from being taken,
/// and whether there were other locks at all.
fn conflict_and_others(
    backend: &dyn Backend,
    key: &SealingKey,
    kind: LockKind,
    own: &[&str],
) -> Result<(Option<String>, bool)> {
    let now = Utc::now();
    let locks = list_locks_but(backend, key, own)?;
    let others = !locks.is_empty();
    for (name, lock) in locks {
        match lock {
            Ok(l) if !l.is_stale(now) && kind.conflicts_with(l.kind) => {
                return Ok((Some(l.describe()), others))
            }
            Ok(_) => {}
            // An unreadable lock file might be anyone's: refuse rather than guess.
            Err(e) if kind == LockKind::Exclusive || kind == LockKind::Prune => {
                return Ok((
                    Some(format!(
                        "unreadable lock file {name} ({e}); see `cairn unlock`"
                    )),
                    others,
                ))
            }
            Err(_) => {}
        }
    }
    Ok((None, others))
}

/// Writes (or rewrites in place) a lock file: the write is atomic, so a refresh never
/// leaves a moment without the file.
fn write_lock(backend: &dyn Backend, key: &SealingKey, lock: &LockFile, name: &str) -> Result<()> {
    backend.write(FileType::Lock, name, &lock.encode(key))
}

fn new_lock_name() -> String {
    Id(crate::crypto::random_bytes::<32>()).to_hex()
}

/// The state of a held lock, shared by its guard, its refresher thread and the
/// operations that must prove the lock is alive before they write or delete.
pub struct Held {
    backend: Arc<dyn Backend>,
    key: SealingKey,
    /// This lock's stale window (stated in the file).
    stale: Duration,
    /// The lock's content and its file name.
    file: Mutex<(LockFile, String)>,
    /// When the lock was last known to be in place (monotonic and wall clock: a
    /// suspended machine stops the first, a clock jump moves the second).
    last_ok: Mutex<(Instant, DateTime<Utc>)>,
    /// Why the lock is lost, once it is; never cleared.
    lost: Mutex<Option<String>>,
    /// Whether other lock files (live or stale) were there when this one was taken.
    saw_others: bool,
    stop: AtomicBool,
}

/// A cheap handle on a held lock, for operations deep below the command that took it.
#[derive(Clone)]
pub struct LockHandle(Arc<Held>);

impl Held {
    fn lose(&self, why: String) -> Error {
        let mut lost = self.lost.lock().unwrap();
        Error::LockLost(lost.get_or_insert(why).clone())
    }

    /// Err once the lock is lost or has gone unrefreshed too long to be trusted.
    fn check(&self) -> Result<()> {
        let since = *self.last_ok.lock().unwrap();
        self.check_since(since)
    }

    /// Err (and lost for good) when the lock is lost, or when more than the trusted
    /// share of the window has passed since `since` by either clock.
    fn check_since(&self, since: (Instant, DateTime<Utc>)) -> Result<()> {
        if let Some(why) = self.lost.lock().unwrap().clone() {
            return Err(Error::LockLost(why));
        }
        let (mono, wall) = since;
        let wall_signed = Utc::now().signed_duration_since(wall);
        let wall_gap = wall_signed.to_std().unwrap_or_default();
        // The wall clock fell behind the monotonic one (a step back, a VM restored):
        // our next `refreshed` times would look old to everyone else.
        let behind = chrono::Duration::from_std(mono.elapsed()).unwrap_or_default() - wall_signed;
        if behind > chrono::Duration::seconds(60) {
            return Err(self.lose(format!(
                "the clock went back {}s while the lock was held; others may take the lock for stale",
                behind.num_seconds()
            )));
        }
        let gap = mono.elapsed().max(wall_gap);
        if gap >= lost_after(self.stale) {
            return Err(self.lose(format!(
                "the lock was not refreshed for {}s (suspended, clock jump or stalled storage); another process may have treated it as stale",
                gap.as_secs()
            )));
        }
        Ok(())
    }

    /// Rewrites the lock file in place with a new `refreshed` time. A lock file someone
    /// removed means the lock is lost. Others judge the lock by the previous refresh
    /// until the new content lands, so a refresh that took too long (stalled storage, a
    /// suspended process) loses the lock even though its write succeeded.
    fn refresh(&self) -> Result<()> {
        let mut file = self.file.lock().unwrap();
        let prev = *self.last_ok.lock().unwrap();
        self.check_since(prev)?;
        match self.backend.size(FileType::Lock, &file.1) {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {
                return Err(self
                    .lose("the lock file was removed by another process (`cairn unlock`?)".into()))
            }
            Err(e) => return Err(e),
        }
        let started = (Instant::now(), Utc::now());
        file.0.refreshed = started.1;
        write_lock(&*self.backend, &self.key, &file.0, &file.1)?;
        self.check_since(prev)?;
        // From now on others judge by the time just written: count from before the write.
        *self.last_ok.lock().unwrap() = started;
        Ok(())
    }
}

impl LockHandle {
    /// Whether the guard that took this lock still holds it.
    pub fn is_held(&self) -> bool {
        !self.0.stop.load(Ordering::Relaxed)
    }

    /// Err when the lock is lost or others could think it stale. Cheap: no storage
    /// access. Called right after a write others depend on (an index file, a snapshot),
    /// it tells whether that write may have landed too late.
    pub fn ensure_alive(&self) -> Result<()> {
        self.0.check()
    }

    /// Proves the lock is alive right now, by refreshing it: for the moment before a
    /// snapshot is written or anything is deleted.
    ///
    /// A lock written or refreshed within the last tenth of its window needs no new
    /// proof (a request pair on remote storage): no one with a sane clock can take it
    /// for stale yet, and the listing that followed its write saw it in place.
    pub fn confirm(&self) -> Result<()> {
        let (since, _) = *self.0.last_ok.lock().unwrap();
        if since.elapsed() < self.0.stale / 10 {
            return self.0.check();
        }
        self.0.refresh()
    }

    /// Whether other processes' lock files (live or left by a killed one) were there
    /// when this lock was taken.
    pub fn saw_others(&self) -> bool {
        self.0.saw_others
    }

    pub fn kind(&self) -> LockKind {
        self.0.file.lock().unwrap().0.kind
    }

    /// When this lock was first taken (by this host's clock).
    pub fn created(&self) -> DateTime<Utc> {
        self.0.file.lock().unwrap().0.created
    }

    /// The lock file's name.
    pub fn file_name(&self) -> String {
        self.0.file.lock().unwrap().1.clone()
    }
}

/// A held lock; released (its file deleted) when dropped.
pub struct LockGuard {
    held: Arc<Held>,
    refresher: Option<JoinHandle<()>>,
}

impl LockGuard {
    /// Takes a lock of `kind` with this process's stale window, or fails at once with
    /// `Error::Locked`.
    pub fn acquire(
        backend: Arc<dyn Backend>,
        key: &SealingKey,
        kind: LockKind,
    ) -> Result<LockGuard> {
        Self::acquire_beside(backend, key, kind, &[], stale_after())
    }

    /// Takes a lock of `kind` (stale window `stale`), waiting up to `wait` for
    /// conflicting locks to go; `waiting` is told who holds the repository, once, and
    /// then every half minute.
    pub fn acquire_wait(
        backend: Arc<dyn Backend>,
        key: &SealingKey,
        kind: LockKind,
        stale: Duration,
        wait: Duration,
        waiting: &dyn Fn(&str, Duration),
    ) -> Result<LockGuard> {
        let start = Instant::now();
        let mut told: Option<Instant> = None;
        let mut pause = Duration::from_millis(200);
        loop {
            match Self::acquire_beside(backend.clone(), key, kind, &[], stale) {
                Err(Error::Locked(who)) if start.elapsed() < wait => {
                    let left = wait - start.elapsed();
                    if told.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
                        waiting(&who, left);
                        told = Some(Instant::now());
                    }
                    std::thread::sleep(pause.min(left));
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                other => return other,
            }
        }
    }

    /// Takes an exclusive lock beside locks this process already holds (`own`), without
    /// waiting: `None` when anyone else holds a lock. Prune uses it to delete at once
    /// when the repository is idle.
    pub fn try_exclusive(
        backend: Arc<dyn Backend>,
        key: &SealingKey,
        own: &[&LockHandle],
        stale: Duration,
    ) -> Result<Option<LockGuard>> {
        let names: Vec<String> = own.iter().map(|h| h.file_name()).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        match Self::acquire_beside(backend, key, LockKind::Exclusive, &names, stale) {
            Ok(g) => Ok(Some(g)),
            Err(Error::Locked(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn acquire_beside(
        backend: Arc<dyn Backend>,
        key: &SealingKey,
        kind: LockKind,
        own: &[&str],
        stale: Duration,
    ) -> Result<LockGuard> {
        // Write first, then look (one listing, not two): of two processes that take
        // conflicting locks at the same moment, each sees the other's file, since each
        // wrote before it looked; both back off, which is safe, and a retry settles it.
        let lock = LockFile::new(kind, stale);
        let taken = (Instant::now(), lock.created);
        let name = new_lock_name();
        write_lock(&*backend, key, &lock, &name)?;
        let mut mine = own.to_vec();
        mine.push(&name);
        let (blocking, saw_others) = conflict_and_others(&*backend, key, kind, &mine)?;
        if let Some(who) = blocking {
            let _ = backend.delete(FileType::Lock, &name);
            return Err(Error::Locked(who));
        }
        let held = Arc::new(Held {
            backend,
            key: key.clone(),
            stale,
            file: Mutex::new((lock, name)),
            last_ok: Mutex::new(taken),
            lost: Mutex::new(None),
            saw_others,
            stop: AtomicBool::new(false),
        });
        let refresher = {
            let held = held.clone();
            std::thread::spawn(move || refresh_loop(&held))
        };
        Ok(LockGuard {
            held,
            refresher: Some(refresher),
        })
    }

    pub fn handle(&self) -> LockHandle {
        LockHandle(self.held.clone())
    }
}

fn refresh_loop(held: &Held) {
    let step = Duration::from_millis(100).min(refresh_every(held.stale));
    let every = refresh_every(held.stale);
    let mut next = Instant::now() + every;
    while !held.stop.load(Ordering::Relaxed) {
        // Parked, not asleep: the guard's drop wakes it, so no command waits out a
        // step on its way out (up to 100 ms each time a lock was let go).
        std::thread::park_timeout(step);
        if Instant::now() < next {
            continue;
        }
        next = match held.refresh() {
            Ok(()) => Instant::now() + every,
            // Lost for good: nothing more to refresh.
            Err(Error::LockLost(_)) => return,
            // A failed write (flaky storage): try again soon.
            Err(_) => Instant::now() + (every / 10).max(step),
        };
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.held.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.refresher.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        let name = self.held.file.lock().unwrap().1.clone();
        let _ = self.held.backend.delete(FileType::Lock, &name);
    }
}

/// Stores a content-addressed file others will act on (an index file, a snapshot) only
/// while every lock in `locks` is alive, and takes it back if it landed after one could
/// have been thought stale: others may have deleted what it names meanwhile (a prune
/// that took our then-unindexed packs for leftovers).
pub fn store_while_held(
    backend: &dyn Backend,
    locks: &[LockHandle],
    ft: FileType,
    name: &str,
    bytes: &[u8],
) -> Result<()> {
    let alive = || locks.iter().try_for_each(|h| h.ensure_alive());
    alive()?;
    crate::backend::store(backend, ft, name, bytes)?;
    alive().inspect_err(|_| {
        let _ = backend.delete(ft, name);
    })
}

/// Locks held by others that are not stale: prune's two-phase delete keeps a marked
/// pack while any of them was taken before the mark.
pub fn live_locks(
    backend: &dyn Backend,
    key: &SealingKey,
    own: &[&LockHandle],
) -> Result<Vec<LockFile>> {
    let names: Vec<String> = own.iter().map(|h| h.file_name()).collect();
    let now = Utc::now();
    let mut out = Vec::new();
    for (name, lock) in list_locks(backend, key)? {
        if names.contains(&name) {
            continue;
        }
        match lock {
            Ok(l) if !l.is_stale(now) => out.push(l),
            Ok(_) => {}
            Err(e) => {
                return Err(Error::Other(format!(
                    "unreadable lock file {name} ({e}); see `cairn unlock`"
                )))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::LocalBackend;

    fn setup() -> (tempfile::TempDir, Arc<dyn Backend>, SealingKey) {
        let d = tempfile::tempdir().unwrap();
        let b: Arc<dyn Backend> = Arc::new(LocalBackend::new(d.path().to_path_buf()));
        b.create().unwrap();
        (d, b, SealingKey::new(&[1; 32]))
    }

    #[test]
    fn conflict_matrix() {
        let (_d, b, k) = setup();
        let shared = LockGuard::acquire(b.clone(), &k, LockKind::Shared).unwrap();
        let shared2 = LockGuard::acquire(b.clone(), &k, LockKind::Shared).unwrap();
        let prune = LockGuard::acquire(b.clone(), &k, LockKind::Prune).unwrap();
        assert!(matches!(
            LockGuard::acquire(b.clone(), &k, LockKind::Prune),
            Err(Error::Locked(_))
        ));
        assert!(matches!(
            LockGuard::acquire(b.clone(), &k, LockKind::Exclusive),
            Err(Error::Locked(_))
        ));
        // Beside its own prune lock, a prune gets no exclusive lock while others hold one.
        assert!(
            LockGuard::try_exclusive(b.clone(), &k, &[&prune.handle()], STALE_AFTER)
                .unwrap()
                .is_none()
        );
        drop((shared, shared2));
        let excl = LockGuard::try_exclusive(b.clone(), &k, &[&prune.handle()], STALE_AFTER)
            .unwrap()
            .expect("idle but for our own prune lock");
        assert!(matches!(
            LockGuard::acquire(b.clone(), &k, LockKind::Shared),
            Err(Error::Locked(_))
        ));
        drop((excl, prune));
        assert!(
            b.list(FileType::Lock).unwrap().is_empty(),
            "locks are released"
        );
    }

    #[test]
    fn stale_locks_are_ignored() {
        let (_d, b, k) = setup();
        let old = Utc::now() - chrono::Duration::minutes(31);
        let mut dead = LockFile::new(LockKind::Exclusive, STALE_AFTER);
        dead.hostname = "elsewhere".into();
        dead.pid = 1;
        dead.created = old;
        dead.refreshed = old;
        write_lock(&*b, &k, &dead, &new_lock_name()).unwrap();
        LockGuard::acquire(b.clone(), &k, LockKind::Shared).unwrap();
        // In this process space with a pid that is gone: stale at once.
        dead.hostname = crate::fsmeta::hostname();
        dead.refreshed = Utc::now();
        dead.pid = u32::MAX - 1;
        assert!(dead.is_stale(Utc::now()));
        dead.pid = std::process::id();
        assert!(!dead.is_stale(Utc::now()));
        // Same hostname, another container (pid namespace): its pid means nothing here.
        dead.pid = u32::MAX - 1;
        dead.process_space = "another-boot:pid:[1]".into();
        assert!(!dead.is_stale(Utc::now()));
        // Each lock is judged by the window it states.
        dead.stale_after_secs = 2;
        dead.refreshed = Utc::now() - chrono::Duration::seconds(3);
        assert!(dead.is_stale(Utc::now()));
        dead.stale_after_secs = u64::MAX;
        dead.refreshed = Utc::now() - chrono::Duration::days(2);
        assert!(
            dead.is_stale(Utc::now()),
            "no lock lives past 24 h unrefreshed"
        );
    }

    #[test]
    fn a_refresh_that_lands_too_late_loses_the_lock() {
        let (_d, b, k) = setup();
        let g =
            LockGuard::acquire_beside(b.clone(), &k, LockKind::Shared, &[], Duration::from_secs(3))
                .unwrap();
        let name = g.handle().file_name();
        g.handle().confirm().unwrap();
        // A refresh rewrites the same file.
        assert_eq!(b.list(FileType::Lock).unwrap().len(), 1);
        assert_eq!(g.handle().file_name(), name);
        // As if the process had been stopped for longer than it may trust its lock.
        *g.held.last_ok.lock().unwrap() = (Instant::now() - Duration::from_secs(3), Utc::now());
        assert!(matches!(g.handle().confirm(), Err(Error::LockLost(_))));
        assert!(matches!(g.handle().ensure_alive(), Err(Error::LockLost(_))));
    }

    #[test]
    fn a_removed_lock_file_is_lost_and_confirm_says_so() {
        let (_d, b, k) = setup();
        let g = LockGuard::acquire(b.clone(), &k, LockKind::Shared).unwrap();
        let h = g.handle();
        h.confirm().unwrap();
        for (name, _) in b.list(FileType::Lock).unwrap() {
            b.delete(FileType::Lock, &name).unwrap();
        }
        // Within a tenth of its window a lock is trusted without a look; past it, the
        // confirmation looks and finds the file gone.
        h.confirm().unwrap();
        let window = g.held.stale;
        *g.held.last_ok.lock().unwrap() = (Instant::now() - window / 9, Utc::now() - window / 9);
        assert!(matches!(h.confirm(), Err(Error::LockLost(_))));
        assert!(matches!(h.ensure_alive(), Err(Error::LockLost(_))));
    }
}
