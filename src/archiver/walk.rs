//! The front half of the backup pipeline: walk, compare with the parent, read, chunk
//! and hash. One thread; the heavy per-blob work is queued to the `BlobSaver`.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use super::saver::BlobSaver;
use super::{encode_tree, synthetic_dir, BackupOptions, Excluder, VirtualDir, VirtualEntry};
use crate::error::{Error, Result};
use crate::fsmeta::{node_from_metadata, OwnerNames};
use crate::id::Id;
use crate::repo::pack::BlobType;
use crate::repo::snapshot::Summary;
use crate::repo::tree::{Node, NodeKind, Timestamp, Tree};
use crate::repo::Repository;

pub(super) struct Walker<'a> {
    repo: &'a Repository,
    saver: &'a BlobSaver,
    excluder: &'a Excluder,
    opts: &'a BackupOptions,
    warn: &'a (dyn Fn(String) + Sync),
    /// Blobs queued in this run (the index knows only what was stored before).
    queued: HashSet<Id>,
    owners: OwnerNames,
    /// (device, inode) → content, for files with several hard links.
    hardlinks: HashMap<(u64, u64), Vec<Id>>,
    summary: Summary,
}

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
            queued: HashSet::new(),
            owners: OwnerNames::default(),
            hardlinks: HashMap::new(),
            summary: Summary::default(),
        }
    }

    pub(super) fn into_summary(self) -> Summary {
        self.summary
    }

    fn warning(&mut self, msg: String) {
        self.summary.errors += 1;
        (self.warn)(msg);
    }

    /// Stores a blob unless the repository or this run already has it.
    fn store(&mut self, ty: BlobType, id: Id, data: Vec<u8>) -> Result<()> {
        if self.repo.index().contains(&id) || !self.queued.insert(id) {
            return Ok(());
        }
        match ty {
            BlobType::Data => self.summary.data_blobs += 1,
            BlobType::Tree => self.summary.tree_blobs += 1,
        }
        self.summary.data_added += data.len() as u64;
        self.saver.save(ty, id, data)
    }

    fn store_tree(&mut self, tree: Tree) -> Result<Id> {
        let bytes = encode_tree(tree);
        let id = self.repo.key.id_key.blob_id(&bytes);
        self.store(BlobType::Tree, id, bytes)?;
        Ok(id)
    }

    fn load_parent_tree(&mut self, node: Option<&Node>) -> Option<Tree> {
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

    fn count_dir(&mut self, parent: Option<&Node>, subtree: Id) {
        match parent.and_then(|p| p.subtree) {
            None => self.summary.dirs_new += 1,
            Some(old) if old == subtree => self.summary.dirs_unmodified += 1,
            Some(_) => self.summary.dirs_changed += 1,
        }
    }

    /// The root tree for `backup --stdin`: one file read from standard input.
    pub(super) fn save_stdin(&mut self, name: &str) -> Result<Id> {
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
        let (content, size) = self.read_content(std::io::stdin().lock())?;
        node.content = content;
        node.size = size;
        self.summary.files_new += 1;
        self.summary.total_files_processed += 1;
        self.summary.total_bytes_processed += size;
        self.store_tree(Tree { nodes: vec![node] })
    }

    /// Saves the tree of a synthesized directory above the sources.
    pub(super) fn save_virtual(
        &mut self,
        vdir: &VirtualDir,
        path: &Path,
        parent: Option<&Tree>,
    ) -> Result<Id> {
        if vdir.whole {
            return self.save_dir(path, parent);
        }
        let mut nodes = Vec::new();
        for (name, entry) in &vdir.children {
            let child = path.join(std::ffi::OsStr::from_bytes(name));
            let parent_node = parent.and_then(|t| t.find(name));
            match entry {
                VirtualEntry::Source => {
                    if let Some(n) = self.save_entry(name, &child, parent_node, None)? {
                        nodes.push(n);
                    }
                }
                VirtualEntry::Dir(sub) => {
                    let mut node = match child.symlink_metadata() {
                        Ok(m) => {
                            let (n, w) = node_from_metadata(name, &child, &m, &mut self.owners);
                            if let Some(w) = w {
                                self.warning(w);
                            }
                            n
                        }
                        Err(_) => synthetic_dir(name),
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

    /// Saves one real directory's tree.
    fn save_dir(&mut self, dir: &Path, parent: Option<&Tree>) -> Result<Id> {
        let root_dev = dir.symlink_metadata().map(|m| m.dev()).ok();
        let marker = self.excluder.marker_in(dir);
        let mut names: Vec<Vec<u8>> = Vec::new();
        match std::fs::read_dir(dir) {
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
        let mut nodes = Vec::with_capacity(names.len());
        for name in names {
            let path = dir.join(std::ffi::OsStr::from_bytes(&name));
            if self.excluder.is_excluded(&path) {
                continue;
            }
            let parent_node = parent.and_then(|t| t.find(&name));
            if let Some(n) = self.save_entry(&name, &path, parent_node, root_dev)? {
                nodes.push(n);
            }
        }
        self.store_tree(Tree { nodes })
    }

    /// One entry of any kind; `None` when it could not be read (after a warning).
    fn save_entry(
        &mut self,
        name: &[u8],
        path: &Path,
        parent: Option<&Node>,
        dir_dev: Option<u64>,
    ) -> Result<Option<Node>> {
        let meta = match path.symlink_metadata() {
            Ok(m) => m,
            Err(e) => {
                self.warning(format!("{}: {e}", path.display()));
                return Ok(None);
            }
        };
        let (mut node, w) = node_from_metadata(name, path, &meta, &mut self.owners);
        if let Some(w) = w {
            self.warning(w);
        }
        match node.kind {
            NodeKind::File => {
                self.summary.total_files_processed += 1;
                self.summary.total_bytes_processed += node.size;
                if !self.save_file(path, &mut node, parent)? {
                    return Ok(None);
                }
            }
            NodeKind::Dir => {
                let other_fs =
                    self.opts.one_file_system && dir_dev.is_some_and(|d| d != node.device);
                let id = if other_fs {
                    // A mount point: keep the directory itself, not what is mounted there.
                    self.store_tree(Tree::default())?
                } else {
                    let parent_tree = self.load_parent_tree(parent);
                    self.save_dir(path, parent_tree.as_ref())?
                };
                self.count_dir(parent, id);
                node.subtree = Some(id);
            }
            _ => {}
        }
        Ok(Some(node))
    }

    /// Fills in a file's content: from the parent when unchanged, else by reading it.
    /// Returns false when the file could not be read (it is then left out).
    fn save_file(&mut self, path: &Path, node: &mut Node, parent: Option<&Node>) -> Result<bool> {
        let link_key = (node.links > 1).then_some((node.device, node.inode));
        if let Some(content) = link_key.and_then(|k| self.hardlinks.get(&k)) {
            node.content = content.clone();
            self.summary.files_unmodified += 1;
            return Ok(true);
        }
        let unchanged = parent.filter(|p| {
            !self.opts.force
                && p.kind == NodeKind::File
                && p.size == node.size
                && p.mtime == node.mtime
                && p.ctime == node.ctime
                && p.inode == node.inode
                && p.content
                    .iter()
                    .all(|id| self.repo.index().contains(id) || self.queued.contains(id))
        });
        if let Some(p) = unchanged {
            node.content = p.content.clone();
            self.summary.files_unmodified += 1;
        } else {
            let file = match open_source(path) {
                Ok(f) => f,
                Err(e) => {
                    self.warning(format!("{}: {e}", path.display()));
                    return Ok(false);
                }
            };
            match self.read_content(file) {
                Ok((content, size)) => {
                    node.size = size;
                    node.content = content;
                }
                Err(Error::Io { context, source }) if context == "reading" => {
                    self.warning(format!("{}: {source}", path.display()));
                    return Ok(false);
                }
                Err(e) => return Err(e),
            }
            match parent {
                None => self.summary.files_new += 1,
                Some(p) if p.content == node.content => self.summary.files_unmodified += 1,
                Some(_) => self.summary.files_changed += 1,
            }
        }
        if let Some(k) = link_key {
            self.hardlinks.insert(k, node.content.clone());
        }
        Ok(true)
    }

    /// Chunks a stream and stores its blobs; returns the blob ids and the byte count.
    fn read_content<R: Read>(&mut self, source: R) -> Result<(Vec<Id>, u64)> {
        let mut content = Vec::new();
        let mut size = 0u64;
        let params = self.repo.config.chunker;
        for chunk in params.chunks(source, self.repo.key.chunker_seed) {
            let chunk = chunk?;
            size += chunk.len() as u64;
            self.summary.bytes_read += chunk.len() as u64;
            let id = self.repo.key.id_key.blob_id(&chunk);
            content.push(id);
            self.store(BlobType::Data, id, chunk)?;
        }
        Ok((content, size))
    }
}

/// Opens a source file without updating its access time where the kernel allows it.
fn open_source(path: &Path) -> std::io::Result<File> {
    let no_follow = libc::O_NOFOLLOW;
    match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOATIME | no_follow)
        .open(path)
    {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => OpenOptions::new()
            .read(true)
            .custom_flags(no_follow)
            .open(path),
        r => r,
    }
}
