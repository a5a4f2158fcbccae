//! Profiles and runs (`cairn run`, `config check`, `history`, `--profile`), hooks and
//! the run lock, against real child processes and a real SQLite history file.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::common::*;

/// A config file beside the test's repository: repository `main` at env.repo with the
/// tests' password in a file, and `profile` text appended.
pub fn write_config(env: &Env, extra: &str) -> PathBuf {
    let pw = env.path("pw");
    std::fs::write(&pw, PASSWORD).unwrap();
    let cfg = env.path("cairn.toml");
    let text = format!(
        "[repositories.main]\nurl = {:?}\npassword-file = {:?}\n\n{extra}",
        env.repo.display().to_string(),
        pw.display().to_string()
    );
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// `cairn --config CFG args…` (no -r: the profile names the repository).
pub fn with_config(env: &Env, cfg: &Path, args: &[&str]) -> std::process::Output {
    env.bare()
        .arg("--config")
        .arg(cfg)
        .args(args)
        .output()
        .unwrap()
}

pub fn history_json(env: &Env, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["--json", "history"];
    args.extend(extra);
    let out = env.bare().args(&args).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap()
}

fn snapshot_ids(env: &Env) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(&env.ok(["--json", "snapshots"])).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

pub fn source(env: &Env) -> PathBuf {
    let src = env.path("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.txt"), b"alpha").unwrap();
    std::fs::write(src.join("sub/b.bin"), random_bytes(300_000, 7)).unwrap();
    std::fs::write(src.join("skip.tmp"), b"left out").unwrap();
    src
}

