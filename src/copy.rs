//! Copy snapshots from one repository into another (`cairn copy`).
//!
//! Blob ids are keyed with a key derived from each repository's master key, so two
//! repositories normally give the same content different ids, and cut it at different
//! places (the gear seed comes from the master key too). Two ways to copy follow:
//!
//! * **Same ids** (the target was made with `init --copy-chunker-params` from the source,
//!   or the other way round, so both hold the same blob id key): every id means the same
//!   content in both. A data blob the target's index lists is not read at all; a missing
//!   one is read from the source (authenticated and verified), sealed with the target's
//!   key and packed. Trees keep their ids.
//! * **Re-chunk** (different id keys): each file's content is streamed, blob after blob,
//!   through the target's chunker and hashed with the target's id key; every tree is
//!   rewritten with the new ids, bottom-up. Memory stays bounded whatever a file's size
//!   (one source blob and one target chunk at a time, plus the saver's bounded queues).
//!   Where both repositories happen to chunk alike this yields the same boundaries, so it
//!   is also the "re-hash blob by blob" case.
//!
//! Write order and safety are the backup's: blobs go through the backup's saver (packs,
//! then index files, written only while the target lock is alive), every blob taken from
//! the target's index is confirmed before any snapshot is written
//! (`archiver::confirm`), and each snapshot is written with `lock::store_while_held`.
//! The caller takes a shared lock on the source and the backup's lock on the target
//! before either index is loaded.

use std::collections::{HashMap, HashSet};
use std::io::Read;

use crate::archiver::confirm::confirm_blobs;
use crate::archiver::saver::{BlobSaver, SaverConfig};
use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::pack::{BlobType, MAX_BLOB};
use crate::repo::snapshot::{Origin, Snapshot};
use crate::repo::Repository;

/// How blobs cross from one repository to the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyMode {
    /// Both repositories share the blob id key: blobs and trees keep their ids.
    SameIds,
    /// Different id keys: file contents are re-chunked and trees rewritten.
    Rechunk,
}

impl CopyMode {
    pub fn of(source: &Repository, target: &Repository) -> CopyMode {
        if source.key.id_key.same_as(&target.key.id_key) {
            CopyMode::SameIds
        } else {
            CopyMode::Rechunk
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CopyMode::SameIds => "same-ids",
            CopyMode::Rechunk => "rechunk",
        }
    }
}

/// One selected source snapshot and what became of it.
#[derive(Clone, Debug)]
pub struct SnapshotCopy {
    pub source_id: Id,
    /// The snapshot written to the target, or `None` when it was already there.
    pub target_id: Option<Id>,
    /// When skipped: the target snapshot that already is a copy of it.
    pub existing: Option<Id>,
    /// The target's snapshot (as written, or the existing copy's source manifest when
    /// skipped).
    pub snapshot: Snapshot,
}

#[derive(Clone, Debug)]
pub struct CopyResult {
    pub mode: CopyMode,
    /// In the order they were handled (oldest first).
    pub snapshots: Vec<SnapshotCopy>,
    pub snapshots_copied: u64,
    pub snapshots_skipped: u64,
    /// New blobs stored in the target.
    pub data_blobs_copied: u64,
    pub tree_blobs_copied: u64,
    /// Distinct blobs the copied snapshots use that the target already had.
    pub blobs_present: u64,
    /// Plaintext bytes of the new blobs, and the bytes of the packs written.
    pub bytes_copied: u64,
    pub bytes_packed: u64,
    pub packs_written: u64,
    /// Plaintext bytes of data blobs read from the source.
    pub source_bytes_read: u64,
    /// Blobs a prune on the target marked while the copy ran, stored again.
    pub blobs_rescued: u64,
}

