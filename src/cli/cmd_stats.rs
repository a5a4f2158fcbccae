//! `cairn stats [SNAPSHOT…] [--mode MODE]`

use clap::Args;
use serde_json::json;

use super::{output, Ctx, FilterArgs};
use cairn::backend::FileType;
use cairn::stats::{stats, Mode};
use cairn::Result;

#[derive(Args)]
pub struct StatsArgs {
    /// Snapshots to count (ids, latest, @TIME); none: every snapshot the filters pass,
    /// and the repository's size on its storage.
    snapshots: Vec<String>,
    /// restore-size, files-by-contents, raw-data or blobs-per-file (restic's).
    #[arg(long, default_value = "restore-size")]
    mode: String,
    #[command(flatten)]
    filter: FilterArgs,
    /// Only the repository's files and bytes on its storage (no snapshot is read: one
    /// listing per folder).
    #[arg(long, conflicts_with_all = ["snapshots", "mode"])]
    storage_only: bool,
}

/// Files and bytes of the whole repository on its storage.
fn storage_totals(repo: &cairn::Repository) -> Result<(u64, u64)> {
    let (mut files, mut bytes) = (0u64, 0u64);
    for ft in [
        FileType::Config,
        FileType::Key,
        FileType::Lock,
        FileType::Snapshot,
        FileType::Index,
        FileType::Pack,
    ] {
        let list = if ft == FileType::Config {
            vec![("config".to_string(), repo.backend().size(ft, "config")?)]
        } else {
            repo.backend().list(ft)?
        };
        files += list.len() as u64;
        bytes += list.iter().map(|(_, n)| n).sum::<u64>();
    }
    Ok((files, bytes))
}

pub fn run(ctx: &Ctx, a: StatsArgs) -> Result<i32> {
    let mode: Mode = a.mode.parse()?;
    if a.storage_only {
        let repo = ctx.open()?;
        let (files, bytes) = storage_totals(&repo)?;
        if ctx.json() {
            output::print_json(&json!({"repository_files": files, "repository_size": bytes}));
        } else {
            ctx.say(format!(
                "{files} files, {} on the storage",
                output::bytes(bytes)
            ));
        }
        return Ok(0);
    }
    let (repo, _lock) = ctx.open_locked(cairn::repo::lock::LockKind::Shared, true)?;
    let set = super::snapshots_warned(&repo)?;
    let chosen = cairn::selector::select_many(&set, &a.snapshots, &a.filter.filter())?;
    let roots: Vec<_> = chosen.iter().map(|(_, snap)| snap.tree).collect();
    let s = super::on_large_stack("stats", || stats(&repo, &roots, mode))?;
    // The whole repository on its storage, when no snapshot was named.
    let mut storage = None;
    if a.snapshots.is_empty() {
        storage = Some(storage_totals(&repo)?);
    }
    if s.missing_blobs > 0 {
        eprintln!(
            "warning: {} data blobs the snapshots need are not in the index: run `cairn check`",
            s.missing_blobs
        );
    }
    if ctx.json() {
        let mut v = serde_json::to_value(&s).expect("serializable");
        if let Some((files, bytes)) = storage {
            v["repository_files"] = json!(files);
            v["repository_size"] = json!(bytes);
        }
        output::print_json(&v);
        return Ok(0);
    }
    ctx.say(format!(
        "Stats in {} mode over {} snapshots:",
        s.mode, s.snapshots_count
    ));
    ctx.say(format!("  Total file count:    {}", s.total_file_count));
    ctx.say(format!(
        "  Total size:          {}",
        output::bytes(s.total_size)
    ));
    ctx.say(format!(
        "  Restore size:        {} in {} files",
        output::bytes(s.restore_size),
        s.restore_files
    ));
    ctx.say(format!(
        "  Unique files:        {} ({})",
        s.unique_files,
        output::bytes(s.unique_files_size)
    ));
    ctx.say(format!(
        "  Unique data:         {} in {} blobs",
        output::bytes(s.total_uncompressed_size),
        s.total_blob_count
    ));
    ctx.say(format!(
        "  Stored:              {} in {} packs; {} trees",
        output::bytes(s.stored_size),
        s.packs,
        s.tree_blobs
    ));
    ctx.say(format!(
        "  Deduplication:       {:.2}x   Compression: {:.2}x",
        s.dedup_ratio, s.compression_ratio
    ));
    if let Some((files, bytes)) = storage {
        ctx.say(format!(
            "  Repository on storage: {} in {files} files",
            output::bytes(bytes)
        ));
    }
    Ok(0)
}
