//! Backup: walk the sources, store what is new, write a snapshot.
//!
//! The walk runs on the calling thread: it compares each entry with the parent
//! snapshot, reads and chunks changed files and computes blob ids, so every tree is
//! complete as soon as its directory is walked. Compression, encryption and packing
//! run behind it on worker threads (`saver`).

pub(crate) mod confirm;
mod exclude;
pub(crate) mod saver;
mod source;
mod sqlite;
mod walk;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::time::Instant;

use chrono::{DateTime, FixedOffset, Local};

pub use exclude::{ExcludeOptions, Excluder};

use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::snapshot::{Snapshot, SNAPSHOT_VERSION};
use crate::repo::tree::{Node, NodeKind, Tree};
use crate::repo::Repository;
use saver::{BlobSaver, SaverConfig};
use walk::Walker;

#[derive(Default)]
pub struct BackupOptions {
    pub paths: Vec<PathBuf>,
    /// Back up standard input as one file of this name instead of `paths`.
    pub stdin_filename: Option<String>,
    /// With `stdin_filename`: store this shell command's output instead of standard
    /// input; no snapshot when it exits non-zero.
    pub stdin_command: Option<String>,
    /// Files matching these patterns are stored as read, not through SQLite's backup
    /// API even when they are SQLite databases.
    pub sqlite_raw: Vec<String>,
    pub tags: Vec<String>,
    pub host: Option<String>,
    pub excludes: ExcludeOptions,
    pub one_file_system: bool,
    /// The snapshot to compare with; `None` picks the latest with the same host and paths.
    pub parent: Option<Id>,
    /// Read every file even when the parent says it is unchanged.
    pub force: bool,
    /// Do not compare ctime / inode numbers with the parent's (file systems where they
    /// are not stable: some FUSE and network file systems).
    pub ignore_ctime: bool,
    pub ignore_inode: bool,
    pub time: Option<DateTime<FixedOffset>>,
    pub dry_run: bool,
    /// Bumped per file as the walk goes (files, source bytes).
    pub progress: Option<std::sync::Arc<crate::progress::Progress>>,
}

pub struct BackupResult {
    /// `None` for a dry run.
    pub snapshot_id: Option<Id>,
    pub snapshot: Snapshot,
    pub warnings: u64,
}

