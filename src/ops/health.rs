//! Health: is the newest snapshot recent enough and did the last run succeed; size
//! anomalies after a backup; Prometheus metrics in node_exporter's textfile format.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, FixedOffset, Utc};
use serde::Serialize;

use super::history::{Entry, History, Query};
use super::profile::AnomalyConf;
use super::runner::RunResult;
use crate::repo::snapshot::Snapshot;

/// The newest snapshot of one host and set of paths.
#[derive(Debug, Clone, Serialize)]
pub struct GroupHealth {
    pub host: String,
    pub paths: Vec<String>,
    pub newest: Option<String>,
    pub age_seconds: Option<i64>,
    pub ok: bool,
    pub reason: Option<String>,
}

/// What `cairn health` finds.
#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    pub ok: bool,
    pub max_age_seconds: u64,
    pub profile: Option<String>,
    pub groups: Vec<GroupHealth>,
    pub last_run: Option<Entry>,
    /// Every reason it is not healthy, one line each.
    pub reasons: Vec<String>,
}

/// Which snapshots a profile's health is about.
pub struct ProfileScope {
    pub name: String,
    pub host: String,
    pub paths: Vec<String>,
}

/// Groups the snapshots by host and paths (or takes the profile's group) and checks
/// the newest of each against `max_age`; a failed last run is unhealthy too.
pub fn evaluate(
    snapshots: &[&Snapshot],
    max_age: std::time::Duration,
    now: DateTime<Utc>,
    scope: Option<&ProfileScope>,
    last_run: Option<Entry>,
) -> HealthReport {
    let mut newest: BTreeMap<(String, Vec<String>), DateTime<FixedOffset>> = BTreeMap::new();
    for s in snapshots {
        let mut paths = s.paths.clone();
        paths.sort();
        let key = (s.hostname.clone(), paths);
        let e = newest.entry(key).or_insert(s.time);
        if s.time > *e {
            *e = s.time;
        }
    }
    let mut groups = Vec::new();
    let check = |host: String, paths: Vec<String>, t: Option<DateTime<FixedOffset>>| {
        let age = t.map(|t| (now - t.with_timezone(&Utc)).num_seconds());
        let (ok, reason) = match age {
            None => (
                false,
                Some(format!("no snapshot of {host} {}", paths.join(" "))),
            ),
            Some(a) if a as i128 > max_age.as_secs() as i128 => (
                false,
                Some(format!(
                    "newest snapshot of {host} {} is {} old (more than {})",
                    paths.join(" "),
                    age_text(a),
                    age_text(max_age.as_secs() as i64)
                )),
            ),
            Some(_) => (true, None),
        };
        GroupHealth {
            host,
            paths,
            newest: t.map(|t| t.to_rfc3339()),
            age_seconds: age,
            ok,
            reason,
        }
    };
    match scope {
        Some(p) => {
            let mut paths = p.paths.clone();
            paths.sort();
            let t = newest.get(&(p.host.clone(), paths.clone())).copied();
            groups.push(check(p.host.clone(), paths, t));
        }
        None => {
            for ((host, paths), t) in newest {
                groups.push(check(host, paths, Some(t)));
            }
        }
    }
    let mut reasons: Vec<String> = groups.iter().filter_map(|g| g.reason.clone()).collect();
    if scope.is_none() && groups.is_empty() {
        reasons.push("the repository has no snapshots".into());
    }
    if let Some(r) = &last_run {
        if !matches!(r.outcome.as_str(), "success" | "warning" | "running") {
            reasons.push(format!(
                "the last run of profile {} {} ({}){}",
                r.profile.as_deref().unwrap_or("?"),
                r.outcome,
                DateTime::from_timestamp_millis(r.started_ms)
                    .map(|t| t
                        .with_timezone(&chrono::Local)
                        .format("%Y-%m-%d %H:%M:%S")
                        .to_string())
                    .unwrap_or_default(),
                r.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ));
        }
    }
    HealthReport {
        ok: reasons.is_empty(),
        max_age_seconds: max_age.as_secs(),
        profile: scope.map(|s| s.name.clone()),
        groups,
        last_run,
        reasons,
    }
}

/// Overdue from the history alone (the daemon's dead man's switch: no repository
/// access): the newest successful backup of `profile` is older than `max_age`.
pub fn overdue_from_history(
    h: &History,
    profile: &str,
    max_age: std::time::Duration,
    since_ms: i64,
) -> Option<String> {
    let last = h.last_success_ms(profile, "backup").ok()?;
    let now = super::history::now_ms();
    let reference = last.unwrap_or(since_ms);
    let age = now - reference;
    (age as i128 > max_age.as_millis() as i128).then(|| match last {
        Some(_) => format!(
            "the last successful backup of {profile} was {} ago (more than {})",
            age_text(age / 1000),
            age_text(max_age.as_secs() as i64)
        ),
        None => format!(
            "no successful backup of {profile} in the {} the daemon has been watching",
            age_text(age / 1000)
        ),
    })
}

