//! `cairn tag [SNAPSHOT…] --add T | --remove T | --set T`

use clap::Args;
use serde_json::json;

use super::{output, Ctx, FilterArgs};
use cairn::repo::lock::LockKind;
use cairn::tag::{retag, TagChange};
use cairn::{Error, Result};

#[derive(Args)]
pub struct TagArgs {
    /// Snapshots to change (ids, `latest`, `@TIME`); none: every snapshot the filters
    /// pass.
    snapshots: Vec<String>,
    /// Add these tags (`a,b`; repeatable).
    #[arg(long, value_name = "TAGS")]
    add: Vec<String>,
    /// Remove these tags (`a,b`; repeatable).
    #[arg(long, value_name = "TAGS")]
    remove: Vec<String>,
    /// Replace every tag with these (`--set ''` removes them all).
    #[arg(long, value_name = "TAGS")]
    set: Vec<String>,
    #[command(flatten)]
    filter: FilterArgs,
}

pub fn run(ctx: &Ctx, a: TagArgs) -> Result<i32> {
    let change = TagChange::parse(&a.set, &a.add, &a.remove)?;
    let repo = ctx.open()?;
    // Exclusive: a second tag or a forget at the same moment could leave the same
    // snapshot twice (see cairn::tag::retag). Tagging is quick.
    let _lock = ctx.lock(&repo, LockKind::Exclusive, false)?;
    let set = super::snapshots_warned(&repo)?;
    let chosen = cairn::selector::select_many(&set, &a.snapshots, &a.filter.filter())?;
    if chosen.is_empty() {
        return Err(Error::Usage("no snapshot matches".into()));
    }
    let mut changed = 0;
    for (id, snap) in &chosen {
        let r = retag(&repo, *id, snap, &change)?;
        match r.new_snapshot_id {
            Some(new) => {
                changed += 1;
                if ctx.json() {
                    output::print_json(&json!({
                        "message_type": "changed_snapshot",
                        "old_snapshot_id": id,
                        "new_snapshot_id": new,
                        "tags": r.tags,
                    }));
                }
                ctx.say(format!(
                    "snapshot {} is now {} (tags: {})",
                    id.short(),
                    new.short(),
                    r.tags.join(",")
                ));
            }
            None => ctx.say(format!(
                "snapshot {} unchanged (tags: {})",
                id.short(),
                r.tags.join(",")
            )),
        }
    }
    if ctx.json() {
        output::print_json(&json!({
            "message_type": "summary",
            "changed_snapshots": changed,
            "unchanged_snapshots": chosen.len() - changed,
        }));
    } else {
        ctx.say(format!("changed {changed} of {} snapshots", chosen.len()));
    }
    Ok(0)
}
