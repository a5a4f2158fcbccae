//! Reading file metadata into tree nodes, and the few facts about this machine that
//! snapshots and keys record.

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;

use crate::repo::tree::{Node, NodeKind, Timestamp, Xattr};

pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

/// Whether a process with this id exists on this machine (EPERM: it does, as another
/// user's).
pub fn process_alive(pid: u32) -> bool {
    use nix::errno::Errno;
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(Errno::ESRCH) => false,
        Err(_) => true,
    }
}

pub fn current_username() -> String {
    let uid = nix::unistd::getuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string())
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// uid/gid → name lookups, cached: a tree of a million files has a handful of owners.
/// Shared by the reader threads; the lock is held only for the map lookup.
#[derive(Default)]
pub struct OwnerNames {
    users: Mutex<HashMap<u32, String>>,
    groups: Mutex<HashMap<u32, String>>,
}

impl OwnerNames {
    pub fn user(&self, uid: u32) -> String {
        if let Some(n) = self.users.lock().unwrap().get(&uid) {
            return n.clone();
        }
        let name = nix::unistd::User::from_uid(uid.into())
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_default();
        self.users.lock().unwrap().insert(uid, name.clone());
        name
    }

    pub fn group(&self, gid: u32) -> String {
        if let Some(n) = self.groups.lock().unwrap().get(&gid) {
            return n.clone();
        }
        let name = nix::unistd::Group::from_gid(gid.into())
            .ok()
            .flatten()
            .map(|g| g.name)
            .unwrap_or_default();
        self.groups.lock().unwrap().insert(gid, name.clone());
        name
    }
}

fn ts(secs: i64, nanos: i64) -> Timestamp {
    Timestamp {
        secs,
        nanos: nanos as u32,
    }
}

/// The parts of a `stat` a node records, from std's `Metadata` or a raw `stat` taken
/// relative to a directory descriptor (`fstatat`).
pub struct StatFields {
    /// `st_mode` (file type and permission bits).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
    pub atime: (i64, i64),
    pub ctime: (i64, i64),
    pub ino: u64,
    pub dev: u64,
    pub nlink: u64,
    pub size: u64,
    pub rdev: u64,
}

impl From<&Metadata> for StatFields {
    fn from(m: &Metadata) -> Self {
        StatFields {
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            mtime: (m.mtime(), m.mtime_nsec()),
            atime: (m.atime(), m.atime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
            ino: m.ino(),
            dev: m.dev(),
            nlink: m.nlink(),
            size: m.len(),
            rdev: m.rdev(),
        }
    }
}

impl From<&libc::stat> for StatFields {
    #[allow(clippy::unnecessary_cast)] // field widths differ between targets
    fn from(st: &libc::stat) -> Self {
        StatFields {
            mode: st.st_mode as u32,
            uid: st.st_uid as u32,
            gid: st.st_gid as u32,
            mtime: (st.st_mtime as i64, st.st_mtime_nsec as i64),
            atime: (st.st_atime as i64, st.st_atime_nsec as i64),
            ctime: (st.st_ctime as i64, st.st_ctime_nsec as i64),
            ino: st.st_ino as u64,
            dev: st.st_dev as u64,
            nlink: st.st_nlink as u64,
            size: st.st_size as u64,
            rdev: st.st_rdev as u64,
        }
    }
}

/// A node from its stat alone: no link target, no xattrs, no content or subtree yet.
pub fn node_from_stat(name: &[u8], st: &StatFields, owners: &OwnerNames) -> Node {
    let kind = match st.mode & libc::S_IFMT {
        libc::S_IFREG => NodeKind::File,
        libc::S_IFDIR => NodeKind::Dir,
        libc::S_IFLNK => NodeKind::Symlink,
        libc::S_IFIFO => NodeKind::Fifo,
        libc::S_IFCHR => NodeKind::CharDevice,
        libc::S_IFBLK => NodeKind::BlockDevice,
        _ => NodeKind::Socket,
    };
    let mut n = Node::new(name.to_vec(), kind);
    n.mode = st.mode & 0o7777;
    n.uid = st.uid;
    n.gid = st.gid;
    n.user = owners.user(n.uid);
    n.group = owners.group(n.gid);
    n.mtime = ts(st.mtime.0, st.mtime.1);
    n.atime = ts(st.atime.0, st.atime.1);
    n.ctime = ts(st.ctime.0, st.ctime.1);
    n.inode = st.ino;
    n.device = st.dev;
    n.links = st.nlink;
    if kind == NodeKind::File {
        n.size = st.size;
    }
    if matches!(kind, NodeKind::CharDevice | NodeKind::BlockDevice) {
        n.rdev = st.rdev;
    }
    n
}

/// A node for `path` from its (not followed) metadata; no content or subtree yet.
/// The link target and xattrs are read through `access` (`path` itself is for
/// messages). Unreadable xattrs or link targets are reported through the returned
/// warning.
pub fn node_from_metadata(
    name: &[u8],
    path: &Path,
    access: &Path,
    meta: &Metadata,
    owners: &OwnerNames,
) -> (Node, Option<String>) {
    let mut n = node_from_stat(name, &StatFields::from(meta), owners);
    let mut warning = None;
    if n.kind == NodeKind::Symlink {
        match std::fs::read_link(access) {
            Ok(t) => n.link_target = t.as_os_str().as_bytes().to_vec(),
            Err(e) => warning = Some(format!("{}: reading link target: {e}", path.display())),
        }
    }
    match read_xattrs(access) {
        Ok(x) => n.xattrs = x,
        Err(e) => warning = xattr_warning(path, e).or(warning),
    }
    (n, warning)
}

/// The warning for xattrs that could not be read (none where the file system has none).
pub fn xattr_warning(path: &Path, e: std::io::Error) -> Option<String> {
    (e.raw_os_error() != Some(libc::ENOTSUP))
        .then(|| format!("{}: reading extended attributes: {e}", path.display()))
}

/// Extended attributes through an open file or directory.
pub fn read_xattrs_of(f: &std::fs::File) -> std::io::Result<Vec<Xattr>> {
    use xattr::FileExt;
    let mut out = Vec::new();
    for name in f.list_xattr()? {
        if let Some(value) = f.get_xattr(&name)? {
            out.push(Xattr {
                name: name.as_bytes().to_vec(),
                value,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Extended attributes of `path` itself (a symlink's own, not its target's).
pub fn read_xattrs(path: &Path) -> std::io::Result<Vec<Xattr>> {
    let mut out = Vec::new();
    for name in xattr::list(path)? {
        if let Some(value) = xattr::get(path, &name)? {
            out.push(Xattr {
                name: name.as_bytes().to_vec(),
                value,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
