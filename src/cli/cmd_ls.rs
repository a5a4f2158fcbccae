//! `cairn ls SNAPSHOT [PATH]`

use clap::Args;
use serde_json::{json, Value};

use super::{output, pick, Ctx, FilterArgs};
use cairn::repo::tree::{Node, NodeKind};
use cairn::repo::Repository;
use cairn::restorer::find_node;
use cairn::Result;

#[derive(Args)]
pub struct LsArgs {
    /// Snapshot: id, latest or @TIME.
    snapshot: String,
    /// A directory (or file) in the snapshot; the whole tree when left out.
    path: Option<String>,
    /// Descend into subdirectories of PATH.
    #[arg(long)]
    recursive: bool,
    /// Long listing: mode, owner, size, time.
    #[arg(short, long)]
    long: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

pub(super) fn node_json(n: &Node, path: &str) -> Value {
    let mut v = json!({
        "name": n.name_lossy(),
        "type": n.kind.name(),
        "path": path,
        "uid": n.uid,
        "gid": n.gid,
        "user": n.user,
        "group": n.group,
        "size": n.size,
        "mode": n.mode,
        "permissions": output::mode_string(n),
        "mtime": output::time(&n.mtime).to_rfc3339(),
        "atime": output::time(&n.atime).to_rfc3339(),
        "ctime": output::time(&n.ctime).to_rfc3339(),
        "inode": n.inode,
        "links": n.links,
    });
    if n.kind == NodeKind::Symlink {
        v["link_target"] = json!(String::from_utf8_lossy(&n.link_target));
    }
    v
}

struct Lister<'a> {
    ctx: &'a Ctx,
    long: bool,
    out: Vec<Value>,
}

impl Lister<'_> {
    fn emit(&mut self, n: &Node, path: &str) {
        if self.ctx.json() {
            self.out.push(node_json(n, path));
        } else if self.long {
            let link = if n.kind == NodeKind::Symlink {
                format!(" -> {}", String::from_utf8_lossy(&n.link_target))
            } else {
                String::new()
            };
            self.ctx.say(format!(
                "{} {:>8} {:>8} {:>12} {} {path}{link}",
                output::mode_string(n),
                if n.user.is_empty() {
                    n.uid.to_string()
                } else {
                    n.user.clone()
                },
                if n.group.is_empty() {
                    n.gid.to_string()
                } else {
                    n.group.clone()
                },
                n.size,
                output::time(&n.mtime).format("%Y-%m-%d %H:%M:%S"),
            ));
        } else {
            self.ctx.say(path);
        }
    }

    fn walk(&mut self, repo: &Repository, dir: &Node, path: &str, recursive: bool) -> Result<()> {
        let Some(id) = dir.subtree else { return Ok(()) };
        for child in repo.load_tree(&id)?.nodes {
            let p = join(path, &child.name_lossy());
            self.emit(&child, &p);
            if recursive && child.kind == NodeKind::Dir {
                self.walk(repo, &child, &p, true)?;
            }
        }
        Ok(())
    }
}

pub fn run(ctx: &Ctx, a: LsArgs) -> Result<i32> {
    let (repo, _lock) = ctx.open_locked(cairn::repo::lock::LockKind::Shared, true)?;
    let (_, snap) = pick(&repo, &a.snapshot, &a.filter)?;
    let mut l = Lister {
        ctx,
        long: a.long,
        out: Vec::new(),
    };
    match &a.path {
        None => {
            let root = find_node(&repo, snap.tree, "/")?;
            l.walk(&repo, &root, "/", true)?;
        }
        Some(p) => {
            let node = find_node(&repo, snap.tree, p)?;
            let path = format!("/{}", p.trim_matches('/'));
            if path != "/" {
                l.emit(&node, &path);
            }
            if node.kind == NodeKind::Dir {
                l.walk(&repo, &node, &path, a.recursive)?;
            }
        }
    }
    if ctx.json() {
        output::print_json(&l.out);
    }
    Ok(0)
}
