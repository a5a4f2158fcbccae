//! `check --read-data`: each chosen pack is read once, front to back, by a pool of
//! threads (on remote storage one per connection, so several reads are in flight and
//! the check is bound by bandwidth, not latency). A pack is hashed whole, each
//! indexed blob is opened as it passes, and its header is compared with the index.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rayon::prelude::*;

use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::pack::{
    header_location, parse_header, read_forward, verify_blob, PackEntry, ENTRY_LEN,
};
use crate::repo::Repository;

/// What the data pass found.
#[derive(Default)]
pub(super) struct DataFindings {
    pub bytes_read: u64,
    /// Blobs that failed, and why.
    pub bad_blobs: HashMap<Id, String>,
    /// Problems by pack file: (file, message, blobs concerned).
    pub problems: PackProblems,
    /// Packs that were gone when read (a concurrent prune may have deleted them).
    pub vanished: Vec<Id>,
}

/// Reads packs on its own threads; what it finds is gathered until `finish`. Shared
/// by reference: one thread can read data packs while another walks the trees.
pub(super) struct PackReader<'a> {
    repo: &'a Repository,
    pool: rayon::ThreadPool,
    bytes_read: AtomicU64,
    bad_blobs: Mutex<HashMap<Id, String>>,
    problems: Mutex<PackProblems>,
    vanished: Mutex<Vec<Id>>,
}

impl<'a> PackReader<'a> {
    pub fn new(repo: &'a Repository) -> Result<Self> {
        // On remote storage a thread per connection but one: a pack stream holds its
        // connection until it is done, and the tree walk beside the data pass needs
        // one for itself (with a single connection it waits for a pack at a time).
        let backend = repo.backend();
        let threads = if backend.is_remote() {
            backend.connections().saturating_sub(1).max(1)
        } else {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| Error::Other(format!("starting reader threads: {e}")))?;
        Ok(PackReader {
            repo,
            pool,
            bytes_read: AtomicU64::new(0),
            bad_blobs: Mutex::default(),
            problems: Mutex::default(),
            vanished: Mutex::default(),
        })
    }

    /// Reads and verifies these packs, several at a time on the reader's threads;
    /// returns when all are done.
    pub fn read(&self, packs: &[(&Id, &[PackEntry])]) {
        self.pool
            .install(|| packs.par_iter().for_each(|(p, b)| self.read_one(p, b)));
    }

    /// Reads and verifies one pack on the calling thread.
    pub fn read_one(&self, pack: &Id, blobs: &[PackEntry]) {
        let (n, problems, gone) = read_pack(self.repo, pack, blobs, &self.bad_blobs);
        if gone {
            self.vanished.lock().unwrap().push(*pack);
        }
        self.bytes_read.fetch_add(n, Ordering::Relaxed);
        self.problems.lock().unwrap().extend(problems);
    }

    pub fn finish(self) -> DataFindings {
        DataFindings {
            bytes_read: self.bytes_read.into_inner(),
            bad_blobs: self.bad_blobs.into_inner().unwrap(),
            problems: self.problems.into_inner().unwrap(),
            vanished: self.vanished.into_inner().unwrap(),
        }
    }
}

/// (file, message, blobs concerned).
pub(super) type PackProblems = Vec<(String, String, Vec<Id>)>;

/// Reads one pack and verifies it; returns bytes read, problems, and whether it was
/// gone.
fn read_pack(
    repo: &Repository,
    pack: &Id,
    indexed: &[PackEntry],
    bad: &Mutex<HashMap<Id, String>>,
) -> (u64, PackProblems, bool) {
    let name = pack.to_hex();
    let file = FileType::Pack.path(&name);
    let all: Vec<Id> = indexed.iter().map(|e| e.id).collect();
    let mark_all = |why: &str| {
        let mut b = bad.lock().unwrap();
        for id in &all {
            b.insert(*id, why.to_string());
        }
    };
    let unreadable = |e: Error, n: u64| {
        mark_all("pack unreadable");
        // Gone (not damaged): a prune beside this check may have deleted it.
        let gone = e.is_not_found();
        (n, vec![(file.clone(), e.to_string(), all.clone())], gone)
    };
    // A tree pack read whole for the tree walk moments ago is verified from that read;
    // any other is streamed, a blob at a time, never held whole.
    let reader = match repo.take_tree_pack(pack) {
        Some(b) => Ok(Box::new(std::io::Cursor::new(Held(b))) as Box<dyn Read + Send>),
        None => repo.backend().read_stream(FileType::Pack, &name),
    };
    let streamed = match reader.and_then(|r| stream_pack(r, repo, indexed, &name)) {
        Ok(s) => s,
        Err(e) => return unreadable(e, 0),
    };
    let n = streamed.len;
    let mut problems = Vec::new();
    if streamed.hash != *pack {
        problems.push((
            file.clone(),
            "pack content does not match its name".to_string(),
            Vec::new(),
        ));
    }
    let header = match streamed.header {
        Ok(h) => h,
        // Deleted between the stream and a second look at its header.
        Err(e) if e.is_not_found() => return unreadable(e, n),
        Err(e) => {
            mark_all("pack header damaged");
            problems.push((file, e.to_string(), all));
            return (n, problems, false);
        }
    };
    let header_ids: HashMap<Id, &PackEntry> = header.iter().map(|e| (e.id, e)).collect();
    let mut damaged: Vec<Id> = indexed
        .iter()
        .filter(|e| header_ids.get(&e.id) != Some(e) || streamed.damaged.contains(&e.id))
        .map(|e| e.id)
        .collect();
    damaged.sort_unstable();
    damaged.dedup();
    if !damaged.is_empty() {
        let mut b = bad.lock().unwrap();
        for id in &damaged {
            b.insert(*id, "damaged".into());
        }
        problems.push((
            file,
            format!(
                "{} of {} blobs fail verification or disagree with the index",
                damaged.len(),
                indexed.len()
            ),
            damaged,
        ));
    }
    (n, problems, false)
}

