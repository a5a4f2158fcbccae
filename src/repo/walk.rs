//! Every tree under some roots, each once, loaded and decoded on all cores. `check`
//! and `prune` see each tree of a repository; one thread spent most of their time
//! decrypting, decompressing and decoding trees while the other core idled.

use crate::error::Result;
use crate::id::Id;

use super::tree::Tree;
use super::Repository;

/// Loads the tree of every root and, after `visit`, of every child it returns, on the
/// rayon pool; returns when all are done. `claim` is asked once per id before it is
/// loaded and must say true only the first time (it is the caller's seen-set, so a
/// tree reached by two paths is loaded once). `visit` gets the tree (or why it could
/// not be loaded) with what its parent passed along, and returns the subtrees to
/// descend into. Order is not defined: trees are visited as threads get to them.
pub fn walk_trees<P, C, V>(repo: &Repository, roots: Vec<(Id, P)>, claim: &C, visit: &V)
where
    P: Send,
    C: Fn(&Id) -> bool + Sync,
    V: Fn(&Id, P, Result<Tree>) -> Vec<(Id, P)> + Sync,
{
    rayon::scope(|s| spawn_batches(s, repo, claim, visit, roots));
}

/// Subtrees are handed out in batches: a folder of a million folders makes a few
/// thousand jobs, not a million (each job costs more memory than its subtree's id).
const BATCH: usize = 64;

fn spawn_batches<'s, P, C, V>(
    s: &rayon::Scope<'s>,
    repo: &'s Repository,
    claim: &'s C,
    visit: &'s V,
    mut subtrees: Vec<(Id, P)>,
) where
    P: Send + 's,
    C: Fn(&Id) -> bool + Sync,
    V: Fn(&Id, P, Result<Tree>) -> Vec<(Id, P)> + Sync,
{
    // Spawned jobs run newest first on the thread that made them, so the walk stays
    // roughly depth first and holds about as much as one path's siblings.
    while !subtrees.is_empty() {
        let batch = subtrees.split_off(subtrees.len().saturating_sub(BATCH));
        s.spawn(move |s| {
            for (id, along) in batch {
                if claim(&id) {
                    let tree = repo.load_tree(&id);
                    spawn_batches(s, repo, claim, visit, visit(&id, along, tree));
                }
            }
        });
    }
}
