//! `cairn history [--profile P] [--since TIME] [--failed]`

use clap::Args;

use super::{output, Ctx};
use cairn::ops::history::{History, Query};
use cairn::{Error, Result};

#[derive(Args)]
pub struct HistoryArgs {
    /// Only entries since TIME: a date/time (2026-12-01, "2026-12-01 14:00") or an age
    /// (24h, 7d).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Only runs and commands that failed (or were interrupted).
    #[arg(long)]
    failed: bool,
    /// Only profile runs, not single commands.
    #[arg(long)]
    runs: bool,
    /// At most this many entries (the newest).
    #[arg(long, default_value_t = 100)]
    limit: usize,
}

pub fn run(ctx: &Ctx, a: HistoryArgs) -> Result<i32> {
    let path = ctx
        .history_path(None)
        .ok_or_else(|| Error::Usage("the run history is off (CAIRN_HISTORY=off)".into()))?;
    let since_ms = match &a.since {
        None => None,
        Some(s) => Some(match cairn::ops::profile::parse_duration(s) {
            Some(d) => cairn::ops::history::now_ms() - d.as_millis() as i64,
            None => cairn::selector::parse_time(s)?.timestamp_millis(),
        }),
    };
    if !path.exists() {
        if ctx.json() {
            output::print_json(&serde_json::json!([]));
        } else {
            ctx.say(format!("no history yet ({})", path.display()));
        }
        return Ok(0);
    }
    let h = History::open(&path).map_err(|e| Error::Other(e.to_string()))?;
    let rows = h
        .query(&Query {
            profile: ctx.g.profile.clone(),
            since_ms,
            failed_only: a.failed,
            kind: a.runs.then(|| "run".to_string()),
            command: None,
            limit: Some(a.limit),
        })
        .map_err(|e| Error::Other(e.to_string()))?;
    if ctx.json() {
        output::print_json(&rows);
        return Ok(0);
    }
    println!(
        "{:<6} {:<19} {:<10} {:<9} {:<12} {:>4} {:<8} {:>10} {:>8}  error",
        "id", "started", "profile", "command", "outcome", "exit", "snapshot", "added", "took"
    );
    for e in rows {
        let started = chrono::DateTime::from_timestamp_millis(e.started_ms)
            .map(|t| {
                t.with_timezone(&chrono::Local)
                    .format("%Y-%m-%d %H:%M:%S")
                    .to_string()
            })
            .unwrap_or_default();
        let took = e
            .ended_ms
            .map(|t| format!("{:.1}s", (t - e.started_ms) as f64 / 1000.0))
            .unwrap_or_default();
        let cmd = if e.kind == "run" {
            "run".to_string()
        } else {
            e.command.clone()
        };
        println!(
            "{:<6} {:<19} {:<10} {:<9} {:<12} {:>4} {:<8} {:>10} {:>8}  {}",
            if e.run_id.is_some() {
                format!(" {}", e.id)
            } else {
                e.id.to_string()
            },
            started,
            e.profile.as_deref().unwrap_or("-"),
            cmd,
            e.outcome,
            e.exit_code.map(|c| c.to_string()).unwrap_or_default(),
            e.snapshot
                .as_deref()
                .map(|s| &s[..s.len().min(8)])
                .unwrap_or(""),
            e.bytes_added.map(output::bytes).unwrap_or_default(),
            took,
            e.error.as_deref().unwrap_or("")
        );
        if let Some(w) = &e.warnings {
            for l in w.lines() {
                println!("{:<6} warning: {l}", "");
            }
        }
    }
    Ok(0)
}
