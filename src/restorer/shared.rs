//! Blobs that several restored files need (identical files, repeated chunks) are fetched
//! once and handed to each file from memory, within a budget; past the budget they are
//! simply read again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::Result;
use crate::id::Id;
use crate::repo::tree::{Node, NodeKind};
use crate::repo::Repository;

/// Memory the shared blobs may hold at once.
const BUDGET: usize = 64 << 20;

/// A shared blob: filled by the first file that needs it; the others wait for it.
type Slot = Arc<OnceLock<Option<Arc<Vec<u8>>>>>;

#[derive(Default)]
pub struct SharedBlobs {
    /// Uses left, for blobs that are used more than once.
    uses: Mutex<HashMap<Id, u32>>,
    /// Slots of blobs in memory, and the bytes they may hold.
    held: Mutex<(HashMap<Id, Slot>, usize)>,
}

impl SharedBlobs {
    /// Counts how often each blob below `root` is used (one pass over the trees).
    pub fn plan(repo: &Repository, root: &Node) -> Result<SharedBlobs> {
        let mut uses: HashMap<Id, u32> = HashMap::new();
        let mut stack: Vec<Id> = root.subtree.into_iter().collect();
        if root.kind == NodeKind::File {
            for id in &root.content {
                *uses.entry(*id).or_default() += 1;
            }
        }
        while let Some(tree) = stack.pop() {
            for node in repo.load_tree(&tree)?.nodes {
                stack.extend(node.subtree);
                for id in &node.content {
                    *uses.entry(*id).or_default() += 1;
                }
            }
        }
        uses.retain(|_, n| *n > 1);
        Ok(SharedBlobs {
            uses: Mutex::new(uses),
            held: Mutex::default(),
        })
    }

    /// The blob's content: fetched once for all the files that share it.
    pub fn get(&self, repo: &Repository, id: &Id) -> Result<Arc<Vec<u8>>> {
        let left = {
            let mut uses = self.uses.lock().unwrap();
            let Some(n) = uses.get_mut(id) else {
                drop(uses);
                return Ok(Arc::new(repo.read_blob(id)?));
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
            return Ok(Arc::new(repo.read_blob(id)?));
        };
        // One thread reads; any other asking meanwhile waits for its result.
        match slot.get_or_init(|| repo.read_blob(id).ok().map(Arc::new)) {
            Some(data) => Ok(data.clone()),
            // The read failed: read again here, to report the error itself.
            None => Ok(Arc::new(repo.read_blob(id)?)),
        }
    }
}
