//! Every command on every remote backend, from the real binary against real servers
//! (servers.rs): the whole cycle a user runs.

use std::fs;

use crate::common::*;
use crate::servers::{self, Kind};

fn source(env: &Env) -> std::path::PathBuf {
    let src = env.path("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("big.bin"), random_bytes(3 << 20, 1)).unwrap();
    fs::write(src.join("sub/small.txt"), b"hello remote").unwrap();
    std::os::unix::fs::symlink("sub/small.txt", src.join("link")).unwrap();
    src
}

fn cycle(kind: Kind) {
    let Some(remote) = servers::remote(kind) else {
        return;
    };
    let env = Env::on(remote);
    env.init();
    let src = source(&env);
    let first = env.backup([&src]);
    fs::write(src.join("sub/new.txt"), random_bytes(200_000, 2)).unwrap();
    let second = env.backup([&src]);
    let state2 = env.path("state2");
    cp_a(&src, &state2);
    assert_ne!(first, second);

    let snaps: serde_json::Value = serde_json::from_str(&env.ok(["--json", "snapshots"])).unwrap();
    assert_eq!(snaps.as_array().unwrap().len(), 2, "{kind:?}: {snaps}");
    let ls = env.ok(["ls", &second, "--recursive"]);
    assert!(
        ls.contains("new.txt") && ls.contains("big.bin"),
        "{kind:?}: {ls}"
    );
    env.ok(["cat", "config"]);
    // Browse and compare (issue 9): the same answers as on local storage.
    let d = env.ok(["diff", &first, &second]);
    assert!(
        d.contains(&format!("+    {}/sub/new.txt", src.display())),
        "{kind:?}: {d}"
    );
    let f = env.ok(["find", "*.txt"]);
    assert!(f.contains("3 matches in 2 snapshots"), "{kind:?}: {f}");
    let v = env.ok(["versions", src.join("sub/new.txt").to_str().unwrap()]);
    assert!(v.contains("1 versions"), "{kind:?}: {v}");
    let st: serde_json::Value = serde_json::from_str(env.ok(["--json", "stats"]).trim()).unwrap();
    assert_eq!(st["restore_files"], 5, "{kind:?}: {st}");
    assert!(st["repository_size"].as_u64().unwrap() > st["stored_size"].as_u64().unwrap());
    let dumped = env
        .cmd()
        .args(["dump", &second, src.join("big.bin").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        dumped.stdout == fs::read(src.join("big.bin")).unwrap(),
        "{kind:?}: dump"
    );
    let t = env.ok(["--json", "tag", &first, "--add", "remote"]);
    assert_eq!(summary_line(&t)["changed_snapshots"], 1, "{kind:?}: {t}");

    let target = env.path("restored");
    env.restore(&second, &target, &[]);
    assert_same_tree_but_atime(&state2, &target.join(src.strip_prefix("/").unwrap()));

    env.ok([
        "forget",
        "--keep-last",
        "1",
        "--prune",
        "--grace-hours",
        "0",
    ]);
    let snaps: serde_json::Value = serde_json::from_str(&env.ok(["--json", "snapshots"])).unwrap();
    assert_eq!(
        snaps.as_array().unwrap().len(),
        1,
        "{kind:?}: forget kept {snaps}"
    );
    env.ok(["check", "--read-data"]);

    env.bare()
        .env("CAIRN_NEW_PASSWORD", "second password")
        .args(env.repo_args())
        .args(["key", "add"])
        .status()
        .unwrap()
        .success()
        .then_some(())
        .expect("key add");
    let keys = env.ok(["key", "list"]);
    assert!(
        keys.lines().filter(|l| !l.trim().is_empty()).count() >= 2,
        "{kind:?}: {keys}"
    );
    env.ok(["unlock"]);
    env.ok(["repair", "index"]);
    env.ok(["check"]);
    let target2 = env.path("restored2");
    env.restore("latest", &target2, &[]);
    assert_same_tree_but_atime(&state2, &target2.join(src.strip_prefix("/").unwrap()));
}

#[test]
fn s3_runs_every_command() {
    cycle(Kind::S3);
}

#[test]
fn moto_runs_every_command() {
    cycle(Kind::Moto);
}

#[test]
fn sftp_runs_every_command() {
    cycle(Kind::Sftp);
}

#[test]
fn webdav_runs_every_command() {
    cycle(Kind::Webdav);
}

#[test]
fn azure_runs_every_command() {
    cycle(Kind::Azure);
}

#[test]
fn gcs_runs_every_command() {
    cycle(Kind::Gcs);
}

#[test]
fn ftp_runs_every_command() {
    cycle(Kind::Ftp);
}

/// Command lines of the running processes that mention `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = fs::read(entry.path().join("cmdline")) {
            let line = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if line.contains(needle) {
                found.push(line);
            }
        }
    }
    found
}

