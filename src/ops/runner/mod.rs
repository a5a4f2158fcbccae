//! `cairn run PROFILE`: backup → forget → prune → check → copy as the profile says,
//! with hooks, notifications, the run history and metrics around them.
//!
//! Each step is a child process of the same binary, given exactly the command line an
//! admin would type (the dry-run plan prints it): a step that fails or crashes is
//! isolated, recorded and reported, and a signal reaches the step's own handling.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use super::history::{History, Outcome, Start};
use super::notify::{self, Payload, Ping};
use super::profile::{Config, FlagSpecs, ProfileConf};
use crate::backend::location::shown_url;

mod plan;
mod step;

pub use plan::{plan, shell_line};
pub use step::{lock_dir, lock_profile, RunLock};
use step::{repository_facts, run_step};

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
        host: crate::fsmeta::hostname(),
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
