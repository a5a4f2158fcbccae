//! Snapshot selectors (CLI.md): an id or unique prefix, `latest`, or `@TIME`, narrowed
//! by host, tag and path filters; and the `SNAP:SUBPATH` form.

use chrono::{DateTime, FixedOffset, Local, NaiveDate, NaiveDateTime, NaiveTime, TimeZone};

use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::snapshot::{Snapshot, SnapshotSet};

/// `--host`, `--tag`, `--path`: a snapshot passes when it matches one of the hosts (if
/// any), one of the tag lists (`--tag a,b` needs both a and b), and has every path.
#[derive(Clone, Debug, Default)]
pub struct SnapshotFilter {
    pub hosts: Vec<String>,
    pub tags: Vec<String>,
    pub paths: Vec<String>,
}

impl SnapshotFilter {
    pub fn matches(&self, s: &Snapshot) -> bool {
        let host_ok = self.hosts.is_empty() || self.hosts.contains(&s.hostname);
        let tag_ok = self.tags.is_empty()
            || self.tags.iter().any(|list| {
                list.split(',')
                    .filter(|t| !t.is_empty())
                    .all(|t| s.has_tag(t))
            });
        let path_ok = self.paths.iter().all(|p| {
            let p = p.trim_end_matches('/');
            s.paths
                .iter()
                .any(|sp| sp == p || (p.is_empty() && sp == "/"))
        });
        host_ok && tag_ok && path_ok
    }
}

/// Splits `SNAP:SUBPATH`; an id, `latest` or `@TIME` never contains `:/` otherwise,
/// but a time may contain `:`, so the subpath is taken to start at the first `:/`.
pub fn split_subpath(arg: &str) -> (&str, Option<&str>) {
    match arg.find(":/") {
        Some(i) => (&arg[..i], Some(&arg[i + 1..])),
        None => match arg.strip_suffix(':') {
            Some(s) => (s, None),
            None => (arg, None),
        },
    }
}

/// Picks one snapshot out of a repository's snapshot set. Unreadable snapshots are not
/// candidates for `latest` or `@TIME`, but one asked for by id (or a unique prefix of
/// it) fails with its own error rather than "no such snapshot".
pub fn select_in<'a>(
    set: &'a SnapshotSet,
    selector: &str,
    filter: &SnapshotFilter,
) -> Result<&'a (Id, Snapshot)> {
    let is_prefix = selector.len() >= 4 && selector.bytes().all(|b| b.is_ascii_hexdigit());
    if is_prefix {
        let prefix = selector.to_ascii_lowercase();
        let mut bad = set
            .unreadable
            .iter()
            .filter(|(n, _)| n.starts_with(&prefix));
        if let Some((name, _)) = bad.next() {
            let readable = set.iter().any(|(id, _)| id.to_hex().starts_with(&prefix));
            if readable || bad.next().is_some() {
                return Err(Error::Usage(format!(
                    "snapshot id prefix {selector:?} is ambiguous"
                )));
            }
            return Err(set.error_of(name).expect("listed as unreadable"));
        }
    }
    match select(set, selector, filter) {
        Err(Error::Usage(m)) if !is_prefix && !set.unreadable.is_empty() => {
            // The answer may be among the damaged snapshots: say so, as damage.
            Err(Error::integrity(
                "snapshots/",
                format!(
                    "{m}, and {} snapshot file(s) could not be read",
                    set.unreadable.len()
                ),
            ))
        }
        r => r,
    }
}

/// The snapshots a command over several works on: each of `selectors` once, in the
/// order given; with none, every readable snapshot `filter` passes (oldest first).
pub fn select_many(
    set: &SnapshotSet,
    selectors: &[String],
    filter: &SnapshotFilter,
) -> Result<Vec<(Id, Snapshot)>> {
    if selectors.is_empty() {
        return Ok(set
            .iter()
            .filter(|(_, s)| filter.matches(s))
            .cloned()
            .collect());
    }
    let mut chosen: Vec<(Id, Snapshot)> = Vec::new();
    for sel in selectors {
        let hit = select_in(set, sel, filter)?;
        if !chosen.iter().any(|(id, _)| *id == hit.0) {
            chosen.push(hit.clone());
        }
    }
    Ok(chosen)
}

/// Picks one snapshot out of `all` (oldest first, as `Repository::snapshots` returns).
pub fn select<'a>(
    all: &'a [(Id, Snapshot)],
    selector: &str,
    filter: &SnapshotFilter,
) -> Result<&'a (Id, Snapshot)> {
    let candidates = || all.iter().filter(|(_, s)| filter.matches(s));
    if selector == "latest" {
        return candidates()
            .max_by_key(|(_, s)| s.time)
            .ok_or_else(|| Error::Usage("no snapshot matches".into()));
    }
    if let Some(t) = selector.strip_prefix('@') {
        let t = parse_time(t)?;
        return candidates()
            .filter(|(_, s)| s.time <= t)
            .max_by_key(|(_, s)| s.time)
            .ok_or_else(|| Error::Usage(format!("no snapshot was taken at or before {t}")));
    }
    if selector.len() < 4 || !selector.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::Usage(format!(
            "{selector:?} is not a snapshot: use an id (at least 4 hex digits), latest or @TIME"
        )));
    }
    let prefix = selector.to_ascii_lowercase();
    let mut hits = all
        .iter()
        .filter(|(id, _)| id.to_hex().starts_with(&prefix));
    match (hits.next(), hits.next()) {
        (Some(hit), None) => Ok(hit),
        (None, _) => Err(Error::Usage(format!("no snapshot with id {selector:?}"))),
        _ => Err(Error::Usage(format!(
            "snapshot id prefix {selector:?} is ambiguous"
        ))),
    }
}

