//! Schedules: cron expressions (croner, in a time zone) and intervals (`every 6h`); the
//! daemon loop (`daemon`) and systemd units / crontab lines (`units`).

pub mod daemon;
pub mod units;

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;

use super::profile::parse_duration;

#[derive(Debug, Clone)]
pub enum Schedule {
    /// A cron expression (5 fields, or @daily and the like), evaluated in local time.
    Cron(Box<Cron>, String),
    /// A fixed interval from the previous run's start.
    Every(Duration),
}

impl Schedule {
    pub fn parse(s: &str) -> Result<Schedule, String> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("every ") {
            let d = parse_duration(rest)
                .filter(|d| d.as_secs() >= 60)
                .ok_or_else(|| {
                    format!(
                        "{s:?}: an interval is `every` and at least a minute (every 6h, every 30m)"
                    )
                })?;
            return Ok(Schedule::Every(d));
        }
        let fields = s.split_whitespace().count();
        if !s.starts_with('@') && fields != 5 {
            return Err(format!(
                "{s:?}: a cron expression has 5 fields (minute hour day month weekday), this has {fields}"
            ));
        }
        let cron = Cron::from_str(s).map_err(|e| format!("{s:?}: {e}"))?;
        Ok(Schedule::Cron(Box::new(cron), s.to_string()))
    }

    /// The first time this schedule fires strictly after `after`, in time zone `tz`
    /// (None: the machine's). A local time skipped by a daylight-saving change fires once
    /// after the change; a local time that happens twice fires once.
    pub fn next_after(&self, after: DateTime<Utc>, tz: Option<Tz>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Every(d) => Some(after + chrono::Duration::from_std(*d).ok()?),
            Schedule::Cron(c, _) => match tz {
                Some(tz) => c
                    .find_next_occurrence(&after.with_timezone(&tz), false)
                    .ok()
                    .map(|t| t.with_timezone(&Utc)),
                None => c
                    .find_next_occurrence(&after.with_timezone(&chrono::Local), false)
                    .ok()
                    .map(|t| t.with_timezone(&Utc)),
            },
        }
    }
}

/// The time zone a profile names (None: the machine's).
pub fn zone(name: Option<&str>) -> Result<Option<Tz>, String> {
    name.map(|n| {
        n.parse::<Tz>()
            .map_err(|_| format!("unknown time zone {n:?}"))
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn cron_in_a_time_zone() {
        let s = Schedule::parse("0 3 * * *").unwrap();
        let tz = Some(chrono_tz::Europe::Berlin);
        // 03:00 in Berlin is 02:00 UTC in winter.
        assert_eq!(
            s.next_after(utc("2026-12-06T10:00:00Z"), tz).unwrap(),
            utc("2026-12-07T02:00:00Z")
        );
        assert_eq!(
            s.next_after(utc("2026-12-07T02:00:00Z"), tz).unwrap(),
            utc("2026-12-08T02:00:00Z")
        );
    }

    #[test]
    fn daylight_saving_days_fire_once() {
        let tz = Some(chrono_tz::Europe::Berlin);
        // 2026-03-29: 02:00 -> 03:00 in Berlin; 02:30 does not exist that day.
        let s = Schedule::parse("30 2 * * *").unwrap();
        let day_before = utc("2026-03-28T12:00:00Z");
        let first = s.next_after(day_before, tz).unwrap();
        assert!(
            first > utc("2026-03-29T00:00:00Z") && first < utc("2026-03-30T00:00:00Z"),
            "{first}"
        );
        let second = s.next_after(first, tz).unwrap();
        assert_eq!(second, utc("2026-03-30T00:30:00Z"));
        // 2026-10-25: 03:00 -> 02:00; 02:30 happens twice, the run is once.
        let before = utc("2026-10-24T12:00:00Z");
        let a = s.next_after(before, tz).unwrap();
        let b = s.next_after(a, tz).unwrap();
        assert_eq!(
            a.with_timezone(&chrono_tz::Europe::Berlin).date_naive(),
            chrono::NaiveDate::from_ymd_opt(2026, 10, 25).unwrap()
        );
        assert_eq!(
            b.with_timezone(&chrono_tz::Europe::Berlin).date_naive(),
            chrono::NaiveDate::from_ymd_opt(2026, 10, 26).unwrap()
        );
    }

    #[test]
    fn intervals_and_bad_input() {
        let s = Schedule::parse("every 6h").unwrap();
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(
            s.next_after(t, None).unwrap(),
            t + chrono::Duration::hours(6)
        );
        assert!(Schedule::parse("every 10s").is_err());
        assert!(Schedule::parse("0 3 * *").is_err());
        assert!(Schedule::parse("61 3 * * *").is_err());
        assert!(Schedule::parse("@daily").is_ok());
    }
}
