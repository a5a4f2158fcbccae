//! Packs: many sealed blobs, then a sealed header that lists them, then the header's
//! length. A pack is immutable and named by the plain BLAKE3 of its bytes.
//!
//! ```text
//! blob_0 | blob_1 | … | blob_n-1 | sealed header | header length (u32 LE)
//! ```
//! Each blob is `seal(BLOB, zstd(plaintext) or plaintext)`. The header plaintext is
//! `version (u8 = 1) | count (u32 LE) | count × entry`, an entry being
//! `type (u8) | id (32) | offset (u32 LE) | length (u32 LE) | uncompressed length (u32 LE)`
//! where an uncompressed length of 0 means the blob is stored raw.

use serde::{Deserialize, Serialize};
use std::cell::RefCell;

use crate::crypto::{aad, SealingKey};
use crate::error::{Error, Result};
use crate::id::{Id, IdKey};

pub const PACK_HEADER_VERSION: u8 = 1;
pub const ENTRY_LEN: usize = 1 + 32 + 4 + 4 + 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobType {
    Data,
    Tree,
}

impl BlobType {
    pub fn to_byte(self) -> u8 {
        match self {
            BlobType::Data => 0,
            BlobType::Tree => 1,
        }
    }

    pub fn from_byte(b: u8) -> Option<BlobType> {
        match b {
            0 => Some(BlobType::Data),
            1 => Some(BlobType::Tree),
            _ => None,
        }
    }
}

/// Where one blob sits in its pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackEntry {
    #[serde(rename = "type")]
    pub ty: BlobType,
    pub id: Id,
    pub offset: u32,
    pub length: u32,
    /// 0 when stored raw.
    pub uncompressed_length: u32,
}

impl PackEntry {
    /// The blob's plaintext length: what it restores to.
    pub fn plaintext_len(&self) -> u64 {
        if self.uncompressed_length > 0 {
            self.uncompressed_length as u64
        } else {
            (self.length as usize).saturating_sub(crate::crypto::OVERHEAD) as u64
        }
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(self.ty.to_byte());
        out.extend_from_slice(&self.id.0);
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.length.to_le_bytes());
        out.extend_from_slice(&self.uncompressed_length.to_le_bytes());
    }

    /// Decodes one entry from exactly `ENTRY_LEN` bytes.
    pub fn decode(b: &[u8]) -> Option<PackEntry> {
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        Some(PackEntry {
            ty: BlobType::from_byte(b[0])?,
            id: Id::from_slice(&b[1..33])?,
            offset: u32_at(33),
            length: u32_at(37),
            uncompressed_length: u32_at(41),
        })
    }
}

/// Compresses (when it pays) and seals one blob; returns the sealed bytes and the
/// uncompressed length to record (0 = raw).
pub fn seal_blob(key: &SealingKey, level: i32, plain: &[u8]) -> (Vec<u8>, u32) {
    if level > 0 && plain.len() > 64 && !looks_random(plain) {
        if let Ok(z) = compress(plain, level) {
            // Keep the compressed form only when it saves at least 1/32.
            if z.len() < plain.len() - plain.len() / 32 {
                return (key.seal(aad::BLOB, &z), plain.len() as u32);
            }
        }
    }
    (key.seal(aad::BLOB, plain), 0)
}

/// Whether a blob is too random to be worth offering to zstd (media, archives,
/// encrypted files): the bytes of 16 KiB sampled across it use the byte values almost
/// evenly (over 7.9 bits per byte). zstd would spend a full pass finding that out and
/// then be refused by `seal_blob`'s 1/32 rule anyway. Small blobs are always tried.
pub fn looks_random(plain: &[u8]) -> bool {
    const WINDOWS: usize = 8;
    const WINDOW: usize = 2048;
    if plain.len() < 64 * 1024 {
        return false;
    }
    let mut counts = [0u32; 256];
    let step = (plain.len() - WINDOW) / (WINDOWS - 1);
    for w in 0..WINDOWS {
        for &b in &plain[w * step..w * step + WINDOW] {
            counts[b as usize] += 1;
        }
    }
    let n = (WINDOWS * WINDOW) as f64;
    let bits: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum();
    bits > 7.9
}

