//! The mount's caches: decoded trees (by id) and file blobs (by id, bounded in bytes).
//! A blob asked for by several readers at once is fetched once; the others wait for it.
//! Readahead fills the same cache from a small pool of background threads.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::tree::Tree;
use crate::repo::Repository;

/// Decoded trees kept at most (a tree of 200 000 entries is one of them).
const TREES: usize = 256;

type Slot = Arc<OnceLock<std::result::Result<Arc<Vec<u8>>, String>>>;
/// Decoded trees by id, and their ids oldest first (evicted first).
type TreeMap = (HashMap<Id, Arc<Tree>>, VecDeque<Id>);

pub struct Caches {
    trees: Mutex<TreeMap>,
    blobs: Mutex<BlobMap>,
    /// Bytes of blobs the cache may hold.
    limit: usize,
    readahead: rayon::ThreadPool,
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
        })
    }

    pub fn tree(&self, repo: &RwLock<Repository>, id: &Id) -> Result<Arc<Tree>> {
        if let Some(t) = self.trees.lock().unwrap().0.get(id) {
            return Ok(t.clone());
        }
        let tree = Arc::new(repo.read().unwrap().load_tree(id)?);
        let mut trees = self.trees.lock().unwrap();
        if trees.0.insert(*id, tree.clone()).is_none() {
            trees.1.push_back(*id);
        }
        while trees.1.len() > TREES {
            if let Some(old) = trees.1.pop_front() {
                trees.0.remove(&old);
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
        for id in ids {
            let cached = self.blobs.lock().unwrap().slots.contains_key(&id);
            if cached {
                continue;
            }
            let (me, repo) = (self.clone(), repo.clone());
            self.readahead.spawn(move || {
                let _ = me.blob(&repo, &id);
            });
        }
    }
}
