//! End to end: an initial backup, a no-change backup and a restore of a generated tree
//! (2000 small files, 4 large ones, 70 MiB), through the library with a cheap KDF.
//! Run with `cargo bench --bench backup`.

use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use cairn::archiver::{backup, BackupOptions};
use cairn::backend::LocalBackend;
use cairn::crypto::KdfParams;
use cairn::restorer::{find_node, restore, RestoreOptions};
use cairn::Repository;

const CHEAP: KdfParams = KdfParams {
    memory_kib: 64,
    iterations: 1,
    parallelism: 1,
};

fn data(len: usize, mut x: u64) -> Vec<u8> {
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Half text-like (compressible), half random.
            if (i / 4096) % 2 == 0 {
                b"abcdefgh"[(x % 8) as usize]
            } else {
                x as u8
            }
        })
        .collect()
}

fn make_tree(root: &Path) -> u64 {
    let mut total = 0;
    for d in 0..40 {
        let dir = root.join(format!("dir{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..50 {
            let bytes = data(1000 + (d * 50 + f) * 7, (d * 50 + f) as u64 + 1);
            total += bytes.len() as u64;
            std::fs::write(dir.join(format!("f{f}")), bytes).unwrap();
        }
    }
    for b in 0..4 {
        let bytes = data(16 << 20, 1000 + b);
        total += bytes.len() as u64;
        std::fs::write(root.join(format!("big{b}")), bytes).unwrap();
    }
    total
}

fn new_repo(dir: &Path) -> Repository {
    let _ = std::fs::remove_dir_all(dir);
    Repository::init(
        Arc::new(LocalBackend::new(dir.to_path_buf())),
        b"pw",
        CHEAP,
        3,
    )
    .unwrap()
}

fn end_to_end(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let total = make_tree(&src);
    let opts = BackupOptions {
        paths: vec![src.clone()],
        ..Default::default()
    };
    let mut g = c.benchmark_group("end to end");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(total));
    let repo_dir = tmp.path().join("repo");
    g.bench_function("initial backup", |b| {
        b.iter(|| {
            let mut repo = new_repo(&repo_dir);
            backup(&mut repo, &opts, &|_| {}).unwrap()
        })
    });
    let mut repo = new_repo(&repo_dir);
    backup(&mut repo, &opts, &|_| {}).unwrap();
    g.bench_function("no-change backup", |b| {
        b.iter(|| backup(&mut repo, &opts, &|_| {}).unwrap())
    });
    let snap = repo.snapshots().unwrap().pop().unwrap().1;
    let root = find_node(&repo, snap.tree, "/").unwrap();
    let target = tmp.path().join("restore");
    g.bench_function("restore", |b| {
        b.iter(|| {
            let _ = std::fs::remove_dir_all(&target);
            let o = RestoreOptions {
                target: target.clone(),
                ..Default::default()
            };
            restore(&repo, &root, "/", &o, &|_| {}).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, end_to_end);
criterion_main!(benches);
