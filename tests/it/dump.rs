//! `dump`: a file's bytes, or a directory as a tar or zip stream.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::process::Command;

use crate::common::*;

fn source(env: &Env) -> std::path::PathBuf {
    let src = env.path("src");
    fs::create_dir_all(src.join("sub/deeper")).unwrap();
    fs::write(src.join("big"), random_bytes(3 << 20, 1)).unwrap();
    fs::write(src.join("sub/small"), b"small file").unwrap();
    fs::write(src.join("sub/deeper/x"), random_bytes(10_000, 2)).unwrap();
    fs::set_permissions(src.join("sub/small"), fs::Permissions::from_mode(0o640)).unwrap();
    symlink("sub/small", src.join("link")).unwrap();
    fs::hard_link(src.join("sub/deeper/x"), src.join("hard")).unwrap();
    src
}

#[test]
fn a_file_is_written_as_its_bytes_to_stdout_or_a_new_file() {
    let env = Env::new();
    env.init();
    let src = source(&env);
    env.backup([&src]);
    let big = src.join("big");
    let out = env
        .cmd()
        .args(["dump", "latest", big.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(out.stdout == fs::read(&big).unwrap(), "dumped bytes differ");

    let target = env.path("out.bin");
    env.ok([
        "dump",
        "latest",
        big.to_str().unwrap(),
        "--target",
        target.to_str().unwrap(),
    ]);
    assert!(fs::read(&target).unwrap() == fs::read(&big).unwrap());
    // Written under a temporary name, linked into place: none is left behind.
    let leftovers: Vec<_> = fs::read_dir(env.path(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("cairn-dump"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // An existing file is never overwritten.
    let out = env.run([
        "dump",
        "latest",
        big.to_str().unwrap(),
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1);
    assert_eq!(stderr(&out).trim().lines().count(), 1, "{}", stderr(&out));
    assert!(fs::read(&target).unwrap() == fs::read(&big).unwrap());
    // A path not in the snapshot, a symlink: one-line errors.
    for p in [
        "/no/such/file".to_string(),
        src.join("link").display().to_string(),
    ] {
        let out = env.run(["dump", "latest", &p]);
        assert_eq!(code(&out), 1, "{p}");
        assert_eq!(stderr(&out).trim().lines().count(), 1, "{}", stderr(&out));
    }
}

#[test]
fn a_directory_becomes_a_tar_that_extracts_to_the_same_tree() {
    let env = Env::new();
    env.init();
    let src = source(&env);
    // Where the file system keeps user xattrs, the tar carries them.
    let _ = xattr::set(src.join("sub/small"), "user.cairn", b"kept in the tar");
    env.backup([&src]);
    let tar = env.path("src.tar");
    env.ok([
        "dump",
        "latest",
        src.to_str().unwrap(),
        "--target",
        tar.to_str().unwrap(),
    ]);
    let x = env.path("x");
    fs::create_dir_all(&x).unwrap();
    let st = Command::new("tar")
        .args(["-x", "-p", "--xattrs", "-f"])
        .arg(&tar)
        .arg("-C")
        .arg(&x)
        .status()
        .unwrap();
    assert!(st.success());
    // Contents, modes, owners, mtimes, the symlink and the hard link as they were.
    assert_same_tree_but_atime(&src, &x.join("src"));
    let a = fs::metadata(x.join("src/hard")).unwrap();
    let b = fs::metadata(x.join("src/sub/deeper/x")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(a.ino(), b.ino(), "the hard link became a copy");

    // The snapshot's root: every source path below it, as stored.
    let out = env.cmd().args(["dump", "latest", "/"]).output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let list = Command::new("tar")
        .args(["-t", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(&out.stdout)?;
            c.wait_with_output()
        })
        .unwrap();
    let names = String::from_utf8_lossy(&list.stdout).to_string();
    let rel = src.strip_prefix("/").unwrap().display().to_string();
    assert!(names.contains(&format!("{rel}/sub/deeper/x")), "{names}");
}

#[test]
fn a_directory_becomes_a_zip_with_contents_modes_and_links() {
    let env = Env::new();
    env.init();
    let src = source(&env);
    env.backup([&src]);
    let zip = env.path("src.zip");
    env.ok([
        "dump",
        "latest",
        src.to_str().unwrap(),
        "--archive",
        "zip",
        "--target",
        zip.to_str().unwrap(),
    ]);
    // Read back with Python's zipfile: names, bytes, modes, the symlink's target.
    let script = r#"
import sys, zipfile, stat
z = zipfile.ZipFile(sys.argv[1])
for i in sorted(z.infolist(), key=lambda i: i.filename):
    mode = i.external_attr >> 16
    data = z.read(i) if not i.is_dir() else b""
    kind = "l" if stat.S_ISLNK(mode) else ("d" if i.is_dir() else "f")
    print(i.filename, kind, oct(stat.S_IMODE(mode)), len(data), data[:40].hex() if kind == "l" else "")
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&zip)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    let line = |name: &str| {
        listing
            .lines()
            .find(|l| l.split(' ').next() == Some(name))
            .unwrap_or_else(|| panic!("{name} missing:\n{listing}"))
            .to_string()
    };
    assert!(
        line("src/big").starts_with(&format!("src/big f 0o644 {}", 3 << 20)),
        "{listing}"
    );
    assert!(
        line("src/sub/small").starts_with("src/sub/small f 0o640 10"),
        "{listing}"
    );
    assert!(line("src/sub/").contains(" d "), "{listing}");
    let link = line("src/link");
    assert!(
        link.contains(" l ") && link.ends_with(&hex("sub/small")),
        "{listing}"
    );
    // zip has no hard links: the second name holds the same bytes.
    assert!(
        line("src/hard").starts_with("src/hard f 0o644 10000"),
        "{listing}"
    );
    // The bytes themselves.
    let check = Command::new("python3")
        .arg("-c")
        .arg("import sys,zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read('src/big'))")
        .arg(&zip)
        .output()
        .unwrap();
    assert!(check.stdout == fs::read(src.join("big")).unwrap());
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// A file far larger than the blobs it is made of is streamed: the dump's peak memory
/// stays flat (measured by the kernel for the child process).
#[test]
fn dumping_a_large_file_keeps_memory_flat() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let size = 160usize << 20;
    fs::write(src.join("large"), random_bytes(size, 7)).unwrap();
    env.backup([&src]);
    // Python runs the dump as its only child and reports that child's peak RSS (KiB).
    let script = "import resource,subprocess,sys\n\
        r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)\n\
        print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)";
    let base = env.cmd();
    for (what, extra) in [("file", vec![]), ("tar", vec!["--archive", "tar"])] {
        let mut c = Command::new("python3");
        c.arg("-c")
            .arg(script)
            .arg(base.get_program())
            .args(base.get_args())
            .args(["dump", "latest", src.join("large").to_str().unwrap()])
            .args(&extra);
        for (k, v) in base.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        let out = c.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let mut parts = text.split_whitespace();
        assert_eq!(
            parts.next(),
            Some("0"),
            "{what}: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let peak_kib: u64 = parts.next().unwrap().parse().unwrap();
        assert!(
            peak_kib < 100 * 1024,
            "{what}: dumping {} MiB peaked at {} MiB",
            size >> 20,
            peak_kib / 1024
        );
    }
}
