//! Hand-worked retention tables for `policy::apply`.

use super::*;

const NOW: &str = "2030-01-01T00:00:00Z";

fn t(s: &str) -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339(s).unwrap()
}

fn snap(time: &str, tags: &[&str]) -> Snapshot {
    Snapshot {
        version: 1,
        time: t(time),
        tree: Id([0; 32]),
        paths: vec!["/data".into()],
        hostname: "h".into(),
        username: "u".into(),
        uid: 0,
        gid: 0,
        tags: tags.iter().map(|s| s.to_string()).collect(),
        parent: None,
        program_version: "t".into(),
        summary: None,
        original: None,
    }
}

fn untagged(times: &[&str]) -> Vec<Snapshot> {
    times.iter().map(|s| snap(s, &[])).collect()
}

/// Row i of a table (tables are written newest first) gets id `Id([i + 1; 32])`.
/// The group is passed oldest first so that the sort in `apply` matters.
fn run(snaps: &[Snapshot], p: &KeepPolicy, now: &str) -> Result<Vec<Decision>> {
    let group: Vec<(Id, &Snapshot)> = snaps
        .iter()
        .enumerate()
        .rev()
        .map(|(i, s)| (Id([i as u8 + 1; 32]), s))
        .collect();
    apply(&group, p, t(now))
}

/// Row numbers of the kept snapshots, newest first.
fn kept_ids(d: &[Decision]) -> Vec<u8> {
    d.iter().filter(|d| d.keep).map(|d| d.id.0[0]).collect()
}

fn kept(times: &[&str], p: &KeepPolicy) -> Vec<u8> {
    kept_ids(&run(&untagged(times), p, NOW).unwrap())
}

fn reasons(d: &[Decision], row: u8) -> Vec<String> {
    d.iter()
        .find(|d| d.id == Id([row; 32]))
        .unwrap()
        .reasons
        .clone()
}

fn dur(s: &str) -> Duration {
    s.parse().unwrap()
}

/// A policy from CLI-like flags, e.g. "--keep-daily 3 --keep-tag a,b".
fn pol(flags: &str) -> KeepPolicy {
    let mut p = KeepPolicy::default();
    let words: Vec<&str> = flags.split_whitespace().collect();
    for w in words.chunks(2) {
        let v = w[1];
        let n = || v.parse::<i64>().unwrap();
        match w[0].trim_start_matches("--keep-") {
            "last" => p.last = n(),
            "hourly" => p.hourly = n(),
            "daily" => p.daily = n(),
            "weekly" => p.weekly = n(),
            "monthly" => p.monthly = n(),
            "yearly" => p.yearly = n(),
            "within" => p.within = Some(dur(v)),
            "within-hourly" => p.within_hourly = Some(dur(v)),
            "within-daily" => p.within_daily = Some(dur(v)),
            "within-weekly" => p.within_weekly = Some(dur(v)),
            "within-monthly" => p.within_monthly = Some(dur(v)),
            "within-yearly" => p.within_yearly = Some(dur(v)),
            "tag" => p.tags.push(v.into()),
            f => panic!("unknown flag {f}"),
        }
    }
    p
}

fn usage_msg(e: Error) -> String {
    match e {
        Error::Usage(m) => m,
        other => panic!("expected a usage error, got {other:?}"),
    }
}

#[test]
fn keep_last() {
    let h = [
        "2026-05-10T12:00:00Z",
        "2026-05-10T11:00:00Z",
        "2026-05-09T12:00:00Z",
        "2026-05-01T00:00:00Z",
        "2026-04-01T00:00:00Z",
    ];
    // The 3 newest, however they are spaced; no count left at the oldest.
    assert_eq!(kept(&h, &pol("--keep-last 3")), [1, 2, 3]);
    // More count than snapshots: all, the oldest as a plain "last snapshot" since
    // every snapshot is a period of its own.
    let d = run(&untagged(&h), &pol("--keep-last 10"), NOW).unwrap();
    assert_eq!(kept_ids(&d), [1, 2, 3, 4, 5]);
    assert_eq!(reasons(&d, 5), ["last snapshot"]);
    assert_eq!(kept(&h, &pol("--keep-last -1")), [1, 2, 3, 4, 5]);
    // Output is every snapshot, newest first, whatever the input order.
    let order: Vec<u8> = d.iter().map(|d| d.id.0[0]).collect();
    assert_eq!(order, [1, 2, 3, 4, 5]);
}

