//! The configuration file: repositories and profiles, in TOML (docs/config.md).
//!
//! A profile's step tables (`backup`, `forget`, `prune`, `check`, `copy`) hold the flags
//! of those commands by their long names; they are checked against the commands' own
//! definitions (handed in by the CLI as `FlagSpec`s), so every flag can be set and a
//! misspelt one is an error with its line, never silently ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

mod check;

/// The steps of a run, in the order they run.
pub const STEPS: &[&str] = &["backup", "forget", "prune", "check", "copy"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    #[serde(default)]
    pub repositories: BTreeMap<String, RepositoryConf>,
    #[serde(default)]
    pub profiles: BTreeMap<String, ProfileConf>,
    /// Where the run history lives (default: the data directory).
    pub history: Option<PathBuf>,
    #[serde(skip)]
    pub path: PathBuf,
    #[serde(skip)]
    text: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RepositoryConf {
    pub url: Spanned<String>,
    /// Backend options (`-o KEY=VALUE`); never secrets (see `secrets`).
    #[serde(default)]
    pub options: BTreeMap<String, Spanned<String>>,
    pub password_file: Option<PathBuf>,
    pub password_command: Option<String>,
    /// Environment variables for the backend (AWS_SECRET_ACCESS_KEY, …), each read from
    /// a file or a command's output when a run starts.
    #[serde(default)]
    pub secrets: BTreeMap<String, Spanned<Secret>>,
}

impl RepositoryConf {
    /// The options as `-o` takes them.
    pub fn option_args(&self) -> Vec<String> {
        self.options
            .iter()
            .map(|(k, v)| format!("{k}={}", v.get_ref()))
            .collect()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secret {
    pub file: Option<PathBuf>,
    pub command: Option<String>,
}

/// Flags of one command by long name: `true` is a switch, an array repeats the flag.
pub type Flags = BTreeMap<String, Spanned<toml::Value>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ProfileConf {
    pub repository: Spanned<String>,
    /// What `backup` reads.
    #[serde(default)]
    pub paths: Vec<String>,
    /// A cron expression (`0 3 * * *`) or an interval (`every 6h`) for the daemon.
    pub schedule: Option<Spanned<String>>,
    /// The schedule's time zone (IANA name; default: the machine's).
    pub timezone: Option<Spanned<String>>,
    /// A random delay of up to this long before each scheduled run.
    pub jitter: Option<Spanned<String>>,
    /// After downtime, make up a missed scheduled run once (default true).
    pub catch_up: Option<bool>,
    pub backup: Option<Flags>,
    pub forget: Option<Flags>,
    pub prune: Option<Flags>,
    /// Flags of `check`, and `every = "7d"`: run the check only that often.
    pub check: Option<Flags>,
    /// Flags of `copy`, and `to = ["name", …]`: repositories to copy snapshots into.
    pub copy: Option<Flags>,
    pub hooks: Option<Hooks>,
    pub notify: Option<Notify>,
    pub health: Option<HealthConf>,
    pub anomaly: Option<AnomalyConf>,
    /// Prometheus metrics in node_exporter's textfile format, written after each run.
    pub metrics_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Hooks {
    pub before: Option<String>,
    pub after: Option<String>,
    pub on_failure: Option<String>,
    pub finally: Option<String>,
    /// Each hook's time limit (default 5m).
    pub timeout: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Notify {
    /// JSON POST of the run's facts (docs/config.md has the payload).
    pub webhook: Option<Spanned<String>>,
    /// A sendmail-compatible command; the message goes to its standard input.
    pub mail_command: Option<String>,
    /// The message's To: header.
    pub mail_to: Option<String>,
    /// A healthchecks.io-style URL: URL/start, URL on success, URL/fail.
    pub ping: Option<Spanned<String>>,
    /// Notify on success too (webhook and mail; pings always report success).
    #[serde(default)]
    pub on_success: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HealthConf {
    /// The newest snapshot may be at most this old (`26h`).
    pub max_age: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AnomalyConf {
    /// How many earlier backups the median is taken over (default 10; at least 3 needed).
    pub runs: Option<usize>,
    /// Warn when a backup adds more than this many times the median (default 5).
    pub added_factor: Option<f64>,
    /// …and more than this many bytes (default 100 MiB): small repositories swing.
    pub min_added_bytes: Option<u64>,
    /// Warn when a backup holds fewer files than this share of the median (default 0.5).
    pub min_files_ratio: Option<f64>,
}

/// One flag of a command, as the CLI defines it.
#[derive(Debug, Clone)]
pub struct FlagSpec {
    pub long: String,
    pub takes_value: bool,
    pub repeatable: bool,
}

/// The flags of each step command (None: no such command).
pub type FlagSpecs<'a> = &'a dyn Fn(&str) -> Option<Vec<FlagSpec>>;

/// A problem in the file, at a line (1-based; 0 when unknown).
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub line: usize,
    pub message: String,
}

/// The config errors of one file, printed `FILE:LINE: message`, one per line.
#[derive(Debug)]
pub struct ConfigErrors {
    pub path: PathBuf,
    pub problems: Vec<Problem>,
}

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{}: {}", self.path.display(), p.line, p.message)?;
        }
        Ok(())
    }
}

/// Where the config file is: the one given, else the user's, else the system's.
pub fn find(given: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = given {
        return Some(p.to_path_buf());
    }
    let user = dirs::config_dir().map(|d| d.join("cairn").join("cairn.toml"));
    user.into_iter()
        .chain([PathBuf::from("/etc/cairn/cairn.toml")])
        .find(|p| p.exists())
}

/// The `history` setting of a config file, read without checking the rest (for
/// commands that do not otherwise use the file); relative to the file's folder.
pub fn history_setting(path: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(path).ok()?;
    let table: toml::Table = toml::from_str(&text).ok()?;
    let h = PathBuf::from(table.get("history")?.as_str()?);
    Some(match (h.is_relative(), path.parent()) {
        (true, Some(dir)) => dir.join(h),
        _ => h,
    })
}

impl Config {
    /// Reads, parses and checks the file; every problem found is reported at once.
    pub fn load(path: &Path, specs: FlagSpecs) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            path: path.to_path_buf(),
            problems: vec![Problem {
                line: 0,
                message: format!("cannot read the config file: {e}"),
            }],
        })?;
        Self::parse(path, &text, specs)
    }

    pub fn parse(path: &Path, text: &str, specs: FlagSpecs) -> Result<Config, ConfigErrors> {
        let fail = |problems| ConfigErrors {
            path: path.to_path_buf(),
            problems,
        };
        let mut c: Config = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
            fail(vec![Problem {
                line,
                message: without_values(e.message().trim()).replace('\n', " "),
            }])
        })?;
        c.path = path.to_path_buf();
        c.text = text.to_string();
        c.resolve_relative();
        let problems = c.problems(specs);
        if problems.is_empty() {
            Ok(c)
        } else {
            Err(fail(problems))
        }
    }

    /// Relative paths in the file are relative to the file's folder, not to wherever
    /// cron or systemd happen to start cairn.
    fn resolve_relative(&mut self) {
        // `cairn.toml` alone has the empty parent: the current folder.
        let parent = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let base = std::fs::canonicalize(&parent).unwrap_or(parent);
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(h) = &mut self.history {
            fix(h);
        }
        for r in self.repositories.values_mut() {
            if let Some(f) = &mut r.password_file {
                fix(f);
            }
            for s in r.secrets.values_mut() {
                if let Some(f) = &mut s.get_mut().file {
                    fix(f);
                }
            }
        }
        for p in self.profiles.values_mut() {
            if let Some(m) = &mut p.metrics_file {
                fix(m);
            }
            for path in &mut p.paths {
                if Path::new(path.as_str()).is_relative() {
                    *path = base.join(&*path).display().to_string();
                }
            }
        }
    }

    pub(super) fn line<T>(&self, s: &Spanned<T>) -> usize {
        line_of(&self.text, s.span().start)
    }

    pub fn profile(&self, name: &str) -> Option<&ProfileConf> {
        self.profiles.get(name)
    }

    pub fn repository(&self, name: &str) -> Option<&RepositoryConf> {
        self.repositories.get(name)
    }
}

