//! `versions PATH`: the history of one file or directory across snapshots, one entry
//! per distinct version (by content: a file's blob list, a directory's tree id, a
//! link's target), with the first and last snapshot that hold it, so "which snapshot
//! still has the last good copy" is one command.

use chrono::{DateTime, FixedOffset};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{Node, NodeKind};
use crate::repo::Repository;
use crate::restorer::find_node;

/// One distinct version of the path.
#[derive(Clone, Debug, Serialize)]
pub struct Version {
    /// What tells versions apart: for a file, a hash of its blob ids; for a directory,
    /// its tree id; for a symlink, a hash of its target.
    pub content: Id,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub size: u64,
    /// The entry's mtime in the first snapshot that holds this version.
    pub mtime: DateTime<FixedOffset>,
    pub first_snapshot: Id,
    pub first_time: DateTime<FixedOffset>,
    pub last_snapshot: Id,
    pub last_time: DateTime<FixedOffset>,
    /// How many snapshots hold this version.
    pub snapshots: u64,
}

/// The versions of `path` in `snapshots` (oldest first), oldest version first; snapshots
/// without the path are left out. An error if no snapshot has it.
pub fn versions(
    repo: &Repository,
    snapshots: &[(Id, Snapshot)],
    path: &str,
) -> Result<Vec<Version>> {
    let mut out: Vec<Version> = Vec::new();
    let mut by_content: std::collections::HashMap<Id, usize> = Default::default();
    for (id, snap) in snapshots {
        let node = match find_node(repo, snap.tree, path) {
            Ok(n) => n,
            // Not in this snapshot (usage errors are "not in the snapshot" here).
            Err(Error::Usage(_)) => continue,
            Err(e) => return Err(e),
        };
        let content = content_id(repo, &node);
        match by_content.get(&content) {
            Some(&i) => {
                let v = &mut out[i];
                v.snapshots += 1;
                if snap.time >= v.last_time {
                    v.last_snapshot = *id;
                    v.last_time = snap.time;
                }
            }
            None => {
                by_content.insert(content, out.len());
                out.push(Version {
                    content,
                    kind: node.kind.name(),
                    size: node.size,
                    mtime: chrono::DateTime::from_timestamp(node.mtime.secs, node.mtime.nanos)
                        .unwrap_or_default()
                        .fixed_offset(),
                    first_snapshot: *id,
                    first_time: snap.time,
                    last_snapshot: *id,
                    last_time: snap.time,
                    snapshots: 1,
                });
            }
        }
    }
    if out.is_empty() {
        return Err(Error::Usage(format!("{path} is in no snapshot")));
    }
    Ok(out)
}

fn content_id(repo: &Repository, node: &Node) -> Id {
    let key = &repo.key.id_key;
    let kind = node.kind.name().as_bytes();
    match node.kind {
        NodeKind::Dir => node.subtree.unwrap_or_else(|| key.blob_id(b"")),
        NodeKind::File => node.content_key(key),
        // A link's target, a device's number, and the kind: a fifo is not a socket.
        _ => {
            let mut all = kind.to_vec();
            all.push(0);
            all.extend_from_slice(&node.rdev.to_le_bytes());
            all.extend_from_slice(&node.link_target);
            key.blob_id(&all)
        }
    }
}
