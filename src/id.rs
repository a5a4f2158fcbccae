//! Ids: 32-byte BLAKE3 digests. Blob ids are keyed (the key comes from the master key,
//! so an id says nothing about content to someone without it); file ids are plain
//! BLAKE3 of the stored bytes, so any file can be checked against its own name.

use std::fmt;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

pub const ID_LEN: usize = 32;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Id(pub [u8; ID_LEN]);

impl Id {
    /// Plain BLAKE3 of `data`: the name of a stored file.
    pub fn of_file(data: &[u8]) -> Id {
        Id(*blake3::hash(data).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    pub fn from_hex(s: &str) -> Result<Id> {
        let mut out = [0u8; ID_LEN];
        hex::decode_to_slice(s, &mut out)
            .map_err(|_| Error::Usage(format!("{s:?} is not a 64-digit hex id")))?;
        Ok(Id(out))
    }

    pub fn from_slice(b: &[u8]) -> Option<Id> {
        b.try_into().ok().map(Id)
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

/// Hex in JSON, 32 raw bytes in binary formats.
impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_hex())
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            Id::from_hex(&s).map_err(de::Error::custom)
        } else {
            <[u8; ID_LEN]>::deserialize(d).map(Id)
        }
    }
}

/// The secret that turns content into blob ids (keyed BLAKE3).
#[derive(Clone)]
pub struct IdKey([u8; 32]);

impl IdKey {
    pub fn new(key: [u8; 32]) -> Self {
        IdKey(key)
    }

    pub fn blob_id(&self, data: &[u8]) -> Id {
        Id(*blake3::keyed_hash(&self.0, data).as_bytes())
    }

    /// The key itself: for `init --copy-chunker-params`, which shares it with a new
    /// repository (sealed in that one's config).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Whether both keys give every blob the same id.
    pub fn same_as(&self, other: &IdKey) -> bool {
        self.0 == other.0
    }
}

impl Drop for IdKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_json() {
        let id = Id::of_file(b"hello");
        assert_eq!(Id::from_hex(&id.to_hex()).unwrap(), id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{}\"", id.to_hex()));
        assert_eq!(serde_json::from_str::<Id>(&json).unwrap(), id);
        let bin = bincode::serialize(&id).unwrap();
        assert_eq!(bin, id.0.to_vec());
        assert!(Id::from_hex("abc").is_err());
    }

    #[test]
    fn keyed_ids_depend_on_key() {
        let a = IdKey::new([1; 32]).blob_id(b"x");
        let b = IdKey::new([2; 32]).blob_id(b"x");
        assert_ne!(a, b);
        assert_ne!(a, Id::of_file(b"x"));
    }
}
