//! The back half of the backup pipeline: compress and seal blobs on worker threads,
//! collect them into packs on one packer thread, write packs and then index files.
//!
//! Bounded channels give back-pressure, so memory stays flat whatever the source size.
//! Write order (DESIGN.md): a pack is written before any index file that names it,
//! and the caller writes the snapshot only after `finish` has written every index.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::backend::{Backend, FileType};
use crate::crypto::SealingKey;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::index::{IndexFile, IndexedPack};
use crate::repo::pack::{seal_blob, BlobType, PackWriter};

/// Index files are written every this many packs, so an interrupted backup leaves
/// most of its uploaded data indexed and reusable.
const PACKS_PER_INDEX: usize = 64;

struct Job {
    ty: BlobType,
    id: Id,
    data: Vec<u8>,
}

struct Sealed {
    ty: BlobType,
    id: Id,
    sealed: Vec<u8>,
    uncompressed_length: u32,
}

/// What the saver wrote.
#[derive(Default)]
pub struct SaverOutput {
    pub index_files: Vec<IndexFile>,
    /// Their names on storage.
    pub index_names: Vec<String>,
    pub packed_bytes: u64,
    pub packs: u64,
}

pub struct BlobSaver {
    jobs: Option<Sender<Job>>,
    /// For blobs sealed by the caller (`save_here`).
    sealed: Option<Sender<Sealed>>,
    budget: Arc<Budget>,
    key: SealingKey,
    level: i32,
    workers: Vec<JoinHandle<()>>,
    packer: Option<JoinHandle<Result<SaverOutput>>>,
}

pub struct SaverConfig {
    pub backend: Arc<dyn Backend>,
    pub key: SealingKey,
    pub compression: i32,
    pub pack_size: usize,
    /// Count everything, write nothing.
    pub dry_run: bool,
    /// Tree packs are also kept here, so the next backup finds its parent's trees.
    pub cache: Option<Arc<crate::backend::CachedBackend>>,
    /// The locks the backup holds: no index file is written unless they are alive.
    pub locks: Vec<crate::repo::lock::LockHandle>,
}

impl BlobSaver {
    pub fn start(cfg: SaverConfig) -> BlobSaver {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let (job_tx, job_rx) = bounded::<Job>(threads);
        // Sealed blobs wait for the packer within a byte budget, not a count: the one packer
        // thread shares two cores with every reader, and a queue of two blobs left the
        // readers spinning on a full channel whenever it was descheduled (a fifth of an
        // initial backup's CPU went to that).
        let (sealed_tx, sealed_rx) = bounded::<Sealed>(256);
        let budget = Arc::new(Budget::new(SEALED_BUDGET));
        let workers = (0..threads)
            .map(|_| {
                let rx = job_rx.clone();
                let tx = sealed_tx.clone();
                let budget = budget.clone();
                let key = cfg.key.clone();
                let level = cfg.compression;
                std::thread::spawn(move || {
                    for job in rx {
                        let (sealed, uncompressed_length) = seal_blob(&key, level, &job.data);
                        budget.take(sealed.len());
                        let out = Sealed {
                            ty: job.ty,
                            id: job.id,
                            sealed,
                            uncompressed_length,
                        };
                        if tx.send(out).is_err() {
                            return; // the packer failed; its error is reported by finish()
                        }
                    }
                })
            })
            .collect();
        let (key, level) = (cfg.key.clone(), cfg.compression);
        let packer_budget = budget.clone();
        let packer = std::thread::spawn(move || run_packer(cfg, sealed_rx, &packer_budget));
        BlobSaver {
            jobs: Some(job_tx),
            sealed: Some(sealed_tx),
            budget,
            key,
            level,
            workers,
            packer: Some(packer),
        }
    }

    /// Compresses and seals one blob in the calling thread and hands it to the packer.
    /// The backup's readers use this: the bytes they just read are still in their
    /// core's cache, and no thread hop or second queue stands between them and the pack.
    pub fn save_here(&self, ty: BlobType, id: Id, data: &[u8]) -> Result<()> {
        let (sealed, uncompressed_length) = seal_blob(&self.key, self.level, data);
        self.budget.take(sealed.len());
        self.sealed
            .as_ref()
            .expect("save after finish")
            .send(Sealed {
                ty,
                id,
                sealed,
                uncompressed_length,
            })
            .map_err(|_| Error::Other("the blob pipeline stopped".into()))
    }