impl ProfileConf {
    /// The flags table of a step, if the profile has one.
    pub fn step(&self, step: &str) -> Option<&Flags> {
        match step {
            "backup" => self.backup.as_ref(),
            "forget" => self.forget.as_ref(),
            "prune" => self.prune.as_ref(),
            "check" => self.check.as_ref(),
            "copy" => self.copy.as_ref(),
            _ => None,
        }
    }

    /// `check.every`, when the check runs only that often.
    pub fn check_every(&self) -> Option<std::time::Duration> {
        self.check
            .as_ref()?
            .get("every")?
            .get_ref()
            .as_str()
            .and_then(parse_duration)
    }

    /// `copy.to`: the repositories snapshots are copied into.
    pub fn copy_targets(&self) -> Vec<String> {
        self.copy
            .as_ref()
            .and_then(|c| c.get("to"))
            .and_then(|v| string_list(v.get_ref()))
            .unwrap_or_default()
    }
}

/// The command-line arguments for a step's flags table (keys the run handles itself
/// are left out).
pub fn step_args(step: &str, flags: &Flags, specs: FlagSpecs) -> Vec<String> {
    let known = specs(step).unwrap_or_default();
    let mut out = Vec::new();
    for (k, v) in flags {
        if matches!((step, k.as_str()), ("check", "every") | ("copy", "to")) {
            continue;
        }
        if let Some(spec) = known.iter().find(|f| f.long == *k) {
            out.extend(flag_args(spec, v.get_ref()).unwrap_or_default());
        }
    }
    out
}

