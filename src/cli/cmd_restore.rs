//! `cairn restore SNAPSHOT[:SUBPATH] --target DIR`

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde_json::json;

use super::{output, pick, progress, Ctx, FilterArgs};
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
    /// Print what would be restored, write nothing.
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Read every restored file back and compare it with the snapshot.
    #[arg(long)]
    verify: bool,
    /// Remove files and directories in the target that the snapshot does not have.
    #[arg(long)]
    delete: bool,
    /// What to do with files already in the target.
    #[arg(long, value_enum, default_value = "if-changed")]
    overwrite: OverwriteArg,
    #[command(flatten)]
    filter: FilterArgs,
}

pub fn run(ctx: &Ctx, a: RestoreArgs) -> Result<i32> {
    let (selector, subpath) = split_subpath(&a.snapshot);
    let (repo, _lock) = ctx.open_locked(cairn::repo::lock::LockKind::Shared, true)?;
    let (id, snap) = pick(&repo, selector, &a.filter)?;
    let subpath = subpath.unwrap_or("/");
    let node = find_node(&repo, snap.tree, subpath)?;
    let whole_snapshot = a.include.is_empty() && a.exclude.is_empty();
    let opts = RestoreOptions {
        target: a.target,
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
            "deleted": s.deleted,
            "errors": s.errors,
        }));
    } else {
        let verb = if a.dry_run {
            "would restore"
        } else {
            "restored"
        };
        ctx.say(format!(
            "{verb} {} files ({}), {} directories, {} other entries from snapshot {}; {} files already up to date",
            s.files_restored,
            output::bytes(s.bytes_written),
            s.dirs_restored,
            s.other_restored,
            id.short(),
            s.files_skipped
        ));
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
