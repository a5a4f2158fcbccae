//! Restore: write a snapshot's tree (or part of it) into a target directory.
//!
//! Safety first: every name is checked (`is_safe_name`) before it is used; the target is
//! opened once and every entry is created relative to its parent directory's descriptor
//! (`dirfd`), directories are entered only with O_NOFOLLOW|O_DIRECTORY, so nothing
//! another process does to the target can steer a write out of it; files are created
//! with O_EXCL|O_NOFOLLOW under a temporary name and renamed into place, symlinks, fifos
//! and devices are made and given their metadata in a private staging directory first,
//! and every blob is verified before a byte of it is written. `--overwrite` decides for every
//! kind of entry (`entry::Decision`); a dry run walks the same code without writing and
//! lists what would be created, overwritten and deleted.

mod cleanup;
mod dir_jobs;
mod dirfd;
mod entry;
mod meta;
mod runs;
mod shared;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{fstat, mkdirat, FileStat, Mode};

use crate::error::{Error, Result};
use crate::fsmeta;
use crate::id::Id;
use crate::pattern::PatternSet;
use crate::repo::tree::{is_safe_name, Node, NodeKind, Tree};
use crate::repo::Repository;
use dir_jobs::{DirJob, InFlight};
use dirfd::DirFd;
use entry::{io, link_cap, Decision, LinkSource};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overwrite {
    /// Replace whatever is there.
    Always,
    /// Keep an existing entry only when it equals the snapshot's (file content,
    /// symlink target, fifo, device number).
    #[default]
    IfChanged,
    /// Replace an existing entry only when it is older (mtime) than the snapshot's.
    IfNewer,
    /// Leave everything that exists exactly as it is.
    Never,
}

impl Overwrite {
    pub fn as_str(self) -> &'static str {
        match self {
            Overwrite::Always => "always",
            Overwrite::IfChanged => "if-changed",
            Overwrite::IfNewer => "if-newer",
            Overwrite::Never => "never",
        }
    }
}

#[derive(Clone, Default)]
pub struct RestoreOptions {
    pub target: PathBuf,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// Plan only: report `would create/overwrite/delete PATH`, write nothing.
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
    /// Existing files left as they were (`--overwrite`).
    pub files_skipped: u64,
    pub dirs_restored: u64,
    pub other_restored: u64,
    /// Existing entries of other kinds left as they were; a directory skipped with
    /// everything below it counts once.
    pub other_skipped: u64,
    /// Existing entries (of any kind) replaced by the snapshot's.
    pub replaced: u64,
    pub bytes_written: u64,
    pub files_verified: u64,
    pub deleted: u64,
    pub errors: u64,
    /// Entries refused or damaged in the repository (exit 13).
    pub integrity_errors: u64,
    /// Dry run only: the target paths a restore would replace or delete (a directory
    /// as a whole, nothing below it), for the pre-restore snapshot.
    #[serde(skip)]
    pub replaced_paths: Vec<PathBuf>,
}

