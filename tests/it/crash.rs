//! Killed processes and concurrent maintenance: nothing a finished backup wrote is lost.

use std::fs;
use std::time::{Duration, Instant};

use crate::common::*;

fn pack_count(env: &Env) -> usize {
    walk(&env.repo.join("data"))
        .iter()
        .filter(|p| p.is_file())
        .count()
}

#[test]
fn killed_backup_leaves_a_sound_repository_and_its_uploads_are_reused() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let mut total = 0;
    for i in 0..10 {
        let data = random_bytes(5 << 20, 700 + i);
        total += data.len() as u64;
        fs::write(src.join(format!("part{i}")), data).unwrap();
    }
    // Kill it at several moments: before any pack, after the first, later on.
    for round in 0..3 {
        let before = pack_count(&env);
        let mut child = env
            .cmd()
            .args(["backup", src.to_str().unwrap()])
            .spawn()
            .unwrap();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) && child.try_wait().unwrap().is_none() {
            if round > 0 && pack_count(&env) > before + round - 1 {
                break;
            }
            if round == 0 && start.elapsed() > Duration::from_millis(30) {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = child.kill(); // SIGKILL
        child.wait().unwrap();
        let out = env.run(["check"]);
        assert_eq!(code(&out), 0, "round {round}: {}", stderr(&out));
    }
    let uploaded = env.repo_size();
    let out = env.ok(["--json", "backup", src.to_str().unwrap()]);
    let s = summary_line(&out);
    let added = s["data_added_packed"].as_u64().unwrap();
    if uploaded > 4 << 20 {
        assert!(
            added + (4 << 20) < total,
            "reused nothing: added {added} of {total}"
        );
    }
    env.ok(["check", "--read-data"]);
    let t = env.path("t");
    env.restore("latest", &t, &[]);
    assert_same_tree(&src, &t.join(src.strip_prefix("/").unwrap()));
}

#[test]
fn backups_running_during_prune_lose_nothing() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for round in 0..3u64 {
        for i in 0..4 {
            fs::write(
                src.join(format!("f{i}")),
                random_bytes(2 << 20, round * 10 + i),
            )
            .unwrap();
        }
        env.backup([&src]);
    }
    let far = (chrono::Utc::now().timestamp() + 100 * 3600).to_string();
    for round in 0..3u64 {
        env.ok(["forget", "--keep-last", "1"]);
        for i in 0..4 {
            fs::write(
                src.join(format!("f{i}")),
                random_bytes(2 << 20, 100 + round * 10 + i),
            )
            .unwrap();
        }
        let mut prune = env
            .cmd()
            .env("CAIRN_PRUNE_NOW", &far)
            .args(["-q", "prune"])
            .spawn()
            .unwrap();
        // The backup waits while prune holds its short exclusive delete step.
        let backup = env
            .cmd()
            .env("CAIRN_RETRY_LOCK", "2m")
            .args(["backup", src.to_str().unwrap()])
            .output()
            .unwrap();
        let prune_status = prune.wait().unwrap();
        assert_eq!(code(&backup), 0, "{}", stderr(&backup));
        // Prune may refuse (a snapshot appeared while it ran); it must not break anything.
        let _ = prune_status;
        let t = env.path(&format!("t{round}"));
        env.restore("latest", &t, &[]);
        assert_same_tree(&src, &t.join(src.strip_prefix("/").unwrap()));
    }
    env.cmd()
        .env("CAIRN_PRUNE_NOW", &far)
        .args(["prune"])
        .output()
        .unwrap();
    env.ok(["check", "--read-data"]);
}
