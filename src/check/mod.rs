//! `check`: prove the repository sound, or say exactly what is wrong and what it affects.
//!
//! Structure: every key file, index file and snapshot decodes; every indexed pack exists
//! and is large enough for its blobs; every snapshot's trees load; every blob a tree
//! references is indexed. `--read-data` (or a subset) also downloads packs, in parallel,
//! and verifies each pack's hash, its header against the index, and every blob's
//! authentication and id.

use std::collections::{HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;

use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::index::IndexFile;
use crate::repo::key::KeyFile;
use crate::repo::pack::{BlobType, PackEntry};
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{NodeKind, Tree};
use crate::repo::walk::walk_trees;
use crate::repo::Repository;

mod data;
use data::{DataFindings, PackReader};

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

    // The packs to read. Data packs are read while the trees are walked (the walk
    // mostly waits on tree packs, or keeps one core decoding trees); tree packs after
    // it, so the ones it holds are verified from memory, on this thread at once, and
    // let go before the data packs are done.
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
    report.packs_read = chosen.len() as u64;
    let (tree_packs, data_packs): (Vec<_>, Vec<_>) = chosen
        .into_iter()
        .partition(|(_, blobs)| blobs.iter().any(|b| b.ty == BlobType::Tree));
    let repo = &*repo;
    let reader = match report.packs_read {
        0 => None,
        _ => Some(PackReader::new(repo)?),
    };
    let (snaps, unheld) = std::thread::scope(|s| {
        let data = match &reader {
            Some(r) if !data_packs.is_empty() => Some(s.spawn(|| r.read(&data_packs))),
            _ => None,
        };
        let snaps = walk_snapshots(repo, snapshot_names, &mut report);
        let (held, unheld): (Vec<_>, Vec<_>) = tree_packs
            .into_iter()
            .partition(|(pack, _)| repo.holds_tree_pack(pack));
        if let Some(r) = &reader {
            for (pack, blobs) in held {
                r.read_one(pack, blobs);
            }
        }
        if let Some(Err(panic)) = data.map(|d| d.join()) {
            std::panic::resume_unwind(panic);
        }
        (snaps, unheld)
    });
    let Some(reader) = reader else {
        return Ok(report);
    };
    reader.read(&unheld);
    let DataFindings {
        bytes_read,
        mut bad_blobs,
        problems: mut data_problems,
        vanished,
    } = reader.finish();
    report.bytes_read = bytes_read;
    // Packs deleted by a concurrent prune while they were read (marked ones only).
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

/// Walks every listed snapshot's trees: each tree loads, each directory has a subtree,
/// each file's blobs are indexed. Returns the snapshots walked (a snapshot forgotten
/// meanwhile is left out).
fn walk_snapshots(
    repo: &Repository,
    snapshot_names: Vec<(String, u64)>,
    report: &mut CheckReport,
) -> Vec<(String, Snapshot)> {
    let mut snaps = Vec::new();
    for (name, _) in snapshot_names {
        match repo.load_snapshot(&name) {
            Ok(s) => snaps.push((name, s)),
            // Forgotten between the listing and the read.
            Err(e) if e.is_not_found() => {}
            Err(e) => report_problem(
                &mut report.problems,
                FileType::Snapshot.path(&name),
                e.to_string(),
                Vec::new(),
            ),
        }
    }
    // Trees are loaded and decoded on all cores (repo::walk); what each finds is
    // sorted afterwards, so the report's order does not depend on the threads. (A tree
    // reached by two paths is named under the one that reached it first.)
    let seen_trees = Mutex::new(HashSet::new());
    let claim = |id: &Id| seen_trees.lock().unwrap().insert(*id);
    let mut walked = Vec::new();
    for (name, snap) in snaps {
        let short = &name[..8];
        let found: Mutex<Vec<(String, String, String)>> = Mutex::default();
        let trees = AtomicU64::new(0);
        let visit = |tree_id: &Id, path: String, tree: Result<Tree>| {
            trees.fetch_add(1, Ordering::Relaxed);
            let tree = match tree {
                Ok(t) => t,
                Err(e) => {
                    found.lock().unwrap().push((
                        format!("tree {tree_id}"),
                        e.to_string(),
                        format!("{short}:{path}"),
                    ));
                    return Vec::new();
                }
            };
            let mut subtrees = Vec::new();
            let mut problems = Vec::new();
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
                        Some(id) => subtrees.push((id, child())),
                        None => problems.push((
                            format!("tree {tree_id}"),
                            "directory without a subtree".to_string(),
                            format!("{short}:{}", child()),
                        )),
                    },
                    NodeKind::File => {
                        for id in &node.content {
                            if repo.index().get(id).is_none() {
                                problems.push((
                                    format!("blob {id}"),
                                    "blob is not in the index".to_string(),
                                    format!("{short}:{}", child()),
                                ));
                            }
                        }
                    }
                    _ => {}
                }
            }
            if !problems.is_empty() {
                found.lock().unwrap().append(&mut problems);
            }
            subtrees
        };
        walk_trees(repo, vec![(snap.tree, "/".to_string())], &claim, &visit);
        let mut found = found.into_inner().unwrap();
        found.sort();
        // A snapshot forgotten while it was walked may have lost its data to a
        // concurrent prune: that is not damage. (Trees it shares with a snapshot that
        // is still there were counted as seen; a later run checks them again.)
        if !found.is_empty() && snapshot_gone(repo, &name) {
            continue;
        }
        report.trees += trees.into_inner();
        for (file, message, affects) in found {
            report_problem(&mut report.problems, file, message, vec![affects]);
        }
        walked.push((name, snap));
    }
    report.snapshots = walked.len() as u64;
    walked
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

/// For each bad blob: the `<snapshot>:<path>` entries that need it.
fn affected_paths(
    repo: &Repository,
    snaps: &[(String, Snapshot)],
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
