//! A local cache in front of any backend: snapshots, index files and tree packs are kept
//! on local disk, so that listing, `check` and a no-change backup read almost nothing from
//! the repository itself.
//!
//! Only immutable, content-addressed files are cached, and every cached file is checked
//! against its name (BLAKE3) when it is read: a damaged cache entry is dropped and fetched
//! again, never trusted. Writes go through to the repository first.

use std::collections::HashSet;
use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::single_flight::SingleFlight;
use super::{Backend, FileType};
use crate::error::Result;
use crate::id::Id;

pub struct CachedBackend {
    inner: Arc<dyn Backend>,
    dir: PathBuf,
    /// Packs whose cached copy this process has checked against its name.
    verified_packs: Mutex<HashSet<String>>,
    /// Packs found damaged in the repository by `cache_pack`: not fetched again.
    damaged_packs: Mutex<HashSet<String>>,
    /// Packs being fetched into the cache: a thread that needs one waits for it.
    filling: SingleFlight<String>,
}

impl CachedBackend {
    /// `dir` is this repository's own cache folder (created on demand).
    pub fn new(inner: Arc<dyn Backend>, dir: PathBuf) -> Self {
        CachedBackend {
            inner,
            dir,
            verified_packs: Mutex::new(HashSet::new()),
            damaged_packs: Mutex::new(HashSet::new()),
            filling: SingleFlight::default(),
        }
    }

    fn cached(ft: FileType) -> bool {
        matches!(ft, FileType::Snapshot | FileType::Index | FileType::Pack)
    }

    fn path(&self, ft: FileType, name: &str) -> PathBuf {
        self.dir.join(ft.path(name))
    }

    /// A verified cached copy, if there is one (a damaged one is removed).
    fn get(&self, ft: FileType, name: &str) -> Option<Vec<u8>> {
        let p = self.path(ft, name);
        let bytes = fs::read(&p).ok()?;
        if Id::of_file(&bytes).to_hex() == name {
            return Some(bytes);
        }
        let _ = fs::remove_file(&p);
        None
    }

    /// True when the cached copy of a file is whole (its content hashes to its name);
    /// a damaged copy is removed. Streamed: a cached pack is not held whole to be checked.
    fn holds(&self, ft: FileType, name: &str) -> bool {
        let p = self.path(ft, name);
        let Ok(mut f) = fs::File::open(&p) else {
            return false;
        };
        let mut h = blake3::Hasher::new();
        if std::io::copy(&mut f, &mut h).is_ok() && Id(*h.finalize().as_bytes()).to_hex() == name {
            return true;
        }
        let _ = fs::remove_file(&p);
        false
    }

    fn put(&self, ft: FileType, name: &str, data: &[u8]) {
        // Best effort: a cache that cannot be written only costs speed.
        let p = self.path(ft, name);
        let Some(dir) = p.parent() else { return };
        // Owner-only, like the repository: the cache holds its index and trees.
        if super::local::private_dir(dir).is_err() {
            return;
        }
        let tmp = dir.join(format!(".tmp-{}-{name}", std::process::id()));
        // O_EXCL | O_NOFOLLOW: a name planted in the cache folder is never written
        // through; another thread of this process writing the same file wins instead.
        let Ok(mut f) = super::local::private_file(&tmp) else {
            return;
        };
        let written = std::io::Write::write_all(&mut f, data).is_ok();
        drop(f);
        if !written || fs::rename(&tmp, &p).is_err() {
            let _ = fs::remove_file(&tmp);
        }
    }

    /// Fetches a whole pack into the cache (tree packs: small, read again and again).
    /// The storage behind the cache.
    pub fn inner(&self) -> &Arc<dyn Backend> {
        &self.inner
    }

