//! `--overwrite` decides for every kind of entry (file, directory, symlink, fifo), and a
//! hard link is only ever made to a file this restore wrote.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};

use crate::common::*;

/// A one-line description of what is at `p`, recursing into directories.
fn describe(p: &Path) -> String {
    let Ok(m) = p.symlink_metadata() else {
        return "missing".into();
    };
    let ft = m.file_type();
    use std::os::unix::fs::FileTypeExt;
    if ft.is_file() {
        format!("file:{}", String::from_utf8_lossy(&fs::read(p).unwrap()))
    } else if ft.is_symlink() {
        format!("symlink:{}", fs::read_link(p).unwrap().display())
    } else if ft.is_fifo() {
        "fifo".into()
    } else if ft.is_dir() {
        let mut names: Vec<_> = fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        let inner: Vec<String> = names
            .iter()
            .map(|n| format!("{}={}", n.to_string_lossy(), describe(&p.join(n))))
            .collect();
        format!("dir:{{{}}}", inner.join(","))
    } else {
        "other".into()
    }
}

fn set_mtime(p: &Path, secs: i64) {
    let t = filetime::FileTime::from_unix_time(secs, 0);
    filetime::set_symlink_file_times(p, t, t).unwrap();
}

/// 2001-09-09: the snapshot's entries are from then.
const SNAP_TIME: i64 = 1_000_000_000;

/// Backs up `src` holding `s-file`, `s-dir/inner` and `s-link`; returns the directory
/// in a target where `src` is restored.
fn snapshot_of_three_kinds(env: &Env) -> PathBuf {
    let src = env.path("src");
    fs::create_dir_all(src.join("s-dir")).unwrap();
    fs::write(src.join("s-file"), "snapshot file").unwrap();
    fs::write(src.join("s-dir/inner"), "snapshot inner").unwrap();
    symlink("snap-target", src.join("s-link")).unwrap();
    for p in ["s-file", "s-dir/inner", "s-dir", "s-link"] {
        set_mtime(&src.join(p), SNAP_TIME);
    }
    env.backup([&src]);
    src
}

fn make_existing(p: &Path, kind: &str, mtime: Option<i64>) {
    match kind {
        "file" => fs::write(p, "local file").unwrap(),
        "dir" => {
            fs::create_dir(p).unwrap();
            fs::write(p.join("precious"), "local precious").unwrap();
        }
        "symlink" => symlink("local-target", p).unwrap(),
        "fifo" => nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap(),
        _ => unreachable!(),
    }
    if let Some(t) = mtime {
        set_mtime(p, t);
    }
}

fn restored(target: &Path, src: &Path) -> PathBuf {
    target.join(src.strip_prefix("/").unwrap())
}

