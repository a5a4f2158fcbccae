//! Everything a file system holds comes back exactly.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use filetime::FileTime;

use crate::common::*;

/// A tree with every kind of entry and awkward names, modes and times.
pub fn make_fixture(root: &Path) {
    fs::create_dir_all(root.join("dir/sub/deeper")).unwrap();
    fs::create_dir_all(root.join("empty dir")).unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    fs::write(root.join("small.txt"), b"hello, cairn\n").unwrap();
    fs::write(root.join("dir/random.bin"), random_bytes(3_000_000, 1)).unwrap();
    fs::write(
        root.join("dir/sub/text.log"),
        "line of text\n".repeat(50_000),
    )
    .unwrap();
    // Names: spaces, newline, unicode, and bytes that are not UTF-8.
    fs::write(root.join("with space"), b"s").unwrap();
    fs::write(root.join("new\nline"), b"n").unwrap();
    fs::write(root.join("ünïcødé ✓"), b"u").unwrap();
    fs::write(root.join(OsStr::from_bytes(b"bad\xff\xfename")), b"b").unwrap();
    // A sparse file: 64 MiB with a little data in the middle.
    let f = fs::File::create(root.join("sparse")).unwrap();
    f.set_len(64 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"island of data", 20 << 20).unwrap();
    drop(f);
    // Symlinks: relative, absolute, dangling, to a directory.
    symlink("small.txt", root.join("link-rel")).unwrap();
    symlink("/etc/hostname", root.join("link-abs")).unwrap();
    symlink("does/not/exist", root.join("link-dangling")).unwrap();
    symlink("dir/sub", root.join("link-dir")).unwrap();
    // Hardlinks: a group of three, one in another directory.
    fs::write(root.join("hl-a"), b"linked content").unwrap();
    fs::hard_link(root.join("hl-a"), root.join("hl-b")).unwrap();
    fs::hard_link(root.join("hl-a"), root.join("dir/hl-c")).unwrap();
    nix::unistd::mkfifo(
        &root.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    if is_root() {
        nix::sys::stat::mknod(
            &root.join("null-dev"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 3),
        )
        .unwrap();
        nix::unistd::chown(
            &root.join("small.txt"),
            Some(1234.into()),
            Some(5678.into()),
        )
        .unwrap();
        nix::unistd::chown(&root.join("dir/sub"), Some(4321.into()), Some(8765.into())).unwrap();
    }
    // Modes with setuid, setgid and sticky bits.
    fs::write(root.join("setuid"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(root.join("setuid"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::write(root.join("setgid"), b"g").unwrap();
    fs::set_permissions(root.join("setgid"), fs::Permissions::from_mode(0o2750)).unwrap();
    fs::create_dir(root.join("sticky")).unwrap();
    fs::set_permissions(root.join("sticky"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::write(root.join("private"), b"p").unwrap();
    fs::set_permissions(root.join("private"), fs::Permissions::from_mode(0o600)).unwrap();
    // Extended attributes.
    xattr::set(root.join("small.txt"), "user.comment", b"kept").unwrap();
    xattr::set(root.join("dir"), "user.dir-attr", b"\x00\x01binary").unwrap();
    // Times to the nanosecond, set last and deepest first.
    for (i, p) in walk(root).iter().rev().enumerate() {
        let mtime =
            FileTime::from_unix_time(1_600_000_000 + i as i64 * 1000, 123_456_789 - i as u32);
        let atime = FileTime::from_unix_time(1_700_000_000 + i as i64, 987_654_321 - i as u32);
        filetime::set_symlink_file_times(p, atime, mtime).unwrap();
    }
}

#[test]
fn full_round_trip_keeps_everything() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    make_fixture(&src);
    let before = record_meta(&src);
    env.backup([&src]);
    // Reading the source for the backup changed nothing there, atimes included.
    let after = record_meta(&src);
    assert_eq!(before.entries, after.entries, "backup changed the source");
    let target = env.path("target");
    env.restore("latest", &target, &[]);
    let restored = target.join(src.strip_prefix("/").unwrap());
    assert_same_tree(&src, &restored);
    // Sparse stays sparse: 64 MiB apparent, far less allocated.
    let m = fs::metadata(restored.join("sparse")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(m.len(), 64 << 20);
    assert!(
        m.blocks() * 512 < 4 << 20,
        "sparse file restored dense: {} blocks",
        m.blocks()
    );
}

#[test]
fn single_file_and_huge_file_boundaries() {
    let env = Env::new();
    env.init();
    // A file that is exactly one maximum chunk plus one byte, and one of one byte.
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("edge"), random_bytes(8 * 1024 * 1024 + 1, 7)).unwrap();
    fs::write(src.join("one"), b"x").unwrap();
    env.backup([&src.join("edge"), &src.join("one")]);
    let target = env.path("t");
    env.restore("latest", &target, &[]);
    let r = target.join(src.strip_prefix("/").unwrap());
    assert_eq!(
        fs::read(r.join("edge")).unwrap(),
        fs::read(src.join("edge")).unwrap()
    );
    assert_eq!(fs::read(r.join("one")).unwrap(), b"x");
}

#[test]
fn restore_over_existing_target_replaces_symlinks_without_following() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/f"), b"snapshot content").unwrap();
    env.backup([&src]);
    // The target already has a symlink where the directory goes, pointing outside.
    let outside = env.path("outside");
    fs::create_dir_all(&outside).unwrap();
    let target = env.path("t");
    let restored = target.join(src.strip_prefix("/").unwrap());
    fs::create_dir_all(&restored).unwrap();
    symlink(&outside, restored.join("d")).unwrap();
    env.restore("latest", &target, &[]);
    assert!(
        fs::read_dir(&outside).unwrap().next().is_none(),
        "wrote through a symlink"
    );
    assert_eq!(fs::read(restored.join("d/f")).unwrap(), b"snapshot content");
}

#[test]
fn unchanged_existing_files_are_left_alone() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), random_bytes(100_000, 3)).unwrap();
    fs::write(src.join("b"), b"bbb").unwrap();
    env.backup([&src]);
    let target = env.path("t");
    env.restore("latest", &target, &[]);
    let r = target.join(src.strip_prefix("/").unwrap());
    fs::write(r.join("b"), b"changed").unwrap();
    let out = env.ok([
        "--json",
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
    ]);
    let s = summary_line(&out);
    assert_eq!(s["files_skipped"], 1, "{out}");
    assert_eq!(s["files_restored"], 1, "{out}");
    assert_eq!(fs::read(r.join("b")).unwrap(), b"bbb");
    // --overwrite never keeps even a changed file.
    fs::write(r.join("b"), b"changed").unwrap();
    env.restore("latest", &target, &["--overwrite", "never"]);
    assert_eq!(fs::read(r.join("b")).unwrap(), b"changed");
}

#[test]
fn restore_verify_and_delete() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/keep"), random_bytes(50_000, 1)).unwrap();
    env.backup([&src]);
    let target = env.path("t");
    let r = target.join(src.strip_prefix("/").unwrap());
    fs::create_dir_all(r.join("d/extra-dir/deeper")).unwrap();
    fs::write(r.join("d/extra"), b"not in the snapshot").unwrap();
    symlink("/etc", r.join("d/extra-link")).unwrap();
    let out = env.ok([
        "--json",
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--verify",
        "--delete",
    ]);
    let s = summary_line(&out);
    assert_eq!(s["files_verified"], 1, "{out}");
    assert_eq!(s["deleted"], 3, "{out}");
    let mut left: Vec<_> = fs::read_dir(r.join("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    left.sort();
    assert_eq!(left, ["keep"]);
    assert!(
        Path::new("/etc/hostname").exists() || Path::new("/etc").exists(),
        "the symlink's target is untouched"
    );
}

/// The writers fill one directory's files while the walk goes on to make the next
/// directories, so a directory's mode and times must still come last, after its last
/// file. 200 directories of small files (some read-only, all with their own times),
/// restored with few descriptors (the bound on files in flight is reached), come back
/// exact; so does a second restore with `--delete` over the target after files were
/// added, changed and times moved in it.
#[test]
fn many_small_directories_come_back_exact_with_their_times_and_few_descriptors() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    let mut dirs = Vec::new();
    for i in 0..50usize {
        for j in 0..3usize {
            let d = src.join(format!("d{i:02}/e{j}"));
            fs::create_dir_all(&d).unwrap();
            for k in 0..12usize {
                let len = (i * 37 + j * 11 + k * 101) % 5_000;
                let seed = (i * 100 + j * 10 + k) as u64;
                fs::write(d.join(format!("f{k:02}")), random_bytes(len, seed)).unwrap();
            }
            dirs.push(d);
        }
        // After its children: setting their times leaves its own alone.
        dirs.push(src.join(format!("d{i:02}")));
    }
    let read_only = |n: usize| n % 7 == 3;
    for (n, d) in dirs.iter().enumerate() {
        if read_only(n) {
            fs::set_permissions(d, fs::Permissions::from_mode(0o555)).unwrap();
        }
        let t = FileTime::from_unix_time(1_500_000_000 + n as i64 * 3_600, n as u32 * 1_000);
        filetime::set_file_times(d, t, t).unwrap();
    }
    env.backup([&src]);
    let target = env.path("t");
    let t = target.to_str().unwrap();
    // Few enough that files in flight reach their bound (an eighth), enough for the
    // writer threads' own descriptors on a machine of many cores.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let fds = 64 + 8 * cores;
    let out = env.run_with_descriptors(&["restore", "latest", "--target", t], fds);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let r = target.join(src.strip_prefix("/").unwrap());
    assert_same_tree(&src, &r);

    // Extra files and changed files in the writable directories, other times on all.
    for (n, d) in dirs.iter().enumerate() {
        let d = r.join(d.strip_prefix(&src).unwrap());
        if !read_only(n) {
            fs::write(d.join("extra"), b"not in the snapshot").unwrap();
            if d.join("f03").exists() {
                fs::write(d.join("f03"), b"changed").unwrap();
            }
        }
        let t = FileTime::from_unix_time(1_600_000_000 + n as i64, 0);
        filetime::set_file_times(&d, t, t).unwrap();
    }
    let out = env.run_with_descriptors(&["restore", "latest", "--target", t, "--delete"], fds);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_same_tree_but_atime(&src, &r);
}
