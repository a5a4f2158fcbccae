//! `mount`: a read-only FUSE view of the repository (fuser, pure Rust):
//! `ids/<id>/`, `snapshots/<time>/` with `snapshots/latest`, `hosts/<host>/<time>/`,
//! `tags/<tag>/<time>/`, each snapshot holding its absolute source paths.
//!
//! Nothing is built up front: a directory's entries are read from its tree when listed,
//! by offset, so a directory of 200 000 entries streams; inodes are handed out on first
//! sight (inodes.rs). File reads fetch only the blobs covering the range asked for,
//! through a bounded blob cache, and a sequential reader's next blobs are fetched ahead
//! in the background (cache.rs). Several kernel requests are served at once (worker
//! threads), so two readers never wait on one lock. The snapshot list is looked at
//! again when the top folders are visited and it is older than a second or two: a
//! snapshot taken after mounting appears without remounting.

mod cache;
mod inodes;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, OpenFlags, ReplyAttr,
    ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen, ReplyXattr, Request,
};

use crate::error::Result;
use crate::id::Id;
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{is_safe_name, Node, NodeKind, Timestamp};
use crate::repo::Repository;
use cache::Caches;
use inodes::{Inode, Inodes, Virtual, ROOT};

/// How long the kernel may keep what a snapshot holds (it never changes) and what the
/// top folders hold (new snapshots appear).
const TTL_SNAPSHOT: Duration = Duration::from_secs(300);
const TTL_TOP: Duration = Duration::from_secs(1);
/// The snapshot list is read again when it is older than this and a top folder is used.
const RELIST: Duration = Duration::from_secs(2);
/// Blobs a sequential reader's next reads will need, fetched ahead.
const READAHEAD_BLOBS: usize = 8;

pub struct MountOptions {
    /// Bytes of file blobs kept in memory.
    pub blob_cache: usize,
}

/// An open file: its blobs and where each starts.
struct OpenFile {
    blobs: Vec<Id>,
    /// Start offset of each blob, and the file's size at the end.
    starts: Vec<u64>,
    /// Where the last read ended: a read starting there is sequential.
    last_end: AtomicU64,
}

struct Listing {
    snapshots: Vec<(Id, Snapshot)>,
    at: Instant,
}

pub struct CairnFs {
    repo: Arc<RwLock<Repository>>,
    caches: Arc<Caches>,
    inodes: Inodes,
    listing: Mutex<Listing>,
    files: Mutex<std::collections::HashMap<u64, Arc<OpenFile>>>,
    next_fh: AtomicU64,
    uid: u32,
    gid: u32,
    mounted_at: SystemTime,
}

fn time_of(t: &Timestamp) -> SystemTime {
    if t.secs >= 0 {
        UNIX_EPOCH + Duration::new(t.secs as u64, t.nanos)
    } else {
        UNIX_EPOCH - Duration::from_secs(t.secs.unsigned_abs())
    }
}

fn kind_of(k: NodeKind) -> FileType {
    match k {
        NodeKind::File => FileType::RegularFile,
        NodeKind::Dir => FileType::Directory,
        NodeKind::Symlink => FileType::Symlink,
        NodeKind::Fifo => FileType::NamedPipe,
        NodeKind::CharDevice => FileType::CharDevice,
        NodeKind::BlockDevice => FileType::BlockDevice,
        NodeKind::Socket => FileType::Socket,
    }
}

/// A folder name for a snapshot's time (restic's form), unique among `taken`.
fn time_name(s: &Snapshot, taken: &mut std::collections::HashSet<String>) -> String {
    let base = s.time.format("%Y-%m-%dT%H:%M:%S%:z").to_string();
    let mut name = base.clone();
    let mut n = 1;
    while !taken.insert(name.clone()) {
        n += 1;
        name = format!("{base}-{n}");
    }
    name
}