/// Whether a restore into `target` cannot replace anything: it does not exist yet or
/// is an empty directory.
pub fn target_is_empty(target: &Path) -> bool {
    match std::fs::read_dir(target) {
        Ok(mut rd) => rd.next().is_none(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
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
/// problem and, on a dry run, per entry that would be created, overwritten or deleted.
pub fn restore(
    repo: &Repository,
    node: &Node,
    path: &str,
    opts: &RestoreOptions,
    report: &(dyn Fn(String) + Sync),
) -> Result<RestoreSummary> {
    let include = PatternSet::new(opts.include.iter().map(|p| (p.as_str(), false)))?;
    let exclude = PatternSet::new(opts.exclude.iter().map(|p| (p.as_str(), false)))?;
    // The entries restore_entries restores (or, for a directory, walks).
    let wanted = |p: &Path, n: &Node| {
        !exclude.matches_self_or_ancestor(p)
            && (n.kind == NodeKind::Dir
                || include.is_empty()
                || include.matches_self_or_ancestor(p))
    };
    let root_path = Path::new(if path.is_empty() { "/" } else { path });
    let (shared, link_members) = shared::SharedBlobs::plan(repo, node, root_path, &wanted)?;
    let link_cap = link_cap();
    let r = Restorer {
        repo,
        opts,
        report,
        include,
        exclude,
        is_root: fsmeta::is_root(),
        links: Mutex::new(HashMap::new()),
        link_members: Mutex::new(link_members),
        link_cap,
        // An eighth of the descriptors at most (each file in flight may hold its
        // directory open), beside the link groups' quarter.
        in_flight: InFlight::new((link_cap / 2).min(512)),
        link_copies: AtomicU64::new(0),
        unnamed_files: AtomicBool::new(dirfd::can_link_unnamed()),
        summary: Mutex::new(RestoreSummary::default()),
        plan: Mutex::new(Vec::new()),
        shared,
    };
    let target = &opts.target;
    let target_existed = target.is_dir();
    // Prefetching runs ahead of the writers only when nearly every file will be
    // written: into a target with content, `--overwrite` may keep most files, and
    // fetching their blobs ahead would download what is never written.
    let prefetch =
        !opts.dry_run && (opts.overwrite == Overwrite::Always || target_is_empty(target));
    // The target path itself may be followed (it is the user's choice); nothing below
    // it is.
    let open_target = || {
        let fd = nix::fcntl::openat(
            None,
            target.as_path(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        // SAFETY: a new descriptor that nothing else owns.
        Ok::<_, Errno>(Arc::new(unsafe { OwnedFd::from_raw_fd(fd) }))
    };
    let root_fd = if opts.dry_run {
        match open_target() {
            Ok(fd) => Some(fd),
            Err(Errno::ENOENT) => None,
            Err(e) => return Err(io(target)(e)),
        }
    } else {
        std::fs::create_dir_all(target).map_err(|e| Error::io_path(target, e))?;
        Some(open_target().map_err(io(target))?)
    };
    let root = Dir {
        fd: root_fd,
        path: target.clone(),
        made: None,
    };
    // More writers than cores: creating small files waits on the file system.
    // On remote storage at least as many as the connections: each waits on a read.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut threads = cores.max(2) * 2;
    if repo.backend().is_remote() {
        threads = threads.max(repo.backend().connections());
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .stack_size(64 << 20)
        .build()
        .map_err(|e| Error::Other(format!("starting writer threads: {e}")))?;
    let prefetchers = if prefetch {
        r.shared.prefetchers(repo)
    } else {
        0
    };
    std::thread::scope(|s| {
        for _ in 0..prefetchers {
            s.spawn(|| r.shared.prefetch(repo));
        }
        // Stops the prefetchers however the restore ends (a panic too), so the scope
        // can join them.
        let _stop = StopPrefetch(&r.shared);
        pool.install(|| rayon::scope(|s| r.restore_root(s, node, path, root, target_existed)))
    })?;
    let copies = r.link_copies.load(Ordering::Relaxed);
    if copies > 0 {
        report(format!(
            "warning: {copies} hard-linked files were restored as separate copies: more than {} hard-link groups were open at once",
            r.link_cap
        ));
    }
    let mut summary = r.summary.into_inner().unwrap();
    summary.replaced_paths = r.plan.into_inner().unwrap();
    Ok(summary)
}

struct StopPrefetch<'a>(&'a shared::SharedBlobs);

impl Drop for StopPrefetch<'_> {
    fn drop(&mut self) {
        self.0.stop_prefetch();
    }
}

/// A directory of the target as the restore sees it.
#[derive(Clone)]
struct Dir {
    /// `None` only in a dry run, for a directory that does not exist yet.
    fd: Option<DirFd>,
    /// For messages and the plan.
    path: PathBuf,
    /// Made by this restore (private, 0700, until its metadata is set), with the owner
    /// and group new entries in it get: nothing was in it, so its entries are created
    /// without looking first, and a new file already owned right is not chowned. Should anything appear
    /// there meanwhile, every create refuses to replace it (`O_EXCL`, `mkdirat`,
    /// `RENAME_NOREPLACE`, `linkat`) and that entry fails.
    made: Option<(u32, u32)>,
}

impl Dir {
    fn raw(&self) -> Option<RawFd> {
        self.fd.as_ref().map(|f| f.as_raw_fd())
    }

    /// The descriptor to write through (always there when not planning).
    fn fd(&self) -> Result<RawFd> {
        self.raw()
            .ok_or_else(|| Error::Other(format!("{}: directory is not open", self.path.display())))
    }
}

/// A directory that is made (or replaces what is at its name) only when something is
/// restored into it: directories above an `--include`d path appear only if needed.
struct Lazy<'a> {
    dir: Option<Dir>,
    pending: Option<(&'a Dir, &'a OsStr, PathBuf, Option<FileStat>)>,
    created: bool,
}

impl Lazy<'_> {
    fn ready(dir: Dir) -> Self {
        Lazy {
            dir: Some(dir),
            pending: None,
            created: false,
        }
    }

    fn get(&mut self, r: &Restorer) -> Result<&Dir> {
        if let Some((parent, name, path, existing)) = self.pending.take() {
            self.dir = Some(r.make_dir(parent, name, path, existing.as_ref())?);
            self.created = true;
        }
        Ok(self.dir.as_ref().expect("a directory is open or pending"))
    }
}

struct Restorer<'a> {
    repo: &'a Repository,
    opts: &'a RestoreOptions,
    report: &'a (dyn Fn(String) + Sync),
    include: PatternSet,
    exclude: PatternSet,
    is_root: bool,
    /// (device, inode) in the snapshot → the member this restore wrote that the next
    /// ones link to; dropped after the group's last member (at most `link_cap`).
    links: Mutex<HashMap<(u64, u64), LinkSource>>,
    /// Members of each hard-link group still to come, within the selection; a file
    /// whose other names are not restored is no group.
    link_members: Mutex<shared::LinkMembers>,
    link_cap: usize,
    /// Group members written as copies because `link_cap` groups were open.
    link_copies: AtomicU64,
    /// Plain files handed to the writers and not written yet (`dir_jobs`).
    in_flight: InFlight,
    /// New files are made unnamed and linked into place (cleared on the first file
    /// system that cannot).
    unnamed_files: AtomicBool,
    summary: Mutex<RestoreSummary>,
    /// Dry run: paths that would be replaced or deleted.
    plan: Mutex<Vec<PathBuf>>,
    shared: shared::SharedBlobs,
}

impl Restorer<'_> {
    fn restore_root<'s>(
        &'s self,
        scope: &rayon::Scope<'s>,
        node: &Node,
        path: &str,
        root: Dir,
        existed: bool,
    ) -> Result<()> {
        let snap_path = PathBuf::from(if path.is_empty() { "/" } else { path });
        if node.kind == NodeKind::Dir {
            let tree = self.load_tree(node, &snap_path)?;
            // Looked at before the contents change its times.
            let before = match root.raw() {
                Some(fd) if existed => Some(fstat(fd).map_err(io(&root.path))?),
                _ => None,
            };
            let mut dir = Lazy::ready(root.clone());
            let files = self.restore_entries(scope, &tree, &mut dir, &snap_path)?;
            // The snapshot root is synthesized; a SUBPATH directory's own metadata goes
            // onto the target, as restic does, by the rule of any existing directory.
            let keep_meta = match (self.opts.overwrite, &before) {
                (_, None) => false,
                (Overwrite::Never, _) => true,
                (Overwrite::IfNewer, Some(st)) => !entry::is_older(st, node),
                (Overwrite::Always | Overwrite::IfChanged, _) => false,
            };
            let set_meta = !self.opts.dry_run
                && snap_path != Path::new("/")
                && self.selected_self_or_ancestor(&snap_path)
                && !keep_meta;
            let job = DirJob {
                tree,
                files,
                dir: root,
                snap_dir: snap_path,
                delete: self.opts.delete,
                meta: set_meta.then(|| node.clone()),
            };
            self.hand_off(scope, job);
        } else {
            let parent = snap_path.parent().unwrap_or(Path::new("/")).to_path_buf();
            let tree = Tree {
                nodes: vec![node.clone()],
            };
            // A single file: `--delete` has no directory of the snapshot to compare the
            // target with, so it deletes nothing (the file's siblings are not restored).
            if self.opts.delete {
                (self.report)(format!(
                    "note: {} is a single file: --delete deletes nothing",
                    snap_path.display()
                ));
            }
            let files =
                self.restore_entries(scope, &tree, &mut Lazy::ready(root.clone()), &parent)?;
            let job = DirJob {
                tree,
                files,
                dir: root,
                snap_dir: parent,
                delete: false,
                meta: None,
            };
            self.hand_off(scope, job);
        }
        Ok(())
    }

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

    fn report_all(&self, warnings: Vec<String>) {
        for w in warnings {
            (self.report)(format!("warning: {w}"));
        }
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

    /// What is at `name` in `dir` now (nothing, in a directory still to be made).
    fn lstat(&self, dir: &Dir, name: &OsStr, path: &Path) -> Result<Option<FileStat>> {
        if dir.made.is_some() {
            return Ok(None);
        }
        match dir.raw() {
            Some(fd) => dirfd::lstat_at(fd, name).map_err(io(path)),
            None => Ok(None),
        }
    }

    /// Restores a directory's entries into `dir` (made when the first entry needs it),
    /// all but its plain files (no other hard links): those are returned, as indices
    /// into `tree.nodes`, for the writer threads (`dir_jobs`). Everything else is done
    /// here, in order.
    fn restore_entries<'s>(
        &'s self,
        scope: &rayon::Scope<'s>,
        tree: &Tree,
        dir: &mut Lazy,
        snap_dir: &Path,
    ) -> Result<Vec<usize>> {
        let mut files = Vec::new();
        // Made on the first symlink, fifo or device; removed before the directory's
        // own metadata is set (its removal changes the directory's times).
        let mut staging = None;
        if !dir.created && !self.opts.dry_run {
            if let Some(d) = &dir.dir {
                self.remove_stale(d);
            }
        }
        for (i, node) in tree.nodes.iter().enumerate() {
            if self.in_flight.aborted() {
                break;
            }
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
            let d = dir.get(self)?;
            let path = d.path.join(name);
            if node.kind == NodeKind::File && !self.in_link_group(node) {
                files.push(i);
                continue;
            }
            let result = match node.kind {
                NodeKind::Dir => self.restore_dir(scope, node, d, name, path, &snap_path, selected),
                NodeKind::File => self.restore_file(node, d, name, &path),
                _ => self.restore_special(node, d, name, &path, &mut staging),
            };
            if let Err(e) = result {
                self.problem(e);
            }
        }
        drop(staging);
        Ok(files)
    }

    #[allow(clippy::too_many_arguments)]
    fn restore_dir<'s>(
        &'s self,
        scope: &rayon::Scope<'s>,
        node: &Node,
        parent: &Dir,
        name: &OsStr,
        path: PathBuf,
        snap_path: &Path,
        selected: bool,
    ) -> Result<()> {
        let existing = self.lstat(parent, name, &path)?;
        let mut dir = match self.decide(node, parent, name, existing.as_ref()) {
            Decision::Keep => {
                (self.report)(format!(
                    "skipped {} and everything below it: something else is there (--overwrite {})",
                    path.display(),
                    self.opts.overwrite.as_str()
                ));
                self.count(|s| s.other_skipped += 1);
                return Ok(());
            }
            Decision::Merge => {
                let fd = dirfd::open_dir(parent.fd()?, name).map_err(io(&path))?;
                dirfd::verify_dir(&fd, existing.as_ref()).map_err(io(&path))?;
                Lazy::ready(Dir {
                    fd: Some(Arc::new(fd)),
                    path,
                    made: None,
                })
            }
            Decision::Create | Decision::Replace => Lazy {
                dir: None,
                pending: Some((parent, name, path, existing)),
                created: false,
            },
        };
        let tree = self.load_tree(node, snap_path)?;
        if selected {
            dir.get(self)?;
        }
        let files = self.restore_entries(scope, &tree, &mut dir, snap_path)?;
        let Some(d) = dir.dir.take() else {
            return Ok(());
        };
        if dir.created {
            self.count(|s| s.dirs_restored += 1);
        }
        let keep_meta = match self.opts.overwrite {
            _ if dir.created => false,
            // Only walked through to reach included paths below it: not restored.
            _ if !selected => true,
            Overwrite::Never => true,
            Overwrite::IfNewer => !existing
                .as_ref()
                .is_some_and(|st| entry::is_older(st, node)),
            Overwrite::Always | Overwrite::IfChanged => false,
        };
        let job = DirJob {
            tree,
            files,
            dir: d,
            snap_dir: snap_path.to_path_buf(),
            delete: self.opts.delete,
            meta: (!self.opts.dry_run && !keep_meta).then(|| node.clone()),
        };
        self.hand_off(scope, job);
        Ok(())
    }

    /// Makes the directory at `name` (replacing a non-directory there), private until
    /// its metadata is set, and opens it without following anything.
    fn make_dir(
        &self,
        parent: &Dir,
        name: &OsStr,
        path: PathBuf,
        existing: Option<&FileStat>,
    ) -> Result<Dir> {
        self.note_write(&path, existing.is_some());
        if self.opts.dry_run {
            return Ok(Dir {
                fd: None,
                path,
                made: None,
            });
        }
        let pfd = parent.fd()?;
        if existing.is_some() {
            dirfd::remove_at(pfd, name).map_err(io(&path))?;
        }
        mkdirat(Some(pfd), name, Mode::from_bits_truncate(0o700)).map_err(io(&path))?;
        let fd = dirfd::open_dir(pfd, name).map_err(io(&path))?;
        let st = dirfd::verify_dir(&fd, None).map_err(io(&path))?;
        Ok(Dir {
            fd: Some(Arc::new(fd)),
            path,
            // New entries get its owner and group (its group is ours, or its parent's
            // when that is setgid, as it is then for the entries).
            made: Some((st.st_uid, st.st_gid)),
        })
    }
}
