//! `diff`: what changed between two snapshots, or between a snapshot and a live
//! directory. Both sides are walked together in name order; a subtree with the same id on
//! both sides is skipped unread, so two snapshots of a huge tree that differ in one file
//! cost a few tree reads. A live file counts as unchanged by backup's rule (same size,
//! mtime, ctime and inode); otherwise it is read, chunked and hashed with the
//! repository's keys, so a touched but equal file is a metadata change, not a content one.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::Result;
use crate::fsmeta::{self, OwnerNames};
use crate::id::Id;
use crate::repo::tree::{check_depth, is_safe_name, Node, NodeKind};
use crate::repo::Repository;

/// One side of a comparison.
#[derive(Clone, Debug)]
pub enum Side {
    /// A snapshot's directory tree.
    Tree(Id),
    /// A directory on this machine.
    Live(PathBuf),
}

/// One changed path: `+` added, `-` removed, `M` content modified, `U` metadata only,
/// `T` kind changed (restic's modifiers).
#[derive(Clone, Debug, Serialize)]
pub struct Change {
    pub path: String,
    pub modifier: &'static str,
}

/// What one side has that the other does not.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Counts {
    pub files: u64,
    pub dirs: u64,
    pub others: u64,
    /// Data blobs of this side's changed files that the other side's do not have, and
    /// their bytes (plaintext). For a live directory, blobs are known only for the
    /// files read to compare them; `bytes` are the added files' sizes.
    pub data_blobs: u64,
    pub tree_blobs: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct DiffStats {
    /// Files whose content differs.
    pub changed_files: u64,
    /// Entries whose metadata alone differs (listed with `--metadata`).
    pub metadata_changed: u64,
    pub added: Counts,
    pub removed: Counts,
}

struct Walk<'a> {
    repo: &'a Repository,
    owners: OwnerNames,
    metadata: bool,
    report: &'a mut dyn FnMut(Change),
    warn: &'a mut dyn FnMut(String),
    stats: DiffStats,
    /// Data blobs of the changed files on each side (old, new), and their sizes.
    old_blobs: HashSet<Id>,
    new_blobs: HashSet<Id>,
    /// Bytes of live files added (their blobs are not computed).
    live_added_bytes: u64,
    /// Lengths of the chunks of live files read (they are not in the index).
    live_chunks: HashMap<Id, u64>,
}

/// Compares `old` (a snapshot tree) with `new` (a snapshot tree or a live directory),
/// both standing for the snapshot path `root`; `report` gets each change in path order,
/// `warn` each entry of a live directory that could not be read.
pub fn diff(
    repo: &Repository,
    old: Id,
    new: &Side,
    root: &str,
    metadata: bool,
    report: &mut dyn FnMut(Change),
    warn: &mut dyn FnMut(String),
) -> Result<DiffStats> {
    let mut w = Walk {
        repo,
        owners: OwnerNames::default(),
        metadata,
        report,
        warn,
        stats: DiffStats::default(),
        old_blobs: HashSet::new(),
        new_blobs: HashSet::new(),
        live_added_bytes: 0,
        live_chunks: HashMap::new(),
    };
    let root = PathBuf::from(if root.is_empty() { "/" } else { root });
    w.dirs(&Side::Tree(old), new, &root, 0)?;
    let size = |id: &Id| match repo.index().get(id) {
        Some(l) => l.entry.plaintext_len(),
        None => w.live_chunks.get(id).copied().unwrap_or(0),
    };
    let mut stats = std::mem::take(&mut w.stats);
    for id in w.new_blobs.difference(&w.old_blobs) {
        stats.added.data_blobs += 1;
        stats.added.bytes += size(id);
    }
    for id in w.old_blobs.difference(&w.new_blobs) {
        stats.removed.data_blobs += 1;
        stats.removed.bytes += size(id);
    }
    stats.added.bytes += w.live_added_bytes;
    Ok(stats)
}