#[test]
fn overwrite_table_every_mode_by_existing_kind_by_snapshot_kind() {
    let env = Env::new();
    env.init();
    let src = snapshot_of_three_kinds(&env);
    let snap_desc: Vec<(&str, String)> = ["s-file", "s-dir", "s-link"]
        .iter()
        .map(|n| (*n, describe(&src.join(n))))
        .collect();
    // (mode, mtime of the existing entries: None = now, newer than the snapshot's)
    let modes: [(&str, Option<i64>); 5] = [
        ("always", None),
        ("if-changed", None),
        ("if-newer", None),
        ("if-newer", Some(SNAP_TIME - 1000)),
        ("never", None),
    ];
    let mut failures = Vec::new();
    for (i, (mode, age)) in modes.iter().enumerate() {
        for existing in ["file", "dir", "symlink", "fifo"] {
            let target = env.path(&format!("t-{i}-{existing}"));
            let r = restored(&target, &src);
            fs::create_dir_all(&r).unwrap();
            let mut before = Vec::new();
            for (name, _) in &snap_desc {
                make_existing(&r.join(name), existing, *age);
                before.push(describe(&r.join(name)));
            }
            let t = target.to_str().unwrap();
            let out = env.run([
                "restore",
                "latest",
                "--target",
                t,
                "--overwrite",
                mode,
                "--no-safety-snapshot",
            ]);
            assert_eq!(code(&out), 0, "{mode} over {existing}: {}", stderr(&out));
            for ((name, snap), before) in snap_desc.iter().zip(&before) {
                let replaces = match *mode {
                    "always" | "if-changed" => true,
                    "if-newer" => age.is_some(),
                    _ => false,
                };
                let want = if existing == "dir" && *name == "s-dir" {
                    // A directory where the snapshot has one is merged into, by every mode.
                    "dir:{inner=file:snapshot inner,precious=file:local precious}".to_string()
                } else if replaces {
                    snap.clone()
                } else {
                    before.clone()
                };
                let got = describe(&r.join(name));
                if got != want {
                    failures.push(format!(
                        "--overwrite {mode} (existing {}), existing {existing} at {name}: want {want}, got {got}",
                        if age.is_some() { "older" } else { "newer" }
                    ));
                }
            }
            // Nothing else appeared (no temporary names left behind).
            let mut names: Vec<_> = fs::read_dir(&r)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            assert_eq!(
                names,
                ["s-dir", "s-file", "s-link"],
                "{mode} over {existing}"
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn never_keeps_a_directory_where_the_snapshot_has_a_symlink() {
    // The reported case: `projects` is a symlink in the snapshot, a real directory with
    // work in it in the target.
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    symlink("/nonexistent/projects", src.join("projects")).unwrap();
    env.backup([&src]);
    let target = env.path("t");
    let r = restored(&target, &src);
    fs::create_dir_all(r.join("projects")).unwrap();
    fs::write(r.join("projects/thesis.tex"), "\\chapter{Four years}").unwrap();
    let out = env.ok([
        "--json",
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--overwrite",
        "never",
    ]);
    assert_eq!(
        fs::read(r.join("projects/thesis.tex")).unwrap(),
        b"\\chapter{Four years}"
    );
    let s = summary_line(&out);
    assert_eq!(s["other_skipped"], 1, "{out}");
    assert_eq!(s["replaced"], 0, "{out}");
    assert_eq!(s["safety_snapshot"], serde_json::Value::Null, "{out}");
}

#[test]
fn never_keeps_a_file_where_the_snapshot_has_a_directory() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("notes")).unwrap();
    fs::write(src.join("notes/a"), "snapshot a").unwrap();
    fs::write(src.join("other"), "snapshot other").unwrap();
    env.backup([&src]);
    let target = env.path("t");
    let r = restored(&target, &src);
    fs::create_dir_all(&r).unwrap();
    fs::write(r.join("notes"), "local notes file").unwrap();
    let out = env.run([
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--overwrite",
        "never",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("skipped"), "{}", stderr(&out));
    assert_eq!(fs::read(r.join("notes")).unwrap(), b"local notes file");
    // The rest of the snapshot is restored.
    assert_eq!(fs::read(r.join("other")).unwrap(), b"snapshot other");
}

#[test]
fn if_changed_keeps_equal_files_and_symlinks_in_place() {
    let env = Env::new();
    env.init();
    let src = snapshot_of_three_kinds(&env);
    let target = env.path("t");
    env.restore("latest", &target, &[]);
    let r = restored(&target, &src);
    let ino = |n: &str| r.join(n).symlink_metadata().unwrap().ino();
    let (file, link) = (ino("s-file"), ino("s-link"));
    let out = env.ok([
        "--json",
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
    ]);
    let s = summary_line(&out);
    assert_eq!(s["replaced"], 0, "{out}");
    assert_eq!(s["files_skipped"], 2, "{out}");
    assert_eq!(s["other_skipped"], 1, "{out}");
    assert_eq!((ino("s-file"), ino("s-link")), (file, link));
    // A symlink with another target is replaced.
    fs::remove_file(r.join("s-link")).unwrap();
    symlink("elsewhere", r.join("s-link")).unwrap();
    env.restore("latest", &target, &["--no-safety-snapshot"]);
    assert_eq!(
        fs::read_link(r.join("s-link")).unwrap(),
        Path::new("snap-target")
    );
}

#[test]
fn if_newer_never_links_a_snapshot_file_to_a_kept_unrelated_file() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), "snapshot content").unwrap();
    fs::hard_link(src.join("a"), src.join("b")).unwrap();
    set_mtime(&src.join("a"), SNAP_TIME);
    env.backup([&src]);
    let target = env.path("t");
    let r = restored(&target, &src);
    fs::create_dir_all(&r).unwrap();
    // Newer than the snapshot's, and unrelated.
    fs::write(r.join("a"), "my newer local a").unwrap();
    for mode in ["if-newer", "never"] {
        let _ = fs::remove_file(r.join("b"));
        env.restore("latest", &target, &["--overwrite", mode]);
        assert_eq!(
            fs::read(r.join("a")).unwrap(),
            b"my newer local a",
            "{mode}"
        );
        assert_eq!(
            fs::read(r.join("b")).unwrap(),
            b"snapshot content",
            "{mode}"
        );
        let ino = |n: &str| r.join(n).metadata().unwrap().ino();
        assert_ne!(ino("a"), ino("b"), "{mode}: b linked to the kept a");
        assert_eq!(r.join("a").metadata().unwrap().nlink(), 1, "{mode}");
    }
}
