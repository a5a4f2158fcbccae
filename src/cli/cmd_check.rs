//! `cairn check [--read-data | --read-data-subset N/M|P%]`

use clap::Args;

use super::{output, Ctx, GlobalArgs};
use cairn::check::{check, ReadData};
use cairn::repo::lock::LockKind;
use cairn::{Error, Result};

#[derive(Args)]
pub struct CheckArgs {
    /// Also download every pack and verify every blob.
    #[arg(long, conflicts_with = "read_data_subset")]
    read_data: bool,
    /// Verify part of the data: N/M (group N of M) or P% (a random share).
    #[arg(long, value_name = "N/M|P%")]
    read_data_subset: Option<String>,
}

pub fn run(ctx: &Ctx, a: CheckArgs) -> Result<i32> {
    let read = match (&a.read_data_subset, a.read_data) {
        (Some(s), _) => s.parse()?,
        (None, true) => ReadData::All,
        (None, false) => ReadData::None,
    };
    // Check reads the repository itself: a good cached copy must not hide damage.
    let uncached = Ctx {
        g: GlobalArgs {
            no_cache: true,
            ..ctx.g.clone()
        },
    };
    let mut repo = uncached.open()?;
    let _lock = ctx.lock(&repo, LockKind::Shared, true)?;
    let r = check(&mut repo, read)?;
    if ctx.json() {
        output::print_json(&r);
    } else {
        ctx.say(format!(
            "checked {} snapshots, {} trees, {} packs, {} blobs; read {} packs ({})",
            r.snapshots,
            r.trees,
            r.packs,
            r.blobs,
            r.packs_read,
            output::bytes(r.bytes_read)
        ));
        if r.deleted_packs > 0 && ctx.g.verbose > 0 {
            ctx.say(format!(
                "note: {} packs marked for deletion were deleted by a concurrent prune",
                r.deleted_packs
            ));
        }
        if r.unindexed_packs > 0 {
            ctx.say(format!(
                "note: {} packs are not in the index (left by an interrupted backup); the next backup or `prune` takes them in",
                r.unindexed_packs
            ));
        }
    }
    for p in &r.problems {
        let affects = if p.affects.is_empty() {
            String::new()
        } else {
            format!(" (affects {})", p.affects.join(", "))
        };
        eprintln!("problem: {}: {}{affects}", p.file, p.message);
    }
    if !r.problems.is_empty() {
        return Err(Error::integrity(
            "repository",
            format!("check found {} problem(s)", r.problems.len()),
        ));
    }
    if !ctx.json() {
        ctx.say("no problems found");
    }
    Ok(0)
}
