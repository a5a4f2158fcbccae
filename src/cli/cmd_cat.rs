//! `cairn cat config|snapshot|tree|blob|index|pack|key [ID]`

use std::io::Write;

use clap::{Args, ValueEnum};
use serde_json::{json, Value};

use super::{output, pick, Ctx, FilterArgs};
use cairn::backend::FileType;
use cairn::id::Id;
use cairn::repo::key::KeyFile;
use cairn::repo::tree::{Node, Tree};
use cairn::restorer::find_node;
use cairn::selector::split_subpath;
use cairn::{Error, Result};

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    Config,
    Snapshot,
    Tree,
    Blob,
    Index,
    Pack,
    Key,
}

#[derive(Args)]
pub struct CatArgs {
    #[arg(value_enum)]
    kind: Kind,
    /// Id or unique prefix; for snapshot and tree also latest, @TIME or SNAP:/path.
    id: Option<String>,
}

fn tree_json(t: &Tree) -> Value {
    let nodes: Vec<Value> = t.nodes.iter().map(node_json).collect();
    json!({ "nodes": nodes })
}

fn node_json(n: &Node) -> Value {
    json!({
        "name": n.name_lossy(),
        "name_hex": hex::encode(&n.name),
        "type": n.kind.name(),
        "mode": n.mode,
        "uid": n.uid, "gid": n.gid, "user": n.user, "group": n.group,
        "mtime": n.mtime, "atime": n.atime, "ctime": n.ctime,
        "size": n.size, "inode": n.inode, "device": n.device, "links": n.links, "rdev": n.rdev,
        "link_target": String::from_utf8_lossy(&n.link_target),
        "xattrs": n.xattrs.iter().map(|x| json!({"name": String::from_utf8_lossy(&x.name), "value_hex": hex::encode(&x.value)})).collect::<Vec<_>>(),
        "content": n.content,
        "subtree": n.subtree,
    })
}

pub fn run(ctx: &Ctx, a: CatArgs) -> Result<i32> {
    let need_id = || {
        a.id.clone()
            .ok_or_else(|| Error::Usage("this kind of object needs an id".into()))
    };
    let mut repo = ctx.open()?;
    let _lock = ctx.lock(&repo, cairn::repo::lock::LockKind::Shared, true)?;
    let value = match a.kind {
        Kind::Config => {
            let mut v = serde_json::to_value(&repo.config).expect("serializable");
            // Secrets derived from a master key: shown only as present.
            for secret in ["/shared_keys/blob_id_key", "/shared_keys/chunker_seed"] {
                if let Some(k) = v.pointer_mut(secret) {
                    *k = Value::String("(secret)".into());
                }
            }
            v
        }
        Kind::Snapshot => {
            let (id, s) = pick(&repo, &need_id()?, &FilterArgs::default())?;
            super::cmd_snapshots::snapshot_json(&id, &s)
        }
        Kind::Tree => {
            repo.load_index()?;
            let arg = need_id()?;
            let id = if arg.len() == 64 && Id::from_hex(&arg).is_ok() {
                Id::from_hex(&arg)?
            } else {
                let (sel, sub) = split_subpath(&arg);
                let (_, s) = pick(&repo, sel, &FilterArgs::default())?;
                find_node(&repo, s.tree, sub.unwrap_or("/"))?
                    .subtree
                    .ok_or_else(|| Error::Usage(format!("{arg} is not a directory")))?
            };
            tree_json(&repo.load_tree(&id)?)
        }
        Kind::Blob => {
            repo.load_index()?;
            let data = repo.read_blob(&Id::from_hex(&need_id()?)?)?;
            std::io::stdout()
                .write_all(&data)
                .map_err(|e| Error::io("writing to stdout", e))?;
            return Ok(0);
        }
        Kind::Index => {
            let name = repo.find_file(FileType::Index, &need_id()?)?;
            serde_json::to_value(repo.load_index_file(&name)?).expect("serializable")
        }
        Kind::Pack => {
            let name = repo.find_file(FileType::Pack, &need_id()?)?;
            json!({ "id": name, "blobs": repo.read_pack_header(&name)? })
        }
        Kind::Key => {
            let name = repo.find_file(FileType::Key, &need_id()?)?;
            let bytes = repo.read_file(FileType::Key, &name)?;
            serde_json::to_value(KeyFile::decode(&bytes, &name)?).expect("serializable")
        }
    };
    if ctx.json() {
        output::print_raw_json(&value);
    } else {
        println!(
            "{}",
            serde_json::to_string_pretty(&value).expect("serializable")
        );
    }
    Ok(0)
}
