//! The command-line surface: default repository, init, keys, cat, JSON.

use std::fs;

use crate::common::*;

#[test]
fn default_repository_is_created_on_first_use_with_a_notice() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    let out = env
        .bare()
        .args(["backup", src.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("created the default repository"), "{err}");
    let default_repo = env.path("home/data/cairn/repository");
    assert!(default_repo.join("config").exists());
    let out = env
        .bare()
        .args(["backup", src.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!stderr(&out).contains("created"), "only on first use");
    let out = env.bare().args(["--json", "snapshots"]).output().unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
}

#[test]
fn init_refuses_an_existing_repository() {
    let env = Env::new();
    env.init();
    let out = env.run(["init"]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("already exists"));
    let out = env.run(["init", "--compression", "bogus"]);
    assert_eq!(code(&out), 1);
}

/// init makes the repository's folders while it derives the key: a folder it cannot
/// make fails the init with one line, and leaves no key file and no config behind (so
/// the place is still no repository, and a second init once the way is clear works).
#[test]
fn init_that_cannot_make_its_folders_leaves_no_key_and_no_config() {
    let env = Env::new();
    let repo = env.path("blocked");
    fs::create_dir_all(&repo).unwrap();
    fs::write(repo.join("data"), b"a file where a folder goes").unwrap();
    let r = repo.to_str().unwrap();
    let out = env.bare().args(["-r", r, "init"]).output().unwrap();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let errors: Vec<_> = stderr(&out)
        .lines()
        .filter(|l| !l.starts_with("warning:"))
        .map(String::from)
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("blocked/data"), "{errors:?}");
    assert!(!repo.join("config").exists());
    let keys = fs::read_dir(repo.join("keys")).map_or(0, |d| d.count());
    assert_eq!(keys, 0, "a key file was written");
    fs::remove_file(repo.join("data")).unwrap();
    let out = env.bare().args(["-r", r, "init"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(repo.join("config").exists() && repo.join("data/00").is_dir());
}

#[test]
fn keys_add_list_passwd_remove() {
    let env = Env::new();
    env.init();
    let newpw = env.path("newpw");
    fs::write(&newpw, "second password\n").unwrap();
    env.ok(["key", "add", "--new-password-file", newpw.to_str().unwrap()]);
    let list: serde_json::Value = serde_json::from_str(&env.ok(["--json", "key", "list"])).unwrap();
    let keys = list.as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys.iter().filter(|k| k["current"] == true).count(), 1);
    let first_id = keys.iter().find(|k| k["current"] == true).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The second password opens the repository too, and can remove the first key.
    let with_second = |args: &[&str]| {
        env.cmd()
            .env("CAIRN_PASSWORD", "second password")
            .args(args)
            .output()
            .unwrap()
    };
    assert!(with_second(&["snapshots"]).status.success());
    let out = env.run(["key", "remove", &first_id]);
    assert_eq!(code(&out), 1, "the key in use cannot be removed");
    assert!(with_second(&["key", "remove", &first_id[..10]])
        .status
        .success());
    assert_eq!(
        code(&env.run(["snapshots"])),
        12,
        "the removed password no longer works"
    );
    // passwd swaps the password in use.
    let third = env.path("third");
    fs::write(&third, "third password").unwrap();
    assert!(with_second(&[
        "key",
        "passwd",
        "--new-password-file",
        third.to_str().unwrap()
    ])
    .status
    .success());
    assert_eq!(code(&with_second(&["snapshots"])), 12);
    let out = env
        .cmd()
        .env("CAIRN_PASSWORD", "third password")
        .arg("snapshots")
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[test]
fn cat_shows_every_object_kind() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("hello"), b"hello blob").unwrap();
    let snap = env.backup([&src]);
    let config: serde_json::Value =
        serde_json::from_str(&env.ok(["--json", "cat", "config"])).unwrap();
    assert_eq!(config["version"], 1);
    assert_eq!(config["chunker"]["avg_size"], 1 << 20);
    let s: serde_json::Value =
        serde_json::from_str(&env.ok(["--json", "cat", "snapshot", &snap[..8]])).unwrap();
    assert_eq!(s["id"], snap);
    let sub = format!("latest:{}", src.to_str().unwrap());
    let tree: serde_json::Value =
        serde_json::from_str(&env.ok(["--json", "cat", "tree", &sub])).unwrap();
    assert_eq!(tree["nodes"][0]["name"], "hello");
    let blob_id = tree["nodes"][0]["content"][0].as_str().unwrap().to_string();
    let out = env.cmd().args(["cat", "blob", &blob_id]).output().unwrap();
    assert_eq!(out.stdout, b"hello blob");
    let index = fs::read_dir(env.repo.join("index"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    let idx: serde_json::Value =
        serde_json::from_str(&env.ok(["--json", "cat", "index", &index.to_string_lossy()[..8]]))
            .unwrap();
    let pack_id = idx["packs"][0]["id"].as_str().unwrap().to_string();
    let pack: serde_json::Value =
        serde_json::from_str(&env.ok(["--json", "cat", "pack", &pack_id])).unwrap();
    assert!(pack["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|b| b["id"] == blob_id));
    let key = fs::read_dir(env.repo.join("keys"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    let k: serde_json::Value =
        serde_json::from_str(&env.ok(["--json", "cat", "key", &key.to_string_lossy()])).unwrap();
    assert_eq!(k["kdf"], "argon2id");
    assert_eq!(
        k["kdf_params"]["memory_kib"], 64,
        "the test's low cost is stored in the key"
    );
}

#[test]
fn usage_errors_are_exit_2() {
    let env = Env::new();
    let out = env.run(["restore"]);
    assert_eq!(code(&out), 2);
    let out = env.run(["frobnicate"]);
    assert_eq!(code(&out), 2);
}
