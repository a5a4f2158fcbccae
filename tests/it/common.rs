//! Helpers: a sandboxed environment per test, and a tree comparer.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const PASSWORD: &str = "correct horse battery staple";

pub struct Env {
    pub dir: tempfile::TempDir,
    pub repo: PathBuf,
    /// When set, the repository lives on a server (servers.rs), not at `repo`.
    pub remote: Option<crate::servers::RemoteRepo>,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        Env {
            dir,
            repo,
            remote: None,
        }
    }

    /// An environment whose repository is on a remote server.
    pub fn on(remote: crate::servers::RemoteRepo) -> Env {
        let mut env = Env::new();
        env.remote = Some(remote);
        env
    }

    /// The repository as `-r` takes it, with its `-o` options.
    pub fn repo_args(&self) -> Vec<OsString> {
        match &self.remote {
            None => vec!["-r".into(), self.repo.clone().into()],
            Some(r) => {
                let mut v: Vec<OsString> = vec!["-r".into(), r.url.clone().into()];
                for o in &r.options {
                    v.push("-o".into());
                    v.push(o.into());
                }
                v
            }
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `cairn` with a private HOME/XDG dirs, the test password and a cheap KDF
    /// (the documented --kdf-* options: the same code path, a lower cost).
    pub fn bare(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cairn"));
        let home = self.dir.path().join("home");
        for v in [
            "CAIRN_REPOSITORY",
            "CAIRN_PASSWORD_FILE",
            "CAIRN_PASSWORD_COMMAND",
            "CAIRN_NEW_PASSWORD",
            "CAIRN_FROM_REPOSITORY",
            "CAIRN_FROM_PASSWORD",
            "CAIRN_FROM_PASSWORD_FILE",
            "CAIRN_FROM_PASSWORD_COMMAND",
            "CAIRN_CONFIG",
            "CAIRN_HISTORY",
            "CAIRN_RUN_ID",
            "CAIRN_RUN_PROFILE",
            "CAIRN_RESULT_FILE",
        ] {
            c.env_remove(v);
        }
        c.env("HOME", &home)
            .env("XDG_DATA_HOME", home.join("data"))
            .env("XDG_CACHE_HOME", home.join("cache"))
            .env("CAIRN_PASSWORD", PASSWORD)
            .env("CAIRN_KDF_MEMORY_KIB", "64")
            .env("CAIRN_KDF_ITERATIONS", "1")
            // Tests that want to see a conflicting lock waited for set their own.
            .env("CAIRN_RETRY_LOCK", "0")
            .stdin(Stdio::null());
        if let Some(r) = &self.remote {
            c.envs(r.env.iter().map(|(k, v)| (k, v)));
        }
        c
    }

    pub fn cmd(&self) -> Command {
        let mut c = self.bare();
        c.args(self.repo_args());
        c
    }

    /// Runs `cairn -r REPO args…` and returns its output, whatever the exit code.
    pub fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        self.cmd().args(&args).output().unwrap()
    }

    /// Like `run`, but the test fails (rather than hangs) if cairn has not finished in
    /// `limit`. Its output goes to files, so a full pipe can never be what stops it.
    pub fn run_within(&self, args: &[&str], limit: std::time::Duration) -> Output {
        let (out, err) = (self.path("run_within.out"), self.path("run_within.err"));
        let mut child = self
            .cmd()
            .args(args)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        let Some(status) = wait_within(&mut child, limit) else {
            panic!("cairn {args:?} did not finish in {limit:?}: waiting on itself?");
        };
        Output {
            status,
            stdout: std::fs::read(&out).unwrap(),
            stderr: std::fs::read(&err).unwrap(),
        }
    }

    /// Runs `cairn ARGS` with at most `fds` open descriptors.
    pub fn run_with_descriptors(&self, args: &[&str], fds: u64) -> Output {
        let mut c = self.cmd();
        c.args(args);
        limit_descriptors(&mut c, fds);
        c.output().unwrap()
    }

    /// Like `run`, but the command must succeed; returns stdout.
    pub fn ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let out = self.cmd().args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "cairn {:?} failed ({}):\n{}{}",
            args,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn init(&self) {
        self.ok(["init"]);
    }

    /// Backs up with `--json`; returns the new snapshot id.
    pub fn backup<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let mut all: Vec<OsString> = vec!["--json".into(), "backup".into()];
        all.extend(args.into_iter().map(Into::into));
        let out = self.ok(all);
        let summary = summary_line(&out);
        summary["snapshot_id"].as_str().unwrap().to_string()
    }

    pub fn restore(&self, snap: &str, target: &Path, extra: &[&str]) {
        let mut args: Vec<OsString> = vec![
            "restore".into(),
            snap.into(),
            "--target".into(),
            target.into(),
        ];
        args.extend(extra.iter().map(OsString::from));
        self.ok(args);
    }

    pub fn repo_size(&self) -> u64 {
        dir_size(&self.repo)
    }
}

