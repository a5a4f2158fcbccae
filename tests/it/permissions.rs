//! Secrets at rest: repository and cache files are owner-only (0600 files, 0700
//! folders) whatever the umask, as restic does.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::common::*;

/// Runs cairn under `umask 022` (the usual default, which would give 0644/0755).
fn run_with_umask(env: &Env, args: &[&str]) {
    let inner = env.cmd();
    let mut c = std::process::Command::new("sh");
    c.arg("-c").arg("umask 022; exec \"$@\"").arg("sh");
    c.arg(inner.get_program()).args(inner.get_args()).args(args);
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let out = c.output().unwrap();
    assert_eq!(code(&out), 0, "{args:?}: {}", stderr(&out));
}

fn assert_private(root: &Path) -> usize {
    let mut n = 0;
    for p in std::iter::once(root.to_path_buf()).chain(walk(root)) {
        let m = p.symlink_metadata().unwrap();
        let mode = m.permissions().mode() & 0o7777;
        let want = if m.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{} is {mode:o}", p.display());
        n += 1;
    }
    n
}

#[test]
fn repository_and_cache_files_are_owner_only() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), random_bytes(100_000, 3)).unwrap();
    run_with_umask(&env, &["init"]);
    run_with_umask(&env, &["backup", src.to_str().unwrap()]);
    run_with_umask(&env, &["ls", "latest"]);
    let pw = env.path("pw2");
    fs::write(&pw, "another password").unwrap();
    run_with_umask(
        &env,
        &["key", "add", "--new-password-file", pw.to_str().unwrap()],
    );
    assert!(
        assert_private(&env.repo) > 260,
        "keys, packs, index, snapshot, folders"
    );
    let cache = env.path("home/cache");
    assert!(
        assert_private(&cache) > 3,
        "the cache holds files: {:?}",
        walk(&cache)
    );
}