/// Opens, decompresses and verifies one blob read from `file`: the bytes returned are
/// exactly those whose keyed hash is `entry.id`, or an integrity error.
pub fn open_blob(
    key: &SealingKey,
    id_key: &IdKey,
    entry: &PackEntry,
    sealed: &[u8],
    file: &str,
) -> Result<Vec<u8>> {
    let what = |d: &str| Error::integrity(file, format!("blob {}: {d}", entry.id));
    let plain = key
        .open(aad::BLOB, sealed)
        .map_err(|_| what("authentication failed"))?;
    let mut out = Vec::new();
    inflate_and_check(id_key, entry, &plain, &mut out).map_err(what)?;
    Ok(if entry.uncompressed_length > 0 {
        out
    } else {
        plain
    })
}

/// What `open_blob` proves, without keeping the plaintext: `sealed` is decrypted in
/// place and a compressed blob is decompressed into `scratch`, reused blob after blob
/// (check reads every blob of a repository and keeps none).
pub fn verify_blob(
    key: &SealingKey,
    id_key: &IdKey,
    entry: &PackEntry,
    sealed: &mut [u8],
    scratch: &mut Vec<u8>,
) -> std::result::Result<(), &'static str> {
    let plain = key
        .open_in_place(aad::BLOB, sealed)
        .map_err(|_| "authentication failed")?;
    inflate_and_check(id_key, entry, plain, scratch)
}

/// The rest of opening a blob, once decrypted: a compressed one is decompressed into
/// `out` (emptied first) to exactly its indexed length, and the plaintext (`plain`
/// itself when stored raw) must hash to the blob's id.
fn inflate_and_check(
    id_key: &IdKey,
    entry: &PackEntry,
    plain: &[u8],
    out: &mut Vec<u8>,
) -> std::result::Result<(), &'static str> {
    let plain = if entry.uncompressed_length > 0 {
        let n = entry.uncompressed_length as usize;
        // A frame that says it holds another length fails here, before the index's
        // length is reserved.
        if let Ok(Some(size)) = zstd::zstd_safe::get_frame_content_size(plain) {
            if size != n as u64 {
                return Err("decompressed to the wrong length");
            }
        }
        out.clear();
        out.reserve(n);
        DECOMPRESSOR
            .with_borrow_mut(|slot| {
                if slot.is_none() {
                    *slot = Some(zstd::bulk::Decompressor::new()?);
                }
                slot.as_mut().unwrap().decompress_to_buffer(plain, out)
            })
            .map_err(|_| "does not decompress")?;
        if out.len() != n {
            return Err("decompressed to the wrong length");
        }
        &out[..]
    } else {
        plain
    };
    if id_key.blob_id(plain) != entry.id {
        return Err("content does not match its id");
    }
    Ok(())
}

thread_local! {
    // One zstd context per thread, kept: making one costs more than compressing or
    // decompressing a small blob (a tree, a tiny file), and a backup, restore or check
    // handles hundreds of thousands of them.
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

fn compress(plain: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    COMPRESSOR.with_borrow_mut(|slot| {
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            *slot = Some((level, zstd::bulk::Compressor::new(level)?));
        }
        slot.as_mut().unwrap().1.compress(plain)
    })
}

/// The largest sealed blob a pack takes: lengths are u32 and the in-memory index keeps
/// the top bit for the blob type.
pub const MAX_BLOB: usize = (1 << 31) - 1;

/// Collects sealed blobs into one pack.
#[derive(Default)]
pub struct PackWriter {
    data: Vec<u8>,
    entries: Vec<PackEntry>,
}

impl PackWriter {
    /// A writer whose buffer never reallocates below `capacity` bytes (no doubling copy
    /// of a large pack in memory: the buffer is reserved, and only written pages count).
    pub fn with_capacity(capacity: usize) -> PackWriter {
        PackWriter {
            data: Vec::with_capacity(capacity),
            entries: Vec::new(),
        }
    }

