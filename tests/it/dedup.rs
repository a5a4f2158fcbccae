//! Deduplication: unchanged data is not stored twice, and an insertion in the middle of
//! a large file costs about one chunk, not the file.

use std::fs;

use crate::common::*;

#[test]
fn second_backup_of_unchanged_data_adds_almost_nothing() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    for i in 0..50 {
        fs::write(
            src.join(format!("d/f{i}")),
            random_bytes(20_000 + i * 1000, i as u64),
        )
        .unwrap();
    }
    fs::write(src.join("big"), random_bytes(6_000_000, 99)).unwrap();
    // Files changed within 2 s of a backup's start are "racy" and read again by the
    // next one (docs/decisions.md); let these age out of that window first. (Pacing,
    // not an assertion.)
    std::thread::sleep(std::time::Duration::from_millis(2100));
    env.backup([&src]);
    let first = env.repo_size();
    let out = env.ok(["--json", "backup", src.to_str().unwrap()]);
    let s = summary_line(&out);
    assert_eq!(s["files_unmodified"], 51, "{out}");
    assert_eq!(
        s["bytes_read"], 0,
        "unchanged files must not be read: {out}"
    );
    let growth = env.repo_size() - first;
    assert!(
        growth * 100 < first,
        "second backup grew the repo by {growth} of {first} bytes"
    );
    // --force re-reads everything but still stores nothing new.
    let out = env.ok(["--json", "backup", "--force", src.to_str().unwrap()]);
    let s = summary_line(&out);
    assert!(s["bytes_read"].as_u64().unwrap() > 6_000_000, "{out}");
    assert_eq!(s["data_blobs"], 0, "{out}");
}

#[test]
fn insertion_in_the_middle_of_a_large_file_adds_little() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let size = 64 << 20;
    let mut data = random_bytes(size, 5);
    fs::write(src.join("big"), &data).unwrap();
    env.backup([&src]);
    let first = env.repo_size();
    data.splice(size / 2..size / 2, random_bytes(10 * 1024, 6));
    fs::write(src.join("big"), &data).unwrap();
    env.backup([&src]);
    let growth = env.repo_size() - first;
    assert!(
        growth < size as u64 / 10,
        "10 KiB inserted in 64 MiB added {growth} bytes (limit {})",
        size / 10
    );
    // And both versions restore exactly.
    let target = env.path("t");
    env.restore("latest", &target, &[]);
    let r = target.join(src.strip_prefix("/").unwrap()).join("big");
    assert!(fs::read(r).unwrap() == data);
}

#[test]
fn identical_files_are_stored_once() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let data = random_bytes(2_000_000, 8);
    for i in 0..5 {
        fs::write(src.join(format!("copy{i}")), &data).unwrap();
    }
    env.backup([&src]);
    let size = env.repo_size();
    assert!(
        size < 2_000_000 * 3 / 2,
        "5 identical 2 MB files took {size} bytes"
    );
}
