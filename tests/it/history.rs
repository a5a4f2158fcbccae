//! Point in time: every snapshot restores to exactly its own state, and the selectors
//! of CLI.md pick the right one.

use std::fs;

use crate::common::*;

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn older_snapshot_restores_its_own_state_after_mutations() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    crate::fidelity::make_fixture(&src);
    let first = env.backup([&src]);
    let saved = env.path("state1");
    copy_tree(&src, &saved);
    // Mutate: edit, delete, add, rename, change a mode.
    fs::write(src.join("small.txt"), b"edited").unwrap();
    fs::remove_file(src.join("dir/random.bin")).unwrap();
    fs::write(src.join("added"), random_bytes(500_000, 11)).unwrap();
    fs::rename(src.join("dir/sub"), src.join("moved")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(src.join("private"), fs::Permissions::from_mode(0o640)).unwrap();
    let second = env.backup([&src]);
    assert_ne!(first, second);

    let t1 = env.path("t1");
    env.restore(&first[..8], &t1, &[]);
    assert_same_tree(&saved, &t1.join(src.strip_prefix("/").unwrap()));
    let t2 = env.path("t2");
    env.restore("latest", &t2, &[]);
    assert_same_tree(&src, &t2.join(src.strip_prefix("/").unwrap()));
}

#[test]
fn selectors_pick_by_time_host_and_tag() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let mut ids = Vec::new();
    for (i, (time, host, tag)) in [
        ("2026-11-18 10:00:00", "alpha", "daily"),
        ("2026-11-19 10:00:00", "beta", "weekly"),
        ("2026-11-20 09:00:00", "alpha", "daily"),
        ("2026-11-20 15:30:00", "alpha", "weekly"),
    ]
    .iter()
    .enumerate()
    {
        fs::write(src.join("v"), format!("version {i}")).unwrap();
        ids.push(env.backup([
            "--time",
            time,
            "--host",
            host,
            "--tag",
            tag,
            src.to_str().unwrap(),
        ]));
    }
    let content = |sel: &str, extra: &[&str]| {
        let target = env.path(&format!(
            "t-{}",
            ids.len() + sel.len() + extra.len() * 7 + rand_suffix()
        ));
        let mut args = vec!["restore", sel, "--target", target.to_str().unwrap()];
        args.extend_from_slice(extra);
        env.ok(&args);
        fs::read_to_string(target.join(src.strip_prefix("/").unwrap()).join("v")).unwrap()
    };
    assert_eq!(content("latest", &[]), "version 3");
    assert_eq!(content("latest", &["--host", "beta"]), "version 1");
    assert_eq!(content("latest", &["--tag", "daily"]), "version 2");
    assert_eq!(content("@2026-11-19 12:00", &[]), "version 1");
    // A date alone means the end of that day.
    assert_eq!(content("@2026-11-20", &[]), "version 3");
    assert_eq!(
        content("@2026-11-20", &["--host", "alpha", "--tag", "daily"]),
        "version 2"
    );
    assert_eq!(content(&ids[0][..6], &[]), "version 0");
    // Before the first snapshot: nothing to pick.
    let out = env.run([
        "restore",
        "@2026-01-01",
        "--target",
        env.path("none").to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    // The JSON list has all four, oldest first, in restic's field names.
    let list: serde_json::Value = serde_json::from_str(&env.ok(["--json", "snapshots"])).unwrap();
    let got: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, ids.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(list[1]["hostname"], "beta");
    assert_eq!(list[1]["tags"][0], "weekly");
    assert!(list[0]["time"]
        .as_str()
        .unwrap()
        .starts_with("2026-11-18T10:00:00"));
    let alpha: serde_json::Value =
        serde_json::from_str(&env.ok(["--json", "snapshots", "--host", "alpha", "--latest", "1"]))
            .unwrap();
    assert_eq!(alpha.as_array().unwrap().len(), 1);
    assert_eq!(alpha[0]["id"].as_str().unwrap(), ids[3]);
}

fn rand_suffix() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
