//! `cairn versions PATH`

use clap::Args;

use super::{output, Ctx, FilterArgs};
use cairn::versions::versions;
use cairn::Result;

#[derive(Args)]
pub struct VersionsArgs {
    /// An absolute path as backed up (`/etc/nginx/nginx.conf`).
    path: String,
    #[command(flatten)]
    filter: FilterArgs,
}

pub fn run(ctx: &Ctx, a: VersionsArgs) -> Result<i32> {
    let (repo, _lock) = ctx.open_locked(cairn::repo::lock::LockKind::Shared, true)?;
    let set = super::snapshots_warned(&repo)?;
    let filter = a.filter.filter();
    let chosen: Vec<_> = set
        .iter()
        .filter(|(_, s)| filter.matches(s))
        .cloned()
        .collect();
    let path = if a.path.starts_with('/') {
        a.path.clone()
    } else {
        // Relative paths name what was backed up from here, as `backup` stores them.
        std::env::current_dir()
            .map(|d| d.join(&a.path).display().to_string())
            .unwrap_or_else(|_| a.path.clone())
    };
    let list = versions(&repo, &chosen, &path)?;
    if ctx.json() {
        output::print_json(&list);
        return Ok(0);
    }
    let when = |t: &chrono::DateTime<chrono::FixedOffset>| {
        t.with_timezone(&chrono::Local)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    };
    ctx.say(format!(
        "{:<8}  {:<7}  {:>10}  {:<19}  {:>5}  {:<28}  last",
        "Content", "Type", "Size", "Modified", "Snaps", "first"
    ));
    for v in &list {
        ctx.say(format!(
            "{:<8}  {:<7}  {:>10}  {:<19}  {:>5}  {} {}  {} {}",
            v.content.short(),
            v.kind,
            output::bytes(v.size),
            when(&v.mtime),
            v.snapshots,
            v.first_snapshot.short(),
            when(&v.first_time),
            v.last_snapshot.short(),
            when(&v.last_time),
        ));
    }
    ctx.say(format!(
        "{} versions of {path} in {} snapshots",
        list.len(),
        chosen.len()
    ));
    Ok(0)
}
