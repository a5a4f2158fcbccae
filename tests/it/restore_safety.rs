//! Rollback protection: a restore that replaces or deletes something first saves it in
//! a `pre-restore` snapshot; a dry run changes nothing and lists what would happen.

use std::fs;
use std::path::{Path, PathBuf};

use crate::common::*;

fn restored(target: &Path, src: &Path) -> PathBuf {
    target.join(src.strip_prefix("/").unwrap())
}

/// `src` with a file, a directory and a symlink, backed up; returns src.
fn simple_snapshot(env: &Env) -> PathBuf {
    let src = env.path("src");
    fs::create_dir_all(src.join("docs")).unwrap();
    fs::write(src.join("report"), "snapshot report").unwrap();
    fs::write(src.join("docs/plan"), "snapshot plan").unwrap();
    std::os::unix::fs::symlink("docs/plan", src.join("link")).unwrap();
    env.backup([&src]);
    src
}

/// A target already holding `src`'s restore, then changed locally: `report` edited,
/// `link` made a directory with work in it, `extra/` and `stray` added.
fn changed_target(env: &Env, src: &Path) -> PathBuf {
    let target = env.path("t");
    env.restore("latest", &target, &[]);
    let r = restored(&target, src);
    fs::write(r.join("report"), "my edited report").unwrap();
    fs::remove_file(r.join("link")).unwrap();
    fs::create_dir_all(r.join("link/sub")).unwrap();
    fs::write(r.join("link/sub/work"), "work in a dir").unwrap();
    fs::create_dir_all(r.join("extra")).unwrap();
    fs::write(r.join("extra/new"), "new local file").unwrap();
    fs::write(r.join("stray"), "stray local file").unwrap();
    target
}

fn snapshot_count(env: &Env, tag: Option<&str>) -> usize {
    let mut args = vec!["--json", "snapshots"];
    if let Some(t) = tag {
        args.extend(["--tag", t]);
    }
    let v: serde_json::Value = serde_json::from_str(&env.ok(args)).unwrap();
    v.as_array().unwrap().len()
}

fn without_atime(mut s: Snapshot) -> Snapshot {
    for e in s.entries.values_mut() {
        e.atime = None;
    }
    s
}

