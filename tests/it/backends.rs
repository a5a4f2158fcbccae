//! Backend conformance: every storage cairn speaks keeps the `Backend` contract, tried
//! on real servers (servers.rs) and on memory and local folders: whole and ranged
//! reads, a short file detected, atomic overwrite, listing (sorted, with sizes, packs
//! over their 256 folders), deletion, not-found errors, entries that come and go while
//! a listing runs, concurrent writers, and files over the multipart threshold.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cairn::backend::{Backend, FileType};

use crate::common::random_bytes;
use crate::servers::{self, Kind};

fn conformance(b: Arc<dyn Backend>, what: &str) {
    b.create().unwrap();
    for ft in [
        FileType::Key,
        FileType::Lock,
        FileType::Snapshot,
        FileType::Index,
        FileType::Pack,
    ] {
        assert!(
            b.list(ft).unwrap().is_empty(),
            "{what}: {ft:?} not empty at first"
        );
    }
    assert!(
        b.read(FileType::Config, "").unwrap_err().is_not_found(),
        "{what}: config read"
    );
    assert!(
        b.size(FileType::Config, "").unwrap_err().is_not_found(),
        "{what}: config size"
    );

    // Whole and ranged reads.
    let data = random_bytes(100_000, 1);
    let name = "ab".repeat(32);
    b.write(FileType::Pack, &name, &data).unwrap();
    assert_eq!(b.read(FileType::Pack, &name).unwrap(), data, "{what}: read");
    assert_eq!(
        b.read_range(FileType::Pack, &name, 1000, 5000).unwrap(),
        &data[1000..6000]
    );
    assert_eq!(
        b.read_range(FileType::Pack, &name, 99_990, 10).unwrap(),
        &data[99_990..]
    );
    assert_eq!(b.size(FileType::Pack, &name).unwrap(), 100_000);
    let short = b.read_range(FileType::Pack, &name, 99_990, 20);
    assert!(
        matches!(short, Err(cairn::Error::Integrity { .. })),
        "{what}: a range past the end must be an integrity error, got {short:?}"
    );
    let missing = "cd".repeat(32);
    assert!(
        b.read(FileType::Pack, &missing).unwrap_err().is_not_found(),
        "{what}"
    );
    assert!(
        b.read_range(FileType::Pack, &missing, 0, 10)
            .unwrap_err()
            .is_not_found(),
        "{what}"
    );
    assert!(
        b.size(FileType::Pack, &missing).unwrap_err().is_not_found(),
        "{what}"
    );

    // Overwrite in place (a lock file is refreshed this way): readers see one or the other.
    b.write(FileType::Lock, "lock1", b"first version").unwrap();
    b.write(FileType::Lock, "lock1", b"second").unwrap();
    assert_eq!(
        b.read(FileType::Lock, "lock1").unwrap(),
        b"second",
        "{what}: overwrite"
    );

    // Listing: packs across their folders, sorted, with sizes; other kinds apart.
    let mut expected = vec![(name.clone(), 100_000u64)];
    for i in 0..5u8 {
        let n = format!("{:02x}{}", i * 50, "e".repeat(62));
        b.write(FileType::Pack, &n, &vec![i; 10 + i as usize])
            .unwrap();
        expected.push((n, 10 + i as u64));
    }
    expected.sort();
    assert_eq!(
        b.list(FileType::Pack).unwrap(),
        expected,
        "{what}: pack listing"
    );
    assert_eq!(
        b.list(FileType::Lock).unwrap(),
        vec![("lock1".to_string(), 6)],
        "{what}: lock listing"
    );
    b.write(FileType::Config, "", b"config bytes").unwrap();
    assert_eq!(b.read(FileType::Config, "").unwrap(), b"config bytes");

    // Deletion.
    b.delete(FileType::Lock, "lock1").unwrap();
    assert!(
        b.list(FileType::Lock).unwrap().is_empty(),
        "{what}: deleted lock listed"
    );
    assert!(b.read(FileType::Lock, "lock1").unwrap_err().is_not_found());
    if let Err(e) = b.delete(FileType::Lock, "lock1") {
        assert!(e.is_not_found(), "{what}: deleting a missing file: {e}");
    }

    // Entries that come and go while listings run, and writers at once.
    let stop = Arc::new(AtomicBool::new(false));
    let churn: Vec<_> = (0..3u8)
        .map(|t| {
            let (b, stop) = (b.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0u32;
                while !stop.load(Ordering::Relaxed) && i < 200 {
                    let n = format!("{t:02x}{i:062x}");
                    b.write(FileType::Snapshot, &n, b"snapshot").unwrap();
                    b.delete(FileType::Snapshot, &n).unwrap();
                    i += 1;
                }
            })
        })
        .collect();
    let writers: Vec<_> = (0..4u8)
        .map(|t| {
            let b = b.clone();
            std::thread::spawn(move || {
                for i in 0..10u8 {
                    let n = format!("{:02x}{t:02x}{i:02x}{}", 0xf0 + t, "0".repeat(58));
                    b.write(
                        FileType::Index,
                        &n,
                        &random_bytes(3000 + i as usize, (t * 16 + i) as u64),
                    )
                    .unwrap();
                }
            })
        })
        .collect();
    for _ in 0..20 {
        for (n, size) in b.list(FileType::Snapshot).unwrap() {
            assert!(!n.starts_with('.'), "{what}: temporary file listed: {n}");
            assert_eq!(size, 8, "{what}: {n} listed with size {size}");
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in churn.into_iter().chain(writers) {
        t.join().unwrap();
    }
    let index = b.list(FileType::Index).unwrap();
    assert_eq!(index.len(), 40, "{what}: concurrent writers");
    for t in 0..4u8 {
        for i in 0..10u8 {
            let n = format!("{:02x}{t:02x}{i:02x}{}", 0xf0 + t, "0".repeat(58));
            assert_eq!(
                b.read(FileType::Index, &n).unwrap(),
                random_bytes(3000 + i as usize, (t * 16 + i) as u64),
                "{what}: {n}"
            );
        }
    }

    // A file over the multipart threshold (32 MiB), read back whole and in ranges.
    let big = random_bytes(40 << 20, 7);
    let big_name = "fe".repeat(32);
    b.write(FileType::Pack, &big_name, &big).unwrap();
    assert_eq!(b.size(FileType::Pack, &big_name).unwrap(), big.len() as u64);
    assert!(
        b.read(FileType::Pack, &big_name).unwrap() == big,
        "{what}: big file"
    );
    let r = b
        .read_range(FileType::Pack, &big_name, 20 << 20, 1 << 20)
        .unwrap();
    assert!(r == big[20 << 20..21 << 20], "{what}: big file range");
}

#[test]
fn memory_keeps_the_contract() {
    conformance(
        cairn::backend::open("opendal:memory", &[]).unwrap(),
        "memory",
    );
}

#[test]
fn local_folder_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("repo");
    conformance(
        cairn::backend::open(url.to_str().unwrap(), &[]).unwrap(),
        "local",
    );
}

#[test]
fn opendal_fs_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let root = format!("root={}", dir.path().join("repo").display());
    conformance(
        cairn::backend::open("opendal:fs", &[root]).unwrap(),
        "opendal fs",
    );
}

fn on(kind: Kind) {
    if let Some(r) = servers::remote(kind) {
        conformance(r.backend(), &format!("{kind:?}"));
    }
}

#[test]
fn s3_keeps_the_contract() {
    on(Kind::S3);
}

#[test]
fn moto_keeps_the_contract() {
    on(Kind::Moto);
}

#[test]
fn sftp_keeps_the_contract() {
    on(Kind::Sftp);
}

#[test]
fn webdav_keeps_the_contract() {
    on(Kind::Webdav);
}

#[test]
fn azure_keeps_the_contract() {
    on(Kind::Azure);
}

#[test]
fn gcs_keeps_the_contract() {
    on(Kind::Gcs);
}

#[test]
fn ftp_keeps_the_contract() {
    on(Kind::Ftp);
}
