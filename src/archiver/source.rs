//! Opening sources without following what someone swapped in: directories once, with
//! `O_NOFOLLOW`, checked against what the walk saw, and everything below them reached
//! relative to that descriptor; files with `O_NOFOLLOW | O_NONBLOCK`, checked likewise.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use nix::fcntl::OFlag;

use crate::repo::tree::Node;
#[cfg(test)]
use crate::repo::tree::NodeKind;

/// Checks that an opened source is the regular file the walk lstat'ed (same device,
/// inode, type): a FIFO, device, symlink or other file swapped in meanwhile is an
/// error (the entry is skipped with a warning), never read. The `O_NONBLOCK` that kept
/// the open itself from blocking on a FIFO stays: local file systems ignore it for a
/// regular file's reads, and clearing it cost two system calls per file. Where it
/// does matter (a FUSE daemon, a pseudo-file), `SourceReader` clears it on EAGAIN.
/// Returns the file and what fstat said of it (the backup's "before" stamp).
pub(super) fn same_file(file: File, node: &Node) -> std::io::Result<(File, std::fs::Metadata)> {
    let m = file.metadata()?;
    if !m.is_file() || m.dev() != node.device || m.ino() != node.inode {
        return Err(std::io::Error::other(
            "replaced between listing and reading (not the file the walk saw); skipped",
        ));
    }
    Ok((file, m))
}

/// Reads a source file opened with `O_NONBLOCK`: on EAGAIN (a FUSE daemon or a
/// pseudo-file that honours the flag) it clears the flag and reads again, blocking.
pub(super) struct SourceReader<'a> {
    file: &'a File,
    blocking: bool,
}

impl<'a> SourceReader<'a> {
    pub(super) fn new(file: &'a File) -> Self {
        SourceReader {
            file,
            blocking: false,
        }
    }
}

impl std::io::Read for SourceReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let mut f = self.file;
            match f.read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && !self.blocking => {
                    let fd = self.file.as_raw_fd();
                    let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL)?;
                    let flags = OFlag::from_bits_truncate(flags) - OFlag::O_NONBLOCK;
                    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags))?;
                    self.blocking = true;
                }
                r => return r,
            }
        }
    }
}

/// An open source directory, and the path that reaches entries relative to it.
pub(super) struct DirHandle {
    pub(super) file: File,
    /// `/proc/self/fd/N` (resolves to this very directory, wherever it is now), or the
    /// directory's own path where /proc is not mounted.
    pub(super) access: std::path::PathBuf,
}

/// Opens a directory the walk lstat'ed: never through a symlink, and only while it is
/// still that directory (same device and inode).
pub(super) fn open_dir(access: &Path, expect: Option<(u64, u64)>) -> std::io::Result<DirHandle> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(access)?;
    dir_handle(file, access, expect)
}

/// The same for an entry `name` of the open directory `parent` (`openat`).
pub(super) fn open_dir_at(
    parent: &DirHandle,
    name: &OsStr,
    expect: Option<(u64, u64)>,
) -> std::io::Result<DirHandle> {
    let file = open_at(
        parent,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
    )?;
    dir_handle(file, &parent.access.join(name), expect)
}

fn dir_handle(file: File, access: &Path, expect: Option<(u64, u64)>) -> std::io::Result<DirHandle> {
    let m = file.metadata()?;
    if !m.is_dir() || expect.is_some_and(|(dev, ino)| (m.dev(), m.ino()) != (dev, ino)) {
        return Err(std::io::Error::other(
            "replaced between listing and reading (not the directory the walk saw); left empty",
        ));
    }
    static PROC: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let access = if *PROC.get_or_init(|| Path::new("/proc/self/fd").is_dir()) {
        std::path::PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
    } else {
        access.to_path_buf()
    };
    Ok(DirHandle { file, access })
}

fn open_at(parent: &DirHandle, name: &OsStr, flags: OFlag) -> std::io::Result<File> {
    let fd = nix::fcntl::openat(
        Some(parent.file.as_raw_fd()),
        name,
        flags | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    // SAFETY: openat just returned this descriptor, and nothing else owns it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// `lstat` of an entry of an open directory (`fstatat`, not following a symlink).
pub(super) fn stat_at(parent: &DirHandle, name: &OsStr) -> std::io::Result<libc::stat> {
    Ok(nix::sys::stat::fstatat(
        Some(parent.file.as_raw_fd()),
        name,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )?)
}

/// The target of a symlink in an open directory (`readlinkat`).
pub(super) fn read_link_at(parent: &DirHandle, name: &OsStr) -> std::io::Result<Vec<u8>> {
    use std::os::unix::ffi::OsStringExt;
    Ok(nix::fcntl::readlinkat(Some(parent.file.as_raw_fd()), name)?.into_vec())
}

/// Opens a source file without updating its access time where the kernel allows it;
/// never through a symlink, and without blocking should a FIFO have been swapped in.
pub(super) fn open_source(path: &Path) -> std::io::Result<File> {
    let no_follow = libc::O_NOFOLLOW | libc::O_NONBLOCK;
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

/// The same for an entry of an open directory (`openat`).
pub(super) fn open_source_at(parent: &DirHandle, name: &OsStr) -> std::io::Result<File> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK;
    match open_at(parent, name, flags | OFlag::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open_at(parent, name, flags),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_of(path: &Path) -> Node {
        let m = path.symlink_metadata().unwrap();
        let mut n = Node::new(b"f".to_vec(), NodeKind::File);
        n.device = m.dev();
        n.inode = m.ino();
        n
    }

    #[test]
    fn a_fifo_or_other_file_swapped_in_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let reg = dir.path().join("reg");
        std::fs::write(&reg, b"x").unwrap();
        let seen = node_of(&reg);
        // A FIFO in the regular file's place: the open must not wait for a writer.
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits(0o600).unwrap()).unwrap();
        let f = open_source(&fifo).expect("O_NONBLOCK: opening a FIFO does not block");
        assert!(same_file(f, &seen).is_err());
        // Another regular file (new inode) in its place.
        let other = dir.path().join("other");
        std::fs::write(&other, b"y").unwrap();
        assert!(same_file(open_source(&other).unwrap(), &seen).is_err());
        // A symlink is never followed.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&reg, &link).unwrap();
        assert!(open_source(&link).is_err());
        // The file itself passes and reads in full.
        let (mut f, m) = same_file(open_source(&reg).unwrap(), &seen).unwrap();
        assert_eq!(m.ino(), seen.inode);
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut got).unwrap();
        assert_eq!(got, b"x");
    }

    /// Item 9: a directory is opened only if it is not a symlink and is still the one
    /// the walk saw.
    #[test]
    fn a_directory_swapped_for_a_symlink_or_another_directory_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let (a, b, link) = (d.path().join("a"), d.path().join("b"), d.path().join("l"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        std::os::unix::fs::symlink(&a, &link).unwrap();
        let m = a.symlink_metadata().unwrap();
        let h = open_dir(&a, Some((m.dev(), m.ino()))).unwrap();
        std::fs::write(a.join("x"), b"1").unwrap();
        // Entries are reached through the open directory.
        assert!(h.access.join("x").symlink_metadata().unwrap().is_file());
        assert!(open_dir(&link, None).is_err(), "followed a symlink");
        assert!(
            open_dir(&b, Some((m.dev(), m.ino()))).is_err(),
            "another directory"
        );
    }
}
