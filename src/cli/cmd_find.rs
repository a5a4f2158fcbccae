//! `cairn find PATTERN…`

use clap::Args;
use serde_json::json;

use super::{cmd_ls::node_json, output, Ctx, FilterArgs};
use cairn::find::Finder;
use cairn::{Error, Result};

#[derive(Args)]
pub struct FindArgs {
    /// Patterns (restic's: `*.conf` matches at any depth, `/etc/*.conf` only there,
    /// `**` crosses folders).
    #[arg(required = true)]
    patterns: Vec<String>,
    /// Ignore case.
    #[arg(short = 'i', long)]
    ignore_case: bool,
    /// Only these snapshots (repeatable; ids, latest or @TIME).
    #[arg(short = 's', long = "snapshot", value_name = "ID")]
    snapshots: Vec<String>,
    #[command(flatten)]
    filter: FilterArgs,
}

pub fn run(ctx: &Ctx, a: FindArgs) -> Result<i32> {
    let (repo, _lock) = ctx.open_locked(cairn::repo::lock::LockKind::Shared, true)?;
    let set = super::snapshots_warned(&repo)?;
    let chosen = cairn::selector::select_many(&set, &a.snapshots, &a.filter.filter())?;
    if chosen.is_empty() {
        return Err(Error::Usage("no snapshot matches".into()));
    }
    let (out, total, trees_read) =
        super::on_large_stack("find", || search(ctx, &repo, &a, &chosen))?;
    if ctx.json() {
        output::print_json(&out);
    } else {
        ctx.say(format!(
            "{total} matches in {} snapshots ({} directories read)",
            chosen.len(),
            trees_read
        ));
    }
    Ok(0)
}

/// Searches `chosen` in order, printing text as it goes; the JSON documents, the number
/// of matches and of directories read.
fn search(
    ctx: &Ctx,
    repo: &cairn::Repository,
    a: &FindArgs,
    chosen: &[(cairn::id::Id, cairn::repo::snapshot::Snapshot)],
) -> Result<(Vec<serde_json::Value>, u64, u64)> {
    let mut finder = Finder::new(repo, &a.patterns, a.ignore_case)?;
    let mut out = Vec::new();
    let mut total = 0u64;
    for (id, snap) in chosen {
        let mut matches = Vec::new();
        let mut hits = 0u64;
        let mut header = false;
        finder.search(snap.tree, &mut |path, node| {
            hits += 1;
            let path = path.display().to_string();
            if ctx.json() {
                matches.push(node_json(node, &path));
                return;
            }
            if !header {
                header = true;
                ctx.say(format!(
                    "Found matching entries in snapshot {} from {} ({})",
                    id.short(),
                    snap.time
                        .with_timezone(&chrono::Local)
                        .format("%Y-%m-%d %H:%M:%S"),
                    snap.hostname
                ));
            }
            let suffix = if node.kind == cairn::repo::tree::NodeKind::Dir {
                "/"
            } else {
                ""
            };
            ctx.say(format!(
                "  {} {:>10}  {}  {path}{suffix}",
                output::mode_string(node),
                output::bytes(node.size),
                output::time(&node.mtime).format("%Y-%m-%d %H:%M:%S"),
            ));
        })?;
        total += hits;
        if ctx.json() && hits > 0 {
            out.push(json!({
                "snapshot": id,
                "time": snap.time,
                "hostname": snap.hostname,
                "hits": hits,
                "matches": matches,
            }));
        }
    }
    Ok((out, total, finder.trees_read))
}
