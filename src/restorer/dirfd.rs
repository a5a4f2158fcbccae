//! File-system primitives relative to an open directory descriptor. The restore never
//! hands a multi-component path inside the target to the kernel: each step names one
//! entry of a directory it holds open, and nothing here follows a symlink, so swapping a
//! directory of the target for a symlink cannot steer a write out of it.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

/// A directory of the target, shared by the writer threads.
pub type DirFd = Arc<OwnedFd>;

/// Prefix of the temporary names restore creates (and `--delete` leaves alone).
pub const TEMP_PREFIX: &[u8] = b".cairn-restore-";

pub fn temp_name() -> OsString {
    let mut n = TEMP_PREFIX.to_vec();
    n.extend(hex::encode(crate::crypto::random_bytes::<6>()).bytes());
    OsString::from(std::ffi::OsStr::from_bytes(&n))
}

pub fn open_at(dir: RawFd, name: &OsStr, flags: OFlag, mode: u32) -> nix::Result<OwnedFd> {
    let fd = openat(
        Some(dir),
        name,
        flags | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(mode as _),
    )?;
    // SAFETY: openat returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens `name` only when it is a real directory: a symlink fails (ELOOP), so does
/// anything else (ENOTDIR).
pub fn open_dir(dir: RawFd, name: &OsStr) -> nix::Result<OwnedFd> {
    open_at(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
        0,
    )
}

/// lstat of one entry; `None` when there is none.
pub fn lstat_at(dir: RawFd, name: &OsStr) -> nix::Result<Option<FileStat>> {
    match fstatat(Some(dir), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(s) => Ok(Some(s)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

pub fn is_dir(st: &FileStat) -> bool {
    kind(st) == SFlag::S_IFDIR
}

pub fn same_inode(a: &FileStat, b: &FileStat) -> bool {
    a.st_dev == b.st_dev && a.st_ino == b.st_ino
}

/// Checks that the directory just opened is the one that was looked at (`expect`), or,
/// for one we just made, that it is ours: a directory swapped in meanwhile is refused.
pub fn verify_dir(fd: &OwnedFd, expect: Option<&FileStat>) -> nix::Result<()> {
    let st = fstat(fd.as_raw_fd())?;
    let ok = match expect {
        Some(e) => same_inode(e, &st),
        None => st.st_uid == nix::unistd::geteuid().as_raw(),
    };
    if ok && is_dir(&st) {
        Ok(())
    } else {
        Err(Errno::ESTALE)
    }
}

/// The names in a directory (not `.` and `..`), through a fresh open of it so the
/// caller's descriptor keeps its own position.
pub fn list(dir: RawFd) -> nix::Result<Vec<OsString>> {
    let mut d = nix::dir::Dir::openat(
        Some(dir),
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut out = Vec::new();
    for e in d.iter() {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push(OsStr::from_bytes(n).to_os_string());
        }
    }
    Ok(out)
}

/// Removes one entry; a directory with everything below it. Never follows a symlink:
/// each directory is entered with O_NOFOLLOW|O_DIRECTORY and emptied through its fd.
pub fn remove_at(dir: RawFd, name: &OsStr) -> nix::Result<()> {
    match unlinkat(Some(dir), name, UnlinkatFlags::NoRemoveDir) {
        Err(Errno::EISDIR) | Err(Errno::EPERM) => remove_tree(dir, name),
        r => r,
    }
}

fn remove_tree(dir: RawFd, name: &OsStr) -> nix::Result<()> {
    let sub = match open_dir(dir, name) {
        Ok(fd) => fd,
        // Not (or no longer) a directory: the unlink's own error stands.
        Err(Errno::ELOOP) | Err(Errno::ENOTDIR) => {
            return unlinkat(Some(dir), name, UnlinkatFlags::NoRemoveDir)
        }
        Err(e) => return Err(e),
    };
    for n in list(sub.as_raw_fd())? {
        remove_at(sub.as_raw_fd(), &n)?;
    }
    unlinkat(Some(dir), name, UnlinkatFlags::RemoveDir)
}