pub fn summary_line(stdout: &str) -> serde_json::Value {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.contains("\"summary\""))
        .unwrap_or_else(|| panic!("no summary line in {stdout}"));
    serde_json::from_str(line).unwrap()
}

pub fn code(out: &Output) -> i32 {
    out.status.code().expect("exited normally")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn dir_size(p: &Path) -> u64 {
    let mut total = 0;
    for e in walk(p) {
        let m = e.symlink_metadata().unwrap();
        if m.is_file() {
            total += m.len();
        }
    }
    total
}

/// Every path below `root` (not `root` itself), parents before children.
pub fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for e in entries {
            if e.symlink_metadata().unwrap().is_dir() {
                stack.push(e.clone());
            }
            out.push(e);
        }
    }
    out
}

/// Deterministic pseudo-random bytes (xorshift), incompressible.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// What the comparer looks at for each entry.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
    /// Files only: directories' atimes move when they are read.
    pub atime: Option<(i64, i64)>,
    pub size: u64,
    pub rdev: u64,
    pub link_target: Option<Vec<u8>>,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    pub content: Option<blake3::Hash>,
}

pub struct Snapshot {
    pub entries: BTreeMap<Vec<u8>, Entry>,
    /// Hardlink groups: sets of relative paths sharing one inode.
    pub link_groups: Vec<Vec<Vec<u8>>>,
}

/// `p` below `root`, as raw bytes.
fn rel_bytes(root: &Path, p: &Path) -> Vec<u8> {
    p.strip_prefix(root)
        .unwrap()
        .as_os_str()
        .as_bytes()
        .to_vec()
}

/// Records a tree: metadata of everything first (so reading content cannot move an
/// atime before it is recorded), then content.
pub fn record(root: &Path) -> Snapshot {
    let mut s = record_meta(root);
    for p in walk(root) {
        let rel = rel_bytes(root, &p);
        let e = s.entries.get_mut(&rel).unwrap();
        match e.kind.as_str() {
            "file" => e.content = Some(blake3::hash(&std::fs::read(&p).unwrap())),
            "symlink" => {
                e.link_target = Some(
                    std::fs::read_link(&p)
                        .unwrap()
                        .as_os_str()
                        .as_bytes()
                        .to_vec(),
                )
            }
            _ => {}
        }
    }
    s
}

/// Records metadata only: reads no file content, so it moves no atime.
pub fn record_meta(root: &Path) -> Snapshot {
    let paths = walk(root);
    let mut entries = BTreeMap::new();
    let mut inodes: HashMap<u64, Vec<Vec<u8>>> = HashMap::new();
    for p in &paths {
        let m = p.symlink_metadata().unwrap();
        let rel = rel_bytes(root, p);
        let ft = m.file_type();
        use std::os::unix::fs::FileTypeExt;
        let kind = if ft.is_file() {
            "file"
        } else if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_fifo() {
            "fifo"
        } else if ft.is_char_device() {
            "chardev"
        } else if ft.is_block_device() {
            "blockdev"
        } else {
            "socket"
        };
        if ft.is_file() && m.nlink() > 1 {
            inodes.entry(m.ino()).or_default().push(rel.clone());
        }
        let mut xattrs = BTreeMap::new();
        if let Ok(list) = xattr::list(p) {
            for n in list {
                if let Ok(Some(v)) = xattr::get(p, &n) {
                    xattrs.insert(n.as_bytes().to_vec(), v);
                }
            }
        }
        entries.insert(
            rel,
            Entry {
                kind: kind.into(),
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                mtime: (m.mtime(), m.mtime_nsec()),
                atime: ft.is_file().then_some((m.atime(), m.atime_nsec())),
                size: if ft.is_file() { m.len() } else { 0 },
                rdev: if ft.is_char_device() || ft.is_block_device() {
                    m.rdev()
                } else {
                    0
                },
                link_target: None,
                xattrs,
                content: None,
            },
        );
    }
    let mut link_groups: Vec<Vec<Vec<u8>>> = inodes
        .into_values()
        .map(|mut v| {
            v.sort();
            v
        })
        .collect();
    link_groups.sort();
    Snapshot {
        entries,
        link_groups,
    }
}