    /// Queues one blob. An error means the pipeline has stopped; `finish` says why.
    pub fn save(&self, ty: BlobType, id: Id, data: Vec<u8>) -> Result<()> {
        self.jobs
            .as_ref()
            .expect("save after finish")
            .send(Job { ty, id, data })
            .map_err(|_| Error::Other("the blob pipeline stopped".into()))
    }

    /// Waits for every queued blob to be packed and written, then writes the index.
    pub fn finish(mut self) -> Result<SaverOutput> {
        self.jobs.take();
        self.sealed.take();
        for w in self.workers.drain(..) {
            w.join()
                .map_err(|_| Error::Other("a compression worker panicked".into()))?;
        }
        self.packer
            .take()
            .expect("finish once")
            .join()
            .map_err(|_| Error::Other("the packer panicked".into()))?
    }
}

impl Drop for BlobSaver {
    fn drop(&mut self) {
        // On an early return (an error elsewhere) stop the threads without writing
        // an index for a backup that will not get a snapshot. Packs already written
        // stay; a later backup or prune adopts them under the right lock.
        self.jobs.take();
        self.sealed.take();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        if let Some(p) = self.packer.take() {
            let _ = p.join();
        }
    }
}

/// Bytes of sealed blobs that may wait for the packer at once.
const SEALED_BUDGET: usize = 16 << 20;

/// A byte budget: `take` waits (asleep, not spinning) while the bytes in flight plus
/// the new ones would pass the limit; a single blob larger than the limit still goes
/// when nothing else is in flight.
struct Budget {
    /// Bytes in flight, opened (no more waiting), senders waiting.
    used: std::sync::Mutex<(usize, bool, usize)>,
    freed: std::sync::Condvar,
    limit: usize,
}

impl Budget {
    fn new(limit: usize) -> Budget {
        Budget {
            used: std::sync::Mutex::new((0, false, 0)),
            freed: std::sync::Condvar::new(),
            limit,
        }
    }

    fn take(&self, n: usize) {
        let mut g = self.used.lock().unwrap();
        while !g.1 && g.0 > 0 && g.0 + n > self.limit {
            g.2 += 1;
            g = self.freed.wait(g).unwrap();
            g.2 -= 1;
        }
        g.0 += n;
    }

    fn give(&self, n: usize) {
        let mut g = self.used.lock().unwrap();
        g.0 = g.0.saturating_sub(n);
        // A wake-up is a system call: only when someone waits.
        if g.2 > 0 {
            self.freed.notify_all();
        }
    }

    /// No more waiting: the packer has stopped.
    fn open(&self) {
        self.used.lock().unwrap().1 = true;
        self.freed.notify_all();
    }
}

/// A finished pack on its way to storage.
struct Upload {
    id: Id,
    bytes: Vec<u8>,
    is_tree: bool,
}

/// Packs go up on their own threads: several at once on remote storage (bound by
/// bandwidth, not latency), one at a time on a local disk. An index file is written
/// only once every pack it lists is stored.
fn run_packer(cfg: SaverConfig, rx: Receiver<Sealed>, budget: &Budget) -> Result<SaverOutput> {
    let uploaders = if cfg.backend.is_remote() {
        cfg.backend.connections().clamp(1, 4)
    } else {
        1
    };
    std::thread::scope(|s| {
        // A finished pack is handed over only to an idle uploader (a rendezvous): at
        // most one pack is being filled per blob type while the others go up.
        let (up_tx, up_rx) = bounded::<Upload>(0);
        let (done_tx, done_rx) = crossbeam_channel::unbounded::<Result<Id>>();
        for _ in 0..uploaders {
            let (rx, tx, cfg) = (up_rx.clone(), done_tx.clone(), &cfg);
            s.spawn(move || {
                for u in rx {
                    let r = crate::backend::store(
                        &*cfg.backend,
                        FileType::Pack,
                        &u.id.to_hex(),
                        &u.bytes,
                    )
                    .map(|_| {
                        if let (Some(cache), true) = (&cfg.cache, u.is_tree) {
                            cache.put_pack(&u.id.to_hex(), &u.bytes);
                        }
                        u.id
                    });
                    if tx.send(r).is_err() {
                        return;
                    }
                }
            });
        }
        drop((up_rx, done_tx));
        let mut packer = Packer {
            cfg: &cfg,
            up: up_tx,
            done: done_rx,
            outstanding: 0,
            out: SaverOutput::default(),
            pending: IndexFile::default(),
        };
        let r = packer.run(rx, budget);
        // A failed packer lets every blocked sender through (their sends then fail).
        budget.open();
        r?;
        Ok(packer.out)
    })
}

