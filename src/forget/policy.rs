//! Retention policy for `cairn forget`: which snapshots of one group to keep.
//!
//! The semantics are restic's `forget` (0.17): snapshots are walked newest first; each
//! count bucket keeps the newest snapshot of every period it has not seen yet until its
//! count runs out; a bucket with count left at the oldest snapshot keeps that one too;
//! the `within` windows are measured back from the newest snapshot that is not in the
//! future. Calendar fields come from each snapshot's own UTC offset, as restic reads
//! them from the time zone recorded with the snapshot.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, FixedOffset, Months, TimeDelta, Timelike, Utc};

use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::snapshot::Snapshot;

/// A span of calendar time for `--keep-within*`, written like `2y5m7d3h`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Duration {
    pub years: u32,
    pub months: u32,
    pub days: u32,
    pub hours: u32,
}

impl Duration {
    pub fn is_zero(&self) -> bool {
        *self == Duration::default()
    }

    /// `t` moved back by this duration: years and months on the calendar (a day past
    /// the end of the target month is clamped to its last day), then days and hours as
    /// fixed spans. Saturates at the earliest representable time.
    pub fn before(&self, t: DateTime<FixedOffset>) -> DateTime<FixedOffset> {
        let months = self
            .years
            .checked_mul(12)
            .and_then(|m| m.checked_add(self.months));
        let span = TimeDelta::try_days(i64::from(self.days))
            .zip(TimeDelta::try_hours(i64::from(self.hours)))
            .and_then(|(d, h)| d.checked_add(&h));
        months
            .zip(span)
            .and_then(|(m, span)| {
                t.checked_sub_months(Months::new(m))
                    .and_then(|t| t.checked_sub_signed(span))
            })
            .unwrap_or_else(|| DateTime::<Utc>::MIN_UTC.fixed_offset())
    }
}

impl FromStr for Duration {
    type Err = Error;

    /// Numbers with units `y`, `m` (months), `d`, `h`, each at most once and in that order.
    fn from_str(s: &str) -> Result<Duration> {
        let bad = |why: &str| {
            Error::Usage(format!(
                "invalid duration {s:?}: {why} (expected something like 2y5m7d3h)"
            ))
        };
        let mut rest = s.trim();
        if rest.is_empty() {
            return Err(bad("it is empty"));
        }
        let mut d = Duration::default();
        let mut next_unit = 0; // index in "ymdh" of the first unit still allowed
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(bad("expected a number"));
            }
            let n: u32 = rest[..digits]
                .parse()
                .map_err(|_| bad("number too large"))?;
            let unit = rest[digits..]
                .chars()
                .next()
                .ok_or_else(|| bad("a number without a unit"))?;
            let i = "ymdh"
                .find(unit)
                .ok_or_else(|| bad("units are y, m, d and h"))?;
            if i < next_unit {
                return Err(bad(
                    "units must come in the order y, m, d, h, each at most once",
                ));
            }
            next_unit = i + 1;
            match i {
                0 => d.years = n,
                1 => d.months = n,
                2 => d.days = n,
                _ => d.hours = n,
            }
            rest = &rest[digits + unit.len_utf8()..];
        }
        Ok(d)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0h");
        }
        for (n, unit) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if n != 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

/// The `--keep-*` options. Counts: 0 = not used, -1 = unlimited. A zero duration
/// counts as not given, as in restic.
#[derive(Clone, Debug, Default)]
pub struct KeepPolicy {
    pub last: i64,
    pub hourly: i64,
    pub daily: i64,
    pub weekly: i64,
    pub monthly: i64,
    pub yearly: i64,
    pub within: Option<Duration>,
    pub within_hourly: Option<Duration>,
    pub within_daily: Option<Duration>,
    pub within_weekly: Option<Duration>,
    pub within_monthly: Option<Duration>,
    pub within_yearly: Option<Duration>,
    /// Each entry a comma-separated tag list; a snapshot with all tags of one is kept.
    pub tags: Vec<String>,
}

impl KeepPolicy {
    pub fn is_empty(&self) -> bool {
        self.counts().iter().all(|&(_, n)| n == 0)
            && active(self.within).is_none()
            && self.withins().iter().all(|&(_, d)| active(d).is_none())
            && self.tags.is_empty()
    }

    fn counts(&self) -> [(Period, i64); 6] {
        [
            (Period::Last, self.last),
            (Period::Hourly, self.hourly),
            (Period::Daily, self.daily),
            (Period::Weekly, self.weekly),
            (Period::Monthly, self.monthly),
            (Period::Yearly, self.yearly),
        ]
    }

    fn withins(&self) -> [(Period, Option<Duration>); 5] {
        [
            (Period::Hourly, self.within_hourly),
            (Period::Daily, self.within_daily),
            (Period::Weekly, self.within_weekly),
            (Period::Monthly, self.within_monthly),
            (Period::Yearly, self.within_yearly),
        ]
    }
}

fn active(d: Option<Duration>) -> Option<Duration> {
    d.filter(|d| !d.is_zero())
}

/// What to do with one snapshot, and why it is kept (empty when it is not).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Decision {
    pub id: Id,
    pub keep: bool,
    pub reasons: Vec<String>,
}

