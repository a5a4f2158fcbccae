//! The mount's caches: decoded trees (by id) and file blobs (by id, bounded in bytes).
//! A blob asked for by several readers at once is fetched once; the others wait for it.
//! Readahead fills the same cache from a small pool of background threads.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::tree::Tree;
use crate::repo::Repository;

/// Decoded trees kept, by their estimated size in memory: a folder of 200 000 entries
/// (about 90 MB decoded) fits beside others, so `ls -l` in it never decodes it again;
/// the tree in use is always kept, however large.
const TREE_BYTES: usize = 128 << 20;
/// Readahead fetches queued at most.
const PENDING: usize = 32;

type Slot = Arc<OnceLock<std::result::Result<Arc<Vec<u8>>, String>>>;
/// Decoded trees by id with their estimated bytes, least recently used first.
#[derive(Default)]
struct TreeMap {
    /// Tree, estimated bytes, and the stamp of its last use.
    trees: HashMap<Id, (Arc<Tree>, usize, u64)>,
    /// One record per use, oldest first; a record whose stamp is no longer its tree's
    /// is an earlier use, skipped. A use costs O(1), not a search of the order.
    order: VecDeque<(Id, u64)>,
    bytes: usize,
    clock: u64,
}

impl TreeMap {
    fn touch(&mut self, id: &Id) {
        self.clock += 1;
        if let Some(e) = self.trees.get_mut(id) {
            e.2 = self.clock;
        }
        self.order.push_back((*id, self.clock));
        // Stale records are dropped once they outnumber the live ones.
        if self.order.len() > 2 * self.trees.len() + 64 {
            let trees = &self.trees;
            self.order
                .retain(|(id, stamp)| trees.get(id).is_some_and(|e| e.2 == *stamp));
        }
    }
}

pub struct Caches {
    trees: Mutex<TreeMap>,
    blobs: Mutex<BlobMap>,
    /// Bytes of blobs the cache may hold.
    limit: usize,
    readahead: rayon::ThreadPool,
    pending: std::sync::atomic::AtomicUsize,
}

#[derive(Default)]
struct BlobMap {
    slots: HashMap<Id, Slot>,
    /// Oldest first: what is evicted when the cache is over its limit.
    order: VecDeque<(Id, usize)>,
    bytes: usize,
}

impl Caches {
    pub fn new(limit: usize) -> Result<Caches> {
        let readahead = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .thread_name(|i| format!("cairn-readahead-{i}"))
            .build()
            .map_err(|e| Error::Other(format!("starting readahead threads: {e}")))?;
        Ok(Caches {
            trees: Mutex::default(),
            blobs: Mutex::default(),
            limit,
            readahead,
            pending: Default::default(),
        })
    }

    pub fn tree(&self, repo: &RwLock<Repository>, id: &Id) -> Result<Arc<Tree>> {
        {
            let mut m = self.trees.lock().unwrap();
            if let Some((t, _, _)) = m.trees.get(id) {
                let t = t.clone();
                m.touch(id);
                return Ok(t);
            }
        }
        let tree = Arc::new(repo.read().unwrap().load_tree(id)?);
        let size = tree
            .nodes
            .iter()
            // A decoded node with its allocations (name, owner names, lists).
            .map(|n| 440 + n.name.len() + n.content.len() * 32 + n.link_target.len())
            .sum::<usize>();
        let mut m = self.trees.lock().unwrap();
        if m.trees.insert(*id, (tree.clone(), size, 0)).is_none() {
            m.bytes += size;
        }
        m.touch(id);
        // Least recently used out; the tree just used always stays.
        while m.bytes > TREE_BYTES && m.trees.len() > 1 {
            let Some((old, stamp)) = m.order.pop_front() else {
                break;
            };
            if m.trees.get(&old).is_some_and(|e| e.2 == stamp) {
                let (_, n, _) = m.trees.remove(&old).expect("present");
                m.bytes -= n;
            }
        }
        Ok(tree)
    }

    /// The blob's bytes: from the cache, or fetched (once, whoever asks first).
    pub fn blob(&self, repo: &RwLock<Repository>, id: &Id) -> Result<Arc<Vec<u8>>> {
        let slot = {
            let mut map = self.blobs.lock().unwrap();
            map.slots.entry(*id).or_default().clone()
        };
        let got = slot.get_or_init(|| {
            let r = repo.read().unwrap().read_blob(id);
            match r {
                Ok(b) => {
                    let b = Arc::new(b);
                    self.account(id, b.len());
                    Ok(b)
                }
                Err(e) => Err(e.to_string()),
            }
        });
        match got {
            Ok(b) => Ok(b.clone()),
            Err(e) => {
                // Not kept: the next read tries again (a flaky remote may answer).
                let mut map = self.blobs.lock().unwrap();
                if map.slots.get(id).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                    map.slots.remove(id);
                }
                Err(Error::Other(e.clone()))
            }
        }
    }

    /// Counts a fetched blob and evicts the oldest past the limit.
    fn account(&self, id: &Id, len: usize) {
        let mut map = self.blobs.lock().unwrap();
        map.order.push_back((*id, len));
        map.bytes += len;
        while map.bytes > self.limit && map.order.len() > 1 {
            let (old, n) = map.order.pop_front().expect("not empty");
            map.slots.remove(&old);
            map.bytes -= n;
        }
    }

    /// Fetches blobs in the background (sequential readers' next blobs).
    pub fn prefetch(self: &Arc<Self>, repo: &Arc<RwLock<Repository>>, ids: Vec<Id>) {
        use std::sync::atomic::Ordering;
        for id in ids {
            // Registered now, so the next read's readahead does not queue it again.
            {
                let mut map = self.blobs.lock().unwrap();
                if map.slots.contains_key(&id) {
                    continue;
                }
                if self.pending.load(Ordering::SeqCst) >= PENDING {
                    return;
                }
                map.slots.insert(id, Slot::default());
            }
            self.pending.fetch_add(1, Ordering::SeqCst);
            let (me, repo) = (self.clone(), repo.clone());
            self.readahead.spawn(move || {
                let _ = me.blob(&repo, &id);
                me.pending.fetch_sub(1, Ordering::SeqCst);
            });
        }
    }
}
