//! `cairn daemon`: runs the profiles' schedules in the foreground.
//!
//! Each run is a child `cairn run PROFILE` (recorded in the history by itself); the
//! daemon only decides when. A profile is never run twice at once (the run takes the
//! profile's lock too). A missed run (the machine was off) is made up once at start
//! when `catch-up` allows. SIGHUP re-reads the file; SIGTERM/SIGINT pass the signal to
//! running steps, wait for them and exit. The daemon also watches `health.max-age` from
//! the history and notifies once when a profile's backup is overdue.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Schedule;
use crate::ops::history::{self, History};
use crate::ops::notify;
use crate::ops::profile::{parse_duration, Config};

pub struct DaemonOptions {
    pub exe: PathBuf,
    pub config_path: PathBuf,
    /// Flags every run gets (--retry-lock, --cache-dir, -v, …).
    pub global_args: Vec<String>,
    /// The history database for a config (the file's own `history`, or the one given).
    pub history: &'static (dyn Fn(&Config) -> Option<PathBuf> + Sync),
    pub stop: &'static AtomicBool,
    pub reload: &'static AtomicBool,
}

struct Job {
    /// The schedule as written (a reload that keeps it keeps the next run time).
    text: String,
    schedule: Schedule,
    tz: Option<chrono_tz::Tz>,
    jitter: Duration,
    next: DateTime<Utc>,
    child: Option<Child>,
}

/// One log line on stderr (journald keeps it with its time; the time is in it too for
/// plain files).
pub fn log(msg: &str) {
    eprintln!(
        "cairn daemon: {} {msg}",
        chrono::Local::now().format("%Y-%m-%dT%H:%M:%S%:z")
    );
}

fn jitter(max: Duration) -> Duration {
    if max.is_zero() {
        return max;
    }
    let mut b = [0u8; 8];
    let _ = getrandom::getrandom(&mut b);
    Duration::from_millis(u64::from_le_bytes(b) % max.as_millis().max(1) as u64)
}

fn with_jitter(t: DateTime<Utc>, j: Duration) -> DateTime<Utc> {
    t + chrono::Duration::from_std(jitter(j)).unwrap_or_default()
}

/// When a profile runs first: a missed run now (catch-up), else the next firing.
fn first_run(
    s: &Schedule,
    tz: Option<chrono_tz::Tz>,
    catch_up: bool,
    last_start: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    match (s, last_start) {
        (Schedule::Every(_), None) => Some(now),
        (Schedule::Every(_), Some(last)) => {
            let due = s.next_after(last, tz)?;
            Some(if due <= now && !catch_up {
                s.next_after(now, tz)?
            } else {
                due.max(now)
            })
        }
        (Schedule::Cron(..), Some(last)) if catch_up => {
            let due = s.next_after(last, tz)?;
            Some(if due <= now { now } else { due })
        }
        (Schedule::Cron(..), _) => s.next_after(now, tz),
    }
}

