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
