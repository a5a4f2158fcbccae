//! `cairn unlock [--remove-all]`

use clap::Args;
use serde_json::json;

use super::{output, Ctx};
use cairn::backend::FileType;
use cairn::repo::lock::list_locks;
use cairn::Result;

#[derive(Args)]
pub struct UnlockArgs {
    /// Remove every lock, not only stale ones (make sure no cairn is running).
    #[arg(long)]
    remove_all: bool,
}

pub fn run(ctx: &Ctx, a: UnlockArgs) -> Result<i32> {
    let repo = ctx.open()?;
    let now = chrono::Utc::now();
    let mut removed = Vec::new();
    for (name, lock) in list_locks(repo.backend(), &repo.key.sealing)? {
        // An unreadable lock file counts as stale: no live cairn wrote it.
        let stale = lock.as_ref().map_or(true, |l| l.is_stale(now));
        if a.remove_all || stale {
            repo.backend().delete(FileType::Lock, &name)?;
            removed.push(name);
        }
    }
    if ctx.json() {
        output::print_json(&json!({ "removed": removed }));
    } else {
        ctx.say(format!("removed {} lock(s)", removed.len()));
    }
    Ok(0)
}
