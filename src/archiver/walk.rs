//! The front half of the backup pipeline: walk, compare with the parent, read, chunk
//! and hash. The entries of each directory are handled in parallel (rayon); the heavy
//! per-blob work (compression, encryption, packing) is queued to the `BlobSaver`.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;

use rayon::prelude::*;

use super::saver::BlobSaver;
use super::source::{
    open_dir, open_dir_at, open_source, open_source_at, read_link_at, same_file, stat_at,
    DirHandle, SourceReader,
};
use super::sqlite;
use super::{encode_tree, synthetic_dir, BackupOptions, Excluder, VirtualDir, VirtualEntry};
use crate::error::{Error, Result};
use crate::fsmeta::{
    node_from_metadata, node_from_stat, read_xattrs, read_xattrs_of, xattr_warning, OwnerNames,
    StatFields,
};
use crate::id::Id;
use crate::pattern::PatternSet;
use crate::repo::pack::{BlobType, MAX_BLOB};
use crate::repo::snapshot::Summary;
use crate::repo::tree::{Node, NodeKind, Timestamp, Tree, Xattr};
use crate::repo::Repository;

pub(super) struct Walker<'a> {
    repo: &'a Repository,
    saver: &'a BlobSaver,
    excluder: &'a Excluder,
    opts: &'a BackupOptions,
    pub(super) warn: &'a (dyn Fn(String) + Sync),
    /// Blobs queued in this run (the index knows only what was stored before).
    queued: Mutex<HashSet<Id>>,
    /// Blobs this run did not store because the index had them: the backup confirms
    /// they are still there before it writes its snapshot.
    relied: Mutex<HashSet<Id>>,
    owners: OwnerNames,
    /// (device, inode) → content and size, for files with several hard links. The
    /// first member to get here reads the file while holding the slot's lock; the
    /// others wait and take content and size from that one read, so no node mixes
    /// two reads of a file that changes meanwhile.
    hardlinks: Mutex<HashMap<(u64, u64), LinkSlot>>,
    summary: Mutex<Summary>,
    /// Files whose ctime is not older than this may have changed in the same clock
    /// tick as the parent backup read them: they are read again (see `unchanged`).
    racy_after: Option<(i64, u32)>,
    /// `--sqlite-raw`: databases stored as read.
    pub(super) sqlite_raw: Option<PatternSet>,
    /// Databases stored through a consistent copy (their side files are left out).
    pub(super) captured: Mutex<HashSet<std::path::PathBuf>>,
}

/// The clock granularity margin for racy files: file systems stamp times from a
/// coarse clock (a jiffy, up to 10 ms; 1 s on some; 2 s on FAT), so 2 s covers all.
const RACY_MARGIN_SECS: i64 = 2;

/// A hard-link group's one read: content, size and extended attributes, and the stat
/// (size, mtime, ctime) it was taken under. A member whose own stat differs is not the
/// same file (its inode number was reused mid-walk, or it changed) and reads itself.
type LinkSlot = std::sync::Arc<Mutex<Option<LinkRead>>>;

struct LinkRead {
    stamp: (u64, Timestamp, Timestamp),
    content: Vec<Id>,
    size: u64,
    xattrs: Vec<Xattr>,
}

/// Where an entry is: a source named by its path, or a name in an open directory
/// (reached with `*at` calls, never through a symlink swapped in above it).
pub(super) enum At<'a> {
    Path(&'a Path),
    Dir(&'a DirHandle, &'a std::ffi::OsStr),
}

impl At<'_> {
    pub(super) fn stat(&self) -> std::io::Result<StatFields> {
        match self {
            At::Path(p) => p.symlink_metadata().map(|m| StatFields::from(&m)),
            At::Dir(d, name) => stat_at(d, name).map(|st| StatFields::from(&st)),
        }
    }

    fn read_link(&self) -> std::io::Result<Vec<u8>> {
        match self {
            At::Path(p) => std::fs::read_link(p).map(|t| t.into_os_string().into_vec()),
            At::Dir(d, name) => read_link_at(d, name),
        }
    }

    pub(super) fn open_file(&self) -> std::io::Result<File> {
        match self {
            At::Path(p) => open_source(p),
            At::Dir(d, name) => open_source_at(d, name),
        }
    }

    fn open_dir(&self, expect: Option<(u64, u64)>) -> std::io::Result<DirHandle> {
        match self {
            At::Path(p) => open_dir(p, expect),
            At::Dir(d, name) => open_dir_at(d, name, expect),
        }
    }

    /// A path that reaches the entry (through `/proc/self/fd/N` for a directory entry),
    /// for the calls that have no `*at` form (extended attributes of a symlink).
    fn path(&self) -> std::path::PathBuf {
        match self {
            At::Path(p) => p.to_path_buf(),
            At::Dir(d, name) => d.access.join(name),
        }
    }
}

