//! Regressions from the hostile review of the fd-relative restorer: each test failed on
//! the restorer before its fix.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
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
    if !prerequisite(is_root(), "root") {
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

fn temp_names(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".cairn-restore-"))
        .collect()
}

/// The files a process has open inside `dir` (by /proc/PID/fd), with their sizes:
/// unnamed files (`O_TMPFILE`) included, which no listing of `dir` shows.
fn open_files_in(pid: u32, dir: &Path) -> Vec<(String, u64)> {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    fds.filter_map(|e| {
        let p = e.ok()?.path();
        let target = fs::read_link(&p).ok()?;
        let m = fs::metadata(&p).ok()?;
        (target.starts_with(dir) && m.is_file())
            .then(|| (target.to_string_lossy().into_owned(), m.len()))
    })
    .collect()
}

/// Whether `dir`'s file system makes unnamed files (`O_TMPFILE`), as restore prefers.
fn unnamed_files_work(dir: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o600)
        .open(dir)
        .is_ok()
}

/// Kills a restore (`flags`) while it writes the 96 MiB file `big` and checks that no
/// partial file ever has that name, then that a rerun (`rerun` flags) writes it whole
/// and leaves no temporary file. Returns the temporary names the kill left.
fn kill_while_writing(
    env: &Env,
    target: &Path,
    r: &Path,
    data: &[u8],
    flags: &[&str],
    rerun: &[&str],
) -> Vec<String> {
    let before = fs::symlink_metadata(r.join("big")).ok().map(|m| m.len());
    let mut child = env
        .cmd()
        .args(["restore", "latest", "--target", target.to_str().unwrap()])
        .args(flags)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the file is being written (named or not), then kill.
    let deadline = Instant::now() + Duration::from_secs(60);
    let partial = |len: u64| len > 0 && len < data.len() as u64;
    loop {
        if open_files_in(child.id(), r)
            .iter()
            .any(|(_, len)| partial(*len))
        {
            break;
        }
        assert!(Instant::now() < deadline, "never saw a partial file");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    if let Ok(m) = fs::symlink_metadata(r.join("big")) {
        assert!(
            m.len() == data.len() as u64 || Some(m.len()) == before,
            "a partial file has the final name ({} bytes)",
            m.len()
        );
    }
    let left = temp_names(r);
    env.restore("latest", target, rerun);
    env.restore(
        "latest",
        target,
        &["--overwrite", "always", "--no-safety-snapshot"],
    );
    let got = fs::read(r.join("big")).unwrap();
    assert!(
        got == data,
        "a {} byte file stayed after the rerun",
        got.len()
    );
    assert_eq!(temp_names(r), Vec::<String>::new(), "leftovers not removed");
    left
}

/// A restore killed while it writes a file leaves no file under the final name, so a
/// rerun writes it whole. A new file is written unnamed (`O_TMPFILE`) and linked in
/// when complete: the kill leaves nothing at all. A file that replaces another goes
/// to a temporary name first and is renamed over it: the kill leaves the old file
/// and the temporary one, which the rerun removes. The old restorer wrote new files
/// at their final name: the rerun kept a truncated file with a current mtime.
#[test]
fn interrupted_restore_leaves_no_partial_file_under_its_name_and_a_rerun_cleans_up() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let data = random_bytes(96 << 20, 7);
    fs::write(src.join("big"), &data).unwrap();
    env.backup([&src]);
    let target = env.path("t");
    let r = restored(&target, &src);
    // A new file: unnamed until whole, nothing left by the kill; an `if-newer` rerun
    // (which keeps whatever is newer than the snapshot) writes it whole.
    let rerun = ["--overwrite", "if-newer"];
    let left = kill_while_writing(&env, &target, &r, &data, &[], &rerun);
    if unnamed_files_work(&r) {
        assert_eq!(
            left,
            Vec::<String>::new(),
            "an unnamed file left a name behind"
        );
    } else {
        // A file system without O_TMPFILE: the temporary-name path, as for a replacement.
        eprintln!("note: no O_TMPFILE on this file system; new files used temporary names");
        assert!(!left.is_empty(), "the kill left no temporary file");
    }
    // A file replacing another: a temporary name, left by the kill, removed by the rerun.
    fs::write(r.join("big"), b"an older file").unwrap();
    let flags = ["--overwrite", "always", "--no-safety-snapshot"];
    let left = kill_while_writing(&env, &target, &r, &data, &flags, &flags);
    assert!(!left.is_empty(), "the kill left no temporary file");
}

