//! Choosing what goes in and what comes out: backup excludes, restore include/exclude,
//! SNAP:SUBPATH, --stdin and --dry-run.

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::common::*;

fn names_under(root: &Path) -> Vec<String> {
    walk(root)
        .iter()
        .map(|p| p.strip_prefix(root).unwrap().to_string_lossy().into_owned())
        .collect()
}

fn tree(src: &Path) {
    for d in ["a/keep", "a/cache", "b", "c"] {
        fs::create_dir_all(src.join(d)).unwrap();
    }
    for f in [
        "a/x.txt",
        "a/x.tmp",
        "a/keep/y.txt",
        "a/cache/z",
        "b/B.BAK",
        "b/ok",
        "c/.nobackup",
        "c/secret",
    ] {
        fs::write(src.join(f), f.as_bytes()).unwrap();
    }
    fs::write(
        src.join("a/cache/CACHEDIR.TAG"),
        b"Signature: 8a477f597d28d172789f06886806bc55\n# a cache",
    )
    .unwrap();
}

#[test]
fn backup_excludes() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    tree(&src);
    let exfile = env.path("excludes");
    fs::write(&exfile, "# comment\n\nb/ok\n").unwrap();
    env.backup([
        "--exclude",
        "*.tmp",
        "--iexclude",
        "*.bak",
        "--exclude-file",
        exfile.to_str().unwrap(),
        "--exclude-if-present",
        ".nobackup",
        "--exclude-caches",
        src.to_str().unwrap(),
    ]);
    let target = env.path("t");
    env.restore("latest", &target, &[]);
    let mut got = names_under(&target.join(src.strip_prefix("/").unwrap()));
    got.sort();
    assert_eq!(
        got,
        [
            "a",
            "a/cache",
            "a/cache/CACHEDIR.TAG",
            "a/keep",
            "a/keep/y.txt",
            "a/x.txt",
            "b",
            "c",
            "c/.nobackup"
        ]
    );
}

#[test]
fn restore_include_exclude_and_subpath() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    tree(&src);
    env.backup([&src]);
    let s = src.to_str().unwrap();

    let t = env.path("inc");
    env.restore("latest", &t, &["--include", "*.txt"]);
    let mut got = names_under(&t.join(src.strip_prefix("/").unwrap()));
    got.sort();
    assert_eq!(got, ["a", "a/keep", "a/keep/y.txt", "a/x.txt"]);

    let t = env.path("exc");
    env.restore(
        "latest",
        &t,
        &["--exclude", &format!("{s}/a"), "--exclude", "secret"],
    );
    let mut got = names_under(&t.join(src.strip_prefix("/").unwrap()));
    got.sort();
    assert_eq!(got, ["b", "b/B.BAK", "b/ok", "c", "c/.nobackup"]);

    // SNAP:SUBPATH puts the directory's contents straight into the target.
    let t = env.path("sub");
    env.restore(&format!("latest:{s}/a/keep"), &t, &[]);
    assert_eq!(names_under(&t), ["y.txt"]);
    assert_eq!(fs::read(t.join("y.txt")).unwrap(), b"a/keep/y.txt");
    // A single file as SUBPATH lands as target/NAME.
    let t = env.path("one");
    env.restore(&format!("latest:{s}/b/ok"), &t, &[]);
    assert_eq!(names_under(&t), ["ok"]);
    // A SUBPATH that is not there is an error.
    let out = env.run([
        "restore",
        &format!("latest:{s}/nope"),
        "--target",
        t.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("not in the snapshot"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn stdin_backup_and_dry_runs() {
    let env = Env::new();
    env.init();
    let data = random_bytes(3_000_000, 4);
    let mut child = env
        .cmd()
        .args(["--json", "backup", "--stdin", "--stdin-filename", "db.sql"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let t = env.path("t");
    env.restore("latest", &t, &[]);
    assert!(fs::read(t.join("db.sql")).unwrap() == data);
    let list: serde_json::Value = serde_json::from_str(&env.ok(["--json", "snapshots"])).unwrap();
    assert_eq!(list[0]["paths"][0], "/db.sql");

    // backup --dry-run writes nothing.
    let src = env.path("src");
    tree(&src);
    let before = env.repo_size();
    let out = env.ok(["--json", "backup", "--dry-run", src.to_str().unwrap()]);
    let s = summary_line(&out);
    assert!(s["snapshot_id"].is_null());
    assert!(s["data_added"].as_u64().unwrap() > 0);
    assert_eq!(env.repo_size(), before);
    // restore --dry-run lists and writes nothing.
    let t = env.path("dry");
    let out = env.ok([
        "restore",
        "latest",
        "--target",
        t.to_str().unwrap(),
        "--dry-run",
    ]);
    assert!(out.contains("db.sql"), "{out}");
    assert!(!t.exists());
}

#[test]
fn ls_lists_paths_and_json() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    tree(&src);
    env.backup([&src]);
    let s = src.to_str().unwrap();
    let out = env.ok(["ls", "latest"]);
    assert!(
        out.lines().any(|l| l == format!("{s}/a/keep/y.txt")),
        "{out}"
    );
    let out = env.ok(["ls", "latest", &format!("{s}/a")]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], format!("{s}/a"));
    assert!(lines.contains(&format!("{s}/a/x.txt").as_str()));
    assert!(
        !lines.contains(&format!("{s}/a/keep/y.txt").as_str()),
        "not recursive by default"
    );
    let out = env.ok(["ls", "latest", &format!("{s}/a"), "--recursive", "-l"]);
    assert!(out.contains("a/keep/y.txt"));
    assert!(out.lines().any(|l| l.starts_with("-rw-r--r--")), "{out}");
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(["--json", "ls", "latest", &format!("{s}/b")])).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["b", "B.BAK", "ok"]);
    assert_eq!(v[1]["size"], 7, "b/B.BAK holds its own 7-byte path");
}
