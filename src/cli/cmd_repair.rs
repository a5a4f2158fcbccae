//! `cairn repair index`

use clap::{Args, Subcommand};
use serde_json::json;

use super::{output, Ctx};
use cairn::repo::lock::LockKind;
use cairn::Result;

#[derive(Args)]
pub struct RepairArgs {
    #[command(subcommand)]
    what: RepairWhat,
}

#[derive(Subcommand)]
enum RepairWhat {
    /// Rebuild the index from the headers of the packs on storage.
    Index,
}

pub fn run(ctx: &Ctx, a: RepairArgs) -> Result<i32> {
    let RepairWhat::Index = a.what;
    let mut repo = ctx.open()?;
    let _lock = ctx.lock(&repo, LockKind::Exclusive, false)?;
    let (packs, unreadable) = cairn::prune::repair_index(&mut repo)?;
    if ctx.json() {
        output::print_json(&json!({"packs": packs, "unreadable_packs": unreadable}));
    } else {
        ctx.say(format!("rebuilt the index from {packs} packs"));
        if unreadable > 0 {
            ctx.say(format!("{unreadable} packs have unreadable headers and were left out; `cairn check` names them"));
        }
    }
    Ok(0)
}
