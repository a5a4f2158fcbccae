//! Restore: write a snapshot's tree (or part of it) into a target directory.
//!
//! Safety first: every name is checked (`is_safe_name`) before it is joined to a path,
//! every directory we enter is one we made or checked to be a real directory (never a
//! symlink), files are created under a temporary name with O_EXCL|O_NOFOLLOW and
//! renamed into place, and every blob is verified before a byte of it is written.

mod meta;
mod shared;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::fsmeta;
use crate::id::Id;
use crate::pattern::PatternSet;
use crate::repo::tree::{is_safe_name, Node, NodeKind, Tree};
use crate::repo::Repository;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overwrite {
    Always,
    /// Leave an existing file alone only when its content equals the snapshot's.
    #[default]
    IfChanged,
    IfNewer,
    Never,
}

#[derive(Default)]
pub struct RestoreOptions {
    pub target: PathBuf,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub dry_run: bool,
    pub overwrite: Overwrite,
    /// Read every written file back and compare it with the snapshot.
    pub verify: bool,
    /// Remove entries in the target that the snapshot does not have.
    pub delete: bool,
    /// Bumped per file restored or skipped (files, bytes).
    pub progress: Option<std::sync::Arc<crate::progress::Progress>>,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RestoreSummary {
    pub files_restored: u64,
    pub files_skipped: u64,
    pub dirs_restored: u64,
    pub other_restored: u64,
    pub bytes_written: u64,
    pub files_verified: u64,
    pub deleted: u64,
    pub errors: u64,
    /// Entries refused or damaged in the repository (exit 13).
    pub integrity_errors: u64,
}

/// Finds the node at an absolute path inside a snapshot; `/` is the root.
pub fn find_node(repo: &Repository, root: Id, path: &str) -> Result<Node> {
    let mut node = Node::new(Vec::new(), NodeKind::Dir);
    node.subtree = Some(root);
    node.mode = 0o755;
    for comp in path.split('/').filter(|c| !c.is_empty()) {
        let tree_id = node
            .subtree
            .filter(|_| node.kind == NodeKind::Dir)
            .ok_or_else(|| {
                Error::Usage(format!("{path}: {} is not a directory", node.name_lossy()))
            })?;
        let tree = repo.load_tree(&tree_id)?;
        node = tree
            .find(comp.as_bytes())
            .cloned()
            .ok_or_else(|| Error::Usage(format!("{path} is not in the snapshot")))?;
    }
    Ok(node)
}

/// Restores `node` (found at snapshot path `path`): a directory's contents go straight
/// into the target, a single file becomes `target/NAME`. `report` receives a line per
/// problem and, on a dry run, per entry that would be restored.
pub fn restore(
    repo: &Repository,
    node: &Node,
    path: &str,
    opts: &RestoreOptions,
    report: &(dyn Fn(String) + Sync),
) -> Result<RestoreSummary> {
    let r = Restorer {
        repo,
        opts,
        report,
        include: PatternSet::new(opts.include.iter().map(|p| (p.as_str(), false)))?,
        exclude: PatternSet::new(opts.exclude.iter().map(|p| (p.as_str(), false)))?,
        is_root: fsmeta::is_root(),
        links: Mutex::new(HashMap::new()),
        summary: Mutex::new(RestoreSummary::default()),
        shared: if opts.dry_run {
            shared::SharedBlobs::default()
        } else {
            shared::SharedBlobs::plan(repo, node)?
        },
    };
    if !opts.dry_run {
        fs::create_dir_all(&opts.target).map_err(|e| Error::io_path(&opts.target, e))?;
    }
    // More writers than cores: creating small files waits on the file system.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cores.max(2) * 2)
        .stack_size(64 << 20)
        .build()
        .map_err(|e| Error::Other(format!("starting writer threads: {e}")))?;
    pool.install(|| r.restore_root(node, path))?;
    Ok(r.summary.into_inner().unwrap())
}

impl Restorer<'_> {
    fn restore_root(&self, node: &Node, path: &str) -> Result<()> {
        let opts = self.opts;
        let r = self;
        let snap_path = PathBuf::from(if path.is_empty() { "/" } else { path });
        if node.kind == NodeKind::Dir {
            let tree = r.load_tree(node, &snap_path)?;
            r.restore_entries(&tree, &opts.target, &snap_path, true)?;
            // The snapshot root is synthesized; a SUBPATH directory's own metadata goes
            // onto the target, as restic does.
            if !opts.dry_run
                && snap_path != Path::new("/")
                && r.selected_self_or_ancestor(&snap_path)
            {
                r.apply_meta(&opts.target, node);
            }
        } else {
            let parent = snap_path.parent().unwrap_or(Path::new("/")).to_path_buf();
            let tree = Tree {
                nodes: vec![node.clone()],
            };
            r.restore_entries(&tree, &opts.target, &parent, true)?;
        }
        Ok(())
    }
}

