//! Reading file metadata into tree nodes, and the few facts about this machine that
//! snapshots and keys record.

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::Mutex;

use crate::repo::tree::{Node, NodeKind, Timestamp, Xattr};

pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
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

/// A node for `path` from its (not followed) metadata; no content or subtree yet.
/// The link target and xattrs are read through `access` (a path relative to an open
/// directory, see archiver/walk.rs; `path` itself is for messages). Unreadable xattrs
/// or link targets are reported through the returned warning.
pub fn node_from_metadata(
    name: &[u8],
    path: &Path,
    access: &Path,
    meta: &Metadata,
    owners: &OwnerNames,
) -> (Node, Option<String>) {
    let ft = meta.file_type();
    let kind = if ft.is_file() {
        NodeKind::File
    } else if ft.is_dir() {
        NodeKind::Dir
    } else if ft.is_symlink() {
        NodeKind::Symlink
    } else if ft.is_fifo() {
        NodeKind::Fifo
    } else if ft.is_char_device() {
        NodeKind::CharDevice
    } else if ft.is_block_device() {
        NodeKind::BlockDevice
    } else {
        NodeKind::Socket
    };
    let mut n = Node::new(name.to_vec(), kind);
    n.mode = meta.mode() & 0o7777;
    n.uid = meta.uid();
    n.gid = meta.gid();
    n.user = owners.user(n.uid);
    n.group = owners.group(n.gid);
    n.mtime = ts(meta.mtime(), meta.mtime_nsec());
    n.atime = ts(meta.atime(), meta.atime_nsec());
    n.ctime = ts(meta.ctime(), meta.ctime_nsec());
    n.inode = meta.ino();
    n.device = meta.dev();
    n.links = meta.nlink();
    if kind == NodeKind::File {
        n.size = meta.len();
    }
    if matches!(kind, NodeKind::CharDevice | NodeKind::BlockDevice) {
        n.rdev = meta.rdev();
    }
    let mut warning = None;
    if kind == NodeKind::Symlink {
        match std::fs::read_link(access) {
            Ok(t) => n.link_target = t.as_os_str().as_bytes().to_vec(),
            Err(e) => warning = Some(format!("{}: reading link target: {e}", path.display())),
        }
    }
    match read_xattrs(access) {
        Ok(x) => n.xattrs = x,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => {}
        Err(e) => {
            warning = Some(format!(
                "{}: reading extended attributes: {e}",
                path.display()
            ))
        }
    }
    (n, warning)
}

fn read_xattrs(path: &Path) -> std::io::Result<Vec<Xattr>> {
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
