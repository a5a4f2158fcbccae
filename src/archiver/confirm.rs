//! The last step before a backup writes its snapshot: prove that every blob the
//! snapshot needs is in a live pack that is still on storage (DESIGN.md: "a backup
//! writes no snapshot that references data it has not confirmed present").
//!
//! A backup deduplicates against the index it loaded at its start. A prune running
//! meanwhile may mark a pack the backup relied on (it saw no snapshot using it), and a
//! later prune may delete it. So: if the index files changed since the start, the
//! index is read again; a needed blob found only in a marked pack is copied into a new
//! pack (so the snapshot never depends on a pack that may go), and a needed blob that
//! is gone makes the backup fail without a snapshot.

use std::collections::HashSet;

use super::saver::{BlobSaver, SaverConfig, SaverOutput};
use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::index::Index;
use crate::repo::Repository;

/// What the confirmation found.
#[derive(Default, Debug)]
pub struct Confirmed {
    /// Whether the index changed while the backup ran (a prune or another writer).
    pub index_changed: bool,
    /// Blobs copied out of packs a prune had marked.
    pub blobs_rescued: u64,
}

/// Confirms `relied` (blobs taken from the index) and the blobs this backup wrote
/// (`own`); copies blobs of marked packs into new packs. Errors when a needed blob is
/// gone: the caller then writes no snapshot.
pub fn confirm_blobs(
    repo: &mut Repository,
    relied: &HashSet<Id>,
    own: &SaverOutput,
) -> Result<Confirmed> {
    repo.confirm_locks()?;
    let mut report = Confirmed::default();
    let listed: HashSet<String> = repo
        .backend()
        .list(FileType::Index)?
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let mut expected: HashSet<String> = repo.loaded_index_files().clone();
    expected.extend(own.index_names.iter().cloned());
    if listed == expected {
        // No index file came or went but ours: no prune ran, nothing was marked or
        // deleted since the start. (Another backup's new index would show up here too,
        // and only costs the slower path below.)
        return Ok(report);
    }
    report.index_changed = true;

    let (_, files) = repo.read_index_files()?;
    let fresh = Index::from_files(&files);
    let needed = relied.iter().chain(
        own.index_files
            .iter()
            .flat_map(|f| f.packs.iter())
            .flat_map(|p| p.blobs.iter().map(|b| &b.id)),
    );
    let mut rescue: Vec<Id> = Vec::new();
    let mut packs_used: HashSet<Id> = HashSet::new();
    for id in needed {
        if fresh.contains(id) {
            packs_used.insert(fresh.get(id).expect("contained").pack);
        } else {
            rescue.push(*id);
        }
    }
    rescue.sort();
    rescue.dedup();

    // Live packs must really be on storage (a listing can lag: ask for each it missed).
    let stored: HashSet<String> = repo
        .backend()
        .list(FileType::Pack)?
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for pack in &packs_used {
        let name = pack.to_hex();
        if stored.contains(&name) {
            continue;
        }
        match repo.backend().size(FileType::Pack, &name) {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {
                return Err(gone(format!(
                    "pack {} is listed in the index but missing",
                    pack.short()
                )))
            }
            Err(e) => return Err(e),
        }
    }

    if rescue.is_empty() {
        return Ok(report);
    }
    // Copy each blob from wherever a copy still is (a marked pack, or the pack the
    // start index named), verified as every read is.
    let saver = BlobSaver::start(SaverConfig {
        backend: repo.backend_arc(),
        key: repo.key.sealing.clone(),
        compression: repo.config.compression,
        pack_size: repo.config.pack_size as usize,
        dry_run: false,
        cache: repo.cache(),
        locks: repo.held_locks(),
    });
    for id in &rescue {
        // Every copy the old and the fresh index know of, until one reads.
        let locations: Vec<_> = [fresh.get(id), repo.index().get(id)]
            .into_iter()
            .flatten()
            .collect();
        if locations.is_empty() {
            return Err(gone(format!("blob {} is in no index any more", id.short())));
        }
        let mut found = None;
        for loc in &locations {
            match repo.read_blob_at(&loc.pack, &loc.entry) {
                Ok(d) => {
                    found = Some((loc.entry.ty, d));
                    break;
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        let Some((ty, data)) = found else {
            return Err(gone(format!(
                "pack {} was deleted",
                locations[0].pack.short()
            )));
        };
        saver.save(ty, *id, data)?;
    }
    let written = saver.finish()?;
    for f in &written.index_files {
        repo.index_add(f);
    }
    report.blobs_rescued = rescue.len() as u64;
    Ok(report)
}

fn gone(what: String) -> Error {
    Error::Other(format!(
        "data this backup relied on was removed by a concurrent prune ({what}); no snapshot was written, run the backup again"
    ))
}