struct Packer<'a> {
    cfg: &'a SaverConfig,
    up: Sender<Upload>,
    done: Receiver<Result<Id>>,
    /// Packs handed to the uploaders and not yet stored.
    outstanding: usize,
    out: SaverOutput,
    /// Packs not yet in an index file.
    pending: IndexFile,
}

impl Packer<'_> {
    fn run(&mut self, rx: Receiver<Sealed>, budget: &Budget) -> Result<()> {
        // Trees and data go to separate packs: a reader of metadata (ls, mount, check,
        // diff, a future cache) then fetches tree packs only.
        // Room for a full pack, one more blob and the header: no reallocation.
        let capacity = self.cfg.pack_size + (9 << 20);
        let new_writer = || PackWriter::with_capacity(capacity);
        let mut writers = [new_writer(), new_writer()];
        for blob in rx {
            let w = &mut writers[blob.ty.to_byte() as usize];
            w.add(blob.ty, blob.id, &blob.sealed, blob.uncompressed_length);
            budget.give(blob.sealed.len());
            if w.size() >= self.cfg.pack_size {
                self.write_pack(std::mem::replace(w, new_writer()))?;
                if self.pending.packs.len() >= PACKS_PER_INDEX {
                    self.write_index()?;
                }
            }
        }
        for w in writers {
            if !w.is_empty() {
                self.write_pack(w)?;
            }
        }
        if !self.pending.packs.is_empty() {
            self.write_index()?;
        }
        Ok(())
    }

    fn write_pack(&mut self, writer: PackWriter) -> Result<()> {
        let (id, bytes, blobs) = writer.finish(&self.cfg.key);
        self.out.packed_bytes += bytes.len() as u64;
        self.out.packs += 1;
        let is_tree = blobs.first().map(|b| b.ty) == Some(BlobType::Tree);
        self.pending.packs.push(IndexedPack {
            id,
            marked: None,
            blobs,
        });
        if self.cfg.dry_run {
            return Ok(());
        }
        // Errors of packs already stored are taken up as they come.
        for r in self.done.try_iter() {
            r?;
            self.outstanding -= 1;
        }
        self.outstanding += 1;
        self.up
            .send(Upload { id, bytes, is_tree })
            .map_err(|_| Error::Other("the pack uploaders stopped".into()))
    }

    /// Waits for every pack handed out to be stored; the first failure is the error.
    fn settle(&mut self) -> Result<()> {
        while self.outstanding > 0 {
            let r = self
                .done
                .recv()
                .map_err(|_| Error::Other("the pack uploaders stopped".into()))?;
            self.outstanding -= 1;
            r?;
        }
        Ok(())
    }

    fn write_index(&mut self) -> Result<()> {
        self.settle()?;
        write_index(self.cfg, std::mem::take(&mut self.pending), &mut self.out)
    }
}

fn write_index(cfg: &SaverConfig, file: IndexFile, out: &mut SaverOutput) -> Result<()> {
    if !cfg.dry_run {
        // An index file makes packs visible to every other client: only while our
        // locks are alive.
        let bytes = file.encode(&cfg.key);
        let name = Id::of_file(&bytes).to_hex();
        crate::repo::lock::store_while_held(
            &*cfg.backend,
            &cfg.locks,
            FileType::Index,
            &name,
            &bytes,
        )?;
        out.index_names.push(name);
    }
    out.index_files.push(file);
    Ok(())
}
