//! `prune`: remove data no snapshot needs, without ever breaking a backup.
//!
//! Two ways to delete, chosen per run:
//! * **Idle repository** (no one else holds a lock): prune takes an exclusive lock for
//!   the short delete step only, checks once more for snapshots written meanwhile, and
//!   deletes every unused pack at once.
//! * **Busy repository** (a backup or another client holds a lock): unused packs are
//!   only *marked* in the index, with the time. A later prune deletes a marked pack once
//!   the grace period has passed *and* no live lock was taken before the mark (its
//!   holder may have loaded the index before the mark and rely on the pack), unless a
//!   snapshot written meanwhile uses its blobs again: then the mark is dropped.
//!   Backups do not rely on blobs of marked packs (they store them again), and before
//!   writing a snapshot a backup confirms every blob it relied on is still in a live
//!   pack (archiver/confirm.rs).
//!
//! `--instant-delete` makes the caller take the exclusive lock for the whole run.
//!
//! Order (DESIGN.md): new packs (repacked blobs), then the new index, then deletion of
//! the old index files, then deletion of packs. A crash anywhere leaves every snapshot
//! whole; the worst case is packs listed twice, which the index reader tolerates.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

mod choose;

pub use choose::packs_to_repack;

use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::index::{IndexFile, IndexedPack};
use crate::repo::lock::{live_locks, LockGuard};
use crate::repo::pack::{open_blob, read_forward, PackEntry, PackWriter};
use crate::repo::tree::{NodeKind, Tree};
use crate::repo::walk::walk_trees;
use crate::repo::Repository;

/// A lock taken up to this long after a pack's mark still blocks its deletion: the
/// mark time is taken just before the new index is written, and clocks of two hosts
/// differ. Erring long only delays a deletion.
pub const MARK_LOCK_MARGIN_SECS: i64 = 15 * 60;

pub struct PruneOptions {
    /// Repack a pack when more than this share of its bytes is unused (percent).
    pub max_unused: f64,
    pub dry_run: bool,
    /// Delete at once: the caller holds an exclusive lock for the whole run.
    pub instant_delete: bool,
    /// Delete at once when no one else holds a lock (an exclusive lock is taken for
    /// the delete step); otherwise mark.
    pub delete_when_idle: bool,
    /// How long a marked pack stays before a prune on a busy repository deletes it.
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
    /// Packs no index listed (an interrupted backup's): taken into the index.
    pub packs_adopted: u64,
    /// Marked packs kept: still in their grace period, or a lock older than the mark.
    pub packs_still_waiting: u64,
    /// Of those, packs past the grace period kept because a client that started
    /// before the mark still holds its lock.
    pub packs_held_by_locks: u64,
    pub bytes_deleted: u64,
    pub bytes_marked: u64,
    pub bytes_repacked: u64,
    /// "exclusive" (--instant-delete), "idle" (deleted at once) or "busy" (marked).
    pub mode: String,
    /// Busy: who else was using the repository.
    pub busy_because: Option<String>,
    pub dry_run: bool,
}

/// The blobs the snapshots use, each with the number of the pack whose copy prune keeps
/// (`NOT_FOUND` until it has chosen): one table, 36 bytes an entry, serves as both the
/// set of used blobs and the choice of copies (on a large repository prune's largest).
pub type UsedBlobs = HashMap<Id, u32>;
const NOT_FOUND: u32 = u32::MAX;
/// A tree the walk has entered, while it runs (`NOT_FOUND` once it is done).
const WALKED: u32 = u32::MAX - 1;

/// Every blob reachable from the snapshots. A tree that cannot be read stops prune:
/// deleting anything from a damaged repository could lose what `check` would save.
pub fn used_blobs(repo: &Repository, snapshot_names: &[String]) -> Result<UsedBlobs> {
    let mut used = UsedBlobs::new();
    add_used_blobs(repo, snapshot_names, &mut used)?;
    Ok(used)
}

