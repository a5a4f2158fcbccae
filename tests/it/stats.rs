//! `stats`: sizes, deduplication and compression, by restic's modes.

use std::fs;

use crate::common::*;

fn stats(env: &Env, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json", "stats"];
    all.extend_from_slice(args);
    serde_json::from_str(env.ok(all).trim()).unwrap()
}

#[test]
fn stats_count_restore_size_unique_data_and_storage_by_mode() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    let a = random_bytes(100_000, 1);
    fs::write(src.join("a"), &a).unwrap();
    fs::write(src.join("sub/b"), &a).unwrap();
    fs::write(src.join("c"), random_bytes(50_000, 2)).unwrap();
    env.backup([&src]);
    env.backup([&src]);

    let s = stats(&env, &[]);
    assert_eq!(s["mode"], "restore-size");
    assert_eq!(s["snapshots_count"], 2);
    assert_eq!(s["restore_files"], 6, "{s}");
    assert_eq!(s["restore_size"], 500_000, "{s}");
    assert_eq!(s["total_size"], 500_000);
    assert_eq!(s["unique_files"], 2, "a and sub/b are one content: {s}");
    assert_eq!(s["unique_files_size"], 150_000);
    assert_eq!(s["total_uncompressed_size"], 150_000, "{s}");
    let dedup = s["dedup_ratio"].as_f64().unwrap();
    assert!((dedup - 500_000.0 / 150_000.0).abs() < 1e-9, "{s}");
    // Random data is stored raw: sealing adds a little, compression saves nothing.
    let stored = s["stored_size"].as_u64().unwrap();
    assert!((150_000..160_000).contains(&stored), "{s}");
    assert!(s["packs"].as_u64().unwrap() >= 1);
    assert!(s["tree_blobs"].as_u64().unwrap() >= 2);
    // The repository's own files, plus the lock stats held while it listed them.
    let on_disk = dir_size(&env.repo);
    let reported = s["repository_size"].as_u64().unwrap();
    assert!(
        reported >= on_disk && reported < on_disk + 4096,
        "{reported} reported, {on_disk} on disk"
    );

    for (mode, count, size) in [
        ("files-by-contents", 2, 150_000),
        ("raw-data", -1, 150_000),
        ("blobs-per-file", 2, 150_000),
    ] {
        let s = stats(&env, &["latest", "--mode", mode]);
        assert_eq!(s["snapshots_count"], 1);
        assert_eq!(s["total_size"], size, "{mode}: {s}");
        if count >= 0 {
            assert_eq!(s["total_file_count"], count, "{mode}: {s}");
        } else {
            assert_eq!(s["total_file_count"], s["total_blob_count"], "{mode}: {s}");
        }
        assert!(s.get("repository_size").is_none(), "{mode}: {s}");
    }

    // Compressible data: compression shows.
    fs::write(src.join("text"), "cairn ".repeat(100_000)).unwrap();
    env.backup([&src]);
    let s = stats(&env, &["latest"]);
    assert!(s["compression_ratio"].as_f64().unwrap() > 2.0, "{s}");

    let out = env.run(["stats", "--mode", "bogus"]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("--mode"), "{}", stderr(&out));
    let text = env.ok(["stats"]);
    assert!(
        text.contains("Deduplication") && text.contains("Repository on storage"),
        "{text}"
    );
}
