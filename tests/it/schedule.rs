//! `cairn daemon` firing real schedules, reloading and stopping on signals, making up
//! a missed run; `cairn schedule install|remove|list` writing systemd units.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::ops::{with_config, write_config};

fn runs(env: &Env) -> Vec<serde_json::Value> {
    let out = env
        .bare()
        .args(["--json", "history", "--runs"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Waits (up to `secs`) until `f` holds.
fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "waited {secs}s for: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn daemon(env: &Env, cfg: &Path) -> Child {
    env.bare()
        .arg("--config")
        .arg(cfg)
        .arg("daemon")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(env.path("daemon.log")).unwrap())
        .spawn()
        .unwrap()
}

fn signal(c: &Child, sig: i32) {
    unsafe { libc::kill(c.id() as libc::pid_t, sig) };
}

fn wait_exit(c: &mut Child, secs: u64) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(st) = c.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            c.kill().unwrap();
            panic!("the daemon did not exit within {secs}s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn profile(name: &str, src: &Path, schedule: &str, extra: &str) -> String {
    format!(
        "[profiles.{name}]\nrepository = \"main\"\npaths = [{:?}]\nschedule = {schedule:?}\ntimezone = \"UTC\"\n{extra}\n",
        src.display().to_string()
    )
}

#[test]
fn the_daemon_fires_schedules_reloads_on_sighup_and_stops_on_sigterm() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"data").unwrap();
    // An interval never run before runs at once.
    let cfg = write_config(&env, &profile("home", &src, "every 1h", ""));
    let mut d = daemon(&env, &cfg);
    wait_until(60, "the first scheduled run", || {
        runs(&env)
            .iter()
            .any(|r| r["profile"] == "home" && r["outcome"] == "success")
    });
    // SIGHUP: a profile added to the file is scheduled; a cron expression fires at the
    // next minute for real.
    let text = std::fs::read_to_string(&cfg).unwrap()
        + &profile("docs", &src, "* * * * *", "catch-up = false");
    std::fs::write(&cfg, text).unwrap();
    signal(&d, libc::SIGHUP);
    wait_until(90, "the cron-scheduled run of the reloaded profile", || {
        runs(&env)
            .iter()
            .any(|r| r["profile"] == "docs" && r["outcome"] == "success")
    });
    signal(&d, libc::SIGTERM);
    let st = wait_exit(&mut d, 20);
    assert!(st.success(), "{st}");
    let log = std::fs::read_to_string(env.path("daemon.log")).unwrap();
    assert!(log.contains("config reloaded"), "{log}");
    assert!(log.contains("profile docs: run started"), "{log}");
    // One run of home (its next is an hour away), and each run backed up.
    let all = runs(&env);
    assert_eq!(
        all.iter().filter(|r| r["profile"] == "home").count(),
        1,
        "{all:#?}"
    );
    let snaps: serde_json::Value = serde_json::from_str(&env.ok(["--json", "snapshots"])).unwrap();
    assert_eq!(snaps.as_array().unwrap().len(), all.len());
}

#[test]
fn a_missed_run_is_made_up_once_unless_catch_up_is_off() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"data").unwrap();
    let cfg = write_config(&env, &profile("home", &src, "0 3 * * *", ""));
    assert_eq!(code(&with_config(&env, &cfg, &["run", "home"])), 0);
    // The last run was two days ago: the machine was off at 03:00 since.
    let db = env.path("home/data/cairn/history.sqlite");
    assert!(db.exists());
    let st = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); \
             c.execute('UPDATE runs SET started_ms = started_ms - 172800000, ended_ms = ended_ms - 172800000'); c.commit()",
        ])
        .arg(&db)
        .status()
        .unwrap();
    assert!(st.success());
    let mut d = daemon(&env, &cfg);
    wait_until(60, "the made-up run", || runs(&env).len() == 2);
    // Once: the next is tomorrow at 03:00.
    std::thread::sleep(Duration::from_secs(2));
    signal(&d, libc::SIGTERM);
    assert!(wait_exit(&mut d, 20).success());
    assert_eq!(runs(&env).len(), 2);

    // With catch-up off, nothing runs before the next 03:00.
    let cfg = write_config(
        &env,
        &profile("home", &src, "0 3 * * *", "catch-up = false"),
    );
    let st = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); \
             c.execute('UPDATE runs SET started_ms = started_ms - 172800000'); c.commit()",
        ])
        .arg(&db)
        .status()
        .unwrap();
    assert!(st.success());
    let mut d = daemon(&env, &cfg);
    wait_until(20, "the daemon's schedule line", || {
        std::fs::read_to_string(env.path("daemon.log")).is_ok_and(|l| l.contains("next run"))
    });
    std::thread::sleep(Duration::from_secs(3));
    signal(&d, libc::SIGTERM);
    assert!(wait_exit(&mut d, 20).success());
    assert_eq!(runs(&env).len(), 2);
}

