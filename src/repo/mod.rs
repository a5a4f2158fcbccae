//! The repository: config, keys, packs, index, trees and snapshots over a `Backend`.
//! A `Repository` is what every command opens; it is `Sync`, so threads can share it.

pub mod config;
pub mod index;
pub mod key;
pub mod lock;
pub mod pack;
pub mod snapshot;
pub mod tree;
mod tree_packs;
pub mod walk;

use std::sync::Arc;

use crate::backend::{Backend, CachedBackend, FileType};
use crate::crypto::{aad, KdfParams, MasterKey};
use crate::error::{Error, Result};
use crate::id::Id;
use config::Config;
use index::{Index, IndexFile};
use key::KeyFile;
use pack::{BlobType, PackEntry};
use snapshot::{Snapshot, SnapshotSet};
use tree::Tree;

pub struct Repository {
    backend: Arc<dyn Backend>,
    /// The local cache in front of `backend`, when one is used.
    cache: Option<Arc<CachedBackend>>,
    pub key: MasterKey,
    pub config: Config,
    /// The key file the password opened.
    pub key_id: String,
    index: Index,
    /// Index files `index` was loaded from: a backup compares them with a fresh listing
    /// to learn whether a prune ran meanwhile.
    index_files: std::collections::HashSet<String>,
    /// Locks taken through this repository, so operations can prove them alive.
    locks: std::sync::Mutex<Vec<lock::LockHandle>>,
    /// The stale window of the locks this process takes.
    lock_stale: std::time::Duration,
    /// Tree packs held whole, for remote storage without the local cache.
    tree_packs: tree_packs::TreePacks,
    /// The key files listed when the repository was opened, and the bytes of the one
    /// that opened it (verified against its name): `check` needs not ask again.
    opened_keys: Option<OpenedKeys>,
}

/// The key files listed when a repository was opened, and the bytes of the one that
/// opened it.
pub struct OpenedKeys {
    pub listed: Vec<(String, u64)>,
    pub bytes: Vec<u8>,
}

