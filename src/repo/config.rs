//! The `config` file: what a reader must know before touching anything else.

use serde::{Deserialize, Serialize};

use crate::chunker::ChunkerParams;
use crate::crypto::{aad, random_bytes, MasterKey, SealingKey};
use crate::error::{Error, Result};
use crate::id::Id;

/// The repository format this build writes for an ordinary repository.
pub const REPO_VERSION: u32 = 1;

/// The format of a repository whose blob ids and chunk boundaries come from another
/// repository (`shared_keys`); the newest this build reads. An older cairn, which would
/// derive other ids and take every blob for damaged, refuses it and says "upgrade".
pub const REPO_VERSION_SHARED_KEYS: u32 = 2;

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
    /// The blob id key and chunker gear seed of another repository, taken over by
    /// `init --copy-chunker-params` so the two deduplicate against each other; absent,
    /// both are derived from this repository's master key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_keys: Option<SharedKeys>,
}

/// Working keys shared with another repository (docs/format.md §5).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedKeys {
    /// The keyed-BLAKE3 key of blob ids, 64 hex digits.
    #[serde(with = "hex32")]
    pub blob_id_key: [u8; 32],
    pub chunker_seed: u64,
}

impl std::fmt::Debug for SharedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedKeys(..)")
    }
}

impl Drop for SharedKeys {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.blob_id_key);
    }
}

mod hex32 {
    use serde::{de, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = zeroize::Zeroizing::new(String::deserialize(d)?);
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.as_bytes(), &mut out)
            .map_err(|_| de::Error::custom("blob_id_key is not 64 hex digits"))?;
        Ok(out)
    }
}

impl Config {
    pub fn new(compression: i32) -> Config {
        Config {
            version: REPO_VERSION,
            id: Id(random_bytes()),
            chunker: ChunkerParams::default(),
            compression,
            pack_size: 16 * 1024 * 1024,
            shared_keys: None,
        }
    }

    /// A new config that chunks and names blobs exactly as `source` does (its sizes,
    /// gear seed and blob id key), so data stored in one is found in the other.
    pub fn sharing_keys_of(compression: i32, source: &Config, key: &MasterKey) -> Config {
        Config {
            version: REPO_VERSION_SHARED_KEYS,
            chunker: source.chunker,
            shared_keys: Some(SharedKeys {
                blob_id_key: *key.id_key.as_bytes(),
                chunker_seed: key.chunker_seed,
            }),
            ..Config::new(compression)
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
        if v.version > REPO_VERSION_SHARED_KEYS {
            return Err(Error::Unsupported(format!(
                "repository format version {} is newer than this cairn supports ({REPO_VERSION_SHARED_KEYS}); upgrade cairn",
                v.version
            )));
        }
        let c: Config = serde_json::from_slice(plain).map_err(|e| bad(e.to_string()))?;
        c.chunker.validate().map_err(|e| bad(e.to_string()))?;
        if !(1024 * 1024..=1 << 30).contains(&c.pack_size) || !(0..=22).contains(&c.compression) {
            return Err(bad("pack size or compression level out of range".into()));
        }
        if c.shared_keys.is_some() != (c.version == REPO_VERSION_SHARED_KEYS) {
            return Err(bad(
                "shared keys and format version 2 go together (one without the other)".into(),
            ));
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
            version: REPO_VERSION_SHARED_KEYS + 1,
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
    fn shared_keys_round_trip_and_need_version_2() {
        let k = SealingKey::new(&[1; 32]);
        let source_key = MasterKey::from_secret([5; 32]);
        let mut source = Config::new(3);
        source.chunker.min_size = 4096;
        let c = Config::sharing_keys_of(0, &source, &source_key);
        assert_eq!(c.version, 2);
        assert_eq!(c.chunker, source.chunker);
        assert_ne!(c.id, source.id);
        let back = Config::decode(&c.encode(&k), &k).unwrap();
        assert_eq!(back, c);
        let shared = back.shared_keys.as_ref().unwrap();
        assert_eq!(&shared.blob_id_key, source_key.id_key.as_bytes());
        assert_eq!(shared.chunker_seed, source_key.chunker_seed);
        assert!(!format!("{back:?}").contains(&hex::encode(shared.blob_id_key)));
        // An ordinary config stays version 1 and carries no field.
        let plain = serde_json::to_string(&Config::new(3)).unwrap();
        assert!(plain.contains("\"version\":1") && !plain.contains("shared_keys"));
        // Either half alone is refused.
        let mismatched = Config {
            version: REPO_VERSION,
            ..c.clone()
        };
        assert!(Config::decode(&mismatched.encode(&k), &k).is_err());
        let mismatched = Config {
            version: REPO_VERSION_SHARED_KEYS,
            ..Config::new(3)
        };
        assert!(Config::decode(&mismatched.encode(&k), &k).is_err());
    }

    #[test]
    fn compression_names() {
        assert_eq!(parse_compression("auto").unwrap(), 3);
        assert_eq!(parse_compression("off").unwrap(), 0);
        assert_eq!(parse_compression("7").unwrap(), 7);
        assert!(parse_compression("99").is_err());
    }
}