impl Walk<'_> {
    /// The entries of one side's directory, sorted by name; unsafe names of a hostile
    /// repository are left out (restore refuses them too). None: a live directory that
    /// cannot be read (a warning; it is not compared).
    fn entries(&mut self, side: &Side) -> Result<Option<Vec<Node>>> {
        match side {
            Side::Tree(id) => Ok(Some(
                self.repo
                    .load_tree(id)?
                    .nodes
                    .into_iter()
                    .filter(|n| is_safe_name(&n.name))
                    .collect(),
            )),
            Side::Live(dir) => {
                let mut out = Vec::new();
                let rd = match std::fs::read_dir(dir) {
                    Ok(rd) => rd,
                    Err(e) => {
                        (self.warn)(format!("{}: {e}; not compared", dir.display()));
                        return Ok(None);
                    }
                };
                for entry in rd {
                    let entry = match entry {
                        Ok(e) => e,
                        Err(e) => {
                            (self.warn)(format!("{}: {e}", dir.display()));
                            continue;
                        }
                    };
                    let path = entry.path();
                    let meta = match std::fs::symlink_metadata(&path) {
                        Ok(m) => m,
                        // Gone since the listing: not there.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => {
                            (self.warn)(format!("{}: {e}", path.display()));
                            continue;
                        }
                    };
                    let name = entry.file_name().as_bytes().to_vec();
                    let (node, warning) =
                        fsmeta::node_from_metadata(&name, &path, &path, &meta, &self.owners);
                    if let Some(w) = warning {
                        (self.warn)(w);
                    }
                    out.push(node);
                }
                out.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(Some(out))
            }
        }
    }

    fn dirs(&mut self, old: &Side, new: &Side, path: &Path, depth: usize) -> Result<()> {
        check_depth(path.display(), depth)?;
        let (Some(a), Some(b)) = (self.entries(old)?, self.entries(new)?) else {
            return Ok(());
        };
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            let order = match (a.get(i), b.get(j)) {
                (Some(x), Some(y)) => x.name.cmp(&y.name),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            match order {
                std::cmp::Ordering::Less => {
                    let p = path.join(OsStr::from_bytes(&a[i].name));
                    self.whole(&a[i], old, &p, false, depth)?;
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    let p = path.join(OsStr::from_bytes(&b[j].name));
                    self.whole(&b[j], new, &p, true, depth)?;
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    let p = path.join(OsStr::from_bytes(&a[i].name));
                    self.both(&a[i], old, &b[j], new, &p, depth)?;
                    i += 1;
                    j += 1;
                }
            }
        }
        Ok(())
    }

    /// The side a directory entry `node` of `parent` leads to.
    fn child(parent: &Side, node: &Node) -> Option<Side> {
        match parent {
            Side::Tree(_) => node.subtree.map(Side::Tree),
            Side::Live(dir) => Some(Side::Live(dir.join(OsStr::from_bytes(&node.name)))),
        }
    }

    fn emit(&mut self, path: &Path, kind: NodeKind, modifier: &'static str) {
        let mut p = path.display().to_string();
        if kind == NodeKind::Dir {
            p.push('/');
        }
        (self.report)(Change { path: p, modifier });
    }

    /// An entry only one side has, with everything below it.
    fn whole(
        &mut self,
        node: &Node,
        parent: &Side,
        path: &Path,
        added: bool,
        depth: usize,
    ) -> Result<()> {
        check_depth(path.display(), depth)?;
        self.emit(path, node.kind, if added { "+" } else { "-" });
        self.count_whole(node, parent, added);
        if node.kind == NodeKind::Dir {
            if let Some(side) = Self::child(parent, node) {
                let entries = self.entries(&side)?.unwrap_or_default();
                for n in &entries {
                    let p = path.join(OsStr::from_bytes(&n.name));
                    self.whole(n, &side, &p, added, depth + 1)?;
                }
            }
        }
        Ok(())
    }

    fn count_whole(&mut self, node: &Node, parent: &Side, added: bool) {
        let live = matches!(parent, Side::Live(_));
        let counts = if added {
            &mut self.stats.added
        } else {
            &mut self.stats.removed
        };
        match node.kind {
            NodeKind::File => {
                counts.files += 1;
                if live {
                    self.live_added_bytes += node.size;
                } else if added {
                    self.new_blobs.extend(node.content.iter().copied());
                } else {
                    self.old_blobs.extend(node.content.iter().copied());
                }
            }
            NodeKind::Dir => {
                counts.dirs += 1;
                if !live {
                    counts.tree_blobs += 1;
                }
            }
            _ => counts.others += 1,
        }
    }

    fn both(
        &mut self,
        a: &Node,
        old: &Side,
        b: &Node,
        new: &Side,
        path: &Path,
        depth: usize,
    ) -> Result<()> {
        if a.kind != b.kind {
            self.emit(path, b.kind, "T");
            self.whole_quiet(a, old, false, depth)?;
            self.whole_quiet(b, new, true, depth)?;
            return Ok(());
        }
        let meta_differs = !same_metadata(a, b);
        match a.kind {
            NodeKind::Dir => {
                if meta_differs {
                    self.metadata_change(path, a.kind);
                }
                let (Some(x), Some(y)) = (Self::child(old, a), Self::child(new, b)) else {
                    return Ok(());
                };
                if let (Side::Tree(p), Side::Tree(q)) = (&x, &y) {
                    if p == q {
                        return Ok(());
                    }
                    self.stats.removed.tree_blobs += 1;
                    self.stats.added.tree_blobs += 1;
                }
                self.dirs(&x, &y, path, depth + 1)
            }
            NodeKind::File => {
                let content = match new {
                    Side::Tree(_) => Some(b.content.clone()),
                    Side::Live(dir) => {
                        self.live_content(a, b, &dir.join(OsStr::from_bytes(&b.name)))
                    }
                };
                match content {
                    Some(c) if c == a.content => {
                        if meta_differs {
                            self.metadata_change(path, a.kind);
                        }
                    }
                    c => {
                        self.emit(path, a.kind, "M");
                        self.stats.changed_files += 1;
                        self.old_blobs.extend(a.content.iter().copied());
                        match c {
                            Some(c) => self.new_blobs.extend(c),
                            None => self.live_added_bytes += b.size,
                        }
                    }
                }
                Ok(())
            }
            _ => {
                if a.link_target != b.link_target || a.rdev != b.rdev {
                    self.emit(path, a.kind, "M");
                } else if meta_differs {
                    self.metadata_change(path, a.kind);
                }
                Ok(())
            }
        }
    }

    /// Counts an entry (and what is below it) for a kind change, without listing.
    fn whole_quiet(&mut self, node: &Node, parent: &Side, added: bool, depth: usize) -> Result<()> {
        check_depth(node.name_lossy(), depth)?;
        self.count_whole(node, parent, added);
        if node.kind == NodeKind::Dir {
            if let Some(side) = Self::child(parent, node) {
                for n in &self.entries(&side)?.unwrap_or_default() {
                    self.whole_quiet(n, &side, added, depth + 1)?;
                }
            }
        }
        Ok(())
    }

    fn metadata_change(&mut self, path: &Path, kind: NodeKind) {
        self.stats.metadata_changed += 1;
        if self.metadata {
            self.emit(path, kind, "U");
        }
    }

    /// The blob ids of live file `path` (`live`), compared with snapshot node `snap`:
    /// the snapshot's own when backup would take the file as unchanged, else computed
    /// from the file's bytes; None when it cannot be read (then it counts as changed).
    fn live_content(&mut self, snap: &Node, live: &Node, path: &Path) -> Option<Vec<Id>> {
        if snap.size == live.size
            && snap.mtime == live.mtime
            && snap.ctime == live.ctime
            && snap.inode == live.inode
        {
            return Some(snap.content.clone());
        }
        // Never follow a symlink swapped in, never block on a FIFO swapped in.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path);
        let file: File = match file {
            Ok(f) => f,
            Err(e) => {
                (self.warn)(format!("{}: {e}", path.display()));
                return None;
            }
        };
        match file.metadata() {
            Ok(m) if m.is_file() => {}
            _ => {
                (self.warn)(format!("{}: no longer a regular file", path.display()));
                return None;
            }
        }
        let params = self.repo.config.chunker;
        let seed = self.repo.key.chunker_seed;
        let mut ids = Vec::new();
        for chunk in params.chunks(file, seed) {
            match chunk {
                Ok(c) => {
                    let id = self.repo.key.id_key.blob_id(&c);
                    self.live_chunks.insert(id, c.len() as u64);
                    ids.push(id);
                }
                Err(e) => {
                    (self.warn)(format!("{}: {e}", path.display()));
                    return None;
                }
            }
        }
        Some(ids)
    }
}

/// Metadata a person changes (mode, owner, mtime, xattrs); access and change times,
/// inode and device numbers change by themselves (reads, restores, moves).
fn same_metadata(a: &Node, b: &Node) -> bool {
    a.mode == b.mode
        && a.uid == b.uid
        && a.gid == b.gid
        && a.user == b.user
        && a.group == b.group
        && a.mtime == b.mtime
        && a.xattrs == b.xattrs
}
