//! The `config` file: what a reader must know before touching anything else.

use serde::{Deserialize, Serialize};

use crate::chunker::ChunkerParams;
use crate::crypto::{aad, random_bytes, SealingKey};
use crate::error::{Error, Result};
use crate::id::Id;

/// The repository format this build writes and the newest it reads.
pub const REPO_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub version: u32,
    /// Random; tells repositories apart (and later, caches).
    pub id: Id,
    pub chunker: ChunkerParams,
    /// zstd level for blobs; 0 stores them uncompressed.
    pub compression: i32,
    /// Packs are closed once they reach this many bytes.
    pub pack_size: u32,
}

impl Config {
    pub fn new(compression: i32) -> Config {
        Config {
            version: REPO_VERSION,
            id: Id(random_bytes()),
            chunker: ChunkerParams::default(),
            compression,
            pack_size: 16 * 1024 * 1024,
        }
    }

    pub fn encode(&self, key: &SealingKey) -> Vec<u8> {
        key.seal(
            aad::CONFIG,
            &serde_json::to_vec(self).expect("config serializes"),
        )
    }

    pub fn decode(sealed: &[u8], key: &SealingKey) -> Result<Config> {
        let bad = |d: String| Error::integrity("config", d);
        let plain = key
            .open(aad::CONFIG, sealed)
            .map_err(|_| bad("authentication failed (damaged, or not this repository's)".into()))?;
        Self::decode_plain(&plain)
    }

    /// Decodes and checks an opened (decrypted) config.
    pub fn decode_plain(plain: &[u8]) -> Result<Config> {
        let bad = |d: String| Error::integrity("config", d);
        // Read the version alone first: a newer format may not parse as this one.
        #[derive(Deserialize)]
        struct Versioned {
            version: u32,
        }
        let v: Versioned = serde_json::from_slice(plain).map_err(|e| bad(e.to_string()))?;
        if v.version > REPO_VERSION {
            return Err(Error::Unsupported(format!(
                "repository format version {} is newer than this cairn supports ({REPO_VERSION}); upgrade cairn",
                v.version
            )));
        }
        let c: Config = serde_json::from_slice(plain).map_err(|e| bad(e.to_string()))?;
        c.chunker.validate().map_err(|e| bad(e.to_string()))?;
        if !(1024 * 1024..=1 << 30).contains(&c.pack_size) || !(0..=22).contains(&c.compression) {
            return Err(bad("pack size or compression level out of range".into()));
        }
        Ok(c)
    }
}

/// `--compression off|fastest|auto|max|LEVEL` to a zstd level.
pub fn parse_compression(s: &str) -> Result<i32> {
    match s {
        "off" => Ok(0),
        "fastest" => Ok(1),
        "auto" => Ok(3),
        "max" => Ok(19),
        n => match n.parse::<i32>() {
            Ok(l) if (0..=22).contains(&l) => Ok(l),
            _ => Err(Error::Usage(format!(
                "--compression must be off, fastest, auto, max or a level 0-22, not {n:?}"
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_newer_version_refused() {
        let k = SealingKey::new(&[1; 32]);
        let c = Config::new(3);
        assert_eq!(Config::decode(&c.encode(&k), &k).unwrap(), c);
        let newer = Config {
            version: REPO_VERSION + 1,
            ..c.clone()
        };
        let err = Config::decode(&newer.encode(&k), &k).unwrap_err();
        assert!(matches!(err, Error::Unsupported(_)), "{err}");
        let mut bad = c.encode(&k);
        bad[30] ^= 4;
        assert!(matches!(
            Config::decode(&bad, &k),
            Err(Error::Integrity { .. })
        ));
    }

    #[test]
    fn compression_names() {
        assert_eq!(parse_compression("auto").unwrap(), 3);
        assert_eq!(parse_compression("off").unwrap(), 0);
        assert_eq!(parse_compression("7").unwrap(), 7);
        assert!(parse_compression("99").is_err());
    }
}
