//! `cairn snapshots`

use std::collections::BTreeMap;

use clap::Args;
use serde_json::{json, Value};

use super::{output, Ctx, FilterArgs};
use cairn::id::Id;
use cairn::repo::snapshot::Snapshot;
use cairn::{Error, Result};

#[derive(Args)]
pub struct SnapshotsArgs {
    #[command(flatten)]
    filter: FilterArgs,
    /// Only the newest N snapshots of each host and path set.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    latest: Option<u64>,
    /// Group by any of host, paths, tags (comma-separated).
    #[arg(long, value_name = "FIELDS")]
    group_by: Option<String>,
}

/// A group's key fields and its snapshots.
type Group<'a> = (Vec<(String, Value)>, Vec<&'a (Id, Snapshot)>);

pub fn snapshot_json(id: &Id, s: &Snapshot) -> Value {
    json!({
        "id": id,
        "short_id": id.short(),
        "time": s.time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false),
        "tree": s.tree,
        "paths": s.paths,
        "hostname": s.hostname,
        "username": s.username,
        "uid": s.uid,
        "gid": s.gid,
        "tags": s.tags,
        "parent": s.parent,
        "program_version": s.program_version,
        "summary": s.summary,
        "original": s.original,
    })
}

fn group_key(s: &Snapshot, fields: &[&str]) -> Vec<(String, Value)> {
    let mut paths = s.paths.clone();
    paths.sort();
    let mut tags = s.tags.clone();
    tags.sort();
    fields
        .iter()
        .map(|f| match *f {
            "host" => ("hostname".to_string(), json!(s.hostname)),
            "paths" => ("paths".to_string(), json!(paths)),
            _ => ("tags".to_string(), json!(tags)),
        })
        .collect()
}

pub fn run(ctx: &Ctx, a: SnapshotsArgs) -> Result<i32> {
    let fields: Vec<&str> = match &a.group_by {
        Some(g) => g.split(',').filter(|f| !f.is_empty()).collect(),
        None => Vec::new(),
    };
    if let Some(bad) = fields
        .iter()
        .find(|f| !["host", "paths", "tags"].contains(f))
    {
        return Err(Error::Usage(format!(
            "--group-by takes host, paths and tags, not {bad:?}"
        )));
    }
    let repo = ctx.open()?;
    let _lock = ctx.lock(&repo, cairn::repo::lock::LockKind::Shared, true)?;
    let filter = a.filter.filter();
    let all: Vec<(Id, Snapshot)> = super::snapshots_warned(&repo)?
        .into_iter()
        .filter(|(_, s)| filter.matches(s))
        .collect();
    let mut selected = all;
    if let Some(n) = a.latest {
        let mut per_group: BTreeMap<String, usize> = BTreeMap::new();
        let mut keep = Vec::new();
        for item in selected.into_iter().rev() {
            let key = json!(group_key(&item.1, &["host", "paths"])).to_string();
            let c = per_group.entry(key).or_default();
            if (*c as u64) < n {
                *c += 1;
                keep.push(item);
            }
        }
        keep.reverse();
        selected = keep;
    }
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for item in &selected {
        let key = group_key(&item.1, &fields);
        let k = json!(key).to_string();
        groups
            .entry(k)
            .or_insert_with(|| (key, Vec::new()))
            .1
            .push(item);
    }
    if ctx.json() {
        if fields.is_empty() {
            let list: Vec<Value> = selected
                .iter()
                .map(|(id, s)| snapshot_json(id, s))
                .collect();
            output::print_json(&list);
        } else {
            let list: Vec<Value> = groups
                .values()
                .map(|(key, items)| {
                    let key: serde_json::Map<String, Value> = key.iter().cloned().collect();
                    json!({
                        "group_key": key,
                        "snapshots": items.iter().map(|(id, s)| snapshot_json(id, s)).collect::<Vec<_>>(),
                    })
                })
                .collect();
            output::print_json(&list);
        }
        return Ok(0);
    }
    for (key, items) in groups.values() {
        if !fields.is_empty() {
            let desc: Vec<String> = key.iter().map(|(k, v)| format!("{k} {v}")).collect();
            ctx.say(format!("group: {}", desc.join(", ")));
        }
        ctx.say(format!(
            "{:<8}  {:<19}  {:<12}  {:<14}  {:>12}  paths",
            "ID", "Time", "Host", "Tags", "Size"
        ));
        for (id, s) in items {
            let size = s.summary.as_ref().map_or(0, |x| x.total_bytes_processed);
            let copied = match &s.original {
                // Rewritten here (`tag`): the id it was first saved under.
                Some(o) if o.repository == repo.config.id => {
                    format!("  (originally {})", o.snapshot.short())
                }
                Some(o) => format!(
                    "  (copy of {} from repository {})",
                    o.snapshot.short(),
                    o.repository.short()
                ),
                None => String::new(),
            };
            ctx.say(format!(
                "{:<8}  {:<19}  {:<12}  {:<14}  {:>12}  {}{copied}",
                id.short(),
                s.time
                    .with_timezone(&chrono::Local)
                    .format("%Y-%m-%d %H:%M:%S"),
                s.hostname,
                s.tags.join(","),
                output::bytes(size),
                s.paths.join(" ")
            ));
        }
        ctx.say(format!("{} snapshots", items.len()));
    }
    if groups.is_empty() {
        ctx.say("no snapshots");
    }
    Ok(0)
}
