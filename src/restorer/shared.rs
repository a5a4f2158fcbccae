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
    /// directory, walked), and how many members of each hard-link group it restores.
    /// One pass over the trees, in the order the restore takes them (a directory's
    /// subdirectories first, then its files), so remote runs are prefetched in the
    /// order they are needed.
    pub fn plan(
        repo: &Repository,
        root: &Node,
        root_path: &Path,
        wanted: &dyn Fn(&Path, &Node) -> bool,
    ) -> Result<(SharedBlobs, LinkMembers)> {
        let mut uses: HashMap<Id, u32> = HashMap::new();
        // Each blob once, in the order the restore first needs it.
        let mut order: Vec<Id> = Vec::new();
        let mut links = LinkMembers::new();
        let mut count = |node: &Node| {
            for id in &node.content {
                let n = uses.entry(*id).or_insert_with(|| {
                    order.push(*id);
                    0
                });
                *n += 1;
            }
            if node.kind == NodeKind::File && node.links > 1 {
                *links.entry((node.device, node.inode)).or_default() += 1;
            }
        };
        /// A directory being walked: its entries still to look at, and its files,
        /// counted when its subdirectories are done.
        struct Frame {
            entries: std::vec::IntoIter<Node>,
            dir: PathBuf,
            files: Vec<Node>,
        }
        let frame = |tree: Id, dir: PathBuf| -> Result<Frame> {
            Ok(Frame {
                entries: repo.load_tree(&tree)?.nodes.into_iter(),
                dir,
                files: Vec::new(),
            })
        };
        let mut stack: Vec<Frame> = Vec::new();
        match (root.kind, root.subtree) {
            (NodeKind::Dir, Some(tree)) => stack.push(frame(tree, root_path.to_path_buf())?),
            (NodeKind::Dir, None) => {}
            _ => count(root),
        }
        while let Some(top) = stack.last_mut() {
            let Some(node) = top.entries.next() else {
                let done = stack.pop().expect("a frame is on the stack");
                done.files.iter().for_each(&mut count);
                continue;
            };
            if !is_safe_name(&node.name) {
                continue;
            }
            let path = top.dir.join(OsStr::from_bytes(&node.name));
            if !wanted(&path, &node) {
                continue;
            }
            match (node.kind, node.subtree) {
                (NodeKind::Dir, Some(tree)) => stack.push(frame(tree, path)?),
                (NodeKind::Dir, None) => {}
                _ => top.files.push(node),
            }
        }
        let runs = super::runs::PackRuns::plan(repo, &order);
        uses.retain(|_, n| *n > 1);
        links.retain(|_, n| *n > 1);
        let blobs = SharedBlobs {
            uses: Mutex::new(uses),
            held: Mutex::default(),
            runs,
        };
        Ok((blobs, links))
    }

    /// Prefetchers to start for the restore (none on local storage).
    pub fn prefetchers(&self, repo: &Repository) -> usize {
        self.runs.prefetchers(repo)
    }

    /// Runs one prefetcher until the runs are all taken or `stop_prefetch` is called.
    pub fn prefetch(&self, repo: &Repository) {
        self.runs.prefetch(repo.backend())
    }

    pub fn stop_prefetch(&self) {
        self.runs.stop()
    }

    /// A file's blobs, handed out in order; those it has not handed out when dropped
    /// (the file was kept, linked or failed) are released.
    pub fn content<'a>(&'a self, repo: &'a Repository, ids: &'a [Id]) -> Content<'a> {
        Content {
            shared: self,
            repo,
            ids,
            next: 0,
        }
    }

    /// One use of the blob that will not come: a shared blob is kept for one file
    /// less, an unshared one's fetched bytes are dropped.
    fn release(&self, repo: &Repository, id: &Id) {
        {
            let mut uses = self.uses.lock().unwrap();
            if let Some(n) = uses.get_mut(id) {
                *n -= 1;
                if *n > 0 {
                    return;
                }
                uses.remove(id);
                let mut held = self.held.lock().unwrap();
                if held.0.remove(id).is_some() {
                    held.1 = held.1.saturating_sub(held_size(repo, id));
                }
            }
        }
        self.runs.release(id);
    }

    /// The blob's content: fetched once for all the files that share it.
    fn get(&self, repo: &Repository, id: &Id) -> Result<Arc<Vec<u8>>> {
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
        let size = held_size(repo, id);
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

/// The memory a blob held for several files takes.
fn held_size(repo: &Repository, id: &Id) -> usize {
    repo.index().get(id).map_or(0, |l| {
        (l.entry.uncompressed_length as usize).max(l.entry.length as usize)
    })
}

/// A file's blobs in order (`SharedBlobs::content`).
pub struct Content<'a> {
    shared: &'a SharedBlobs,
    repo: &'a Repository,
    ids: &'a [Id],
    next: usize,
}

impl Content<'_> {
    /// The next blob's bytes, or None after the last.
    pub fn next_blob(&mut self) -> Option<Result<Arc<Vec<u8>>>> {
        let id = self.ids.get(self.next)?;
        self.next += 1;
        Some(self.shared.get(self.repo, id))
    }
}

impl Drop for Content<'_> {
    fn drop(&mut self) {
        for id in &self.ids[self.next..] {
            self.shared.release(self.repo, id);
        }
    }
}
