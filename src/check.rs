//! `check`: prove the repository sound, or say exactly what is wrong and what it affects.
//!
//! Structure: every key file, index file and snapshot decodes; every indexed pack exists
//! and is large enough for its blobs; every snapshot's trees load; every blob a tree
//! references is indexed. `--read-data` (or a subset) also downloads packs, in parallel,
//! and verifies each pack's hash, its header against the index, and every blob's
//! authentication and id.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::sync::Mutex;

use rayon::prelude::*;
use serde::Serialize;

use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::index::IndexFile;
use crate::repo::key::KeyFile;
use crate::repo::pack::{
    header_location, open_blob, parse_header, read_forward, PackEntry, ENTRY_LEN,
};
use crate::repo::tree::NodeKind;
use crate::repo::Repository;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReadData {
    None,
    All,
    /// Group `n` of `m` (1-based): packs whose first id byte mod m is n − 1.
    Subset(u32, u32),
    /// About this percentage of the packs, chosen at random.
    Percent(f64),
}

impl std::str::FromStr for ReadData {
    type Err = Error;
    /// `N/M` or `P%`.
    fn from_str(s: &str) -> Result<ReadData> {
        let bad = || Error::Usage(format!("--read-data-subset takes N/M or P%, not {s:?}"));
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(0.0..=100.0).contains(&p) || p.is_nan() {
                return Err(bad());
            }
            return Ok(ReadData::Percent(p));
        }
        let (n, m) = s.split_once('/').ok_or_else(bad)?;
        let (n, m): (u32, u32) = (
            n.trim().parse().map_err(|_| bad())?,
            m.trim().parse().map_err(|_| bad())?,
        );
        if m == 0 || n == 0 || n > m || m > 256 {
            return Err(bad());
        }
        Ok(ReadData::Subset(n, m))
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Problem {
    /// The repository file concerned.
    pub file: String,
    pub message: String,
    /// Snapshots and paths that need it: `<short id>:<path>`.
    pub affects: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckReport {
    pub snapshots: u64,
    pub trees: u64,
    pub packs: u64,
    pub blobs: u64,
    pub packs_read: u64,
    pub bytes_read: u64,
    /// Packs on storage that no index lists (left by an interrupted backup): not an
    /// error; `prune` removes them, `repair index` takes them in.
    pub unindexed_packs: u64,
    /// Packs the index marked for deletion that a concurrent prune deleted meanwhile:
    /// not an error (their blobs count as unavailable).
    pub deleted_packs: u64,
    pub problems: Vec<Problem>,
}

/// Runs the check. The repository's index is (re)loaded here, file by file, so one
/// damaged index file is a reported problem rather than the end of the check.
pub fn check(repo: &mut Repository, read_data: ReadData) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    let mut problem = |file: String, message: String| {
        report_problem(&mut report.problems, file, message, Vec::new());
    };

    // Keys: the listing and the key file read (and verified) when the repository was
    // opened a moment ago are not asked for again.
    let (keys, opened) = match repo.opened_keys() {
        Some(k) => (
            k.listed.clone(),
            Some((repo.key_id.clone(), k.bytes.clone())),
        ),
        None => (repo.backend().list(FileType::Key)?, None),
    };
    for (name, _) in keys {
        let r = match &opened {
            Some((id, bytes)) if *id == name => Ok(bytes.clone()),
            _ => repo.read_file(FileType::Key, &name),
        }
        .and_then(|b| KeyFile::decode(&b, &name));
        if let Err(e) = r {
            problem(FileType::Key.path(&name), e.to_string());
        }
    }

    // The snapshots to check are listed before the index is read: a backup writes its
    // index files before its snapshot, so every snapshot listed here has its data in
    // the index read next. (Listed after, a snapshot a backup just wrote could name
    // blobs this check's index has not seen: a false alarm beside running backups.)
    let snapshot_names = repo.backend().list(FileType::Snapshot)?;

    // Index files.
    let (files, index_problems) = load_index_files(repo)?;
    for (file, message) in index_problems {
        problem(file, message);
    }
    // Each pack's blobs, borrowed from the index files (never a second copy).
    let mut indexed: HashMap<Id, (&[PackEntry], bool)> = HashMap::new();
    for p in files.iter().flat_map(|f| f.packs.iter()) {
        let e = indexed.entry(p.id).or_insert((&p.blobs, false));
        e.1 |= p.marked.is_some();
    }

    // Packs: present, and large enough for what the index says is in them.
    let stored: HashMap<String, u64> = repo.backend().list(FileType::Pack)?.into_iter().collect();
    report.packs = indexed.len() as u64;
    let mut missing = Vec::new();
    let mut gone = HashSet::new();
    for (pack, (blobs, marked)) in &indexed {
        let name = pack.to_hex();
        let size = match stored.get(&name) {
            Some(size) => Some(*size),
            // Marked and not listed: deleted by the prune that marked it, as marked
            // packs are (no snapshot relies on their blobs). Not asked about one by one:
            // after a large prune that would be a request per deleted pack.
            None if *marked => {
                gone.insert(*pack);
                continue;
            }
            // A listing can miss files: ask before calling a pack missing.
            None => repo.backend().size(FileType::Pack, &name).ok(),
        };
        match size {
            None => missing.push(*pack),
            Some(size) => {
                let end = blobs
                    .iter()
                    .map(|b| b.offset as u64 + b.length as u64)
                    .max()
                    .unwrap_or(0);
                if end + 4 > size {
                    problem(
                        FileType::Pack.path(&name),
                        format!("pack has {size} bytes, the index says its blobs reach byte {end}"),
                    );
                }
            }
        }
    }
    // A concurrent prune deletes packs it marked, after rewriting the index: such a
    // pack is gone, not lost. Only a pack the current index still lists as live is.
    let unavailable: HashSet<Id> = missing.iter().chain(&gone).copied().collect();
    if !missing.is_empty() {
        let live = live_packs(repo)?;
        for pack in missing {
            let name = pack.to_hex();
            if live.contains(&pack) && repo.backend().size(FileType::Pack, &name).is_err() {
                problem(
                    FileType::Pack.path(&name),
                    "pack is in the index but missing from storage".into(),
                );
            } else {
                gone.insert(pack);
            }
        }
    }
    report.deleted_packs = gone.len() as u64;
    // Blobs only in missing packs are not available: a snapshot needing one is damaged.
    let available = files
        .iter()
        .flat_map(|f| &f.packs)
        .filter(|p| !unavailable.contains(&p.id));
    repo.set_index(crate::repo::index::Index::from_packs(available));
    report.blobs = repo.index().len() as u64;
    report.unindexed_packs = stored
        .keys()
        .filter(|n| Id::from_hex(n).map_or(true, |id| !indexed.contains_key(&id)))
        .count() as u64;

    // Snapshots and trees.
    let mut snaps = Vec::new();
    for (name, _) in snapshot_names {
        match repo.load_snapshot(&name) {
            Ok(s) => snaps.push((name, s)),
            // Forgotten between the listing and the read.
            Err(e) if e.is_not_found() => {}
            Err(e) => problem(FileType::Snapshot.path(&name), e.to_string()),
        }
    }
    let mut seen_trees = HashSet::new();
    let mut walked = Vec::new();
    for (name, snap) in snaps {
        let short = &name[..8];
        let mut found: Vec<Problem> = Vec::new();
        let mut trees = 0;
        let mut stack = vec![(snap.tree, "/".to_string())];
        while let Some((tree_id, path)) = stack.pop() {
            if !seen_trees.insert(tree_id) {
                continue;
            }
            trees += 1;
            let tree = match repo.load_tree(&tree_id) {
                Ok(t) => t,
                Err(e) => {
                    report_problem(
                        &mut found,
                        format!("tree {tree_id}"),
                        e.to_string(),
                        vec![format!("{short}:{path}")],
                    );
                    continue;
                }
            };
            for node in &tree.nodes {
                // Built only where it is kept or shown: a tree walk meets every file.
                let child = || {
                    if path == "/" {
                        format!("/{}", node.name_lossy())
                    } else {
                        format!("{path}/{}", node.name_lossy())
                    }
                };
                match node.kind {
                    NodeKind::Dir => match node.subtree {
                        Some(id) => stack.push((id, child())),
                        None => report_problem(
                            &mut found,
                            format!("tree {tree_id}"),
                            "directory without a subtree".into(),
                            vec![format!("{short}:{}", child())],
                        ),
                    },
                    NodeKind::File => {
                        for id in &node.content {
                            if repo.index().get(id).is_none() {
                                report_problem(
                                    &mut found,
                                    format!("blob {id}"),
                                    "blob is not in the index".into(),
                                    vec![format!("{short}:{}", child())],
                                );
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        // A snapshot forgotten while it was walked may have lost its data to a
        // concurrent prune: that is not damage. (Trees it shares with a snapshot that
        // is still there were counted as seen; a later run checks them again.)
        if !found.is_empty() && snapshot_gone(repo, &name) {
            continue;
        }
        report.trees += trees;
        for p in found {
            report_problem(&mut report.problems, p.file, p.message, p.affects);
        }
        walked.push((name, snap));
    }
    let snaps = walked;
    report.snapshots = snaps.len() as u64;

    // Data.
    let chosen: Vec<(&Id, &[PackEntry])> = indexed
        .iter()
        .filter(|(id, _)| !gone.contains(id))
        .map(|(id, (blobs, _))| (id, *blobs))
        .filter(|(id, _)| match read_data {
            ReadData::None => false,
            ReadData::All => true,
            ReadData::Subset(n, m) => (id.0[0] as u32) % m == n - 1,
            ReadData::Percent(p) => {
                (crate::crypto::random_bytes::<4>()[0] as f64) < p / 100.0 * 256.0
            }
        })
        .collect();
    let bad_blobs = Mutex::new(HashMap::<Id, String>::new());
    let data_problems = Mutex::new(Vec::new());
    let bytes_read = std::sync::atomic::AtomicU64::new(0);
    let vanished = Mutex::new(Vec::new());
    // One pack per thread; on remote storage more threads than cores, so several
    // reads are in flight and the check is bound by bandwidth, not latency.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let threads = if repo.backend().is_remote() {
        cores.max(repo.backend().connections())
    } else {
        cores
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| Error::Other(format!("starting reader threads: {e}")))?;
    // Tree packs the walk holds go first: each is let go once verified, so they are not
    // held beside the streams of all the others.
    let (held, streamed): (Vec<_>, Vec<_>) = chosen
        .iter()
        .partition(|(pack, _)| repo.holds_tree_pack(pack));
    pool.install(|| {
        for part in [held, streamed] {
            part.par_iter().for_each(|(pack, blobs)| {
                let found = read_pack(repo, pack, blobs, &bad_blobs);
                if found.2 {
                    vanished.lock().unwrap().push(**pack);
                }
                bytes_read.fetch_add(found.0, std::sync::atomic::Ordering::Relaxed);
                data_problems.lock().unwrap().extend(found.1);
            })
        }
    });
    report.packs_read = chosen.len() as u64;
    report.bytes_read = bytes_read.into_inner();
    let mut bad_blobs = bad_blobs.into_inner().unwrap();
    let mut data_problems = data_problems.into_inner().unwrap();
    // Packs deleted by a concurrent prune while they were read (marked ones only).
    let vanished = vanished.into_inner().unwrap();
    if !vanished.is_empty() {
        let live = live_packs(repo)?;
        for pack in vanished.iter().filter(|p| !live.contains(p)) {
            let file = FileType::Pack.path(&pack.to_hex());
            data_problems.retain(|(f, _, _)| *f != file);
            for b in indexed[pack].0 {
                bad_blobs.remove(&b.id);
            }
            report.packs_read -= 1;
            report.deleted_packs += 1;
        }
    }
    if !bad_blobs.is_empty() || !data_problems.is_empty() {
        let affected = affected_paths(repo, &snaps, &bad_blobs.keys().copied().collect());
        for (file, message, blobs) in data_problems {
            let mut affects: Vec<String> = blobs
                .iter()
                .flat_map(|b| affected.get(b).cloned().unwrap_or_default())
                .collect();
            affects.sort();
            affects.dedup();
            report_problem(&mut report.problems, file, message, affects);
        }
    }
    Ok(report)
}

/// (file, message) pairs.
type FileProblems = Vec<(String, String)>;

/// Loads every index file. A file that vanishes between the listing and the read was
/// replaced by a concurrent prune, which writes the new files before it deletes the
/// old: list again and reload (a few times). Returns the files and the damaged ones.
fn load_index_files(repo: &Repository) -> Result<(Vec<IndexFile>, FileProblems)> {
    const TRIES: usize = 5;
    for attempt in 1..=TRIES {
        let mut files = Vec::new();
        let mut problems = Vec::new();
        let mut vanished = None;
        for (name, _) in repo.backend().list(FileType::Index)? {
            match repo.load_index_file(&name) {
                Ok(f) => files.push(f),
                Err(e) if e.is_not_found() => {
                    vanished = Some(name);
                    break;
                }
                Err(e) => problems.push((FileType::Index.path(&name), e.to_string())),
            }
        }
        match vanished {
            None => return Ok((files, problems)),
            Some(name) if attempt == TRIES => {
                problems.push((
                    FileType::Index.path(&name),
                    format!("index files kept disappearing while read ({TRIES} tries)"),
                ));
                return Ok((files, problems));
            }
            Some(_) => {}
        }
    }
    unreachable!("the last attempt returns")
}

/// Packs that the repository's current index lists as live (unmarked in some index
/// file): prune deletes only packs it marked, so a missing live pack is lost data.
fn live_packs(repo: &Repository) -> Result<HashSet<Id>> {
    let (files, _) = load_index_files(repo)?;
    Ok(files
        .iter()
        .flat_map(|f| &f.packs)
        .filter(|p| p.marked.is_none())
        .map(|p| p.id)
        .collect())
}

/// True when a snapshot file is no longer there (forgotten while `check` ran).
fn snapshot_gone(repo: &Repository, name: &str) -> bool {
    matches!(repo.backend().size(FileType::Snapshot, name), Err(e) if e.is_not_found())
}

fn report_problem(
    problems: &mut Vec<Problem>,
    file: String,
    message: String,
    affects: Vec<String>,
) {
    // One problem per file and message; affected paths accumulate.
    if let Some(p) = problems
        .iter_mut()
        .find(|p| p.file == file && p.message == message)
    {
        p.affects.extend(affects);
        return;
    }
    problems.push(Problem {
        file,
        message,
        affects,
    });
}

/// Reads one pack and verifies it; returns bytes read and problems (file, message,
/// blobs concerned).
type PackProblems = Vec<(String, String, Vec<Id>)>;

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
    let open = |e: &PackEntry, sealed: &[u8]| {
        open_blob(&repo.key.sealing, &repo.key.id_key, e, sealed, file).is_ok()
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
        if !whole || !open(e, &blob) {
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
                .is_ok_and(|sealed| open(e, &sealed));
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

/// For each bad blob: the `<snapshot>:<path>` entries that need it.
fn affected_paths(
    repo: &Repository,
    snaps: &[(String, crate::repo::snapshot::Snapshot)],
    bad: &HashSet<Id>,
) -> HashMap<Id, Vec<String>> {
    let mut out: HashMap<Id, Vec<String>> = HashMap::new();
    for (name, snap) in snaps {
        let short = &name[..8];
        let mut stack = vec![(snap.tree, b"".to_vec())];
        let mut seen = HashSet::new();
        while let Some((id, path)) = stack.pop() {
            if bad.contains(&id) {
                out.entry(id)
                    .or_default()
                    .push(format!("{short}:{}/", String::from_utf8_lossy(&path)));
            }
            if !seen.insert(id) {
                continue;
            }
            let Ok(tree) = repo.load_tree(&id) else {
                continue;
            };
            for node in tree.nodes {
                let mut p = path.clone();
                p.push(b'/');
                p.extend_from_slice(std::ffi::OsStr::from_bytes(&node.name).as_bytes());
                if let Some(sub) = node.subtree {
                    stack.push((sub, p.clone()));
                }
                for c in &node.content {
                    if bad.contains(c) {
                        out.entry(*c)
                            .or_default()
                            .push(format!("{short}:{}", String::from_utf8_lossy(&p)));
                    }
                }
            }
        }
    }
    out
}
