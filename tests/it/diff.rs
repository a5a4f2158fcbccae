//! `diff`: two snapshots, or a snapshot and a live directory.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use crate::common::*;

/// The (modifier, path) lines of `diff --json`, paths relative to `src`, and the
/// statistics line.
fn changes(out: &str, src: &Path) -> (BTreeSet<(String, String)>, serde_json::Value) {
    let prefix = format!("{}/", src.display());
    let mut set = BTreeSet::new();
    let mut stats = None;
    for line in out.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        match v["message_type"].as_str().unwrap() {
            "change" => {
                let p = v["path"].as_str().unwrap();
                if let Some(rel) = p.strip_prefix(&prefix) {
                    set.insert((v["modifier"].as_str().unwrap().to_string(), rel.to_string()));
                }
            }
            "statistics" => stats = Some(v),
            other => panic!("unexpected {other}"),
        }
    }
    (set, stats.expect("a statistics line"))
}

fn set(items: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    items
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect()
}

#[test]
fn two_snapshots_list_added_removed_modified_and_kind_changes() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::create_dir_all(src.join("same/deep")).unwrap();
    fs::write(src.join("a"), random_bytes(200_000, 1)).unwrap();
    fs::write(src.join("b"), b"removed later").unwrap();
    fs::write(src.join("k"), b"a file, later a directory").unwrap();
    fs::write(src.join("d/x"), b"mode changes").unwrap();
    fs::write(src.join("same/deep/s"), random_bytes(50_000, 9)).unwrap();
    symlink("a", src.join("l")).unwrap();
    let first = env.backup([&src]);

    fs::write(src.join("a"), random_bytes(200_000, 2)).unwrap();
    fs::remove_file(src.join("b")).unwrap();
    fs::write(src.join("c"), random_bytes(30_000, 3)).unwrap();
    fs::create_dir_all(src.join("e")).unwrap();
    fs::write(src.join("e/f"), b"new in a new dir").unwrap();
    fs::remove_file(src.join("k")).unwrap();
    fs::create_dir(src.join("k")).unwrap();
    fs::write(src.join("k/z"), b"inside").unwrap();
    fs::set_permissions(src.join("d/x"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::remove_file(src.join("l")).unwrap();
    symlink("c", src.join("l")).unwrap();
    let second = env.backup([&src]);

    let out = env.ok(["--json", "diff", &first, &second]);
    let (got, stats) = changes(&out, &src);
    let expected = set(&[
        ("M", "a"),
        ("-", "b"),
        ("+", "c"),
        ("+", "e/"),
        ("+", "e/f"),
        ("T", "k/"),
        ("M", "l"),
    ]);
    assert_eq!(got, expected, "{out}");
    assert_eq!(stats["changed_files"], 1, "{stats}");
    assert_eq!(stats["source_snapshot"], first.as_str());
    assert_eq!(stats["target_snapshot"], second.as_str());
    // c, e/f and k/z are new files; b and the file k are gone; a's blobs changed.
    assert_eq!(stats["added"]["files"], 3, "{stats}");
    assert_eq!(stats["removed"]["files"], 2, "{stats}");
    assert!(
        stats["added"]["bytes"].as_u64().unwrap() >= 230_000,
        "{stats}"
    );
    assert!(
        stats["removed"]["bytes"].as_u64().unwrap() >= 200_000,
        "{stats}"
    );
    assert!(stats["metadata_changed"].as_u64().unwrap() >= 1, "{stats}");

    // --metadata lists the mode change as well, and nothing under the unchanged subtree.
    let out = env.ok(["--json", "diff", "--metadata", &first, &second]);
    let (got, _) = changes(&out, &src);
    assert!(got.contains(&("U".into(), "d/x".into())), "{got:?}");
    assert!(!got.iter().any(|(_, p)| p.starts_with("same")), "{got:?}");

    // The same snapshot twice: nothing. A subpath on each side.
    let out = env.ok(["--json", "diff", &second, &second]);
    assert!(changes(&out, &src).0.is_empty(), "{out}");
    let sub = format!("{}:{}/e", &second, src.display());
    let out = env.ok([
        "--json",
        "diff",
        &format!("{first}:{}/d", src.display()),
        &sub,
    ]);
    let lines: Vec<_> = out.lines().filter(|l| l.contains("\"change\"")).collect();
    assert_eq!(lines.len(), 2, "x removed, f added: {out}");

    // Text output: restic's modifier column.
    let text = env.ok(["diff", &first, &second]);
    assert!(
        text.contains(&format!("-    {}/b\n", src.display())),
        "{text}"
    );
    assert!(text.contains("Files:"), "{text}");
}

#[test]
fn a_snapshot_against_a_live_directory_reads_only_what_may_have_changed() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("touched"), random_bytes(40_000, 1)).unwrap();
    fs::write(src.join("same-size"), random_bytes(40_000, 2)).unwrap();
    fs::write(src.join("gone"), b"x").unwrap();
    fs::write(src.join("sub/kept"), b"kept").unwrap();
    env.backup([&src]);

    // Same bytes, new mtime: metadata only. Same size, other bytes: modified.
    let bytes = fs::read(src.join("touched")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(src.join("touched"), &bytes).unwrap();
    let mut other = random_bytes(40_000, 2);
    other[100] ^= 1;
    fs::write(src.join("same-size"), &other).unwrap();
    fs::remove_file(src.join("gone")).unwrap();
    fs::write(src.join("sub/new"), b"new").unwrap();

    let out = env.ok([
        "--json",
        "diff",
        "--metadata",
        "latest",
        src.to_str().unwrap(),
    ]);
    let (got, stats) = changes(&out, &src);
    let mut expected = set(&[
        ("U", "touched"),
        ("M", "same-size"),
        ("-", "gone"),
        ("+", "sub/new"),
    ]);
    // The directories' mtimes changed with their entries.
    expected.extend(set(&[("U", "sub/")]));
    assert_eq!(got, expected, "{out}");
    assert_eq!(stats["changed_files"], 1);
    assert_eq!(stats["target_dir"], src.to_str().unwrap());
    // same-size is one chunk, read and hashed: its bytes count as added, with sub/new's.
    assert_eq!(stats["added"]["bytes"], 40_003, "{stats}");
    assert_eq!(stats["removed"]["bytes"], 40_001, "{stats}");

    // A snapshot's directory against a copy elsewhere: restored trees compare equal.
    let target = env.path("t");
    env.restore("latest", &target, &[]);
    let restored = target.join(src.strip_prefix("/").unwrap());
    let from = format!("latest:{}", src.display());
    let out = env.ok(["--json", "diff", &from, restored.to_str().unwrap()]);
    let n = out.lines().filter(|l| l.contains("\"change\"")).count();
    assert_eq!(n, 0, "a restored tree differs: {out}");
}

#[test]
fn bad_diff_arguments_are_one_line_errors() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), b"a").unwrap();
    let id = env.backup([&src]);
    for args in [
        vec!["diff", "latest", "nosuch"],
        vec!["diff", "latest", "/nonexistent/dir"],
        vec!["diff", &id, "latest:/not/in/it"],
    ] {
        let out = env.run(args.clone());
        assert_eq!(code(&out), 1, "{args:?}: {}", stderr(&out));
        assert_eq!(
            stderr(&out).trim().lines().count(),
            1,
            "{args:?}: {}",
            stderr(&out)
        );
    }
}