fn add_used_blobs(
    repo: &Repository,
    snapshot_names: &[String],
    used: &mut UsedBlobs,
) -> Result<()> {
    let mut roots = Vec::new();
    for name in snapshot_names {
        // Prune cannot know what an unreadable snapshot needs: delete nothing.
        let snap = repo.load_snapshot(name).map_err(|e| match e {
            Error::Integrity { file, detail } => Error::Integrity {
                file,
                detail: format!("{detail}; refusing to prune while a snapshot cannot be read, run `cairn check`"),
            },
            Error::Unsupported(m) => Error::Unsupported(format!(
                "{m}; refusing to prune while a snapshot cannot be read"
            )),
            e => e,
        })?;
        roots.push((snap.tree, ()));
    }
    // A tree entered is told apart from a blob marked used: a file whose bytes equal a
    // tree's has that tree's id, and marking its content must not keep the walk out of
    // the tree (everything under it would go).
    let marked = Mutex::new(std::mem::take(used));
    let claim = |id: &Id| match marked.lock().unwrap().entry(*id) {
        Entry::Occupied(e) if *e.get() == WALKED => false,
        Entry::Occupied(mut e) => {
            e.insert(WALKED);
            true
        }
        Entry::Vacant(e) => {
            e.insert(WALKED);
            true
        }
    };
    let failed = Mutex::new(None);
    let visit = |_: &Id, (): (), tree: Result<Tree>| {
        let tree = match tree {
            Ok(t) => t,
            Err(e) => {
                // Damage is named before a tree a concurrent backup may just have
                // indexed (prune reads the index again for those), whichever came first.
                let mut failed = failed.lock().unwrap();
                if failed
                    .as_ref()
                    .is_none_or(|f: &Error| not_indexed_yet(f) && !not_indexed_yet(&e))
                {
                    *failed = Some(e);
                }
                return Vec::new();
            }
        };
        let mut subtrees = Vec::new();
        let mut marked = marked.lock().unwrap();
        for node in tree.nodes {
            match node.kind {
                NodeKind::Dir => subtrees.extend(node.subtree.map(|t| (t, ()))),
                NodeKind::File => {
                    for b in node.content {
                        marked.entry(b).or_insert(NOT_FOUND);
                    }
                }
                _ => {}
            }
        }
        subtrees
    };
    walk_trees(repo, roots, &claim, &visit);
    if let Some(e) = failed.into_inner().unwrap() {
        return Err(Error::Other(format!(
            "refusing to prune: {e}; run `cairn check`"
        )));
    }
    *used = marked.into_inner().unwrap();
    used.values_mut()
        .filter(|v| **v == WALKED)
        .for_each(|v| *v = NOT_FOUND);
    Ok(())
}

/// A blob the index read does not have: damage, or a backup that finished after it.
fn not_indexed_yet(e: &Error) -> bool {
    e.to_string().contains("is not in the index")
}

/// What the first phase decided for each pack.
struct Plan {
    /// Packs with their blobs and marks (adopted ones included).
    packs: HashMap<Id, IndexedPack>,
    /// Pack sizes on storage.
    stored: HashMap<Id, u64>,
    /// The index as it will be written: packs of `packs` (kept, resurrected, marked)
    /// with their marks, taken from `packs` when written rather than copied...
    next: Vec<(Id, Option<i64>)>,
    /// ...and the new packs of the repack.
    new_packs: Vec<IndexedPack>,
    /// Packs marked by an earlier prune that no snapshot needs.
    marked_dead: Vec<Id>,
    /// Unused packs not marked before (marked by this run, or deleted at once).
    newly_unused: Vec<Id>,
    repack: Vec<Id>,
    /// For each blob to copy out of a repacked pack, the pack whose copy is kept (an
    /// index into `keeper_packs`).
    keeper: HashMap<Id, u32>,
    keeper_packs: Vec<Id>,
}

/// True when `blob`'s copy in `pack` is the one kept.
fn keeps(keeper: &HashMap<Id, u32>, keeper_packs: &[Id], blob: &Id, pack: &Id) -> bool {
    keeper
        .get(blob)
        .is_some_and(|&i| keeper_packs[i as usize] == *pack)
}