/// Asserts two trees are the same in every recorded respect; the message lists the
/// first differences.
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    compare_trees(record(expected), record(actual));
}

/// The same, except access times (for trees copied with `cp -a`, which reads them).
pub fn assert_same_tree_but_atime(expected: &Path, actual: &Path) {
    let clear = |mut s: Snapshot| {
        for e in s.entries.values_mut() {
            e.atime = None;
        }
        s
    };
    compare_trees(clear(record(expected)), clear(record(actual)));
}

fn compare_trees(a: Snapshot, b: Snapshot) {
    let mut diffs = Vec::new();
    for (k, v) in &a.entries {
        match b.entries.get(k) {
            None => diffs.push(format!("missing: {}", String::from_utf8_lossy(k))),
            Some(w) if w != v => diffs.push(format!(
                "differs: {}\n  want {v:?}\n  got  {w:?}",
                String::from_utf8_lossy(k)
            )),
            _ => {}
        }
    }
    for k in b.entries.keys() {
        if !a.entries.contains_key(k) {
            diffs.push(format!("extra: {}", String::from_utf8_lossy(k)));
        }
    }
    if a.link_groups != b.link_groups {
        diffs.push(format!(
            "hardlink groups differ: {:?} vs {:?}",
            a.link_groups, b.link_groups
        ));
    }
    assert!(diffs.is_empty(), "trees differ:\n{}", diffs.join("\n"));
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Whether a test's prerequisite holds; when it does not, the test is skipped with a
/// note, except under `CI=true`, where a missing prerequisite is a failure.
pub fn prerequisite(ok: bool, what: &str) -> bool {
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must provide: {what}"
        );
        eprintln!("skipped: needs {what}");
    }
    ok
}

/// `cp -a FROM TO`.
pub fn cp_a(from: &Path, to: &Path) {
    assert!(Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap()
        .success());
}

/// Up to `cap` positions spread evenly over `1..=count` (where to inject a fault or a
/// pause).
pub fn positions(count: usize, cap: usize) -> Vec<usize> {
    if count <= cap {
        return (1..=count).collect();
    }
    let mut v: Vec<usize> = (0..cap).map(|i| 1 + i * (count - 1) / (cap - 1)).collect();
    v.dedup();
    v
}

/// The repository at `dir` passes `check --read-data` (with the first of `passwords`
/// that opens it) and every snapshot restores exactly the source state its first tag
/// names in `states` (backed up from `src`).
pub fn assert_sound(
    env: &Env,
    dir: &Path,
    passwords: &[&str],
    states: &[(String, PathBuf)],
    src: &Path,
    what: &str,
) {
    let run = |pw: &str, args: &[&str]| {
        env.bare()
            .env("CAIRN_PASSWORD", pw)
            .arg("-r")
            .arg(dir)
            .args(args)
            .output()
            .unwrap()
    };
    let pw = *passwords
        .iter()
        .find(|pw| code(&run(pw, &["snapshots"])) == 0)
        .unwrap_or_else(|| panic!("{what}: no password opens the repository"));
    let out = run(pw, &["check", "--read-data"]);
    assert_eq!(code(&out), 0, "{what}: check failed: {}", stderr(&out));
    let list: serde_json::Value =
        serde_json::from_slice(&run(pw, &["--json", "snapshots"]).stdout).unwrap();
    for s in list.as_array().unwrap() {
        let tag = s["tags"][0].as_str().unwrap();
        let state = &states.iter().find(|(t, _)| t == tag).unwrap().1;
        let target = dir.with_extension("restore");
        let _ = std::fs::remove_dir_all(&target);
        let id = s["id"].as_str().unwrap();
        let out = run(pw, &["restore", id, "--target", target.to_str().unwrap()]);
        assert_eq!(
            code(&out),
            0,
            "{what}: restore of {tag} failed: {}",
            stderr(&out)
        );
        assert_same_tree_but_atime(state, &target.join(src.strip_prefix("/").unwrap()));
        std::fs::remove_dir_all(&target).unwrap();
    }
}

/// Lets `c` open at most `fds` descriptors (RLIMIT_NOFILE, soft and hard).
pub fn limit_descriptors(c: &mut Command, fds: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: only an async-signal-safe call between fork and exec.
    unsafe {
        c.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: fds,
                rlim_max: fds,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Waits for `child` up to `limit`; past it the child is killed and None returned.
pub fn wait_within(
    child: &mut std::process::Child,
    limit: std::time::Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
