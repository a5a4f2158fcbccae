//! `cairn schedule install|remove|list [PROFILE]`: systemd timers (or crontab lines)
//! for admins who prefer them to `cairn daemon`.

use std::path::PathBuf;
use std::process::Command;

use clap::{Args, Subcommand};

use super::{output, profile, Ctx};
use cairn::ops::history::{History, Query};
use cairn::ops::schedule::{units, zone, Schedule};
use cairn::{Error, Result};

#[derive(Args)]
pub struct ScheduleArgs {
    #[command(subcommand)]
    action: ScheduleAction,
}

#[derive(Args, Clone)]
struct Where {
    /// Write the units here instead of /etc/systemd/system (root) or
    /// ~/.config/systemd/user; nothing is enabled then.
    #[arg(long, value_name = "DIR")]
    unit_dir: Option<PathBuf>,
    /// A crontab line instead of systemd units (the default where systemd does not run).
    #[arg(long)]
    crontab: bool,
}

#[derive(Subcommand)]
enum ScheduleAction {
    /// Write (and enable) the profile's timer and service units, or its crontab line.
    Install {
        profile: String,
        #[command(flatten)]
        at: Where,
    },
    /// Disable and delete them, or the crontab line.
    Remove {
        profile: String,
        #[command(flatten)]
        at: Where,
    },
    /// The schedules of the config file and their next run times.
    List {
        /// How many next run times to show.
        #[arg(long, default_value_t = 3)]
        next: usize,
    },
}

pub fn run(ctx: &Ctx, a: ScheduleArgs) -> Result<i32> {
    let cfg = profile::load(&ctx.g)?;
    let config_path = std::fs::canonicalize(&cfg.path).unwrap_or(cfg.path.clone());
    let exe =
        std::env::current_exe().map_err(|e| Error::Other(format!("finding cairn itself: {e}")))?;
    let prof = |name: &str| {
        cfg.profile(name)
            .ok_or_else(|| Error::Usage(format!("no profile {name:?} in {}", cfg.path.display())))
    };
    match a.action {
        ScheduleAction::Install { profile, at } => {
            let p = prof(&profile)?;
            let schedule = p.schedule.as_ref().ok_or_else(|| {
                Error::Usage(format!("profile {profile} has no schedule = \"…\""))
            })?;
            if at.crontab || (at.unit_dir.is_none() && !units::systemd_running()) {
                let line = units::crontab_line(
                    &profile,
                    schedule.get_ref(),
                    p.timezone.as_ref().map(|t| t.get_ref().as_str()),
                    &exe,
                    &config_path,
                )
                .map_err(Error::Usage)?;
                edit_crontab(&profile, Some(&line))?;
                if p.jitter.is_some() || p.catch_up != Some(false) {
                    eprintln!("warning: cron has no jitter and makes up no missed run; `cairn daemon` and systemd units do both");
                }
                ctx.say(format!("crontab: {line}"));
                return Ok(0);
            }
            let files = units::systemd_units(
                &profile,
                schedule.get_ref(),
                p.timezone.as_ref().map(|t| t.get_ref().as_str()),
                p.jitter.as_ref().map(|j| j.get_ref().as_str()),
                p.catch_up.unwrap_or(true),
                &exe,
                &config_path,
            )
            .map_err(Error::Usage)?;
            let dir = at.unit_dir.clone().unwrap_or_else(units::default_unit_dir);
            std::fs::create_dir_all(&dir)
                .map_err(|e| Error::Other(format!("{}: {e}", dir.display())))?;
            for (name, text) in &files {
                let path = dir.join(name);
                let tmp = dir.join(format!(".{name}.tmp"));
                std::fs::write(&tmp, text)
                    .and_then(|_| std::fs::rename(&tmp, &path))
                    .map_err(|e| Error::Other(format!("{}: {e}", path.display())))?;
                ctx.say(format!("wrote {}", path.display()));
            }
            if at.unit_dir.is_none() {
                let timer = format!("{}.timer", units::unit_name(&profile));
                systemctl(&["daemon-reload"])?;
                systemctl(&["enable", "--now", &timer])?;
                ctx.say(format!("enabled {timer}"));
            }
            Ok(0)
        }
        ScheduleAction::Remove { profile, at } => {
            if at.crontab || (at.unit_dir.is_none() && !units::systemd_running()) {
                edit_crontab(&profile, None)?;
                ctx.say(format!("removed the crontab line of {profile}"));
                return Ok(0);
            }
            let dir = at.unit_dir.clone().unwrap_or_else(units::default_unit_dir);
            let base = units::unit_name(&profile);
            if at.unit_dir.is_none() {
                let _ = systemctl(&["disable", "--now", &format!("{base}.timer")]);
            }
            let mut removed = 0;
            for ext in ["timer", "service"] {
                let path = dir.join(format!("{base}.{ext}"));
                if std::fs::remove_file(&path).is_ok() {
                    ctx.say(format!("removed {}", path.display()));
                    removed += 1;
                }
            }
            if at.unit_dir.is_none() && removed > 0 {
                let _ = systemctl(&["daemon-reload"]);
            }
            if removed == 0 {
                return Err(Error::Usage(format!(
                    "no units of profile {profile} in {}",
                    dir.display()
                )));
            }
            Ok(0)
        }
        ScheduleAction::List { next } => {
            let hist = ctx
                .history_path(Some(&cfg))
                .filter(|p| p.exists())
                .and_then(|p| History::open(&p).ok());
            let mut out = Vec::new();
            for (name, p) in &cfg.profiles {
                let Some(s) = &p.schedule else { continue };
                let sched = Schedule::parse(s.get_ref()).map_err(Error::Usage)?;
                let tz = zone(p.timezone.as_ref().map(|t| t.get_ref().as_str()))
                    .map_err(Error::Usage)?;
                let mut times = Vec::new();
                let mut t = chrono::Utc::now();
                for _ in 0..next {
                    match sched.next_after(t, tz) {
                        Some(n) => {
                            times.push(n);
                            t = n;
                        }
                        None => break,
                    }
                }
                let last = hist.as_ref().and_then(|h| {
                    h.query(&Query {
                        profile: Some(name.clone()),
                        kind: Some("run".into()),
                        limit: Some(1),
                        ..Default::default()
                    })
                    .ok()
                    .and_then(|r| r.into_iter().last())
                });
                out.push(serde_json::json!({
                    "profile": name,
                    "schedule": s.get_ref(),
                    "timezone": p.timezone.as_ref().map(|t| t.get_ref().clone()),
                    "next": times.iter().map(|t| t.to_rfc3339()).collect::<Vec<_>>(),
                    "last_run": last.as_ref().map(|e| serde_json::json!({"started_ms": e.started_ms, "outcome": e.outcome})),
                }));
                if !ctx.json() {
                    println!(
                        "{name}: {}{}",
                        s.get_ref(),
                        p.timezone
                            .as_ref()
                            .map(|t| format!(" ({})", t.get_ref()))
                            .unwrap_or_default()
                    );
                    for t in &times {
                        let shown = match tz {
                            Some(z) => t.with_timezone(&z).format("%Y-%m-%d %H:%M %Z").to_string(),
                            None => t
                                .with_timezone(&chrono::Local)
                                .format("%Y-%m-%d %H:%M %:z")
                                .to_string(),
                        };
                        println!("  next: {shown}");
                    }
                    if let Some(e) = last {
                        let when = chrono::DateTime::from_timestamp_millis(e.started_ms)
                            .map(|t| {
                                t.with_timezone(&chrono::Local)
                                    .format("%Y-%m-%d %H:%M")
                                    .to_string()
                            })
                            .unwrap_or_default();
                        println!("  last: {when} {}", e.outcome);
                    }
                }
            }
            if ctx.json() {
                output::print_json(&out);
            }
            Ok(0)
        }
    }
}

