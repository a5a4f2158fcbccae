//! `cairn forget [SNAPSHOT…] [--keep-* …] [--prune]`

use clap::Args;
use serde_json::json;

use super::{cmd_prune, output, Ctx, FilterArgs};
use cairn::forget::{self, Duration, GroupBy, KeepPolicy};
use cairn::repo::lock::LockKind;
use cairn::{Error, Result};

#[derive(Args)]
pub struct ForgetArgs {
    /// Snapshots to remove explicitly (instead of, or besides, a policy).
    snapshots: Vec<String>,
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    keep_last: Option<i64>,
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    keep_hourly: Option<i64>,
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    keep_daily: Option<i64>,
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    keep_weekly: Option<i64>,
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    keep_monthly: Option<i64>,
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    keep_yearly: Option<i64>,
    /// Keep everything within DUR (e.g. 2y5m7d3h) of the newest snapshot.
    #[arg(long, value_name = "DUR")]
    keep_within: Option<Duration>,
    #[arg(long, value_name = "DUR")]
    keep_within_hourly: Option<Duration>,
    #[arg(long, value_name = "DUR")]
    keep_within_daily: Option<Duration>,
    #[arg(long, value_name = "DUR")]
    keep_within_weekly: Option<Duration>,
    #[arg(long, value_name = "DUR")]
    keep_within_monthly: Option<Duration>,
    #[arg(long, value_name = "DUR")]
    keep_within_yearly: Option<Duration>,
    /// Keep snapshots with these tags (`a,b` = both; repeatable = either).
    #[arg(long, value_name = "TAGS")]
    keep_tag: Vec<String>,
    /// Group by host, paths and/or tags before applying the policy.
    #[arg(long, default_value = "host,paths", value_name = "FIELDS")]
    group_by: String,
    #[command(flatten)]
    filter: FilterArgs,
    /// Show what would be removed, remove nothing.
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Run prune afterwards.
    #[arg(long)]
    prune: bool,
    #[command(flatten)]
    prune_flags: cmd_prune::PruneFlags,
}

pub fn run(ctx: &Ctx, a: ForgetArgs) -> Result<i32> {
    let policy = KeepPolicy {
        last: a.keep_last.unwrap_or(0),
        hourly: a.keep_hourly.unwrap_or(0),
        daily: a.keep_daily.unwrap_or(0),
        weekly: a.keep_weekly.unwrap_or(0),
        monthly: a.keep_monthly.unwrap_or(0),
        yearly: a.keep_yearly.unwrap_or(0),
        within: a.keep_within,
        within_hourly: a.keep_within_hourly,
        within_daily: a.keep_within_daily,
        within_weekly: a.keep_within_weekly,
        within_monthly: a.keep_within_monthly,
        within_yearly: a.keep_within_yearly,
        tags: a.keep_tag.clone(),
    };
    if policy.is_empty() && a.snapshots.is_empty() {
        return Err(Error::Usage(
            "refusing to forget with an empty policy: give snapshots or at least one --keep-* option".into(),
        ));
    }
    let group_by: GroupBy = a.group_by.parse()?;
    let mut repo = ctx.open()?;
    let kind = if a.prune {
        cmd_prune::lock_kind(&a.prune_flags)
    } else {
        LockKind::Shared
    };
    let _lock = ctx.lock(&repo, kind, false)?;
    let mut removed = 0;
    let mut out = Vec::new();
    // One listing for the whole command, so an unreadable snapshot is reported once.
    let mut set = super::snapshots_warned(&repo)?;
    // Explicit snapshots first.
    for sel in &a.snapshots {
        let (id, _) = cairn::selector::select_in(&set, sel, &a.filter.filter())?.clone();
        set.list.retain(|(x, _)| *x != id);
        if !a.dry_run {
            repo.backend()
                .delete(cairn::backend::FileType::Snapshot, &id.to_hex())?;
        }
        removed += 1;
        ctx.say(format!(
            "{} snapshot {}",
            if a.dry_run { "would remove" } else { "removed" },
            id.short()
        ));
    }
    if !policy.is_empty() {
        let filter = a.filter.filter();
        let all: Vec<_> = std::mem::take(&mut set.list)
            .into_iter()
            .filter(|(_, s)| filter.matches(s))
            .collect();
        let groups = forget::plan(&all, group_by, &policy, chrono::Local::now().fixed_offset())?;
        for g in &groups {
            let keep: Vec<_> = g.decisions.iter().filter(|d| d.keep).collect();
            let remove: Vec<_> = g.decisions.iter().filter(|d| !d.keep).collect();
            if ctx.json() {
                out.push(json!({
                    "host": g.key.host,
                    "paths": g.key.paths,
                    "tags": g.key.tags,
                    "keep": keep.iter().map(|d| d.id).collect::<Vec<_>>(),
                    "remove": remove.iter().map(|d| d.id).collect::<Vec<_>>(),
                    "reasons": keep.iter().map(|d| json!({"snapshot": d.id, "matches": d.reasons})).collect::<Vec<_>>(),
                }));
            } else {
                ctx.say(format!(
                    "group host {:?} paths {:?} tags {:?}: keep {}, remove {}",
                    g.key.host.as_deref().unwrap_or("*"),
                    g.key
                        .paths
                        .as_ref()
                        .map(|p| p.join(" "))
                        .unwrap_or_else(|| "*".into()),
                    g.key
                        .tags
                        .as_ref()
                        .map(|t| t.join(","))
                        .unwrap_or_else(|| "*".into()),
                    keep.len(),
                    remove.len()
                ));
                for d in &g.decisions {
                    let what = if d.keep { "keep  " } else { "remove" };
                    ctx.say(format!(
                        "  {what} {}  {}",
                        d.id.short(),
                        d.reasons.join(", ")
                    ));
                }
            }
        }
        if !a.dry_run {
            removed += forget::remove(&repo, &groups)?;
        } else {
            removed += groups
                .iter()
                .flat_map(|g| &g.decisions)
                .filter(|d| !d.keep)
                .count();
        }
    }
    let mut prune_report = None;
    if a.prune && !a.dry_run {
        prune_report = Some(cmd_prune::run_on(ctx, &mut repo, &a.prune_flags, false)?);
    }
    if ctx.json() {
        if a.prune {
            output::print_json(&json!({"groups": out, "prune": prune_report}));
        } else {
            output::print_json(&out);
        }
    } else {
        ctx.say(format!(
            "{} {removed} snapshots",
            if a.dry_run { "would remove" } else { "removed" }
        ));
    }
    Ok(0)
}