    pub fn add(&mut self, ty: BlobType, id: Id, sealed: &[u8], uncompressed_length: u32) {
        self.entries.push(PackEntry {
            ty,
            id,
            offset: self.data.len() as u32,
            length: sealed.len() as u32,
            uncompressed_length,
        });
        self.data.extend_from_slice(sealed);
    }

    pub fn size(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The finished pack: its id, bytes and entries.
    pub fn finish(mut self, key: &SealingKey) -> (Id, Vec<u8>, Vec<PackEntry>) {
        let header = key.seal(aad::PACK_HEADER, &encode_header(&self.entries));
        self.data.extend_from_slice(&header);
        self.data
            .extend_from_slice(&(header.len() as u32).to_le_bytes());
        (Id::of_file(&self.data), self.data, self.entries)
    }
}

pub fn encode_header(entries: &[PackEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + entries.len() * ENTRY_LEN);
    out.push(PACK_HEADER_VERSION);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        e.encode_into(&mut out);
    }
    out
}

/// Decodes a header plaintext and checks that every entry lies inside the blob area
/// (`blobs_len` bytes) of the pack named `file`.
pub fn decode_header(plain: &[u8], blobs_len: u64, file: &str) -> Result<Vec<PackEntry>> {
    let bad = |d: String| Error::integrity(file, d);
    if plain.len() < 5 {
        return Err(bad("pack header is too short".into()));
    }
    if plain[0] != PACK_HEADER_VERSION {
        return Err(Error::Unsupported(format!(
            "{file}: pack header version {} is not known to this cairn",
            plain[0]
        )));
    }
    let count = u32::from_le_bytes(plain[1..5].try_into().unwrap()) as usize;
    let body = &plain[5..];
    if body.len() != count.saturating_mul(ENTRY_LEN) {
        return Err(bad(format!(
            "pack header says {count} blobs but has {} bytes",
            body.len()
        )));
    }
    let mut entries = Vec::with_capacity(count);
    for chunk in body.chunks_exact(ENTRY_LEN) {
        let e = PackEntry::decode(chunk)
            .ok_or_else(|| bad("unknown blob type in pack header".into()))?;
        if e.offset as u64 + e.length as u64 > blobs_len {
            return Err(bad(format!("blob {} lies outside the pack", e.id)));
        }
        entries.push(e);
    }
    Ok(entries)
}

/// Splits a pack's trailing 4 bytes off: returns (sealed header range start, header length).
pub fn header_location(pack_len: u64, trailer: &[u8], file: &str) -> Result<(u64, usize)> {
    let hl = u32::from_le_bytes(
        trailer
            .try_into()
            .map_err(|_| Error::integrity(file, "pack is too short"))?,
    ) as u64;
    if pack_len < 4 || hl + 4 > pack_len {
        return Err(Error::integrity(file, "pack header length is out of range"));
    }
    Ok((pack_len - 4 - hl, hl as usize))
}

/// Parses a whole pack held in memory: its verified header entries.
pub fn parse_pack(bytes: &[u8], key: &SealingKey, file: &str) -> Result<Vec<PackEntry>> {
    if bytes.len() < 4 {
        return Err(Error::integrity(file, "pack is too short"));
    }
    let (start, hl) = header_location(bytes.len() as u64, &bytes[bytes.len() - 4..], file)?;
    parse_header(
        &bytes[start as usize..start as usize + hl],
        start,
        key,
        file,
    )
}

