//! Trees: one directory's entries, stored as a tree blob.
//!
//! Encoding: `version (u8 = 1) | bincode(Tree)` with bincode 1's varint, little-endian
//! options (docs/format.md lists the field order). Entries are sorted by raw name bytes
//! and every field is fixed by the directory's state, so the same directory always
//! encodes to the same bytes and unchanged trees deduplicate.

use bincode::Options;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::{Id, IdKey};

pub const TREE_VERSION: u8 = 1;

/// Folders nested deeper than this are a hostile tree, not a file system's: walks
/// that recurse (diff, find, stats, dump) stop there with an integrity error.
pub const MAX_DEPTH: usize = 8192;

/// The error for a walk that went deeper than `MAX_DEPTH` at `what`.
pub fn check_depth(what: impl std::fmt::Display, depth: usize) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(Error::integrity(
            what.to_string(),
            format!("more than {MAX_DEPTH} directories deep"),
        ));
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
}

impl NodeKind {
    pub fn name(self) -> &'static str {
        match self {
            NodeKind::File => "file",
            NodeKind::Dir => "dir",
            NodeKind::Symlink => "symlink",
            NodeKind::Fifo => "fifo",
            NodeKind::CharDevice => "chardev",
            NodeKind::BlockDevice => "blockdev",
            NodeKind::Socket => "socket",
        }
    }
}

/// Seconds and nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

/// One directory entry with everything needed to restore it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Raw bytes: Unix names need not be UTF-8.
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    pub kind: NodeKind,
    /// Permission bits including setuid, setgid and sticky (07777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub user: String,
    pub group: String,
    pub mtime: Timestamp,
    pub atime: Timestamp,
    pub ctime: Timestamp,
    pub size: u64,
    /// Inode and device: change detection, and hardlink groups (links > 1).
    pub inode: u64,
    pub device: u64,
    pub links: u64,
    /// Device number of a character or block device.
    pub rdev: u64,
    #[serde(with = "serde_bytes")]
    pub link_target: Vec<u8>,
    /// Sorted by name.
    pub xattrs: Vec<Xattr>,
    /// Data blob ids of a file, in order.
    pub content: Vec<Id>,
    /// Tree blob id of a directory.
    pub subtree: Option<Id>,
}

impl Node {
    pub fn new(name: Vec<u8>, kind: NodeKind) -> Node {
        Node {
            name,
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            user: String::new(),
            group: String::new(),
            mtime: Timestamp::default(),
            atime: Timestamp::default(),
            ctime: Timestamp::default(),
            size: 0,
            inode: 0,
            device: 0,
            links: 1,
            rdev: 0,
            link_target: Vec::new(),
            xattrs: Vec::new(),
            content: Vec::new(),
            subtree: None,
        }
    }

    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }

    /// A keyed hash of a file's blob list: equal exactly for files of equal content.
    pub fn content_key(&self, key: &IdKey) -> Id {
        let mut all = Vec::with_capacity(self.content.len() * 32);
        for id in &self.content {
            all.extend_from_slice(&id.0);
        }
        key.blob_id(&all)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

fn options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_varint_encoding()
        .with_little_endian()
        .reject_trailing_bytes()
}

impl Tree {
    /// Sorts the entries and encodes; the same entries always give the same bytes.
    pub fn encode(&mut self) -> Vec<u8> {
        self.nodes.sort_by(|a, b| a.name.cmp(&b.name));
        for n in &mut self.nodes {
            n.xattrs.sort_by(|a, b| a.name.cmp(&b.name));
        }
        let mut out = vec![TREE_VERSION];
        options()
            .serialize_into(&mut out, self)
            .expect("tree serializes");
        out
    }

