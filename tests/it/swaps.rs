//! A backup never follows a symlink swapped in for a file, never blocks on a FIFO
//! swapped in, and reports such swaps as warnings (item 9, the file part).

use std::fs;
use std::os::unix::process::CommandExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;

const SECRET: &[u8] = b"TOP-SECRET-OUTSIDE-THE-SOURCE";

#[test]
fn files_swapped_for_fifos_or_symlinks_never_hang_or_leak() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let secret = env.path("secret");
    fs::write(&secret, SECRET).unwrap();
    for i in 0..20 {
        fs::write(src.join(format!("plain{i}")), b"plain").unwrap();
    }
    fs::write(src.join("x"), b"regular").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (stop, src, secret) = (stop.clone(), src.clone(), secret.clone());
        std::thread::spawn(move || {
            let x = src.join("x");
            let mut i = 0u64;
            // Bounded: until told, or 200000 swaps.
            while !stop.load(Ordering::Relaxed) && i < 200_000 {
                let tmp = src.join(format!(".swap{}", i % 3));
                let _ = fs::remove_file(&tmp);
                match i % 3 {
                    0 => nix::unistd::mkfifo(&tmp, nix::sys::stat::Mode::from_bits(0o644).unwrap())
                        .unwrap(),
                    1 => std::os::unix::fs::symlink(&secret, &tmp).unwrap(),
                    _ => fs::write(&tmp, b"regular").unwrap(),
                }
                fs::rename(&tmp, &x).unwrap();
                i += 1;
            }
        })
    };
    let mut ids = Vec::new();
    for _ in 0..8 {
        let mut child = env
            .cmd()
            .args([
                "--json",
                "backup",
                "--exclude",
                ".swap*",
                src.to_str().unwrap(),
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A hang guard, not a timing assertion: a backup blocked on a FIFO never ends.
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                stop.store(true, Ordering::Relaxed);
                panic!("backup hung (blocked on a swapped-in FIFO?)");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        assert!(matches!(code(&out), 0 | 3), "{}", stderr(&out));
        for l in stderr(&out).lines() {
            assert!(l.contains("/src/x") || l.contains("source entries"), "{l}");
        }
        ids.push(
            summary_line(&String::from_utf8_lossy(&out.stdout))["snapshot_id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    for (i, id) in ids.iter().enumerate() {
        let t = env.path(&format!("t{i}"));
        env.restore(id, &t, &[]);
        for p in walk(&t) {
            let m = p.symlink_metadata().unwrap();
            if m.is_file() {
                let b = fs::read(&p).unwrap();
                assert!(
                    !b.windows(SECRET.len()).any(|w| w == SECRET),
                    "{} holds the secret",
                    p.display()
                );
            }
        }
    }
}

/// Item 9, directories: a directory swapped for a symlink to an outside directory while
/// backups run is never followed: nothing from outside the source enters a snapshot.
/// (The outside directory holds files of the same names, so a walk that lists one and
/// reads through the other would store the secret.)
#[test]
fn directories_swapped_for_symlinks_never_leak_outside_data() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    let outside = env.path("outside");
    fs::create_dir_all(src.join("d/sub")).unwrap();
    fs::create_dir_all(outside.join("sub")).unwrap();
    for i in 0..40 {
        fs::write(src.join(format!("d/f{i}")), b"inside").unwrap();
        fs::write(src.join(format!("d/sub/g{i}")), b"inside").unwrap();
        fs::write(outside.join(format!("f{i}")), SECRET).unwrap();
        fs::write(outside.join(format!("sub/g{i}")), SECRET).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (stop, src, outside) = (stop.clone(), src.clone(), outside.clone());
        std::thread::spawn(move || {
            let (d, real, link) = (src.join("d"), src.join(".d-real"), src.join(".d-link"));
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) && i < 100_000 {
                // d becomes a symlink to the outside for a moment, then the real one again.
                let _ = fs::remove_file(&link);
                std::os::unix::fs::symlink(&outside, &link).unwrap();
                fs::rename(&d, &real).unwrap();
                fs::rename(&link, &d).unwrap();
                fs::rename(&d, &link).unwrap();
                fs::rename(&real, &d).unwrap();
                i += 1;
            }
        })
    };
    let mut ids = Vec::new();
    for _ in 0..10 {
        let out = env
            .cmd()
            .args([
                "--json",
                "backup",
                "--exclude",
                ".d-*",
                src.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(matches!(code(&out), 0 | 3), "{}", stderr(&out));
        ids.push(
            summary_line(&String::from_utf8_lossy(&out.stdout))["snapshot_id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    for (i, id) in ids.iter().enumerate() {
        let t = env.path(&format!("t{i}"));
        env.restore(id, &t, &[]);
        for p in walk(&t) {
            if p.symlink_metadata().unwrap().is_file() {
                let b = fs::read(&p).unwrap();
                assert!(
                    !b.windows(SECRET.len()).any(|w| w == SECRET),
                    "{} holds data from outside the source",
                    p.display()
                );
            }
        }
    }
}

/// A directory chain deeper than the soft descriptor limit cron jobs often get (1024):
/// the walk holds one descriptor per level, so cairn raises its soft limit to the hard one
/// (found by a hostile review).
#[test]
fn a_tree_deeper_than_a_cron_jobs_descriptor_limit_is_backed_up_whole() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("aaa-first.txt"), b"other user's file").unwrap();
    let mut p = src.join("deep");
    for _ in 0..1100 {
        p.push("d");
    }
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join("leaf"), b"leaf").unwrap();
    std::fs::write(src.join("zzz-last.txt"), b"another file").unwrap();
    let mut c = env.cmd();
    c.args(["backup", "--json"]).arg(&src);
    unsafe {
        c.pre_exec(|| {
            let l = libc::rlimit {
                rlim_cur: 1024,
                rlim_max: 20000,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
            Ok(())
        });
    }
    let out = c.output().unwrap();
    let err = stderr(&out);
    assert_eq!(
        code(&out),
        0,
        "backup of a deep tree failed or warned: {}",
        &err[err.len().saturating_sub(300)..]
    );
}

/// `--exclude-caches` reads a CACHEDIR.TAG without following a symlink and without
/// blocking on a FIFO (found by a hostile review: the backup hung).
#[test]
fn a_fifo_named_cachedir_tag_never_blocks_exclude_caches() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("u")).unwrap();
    std::fs::write(src.join("u/f"), b"x").unwrap();
    nix::unistd::mkfifo(
        &src.join("u/CACHEDIR.TAG"),
        nix::sys::stat::Mode::from_bits(0o600).unwrap(),
    )
    .unwrap();
    let mut child = env
        .cmd()
        .args(["backup", "--exclude-caches"])
        .arg(&src)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let mut done = false;
    while t.elapsed() < Duration::from_secs(15) {
        if child.try_wait().unwrap().is_some() {
            done = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if !done {
        child.kill().unwrap();
    }
    child.wait().unwrap();
    assert!(
        done,
        "backup --exclude-caches hung on a FIFO named CACHEDIR.TAG"
    );
    // A symlink to a real tag elsewhere is not a tag here.
    let real = env.path("real-tag");
    std::fs::write(&real, b"Signature: 8a477f597d28d172789f06886806bc55").unwrap();
    std::fs::remove_file(src.join("u/CACHEDIR.TAG")).unwrap();
    std::os::unix::fs::symlink(&real, src.join("u/CACHEDIR.TAG")).unwrap();
    let out = env.ok([
        "--json",
        "backup",
        "--exclude-caches",
        src.to_str().unwrap(),
    ]);
    assert_eq!(
        summary_line(&out)["files_new"].as_u64().unwrap()
            + summary_line(&out)["files_unmodified"].as_u64().unwrap(),
        1,
        "{out}"
    );
}