impl CairnFs {
    pub fn new(repo: Repository, opts: &MountOptions) -> Result<CairnFs> {
        let snapshots = repo.snapshots()?.list;
        Ok(CairnFs {
            repo: Arc::new(RwLock::new(repo)),
            caches: Arc::new(Caches::new(opts.blob_cache)?),
            inodes: Inodes::new(),
            listing: Mutex::new(Listing {
                snapshots,
                at: Instant::now(),
            }),
            files: Mutex::default(),
            next_fh: AtomicU64::new(1),
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            mounted_at: SystemTime::now(),
        })
    }

    /// The snapshots, read again (with the index, when it changed) if the list is old.
    fn snapshots(&self) -> Vec<(Id, Snapshot)> {
        let mut l = self.listing.lock().unwrap();
        if l.at.elapsed() >= RELIST {
            let fresh = self.repo.read().unwrap().snapshots().map(|s| s.list);
            if let Ok(list) = fresh {
                let new = list
                    .iter()
                    .any(|(id, _)| !l.snapshots.iter().any(|(x, _)| x == id));
                // The new snapshots' data may be in index files written since: they are
                // shown only once the index is loaded (else tried again next time).
                if !new || self.repo.write().unwrap().refresh_index().is_ok() {
                    l.snapshots = list;
                }
            }
            l.at = Instant::now();
        }
        l.snapshots.clone()
    }

