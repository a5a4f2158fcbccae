//! Bounds on key derivation: a hostile key file's Argon2id cost is refused before
//! anything is derived, the same limits hold for the --kdf-* options, and a new key
//! below OWASP's minimum gets a warning.

use std::fs;

use crate::common::*;

/// Replaces the key file that `password` opens with one whose KDF parameters are
/// edited by `edit` (renamed to the hash of its new bytes, as an attacker would).
fn make_hostile(env: &Env, edit: impl Fn(&mut serde_json::Value)) -> String {
    let keys = env.repo.join("keys");
    let first = fs::read_dir(&keys).unwrap().next().unwrap().unwrap().path();
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&first).unwrap()).unwrap();
    edit(&mut v["kdf_params"]);
    let bytes = serde_json::to_vec_pretty(&v).unwrap();
    let name = cairn::id::Id::of_file(&bytes).to_hex();
    fs::write(keys.join(&name), bytes).unwrap();
    fs::remove_file(first).unwrap();
    name
}

type Edit = fn(&mut serde_json::Value);

#[test]
fn hostile_kdf_cost_in_a_key_file_is_refused_before_deriving() {
    let hostile: [(&str, Edit); 3] = [
        ("4 GiB x 100", |p| {
            p["memory_kib"] = 4_194_304.into();
            p["iterations"] = 100.into();
        }),
        ("4096 lanes", |p| p["parallelism"] = 4096.into()),
        ("zero passes", |p| p["iterations"] = 0.into()),
    ];
    for (what, edit) in hostile {
        let env = Env::new();
        env.init();
        let other = env.path("other-pw");
        fs::write(&other, "another password").unwrap();
        env.ok(["key", "add", "--new-password-file", other.to_str().unwrap()]);
        let name = make_hostile_key_of(&env, edit);
        let out = env.run(["snapshots"]);
        assert_eq!(code(&out), 1, "{what}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!("keys/{name}")) && err.contains("outside cairn's limits"),
            "{what}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        // The other password still opens the repository.
        let out = env
            .cmd()
            .env_remove("CAIRN_PASSWORD")
            .arg("--password-file")
            .arg(&other)
            .arg("snapshots")
            .output()
            .unwrap();
        assert_eq!(code(&out), 0, "{what}: {}", stderr(&out));
    }
}

/// Makes the key file of the main password hostile; returns its name.
fn make_hostile_key_of(env: &Env, edit: fn(&mut serde_json::Value)) -> String {
    let out = env.ok(["--json", "key", "list"]);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let current = list
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["current"] == true)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let keys = env.repo.join("keys");
    for e in fs::read_dir(&keys).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap().to_str().unwrap() != current {
            // Park the other key so make_hostile edits the current one.
            let parked = env.path("parked");
            fs::rename(&p, &parked).unwrap();
            let name = make_hostile(env, edit);
            fs::rename(&parked, &p).unwrap();
            return name;
        }
    }
    unreachable!("two keys")
}

#[test]
fn kdf_options_are_range_checked() {
    for args in [
        ["--kdf-memory-kib", "4194305"],
        ["--kdf-memory-kib", "0"],
        ["--kdf-iterations", "0"],
        ["--kdf-iterations", "65"],
    ] {
        let env = Env::new();
        let out = env.run([args[0], args[1], "init"]);
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
        assert!(!env.repo.exists(), "{args:?}: nothing written");
    }
    let env = Env::new();
    env.init();
    let out = env.run(["snapshots", "--latest", "0"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
}

#[test]
fn a_new_key_below_owasp_is_a_warning_not_an_error() {
    let env = Env::new();
    let out = env.run(["init"]);
    assert_eq!(code(&out), 0);
    let err = stderr(&out);
    assert!(
        err.starts_with("warning:") && err.contains("OWASP"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    let env = Env::new();
    let out = env.run(["--kdf-memory-kib", "19456", "--kdf-iterations", "2", "init"]);
    assert_eq!(code(&out), 0);
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
}
