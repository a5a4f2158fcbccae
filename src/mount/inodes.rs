//! The mount's inode table. Numbers are handed out on first sight and kept for the
//! mount's life (the repository does not change under a snapshot): an entry of a
//! snapshot's tree is remembered as (its directory's tree, its index there), so its
//! node is read from the tree cache when asked for, never copied into the table.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::id::Id;

pub const ROOT: u64 = 1;

/// The folders above the snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Virtual {
    Root,
    Ids,
    Snapshots,
    Hosts,
    Tags,
    Host(String),
    Tag(String),
}

/// What an inode is.
#[derive(Clone, Debug)]
pub enum Inode {
    Virtual(Virtual),
    /// `latest`: a symlink to a sibling folder.
    Link(String),
    /// A snapshot's root folder: its tree, and the snapshot's time (its folder's times).
    SnapRoot {
        tree: Id,
        time: i64,
    },
    /// Entry `index` of the directory whose tree is `tree`, in the snapshot whose root
    /// folder is inode `root`.
    Entry {
        tree: Id,
        index: u32,
        root: u64,
    },
}

/// How an inode is found again from its parent.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Name(Vec<u8>),
    Index(u32),
    /// A hard-link group of one snapshot (under its root folder): (device, inode).
    Link(u64, u64),
}

#[derive(Default)]
struct Table {
    inodes: Vec<Inode>,
    by_parent: HashMap<(u64, Key), u64>,
}

pub struct Inodes(RwLock<Table>);

impl Inodes {
    pub fn new() -> Inodes {
        let t = Table {
            inodes: vec![Inode::Virtual(Virtual::Root)],
            by_parent: HashMap::new(),
        };
        Inodes(RwLock::new(t))
    }

    pub fn get(&self, ino: u64) -> Option<Inode> {
        let t = self.0.read().unwrap();
        ino.checked_sub(ROOT)
            .and_then(|i| t.inodes.get(i as usize))
            .cloned()
    }

    fn intern(&self, parent: u64, key: Key, make: impl FnOnce() -> Inode) -> u64 {
        if let Some(&ino) = self.0.read().unwrap().by_parent.get(&(parent, key.clone())) {
            return ino;
        }
        let mut t = self.0.write().unwrap();
        if let Some(&ino) = t.by_parent.get(&(parent, key.clone())) {
            return ino;
        }
        t.inodes.push(make());
        let ino = t.inodes.len() as u64 - 1 + ROOT;
        t.by_parent.insert((parent, key), ino);
        ino
    }

    /// The inode of a named child of a folder above the snapshots. A name that now
    /// means something else (a newer `latest`) gets a new inode.
    pub fn named(&self, parent: u64, name: &[u8], what: Inode) -> u64 {
        let mut key = name.to_vec();
        // The target is part of the key: `latest` moves on when a snapshot is added.
        match &what {
            Inode::Link(t) => {
                key.push(0);
                key.extend_from_slice(t.as_bytes());
            }
            Inode::SnapRoot { tree, .. } => {
                key.push(0);
                key.extend_from_slice(&tree.0);
            }
            _ => {}
        }
        self.intern(parent, Key::Name(key), || what)
    }

    /// The inode of entry `index` of directory `parent`, whose tree is `tree`, in the
    /// snapshot under `root`. Members of one hard-link group (`link`: device and inode
    /// in the snapshot) share one inode, as they did on the source.
    pub fn entry(
        &self,
        parent: u64,
        tree: Id,
        index: u32,
        root: u64,
        link: Option<(u64, u64)>,
    ) -> u64 {
        let make = || Inode::Entry { tree, index, root };
        let Some((dev, ino)) = link else {
            return self.intern(parent, Key::Index(index), make);
        };
        if let Some(&found) = self
            .0
            .read()
            .unwrap()
            .by_parent
            .get(&(parent, Key::Index(index)))
        {
            return found;
        }
        let shared = self.intern(root, Key::Link(dev, ino), make);
        let mut t = self.0.write().unwrap();
        *t.by_parent
            .entry((parent, Key::Index(index)))
            .or_insert(shared)
    }
}
