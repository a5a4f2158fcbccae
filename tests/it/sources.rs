//! What a backup stores about its sources: names restore would refuse are refused up
//! front, and directories above a source carry the real directories' metadata.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::common::*;

fn repo_files(env: &Env) -> Vec<std::path::PathBuf> {
    walk(&env.repo)
        .into_iter()
        .filter(|p| p.is_file() && !p.starts_with(env.repo.join("locks")))
        .collect()
}

#[test]
fn unsafe_stdin_filename_is_a_usage_error_and_writes_nothing() {
    let env = Env::new();
    env.init();
    let before = repo_files(&env);
    for name in ["..", ".", "", "a/b"] {
        let mut c = env.cmd();
        c.args(["backup", "--stdin", "--stdin-filename", name]);
        c.stdin(std::process::Stdio::piped());
        let mut child = c
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Whatever is on stdin, nothing is stored.
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        assert_ne!(code(&out), 0, "{name:?}");
        assert_ne!(code(&out), 3, "{name:?}");
        assert!(
            stderr(&out).contains("--stdin-filename"),
            "{name:?}: {}",
            stderr(&out)
        );
        assert_eq!(repo_files(&env), before, "{name:?}: nothing written");
    }
}

#[test]
fn a_symlink_above_a_source_stores_the_real_directory() {
    let env = Env::new();
    env.init();
    let real = env.path("x/real");
    fs::create_dir_all(real.join("sub")).unwrap();
    fs::write(real.join("sub/f"), b"data").unwrap();
    fs::set_permissions(&real, fs::Permissions::from_mode(0o750)).unwrap();
    let t = filetime_of(&real, 1_700_000_000);
    std::os::unix::fs::symlink(&real, env.path("x/link")).unwrap();
    let source = env.path("x/link/sub");
    env.backup([source.to_str().unwrap()]);
    let link_path = env.path("x/link");
    let out = env.ok(["--json", "ls", "latest", link_path.to_str().unwrap()]);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let node = &list[0];
    assert_eq!(node["path"], link_path.to_str().unwrap());
    assert_eq!(node["type"], "dir");
    assert_eq!(node["mode"].as_u64().unwrap() & 0o7777, 0o750, "{node}");
    assert_eq!(node["mtime"], t, "{node}");
    // The source itself is still not followed: it is the real `sub`, with its file.
    let files: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert!(files.contains(&"sub"), "{files:?}");
}

/// Sets a directory's mtime to `secs` and returns it as `ls --json` prints it.
fn filetime_of(p: &std::path::Path, secs: i64) -> String {
    let ts = nix::sys::time::TimeSpec::new(secs, 0);
    nix::sys::stat::utimensat(
        None,
        p,
        &ts,
        &ts,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap()
        .with_timezone(&chrono::Local)
        .to_rfc3339()
}