struct Restorer<'a> {
    repo: &'a Repository,
    opts: &'a RestoreOptions,
    report: &'a (dyn Fn(String) + Sync),
    include: PatternSet,
    exclude: PatternSet,
    is_root: bool,
    /// (device, inode) in the snapshot → path already restored, for hard links.
    links: Mutex<HashMap<(u64, u64), PathBuf>>,
    summary: Mutex<RestoreSummary>,
    shared: shared::SharedBlobs,
}

impl Restorer<'_> {
    fn count(&self, f: impl FnOnce(&mut RestoreSummary)) {
        f(&mut self.summary.lock().unwrap());
    }

    fn problem(&self, e: Error) {
        self.count(|s| {
            if matches!(e, Error::Integrity { .. }) {
                s.integrity_errors += 1;
            }
            s.errors += 1;
        });
        (self.report)(format!("error: {e}"));
    }

    fn load_tree(&self, node: &Node, snap_path: &Path) -> Result<Tree> {
        match node.subtree {
            Some(id) => self.repo.load_tree(&id),
            None => Err(Error::integrity(
                format!("tree of {}", snap_path.display()),
                "directory has no subtree",
            )),
        }
    }

    fn selected_self_or_ancestor(&self, snap_path: &Path) -> bool {
        self.include.is_empty() || self.include.matches_self_or_ancestor(snap_path)
    }

    /// Restores a directory's entries into `dest` (an existing real directory, or one
    /// to create when `dest_ready` is false and something in it is restored).
    fn restore_entries(
        &self,
        tree: &Tree,
        dest: &Path,
        snap_dir: &Path,
        mut dest_ready: bool,
    ) -> Result<bool> {
        let mut wrote_any = false;
        // Plain files (no other hard links) are written in parallel once the rest of
        // the directory is in place; everything else in order.
        let mut files = Vec::new();
        for node in &tree.nodes {
            if !is_safe_name(&node.name) {
                self.problem(Error::integrity(
                    format!("tree of {}", snap_dir.display()),
                    format!(
                        "refusing entry named {:?}",
                        String::from_utf8_lossy(&node.name)
                    ),
                ));
                continue;
            }
            let name = OsStr::from_bytes(&node.name);
            let snap_path = snap_dir.join(name);
            if self.exclude.matches_self_or_ancestor(&snap_path) {
                continue;
            }
            let selected = self.selected_self_or_ancestor(&snap_path);
            if node.kind != NodeKind::Dir && !selected {
                continue;
            }
            if !dest_ready && !self.opts.dry_run {
                ensure_dir(dest)?;
                dest_ready = true;
            }
            let path = dest.join(name);
            if node.kind == NodeKind::File && node.links <= 1 {
                files.push((node, path));
                continue;
            }
            let result = match node.kind {
                NodeKind::Dir => self.restore_dir(node, &path, &snap_path, selected),
                NodeKind::File => self.restore_file(node, &path).map(|_| true),
                _ => self.restore_special(node, &path).map(|_| true),
            };
            match result {
                Ok(w) => wrote_any |= w,
                Err(e) => self.problem(e),
            }
        }
        wrote_any |= !files.is_empty();
        files.par_iter().for_each(|(node, path)| {
            if let Err(e) = self.restore_file(node, path) {
                self.problem(e);
            }
        });
        if self.opts.delete && dest_ready && !self.opts.dry_run {
            self.delete_extra(tree, dest, snap_dir);
        }
        Ok(wrote_any || dest_ready)
    }

    /// `--delete`: removes what `dest` holds beyond the snapshot's entries (within the
    /// include/exclude selection), never following a symlink.
    fn delete_extra(&self, tree: &Tree, dest: &Path, snap_dir: &Path) {
        let Ok(rd) = fs::read_dir(dest) else { return };
        for entry in rd.flatten() {
            let name = entry.file_name();
            if tree.find(name.as_bytes()).is_some()
                || name.as_bytes().starts_with(b".cairn-restore-")
            {
                continue;
            }
            let snap_path = snap_dir.join(&name);
            if self.exclude.matches_self_or_ancestor(&snap_path)
                || !self.selected_self_or_ancestor(&snap_path)
            {
                continue;
            }
            match remove_existing(&entry.path()) {
                Ok(()) => self.count(|s| s.deleted += 1),
                Err(e) => self.problem(e),
            }
        }
    }

    fn restore_dir(
        &self,
        node: &Node,
        path: &Path,
        snap_path: &Path,
        selected: bool,
    ) -> Result<bool> {
        let tree = self.load_tree(node, snap_path)?;
        if self.opts.dry_run {
            if selected {
                (self.report)(format!("would restore {}", path.display()));
                self.count(|s| s.dirs_restored += 1);
            }
            self.restore_entries(&tree, path, snap_path, true)?;
            return Ok(selected);
        }
        if selected {
            ensure_dir(path)?;
        }
        let created = self.restore_entries(&tree, path, snap_path, selected)?;
        if created {
            self.count(|s| s.dirs_restored += 1);
            // After the contents, so their creation does not bump the times again.
            self.apply_meta(path, node);
        }
        Ok(created)
    }

    fn restore_file(&self, node: &Node, path: &Path) -> Result<()> {
        if self.opts.dry_run {
            (self.report)(format!("would restore {}", path.display()));
            self.count(|s| {
                s.files_restored += 1;
                s.bytes_written += node.size;
            });
            return Ok(());
        }
        let link_key = (node.links > 1).then_some((node.device, node.inode));
        let first = link_key.and_then(|k| self.links.lock().unwrap().get(&k).cloned());
        if let Some(first) = first {
            remove_existing(path)?;
            fs::hard_link(&first, path).map_err(|e| Error::io_path(path, e))?;
            self.count(|s| s.files_restored += 1);
            return Ok(());
        }
        let existing = path.symlink_metadata().ok();
        if existing
            .as_ref()
            .is_some_and(|m| self.keep_existing(node, path, m))
        {
            self.count(|s| s.files_skipped += 1);
        } else {
            self.write_file(node, path, existing.is_some())?;
            self.count(|s| s.files_restored += 1);
            if self.opts.verify {
                if !self.same_content(node, path) {
                    return Err(Error::integrity(
                        path.display().to_string(),
                        "the file read back differs from the snapshot (--verify)",
                    ));
                }
                self.count(|s| s.files_verified += 1);
            }
        }
        if let Some(p) = &self.opts.progress {
            p.add(1, node.size);
        }
        if let Some(k) = link_key {
            self.links.lock().unwrap().insert(k, path.to_path_buf());
        }
        Ok(())
    }

    /// Whether an existing file at `path` is left as it is (`--overwrite`).
    fn keep_existing(&self, node: &Node, path: &Path, meta: &fs::Metadata) -> bool {
        match self.opts.overwrite {
            Overwrite::Always => false,
            Overwrite::Never => true,
            Overwrite::IfNewer => {
                meta.is_file()
                    && (meta.mtime(), meta.mtime_nsec() as u32)
                        >= (node.mtime.secs, node.mtime.nanos)
            }
            Overwrite::IfChanged => {
                meta.is_file() && meta.len() == node.size && self.same_content(node, path)
            }
        }
    }

    /// Chunks the existing file as a backup would and compares blob ids.
    fn same_content(&self, node: &Node, path: &Path) -> bool {
        let Ok(mut f) = File::open(path) else {
            return false;
        };
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

    /// Writes a file's content so that a failure leaves no file with wrong bytes under
    /// the entry's name: a new file is created in place (O_EXCL) and removed again on
    /// failure; an existing one is replaced by a renamed temporary file.
    fn write_file(&self, node: &Node, path: &Path, exists: bool) -> Result<()> {
        if !exists {
            return match self.write_content(node, path) {
                Ok(f) => {
                    self.report_all(meta::apply_to_file(&f, path, node, self.is_root));
                    Ok(())
                }
                Err(e) => {
                    let _ = fs::remove_file(path);
                    Err(e)
                }
            };
        }
        let dir = path.parent().expect("restored paths have a parent");
        let tmp = dir.join(format!(
            ".cairn-restore-{}",
            hex::encode(crate::crypto::random_bytes::<6>())
        ));
        match self.write_content(node, &tmp) {
            Ok(f) => self.report_all(meta::apply_to_file(&f, path, node, self.is_root)),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        }
        if let Ok(m) = path.symlink_metadata() {
            if m.is_dir() {
                fs::remove_dir_all(path).map_err(|e| Error::io_path(path, e))?;
            }
        }
        fs::rename(&tmp, path).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Error::io_path(path, e)
        })
    }

    fn report_all(&self, warnings: Vec<String>) {
        for w in warnings {
            (self.report)(format!("warning: {w}"));
        }
    }

    /// Creates `dest` and writes the file's verified content; returns the open file.
    fn write_content(&self, node: &Node, dest: &Path) -> Result<File> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(dest)
            .map_err(|e| Error::io_path(dest, e))?;
        let mut written = 0u64;
        for id in &node.content {
            let data = self.shared.get(self.repo, id)?;
            write_sparse(&mut f, &data).map_err(|e| Error::io_path(dest, e))?;
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
        f.set_len(written).map_err(|e| Error::io_path(dest, e))?;
        self.count(|s| s.bytes_written += written);
        Ok(f)
    }

    fn restore_special(&self, node: &Node, path: &Path) -> Result<()> {
        if self.opts.dry_run {
            (self.report)(format!("would restore {}", path.display()));
            self.count(|s| s.other_restored += 1);
            return Ok(());
        }
        match node.kind {
            NodeKind::Symlink => {
                remove_existing(path)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&node.link_target), path)
                    .map_err(|e| Error::io_path(path, e))?;
            }
            NodeKind::Fifo => {
                remove_existing(path)?;
                nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
                    .map_err(|e| Error::io_path(path, e.into()))?;
            }
            NodeKind::CharDevice | NodeKind::BlockDevice => {
                if !self.is_root {
                    (self.report)(format!(
                        "warning: {}: device nodes are restored only as root",
                        path.display()
                    ));
                    return Ok(());
                }
                remove_existing(path)?;
                let kind = if node.kind == NodeKind::CharDevice {
                    nix::sys::stat::SFlag::S_IFCHR
                } else {
                    nix::sys::stat::SFlag::S_IFBLK
                };
                nix::sys::stat::mknod(
                    path,
                    kind,
                    nix::sys::stat::Mode::from_bits_truncate(0o600),
                    node.rdev,
                )
                .map_err(|e| Error::io_path(path, e.into()))?;
            }
            // A socket belongs to the process that made it; there is nothing to restore.
            NodeKind::Socket => return Ok(()),
            NodeKind::File | NodeKind::Dir => unreachable!("handled by the caller"),
        }
        self.apply_meta(path, node);
        self.count(|s| s.other_restored += 1);
        Ok(())
    }

    fn apply_meta(&self, path: &Path, node: &Node) {
        self.report_all(meta::apply(path, node, self.is_root));
    }
}

/// Writes `data` at the current position, seeking over all-zero 4 KiB blocks so they
/// become holes: sparse files stay sparse (the caller sets the final length).
fn write_sparse(f: &mut File, data: &[u8]) -> std::io::Result<()> {
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
    if let Some(start) = pending {
        f.write_all(&data[start..])?;
    }
    Ok(())
}

/// Makes `path` a real directory: an existing symlink or file there is replaced, never
/// followed.
fn ensure_dir(path: &Path) -> Result<()> {
    match path.symlink_metadata() {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => {
            fs::remove_file(path).map_err(|e| Error::io_path(path, e))?;
            fs::create_dir(path).map_err(|e| Error::io_path(path, e))
        }
        Err(_) => fs::create_dir(path).map_err(|e| Error::io_path(path, e)),
    }
}

/// Clears the way for a new entry (not following a symlink that is there).
fn remove_existing(path: &Path) -> Result<()> {
    match path.symlink_metadata() {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).map_err(|e| Error::io_path(path, e)),
        Ok(_) => fs::remove_file(path).map_err(|e| Error::io_path(path, e)),
        Err(_) => Ok(()),
    }
}