    pub fn cache_pack(&self, name: &str) -> Result<()> {
        // Asked for every tree loaded: the common answer takes one lock, no allocation.
        if self.verified_packs.lock().unwrap().contains(name) {
            return Ok(());
        }
        // Threads walking trees at once fetch each pack once; the others wait for it.
        let name = name.to_string();
        let known = || {
            (self.verified_packs.lock().unwrap().contains(&name)
                || self.damaged_packs.lock().unwrap().contains(&name))
            .then_some(())
        };
        let _flight = match self.filling.enter(&name, known) {
            Ok(()) => return Ok(()),
            Err(flight) => flight,
        };
        if !self.holds(FileType::Pack, &name) {
            let bytes = self.inner.read(FileType::Pack, &name)?;
            if Id::of_file(&bytes).to_hex() != name {
                // Damaged in the repository: reads will say so.
                self.damaged_packs.lock().unwrap().insert(name);
                return Ok(());
            }
            self.put(FileType::Pack, &name, &bytes);
        }
        self.verified_packs.lock().unwrap().insert(name);
        Ok(())
    }

    /// Keeps a pack this process just wrote (and so knows to be whole).
    pub fn put_pack(&self, name: &str, data: &[u8]) {
        self.put(FileType::Pack, name, data);
        self.verified_packs.lock().unwrap().insert(name.to_string());
    }

    /// Drops a cached pack (after one of its blobs failed to verify).
    pub fn evict_pack(&self, name: &str) {
        self.verified_packs.lock().unwrap().remove(name);
        let _ = fs::remove_file(self.path(FileType::Pack, name));
    }

    /// Drops cached files of one kind that the repository no longer has.
    /// A small record this client keeps about the repository (not a repository file).
    pub fn note(&self, name: &str) -> Option<String> {
        fs::read_to_string(self.dir.join("notes").join(name)).ok()
    }

    /// Best effort, like every cache write.
    pub fn set_note(&self, name: &str, value: &str) {
        let dir = self.dir.join("notes");
        if super::local::private_dir(&dir).is_ok() {
            let tmp = dir.join(format!(".{name}.{}", std::process::id()));
            let _ = fs::remove_file(&tmp);
            let written = super::local::private_file(&tmp)
                .and_then(|mut f| std::io::Write::write_all(&mut f, value.as_bytes()));
            if written.is_ok() {
                let _ = fs::rename(&tmp, dir.join(name));
            }
        }
    }

    pub fn forget_missing(&self, ft: FileType, present: &[(String, u64)]) {
        let keep: std::collections::HashSet<&str> =
            present.iter().map(|(n, _)| n.as_str()).collect();
        let base = self.dir.join(ft.dir());
        let dirs: Vec<PathBuf> = if ft == FileType::Pack {
            fs::read_dir(&base)
                .map(|rd| rd.flatten().map(|e| e.path()).collect())
                .unwrap_or_default()
        } else {
            vec![base]
        };
        for d in dirs {
            for e in fs::read_dir(&d).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !keep.contains(name.as_str()) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }
}

impl Backend for CachedBackend {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn create(&self) -> Result<()> {
        self.inner.create()
    }

    fn read(&self, ft: FileType, name: &str) -> Result<Vec<u8>> {
        if Self::cached(ft) && ft != FileType::Pack {
            if let Some(b) = self.get(ft, name) {
                return Ok(b);
            }
            let b = self.inner.read(ft, name)?;
            if Id::of_file(&b).to_hex() == name {
                self.put(ft, name, &b);
            }
            return Ok(b);
        }
        self.inner.read(ft, name)
    }

    fn read_stream(&self, ft: FileType, name: &str) -> Result<Box<dyn std::io::Read + Send>> {
        if ft == FileType::Pack {
            // Packs are never served whole from the cache (see `read`).
            return self.inner.read_stream(ft, name);
        }
        Ok(Box::new(std::io::Cursor::new(self.read(ft, name)?)))
    }

    fn read_range_stream(
        &self,
        ft: FileType,
        name: &str,
        offset: u64,
        len: usize,
    ) -> Result<Box<dyn std::io::Read + Send>> {
        if ft == FileType::Pack && !self.verified_packs.lock().unwrap().contains(name) {
            return self.inner.read_range_stream(ft, name, offset, len);
        }
        let bytes = self.read_range(ft, name, offset, len)?;
        Ok(Box::new(std::io::Cursor::new(bytes)))
    }

