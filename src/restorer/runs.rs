//! On remote storage a restore fetches each pack's needed blobs in a few large ranged
//! reads ("runs": neighbouring blobs of one pack, planned before the restore starts),
//! each fetched once, instead of one request per blob. A fetched run is cut into its
//! blobs at once, and each blob's bytes are dropped when it is handed out, so memory
//! holds only blobs fetched and not yet written (within a budget); past the budget, or
//! for a blob asked for again, the blob alone is read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::backend::{Backend, FileType};
use crate::error::Result;
use crate::id::Id;
use crate::repo::Repository;

/// Blobs further apart than this start a new run: fetching the gap would cost more
/// than another request.
const MAX_GAP: u64 = 1 << 20;
/// A run is at most this long: a whole pack of the default size (16 MiB) in one
/// request; fetched blobs are dropped as they are written, so a long run costs memory
/// only for blobs still waiting for their file.
const MAX_RUN: u64 = 32 << 20;
/// Bytes of fetched blobs not yet handed out, at most.
const BUDGET: usize = 256 << 20;

struct Run {
    pack: Id,
    start: u64,
    len: usize,
    /// The run's blobs: id, offset in the pack, length.
    blobs: Vec<(Id, u64, usize)>,
    /// After the fetch: the bytes of each blob not handed out yet.
    state: Mutex<RunState>,
}

#[derive(Default)]
enum RunState {
    #[default]
    NotFetched,
    Fetched(HashMap<Id, Vec<u8>>),
}

impl Run {
    /// Fetches the run unless it is fetched already or would exceed the budget.
    fn fill(&self, backend: &dyn Backend, resident: &AtomicUsize) -> Result<()> {
        let mut state = self.state.lock().unwrap();
        if !matches!(*state, RunState::NotFetched)
            || resident.load(Ordering::SeqCst) + self.len > BUDGET
        {
            return Ok(());
        }
        // Under the run's lock: fetched once, whoever asks first.
        let bytes =
            backend.read_range(FileType::Pack, &self.pack.to_hex(), self.start, self.len)?;
        let mut pieces = HashMap::with_capacity(self.blobs.len());
        for (blob, off, len) in &self.blobs {
            let from = (off - self.start) as usize;
            pieces.insert(*blob, bytes[from..from + len].to_vec());
            resident.fetch_add(*len, Ordering::SeqCst);
        }
        *state = RunState::Fetched(pieces);
        Ok(())
    }
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
                        blobs: group
                            .iter()
                            .map(|b| (b.2, b.0, (b.1 - b.0) as usize))
                            .collect(),
                        state: Mutex::new(RunState::NotFetched),
                    });
                    for b in group.iter() {
                        runs.by_blob.insert(b.2, run.clone());
                    }
                }
                group.clear();
            };
            let mut group_end = 0;
            for b in blobs {
                if let Some(first) = group.first() {
                    if b.0 > group_end + MAX_GAP || b.1 - first.0 > MAX_RUN {
                        flush(&mut group);
                    }
                }
                if group.is_empty() {
                    group_end = 0;
                }
                group_end = group_end.max(b.1);
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
        run.fill(repo.backend(), &self.resident)?;
        let sealed = match &mut *run.state.lock().unwrap() {
            RunState::Fetched(pieces) => pieces.remove(id),
            RunState::NotFetched => None,
        };
        // Not fetched (over budget), or handed out before (asked again): alone.
        let Some(sealed) = sealed else {
            return repo.read_blob(id);
        };
        self.resident.fetch_sub(sealed.len(), Ordering::SeqCst);
        // A blob that fails here is read alone, so the error names it as usual.
        repo.open_sealed_blob(&loc.pack, &loc.entry, &sealed)
            .or_else(|_| repo.read_blob(id))
    }
}