#[test]
fn sigterm_stops_a_running_step_and_the_run_is_recorded_as_stopped() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let started = env.path("started");
    let finally = env.path("finally");
    let cfg = write_config(
        &env,
        &profile(
            "home",
            &src,
            "every 1h",
            &format!(
                "[profiles.home.hooks]\nbefore = \"touch {}; sleep 120\"\nfinally = \"touch {}\"\n",
                started.display(),
                finally.display()
            ),
        ),
    );
    let mut d = daemon(&env, &cfg);
    wait_until(60, "the before hook", || started.exists());
    let t = Instant::now();
    signal(&d, libc::SIGTERM);
    assert!(wait_exit(&mut d, 30).success());
    assert!(
        t.elapsed() < Duration::from_secs(25),
        "the daemon waited for the whole hook"
    );
    assert!(finally.exists(), "the finally hook did not run");
    let all = runs(&env);
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0]["outcome"], "failed");
    assert!(
        all[0]["error"]
            .as_str()
            .unwrap()
            .contains("stopped by a signal"),
        "{all:#?}"
    );
    // No stray process of the run is left (the hook's sleep was in its group).
    let out = std::process::Command::new("pgrep")
        .args(["-f", "sleep 120"])
        .output()
        .unwrap();
    let left: Vec<_> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    for pid in &left {
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            !cmdline.contains(&started.display().to_string()),
            "left running: {pid}"
        );
    }
}

#[test]
fn schedule_install_writes_units_that_systemd_accepts_and_remove_deletes_them() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let cfg = write_config(
        &env,
        &(profile("home", &src, "30 2 * * 1-5", "jitter = \"10m\"")
            .replace("\"UTC\"", "\"Europe/Berlin\"")
            + &profile("docs", &src, "every 6h", "")
            + &profile("sunday", &src, "0 4 * * 0-4", "")),
    );
    let units = env.path("units");
    for p in ["home", "docs", "sunday"] {
        let out = with_config(
            &env,
            &cfg,
            &[
                "schedule",
                "install",
                p,
                "--unit-dir",
                units.to_str().unwrap(),
            ],
        );
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    let timer = std::fs::read_to_string(units.join("cairn-home.timer")).unwrap();
    assert!(
        timer.contains("OnCalendar=Mon..Fri *-*-* 02:30:00 Europe/Berlin\n"),
        "{timer}"
    );
    assert!(
        timer.contains("Persistent=true\n") && timer.contains("RandomizedDelaySec=600s\n"),
        "{timer}"
    );
    let service = std::fs::read_to_string(units.join("cairn-home.service")).unwrap();
    let exe = env!("CARGO_BIN_EXE_cairn");
    assert!(
        service.contains(&format!(
            "ExecStart={exe} --config {} run home\n",
            cfg.display()
        )),
        "{service}"
    );
    let timer = std::fs::read_to_string(units.join("cairn-docs.timer")).unwrap();
    assert!(timer.contains("OnUnitActiveSec=21600s"), "{timer}");
    let analyze = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok();
    if prerequisite(analyze, "systemd-analyze (apt-get install systemd)") {
        let out = std::process::Command::new("systemd-analyze")
            .arg("verify")
            .arg(units.join("cairn-home.timer"))
            .arg(units.join("cairn-docs.timer"))
            .arg(units.join("cairn-sunday.timer"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // list: the next three 02:30 of weekdays in Berlin.
    let out = with_config(&env, &cfg, &["--json", "schedule", "list"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let home = v
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["profile"] == "home")
        .unwrap();
    let next: Vec<&str> = home["next"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(next.len(), 3);
    for t in next {
        let t = chrono::DateTime::parse_from_rfc3339(t).unwrap();
        let berlin = t.with_timezone(&chrono_tz::Europe::Berlin);
        use chrono::{Datelike, Timelike};
        assert_eq!((berlin.hour(), berlin.minute()), (2, 30), "{berlin}");
        assert!(berlin.weekday().number_from_monday() <= 5, "{berlin}");
    }
    let out = with_config(
        &env,
        &cfg,
        &[
            "schedule",
            "remove",
            "home",
            "--unit-dir",
            units.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(!units.join("cairn-home.timer").exists() && !units.join("cairn-home.service").exists());
    assert!(units.join("cairn-docs.timer").exists());
}