    fn read_range(&self, ft: FileType, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        if ft == FileType::Pack && self.verified_packs.lock().unwrap().contains(name) {
            // Served from the cache only for whole packs checked in this process.
            let p = self.path(ft, name);
            if let Ok(f) = fs::File::open(&p) {
                use std::os::unix::fs::FileExt;
                let mut buf = vec![0; len];
                if f.read_exact_at(&mut buf, offset).is_ok() {
                    return Ok(buf);
                }
            }
        }
        self.inner.read_range(ft, name, offset, len)
    }

    fn write(&self, ft: FileType, name: &str, data: &[u8]) -> Result<()> {
        self.inner.write(ft, name, data)?;
        if matches!(ft, FileType::Snapshot | FileType::Index) {
            self.put(ft, name, data);
        }
        Ok(())
    }

    fn list(&self, ft: FileType) -> Result<Vec<(String, u64)>> {
        let listed = self.inner.list(ft)?;
        if matches!(ft, FileType::Snapshot | FileType::Index) {
            self.forget_missing(ft, &listed);
        }
        Ok(listed)
    }

    fn delete(&self, ft: FileType, name: &str) -> Result<()> {
        if ft == FileType::Pack {
            self.verified_packs.lock().unwrap().remove(name);
        }
        let _ = fs::remove_file(self.path(ft, name));
        self.inner.delete(ft, name)
    }

    fn size(&self, ft: FileType, name: &str) -> Result<u64> {
        self.inner.size(ft, name)
    }

    fn connections(&self) -> usize {
        self.inner.connections()
    }

    fn is_remote(&self) -> bool {
        self.inner.is_remote()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{LocalBackend, PausingBackend};
    use std::time::Duration;

    fn repository_with(bytes: &[u8], name: &str) -> (tempfile::TempDir, Arc<LocalBackend>) {
        let dir = tempfile::tempdir().unwrap();
        let local = Arc::new(LocalBackend::new(dir.path().join("repo")));
        local.create().unwrap();
        local.write(FileType::Pack, name, bytes).unwrap();
        (dir, local)
    }

    /// Threads of a tree walk that need the same uncached pack at once fetch it once:
    /// the others wait for that fetch and find it cached.
    #[test]
    fn a_pack_many_threads_cache_at_once_is_fetched_once() {
        let bytes: Vec<u8> = (0..200_000u32).map(|i| (i * 13 % 241) as u8).collect();
        let name = Id::of_file(&bytes).to_hex();
        let (dir, local) = repository_with(&bytes, &name);
        let inner = Arc::new(PausingBackend::new(local, 1));
        let cache = CachedBackend::new(inner.clone(), dir.path().join("cache"));
        std::thread::scope(|s| {
            let done: Vec<_> = (0..8)
                .map(|_| s.spawn(|| cache.cache_pack(&name)))
                .collect();
            assert!(inner.wait_paused(Duration::from_secs(10)));
            std::thread::sleep(Duration::from_millis(200));
            let calls_while_fetching = inner.calls();
            inner.resume();
            assert_eq!(calls_while_fetching, 1);
            for d in done {
                d.join().unwrap().unwrap();
            }
        });
        assert_eq!(inner.calls(), 1);
        assert!(cache.holds(FileType::Pack, &name));
    }

    /// A pack whose bytes do not match its name is fetched whole once, not once for
    /// every tree in it.
    #[test]
    fn a_damaged_pack_is_fetched_whole_once() {
        let bytes = vec![5u8; 50_000];
        let name = Id::of_file(b"something else").to_hex();
        let (dir, local) = repository_with(&bytes, &name);
        let inner = Arc::new(PausingBackend::new(local, 0));
        let cache = CachedBackend::new(inner.clone(), dir.path().join("cache"));
        for _ in 0..5 {
            cache.cache_pack(&name).unwrap();
        }
        assert_eq!(inner.calls(), 1);
        assert!(!cache.holds(FileType::Pack, &name));
    }
}
