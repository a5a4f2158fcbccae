//! `prune`: remove data no snapshot needs, without ever blocking or breaking a backup.
//!
//! Two-phase delete (beyond restic): a pack whose blobs no snapshot uses is first only
//! *marked* in the index, with the time. A later prune deletes it once the grace period
//! has passed, unless a snapshot written meanwhile uses its blobs again (a backup that
//! was running during the first prune may have relied on them): then the mark is
//! dropped. Backups do not rely on blobs of marked packs (they store them again), so
//! after the grace period nothing new can depend on a marked pack. `--instant-delete`
//! skips the marking, under an exclusive lock.
//!
//! Order (DESIGN.md): new packs (repacked blobs), then the new index, then deletion of
//! the old index files, then deletion of packs. A crash anywhere leaves every snapshot
//! whole; the worst case is packs listed twice, which the index reader tolerates.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::index::{IndexFile, IndexedPack};
use crate::repo::pack::{open_blob, PackWriter};
use crate::repo::tree::NodeKind;
use crate::repo::Repository;

pub struct PruneOptions {
    /// Repack a pack when more than this share of its bytes is unused (percent).
    pub max_unused: f64,
    pub dry_run: bool,
    pub instant_delete: bool,
    /// How long a marked pack stays before a prune deletes it.
    pub grace: std::time::Duration,
    /// "Now", in Unix seconds (tests move it forward).
    pub now: i64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PruneReport {
    pub snapshots: u64,
    pub blobs_used: u64,
    pub packs: u64,
    pub packs_marked: u64,
    pub packs_resurrected: u64,
    pub packs_repacked: u64,
    pub packs_deleted: u64,
    /// Packs no index listed (an interrupted backup's): taken into the index, marked.
    pub packs_adopted: u64,
    pub packs_still_waiting: u64,
    pub bytes_deleted: u64,
    pub bytes_marked: u64,
    pub bytes_repacked: u64,
    pub dry_run: bool,
}

/// Every blob reachable from every snapshot. A tree that cannot be read stops prune:
/// deleting anything from a damaged repository could lose what `check` would save.
pub fn used_blobs(repo: &Repository, snapshot_names: &[String]) -> Result<HashSet<Id>> {
    let mut used = HashSet::new();
    let mut stack = Vec::new();
    for name in snapshot_names {
        stack.push(repo.load_snapshot(name)?.tree);
    }
    while let Some(tree_id) = stack.pop() {
        if !used.insert(tree_id) {
            continue;
        }
        let tree = repo
            .load_tree(&tree_id)
            .map_err(|e| Error::Other(format!("refusing to prune: {e}; run `cairn check`")))?;
        for node in tree.nodes {
            match node.kind {
                NodeKind::Dir => stack.extend(node.subtree),
                NodeKind::File => used.extend(node.content),
                _ => {}
            }
        }
    }
    Ok(used)
}

pub fn prune(repo: &mut Repository, opts: &PruneOptions) -> Result<PruneReport> {
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let old_index_names = names(repo, FileType::Index)?;
    let mut files = Vec::new();
    for name in &old_index_names {
        files.push(repo.load_index_file(name)?);
    }
    repo.set_index(crate::repo::index::Index::from_files(&files));
    let mut snapshot_names = names(repo, FileType::Snapshot)?;
    snapshot_names.sort();
    let used = used_blobs(repo, &snapshot_names)?;
    report.snapshots = snapshot_names.len() as u64;
    report.blobs_used = used.len() as u64;

    // One entry per pack; a pack listed twice keeps its mark, as the index does.
    let mut packs: HashMap<Id, IndexedPack> = HashMap::new();
    for p in files.into_iter().flat_map(|f| f.packs) {
        let e = packs.entry(p.id).or_insert_with(|| p.clone());
        e.marked = e.marked.or(p.marked);
    }
    let mut stored: HashMap<Id, u64> = repo
        .backend()
        .list(FileType::Pack)?
        .into_iter()
        .filter_map(|(n, size)| Id::from_hex(&n).ok().map(|id| (id, size)))
        .collect();
    // A listing can miss files (some stores list lazily): ask for each indexed pack it
    // did not show, and refuse to go on if one is really gone.
    for id in packs
        .keys()
        .filter(|id| !stored.contains_key(id))
        .copied()
        .collect::<Vec<_>>()
    {
        match repo.backend().size(FileType::Pack, &id.to_hex()) {
            Ok(size) => {
                stored.insert(id, size);
            }
            Err(e) if e.is_not_found() => {
                return Err(Error::Other(format!(
                    "refusing to prune: pack {id} is in the index but missing; run `cairn check`"
                )))
            }
            Err(e) => return Err(e),
        }
    }
    // Packs on storage that no index lists: read their headers and treat them as any
    // other pack, so their blobs are kept if used and marked otherwise.
    let unindexed: Vec<Id> = stored
        .keys()
        .filter(|id| !packs.contains_key(id))
        .copied()
        .collect();
    for id in unindexed {
        if let Ok(blobs) = repo.read_pack_header(&id.to_hex()) {
            report.packs_adopted += 1;
            packs.insert(
                id,
                IndexedPack {
                    id,
                    marked: None,
                    blobs,
                },
            );
        }
    }
    packs.retain(|id, _| stored.contains_key(id));
    report.packs = packs.len() as u64;

    // Which copy of each used blob is kept: one in a live pack if there is one.
    let mut keeper: HashMap<Id, Id> = HashMap::new();
    let mut order: Vec<&IndexedPack> = packs.values().collect();
    order.sort_by_key(|p| (p.marked.is_some(), p.id));
    for p in &order {
        for b in &p.blobs {
            if used.contains(&b.id) {
                keeper.entry(b.id).or_insert(p.id);
            }
        }
    }

    let grace = opts.grace.as_secs() as i64;
    let pack_size = repo.config.pack_size as u64;
    let live_bytes = |p: &IndexedPack| -> u64 {
        p.blobs
            .iter()
            .filter(|b| keeper.get(&b.id) == Some(&p.id))
            .map(|b| b.length as u64)
            .sum()
    };
    let mut next: Vec<IndexedPack> = Vec::new();
    let mut delete: Vec<Id> = Vec::new();
    let mut repack: Vec<&IndexedPack> = Vec::new();
    // Small packs, by blob type: combined only when there are two or more of a type,
    // so a prune never rewrites the same lone small pack again and again.
    let mut small: [Vec<&IndexedPack>; 2] = Default::default();
    for p in order {
        let size = stored[&p.id];
        let live = live_bytes(p);
        match (p.marked, live > 0) {
            (Some(_), true) => {
                report.packs_resurrected += 1;
                next.push(IndexedPack {
                    marked: None,
                    ..p.clone()
                });
            }
            (Some(t), false) if opts.instant_delete || opts.now >= t + grace => delete.push(p.id),
            (Some(_), false) => {
                report.packs_still_waiting += 1;
                next.push(p.clone());
            }
            (None, false) => {
                if opts.instant_delete {
                    delete.push(p.id);
                } else {
                    report.packs_marked += 1;
                    report.bytes_marked += size;
                    next.push(IndexedPack {
                        marked: Some(opts.now),
                        ..p.clone()
                    });
                }
            }
            (None, true) => {
                // Dead blobs' bytes against all blob bytes (the header is not waste).
                let all: u64 = p.blobs.iter().map(|b| b.length as u64).sum();
                let unused = all - live;
                if unused as f64 > all as f64 * opts.max_unused / 100.0 {
                    repack.push(p);
                } else if size < pack_size / 8 {
                    small[p.blobs[0].ty.to_byte() as usize].push(p);
                } else {
                    next.push(p.clone());
                }
            }
        }
    }
    for group in small {
        if group.len() >= 2 {
            repack.extend(group);
        } else {
            next.extend(group.into_iter().cloned());
        }
    }

    report.packs_repacked = repack.len() as u64;
    report.bytes_repacked = repack.iter().map(|p| stored[&p.id]).sum();
    let deleted_now = delete.iter().map(|id| stored[id]);
    report.bytes_deleted = deleted_now.sum::<u64>();
    report.packs_deleted = delete.len() as u64;
    if opts.instant_delete {
        // Repacked packs go at once too.
        report.packs_deleted += report.packs_repacked;
        report.bytes_deleted += report.bytes_repacked;
    }
    if opts.dry_run {
        return Ok(report);
    }

    // 1. Repack: copy each kept blob (verified first) into new packs, one writer per
    //    blob type, closed at the target size.
    let mut writers: [PackWriter; 2] = Default::default();
    let flush = |w: PackWriter, next: &mut Vec<IndexedPack>| -> Result<()> {
        let (id, bytes, blobs) = w.finish(&repo.key.sealing);
        crate::backend::store(repo.backend(), FileType::Pack, &id.to_hex(), &bytes)?;
        next.push(IndexedPack {
            id,
            marked: None,
            blobs,
        });
        Ok(())
    };
    for p in &repack {
        let name = p.id.to_hex();
        let file = FileType::Pack.path(&name);
        let bytes = repo.backend().read(FileType::Pack, &name)?;
        for b in p.blobs.iter().filter(|b| keeper.get(&b.id) == Some(&p.id)) {
            let sealed = bytes
                .get(b.offset as usize..b.offset as usize + b.length as usize)
                .ok_or_else(|| Error::integrity(&file, "pack is shorter than its index says"))?;
            open_blob(&repo.key.sealing, &repo.key.id_key, b, sealed, &file)?;
            let w = &mut writers[b.ty.to_byte() as usize];
            w.add(b.ty, b.id, sealed, b.uncompressed_length);
            if w.size() as u64 >= pack_size {
                flush(std::mem::take(w), &mut next)?;
            }
        }
    }
    for w in writers {
        if !w.is_empty() {
            flush(w, &mut next)?;
        }
    }
    for p in &repack {
        if opts.instant_delete {
            delete.push(p.id);
        } else {
            next.push(IndexedPack {
                marked: Some(opts.now),
                ..(*p).clone()
            });
        }
    }

    // A second, independent look at the snapshots before anything is dropped from the
    // index: a snapshot the first listing did not show (a backup that just finished, or
    // a listing cut short) may use what this prune was about to remove.
    let mut again = names(repo, FileType::Snapshot)?;
    again.sort();
    if again
        .iter()
        .any(|n| snapshot_names.binary_search(n).is_err())
    {
        if opts.instant_delete {
            return Err(Error::Other(
                "refusing to prune: snapshots appeared while it ran (the store listed them late?); run prune again".into(),
            ));
        }
        // Marks can be undone later; deletions cannot: keep this run's to marking.
        for id in delete.drain(..) {
            let p = &packs[&id];
            next.push(IndexedPack {
                marked: p.marked.or(Some(opts.now)),
                ..p.clone()
            });
        }
        report.packs_deleted = 0;
        report.bytes_deleted = 0;
    }

    // 2. The new index.
    let written = write_index_files(repo, &next)?;
    // 3. Old index files go only once the new ones are safely written.
    for name in old_index_names.iter().filter(|n| !written.contains(n)) {
        repo.backend().delete(FileType::Index, name)?;
    }
    // 4. Packs, except any that an index file we did not rewrite still lists (one a
    //    backup wrote meanwhile, or one a short listing hid from us).
    let mut still_listed = HashSet::new();
    for (name, _) in repo.backend().list(FileType::Index)? {
        if written.contains(&name) || old_index_names.contains(&name) {
            continue;
        }
        let f = repo.load_index_file(&name)?;
        still_listed.extend(f.packs.iter().map(|p| p.id));
    }
    delete.retain(|id| !still_listed.contains(id));
    for id in &delete {
        repo.backend().delete(FileType::Pack, &id.to_hex())?;
    }
    repo.load_index()?;
    Ok(report)
}

/// `repair index`: rebuilds the index from the pack headers on storage.
pub fn repair_index(repo: &mut Repository) -> Result<(u64, u64)> {
    let old = names(repo, FileType::Index)?;
    let mut packs = Vec::new();
    let mut unreadable = 0;
    for (name, _) in repo.backend().list(FileType::Pack)? {
        let Ok(id) = Id::from_hex(&name) else {
            continue;
        };
        match repo.read_pack_header(&name) {
            Ok(blobs) => packs.push(IndexedPack {
                id,
                marked: None,
                blobs,
            }),
            Err(_) => unreadable += 1,
        }
    }
    let written = write_index_files(repo, &packs)?;
    for name in old.iter().filter(|n| !written.contains(n)) {
        repo.backend().delete(FileType::Index, name)?;
    }
    repo.load_index()?;
    Ok((packs.len() as u64, unreadable))
}

fn names(repo: &Repository, ft: FileType) -> Result<Vec<String>> {
    Ok(repo
        .backend()
        .list(ft)?
        .into_iter()
        .map(|(n, _)| n)
        .collect())
}

/// Writes `packs` as index files of at most 1000 packs each; returns their names.
fn write_index_files(repo: &Repository, packs: &[IndexedPack]) -> Result<Vec<String>> {
    packs
        .chunks(1000)
        .map(|chunk| {
            let f = IndexFile {
                packs: chunk.to_vec(),
            };
            Ok(repo
                .write_file(FileType::Index, &f.encode(&repo.key.sealing))?
                .to_hex())
        })
        .collect()
}