/// Runs a backup. `warn` receives one line for every source entry that could not be
/// read; such entries are left out and the snapshot is still written.
pub fn backup(
    repo: &mut Repository,
    opts: &BackupOptions,
    warn: &(dyn Fn(String) + Sync),
) -> Result<BackupResult> {
    let start = Instant::now();
    let start_time = Local::now().fixed_offset();
    let hostname = opts.host.clone().unwrap_or_else(crate::fsmeta::hostname);

    let (paths, sources) = if let Some(name) = &opts.stdin_filename {
        // The same rule restore applies to names read from a repository: a name it
        // would refuse (`.`, `..`, empty, `/`, NUL) must never be stored.
        if !crate::repo::tree::is_safe_name(name.as_bytes()) {
            return Err(Error::Usage(format!(
                "--stdin-filename {name:?} must be a plain file name"
            )));
        }
        (vec![format!("/{name}")], Vec::new())
    } else {
        if opts.paths.is_empty() {
            return Err(Error::Usage(
                "nothing to back up: give at least one path".into(),
            ));
        }
        let sources = absolute_sources(&opts.paths)?;
        let paths = sources
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        (paths, sources)
    };

    let parent = match opts.parent {
        Some(id) => Some((id, repo.load_snapshot(&id.to_hex())?)),
        None => {
            // A damaged snapshot is no parent candidate: warn (not counted as a source
            // error) and compare with the newest readable one.
            let set = repo.snapshots()?;
            for w in set.warnings() {
                warn(w);
            }
            set.into_iter()
                .rev()
                .find(|(_, s)| s.hostname == hostname && same_paths(&s.paths, &paths))
        }
    };
    let parent_tree = match &parent {
        Some((_, s)) => Some(repo.load_tree(&s.tree)?),
        None => None,
    };

    let excluder = Excluder::new(&opts.excludes)?;
    let saver = BlobSaver::start(SaverConfig {
        backend: repo.backend_arc(),
        key: repo.key.sealing.clone(),
        compression: repo.config.compression,
        pack_size: repo.config.pack_size as usize,
        dry_run: opts.dry_run,
        cache: repo.cache(),
        locks: repo.held_locks(),
    });
    // Racy files: changed in the parent backup's clock tick, they are read again.
    let parent_start = parent.as_ref().map(|(_, s)| {
        s.summary
            .as_ref()
            .and_then(|x| x.backup_start)
            .unwrap_or(s.time)
    });
    let sqlite_raw =
        crate::pattern::PatternSet::new(opts.sqlite_raw.iter().map(|p| (p.as_str(), false)))?;
    let walker = Walker::new(repo, &saver, &excluder, opts, warn)
        .with_parent_start(parent_start)
        .with_sqlite_raw(sqlite_raw);
    // Readers: more threads than cores, since small files wait on the disk more than on
    // the CPU. A large stack: the walk recurses once per directory level.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cores.max(2) * 2)
        .stack_size(64 << 20)
        .thread_name(|i| format!("cairn-read-{i}"))
        .build()
        .map_err(|e| Error::Other(format!("starting reader threads: {e}")))?;
    let mut producer = match (&opts.stdin_filename, &opts.stdin_command) {
        (Some(_), Some(cmd)) => Some(StdinCommand::start(cmd)?),
        _ => None,
    };
    let root = pool.install(|| match (&opts.stdin_filename, producer.as_mut()) {
        (Some(name), Some(p)) => walker.save_stream(name, p.output()),
        (Some(name), None) => walker.save_stream(name, std::io::stdin().lock()),
        (None, _) => {
            let vroot = VirtualDir::build(&sources);
            walker.save_virtual(&vroot, Path::new("/"), parent_tree.as_ref())
        }
    });
    sqlite::cleanup();
    // The command's exit decides: a dump that failed half-way is no snapshot.
    if let Some(p) = producer {
        p.finish(root.is_ok())?;
    }
    let root = match root {
        Ok(r) => r,
        // A reader that found the pipeline stopped reports only that; the packer's
        // own error (a full disk, a lost lock: exit 11) is the one to show.
        Err(e) => return Err(saver.finish().err().unwrap_or(e)),
    };
    let (mut summary, relied) = walker.finish();
    let written = saver.finish()?;
    summary.data_added_packed = written.packed_bytes;
    let mut index_steady = false;
    if !opts.dry_run {
        for f in &written.index_files {
            repo.index_add(f);
        }
        let confirmed = confirm::confirm_blobs(repo, &relied, &written)?;
        index_steady = !confirmed.index_changed;
        if confirmed.blobs_rescued > 0 {
            warn(format!(
                "a prune marked data this backup uses as unused while it ran: {} blobs were stored again",
                confirmed.blobs_rescued
            ));
        }
    }

    let end_time = Local::now().fixed_offset();
    summary.backup_start = Some(start_time);
    summary.backup_end = Some(end_time);
    summary.total_duration = start.elapsed().as_secs_f64();
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    let warnings = summary.errors;
    let snapshot = Snapshot {
        version: SNAPSHOT_VERSION,
        time: opts.time.unwrap_or(start_time),
        tree: root,
        paths,
        hostname,
        username: crate::fsmeta::current_username(),
        uid,
        gid,
        tags: opts.tags.clone(),
        parent: parent.map(|(id, _)| id),
        program_version: format!("cairn {}", env!("CARGO_PKG_VERSION")),
        summary: Some(summary),
        original: None,
    };
    let snapshot_id = if opts.dry_run {
        None
    } else {
        // The last moment to notice a lost lock: after it the snapshot exists (and is
        // taken back if its write landed too late).
        repo.confirm_locks()?;
        Some(repo.write_file_while_held(
            crate::backend::FileType::Snapshot,
            &snapshot.encode(&repo.key.sealing),
        )?)
    };
    if index_steady {
        note_clean_listing(repo, &written.index_names);
    }
    Ok(BackupResult {
        snapshot_id,
        snapshot,
        warnings,
    })
}

/// The cache note that records the index files a clean pack listing was made against.
const PACKS_LISTED: &str = "packs-listed";

fn index_fingerprint<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let mut names: Vec<&str> = names.map(|s| s.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    Id::of_file(names.join("\n").as_bytes()).to_hex()
}

/// After a backup that ended well and saw no index file come or go: the next backup
/// may skip the pack listing while the index files stay these.
fn note_clean_listing(repo: &Repository, own_index: &[String]) {
    if let Some(c) = repo.cache() {
        if c.note(PACKS_LISTED).as_deref() == Some("") {
            let fp = index_fingerprint(repo.loaded_index_files().iter().chain(own_index));
            c.set_note(PACKS_LISTED, &fp);
        }
    }
}

