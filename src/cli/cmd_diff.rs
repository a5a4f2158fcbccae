//! `cairn diff SNAP1[:PATH] SNAP2[:PATH]` and `cairn diff SNAP[:PATH] DIR`

use clap::Args;
use serde_json::json;

use super::{output, Ctx, FilterArgs};
use cairn::diff::{diff, Counts, Side};
use cairn::id::Id;
use cairn::repo::tree::NodeKind;
use cairn::repo::Repository;
use cairn::restorer::find_node;
use cairn::selector::split_subpath;
use cairn::{Error, Result};

#[derive(Args)]
pub struct DiffArgs {
    /// The older side: a snapshot (id, latest, @TIME), optionally `:/PATH` in it.
    from: String,
    /// The newer side: a snapshot (optionally `SNAP:/PATH`), or a directory on this
    /// machine (a path starting with `/` or `.`, or holding a `/`: `/etc`, `./dir`),
    /// compared with the same path in FROM unless FROM names one.
    to: String,
    /// List entries whose metadata alone changed (`U`) too.
    #[arg(long)]
    metadata: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

/// The tree of directory `path` in snapshot `tree`.
fn dir_tree(repo: &Repository, tree: Id, path: &str) -> Result<Id> {
    let node = find_node(repo, tree, path)?;
    match (node.kind, node.subtree) {
        (NodeKind::Dir, Some(t)) => Ok(t),
        _ => Err(Error::Usage(format!(
            "{path} is not a directory in the snapshot"
        ))),
    }
}

pub fn run(ctx: &Ctx, a: DiffArgs) -> Result<i32> {
    let (repo, _lock) = ctx.open_locked(cairn::repo::lock::LockKind::Shared, true)?;
    let (from_sel, from_path) = split_subpath(&a.from);
    // One listing for both sides: an unreadable snapshot is reported once.
    let set = super::snapshots_warned(&repo)?;
    let filter = a.filter.filter();
    let (from_id, from_snap) = cairn::selector::select_in(&set, from_sel, &filter)?.clone();
    // `/x`, `./x`, `../x`, `.`: a directory; `SNAP:/path`: a snapshot; else a
    // directory only when it has a `/` (`dir/sub`).
    let is_dir = a.to.starts_with('/')
        || a.to.starts_with('.')
        || (a.to.contains('/') && !a.to.contains(":/"));
    let (root, new, to_json) = if is_dir {
        let dir =
            std::fs::canonicalize(&a.to).map_err(|e| Error::Usage(format!("{}: {e}", a.to)))?;
        if !dir.is_dir() {
            return Err(Error::Usage(format!("{} is not a directory", a.to)));
        }
        let root = from_path
            .map(str::to_string)
            .unwrap_or_else(|| dir.display().to_string());
        (root, Side::Live(dir.clone()), json!({"target_dir": dir}))
    } else {
        let (to_sel, to_path) = split_subpath(&a.to);
        let (to_id, to_snap) = cairn::selector::select_in(&set, to_sel, &filter)?.clone();
        let root = to_path.unwrap_or("/").to_string();
        let new = Side::Tree(dir_tree(&repo, to_snap.tree, &root)?);
        (root, new, json!({"target_snapshot": to_id}))
    };
    let old = dir_tree(&repo, from_snap.tree, from_path.unwrap_or(&root))?;
    // Deep trees recurse deeply: a large stack, as restore's writers have.
    let json = ctx.json();
    let quiet = ctx.g.quiet;
    let stats = super::on_large_stack("the diff", || {
        let mut report = |c: cairn::diff::Change| {
            if json {
                // One line per path: the request counts go on the last line only.
                let line = json!({
                    "message_type": "change",
                    "path": c.path,
                    "modifier": c.modifier,
                });
                println!("{line}");
            } else if !quiet {
                println!("{}    {}", c.modifier, c.path);
            }
        };
        let mut warn = |w: String| eprintln!("warning: {w}");
        diff(&repo, old, &new, &root, a.metadata, &mut report, &mut warn)
    })?;
    if json {
        let mut v = json!({
            "message_type": "statistics",
            "source_snapshot": from_id,
            "changed_files": stats.changed_files,
            "metadata_changed": stats.metadata_changed,
            "added": stats.added,
            "removed": stats.removed,
        });
        for (k, val) in to_json.as_object().expect("an object") {
            v[k] = val.clone();
        }
        output::print_json(&v);
    } else {
        let line = |what: &str, add: u64, rem: u64, extra: String| {
            format!("{what:<12}{add:>8} new, {rem:>8} removed{extra}")
        };
        let (ad, rm): (&Counts, &Counts) = (&stats.added, &stats.removed);
        ctx.say("");
        ctx.say(line(
            "Files:",
            ad.files,
            rm.files,
            format!(", {:>8} changed", stats.changed_files),
        ));
        ctx.say(line("Dirs:", ad.dirs, rm.dirs, String::new()));
        ctx.say(line("Others:", ad.others, rm.others, String::new()));
        ctx.say(line(
            "Data Blobs:",
            ad.data_blobs,
            rm.data_blobs,
            String::new(),
        ));
        ctx.say(line(
            "Tree Blobs:",
            ad.tree_blobs,
            rm.tree_blobs,
            String::new(),
        ));
        ctx.say(format!("Metadata changed: {}", stats.metadata_changed));
        ctx.say(format!("  Added:   {}", output::bytes(ad.bytes)));
        ctx.say(format!("  Removed: {}", output::bytes(rm.bytes)));
    }
    Ok(0)
}
