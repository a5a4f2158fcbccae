//! Locks (`locks/<id>`): who is using the repository, so that maintenance never
//! removes data a running command depends on.
//!
//! Three kinds. `Shared` (backup, restore, check, forget, listing) excludes only
//! `Exclusive`. `Prune` excludes other prunes and `Exclusive`, not backups: prune's
//! two-phase delete keeps it safe beside them. `Exclusive` (repair, an instant-delete
//! prune) excludes everything. A lock is refreshed every few minutes while held, and is
//! stale when it was not refreshed for 30 minutes, or when its owner ran on this host and
//! that process is gone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, FileType};
use crate::crypto::SealingKey;
use crate::error::{Error, Result};
use crate::id::Id;

pub const LOCK_VERSION: u32 = 1;
/// A lock not refreshed for this long is stale.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
/// How often a held lock is refreshed.
const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);

const AAD: &[u8] = b"cairn.lock.v1";

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
    pub created: DateTime<Utc>,
    pub refreshed: DateTime<Utc>,
}

impl LockFile {
    pub fn encode(&self, key: &SealingKey) -> Vec<u8> {
        key.seal(AAD, &serde_json::to_vec(self).expect("lock serializes"))
    }

    pub fn decode(sealed: &[u8], key: &SealingKey, file: &str) -> Result<LockFile> {
        let plain = key
            .open(AAD, sealed)
            .map_err(|_| Error::integrity(file, "authentication failed"))?;
        serde_json::from_slice(&plain).map_err(|e| Error::integrity(file, e.to_string()))
    }

    /// Stale: not refreshed for `STALE_AFTER`, or its process on this host is gone.
    pub fn is_stale(&self, now: DateTime<Utc>) -> bool {
        let age = now.signed_duration_since(self.refreshed);
        if age.to_std().is_ok_and(|a| a > STALE_AFTER) {
            return true;
        }
        self.hostname == crate::fsmeta::hostname() && !process_alive(self.pid)
    }

    pub fn describe(&self) -> String {
        format!(
            "{} lock held by {}@{} (pid {}) since {}",
            serde_json::to_value(self.kind)
                .unwrap()
                .as_str()
                .unwrap_or("?"),
            self.username,
            self.hostname,
            self.pid,
            self.created.format("%Y-%m-%d %H:%M:%S UTC")
        )
    }
}

fn process_alive(pid: u32) -> bool {
    use nix::errno::Errno;
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(Errno::ESRCH) => false,
        Err(_) => true, // EPERM: it exists, owned by someone else
    }
}

/// Every lock file: (name, decoded lock or the error reading it).
pub fn list_locks(
    backend: &dyn Backend,
    key: &SealingKey,
) -> Result<Vec<(String, Result<LockFile>)>> {
    let mut out = Vec::new();
    for (name, _) in backend.list(FileType::Lock)? {
        let read = backend.read(FileType::Lock, &name);
        let lock = match read {
            Ok(bytes) => LockFile::decode(&bytes, key, &FileType::Lock.path(&name)),
            // Removed between list and read: its holder just let go.
            Err(e) if e.is_not_found() => continue,
            Err(e) => Err(e),
        };
        out.push((name, lock));
    }
    Ok(out)
}

/// A held lock; released (its file deleted) when dropped.
pub struct LockGuard {
    backend: Arc<dyn Backend>,
    name: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
    refresher: Option<JoinHandle<()>>,
}

fn conflict(
    backend: &dyn Backend,
    key: &SealingKey,
    kind: LockKind,
    own: Option<&str>,
) -> Result<Option<String>> {
    let now = Utc::now();
    for (name, lock) in list_locks(backend, key)? {
        if Some(name.as_str()) == own {
            continue;
        }
        match lock {
            Ok(l) if !l.is_stale(now) && kind.conflicts_with(l.kind) => {
                return Ok(Some(l.describe()))
            }
            Ok(_) => {}
            // An unreadable lock file might be anyone's: refuse rather than guess.
            Err(e) if kind == LockKind::Exclusive || kind == LockKind::Prune => {
                return Ok(Some(format!(
                    "unreadable lock file {name} ({e}); see `cairn unlock`"
                )))
            }
            Err(_) => {}
        }
    }
    Ok(None)
}