/// Packs on storage that no index lists were left by an interrupted backup, or are
/// being written by a running one. When there are any and no one else holds a lock
/// (so they are all leftovers), takes an exclusive lock beside the caller's and
/// indexes them. Returns how many packs were adopted.
///
/// The pack listing this takes grows with the repository (a request per 1000 packs on
/// S3), so it is skipped when this client already made it against the same set of
/// index files and no other lock was in sight: no prune ran since (it rewrites the
/// index) and no backup was left interrupted (it leaves its lock).
pub fn adopt_left_packs(repo: &mut Repository) -> Result<usize> {
    let fingerprint = index_fingerprint(repo.loaded_index_files().iter());
    let quiet = repo.held_locks().iter().all(|h| !h.saw_others());
    let cache = repo.cache();
    let skip = quiet
        && cache
            .as_ref()
            .is_some_and(|c| c.note(PACKS_LISTED).as_deref() == Some(fingerprint.as_str()));
    // Until this backup ends well, the next one must look (this one may fail and leave
    // packs behind without a lock to tell).
    if let Some(c) = &cache {
        c.set_note(PACKS_LISTED, "");
    }
    if skip {
        return Ok(0);
    }
    let known: std::collections::HashSet<Id> = repo.index().packs().iter().copied().collect();
    let stored: std::collections::HashSet<Id> = repo
        .backend()
        .list(crate::backend::FileType::Pack)?
        .iter()
        .filter_map(|(name, _)| Id::from_hex(name).ok())
        .collect();
    // Packs the index lists as live but storage does not hold (a listing may lag: ask
    // for each): this backup must not deduplicate against them.
    let mut missing = std::collections::HashSet::new();
    for id in known.difference(&stored) {
        if repo.index().pack_marked(id).is_some() {
            continue;
        }
        match repo
            .backend()
            .size(crate::backend::FileType::Pack, &id.to_hex())
        {
            Err(e) if e.is_not_found() => {
                missing.insert(*id);
            }
            _ => {}
        }
    }
    if !missing.is_empty() {
        repo.set_unavailable_packs(&missing);
    }
    let unclean = |c: &Option<std::sync::Arc<crate::backend::CachedBackend>>| {
        if let Some(c) = c {
            c.set_note(PACKS_LISTED, "unclean");
        }
    };
    if !missing.is_empty() {
        unclean(&cache);
    }
    if !stored.iter().any(|id| !known.contains(id)) {
        return Ok(0);
    }
    let Some(exclusive) = repo.try_exclusive()? else {
        unclean(&cache);
        return Ok(0);
    };
    // Someone may have changed the index before we got the lock.
    repo.refresh_index()?;
    let adopted = adopt_unindexed_packs(repo)?;
    drop(exclusive);
    Ok(adopted)
}

/// Packs on storage that no index lists were left by an interrupted backup: index
/// them now, so the next backup reuses what that one uploaded instead of storing it
/// again. The caller must hold an exclusive lock: a pack no index lists may also be one
/// a running prune just dropped from the index and is about to delete. Returns how
/// many packs were adopted.
fn adopt_unindexed_packs(repo: &mut Repository) -> Result<usize> {
    let known: std::collections::HashSet<Id> = repo.index().packs().iter().copied().collect();
    let mut file = crate::repo::index::IndexFile::default();
    for (name, _) in repo.backend().list(crate::backend::FileType::Pack)? {
        let Ok(id) = Id::from_hex(&name) else {
            continue;
        };
        if known.contains(&id) {
            continue;
        }
        // A pack whose header does not read is left for `check` to report.
        if let Ok(blobs) = repo.read_pack_header(&name) {
            file.packs.push(crate::repo::index::IndexedPack {
                id,
                marked: None,
                blobs,
            });
        }
    }
    let adopted = file.packs.len();
    if adopted > 0 {
        // As every index file: only while the lock is alive.
        let bytes = file.encode(&repo.key.sealing);
        repo.write_file_while_held(crate::backend::FileType::Index, &bytes)?;
        repo.index_add(&file);
    }
    Ok(adopted)
}

fn same_paths(a: &[String], b: &[String]) -> bool {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort();
    b.sort();
    a == b
}

/// Absolute, lexically cleaned source paths (no symlinks resolved, as restic does);
/// each must exist, so a typo fails before anything is written.
/// A source path as a snapshot records it: absolute, `.` and `..` resolved by name.
pub fn snapshot_path(p: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(p).map_err(|e| Error::io_path(p, e))?;
    let mut clean = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::Normal(n) => clean.push(n),
            Component::ParentDir => {
                clean.pop();
            }
            _ => {}
        }
    }
    Ok(clean)
}