    /// The children of a top folder: name and what it is, in name order.
    fn virtual_children(&self, v: &Virtual) -> Vec<(Vec<u8>, Inode)> {
        let snaps = self.snapshots();
        let mut out: Vec<(Vec<u8>, Inode)> = Vec::new();
        let root = |s: &Snapshot| Inode::SnapRoot {
            tree: s.tree,
            time: s.time.timestamp(),
        };
        // Time-named folders of `list`, and `latest` pointing at the newest.
        let by_time = |list: Vec<&(Id, Snapshot)>, out: &mut Vec<(Vec<u8>, Inode)>| {
            let mut taken = std::collections::HashSet::new();
            let mut newest: Option<(chrono::DateTime<chrono::FixedOffset>, String)> = None;
            for (_, s) in list {
                let name = time_name(s, &mut taken);
                if newest.as_ref().is_none_or(|(t, _)| s.time >= *t) {
                    newest = Some((s.time, name.clone()));
                }
                out.push((name.into_bytes(), root(s)));
            }
            if let Some((_, name)) = newest {
                out.push((b"latest".to_vec(), Inode::Link(name)));
            }
        };
        match v {
            Virtual::Root => {
                for (n, v) in [
                    ("hosts", Virtual::Hosts),
                    ("ids", Virtual::Ids),
                    ("snapshots", Virtual::Snapshots),
                    ("tags", Virtual::Tags),
                ] {
                    out.push((n.as_bytes().to_vec(), Inode::Virtual(v)));
                }
            }
            Virtual::Ids => {
                for (id, s) in &snaps {
                    out.push((id.to_hex().into_bytes(), root(s)));
                }
            }
            Virtual::Snapshots => by_time(snaps.iter().collect(), &mut out),
            Virtual::Hosts => {
                let mut hosts: Vec<&str> = snaps.iter().map(|(_, s)| s.hostname.as_str()).collect();
                hosts.sort_unstable();
                hosts.dedup();
                for h in hosts.into_iter().filter(|h| is_safe_name(h.as_bytes())) {
                    out.push((
                        h.as_bytes().to_vec(),
                        Inode::Virtual(Virtual::Host(h.into())),
                    ));
                }
            }
            Virtual::Tags => {
                let mut tags: Vec<&str> = snaps
                    .iter()
                    .flat_map(|(_, s)| s.tags.iter().map(String::as_str))
                    .collect();
                tags.sort_unstable();
                tags.dedup();
                for t in tags.into_iter().filter(|t| is_safe_name(t.as_bytes())) {
                    out.push((
                        t.as_bytes().to_vec(),
                        Inode::Virtual(Virtual::Tag(t.into())),
                    ));
                }
            }
            Virtual::Host(h) => by_time(
                snaps.iter().filter(|(_, s)| &s.hostname == h).collect(),
                &mut out,
            ),
            Virtual::Tag(t) => by_time(
                snaps.iter().filter(|(_, s)| s.has_tag(t)).collect(),
                &mut out,
            ),
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The tree a folder inode lists (a snapshot root or a directory entry).
    fn tree_of(&self, inode: &Inode) -> Option<Id> {
        match inode {
            Inode::SnapRoot { tree, .. } => Some(*tree),
            Inode::Entry { tree, index, .. } => {
                let t = self.caches.tree(&self.repo, tree).ok()?;
                let n = t.nodes.get(*index as usize)?;
                (n.kind == NodeKind::Dir).then_some(n.subtree).flatten()
            }
            _ => None,
        }
    }

    fn node(&self, tree: &Id, index: u32) -> std::result::Result<Node, Errno> {
        let t = self.caches.tree(&self.repo, tree).map_err(|_| Errno::EIO)?;
        t.nodes.get(index as usize).cloned().ok_or(Errno::ENOENT)
    }

    fn dir_attr(&self, ino: u64, time: SystemTime) -> FileAttr {
        FileAttr {
            ino: INodeNo(ino),
            size: 0,
            blocks: 0,
            atime: time,
            mtime: time,
            ctime: time,
            crtime: time,
            kind: FileType::Directory,
            perm: 0o555,
            nlink: 2,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn attr(&self, ino: u64) -> std::result::Result<(FileAttr, Duration), Errno> {
        let inode = self.inodes.get(ino).ok_or(Errno::ENOENT)?;
        Ok(match inode {
            Inode::Virtual(_) => (self.dir_attr(ino, self.mounted_at), TTL_TOP),
            Inode::Link(target) => {
                let mut a = self.dir_attr(ino, self.mounted_at);
                a.kind = FileType::Symlink;
                a.perm = 0o777;
                a.nlink = 1;
                a.size = target.len() as u64;
                (a, TTL_TOP)
            }
            Inode::SnapRoot { time, .. } => {
                let t = time_of(&Timestamp {
                    secs: time,
                    nanos: 0,
                });
                (self.dir_attr(ino, t), TTL_SNAPSHOT)
            }
            Inode::Entry { tree, index, .. } => {
                let n = self.node(&tree, index)?;
                let attr = FileAttr {
                    ino: INodeNo(ino),
                    size: match n.kind {
                        NodeKind::Symlink => n.link_target.len() as u64,
                        _ => n.size,
                    },
                    blocks: n.size.div_ceil(512),
                    atime: time_of(&n.atime),
                    mtime: time_of(&n.mtime),
                    ctime: time_of(&n.ctime),
                    crtime: time_of(&n.mtime),
                    kind: kind_of(n.kind),
                    perm: (n.mode & 0o7777) as u16,
                    nlink: if n.kind == NodeKind::Dir {
                        2
                    } else {
                        n.links.max(1) as u32
                    },
                    uid: n.uid,
                    gid: n.gid,
                    rdev: n.rdev as u32,
                    blksize: 4096,
                    flags: 0,
                };
                (attr, TTL_SNAPSHOT)
            }
        })
    }

    /// The child `name` of folder `parent`.
    fn child(&self, parent: u64, name: &OsStr) -> std::result::Result<u64, Errno> {
        let inode = self.inodes.get(parent).ok_or(Errno::ENOENT)?;
        if let Inode::Virtual(v) = &inode {
            let children = self.virtual_children(v);
            let (_, what) = children
                .into_iter()
                .find(|(n, _)| n.as_slice() == name.as_bytes())
                .ok_or(Errno::ENOENT)?;
            return Ok(self.inodes.named(parent, name.as_bytes(), what));
        }
        let tree = self.tree_of(&inode).ok_or(Errno::ENOTDIR)?;
        let t = self
            .caches
            .tree(&self.repo, &tree)
            .map_err(|_| Errno::EIO)?;
        let index = t
            .nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name.as_bytes()))
            .map_err(|_| Errno::ENOENT)?;
        let n = &t.nodes[index];
        if !listable(&n.name) {
            return Err(Errno::ENOENT);
        }
        Ok(self.inodes.entry(
            parent,
            tree,
            index as u32,
            root_of(parent, &inode),
            link_of(n),
        ))
    }

    fn xattrs(&self, ino: u64) -> Vec<crate::repo::tree::Xattr> {
        match self.inodes.get(ino) {
            Some(Inode::Entry { tree, index, .. }) => self
                .node(&tree, index)
                .map(|n| n.xattrs)
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }
}

/// The snapshot root folder's inode for a folder `ino` of a snapshot.
fn root_of(ino: u64, inode: &Inode) -> u64 {
    match inode {
        Inode::Entry { root, .. } => *root,
        _ => ino,
    }
}

/// A file's hard-link group in its snapshot, if it has other names: device, inode and
/// a hash of its content.
fn link_of(n: &Node) -> Option<(u64, u64, u64)> {
    use std::hash::{Hash, Hasher};
    if n.kind != NodeKind::File || n.links <= 1 {
        return None;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    n.content.hash(&mut h);
    n.size.hash(&mut h);
    Some((n.device, n.inode, h.finish()))
}

/// A name the mount shows: safe, and one the kernel takes (at most 255 bytes).
fn listable(name: &[u8]) -> bool {
    is_safe_name(name) && name.len() <= 255
}

/// The inode number a listing gives entry `i` of folder `parent` (only shown by
/// `ls -i` on the listing; `stat` gets the real one from the lookup).
fn dir_ino(parent: u64, i: usize) -> INodeNo {
    INodeNo((1 << 62) | ((parent << 24) ^ i as u64))
}

/// Replies with an xattr value or list, or its size when `size` is 0.
fn reply_xattr(reply: ReplyXattr, size: u32, data: &[u8]) {
    if size == 0 {
        reply.size(data.len() as u32);
    } else if data.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(data);
    }
}

impl fuser::Filesystem for CairnFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.child(parent.0, name).and_then(|ino| self.attr(ino)) {
            Ok((attr, ttl)) => reply.entry(&ttl, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.inodes.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino.0) {
            Ok((attr, ttl)) => reply.attr(&ttl, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.inodes.get(ino.0) {
            Some(Inode::Link(target)) => reply.data(target.as_bytes()),
            Some(Inode::Entry { tree, index, .. }) => match self.node(&tree, index) {
                Ok(n) if n.kind == NodeKind::Symlink => reply.data(&n.link_target),
                Ok(_) => reply.error(Errno::EINVAL),
                Err(e) => reply.error(e),
            },
            _ => reply.error(Errno::EINVAL),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let Some(Inode::Entry { tree, index, .. }) = self.inodes.get(ino.0) else {
            return reply.error(Errno::EISDIR);
        };
        let n = match self.node(&tree, index) {
            Ok(n) if n.kind == NodeKind::File => n,
            Ok(_) => return reply.error(Errno::EINVAL),
            Err(e) => return reply.error(e),
        };
        let mut starts = Vec::with_capacity(n.content.len() + 1);
        let mut at = 0u64;
        {
            let repo = self.repo.read().unwrap();
            for id in &n.content {
                starts.push(at);
                match repo.index().get(id) {
                    Some(loc) => at += loc.entry.plaintext_len(),
                    None => return reply.error(Errno::EIO),
                }
            }
        }
        starts.push(at);
        // Blobs that do not add up to the size the snapshot gives: damaged (a reader
        // would get a short or long file without an error).
        if at != n.size {
            return reply.error(Errno::EIO);
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let file = OpenFile {
            blobs: n.content,
            starts,
            last_end: AtomicU64::new(0),
        };
        self.files.lock().unwrap().insert(fh, Arc::new(file));
        // The content never changes: the kernel may keep its pages.
        reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE);
    }

    #[allow(clippy::too_many_arguments)]
    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let Some(file) = self.files.lock().unwrap().get(&fh.0).cloned() else {
            return reply.error(Errno::EBADF);
        };
        let total = *file.starts.last().unwrap_or(&0);
        let end = (offset + size as u64).min(total);
        if offset >= end {
            return reply.data(&[]);
        }
        // The blobs covering [offset, end): only those are fetched.
        let first = file.starts.partition_point(|&s| s <= offset) - 1;
        let mut out = Vec::with_capacity((end - offset) as usize);
        let mut i = first;
        while i < file.blobs.len() && file.starts[i] < end {
            let data = match self.caches.blob(&self.repo, &file.blobs[i]) {
                Ok(d) if d.len() as u64 == file.starts[i + 1] - file.starts[i] => d,
                _ => return reply.error(Errno::EIO),
            };
            let from = offset.saturating_sub(file.starts[i]) as usize;
            let to = ((end - file.starts[i]) as usize).min(data.len());
            if from < to {
                out.extend_from_slice(&data[from..to]);
            }
            i += 1;
        }
        // Sequential: fetch the next blobs while this answer is used.
        if file.last_end.swap(end, Ordering::Relaxed) == offset && offset > 0 {
            let next: Vec<Id> = file
                .blobs
                .iter()
                .skip(i)
                .take(READAHEAD_BLOBS)
                .copied()
                .collect();
            self.caches.prefetch(&self.repo, next);
        }
        reply.data(&out);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: fuser::ReplyEmpty,
    ) {
        self.files.lock().unwrap().remove(&fh.0);
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(inode) = self.inodes.get(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        // Offsets: 1 is ".", 2 is "..", 2 + i + 1 is entry i.
        let mut next = offset;
        if next == 0 {
            if reply.add(ino, 1, FileType::Directory, ".") {
                return reply.ok();
            }
            next = 1;
        }
        if next == 1 {
            if reply.add(INodeNo(ROOT), 2, FileType::Directory, "..") {
                return reply.ok();
            }
            next = 2;
        }
        let skip = (next - 2) as usize;
        if let Inode::Virtual(v) = &inode {
            for (i, (name, what)) in self.virtual_children(v).into_iter().enumerate().skip(skip) {
                let kind = match &what {
                    Inode::Link(_) => FileType::Symlink,
                    _ => FileType::Directory,
                };
                if reply.add(
                    dir_ino(ino.0, i),
                    i as u64 + 3,
                    kind,
                    OsStr::from_bytes(&name),
                ) {
                    break;
                }
            }
            return reply.ok();
        }
        let Some(tree) = self.tree_of(&inode) else {
            return reply.error(Errno::ENOTDIR);
        };
        let t = match self.caches.tree(&self.repo, &tree) {
            Ok(t) => t,
            Err(_) => return reply.error(Errno::EIO),
        };
        for (i, n) in t.nodes.iter().enumerate().skip(skip) {
            if !listable(&n.name) {
                continue;
            }
            // No inode is handed out for a listing (the kernel looks up what it uses):
            // a folder of 200 000 entries costs its tree, not 200 000 table entries.
            if reply.add(
                dir_ino(ino.0, i),
                i as u64 + 3,
                kind_of(n.kind),
                OsStr::from_bytes(&n.name),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self
            .xattrs(ino.0)
            .into_iter()
            .find(|x| x.name == name.as_bytes())
        {
            Some(x) => reply_xattr(reply, size, &x.value),
            None => reply.error(Errno::ENODATA),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let mut list = Vec::new();
        for x in self.xattrs(ino.0) {
            list.extend_from_slice(&x.name);
            list.push(0);
        }
        reply_xattr(reply, size, &list);
    }
}
