//! Bad input gets a clear one-line error and the right exit code, and loses nothing.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::*;

fn first_file(dir: &Path) -> PathBuf {
    walk(dir)
        .into_iter()
        .find(|p| p.is_file() && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .unwrap_or_else(|| panic!("no file under {}", dir.display()))
}

fn flip_byte(p: &Path, at: usize) {
    let mut b = fs::read(p).unwrap();
    let i = at.min(b.len() - 1);
    b[i] ^= 0x01;
    fs::write(p, b).unwrap();
}

fn backed_up_env() -> (Env, PathBuf) {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("data"), random_bytes(200_000, 21)).unwrap();
    env.backup([&src]);
    (env, src)
}

#[test]
fn wrong_password_is_exit_12_with_one_line() {
    let (env, _) = backed_up_env();
    let out = env
        .cmd()
        .env("CAIRN_PASSWORD", "wrong")
        .arg("snapshots")
        .output()
        .unwrap();
    assert_eq!(code(&out), 12);
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("wrong password"), "{err}");
}

#[test]
fn missing_repository_is_exit_10_for_every_command() {
    let env = Env::new();
    for args in [
        &["snapshots"][..],
        &["backup", "/etc/hostname"],
        &["ls", "latest"],
        &["key", "list"],
    ] {
        let out = env.run(args);
        assert_eq!(code(&out), 10, "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("does not exist"));
    }
    assert!(
        !env.repo.exists(),
        "nothing may be created for an explicit -r"
    );
}

#[test]
fn no_password_source_and_no_terminal_fails_at_once() {
    let (env, _) = backed_up_env();
    let start = Instant::now();
    let out = env
        .cmd()
        .env_remove("CAIRN_PASSWORD")
        .arg("snapshots")
        .output()
        .unwrap();
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("no password given"),
        "{}",
        stderr(&out)
    );
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "it must not wait for input"
    );
}