/// cairn over SFTP leaves no ssh process behind: each session's master connection
/// (ControlPersist) is told to exit before cairn does, so a cron job run every hour
/// does not pile up ssh processes and server connections.
#[test]
fn sftp_leaves_no_ssh_process_behind() {
    let Some(r) = servers::remote(Kind::Sftp) else {
        return;
    };
    let env = Env::on(r);
    // This test's own folder for the ssh control sockets, so only its masters count.
    let state = env.path("ssh-state");
    fs::create_dir_all(&state).unwrap();
    let src = source(&env);
    for args in [
        vec!["init".to_string()],
        vec!["backup".to_string(), src.display().to_string()],
        vec!["snapshots".to_string()],
        vec!["test-storage".into(), "--size".into(), "64K".into()],
    ] {
        let out = env
            .cmd()
            .env("XDG_STATE_HOME", &state)
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    let needle = state.display().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let left = processes_mentioning(&needle);
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ssh processes left behind: {left:#?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// On S3 `check --read-data` verifies each pack from its body as it came in, without a
/// contiguous copy: a byte flipped in a data pack on the server's disk is found, the
/// pack named, exit 13.
#[test]
fn s3_check_read_data_finds_a_flipped_byte_in_a_pack() {
    let Some(remote) = servers::remote(Kind::S3) else {
        return;
    };
    let disk = remote.disk.clone();
    let env = Env::on(remote);
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("precious"), random_bytes(400_000, 7)).unwrap();
    env.backup([&src]);
    env.ok(["check", "--read-data"]);
    let pack = walk(&disk)
        .into_iter()
        .filter(|p| p.is_file() && p.to_string_lossy().contains("/data/"))
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .expect("a data pack on the server's disk");
    let mut b = fs::read(&pack).unwrap();
    b[1000] ^= 0x40;
    fs::write(&pack, b).unwrap();
    let out = env.run(["check", "--read-data"]);
    assert_eq!(code(&out), 13, "{}", stderr(&out));
    let name = pack.file_name().unwrap().to_str().unwrap();
    assert!(stderr(&out).contains(name), "{}", stderr(&out));
}

/// `check --read-data` reads data packs while it walks the trees. With a byte flipped in
/// the data pack and another in the tree pack, over a single connection that the walk
/// and the data pass must share, it finishes and reports both packs, and the tree the
/// walk could not load.
#[test]
fn s3_check_read_data_walks_and_reads_over_one_connection_and_finds_both_damages() {
    let Some(mut remote) = servers::remote(Kind::S3) else {
        return;
    };
    remote.options.push("connections=1".into());
    let disk = remote.disk.clone();
    let env = Env::on(remote);
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("deep/er")).unwrap();
    fs::write(src.join("deep/er/precious"), random_bytes(600_000, 8)).unwrap();
    env.backup([&src]);
    env.ok(["check", "--read-data"]);
    let mut packs: Vec<_> = walk(&disk)
        .into_iter()
        .filter(|p| p.is_file() && p.to_string_lossy().contains("/data/"))
        .collect();
    packs.sort_by_key(|p| fs::metadata(p).unwrap().len());
    assert_eq!(packs.len(), 2, "one tree pack and one data pack: {packs:?}");
    let name = |p: &std::path::PathBuf| p.file_name().unwrap().to_str().unwrap().to_string();
    let (tree_pack, data_pack) = (name(&packs[0]), name(&packs[1]));
    for (pack, at) in [(&packs[0], 60), (&packs[1], 5000)] {
        let mut b = fs::read(pack).unwrap();
        b[at] ^= 0x10;
        fs::write(pack, b).unwrap();
    }
    // Waiting on itself (the walk and the data pass on one connection) would hang.
    let out = env.run_within(
        &["check", "--read-data"],
        std::time::Duration::from_secs(120),
    );
    let err = stderr(&out);
    assert_eq!(code(&out), 13, "{err}");
    for pack in [&data_pack, &tree_pack] {
        let line = format!("{pack}: pack content does not match its name");
        assert!(err.contains(&line), "{pack} not found damaged: {err}");
    }
    assert!(
        err.contains("problem: tree ") && err.contains("authentication failed"),
        "the tree the walk could not load is not named: {err}"
    );
}
