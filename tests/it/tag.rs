//! `tag`: snapshot files are replaced, never edited; the first id stays visible.

use std::fs;
use std::sync::Arc;

use cairn::backend::{Fault, FaultyBackend, LocalBackend, Op};
use cairn::tag::{retag, TagChange};
use cairn::Repository;

use crate::common::*;

fn snapshots(env: &Env) -> Vec<serde_json::Value> {
    let out = env.ok(["--json", "snapshots"]);
    serde_json::from_str::<serde_json::Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn tags(s: &serde_json::Value) -> Vec<&str> {
    s["tags"]
        .as_array()
        .map(|t| t.iter().map(|x| x.as_str().unwrap()).collect())
        .unwrap_or_default()
}

#[test]
fn tags_are_added_removed_and_set_and_the_first_id_stays_visible() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), random_bytes(300_000, 1)).unwrap();
    let first = env.backup(["--tag", "daily", src.to_str().unwrap()]);
    let other = env.backup(["--tag", "other", src.to_str().unwrap()]);
    let tree = snapshots(&env)[0]["tree"].clone();

    let out = env.ok([
        "--json",
        "tag",
        &first[..8],
        "--add",
        "keep,audit",
        "--remove",
        "daily",
    ]);
    let changed = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["message_type"] == "changed_snapshot")
        .unwrap();
    assert_eq!(changed["old_snapshot_id"], first.as_str());
    let new = changed["new_snapshot_id"].as_str().unwrap().to_string();
    assert_eq!(summary_line(&out)["changed_snapshots"], 1);

    let list = snapshots(&env);
    let ids: Vec<&str> = list.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&new.as_str()) && ids.contains(&other.as_str()));
    assert!(
        !ids.contains(&first.as_str()),
        "old file still there: {ids:?}"
    );
    let s = list.iter().find(|s| s["id"] == new.as_str()).unwrap();
    assert_eq!(tags(s), ["keep", "audit"]);
    assert_eq!(s["tree"], tree, "the tree changed");
    assert_eq!(s["original"]["snapshot"], first.as_str());
    let text = env.ok(["snapshots"]);
    assert!(
        text.contains(&format!("(originally {})", &first[..8])),
        "{text}"
    );
    // The other snapshot is untouched, and the retagged one restores the source.
    assert_eq!(
        tags(list.iter().find(|s| s["id"] == other.as_str()).unwrap()),
        ["other"]
    );
    let target = env.path("t");
    env.restore(&new, &target, &[]);
    assert_same_tree_but_atime(&src, &target.join(src.strip_prefix("/").unwrap()));

    // Selected by filter; --set '' clears; the first id is still the original.
    env.ok(["tag", "latest", "--tag", "keep", "--set", ""]);
    let list = snapshots(&env);
    let s = list.iter().find(|s| s["id"] != other.as_str()).unwrap();
    assert!(tags(s).is_empty(), "{s}");
    assert_eq!(s["original"]["snapshot"], first.as_str());

    // Nothing to change: the file stays as it is.
    let before: Vec<_> = snapshots(&env).iter().map(|s| s["id"].clone()).collect();
    let out = env.ok(["--json", "tag", &other[..8], "--add", "other"]);
    assert_eq!(summary_line(&out)["changed_snapshots"], 0);
    let after: Vec<_> = snapshots(&env).iter().map(|s| s["id"].clone()).collect();
    assert_eq!(before, after);

    // Every snapshot the filter passes, when none is named.
    let host = snapshots(&env)[0]["hostname"].as_str().unwrap().to_string();
    env.ok(["tag", "--host", &host, "--add", "all"]);
    assert!(snapshots(&env).iter().all(|s| tags(s).contains(&"all")));
    env.ok(["check", "--read-data"]);
}

#[test]
fn bad_tag_requests_are_usage_errors_and_change_nothing() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), b"x").unwrap();
    let id = env.backup(["--tag", "t", src.to_str().unwrap()]);
    for (args, says) in [
        (vec!["tag", "latest"], "nothing to do"),
        (vec!["tag", "latest", "--set", "a", "--add", "b"], "--set"),
        (vec!["tag", "latest", "--add", "a,,b"], "cannot be empty"),
        (
            vec!["tag", "--tag", "nosuch", "--add", "x"],
            "no snapshot matches",
        ),
        (vec!["tag", "abcdef12", "--add", "x"], "no snapshot with id"),
    ] {
        let out = env.run(args.clone());
        assert_eq!(code(&out), 1, "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(says), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
    let list = snapshots(&env);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(tags(&list[0]), ["t"]);
}

/// A failure at any step of the rewrite leaves the snapshot readable: a failed write,
/// or a new file that reads back damaged, leaves the old file alone and no broken new
/// one; a failed delete leaves both (the same snapshot twice), never neither.
#[test]
fn a_failed_write_or_delete_never_loses_the_snapshot() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), random_bytes(10_000, 3)).unwrap();
    env.backup(["--tag", "old", src.to_str().unwrap()]);
    let change = TagChange::parse(&[], &["new".into()], &["old".into()]).unwrap();
    // The reads before the read-back: opening the repository and listing snapshots.
    let reads_before = {
        let counter = Arc::new(FaultyBackend::new(
            Arc::new(LocalBackend::new(env.repo.clone())),
            Op::Read,
            0,
            Fault::Fail,
        ));
        let repo = Repository::open(counter.clone(), PASSWORD.as_bytes()).unwrap();
        repo.snapshots().unwrap();
        counter.count(Op::Read)
    };
    for (op, nth, fault, expect_both) in [
        (Op::Write, 1, Fault::Fail, false),
        (Op::Write, 1, Fault::Truncate, false),
        // The new file reads back cut short (a store that lost bytes silently).
        (Op::Read, reads_before + 1, Fault::Truncate, false),
        (Op::Delete, 1, Fault::Fail, true),
    ] {
        let work = env.path(&format!("repo-{op:?}-{fault:?}"));
        cp_a(&env.repo, &work);
        let faulty = Arc::new(FaultyBackend::new(
            Arc::new(LocalBackend::new(work.clone())),
            op,
            nth,
            fault,
        ));
        let repo = Repository::open(faulty, PASSWORD.as_bytes()).unwrap();
        let set = repo.snapshots().unwrap();
        let (id, snap) = set.list[0].clone();
        assert!(
            retag(&repo, id, &snap, &change).is_err(),
            "{op:?} {fault:?}"
        );

        let clean =
            Repository::open(Arc::new(LocalBackend::new(work)), PASSWORD.as_bytes()).unwrap();
        let set = clean.snapshots().unwrap();
        let mut found: Vec<Vec<String>> = set.list.iter().map(|(_, s)| s.tags.clone()).collect();
        found.sort();
        if expect_both {
            assert_eq!(found, [vec!["new".to_string()], vec!["old".to_string()]]);
        } else {
            assert_eq!(found, [vec!["old".to_string()]], "{op:?} {fault:?}");
        }
        assert!(set.list.iter().all(|(_, s)| s.tree == snap.tree));
        assert!(
            set.unreadable.is_empty(),
            "{op:?} {fault:?} left {:?}",
            set.unreadable
        );
    }
}
