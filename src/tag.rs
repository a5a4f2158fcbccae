//! `tag`: change the tags of snapshots. A snapshot file is never edited in place: the
//! snapshot with its new tags is written as a new file and read back before the old file
//! is removed, so a crash or a failed request at any step leaves at least one of the two
//! (at worst both, the same snapshot twice). The new snapshot names the first id it had
//! in `original`, as restic does.

use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::snapshot::Snapshot;
use crate::repo::Repository;

/// What to do to each snapshot's tags: replace them all (`set`), or add and remove.
#[derive(Clone, Debug, Default)]
pub struct TagChange {
    pub set: Option<Vec<String>>,
    pub add: Vec<String>,
    pub remove: Vec<String>,
}

impl TagChange {
    /// From the command line: each value is a comma-separated list (`--add a,b`);
    /// `--set ''` clears the tags. Refuses an empty request, `--set` beside
    /// `--add`/`--remove`, and empty tag names.
    pub fn parse(set: &[String], add: &[String], remove: &[String]) -> Result<TagChange> {
        let split = |values: &[String], allow_empty: bool| -> Result<Vec<String>> {
            let mut out = Vec::new();
            for v in values {
                if v.is_empty() && allow_empty {
                    continue;
                }
                for t in v.split(',') {
                    if t.trim().is_empty() {
                        return Err(Error::Usage(format!("{v:?}: a tag cannot be empty")));
                    }
                    if t.trim() != t {
                        return Err(Error::Usage(format!(
                            "{t:?}: a tag cannot start or end with a space"
                        )));
                    }
                    if !out.iter().any(|x| x == t) {
                        out.push(t.to_string());
                    }
                }
            }
            Ok(out)
        };
        if !set.is_empty() && (!add.is_empty() || !remove.is_empty()) {
            return Err(Error::Usage(
                "--set replaces every tag: give it alone, or use --add and --remove".into(),
            ));
        }
        if set.is_empty() && add.is_empty() && remove.is_empty() {
            return Err(Error::Usage(
                "nothing to do: give --add, --remove or --set".into(),
            ));
        }
        Ok(TagChange {
            set: (!set.is_empty()).then(|| split(set, true)).transpose()?,
            add: split(add, false)?,
            remove: split(remove, false)?,
        })
    }

    /// The tags `tags` become: the kept ones in their order, then the added ones.
    pub fn apply(&self, tags: &[String]) -> Vec<String> {
        if let Some(set) = &self.set {
            return set.clone();
        }
        let mut out: Vec<String> = Vec::new();
        for t in tags.iter().chain(&self.add) {
            if !self.remove.contains(t) && !out.contains(t) {
                out.push(t.clone());
            }
        }
        out
    }
}

/// What `retag` did to one snapshot.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Retagged {
    pub old_snapshot_id: Id,
    /// The snapshot's new file; None when its tags were already the requested ones.
    pub new_snapshot_id: Option<Id>,
    pub tags: Vec<String>,
}

/// Gives snapshot `id` (`snap`) its new tags: writes the new snapshot file, reads it
/// back from the storage, proves the caller's lock still alive, then removes the old
/// file. The caller holds an exclusive lock: two tag runs, or a tag and a forget, at
/// once could leave the same snapshot twice, and `forget --keep-last` would count both.
pub fn retag(repo: &Repository, id: Id, snap: &Snapshot, change: &TagChange) -> Result<Retagged> {
    let tags = change.apply(&snap.tags);
    if tags == snap.tags {
        return Ok(Retagged {
            old_snapshot_id: id,
            new_snapshot_id: None,
            tags,
        });
    }
    let mut new = snap.clone();
    new.tags = tags.clone();
    new.original = Some(snap.origin(repo.config.id, id));
    repo.ensure_locks_alive()?;
    let new_id = repo.save_snapshot(&new)?;
    // Read back from the storage (not the cache): the old file goes only once the new
    // one is known to be whole there. A bad new file is removed (its name is new: the
    // sealing nonce is random), the old one kept.
    let name = new_id.to_hex();
    match repo.load_snapshot_from_storage(&name) {
        Ok(back) if back == new => {}
        Ok(_) | Err(Error::Integrity { .. }) => {
            let _ = repo.backend().delete(FileType::Snapshot, &name);
            return Err(Error::integrity(
                FileType::Snapshot.path(&name),
                "read back different from what was written; removed it, the old snapshot is kept",
            ));
        }
        Err(e) => return Err(e),
    }
    repo.ensure_locks_alive()?;
    repo.backend().delete(FileType::Snapshot, &id.to_hex())?;
    Ok(Retagged {
        old_snapshot_id: id,
        new_snapshot_id: Some(new_id),
        tags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn add_remove_and_set() {
        let c = TagChange::parse(&[], &s(&["b,c", "a"]), &s(&["x"])).unwrap();
        assert_eq!(c.apply(&s(&["x", "a", "y"])), s(&["a", "y", "b", "c"]));
        let c = TagChange::parse(&s(&["p,q"]), &[], &[]).unwrap();
        assert_eq!(c.apply(&s(&["x"])), s(&["p", "q"]));
        let c = TagChange::parse(&s(&[""]), &[], &[]).unwrap();
        assert_eq!(c.apply(&s(&["x"])), Vec::<String>::new());
    }

    #[test]
    fn bad_requests_are_usage_errors() {
        for (set, add, remove) in [
            (s(&[]), s(&[]), s(&[])),
            (s(&["a"]), s(&["b"]), s(&[])),
            (s(&[]), s(&["a,,b"]), s(&[])),
            (s(&[]), s(&[""]), s(&[])),
            (s(&[]), s(&[" a"]), s(&[])),
        ] {
            assert!(
                matches!(TagChange::parse(&set, &add, &remove), Err(Error::Usage(_))),
                "{set:?} {add:?} {remove:?}"
            );
        }
    }
}