/// Files up to this size are read whole into memory and chunked there; larger ones
/// stream through the chunker.
const READ_WHOLE_MAX: u64 = 8 << 20;

impl<'a> Walker<'a> {
    pub(super) fn new(
        repo: &'a Repository,
        saver: &'a BlobSaver,
        excluder: &'a Excluder,
        opts: &'a BackupOptions,
        warn: &'a (dyn Fn(String) + Sync),
    ) -> Self {
        Walker {
            repo,
            saver,
            excluder,
            opts,
            warn,
            queued: Mutex::new(HashSet::new()),
            relied: Mutex::new(HashSet::new()),
            owners: OwnerNames::default(),
            hardlinks: Mutex::new(HashMap::new()),
            summary: Mutex::new(Summary::default()),
            racy_after: None,
            sqlite_raw: None,
            captured: Mutex::new(HashSet::new()),
        }
    }

    /// `--sqlite-raw` patterns.
    pub(super) fn with_sqlite_raw(mut self, patterns: PatternSet) -> Self {
        self.sqlite_raw = Some(patterns);
        self
    }

    /// Sets when the parent backup started: a file changed near or after that moment
    /// may keep size, mtime and ctime equal to the parent's and still be new.
    pub(super) fn with_parent_start(
        mut self,
        start: Option<chrono::DateTime<chrono::FixedOffset>>,
    ) -> Self {
        self.racy_after =
            start.map(|t| (t.timestamp() - RACY_MARGIN_SECS, t.timestamp_subsec_nanos()));
        self
    }

    /// The summary, and the blobs taken from the index rather than stored.
    pub(super) fn finish(self) -> (Summary, HashSet<Id>) {
        (
            self.summary.into_inner().unwrap(),
            self.relied.into_inner().unwrap(),
        )
    }

    fn count(&self, f: impl FnOnce(&mut Summary)) {
        f(&mut self.summary.lock().unwrap());
    }

    fn warning(&self, msg: String) {
        self.count(|s| s.errors += 1);
        (self.warn)(msg);
    }

    fn is_known(&self, id: &Id) -> bool {
        self.repo.index().contains(id) || self.queued.lock().unwrap().contains(id)
    }

    /// Stores a blob unless the repository or this run already has it.
    fn store(&self, ty: BlobType, id: Id, data: &[u8]) -> Result<()> {
        if data.len() > MAX_BLOB - 1024 {
            return Err(Error::Other(format!(
                "a directory listing of {} bytes is larger than a blob can be",
                data.len()
            )));
        }
        if self.repo.index().contains(&id) {
            self.relied.lock().unwrap().insert(id);
            return Ok(());
        }
        if !self.queued.lock().unwrap().insert(id) {
            return Ok(());
        }
        let len = data.len() as u64;
        self.count(|s| {
            match ty {
                BlobType::Data => s.data_blobs += 1,
                BlobType::Tree => s.tree_blobs += 1,
            }
            s.data_added += len;
        });
        self.saver.save_here(ty, id, data)
    }

    fn store_tree(&self, tree: Tree) -> Result<Id> {
        let bytes = encode_tree(tree);
        let id = self.repo.key.id_key.blob_id(&bytes);
        self.store(BlobType::Tree, id, &bytes)?;
        Ok(id)
    }

    fn load_parent_tree(&self, node: Option<&Node>) -> Option<Tree> {
        let id = node.filter(|n| n.kind == NodeKind::Dir)?.subtree?;
        match self.repo.load_tree(&id) {
            Ok(t) => Some(t),
            Err(e) => {
                (self.warn)(format!(
                    "parent snapshot: {e}; reading this directory in full"
                ));
                None
            }
        }
    }

