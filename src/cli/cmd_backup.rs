//! `cairn backup`

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use super::{output, pick, progress, Ctx, FilterArgs};
use cairn::archiver::{self, BackupOptions, ExcludeOptions};
use cairn::{Error, Result};

#[derive(Args)]
pub struct BackupArgs {
    /// Files and directories to back up.
    paths: Vec<PathBuf>,
    /// Back up standard input instead (see --stdin-filename).
    #[arg(long)]
    stdin: bool,
    /// Store this shell command's output as one file (named by --stdin-filename), e.g.
    /// 'pg_dump mydb'; when it exits non-zero no snapshot is written.
    #[arg(long, value_name = "CMD", conflicts_with = "stdin")]
    stdin_from_command: Option<String>,
    /// Store SQLite databases matching PATTERN as read, not through SQLite's online
    /// backup (repeatable; by default every SQLite database is copied consistently).
    #[arg(long, value_name = "PATTERN")]
    sqlite_raw: Vec<String>,
    /// The file name standard input is stored under.
    #[arg(long, default_value = "stdin", value_name = "NAME")]
    stdin_filename: String,
    /// Tag the snapshot (repeatable; `a,b` adds both).
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// Host name to record (default: this machine's).
    #[arg(long)]
    host: Option<String>,
    /// Leave out paths matching PATTERN (repeatable).
    #[arg(long, value_name = "PATTERN")]
    exclude: Vec<String>,
    /// Like --exclude, ignoring case.
    #[arg(long, value_name = "PATTERN")]
    iexclude: Vec<String>,
    /// Read exclude patterns from FILE, one per line (# comments).
    #[arg(long, value_name = "FILE")]
    exclude_file: Vec<PathBuf>,
    /// Leave out the other contents of a directory that holds NAME.
    #[arg(long, value_name = "NAME")]
    exclude_if_present: Vec<String>,
    /// Leave out cache directories (marked by a CACHEDIR.TAG).
    #[arg(long)]
    exclude_caches: bool,
    /// Do not cross file system boundaries.
    #[arg(short = 'x', long)]
    one_file_system: bool,
    /// Compare with this snapshot instead of the latest of the same host and paths.
    #[arg(long, value_name = "SNAPSHOT")]
    parent: Option<String>,
    /// Read every file, even those the parent says are unchanged.
    #[arg(long)]
    force: bool,
    /// Do not treat a changed ctime as a change (file systems with unstable ctimes).
    #[arg(long)]
    ignore_ctime: bool,
    /// Do not treat a changed inode number as a change (e.g. some FUSE/network mounts).
    #[arg(long)]
    ignore_inode: bool,
    /// Snapshot time (default: now), e.g. "2026-11-20 14:00:05".
    #[arg(long, value_name = "TIME")]
    time: Option<String>,
    /// Do everything but write to the repository.
    #[arg(short = 'n', long)]
    dry_run: bool,
}

