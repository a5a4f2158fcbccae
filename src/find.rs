//! `find`: paths matching patterns, across snapshots. Unchanged directories are shared
//! between snapshots (the same tree id at the same path), so what was found below one is
//! remembered: a directory met again is answered from memory without reading a tree,
//! and one with no match below it is not entered at all.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::pattern::PatternSet;
use crate::repo::tree::{check_depth, is_safe_name, Node, NodeKind};
use crate::repo::Repository;

/// What is below one directory that matches: its matching entries, and its
/// subdirectories with matches below them.
#[derive(Default)]
struct Hits {
    entries: Vec<Node>,
    subdirs: Vec<(Vec<u8>, Id)>,
}

/// A search over any number of snapshots, remembering what it found per directory.
pub struct Finder<'a> {
    repo: &'a Repository,
    patterns: PatternSet,
    /// (tree id, path) → what matches below; None: nothing does.
    seen: HashMap<(Id, PathBuf), Option<Rc<Hits>>>,
    /// Trees read so far (each at most once per path).
    pub trees_read: u64,
}

impl<'a> Finder<'a> {
    /// Patterns with restic's meaning (docs: `*.conf` matches at any depth, `/etc/*`
    /// only there; `--ignore-case`).
    pub fn new(repo: &'a Repository, patterns: &[String], ignore_case: bool) -> Result<Self> {
        if patterns.iter().all(|p| p.trim_end_matches('/').is_empty()) {
            return Err(Error::Usage("find needs a pattern".into()));
        }
        Ok(Finder {
            repo,
            patterns: PatternSet::new(patterns.iter().map(|p| (p.as_str(), ignore_case)))?,
            seen: HashMap::new(),
            trees_read: 0,
        })
    }

    /// Every match in the snapshot whose root tree is `root`, in path order: `found`
    /// gets each matching entry's absolute path and node.
    pub fn search(&mut self, root: Id, found: &mut dyn FnMut(&Path, &Node)) -> Result<()> {
        let root_path = PathBuf::from("/");
        if let Some(hits) = self.hits(root, &root_path, 0)? {
            emit(self, &hits, &root_path, found);
        }
        Ok(())
    }

    /// What matches below the directory with tree `tree` at `path`.
    fn hits(&mut self, tree: Id, path: &Path, depth: usize) -> Result<Option<Rc<Hits>>> {
        check_depth(path.display(), depth)?;
        let key = (tree, path.to_path_buf());
        if let Some(h) = self.seen.get(&key) {
            return Ok(h.clone());
        }
        self.trees_read += 1;
        let mut hits = Hits::default();
        for node in self.repo.load_tree(&tree)?.nodes {
            if !is_safe_name(&node.name) {
                continue;
            }
            let p = path.join(OsStr::from_bytes(&node.name));
            if let (NodeKind::Dir, Some(sub)) = (node.kind, node.subtree) {
                if self.hits(sub, &p, depth + 1)?.is_some() {
                    hits.subdirs.push((node.name.clone(), sub));
                }
            }
            if self.patterns.is_match(&p) {
                hits.entries.push(node);
            }
        }
        let result = (!hits.entries.is_empty() || !hits.subdirs.is_empty()).then(|| Rc::new(hits));
        self.seen.insert(key, result.clone());
        Ok(result)
    }
}

/// Reports the remembered matches below `path` in name order: an entry before what is
/// below it.
fn emit(f: &Finder, hits: &Hits, path: &Path, found: &mut dyn FnMut(&Path, &Node)) {
    let (mut i, mut j) = (0, 0);
    while i < hits.entries.len() || j < hits.subdirs.len() {
        let entry_first = match (hits.entries.get(i), hits.subdirs.get(j)) {
            (Some(e), Some(d)) => e.name <= d.0,
            (Some(_), None) => true,
            _ => false,
        };
        if entry_first {
            let e = &hits.entries[i];
            found(&path.join(OsStr::from_bytes(&e.name)), e);
            i += 1;
        } else {
            let (name, sub) = &hits.subdirs[j];
            let p = path.join(OsStr::from_bytes(name));
            if let Some(Some(h)) = f.seen.get(&(*sub, p.clone())) {
                emit(f, h, &p, found);
            }
            j += 1;
        }
    }
}
