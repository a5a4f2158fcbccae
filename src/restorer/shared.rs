//! Blobs that several restored files need (identical files, repeated chunks) are fetched
//! once and handed to each file from memory, within a budget; past the budget they are
//! simply read again.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::Result;
use crate::id::Id;
use crate::repo::tree::{is_safe_name, Node, NodeKind};
use crate::repo::Repository;

/// Memory the shared blobs may hold at once.
const BUDGET: usize = 64 << 20;

/// A shared blob: filled by the first file that needs it; the others wait for it.
type Slot = Arc<OnceLock<Option<Arc<Vec<u8>>>>>;

/// (device, inode) of a hard-link group → members the restore writes.
pub type LinkMembers = HashMap<(u64, u64), u32>;

#[derive(Default)]
pub struct SharedBlobs {
    /// Uses left, for blobs that are used more than once.
    uses: Mutex<HashMap<Id, u32>>,
    /// Slots of blobs in memory, and the bytes they may hold.
    held: Mutex<(HashMap<Id, Slot>, usize)>,
    /// Large ranged reads on remote storage.
    runs: super::runs::PackRuns,
}

impl SharedBlobs {
    /// Counts how often each blob below `root` (at snapshot path `root_path`) is used by
    /// the files the restore selects (`wanted`: whether an entry is restored, or for a
    /// directory, walked), and how many members of each hard-link group it restores
    /// (one pass over the trees).
    pub fn plan(
        repo: &Repository,
        root: &Node,
        root_path: &Path,
        wanted: &dyn Fn(&Path, &Node) -> bool,
    ) -> Result<(SharedBlobs, LinkMembers)> {
        let mut uses: HashMap<Id, u32> = HashMap::new();
        let mut links = LinkMembers::new();
        let mut count = |node: &Node| {
            for id in &node.content {
                *uses.entry(*id).or_default() += 1;
            }
            if node.kind == NodeKind::File && node.links > 1 {
                *links.entry((node.device, node.inode)).or_default() += 1;
            }
        };
        let mut stack: Vec<(Id, PathBuf)> = Vec::new();
        match root.kind {
            NodeKind::Dir => stack.extend(root.subtree.map(|id| (id, root_path.to_path_buf()))),
            _ => count(root),
        }
        while let Some((tree, dir)) = stack.pop() {
            for node in repo.load_tree(&tree)?.nodes {
                if !is_safe_name(&node.name) {
                    continue;
                }
                let path = dir.join(OsStr::from_bytes(&node.name));
                if !wanted(&path, &node) {
                    continue;
                }
                if node.kind == NodeKind::Dir {
                    stack.extend(node.subtree.map(|id| (id, path)));
                } else {
                    count(&node);
                }
            }
        }
        let runs = super::runs::PackRuns::plan(repo, uses.keys().copied());
        uses.retain(|_, n| *n > 1);
        links.retain(|_, n| *n > 1);
        let blobs = SharedBlobs {
            uses: Mutex::new(uses),
            held: Mutex::default(),
            runs,
        };
        Ok((blobs, links))
    }

    /// The blob's content: fetched once for all the files that share it.
    pub fn get(&self, repo: &Repository, id: &Id) -> Result<Arc<Vec<u8>>> {
        let left = {
            let mut uses = self.uses.lock().unwrap();
            let Some(n) = uses.get_mut(id) else {
                drop(uses);
                return Ok(Arc::new(self.runs.read(repo, id)?));
            };
            *n -= 1;
            let left = *n;
            if left == 0 {
                uses.remove(id);
            }
            left
        };
        let size = repo.index().get(id).map_or(0, |l| {
            (l.entry.uncompressed_length as usize).max(l.entry.length as usize)
        });
        let slot = {
            let mut held = self.held.lock().unwrap();
            match held.0.get(id).cloned() {
                Some(slot) => {
                    if left == 0 {
                        held.0.remove(id);
                        held.1 = held.1.saturating_sub(size);
                    }
                    Some(slot)
                }
                None if left > 0 && held.1 + size <= BUDGET => {
                    let slot = Slot::default();
                    held.0.insert(*id, slot.clone());
                    held.1 += size;
                    Some(slot)
                }
                None => None,
            }
        };
        let Some(slot) = slot else {
            return Ok(Arc::new(self.runs.read(repo, id)?));
        };
        // One thread reads; any other asking meanwhile waits for its result.
        match slot.get_or_init(|| self.runs.read(repo, id).ok().map(Arc::new)) {
            Some(data) => Ok(data.clone()),
            // The read failed: read again here, to report the error itself.
            None => Ok(Arc::new(repo.read_blob(id)?)),
        }
    }
}
