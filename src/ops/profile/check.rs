//! The semantic checks of a config file (after parsing): references between tables,
//! schedules, durations, secrets, and each step's flags against the command's own.

use std::collections::BTreeMap;

use super::{flag_args, parse_duration, string_list, Config, FlagSpecs, Problem, Secret, STEPS};

impl Config {
    /// Every semantic problem, in file order.
    pub(super) fn problems(&self, specs: FlagSpecs) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut p = |line, message: String| out.push(Problem { line, message });
        for (name, r) in &self.repositories {
            if crate::backend::location::url_has_password(r.url.get_ref()) {
                p(
                    self.line(&r.url),
                    format!(
                        "repository {name}: the URL holds a password; put it under [repositories.{name}.secrets] (WEBDAV_PASSWORD = {{ file = \"…\" }})"
                    ),
                );
            } else if let Err(e) = crate::backend::check_location(r.url.get_ref(), &r.option_args())
            {
                p(self.line(&r.url), format!("repository {name}: {e}"));
            }
            for (k, v) in &r.options {
                if crate::backend::location::is_secret_setting(k) {
                    p(
                        self.line(v),
                        format!(
                            "repository {name}: option {k} looks like a secret; put it under \
                             [repositories.{name}.secrets] (read from a file or a command)"
                        ),
                    );
                }
            }
            if r.password_file.is_some() && r.password_command.is_some() {
                p(
                    self.line(&r.url),
                    format!("repository {name}: give password-file or password-command, not both"),
                );
            }
            for (var, s) in &r.secrets {
                let ok_name = !var.is_empty()
                    && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !var.starts_with(|c: char| c.is_ascii_digit());
                if !ok_name {
                    p(
                        self.line(s),
                        format!(
                            "repository {name}: secret {var:?} is not an environment variable name"
                        ),
                    );
                }
                let v = s.get_ref();
                if v.file.is_some() == v.command.is_some() {
                    p(
                        self.line(s),
                        format!("repository {name}: secret {var} needs one of file or command"),
                    );
                }
            }
        }
        for (name, prof) in &self.profiles {
            let at = self.line(&prof.repository);
            let repo = prof.repository.get_ref();
            if !self.repositories.contains_key(repo) {
                p(
                    at,
                    format!("profile {name}: no repository {repo:?} in [repositories]"),
                );
            }
            let backup_from_stdin = prof
                .backup
                .as_ref()
                .is_some_and(|b| b.contains_key("stdin") || b.contains_key("stdin-from-command"));
            if prof.paths.is_empty() && !backup_from_stdin {
                p(
                    at,
                    format!("profile {name}: paths is empty (what should backup read?)"),
                );
            }
            if let Some(s) = &prof.schedule {
                if let Err(e) = crate::ops::schedule::Schedule::parse(s.get_ref()) {
                    p(self.line(s), format!("profile {name}: schedule: {e}"));
                }
            }
            if let Some(tz) = &prof.timezone {
                if tz.get_ref().parse::<chrono_tz::Tz>().is_err() {
                    p(
                        self.line(tz),
                        format!("profile {name}: unknown time zone {:?}", tz.get_ref()),
                    );
                }
            }
            let durations = [
                ("jitter", prof.jitter.as_ref()),
                (
                    "hooks.timeout",
                    prof.hooks.as_ref().and_then(|h| h.timeout.as_ref()),
                ),
                (
                    "health.max-age",
                    prof.health.as_ref().and_then(|h| h.max_age.as_ref()),
                ),
            ];
            for (what, d) in durations {
                if let Some(d) = d {
                    if parse_duration(d.get_ref()).is_none() {
                        p(
                            self.line(d),
                            format!(
                                "profile {name}: {what}: not a duration (30s, 10m, 26h, 7d): {:?}",
                                d.get_ref()
                            ),
                        );
                    }
                }
            }
            if let Some(n) = &prof.notify {
                for (what, url) in [("webhook", &n.webhook), ("ping", &n.ping)] {
                    if let Some(u) = url {
                        let s = u.get_ref();
                        if !(s.starts_with("http://") || s.starts_with("https://")) {
                            p(self.line(u), format!("profile {name}: notify.{what} must be an http:// or https:// URL"));
                        }
                    }
                }
            }
            for step in STEPS {
                let Some(flags) = prof.step(step) else {
                    continue;
                };
                let Some(known) = specs(step) else { continue };
                for (k, v) in flags {
                    let line = self.line(v);
                    match (*step, k.as_str()) {
                        ("check", "every") => {
                            if v.get_ref().as_str().and_then(parse_duration).is_none() {
                                p(
                                    line,
                                    format!(
                                        "profile {name}: check.every: not a duration (7d, 12h)"
                                    ),
                                );
                            }
                            continue;
                        }
                        ("copy", "to") => {
                            let names = string_list(v.get_ref());
                            match names {
                                Some(names) if !names.is_empty() => {
                                    for t in names {
                                        if !self.repositories.contains_key(&t) {
                                            p(line, format!("profile {name}: copy.to: no repository {t:?} in [repositories]"));
                                        } else if t == *repo {
                                            p(line, format!("profile {name}: copy.to names the profile's own repository"));
                                        }
                                    }
                                }
                                _ => p(
                                    line,
                                    format!(
                                        "profile {name}: copy.to takes a list of repository names"
                                    ),
                                ),
                            }
                            continue;
                        }
                        ("copy", "from-repo") | ("backup", "stdin") => {
                            p(
                                line,
                                format!("profile {name}: {step}.{k} is set by the run itself"),
                            );
                            continue;
                        }
                        _ => {}
                    }
                    let Some(spec) = known.iter().find(|f| f.long == *k) else {
                        p(
                            line,
                            format!("profile {name}: `cairn {step}` has no flag --{k}"),
                        );
                        continue;
                    };
                    if let Err(e) = flag_args(spec, v.get_ref()) {
                        p(line, format!("profile {name}: {step}.{k}: {e}"));
                    }
                }
            }
            let targets = prof.copy_targets();
            if !targets.is_empty() {
                // A copy step opens two repositories in one process: each password
                // must come from the file, and no environment variable can carry two
                // values.
                let mut involved = vec![repo.clone()];
                involved.extend(targets.iter().cloned());
                let mut seen: BTreeMap<&str, (&str, &Secret)> = BTreeMap::new();
                for rn in &involved {
                    let Some(r) = self.repositories.get(rn) else {
                        continue;
                    };
                    if r.password_file.is_none() && r.password_command.is_none() {
                        p(at, format!("profile {name}: copying needs password-file or password-command on repository {rn}"));
                    }
                    for (var, sec) in &r.secrets {
                        let sec = sec.get_ref();
                        match seen.get(var.as_str()) {
                            Some((other, prev)) if prev.file != sec.file || prev.command != sec.command => p(
                                at,
                                format!("profile {name}: repositories {other} and {rn} both need {var}, with different values; one process carries one"),
                            ),
                            _ => {
                                seen.insert(var, (rn, sec));
                            }
                        }
                    }
                }
            }
            if prof.copy.as_ref().is_some_and(|c| !c.contains_key("to")) {
                p(
                    at,
                    format!(
                        "profile {name}: [profiles.{name}.copy] needs to = [\"repository\", …]"
                    ),
                );
            }
        }
        out.sort_by_key(|p| p.line);
        out
    }
}
