//! `forget`: which snapshots a retention policy keeps, group by group (restic's rules;
//! docs/forget.md has worked examples). Removing snapshot files is all it does; the data
//! they alone referenced goes with the next `prune`.

pub mod policy;

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset};
use serde::Serialize;

use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::snapshot::Snapshot;
use crate::repo::Repository;
pub use policy::{Decision, Duration, KeepPolicy};

/// What snapshots are grouped by before the policy is applied (default host, paths).
#[derive(Clone, Copy, Debug, Default)]
pub struct GroupBy {
    pub host: bool,
    pub paths: bool,
    pub tags: bool,
}

impl std::str::FromStr for GroupBy {
    type Err = Error;
    fn from_str(s: &str) -> Result<GroupBy> {
        let mut g = GroupBy::default();
        for f in s.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            match f {
                "host" => g.host = true,
                "paths" => g.paths = true,
                "tags" => g.tags = true,
                other => {
                    return Err(Error::Usage(format!(
                        "--group-by takes host, paths and tags, not {other:?}"
                    )))
                }
            }
        }
        Ok(g)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct GroupKey {
    pub host: Option<String>,
    pub paths: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct GroupResult {
    #[serde(flatten)]
    pub key: GroupKey,
    /// Newest first.
    pub decisions: Vec<Decision>,
}

fn key_of(s: &Snapshot, by: GroupBy) -> GroupKey {
    let sorted = |v: &Vec<String>| {
        let mut v = v.clone();
        v.sort();
        v
    };
    GroupKey {
        host: by.host.then(|| s.hostname.clone()),
        paths: by.paths.then(|| sorted(&s.paths)),
        tags: by.tags.then(|| sorted(&s.tags)),
    }
}

/// A group's key and its snapshots.
type Members<'a> = (GroupKey, Vec<(Id, &'a Snapshot)>);

/// Groups `snaps` and applies the policy to each group.
pub fn plan(
    snaps: &[(Id, Snapshot)],
    by: GroupBy,
    policy: &KeepPolicy,
    now: DateTime<FixedOffset>,
) -> Result<Vec<GroupResult>> {
    let mut groups: BTreeMap<String, Members> = BTreeMap::new();
    for (id, s) in snaps {
        let key = key_of(s, by);
        let k = serde_json::to_string(&key).expect("serializable");
        groups
            .entry(k)
            .or_insert_with(|| (key, Vec::new()))
            .1
            .push((*id, s));
    }
    groups
        .into_values()
        .map(|(key, members)| {
            Ok(GroupResult {
                decisions: policy::apply(&members, policy, now)?,
                key,
            })
        })
        .collect()
}

/// Deletes the snapshot files of every removed snapshot; returns how many.
pub fn remove(repo: &Repository, groups: &[GroupResult]) -> Result<usize> {
    let mut n = 0;
    for d in groups.iter().flat_map(|g| &g.decisions).filter(|d| !d.keep) {
        repo.backend().delete(FileType::Snapshot, &d.id.to_hex())?;
        n += 1;
    }
    Ok(n)
}
