//! End to end: an initial backup, a no-change backup, a restore, `check --read-data` and
//! a prune that repacks, of a generated tree (2000 small files, 4 large ones, 70 MiB),
//! through the library with a cheap KDF. Tree walks: `check`, prune's marking and a restore on a
//! tree of 6000 small folders, where loading the trees is most of the work.
//! Run with `cargo bench --bench backup`.

use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use cairn::archiver::{backup, BackupOptions};
use cairn::backend::LocalBackend;
use cairn::check::{check, ReadData};
use cairn::crypto::KdfParams;
use cairn::prune::{prune, PruneOptions};
use cairn::repo::lock::LockKind;
use cairn::repo::tree::Node;
use cairn::restorer::{find_node, restore, RestoreOptions, RestoreSummary};
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
    let (root, target) = (latest_root(&repo), tmp.path().join("restore"));
    g.bench_function("restore", |b| {
        b.iter(|| restore_into(&repo, &root, &target))
    });
    // Every pack streamed through the verifier (hash, blobs, header).
    g.bench_function("check --read-data", |b| {
        b.iter(|| check(&mut repo, ReadData::All).unwrap())
    });
    drop(repo);
    g.finish();

    // Prune: the first of two snapshots forgotten, half of the small files changed in the
    // second, so packs are partly used and repacked (streamed a blob at a time).
    let mut g = c.benchmark_group("prune");
    g.sample_size(10);
    let mut repo = new_repo(&repo_dir);
    backup(&mut repo, &opts, &|_| {}).unwrap();
    let first = repo.snapshots().unwrap().pop().unwrap().0;
    for d in 0..20 {
        for f in 0..50 {
            let p = src.join(format!("dir{d}/f{f}"));
            std::fs::write(
                &p,
                data(1000 + (d * 50 + f) * 7, 99_000 + (d * 50 + f) as u64),
            )
            .unwrap();
        }
    }
    backup(&mut repo, &opts, &|_| {}).unwrap();
    drop(repo);
    std::fs::remove_file(repo_dir.join("snapshots").join(first.to_hex())).unwrap();
    let pruned = tmp.path().join("pruned");
    g.bench_function("prune with repack", |b| {
        b.iter_batched(
            || {
                let _ = std::fs::remove_dir_all(&pruned);
                copy_dir(&repo_dir, &pruned);
                Repository::open(Arc::new(LocalBackend::new(pruned.clone())), b"pw").unwrap()
            },
            |mut repo| {
                let _lock = repo.lock(LockKind::Prune).unwrap();
                let opts = prune_options(false);
                let r = prune(&mut repo, &opts).unwrap();
                assert!(r.packs_repacked > 0, "the bench must repack");
                r
            },
            criterion::BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// `check` (structure only) and a dry-run prune walk every tree: 6000 folders of three
/// tiny files each, 20 to a parent folder.
fn tree_walks(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    for d in 0..6000 {
        let dir = src.join(format!("p{}/d{d}", d / 20));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..3 {
            std::fs::write(dir.join(format!("f{f}")), format!("{d} {f}")).unwrap();
        }
    }
    let repo_dir = tmp.path().join("repo");
    let mut repo = new_repo(&repo_dir);
    let opts = BackupOptions {
        paths: vec![src.clone()],
        ..Default::default()
    };
    backup(&mut repo, &opts, &|_| {}).unwrap();
    let mut g = c.benchmark_group("tree walks");
    g.sample_size(20);
    g.bench_function("check", |b| {
        b.iter(|| {
            let r = check(&mut repo, ReadData::None).unwrap();
            assert!(r.trees > 6000 && r.problems.is_empty());
            r
        })
    });
    g.bench_function("prune --dry-run", |b| {
        b.iter(|| {
            let opts = prune_options(true);
            let _lock = repo.lock(LockKind::Prune).unwrap();
            prune(&mut repo, &opts).unwrap()
        })
    });
    // Many small folders: the restore's walk and its writers (issue 11: the walk no
    // longer waits for each folder's files).
    let (root, target) = (latest_root(&repo), tmp.path().join("restore"));
    g.bench_function("restore", |b| {
        b.iter(|| {
            let s = restore_into(&repo, &root, &target);
            assert_eq!(s.files_restored, 18_000);
            s
        })
    });
    g.finish();
}

/// Prune as `forget --prune` runs it, at a fixed time.
fn prune_options(dry_run: bool) -> PruneOptions {
    PruneOptions {
        max_unused: 5.0,
        dry_run,
        instant_delete: false,
        delete_when_idle: true,
        grace: std::time::Duration::from_secs(24 * 3600),
        now: 2_000_000_000,
    }
}

/// The root of the newest snapshot.
fn latest_root(repo: &Repository) -> Node {
    let snap = repo.snapshots().unwrap().pop().unwrap().1;
    find_node(repo, snap.tree, "/").unwrap()
}

/// Restores `root` into `target`, emptied first.
fn restore_into(repo: &Repository, root: &Node, target: &Path) -> RestoreSummary {
    let _ = std::fs::remove_dir_all(target);
    let o = RestoreOptions {
        target: target.to_path_buf(),
        ..Default::default()
    };
    restore(repo, root, "/", &o, &|_| {}).unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

criterion_group!(benches, end_to_end, tree_walks);
criterion_main!(benches);