pub fn age_text(secs: i64) -> String {
    let s = secs.max(0);
    let (d, h, m) = (s / 86400, s % 86400 / 3600, s % 3600 / 60);
    if d > 0 {
        format!("{d}d{h}h")
    } else if h > 0 {
        format!("{h}h{m}m")
    } else if m > 0 {
        format!("{m}m")
    } else {
        format!("{s}s")
    }
}

fn median(mut v: Vec<u64>) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    Some(v[v.len() / 2])
}

/// Warnings for a backup far from the median of the profile's earlier ones: many more
/// bytes added than usual, or far fewer files (a source that went missing).
pub fn anomalies(
    h: &History,
    profile: &str,
    this_run: Option<i64>,
    r: &RunResult,
    conf: Option<&AnomalyConf>,
) -> Vec<String> {
    let d = AnomalyConf::default();
    let c = conf.unwrap_or(&d);
    let runs = c.runs.unwrap_or(10).max(3);
    let factor = c.added_factor.unwrap_or(5.0);
    let min_added = c.min_added_bytes.unwrap_or(100 << 20);
    let min_ratio = c.min_files_ratio.unwrap_or(0.5);
    let q = Query {
        profile: Some(profile.into()),
        kind: Some("command".into()),
        command: Some("backup".into()),
        limit: Some(runs + 1),
        ..Default::default()
    };
    let Ok(rows) = h.query(&q) else { return vec![] };
    let earlier: Vec<&Entry> = rows
        .iter()
        .filter(|e| e.run_id != this_run || this_run.is_none())
        .filter(|e| matches!(e.outcome.as_str(), "success" | "warning"))
        .rev()
        .take(runs)
        .collect();
    if earlier.len() < 3 {
        return vec![];
    }
    let mut out = Vec::new();
    let added = median(earlier.iter().filter_map(|e| e.bytes_added).collect());
    if let (Some(m), Some(now)) = (added, r.bytes_added) {
        if now > min_added && now as f64 > factor * m.max(1) as f64 {
            out.push(format!(
                "size anomaly: this backup added {} bytes, {:.0}x the median {} of the last {} backups",
                now,
                now as f64 / m.max(1) as f64,
                m,
                earlier.len()
            ));
        }
    }
    let files = median(earlier.iter().filter_map(|e| e.files).collect());
    if let (Some(m), Some(now)) = (files, r.files) {
        if m > 0 && (now as f64) < min_ratio * m as f64 {
            out.push(format!(
                "size anomaly: this backup holds {now} files, the median of the last {} backups is {m}: is a source missing?",
                earlier.len()
            ));
        }
    }
    out
}

/// Writes the run's metrics (node_exporter textfile format) atomically: a temporary
/// file renamed over the old one, so the exporter never reads half a file.
pub fn write_metrics(
    path: &Path,
    r: &RunResult,
    h: Option<&History>,
    (snapshots, repository_size): (Option<u64>, Option<u64>),
) -> std::io::Result<()> {
    let p = escape(&r.profile);
    let now = Utc::now().timestamp();
    let last_success = if r.success {
        Some(now)
    } else {
        h.and_then(|h| {
            h.query(&Query {
                profile: Some(r.profile.clone()),
                kind: Some("run".into()),
                ..Default::default()
            })
            .ok()
        })
        .and_then(|rows| {
            rows.iter()
                .rev()
                .find(|e| matches!(e.outcome.as_str(), "success" | "warning"))
                .and_then(|e| e.ended_ms)
        })
        .map(|ms| ms / 1000)
    };
    let mut t = String::new();
    let mut metric = |name: &str, help: &str, value: Option<String>| {
        if let Some(v) = value {
            t += &format!(
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{profile=\"{p}\"}} {v}\n"
            );
        }
    };
    metric(
        "cairn_last_run_timestamp_seconds",
        "When the last run ended.",
        Some(now.to_string()),
    );
    metric(
        "cairn_last_run_success",
        "1 when the last run succeeded.",
        Some((r.success as u8).to_string()),
    );
    metric(
        "cairn_last_run_duration_seconds",
        "How long the last run took.",
        Some(format!("{:.3}", r.duration_seconds)),
    );
    metric(
        "cairn_last_success_timestamp_seconds",
        "When the last successful run ended.",
        last_success.map(|t| t.to_string()),
    );
    metric(
        "cairn_backup_bytes_added",
        "Bytes the last backup added to the repository.",
        r.bytes_added.map(|b| b.to_string()),
    );
    metric(
        "cairn_backup_files",
        "Files in the last backup.",
        r.files.map(|b| b.to_string()),
    );
    metric(
        "cairn_snapshots",
        "Snapshots in the profile's repository.",
        snapshots.map(|b| b.to_string()),
    );
    metric(
        "cairn_repository_size_bytes",
        "Bytes the profile's repository takes on its storage.",
        repository_size.map(|b| b.to_string()),
    );
    let tmp = path.with_extension("prom.tmp");
    std::fs::write(&tmp, t)?;
    std::fs::rename(&tmp, path)
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
