//! Setting a restored entry's metadata, in the order that keeps each step's effect:
//! owner (root only; chown clears setuid), then mode, extended attributes, and times
//! last. Nothing here follows a symlink.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use filetime::FileTime;
use nix::fcntl::AtFlags;
use nix::unistd::{fchown, fchownat, Gid, Uid};
use std::fs::File;
use std::os::unix::io::AsRawFd;
use xattr::FileExt;

use crate::repo::tree::{Node, NodeKind};

/// Applies what it can; returns a warning for each part that failed.
pub fn apply(path: &Path, node: &Node, is_root: bool) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut warn = |what: &str, e: &dyn std::fmt::Display| {
        warnings.push(format!("{}: setting {what}: {e}", path.display()))
    };
    if is_root {
        if let Err(e) = fchownat(
            None,
            path,
            Some(Uid::from_raw(node.uid)),
            Some(Gid::from_raw(node.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            warn("owner", &e);
        }
    }
    if node.kind != NodeKind::Symlink {
        if let Err(e) =
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(node.mode & 0o7777))
        {
            warn("mode", &e);
        }
    }
    for x in &node.xattrs {
        let name = std::ffi::OsStr::from_bytes(&x.name);
        if let Err(e) = xattr::set(path, name, &x.value) {
            // Only user attributes are promised; others (security.*, trusted.*) are
            // kept where the kernel lets us, silently skipped where it does not.
            if x.name.starts_with(b"user.") {
                warn("extended attribute", &e);
            }
        }
    }
    let atime = FileTime::from_unix_time(node.atime.secs, node.atime.nanos);
    let mtime = FileTime::from_unix_time(node.mtime.secs, node.mtime.nanos);
    if let Err(e) = filetime::set_symlink_file_times(path, atime, mtime) {
        warn("times", &e);
    }
    warnings
}

/// The same for a regular file still open after writing: through the descriptor, which
/// saves a path lookup per step (restores of many small files are syscall-bound).
pub fn apply_to_file(f: &File, path: &Path, node: &Node, is_root: bool) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut warn = |what: &str, e: &dyn std::fmt::Display| {
        warnings.push(format!("{}: setting {what}: {e}", path.display()))
    };
    if is_root {
        if let Err(e) = fchown(
            f.as_raw_fd(),
            Some(Uid::from_raw(node.uid)),
            Some(Gid::from_raw(node.gid)),
        ) {
            warn("owner", &e);
        }
    }
    if let Err(e) = f.set_permissions(std::fs::Permissions::from_mode(node.mode & 0o7777)) {
        warn("mode", &e);
    }
    for x in &node.xattrs {
        if let Err(e) = f.set_xattr(std::ffi::OsStr::from_bytes(&x.name), &x.value) {
            if x.name.starts_with(b"user.") {
                warn("extended attribute", &e);
            }
        }
    }
    let atime = FileTime::from_unix_time(node.atime.secs, node.atime.nanos);
    let mtime = FileTime::from_unix_time(node.mtime.secs, node.mtime.nanos);
    if let Err(e) = filetime::set_file_handle_times(f, Some(atime), Some(mtime)) {
        warn("times", &e);
    }
    warnings
}
