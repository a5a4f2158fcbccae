//! On remote storage a restore fetches each pack's needed blobs in a few large ranged
//! reads ("runs": neighbouring blobs of one pack, planned before the restore starts),
//! each fetched once, instead of one request per blob. A fetched run is cut into its
//! blobs at once, and each blob's bytes are dropped when it is handed out, so memory
//! holds only blobs fetched and not yet written (within a budget); past the budget, or
//! for a blob asked for again, the blob alone is read.
//!
//! Runs are ordered by when the restore first needs them, and a few prefetchers fetch
//! them in that order ahead of the writers (within a smaller budget), so several
//! requests are in flight while files are written: a remote restore waits on
//! bandwidth, not on one request's latency after another.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::backend::{Backend, FileType};
use crate::error::Result;
use crate::id::Id;
use crate::repo::pack::read_forward;
use crate::repo::Repository;

/// Blobs further apart than this start a new run: fetching the gap would cost more
/// than another request.
const MAX_GAP: u64 = 1 << 20;
/// A run is at most this long: a whole pack of the default size (16 MiB) in one
/// request; fetched blobs are dropped as they are written, so a long run costs memory
/// only for blobs still waiting for their file.
const MAX_RUN: u64 = 32 << 20;
/// Bytes of fetched blobs not yet handed out (and of fetches in flight), at most.
const BUDGET: usize = 256 << 20;
/// The part of the budget prefetchers may fill: the writers' own fetches always find
/// room, so a prefetcher running ahead never turns their reads into one per blob.
const PREFETCH_BUDGET: usize = 128 << 20;
/// Bytes a prefetcher fetches between two hand-backs of freed memory.
const TRIM_EVERY: usize = 32 << 20;
/// Prefetchers at most (each holds one request in flight).
const PREFETCHERS: usize = 4;

struct Run {
    pack: Id,
    start: u64,
    len: usize,
    /// The run's blobs: id, offset in the pack, length.
    blobs: Vec<(Id, u64, usize)>,
    state: Mutex<RunState>,
}

#[derive(Default)]
struct RunState {
    fetched: bool,
    /// After the fetch: the bytes of each blob not handed out yet.
    pieces: HashMap<Id, Vec<u8>>,
    /// Blobs no file will ask for any more (their file was kept, linked or failed).
    released: HashSet<Id>,
}

impl Run {
    /// Fetches the run unless it is fetched already, nothing in it is still wanted, or
    /// it would take the bytes in use past `limit`. `reserved`: the caller counted the
    /// run in `inflight` already.
    fn fill(&self, runs: &PackRuns, backend: &dyn Backend, limit: usize, reserved: bool) {
        let mut state = self.state.lock().unwrap();
        let unreserve = || {
            if reserved {
                runs.inflight.fetch_sub(self.len, Ordering::SeqCst);
            }
        };
        if state.fetched || state.released.len() == self.blobs.len() {
            state.fetched = true;
            return unreserve();
        }
        let own = if reserved { 0 } else { self.len };
        if runs.in_use() + own > limit {
            return unreserve();
        }
        // Under the run's lock: fetched once, whoever asks first, and streamed: each
        // blob is cut out as it arrives, the run never held whole beside its blobs. A
        // fetch that fails part-way keeps the blobs it got (each is authenticated when
        // used) and leaves the run unfetched: the next reader asks for it again and
        // takes only what is still missing; a writer whose fetch fails reads its blob
        // alone and reports the error.
        if let Ok(mut r) =
            backend.read_range_stream(FileType::Pack, &self.pack.to_hex(), self.start, self.len)
        {
            let mut pos = self.start;
            let mut whole = true;
            for (blob, off, len) in &self.blobs {
                // Overlapping the blob before (two names for one copy): read alone.
                if *off < pos {
                    continue;
                }
                // Sized exactly: a piece may wait a while for its file.
                let mut piece = Vec::with_capacity(*len);
                let sink = &mut std::io::sink();
                if !read_forward(&mut r, &mut pos, *off, *len as u64, sink, &mut piece)
                    .unwrap_or(false)
                {
                    whole = false;
                    break;
                }
                if !state.released.contains(blob) && !state.pieces.contains_key(blob) {
                    state.pieces.insert(*blob, piece);
                    runs.resident.fetch_add(*len, Ordering::SeqCst);
                }
            }
            state.fetched = whole;
        }
        unreserve();
    }
}

#[derive(Default)]
pub struct PackRuns {
    by_blob: HashMap<Id, Arc<Run>>,
    /// Every run, in the order the restore first needs it.
    order: Vec<Arc<Run>>,
    /// The next run of `order` a prefetcher takes.
    next: AtomicUsize,
    resident: AtomicUsize,
    /// Bytes of prefetches under way.
    inflight: AtomicUsize,
    stop: AtomicBool,
}