/// Parses `2026-11-20`, `2026-11-20T14:00`, `2026-11-20 14:00:05[.nnn]`, each
/// optionally followed by `Z` or an offset (`+01:00`); local time otherwise. A date
/// alone means the end of that day.
pub fn parse_time(s: &str) -> Result<DateTime<FixedOffset>> {
    let bad = || {
        Error::Usage(format!(
            "cannot read time {s:?}: use 2026-11-20, 2026-11-20T14:00 or 2026-11-20 14:00:05, optionally with Z or +01:00"
        ))
    };
    let s = s.trim();
    let (body, offset) = split_offset(s).ok_or_else(bad)?;
    let naive = if let Ok(d) = NaiveDate::parse_from_str(body, "%Y-%m-%d") {
        d.and_time(NaiveTime::from_hms_nano_opt(23, 59, 59, 999_999_999).unwrap())
    } else {
        [
            "%Y-%m-%dT%H:%M:%S%.f",
            "%Y-%m-%d %H:%M:%S%.f",
            "%Y-%m-%dT%H:%M",
            "%Y-%m-%d %H:%M",
        ]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(body, f).ok())
        .ok_or_else(bad)?
    };
    match offset {
        Some(off) => off.from_local_datetime(&naive).single().ok_or_else(bad),
        None => Local
            .from_local_datetime(&naive)
            .earliest()
            .map(|t| t.fixed_offset())
            .ok_or_else(bad),
    }
}

/// Splits a trailing `Z` or `±HH:MM` / `±HHMM` off a time (not off a bare date).
fn split_offset(s: &str) -> Option<(&str, Option<FixedOffset>)> {
    if let Some(body) = s.strip_suffix('Z').or_else(|| s.strip_suffix('z')) {
        return Some((body, FixedOffset::east_opt(0)));
    }
    if s.len() > 16 {
        for len in [6, 5] {
            let (body, off) = s.split_at(s.len() - len);
            let sign = match off.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => continue,
            };
            let digits: String = off[1..].chars().filter(|c| *c != ':').collect();
            if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let h: i32 = digits[..2].parse().ok()?;
            let m: i32 = digits[2..].parse().ok()?;
            return Some((
                body,
                Some(FixedOffset::east_opt(sign * (h * 3600 + m * 60))?),
            ));
        }
    }
    Some((s, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        let t = parse_time("2026-11-20T14:00Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-20T14:00:00+00:00");
        let t = parse_time("2026-11-20 14:00:05+01:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-20T14:00:05+01:00");
        let t = parse_time("2026-11-20 14:00:05.5-0230").unwrap();
        assert_eq!(t.timestamp_subsec_millis(), 500);
        assert_eq!(t.offset().local_minus_utc(), -(2 * 3600 + 1800));
        let d = parse_time("2026-11-20Z").unwrap();
        assert_eq!(d.to_rfc3339(), "2026-11-20T23:59:59.999999999+00:00");
        assert!(parse_time("2026-11-20").is_ok());
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("2026-13-01").is_err());
    }

    #[test]
    fn several_are_each_taken_once_in_order_or_all_the_filter_passes() {
        let snap = |host: &str, t: &str| Snapshot {
            version: 1,
            time: DateTime::parse_from_rfc3339(t).unwrap(),
            tree: Id([0; 32]),
            paths: vec!["/data".into()],
            hostname: host.into(),
            username: String::new(),
            uid: 0,
            gid: 0,
            tags: Vec::new(),
            parent: None,
            program_version: String::new(),
            summary: None,
            original: None,
        };
        let set = SnapshotSet {
            list: vec![
                (Id([1; 32]), snap("a", "2026-01-01T00:00:00Z")),
                (Id([2; 32]), snap("b", "2026-01-02T00:00:00Z")),
                (Id([3; 32]), snap("a", "2026-01-03T00:00:00Z")),
            ],
            unreadable: Vec::new(),
        };
        let ids = |v: Vec<(Id, Snapshot)>| v.into_iter().map(|(id, _)| id.0[0]).collect::<Vec<_>>();
        let none = SnapshotFilter::default();
        let named = ["0303".to_string(), "latest".into(), "0101".into()];
        assert_eq!(ids(select_many(&set, &named, &none).unwrap()), [3, 1]);
        let host_a = SnapshotFilter {
            hosts: vec!["a".into()],
            ..Default::default()
        };
        assert_eq!(ids(select_many(&set, &[], &host_a).unwrap()), [1, 3]);
        assert!(select_many(&set, &["0909".to_string()], &none).is_err());
    }

    #[test]
    fn subpaths() {
        assert_eq!(split_subpath("latest:/etc/x"), ("latest", Some("/etc/x")));
        assert_eq!(
            split_subpath("@2026-11-20 14:00:/etc"),
            ("@2026-11-20 14:00", Some("/etc"))
        );
        assert_eq!(
            split_subpath("@2026-11-20 14:00"),
            ("@2026-11-20 14:00", None)
        );
        assert_eq!(split_subpath("abcd"), ("abcd", None));
    }
}