#[test]
fn password_file_and_command_work() {
    let (env, _) = backed_up_env();
    let pf = env.path("pw");
    fs::write(&pf, format!("{PASSWORD}\n")).unwrap();
    let out = env
        .cmd()
        .env_remove("CAIRN_PASSWORD")
        .args(["--password-file", pf.to_str().unwrap(), "snapshots"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env
        .cmd()
        .env_remove("CAIRN_PASSWORD")
        .env("CAIRN_PASSWORD_COMMAND", format!("echo '{PASSWORD}'"))
        .arg("snapshots")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn missing_source_path_fails_before_writing() {
    let env = Env::new();
    env.init();
    let before = env.repo_size();
    fs::create_dir_all(env.path("src")).unwrap();
    let out = env.run(["backup", env.path("src").to_str().unwrap(), "/no/such/path"]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("/no/such/path"), "{}", stderr(&out));
    assert_eq!(env.repo_size(), before);
    assert_eq!(fs::read_dir(env.repo.join("snapshots")).unwrap().count(), 0);
}

#[test]
fn flipped_byte_in_a_pack_is_exit_13_and_writes_no_wrong_bytes() {
    let (env, src) = backed_up_env();
    // The data pack: the largest (the tree pack is small, and also in the local cache).
    let pack = walk(&env.repo.join("data"))
        .into_iter()
        .filter(|p| p.is_file())
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    flip_byte(&pack, 100);
    let target = env.path("t");
    let out = env.run(["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(code(&out), 13, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(pack.file_name().unwrap().to_str().unwrap()),
        "{}",
        stderr(&out)
    );
    let restored = target.join(src.strip_prefix("/").unwrap()).join("data");
    assert!(
        !restored.exists(),
        "a file with damaged content was written"
    );
    let leftovers: Vec<_> = walk(&target).into_iter().filter(|p| p.is_file()).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn truncated_pack_is_exit_13() {
    for which in ["data", "tree"] {
        let (env, _) = backed_up_env();
        let mut packs: Vec<_> = walk(&env.repo.join("data"))
            .into_iter()
            .filter(|p| p.is_file())
            .collect();
        packs.sort_by_key(|p| fs::metadata(p).unwrap().len());
        // The largest pack holds the data, the smallest the trees.
        let pack = if which == "data" {
            packs.last()
        } else {
            packs.first()
        }
        .unwrap()
        .clone();
        let b = fs::read(&pack).unwrap();
        fs::write(&pack, &b[..b.len() / 2]).unwrap();
        // Without the local cache (which holds a good copy of the tree pack).
        let t = env.path("t");
        let out = env.run([
            "--no-cache",
            "restore",
            "latest",
            "--target",
            t.to_str().unwrap(),
        ]);
        assert_eq!(code(&out), 13, "{which}: {}", stderr(&out));
        let out = env.run(["check", "--read-data"]);
        assert_eq!(
            code(&out),
            13,
            "{which}: check reads the repository, not the cache: {}",
            stderr(&out)
        );
    }
}

#[test]
fn damaged_metadata_files_are_exit_13_naming_the_file() {
    for dir in ["snapshots", "index", "keys"] {
        let (env, _) = backed_up_env();
        let f = first_file(&env.repo.join(dir));
        flip_byte(&f, 40);
        let out = env.run(["--no-cache", "ls", "latest"]);
        assert_eq!(code(&out), 13, "{dir}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(dir), "{dir}: {err}");
        // A damaged snapshot is first a warning naming it (it is skipped), then the
        // error: no readable snapshot is left for `latest`.
        let lines = if dir == "snapshots" { 2 } else { 1 };
        assert_eq!(err.lines().count(), lines, "{err}");
        if dir != "keys" {
            let out = env.run(["check"]);
            assert_eq!(code(&out), 13, "check bypasses the cache: {}", stderr(&out));
        }
    }
    let (env, _) = backed_up_env();
    flip_byte(&env.repo.join("config"), 30);
    let out = env.run(["snapshots"]);
    assert_eq!(code(&out), 13, "{}", stderr(&out));
    assert!(stderr(&out).contains("config"));
}

#[test]
fn newer_repository_version_is_refused_clearly() {
    let (env, _) = backed_up_env();
    use cairn::backend::{Backend, FileType, LocalBackend};
    let backend = std::sync::Arc::new(LocalBackend::new(env.repo.clone()));
    let repo = cairn::Repository::open(backend.clone(), PASSWORD.as_bytes()).unwrap();
    let mut cfg = repo.config.clone();
    cfg.version = cairn::repo::config::REPO_VERSION_SHARED_KEYS + 1;
    backend
        .write(FileType::Config, "", &cfg.encode(&repo.key.sealing))
        .unwrap();
    let out = env.run(["snapshots"]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("newer than this cairn supports"),
        "{}",
        stderr(&out)
    );
}

/// Runs cairn as `nobody`, for whom a mode-000 file really is unreadable.
fn as_nobody(env: &Env, args: &[&str]) -> std::process::Output {
    let mut c = std::process::Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
    let inner = env.cmd();
    c.arg(inner.get_program());
    c.args(inner.get_args());
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.args(args).stdin(std::process::Stdio::null());
    c.output().unwrap()
}

#[test]
fn unreadable_source_file_warns_keeps_going_and_exits_3() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("readable"), b"fine").unwrap();
    fs::write(src.join("secret"), b"no access").unwrap();
    fs::set_permissions(src.join("secret"), fs::Permissions::from_mode(0o000)).unwrap();
    let run = |args: &[&str]| {
        if is_root() {
            as_nobody(&env, args)
        } else {
            env.run(args)
        }
    };
    if is_root() {
        for p in [env.dir.path(), &env.dir.path().join("home"), &src] {
            fs::set_permissions(p, fs::Permissions::from_mode(0o777)).unwrap();
        }
    }
    let out = run(&["init"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&["backup", src.to_str().unwrap()]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("secret"), "{}", stderr(&out));
    let out = run(&["ls", "latest"]);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("readable") && !listing.contains("secret"),
        "{listing}"
    );
}

#[test]
fn full_disk_fails_cleanly_and_keeps_the_repository() {
    if !is_root() {
        assert!(
            std::env::var("CI").is_err(),
            "CI must run as root for the tmpfs test"
        );
        eprintln!("skipped: needs root to mount a small tmpfs");
        return;
    }
    let env = Env::new();
    let mnt = env.path("small");
    fs::create_dir_all(&mnt).unwrap();
    let status = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=4m",
            "tmpfs",
            mnt.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(status.success(), "mount tmpfs");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    let repo = mnt.join("repo");
    let r = repo.to_str().unwrap();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("small"), b"first").unwrap();
    assert!(env
        .bare()
        .args(["-r", r, "init"])
        .status()
        .unwrap()
        .success());
    assert!(env
        .bare()
        .args(["-r", r, "backup", src.to_str().unwrap()])
        .status()
        .unwrap()
        .success());
    fs::write(src.join("big"), random_bytes(12 << 20, 3)).unwrap();
    let out = env
        .bare()
        .args(["-r", r, "backup", src.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("No space left"), "{}", stderr(&out));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    // The first snapshot is still there and restores.
    let out = env
        .bare()
        .args(["-r", r, "--json", "snapshots"])
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    let t = env.path("t");
    let out = env
        .bare()
        .args([
            "-r",
            r,
            "restore",
            "latest",
            "--target",
            t.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        fs::read(t.join(src.strip_prefix("/").unwrap()).join("small")).unwrap(),
        b"first"
    );
}