/// A held tree pack as a reader's bytes, without a copy.
struct Held(std::sync::Arc<Vec<u8>>);

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// What one front-to-back read of a pack showed.
struct StreamedPack {
    /// Bytes read.
    len: u64,
    /// Hash of the whole file (its name, when sound).
    hash: Id,
    /// Indexed blobs that are missing from the file or fail to open.
    damaged: HashSet<Id>,
    /// The pack's own header, authenticated.
    header: Result<Vec<PackEntry>>,
}

/// Reads a pack once, front to back: hashes every byte, opens each indexed blob as it
/// passes (only one blob is held at a time), and keeps what follows the last blob,
/// where the header is. An error is a failed read, not damage.
fn stream_pack(
    mut r: Box<dyn Read + Send>,
    repo: &Repository,
    indexed: &[PackEntry],
    name: &str,
) -> Result<StreamedPack> {
    let file = &FileType::Pack.path(name);
    // An I/O error keeps its kind: a pack a concurrent prune deleted while a cut
    // download was being taken up again is gone, not damaged.
    let read_err = |e: std::io::Error| Error::io(format!("reading {file}"), e);
    let mut by_offset: Vec<&PackEntry> = indexed.iter().collect();
    by_offset.sort_by_key(|e| (e.offset, e.length));
    let mut hasher = blake3::Hasher::new();
    let mut pos = 0u64;
    let mut damaged = HashSet::new();
    let mut blob = Vec::new();
    // Entries starting inside bytes already passed (a duplicate, or a neighbour of a
    // wrong entry): each is read again on its own afterwards, as a whole read would.
    let mut again = Vec::new();
    let mut scratch = Vec::new();
    let mut open = |e: &PackEntry, sealed: &mut [u8]| {
        verify_blob(&repo.key.sealing, &repo.key.id_key, e, sealed, &mut scratch).is_ok()
    };
    for e in by_offset {
        if (e.offset as u64) < pos {
            again.push(e);
            continue;
        }
        let whole = read_forward(
            &mut r,
            &mut pos,
            e.offset as u64,
            e.length as u64,
            &mut hasher,
            &mut blob,
        )
        .map_err(read_err)?;
        hasher.update(&blob);
        if !whole || !open(e, &mut blob) {
            damaged.insert(e.id);
        }
    }
    drop(blob);
    // What follows the last blob: only its end is kept, where the header is.
    let keep = TAIL_KEPT.max(indexed.len() * ENTRY_LEN * 2);
    let mut tail = Vec::new();
    let mut piece = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut piece).map_err(read_err)?;
        if n == 0 {
            break;
        }
        hasher.update(&piece[..n]);
        tail.extend_from_slice(&piece[..n]);
        pos += n as u64;
        if tail.len() > 2 * keep {
            tail.drain(..tail.len() - keep);
        }
    }
    // A remote stream holds a connection: let it go before asking for anything else.
    drop(r);
    let len = pos;
    let tail_start = len - tail.len() as u64;
    let header = if tail.len() >= 4 {
        match header_location(len, &tail[tail.len() - 4..], file) {
            // Kept whole after the last indexed blob (always, when the index agrees).
            Ok((start, hl)) if start >= tail_start => {
                let at = (start - tail_start) as usize;
                parse_header(&tail[at..at + hl], start, &repo.key.sealing, file)
            }
            // Indexed blobs reach into it, or it is larger than kept: read it alone.
            Ok(_) => repo.read_pack_header(name),
            Err(e) => Err(e),
        }
    } else if len >= 4 {
        repo.read_pack_header(name)
    } else {
        Err(Error::integrity(file, "pack is too short"))
    };
    for e in again {
        let end = e.offset as u64 + e.length as u64;
        let sound = end <= len
            && repo
                .backend()
                .read_range(FileType::Pack, name, e.offset as u64, e.length as usize)
                .is_ok_and(|mut sealed| open(e, &mut sealed));
        if !sound {
            damaged.insert(e.id);
        }
    }
    Ok(StreamedPack {
        len,
        hash: Id(*hasher.finalize().as_bytes()),
        damaged,
        header,
    })
}

/// How much of a pack's end `check` keeps while streaming it, at least: room for the
/// header of a pack of small blobs.
const TAIL_KEPT: usize = 1 << 20;
