//! File-system primitives relative to an open directory descriptor. The restore never
//! hands a multi-component path inside the target to the kernel: each step names one
//! entry of a directory it holds open, and nothing here follows a symlink, so swapping a
//! directory of the target for a symlink cannot steer a write out of it.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{fcntl, openat, renameat, renameat2, AtFlags, FcntlArg, OFlag, RenameFlags};
use nix::sys::stat::{fstat, fstatat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{linkat, unlinkat, UnlinkatFlags};

/// A directory of the target, shared by the writer threads.
pub type DirFd = Arc<OwnedFd>;

/// Prefix of the temporary names restore creates (and `--delete` leaves alone).
pub const TEMP_PREFIX: &[u8] = b".cairn-restore-";

pub fn temp_name() -> OsString {
    let mut n = TEMP_PREFIX.to_vec();
    n.extend(hex::encode(crate::crypto::public_random::<6>()).bytes());
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

/// A new regular file in `dir` that has no name yet (`O_TMPFILE`): it is filled and
/// given its metadata unnamed, and appears under its name only when `link_unnamed`
/// gives it one, whole. A kill or a failure before that leaves nothing behind. Unlike
/// a temporary name, it needs no random name, no lock and no rename, and the new
/// inode is allocated without holding the directory's lock (ext4 scans for a free
/// inode under that lock when many files were just deleted: writer threads queued on
/// it, spinning). Errors `EOPNOTSUPP`, `EISDIR` or `EINVAL` where the file system (or
/// kernel) has no `O_TMPFILE`.
pub fn open_unnamed(dir: RawFd) -> nix::Result<OwnedFd> {
    open_at(
        dir,
        OsStr::new("."),
        OFlag::O_TMPFILE | OFlag::O_RDWR,
        0o600,
    )
}

/// Whether `open_unnamed` errs because the file system cannot do it (the caller then
/// writes under a temporary name instead).
pub fn unnamed_unsupported(e: Errno) -> bool {
    matches!(e, Errno::EOPNOTSUPP | Errno::EISDIR | Errno::EINVAL)
}

/// Names the unnamed file `fd` `name` in `dir`. Never replaces: an entry that appeared
/// at the name meanwhile makes it fail (`EEXIST`).
pub fn link_unnamed(fd: RawFd, dir: RawFd, name: &OsStr) -> nix::Result<()> {
    let proc = format!("/proc/self/fd/{fd}");
    linkat(
        None,
        OsStr::new(&proc),
        Some(dir),
        name,
        AtFlags::AT_SYMLINK_FOLLOW,
    )
}

/// Whether a failed `link_unnamed` means linking is refused here (by a security
/// policy, `fs.protected_hardlinks`, a file system without links) rather than a
/// problem with this entry (it exists, the disk is full).
pub fn link_refused(e: Errno) -> bool {
    !matches!(
        e,
        Errno::EEXIST | Errno::ENOSPC | Errno::EDQUOT | Errno::EIO
    )
}

/// Whether unnamed files can be named here: through /proc, and only when /proc is
/// the kernel's procfs (anything else mounted there could turn /proc/self/fd/N into a
/// link to some other file). Root could also use `AT_EMPTY_PATH`; one way for
/// everyone keeps one code path.
pub fn can_link_unnamed() -> bool {
    static PROC: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PROC.get_or_init(|| {
        nix::sys::statfs::statfs("/proc/self/fd")
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC)
    })
}

/// Opens an existing entry for reading only when it is the regular file `st` (its
/// lstat) describes. O_NONBLOCK: a fifo or device swapped in at the name must not block
/// the open (or, as a terminal, become ours); cleared again before reading.
pub fn open_regular(dir: RawFd, name: &OsStr, st: &FileStat) -> nix::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
    let fd = open_at(dir, name, flags, 0)?;
    let now = fstat(fd.as_raw_fd())?;
    if kind(&now) != SFlag::S_IFREG || !same_inode(st, &now) {
        return Err(Errno::ESTALE);
    }
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_RDONLY))?;
    Ok(fd)
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
pub fn verify_dir(fd: &OwnedFd, expect: Option<&FileStat>) -> nix::Result<FileStat> {
    let st = fstat(fd.as_raw_fd())?;
    let ok = match expect {
        Some(e) => same_inode(e, &st),
        None => st.st_uid == nix::unistd::geteuid().as_raw(),
    };
    if ok && is_dir(&st) {
        Ok(st)
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
/// Never crosses into another file system: a mount point below stops it with EXDEV
/// (everything else below is still removed).
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
    // Another file system mounted here is not the target's to delete (EXDEV).
    if fstat(sub.as_raw_fd())?.st_dev != fstat(dir)?.st_dev {
        return Err(Errno::EXDEV);
    }
    // The rest goes even when one entry cannot; the first failure is the answer.
    let mut first = Ok(());
    for n in list(sub.as_raw_fd())? {
        if let Err(e) = remove_at(sub.as_raw_fd(), &n) {
            first = first.and(Err(e));
        }
    }
    first?;
    unlinkat(Some(dir), name, UnlinkatFlags::RemoveDir)
}

/// Whether `name` is exactly a name `temp_name` makes (prefix and 12 lowercase hex
/// digits): only those are ever cleaned up as leftovers of an interrupted restore.
pub fn is_temp_name(name: &OsStr) -> bool {
    let n = name.as_bytes();
    n.len() == TEMP_PREFIX.len() + 12
        && n.starts_with(TEMP_PREFIX)
        && n[TEMP_PREFIX.len()..]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

/// Takes an exclusive flock on an entry this restore is filling: a later restore's
/// clean-up (`remove_stale`) leaves locked temporary entries alone.
pub fn lock(fd: RawFd, nonblocking: bool) -> nix::Result<()> {
    let op = libc::LOCK_EX | if nonblocking { libc::LOCK_NB } else { 0 };
    // SAFETY: flock on a descriptor we hold; no memory is involved.
    Errno::result(unsafe { libc::flock(fd, op) }).map(drop)
}

/// Moves the entry `from` (in directory `from_dir`) to `name` in `dir`. A rename keeps
/// the entry's owner, mode and times, so they can be set before it becomes visible.
/// With nothing at `name` when it was looked at (`existing` is None) the move never
/// replaces what appeared meanwhile (RENAME_NOREPLACE; a link and an unlink where the
/// file system lacks it); a directory there is removed first; any other entry is
/// replaced atomically.
pub fn move_into(
    from_dir: RawFd,
    from: &OsStr,
    dir: RawFd,
    name: &OsStr,
    existing: Option<&FileStat>,
) -> nix::Result<()> {
    if existing.is_some_and(is_dir) {
        remove_at(dir, name)?;
    } else if existing.is_some() {
        return renameat(Some(from_dir), from, Some(dir), name);
    }
    match renameat2(
        Some(from_dir),
        from,
        Some(dir),
        name,
        RenameFlags::RENAME_NOREPLACE,
    ) {
        Err(Errno::EINVAL) | Err(Errno::ENOSYS) => {
            linkat(Some(from_dir), from, Some(dir), name, AtFlags::empty())?;
            unlinkat(Some(from_dir), from, UnlinkatFlags::NoRemoveDir)
        }
        r => r,
    }
}

/// A private directory inside a directory of the target (0700, ours, held open and
/// flocked) where symlinks, fifos and device nodes are made and given their owner,
/// mode and times before they are renamed into place: nobody else can reach an entry
/// in it, so nothing set by name there can land on another file.
pub struct Staging {
    parent: DirFd,
    name: OsString,
    fd: OwnedFd,
}

/// The one name used inside a staging directory.
pub const STAGED: &str = "entry";

impl Staging {
    pub fn new(parent: &DirFd) -> nix::Result<Staging> {
        let name = temp_name();
        let pfd = parent.as_raw_fd();
        mkdirat(Some(pfd), name.as_os_str(), Mode::from_bits_truncate(0o700))?;
        let fd = open_dir(pfd, &name)?;
        let st = fstat(fd.as_raw_fd())?;
        // Owned by us and closed to everyone else, or it is not the one just made.
        if !is_dir(&st) || st.st_uid != nix::unistd::geteuid().as_raw() || st.st_mode & 0o077 != 0 {
            return Err(Errno::ESTALE);
        }
        lock(fd.as_raw_fd(), false)?;
        Ok(Staging {
            parent: parent.clone(),
            name,
            fd,
        })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Removes what an entry left behind when it could not be moved into place.
    pub fn discard(&self) {
        let _ = unlinkat(Some(self.fd()), STAGED, UnlinkatFlags::NoRemoveDir);
    }
}

impl Drop for Staging {
    /// Empties the directory through its descriptor and removes it by name: `rmdir`
    /// removes only an empty directory, so a swapped name costs nothing.
    fn drop(&mut self) {
        if let Ok(names) = list(self.fd()) {
            for n in names {
                let _ = unlinkat(Some(self.fd()), n.as_os_str(), UnlinkatFlags::NoRemoveDir);
            }
        }
        let _ = unlinkat(
            Some(self.parent.as_raw_fd()),
            self.name.as_os_str(),
            UnlinkatFlags::RemoveDir,
        );
    }
}

/// Removes what an interrupted restore left in `dir`: regular files and staging
/// directories that are ours, carry exactly a temporary name, and are not locked by a
/// restore still running. Returns the names removed.
pub fn remove_stale(dir: RawFd) -> nix::Result<Vec<OsString>> {
    let me = nix::unistd::geteuid().as_raw();
    let mut removed = Vec::new();
    for name in list(dir)? {
        if !is_temp_name(&name) {
            continue;
        }
        let Some(st) = lstat_at(dir, &name)? else {
            continue;
        };
        if st.st_uid != me || !matches!(kind(&st), SFlag::S_IFREG | SFlag::S_IFDIR) {
            continue;
        }
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
        let Ok(fd) = open_at(dir, &name, flags, 0) else {
            continue;
        };
        let now = fstat(fd.as_raw_fd())?;
        if !same_inode(&st, &now) || lock(fd.as_raw_fd(), true).is_err() {
            continue;
        }
        let r = if is_dir(&now) {
            // A staging directory holds at most its one entry, never a directory:
            // anything else is not ours to remove.
            let sub = fd.as_raw_fd();
            let names = list(sub)?;
            let staged = OsStr::new(STAGED);
            let only_staged = names.iter().all(|n| {
                n == staged && lstat_at(sub, n).is_ok_and(|s| s.is_some_and(|s| !is_dir(&s)))
            });
            if !only_staged {
                continue;
            }
            if !names.is_empty() {
                let _ = unlinkat(Some(sub), staged, UnlinkatFlags::NoRemoveDir);
            }
            unlinkat(Some(dir), name.as_os_str(), UnlinkatFlags::RemoveDir)
        } else {
            unlinkat(Some(dir), name.as_os_str(), UnlinkatFlags::NoRemoveDir)
        };
        if r.is_ok() {
            removed.push(name);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fifo at the name of the regular file that was looked at is refused at once
    /// (a blocking open would wait for a writer forever).
    #[test]
    fn open_regular_refuses_a_fifo_swapped_in_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), "x").unwrap();
        let dir = open_at(libc::AT_FDCWD, d.path().as_os_str(), OFlag::O_DIRECTORY, 0).unwrap();
        let name = OsStr::new("f");
        let st = lstat_at(dir.as_raw_fd(), name).unwrap().unwrap();
        assert!(open_regular(dir.as_raw_fd(), name, &st).is_ok());
        std::fs::remove_file(d.path().join("f")).unwrap();
        nix::unistd::mkfifo(&d.path().join("f"), Mode::from_bits_truncate(0o600)).unwrap();
        assert_eq!(
            open_regular(dir.as_raw_fd(), name, &st).unwrap_err(),
            Errno::ESTALE
        );
    }
}