/// Copies `selected` (ids of source snapshots, each in `all`) into `target`. `all` is
/// the source's readable snapshot list, for remapping parents. Both repositories must be
/// locked and have their index loaded; `warn` gets one line per problem that does not
/// stop the copy.
pub fn copy(
    source: &Repository,
    target: &mut Repository,
    all: &[(Id, Snapshot)],
    selected: &[Id],
    warn: &(dyn Fn(String) + Sync),
) -> Result<CopyResult> {
    let source_repo = source.config.id;
    let target_repo = target.config.id;
    if source_repo == target_repo {
        return Err(Error::Usage(
            "the source and the target are the same repository".into(),
        ));
    }
    let mode = CopyMode::of(source, target);

    // What the target already holds, by origin: a copied snapshot by its `original`,
    // a snapshot taken there by its own id (so copying back is a no-op too).
    let set = target.snapshots()?;
    for w in set.warnings() {
        warn(w);
    }
    let mut existing: HashMap<Origin, Id> = set
        .iter()
        .map(|(id, s)| (s.origin(target_repo, *id), *id))
        .collect();

    let by_id: HashMap<Id, &Snapshot> = all.iter().map(|(id, s)| (*id, s)).collect();
    let mut order: Vec<(Id, &Snapshot)> = Vec::new();
    let mut seen = HashSet::new();
    for id in selected {
        let s = by_id
            .get(id)
            .ok_or_else(|| Error::Other(format!("snapshot {id} is not in the source list")))?;
        if seen.insert(*id) {
            order.push((*id, s));
        }
    }
    // Oldest first: a parent is copied before its children and can be remapped.
    order.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));

    let mut result = CopyResult {
        mode,
        snapshots: Vec::new(),
        snapshots_copied: 0,
        snapshots_skipped: 0,
        data_blobs_copied: 0,
        tree_blobs_copied: 0,
        blobs_present: 0,
        bytes_copied: 0,
        bytes_packed: 0,
        packs_written: 0,
        source_bytes_read: 0,
        blobs_rescued: 0,
    };
    let mut todo = Vec::new();
    for (id, s) in order {
        let origin = s.origin(source_repo, id);
        match existing.get(&origin) {
            Some(&there) => {
                result.snapshots_skipped += 1;
                result.snapshots.push(SnapshotCopy {
                    source_id: id,
                    target_id: None,
                    existing: Some(there),
                    snapshot: s.clone(),
                });
            }
            None => todo.push((id, s, origin)),
        }
    }
    if todo.is_empty() {
        return Ok(result);
    }

    // Copy every tree and blob the snapshots need, then (after confirmation) write the
    // snapshots, oldest first. The walk recurses once per directory level: a thread
    // with a large stack, as the backup's readers have.
    let saver = BlobSaver::start(SaverConfig {
        backend: target.backend_arc(),
        key: target.key.sealing.clone(),
        compression: target.config.compression,
        pack_size: target.config.pack_size as usize,
        dry_run: false,
        cache: target.cache(),
        locks: target.held_locks(),
    });
    let target_ref: &Repository = target;
    let walked = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("cairn-copy".into())
            .stack_size(64 << 20)
            .spawn_scoped(scope, || {
                let mut c = Copier::new(source, target_ref, &saver, mode);
                let roots = todo
                    .iter()
                    .map(|(_, s, _)| c.tree(s.tree))
                    .collect::<Result<Vec<Id>>>()?;
                Ok::<_, Error>((roots, c))
            })
            .map_err(|e| Error::Other(format!("starting the copy thread: {e}")))?
            .join()
            .map_err(|_| Error::Other("the copy thread panicked".into()))?
    });
    let (roots, copier) = walked?;
    let Copier {
        relied,
        counts,
        source_bytes_read,
        ..
    } = copier;
    let written = saver.finish()?;
    for f in &written.index_files {
        target.index_add(f);
    }
    let confirmed = confirm_blobs(target, &relied, &written)?;
    if confirmed.blobs_rescued > 0 {
        warn(format!(
            "a prune marked data this copy uses as unused while it ran: {} blobs were stored again",
            confirmed.blobs_rescued
        ));
    }

    for ((id, s, origin), root) in todo.into_iter().zip(roots) {
        // The parent's copy, if the target has one (copied now or before).
        let parent = s
            .parent
            .and_then(|p| by_id.get(&p).map(|ps| ps.origin(source_repo, p)))
            .and_then(|o| existing.get(&o).copied());
        let snapshot = Snapshot {
            tree: root,
            parent,
            original: Some(origin),
            ..s.clone()
        };
        // As the backup: prove the lock alive, then write while it holds.
        target.confirm_locks()?;
        let new_id = target
            .write_file_while_held(FileType::Snapshot, &snapshot.encode(&target.key.sealing))?;
        existing.insert(origin, new_id);
        result.snapshots_copied += 1;
        result.snapshots.push(SnapshotCopy {
            source_id: id,
            target_id: Some(new_id),
            existing: None,
            snapshot,
        });
    }
    result
        .snapshots
        .sort_by_key(|c| (c.snapshot.time, c.source_id));
    result.data_blobs_copied = counts.data;
    result.tree_blobs_copied = counts.trees;
    result.bytes_copied = counts.bytes;
    result.blobs_present = relied.len() as u64;
    result.bytes_packed = written.packed_bytes;
    result.packs_written = written.packs;
    result.source_bytes_read = source_bytes_read;
    result.blobs_rescued = confirmed.blobs_rescued;
    Ok(result)
}

#[derive(Default)]
struct Counts {
    data: u64,
    trees: u64,
    bytes: u64,
}

/// The walk over source trees, writing what the target lacks.
struct Copier<'a> {
    source: &'a Repository,
    target: &'a Repository,
    saver: &'a BlobSaver,
    mode: CopyMode,
    /// Source tree id → target tree id, for trees already copied in this run.
    trees: HashMap<Id, Id>,
    /// Re-chunk mode: BLAKE3 of a source content list → the target content list, so a
    /// file met again (another snapshot, a hard link) is not read again.
    files: HashMap<[u8; 32], Vec<Id>>,
    /// Blobs queued in this run (the target's index knows only what was there before).
    queued: HashSet<Id>,
    /// Blobs not stored because the target's index had them: confirmed before any
    /// snapshot is written.
    relied: HashSet<Id>,
    counts: Counts,
    source_bytes_read: u64,
}