#[test]
fn hourly_several_in_one_hour() {
    let h = [
        "2026-05-10T12:59:59Z",
        "2026-05-10T12:30:00Z",
        "2026-05-10T12:00:00Z",
        "2026-05-10T11:45:00Z",
        "2026-05-10T11:10:00Z",
        "2026-05-10T09:00:00Z",
        "2026-05-10T08:59:59Z",
    ];
    // Newest of hours 12, 11, 9; hour 10 is empty and costs nothing; 8 is one too many.
    assert_eq!(kept(&h, &pol("--keep-hourly 3")), [1, 4, 6]);
    // Count 5: hour 8 too, as an ordinary hourly (it opens a new hour).
    let d = run(&untagged(&h), &pol("--keep-hourly 5"), NOW).unwrap();
    assert_eq!(kept_ids(&d), [1, 4, 6, 7]);
    assert_eq!(reasons(&d, 7), ["hourly snapshot"]);
}

#[test]
fn daily_across_a_gap_of_weeks() {
    let h = [
        "2026-03-20T08:00:00Z",
        "2026-03-20T07:00:00Z",
        "2026-03-19T23:59:59Z",
        "2026-02-10T10:00:00Z",
        "2026-02-10T09:00:00Z",
        "2026-01-05T00:00:00Z",
    ];
    // Days with snapshots count, not calendar days: the five empty weeks cost nothing.
    assert_eq!(kept(&h, &pol("--keep-daily 3")), [1, 3, 4]);
    assert_eq!(kept(&h, &pol("--keep-daily 4")), [1, 3, 4, 6]);
    assert_eq!(kept(&h, &pol("--keep-daily -1")), [1, 3, 4, 6]);
}

#[test]
fn weekly_by_iso_week_across_year_ends() {
    let h = [
        "2027-01-04T09:00:00Z", // 2027-W01 (Monday)
        "2027-01-03T09:00:00Z", // 2026-W53
        "2027-01-01T09:00:00Z", // 2026-W53
        "2026-12-31T09:00:00Z", // 2026-W53
        "2026-12-28T00:00:00Z", // 2026-W53 (Monday)
        "2026-12-27T23:00:00Z", // 2026-W52 (Sunday)
        "2026-12-21T12:00:00Z", // 2026-W52
        "2026-12-20T12:00:00Z", // 2026-W51
    ];
    // 2027-W01, 2026-W53 (spanning the new year: one week, not two), 2026-W52.
    assert_eq!(kept(&h, &pol("--keep-weekly 3")), [1, 2, 6]);
    // The calendar year does split it: 2027 (row 1), then 2026 (row 4).
    assert_eq!(kept(&h, &pol("--keep-yearly 2")), [1, 4]);

    let h = [
        "2021-01-04T00:00:00Z", // 2021-W01
        "2021-01-01T12:00:00Z", // 2020-W53
        "2020-12-31T12:00:00Z", // 2020-W53
        "2020-12-27T12:00:00Z", // 2020-W52
    ];
    assert_eq!(kept(&h, &pol("--keep-weekly -1")), [1, 2, 4]);
}

#[test]
fn monthly_and_yearly() {
    let h = [
        "2026-03-15T00:00:00Z",
        "2026-03-01T00:00:00Z",
        "2026-02-28T23:59:59Z",
        "2025-12-31T23:00:00Z",
        "2025-06-01T00:00:00Z",
        "2024-12-01T00:00:00Z",
        "2023-01-01T00:00:00Z",
    ];
    // 2026-03, 2026-02, 2025-12.
    assert_eq!(kept(&h, &pol("--keep-monthly 3")), [1, 3, 4]);
    // 2026, 2025.
    assert_eq!(kept(&h, &pol("--keep-yearly 2")), [1, 4]);
    // Row 1 opens a month and a year and counts in both buckets.
    let p = pol("--keep-monthly 2 --keep-yearly 3");
    let d = run(&untagged(&h), &p, NOW).unwrap();
    assert_eq!(kept_ids(&d), [1, 3, 4, 6]);
    assert_eq!(reasons(&d, 1), ["monthly snapshot", "yearly snapshot"]);
    assert_eq!(reasons(&d, 6), ["yearly snapshot"]);
}

