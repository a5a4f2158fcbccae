//! Files that change while a backup reads them: a node's content and size come from
//! one read (hard-link members share it), and a file seen changing is a warning
//! naming it with exit 3.

use std::fs;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::common::*;

#[test]
fn hard_linked_file_growing_during_backup_stays_consistent() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), random_bytes(1 << 20, 5)).unwrap();
    for l in ["b", "c", "d"] {
        fs::hard_link(src.join("a"), src.join(l)).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, path) = (stop.clone(), src.join("a"));
        std::thread::spawn(move || {
            let mut f = fs::OpenOptions::new().append(true).open(path).unwrap();
            let mut n = 0u64;
            // Steady growth through every backup (paced, not timed: nothing asserts
            // on time). Bounded: stops when told, or after 20000 appends (~300 MiB).
            let chunk = random_bytes(16 << 10, 9);
            while !stop.load(Ordering::Relaxed) && n < 20_000 {
                f.write_all(&chunk).unwrap();
                n += 1;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        })
    };
    let mut ids = Vec::new();
    for _ in 0..4 {
        let out = env.run(["--json", "backup", src.to_str().unwrap()]);
        assert!(matches!(code(&out), 0 | 3), "{}", stderr(&out));
        ids.push(
            summary_line(&String::from_utf8_lossy(&out.stdout))["snapshot_id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    env.ok(["check", "--read-data"]);
    for (i, id) in ids.iter().enumerate() {
        let t = env.path(&format!("t{i}"));
        env.restore(id, &t, &[]);
        let listing: serde_json::Value =
            serde_json::from_str(&env.ok(["--json", "ls", "-l", id, src.to_str().unwrap()]))
                .unwrap();
        let restored = t.join(src.strip_prefix("/").unwrap());
        let mut sizes = Vec::new();
        for n in listing.as_array().unwrap() {
            if n["type"] != "file" {
                continue;
            }
            let name = n["name"].as_str().unwrap();
            let len = fs::metadata(restored.join(name)).unwrap().len();
            assert_eq!(n["size"].as_u64().unwrap(), len, "{id} {name}");
            sizes.push(len);
        }
        // Each link holds the content and size of one read; links seen with the same
        // stat share one read, and one seen changed is read for itself (a warning).
        assert_eq!(sizes.len(), 4);
    }
}

/// A file whose reads disagree with its size (a /proc file reports size 0) is one a
/// backup sees changing: warning naming it, exit 3, and what was read is stored.
#[test]
fn file_changing_while_read_is_a_warning_and_exit_3() {
    let env = Env::new();
    env.init();
    let file = "/proc/1/status";
    if !prerequisite(
        fs::read(file).is_ok_and(|b| !b.is_empty()),
        "a readable /proc/1/status",
    ) {
        return;
    }
    let out = env.run(["backup", file]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.lines()
            .any(|l| l.starts_with("warning:") && l.contains(file) && l.contains("changed")),
        "{err}"
    );
    let t = env.path("t");
    env.restore("latest", &t, &[]);
    let listing: serde_json::Value =
        serde_json::from_str(&env.ok(["--json", "ls", "-l", "latest", file])).unwrap();
    let len = fs::metadata(t.join("proc/1/status")).unwrap().len();
    assert!(len > 0);
    assert_eq!(listing[0]["size"].as_u64().unwrap(), len);
    env.ok(["check", "--read-data"]);
}

/// A file rewritten in the parent backup's clock tick with the same size and its
/// mtime put back keeps size, mtime and inode; its ctime may equal the parent's too
/// (coarse clock), which `--ignore-ctime` makes certain here: the rule still reads
/// it again, because it changed less than the margin before the parent's start.
#[test]
fn racy_clean_file_is_read_again() {
    for extra in [None, Some("--ignore-ctime")] {
        let env = Env::new();
        env.init();
        let src = env.path("src");
        fs::create_dir_all(&src).unwrap();
        let f = src.join("f");
        fs::write(&f, b"old content 1234").unwrap();
        let m = fs::metadata(&f).unwrap();
        let backup = || {
            let mut args = vec!["backup"];
            args.extend(extra);
            args.push(src.to_str().unwrap());
            env.ok(args);
        };
        backup();
        // Same size, same inode (written in place), mtime reset to the old value.
        fs::OpenOptions::new()
            .write(true)
            .open(&f)
            .unwrap()
            .write_all(b"NEW content 5678")
            .unwrap();
        use std::os::unix::fs::MetadataExt;
        let ts = nix::sys::time::TimeSpec::new(m.mtime(), m.mtime_nsec());
        nix::sys::stat::utimensat(
            None,
            &f,
            &ts,
            &ts,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
        backup();
        let t = env.path("t");
        env.restore("latest", &t, &[]);
        assert_eq!(
            fs::read(t.join(f.strip_prefix("/").unwrap())).unwrap(),
            b"NEW content 5678",
            "{extra:?}"
        );
    }
}

/// An unchanged file keeps its parent's extended attributes without a look (setting one
/// moves the ctime, so an equal ctime means equal attributes); a changed attribute makes
/// the file new to the walk, and the next snapshot has it.
#[test]
fn an_attribute_set_after_a_backup_reaches_the_next_snapshot() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/f"), b"content").unwrap();
    if xattr::set(src.join("d/f"), "user.v", b"1").is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI needs user xattrs on its temp dir"
        );
        return;
    }
    xattr::set(src.join("d"), "user.v", b"1").unwrap();
    // Out of the racy window, so the second backup trusts its parent.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    env.backup([&src]);
    let unchanged = env.ok(["--json", "backup", src.to_str().unwrap()]);
    assert_eq!(
        summary_line(&unchanged)["files_unmodified"],
        1,
        "{unchanged}"
    );
    xattr::set(src.join("d/f"), "user.v", b"2").unwrap();
    xattr::set(src.join("d"), "user.v", b"2").unwrap();
    env.backup([&src]);
    let t = env.path("t");
    env.restore("latest", &t, &[]);
    let r = t.join(src.strip_prefix("/").unwrap());
    assert_eq!(xattr::get(r.join("d/f"), "user.v").unwrap().unwrap(), b"2");
    assert_eq!(xattr::get(r.join("d"), "user.v").unwrap().unwrap(), b"2");
}