    fn count_dir(&self, parent: Option<&Node>, subtree: Id) {
        self.count(|s| match parent.and_then(|p| p.subtree) {
            None => s.dirs_new += 1,
            Some(old) if old == subtree => s.dirs_unmodified += 1,
            Some(_) => s.dirs_changed += 1,
        });
    }

    fn node_for(&self, name: &[u8], path: &Path, access: &Path, meta: &std::fs::Metadata) -> Node {
        let (node, w) = node_from_metadata(name, path, access, meta, &self.owners);
        if let Some(w) = w {
            self.warning(w);
        }
        node
    }

    /// The root tree for `backup --stdin` / `--stdin-from-command`: one file read from
    /// `source`.
    pub(super) fn save_stream<R: Read>(&self, name: &str, source: R) -> Result<Id> {
        let mut node = Node::new(name.as_bytes().to_vec(), NodeKind::File);
        node.mode = 0o644;
        node.uid = nix::unistd::getuid().as_raw();
        node.gid = nix::unistd::getgid().as_raw();
        node.user = self.owners.user(node.uid);
        node.group = self.owners.group(node.gid);
        let now = chrono::Utc::now();
        node.mtime = Timestamp {
            secs: now.timestamp(),
            nanos: now.timestamp_subsec_nanos(),
        };
        node.atime = node.mtime;
        node.ctime = node.mtime;
        let (content, size) = self.read_stream(source)?;
        node.content = content;
        node.size = size;
        self.count(|s| {
            s.files_new += 1;
            s.total_files_processed += 1;
            s.total_bytes_processed += size;
        });
        self.store_tree(Tree { nodes: vec![node] })
    }

    /// Saves the tree of a synthesized directory above the sources.
    pub(super) fn save_virtual(
        &self,
        vdir: &VirtualDir,
        path: &Path,
        parent: Option<&Tree>,
    ) -> Result<Id> {
        if vdir.whole {
            return self.save_dir(path, path, None, parent);
        }
        let mut nodes = Vec::new();
        for (name, entry) in &vdir.children {
            let child = path.join(std::ffi::OsStr::from_bytes(name));
            let parent_node = parent.and_then(|t| t.find(name));
            match entry {
                VirtualEntry::Source => {
                    let at = At::Path(&child);
                    if let Some(n) = self.save_entry(name, &child, &at, parent_node, None, false)? {
                        nodes.push(n);
                    }
                }
                VirtualEntry::Dir(sub) => {
                    // An intermediate component may be a symlink to the real
                    // directory (`backup /x/link/sub`): store that directory's
                    // metadata, not the link's. Only the sources themselves are
                    // never followed.
                    let real = std::fs::canonicalize(&child).unwrap_or_else(|_| child.clone());
                    let mut node = match real.symlink_metadata() {
                        Ok(m) if m.is_dir() => self.node_for(name, &real, &real, &m),
                        _ => synthetic_dir(name),
                    };
                    node.kind = NodeKind::Dir;
                    let parent_tree = self.load_parent_tree(parent_node);
                    let id = self.save_virtual(sub, &child, parent_tree.as_ref())?;
                    self.count_dir(parent_node, id);
                    node.subtree = Some(id);
                    nodes.push(node);
                }
            }
        }
        self.store_tree(Tree { nodes })
    }

    /// Saves the tree of a real directory given by path (a source, or `/`): opened
    /// once, never through a symlink, and only while it is the one the walk saw
    /// (`expect`: device and inode).
    fn save_dir(
        &self,
        dir: &Path,
        access: &Path,
        expect: Option<(u64, u64)>,
        parent: Option<&Tree>,
    ) -> Result<Id> {
        match open_dir(access, expect) {
            Ok(handle) => self.save_open_dir(dir, &handle, parent),
            Err(e) => {
                self.warning(format!("{}: {e}", dir.display()));
                self.store_tree(Tree::default())
            }
        }
    }

