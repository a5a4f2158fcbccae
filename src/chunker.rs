//! Content-defined chunking: FastCDC (2020) with the gear table seeded from the master
//! key, so chunk boundaries, and so chunk sizes, do not fingerprint known files.

use std::io::Read;

use fastcdc::v2020::{FastCDC, Normalization, StreamCDC};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
}

impl Default for ChunkerParams {
    /// 512 KiB / 1 MiB / 8 MiB, restic's average: small enough to dedup edits inside
    /// large files, large enough that the index stays small (see docs/format.md).
    fn default() -> Self {
        ChunkerParams {
            min_size: 512 * 1024,
            avg_size: 1024 * 1024,
            max_size: 8 * 1024 * 1024,
        }
    }
}

impl ChunkerParams {
    /// fastcdc's own bounds; a config outside them is refused rather than panicking.
    pub fn validate(&self) -> Result<()> {
        let ok = (64..=1_048_576).contains(&self.min_size)
            && (256..=4_194_304).contains(&self.avg_size)
            && (1024..=16_777_216).contains(&self.max_size)
            && self.min_size <= self.avg_size
            && self.avg_size <= self.max_size
            && [self.min_size, self.avg_size, self.max_size]
                .iter()
                .all(|s| s % 2 == 0);
        if ok {
            Ok(())
        } else {
            Err(Error::Other(format!("invalid chunker sizes {self:?}")))
        }
    }

    /// Cut points `(offset, length)` of data held in memory; the same boundaries as
    /// `chunks` gives for the same bytes.
    pub fn cut_points(&self, data: &[u8], seed: u64) -> Vec<(usize, usize)> {
        if data.is_empty() {
            return Vec::new();
        }
        if data.len() <= self.min_size as usize {
            // Never cut below the minimum size: skip building the seeded gear tables.
            return vec![(0, data.len())];
        }
        FastCDC::with_level_and_seed(
            data,
            self.min_size as usize,
            self.avg_size as usize,
            self.max_size as usize,
            Normalization::Level1,
            seed,
        )
        .map(|c| (c.offset, c.length))
        .collect()
    }

    /// Splits a stream into chunks; each item is one chunk's bytes.
    pub fn chunks<R: Read>(&self, source: R, seed: u64) -> impl Iterator<Item = Result<Vec<u8>>> {
        StreamCDC::with_level_and_seed(
            source,
            self.min_size as usize,
            self.avg_size as usize,
            self.max_size as usize,
            Normalization::Level1,
            seed,
        )
        .map(|r| {
            r.map(|c| c.data).map_err(|e| match e {
                fastcdc::v2020::Error::IoError(e) => Error::io("reading", e),
                other => Error::Other(format!("chunking failed: {other:?}")),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(len: usize, mut x: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    const SMALL: ChunkerParams = ChunkerParams {
        min_size: 4096,
        avg_size: 16384,
        max_size: 65536,
    };

    #[test]
    fn chunks_cover_input_and_resynchronise() {
        let data = pseudo_random(1 << 20, 1);
        let a: Vec<Vec<u8>> = SMALL.chunks(&data[..], 9).map(|c| c.unwrap()).collect();
        assert_eq!(a.concat(), data);
        assert!(a.len() > 20);
        let mut edited = data.clone();
        edited.splice(500_000..500_000, pseudo_random(1000, 2));
        let b: Vec<Vec<u8>> = SMALL.chunks(&edited[..], 9).map(|c| c.unwrap()).collect();
        let shared = b.iter().filter(|c| a.contains(c)).count();
        assert!(
            shared + 3 >= a.len(),
            "only {shared} of {} chunks shared",
            a.len()
        );
    }

    #[test]
    fn in_memory_cut_points_match_the_stream() {
        let data = pseudo_random(3 << 20, 4);
        let streamed: Vec<usize> = SMALL
            .chunks(&data[..], 5)
            .map(|c| c.unwrap().len())
            .collect();
        let cut: Vec<usize> = SMALL.cut_points(&data, 5).iter().map(|c| c.1).collect();
        assert_eq!(streamed, cut);
        let defaults = ChunkerParams::default();
        let streamed: Vec<usize> = defaults
            .chunks(&data[..], 5)
            .map(|c| c.unwrap().len())
            .collect();
        let cut: Vec<usize> = defaults.cut_points(&data, 5).iter().map(|c| c.1).collect();
        let small = &data[..1000];
        assert_eq!(defaults.cut_points(small, 5), vec![(0, 1000)]);
        assert!(defaults.cut_points(&[], 5).is_empty());
        assert_eq!(streamed, cut);
    }

    #[test]
    fn seed_changes_boundaries() {
        let data = pseudo_random(1 << 20, 3);
        let a: Vec<usize> = SMALL
            .chunks(&data[..], 1)
            .map(|c| c.unwrap().len())
            .collect();
        let b: Vec<usize> = SMALL
            .chunks(&data[..], 2)
            .map(|c| c.unwrap().len())
            .collect();
        assert_ne!(a, b);
    }

    #[test]
    fn defaults_are_valid() {
        ChunkerParams::default().validate().unwrap();
        assert!(ChunkerParams {
            min_size: 10,
            ..SMALL
        }
        .validate()
        .is_err());
    }
}