impl<'a> Copier<'a> {
    fn new(
        source: &'a Repository,
        target: &'a Repository,
        saver: &'a BlobSaver,
        mode: CopyMode,
    ) -> Self {
        Copier {
            source,
            target,
            saver,
            mode,
            trees: HashMap::new(),
            files: HashMap::new(),
            queued: HashSet::new(),
            relied: HashSet::new(),
            counts: Counts::default(),
            source_bytes_read: 0,
        }
    }

    /// Copies the source tree `id` and everything below it; returns its target id.
    fn tree(&mut self, id: Id) -> Result<Id> {
        if let Some(&done) = self.trees.get(&id) {
            return Ok(done);
        }
        let mut tree = self.source.load_tree(&id)?;
        for node in &mut tree.nodes {
            if let Some(sub) = node.subtree {
                node.subtree = Some(self.tree(sub)?);
            }
            if !node.content.is_empty() {
                node.content = self.content(&node.content)?;
            }
        }
        // Re-encoded, so in same-ids mode the id is the source's (the encoding is
        // canonical); otherwise the new ids make a new tree.
        let bytes = tree.encode();
        let new_id = self.target.key.id_key.blob_id(&bytes);
        self.store(BlobType::Tree, new_id, bytes)?;
        self.trees.insert(id, new_id);
        Ok(new_id)
    }

    /// A file's content list in the target.
    fn content(&mut self, content: &[Id]) -> Result<Vec<Id>> {
        match self.mode {
            CopyMode::SameIds => {
                for id in content {
                    if self.known(id) {
                        continue;
                    }
                    let data = self.source.read_blob(id)?;
                    self.source_bytes_read += data.len() as u64;
                    self.store(BlobType::Data, *id, data)?;
                }
                Ok(content.to_vec())
            }
            CopyMode::Rechunk => {
                let mut h = blake3::Hasher::new();
                for id in content {
                    h.update(&id.0);
                }
                let key = *h.finalize().as_bytes();
                if let Some(done) = self.files.get(&key) {
                    return Ok(done.clone());
                }
                let done = self.rechunk(content)?;
                self.files.insert(key, done.clone());
                Ok(done)
            }
        }
    }

    /// Streams a file's blobs from the source through the target's chunker.
    fn rechunk(&mut self, content: &[Id]) -> Result<Vec<Id>> {
        let mut reader = SourceBlobs {
            repo: self.source,
            ids: content.iter(),
            buf: Vec::new(),
            pos: 0,
            read: 0,
            failed: None,
        };
        let params = self.target.config.chunker;
        let seed = self.target.key.chunker_seed;
        let mut out = Vec::new();
        // Each chunk is queued before the next is cut: one chunk in memory at a time
        // (the saver's queues are bounded).
        let mut failed = None;
        for chunk in params.chunks(&mut reader, seed) {
            match chunk {
                Ok(data) => {
                    let id = self.target.key.id_key.blob_id(&data);
                    out.push(id);
                    self.store(BlobType::Data, id, data)?;
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        self.source_bytes_read += reader.read;
        if let Some(e) = failed {
            // The source's own error (integrity, not found) rather than the chunker's
            // wrapping of it, so it keeps its exit code.
            return Err(reader.failed.take().unwrap_or(e));
        }
        Ok(out)
    }

    fn known(&mut self, id: &Id) -> bool {
        if self.target.index().contains(id) {
            self.relied.insert(*id);
            return true;
        }
        self.queued.contains(id)
    }

    /// Stores a blob unless the target or this run already has it.
    fn store(&mut self, ty: BlobType, id: Id, data: Vec<u8>) -> Result<()> {
        if data.len() > MAX_BLOB - 1024 {
            return Err(Error::Other(format!(
                "a directory listing of {} bytes is larger than a blob can be",
                data.len()
            )));
        }
        if self.known(&id) || !self.queued.insert(id) {
            return Ok(());
        }
        match ty {
            BlobType::Data => self.counts.data += 1,
            BlobType::Tree => self.counts.trees += 1,
        }
        self.counts.bytes += data.len() as u64;
        self.saver.save(ty, id, data)
    }
}

/// A file's content in the source, read blob by blob (each authenticated and verified
/// against its id) as the chunker asks for bytes.
struct SourceBlobs<'a, I: Iterator<Item = &'a Id>> {
    repo: &'a Repository,
    ids: I,
    buf: Vec<u8>,
    pos: usize,
    read: u64,
    /// The error behind an I/O error handed to the chunker.
    failed: Option<Error>,
}

impl<'a, I: Iterator<Item = &'a Id>> Read for SourceBlobs<'a, I> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            let Some(id) = self.ids.next() else {
                return Ok(0);
            };
            match self.repo.read_blob(id) {
                Ok(data) => {
                    self.read += data.len() as u64;
                    self.buf = data;
                    self.pos = 0;
                }
                Err(e) => {
                    let msg = e.to_string();
                    self.failed = Some(e);
                    return Err(std::io::Error::other(msg));
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
