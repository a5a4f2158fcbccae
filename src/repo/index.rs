//! Index files (`index/<id>`) and the in-memory index built from them.
//!
//! An index file lists packs and the blobs in each, so a reader finds any blob without
//! opening pack headers. Plaintext, sealed with the INDEX associated data:
//! `version (u8 = 1) | pack count (u32 LE) | per pack: pack id (32) | marked (i64 LE) |
//! blob count (u32 LE) | blob count × pack entry (pack.rs, 45 bytes)`.
//! `marked` is 0 for a live pack, else the Unix time at which prune found nothing in it
//! still used: it is deleted by a later prune once the grace period has passed.

use std::collections::HashMap;

use crate::crypto::{aad, SealingKey};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::pack::{BlobType, PackEntry, ENTRY_LEN};

pub const INDEX_VERSION: u8 = 1;

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct IndexFile {
    pub packs: Vec<IndexedPack>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct IndexedPack {
    pub id: Id,
    /// When prune marked the pack unused (Unix seconds); `None` = live.
    pub marked: Option<i64>,
    pub blobs: Vec<PackEntry>,
}

impl IndexFile {
    pub fn encode(&self, key: &SealingKey) -> Vec<u8> {
        let n: usize = self
            .packs
            .iter()
            .map(|p| 36 + p.blobs.len() * ENTRY_LEN)
            .sum();
        let mut out = Vec::with_capacity(5 + n);
        out.push(INDEX_VERSION);
        out.extend_from_slice(&(self.packs.len() as u32).to_le_bytes());
        for p in &self.packs {
            out.extend_from_slice(&p.id.0);
            out.extend_from_slice(&p.marked.unwrap_or(0).to_le_bytes());
            out.extend_from_slice(&(p.blobs.len() as u32).to_le_bytes());
            for e in &p.blobs {
                e.encode_into(&mut out);
            }
        }
        key.seal(aad::INDEX, &out)
    }

    pub fn decode(sealed: &[u8], key: &SealingKey, file: &str) -> Result<IndexFile> {
        let bad = |d: &str| Error::integrity(file, d.to_string());
        let plain = key
            .open(aad::INDEX, sealed)
            .map_err(|_| bad("authentication failed"))?;
        Self::decode_plain(&plain, file)
    }

    /// Decodes an opened (decrypted) index file.
    pub fn decode_plain(plain: &[u8], file: &str) -> Result<IndexFile> {
        let bad = |d: &str| Error::integrity(file, d.to_string());
        if plain.is_empty() {
            return Err(bad("empty index"));
        }
        if plain[0] != INDEX_VERSION {
            return Err(Error::Unsupported(format!(
                "{file}: index version {} is not known to this cairn; upgrade cairn",
                plain[0]
            )));
        }
        let mut r = Reader { b: &plain[1..] };
        let packs = r.u32().ok_or_else(|| bad("truncated"))?;
        let mut out = IndexFile::default();
        for _ in 0..packs {
            let id = r
                .take(32)
                .and_then(Id::from_slice)
                .ok_or_else(|| bad("truncated"))?;
            let marked = r
                .take(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                .ok_or_else(|| bad("truncated"))?;
            let count = r.u32().ok_or_else(|| bad("truncated"))? as usize;
            let raw = r
                .take(
                    count
                        .checked_mul(ENTRY_LEN)
                        .ok_or_else(|| bad("too many blobs"))?,
                )
                .ok_or_else(|| bad("truncated"))?;
            let blobs = raw
                .chunks_exact(ENTRY_LEN)
                .map(|c| PackEntry::decode(c).ok_or_else(|| bad("unknown blob type")))
                .collect::<Result<Vec<_>>>()?;
            out.packs.push(IndexedPack {
                id,
                marked: (marked != 0).then_some(marked),
                blobs,
            });
        }
        if !r.b.is_empty() {
            return Err(bad("trailing bytes"));
        }
        Ok(out)
    }
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.b.len() < n {
            return None;
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Some(h)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    }
}

/// Where a blob is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    pub pack: Id,
    pub entry: PackEntry,
}

/// One blob in the in-memory index: exactly 32 bytes.
///
/// Only the first 16 bytes of the id are kept. Ids are keyed BLAKE3, so two blobs of a
/// repository share a 128-bit prefix with probability about n²/2¹²⁹ (10⁻²⁴ for ten
/// million blobs); and a lookup returns the *asked-for* full id, which every read checks
/// against the blob's content, so even then no wrong data could come back unnoticed.
#[derive(Clone, Copy)]
struct Slot {
    id_prefix: [u8; 16],
    pack: u32,
    offset: u32,
    /// Blob length; the top bit marks a tree blob.
    length_and_type: u32,
    uncompressed_length: u32,
}

const TREE_BIT: u32 = 1 << 31;

const BUCKETS: usize = 1 << 16;

fn bucket(prefix: &[u8; 16]) -> usize {
    u16::from_be_bytes([prefix[0], prefix[1]]) as usize
}

fn prefix(id: &Id) -> [u8; 16] {
    id.0[..16].try_into().unwrap()
}

/// All blobs of the repository, sorted by id prefix for binary search: 32 bytes a blob
/// and no per-entry allocation, so ten million blobs take 320 MB less than a map would.
#[derive(Default)]
pub struct Index {
    packs: Vec<Id>,
    /// Per pack number: when prune marked it unused, if it did.
    marked: Vec<Option<i64>>,
    pack_numbers: HashMap<Id, u32>,
    slots: Vec<Slot>,
    /// Where the slots of each value of an id's first two bytes start (65 537 entries
    /// once sorted): ids are uniform hashes, so a lookup searches a handful of slots
    /// in one place instead of hopping across the whole table, a cache miss a hop.
    starts: Vec<u32>,
}

impl Index {
    pub fn from_files<'a>(files: impl IntoIterator<Item = &'a IndexFile>) -> Index {
        Self::from_packs(files.into_iter().flat_map(|f| &f.packs))
    }

    pub fn from_packs<'a>(packs: impl IntoIterator<Item = &'a IndexedPack>) -> Index {
        let mut idx = Index::default();
        for p in packs {
            idx.push_pack(p);
        }
        idx.sort();
        idx
    }

    fn push_pack(&mut self, p: &IndexedPack) {
        let next = self.packs.len() as u32;
        let n = *self.pack_numbers.entry(p.id).or_insert(next);
        if n == next {
            self.packs.push(p.id);
            self.marked.push(p.marked);
        } else if p.marked.is_some() {
            // Listed twice (a prune stopped between writing and deleting index files):
            // the mark wins; the next prune decides again from the snapshots.
            self.marked[n as usize] = p.marked;
            return;
        } else {
            return;
        }
        let blobs = &p.blobs;
        self.slots.extend(blobs.iter().map(|e| Slot {
            id_prefix: prefix(&e.id),
            pack: n,
            offset: e.offset,
            length_and_type: (e.length & !TREE_BIT)
                | if e.ty == BlobType::Tree { TREE_BIT } else { 0 },
            uncompressed_length: e.uncompressed_length,
        }));
    }

    fn sort(&mut self) {
        // A blob stored twice: keep a copy in a live pack if there is one.
        let marked = &self.marked;
        self.slots
            .sort_by_key(|s| (s.id_prefix, marked[s.pack as usize].is_some()));
        self.slots.dedup_by(|a, b| a.id_prefix == b.id_prefix);
        self.index_starts();
    }

    fn index_starts(&mut self) {
        // Positions are u32: four billion blobs would be 128 GiB of index in memory.
        assert!(self.slots.len() < u32::MAX as usize, "index too large");
        let mut starts = vec![0u32; BUCKETS + 1];
        for s in &self.slots {
            starts[bucket(&s.id_prefix) + 1] += 1;
        }
        for b in 0..BUCKETS {
            starts[b + 1] += starts[b];
        }
        self.starts = starts;
    }

    /// Adds packs written by this process.
    pub fn add(&mut self, file: &IndexFile) {
        for p in &file.packs {
            self.push_pack(p);
        }
        self.sort();
    }

    fn find(&self, id: &Id) -> Option<&Slot> {
        let key = prefix(id);
        let b = bucket(&key);
        let range = *self.starts.get(b)? as usize..self.starts[b + 1] as usize;
        let slots = &self.slots[range];
        slots
            .binary_search_by(|s| s.id_prefix.cmp(&key))
            .ok()
            .map(|i| &slots[i])
    }

    pub fn get(&self, id: &Id) -> Option<BlobLocation> {
        let s = self.find(id)?;
        Some(BlobLocation {
            pack: self.packs[s.pack as usize],
            entry: PackEntry {
                ty: if s.length_and_type & TREE_BIT != 0 {
                    BlobType::Tree
                } else {
                    BlobType::Data
                },
                id: *id,
                offset: s.offset,
                length: s.length_and_type & !TREE_BIT,
                uncompressed_length: s.uncompressed_length,
            },
        })
    }

    /// Whether the blob is stored in a live pack (one a backup may rely on: a pack
    /// marked by prune may be deleted soon, so its blobs are stored again).
    pub fn contains(&self, id: &Id) -> bool {
        self.find(id)
            .is_some_and(|s| self.marked[s.pack as usize].is_none())
    }

    /// Treats these packs as marked: a backup will not rely on their blobs. For packs
    /// the index lists but storage does not hold.
    pub fn set_unavailable(&mut self, packs: &std::collections::HashSet<Id>) {
        for (n, id) in self.packs.iter().enumerate() {
            if packs.contains(id) && self.marked[n].is_none() {
                self.marked[n] = Some(1);
            }
        }
        self.sort_again();
    }

    /// Re-sorts after marks changed, so a live copy of a blob wins again.
    fn sort_again(&mut self) {
        let marked = &self.marked;
        self.slots
            .sort_by_key(|s| (s.id_prefix, marked[s.pack as usize].is_some()));
    }

    /// When prune marked this pack unused, if it did.
    pub fn pack_marked(&self, pack: &Id) -> Option<i64> {
        let n = *self.pack_numbers.get(pack)?;
        self.marked[n as usize]
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn packs(&self) -> &[Id] {
        &self.packs
    }

    /// Bytes held per blob by the blob table (for benchmarks and docs).
    pub const BYTES_PER_BLOB: usize = std::mem::size_of::<Slot>();
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(n: u8, off: u32) -> PackEntry {
        PackEntry {
            ty: if n.is_multiple_of(2) {
                BlobType::Data
            } else {
                BlobType::Tree
            },
            id: Id([n; 32]),
            offset: off,
            length: 10 + n as u32,
            uncompressed_length: n as u32 * 3,
        }
    }

    fn sample(n: u8) -> IndexFile {
        IndexFile {
            packs: (0..n)
                .map(|p| IndexedPack {
                    id: Id([100 + p; 32]),
                    marked: (p == 2).then_some(1_800_000_000),
                    blobs: (0..p).map(|b| entry(p * 10 + b, b as u32 * 50)).collect(),
                })
                .collect(),
        }
    }

    proptest! {
        #[test]
        fn round_trip_and_flipped_byte(n in 0u8..6, pos in any::<usize>()) {
            let k = SealingKey::new(&[9; 32]);
            let f = sample(n);
            let mut sealed = f.encode(&k);
            prop_assert_eq!(IndexFile::decode(&sealed, &k, "i").unwrap(), f);
            let i = pos % sealed.len();
            sealed[i] ^= 0x20;
            prop_assert!(IndexFile::decode(&sealed, &k, "i").is_err());
        }
    }

    proptest! {
        /// Every blob is found where it was put, across the whole id space (the
        /// first and last two-byte buckets too), and nothing else is found.
        #[test]
        fn every_blob_is_found_and_no_other(
            ids in proptest::collection::btree_set(any::<[u8; 32]>(), 0..300),
            edge in any::<[u8; 30]>(),
            probe in any::<[u8; 32]>(),
        ) {
            let mut ids: Vec<[u8; 32]> = ids.into_iter().collect();
            for first in [[0u8, 0], [0xff, 0xff], [0, 1]] {
                let mut id = [0u8; 32];
                id[..2].copy_from_slice(&first);
                id[2..].copy_from_slice(&edge);
                ids.push(id);
            }
            ids.sort();
            ids.dedup();
            let file = IndexFile {
                packs: ids
                    .chunks(7)
                    .enumerate()
                    .map(|(p, chunk)| IndexedPack {
                        id: Id([p as u8; 32]),
                        marked: None,
                        blobs: chunk
                            .iter()
                            .enumerate()
                            .map(|(i, id)| PackEntry {
                                ty: BlobType::Data,
                                id: Id(*id),
                                offset: i as u32 * 100,
                                length: 100,
                                uncompressed_length: 0,
                            })
                            .collect(),
                    })
                    .collect(),
            };
            let idx = Index::from_files([&file]);
            prop_assert_eq!(idx.len(), ids.len());
            for (n, id) in ids.iter().enumerate() {
                let loc = idx.get(&Id(*id)).unwrap();
                prop_assert_eq!(loc.pack, Id([(n / 7) as u8; 32]));
                prop_assert_eq!(loc.entry.offset, (n % 7) as u32 * 100);
            }
            prop_assert_eq!(idx.get(&Id(probe)).is_some(), ids.contains(&probe));
        }
    }

    #[test]
    fn lookup() {
        let idx = Index::from_files([&sample(5)]);
        assert_eq!(idx.len(), 10);
        let loc = idx.get(&Id([42; 32])).unwrap();
        assert_eq!(loc.pack, Id([104; 32]));
        assert_eq!(loc.entry, entry(42, 100));
        assert!(idx.get(&Id([44; 32])).is_none());
        assert!(idx.contains(&Id([10; 32])));
        assert!(
            idx.get(&Id([20; 32])).is_some(),
            "blobs of marked packs are readable"
        );
        assert!(!idx.contains(&Id([20; 32])), "but not relied on for dedup");
        assert_eq!(idx.pack_marked(&Id([102; 32])), Some(1_800_000_000));
        assert_eq!(Index::BYTES_PER_BLOB, 32);
        let tree = idx.get(&Id([41; 32])).unwrap();
        assert_eq!(tree.entry.ty, BlobType::Tree);
        assert_eq!(tree.entry.length, 51);
    }
}
