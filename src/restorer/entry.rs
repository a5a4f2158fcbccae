//! One entry of a directory: what `--overwrite` decides for it, and writing a file, a
//! hard link, a symlink, a fifo or a device node relative to its directory's descriptor.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::Ordering;

use nix::errno::Errno;
use nix::fcntl::{renameat, AtFlags, OFlag};
use nix::sys::stat::{fstat, mknodat, FileStat, Mode, SFlag};
use nix::unistd::{linkat, symlinkat, unlinkat, UnlinkatFlags};

use super::dirfd::{self, DirFd};
use super::shared::Content;
use super::{meta, Dir, Overwrite, Restorer};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::tree::{Node, NodeKind};

/// What happens at a name that the snapshot has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Decision {
    /// Nothing is there: create the entry.
    Create,
    /// Leave what is there exactly as it is (a directory: with everything below it).
    Keep,
    /// Replace what is there (a directory: with everything below it).
    Replace,
    /// A directory where the snapshot has one: restore into it.
    Merge,
}

/// A hard-link group's member that this restore wrote, which later members link to
/// when their content is the same (in a damaged or hostile repository it may not be).
#[derive(Clone)]
pub(super) struct LinkSource {
    pub dir: DirFd,
    pub name: OsString,
    pub size: u64,
    pub content: Vec<Id>,
}

pub(super) fn io(path: &Path) -> impl Fn(Errno) -> Error + '_ {
    move |e| Error::io_path(path, e.into())
}

