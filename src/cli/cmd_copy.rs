//! `cairn copy`

use clap::Args;
use serde_json::{json, Value};

use super::{output, Ctx, FilterArgs, FromRepoArgs};
use cairn::copy::{self, CopyResult, SnapshotCopy};
use cairn::id::Id;
use cairn::repo::lock::LockKind;
use cairn::{archiver, Error, Result};

#[derive(Args)]
pub struct CopyArgs {
    /// Source snapshots to copy (id, prefix, latest or @TIME); all when none are named.
    snapshots: Vec<String>,
    /// The repository to copy from.
    #[arg(
        long,
        env = "CAIRN_FROM_REPOSITORY",
        value_name = "URL",
        required = true
    )]
    from_repo: String,
    #[command(flatten)]
    from: FromRepoArgs,
    #[command(flatten)]
    filter: FilterArgs,
}

pub fn run(ctx: &Ctx, a: CopyArgs) -> Result<i32> {
    if ctx.g.no_lock {
        return Err(Error::Usage(
            "--no-lock is only for read-only commands (copy writes to the target)".into(),
        ));
    }
    // The source first: a wrong source password or a missing source must leave the
    // target untouched.
    let mut source = ctx.open_source(&a.from_repo, &a.from)?;
    let _source_lock = ctx.lock(&source, LockKind::Shared, true)?;
    source.load_index()?;
    let set = super::snapshots_warned(&source)?;
    let filter = a.filter.filter();
    let selected: Vec<Id> = if a.snapshots.is_empty() {
        set.iter()
            .filter(|(_, s)| filter.matches(s))
            .map(|(id, _)| *id)
            .collect()
    } else {
        a.snapshots
            .iter()
            .map(|sel| cairn::selector::select_in(&set, sel, &filter).map(|(id, _)| *id))
            .collect::<Result<_>>()?
    };

    let (mut target, _lock) = ctx.open_locked(LockKind::Shared, false)?;
    // As a backup: take in packs an interrupted run left, and never rely on packs the
    // index lists but storage lacks.
    let adopted = archiver::adopt_left_packs(&mut target)?;
    if adopted > 0 && ctx.g.verbose > 0 {
        eprintln!("cairn: indexed {adopted} packs an interrupted run left");
    }
    let json = ctx.json();
    let warn = move |msg: String| {
        if json {
            eprintln!("{}", json!({"message_type": "error", "error": msg}));
        } else {
            eprintln!("warning: {msg}");
        }
    };
    let r = copy::copy(&source, &mut target, &set, &selected, &warn)?;
    if json {
        output::print_json(&result_json(&source.config.id, &r));
        return Ok(0);
    }
    ctx.say(format!(
        "copying from repository {} at {} ({})",
        source.config.id.short(),
        source.backend().location(),
        match r.mode {
            copy::CopyMode::SameIds => "same blob ids: only missing blobs are read",
            copy::CopyMode::Rechunk =>
                "different blob ids: file contents are re-chunked for this repository",
        }
    ));
    for c in &r.snapshots {
        let what = match (c.target_id, c.existing) {
            (Some(t), _) => format!("copied as {}", t.short()),
            (None, Some(e)) => format!("already there as {}", e.short()),
            (None, None) => "skipped".into(),
        };
        ctx.say(format!(
            "snapshot {} of {} {} {}: {what}",
            c.source_id.short(),
            c.snapshot
                .time
                .with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S"),
            c.snapshot.hostname,
            c.snapshot.paths.join(" "),
        ));
    }
    ctx.say(format!(
        "{} snapshots copied, {} already there; {} blobs stored ({}, {} packed), {} already present",
        r.snapshots_copied,
        r.snapshots_skipped,
        r.data_blobs_copied + r.tree_blobs_copied,
        output::bytes(r.bytes_copied),
        output::bytes(r.bytes_packed),
        r.blobs_present,
    ));
    Ok(0)
}

fn snapshot_json(c: &SnapshotCopy) -> Value {
    json!({
        "source": c.source_id,
        "target": c.target_id,
        "status": if c.target_id.is_some() { "copied" } else { "skipped" },
        "existing": c.existing,
        "time": c.snapshot.time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false),
        "hostname": c.snapshot.hostname,
        "paths": c.snapshot.paths,
        "tags": c.snapshot.tags,
    })
}

fn result_json(source: &Id, r: &CopyResult) -> Value {
    json!({
        "source_repository": source,
        "mode": r.mode.name(),
        "snapshots": r.snapshots.iter().map(snapshot_json).collect::<Vec<_>>(),
        "snapshots_copied": r.snapshots_copied,
        "snapshots_skipped": r.snapshots_skipped,
        "data_blobs_copied": r.data_blobs_copied,
        "tree_blobs_copied": r.tree_blobs_copied,
        "blobs_present": r.blobs_present,
        "bytes_copied": r.bytes_copied,
        "bytes_packed": r.bytes_packed,
        "packs_written": r.packs_written,
        "source_bytes_read": r.source_bytes_read,
        "blobs_rescued": r.blobs_rescued,
    })
}
