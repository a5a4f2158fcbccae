//! `cairn restore SNAPSHOT[:SUBPATH] --target DIR`

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde_json::json;

use super::{output, pick, progress, Ctx, FilterArgs};
use cairn::archiver::BackupOptions;
use cairn::restorer::{self, find_node, Overwrite, RestoreOptions};
use cairn::selector::split_subpath;
use cairn::{Error, Result};

#[derive(Clone, Copy, ValueEnum)]
enum OverwriteArg {
    Always,
    IfChanged,
    IfNewer,
    Never,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// SNAPSHOT or SNAPSHOT:/sub/path (id, latest or @TIME).
    snapshot: String,
    /// Directory to restore into.
    #[arg(short, long, value_name = "DIR")]
    target: PathBuf,
    /// Restore only paths matching PATTERN (repeatable).
    #[arg(long, value_name = "PATTERN")]
    include: Vec<String>,
    /// Leave out paths matching PATTERN (repeatable).
    #[arg(long, value_name = "PATTERN")]
    exclude: Vec<String>,
    /// List what would be created, overwritten and deleted; change nothing.
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Read every restored file back and compare it with the snapshot.
    #[arg(long)]
    verify: bool,
    /// Remove files and directories in the target that the snapshot does not have.
    #[arg(long)]
    delete: bool,
    /// What to do with entries (of any kind) already in the target.
    #[arg(long, value_enum, default_value = "if-changed")]
    overwrite: OverwriteArg,
    /// Do not snapshot what this restore replaces or deletes before doing it.
    #[arg(long)]
    no_safety_snapshot: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

pub fn run(ctx: &Ctx, a: RestoreArgs) -> Result<i32> {
    let (selector, subpath) = split_subpath(&a.snapshot);
    // The lock before the index: what the index names cannot be pruned under us.
    let (mut repo, _lock) = ctx.open_locked(cairn::repo::lock::LockKind::Shared, true)?;
    let (id, snap) = pick(&repo, selector, &a.filter)?;
    let subpath = subpath.unwrap_or("/");
    let node = find_node(&repo, snap.tree, subpath)?;
    let whole_snapshot = a.include.is_empty() && a.exclude.is_empty();
    // Absolute and resolved, so the pre-restore snapshot names the real paths.
    let target = std::path::absolute(&a.target).map_err(|e| Error::io_path(&a.target, e))?;
    let target = std::fs::canonicalize(&target).unwrap_or(target);
    let opts = RestoreOptions {
        target,
        include: a.include,
        exclude: a.exclude,
        dry_run: a.dry_run,
        overwrite: match a.overwrite {
            OverwriteArg::Always => Overwrite::Always,
            OverwriteArg::IfChanged => Overwrite::IfChanged,
            OverwriteArg::IfNewer => Overwrite::IfNewer,
            OverwriteArg::Never => Overwrite::Never,
        },
        verify: a.verify,
        delete: a.delete,
        progress: None,
    };
    let safety_snapshot = if a.dry_run || a.no_safety_snapshot {
        None
    } else {
        safety_snapshot(ctx, &mut repo, &node, subpath, &opts)?
    };
    let display = progress::Display::start(ctx, "restore");
    let mut opts = opts;
    if display.visible() && !a.dry_run {
        opts.progress = Some(display.progress.clone());
        // The snapshot's own summary gives the totals of a whole-snapshot restore.
        if let (Some(sum), "/") = (&snap.summary, subpath) {
            if whole_snapshot {
                display
                    .progress
                    .add_total(sum.total_files_processed, sum.total_bytes_processed);
            }
        }
    }
    let verbose_plan = a.dry_run && !ctx.json() && !ctx.g.quiet;
    let report = |line: String| {
        if line.starts_with("would ") {
            if verbose_plan {
                println!("{line}");
            }
        } else {
            eprintln!("{line}");
        }
    };
    let s = restorer::restore(&repo, &node, subpath, &opts, &report);
    display.finish();
    let s = s?;
    if ctx.json() {
        output::print_json(&json!({
            "message_type": "summary",
            "snapshot_id": id,
            "dry_run": a.dry_run,
            "files_restored": s.files_restored,
            "files_skipped": s.files_skipped,
            "dirs_restored": s.dirs_restored,
            "other_restored": s.other_restored,
            "bytes_written": s.bytes_written,
            "files_verified": s.files_verified,
            "other_skipped": s.other_skipped,
            "replaced": s.replaced,
            "deleted": s.deleted,
            "errors": s.errors,
            "safety_snapshot": safety_snapshot.map(|i| i.to_string()),
        }));
    } else {
        let verb = if a.dry_run {
            "would restore"
        } else {
            "restored"
        };
        let mut line = format!(
            "{verb} {} files ({}), {} directories, {} other entries from snapshot {}; {} files already up to date",
            s.files_restored,
            output::bytes(s.bytes_written),
            s.dirs_restored,
            s.other_restored,
            id.short(),
            s.files_skipped
        );
        if s.other_skipped > 0 {
            line += &format!(", {} other entries left as they were", s.other_skipped);
        }
        if s.replaced > 0 {
            let v = if a.dry_run {
                "would replace"
            } else {
                "replaced"
            };
            line += &format!("; {v} {} existing entries", s.replaced);
        }
        if s.deleted > 0 {
            let v = if a.dry_run { "would delete" } else { "deleted" };
            line += &format!("; {v} {}", s.deleted);
        }
        ctx.say(line);
    }
    if s.integrity_errors > 0 {
        return Err(Error::integrity(
            format!("snapshot {}", id.short()),
            format!("{} entries could not be restored (see above)", s.errors),
        ));
    }
    if s.errors > 0 {
        return Err(Error::Other(format!(
            "{} entries could not be restored (see above)",
            s.errors
        )));
    }
    Ok(0)
}

/// Item 7 (rollback protection): before a restore replaces or deletes anything, back up
/// exactly those entries, tagged `pre-restore`. A dry run of the same restore finds
/// them; changes to the target between that plan and the restore are not covered.
fn safety_snapshot(
    ctx: &Ctx,
    repo: &mut cairn::Repository,
    node: &cairn::repo::tree::Node,
    subpath: &str,
    opts: &RestoreOptions,
) -> Result<Option<cairn::id::Id>> {
    if restorer::target_is_empty(&opts.target) {
        return Ok(None);
    }
    let plan_opts = RestoreOptions {
        dry_run: true,
        progress: None,
        ..opts.clone()
    };
    // The real restore reports the problems; the plan only collects paths.
    let plan = restorer::restore(repo, node, subpath, &plan_opts, &|_| {})?;
    if plan.replaced_paths.is_empty() {
        return Ok(None);
    }
    if ctx.g.no_lock {
        return Err(Error::Usage(
            "this restore replaces or deletes entries and needs a lock for its pre-restore snapshot: drop --no-lock or add --no-safety-snapshot".into(),
        ));
    }
    let warn = |line: String| eprintln!("cairn: pre-restore snapshot: {line}");
    let backup = BackupOptions {
        paths: plan.replaced_paths,
        tags: vec!["pre-restore".into()],
        ..Default::default()
    };
    let result = cairn::archiver::backup(repo, &backup, &warn)?;
    let id = result
        .snapshot_id
        .ok_or_else(|| Error::Other("the pre-restore snapshot was not written".into()))?;
    // An entry the backup could not save would be lost for good: stop before writing.
    if result.warnings > 0 {
        return Err(Error::Other(format!(
            "the pre-restore snapshot {} lacks {} entries this restore would replace or delete (see above): nothing was restored; add --no-safety-snapshot to restore without saving them",
            id.short(),
            result.warnings
        )));
    }
    eprintln!(
        "cairn: saved what this restore replaces as snapshot {} (tag pre-restore)",
        id.short()
    );
    Ok(Some(id))
}