/// Moves a pack read front to back (now at `*pos`) on to `offset`, the bytes passed
/// going to `passed`, then reads `len` bytes into `blob` (replacing what it held).
/// False when the stream ends first. How `check` and prune's repack hold one blob of a
/// pack at a time.
pub fn read_forward(
    r: &mut dyn std::io::Read,
    pos: &mut u64,
    offset: u64,
    len: u64,
    passed: &mut dyn std::io::Write,
    blob: &mut Vec<u8>,
) -> std::io::Result<bool> {
    use std::io::Read;
    debug_assert!(offset >= *pos, "a stream only moves forward");
    let gap = offset - *pos;
    let skipped = std::io::copy(&mut r.take(gap), passed)?;
    *pos += skipped;
    blob.clear();
    *pos += r.take(len).read_to_end(blob)? as u64;
    Ok(skipped == gap && blob.len() as u64 == len)
}

/// Opens and decodes a pack's sealed header, which starts at `start` (the length of
/// the blobs before it).
pub fn parse_header(
    sealed: &[u8],
    start: u64,
    key: &SealingKey,
    file: &str,
) -> Result<Vec<PackEntry>> {
    let plain = key
        .open(aad::PACK_HEADER, sealed)
        .map_err(|_| Error::integrity(file, "pack header authentication failed"))?;
    decode_header(&plain, start, file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Random bytes skip zstd and are stored raw; text, zeros, and random bytes with
    /// a compressible stretch big enough to show in the samples are still compressed.
    #[test]
    fn random_blobs_are_stored_raw_without_trying_zstd() {
        let key = SealingKey::new(&[7; 32]);
        let random: Vec<u8> = (0..(1 << 20) / 32)
            .flat_map(|_| crate::crypto::public_random::<32>())
            .collect();
        assert!(looks_random(&random));
        assert_eq!(seal_blob(&key, 3, &random).1, 0, "stored raw");
        let text = b"the quick brown fox jumps over the lazy dog 0123456789\n".repeat(20_000);
        assert!(!looks_random(&text));
        assert_eq!(
            seal_blob(&key, 3, &text).1 as usize,
            text.len(),
            "compressed"
        );
        assert!(!looks_random(&vec![0u8; 1 << 20]));
        // Half random, half zeros: the zeros show in the samples; zstd halves it.
        let mut half = random[..1 << 19].to_vec();
        half.extend(vec![0u8; 1 << 19]);
        assert!(!looks_random(&half));
        assert!(seal_blob(&key, 3, &half).0.len() < 600 << 10);
        // Small blobs are always offered to zstd.
        assert!(!looks_random(&random[..60_000]));
    }

    fn build(blobs: &[Vec<u8>], key: &SealingKey, idk: &IdKey) -> (Vec<u8>, Vec<PackEntry>) {
        let mut w = PackWriter::default();
        for b in blobs {
            let (sealed, ul) = seal_blob(key, 3, b);
            w.add(BlobType::Data, idk.blob_id(b), &sealed, ul);
        }
        let (id, bytes, entries) = w.finish(key);
        assert_eq!(id, Id::of_file(&bytes));
        (bytes, entries)
    }

    /// The zstd contexts are kept per thread: a blob that fails to decompress (its
    /// recorded length too short, or its compressed bytes garbage) leaves nothing
    /// behind that spoils the next blob, and switching levels compresses right.
    #[test]
    fn a_failed_blob_does_not_spoil_the_next_on_the_same_thread() {
        let key = SealingKey::new(&[5; 32]);
        let idk = IdKey::new([6; 32]);
        let plain = b"cairn ".repeat(10_000);
        let (sealed, ul) = seal_blob(&key, 3, &plain);
        assert!(ul > 0, "compressible data is stored compressed");
        let entry = PackEntry {
            ty: BlobType::Data,
            id: idk.blob_id(&plain),
            offset: 0,
            length: sealed.len() as u32,
            uncompressed_length: ul,
        };
        let short = PackEntry {
            uncompressed_length: ul - 1,
            ..entry
        };
        assert!(open_blob(&key, &idk, &short, &sealed, "p").is_err());
        let garbage = key.seal(aad::BLOB, &[0xAB; 500]);
        assert!(open_blob(&key, &idk, &entry, &garbage, "p").is_err());
        assert_eq!(open_blob(&key, &idk, &entry, &sealed, "p").unwrap(), plain);
        for level in [1, 19, 3] {
            let (sealed, ul) = seal_blob(&key, level, &plain);
            let e = PackEntry {
                length: sealed.len() as u32,
                uncompressed_length: ul,
                ..entry
            };
            assert_eq!(open_blob(&key, &idk, &e, &sealed, "p").unwrap(), plain);
        }
        // check's in-place form agrees, one scratch buffer across all of them.
        let mut scratch = Vec::new();
        let mut verify = |e: &PackEntry, s: &[u8]| {
            verify_blob(&key, &idk, e, &mut s.to_vec(), &mut scratch).is_ok()
        };
        assert!(!verify(&short, &sealed));
        let longer = PackEntry {
            uncompressed_length: ul + 1,
            ..entry
        };
        assert!(!verify(&longer, &sealed));
        assert!(!verify(&entry, &garbage));
        assert!(verify(&entry, &sealed));
        let raw = key.seal(aad::BLOB, &plain);
        let stored_raw = PackEntry {
            uncompressed_length: 0,
            length: raw.len() as u32,
            ..entry
        };
        assert!(verify(&stored_raw, &raw));
        assert!(
            !verify(&stored_raw, &sealed),
            "compressed bytes taken as raw"
        );
    }

    proptest! {
        #[test]
        fn round_trip_and_any_flipped_byte_detected(
            blobs in proptest::collection::vec(proptest::collection::vec(0u8..4, 0..400), 1..5),
            pos in any::<usize>(), bit in 0u8..8,
        ) {
            let key = SealingKey::new(&[5; 32]);
            let idk = IdKey::new([6; 32]);
            let (mut bytes, entries) = build(&blobs, &key, &idk);
            let parsed = parse_pack(&bytes, &key, "p").unwrap();
            prop_assert_eq!(&parsed, &entries);
            for (e, b) in parsed.iter().zip(&blobs) {
                let s = &bytes[e.offset as usize..(e.offset + e.length) as usize];
                prop_assert_eq!(&open_blob(&key, &idk, e, s, "p").unwrap(), b);
            }
            // Flip one bit anywhere: the header or some blob must fail to verify.
            let i = pos % bytes.len();
            bytes[i] ^= 1 << bit;
            let ok = match parse_pack(&bytes, &key, "p") {
                Err(_) => false,
                Ok(parsed) => parsed.iter().all(|e| {
                    let end = (e.offset + e.length) as usize;
                    let sealed = &bytes[e.offset as usize..end];
                    let opened = open_blob(&key, &idk, e, sealed, "p").is_ok();
                    let verified =
                        verify_blob(&key, &idk, e, &mut sealed.to_vec(), &mut Vec::new()).is_ok();
                    assert_eq!(opened, verified, "open_blob and verify_blob disagree");
                    opened
                }),
            };
            prop_assert!(!ok, "flipped byte {} went unnoticed", i);
        }
    }

    #[test]
    fn compressible_blobs_are_compressed_random_ones_not() {
        let key = SealingKey::new(&[5; 32]);
        let (_, ul) = seal_blob(&key, 3, &vec![b'a'; 10_000]);
        assert_eq!(ul, 10_000);
        let mut x = 88172645463325252u64;
        let random: Vec<u8> = (0..10_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        let (sealed, ul) = seal_blob(&key, 3, &random);
        assert_eq!(ul, 0);
        assert_eq!(sealed.len(), random.len() + crate::crypto::OVERHEAD);
        let (_, ul) = seal_blob(&key, 0, &vec![b'a'; 10_000]);
        assert_eq!(ul, 0, "level 0 means off");
    }

    #[test]
    fn truncated_pack_is_an_error() {
        let key = SealingKey::new(&[5; 32]);
        let idk = IdKey::new([6; 32]);
        let (bytes, _) = build(&[b"hello".to_vec()], &key, &idk);
        for cut in [0, 3, bytes.len() / 2, bytes.len() - 1] {
            assert!(parse_pack(&bytes[..cut], &key, "p").is_err());
        }
    }
}