    pub fn decode(bytes: &[u8], what: &str) -> Result<Tree> {
        let Some((&version, body)) = bytes.split_first() else {
            return Err(Error::integrity(what, "empty tree"));
        };
        if version != TREE_VERSION {
            return Err(Error::Unsupported(format!(
                "{what}: tree version {version} is not known to this cairn; upgrade cairn"
            )));
        }
        // The limit stops a hostile length prefix from allocating more than the input.
        let tree: Tree = options()
            .with_limit(body.len() as u64 * 2 + 64)
            .deserialize(body)
            .map_err(|e| Error::integrity(what, format!("tree does not decode: {e}")))?;
        // Strictly sorted names: lookups binary-search, and no name appears twice (a
        // symlink and a directory of one name would let a restore be steered).
        if tree.nodes.windows(2).any(|w| w[0].name >= w[1].name) {
            return Err(Error::integrity(
                what,
                "tree entries are not sorted and unique",
            ));
        }
        Ok(tree)
    }

    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }
}

/// A name that is safe to create inside a directory: not empty, `.` or `..`, and
/// without `/` or NUL. Restore refuses every other name, whatever a tree says.
pub fn is_safe_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.iter().any(|&b| b == b'/' || b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_node() -> impl Strategy<Value = Node> {
        (
            proptest::collection::vec(any::<u8>(), 1..20),
            0usize..3,
            any::<u32>(),
            any::<i64>(),
            any::<u64>(),
            proptest::collection::vec(any::<[u8; 32]>(), 0..4),
        )
            .prop_map(|(name, k, mode, secs, size, content)| {
                let kind = [NodeKind::File, NodeKind::Dir, NodeKind::Symlink][k];
                let mut n = Node::new(name, kind);
                n.mode = mode;
                n.mtime = Timestamp { secs, nanos: 5 };
                n.size = size;
                n.content = content.into_iter().map(Id).collect();
                n.xattrs = vec![Xattr {
                    name: b"user.a".to_vec(),
                    value: vec![1, 2],
                }];
                n
            })
    }

    proptest! {
        #[test]
        fn round_trip_is_deterministic(nodes in proptest::collection::vec(arb_node(), 0..8)) {
            // A tree holds each name once (decode refuses duplicates).
            let mut seen = std::collections::HashSet::new();
            let nodes: Vec<Node> = nodes.into_iter().filter(|n| seen.insert(n.name.clone())).collect();
            let mut t = Tree { nodes: nodes.clone() };
            let a = t.encode();
            let mut shuffled = Tree { nodes: nodes.into_iter().rev().collect() };
            prop_assert_eq!(&shuffled.encode(), &a);
            prop_assert_eq!(Tree::decode(&a, "t").unwrap(), t);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Tree::decode(&bytes, "t");
        }
    }

    #[test]
    fn unsorted_or_duplicate_names_refused() {
        let mut raw = vec![TREE_VERSION];
        let t = Tree {
            nodes: vec![
                Node::new(b"b".to_vec(), NodeKind::File),
                Node::new(b"a".to_vec(), NodeKind::File),
            ],
        };
        raw.extend(options().serialize(&t).unwrap());
        assert!(matches!(
            Tree::decode(&raw, "t"),
            Err(Error::Integrity { .. })
        ));
        let mut raw = vec![TREE_VERSION];
        let t = Tree {
            nodes: vec![
                Node::new(b"a".to_vec(), NodeKind::Symlink),
                Node::new(b"a".to_vec(), NodeKind::Dir),
            ],
        };
        raw.extend(options().serialize(&t).unwrap());
        assert!(matches!(
            Tree::decode(&raw, "t"),
            Err(Error::Integrity { .. })
        ));
    }

    #[test]
    fn newer_version_refused() {
        assert!(matches!(
            Tree::decode(&[2, 0], "t"),
            Err(Error::Unsupported(_))
        ));
    }

    #[test]
    fn unsafe_names() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"../x", b"a\0"] {
            assert!(!is_safe_name(bad), "{bad:?}");
        }
        for good in [
            &b"a"[..],
            b"...",
            b".hidden",
            b"with space",
            b"new\nline",
            &[0xff, 0xfe],
        ] {
            assert!(is_safe_name(good));
        }
    }
}
