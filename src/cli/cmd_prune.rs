//! `cairn prune`, and the prune step of `forget --prune`.

use clap::Args;

use super::{output, Ctx};
use cairn::prune::{prune, PruneOptions, PruneReport};
use cairn::repo::lock::LockKind;
use cairn::{Error, Repository, Result};

#[derive(Args, Clone)]
pub struct PruneArgs {
    #[command(flatten)]
    pub flags: PruneFlags,
    /// Say what would be freed, change nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
}

/// The prune settings `forget --prune` shares.
#[derive(Args, Clone)]
pub struct PruneFlags {
    /// Repack packs with more than this share of unused bytes (percent).
    #[arg(long, default_value = "5", value_name = "PERCENT")]
    max_unused: String,
    /// Hold an exclusive lock for the whole prune, waiting for other clients to finish
    /// (--retry-lock), and delete at once. Without it prune deletes at once anyway when
    /// no one else uses the repository, and marks unused data otherwise.
    #[arg(long)]
    instant_delete: bool,
    /// Hours a pack marked unused (while other clients were active) waits before a
    /// later prune deletes it (0 to 87600).
    #[arg(long, default_value = "24", value_name = "HOURS")]
    grace_hours: String,
}

pub fn options(a: &PruneFlags, dry_run: bool) -> Result<PruneOptions> {
    let max_unused: f64 = a
        .max_unused
        .trim_end_matches('%')
        .parse()
        .ok()
        .filter(|v: &f64| (0.0..=100.0).contains(v))
        .ok_or_else(|| {
            Error::Usage(format!(
                "--max-unused takes a percentage, not {:?}",
                a.max_unused
            ))
        })?;
    let grace_hours: u64 = a
        .grace_hours
        .parse()
        .ok()
        .filter(|h| *h <= 87_600)
        .ok_or_else(|| {
            Error::Usage(format!(
                "--grace-hours takes a whole number of hours from 0 to 87600 (ten years), not {:?}",
                a.grace_hours
            ))
        })?;
    // CAIRN_PRUNE_NOW (Unix seconds) lets tests move time forward past the grace period.
    let now = std::env::var("CAIRN_PRUNE_NOW")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| chrono::Utc::now().timestamp());
    Ok(PruneOptions {
        max_unused,
        dry_run,
        instant_delete: a.instant_delete,
        delete_when_idle: true,
        grace: std::time::Duration::from_secs(grace_hours * 3600),
        now,
    })
}

pub fn lock_kind(a: &PruneFlags) -> LockKind {
    if a.instant_delete {
        LockKind::Exclusive
    } else {
        LockKind::Prune
    }
}

pub fn run_on(
    ctx: &Ctx,
    repo: &mut Repository,
    a: &PruneFlags,
    dry_run: bool,
) -> Result<PruneReport> {
    let r = prune(repo, &options(a, dry_run)?)?;
    if !ctx.json() {
        let verb = if r.dry_run { "would" } else { "did" };
        ctx.say(format!(
            "prune ({verb}): {} packs; {} used blobs in {} snapshots",
            r.packs, r.blobs_used, r.snapshots
        ));
        if let Some(who) = &r.busy_because {
            ctx.say(format!(
                "  another client is using the repository ({who}): unused data is marked, and a later prune deletes it after the grace period"
            ));
        }
        ctx.say(format!(
            "  deleted {} packs ({}), marked {} unused packs ({}) for a later prune, repacked {} ({}), kept {} marked packs (grace period, or a client older than the mark), restored {} marked packs a snapshot needs again",
            r.packs_deleted,
            output::bytes(r.bytes_deleted),
            r.packs_marked,
            output::bytes(r.bytes_marked),
            r.packs_repacked,
            output::bytes(r.bytes_repacked),
            r.packs_still_waiting,
            r.packs_resurrected
        ));
    }
    Ok(r)
}

pub fn run(ctx: &Ctx, a: PruneArgs) -> Result<i32> {
    let mut repo = ctx.open()?;
    let _lock = ctx.lock(&repo, lock_kind(&a.flags), false)?;
    let r = run_on(ctx, &mut repo, &a.flags, a.dry_run)?;
    if ctx.json() {
        output::print_json(&r);
    }
    Ok(0)
}