#[derive(Clone, Copy)]
enum Period {
    Last,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Period {
    fn name(self) -> &'static str {
        match self {
            Period::Last => "last",
            Period::Hourly => "hourly",
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
            Period::Yearly => "yearly",
        }
    }

    /// The period `t` falls in, from its own offset's calendar. `nr` is the snapshot's
    /// place newest first, so for `Last` every snapshot is a period of its own.
    fn key(self, t: &DateTime<FixedOffset>, nr: usize) -> i64 {
        let y = i64::from(t.year());
        let m = i64::from(t.month());
        let d = i64::from(t.day());
        match self {
            Period::Last => nr as i64,
            Period::Hourly => ((y * 100 + m) * 100 + d) * 100 + i64::from(t.hour()),
            Period::Daily => (y * 100 + m) * 100 + d,
            Period::Weekly => {
                let w = t.iso_week();
                i64::from(w.year()) * 100 + i64::from(w.week())
            }
            Period::Monthly => y * 100 + m,
            Period::Yearly => y,
        }
    }
}

struct Bucket {
    period: Period,
    left: i64, // -1 = unlimited
    seen: Option<i64>,
}

struct WithinBucket {
    period: Period,
    dur: Duration,
    cutoff: DateTime<FixedOffset>,
    seen: Option<i64>,
}

/// restic's rule: the snapshot has every tag of the list, except that an empty tag
/// matches a snapshot without tags (so `--keep-tag ''` keeps the untagged ones).
fn has_tags(snap: &Snapshot, list: &[&str]) -> bool {
    for tag in list {
        if tag.is_empty() && snap.tags.is_empty() {
            return true;
        }
        if !snap.has_tag(tag) {
            return false;
        }
    }
    true
}

/// Applies the policy to one group. Input in any order; output newest first.
/// Snapshots with equal times are ordered by id, higher first, so the result does not
/// depend on the order the repository listed them in.
pub fn apply(
    group: &[(Id, &Snapshot)],
    policy: &KeepPolicy,
    now: DateTime<FixedOffset>,
) -> Result<Vec<Decision>> {
    if policy.is_empty() {
        return Err(Error::Usage(
            "refusing to forget with an empty policy: give at least one --keep-* option".into(),
        ));
    }
    for (p, n) in policy.counts() {
        if n < -1 {
            return Err(Error::Usage(format!(
                "--keep-{} {n}: a count must be at least 0, or -1 for unlimited",
                p.name()
            )));
        }
    }
    if group.is_empty() {
        return Ok(Vec::new());
    }

    let mut list = group.to_vec();
    list.sort_by(|a, b| b.1.time.cmp(&a.1.time).then_with(|| b.0.cmp(&a.0)));
    // Windows start from the newest snapshot not in the future, so one snapshot from a
    // machine with a wrong clock cannot slide the window past the real history.
    let reference = list
        .iter()
        .map(|e| e.1.time)
        .find(|t| *t <= now)
        .unwrap_or(now);

    let tag_lists: Vec<Vec<&str>> = policy
        .tags
        .iter()
        .map(|l| l.split(',').map(str::trim).collect())
        .collect();
    let within = active(policy.within).map(|d| (d, d.before(reference)));
    let mut buckets: Vec<Bucket> = policy
        .counts()
        .into_iter()
        .filter(|&(_, n)| n != 0)
        .map(|(period, left)| Bucket {
            period,
            left,
            seen: None,
        })
        .collect();
    let mut within_buckets: Vec<WithinBucket> = policy
        .withins()
        .into_iter()
        .filter_map(|(period, d)| {
            active(d).map(|dur| WithinBucket {
                period,
                dur,
                cutoff: dur.before(reference),
                seen: None,
            })
        })
        .collect();

    let oldest = list.len() - 1;
    let mut out = Vec::with_capacity(list.len());
    for (nr, (id, snap)) in list.into_iter().enumerate() {
        let t = &snap.time;
        let mut reasons = Vec::new();
        for l in &tag_lists {
            if has_tags(snap, l) {
                reasons.push(format!("has tags [{}]", l.join(", ")));
            }
        }
        if let Some((d, cutoff)) = within {
            if *t > cutoff {
                reasons.push(format!("within {d}"));
            }
        }
        for b in &mut buckets {
            if b.left == 0 {
                continue;
            }
            let key = b.period.key(t, nr);
            let opens = b.seen != Some(key);
            // Count left at the oldest snapshot: keep it too, so a history shorter than
            // the policy is kept as far back as it goes.
            if opens || nr == oldest {
                let what = format!("{} snapshot", b.period.name());
                reasons.push(if opens {
                    what
                } else {
                    format!("oldest {what}")
                });
                b.seen = Some(key);
                if b.left > 0 {
                    b.left -= 1;
                }
            }
        }
        for w in &mut within_buckets {
            if *t > w.cutoff {
                let key = w.period.key(t, nr);
                if w.seen != Some(key) {
                    reasons.push(format!("{} within {}", w.period.name(), w.dur));
                    w.seen = Some(key);
                }
            }
        }
        out.push(Decision {
            id,
            keep: !reasons.is_empty(),
            reasons,
        });
    }

    if !out.iter().any(|d| d.keep) {
        return Err(Error::Usage(format!(
            "refusing to forget: the policy would remove every snapshot of the group \
             (all {} of them)",
            out.len()
        )));
    }
    Ok(out)
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