#[test]
fn what_a_restore_replaces_or_deletes_is_saved_first() {
    let env = Env::new();
    env.init();
    let src = simple_snapshot(&env);
    let target = changed_target(&env, &src);
    let r = restored(&target, &src);
    let out = env.run([
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--delete",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let err = stderr(&out);
    let line = err
        .lines()
        .find(|l| l.starts_with("cairn: saved what this restore replaces as snapshot "))
        .unwrap_or_else(|| panic!("no safety snapshot line in {err}"));
    let short = line.split_whitespace().nth(8).unwrap();
    assert!(line.ends_with("(tag pre-restore)"), "{line}");
    // The restore itself happened.
    assert_eq!(fs::read(r.join("report")).unwrap(), b"snapshot report");
    assert!(!r.join("extra").exists() && !r.join("stray").exists());
    assert!(r.join("link").symlink_metadata().unwrap().is_symlink());
    // The safety snapshot exists, is tagged, and gives back exactly the old entries.
    let snaps: serde_json::Value =
        serde_json::from_str(&env.ok(["--json", "snapshots", "--tag", "pre-restore"])).unwrap();
    let snaps = snaps.as_array().unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["short_id"], short);
    let back = env.path("back");
    env.restore(short, &back, &[]);
    let b = restored(&back, &r);
    assert_eq!(fs::read(b.join("report")).unwrap(), b"my edited report");
    assert_eq!(fs::read(b.join("link/sub/work")).unwrap(), b"work in a dir");
    assert_eq!(fs::read(b.join("extra/new")).unwrap(), b"new local file");
    assert_eq!(fs::read(b.join("stray")).unwrap(), b"stray local file");
    // Exactly what was replaced or deleted: not the unchanged docs/.
    assert!(!b.join("docs").exists());
}

#[test]
fn json_names_the_safety_snapshot() {
    let env = Env::new();
    env.init();
    let src = simple_snapshot(&env);
    let target = changed_target(&env, &src);
    let out = env.ok([
        "--json",
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
    ]);
    let s = summary_line(&out);
    let id = s["safety_snapshot"].as_str().expect("safety_snapshot id");
    assert_eq!(id.len(), 64, "{out}");
    assert_eq!(s["replaced"], 2, "{out}"); // report, link
    let back = env.path("back");
    env.restore(id, &back, &[]);
    let b = restored(&back, &restored(&target, &src));
    assert_eq!(fs::read(b.join("report")).unwrap(), b"my edited report");
}

#[test]
fn no_safety_snapshot_and_empty_or_new_targets_make_none() {
    let env = Env::new();
    env.init();
    let src = simple_snapshot(&env);
    let base = snapshot_count(&env, None);
    // A new target, then an empty one.
    env.restore("latest", &env.path("new"), &[]);
    fs::create_dir_all(env.path("empty")).unwrap();
    env.restore("latest", &env.path("empty"), &[]);
    // A non-empty target where nothing is replaced (all up to date).
    env.restore("latest", &env.path("new"), &[]);
    assert_eq!(snapshot_count(&env, None), base);
    let target = changed_target(&env, &src);
    let base = snapshot_count(&env, None);
    let out = env.run([
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--delete",
        "--no-safety-snapshot",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(!stderr(&out).contains("pre-restore"), "{}", stderr(&out));
    assert_eq!(snapshot_count(&env, None), base);
    assert_eq!(snapshot_count(&env, Some("pre-restore")), 0);
}

#[test]
fn no_lock_refuses_a_restore_that_needs_a_safety_snapshot() {
    let env = Env::new();
    env.init();
    let src = simple_snapshot(&env);
    let target = changed_target(&env, &src);
    let before = without_atime(record(&target));
    let t = target.to_str().unwrap();
    let out = env.run(["--no-lock", "restore", "latest", "--target", t]);
    // Error::Usage, exit 1 like `--no-lock backup` (2 is for clap's own errors).
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--no-safety-snapshot"),
        "{}",
        stderr(&out)
    );
    let after = without_atime(record(&target));
    assert!(before.entries == after.entries, "the target changed");
    env.ok([
        "--no-lock",
        "restore",
        "latest",
        "--target",
        t,
        "--no-safety-snapshot",
    ]);
}

#[test]
fn dry_run_changes_nothing_and_lists_create_overwrite_delete() {
    let env = Env::new();
    env.init();
    let src = simple_snapshot(&env);
    let target = changed_target(&env, &src);
    let r = restored(&target, &src);
    fs::remove_file(r.join("docs/plan")).unwrap();
    let before = without_atime(record(&target));
    let base = snapshot_count(&env, None);
    let out = env.run([
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--delete",
        "--dry-run",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let after = without_atime(record(&target));
    assert!(
        before.entries == after.entries && before.link_groups == after.link_groups,
        "the dry run changed the target"
    );
    assert_eq!(
        snapshot_count(&env, None),
        base,
        "a dry run takes no snapshot"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    for want in [
        format!("would create {}", r.join("docs/plan").display()),
        format!("would overwrite {}", r.join("report").display()),
        format!("would overwrite {}", r.join("link").display()),
        format!("would delete {}", r.join("extra").display()),
        format!("would delete {}", r.join("stray").display()),
    ] {
        assert!(
            stdout.lines().any(|l| l == want),
            "no {want:?} in:\n{stdout}"
        );
    }
    // Nothing inside a directory that would be deleted is listed on its own.
    assert!(!stdout.contains("extra/new"), "{stdout}");
    // A dry run into a target that does not exist creates nothing.
    let none = env.path("none");
    let out = env.ok([
        "--json",
        "restore",
        "latest",
        "--target",
        none.to_str().unwrap(),
        "--dry-run",
    ]);
    assert!(!none.exists());
    let s = summary_line(&out);
    assert_eq!(s["files_restored"], 2, "{out}");
    assert_eq!(s["replaced"], 0, "{out}");
}

#[test]
fn restore_takes_its_lock_before_it_reads_the_index() {
    // With an exclusive lock held and a damaged index file, a restore that reads the
    // index first fails on the index (exit 13); one that locks first stops at the lock.
    let env = Env::new();
    env.init();
    simple_snapshot(&env);
    for e in fs::read_dir(env.repo.join("index")).unwrap() {
        fs::write(e.unwrap().path(), b"damaged").unwrap();
    }
    let repo = cairn::Repository::open(
        std::sync::Arc::new(cairn::backend::LocalBackend::new(env.repo.clone())),
        PASSWORD.as_bytes(),
    )
    .unwrap();
    let _guard = repo.lock(cairn::repo::lock::LockKind::Exclusive).unwrap();
    let t = env.path("t");
    let out = env.run([
        "--no-cache",
        "restore",
        "latest",
        "--target",
        t.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 11, "{}", stderr(&out));
    assert!(!t.exists());
}
