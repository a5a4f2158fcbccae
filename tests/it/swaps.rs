//! A backup never follows a symlink swapped in for a file, never blocks on a FIFO
//! swapped in, and reports such swaps as warnings (item 9, the file part).

use std::fs;
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