pub fn run(ctx: &Ctx, a: BackupArgs) -> Result<i32> {
    let from_stdin = a.stdin || a.stdin_from_command.is_some();
    if from_stdin && !a.paths.is_empty() {
        return Err(Error::Usage(format!(
            "{} takes no paths",
            if a.stdin {
                "--stdin"
            } else {
                "--stdin-from-command"
            }
        )));
    }
    let time = a
        .time
        .as_deref()
        .map(cairn::selector::parse_time)
        .transpose()?;
    let (mut repo, _lock) = ctx.open_locked(cairn::repo::lock::LockKind::Shared, false)?;
    if !a.dry_run {
        let adopted = archiver::adopt_left_packs(&mut repo)?;
        if adopted > 0 && ctx.g.verbose > 0 {
            eprintln!("cairn: indexed {adopted} packs an interrupted backup left");
        }
    }
    let parent = match &a.parent {
        Some(sel) => Some(pick(&repo, sel, &FilterArgs::default())?.0),
        None => None,
    };
    let opts = BackupOptions {
        paths: a.paths,
        stdin_filename: from_stdin.then_some(a.stdin_filename),
        stdin_command: a.stdin_from_command,
        sqlite_raw: a.sqlite_raw,
        tags: a
            .tags
            .iter()
            .flat_map(|t| t.split(','))
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect(),
        host: a.host,
        excludes: ExcludeOptions {
            exclude: a.exclude,
            iexclude: a.iexclude,
            exclude_files: a.exclude_file,
            exclude_if_present: a.exclude_if_present,
            exclude_caches: a.exclude_caches,
        },
        one_file_system: a.one_file_system,
        parent,
        force: a.force,
        ignore_ctime: a.ignore_ctime,
        ignore_inode: a.ignore_inode,
        time,
        dry_run: a.dry_run,
        progress: None,
    };
    let display = progress::Display::start(ctx, "backup");
    let mut opts = opts;
    if display.visible() {
        opts.progress = Some(display.progress.clone());
        if !opts.paths.is_empty() {
            // Totals for the bar's ETA, counted beside the backup (warm metadata).
            let (paths, p) = (opts.paths.clone(), display.progress.clone());
            std::thread::spawn(move || cairn::progress::scan_totals(&paths, &p));
        }
    }
    let json = ctx.json();
    let warn = move |msg: String| {
        if json {
            eprintln!("{}", json!({"message_type": "error", "error": msg}));
        } else {
            eprintln!("warning: {msg}");
        }
    };
    let result = archiver::backup(&mut repo, &opts, &warn);
    display.finish();
    let result = result?;
    let s = result.snapshot.summary.clone().unwrap_or_default();
    if let Ok(mut f) = super::FACTS.lock() {
        *f = Some(cairn::ops::history::Outcome {
            snapshot: result.snapshot_id.map(|id| id.to_string()),
            files: Some(s.total_files_processed),
            files_new: Some(s.files_new),
            files_changed: Some(s.files_changed),
            bytes_read: Some(s.bytes_read),
            bytes_added: Some(s.data_added),
            ..Default::default()
        });
    }
    if json {
        output::print_json(&json!({
            "message_type": "summary",
            "snapshot_id": result.snapshot_id,
            "dry_run": a.dry_run,
            "files_new": s.files_new,
            "files_changed": s.files_changed,
            "files_unmodified": s.files_unmodified,
            "dirs_new": s.dirs_new,
            "dirs_changed": s.dirs_changed,
            "dirs_unmodified": s.dirs_unmodified,
            "data_blobs": s.data_blobs,
            "tree_blobs": s.tree_blobs,
            "data_added": s.data_added,
            "data_added_packed": s.data_added_packed,
            "total_files_processed": s.total_files_processed,
            "total_bytes_processed": s.total_bytes_processed,
            "bytes_read": s.bytes_read,
            "total_duration": s.total_duration,
            "errors": s.errors,
        }));
    } else {
        ctx.say(format!(
            "Files: {:>8} new, {:>8} changed, {:>8} unmodified",
            s.files_new, s.files_changed, s.files_unmodified
        ));
        ctx.say(format!(
            "Dirs:  {:>8} new, {:>8} changed, {:>8} unmodified",
            s.dirs_new, s.dirs_changed, s.dirs_unmodified
        ));
        ctx.say(format!(
            "Added to the repository: {} ({} stored)",
            output::bytes(s.data_added),
            output::bytes(s.data_added_packed)
        ));
        ctx.say(format!(
            "processed {} files, {} in {:.1}s (read {})",
            s.total_files_processed,
            output::bytes(s.total_bytes_processed),
            s.total_duration,
            output::bytes(s.bytes_read)
        ));
        match result.snapshot_id {
            Some(id) => ctx.say(format!("snapshot {} saved", id.short())),
            None => ctx.say("dry run: nothing was written"),
        }
    }
    if result.warnings > 0 {
        eprintln!(
            "cairn: {} source entries could not be read; the snapshot leaves them out",
            result.warnings
        );
        return Ok(3);
    }
    Ok(0)
}
