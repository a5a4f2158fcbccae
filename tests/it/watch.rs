//! Watching runs: notifications (a webhook receiver on loopback, a mail command,
//! pings), `health`, size anomalies and the metrics file.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use crate::common::*;
use crate::ops::{history_json, source, with_config, write_config};

/// One HTTP request the receiver saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub body: String,
}

/// An HTTP server on loopback that answers with `statuses` in turn (the last one from
/// then on) and keeps every request.
pub struct Receiver {
    pub url: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Receiver {
    pub fn start(statuses: &[u16]) -> Receiver {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (s2, statuses) = (seen.clone(), statuses.to_vec());
        std::thread::spawn(move || {
            for (i, conn) in l.incoming().enumerate() {
                let Ok(mut conn) = conn else { continue };
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if r.read_line(&mut line).is_err() {
                    continue;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut len = 0usize;
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; len];
                let _ = r.read_exact(&mut body);
                s2.lock().unwrap().push(Seen {
                    path,
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
                let status = statuses[i.min(statuses.len() - 1)];
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
            }
        });
        Receiver { url, seen }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

#[test]
fn a_failed_run_is_sent_to_the_webhook_again_after_a_500_and_to_mail_and_pings() {
    let env = Env::new();
    env.init();
    let src = source(&env);
    let hook = Receiver::start(&[500, 200]);
    let pings = Receiver::start(&[200]);
    let mail = env.path("mail.txt");
    // A wrong password: the backup step fails with exit 12.
    let cfg = write_config(
        &env,
        &format!(
            "[profiles.home]\nrepository = \"main\"\npaths = [{:?}]\n\n\
             [profiles.home.notify]\nwebhook = \"{}/hook\"\nping = \"{}/ping/abc\"\n\
             mail-command = \"cat > {}\"\nmail-to = \"admin@example.org\"\n",
            src.display().to_string(),
            hook.url,
            pings.url,
            mail.display()
        ),
    );
    std::fs::write(env.path("pw"), "not the password").unwrap();
    let out = with_config(&env, &cfg, &["run", "home"]);
    assert_eq!(code(&out), 12, "{}", stderr(&out));
    let seen = hook.seen();
    assert_eq!(seen.len(), 2, "one 500, then the retry: {seen:?}");
    assert_eq!(seen[0].body, seen[1].body);
    let p: serde_json::Value = serde_json::from_str(&seen[1].body).unwrap();
    assert_eq!(p["event"], "failure");
    assert_eq!(p["profile"], "home");
    assert_eq!(p["failed_step"], "backup");
    assert_eq!(p["exit_code"], 12);
    assert!(p["error"].as_str().unwrap().contains("password"), "{p}");
    assert_eq!(p["hint"], "cairn history --profile home --failed");
    assert!(!seen[1].body.contains("not the password"));
    let paths: Vec<String> = pings.seen().iter().map(|s| s.path.clone()).collect();
    assert_eq!(paths, ["/ping/abc/start", "/ping/abc/fail"]);
    let m = std::fs::read_to_string(&mail).unwrap();
    assert!(
        m.starts_with("To: admin@example.org\nSubject: cairn: home on "),
        "{m}"
    );
    assert!(m.contains("FAILED at backup"), "{m}");

    // A good run: a success ping, and no webhook or mail (on-success is off).
    std::fs::write(env.path("pw"), PASSWORD).unwrap();
    std::fs::remove_file(&mail).unwrap();
    let out = with_config(&env, &cfg, &["run", "home"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(hook.seen().len(), 2);
    assert!(!mail.exists());
    let paths: Vec<String> = pings.seen().iter().map(|s| s.path.clone()).collect();
    assert_eq!(paths[2..], ["/ping/abc/start", "/ping/abc"]);
}

#[test]
fn health_fails_when_the_newest_snapshot_is_too_old_or_the_last_run_failed() {
    let env = Env::new();
    env.init();
    let src = source(&env);
    let old = (chrono::Local::now() - chrono::Duration::hours(30))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    env.backup(["--time", old.as_str(), src.to_str().unwrap()]);
    let out = env.run(["health", "--max-age", "26h"]);
    assert_eq!(code(&out), 14);
    assert!(stderr(&out).contains("is 1d"), "{}", stderr(&out));
    let out = env.run(["--json", "health", "--max-age", "26h"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert!(v["groups"][0]["age_seconds"].as_i64().unwrap() >= 30 * 3600 - 60);
    env.backup([src.to_str().unwrap()]);
    let out = env.run(["health", "--max-age", "26h"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // With a profile: its own group, and its last run.
    let cfg = write_config(
        &env,
        &format!(
            "[profiles.home]\nrepository = \"main\"\npaths = [{:?}]\n\n\
             [profiles.home.health]\nmax-age = \"26h\"\n\n\
             [profiles.home.hooks]\nbefore = \"test ! -e {}\"\n",
            src.display().to_string(),
            env.path("fail").display()
        ),
    );
    let out = with_config(&env, &cfg, &["--profile", "home", "health"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    std::fs::write(env.path("fail"), "").unwrap();
    assert_eq!(code(&with_config(&env, &cfg, &["run", "home"])), 1);
    let out = with_config(&env, &cfg, &["--profile", "home", "health"]);
    assert_eq!(code(&out), 14);
    assert!(
        stderr(&out).contains("last run of profile home failed"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_backup_far_larger_than_usual_is_an_anomaly_and_metrics_are_written() {
    let env = Env::new();
    env.init();
    let src = source(&env);
    let metrics = env.path("cairn.prom");
    let cfg = write_config(
        &env,
        &format!(
            "[profiles.home]\nrepository = \"main\"\npaths = [{:?}]\nmetrics-file = {:?}\n\n\
             [profiles.home.anomaly]\nmin-added-bytes = 1000\n",
            src.display().to_string(),
            metrics.display().to_string()
        ),
    );
    for i in 0..3 {
        std::fs::write(src.join("a.txt"), format!("small change {i}")).unwrap();
        let out = with_config(&env, &cfg, &["run", "home"]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert!(!stderr(&out).contains("anomaly"), "{}", stderr(&out));
    }
    std::fs::write(src.join("big.bin"), random_bytes(2_000_000, 9)).unwrap();
    let out = with_config(&env, &cfg, &["run", "home"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("size anomaly: this backup added"),
        "{}",
        stderr(&out)
    );
    let rows = history_json(&env, &["--runs"]);
    assert!(rows.last().unwrap()["warnings"]
        .as_str()
        .unwrap()
        .contains("size anomaly"));
    let m = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        m.contains("cairn_last_run_success{profile=\"home\"} 1"),
        "{m}"
    );
    assert!(m.contains("cairn_snapshots{profile=\"home\"} 4"), "{m}");
    let added: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("cairn_backup_bytes_added{profile=\"home\"} "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(added >= 2_000_000, "{m}");
    let size: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("cairn_repository_size_bytes{profile=\"home\"} "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(size, dir_size(&env.repo), "{m}");
}

#[test]
fn the_daemon_notifies_once_when_a_backup_is_overdue() {
    let env = Env::new();
    env.init();
    let src = source(&env);
    let hook = Receiver::start(&[200]);
    let cfg = write_config(
        &env,
        &format!(
            "[profiles.home]\nrepository = \"main\"\npaths = [{:?}]\n\n\
             [profiles.home.health]\nmax-age = \"2s\"\n\n\
             [profiles.home.notify]\nwebhook = \"{}/hook\"\n",
            src.display().to_string(),
            hook.url
        ),
    );
    assert_eq!(code(&with_config(&env, &cfg, &["run", "home"])), 0);
    std::thread::sleep(std::time::Duration::from_secs(3));
    // No schedule at all: the watch still looks at the history.
    let mut d = env
        .bare()
        .arg("--config")
        .arg(&cfg)
        .arg("daemon")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while hook.seen().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_secs(1));
    unsafe { libc::kill(d.id() as libc::pid_t, libc::SIGTERM) };
    assert!(d.wait().unwrap().success());
    let seen = hook.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let p: serde_json::Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(p["event"], "overdue");
    assert_eq!(p["profile"], "home");
    assert!(
        p["error"]
            .as_str()
            .unwrap()
            .contains("last successful backup of home"),
        "{p}"
    );
}