fn jobs_of(
    cfg: &Config,
    hist: Option<&History>,
    old: &mut BTreeMap<String, Job>,
) -> BTreeMap<String, Job> {
    let now = Utc::now();
    let mut jobs = BTreeMap::new();
    for (name, p) in &cfg.profiles {
        let Some(text) = &p.schedule else { continue };
        let Ok(schedule) = Schedule::parse(text.get_ref()) else {
            continue;
        };
        let tz = super::zone(p.timezone.as_ref().map(|t| t.get_ref().as_str()))
            .ok()
            .flatten();
        let jitter_max = p
            .jitter
            .as_ref()
            .and_then(|j| parse_duration(j.get_ref()))
            .unwrap_or_default();
        let last_start = hist
            .and_then(|h| {
                h.query(&history::Query {
                    profile: Some(name.clone()),
                    kind: Some("run".into()),
                    limit: Some(1),
                    ..Default::default()
                })
                .ok()
            })
            .and_then(|rows| rows.last().map(|e| e.started_ms))
            .and_then(DateTime::from_timestamp_millis);
        let Some(next) = first_run(&schedule, tz, p.catch_up.unwrap_or(true), last_start, now)
        else {
            log(&format!(
                "profile {name}: schedule {:?} never fires",
                text.get_ref()
            ));
            continue;
        };
        // A run still going on under the old file keeps going and is waited for; an
        // unchanged schedule keeps its next time (a reload fires nothing by itself).
        let prev = old.remove(name);
        let same = prev
            .as_ref()
            .is_some_and(|j| j.text == *text.get_ref() && j.tz == tz);
        let next = match &prev {
            Some(j) if same => j.next,
            _ => with_jitter(next, jitter_max),
        };
        let child = prev.and_then(|mut j| j.child.take());
        log(&format!(
            "profile {name}: {} next run {}",
            text.get_ref(),
            next.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S %:z")
        ));
        jobs.insert(
            name.clone(),
            Job {
                text: text.get_ref().clone(),
                schedule,
                tz,
                jitter: jitter_max,
                next,
                child,
            },
        );
    }
    // Profiles gone from the file: their running children are still waited for.
    for (name, mut j) in std::mem::take(old) {
        if let Some(c) = j.child.take() {
            jobs.insert(
                name,
                Job {
                    child: Some(c),
                    next: DateTime::<Utc>::MAX_UTC,
                    ..j
                },
            );
        }
    }
    jobs
}