/// Only leftovers of an interrupted restore are removed: regular files and staging
/// directories of ours whose name is exactly a temporary name. Anything else with the
/// prefix stays, unless `--delete` removes it as an entry the snapshot lacks.
#[test]
fn stale_temporary_entries_are_removed_and_nothing_else() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), "f").unwrap();
    env.backup([&src]);
    let target = env.path("t");
    let r = restored(&target, &src);
    fs::create_dir_all(&r).unwrap();
    fs::write(r.join(".cairn-restore-0123456789ab"), "partial").unwrap();
    let staging = r.join(".cairn-restore-00000000beef");
    fs::create_dir(&staging).unwrap();
    symlink("nowhere", staging.join("entry")).unwrap();
    fs::write(r.join(".cairn-restore-mine"), "not a temp name").unwrap();
    fs::create_dir(r.join(".cairn-restore-abcdefabcdef")).unwrap();
    fs::write(
        r.join(".cairn-restore-abcdefabcdef/x"),
        "a directory of files",
    )
    .unwrap();
    fs::create_dir(r.join(".cairn-restore-abcdefabcdee")).unwrap();
    fs::create_dir(r.join(".cairn-restore-abcdefabcdee/sub")).unwrap();
    let theirs = r.join(".cairn-restore-aaaaaaaaaaaa");
    fs::write(&theirs, "someone else's").unwrap();
    if is_root() {
        std::os::unix::fs::chown(&theirs, Some(4242), Some(4242)).unwrap();
    }
    env.restore("latest", &target, &["--no-safety-snapshot"]);
    let mut left = temp_names(&r);
    left.sort();
    let mut want = vec![
        ".cairn-restore-abcdefabcdee",
        ".cairn-restore-abcdefabcdef",
        ".cairn-restore-mine",
    ];
    if is_root() {
        want.insert(0, ".cairn-restore-aaaaaaaaaaaa");
    }
    assert_eq!(left, want);
    env.restore("latest", &target, &["--delete", "--no-safety-snapshot"]);
    assert_eq!(temp_names(&r), Vec::<String>::new(), "--delete left them");
    assert_eq!(fs::read(r.join("f")).unwrap(), b"f");
}

/// `--include /src/b/f` does not touch directories outside the selection. The old
/// restorer walked every directory and reset the metadata of every existing one.
#[test]
fn include_leaves_the_metadata_of_unselected_existing_directories_alone() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("a")).unwrap();
    fs::create_dir_all(src.join("b")).unwrap();
    fs::write(src.join("a/x"), "a").unwrap();
    fs::write(src.join("b/f"), "f").unwrap();
    fs::set_permissions(src.join("a"), fs::Permissions::from_mode(0o755)).unwrap();
    env.backup([&src]);
    let target = env.path("t");
    let r = restored(&target, &src);
    fs::create_dir_all(r.join("a")).unwrap();
    fs::set_permissions(r.join("a"), fs::Permissions::from_mode(0o700)).unwrap();
    let when = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    fs::File::open(r.join("a"))
        .unwrap()
        .set_modified(when)
        .unwrap();
    let inc = format!("{}", src.join("b/f").display());
    env.restore("latest", &target, &["--include", &inc]);
    assert!(r.join("b/f").exists());
    let mode = fs::metadata(r.join("a")).unwrap().mode() & 0o7777;
    assert_eq!(
        mode, 0o700,
        "unselected existing directory a/ had its mode reset"
    );
}

/// `SNAP:/src/f --target T --delete` restores one file and deletes nothing: the old
/// restorer wrapped the file in a one-entry tree and deleted everything else in T.
#[test]
fn single_file_restore_with_delete_deletes_nothing_else_in_the_target() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), "f").unwrap();
    env.backup([&src]);
    let target = env.path("t");
    fs::create_dir_all(target.join("work")).unwrap();
    fs::write(target.join("work/thesis.tex"), "four years").unwrap();
    fs::write(target.join("notes"), "n").unwrap();
    let snap = format!("latest:{}", src.join("f").display());
    let out = env.run([
        "restore",
        &snap,
        "--target",
        target.to_str().unwrap(),
        "--delete",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("--delete deletes nothing"));
    assert!(target.join("f").exists());
    assert!(
        target.join("work/thesis.tex").exists() && target.join("notes").exists(),
        "a single-file restore with --delete emptied the target directory"
    );
}