impl PackRuns {
    /// Plans the runs for `blobs` (each once, in the order the restore first needs
    /// them), or none when the storage is local.
    pub fn plan(repo: &Repository, blobs: &[Id]) -> PackRuns {
        let mut runs = PackRuns::default();
        if !repo.backend().is_remote() {
            return runs;
        }
        // Per pack: (offset, end, id, rank in need order).
        let mut by_pack: HashMap<Id, Vec<(u64, u64, Id, usize)>> = HashMap::new();
        for (rank, id) in blobs.iter().enumerate() {
            if let Some(loc) = repo.index().get(id) {
                let (off, len) = (loc.entry.offset as u64, loc.entry.length as u64);
                by_pack
                    .entry(loc.pack)
                    .or_default()
                    .push((off, off + len, *id, rank));
            }
        }
        let mut ranked: Vec<(usize, Arc<Run>)> = Vec::new();
        for (pack, mut blobs) in by_pack {
            blobs.sort_unstable();
            blobs.dedup_by(|a, b| a.2 == b.2);
            let mut group: Vec<(u64, u64, Id, usize)> = Vec::new();
            let mut flush = |group: &mut Vec<(u64, u64, Id, usize)>| {
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
                        state: Mutex::default(),
                    });
                    for b in group.iter() {
                        runs.by_blob.insert(b.2, run.clone());
                    }
                    let first = group.iter().map(|b| b.3).min().unwrap_or(0);
                    ranked.push((first, run));
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
        ranked.sort_unstable_by_key(|r| r.0);
        runs.order = ranked.into_iter().map(|r| r.1).collect();
        runs
    }

    fn in_use(&self) -> usize {
        self.resident.load(Ordering::SeqCst) + self.inflight.load(Ordering::SeqCst)
    }

    /// How many prefetchers are worth starting (none on local storage).
    pub fn prefetchers(&self, repo: &Repository) -> usize {
        if self.order.is_empty() {
            return 0;
        }
        repo.backend()
            .connections()
            .min(PREFETCHERS)
            .min(self.order.len())
    }

    /// One prefetcher: fetches runs in need order while the prefetch budget has room,
    /// until every run is taken or `stop` is called.
    pub fn prefetch(&self, backend: &dyn Backend) {
        let mut since_trim = 0;
        loop {
            let i = self.next.fetch_add(1, Ordering::SeqCst);
            let Some(run) = self.order.get(i) else { return };
            // Reserve first, then look: concurrent prefetchers never overshoot.
            loop {
                if self.stop.load(Ordering::SeqCst) {
                    return;
                }
                let before = self.inflight.fetch_add(run.len, Ordering::SeqCst);
                let used = before + self.resident.load(Ordering::SeqCst);
                if used + run.len <= PREFETCH_BUDGET || used == 0 {
                    break;
                }
                self.inflight.fetch_sub(run.len, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
            }
            run.fill(self, backend, usize::MAX, true);
            // Blobs are cut out on one thread and freed on another; glibc keeps what
            // the writers free in the prefetchers' arenas: hand it back after every
            // 32 MiB or so fetched (S3 restore of the bench corpus: 318-331 -> 262-286
            // MiB, same time), not after every small run (each call locks the arenas).
            since_trim += run.len;
            if since_trim >= TRIM_EVERY {
                since_trim = 0;
                #[cfg(all(target_os = "linux", target_env = "gnu"))]
                unsafe {
                    libc::malloc_trim(0);
                }
            }
        }
    }

    /// Ends the prefetchers after the run each is fetching.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// The blob's content, from its run when it has one.
    pub fn read(&self, repo: &Repository, id: &Id) -> Result<Vec<u8>> {
        let (Some(run), Some(loc)) = (self.by_blob.get(id), repo.index().get(id)) else {
            return repo.read_blob(id);
        };
        run.fill(self, repo.backend(), BUDGET, false);
        let sealed = {
            let mut state = run.state.lock().unwrap();
            // Taken now, whichever way: a later fetch of the run must not keep its bytes
            // for a file that will never ask again.
            state.released.insert(*id);
            state.pieces.remove(id)
        };
        // Not fetched (over budget, failed), or handed out before (asked again): alone.
        let Some(sealed) = sealed else {
            return repo.read_blob(id);
        };
        self.resident.fetch_sub(sealed.len(), Ordering::SeqCst);
        // A blob that fails here is read alone, so the error names it as usual.
        repo.open_sealed_blob(&loc.pack, &loc.entry, &sealed)
            .or_else(|_| repo.read_blob(id))
    }

    /// No file will ask for the blob any more: its bytes, fetched or still to come, are
    /// not kept for it.
    pub fn release(&self, id: &Id) {
        let Some(run) = self.by_blob.get(id) else {
            return;
        };
        let mut state = run.state.lock().unwrap();
        state.released.insert(*id);
        if let Some(sealed) = state.pieces.remove(id) {
            self.resident.fetch_sub(sealed.len(), Ordering::SeqCst);
        }
    }
}
