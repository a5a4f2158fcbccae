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
        let (sealed_tx, sealed_rx) = bounded::<Sealed>(threads);
        let workers = (0..threads)
            .map(|_| {
                let rx = job_rx.clone();
                let tx = sealed_tx.clone();
                let key = cfg.key.clone();
                let level = cfg.compression;
                std::thread::spawn(move || {
                    for job in rx {
                        let (sealed, uncompressed_length) = seal_blob(&key, level, &job.data);
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
        drop(sealed_tx);
        let packer = std::thread::spawn(move || run_packer(cfg, sealed_rx));
        BlobSaver {
            jobs: Some(job_tx),
            workers,
            packer: Some(packer),
        }
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
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        if let Some(p) = self.packer.take() {
            let _ = p.join();
        }
    }
}

fn run_packer(cfg: SaverConfig, rx: Receiver<Sealed>) -> Result<SaverOutput> {
    let mut out = SaverOutput::default();
    let mut pending = IndexFile::default();
    // Trees and data go to separate packs: a reader of metadata (ls, mount, check,
    // diff, a future cache) then fetches tree packs only.
    // Room for a full pack, one more blob and the header: no reallocation.
    let capacity = cfg.pack_size + (9 << 20);
    let new_writer = || PackWriter::with_capacity(capacity);
    let mut writers = [new_writer(), new_writer()];
    for blob in rx {
        let w = &mut writers[blob.ty.to_byte() as usize];
        w.add(blob.ty, blob.id, &blob.sealed, blob.uncompressed_length);
        if w.size() >= cfg.pack_size {
            write_pack(
                &cfg,
                std::mem::replace(w, new_writer()),
                &mut pending,
                &mut out,
            )?;
            if pending.packs.len() >= PACKS_PER_INDEX {
                write_index(&cfg, std::mem::take(&mut pending), &mut out)?;
            }
        }
    }
    for w in writers {
        if !w.is_empty() {
            write_pack(&cfg, w, &mut pending, &mut out)?;
        }
    }
    if !pending.packs.is_empty() {
        write_index(&cfg, pending, &mut out)?;
    }
    Ok(out)
}

fn write_pack(
    cfg: &SaverConfig,
    writer: PackWriter,
    pending: &mut IndexFile,
    out: &mut SaverOutput,
) -> Result<()> {
    let (id, bytes, blobs) = writer.finish(&cfg.key);
    if !cfg.dry_run {
        crate::backend::store(&*cfg.backend, FileType::Pack, &id.to_hex(), &bytes)?;
        if let (Some(cache), Some(BlobType::Tree)) = (&cfg.cache, blobs.first().map(|b| b.ty)) {
            cache.put_pack(&id.to_hex(), &bytes);
        }
    }
    out.packed_bytes += bytes.len() as u64;
    out.packs += 1;
    pending.packs.push(IndexedPack {
        id,
        marked: None,
        blobs,
    });
    Ok(())
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
