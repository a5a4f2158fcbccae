//! A blob that several files need is fetched from the repository once per restore.

use std::fs;
use std::sync::Arc;

use cairn::backend::{Fault, FaultyBackend, LocalBackend, Op};
use cairn::restorer::{find_node, restore, RestoreOptions};
use cairn::Repository;

use crate::common::*;

#[test]
fn shared_blobs_are_read_once() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let data = random_bytes(3 << 20, 77);
    for i in 0..8 {
        fs::write(src.join(format!("copy{i}")), &data).unwrap();
    }
    env.backup([&src]);
    let counter = Arc::new(FaultyBackend::new(
        Arc::new(LocalBackend::new(env.repo.clone())),
        Op::Read,
        0,
        Fault::Fail,
    ));
    let mut repo = Repository::open(counter.clone(), PASSWORD.as_bytes()).unwrap();
    repo.load_index().unwrap();
    let snap = repo.snapshots().unwrap().pop().unwrap().1;
    let root = find_node(&repo, snap.tree, "/").unwrap();
    let chunks = find_node(&repo, snap.tree, &format!("{}/copy0", src.display()))
        .unwrap()
        .content
        .len();
    let before = counter.count(Op::Read);
    let target = env.path("t");
    let opts = RestoreOptions {
        target: target.clone(),
        ..Default::default()
    };
    restore(&repo, &root, "/", &opts, &|_| {}).unwrap();
    let reads = counter.count(Op::Read) - before;
    // Trees are read twice (plan, then restore): a handful of reads. Data: once per chunk.
    let depth = src.components().count() + 1;
    assert!(
        reads <= chunks + 2 * depth,
        "{reads} reads for {chunks} distinct chunks shared by 8 files"
    );
    for i in 0..8 {
        let r = target
            .join(src.strip_prefix("/").unwrap())
            .join(format!("copy{i}"));
        assert!(fs::read(r).unwrap() == data);
    }
}

/// A remote restore with a read that fails at any of several points (a prefetch, a
/// writer's own fetch): the failed fetch is taken again blob by blob, and every file
/// comes back with exactly its bytes.
#[test]
fn a_failed_read_during_a_remote_restore_is_taken_again_and_loses_nothing() {
    let Some(remote) = crate::servers::remote(crate::servers::Kind::S3) else {
        return;
    };
    let env = Env::on(remote.clone());
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("small")).unwrap();
    fs::write(src.join("big"), random_bytes(40 << 20, 8)).unwrap();
    for i in 0..30 {
        fs::write(
            src.join("small").join(format!("f{i}")),
            random_bytes(3000 + i, i as u64),
        )
        .unwrap();
    }
    env.backup([&src]);
    let url = &remote.url;
    let opts = remote.all_options();
    for nth in [1, 2, 3, 5, 8] {
        let faulty = Arc::new(FaultyBackend::new(
            cairn::backend::open(url, &opts).unwrap(),
            Op::Read,
            0,
            Fault::Fail,
        ));
        // Count the reads of opening and finding the snapshot, then fail the nth read
        // of the restore itself.
        let mut repo = Repository::open(faulty.clone(), PASSWORD.as_bytes()).unwrap();
        repo.load_index().unwrap();
        let snap = repo.snapshots().unwrap().pop().unwrap().1;
        find_node(&repo, snap.tree, "/").unwrap();
        let before = faulty.count(Op::Read);
        let failing = Arc::new(FaultyBackend::new(
            cairn::backend::open(url, &opts).unwrap(),
            Op::Read,
            before + nth,
            Fault::Fail,
        ));
        let mut repo = Repository::open(failing, PASSWORD.as_bytes()).unwrap();
        repo.load_index().unwrap();
        let snap = repo.snapshots().unwrap().pop().unwrap().1;
        let root = find_node(&repo, snap.tree, "/").unwrap();
        let target = env.path(&format!("t{nth}"));
        let opts = RestoreOptions {
            target: target.clone(),
            ..Default::default()
        };
        let summary = restore(&repo, &root, "/", &opts, &|_| {}).unwrap();
        assert_eq!(summary.errors, 0, "read {nth} failed the restore");
        assert_same_tree_but_atime(&src, &target.join(src.strip_prefix("/").unwrap()));
    }
}
