//! `stats`: how big snapshots are restored, how much unique data they hold, what it takes
//! in the repository, and the deduplication and compression that gives. Every tree is
//! read once however many snapshots share it: its totals are remembered by id.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::tree::{check_depth, NodeKind};
use crate::repo::Repository;

/// restic's `--mode`: which count and size `total_file_count` and `total_size` give.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Every file as a restore writes it.
    #[default]
    RestoreSize,
    /// Each distinct file content once.
    FilesByContents,
    /// Each data blob once (plaintext).
    RawData,
    /// Each distinct file once, as the sum of its distinct blobs.
    BlobsPerFile,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::RestoreSize => "restore-size",
            Mode::FilesByContents => "files-by-contents",
            Mode::RawData => "raw-data",
            Mode::BlobsPerFile => "blobs-per-file",
        }
    }
}

impl FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Mode> {
        [
            Mode::RestoreSize,
            Mode::FilesByContents,
            Mode::RawData,
            Mode::BlobsPerFile,
        ]
        .into_iter()
        .find(|m| m.as_str() == s)
        .ok_or_else(|| {
            Error::Usage(format!(
                "--mode {s:?}: expected restore-size, files-by-contents, raw-data or blobs-per-file"
            ))
        })
    }
}

/// What `stats` reports. `total_file_count` and `total_size` follow `mode` (restic's
/// fields); the rest is always there.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    pub mode: &'static str,
    pub snapshots_count: u64,
    pub total_file_count: u64,
    pub total_size: u64,
    /// Files and bytes a restore of every snapshot counted would write.
    pub restore_files: u64,
    pub restore_size: u64,
    /// Distinct file contents, and their size.
    pub unique_files: u64,
    pub unique_files_size: u64,
    /// Distinct data blobs referenced: count, plaintext bytes, bytes stored (compressed
    /// and sealed).
    pub total_blob_count: u64,
    pub total_uncompressed_size: u64,
    pub stored_size: u64,
    /// Distinct trees (directories) and the packs holding the referenced data.
    pub tree_blobs: u64,
    pub packs: u64,
    /// restore size / unique plaintext: how much deduplication saves.
    pub dedup_ratio: f64,
    /// plaintext / stored: how much compression saves.
    pub compression_ratio: f64,
    /// Data blobs referenced but missing from the index (a damaged repository).
    pub missing_blobs: u64,
}

/// Totals of one tree and everything below it.
#[derive(Clone, Copy, Default)]
struct TreeTotals {
    files: u64,
    size: u64,
}

struct Walk<'a> {
    repo: &'a Repository,
    trees: HashMap<Id, TreeTotals>,
    blobs: HashSet<Id>,
    /// Distinct file contents (a keyed hash of the blob list) with their file size.
    contents: HashMap<Id, u64>,
    /// Sum over distinct contents of their distinct blobs' plaintext.
    blobs_per_file: u64,
}

/// Statistics over the snapshots whose root trees are `roots`.
pub fn stats(repo: &Repository, roots: &[Id], mode: Mode) -> Result<Stats> {
    let mut w = Walk {
        repo,
        trees: HashMap::new(),
        blobs: HashSet::new(),
        contents: HashMap::new(),
        blobs_per_file: 0,
    };
    let mut s = Stats {
        mode: mode.as_str(),
        snapshots_count: roots.len() as u64,
        ..Stats::default()
    };
    for root in roots {
        let t = w.tree(*root, 0)?;
        s.restore_files += t.files;
        s.restore_size += t.size;
    }
    let mut packs = HashSet::new();
    for id in &w.blobs {
        match repo.index().get(id) {
            Some(loc) => {
                s.total_blob_count += 1;
                s.total_uncompressed_size += loc.entry.plaintext_len();
                s.stored_size += loc.entry.length as u64;
                packs.insert(loc.pack);
            }
            None => s.missing_blobs += 1,
        }
    }
    s.packs = packs.len() as u64;
    s.tree_blobs = w.trees.len() as u64;
    s.unique_files = w.contents.len() as u64;
    s.unique_files_size = w.contents.values().sum();
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    s.dedup_ratio = ratio(s.restore_size, s.total_uncompressed_size);
    s.compression_ratio = ratio(s.total_uncompressed_size, s.stored_size);
    (s.total_file_count, s.total_size) = match mode {
        Mode::RestoreSize => (s.restore_files, s.restore_size),
        Mode::FilesByContents => (s.unique_files, s.unique_files_size),
        Mode::RawData => (s.total_blob_count, s.total_uncompressed_size),
        Mode::BlobsPerFile => (s.unique_files, w.blobs_per_file),
    };
    Ok(s)
}

impl Walk<'_> {
    fn tree(&mut self, id: Id, depth: usize) -> Result<TreeTotals> {
        if let Some(t) = self.trees.get(&id) {
            return Ok(*t);
        }
        check_depth(format_args!("tree {}", id.short()), depth)?;
        let mut t = TreeTotals::default();
        for node in self.repo.load_tree(&id)?.nodes {
            match node.kind {
                NodeKind::Dir => {
                    if let Some(sub) = node.subtree {
                        let s = self.tree(sub, depth + 1)?;
                        t.files += s.files;
                        t.size += s.size;
                    }
                }
                NodeKind::File => {
                    t.files += 1;
                    t.size += node.size;
                    let content = node.content_key(&self.repo.key.id_key);
                    if let std::collections::hash_map::Entry::Vacant(e) =
                        self.contents.entry(content)
                    {
                        e.insert(node.size);
                        let distinct: HashSet<&Id> = node.content.iter().collect();
                        self.blobs_per_file += distinct
                            .iter()
                            .filter_map(|b| self.repo.index().get(b))
                            .map(|l| l.entry.plaintext_len())
                            .sum::<u64>();
                    }
                    self.blobs.extend(node.content.iter().copied());
                }
                _ => {}
            }
        }
        self.trees.insert(id, t);
        Ok(t)
    }
}