/// Whether a repository exists at the backend (its `config` file is there).
pub fn exists(backend: &dyn Backend) -> Result<bool> {
    match backend.size(FileType::Config, "") {
        Ok(_) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

/// The key files of the repository at `backend`: `RepoNotFound` when there is no
/// repository, an integrity error when there is one without keys.
pub fn key_files(backend: &dyn Backend) -> Result<Vec<(String, u64)>> {
    let keys = backend.list(FileType::Key)?;
    if keys.is_empty() {
        if !exists(backend)? {
            return Err(Error::RepoNotFound(backend.location()));
        }
        return Err(Error::integrity("keys/", "the repository has no key files"));
    }
    Ok(keys)
}

impl Repository {
    /// Creates a new repository; refuses a location that already holds one.
    pub fn init(
        backend: Arc<dyn Backend>,
        password: &[u8],
        kdf: KdfParams,
        compression: i32,
    ) -> Result<Repository> {
        Self::init_with_config(backend, password, kdf, Config::new(compression))
    }

    /// Creates a new repository with this config (`Config::new`, or
    /// `Config::sharing_keys_of` another repository).
    pub fn init_with_config(
        backend: Arc<dyn Backend>,
        password: &[u8],
        kdf: KdfParams,
        config: Config,
    ) -> Result<Repository> {
        if exists(&*backend)? {
            return Err(Error::RepoExists(backend.location()));
        }
        let mut key = MasterKey::generate();
        // The folders are made while the password's key is derived: one is a core's
        // work for Argon2id, the other mostly waiting on the file system (261 folders
        // took 0.08 s here), so together they take about as long as the first alone.
        let (created, key_file) = std::thread::scope(|s| {
            let created = s.spawn(|| backend.create());
            let key_file = KeyFile::create(&key, password, kdf);
            (created.join(), key_file)
        });
        created.unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        let key_id = store_key(&*backend, &key_file?)?;
        use_shared_keys(&mut key, &config);
        // The config is written last: until it exists, this is not a repository.
        crate::backend::store(
            &*backend,
            FileType::Config,
            "",
            &config.encode(&key.sealing),
        )?;
        let opened_keys = None;
        Ok(Repository {
            backend,
            cache: None,
            key,
            config,
            key_id,
            index: Index::default(),
            index_files: Default::default(),
            locks: Default::default(),
            lock_stale: lock::stale_after(),
            tree_packs: Default::default(),
            opened_keys,
        })
    }

    /// Opens an existing repository with a password; the index is not loaded yet.
    pub fn open(backend: Arc<dyn Backend>, password: &[u8]) -> Result<Repository> {
        let keys = key_files(&*backend)?;
        Self::open_with_keys(backend, password, keys)
    }

    /// Opens with the key files `key_files` listed (the listing doubles as the test
    /// that a repository is there: one request, not two).
    pub fn open_with_keys(
        backend: Arc<dyn Backend>,
        password: &[u8],
        keys: Vec<(String, u64)>,
    ) -> Result<Repository> {
        // A damaged key file must not lock out a password that another key holds:
        // try them all, and report damage only when no key matched.
        let mut found = None;
        let mut damage = None;
        for (name, _) in &keys {
            let mut bytes = Vec::new();
            let opened = read_verified(&*backend, FileType::Key, name)
                .and_then(|b| {
                    bytes = b;
                    KeyFile::decode(&bytes, name)
                })
                .and_then(|k| k.open(password));
            match opened {
                Ok(Some(k)) => {
                    found = Some((name.clone(), k, bytes));
                    break;
                }
                Ok(None) => {}
                Err(e) => damage = damage.or(Some(e)),
            }
        }
        let (key_id, mut key, key_bytes) = match (found, damage) {
            (Some(f), _) => f,
            (None, Some(e)) => return Err(e),
            (None, None) => return Err(Error::WrongPassword),
        };
        let sealed = backend.read(FileType::Config, "")?;
        let config = Config::decode(&sealed, &key.sealing)?;
        use_shared_keys(&mut key, &config);
        let opened_keys = Some(OpenedKeys {
            listed: keys,
            bytes: key_bytes,
        });
        Ok(Repository {
            backend,
            cache: None,
            key,
            config,
            key_id,
            index: Index::default(),
            index_files: Default::default(),
            locks: Default::default(),
            lock_stale: lock::stale_after(),
            tree_packs: Default::default(),
            opened_keys,
        })
    }

    /// Puts a local cache (snapshots, index files, tree packs) in front of the storage;
    /// `dir` is the cache root, shared by repositories (each gets a folder by its id).
    pub fn use_cache(&mut self, dir: &std::path::Path) -> Result<()> {
        let cache = Arc::new(CachedBackend::new(
            self.backend.clone(),
            dir.join(self.config.id.to_hex()),
        ));
        // Cached snapshots and index files that storage no longer lists are dropped
        // as the listings pass through the cache: no listing of its own.
        self.backend = cache.clone();
        self.cache = Some(cache);
        Ok(())
    }

    /// The local cache, when one is used.
    pub fn cache(&self) -> Option<Arc<CachedBackend>> {
        self.cache.clone()
    }

    pub fn backend(&self) -> &dyn Backend {
        &*self.backend
    }

    pub fn backend_arc(&self) -> Arc<dyn Backend> {
        self.backend.clone()
    }

    /// The key files listed when the repository was opened, and the bytes of the one
    /// that opened it (None for a repository this process created).
    pub fn opened_keys(&self) -> Option<&OpenedKeys> {
        self.opened_keys.as_ref()
    }

    /// Reads a whole content-addressed file and checks it against its name.
    pub fn read_file(&self, ft: FileType, name: &str) -> Result<Vec<u8>> {
        read_verified(&*self.backend, ft, name)
    }

    /// Reads a snapshot from the storage itself, past the local cache: to prove a file
    /// just written is whole where it matters.
    pub fn load_snapshot_from_storage(&self, name: &str) -> Result<Snapshot> {
        let bytes = match &self.cache {
            Some(c) => read_verified(&**c.inner(), FileType::Snapshot, name)?,
            None => self.read_file(FileType::Snapshot, name)?,
        };
        Snapshot::decode(&bytes, &self.key.sealing, &FileType::Snapshot.path(name))
    }

    /// Writes a content-addressed file others will act on, only while this process's
    /// locks are alive (`lock::store_while_held`); returns its id.
    pub fn write_file_while_held(&self, ft: FileType, bytes: &[u8]) -> Result<Id> {
        let id = Id::of_file(bytes);
        lock::store_while_held(&*self.backend, &self.held_locks(), ft, &id.to_hex(), bytes)?;
        Ok(id)
    }

    /// Writes a content-addressed file; returns its id (= its name).
    pub fn write_file(&self, ft: FileType, bytes: &[u8]) -> Result<Id> {
        let id = Id::of_file(bytes);
        crate::backend::store(&*self.backend, ft, &id.to_hex(), bytes)?;
        Ok(id)
    }

    /// Resolves a unique prefix (at least 4 hex digits) to a file name.
    pub fn find_file(&self, ft: FileType, prefix: &str) -> Result<String> {
        if prefix.len() < 4 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::Usage(format!(
                "{prefix:?} is not an id or id prefix (at least 4 hex digits)"
            )));
        }
        let prefix = prefix.to_ascii_lowercase();
        let mut hits = self
            .backend
            .list(ft)?
            .into_iter()
            .filter(|(n, _)| n.starts_with(&prefix));
        match (hits.next(), hits.next()) {
            (Some((n, _)), None) => Ok(n),
            (None, _) => Err(Error::Usage(format!(
                "no {} file matches {prefix:?}",
                ft.dir()
            ))),
            (Some(_), Some(_)) => Err(Error::Usage(format!("id prefix {prefix:?} is ambiguous"))),
        }
    }

    // --- index ---

    /// Reads every index file into memory.
    pub fn load_index(&mut self) -> Result<()> {
        let (names, files) = self.read_index_files()?;
        self.use_index_files(names, &files);
        Ok(())
    }

    /// Lists and reads every index file. A file that vanishes between the listing and
    /// the read was replaced by a prune: list again (a few times) rather than fail.
    pub fn read_index_files(&self) -> Result<(Vec<String>, Vec<IndexFile>)> {
        let mut tries = 0;
        'again: loop {
            let names: Vec<String> = self
                .backend
                .list(FileType::Index)?
                .into_iter()
                .map(|(n, _)| n)
                .collect();
            let mut files = Vec::with_capacity(names.len());
            for name in &names {
                match self.load_index_file(name) {
                    Ok(f) => files.push(f),
                    // A prune deletes the old files one by one after writing the new
                    // ones: list again, backing off, until the set holds still.
                    Err(e) if e.is_not_found() && tries < 20 => {
                        tries += 1;
                        std::thread::sleep(std::time::Duration::from_millis(
                            (5u64 << tries.min(8)).min(1000),
                        ));
                        continue 'again;
                    }
                    Err(e) => return Err(e),
                }
            }
            return Ok((names, files));
        }
    }

    /// Loads the index unless it is loaded and its files are still the same.
    pub fn refresh_index(&mut self) -> Result<()> {
        if !self.index_files.is_empty() {
            let listed: std::collections::HashSet<String> = self
                .backend
                .list(FileType::Index)?
                .into_iter()
                .map(|(n, _)| n)
                .collect();
            if listed == self.index_files {
                return Ok(());
            }
        }
        self.load_index()
    }

    /// Packs the index lists but storage lacks: backups do not rely on their blobs
    /// (stored again instead); `check` reports them.
    pub fn set_unavailable_packs(&mut self, packs: &std::collections::HashSet<Id>) {
        self.index.set_unavailable(packs);
    }

    /// The index files the in-memory index was loaded from.
    pub fn loaded_index_files(&self) -> &std::collections::HashSet<String> {
        &self.index_files
    }

    pub fn load_index_file(&self, name: &str) -> Result<IndexFile> {
        let bytes = self.read_file(FileType::Index, name)?;
        IndexFile::decode(&bytes, &self.key.sealing, &FileType::Index.path(name))
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Replaces the in-memory index (check builds it file by file).
    /// Uses these index files (names and contents) as the index, as `load_index` would
    /// after listing and reading them: for a process that just wrote them.
    pub fn use_index_files(&mut self, names: Vec<String>, files: &[IndexFile]) {
        self.index = Index::from_files(files);
        self.index_files = names.into_iter().collect();
    }

    pub fn set_index(&mut self, index: Index) {
        self.index = index;
    }

    /// Adds an index file written by this process to the in-memory index.
    pub fn index_add(&mut self, file: &IndexFile) {
        self.index.add(file);
    }

    /// Writes an index file and adds it to the in-memory index.
    pub fn save_index(&mut self, file: IndexFile) -> Result<Id> {
        let id = self.write_file(FileType::Index, &file.encode(&self.key.sealing))?;
        self.index.add(&file);
        Ok(id)
    }

    // --- blobs and trees ---

    /// Stores blobs in one new pack and index file, outside the backup pipeline (for
    /// small writes by tools and tests). Returns their ids.
    pub fn save_blobs(&mut self, blobs: &[(pack::BlobType, Vec<u8>)]) -> Result<Vec<Id>> {
        let mut writer = pack::PackWriter::default();
        let mut ids = Vec::with_capacity(blobs.len());
        for (ty, data) in blobs {
            let id = self.key.id_key.blob_id(data);
            let (sealed, ul) = pack::seal_blob(&self.key.sealing, self.config.compression, data);
            writer.add(*ty, id, &sealed, ul);
            ids.push(id);
        }
        let (pack_id, bytes, entries) = writer.finish(&self.key.sealing);
        crate::backend::store(&*self.backend, FileType::Pack, &pack_id.to_hex(), &bytes)?;
        self.save_index(IndexFile {
            packs: vec![index::IndexedPack {
                id: pack_id,
                marked: None,
                blobs: entries,
            }],
        })?;
        Ok(ids)
    }

    /// Reads, authenticates, decompresses and verifies one blob.
    pub fn read_blob(&self, id: &Id) -> Result<Vec<u8>> {
        let loc = self
            .index
            .get(id)
            .ok_or_else(|| Error::integrity("index", format!("blob {id} is not in the index")))?;
        self.read_blob_at(&loc.pack, &loc.entry)
    }

    pub fn read_blob_at(&self, pack: &Id, entry: &PackEntry) -> Result<Vec<u8>> {
        match self.read_blob_once(pack, entry) {
            // A damaged cached pack is dropped and read again from the repository.
            Err(Error::Integrity { .. }) if self.cache.is_some() => {
                self.cache.as_ref().unwrap().evict_pack(&pack.to_hex());
                self.read_blob_once(pack, entry)
            }
            r => r,
        }
    }

    /// Authenticates, decompresses and verifies a blob already fetched (`sealed`: its
    /// bytes in `pack`).
    pub fn open_sealed_blob(&self, pack: &Id, entry: &PackEntry, sealed: &[u8]) -> Result<Vec<u8>> {
        pack::open_blob(
            &self.key.sealing,
            &self.key.id_key,
            entry,
            sealed,
            &FileType::Pack.path(&pack.to_hex()),
        )
    }

    fn read_blob_once(&self, pack: &Id, entry: &PackEntry) -> Result<Vec<u8>> {
        let name = pack.to_hex();
        let sealed = self.backend.read_range(
            FileType::Pack,
            &name,
            entry.offset as u64,
            entry.length as usize,
        )?;
        pack::open_blob(
            &self.key.sealing,
            &self.key.id_key,
            entry,
            &sealed,
            &FileType::Pack.path(&name),
        )
    }

    /// Whether this process holds a tree pack it read whole from storage (and checked
    /// against its name).
    pub fn holds_tree_pack(&self, pack: &Id) -> bool {
        self.tree_packs.held(pack).is_some()
    }

    /// A held tree pack, handed over: `check --read-data` need not fetch it again, and
    /// its memory goes once it is verified.
    pub fn take_tree_pack(&self, pack: &Id) -> Option<Arc<Vec<u8>>> {
        self.tree_packs.take(pack)
    }

    pub fn load_tree(&self, id: &Id) -> Result<Tree> {
        // A tree whose bytes a file has too may be indexed as that file's data blob, in
        // a data pack: only a copy stored as a tree brings its pack in whole.
        let in_tree_pack = self
            .index
            .get(id)
            .filter(|loc| loc.entry.ty == BlobType::Tree);
        if let (Some(cache), Some(loc)) = (&self.cache, &in_tree_pack) {
            // Tree packs are small and read again and again: keep them whole.
            let _ = cache.cache_pack(&loc.pack.to_hex());
        }
        if let (None, true, Some(loc)) = (&self.cache, self.backend.is_remote(), &in_tree_pack) {
            if let Some(pack) = self.tree_packs.get(&*self.backend, &loc.pack) {
                let (from, len) = (loc.entry.offset as usize, loc.entry.length as usize);
                if let Some(sealed) = pack.get(from..from + len) {
                    if let Ok(plain) = self.open_sealed_blob(&loc.pack, &loc.entry, sealed) {
                        return Tree::decode(&plain, &format!("tree {id}"));
                    }
                }
            }
        }
        Tree::decode(&self.read_blob(id)?, &format!("tree {id}"))
    }

    /// Reads a pack's header from its tail (two ranged reads).
    pub fn read_pack_header(&self, pack: &str) -> Result<Vec<PackEntry>> {
        let file = FileType::Pack.path(pack);
        let len = self.backend.size(FileType::Pack, pack)?;
        if len < 4 {
            return Err(Error::integrity(&file, "pack is too short"));
        }
        let trailer = self.backend.read_range(FileType::Pack, pack, len - 4, 4)?;
        let (start, hl) = pack::header_location(len, &trailer, &file)?;
        let sealed = self.backend.read_range(FileType::Pack, pack, start, hl)?;
        let plain = self
            .key
            .sealing
            .open(aad::PACK_HEADER, &sealed)
            .map_err(|_| Error::integrity(&file, "pack header authentication failed"))?;
        pack::decode_header(&plain, start, &file)
    }

    // --- snapshots ---

    pub fn load_snapshot(&self, name: &str) -> Result<Snapshot> {
        let bytes = self.read_file(FileType::Snapshot, name)?;
        Snapshot::decode(&bytes, &self.key.sealing, &FileType::Snapshot.path(name))
    }

    pub fn save_snapshot(&self, s: &Snapshot) -> Result<Id> {
        self.write_file(FileType::Snapshot, &s.encode(&self.key.sealing))
    }

    /// All readable snapshots, oldest first, and the snapshot files that could not be
    /// read. One damaged (or newer-format) snapshot must not lock the admin out of the
    /// others, so it is set aside for the caller to report; a file that vanished
    /// between the listing and the read was forgotten meanwhile and is left out silently.
    pub fn snapshots(&self) -> Result<SnapshotSet> {
        let mut set = SnapshotSet::default();
        for (name, _) in self.backend.list(FileType::Snapshot)? {
            let loaded = Id::from_hex(&name)
                .map_err(|_| Error::integrity(FileType::Snapshot.path(&name), "bad file name"))
                .and_then(|id| Ok((id, self.load_snapshot(&name)?)));
            match loaded {
                Ok(pair) => set.list.push(pair),
                Err(e) if e.is_not_found() => {}
                Err(e) => set.unreadable.push((name, e)),
            }
        }
        set.list
            .sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok(set)
    }

    // --- locks ---

    /// Takes a lock of `kind`, waiting up to `wait` for a conflicting one to go; it is
    /// held until the guard is dropped. Take it before loading the index (DESIGN.md).
    pub fn lock_wait(
        &self,
        kind: lock::LockKind,
        wait: std::time::Duration,
        waiting: &dyn Fn(&str, std::time::Duration),
    ) -> Result<lock::LockGuard> {
        let g = lock::LockGuard::acquire_wait(
            self.backend.clone(),
            &self.key.sealing,
            kind,
            self.lock_stale,
            wait,
            waiting,
        )?;
        self.locks.lock().unwrap().push(g.handle());
        Ok(g)
    }

    /// Takes a lock of `kind` without waiting.
    pub fn lock(&self, kind: lock::LockKind) -> Result<lock::LockGuard> {
        self.lock_wait(kind, std::time::Duration::ZERO, &|_, _| {})
    }

    /// Takes an exclusive lock beside this process's own locks, if no one else holds
    /// one; `None` otherwise.
    pub fn try_exclusive(&self) -> Result<Option<lock::LockGuard>> {
        let own = self.held_locks();
        let own: Vec<&lock::LockHandle> = own.iter().collect();
        let g = lock::LockGuard::try_exclusive(
            self.backend.clone(),
            &self.key.sealing,
            &own,
            self.lock_stale,
        )?;
        if let Some(g) = &g {
            self.locks.lock().unwrap().push(g.handle());
        }
        Ok(g)
    }

    /// Sets the stale window of locks taken from now on (tests use seconds).
    pub fn set_lock_stale_after(&mut self, d: std::time::Duration) {
        self.lock_stale = d;
    }

    /// Err when a lock this process holds is lost or could be thought stale; cheap
    /// (no storage access). For right after a write others depend on.
    pub fn ensure_locks_alive(&self) -> Result<()> {
        for h in self.held_locks() {
            h.ensure_alive()?;
        }
        Ok(())
    }

    /// The locks this process holds on the repository now.
    pub fn held_locks(&self) -> Vec<lock::LockHandle> {
        let mut locks = self.locks.lock().unwrap();
        locks.retain(|h| h.is_held());
        locks.clone()
    }

    /// Proves every lock this process holds is alive, by refreshing it: called right
    /// before a snapshot is written or anything is deleted. (No lock held: nothing to
    /// prove; only tests and read-only commands run so.)
    pub fn confirm_locks(&self) -> Result<()> {
        for h in self.held_locks() {
            h.confirm()?;
        }
        Ok(())
    }

    // --- keys ---

    /// Adds a key file for another password; returns its id.
    pub fn add_key(&self, password: &[u8], kdf: KdfParams) -> Result<String> {
        write_key(&*self.backend, &self.key, password, kdf)
    }

    pub fn keys(&self) -> Result<Vec<(String, KeyFile)>> {
        let mut out = Vec::new();
        for (name, _) in self.backend.list(FileType::Key)? {
            let bytes = self.read_file(FileType::Key, &name)?;
            out.push((name.clone(), KeyFile::decode(&bytes, &name)?));
        }
        Ok(out)
    }
}

