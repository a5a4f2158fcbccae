//! `cairn health --max-age DURATION [--profile P]`: exit 14 when a backup is overdue or
//! the profile's last run failed.

use clap::Args;

use super::{output, profile, Ctx};
use cairn::ops::health::{self, ProfileScope};
use cairn::ops::history::History;
use cairn::ops::profile::parse_duration;
use cairn::{Error, Result};

#[derive(Args)]
pub struct HealthArgs {
    /// The newest snapshot may be at most this old (26h, 8d); default: the profile's
    /// health.max-age.
    #[arg(long, value_name = "DURATION")]
    max_age: Option<String>,
}

pub fn run(ctx: &Ctx, a: HealthArgs) -> Result<i32> {
    let cfg = match &ctx.g.profile {
        Some(_) => Some(profile::load(&ctx.g)?),
        None => None,
    };
    let prof = match (&cfg, &ctx.g.profile) {
        (Some(c), Some(n)) => Some((
            n.clone(),
            c.profile(n)
                .ok_or_else(|| Error::Usage(format!("no profile {n:?}")))?,
        )),
        _ => None,
    };
    let max_age_text = a
        .max_age
        .clone()
        .or_else(|| {
            prof.as_ref().and_then(|(_, p)| {
                p.health
                    .as_ref()?
                    .max_age
                    .as_ref()
                    .map(|m| m.get_ref().clone())
            })
        })
        .ok_or_else(|| {
            Error::Usage("health needs --max-age DURATION (or the profile's health.max-age)".into())
        })?;
    let max_age = parse_duration(&max_age_text).ok_or_else(|| {
        Error::Usage(format!(
            "--max-age takes a duration such as 26h or 8d, not {max_age_text:?}"
        ))
    })?;
    let repo = ctx.open()?;
    let set = super::snapshots_warned(&repo)?;
    let snaps: Vec<_> = set.iter().map(|(_, s)| s).collect();
    let scope = prof.as_ref().map(|(n, p)| ProfileScope {
        name: n.clone(),
        host: p
            .backup
            .as_ref()
            .and_then(|b| b.get("host"))
            .and_then(|h| h.get_ref().as_str().map(String::from))
            .unwrap_or_else(cairn::fsmeta::hostname),
        paths: p.paths.iter().map(|x| absolute(x)).collect(),
    });
    let last_run = match (&scope, ctx.history_path(cfg.as_ref())) {
        (Some(s), Some(path)) if path.exists() => match History::open(&path) {
            Ok(h) => h.last_run(&s.name).unwrap_or_else(|e| {
                eprintln!("warning: {e}");
                None
            }),
            Err(e) => {
                eprintln!("warning: {e}");
                None
            }
        },
        _ => None,
    };
    let r = health::evaluate(
        &snaps,
        max_age,
        chrono::Utc::now(),
        scope.as_ref(),
        last_run,
    );
    if ctx.json() {
        output::print_json(&r);
    } else if r.ok {
        for g in &r.groups {
            ctx.say(format!(
                "ok: {} {}: newest snapshot {} old",
                g.host,
                g.paths.join(" "),
                health::age_text(g.age_seconds.unwrap_or(0))
            ));
        }
    } else {
        for reason in &r.reasons {
            eprintln!("cairn: unhealthy: {reason}");
        }
    }
    Ok(if r.ok { 0 } else { 14 })
}

/// A profile path as backup stores it.
fn absolute(p: &str) -> String {
    cairn::archiver::snapshot_path(std::path::Path::new(p))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| p.to_string())
}
