//! Regressions from the hostile review of the fd-relative restorer: each test failed on
//! the restorer before its fix.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;

fn restored(target: &Path, src: &Path) -> PathBuf {
    target.join(src.strip_prefix("/").unwrap())
}

/// A root restore sets a restored symlink's owner and times by (dir fd, name) with no
/// check of what is at the name: another user who swaps the new symlink for a hard link
/// to some file gets that file chowned to the symlink's owner.
#[test]
fn symlink_owner_is_set_in_a_private_staging_dir_never_on_what_replaced_the_name() {
    if !is_root() {
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let n = 3000;
    for i in 0..n {
        let p = src.join(format!("l{i:04}"));
        symlink("nowhere", &p).unwrap();
        std::os::unix::fs::lchown(&p, Some(4242), Some(4242)).unwrap();
    }
    env.backup([&src]);
    // The victim: root-owned, outside the target, on the same file system.
    let victim = env.path("victim");
    fs::write(&victim, "root's").unwrap();
    std::os::unix::fs::chown(&victim, Some(0), Some(0)).unwrap();
    let target = env.path("t");
    let r = restored(&target, &src);
    fs::create_dir_all(&r).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (stop, r, victim) = (stop.clone(), r.clone(), victim.clone());
        std::thread::spawn(move || {
            let mut k = 0u64;
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                for i in (0..n).rev() {
                    let p = r.join(format!("l{i:04}"));
                    if p.symlink_metadata()
                        .is_ok_and(|m| m.file_type().is_symlink())
                    {
                        k += 1;
                        let tmp = r.join(format!("swap{k}"));
                        if fs::hard_link(&victim, &tmp).is_ok() {
                            let _ = fs::rename(&tmp, &p);
                        }
                    }
                }
            }
        })
    };
    for _ in 0..5 {
        let _ = env.run([
            "restore",
            "latest",
            "--target",
            target.to_str().unwrap(),
            "--overwrite",
            "always",
            "--no-safety-snapshot",
        ]);
        if fs::metadata(&victim).unwrap().uid() != 0 {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    let m = fs::metadata(&victim).unwrap();
    assert_eq!(
        (m.uid(), m.gid()),
        (0, 0),
        "a file outside the target was chowned by the restore"
    );
}