impl Restorer<'_> {
    /// `--overwrite` for an entry of any kind; `existing` is the lstat of what is there.
    pub(super) fn decide(
        &self,
        node: &Node,
        dir: &Dir,
        name: &OsStr,
        existing: Option<&FileStat>,
    ) -> Decision {
        let Some(st) = existing else {
            return Decision::Create;
        };
        if node.kind == NodeKind::Dir && dirfd::is_dir(st) {
            return Decision::Merge;
        }
        let replace = match self.opts.overwrite {
            Overwrite::Always => true,
            Overwrite::Never => false,
            Overwrite::IfNewer => is_older(st, node),
            Overwrite::IfChanged => !self.unchanged(node, dir, name, st),
        };
        if replace {
            Decision::Replace
        } else {
            Decision::Keep
        }
    }

    /// Whether what is there already equals the snapshot's entry: a file by content, a
    /// symlink by target, a fifo by kind, a device by kind and number.
    fn unchanged(&self, node: &Node, dir: &Dir, name: &OsStr, st: &FileStat) -> bool {
        let Some(fd) = dir.raw() else { return false };
        let k = dirfd::kind(st);
        match node.kind {
            NodeKind::File => {
                k == SFlag::S_IFREG
                    && st.st_size as u64 == node.size
                    && dirfd::open_regular(fd, name, st)
                        .is_ok_and(|f| self.same_content(node, &mut File::from(f)))
            }
            NodeKind::Symlink => {
                k == SFlag::S_IFLNK
                    && nix::fcntl::readlinkat(Some(fd), name)
                        .is_ok_and(|t| t.as_bytes() == node.link_target.as_slice())
            }
            NodeKind::Fifo => k == SFlag::S_IFIFO,
            NodeKind::CharDevice => k == SFlag::S_IFCHR && st.st_rdev == node.rdev,
            NodeKind::BlockDevice => k == SFlag::S_IFBLK && st.st_rdev == node.rdev,
            NodeKind::Dir | NodeKind::Socket => false,
        }
    }

    /// Chunks the existing file as a backup would and compares blob ids.
    pub(super) fn same_content(&self, node: &Node, f: &mut File) -> bool {
        let params = self.repo.config.chunker;
        let seed = self.repo.key.chunker_seed;
        let idk = &self.repo.key.id_key;
        if node.size <= params.max_size as u64 {
            let mut data = Vec::with_capacity(node.size as usize);
            if f.read_to_end(&mut data).is_err() {
                return false;
            }
            let ids = params
                .cut_points(&data, seed)
                .into_iter()
                .map(|(o, l)| idk.blob_id(&data[o..o + l]));
            return ids.eq(node.content.iter().copied());
        }
        let mut ids = Vec::with_capacity(node.content.len());
        for chunk in params.chunks(f, seed) {
            match chunk {
                Ok(c) => ids.push(idk.blob_id(&c)),
                Err(_) => return false,
            }
            if ids.len() > node.content.len() {
                return false;
            }
        }
        ids == node.content
    }

    /// Accounts for an entry about to be created or replaced; a plan reports it, and
    /// collects what a replacement would destroy (for the pre-restore snapshot).
    pub(super) fn note_write(&self, path: &Path, existing: bool) {
        if existing {
            self.count(|s| s.replaced += 1);
        }
        if self.opts.dry_run {
            if existing {
                (self.report)(format!("would overwrite {}", path.display()));
                self.plan.lock().unwrap().push(path.to_path_buf());
            } else {
                (self.report)(format!("would create {}", path.display()));
            }
        }
    }

    pub(super) fn restore_file(
        &self,
        node: &Node,
        dir: &Dir,
        name: &OsStr,
        path: &Path,
    ) -> Result<()> {
        // Whatever this file does not read (it is kept, linked or fails) is released
        // when `content` is dropped, so no prefetched bytes wait for it.
        let mut content = self.shared.content(self.repo, &node.content);
        let existing = self.lstat(dir, name, path)?;
        if let Some(p) = &self.opts.progress {
            p.add(1, node.size);
        }
        let group = self.link_member(node);
        if self.decide(node, dir, name, existing.as_ref()) == Decision::Keep {
            if let Some((k, false)) = group {
                self.links.lock().unwrap().remove(&k);
            }
            self.count(|s| s.files_skipped += 1);
            return Ok(());
        }
        self.note_write(path, existing.is_some());
        let mut source = None;
        if let Some((k, more)) = group {
            let mut links = self.links.lock().unwrap();
            // The last member takes the source out: its directory is closed after it.
            source = if more {
                links.get(&k).cloned()
            } else {
                links.remove(&k)
            };
        }
        // Only a file this restore wrote is ever a link source (a kept file at the first
        // member's name may be something else entirely), and only for the same content.
        if let Some(src) = source.filter(|s| s.size == node.size && s.content == node.content) {
            if !self.opts.dry_run {
                let fd = dir.fd()?;
                let src_fd = src.dir.as_raw_fd();
                place(fd, name, existing.as_ref(), |n| {
                    linkat(
                        Some(src_fd),
                        src.name.as_os_str(),
                        Some(fd),
                        n,
                        AtFlags::empty(),
                    )
                })
                .map_err(io(path))?;
            }
            self.count(|s| s.files_restored += 1);
            return Ok(());
        }
        if self.opts.dry_run {
            self.count(|s| {
                s.files_restored += 1;
                s.bytes_written += node.size;
            });
        } else {
            self.write_file(node, &mut content, dir, name, path, existing.as_ref())?;
            self.count(|s| s.files_restored += 1);
        }
        if let (Some((k, true)), Some(dir_fd)) = (group, &dir.fd) {
            let mut links = self.links.lock().unwrap();
            if links.contains_key(&k) || links.len() < self.link_cap {
                let src = LinkSource {
                    dir: dir_fd.clone(),
                    name: name.to_os_string(),
                    size: node.size,
                    content: node.content.clone(),
                };
                links.insert(k, src);
            } else {
                self.link_copies.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Whether `node` belongs to a hard-link group of which this restore writes more
    /// than one member.
    pub(super) fn in_link_group(&self, node: &Node) -> bool {
        node.links > 1
            && self
                .link_members
                .lock()
                .unwrap()
                .contains_key(&(node.device, node.inode))
    }

    /// Counts a group member as handled: its key, and whether more members follow.
    fn link_member(&self, node: &Node) -> Option<((u64, u64), bool)> {
        if node.links <= 1 {
            return None;
        }
        let k = (node.device, node.inode);
        let mut members = self.link_members.lock().unwrap();
        let left = members.get_mut(&k)?;
        *left -= 1;
        let more = *left > 0;
        if !more {
            members.remove(&k);
        }
        Some((k, more))
    }

    /// Writes a file's content so that no file with wrong or missing bytes ever has the
    /// entry's name, even when the restore is killed. A new name gets an unnamed file
    /// (`O_TMPFILE`), filled, given its metadata and then linked under the name. Where
    /// that cannot be (a file to replace, a file system without `O_TMPFILE`) it is
    /// written under a temporary name (flocked, so a later restore's clean-up leaves
    /// it alone while it is filled), given its metadata, and renamed into place; a
    /// failure removes it again.
    fn write_file(
        &self,
        node: &Node,
        content: &mut Content,
        dir: &Dir,
        name: &OsStr,
        path: &Path,
        existing: Option<&FileStat>,
    ) -> Result<()> {
        // In a directory this restore made, a new file's owner is known (`Dir::made`).
        let (owner_now, dir) = (dir.made, dir.fd()?);
        let mut filled = None;
        if existing.is_none() && self.unnamed_files.load(Ordering::Relaxed) {
            match dirfd::open_unnamed(dir) {
                Ok(fd) => {
                    let mut f = File::from(fd);
                    self.fill(node, content, &mut f, path, owner_now)?;
                    match dirfd::link_unnamed(f.as_raw_fd(), dir, name) {
                        Ok(()) => return Ok(()),
                        Err(e) if !dirfd::link_refused(e) => return Err(io(path)(e)),
                        // A security policy or `protected_hardlinks` may refuse the link
                        // where a rename passes: this file and the rest go by name.
                        Err(_) => {
                            self.unnamed_files.store(false, Ordering::Relaxed);
                            filled = Some(f);
                        }
                    }
                }
                Err(e) if dirfd::unnamed_unsupported(e) => {
                    self.unnamed_files.store(false, Ordering::Relaxed);
                }
                Err(e) => return Err(io(path)(e)),
            }
        }
        let tmp = dirfd::temp_name();
        let flags = OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW;
        let mut f = File::from(dirfd::open_at(dir, &tmp, flags, 0o600).map_err(io(path))?);
        let r = dirfd::lock(f.as_raw_fd(), false)
            .map_err(io(path))
            .and_then(|()| match filled.as_mut() {
                Some(src) => self.copy_filled(node, src, &mut f, path, owner_now),
                None => self.fill(node, content, &mut f, path, owner_now),
            })
            .and_then(|()| dirfd::move_into(dir, &tmp, dir, name, existing).map_err(io(path)));
        if r.is_err() {
            let _ = unlinkat(Some(dir), tmp.as_os_str(), UnlinkatFlags::NoRemoveDir);
        }
        r
    }

    /// Owner, mode, xattrs and times of a file this restore created, through its
    /// descriptor (`owner_now`: the owner it was created with, see `Dir::made`).
    fn apply_meta(&self, f: &File, path: &Path, node: &Node, owner_now: Option<(u32, u32)>) {
        let fd = f.as_raw_fd();
        self.report_all(meta::apply_fd_owned(
            fd,
            path,
            node,
            self.is_root,
            owner_now,
        ));
    }

    /// Copies a file `fill` already wrote (and verified) into `f`, then the metadata.
    fn copy_filled(
        &self,
        node: &Node,
        src: &mut File,
        f: &mut File,
        path: &Path,
        owner_now: Option<(u32, u32)>,
    ) -> Result<()> {
        let io_err = |e| Error::io_path(path, e);
        src.seek(SeekFrom::Start(0)).map_err(io_err)?;
        let n = std::io::copy(src, f).map_err(io_err)?;
        if n != node.size {
            return Err(Error::io_path(
                path,
                std::io::Error::other("the copy of the written file came out short"),
            ));
        }
        self.apply_meta(f, path, node, owner_now);
        Ok(())
    }

    /// Writes the verified content, checks it back with `--verify`, then the metadata.
    fn fill(
        &self,
        node: &Node,
        content: &mut Content,
        f: &mut File,
        path: &Path,
        owner_now: Option<(u32, u32)>,
    ) -> Result<()> {
        let mut written = 0u64;
        let mut hole_at_end = false;
        while let Some(data) = content.next_blob() {
            let data = data?;
            hole_at_end = write_sparse(f, &data).map_err(|e| Error::io_path(path, e))?;
            written += data.len() as u64;
        }
        if written != node.size {
            return Err(Error::integrity(
                format!("file {}", node.name_lossy()),
                format!(
                    "content is {written} bytes, the snapshot says {}",
                    node.size
                ),
            ));
        }
        // A new file is as long as what was written, unless it ends in a hole.
        if hole_at_end {
            f.set_len(written).map_err(|e| Error::io_path(path, e))?;
        }
        self.count(|s| s.bytes_written += written);
        if self.opts.verify {
            // Through the same descriptor: what is read is what was written.
            f.seek(SeekFrom::Start(0))
                .map_err(|e| Error::io_path(path, e))?;
            if !self.same_content(node, f) {
                return Err(Error::integrity(
                    path.display().to_string(),
                    "the file read back differs from the snapshot (--verify)",
                ));
            }
            self.count(|s| s.files_verified += 1);
        }
        self.apply_meta(f, path, node, owner_now);
        Ok(())
    }

    pub(super) fn restore_special(
        &self,
        node: &Node,
        dir: &Dir,
        name: &OsStr,
        path: &Path,
        staging: &mut Option<dirfd::Staging>,
    ) -> Result<()> {
        let dev_kind = match node.kind {
            // A socket belongs to the process that made it; there is nothing to restore.
            NodeKind::Socket => return Ok(()),
            NodeKind::CharDevice | NodeKind::BlockDevice if !self.is_root => {
                (self.report)(format!(
                    "warning: {}: device nodes are restored only as root",
                    path.display()
                ));
                return Ok(());
            }
            NodeKind::CharDevice => SFlag::S_IFCHR,
            NodeKind::BlockDevice => SFlag::S_IFBLK,
            _ => SFlag::S_IFIFO,
        };
        let existing = self.lstat(dir, name, path)?;
        if self.decide(node, dir, name, existing.as_ref()) == Decision::Keep {
            self.count(|s| s.other_skipped += 1);
            return Ok(());
        }
        self.note_write(path, existing.is_some());
        if self.opts.dry_run {
            self.count(|s| s.other_restored += 1);
            return Ok(());
        }
        let fd = dir.fd()?;
        // Made, owned and timed in a private staging directory, then renamed into
        // place: setting an owner or times by name where others can write could land
        // on whatever they put at that name (a hard link to a file outside, say).
        if staging.is_none() {
            let parent = dir.fd.as_ref().expect("a directory written to is open");
            *staging = Some(dirfd::Staging::new(parent).map_err(io(path))?);
        }
        let st = staging.as_ref().expect("just made");
        let sfd = st.fd();
        let staged = OsStr::new(dirfd::STAGED);
        let made = self.make_special(node, sfd, staged, dev_kind, path);
        let r = made.and_then(|()| {
            dirfd::move_into(sfd, staged, fd, name, existing.as_ref()).map_err(io(path))
        });
        if r.is_err() {
            st.discard();
        }
        r?;
        self.count(|s| s.other_restored += 1);
        Ok(())
    }
}

impl Restorer<'_> {
    /// Makes a symlink, fifo or device node at `name` in the staging directory `sfd`
    /// and sets its metadata there.
    fn make_special(
        &self,
        node: &Node,
        sfd: RawFd,
        name: &OsStr,
        dev_kind: SFlag,
        path: &Path,
    ) -> Result<()> {
        if node.kind == NodeKind::Symlink {
            let target = OsStr::from_bytes(&node.link_target);
            symlinkat(target, Some(sfd), name).map_err(io(path))?;
            self.report_all(meta::apply_symlink(sfd, name, path, node, self.is_root));
            return Ok(());
        }
        let rdev = if node.kind == NodeKind::Fifo {
            0
        } else {
            node.rdev
        };
        let perm = Mode::from_bits_truncate(0o600);
        mknodat(Some(sfd), name, dev_kind, perm, rdev).map_err(io(path))?;
        // O_PATH opens neither a fifo's reader side nor a device.
        let node_fd =
            dirfd::open_at(sfd, name, OFlag::O_PATH | OFlag::O_NOFOLLOW, 0).map_err(io(path))?;
        let st = fstat(node_fd.as_raw_fd()).map_err(io(path))?;
        if dirfd::kind(&st) != dev_kind || st.st_rdev != rdev {
            return Err(io(path)(Errno::ESTALE));
        }
        self.report_all(meta::apply_opath(
            node_fd.as_raw_fd(),
            path,
            node,
            self.is_root,
        ));
        Ok(())
    }
}

/// Whether an existing entry is older than the snapshot's (`--overwrite if-newer`).
pub(super) fn is_older(st: &FileStat, node: &Node) -> bool {
    (st.st_mtime, st.st_mtime_nsec) < (node.mtime.secs, node.mtime.nanos as i64)
}

/// Puts a new entry at `name` with `create`: directly when the name is free; after
/// removing a directory tree that is there; over any other entry atomically, by
/// creating it under a temporary name and renaming that into place.
fn place(
    dir: RawFd,
    name: &OsStr,
    existing: Option<&FileStat>,
    create: impl Fn(&OsStr) -> nix::Result<()>,
) -> nix::Result<()> {
    match existing {
        None => create(name),
        Some(st) if dirfd::is_dir(st) => {
            dirfd::remove_at(dir, name)?;
            create(name)
        }
        Some(_) => {
            let tmp = dirfd::temp_name();
            create(&tmp)?;
            renameat(Some(dir), tmp.as_os_str(), Some(dir), name).inspect_err(|_| {
                let _ = unlinkat(Some(dir), tmp.as_os_str(), UnlinkatFlags::NoRemoveDir);
            })
        }
    }
}

/// Writes `data` at the current position, seeking over all-zero 4 KiB blocks so they
/// become holes: sparse files stay sparse. Returns whether it ended with a hole (the
/// caller then sets the final length).
fn write_sparse(f: &mut File, data: &[u8]) -> std::io::Result<bool> {
    const BLOCK: usize = 4096;
    let mut pending: Option<usize> = None; // start of a run of blocks with data
    let mut pos = 0;
    while pos < data.len() {
        let end = (pos + BLOCK).min(data.len());
        let zero = data[pos..end].iter().all(|&b| b == 0);
        match (zero, pending) {
            (false, None) => pending = Some(pos),
            (true, Some(start)) => {
                f.write_all(&data[start..pos])?;
                pending = None;
                f.seek(SeekFrom::Current((end - pos) as i64))?;
            }
            (true, None) => {
                f.seek(SeekFrom::Current((end - pos) as i64))?;
            }
            (false, Some(_)) => {}
        }
        pos = end;
    }
    let hole_at_end = pending.is_none() && !data.is_empty();
    if let Some(start) = pending {
        f.write_all(&data[start..])?;
    }
    Ok(hole_at_end)
}

/// How many hard-link groups may wait for their next member at once: each holds its
/// first member's directory open, and the descriptors must last (a quarter of the
/// limit, so writers and repository reads keep theirs).
pub(super) fn link_cap() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur
    } else {
        1024
    };
    (soft / 4).clamp(8, 4096) as usize
}
