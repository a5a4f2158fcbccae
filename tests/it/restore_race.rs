//! Another process with write access inside the target keeps swapping the target's
//! directories for symlinks to a sibling directory while restores run: nothing may ever
//! appear in the sibling. A restore may fail (it notices the swap), but never succeeds
//! by writing outside its target.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;

/// 4 × 4 × 4 directories, 8 files in each of the deepest: 84 directories, 512 files.
fn deep_and_wide(src: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for a in 0..4 {
        let da = src.join(format!("a{a}"));
        dirs.push(da.clone());
        for b in 0..4 {
            let db = da.join(format!("b{b}"));
            dirs.push(db.clone());
            for c in 0..4 {
                let dc = db.join(format!("c{c}"));
                fs::create_dir_all(&dc).unwrap();
                dirs.push(dc.clone());
                for f in 0..8 {
                    fs::write(dc.join(format!("f{f}")), format!("{a}{b}{c}{f}")).unwrap();
                }
            }
        }
    }
    dirs
}

/// Swaps every directory it finds at `dirs` for a symlink to `sibling` (renaming the
/// real one aside, inside the target) until `stop`; returns how many it swapped.
fn swapper(dirs: Vec<PathBuf>, sibling: PathBuf, stop: Arc<AtomicBool>) -> u64 {
    let mut swaps = 0u64;
    let mut n = 0u64;
    // Bounded, in case the restore hangs: the test then fails on its own terms.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        for p in &dirs {
            if p.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                n += 1;
                let aside = p.with_file_name(format!(
                    "{}.aside{n}",
                    p.file_name().unwrap().to_string_lossy()
                ));
                if fs::rename(p, &aside).is_ok() && symlink(&sibling, p).is_ok() {
                    swaps += 1;
                }
            }
        }
    }
    swaps
}

#[test]
fn swapping_directories_for_symlinks_never_steers_a_restore_outside() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    let dirs = deep_and_wide(&src);
    env.backup([&src]);
    let sibling = env.path("sibling");
    fs::create_dir_all(&sibling).unwrap();
    let mut swaps = 0;
    let mut failed = 0;
    let mut target = env.path("t0");
    for i in 0..20 {
        // Even runs: a fresh target. Odd runs: again into the attacked one, where
        // symlinks and directories moved aside are already waiting.
        let extra: &[&str] = if i % 2 == 0 {
            target = env.path(&format!("t{i}"));
            &[]
        } else {
            &["--overwrite", "always", "--no-safety-snapshot"]
        };
        let in_target: Vec<PathBuf> = dirs
            .iter()
            .map(|d| target.join(d.strip_prefix("/").unwrap()))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stop, sibling) = (stop.clone(), sibling.clone());
            std::thread::spawn(move || swapper(in_target, sibling, stop))
        };
        let out = env
            .cmd()
            .args(["restore", "latest", "--target"])
            .arg(&target)
            .args(extra)
            .output()
            .unwrap();
        stop.store(true, Ordering::Relaxed);
        swaps += thread.join().unwrap();
        let outside = walk(&sibling);
        assert!(
            outside.is_empty(),
            "run {i} (exit {:?}) wrote outside its target: {} entries, e.g. {:?}\n{}",
            out.status.code(),
            outside.len(),
            &outside[..outside.len().min(5)],
            stderr(&out)
        );
        let c = code(&out);
        if c != 0 {
            failed += 1;
            assert!(stderr(&out).contains("error"), "exit {c}: {}", stderr(&out));
        }
    }
    assert!(swaps > 0, "the swapper never got to swap a directory");
    eprintln!("{swaps} directories swapped; {failed} of 20 restores noticed and failed");
}
