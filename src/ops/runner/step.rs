//! Running one step (a child cairn), the run lock, and the repository facts the
//! metrics need.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::plan::repo_args;
use super::{PlannedStep, RunOptions, StepResult};
use crate::ops::history::Outcome;
use crate::ops::profile::{Config, ProfileConf};

/// Holds the profile's run lock (an flock): never two runs of one profile at once,
/// whoever starts them.
pub struct RunLock(#[allow(dead_code)] Option<std::fs::File>);

/// Where the run locks live: `/run/cairn` for root, else `~/.local/state/cairn`; the
/// same whether cron, systemd or a login shell starts the run (no variable of the
/// session decides it), and never a world-writable folder where anyone could hold a
/// profile's lock.
pub fn lock_dir() -> PathBuf {
    if nix::unistd::getuid().is_root() && Path::new("/run").is_dir() {
        return PathBuf::from("/run/cairn");
    }
    dirs::home_dir()
        .map(|h| h.join(".local/state/cairn"))
        .unwrap_or_else(|| std::env::temp_dir().join(format!("cairn-{}", nix::unistd::getuid())))
}

/// Takes the profile's lock. Err only when another run holds it; a lock that cannot be
/// made at all is a warning (the run goes on without it).
pub fn lock_profile(dir: &Path, config: &Path, profile: &str) -> Result<RunLock, String> {
    let safe: String = profile
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    // One lock per (config file, profile): two files may both have a `home`.
    let config = std::fs::canonicalize(config).unwrap_or_else(|_| config.to_path_buf());
    let tag = &blake3::hash(config.as_os_str().as_encoded_bytes()).to_hex()[..12];
    let path = dir.join(format!("run-{tag}-{safe}.lock"));
    let opened = std::fs::create_dir_all(dir).and_then(|()| {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
    });
    let f = match opened {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "warning: run lock {}: {e}; running without it",
                path.display()
            );
            return Ok(RunLock(None));
        }
    };
    use std::os::fd::AsRawFd;
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(format!(
                "profile {profile} is already running (lock {})",
                path.display()
            ));
        }
        eprintln!(
            "warning: run lock {}: {e}; running without it",
            path.display()
        );
        return Ok(RunLock(None));
    }
    Ok(RunLock(Some(f)))
}

/// Password and repository variables a step must not inherit when the profile says
/// where its repositories and passwords are.
const OVERRIDDEN_ENV: &[&str] = &[
    "CAIRN_REPOSITORY",
    "CAIRN_PASSWORD",
    "CAIRN_PASSWORD_FILE",
    "CAIRN_PASSWORD_COMMAND",
    "CAIRN_FROM_PASSWORD",
    "CAIRN_FROM_PASSWORD_FILE",
    "CAIRN_FROM_PASSWORD_COMMAND",
];

fn step_command(args: &[String], secrets: &[(String, String)], opts: &RunOptions) -> Command {
    let mut c = Command::new(&opts.exe);
    c.args(&opts.global_args).args(args);
    let on_line = |flags: &[&str]| args.iter().any(|a| flags.contains(&a.as_str()));
    c.env_remove("CAIRN_REPOSITORY");
    if on_line(&["--password-file", "--password-command"]) {
        for v in &OVERRIDDEN_ENV[1..4] {
            c.env_remove(v);
        }
    }
    if on_line(&["--from-password-file", "--from-password-command"]) {
        for v in &OVERRIDDEN_ENV[4..] {
            c.env_remove(v);
        }
    }
    c.envs(secrets.iter().map(|(k, v)| (k, v)));
    // Their names, so a step's own children (a dump command) can be kept from them.
    let names: Vec<&str> = secrets.iter().map(|(k, _)| k.as_str()).collect();
    c.env("CAIRN_SECRET_NAMES", names.join(","));
    match &opts.history {
        Some(h) => c.env("CAIRN_HISTORY", h),
        None => c.env("CAIRN_HISTORY", "off"),
    };
    c.stdin(Stdio::null());
    c
}

pub(super) fn run_step(
    s: &PlannedStep,
    profile: &str,
    run_id: Option<i64>,
    secrets: &[(String, String)],
    opts: &RunOptions,
) -> StepResult {
    let mut res = StepResult {
        name: s.name.clone(),
        exit_code: None,
        skipped: None,
        error: None,
        snapshot: None,
        bytes_added: None,
        files: None,
    };
    let result_file = tempfile_path("step");
    let mut c = step_command(&s.args, secrets, opts);
    c.env("CAIRN_RUN_PROFILE", profile)
        .env("CAIRN_RESULT_FILE", &result_file);
    if let Some(id) = run_id {
        c.env("CAIRN_RUN_ID", id.to_string());
    }
    if !opts.show_output {
        c.stdout(Stdio::null());
    }
    let mut child = match c.spawn() {
        Ok(c) => c,
        Err(e) => {
            res.error = Some(format!("cannot start {}: {e}", opts.exe.display()));
            return res;
        }
    };
    let mut signalled = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) => {
                if opts.stop.load(Ordering::Relaxed) && !signalled {
                    // Passed on: the step stops as it would when an admin pressed ^C.
                    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
                    signalled = true;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            Err(_) => break child.wait().ok(),
        }
    };
    res.exit_code = status.and_then(|s| s.code());
    if let Ok(text) = std::fs::read(&result_file) {
        if let Ok(o) = serde_json::from_slice::<Outcome>(&text) {
            res.snapshot = o.snapshot;
            res.bytes_added = o.bytes_added;
            res.files = o.files;
            res.error = o.error;
        }
    }
    let _ = std::fs::remove_file(&result_file);
    if signalled && res.error.is_none() {
        res.error = Some(format!("{} stopped by a signal", s.name));
    }
    res
}

/// The number of snapshots and the bytes on the storage of the profile's repository
/// (for the metrics); None for what could not be learnt.
pub(super) fn repository_facts(
    cfg: &Config,
    p: &ProfileConf,
    secrets: &[(String, String)],
    opts: &RunOptions,
) -> (Option<u64>, Option<u64>) {
    let Some(repo) = cfg.repository(p.repository.get_ref()) else {
        return (None, None);
    };
    let own: Vec<(String, String)> = secrets
        .iter()
        .filter(|(k, _)| repo.secrets.contains_key(k))
        .cloned()
        .collect();
    let ask = |cmd: &[&str]| -> Option<serde_json::Value> {
        let mut args = repo_args(repo);
        args.push("--json".into());
        args.extend(cmd.iter().map(|s| s.to_string()));
        let mut c = step_command(&args, &own, opts);
        c.env("CAIRN_HISTORY", "off");
        let out = crate::ops::hooks::output_within(c, Duration::from_secs(300)).ok()?;
        serde_json::from_slice(&out).ok()
    };
    let count = ask(&["snapshots"]).and_then(|v| v.as_array().map(|a| a.len() as u64));
    let size = ask(&["stats", "--storage-only"]).and_then(|v| v["repository_size"].as_u64());
    (count, size)
}

fn tempfile_path(what: &str) -> PathBuf {
    let mut b = [0u8; 8];
    let _ = getrandom::getrandom(&mut b);
    std::env::temp_dir().join(format!(
        "cairn-{what}-{}-{}.json",
        std::process::id(),
        hex::encode(b)
    ))
}
