//! On remote storage a restore fetches each pack's needed blobs in a few large ranged
//! reads ("runs": neighbouring blobs of one pack, planned before the restore starts),
//! each fetched once and kept in memory until its last blob is handed out, instead of
//! one request per blob. Within a memory budget; past it, or for a blob asked for again,
//! the blob alone is read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::backend::FileType;
use crate::error::Result;
use crate::id::Id;
use crate::repo::Repository;

/// Blobs further apart than this start a new run: fetching the gap would cost more
/// than another request.
const MAX_GAP: u64 = 1 << 20;
/// A run is at most this long (a pack is 16 MiB by default).
const MAX_RUN: u64 = 32 << 20;
/// Bytes of runs held in memory at once.
const BUDGET: usize = 256 << 20;

struct Run {
    pack: Id,
    start: u64,
    len: usize,
    /// The fetched bytes, while blobs of the run are still to be handed out.
    data: Mutex<Option<Arc<Vec<u8>>>>,
    /// Blobs of the run not handed out yet.
    left: AtomicUsize,
}

#[derive(Default)]
pub struct PackRuns {
    by_blob: HashMap<Id, Arc<Run>>,
    resident: AtomicUsize,
}

impl PackRuns {
    /// Plans the runs for `blobs` (each once), or none when the storage is local.
    pub fn plan(repo: &Repository, blobs: impl Iterator<Item = Id>) -> PackRuns {
        let mut runs = PackRuns::default();
        if !repo.backend().is_remote() {
            return runs;
        }
        let mut by_pack: HashMap<Id, Vec<(u64, u64, Id)>> = HashMap::new();
        for id in blobs {
            if let Some(loc) = repo.index().get(&id) {
                let (off, len) = (loc.entry.offset as u64, loc.entry.length as u64);
                by_pack
                    .entry(loc.pack)
                    .or_default()
                    .push((off, off + len, id));
            }
        }
        for (pack, mut blobs) in by_pack {
            blobs.sort_unstable();
            blobs.dedup_by(|a, b| a.2 == b.2);
            let mut group: Vec<(u64, u64, Id)> = Vec::new();
            let mut flush = |group: &mut Vec<(u64, u64, Id)>| {
                if group.len() > 1 {
                    let start = group[0].0;
                    let end = group.iter().map(|b| b.1).max().unwrap_or(start);
                    let run = Arc::new(Run {
                        pack,
                        start,
                        len: (end - start) as usize,
                        data: Mutex::new(None),
                        left: AtomicUsize::new(group.len()),
                    });
                    for b in group.iter() {
                        runs.by_blob.insert(b.2, run.clone());
                    }
                }
                group.clear();
            };
            for b in blobs {
                if let Some(first) = group.first() {
                    let last_end = group.iter().map(|x| x.1).max().unwrap_or(first.0);
                    if b.0 > last_end + MAX_GAP || b.1 - first.0 > MAX_RUN {
                        flush(&mut group);
                    }
                }
                group.push(b);
            }
            flush(&mut group);
        }
        runs
    }

    /// The blob's content, from its run when it has one.
    pub fn read(&self, repo: &Repository, id: &Id) -> Result<Vec<u8>> {
        let (Some(run), Some(loc)) = (self.by_blob.get(id), repo.index().get(id)) else {
            return repo.read_blob(id);
        };
        let data = {
            let mut slot = run.data.lock().unwrap();
            match &*slot {
                Some(d) => Some(d.clone()),
                // Emptied (its blobs were all handed out: this one is asked again) or
                // over budget: the blob alone.
                None if run.left.load(Ordering::SeqCst) == 0
                    || self.resident.load(Ordering::SeqCst) + run.len > BUDGET =>
                {
                    None
                }
                None => {
                    // Fetched under the run's lock: once, whoever asks first.
                    let bytes = repo.backend().read_range(
                        FileType::Pack,
                        &run.pack.to_hex(),
                        run.start,
                        run.len,
                    )?;
                    self.resident.fetch_add(run.len, Ordering::SeqCst);
                    let d = Arc::new(bytes);
                    *slot = Some(d.clone());
                    Some(d)
                }
            }
        };
        let Some(data) = data else {
            return repo.read_blob(id);
        };
        if run.left.fetch_sub(1, Ordering::SeqCst) == 1 {
            run.data.lock().unwrap().take();
            self.resident.fetch_sub(run.len, Ordering::SeqCst);
        }
        let from = (loc.entry.offset as u64 - run.start) as usize;
        let sealed = &data[from..from + loc.entry.length as usize];
        // A blob that fails here is read alone, so the error names it as usual.
        repo.open_sealed_blob(&loc.pack, &loc.entry, sealed)
            .or_else(|_| repo.read_blob(id))
    }
}