    /// Saves an open directory's tree; its entries are handled in parallel, each
    /// reached relative to the directory's descriptor (`fstatat`, `openat`,
    /// `readlinkat`), so a directory swapped for a symlink mid-walk is never followed
    /// out of the source. `dir` is the path for patterns and messages.
    fn save_open_dir(&self, dir: &Path, handle: &DirHandle, parent: Option<&Tree>) -> Result<Id> {
        let root_dev = handle.file.metadata().map(|m| m.dev()).ok();
        let marker = self.excluder.marker_in(&handle.access);
        let mut names: Vec<Vec<u8>> = Vec::new();
        match std::fs::read_dir(&handle.access) {
            Ok(rd) => {
                for entry in rd {
                    match entry {
                        Ok(e) => names.push(e.file_name().as_bytes().to_vec()),
                        Err(e) => self.warning(format!("{}: {e}", dir.display())),
                    }
                }
            }
            Err(e) => self.warning(format!("{}: {e}", dir.display())),
        }
        if let Some(m) = &marker {
            names.retain(|n| n == m.as_bytes());
        }
        names.sort();
        // SQLite databases with side files: always copied (a WAL can change while the
        // database file keeps its size and times), their side files held back.
        let bases = self.sqlite_bases(dir, handle, &names);
        let is_side = |n: &[u8]| sqlite::side_file_base(n).is_some_and(|b| bases.contains(b));
        let entry = |name: &Vec<u8>| {
            let name_os = std::ffi::OsStr::from_bytes(name);
            let path = dir.join(name_os);
            if self.excluder.is_excluded(&path) {
                return Ok(None);
            }
            let parent_node = parent.and_then(|t| t.find(name));
            let at = At::Dir(handle, name_os);
            let force = bases.contains(name.as_slice());
            self.save_entry(name, &path, &at, parent_node, root_dev, force)
        };
        let mut nodes: Vec<Node> = names
            .par_iter()
            .filter(|n| !is_side(n))
            .map(entry)
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect();
        // Side files of a database that could not be copied are stored as read.
        let mut late = Vec::new();
        for n in names.iter().filter(|n| is_side(n)) {
            let base = sqlite::side_file_base(n).expect("a side file");
            let captured = self
                .captured
                .lock()
                .unwrap()
                .contains(&dir.join(std::ffi::OsStr::from_bytes(base)));
            if !captured {
                late.extend(entry(n)?);
            }
        }
        if !late.is_empty() {
            nodes.extend(late);
            nodes.sort_by(|a, b| a.name.cmp(&b.name));
        }
        self.store_tree(Tree { nodes })
    }

    fn xattrs_by_path(&self, node: &mut Node, path: &Path, at: &At) {
        match read_xattrs(&at.path()) {
            Ok(x) => node.xattrs = x,
            Err(e) => {
                if let Some(w) = xattr_warning(path, e) {
                    self.warning(w);
                }
            }
        }
    }

    /// Reads extended attributes through an open file or directory.
    fn xattrs_of(&self, node: &mut Node, path: &Path, f: &File) {
        match read_xattrs_of(f) {
            Ok(x) => node.xattrs = x,
            Err(e) => {
                if let Some(w) = xattr_warning(path, e) {
                    self.warning(w);
                }
            }
        }
    }

    /// One entry of any kind; `None` when it could not be read (after a warning).
    /// `path` names it (patterns, messages); `at` reaches it.
    fn save_entry(
        &self,
        name: &[u8],
        path: &Path,
        at: &At,
        parent: Option<&Node>,
        dir_dev: Option<u64>,
        force_sqlite: bool,
    ) -> Result<Option<Node>> {
        let st = match at.stat() {
            Ok(st) => st,
            Err(e) => {
                self.warning(format!("{}: {e}", path.display()));
                return Ok(None);
            }
        };
        let mut node = node_from_stat(name, &st, &self.owners);
        match node.kind {
            NodeKind::File => {
                let size = node.size;
                self.count(|s| {
                    s.total_files_processed += 1;
                    s.total_bytes_processed += size;
                });
                let saved = self.save_file(path, at, &mut node, parent, force_sqlite)?;
                // A database copied through SQLite is that name's copy: its other names
                // (hard links) have copies of their own, and restore must not link them.
                if node.links > 1 && self.captured.lock().unwrap().contains(path) {
                    node.links = 1;
                }
                if let Some(p) = &self.opts.progress {
                    p.add(1, size);
                }
                if !saved {
                    return Ok(None);
                }
            }
            NodeKind::Dir => {
                let other_fs =
                    self.opts.one_file_system && dir_dev.is_some_and(|d| d != node.device);
                let id = if other_fs {
                    // A mount point: keep the directory itself, not what is mounted there.
                    self.xattrs_by_path(&mut node, path, at);
                    self.store_tree(Tree::default())?
                } else {
                    let parent_tree = self.load_parent_tree(parent);
                    match at.open_dir(Some((node.device, node.inode))) {
                        Ok(handle) => {
                            self.xattrs_of(&mut node, path, &handle.file);
                            self.save_open_dir(path, &handle, parent_tree.as_ref())?
                        }
                        Err(e) => {
                            self.warning(format!("{}: {e}", path.display()));
                            self.store_tree(Tree::default())?
                        }
                    }
                };
                self.count_dir(parent, id);
                node.subtree = Some(id);
            }
            NodeKind::Symlink => {
                match at.read_link() {
                    Ok(t) if !t.is_empty() => node.link_target = t,
                    Ok(_) => return Ok(None),
                    Err(e) => {
                        // Swapped or removed after the walk saw it: a link without a
                        // target cannot be restored, so it is left out.
                        self.warning(format!("{}: reading link target: {e}", path.display()));
                        return Ok(None);
                    }
                }
                self.xattrs_by_path(&mut node, path, at);
            }
            _ => self.xattrs_by_path(&mut node, path, at),
        }
        Ok(Some(node))
    }

