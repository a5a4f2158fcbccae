//! `cairn schedule install|remove`: a profile's schedule as systemd timer and service
//! units, or as a crontab line where there is no systemd.

use std::path::{Path, PathBuf};

use super::Schedule;

/// The unit files of a profile: (file name, contents).
pub fn systemd_units(
    profile: &str,
    schedule: &str,
    tz: Option<&str>,
    jitter: Option<&str>,
    catch_up: bool,
    exe: &Path,
    config: &Path,
) -> Result<Vec<(String, String)>, String> {
    let s = Schedule::parse(schedule)?;
    let when = match &s {
        Schedule::Every(d) => format!("OnBootSec={0}s\nOnUnitActiveSec={0}s\n", d.as_secs()),
        Schedule::Cron(..) => {
            let mut cal = on_calendar(schedule)?;
            if let Some(tz) = tz {
                cal = format!("{cal} {tz}");
            }
            format!("OnCalendar={cal}\n")
        }
    };
    let mut timer =
        format!("[Unit]\nDescription=cairn backup schedule: profile {profile}\n\n[Timer]\n{when}");
    if catch_up {
        timer += "Persistent=true\n";
    }
    if let Some(j) = jitter.and_then(crate::ops::profile::parse_duration) {
        timer += &format!("RandomizedDelaySec={}s\n", j.as_secs());
    }
    timer += "\n[Install]\nWantedBy=timers.target\n";
    let service = format!(
        "[Unit]\nDescription=cairn backup: profile {profile}\nWants=network-online.target\nAfter=network-online.target\n\n\
         [Service]\nType=oneshot\nExecStart={} --config {} run {profile}\nNice=10\nIOSchedulingClass=idle\n",
        systemd_quote(&exe.display().to_string()),
        systemd_quote(&config.display().to_string()),
    );
    Ok(vec![
        (format!("{}.service", unit_name(profile)), service),
        (format!("{}.timer", unit_name(profile)), timer),
    ])
}

pub fn unit_name(profile: &str) -> String {
    let safe: String = profile
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("cairn-{safe}")
}

fn systemd_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+".contains(c))
    {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// A 5-field cron expression as systemd's OnCalendar= (`0 3 * * 1-5` ->
/// `Mon..Fri *-*-* 03:00:00`). Cron runs when day-of-month OR weekday match if both
/// are given; systemd needs both, so that form is refused.
pub fn on_calendar(cron: &str) -> Result<String, String> {
    match cron.trim() {
        "@hourly" => return Ok("*-*-* *:00:00".into()),
        "@daily" | "@midnight" => return Ok("*-*-* 00:00:00".into()),
        "@weekly" => return Ok("Sun *-*-* 00:00:00".into()),
        "@monthly" => return Ok("*-*-01 00:00:00".into()),
        "@yearly" | "@annually" => return Ok("*-01-01 00:00:00".into()),
        _ => {}
    }
    let f: Vec<&str> = cron.split_whitespace().collect();
    if f.len() != 5 {
        return Err(format!("{cron:?}: expected 5 fields"));
    }
    if f[2] != "*" && f[4] != "*" {
        return Err(format!(
            "{cron:?}: a day of the month and a weekday together mean either one in cron, which systemd cannot say; use two profiles or `schedule install --crontab`"
        ));
    }
    let minute = field(f[0], 0, 2)?;
    let hour = field(f[1], 0, 2)?;
    let dom = field(f[2], 1, 2)?;
    let month = field(f[3], 1, 2)?;
    let dow = if f[4] == "*" {
        String::new()
    } else {
        format!("{} ", weekdays(f[4])?)
    };
    Ok(format!("{dow}*-{month}-{dom} {hour}:{minute}:00"))
}

/// One numeric cron field in systemd's words: `*`, lists, `a-b` -> `a..b`, `*/n` ->
/// `first/n`.
fn field(f: &str, first: u32, width: usize) -> Result<String, String> {
    if f == "*" {
        return Ok("*".into());
    }
    let num = |s: &str| -> Result<String, String> {
        s.parse::<u32>()
            .map(|n| format!("{n:0width$}"))
            .map_err(|_| {
                format!(
                    "{f:?}: names and special characters other than , - / are not supported here"
                )
            })
    };
    let mut parts = Vec::new();
    for p in f.split(',') {
        let (range, step) = match p.split_once('/') {
            Some((r, s)) => (
                r,
                Some(s.parse::<u32>().map_err(|_| format!("{p:?}: bad step"))?),
            ),
            None => (p, None),
        };
        let text = match (range, step) {
            ("*", Some(s)) => format!("{first:0width$}/{s}"),
            (r, Some(s)) if !r.contains('-') => format!("{}/{s}", num(r)?),
            (r, None) => match r.split_once('-') {
                Some((a, b)) => format!("{}..{}", num(a)?, num(b)?),
                None => num(r)?,
            },
            (r, Some(_)) => return Err(format!("{r:?} with a step: not supported here")),
        };
        parts.push(text);
    }
    Ok(parts.join(","))
}

fn weekdays(f: &str) -> Result<String, String> {
    const NAMES: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    let day = |s: &str| -> Result<&str, String> {
        if let Ok(n) = s.parse::<usize>() {
            return NAMES
                .get(n % 7)
                .copied()
                .filter(|_| n <= 7)
                .ok_or_else(|| format!("{s:?}: not a weekday"));
        }
        NAMES
            .iter()
            .find(|n| n.eq_ignore_ascii_case(s))
            .copied()
            .ok_or_else(|| format!("{s:?}: not a weekday"))
    };
    // systemd counts weeks from Monday: a cron range from Sunday (`0-4`) is split.
    let from_monday = |d: &str| (NAMES.iter().position(|n| *n == d).unwrap_or(0) + 6) % 7;
    let mut out = Vec::new();
    for p in f.split(',') {
        match p.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (day(a)?, day(b)?);
                if from_monday(a) <= from_monday(b) {
                    out.push(format!("{a}..{b}"));
                } else {
                    out.push(if a == "Sun" {
                        a.to_string()
                    } else {
                        format!("{a}..Sun")
                    });
                    out.push(format!("Mon..{b}"));
                }
            }
            None => out.push(day(p)?.to_string()),
        }
    }
    Ok(out.join(","))
}