/// `--flag`, `--flag VALUE` or the flag repeated, from a TOML value.
pub(super) fn flag_args(spec: &FlagSpec, v: &toml::Value) -> Result<Vec<String>, String> {
    let flag = format!("--{}", spec.long);
    if !spec.takes_value {
        return match v {
            toml::Value::Boolean(true) => Ok(vec![flag]),
            toml::Value::Boolean(false) => Ok(vec![]),
            _ => Err("is a switch: true or false".into()),
        };
    }
    let one = |v: &toml::Value| -> Result<String, String> {
        match v {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(i) => Ok(i.to_string()),
            toml::Value::Float(f) => Ok(f.to_string()),
            toml::Value::Datetime(d) => Ok(d.to_string()),
            _ => Err("takes a string or a number".into()),
        }
    };
    // `--flag=VALUE`: a value that starts with '-' stays a value.
    match v {
        toml::Value::Array(items) => {
            if !spec.repeatable {
                return Err("takes one value, not a list".into());
            }
            items
                .iter()
                .map(|i| Ok(format!("{flag}={}", one(i)?)))
                .collect()
        }
        v => Ok(vec![format!("{flag}={}", one(v)?)]),
    }
}

pub(super) fn string_list(v: &toml::Value) -> Option<Vec<String>> {
    match v {
        toml::Value::String(s) => Some(vec![s.clone()]),
        toml::Value::Array(a) => a.iter().map(|i| i.as_str().map(String::from)).collect(),
        _ => None,
    }
}

/// A parser message without the values it quotes (`invalid type: string "…"`): a
/// value in the wrong place may be a secret.
fn without_values(msg: &str) -> String {
    // serde's "invalid type: string \"…\", expected …" and "invalid value: integer `…`":
    // keep only what was expected.
    for lead in ["invalid type", "invalid value", "invalid length"] {
        if let (true, Some(i)) = (msg.starts_with(lead), msg.find(", expected")) {
            return format!("{lead}{}", &msg[i..]);
        }
    }
    let mut out = String::new();
    let mut inside = false;
    for c in msg.chars() {
        if c == '"' {
            if inside {
                out.push_str("…\"");
            } else {
                out.push('"');
            }
            inside = !inside;
        } else if !inside {
            out.push(c);
        }
    }
    out
}

