//! `mount`: a real FUSE mount, read with ordinary tools (root, /dev/fuse, fusermount3).

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// A running `cairn mount`, killed and unmounted when dropped.
struct Mounted {
    child: Child,
    mp: PathBuf,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("umount").arg("-l").arg(&self.mp).status();
    }
}

fn is_mounted(mp: &Path) -> bool {
    fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(mp.to_str().unwrap()))
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn can_mount() -> bool {
    let fusermount = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("fusermount3").is_file()))
        .unwrap_or(false);
    prerequisite(
        is_root() && Path::new("/dev/fuse").exists() && fusermount,
        "FUSE: root, /dev/fuse and fusermount3 (apt-get install fuse3)",
    )
}

fn mount(env: &Env) -> Mounted {
    let mp = env.path("mp");
    fs::create_dir_all(&mp).unwrap();
    let child = env
        .cmd()
        .arg("mount")
        .arg(&mp)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let m = Mounted { child, mp };
    wait_for("the mount", || m.mp.join("ids").is_dir());
    m
}

#[test]
fn a_mounted_snapshot_reads_like_its_source() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("sub/deeper")).unwrap();
    let big = random_bytes(6 << 20, 11);
    fs::write(src.join("big"), &big).unwrap();
    fs::write(src.join("sub/small"), b"small").unwrap();
    fs::set_permissions(src.join("sub/small"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::write(src.join("sub/deeper/x"), random_bytes(20_000, 3)).unwrap();
    fs::hard_link(src.join("sub/deeper/x"), src.join("hard")).unwrap();
    symlink("sub/small", src.join("link")).unwrap();
    nix::unistd::mkfifo(
        &src.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    nix::sys::stat::mknod(
        &src.join("null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o644),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    let _ = xattr::set(src.join("sub/small"), "user.cairn", b"mounted");
    let id = env.backup(["--tag", "daily", src.to_str().unwrap()]);
    let m = mount(&env);
    let rel = src.strip_prefix("/").unwrap();
    let in_id = m.mp.join("ids").join(&id).join(rel);

    // Contents, kinds, modes, owners, times, symlinks, device numbers, xattrs.
    assert_same_tree_but_atime(&src, &in_id);
    assert_eq!(fs::metadata(in_id.join("hard")).unwrap().nlink(), 2);
    let host = fs::read_dir(m.mp.join("hosts"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    for p in [
        m.mp.join("snapshots/latest"),
        m.mp.join("hosts").join(&host).join("latest"),
    ] {
        assert!(fs::symlink_metadata(&p).unwrap().file_type().is_symlink());
        assert_same_tree_but_atime(&src, &p.join(rel));
    }
    let tagged: Vec<_> = fs::read_dir(m.mp.join("tags/daily")).unwrap().collect();
    assert_eq!(tagged.len(), 2, "one time folder and latest");

    // Random reads fetch the right bytes (from the mount, not the page cache the tree
    // comparison filled).
    let mut f = fs::File::open(in_id.join("big")).unwrap();
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid descriptor; the advice only drops cached pages.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
    for i in 0..60u64 {
        let off = (i * 7_919_993) % (big.len() as u64 - 5000);
        let len = (i as usize * 131) % 4096 + 1;
        let mut buf = vec![0; len];
        f.seek(SeekFrom::Start(off)).unwrap();
        f.read_exact(&mut buf).unwrap();
        assert!(
            buf == big[off as usize..off as usize + len],
            "read at {off}"
        );
    }
    // Ordinary tools over it.
    let ok = |c: &mut Command| c.stdout(Stdio::null()).status().unwrap().success();
    assert!(ok(Command::new("tar")
        .arg("cf")
        .arg("/dev/null")
        .arg(&in_id)));
    assert!(ok(Command::new("diff")
        .arg("-r")
        .arg(src.join("sub"))
        .arg(in_id.join("sub"))));
    let found = Command::new("find").arg(&in_id).output().unwrap().stdout;
    assert_eq!(
        String::from_utf8_lossy(&found).lines().count(),
        walk(&src).len() + 1
    );

    // Read-only.
    let err = fs::write(in_id.join("new"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    let err = fs::write(in_id.join("sub/small"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");

    // A snapshot taken after mounting appears without remounting.
    fs::write(src.join("later"), b"later").unwrap();
    let second = env.backup([&src]);
    wait_for("the new snapshot", || {
        m.mp.join("ids").join(&second).is_dir()
    });
    assert_eq!(
        fs::read(m.mp.join("ids").join(&second).join(rel).join("later")).unwrap(),
        b"later"
    );

    // SIGTERM while a file is open: the mount is detached at once and cairn exits
    // cleanly (the open file then fails).
    let mut m = m;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(m.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = m.child.wait().unwrap();
    assert!(!is_mounted(&m.mp), "still mounted after SIGTERM");
    drop(f);
    assert!(status.success(), "{status}");
}

#[test]
fn a_killed_mount_leaves_no_stale_mount_and_bad_mount_points_are_refused() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), b"a").unwrap();
    env.backup([&src]);
    let mut m = mount(&env);
    assert!(is_mounted(&m.mp));
    m.child.kill().unwrap();
    m.child.wait().unwrap();
    wait_for("auto-unmount", || !is_mounted(&m.mp));

    // Not empty, missing: one-line errors, nothing mounted.
    fs::write(m.mp.join("file"), b"x").unwrap();
    for p in [m.mp.clone(), env.path("missing")] {
        let out = env.run(["mount".as_ref(), p.as_os_str()]);
        assert_eq!(code(&out), 1, "{}", stderr(&out));
        assert_eq!(stderr(&out).trim().lines().count(), 1, "{}", stderr(&out));
        assert!(!is_mounted(&p));
    }
}

/// The same view over S3: the mount reads through the backend like every command.
#[test]
fn a_snapshot_on_s3_mounts_and_reads_like_its_source() {
    if !can_mount() {
        return;
    }
    let Some(remote) = crate::servers::remote(crate::servers::Kind::S3) else {
        return;
    };
    let env = Env::on(remote);
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("big"), random_bytes(3 << 20, 5)).unwrap();
    fs::write(src.join("sub/small"), b"over s3").unwrap();
    symlink("sub/small", src.join("link")).unwrap();
    let id = env.backup([&src]);
    let m = mount(&env);
    let rel = src.strip_prefix("/").unwrap();
    assert_same_tree_but_atime(&src, &m.mp.join("ids").join(&id).join(rel));
    assert_same_tree_but_atime(&src, &m.mp.join("snapshots/latest").join(rel));
}

/// A folder of 200 000 entries lists completely and the mount's memory stays bounded:
/// entries stream from the tree by offset and listings hand out no inodes.
#[test]
fn a_folder_of_200000_entries_lists_whole_in_bounded_memory() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("src");
    let wide = src.join("wide");
    fs::create_dir_all(&wide).unwrap();
    for i in 0..200_000 {
        fs::File::create(wide.join(format!("f{i:06}"))).unwrap();
    }
    env.backup([&src]);
    let m = mount(&env);
    let dir =
        m.mp.join("snapshots/latest")
            .join(wide.strip_prefix("/").unwrap());
    let mut names = std::collections::HashSet::new();
    for e in fs::read_dir(&dir).unwrap() {
        assert!(names.insert(e.unwrap().file_name()), "a name listed twice");
    }
    assert_eq!(names.len(), 200_000);
    let status = fs::read_to_string(format!("/proc/{}/status", m.child.id())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    eprintln!("listing 200 000 entries: peak {} MiB", peak_kib / 1024);
    assert!(
        peak_kib < 200 * 1024,
        "listing 200 000 entries peaked at {} MiB",
        peak_kib / 1024
    );
}
