//! What a restore removes from an existing target: the leftovers of an interrupted
//! restore, and with `--delete`, what the snapshot does not have.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;

use super::entry::io;
use super::{dirfd, Dir, Restorer};
use crate::error::Error;
use crate::repo::tree::Tree;

impl Restorer<'_> {
    /// Removes the temporary files and staging directories an interrupted restore left
    /// in an existing directory (ours, exactly a temporary name, not in use).
    pub(super) fn remove_stale(&self, dir: &Dir) {
        let Some(fd) = dir.raw() else { return };
        match dirfd::remove_stale(fd) {
            Ok(names) => {
                for n in names {
                    (self.report)(format!(
                        "note: removed {}, left by an interrupted restore",
                        dir.path.join(n).display()
                    ));
                }
            }
            Err(e) => self.problem(io(&dir.path)(e)),
        }
    }

    /// `--delete`: removes what `dir` holds beyond the snapshot's entries (within the
    /// include/exclude selection), never following a symlink.
    pub(super) fn delete_extra(&self, tree: &Tree, dir: &Dir, snap_dir: &Path) {
        let Some(fd) = dir.raw() else { return };
        let names = match dirfd::list(fd) {
            Ok(n) => n,
            Err(e) => return self.problem(io(&dir.path)(e)),
        };
        for name in names {
            // Leftovers of an interrupted restore are gone by now (`remove_stale`);
            // any other temporary-looking name is just an entry the snapshot lacks.
            if tree.find(name.as_bytes()).is_some() {
                continue;
            }
            let snap_path = snap_dir.join(&name);
            if self.exclude.matches_self_or_ancestor(&snap_path)
                || !self.selected_self_or_ancestor(&snap_path)
            {
                continue;
            }
            let path = dir.path.join(&name);
            if self.opts.dry_run {
                (self.report)(format!("would delete {}", path.display()));
                self.plan.lock().unwrap().push(path);
                self.count(|s| s.deleted += 1);
                continue;
            }
            match dirfd::remove_at(fd, &name) {
                Ok(()) => self.count(|s| s.deleted += 1),
                Err(Errno::EXDEV) => self.problem(Error::Other(format!(
                    "{}: not deleted: it is or holds a mount point of another file system",
                    path.display()
                ))),
                Err(e) => self.problem(io(&path)(e)),
            }
        }
    }
}
