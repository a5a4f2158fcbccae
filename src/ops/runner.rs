//! `cairn run PROFILE`: backup → forget → prune → check → copy as the profile says,
//! with hooks, notifications, the run history and metrics around them.
//!
//! Each step is a child process of the same binary, given exactly the command line an
//! admin would type (the dry-run plan prints it): a step that fails or crashes is
//! isolated, recorded and reported, and a signal reaches the step's own handling.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;

use super::history::{self, History, Outcome, Start};
use super::notify::{self, Payload, Ping};
use super::profile::{step_args, Config, FlagSpecs, ProfileConf, RepositoryConf};
use crate::backend::location::shown_url;

/// One step of a plan: the command line after the binary, and why it is skipped, if it
/// is.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedStep {
    /// backup, forget, prune, check, copy:NAME.
    pub name: String,
    pub args: Vec<String>,
    /// Environment variables the step gets from the profile's secrets (names only).
    pub secret_env: Vec<String>,
    pub skip: Option<String>,
}

/// How `run` runs.
pub struct RunOptions {
    /// The cairn binary the steps run.
    pub exe: PathBuf,
    /// Flags every step gets (-v, -q, --retry-lock, --cache-dir, …).
    pub global_args: Vec<String>,
    /// The history database (None: no history).
    pub history: Option<PathBuf>,
    /// Steps' standard output: shown (human runs) or dropped (--json).
    pub show_output: bool,
    /// Set by a signal handler: the running step is stopped and the run ends.
    pub stop: &'static AtomicBool,
    /// Progress lines for a person ("== backup").
    pub say: &'static (dyn Fn(&str) + Sync),
}

#[derive(Debug, Clone, Serialize)]
pub struct StepResult {
    pub name: String,
    pub exit_code: Option<i32>,
    pub skipped: Option<String>,
    pub error: Option<String>,
    pub snapshot: Option<String>,
    pub bytes_added: Option<u64>,
    pub files: Option<u64>,
}

/// What a run came to (`cairn run --json` prints it).
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub profile: String,
    pub success: bool,
    pub exit_code: i32,
    pub failed_step: Option<String>,
    pub error: Option<String>,
    pub snapshot: Option<String>,
    pub bytes_added: Option<u64>,
    pub files: Option<u64>,
    pub steps: Vec<StepResult>,
    pub warnings: Vec<String>,
    pub started: String,
    pub ended: String,
    pub duration_seconds: f64,
}

fn repo_args(r: &RepositoryConf) -> Vec<String> {
    let mut a = vec!["-r".to_string(), r.url.get_ref().clone()];
    for o in r.option_args() {
        a.push("-o".into());
        a.push(o);
    }
    if let Some(f) = &r.password_file {
        a.push("--password-file".into());
        a.push(f.display().to_string());
    }
    if let Some(c) = &r.password_command {
        a.push("--password-command".into());
        a.push(c.clone());
    }
    a
}

/// The steps of `profile`, in order. `history` tells when the check last ran (for
/// `check.every`).
pub fn plan(
    cfg: &Config,
    name: &str,
    specs: FlagSpecs,
    history: Option<&History>,
) -> Result<Vec<PlannedStep>, String> {
    let p = cfg
        .profile(name)
        .ok_or_else(|| format!("no profile {name:?} in {}", cfg.path.display()))?;
    let repo = cfg
        .repository(p.repository.get_ref())
        .ok_or_else(|| format!("profile {name}: no repository {:?}", p.repository.get_ref()))?;
    let base = repo_args(repo);
    let secrets: Vec<String> = repo.secrets.keys().cloned().collect();
    let mut steps = Vec::new();
    let mut step = |n: &str, args: Vec<String>, env: Vec<String>, skip: Option<String>| {
        steps.push(PlannedStep {
            name: n.to_string(),
            args,
            secret_env: env,
            skip,
        })
    };
    // backup: always; its sources after `--`.
    let mut a = base.clone();
    a.push("backup".into());
    if let Some(f) = &p.backup {
        a.extend(step_args("backup", f, specs));
    }
    if !p.paths.is_empty() {
        a.push("--".into());
        a.extend(p.paths.iter().cloned());
    }
    step("backup", a, secrets.clone(), None);
    for s in ["forget", "prune", "check"] {
        let Some(f) = p.step(s) else { continue };
        let mut a = base.clone();
        a.push(s.into());
        a.extend(step_args(s, f, specs));
        let mut skip = None;
        if s == "check" {
            if let (Some(every), Some(h)) = (p.check_every(), history) {
                if let Ok(Some(last)) = h.last_success_ms(name, "check") {
                    let age = history::now_ms() - last;
                    if age >= 0 && (age as u128) < every.as_millis() {
                        skip = Some(format!(
                            "checked {} ago; check.every is {}s",
                            human_age(age),
                            every.as_secs()
                        ));
                    }
                }
            }
        }
        step(s, a, secrets.clone(), skip);
    }
    for target in p.copy_targets() {
        let t = cfg
            .repository(&target)
            .ok_or_else(|| format!("profile {name}: no repository {target:?}"))?;
        let mut a = repo_args(t);
        a.extend([
            "copy".into(),
            "--from-repo".into(),
            repo.url.get_ref().clone(),
        ]);
        for o in repo.option_args() {
            a.push("--from-option".into());
            a.push(o);
        }
        if let Some(f) = &repo.password_file {
            a.push("--from-password-file".into());
            a.push(f.display().to_string());
        }
        if let Some(c) = &repo.password_command {
            a.push("--from-password-command".into());
            a.push(c.clone());
        }
        a.extend(step_args(
            "copy",
            p.copy.as_ref().expect("copy targets"),
            specs,
        ));
        let env: Vec<String> = secrets.iter().chain(t.secrets.keys()).cloned().collect();
        step(&format!("copy:{target}"), a, env, None);
    }
    Ok(steps)
}