#[test]
fn oldest_is_kept_while_count_is_left() {
    let h = [
        "2026-05-10T12:00:00Z",
        "2026-05-10T11:00:00Z",
        "2026-05-10T10:00:00Z",
    ];
    // One day only: daily keeps row 1; 4 counts are left at row 3, so it stays too.
    let d = run(&untagged(&h), &pol("--keep-daily 5"), NOW).unwrap();
    assert_eq!(kept_ids(&d), [1, 3]);
    assert_eq!(reasons(&d, 3), ["oldest daily snapshot"]);
    assert_eq!(kept(&h, &pol("--keep-daily -1")), [1, 3]);
    // No count left: no oldest.
    assert_eq!(kept(&h, &pol("--keep-daily 1")), [1]);
    // Only the bucket with count left names it; last ran out at row 2.
    let p = pol("--keep-last 2 --keep-daily 5");
    let d = run(&untagged(&h), &p, NOW).unwrap();
    assert_eq!(kept_ids(&d), [1, 2, 3]);
    assert_eq!(reasons(&d, 1), ["last snapshot", "daily snapshot"]);
    assert_eq!(reasons(&d, 3), ["oldest daily snapshot"]);
    // The within buckets have no oldest rule.
    assert_eq!(kept(&h, &pol("--keep-within-daily 30d")), [1]);
}

#[test]
fn equal_timestamps_order_by_id() {
    let snaps = untagged(&[
        "2026-05-10T12:00:00Z",
        "2026-05-10T14:00:00+02:00", // the same instant as rows 1 and 3
        "2026-05-10T12:00:00Z",
        "2026-05-09T12:00:00Z",
    ]);
    // Equal times: higher id first, so the order is 3, 2, 1, 4.
    let d = run(&snaps, &pol("--keep-last 1"), NOW).unwrap();
    assert_eq!(
        d.iter().map(|d| d.id.0[0]).collect::<Vec<_>>(),
        [3, 2, 1, 4]
    );
    assert_eq!(kept_ids(&d), [3]);
    let p = pol("--keep-daily 2");
    let d = run(&snaps, &p, NOW).unwrap();
    assert_eq!(kept_ids(&d), [3, 4]);
    // Any input order gives the same decisions.
    for rot in 0..snaps.len() {
        let mut group: Vec<(Id, &Snapshot)> = snaps
            .iter()
            .enumerate()
            .map(|(i, s)| (Id([i as u8 + 1; 32]), s))
            .collect();
        group.rotate_left(rot);
        assert_eq!(apply(&group, &p, t(NOW)).unwrap(), d);
    }
}

#[test]
fn within_ignores_future_snapshots_as_reference() {
    let h = [
        "2026-09-01T00:00:00Z", // future: a machine with a wrong clock
        "2026-05-31T12:00:00Z", // the reference
        "2026-05-25T12:00:00Z",
        "2026-05-24T12:00:00Z", // exactly 7 days back: not after the cutoff
        "2026-05-20T00:00:00Z",
    ];
    let p = pol("--keep-within 7d");
    // Measured from row 2, not row 1 (that would keep row 1 alone); the future
    // snapshot itself is newer than the cutoff and kept.
    let d = run(&untagged(&h), &p, "2026-06-01T00:00:00Z").unwrap();
    assert_eq!(kept_ids(&d), [1, 2, 3]);
    assert_eq!(reasons(&d, 1), ["within 7d"]);
    // A snapshot at exactly `now` is not in the future.
    let d = run(&untagged(&h), &p, "2026-05-31T12:00:00Z").unwrap();
    assert_eq!(kept_ids(&d), [1, 2, 3]);
    // All in the future: measured from now, so all are within.
    let d = run(&untagged(&h), &p, "2026-01-01T00:00:00Z").unwrap();
    assert_eq!(kept_ids(&d), [1, 2, 3, 4, 5]);
}

#[test]
fn within_buckets() {
    let h = [
        "2026-05-10T20:00:00Z", // Sunday, 2026-W19
        "2026-05-10T08:00:00Z",
        "2026-05-09T23:00:00Z",
        "2026-05-08T13:00:00Z",
        "2026-05-08T11:00:00Z",
        "2026-05-07T12:00:00Z",
    ];
    // Cutoff 05-08T20:00: rows 1-3 are within; newest of 05-10 and of 05-09.
    let p = pol("--keep-within-daily 2d");
    let d = run(&untagged(&h), &p, NOW).unwrap();
    assert_eq!(kept_ids(&d), [1, 3]);
    assert_eq!(reasons(&d, 1), ["daily within 2d"]);
    // Cutoff 05-10T08:00, and row 2 is on it, not after it.
    assert_eq!(kept(&h, &pol("--keep-within-hourly 12h")), [1]);
    let p = pol("--keep-within-hourly 12h --keep-within-daily 2d");
    let d = run(&untagged(&h), &p, NOW).unwrap();
    assert_eq!(kept_ids(&d), [1, 3]);
    assert_eq!(reasons(&d, 1), ["hourly within 12h", "daily within 2d"]);
    // All within a month, and all in the same ISO week.
    assert_eq!(kept(&h, &pol("--keep-within-weekly 1m")), [1]);

    let h = [
        "2026-03-15T00:00:00Z",
        "2026-03-01T00:00:00Z",
        "2026-02-28T23:59:59Z",
        "2026-01-14T00:00:00Z", // before the cutoff 2026-01-15T00:00
    ];
    assert_eq!(kept(&h, &pol("--keep-within-monthly 2m")), [1, 3]);
    assert_eq!(kept(&h, &pol("--keep-within-yearly 1y")), [1]);
}