/// The crontab line of a profile. Cron runs in the system's time zone, so a profile
/// with a time zone of its own is refused; it has no jitter or catch-up (the caller
/// says so).
pub fn crontab_line(
    profile: &str,
    schedule: &str,
    tz: Option<&str>,
    exe: &Path,
    config: &Path,
) -> Result<String, String> {
    if let Some(tz) = tz {
        return Err(format!(
            "profile {profile} runs in time zone {tz}, which a crontab line cannot say; use `cairn daemon` or systemd units"
        ));
    }
    let when = match Schedule::parse(schedule)? {
        Schedule::Cron(_, text) => text,
        Schedule::Every(d) => {
            let m = d.as_secs() / 60;
            match m {
                m if m < 60 && 60 % m == 0 => format!("*/{m} * * * *"),
                m if m % 60 == 0 && m / 60 <= 24 && 24 % (m / 60) == 0 => {
                    format!("0 */{} * * *", m / 60)
                }
                _ => {
                    return Err(format!(
                        "{schedule:?} has no crontab form; use a cron expression"
                    ))
                }
            }
        }
    };
    Ok(format!(
        "{when} {} --config {} run {profile} # cairn:{profile}",
        sh_quote(&exe.display().to_string()),
        sh_quote(&config.display().to_string())
    ))
}

fn sh_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Where units go: the system's folder for root, the user's otherwise.
pub fn default_unit_dir() -> PathBuf {
    if nix::unistd::getuid().is_root() {
        PathBuf::from("/etc/systemd/system")
    } else {
        dirs::config_dir()
            .unwrap_or_else(|| PathBuf::from("."))
            .join("systemd/user")
    }
}

/// True when systemd runs this machine.
pub fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_to_on_calendar() {
        assert_eq!(on_calendar("0 3 * * *").unwrap(), "*-*-* 03:00:00");
        assert_eq!(on_calendar("*/15 * * * *").unwrap(), "*-*-* *:00/15:00");
        assert_eq!(on_calendar("30 2 1 * *").unwrap(), "*-*-01 02:30:00");
        assert_eq!(
            on_calendar("0 4 * * 1-5").unwrap(),
            "Mon..Fri *-*-* 04:00:00"
        );
        assert_eq!(
            on_calendar("0 4 * * 0,6").unwrap(),
            "Sun,Sat *-*-* 04:00:00"
        );
        assert_eq!(
            on_calendar("0 4 * * 0-4").unwrap(),
            "Sun,Mon..Thu *-*-* 04:00:00"
        );
        assert_eq!(
            on_calendar("0 4 * * 5-7").unwrap(),
            "Fri..Sun *-*-* 04:00:00"
        );
        assert_eq!(
            on_calendar("5 1,13 * 1-6 *").unwrap(),
            "*-01..06-* 01,13:05:00"
        );
        assert!(on_calendar("0 3 1 * 1").is_err());
    }

    #[test]
    fn crontab_lines() {
        let exe = Path::new("/usr/bin/cairn");
        let cfg = Path::new("/etc/cairn/cairn.toml");
        assert_eq!(
            crontab_line("home", "0 3 * * *", None, exe, cfg).unwrap(),
            "0 3 * * * /usr/bin/cairn --config /etc/cairn/cairn.toml run home # cairn:home"
        );
        assert!(crontab_line("home", "every 6h", None, exe, cfg)
            .unwrap()
            .starts_with("0 */6 * * *"));
        assert!(crontab_line("home", "every 7h", None, exe, cfg).is_err());
    }
}