pub fn prune(repo: &mut Repository, opts: &PruneOptions) -> Result<PruneReport> {
    let started = Instant::now();
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    // Index first, then snapshots: a backup that ends in between shows a snapshot whose
    // trees are in an index file read too early. That is no damage: read both again
    // (a few times) rather than refuse. Never the other order: packs of a snapshot
    // listed too early would look unused.
    let mut tries = 0;
    let (old_index_names, files, snapshot_names, used) = loop {
        tries += 1;
        let (old_index_names, files) = repo.read_index_files()?;
        repo.set_index(crate::repo::index::Index::from_files(&files));
        let mut snapshot_names = names(repo, FileType::Snapshot)?;
        snapshot_names.sort();
        match used_blobs(repo, &snapshot_names) {
            Ok(used) => break (old_index_names, files, snapshot_names, used),
            Err(e) if tries < 5 && not_indexed_yet(&e) => {
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            Err(e) => return Err(e),
        }
    };
    report.snapshots = snapshot_names.len() as u64;
    report.blobs_used = used.len() as u64;
    let mut plan = plan(repo, opts, files, used, &mut report)?;

    report.packs_repacked = plan.repack.len() as u64;
    report.bytes_repacked = plan.repack.iter().map(|id| plan.stored[id]).sum();
    if opts.dry_run {
        // Would the delete step find the repository idle right now?
        let idle = opts.instant_delete || (opts.delete_when_idle && other_locks(repo)?.is_none());
        let grace = grace_secs(opts);
        let mut delete: Vec<Id> = plan
            .marked_dead
            .iter()
            .filter(|id| idle || opts.now >= plan.packs[id].marked.unwrap().saturating_add(grace))
            .copied()
            .collect();
        if idle {
            delete.extend(&plan.newly_unused);
            delete.extend(&plan.repack);
        } else {
            report.packs_marked = (plan.newly_unused.len() + plan.repack.len()) as u64;
            report.bytes_marked = plan.newly_unused.iter().map(|id| plan.stored[id]).sum();
        }
        report.packs_deleted = delete.len() as u64;
        report.bytes_deleted = delete.iter().map(|id| plan.stored[id]).sum();
        report.mode = mode_name(opts, idle).into();
        return Ok(report);
    }

    repack(repo, &mut plan)?;

    // The delete step: exclusive (given, or taken now if no one else is here) deletes
    // everything unused; otherwise only marks that are safe to act on go.
    let exclusive: Option<LockGuard> = if opts.delete_when_idle && !opts.instant_delete {
        repo.try_exclusive()?
    } else {
        None
    };
    let at_once = opts.instant_delete || exclusive.is_some();
    report.mode = mode_name(opts, at_once).into();
    // Marks carry the time the new index is written, not the time prune started.
    let mark_time = opts.now + started.elapsed().as_secs() as i64;
    let mut delete: Vec<Id> = Vec::new();
    let mut marked_now: Vec<Id> = plan.newly_unused.clone();
    marked_now.extend(&plan.repack);
    if at_once {
        delete.extend(&plan.marked_dead);
        delete.append(&mut marked_now);
    } else {
        let grace = grace_secs(opts);
        report.busy_because = other_locks(repo)?;
        let locks = {
            let own = repo.held_locks();
            let own: Vec<_> = own.iter().collect();
            live_locks(repo.backend(), &repo.key.sealing, &own)?
        };
        for id in &plan.marked_dead {
            let mark = plan.packs[id].marked.expect("marked");
            if opts.now < mark.saturating_add(grace) {
                report.packs_still_waiting += 1;
                plan.next.push((*id, Some(mark)));
            } else if locks
                .iter()
                .any(|l| l.created.timestamp() <= mark + MARK_LOCK_MARGIN_SECS)
            {
                report.packs_held_by_locks += 1;
                report.packs_still_waiting += 1;
                plan.next.push((*id, Some(mark)));
            } else {
                delete.push(*id);
            }
        }
    }
    for id in &marked_now {
        if plan.newly_unused.contains(id) {
            report.packs_marked += 1;
            report.bytes_marked += plan.stored[id];
        }
        plan.next.push((*id, Some(mark_time)));
    }

    // A second, independent look at the snapshots before anything is dropped from the
    // index: a snapshot the first listing did not show (a backup that just finished, or
    // a listing cut short) may use what this prune was about to remove.
    let mut again = names(repo, FileType::Snapshot)?;
    again.sort();
    let new_snapshots: Vec<String> = again
        .iter()
        .filter(|n| snapshot_names.binary_search(n).is_err())
        .cloned()
        .collect();
    if !new_snapshots.is_empty() && !delete.is_empty() {
        if at_once {
            // Under the exclusive lock no more can come: keep exactly the packs the
            // new snapshots use, live again.
            let mut needed = UsedBlobs::new();
            add_used_blobs(repo, &new_snapshots, &mut needed)?;
            let (keep, gone): (Vec<Id>, Vec<Id>) = delete.into_iter().partition(|id| {
                plan.packs[id]
                    .blobs
                    .iter()
                    .any(|b| needed.contains_key(&b.id))
            });
            delete = gone;
            for id in keep {
                report.packs_resurrected += 1;
                plan.next.push((id, None));
            }
        } else {
            // Marks can be undone later; deletions cannot: keep this run's to marking.
            for id in delete.drain(..) {
                plan.next
                    .push((id, plan.packs[&id].marked.or(Some(mark_time))));
            }
        }
    }
    report.packs_deleted = delete.len() as u64;
    report.bytes_deleted = delete.iter().map(|id| plan.stored[id]).sum();
    // Packs about to be deleted stay in the new index, marked, until a later prune
    // drops the entries of marked packs that are gone: no backup relies on them or
    // adopts them as leftovers, even if this prune stops or stalls mid-way and its
    // lock goes stale. (`check` and prune take a missing marked pack for a deleted one.)
    for id in &delete {
        plan.next
            .push((*id, plan.packs[id].marked.or(Some(mark_time))));
    }

    // The new index, then the old index files, then the packs; each deletion only
    // while our locks are provably alive (checked before every one: a prune stopped
    // in the middle must not go on once others may have thought it gone).
    // The plan's packs move into the new index; its maps go before that is encoded.
    let Plan {
        mut packs,
        next,
        new_packs,
        ..
    } = plan;
    let mut index = Vec::with_capacity(next.len() + new_packs.len());
    for (id, marked) in next {
        // Each pack is listed once: a second listing finds it taken, and writing an
        // index without it could lose it, so stop before anything is written.
        let p = packs.remove(&id).ok_or_else(|| {
            Error::Other(format!(
                "prune planned pack {id} twice for the new index; stopped before writing the index or deleting anything"
            ))
        })?;
        index.push(IndexedPack { marked, ..p });
    }
    index.extend(new_packs);
    drop(packs);
    let (written, mut now_files) = write_index_files(repo, index)?;
    repo.confirm_locks()?;
    for name in old_index_names.iter().filter(|n| !written.contains(n)) {
        repo.ensure_locks_alive()?;
        repo.backend().delete(FileType::Index, name)?;
    }
    // Packs an index file we did not rewrite still lists (one a backup wrote
    // meanwhile, or one a short listing hid from us) stay.
    let mut still_listed = HashSet::new();
    let mut now_names = written.clone();
    for (name, _) in repo.backend().list(FileType::Index)? {
        if written.contains(&name) || old_index_names.contains(&name) {
            continue;
        }
        let f = repo.load_index_file(&name)?;
        still_listed.extend(f.packs.iter().map(|p| p.id));
        now_names.push(name);
        now_files.push(f);
    }
    delete.retain(|id| !still_listed.contains(id));
    if !delete.is_empty() {
        repo.confirm_locks()?;
    }
    for id in &delete {
        repo.ensure_locks_alive()?;
        match repo.backend().delete(FileType::Pack, &id.to_hex()) {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    drop(exclusive);
    // The index is now what was just written and read: no listing needed to know it.
    repo.use_index_files(now_names, &now_files);
    Ok(report)
}

fn grace_secs(opts: &PruneOptions) -> i64 {
    opts.grace.as_secs().min(i64::MAX as u64 / 4) as i64
}

fn mode_name(opts: &PruneOptions, at_once: bool) -> &'static str {
    if opts.instant_delete {
        "exclusive"
    } else if at_once {
        "idle"
    } else {
        "busy"
    }
}

/// Who else holds a live lock, if anyone.
fn other_locks(repo: &Repository) -> Result<Option<String>> {
    let own = repo.held_locks();
    let own: Vec<_> = own.iter().collect();
    Ok(live_locks(repo.backend(), &repo.key.sealing, &own)?
        .first()
        .map(|l| l.describe()))
}

/// Phase one: what is used, what is not, what to repack. Reads only.
fn plan(
    repo: &Repository,
    opts: &PruneOptions,
    files: Vec<IndexFile>,
    used: UsedBlobs,
    report: &mut PruneReport,
) -> Result<Plan> {
    // One entry per pack; a pack listed twice keeps its mark, as the index does.
    let mut packs: HashMap<Id, IndexedPack> = HashMap::new();
    for p in files.into_iter().flat_map(|f| f.packs) {
        match packs.entry(p.id) {
            Entry::Occupied(mut e) => {
                let e = e.get_mut();
                e.marked = e.marked.or(p.marked);
            }
            Entry::Vacant(e) => {
                e.insert(p);
            }
        }
    }
    let mut stored: HashMap<Id, u64> = repo
        .backend()
        .list(FileType::Pack)?
        .into_iter()
        .filter_map(|(n, size)| Id::from_hex(&n).ok().map(|id| (id, size)))
        .collect();
    // A listing can miss files (some stores list lazily): ask for each indexed pack it
    // did not show. A live pack that is really gone stops prune; a marked one was
    // deleted by an earlier prune that stopped before rewriting the index.
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
            Err(e) if e.is_not_found() && packs[&id].marked.is_some() => {}
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

    // Which copy of each used blob is kept: one in a live pack if there is one. The
    // map of used blobs becomes this map in place (no second table).
    let mut order: Vec<&IndexedPack> = packs.values().collect();
    order.sort_by_key(|p| (p.marked.is_some(), p.id));
    let mut keeper = used;
    for (i, p) in order.iter().enumerate() {
        for b in &p.blobs {
            if let Some(k) = keeper.get_mut(&b.id) {
                if *k == NOT_FOUND {
                    *k = i as u32;
                }
            }
        }
    }
    keeper.retain(|_, k| *k != NOT_FOUND);
    let keeper_packs: Vec<Id> = order.iter().map(|p| p.id).collect();

    let pack_size = repo.config.pack_size as u64;
    let live_bytes = |p: &IndexedPack| -> u64 {
        p.blobs
            .iter()
            .filter(|b| keeps(&keeper, &keeper_packs, &b.id, &p.id))
            .map(|b| b.length as u64)
            .sum()
    };
    let mut next = Vec::new();
    let mut marked_dead = Vec::new();
    let mut newly_unused = Vec::new();
    let mut repack = Vec::new();
    // Partly used packs, repacked the most wasteful first until what stays unused is at
    // most `max_unused` percent of the repository (restic's rule): a pack with a little
    // waste is not downloaded and uploaded again for it.
    let mut partly_used: Vec<(&IndexedPack, u64, u64)> = Vec::new();
    let mut live_total = 0u64;
    // Live packs not repacked for their waste: kept, or combined if small.
    let mut kept: Vec<&IndexedPack> = Vec::new();
    // Small packs, by blob type: combined only when there are two or more of a type,
    // so a prune never rewrites the same lone small pack again and again.
    let mut small: [Vec<&IndexedPack>; 2] = Default::default();
    for p in order {
        let live = live_bytes(p);
        match (p.marked, live > 0) {
            (Some(_), true) => {
                report.packs_resurrected += 1;
                next.push((p.id, None));
            }
            (Some(_), false) => marked_dead.push(p.id),
            (None, false) => newly_unused.push(p.id),
            (None, true) => {
                // Dead blobs' bytes against all blob bytes (the header is not waste).
                let all: u64 = p.blobs.iter().map(|b| b.length as u64).sum();
                live_total += live;
                if all > live {
                    // Small or not: its waste counts against the limit.
                    partly_used.push((p, all - live, all));
                } else {
                    kept.push(p);
                }
            }
        }
    }
    let chosen = packs_to_repack(
        partly_used
            .iter()
            .map(|(p, unused, all)| (p.id, *unused, *all)),
        live_total,
        opts.max_unused,
    );
    for (p, _, _) in partly_used {
        if chosen.contains(&p.id) {
            repack.push(p.id);
        } else {
            kept.push(p);
        }
    }
    for p in kept {
        if stored[&p.id] < pack_size / 8 {
            small[p.blobs[0].ty.to_byte() as usize].push(p);
        } else {
            next.push((p.id, p.marked));
        }
    }
    for group in small {
        if group.len() >= 2 {
            repack.extend(group.iter().map(|p| p.id));
        } else {
            next.extend(group.into_iter().map(|p| (p.id, p.marked)));
        }
    }
    // From here on only the blobs to copy out of repacked packs are looked up: the
    // rest of the map goes (it is prune's largest).
    let repacked: HashSet<&Id> = repack.iter().collect();
    keeper.retain(|_, i| repacked.contains(&keeper_packs[*i as usize]));
    keeper.shrink_to_fit();
    drop(repacked);
    Ok(Plan {
        packs,
        stored,
        next,
        new_packs: Vec::new(),
        marked_dead,
        newly_unused,
        repack,
        keeper,
        keeper_packs,
    })
}

/// Copies each kept blob of the packs to repack (verified first) into new packs, one
/// writer per blob type, closed at the target size; the new packs join `new_packs`.
fn repack(repo: &Repository, plan: &mut Plan) -> Result<()> {
    if plan.repack.is_empty() {
        return Ok(());
    }
    let pack_size = repo.config.pack_size as u64;
    // Room for a full pack, one more blob and the header: no doubling copy (only the
    // pages written count).
    let capacity = repo.config.pack_size as usize + (9 << 20);
    let mut writers = [0, 1].map(|_| PackWriter::with_capacity(capacity));
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
    let mut sealed = Vec::new();
    let remote = repo.backend().is_remote();
    for pid in &plan.repack {
        let p = &plan.packs[pid];
        let name = p.id.to_hex();
        let file = FileType::Pack.path(&name);
        let mut kept: Vec<&PackEntry> = p
            .blobs
            .iter()
            .filter(|b| keeps(&plan.keeper, &plan.keeper_packs, &b.id, &p.id))
            .collect();
        kept.sort_by_key(|b| b.offset);
        // Streamed front to back, one blob held at a time (never the whole pack).
        let mut r = repo.backend().read_stream(FileType::Pack, &name)?;
        let mut pos = 0u64;
        let short = || Error::integrity(&file, "pack is shorter than its index says");
        let read_err = |e: std::io::Error| Error::Other(format!("reading {file}: {e}"));
        // Packs filled (remote storage), and blobs overlapping the one before (two
        // names for one copy): written and read once the stream is gone, as a remote
        // stream holds a connection that another request would wait for.
        let mut full = Vec::new();
        let mut again = Vec::new();
        let mut add = |b: &PackEntry, sealed: &[u8], full: &mut Vec<PackWriter>| -> Result<()> {
            open_blob(&repo.key.sealing, &repo.key.id_key, b, sealed, &file)?;
            let w = &mut writers[b.ty.to_byte() as usize];
            w.add(b.ty, b.id, sealed, b.uncompressed_length);
            if w.size() as u64 >= pack_size {
                full.push(std::mem::replace(w, PackWriter::with_capacity(capacity)));
            }
            Ok(())
        };
        for b in kept {
            let (offset, len) = (b.offset as u64, b.length as u64);
            if offset < pos {
                again.push(b);
                continue;
            }
            let whole = read_forward(
                &mut r,
                &mut pos,
                offset,
                len,
                &mut std::io::sink(),
                &mut sealed,
            )
            .map_err(read_err)?;
            if !whole {
                return Err(short());
            }
            add(b, &sealed, &mut full)?;
            // A local stream holds nothing another request needs: written at once.
            if !remote {
                for w in full.drain(..) {
                    flush(w, &mut plan.new_packs)?;
                }
            }
        }
        drop(r);
        for b in again {
            sealed = repo.backend().read_range(
                FileType::Pack,
                &name,
                b.offset as u64,
                b.length as usize,
            )?;
            add(b, &sealed, &mut full)?;
        }
        for w in full {
            flush(w, &mut plan.new_packs)?;
        }
    }
    for w in writers {
        if !w.is_empty() {
            flush(w, &mut plan.new_packs)?;
        }
    }
    Ok(())
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
    let indexed = packs.len() as u64;
    let (written, _) = write_index_files(repo, packs)?;
    for name in old.iter().filter(|n| !written.contains(n)) {
        repo.backend().delete(FileType::Index, name)?;
    }
    repo.load_index()?;
    Ok((indexed, unreadable))
}

fn names(repo: &Repository, ft: FileType) -> Result<Vec<String>> {
    Ok(repo
        .backend()
        .list(ft)?
        .into_iter()
        .map(|(n, _)| n)
        .collect())
}

/// An index file prune writes holds at most this many packs or blobs: its encoded and
/// sealed copies are what prune holds in memory at once, a few MiB however large the
/// repository, in few files when blobs are large.
const INDEX_FILE_PACKS: usize = 1000;
const INDEX_FILE_BLOBS: usize = 65_536;

/// Writes `packs` as index files of at most `INDEX_FILE_PACKS` packs and about
/// `INDEX_FILE_BLOBS` blobs each, only while this process's locks are alive; returns
/// their names and contents. When one lands too late, those written before it are
/// taken back too.
fn write_index_files(
    repo: &Repository,
    packs: Vec<IndexedPack>,
) -> Result<(Vec<String>, Vec<IndexFile>)> {
    let mut written = Vec::new();
    let mut files = Vec::new();
    for f in index_files(packs) {
        match repo.write_file_while_held(FileType::Index, &f.encode(&repo.key.sealing)) {
            Ok(id) => {
                written.push(id.to_hex());
                files.push(f);
            }
            Err(e) => {
                for name in &written {
                    let _ = repo.backend().delete(FileType::Index, name);
                }
                return Err(e);
            }
        }
    }
    Ok((written, files))
}

/// Splits packs into index files: a file is closed once it holds `INDEX_FILE_PACKS`
/// packs or at least `INDEX_FILE_BLOBS` blobs (every file holds at least one pack).
fn index_files(packs: Vec<IndexedPack>) -> Vec<IndexFile> {
    let mut files: Vec<IndexFile> = Vec::new();
    let mut blobs = 0;
    for p in packs {
        match files.last_mut() {
            Some(f) if f.packs.len() < INDEX_FILE_PACKS && blobs < INDEX_FILE_BLOBS => {
                blobs += p.blobs.len();
                f.packs.push(p);
            }
            _ => {
                blobs = p.blobs.len();
                files.push(IndexFile { packs: vec![p] });
            }
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::pack::{BlobType, PackEntry};

    fn pack(n: u8, blobs: usize) -> IndexedPack {
        IndexedPack {
            id: Id([n; 32]),
            marked: None,
            blobs: (0..blobs)
                .map(|i| PackEntry {
                    ty: BlobType::Data,
                    id: Id([0; 32]),
                    offset: i as u32,
                    length: 1,
                    uncompressed_length: 0,
                })
                .collect(),
        }
    }

    /// Prune's index files stay small however large the repository: its memory holds
    /// one encoded file at a time.
    #[test]
    fn index_files_are_bounded_by_packs_and_blobs() {
        let sizes = |files: Vec<IndexFile>| -> Vec<(usize, usize)> {
            files
                .iter()
                .map(|f| (f.packs.len(), f.packs.iter().map(|p| p.blobs.len()).sum()))
                .collect()
        };
        let many: Vec<_> = (0..2100).map(|i| pack(i as u8, 1)).collect();
        assert_eq!(
            sizes(index_files(many)),
            [(1000, 1000), (1000, 1000), (100, 100)],
            "at most 1000 packs a file"
        );
        let big: Vec<_> = (0..3).map(|i| pack(i, 40_000)).collect();
        assert_eq!(
            sizes(index_files(big)),
            [(2, 80_000), (1, 40_000)],
            "closed once 65 536 blobs are reached"
        );
        let huge = vec![pack(1, 100_000), pack(2, 1)];
        assert_eq!(sizes(index_files(huge)), [(1, 100_000), (1, 1)]);
        assert!(index_files(Vec::new()).is_empty());
    }
}