fn write_lock(backend: &dyn Backend, key: &SealingKey, lock: &LockFile) -> Result<String> {
    let bytes = lock.encode(key);
    let name = Id::of_file(&bytes).to_hex();
    crate::backend::store(backend, FileType::Lock, &name, &bytes)?;
    Ok(name)
}

impl LockGuard {
    pub fn acquire(
        backend: Arc<dyn Backend>,
        key: &SealingKey,
        kind: LockKind,
    ) -> Result<LockGuard> {
        if let Some(who) = conflict(&*backend, key, kind, None)? {
            return Err(Error::Locked(who));
        }
        let now = Utc::now();
        let mut lock = LockFile {
            version: LOCK_VERSION,
            kind,
            hostname: crate::fsmeta::hostname(),
            username: crate::fsmeta::current_username(),
            pid: std::process::id(),
            created: now,
            refreshed: now,
        };
        let name = write_lock(&*backend, key, &lock)?;
        // Look again: someone may have written a conflicting lock at the same moment.
        // Both then back off, which is safe; one retry by the user settles it.
        if let Some(who) = conflict(&*backend, key, kind, Some(&name))? {
            let _ = backend.delete(FileType::Lock, &name);
            return Err(Error::Locked(who));
        }
        let name = Arc::new(Mutex::new(name));
        let stop = Arc::new(AtomicBool::new(false));
        let refresher = {
            let (backend, name, stop, key) =
                (backend.clone(), name.clone(), stop.clone(), key.clone());
            std::thread::spawn(move || {
                let step = Duration::from_millis(200);
                let mut waited = Duration::ZERO;
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(step);
                    waited += step;
                    if waited < REFRESH_EVERY {
                        continue;
                    }
                    waited = Duration::ZERO;
                    lock.refreshed = Utc::now();
                    // New file first, then drop the old: never a moment without a lock.
                    if let Ok(new) = write_lock(&*backend, &key, &lock) {
                        let mut n = name.lock().unwrap();
                        let _ = backend.delete(FileType::Lock, &n);
                        *n = new;
                    }
                }
            })
        };
        Ok(LockGuard {
            backend,
            name,
            stop,
            refresher: Some(refresher),
        })
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
        let _ = self
            .backend
            .delete(FileType::Lock, &self.name.lock().unwrap());
    }
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
        drop((shared, shared2, prune));
        assert!(
            b.list(FileType::Lock).unwrap().is_empty(),
            "locks are released"
        );
        let excl = LockGuard::acquire(b.clone(), &k, LockKind::Exclusive).unwrap();
        assert!(matches!(
            LockGuard::acquire(b.clone(), &k, LockKind::Shared),
            Err(Error::Locked(_))
        ));
        drop(excl);
    }

    #[test]
    fn stale_locks_are_ignored() {
        let (_d, b, k) = setup();
        let old = Utc::now() - chrono::Duration::minutes(31);
        let mut dead = LockFile {
            version: LOCK_VERSION,
            kind: LockKind::Exclusive,
            hostname: "elsewhere".into(),
            username: "u".into(),
            pid: 1,
            created: old,
            refreshed: old,
        };
        write_lock(&*b, &k, &dead).unwrap();
        LockGuard::acquire(b.clone(), &k, LockKind::Shared).unwrap();
        // On this host with a pid that is gone: stale at once.
        dead.hostname = crate::fsmeta::hostname();
        dead.refreshed = Utc::now();
        dead.pid = u32::MAX - 1;
        assert!(dead.is_stale(Utc::now()));
        dead.pid = std::process::id();
        assert!(!dead.is_stale(Utc::now()));
    }
}
