//! Snapshots (`snapshots/<id>`): sealed JSON manifests, one file each.

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use crate::crypto::{aad, SealingKey};
use crate::error::{Error, Result};
use crate::id::Id;

pub const SNAPSHOT_VERSION: u32 = 1;

/// What a backup did; field names follow restic's JSON summary.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unmodified: u64,
    pub dirs_new: u64,
    pub dirs_changed: u64,
    pub dirs_unmodified: u64,
    /// Blobs added to the repository: count, plaintext bytes, stored bytes.
    pub data_blobs: u64,
    pub tree_blobs: u64,
    pub data_added: u64,
    pub data_added_packed: u64,
    pub total_files_processed: u64,
    pub total_bytes_processed: u64,
    /// Bytes read from the source (unchanged files are not read).
    pub bytes_read: u64,
    pub errors: u64,
    pub backup_start: Option<DateTime<FixedOffset>>,
    pub backup_end: Option<DateTime<FixedOffset>>,
    pub total_duration: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u32,
    /// When the snapshot was taken, with the offset of the machine that took it.
    pub time: DateTime<FixedOffset>,
    pub tree: Id,
    pub paths: Vec<String>,
    pub hostname: String,
    pub username: String,
    pub uid: u32,
    pub gid: u32,
    #[serde(default)]
    pub tags: Vec<String>,
    pub parent: Option<Id>,
    pub program_version: String,
    pub summary: Option<Summary>,
    /// Set on a snapshot written by `copy`: the snapshot it is a copy of, in the
    /// repository where that one was first taken (a copy of a copy keeps the first
    /// origin). Absent on snapshots taken by `backup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<Origin>,
}

/// Where a copied snapshot came from: a repository (its config id) and a snapshot in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Origin {
    pub repository: Id,
    pub snapshot: Id,
}

impl Snapshot {
    pub fn encode(&self, key: &SealingKey) -> Vec<u8> {
        key.seal(
            aad::SNAPSHOT,
            &serde_json::to_vec(self).expect("snapshot serializes"),
        )
    }

    pub fn decode(sealed: &[u8], key: &SealingKey, file: &str) -> Result<Snapshot> {
        let bad = |d: String| Error::integrity(file, d);
        let plain = key
            .open(aad::SNAPSHOT, sealed)
            .map_err(|_| bad("authentication failed".into()))?;
        Self::decode_plain(&plain, file)
    }

    /// Decodes an opened (decrypted) snapshot.
    pub fn decode_plain(plain: &[u8], file: &str) -> Result<Snapshot> {
        let bad = |d: String| Error::integrity(file, d);
        #[derive(Deserialize)]
        struct Versioned {
            version: u32,
        }
        let v: Versioned = serde_json::from_slice(plain).map_err(|e| bad(e.to_string()))?;
        if v.version > SNAPSHOT_VERSION {
            return Err(Error::Unsupported(format!(
                "{file}: snapshot version {} is newer than this cairn supports; upgrade cairn",
                v.version
            )));
        }
        serde_json::from_slice(plain).map_err(|e| bad(e.to_string()))
    }

    pub fn has_tag(&self, t: &str) -> bool {
        self.tags.iter().any(|x| x == t)
    }

    /// The snapshot this one is, first taken as `id` in repository `repo`, unless it is
    /// itself a copy: then the one it was copied from.
    pub fn origin(&self, repo: Id, id: Id) -> Origin {
        self.original.unwrap_or(Origin {
            repository: repo,
            snapshot: id,
        })
    }
}

/// What `Repository::snapshots` found: the readable snapshots (oldest first) and the
/// files that could not be read. Derefs to the list, so it reads like a `Vec`.
#[derive(Debug, Default)]
pub struct SnapshotSet {
    pub list: Vec<(Id, Snapshot)>,
    /// File name and why it could not be read (damaged, or written by a newer cairn).
    pub unreadable: Vec<(String, Error)>,
}

impl SnapshotSet {
    /// One line per unreadable snapshot, for the caller to print as a warning.
    pub fn warnings(&self) -> Vec<String> {
        self.unreadable
            .iter()
            .map(|(_, e)| format!("skipping unreadable snapshot: {e}"))
            .collect()
    }

    /// The error of an unreadable snapshot file, for a command that asked for it.
    pub fn error_of(&self, name: &str) -> Option<Error> {
        let (_, e) = self.unreadable.iter().find(|(n, _)| n == name)?;
        Some(match e {
            Error::Integrity { file, detail } => Error::integrity(file.clone(), detail.clone()),
            Error::Unsupported(m) => Error::Unsupported(m.clone()),
            other => Error::integrity(
                crate::backend::FileType::Snapshot.path(name),
                other.to_string(),
            ),
        })
    }
}

impl std::ops::Deref for SnapshotSet {
    type Target = Vec<(Id, Snapshot)>;
    fn deref(&self) -> &Self::Target {
        &self.list
    }
}

impl std::ops::DerefMut for SnapshotSet {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.list
    }
}

impl IntoIterator for SnapshotSet {
    type Item = (Id, Snapshot);
    type IntoIter = std::vec::IntoIter<(Id, Snapshot)>;
    fn into_iter(self) -> Self::IntoIter {
        self.list.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Snapshot {
        Snapshot {
            version: SNAPSHOT_VERSION,
            time: DateTime::parse_from_rfc3339("2026-11-20T14:00:05.123456789+01:00").unwrap(),
            tree: Id([1; 32]),
            paths: vec!["/etc".into()],
            hostname: "h".into(),
            username: "u".into(),
            uid: 0,
            gid: 0,
            tags: vec!["nightly".into()],
            parent: None,
            program_version: "cairn 0.1.0".into(),
            summary: Some(Summary::default()),
            original: None,
        }
    }

    proptest! {
        #[test]
        fn round_trip_and_flip(pos in any::<usize>(), bit in 0u8..8) {
            let k = SealingKey::new(&[4; 32]);
            let s = sample();
            let mut b = s.encode(&k);
            prop_assert_eq!(Snapshot::decode(&b, &k, "s").unwrap(), s);
            let i = pos % b.len();
            b[i] ^= 1 << bit;
            prop_assert!(Snapshot::decode(&b, &k, "s").is_err());
        }
    }

    #[test]
    fn original_is_optional_and_round_trips() {
        let k = SealingKey::new(&[4; 32]);
        let plain = serde_json::to_string(&sample()).unwrap();
        assert!(!plain.contains("original"), "absent unless copied: {plain}");
        // A snapshot written before the field existed still decodes.
        assert_eq!(
            Snapshot::decode_plain(plain.as_bytes(), "s").unwrap(),
            sample()
        );
        let copied = Snapshot {
            original: Some(Origin {
                repository: Id([7; 32]),
                snapshot: Id([8; 32]),
            }),
            ..sample()
        };
        let back = Snapshot::decode(&copied.encode(&k), &k, "s").unwrap();
        assert_eq!(back, copied);
        assert_eq!(
            back.origin(Id([1; 32]), Id([2; 32])),
            copied.original.unwrap()
        );
        assert_eq!(
            sample().origin(Id([1; 32]), Id([2; 32])),
            Origin {
                repository: Id([1; 32]),
                snapshot: Id([2; 32])
            }
        );
    }

    #[test]
    fn time_keeps_nanoseconds_and_offset() {
        let k = SealingKey::new(&[4; 32]);
        let s = Snapshot::decode(&sample().encode(&k), &k, "s").unwrap();
        assert_eq!(s.time.timestamp_subsec_nanos(), 123456789);
        assert_eq!(s.time.offset().local_minus_utc(), 3600);
    }
}