#[test]
fn a_profile_run_backs_up_forgets_checks_and_is_recorded() {
    let env = Env::new();
    env.init();
    let src = source(&env);
    let cfg = write_config(
        &env,
        &format!(
            "[profiles.home]\nrepository = \"main\"\npaths = [{:?}]\n\n\
             [profiles.home.backup]\nexclude = [\"*.tmp\"]\ntag = [\"nightly\"]\n\n\
             [profiles.home.forget]\nkeep-last = 1\nprune = true\n\n\
             [profiles.home.check]\nread-data = true\n",
            src.display().to_string()
        ),
    );
    let plan = with_config(&env, &cfg, &["run", "home", "--dry-run"]);
    assert!(plan.status.success(), "{}", stderr(&plan));
    let plan = String::from_utf8_lossy(&plan.stdout).to_string();
    assert!(
        plan.contains("backup '--exclude=*.tmp' --tag=nightly --"),
        "{plan}"
    );
    assert!(plan.contains("forget --keep-last=1 --prune"), "{plan}");
    assert!(snapshot_ids(&env).is_empty(), "a dry run ran something");

    for round in 0..2 {
        std::fs::write(src.join("a.txt"), format!("alpha {round}")).unwrap();
        let out = with_config(&env, &cfg, &["run", "home"]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    // keep-last 1: one snapshot, the second run's, tagged, without the excluded file.
    let ids = snapshot_ids(&env);
    assert_eq!(ids.len(), 1);
    let target = env.path("target");
    env.restore("latest", &target, &[]);
    let restored = target.join(src.strip_prefix("/").unwrap());
    assert_eq!(std::fs::read(restored.join("a.txt")).unwrap(), b"alpha 1");
    assert_eq!(
        std::fs::read(restored.join("sub/b.bin")).unwrap(),
        random_bytes(300_000, 7)
    );
    assert!(!restored.join("skip.tmp").exists());
    let snaps: serde_json::Value = serde_json::from_str(&env.ok(["--json", "snapshots"])).unwrap();
    assert_eq!(snaps[0]["tags"], serde_json::json!(["nightly"]));

    // The history: two runs, each with its backup, forget and check; the last backup's
    // snapshot is the one kept.
    let rows = history_json(&env, &["--profile", "home"]);
    let runs: Vec<_> = rows.iter().filter(|r| r["kind"] == "run").collect();
    assert_eq!(runs.len(), 2, "{rows:#?}");
    assert!(runs.iter().all(|r| r["outcome"] == "success"));
    let steps: Vec<String> = rows
        .iter()
        .filter(|r| r["run_id"] == runs[1]["id"])
        .map(|r| r["command"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(steps, ["backup", "forget", "check"]);
    let last_backup = rows
        .iter()
        .rev()
        .find(|r| r["command"] == "backup")
        .unwrap();
    assert_eq!(last_backup["snapshot"].as_str().unwrap(), ids[0]);
    assert_eq!(runs[1]["snapshot"].as_str().unwrap(), ids[0]);
    assert!(last_backup["bytes_added"].as_u64().unwrap() > 0);
    assert!(last_backup["requests"].as_u64().unwrap() > 0);
    // --failed: nothing failed.
    assert!(history_json(&env, &["--failed"]).is_empty());
}

#[test]
fn config_check_names_every_problem_with_its_line() {
    let env = Env::new();
    let cfg = write_config(
        &env,
        "[profiles.home]\nrepository = \"main\"\npaths = [\"/srv\"]\nschedul = \"0 3 * * *\"\n",
    );
    let out = with_config(&env, &cfg, &["config", "check"]);
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    assert!(
        err.contains("cairn.toml:8:") && err.contains("schedul"),
        "{err}"
    );

    let cfg = write_config(
        &env,
        "[profiles.home]\nrepository = \"mian\"\npaths = [\"/srv\"]\nschedule = \"0 25 * * *\"\n\n\
         [profiles.home.backup]\nexclude-caches = \"yes\"\none-file-sytem = true\n",
    );
    let out = with_config(&env, &cfg, &["config", "check"]);
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 4, "{err}");
    assert!(
        lines[0].contains(":6:") && lines[0].contains("mian"),
        "{err}"
    );
    assert!(
        lines[1].contains(":8:") && lines[1].contains("schedule"),
        "{err}"
    );
    assert!(
        lines[2].contains(":11:") && lines[2].contains("switch"),
        "{err}"
    );
    assert!(
        lines[3].contains(":12:") && lines[3].contains("--one-file-sytem"),
        "{err}"
    );
    // A run refuses the file the same way, and runs nothing.
    let out = with_config(&env, &cfg, &["run", "home"]);
    assert_eq!(code(&out), 1);
    assert!(!env.repo.exists());

    let cfg = write_config(
        &env,
        "[profiles.home]\nrepository = \"main\"\npaths = [\"/srv\"]\n",
    );
    let out = with_config(&env, &cfg, &["config", "check"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn a_failing_before_hook_aborts_the_run_and_the_other_hooks_see_why() {
    let env = Env::new();
    env.init();
    let src = source(&env);
    let log = env.path("hooks.log");
    let cfg = write_config(
        &env,
        &format!(
            "[profiles.home]\nrepository = \"main\"\npaths = [{:?}]\n\n\
             [profiles.home.hooks]\nbefore = \"echo before >> {l}; exit 7\"\n\
             after = \"echo after >> {l}\"\n\
             on-failure = \"echo failed:$CAIRN_FAILED_STEP:$CAIRN_EXIT_CODE:$CAIRN_ERROR >> {l}\"\n\
             finally = \"echo finally >> {l}\"\n",
            src.display().to_string(),
            l = log.display()
        ),
    );
    let out = with_config(&env, &cfg, &["run", "home"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("before hook exited with 7"),
        "{}",
        stderr(&out)
    );
    assert!(
        snapshot_ids(&env).is_empty(),
        "the backup ran after a failed before hook"
    );
    let log = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        [
            "before",
            "failed:before-hook:1:before hook exited with 7",
            "finally"
        ]
    );
    let rows = history_json(&env, &["--failed"]);
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0]["kind"], "run");
    assert!(rows[0]["error"].as_str().unwrap().contains("before hook"));
}

#[test]
fn a_hook_that_hangs_is_killed_at_its_timeout() {
    let env = Env::new();
    env.init();
    let src = source(&env);
    let cfg = write_config(
        &env,
        &format!(
            "[profiles.home]\nrepository = \"main\"\npaths = [{:?}]\n\n\
             [profiles.home.hooks]\nbefore = \"sleep 600\"\ntimeout = \"1s\"\n",
            src.display().to_string()
        ),
    );
    let out = with_config(&env, &cfg, &["run", "home"]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("did not finish within 1s"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_damaged_or_locked_history_never_stops_a_backup() {
    let env = Env::new();
    env.init();
    let src = source(&env);
    let db = env.path("history.sqlite");
    std::fs::write(&db, vec![0x5au8; 8192]).unwrap();
    let out = env
        .cmd()
        .env("CAIRN_HISTORY", &db)
        .args(["backup", src.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("warning: run history"),
        "{}",
        stderr(&out)
    );
    assert_eq!(snapshot_ids(&env).len(), 1);

    // A second process holds the database's write lock throughout the backup.
    let db = env.path("locked.sqlite");
    let out = env
        .cmd()
        .env("CAIRN_HISTORY", &db)
        .args(["snapshots"])
        .output()
        .unwrap();
    assert!(out.status.success());
    env.cmd()
        .env("CAIRN_HISTORY", &db)
        .args(["backup", src.to_str().unwrap()])
        .output()
        .unwrap();
    let mut holder = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys,time; c=sqlite3.connect(sys.argv[1], isolation_level=None); \
             c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(60)",
        ])
        .arg(&db)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "locked");
    let out = env
        .cmd()
        .env("CAIRN_HISTORY", &db)
        .args(["backup", src.to_str().unwrap()])
        .output()
        .unwrap();
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("warning: run history"),
        "{}",
        stderr(&out)
    );
    assert_eq!(snapshot_ids(&env).len(), 3);
    // The database is whole: it still opens and lists the backups it recorded.
    let out = env
        .bare()
        .env("CAIRN_HISTORY", &db)
        .args(["--json", "history"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_single_command_takes_the_profile_and_its_own_flags_win() {
    let env = Env::new();
    env.init();
    let src = source(&env);
    let cfg = write_config(
        &env,
        &format!(
            "[profiles.home]\nrepository = \"main\"\npaths = [{:?}]\n\n\
             [profiles.home.backup]\nexclude = [\"*.tmp\"]\nhost = \"profile-host\"\n",
            src.display().to_string()
        ),
    );
    let out = with_config(
        &env,
        &cfg,
        &["--profile", "home", "backup", "--host", "cli-host"],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = with_config(&env, &cfg, &["--profile", "home", "--json", "snapshots"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["hostname"], "cli-host");
    assert_eq!(
        v[0]["paths"],
        serde_json::json!([src.display().to_string()])
    );
    let ls = with_config(&env, &cfg, &["--profile", "home", "ls", "latest"]);
    let ls = String::from_utf8_lossy(&ls.stdout).to_string();
    assert!(ls.contains("a.txt") && !ls.contains("skip.tmp"), "{ls}");
}

#[test]
fn two_runs_of_one_profile_never_overlap() {
    let env = Env::new();
    env.init();
    let src = source(&env);
    let flag = env.path("started");
    let cfg = write_config(
        &env,
        &format!(
            "[profiles.home]\nrepository = \"main\"\npaths = [{:?}]\n\n\
             [profiles.home.hooks]\nbefore = \"touch {}; sleep 3\"\n",
            src.display().to_string(),
            flag.display()
        ),
    );
    let mut first = env
        .bare()
        .arg("--config")
        .arg(&cfg)
        .args(["run", "home"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    while !flag.exists() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let second = with_config(&env, &cfg, &["run", "home"]);
    assert_eq!(code(&second), 11);
    assert!(
        stderr(&second).contains("already running"),
        "{}",
        stderr(&second)
    );
    assert!(first.wait().unwrap().success());
    assert_eq!(snapshot_ids(&env).len(), 1);
}

#[test]
fn a_run_copies_its_snapshots_to_a_second_repository_with_its_own_password() {
    let env = Env::new();
    env.init();
    let src = source(&env);
    let offsite = env.path("offsite");
    let pw2 = env.path("pw2");
    std::fs::write(&pw2, "another password").unwrap();
    let init = env
        .bare()
        .env("CAIRN_PASSWORD", "another password")
        .arg("-r")
        .arg(&offsite)
        .arg("init")
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", stderr(&init));
    let cfg = write_config(
        &env,
        &format!(
            "history = \"state/history.sqlite\"\n\n\
             [repositories.offsite]\nurl = {:?}\npassword-file = \"pw2\"\n\n\
             [profiles.home]\nrepository = \"main\"\npaths = [{:?}]\n\n\
             [profiles.home.copy]\nto = [\"offsite\"]\n",
            offsite.display().to_string(),
            src.display().to_string()
        ),
    );
    // The history setting must come before the tables: write_config put the
    // repository first, so rewrite the file with it on top.
    let text = std::fs::read_to_string(&cfg).unwrap();
    let (head, rest) = text.split_once("history = ").unwrap();
    let (hist_line, tail) = rest.split_once('\n').unwrap();
    std::fs::write(&cfg, format!("history = {hist_line}\n{head}{tail}")).unwrap();
    // A wrong password in the environment loses to the profile's files.
    let out = env
        .bare()
        .env("CAIRN_PASSWORD", "wrong")
        .arg("--config")
        .arg(&cfg)
        .args(["run", "home"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let list = |repo: &Path, pw: &str| -> serde_json::Value {
        let out = env
            .bare()
            .env("CAIRN_PASSWORD", pw)
            .arg("-r")
            .arg(repo)
            .args(["--json", "snapshots"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let main = list(&env.repo, PASSWORD);
    let copied = list(&offsite, "another password");
    assert_eq!(copied.as_array().unwrap().len(), 1);
    // The same snapshot (ids differ: each repository has its own keys).
    assert_eq!(copied[0]["time"], main[0]["time"]);
    assert_eq!(copied[0]["paths"], main[0]["paths"]);
    // The history went where the file said (relative to the file), with the copy step.
    let db = env.path("state/history.sqlite");
    assert!(db.exists());
    let out = env
        .bare()
        .arg("--config")
        .arg(&cfg)
        .args(["--json", "history"])
        .output()
        .unwrap();
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let commands: Vec<&str> = rows
        .iter()
        .map(|r| r["command"].as_str().unwrap())
        .collect();
    assert_eq!(commands, ["run", "backup", "copy"], "{rows:#?}");
    // --profile on a single command also beats the environment's password.
    let out = env
        .bare()
        .env("CAIRN_PASSWORD", "wrong")
        .arg("--config")
        .arg(&cfg)
        .args(["--profile", "home", "snapshots"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

/// The TOML blocks of a Markdown file, in order.
fn toml_blocks(md: &str) -> Vec<String> {
    md.split("```toml\n")
        .skip(1)
        .map(|b| {
            b.split("```")
                .next()
                .unwrap()
                .lines()
                .map(|l| l.trim_start_matches("   "))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect()
}

#[test]
fn the_documented_config_files_pass_config_check() {
    let env = Env::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for doc in ["docs/config.md", "README.md"] {
        let md = std::fs::read_to_string(root.join(doc)).unwrap();
        let blocks = toml_blocks(&md);
        assert!(!blocks.is_empty(), "{doc} has no example");
        for (i, b) in blocks.iter().enumerate() {
            let cfg = env.path(&format!("doc{i}.toml"));
            std::fs::write(&cfg, b).unwrap();
            let out = with_config(&env, &cfg, &["config", "check"]);
            assert_eq!(code(&out), 0, "{doc} example {i}:\n{}", stderr(&out));
        }
    }
}

#[test]
fn a_backup_killed_mid_way_leaves_the_history_whole_and_says_interrupted() {
    let env = Env::new();
    env.init();
    let src = env.path("big");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..40 {
        std::fs::write(src.join(format!("f{i}")), random_bytes(4 << 20, i)).unwrap();
    }
    let mut child = env
        .cmd()
        .args(["backup", src.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed once its row is in the history, as running.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let out = env.bare().args(["--json", "history"]).output().unwrap();
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if rows
            .iter()
            .any(|r| r["command"] == "backup" && r["outcome"] == "running")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the backup's row never showed"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup ended before it was killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let rows = history_json(&env, &[]);
    let last = rows.last().expect("the backup's row");
    assert_eq!(last["command"], "backup");
    assert!(
        matches!(
            last["outcome"].as_str(),
            Some("interrupted") | Some("success")
        ),
        "{last}"
    );
    // And the next backup records normally.
    env.backup([src.to_str().unwrap()]);
    let rows = history_json(&env, &[]);
    assert_eq!(rows.last().unwrap()["outcome"], "success");
}