fn systemctl(args: &[&str]) -> Result<()> {
    let st = Command::new("systemctl")
        .args(args)
        .status()
        .map_err(|e| Error::Other(format!("systemctl: {e}")))?;
    if !st.success() {
        return Err(Error::Other(format!(
            "systemctl {} failed ({st})",
            args.join(" ")
        )));
    }
    Ok(())
}

/// Replaces (or with None removes) the line tagged `# cairn:PROFILE` in the user's
/// crontab.
fn edit_crontab(profile: &str, line: Option<&str>) -> Result<()> {
    let tag = format!("# cairn:{profile}");
    let current = Command::new("crontab")
        .arg("-l")
        .output()
        .map_err(|e| Error::Other(format!("crontab: {e}")))?;
    // `crontab -l` fails when there is no crontab yet: start from nothing then; any
    // other failure stops here (writing would replace the crontab we could not read).
    let text = if current.status.success() {
        String::from_utf8_lossy(&current.stdout).into_owned()
    } else if String::from_utf8_lossy(&current.stderr).contains("no crontab") {
        String::new()
    } else {
        return Err(Error::Other(format!(
            "crontab -l failed ({}): {}",
            current.status,
            String::from_utf8_lossy(&current.stderr).trim()
        )));
    };
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| !l.trim_end().ends_with(&tag))
        .map(String::from)
        .collect();
    if let Some(l) = line {
        lines.push(l.to_string());
    }
    let mut new = lines.join("\n");
    new.push('\n');
    use std::io::Write;
    let mut child = Command::new("crontab")
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Error::Other(format!("crontab: {e}")))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(new.as_bytes())
        .map_err(|e| Error::Other(format!("crontab: {e}")))?;
    let st = child
        .wait()
        .map_err(|e| Error::Other(format!("crontab: {e}")))?;
    if !st.success() {
        return Err(Error::Other(format!("crontab - failed ({st})")));
    }
    Ok(())
}