/// A file whose other names are outside the restore is no hard-link group: the old
/// restorer kept each such file's directory open until the end and ran out of
/// descriptors ("Too many open files") with a few hundred of them.
#[test]
fn files_whose_other_links_are_not_restored_hold_no_descriptors() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    // The second name of each file lives outside the backed-up tree: links = 2 anyway.
    let outside = env.path("outside");
    fs::create_dir_all(&outside).unwrap();
    for i in 0..300 {
        let d = src.join(format!("d{i:03}"));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("f"), format!("{i}")).unwrap();
        fs::hard_link(d.join("f"), outside.join(format!("f{i}"))).unwrap();
    }
    env.backup([&src]);
    let target = env.path("t");
    let out = restore_with_few_descriptors(&env, &target);
    let err = stderr(&out);
    assert_eq!(
        code(&out),
        0,
        "{}",
        err.lines().take(5).collect::<Vec<_>>().join("\n")
    );
}

/// Runs a restore with at most 200 open descriptors.
fn restore_with_few_descriptors(env: &Env, target: &Path) -> std::process::Output {
    env.run_with_descriptors(
        &["restore", "latest", "--target", target.to_str().unwrap()],
        200,
    )
}

/// A hard-link group's source directory is closed after its last member: 300 groups,
/// each within one directory, restore with 200 descriptors and stay linked.
#[test]
fn hard_link_groups_close_their_directory_after_the_last_member() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    for i in 0..300 {
        let d = src.join(format!("d{i:03}"));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("a"), format!("{i}")).unwrap();
        fs::hard_link(d.join("a"), d.join("b")).unwrap();
    }
    env.backup([&src]);
    let target = env.path("t");
    let out = restore_with_few_descriptors(&env, &target);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("separate copies"),
        "{}",
        stderr(&out)
    );
    let r = restored(&target, &src);
    for i in 0..300 {
        let d = r.join(format!("d{i:03}"));
        let (a, b) = (
            fs::metadata(d.join("a")).unwrap(),
            fs::metadata(d.join("b")).unwrap(),
        );
        assert_eq!(
            (a.ino(), a.nlink()),
            (b.ino(), 2),
            "d{i:03} lost its hard link"
        );
        assert_eq!(fs::read(d.join("b")).unwrap(), format!("{i}").as_bytes());
    }
}

/// More groups waiting for their next member than descriptors allow: past the cap the
/// members are written as copies (with one warning), every file has its content, and
/// the restore succeeds.
#[test]
fn too_many_open_hard_link_groups_fall_back_to_copies() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    // d000/f .. d299/f are linked to z/fNNN: every group waits until z/ is reached.
    fs::create_dir_all(src.join("z")).unwrap();
    for i in 0..300 {
        let d = src.join(format!("d{i:03}"));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("f"), format!("{i}")).unwrap();
        fs::hard_link(d.join("f"), src.join(format!("z/f{i:03}"))).unwrap();
    }
    env.backup([&src]);
    let target = env.path("t");
    let out = restore_with_few_descriptors(&env, &target);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("restored as separate copies"),
        "{}",
        stderr(&out)
    );
    let r = restored(&target, &src);
    let mut linked = 0;
    for i in 0..300 {
        let f = r.join(format!("d{i:03}/f"));
        let z = r.join(format!("z/f{i:03}"));
        assert_eq!(fs::read(&f).unwrap(), format!("{i}").as_bytes());
        assert_eq!(fs::read(&z).unwrap(), format!("{i}").as_bytes());
        if fs::metadata(&f).unwrap().ino() == fs::metadata(&z).unwrap().ino() {
            linked += 1;
        }
    }
    assert!(linked > 0 && linked < 300, "{linked} of 300 groups linked");
}

