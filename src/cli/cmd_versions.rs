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
    // A relative path names what was backed up from here, as `backup` stores it;
    // `.` and `..` are resolved by name (the file may be gone from this machine).
    let joined = std::env::current_dir()
        .map(|d| d.join(&a.path))
        .unwrap_or_else(|_| std::path::PathBuf::from(&a.path));
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for c in joined.components() {
        match c {
            std::path::Component::Normal(n) => parts.push(n),
            std::path::Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    let path = parts.iter().fold(String::from("/"), |mut p, n| {
        if !p.ends_with('/') {
            p.push('/');
        }
        p.push_str(&n.to_string_lossy());
        p
    });
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