/// 1-based line of byte offset `at`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// A duration like `90s`, `10m`, `26h`, `7d`, `1w`, `1h30m` (seconds when unitless).
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let (mut total, mut num) = (0u64, String::new());
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            'w' => 7 * 86400,
            ' ' if num.is_empty() => continue,
            _ => return None,
        };
        let n: u64 = std::mem::take(&mut num).parse().ok()?;
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    if !num.is_empty() {
        total = total.checked_add(num.parse().ok()?)?;
    }
    Some(std::time::Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(step: &str) -> Option<Vec<FlagSpec>> {
        let f = |l: &str, v: bool, r: bool| FlagSpec {
            long: l.into(),
            takes_value: v,
            repeatable: r,
        };
        match step {
            "backup" => Some(vec![
                f("exclude", true, true),
                f("one-file-system", false, false),
                f("host", true, false),
            ]),
            "forget" => Some(vec![f("keep-daily", true, false), f("prune", false, false)]),
            "check" | "prune" | "copy" => Some(vec![f("read-data-subset", true, false)]),
            _ => None,
        }
    }

    const GOOD: &str = r#"
[repositories.main]
url = "/srv/backup"
password-file = "/etc/cairn/pw"

[profiles.home]
repository = "main"
paths = ["/home"]
schedule = "0 3 * * *"

[profiles.home.backup]
exclude = ["*.tmp", "*.iso"]
one-file-system = true

[profiles.home.forget]
keep-daily = 7
prune = true
"#;

    #[test]
    fn a_good_file_gives_the_flags_in_order() {
        let c = Config::parse(Path::new("c.toml"), GOOD, &specs).unwrap();
        let p = c.profile("home").unwrap();
        assert_eq!(
            step_args("backup", p.backup.as_ref().unwrap(), &specs),
            ["--exclude=*.tmp", "--exclude=*.iso", "--one-file-system"]
        );
        assert_eq!(
            step_args("forget", p.forget.as_ref().unwrap(), &specs),
            ["--keep-daily=7", "--prune"]
        );
    }

    #[test]
    fn unknown_keys_and_flags_are_errors_with_their_lines() {
        let bad = GOOD.replace("one-file-system = true", "one-file-sytem = true")
            + "\n[profiles.home.hooks]\nbefor = \"true\"\n";
        let e = Config::parse(Path::new("c.toml"), &bad, &specs).unwrap_err();
        assert_eq!(e.problems.len(), 1, "{e}");
        assert_eq!(e.problems[0].line, 20, "{e}");
        assert!(e.problems[0].message.contains("befor"), "{e}");
        let bad = GOOD.replace("one-file-system = true", "one-file-sytem = true");
        let e = Config::parse(Path::new("c.toml"), &bad, &specs).unwrap_err();
        assert_eq!(
            e.to_string(),
            "c.toml:13: profile home: `cairn backup` has no flag --one-file-sytem"
        );
        let bad = GOOD
            .replace("keep-daily = 7", "keep-daily = [7, 8]")
            .replace("\"main\"\npaths", "\"other\"\npaths");
        let e = Config::parse(Path::new("c.toml"), &bad, &specs).unwrap_err();
        let lines: Vec<usize> = e.problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, [7, 16], "{e}");
    }

    #[test]
    fn a_secret_in_the_options_is_refused() {
        let bad = GOOD.replace(
            "password-file",
            "options = { secret_access_key = \"abc\" }\npassword-file",
        );
        let e = Config::parse(Path::new("c.toml"), &bad, &specs).unwrap_err();
        assert!(e.to_string().contains("looks like a secret"), "{e}");
        assert!(!e.to_string().contains("abc"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("26h").unwrap().as_secs(), 26 * 3600);
        assert_eq!(parse_duration("1h30m").unwrap().as_secs(), 5400);
        assert_eq!(parse_duration("1w").unwrap().as_secs(), 7 * 86400);
        assert!(parse_duration("soon").is_none());
        assert!(parse_duration("").is_none());
    }
}