/// Runs until SIGTERM/SIGINT; returns the exit code.
pub fn run(load: &dyn Fn() -> Result<Config, String>, opts: &DaemonOptions) -> i32 {
    let mut cfg = match load() {
        Ok(c) => c,
        Err(e) => {
            log(&format!("cannot load the config: {e}"));
            return 1;
        }
    };
    let hist = |cfg: &Config| (opts.history)(cfg).and_then(|p| History::open(&p).ok());
    let started_ms = history::now_ms();
    let mut jobs = jobs_of(&cfg, hist(&cfg).as_ref(), &mut BTreeMap::new());
    let mut told: BTreeMap<String, bool> = BTreeMap::new();
    if jobs.is_empty() {
        log("no profile has a schedule; waiting for SIGHUP or SIGTERM");
    }
    let mut last_health = std::time::Instant::now() - Duration::from_secs(3600);
    loop {
        if opts.stop.load(Ordering::Relaxed) {
            return stop(&mut jobs);
        }
        if opts.reload.swap(false, Ordering::Relaxed) {
            match load() {
                Ok(c) => {
                    log("config reloaded");
                    cfg = c;
                    jobs = jobs_of(&cfg, hist(&cfg).as_ref(), &mut jobs);
                }
                Err(e) => log(&format!("config not reloaded, the old one stays: {e}")),
            }
        }
        let now = Utc::now();
        for (name, j) in jobs.iter_mut() {
            if let Some(c) = &mut j.child {
                if let Ok(Some(st)) = c.try_wait() {
                    log(&format!(
                        "profile {name}: run ended, exit {}",
                        st.code()
                            .map(|c| c.to_string())
                            .unwrap_or_else(|| "by signal".into())
                    ));
                    j.child = None;
                }
            }
            if j.next > now {
                continue;
            }
            let scheduled = j.next;
            let after = scheduled.max(now - chrono::Duration::seconds(1));
            j.next = j
                .schedule
                .next_after(after, j.tz)
                .map(|t| with_jitter(t, j.jitter))
                .unwrap_or(DateTime::<Utc>::MAX_UTC);
            if j.child.is_some() {
                log(&format!(
                    "profile {name}: still running from before; this run is skipped"
                ));
                continue;
            }
            let mut c = Command::new(&opts.exe);
            c.arg("--config")
                .arg(&opts.config_path)
                .args(&opts.global_args)
                .args(["run", name])
                .stdin(Stdio::null());
            match c.spawn() {
                Ok(child) => {
                    log(&format!(
                        "profile {name}: run started (pid {}); next run {}",
                        child.id(),
                        j.next
                            .with_timezone(&chrono::Local)
                            .format("%Y-%m-%d %H:%M:%S %:z")
                    ));
                    j.child = Some(child);
                }
                Err(e) => log(&format!("profile {name}: cannot start a run: {e}")),
            }
        }
        if last_health.elapsed() >= Duration::from_secs(60) {
            last_health = std::time::Instant::now();
            if let Some(h) = hist(&cfg) {
                watch_health(&cfg, &h, &mut told, started_ms);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The dead man's switch: a profile whose last successful backup is older than its
/// `health.max-age` is notified once (until a backup succeeds again).
fn watch_health(cfg: &Config, h: &History, told: &mut BTreeMap<String, bool>, since_ms: i64) {
    for (name, p) in &cfg.profiles {
        let Some(max) = p
            .health
            .as_ref()
            .and_then(|x| x.max_age.as_ref())
            .and_then(|m| parse_duration(m.get_ref()))
        else {
            continue;
        };
        let overdue = crate::ops::health::overdue_from_history(h, name, max, since_ms);
        let was_told = told.get(name).copied().unwrap_or(false);
        match overdue {
            Some(reason) if !was_told => {
                log(&format!("profile {name}: OVERDUE: {reason}"));
                let n = p.notify.clone().unwrap_or_default();
                let repo = cfg
                    .repository(p.repository.get_ref())
                    .map(|r| crate::backend::location::shown_url(r.url.get_ref()))
                    .unwrap_or_default();
                let now = chrono::Local::now().to_rfc3339();
                let payload = notify::Payload {
                    event: "overdue".into(),
                    profile: name.clone(),
                    host: crate::fsmeta::hostname(),
                    repository: repo,
                    started: now.clone(),
                    ended: now,
                    duration_seconds: 0.0,
                    exit_code: 14,
                    failed_step: None,
                    error: Some(reason),
                    snapshot: None,
                    files: None,
                    bytes_added: None,
                    warnings: vec![],
                    hint: format!("cairn health --profile {name} --max-age {}", max.as_secs()),
                };
                // Sent from a thread of its own: retries must not hold up the schedule.
                let name2 = name.clone();
                std::thread::spawn(move || {
                    if let Some(url) = &n.webhook {
                        if let Err(e) = notify::webhook(url.get_ref(), &payload) {
                            log(&format!("profile {name2}: {e}"));
                        }
                    }
                    if let Some(cmd) = &n.mail_command {
                        if let Err(e) = notify::mail(cmd, n.mail_to.as_deref(), &payload) {
                            log(&format!("profile {name2}: {e}"));
                        }
                    }
                    if let Some(url) = &n.ping {
                        let _ = notify::ping(url.get_ref(), notify::Ping::Fail, &payload.text());
                    }
                });
                told.insert(name.clone(), true);
            }
            None if was_told => {
                told.insert(name.clone(), false);
            }
            _ => {}
        }
    }
}

/// SIGTERM: running runs get SIGTERM (they pass it to their step) and are waited for.
fn stop(jobs: &mut BTreeMap<String, Job>) -> i32 {
    let running: Vec<_> = jobs
        .iter_mut()
        .filter_map(|(n, j)| j.child.take().map(|c| (n.clone(), c)))
        .collect();
    if running.is_empty() {
        log("stopping");
        return 0;
    }
    for (name, c) in &running {
        log(&format!(
            "stopping: asking the run of {name} (pid {}) to stop",
            c.id()
        ));
        unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
    }
    for (name, mut c) in running {
        let st = c.wait();
        log(&format!(
            "profile {name}: run ended ({})",
            st.map(|s| s.to_string()).unwrap_or_default()
        ));
    }
    log("stopped");
    0
}
