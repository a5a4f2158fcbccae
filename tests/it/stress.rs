//! Parallel stress (issue 7): eight backups of small trees (eight hosts) into one
//! repository at once, with `snapshots`, `check` and `forget --prune` running in a loop
//! beside them. Bounded in count, not time. Every backup succeeds, every check passes,
//! and at the end every remaining snapshot restores exactly the state it was taken of.

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::common::*;

const BACKUPS: usize = 8;
const ROUNDS: usize = 6;

#[test]
fn eight_backups_beside_snapshots_check_and_prune() {
    let env = Env::new();
    env.init();
    let states: Mutex<HashMap<String, PathBuf>> = Mutex::new(HashMap::new());
    let done = AtomicBool::new(false);
    // Commands beside the backups wait for an exclusive lock (prune's delete step, a
    // backup adopting leftovers) instead of failing at once.
    let cairn = |args: &[&str]| {
        env.cmd()
            .env("CAIRN_RETRY_LOCK", "3m")
            .args(args)
            .output()
            .unwrap()
    };
    std::thread::scope(|s| {
        let mut backups = Vec::new();
        for b in 0..BACKUPS {
            let (env, states, cairn) = (&env, &states, &cairn);
            backups.push(s.spawn(move || {
                let src = env.path(&format!("src{b}"));
                fs::create_dir_all(src.join("sub")).unwrap();
                for round in 0..ROUNDS {
                    for f in 0..12u64 {
                        // Some content shared by all hosts, some their own, some new.
                        let seed = match f % 3 {
                            0 => f,
                            1 => 1000 + b as u64 * 10 + f,
                            _ => 5000 + (b * ROUNDS + round) as u64 * 100 + f,
                        };
                        fs::write(src.join(format!("sub/f{f}")), random_bytes(40_000, seed))
                            .unwrap();
                    }
                    let state = env.path(&format!("state-{b}-{round}"));
                    assert!(Command::new("cp")
                        .arg("-a")
                        .arg(&src)
                        .arg(&state)
                        .status()
                        .unwrap()
                        .success());
                    let out = cairn(&[
                        "--json",
                        "backup",
                        "--host",
                        &format!("host{b}"),
                        src.to_str().unwrap(),
                    ]);
                    assert!(out.status.success(), "backup {b}/{round}: {}", stderr(&out));
                    let id = summary_line(&String::from_utf8_lossy(&out.stdout))["snapshot_id"]
                        .as_str()
                        .unwrap()
                        .to_string();
                    states.lock().unwrap().insert(id, state);
                }
            }));
        }
        let maintenance = s.spawn(|| {
            let mut loops = 0;
            while !done.load(Ordering::Relaxed) && loops < 200 {
                for args in [
                    &["snapshots"][..],
                    &["check"][..],
                    &["forget", "--keep-last", "2", "--prune"][..],
                ] {
                    let out = cairn(args);
                    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
                }
                loops += 1;
            }
            loops
        });
        for b in backups {
            b.join().unwrap();
        }
        done.store(true, Ordering::Relaxed);
        assert!(maintenance.join().unwrap() >= 1);
    });

    let out = cairn(&["check", "--read-data"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let list: serde_json::Value =
        serde_json::from_slice(&cairn(&["--json", "snapshots"]).stdout).unwrap();
    let list = list.as_array().unwrap();
    assert!(list.len() >= 2 * BACKUPS, "{} snapshots left", list.len());
    let states = states.into_inner().unwrap();
    for s in list {
        let id = s["id"].as_str().unwrap();
        let state = &states[id];
        let t = env.path(&format!("restore-{}", &id[..8]));
        env.restore(id, &t, &[]);
        let path = s["paths"][0].as_str().unwrap();
        assert_same_tree_but_atime(state, &t.join(path.strip_prefix('/').unwrap()));
        fs::remove_dir_all(&t).unwrap();
    }
}