/// `--overwrite if-changed` reads existing files to compare them; a file swapped for a
/// fifo between the restore's lstat and its open must not block it. The old restorer
/// opened without O_NONBLOCK and waited forever for a writer.
#[test]
fn a_file_swapped_for_a_fifo_never_blocks_an_if_changed_restore() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let n = 16;
    for i in 0..n {
        fs::write(src.join(format!("f{i:02}")), format!("{i:02}")).unwrap();
    }
    env.backup([&src]);
    let target = env.path("t");
    let r = restored(&target, &src);
    env.restore("latest", &target, &[]);
    // Flips every name between the right file and a fifo, as fast as it can.
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (stop, r) = (stop.clone(), r.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(300);
            let (tmp_f, tmp_r) = (r.join("swap-fifo"), r.join("swap-file"));
            let c = std::ffi::CString::new(tmp_f.to_str().unwrap()).unwrap();
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                for i in 0..n {
                    let p = r.join(format!("f{i:02}"));
                    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } == 0 {
                        let _ = fs::rename(&tmp_f, &p);
                    }
                    if fs::write(&tmp_r, format!("{i:02}")).is_ok() {
                        let _ = fs::rename(&tmp_r, &p);
                    }
                }
            }
        })
    };
    let mut hung = false;
    for _ in 0..300 {
        let mut child = env
            .cmd()
            .args(["restore", "latest", "--target", target.to_str().unwrap()])
            .args(["--no-safety-snapshot"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // A guard against hanging the test suite, not a timing assertion: a restore
        // of 16 two-byte files still running after half a minute is stuck.
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                child.kill().unwrap();
                child.wait().unwrap();
                hung = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if hung {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    assert!(!hung, "the restore blocked opening a fifo");
    env.restore("latest", &target, &["--no-safety-snapshot"]);
    for i in 0..n {
        let got = fs::read(r.join(format!("f{i:02}"))).unwrap();
        assert_eq!(got, format!("{i:02}").as_bytes());
    }
}

/// `SNAP:/sub --overwrite if-newer` into an existing, newer target keeps the target's
/// own metadata, by the rule for every existing directory; an older one gets the
/// snapshot directory's. The old restorer applied it without the mtime test.
#[test]
fn subpath_directory_metadata_follows_if_newer_on_the_target() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("sub/f"), "f").unwrap();
    fs::set_permissions(src.join("sub"), fs::Permissions::from_mode(0o755)).unwrap();
    let snap_time = std::time::UNIX_EPOCH + Duration::from_secs(1_500_000_000);
    fs::File::open(src.join("sub"))
        .unwrap()
        .set_modified(snap_time)
        .unwrap();
    env.backup([&src]);
    let snap = format!("latest:{}", src.join("sub").display());
    for (target_time, want_mode) in [(2_000_000_000, 0o700), (1_000_000_000, 0o755)] {
        let target = env.path(&format!("t{target_time}"));
        fs::create_dir_all(&target).unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o700)).unwrap();
        let when = std::time::UNIX_EPOCH + Duration::from_secs(target_time);
        fs::File::open(&target).unwrap().set_modified(when).unwrap();
        env.restore(
            &snap,
            &target,
            &["--overwrite", "if-newer", "--no-safety-snapshot"],
        );
        assert_eq!(fs::read(target.join("f")).unwrap(), b"f");
        let mode = fs::metadata(&target).unwrap().mode() & 0o7777;
        assert_eq!(mode, want_mode, "target with mtime {target_time}");
    }
}

/// Unmounts on drop, so a failed assertion does not leave a mount behind.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let c = std::ffi::CString::new(self.0.to_str().unwrap()).unwrap();
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// `--delete` never deletes into another file system mounted in the target: the mount
/// point and what is on it stay, and the restore says so (exit 1). The old restorer
/// emptied the mounted file system.
#[test]
fn delete_never_crosses_a_mount_point() {
    if !prerequisite(is_root(), "root") {
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), "f").unwrap();
    env.backup([&src]);
    let target = env.path("t");
    let r = restored(&target, &src);
    let mnt = r.join("extra/mnt");
    fs::create_dir_all(&mnt).unwrap();
    let c = std::ffi::CString::new(mnt.to_str().unwrap()).unwrap();
    let fstype = std::ffi::CString::new("tmpfs").unwrap();
    if unsafe {
        libc::mount(
            fstype.as_ptr(),
            c.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    } != 0
    {
        prerequisite(false, "a tmpfs mount (root)");
        return;
    }
    let _guard = Mount(mnt.clone());
    fs::write(mnt.join("precious"), "on another file system").unwrap();
    fs::write(r.join("extra/local"), "on the target's").unwrap();
    let out = env.run([
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--delete",
        "--no-safety-snapshot",
    ]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("mount point"), "{}", stderr(&out));
    assert_eq!(
        fs::read(mnt.join("precious")).unwrap(),
        b"on another file system"
    );
    assert!(
        !r.join("extra/local").exists(),
        "the target's own entry stayed"
    );
    assert_eq!(fs::read(r.join("f")).unwrap(), b"f");
}

fn chown_tree(p: &Path, uid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(uid)).unwrap();
    if fs::symlink_metadata(p).unwrap().is_dir() {
        for e in fs::read_dir(p).unwrap() {
            chown_tree(&e.unwrap().path(), uid);
        }
    }
}

