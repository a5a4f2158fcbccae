//! The local cache: a no-change backup reads almost nothing from the repository, and a
//! damaged cache is rebuilt, never trusted.

use std::fs;
use std::sync::Arc;

use cairn::archiver::{backup, BackupOptions};
use cairn::backend::{Fault, FaultyBackend, LocalBackend, Op};
use cairn::Repository;

use crate::common::*;

fn tree(env: &Env) -> std::path::PathBuf {
    let src = env.path("src");
    for d in 0..20 {
        fs::create_dir_all(src.join(format!("d{d}"))).unwrap();
        for f in 0..20 {
            fs::write(
                src.join(format!("d{d}/f{f}")),
                random_bytes(2000, d * 100 + f),
            )
            .unwrap();
        }
    }
    src
}

#[test]
fn a_no_change_backup_reads_nothing_but_its_key_and_config() {
    let env = Env::new();
    env.init();
    let src = tree(&env);
    let cache = env.path("cache");
    let opts = BackupOptions {
        paths: vec![src.clone()],
        ..Default::default()
    };
    for round in 0..3 {
        // Count every read the repository sees (a fault position that never comes).
        let counter = Arc::new(FaultyBackend::new(
            Arc::new(LocalBackend::new(env.repo.clone())),
            Op::Read,
            0,
            Fault::Fail,
        ));
        let mut repo = Repository::open(counter.clone(), PASSWORD.as_bytes()).unwrap();
        repo.use_cache(&cache).unwrap();
        let opened = counter.count(Op::Read);
        repo.load_index().unwrap();
        backup(&mut repo, &opts, &|_| {}).unwrap();
        let reads = counter.count(Op::Read) - opened;
        if round == 2 {
            // Round 0 filled the cache with index and snapshot, round 1 with the tree
            // pack; from then on nothing is read from the repository.
            assert_eq!(
                reads, 0,
                "a no-change backup read {reads} files from the repository"
            );
        }
    }
}

#[test]
fn a_damaged_cache_is_rebuilt_not_trusted() {
    let env = Env::new();
    env.init();
    let src = tree(&env);
    env.backup([&src]);
    let listing = env.ok(["ls", "latest"]);
    let cache_root = env.path("home/cache/cairn");
    // (Not the client's own notes: they are not repository files.)
    let files: Vec<_> = walk(&cache_root)
        .into_iter()
        .filter(|p| p.is_file() && !p.to_string_lossy().contains("/notes/"))
        .collect();
    assert!(
        files.len() >= 3,
        "snapshot, index and tree pack cached: {files:?}"
    );
    for f in &files {
        let mut b = fs::read(f).unwrap();
        let n = b.len() / 2;
        b[n] ^= 0xff;
        fs::write(f, b).unwrap();
    }
    assert_eq!(env.ok(["ls", "latest"]), listing);
    env.ok(["check"]);
    for f in &files {
        let b = fs::read(f).unwrap();
        let name = f.file_name().unwrap().to_str().unwrap();
        assert_eq!(
            blake3::hash(&b).to_hex().as_str(),
            name,
            "{} was not rebuilt",
            f.display()
        );
    }
}
