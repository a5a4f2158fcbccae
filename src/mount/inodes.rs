//! The mount's inode table. Numbers are handed out on lookup and dropped when the kernel
//! forgets them (its lookup count reaches zero), so the table holds what the kernel
//! holds, not everything ever listed: `readdir` hands out no inodes. An entry of a
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
    /// A hard-link group of one snapshot (under its root folder): device, inode and a
    /// hash of the content (members that differ are not one file).
    Link(u64, u64, u64),
}

struct Slot {
    inode: Inode,
    /// The kernel's lookup count.
    lookups: u64,
    /// The key that made it, and others that lead here too (hard links; empty, so
    /// unallocated, for nearly every inode): removed with the inode.
    key: (u64, Key),
    more: Vec<(u64, Key)>,
}

struct Table {
    slots: HashMap<u64, Slot>,
    by_parent: HashMap<(u64, Key), u64>,
    next: u64,
}

pub struct Inodes(RwLock<Table>);

impl Inodes {
    pub fn new() -> Inodes {
        let mut slots = HashMap::new();
        slots.insert(
            ROOT,
            Slot {
                inode: Inode::Virtual(Virtual::Root),
                lookups: 1,
                key: (0, Key::Index(0)),
                more: Vec::new(),
            },
        );
        Inodes(RwLock::new(Table {
            slots,
            by_parent: HashMap::new(),
            next: ROOT + 1,
        }))
    }

    pub fn get(&self, ino: u64) -> Option<Inode> {
        self.0
            .read()
            .unwrap()
            .slots
            .get(&ino)
            .map(|s| s.inode.clone())
    }

    /// The inode at `key` under `parent` (made if new), counted as looked up once.
    fn lookup(&self, parent: u64, key: Key, make: impl FnOnce() -> Inode) -> u64 {
        let mut t = self.0.write().unwrap();
        let k = (parent, key);
        let ino = match t.by_parent.get(&k) {
            Some(&ino) => ino,
            None => {
                let ino = t.next;
                t.next += 1;
                t.slots.insert(
                    ino,
                    Slot {
                        inode: make(),
                        lookups: 0,
                        key: k.clone(),
                        more: Vec::new(),
                    },
                );
                t.by_parent.insert(k, ino);
                ino
            }
        };
        t.slots.get_mut(&ino).expect("just found").lookups += 1;
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
        self.lookup(parent, Key::Name(key), || what)
    }

    /// The inode of entry `index` of directory `parent`, whose tree is `tree`, in the
    /// snapshot under `root`. Members of one hard-link group (`link`: device, inode and
    /// content hash in the snapshot) share one inode, as they did on the source.
    pub fn entry(
        &self,
        parent: u64,
        tree: Id,
        index: u32,
        root: u64,
        link: Option<(u64, u64, u64)>,
    ) -> u64 {
        let make = || Inode::Entry { tree, index, root };
        let Some((dev, ino, content)) = link else {
            return self.lookup(parent, Key::Index(index), make);
        };
        let by_index = (parent, Key::Index(index));
        if self.0.read().unwrap().by_parent.contains_key(&by_index) {
            return self.lookup(parent, Key::Index(index), make);
        }
        let shared = self.lookup(root, Key::Link(dev, ino, content), make);
        let mut t = self.0.write().unwrap();
        if !t.by_parent.contains_key(&by_index) {
            t.by_parent.insert(by_index.clone(), shared);
            if let Some(s) = t.slots.get_mut(&shared) {
                s.more.push(by_index);
            }
        }
        shared
    }

    /// The kernel dropped `n` references; at zero the inode and its keys go.
    pub fn forget(&self, ino: u64, n: u64) {
        if ino == ROOT {
            return;
        }
        let mut t = self.0.write().unwrap();
        let Some(s) = t.slots.get_mut(&ino) else {
            return;
        };
        s.lookups = s.lookups.saturating_sub(n);
        if s.lookups == 0 {
            let s = t.slots.remove(&ino).expect("present");
            for k in std::iter::once(s.key).chain(s.more) {
                if t.by_parent.get(&k) == Some(&ino) {
                    t.by_parent.remove(&k);
                }
            }
        }
    }
}
