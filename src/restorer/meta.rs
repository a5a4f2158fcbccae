//! Setting a restored entry's metadata, in the order that keeps each step's effect:
//! owner (root only; chown clears setuid), then mode, extended attributes, and times
//! last. Every step goes through a descriptor or a (directory fd, name) pair with
//! AT_SYMLINK_NOFOLLOW, never through a path that could be re-resolved: another process
//! may swap names in the target meanwhile.

use std::ffi::OsStr;
use std::fs::File;
use std::mem::ManuallyDrop;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::fcntl::AtFlags;
use nix::sys::stat::{fchmod, fchmodat, futimens, utimensat, FchmodatFlags, Mode, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, Gid, Uid};
use xattr::FileExt;

use crate::repo::tree::Node;

fn times(node: &Node) -> (TimeSpec, TimeSpec) {
    (
        TimeSpec::new(node.atime.secs, node.atime.nanos as _),
        TimeSpec::new(node.mtime.secs, node.mtime.nanos as _),
    )
}

fn mode(node: &Node) -> Mode {
    Mode::from_bits_truncate((node.mode & 0o7777) as _)
}

/// Collects one warning line per failed step.
struct Warnings<'a> {
    path: &'a Path,
    lines: Vec<String>,
}

impl Warnings<'_> {
    fn check<E: std::fmt::Display>(&mut self, what: &str, r: Result<(), E>) {
        if let Err(e) = r {
            self.lines
                .push(format!("{}: setting {what}: {e}", self.path.display()));
        }
    }

    /// Only user attributes are promised; others (security.*, trusted.*) are kept where
    /// the kernel lets us, silently skipped where it does not.
    fn xattr(&mut self, name: &[u8], r: std::io::Result<()>) {
        if name.starts_with(b"user.") {
            self.check("extended attribute", r);
        }
    }
}

/// A regular file or a directory, through its open descriptor (which also saves a path
/// lookup per step: restores of many small files are syscall-bound).
pub fn apply_fd(fd: RawFd, path: &Path, node: &Node, is_root: bool) -> Vec<String> {
    apply_fd_owned(fd, path, node, is_root, None)
}

/// The same for a file this restore just created with the owner `owner_now` (uid,
/// gid): when that is already the snapshot's, the chown is skipped (a call per file).
pub fn apply_fd_owned(
    fd: RawFd,
    path: &Path,
    node: &Node,
    is_root: bool,
    owner_now: Option<(u32, u32)>,
) -> Vec<String> {
    let mut w = Warnings {
        path,
        lines: Vec::new(),
    };
    if is_root && owner_now != Some((node.uid, node.gid)) {
        w.check(
            "owner",
            fchown(
                fd,
                Some(Uid::from_raw(node.uid)),
                Some(Gid::from_raw(node.gid)),
            ),
        );
    }
    w.check("mode", fchmod(fd, mode(node)));
    if !node.xattrs.is_empty() {
        // Borrowed, not owned: the caller closes the descriptor.
        let f = ManuallyDrop::new(unsafe { File::from_raw_fd(fd) });
        for x in &node.xattrs {
            w.xattr(&x.name, f.set_xattr(OsStr::from_bytes(&x.name), &x.value));
        }
    }
    let (atime, mtime) = times(node);
    w.check("times", futimens(fd, &atime, &mtime));
    w.lines
}

/// A symlink, by (directory fd, name) without following it. Linux keeps no user
/// attributes on symlinks, so none are set.
pub fn apply_symlink(
    dir: RawFd,
    name: &OsStr,
    path: &Path,
    node: &Node,
    is_root: bool,
) -> Vec<String> {
    let mut w = Warnings {
        path,
        lines: Vec::new(),
    };
    if is_root {
        w.check(
            "owner",
            fchownat(
                Some(dir),
                name,
                Some(Uid::from_raw(node.uid)),
                Some(Gid::from_raw(node.gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            ),
        );
    }
    let (atime, mtime) = times(node);
    w.check(
        "times",
        utimensat(
            Some(dir),
            name,
            &atime,
            &mtime,
            UtimensatFlags::NoFollowSymlink,
        ),
    );
    w.lines
}

/// A fifo or device node, through an O_PATH descriptor (opened without following and
/// checked by the caller): `/proc/self/fd/N` names that very inode, so no name in the
/// target is resolved again (opening the node itself could block or touch a device).
pub fn apply_opath(fd: RawFd, path: &Path, node: &Node, is_root: bool) -> Vec<String> {
    let mut w = Warnings {
        path,
        lines: Vec::new(),
    };
    let proc = format!("/proc/self/fd/{fd}");
    let proc = Path::new(&proc);
    if is_root {
        w.check(
            "owner",
            fchownat(
                None,
                proc,
                Some(Uid::from_raw(node.uid)),
                Some(Gid::from_raw(node.gid)),
                AtFlags::empty(),
            ),
        );
    }
    w.check(
        "mode",
        fchmodat(None, proc, mode(node), FchmodatFlags::FollowSymlink),
    );
    for x in &node.xattrs {
        // xattr::set would not follow the /proc link; setxattr(2) does.
        let r = (|| {
            let p = std::ffi::CString::new(proc.as_os_str().as_bytes())?;
            let n = std::ffi::CString::new(x.name.clone())?;
            let rc = unsafe {
                libc::setxattr(
                    p.as_ptr(),
                    n.as_ptr(),
                    x.value.as_ptr().cast(),
                    x.value.len(),
                    0,
                )
            };
            if rc == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        })();
        w.xattr(&x.name, r);
    }
    let (atime, mtime) = times(node);
    w.check(
        "times",
        utimensat(None, proc, &atime, &mtime, UtimensatFlags::FollowSymlink),
    );
    w.lines
}