/// A shell-quoted command line, for the plan and the logs (no secret is ever on it).
pub fn shell_line(exe: &str, args: &[String]) -> String {
    std::iter::once(exe.to_string())
        .chain(args.iter().map(|a| quote(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn human_age(ms: i64) -> String {
    let s = ms / 1000;
    match s {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// The environment variables of every repository the steps touch, read from their
/// files and commands now.
fn resolve_secrets(cfg: &Config, p: &ProfileConf) -> Result<Vec<(String, String)>, String> {
    let mut names = vec![p.repository.get_ref().clone()];
    names.extend(p.copy_targets());
    let mut out: Vec<(String, String)> = Vec::new();
    for n in names {
        let Some(r) = cfg.repository(&n) else {
            continue;
        };
        for (var, s) in &r.secrets {
            let s = s.get_ref();
            let v = super::hooks::read_secret(s.file.as_deref(), s.command.as_deref())
                .map_err(|e| format!("secret {var} of repository {n}: {e}"))?;
            if let Some((_, old)) = out.iter().find(|(k, _)| k == var) {
                if *old != v {
                    return Err(format!(
                        "secret {var} has different values in two repositories of this run; one process can carry only one"
                    ));
                }
                continue;
            }
            out.push((var.clone(), v));
        }
    }
    Ok(out)
}

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

/// Runs the profile: never panics; every outcome ends in the history, the hooks, the
/// notifications and the result.
pub fn run(cfg: &Config, name: &str, specs: FlagSpecs, opts: &RunOptions) -> RunResult {
    let started = chrono::Local::now();
    let mut r = RunResult {
        profile: name.to_string(),
        success: false,
        exit_code: 1,
        failed_step: None,
        error: None,
        snapshot: None,
        bytes_added: None,
        files: None,
        steps: Vec::new(),
        warnings: Vec::new(),
        started: started.to_rfc3339(),
        ended: String::new(),
        duration_seconds: 0.0,
    };
    let Some(p) = cfg.profile(name) else {
        r.error = Some(format!("no profile {name:?} in {}", cfg.path.display()));
        return finish_times(r, started);
    };
    // Another run of this profile is under way: this one does nothing at all (no
    // history row, hook or notification: nothing failed), exit 11 as for a lock.
    let _lock = match lock_profile(&lock_dir(), &cfg.path, name) {
        Ok(l) => l,
        Err(e) => {
            r.exit_code = 11;
            r.failed_step = Some("lock".into());
            r.error = Some(e);
            return finish_times(r, started);
        }
    };
    let repo_url = cfg
        .repository(p.repository.get_ref())
        .map(|r| shown_url(r.url.get_ref()))
        .unwrap_or_default();
    let hist = opts
        .history
        .as_deref()
        .and_then(|path| match History::open(path) {
            Ok(h) => Some(h),
            Err(e) => {
                eprintln!("warning: {e}; the run goes on without it");
                None
            }
        });
    let run_id = hist.as_ref().and_then(|h| {
        h.start(&Start {
            run_id: None,
            kind: "run".into(),
            profile: Some(name.into()),
            command: "run".into(),
            repository: Some(repo_url.clone()),
        })
        .inspect_err(|e| eprintln!("warning: {e}"))
        .ok()
    });
    let notify_conf = p.notify.clone().unwrap_or_default();
    if let Some(url) = &notify_conf.ping {
        if let Err(e) = notify::ping(url.get_ref(), Ping::Start, "") {
            warn(&mut r, &e);
        }
    }
    let hooks = p.hooks.clone().unwrap_or_default();
    let hook_timeout = hooks
        .timeout
        .as_ref()
        .and_then(|t| super::profile::parse_duration(t.get_ref()))
        .unwrap_or(super::hooks::DEFAULT_TIMEOUT);
    let mut secrets: Vec<(String, String)> = Vec::new();
    // The run proper; Err(step, error) ends it.
    let outcome: Result<(), (String, String)> = (|| {
        secrets = resolve_secrets(cfg, p).map_err(|e| ("secrets".to_string(), e))?;
        let steps = plan(cfg, name, specs, hist.as_ref()).map_err(|e| ("plan".to_string(), e))?;
        if let Some(h) = &hooks.before {
            (opts.say)("== before hook");
            super::hooks::run(
                h,
                &hook_env(name, &repo_url, "before", &r),
                hook_timeout,
                opts.stop,
            )
            .map_err(|e| ("before-hook".to_string(), format!("before hook {e}")))?;
        }
        for s in &steps {
            if let Some(why) = &s.skip {
                (opts.say)(&format!("== {} skipped: {why}", s.name));
                r.steps.push(StepResult {
                    name: s.name.clone(),
                    exit_code: None,
                    skipped: Some(why.clone()),
                    error: None,
                    snapshot: None,
                    bytes_added: None,
                    files: None,
                });
                continue;
            }
            if opts.stop.load(Ordering::Relaxed) {
                return Err((
                    s.name.clone(),
                    "stopped by a signal before this step".into(),
                ));
            }
            (opts.say)(&format!("== {}", s.name));
            // Each step gets the secrets of the repositories it opens, no others.
            let env: Vec<(String, String)> = secrets
                .iter()
                .filter(|(k, _)| s.secret_env.contains(k))
                .cloned()
                .collect();
            let mut res = run_step(s, name, run_id, &env, opts);
            res.error = res
                .error
                .map(|e| notify::redact(&e, &secret_values(&secrets)));
            let failed = !matches!(res.exit_code, Some(0) | Some(3));
            if s.name == "backup" {
                r.snapshot = res.snapshot.clone();
                r.bytes_added = res.bytes_added;
                r.files = res.files;
            }
            let err = res.error.clone();
            let code = res.exit_code;
            r.steps.push(res);
            if failed {
                let e = err.unwrap_or_else(|| match code {
                    Some(c) => format!("{} exited with {c}", s.name),
                    None => format!("{} was killed", s.name),
                });
                r.exit_code = code.filter(|&c| c != 0).unwrap_or(1);
                return Err((s.name.clone(), e));
            }
            if code == Some(3) {
                warn(
                    &mut r,
                    &format!("{}: some source files could not be read", s.name),
                );
            }
        }
        Ok(())
    })();
    match outcome {
        Ok(()) => {
            r.success = true;
            // 3, as backup's own: finished, but some source files could not be read.
            r.exit_code = if r.steps.iter().any(|s| s.exit_code == Some(3)) {
                3
            } else {
                0
            };
        }
        Err((step, e)) => {
            r.failed_step = Some(step);
            r.error = Some(notify::redact(&e, &secret_values(&secrets)));
        }
    }
    // Size anomaly: this backup against the median of the profile's earlier ones.
    if let (Some(h), true) = (&hist, r.success) {
        for w in super::health::anomalies(h, name, run_id, &r, p.anomaly.as_ref()) {
            warn(&mut r, &w);
        }
    }
    let values = secret_values(&secrets);
    r.warnings = r
        .warnings
        .iter()
        .map(|w| notify::redact(w, &values))
        .collect();
    // The history says how the run went before anything slow comes (hooks, webhooks):
    // a run killed in its after hook still counts as the backup it was.
    let r_now = finish_times(r.clone(), started);
    if let (Some(h), Some(id)) = (&hist, run_id) {
        if let Err(e) = h.finish(id, &history_outcome(&r_now)) {
            eprintln!("warning: {e}");
        }
    }
    let first_late_warning = r.warnings.len();
    let after = if r.success {
        &hooks.after
    } else {
        &hooks.on_failure
    };
    let which_after = if r.success { "after" } else { "on-failure" };
    for (which, hook) in [(which_after, after), ("finally", &hooks.finally)] {
        if let Some(cmd) = hook {
            (opts.say)(&format!("== {which} hook"));
            if let Err(e) = super::hooks::run(
                cmd,
                &hook_env(name, &repo_url, which, &r),
                hook_timeout,
                // Run even after SIGTERM (they undo what `before` did), within their limit.
                &AtomicBool::new(false),
            ) {
                warn(&mut r, &format!("{which} hook {e}"));
            }
        }
    }
    let mut r = finish_times(r, started);
    r.warnings = r
        .warnings
        .iter()
        .map(|w| notify::redact(w, &values))
        .collect();
    let payload = payload(&r, &repo_url);
    if !r.success || notify_conf.on_success {
        if let Some(url) = &notify_conf.webhook {
            if let Err(e) = notify::webhook(url.get_ref(), &payload) {
                warn(&mut r, &e);
            }
        }
        if let Some(cmd) = &notify_conf.mail_command {
            if let Err(e) = notify::mail(cmd, notify_conf.mail_to.as_deref(), &payload) {
                warn(&mut r, &e);
            }
        }
    }
    if let Some(url) = &notify_conf.ping {
        let kind = if r.success { Ping::Success } else { Ping::Fail };
        if let Err(e) = notify::ping(url.get_ref(), kind, &payload.text()) {
            warn(&mut r, &e);
        }
    }
    if let Some(path) = &p.metrics_file {
        let facts = repository_facts(cfg, p, &secrets, opts);
        if let Err(e) = super::health::write_metrics(path, &r, hist.as_ref(), facts) {
            warn(&mut r, &format!("metrics file {}: {e}", path.display()));
        }
    }
    r.warnings = r
        .warnings
        .iter()
        .map(|w| notify::redact(w, &values))
        .collect();
    if let (Some(h), Some(id)) = (&hist, run_id) {
        for w in &r.warnings[first_late_warning..] {
            let _ = h.add_warning(id, w);
        }
    }
    r
}

fn warn(r: &mut RunResult, msg: &str) {
    eprintln!("warning: {msg}");
    r.warnings.push(msg.to_string());
}

fn history_outcome(r: &RunResult) -> Outcome {
    Outcome {
        outcome: if r.success {
            if r.exit_code == 3 {
                "warning"
            } else {
                "success"
            }
            .into()
        } else {
            "failed".into()
        },
        exit_code: r.exit_code,
        snapshot: r.snapshot.clone(),
        files: r.files,
        bytes_added: r.bytes_added,
        error: r.error.clone(),
        warnings: (!r.warnings.is_empty()).then(|| r.warnings.join("\n")),
        ..Default::default()
    }
}

fn finish_times(mut r: RunResult, started: chrono::DateTime<chrono::Local>) -> RunResult {
    let ended = chrono::Local::now();
    r.ended = ended.to_rfc3339();
    r.duration_seconds = (ended - started).num_milliseconds() as f64 / 1000.0;
    r
}

fn secret_values(s: &[(String, String)]) -> Vec<String> {
    s.iter().map(|(_, v)| v.clone()).collect()
}

/// The webhook / mail payload of a finished run.
pub fn payload(r: &RunResult, repo_url: &str) -> Payload {
    Payload {
        event: if r.success { "success" } else { "failure" }.into(),
        profile: r.profile.clone(),
        host: hostname(),
        repository: repo_url.to_string(),
        started: r.started.clone(),
        ended: r.ended.clone(),
        duration_seconds: r.duration_seconds,
        exit_code: r.exit_code,
        failed_step: r.failed_step.clone(),
        error: r.error.clone(),
        snapshot: r.snapshot.clone(),
        files: r.files,
        bytes_added: r.bytes_added,
        warnings: r.warnings.clone(),
        hint: format!("cairn history --profile {} --failed", r.profile),
    }
}

pub fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The facts a hook gets: CAIRN_PROFILE, CAIRN_HOOK, CAIRN_REPOSITORY, CAIRN_SNAPSHOT_ID,
/// CAIRN_EXIT_CODE, CAIRN_ERROR, CAIRN_FAILED_STEP, CAIRN_BYTES_ADDED, CAIRN_FILES.
fn hook_env(profile: &str, repo: &str, hook: &str, r: &RunResult) -> Vec<(String, String)> {
    let mut e = vec![
        ("CAIRN_PROFILE".to_string(), profile.to_string()),
        ("CAIRN_HOOK".to_string(), hook.to_string()),
        ("CAIRN_REPOSITORY".to_string(), repo.to_string()),
    ];
    if hook != "before" {
        e.push(("CAIRN_EXIT_CODE".into(), r.exit_code.to_string()));
        e.push((
            "CAIRN_SUCCESS".into(),
            (if r.success { "1" } else { "0" }).into(),
        ));
    }
    let opt = |k: &str, v: Option<String>, e: &mut Vec<(String, String)>| {
        if let Some(v) = v {
            e.push((k.to_string(), v));
        }
    };
    opt("CAIRN_SNAPSHOT_ID", r.snapshot.clone(), &mut e);
    opt("CAIRN_ERROR", r.error.clone(), &mut e);
    opt("CAIRN_FAILED_STEP", r.failed_step.clone(), &mut e);
    opt(
        "CAIRN_BYTES_ADDED",
        r.bytes_added.map(|b| b.to_string()),
        &mut e,
    );
    opt("CAIRN_FILES", r.files.map(|b| b.to_string()), &mut e);
    e
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

fn run_step(
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
fn repository_facts(
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
        let out = super::hooks::output_within(c, Duration::from_secs(300)).ok()?;
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