/// A repository made by `init --copy-chunker-params` names blobs and cuts chunks with
/// the keys of the repository it was made from (config `shared_keys`).
fn use_shared_keys(key: &mut MasterKey, config: &Config) {
    if let Some(shared) = &config.shared_keys {
        key.id_key = crate::id::IdKey::new(shared.blob_id_key);
        key.chunker_seed = shared.chunker_seed;
    }
}

fn write_key(
    backend: &dyn Backend,
    key: &MasterKey,
    password: &[u8],
    kdf: KdfParams,
) -> Result<String> {
    store_key(backend, &KeyFile::create(key, password, kdf)?)
}

/// Stores a key file under the hash of its bytes; returns that name.
fn store_key(backend: &dyn Backend, key_file: &KeyFile) -> Result<String> {
    let bytes = key_file.encode();
    let id = Id::of_file(&bytes).to_hex();
    crate::backend::store(backend, FileType::Key, &id, &bytes)?;
    Ok(id)
}

/// Reads a file named by the BLAKE3 of its bytes and checks that it still is.
fn read_verified(backend: &dyn Backend, ft: FileType, name: &str) -> Result<Vec<u8>> {
    let bytes = backend.read(ft, name)?;
    if ft != FileType::Config && Id::of_file(&bytes).to_hex() != name {
        return Err(Error::integrity(
            ft.path(name),
            "content does not match its name (damaged or truncated)",
        ));
    }
    Ok(bytes)
}