fn absolute_sources(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        let clean = snapshot_path(p)?;
        if let Err(e) = clean.symlink_metadata() {
            return Err(Error::Usage(format!("source {}: {e}", p.display())));
        }
        out.push(clean);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The directories above the sources: `backup /srv/a /srv/b /etc` gives
/// `/` → {etc: source, srv → {a: source, b: source}}.
#[derive(Default)]
pub(crate) struct VirtualDir {
    /// The whole directory is a source (`backup /`).
    pub(crate) whole: bool,
    pub(crate) children: BTreeMap<Vec<u8>, VirtualEntry>,
}

pub(crate) enum VirtualEntry {
    Source,
    Dir(VirtualDir),
}

impl VirtualDir {
    fn build(sources: &[PathBuf]) -> VirtualDir {
        let mut root = VirtualDir::default();
        for src in sources {
            let names: Vec<&OsStr> = src
                .components()
                .filter_map(|c| match c {
                    Component::Normal(n) => Some(n),
                    _ => None,
                })
                .collect();
            if names.is_empty() {
                root.whole = true;
                continue;
            }
            let mut dir = &mut root;
            for (i, name) in names.iter().enumerate() {
                let key = name.as_bytes().to_vec();
                if i + 1 == names.len() {
                    dir.children.insert(key, VirtualEntry::Source);
                    break;
                }
                let entry = dir
                    .children
                    .entry(key)
                    .or_insert_with(|| VirtualEntry::Dir(VirtualDir::default()));
                match entry {
                    VirtualEntry::Dir(d) => dir = d,
                    // An ancestor is itself a source and covers this path.
                    VirtualEntry::Source => break,
                }
            }
        }
        root
    }
}

/// A directory node for the stdin file's root and other synthesized entries.
pub(crate) fn synthetic_dir(name: &[u8]) -> Node {
    let mut n = Node::new(name.to_vec(), NodeKind::Dir);
    n.mode = 0o755;
    n
}

pub(crate) fn encode_tree(mut tree: Tree) -> Vec<u8> {
    tree.encode()
}

/// The command of `--stdin-from-command`, its standard output read as the file.
struct StdinCommand {
    child: std::process::Child,
}

/// How long the command may run on after closing its output before it is killed and
/// the backup fails.
const STDIN_COMMAND_GRACE: std::time::Duration = std::time::Duration::from_secs(300);

impl StdinCommand {
    fn start(command: &str) -> Result<StdinCommand> {
        use std::os::unix::process::CommandExt;
        let mut c = std::process::Command::new("/bin/sh");
        c.arg("-c")
            .arg(command)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            // Its own process group: a pipeline is stopped whole.
            .process_group(0);
        // The dump gets no repository password or storage secret of cairn's.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("CAIRN_") && k.contains("PASSWORD") {
                c.env_remove(&*k);
            }
        }
        if let Ok(names) = std::env::var("CAIRN_SECRET_NAMES") {
            for n in names.split(',').filter(|n| !n.is_empty()) {
                c.env_remove(n);
            }
        }
        let child = c
            .spawn()
            .map_err(|e| Error::Other(format!("--stdin-from-command: cannot start it: {e}")))?;
        Ok(StdinCommand { child })
    }

    fn output(&mut self) -> std::process::ChildStdout {
        self.child.stdout.take().expect("read once")
    }

    fn kill_group(&self) {
        unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL) };
    }

    /// Waits for the command; Err when it failed, or ran on too long after its output
    /// ended. When `read_all` is false (the backup failed) it is stopped.
    fn finish(mut self, read_all: bool) -> Result<()> {
        if !read_all {
            self.kill_group();
            let _ = self.child.wait();
            return Ok(());
        }
        let deadline = std::time::Instant::now() + STDIN_COMMAND_GRACE;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(st)) => break st,
                Ok(None) if std::time::Instant::now() >= deadline => {
                    self.kill_group();
                    let _ = self.child.wait();
                    return Err(Error::Other(format!(
                        "--stdin-from-command closed its output but did not exit within {}s: killed, no snapshot written",
                        STDIN_COMMAND_GRACE.as_secs()
                    )));
                }
                Ok(None) => std::thread::sleep(std::time::Duration::from_millis(20)),
                Err(e) => return Err(Error::Other(format!("--stdin-from-command: {e}"))),
            }
        };
        if !status.success() {
            // The command's text is not repeated: it may hold a password.
            return Err(Error::Other(format!(
                "--stdin-from-command failed ({status}): no snapshot written"
            )));
        }
        Ok(())
    }
}