/// An entry the pre-restore snapshot cannot save (here: unreadable) stops the restore
/// before it writes anything, naming the entry; `--no-safety-snapshot` restores. The
/// old restorer went on and replaced the entry that was not saved.
#[test]
fn incomplete_pre_restore_snapshot_stops_the_restore_before_it_writes() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), "snapshot").unwrap();
    let snap = env.backup([&src]);
    let target = env.path("t");
    let r = restored(&target, &src);
    fs::create_dir_all(&r).unwrap();
    // Root reads everything: run the restore as another user instead.
    let user = is_root().then_some(4242u32);
    if let Some(uid) = user {
        chown_tree(env.dir.path(), uid);
    }
    fs::write(r.join("f"), "local only").unwrap();
    fs::set_permissions(r.join("f"), fs::Permissions::from_mode(0o000)).unwrap();
    if user.is_some() {
        std::os::unix::fs::chown(r.join("f"), Some(0), Some(0)).unwrap();
    }
    let run = |extra: &[&str]| {
        let mut c = env.cmd();
        c.args(["restore", &snap, "--target", target.to_str().unwrap()]);
        c.args(extra);
        if let Some(uid) = user {
            unsafe {
                c.pre_exec(move || {
                    if libc::setgid(uid) != 0 || libc::setuid(uid) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        c.output().unwrap()
    };
    let out = run(&[]);
    let err = stderr(&out);
    assert_ne!(code(&out), 0, "{err}");
    assert!(err.contains("nothing was restored"), "{err}");
    assert!(err.contains(&r.join("f").display().to_string()), "{err}");
    fs::set_permissions(r.join("f"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(fs::read(r.join("f")).unwrap(), b"local only");
    fs::set_permissions(r.join("f"), fs::Permissions::from_mode(0o000)).unwrap();
    let out = run(&["--no-safety-snapshot"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(fs::read(r.join("f")).unwrap(), b"snapshot");
}

/// A new file is chowned only when it is not already owned as the snapshot says: in a
/// directory the restore made inside a setgid directory, new files get that
/// directory's group, so the snapshot's group must still be set on them.
#[test]
fn files_in_a_setgid_target_still_get_the_snapshot_group() {
    if !prerequisite(is_root(), "root") {
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    for p in [src.join("f"), src.join("sub/g")] {
        fs::write(&p, b"x").unwrap();
        std::os::unix::fs::chown(&p, Some(0), Some(0)).unwrap();
    }
    std::os::unix::fs::chown(src.join("sub"), Some(0), Some(0)).unwrap();
    env.backup([&src]);
    let target = env.path("t");
    fs::create_dir_all(&target).unwrap();
    std::os::unix::fs::chown(&target, Some(0), Some(4343)).unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o2775)).unwrap();
    env.restore("latest", &target, &[]);
    let r = restored(&target, &src);
    for p in [r.join("f"), r.join("sub/g"), r.join("sub")] {
        let m = fs::symlink_metadata(&p).unwrap();
        assert_eq!((m.uid(), m.gid()), (0, 0), "{}", p.display());
    }
}

/// A writer that panics (here: a dry run's `would create` line written to a pipe its
/// reader closed) must not leave the walk waiting for room among the files in flight:
/// the restore ends (the panic's exit code, as before writers ran beside the walk)
/// instead of hanging. 3 000 files in one folder, with descriptors for 8 in flight.
#[test]
fn a_restore_whose_writer_panics_ends_instead_of_waiting_for_it() {
    use std::io::BufRead;
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    // More `would create` lines than a pipe holds (64 KiB), so the writers are still
    // writing when the reader goes.
    for i in 0..3_000 {
        fs::write(src.join(format!("f{i:04}")), format!("{i}")).unwrap();
    }
    env.backup([&src]);
    let target = env.path("t");
    let mut c = env.cmd();
    c.args(["restore", "--dry-run", "latest", "--target"])
        .arg(&target)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    limit_descriptors(&mut c, 64);
    let mut child = c.spawn().unwrap();
    // Read up to the first file's line: the folders' lines (the walk's) are all out
    // by then, so only the writers find the pipe closed.
    let mut first = String::new();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    while !first.contains("/src/f") {
        first.clear();
        assert!(
            out.read_line(&mut first).unwrap() > 0,
            "no file in the plan"
        );
    }
    drop(out);
    // The reader is gone: every line written from now on fails.
    let Some(status) = wait_within(&mut child, std::time::Duration::from_secs(120)) else {
        panic!("the restore hung after its output pipe closed (first line: {first:?})");
    };
    assert!(!status.success(), "{status:?}");
    assert!(!target.exists(), "a dry run made the target");
}