#[test]
fn keep_tag() {
    let snaps = [
        snap("2026-05-10T00:00:00Z", &["a", "b"]),
        snap("2026-05-09T00:00:00Z", &["a"]),
        snap("2026-05-08T00:00:00Z", &["b", "c"]),
        snap("2026-05-07T00:00:00Z", &[]),
        snap("2026-05-06T00:00:00Z", &["c", "a", "b"]),
    ];
    fn tags(l: &[&str]) -> KeepPolicy {
        KeepPolicy {
            tags: l.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }
    // All of a and b: rows 1 and 5 (order of tags does not matter), not row 2.
    let d = run(&snaps, &pol("--keep-tag a,b"), NOW).unwrap();
    assert_eq!(kept_ids(&d), [1, 5]);
    assert_eq!(reasons(&d, 1), ["has tags [a, b]"]);
    // One list or the other; spaces around tags are trimmed.
    let d = run(&snaps, &tags(&["a, b", "c"]), NOW).unwrap();
    assert_eq!(kept_ids(&d), [1, 3, 5]);
    assert_eq!(reasons(&d, 5), ["has tags [a, b]", "has tags [c]"]);
    // An empty tag matches snapshots without tags.
    assert_eq!(kept_ids(&run(&snaps, &tags(&[""]), NOW).unwrap()), [4]);
    // Tags use no count: last 1 keeps row 1, tag a rows 1, 2, 5.
    let p = pol("--keep-last 1 --keep-tag a");
    assert_eq!(kept_ids(&run(&snaps, &p, NOW).unwrap()), [1, 2, 5]);
}

#[test]
fn calendar_in_the_snapshots_own_offset() {
    let h = [
        "2026-03-01T00:30:00+02:00", // February 28, 22:30 in UTC
        "2026-02-28T22:00:00Z",
        "2026-02-10T00:00:00Z",
    ];
    // March, then February. In UTC all three would be February: rows 1 and 3
    // (the oldest rule) would be kept instead.
    assert_eq!(kept(&h, &pol("--keep-monthly 2")), [1, 2]);
    assert_eq!(kept(&h, &pol("--keep-daily 2")), [1, 2]);

    let h = [
        "2026-12-31T23:30:00-05:00", // 2027-01-01T04:30 in UTC
        "2027-01-01T01:00:00Z",
        "2026-06-01T00:00:00Z",
    ];
    // 2026, then 2027; in UTC rows 1 and 2 would share 2027.
    assert_eq!(kept(&h, &pol("--keep-yearly 2")), [1, 2]);
}

#[test]
fn combined_policy_reasons() {
    let h = [
        "2026-05-10T18:00:00Z", // Sunday, W19, May
        "2026-05-10T06:00:00Z",
        "2026-05-09T12:00:00Z", // W19
        "2026-05-04T12:00:00Z", // Monday, W19
        "2026-05-03T12:00:00Z", // W18
        "2026-04-26T12:00:00Z", // W17, April
        "2026-03-01T12:00:00Z", // March
    ];
    let p = pol("--keep-last 2 --keep-daily 2 --keep-weekly 2 --keep-monthly 2");
    let d = run(&untagged(&h), &p, NOW).unwrap();
    // Row 4 opens nothing new; row 7 comes after every count ran out.
    assert_eq!(kept_ids(&d), [1, 2, 3, 5, 6]);
    let want: [&[&str]; 7] = [
        &[
            "last snapshot",
            "daily snapshot",
            "weekly snapshot",
            "monthly snapshot",
        ],
        &["last snapshot"],
        &["daily snapshot"],
        &[],
        &["weekly snapshot"],
        &["monthly snapshot"],
        &[],
    ];
    for (row, w) in (1u8..).zip(want) {
        assert_eq!(reasons(&d, row), w, "row {row}");
    }
}

#[test]
fn per_group() {
    let mut snaps = untagged(&[
        "2026-05-10T12:00:00Z", // host a
        "2026-05-09T12:00:00Z", // host a
        "2026-01-01T12:00:00Z", // host b
        "2025-12-20T12:00:00Z", // host b
    ]);
    snaps[2].hostname = "b".into();
    snaps[3].hostname = "b".into();
    let p = pol("--keep-within 7d");
    let group: Vec<(Id, &Snapshot)> = snaps
        .iter()
        .enumerate()
        .map(|(i, s)| (Id([i as u8 + 1; 32]), s))
        .collect();
    // Each group measures from its own newest snapshot.
    assert_eq!(kept_ids(&apply(&group[..2], &p, t(NOW)).unwrap()), [1, 2]);
    assert_eq!(kept_ids(&apply(&group[2..], &p, t(NOW)).unwrap()), [3]);
    // Mixed into one group, host b would lose everything.
    assert_eq!(kept_ids(&apply(&group, &p, t(NOW)).unwrap()), [1, 2]);
}

#[test]
fn empty_policy_refused() {
    let one = untagged(&["2026-05-10T12:00:00Z"]);
    assert!(KeepPolicy::default().is_empty());
    let m = usage_msg(run(&one, &KeepPolicy::default(), NOW).unwrap_err());
    assert!(m.contains("empty policy"), "{m}");
    // A zero duration is no policy either, as in restic.
    let zero = pol("--keep-within 0h");
    assert!(zero.is_empty());
    assert!(run(&[], &zero, NOW).is_err());
    // -1 is a policy; an empty group needs no decisions.
    let all = pol("--keep-last -1");
    assert!(!all.is_empty());
    assert!(run(&[], &all, NOW).unwrap().is_empty());
    let m = usage_msg(run(&one, &pol("--keep-daily -2"), NOW).unwrap_err());
    assert!(m.contains("--keep-daily -2"), "{m}");
}

#[test]
fn removing_every_snapshot_refused() {
    let snaps = [
        snap("2026-05-10T12:00:00Z", &["x"]),
        snap("2026-05-09T12:00:00Z", &[]),
    ];
    let p = pol("--keep-tag nope");
    let m = usage_msg(run(&snaps, &p, NOW).unwrap_err());
    assert!(m.contains("every snapshot"), "{m}");
    let p = pol("--keep-tag x");
    assert_eq!(kept_ids(&run(&snaps, &p, NOW).unwrap()), [1]);
}

#[test]
fn duration_parse_and_display() {
    let d = dur("2y5m7d3h");
    assert_eq!((d.years, d.months, d.days, d.hours), (2, 5, 7, 3));
    for s in ["2y5m7d3h", "7d", "1y3h", "5m", "0h", "12m30d"] {
        assert_eq!(dur(s).to_string(), s);
    }
    assert_eq!(dur(" 5d ").to_string(), "5d");
    assert_eq!(dur("0y0d").to_string(), "0h");
    assert!(dur("0h").is_zero());
    for bad in [
        "5x",
        "",
        "m5",
        "5",
        "3d2m",
        "1d1d",
        "-1d",
        "1.5d",
        "5D",
        "9999999999y",
    ] {
        let e = bad.parse::<Duration>().unwrap_err();
        assert!(matches!(e, Error::Usage(_)), "{bad:?}: {e:?}");
    }
}

#[test]
fn duration_before() {
    for (d, from, to) in [
        // Months on the calendar, clamped to the end of the shorter month.
        (
            "1m",
            "2026-03-31T10:00:00+02:00",
            "2026-02-28T10:00:00+02:00",
        ),
        ("1y", "2024-02-29T00:00:00Z", "2023-02-28T00:00:00Z"),
        // Days and hours as spans, across a month end.
        ("2d3h", "2026-03-01T01:00:00Z", "2026-02-26T22:00:00Z"),
        // 29 months back from 2026-05 is 2023-12, then 7 days and 3 hours.
        (
            "2y5m7d3h",
            "2026-05-10T12:00:00+02:00",
            "2023-12-03T09:00:00+02:00",
        ),
    ] {
        assert_eq!(dur(d).before(t(from)), t(to), "{d} before {from}");
    }
    // Too far back saturates instead of panicking.
    assert!(dur("4000000000y").before(t(NOW)) < t("0001-01-01T00:00:00Z"));
}