    /// Whether the parent's node says this file is unchanged (and its data still there).
    fn unchanged<'p>(&self, node: &Node, parent: Option<&'p Node>) -> Option<&'p Node> {
        let o = self.opts;
        parent.filter(|p| {
            !o.force
                && p.kind == NodeKind::File
                && p.size == node.size
                && p.mtime == node.mtime
                && (o.ignore_ctime || p.ctime == node.ctime)
                && (o.ignore_inode || p.inode == node.inode)
                && self.racy_after.is_none_or(|t| {
                    let c = if o.ignore_ctime {
                        node.mtime
                    } else {
                        node.ctime
                    };
                    (c.secs, c.nanos) < t
                })
                && p.content.iter().all(|id| self.is_known(id))
        })
    }

    /// Fills in a file's content: from the parent when unchanged, else by reading it.
    /// Returns false when the file could not be read (it is then left out).
    fn save_file(
        &self,
        path: &Path,
        at: &At,
        node: &mut Node,
        parent: Option<&Node>,
        force_sqlite: bool,
    ) -> Result<bool> {
        // A database with side files is copied under each of its names: a hard-link
        // group's shared read would skip the copy for all but one.
        if node.links <= 1 || force_sqlite {
            return self.save_file_once(path, at, node, parent, force_sqlite);
        }
        let slot = self
            .hardlinks
            .lock()
            .unwrap()
            .entry((node.device, node.inode))
            .or_default()
            .clone();
        let mut slot = slot.lock().unwrap();
        let stamp = (node.size, node.mtime, node.ctime);
        if let Some(read) = slot.as_ref().filter(|r| r.stamp == stamp) {
            node.content = read.content.clone();
            node.size = read.size;
            node.xattrs = read.xattrs.clone();
            self.count(|s| s.files_unmodified += 1);
            return Ok(true);
        }
        let earlier = slot.as_ref().map(|r| r.content.clone());
        let saved = self.save_file_once(path, at, node, parent, force_sqlite)?;
        if saved && earlier.is_some_and(|c| c != node.content) {
            self.warning(format!(
                "{}: a hard-linked file changed during the backup; this link is stored with what was read for it",
                path.display()
            ));
        }
        if saved {
            *slot = Some(LinkRead {
                stamp,
                content: node.content.clone(),
                size: node.size,
                xattrs: node.xattrs.clone(),
            });
        }
        Ok(saved)
    }

    fn save_file_once(
        &self,
        path: &Path,
        at: &At,
        node: &mut Node,
        parent: Option<&Node>,
        force_sqlite: bool,
    ) -> Result<bool> {
        let unchanged = if force_sqlite {
            None
        } else {
            self.unchanged(node, parent)
        };
        if let Some(p) = unchanged {
            node.content = p.content.clone();
            // Read, not copied from the parent: a parent whose read of them failed, or
            // that ran as a user who could not see them all, must not hide them.
            self.xattrs_by_path(node, path, at);
            let queued = self.queued.lock().unwrap();
            self.relied
                .lock()
                .unwrap()
                .extend(p.content.iter().filter(|id| !queued.contains(id)));
            self.count(|s| s.files_unmodified += 1);
        } else {
            let read = at
                .open_file()
                .and_then(|f| same_file(f, node))
                .and_then(|(f, seen)| {
                    self.xattrs_of(node, path, &f);
                    match self.read_sqlite(path, at, &f, node.size) {
                        Some(read) => read,
                        None => self.read_file_checked(&f, Some(seen)),
                    }
                });
            match read {
                Ok((Ok((content, size)), changed)) => {
                    // What was read, consistently: content and size of one read.
                    node.size = size;
                    node.content = content;
                    if changed {
                        self.warning(format!(
                            "{}: file changed while it was read; the snapshot holds what was read",
                            path.display()
                        ));
                    }
                }
                Ok((Err(e), _)) => return Err(e),
                Err(e) => {
                    self.warning(format!("{}: {e}", path.display()));
                    return Ok(false);
                }
            }
            self.count(|s| match parent {
                None => s.files_new += 1,
                Some(p) if p.content == node.content => s.files_unmodified += 1,
                Some(_) => s.files_changed += 1,
            });
        }
        Ok(true)
    }

    /// Reads a file and tells whether it changed meanwhile: its size, mtime or ctime
    /// (fstat before and after) moved, or the bytes read differ from its size.
    #[allow(clippy::type_complexity)]
    pub(super) fn read_file_checked(
        &self,
        file: &File,
        before: Option<std::fs::Metadata>,
    ) -> std::io::Result<(Result<(Vec<Id>, u64)>, bool)> {
        let before = match before {
            Some(m) => m,
            None => file.metadata()?,
        };
        let stamp = |m: &std::fs::Metadata| {
            (
                m.len(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec(),
            )
        };
        let read = self.read_file(file, before.len())?;
        let after = file.metadata()?;
        let changed =
            stamp(&before) != stamp(&after) || matches!(&read, Ok((_, n)) if *n != before.len());
        Ok((read, changed))
    }

    /// Reads and stores a file's content. The outer error is a source read error (the
    /// file is skipped with a warning); the inner one a repository error (fatal).
    pub(super) fn read_file(
        &self,
        file: &File,
        size_hint: u64,
    ) -> std::io::Result<Result<(Vec<Id>, u64)>> {
        let mut file = SourceReader::new(file);
        if size_hint <= READ_WHOLE_MAX {
            // Small files, the common case: one read into memory, no streaming chunker.
            let mut data = Vec::with_capacity(size_hint as usize);
            (&mut file)
                .take(READ_WHOLE_MAX + 1)
                .read_to_end(&mut data)?;
            if data.len() as u64 <= READ_WHOLE_MAX {
                return Ok(self.store_chunks(data));
            }
            // It grew while we read it: stream what we have and the rest.
            return self.stream_source(std::io::Cursor::new(data).chain(file));
        }
        self.stream_source(file)
    }

    fn stream_source<R: Read>(&self, source: R) -> std::io::Result<Result<(Vec<Id>, u64)>> {
        // The chunker reports source read errors as `Io`; the saver never does.
        match self.read_stream(source) {
            Err(Error::Io { source, .. }) => Err(source),
            other => Ok(other),
        }
    }

    /// Chunks an in-memory file and stores its blobs.
    fn store_chunks(&self, data: Vec<u8>) -> Result<(Vec<Id>, u64)> {
        let params = self.repo.config.chunker;
        let size = data.len() as u64;
        self.count(|s| s.bytes_read += size);
        let mut content = Vec::new();
        for (start, len) in params.cut_points(&data, self.repo.key.chunker_seed) {
            let chunk = &data[start..start + len];
            let id = self.repo.key.id_key.blob_id(chunk);
            content.push(id);
            self.store(BlobType::Data, id, chunk)?;
        }
        Ok((content, size))
    }

    /// Chunks a stream and stores its blobs; returns the blob ids and the byte count.
    fn read_stream<R: Read>(&self, source: R) -> Result<(Vec<Id>, u64)> {
        let mut content = Vec::new();
        let mut size = 0u64;
        let params = self.repo.config.chunker;
        for chunk in params.chunks(source, self.repo.key.chunker_seed) {
            let chunk = chunk?;
            size += chunk.len() as u64;
            let len = chunk.len() as u64;
            self.count(|s| s.bytes_read += len);
            let id = self.repo.key.id_key.blob_id(&chunk);
            content.push(id);
            self.store(BlobType::Data, id, &chunk)?;
        }
        Ok((content, size))
    }
}
