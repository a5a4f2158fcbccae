//! A run's plan: each step's command line, from the profile.

use super::PlannedStep;
use crate::ops::history::{self, History};
use crate::ops::profile::{step_args, Config, FlagSpecs, RepositoryConf};

pub(super) fn repo_args(r: &RepositoryConf) -> Vec<String> {
    let mut a = vec!["-r".to_string(), r.url.get_ref().clone()];
    for o in r.option_args() {
        a.push("-o".into());
        a.push(o);
    }
    if let Some(f) = &r.password_file {
        a.push("--password-file".into());
        a.push(f.display().to_string());
    }
    if let Some(c) = &r.password_command {
        a.push("--password-command".into());
        a.push(c.clone());
    }
    a
}

/// The steps of `profile`, in order. `history` tells when the check last ran (for
/// `check.every`).
pub fn plan(
    cfg: &Config,
    name: &str,
    specs: FlagSpecs,
    history: Option<&History>,
) -> Result<Vec<PlannedStep>, String> {
    let p = cfg
        .profile(name)
        .ok_or_else(|| format!("no profile {name:?} in {}", cfg.path.display()))?;
    let repo = cfg
        .repository(p.repository.get_ref())
        .ok_or_else(|| format!("profile {name}: no repository {:?}", p.repository.get_ref()))?;
    let base = repo_args(repo);
    let secrets: Vec<String> = repo.secrets.keys().cloned().collect();
    let mut steps = Vec::new();
    let mut step = |n: &str, args: Vec<String>, env: Vec<String>, skip: Option<String>| {
        steps.push(PlannedStep {
            name: n.to_string(),
            args,
            secret_env: env,
            skip,
        })
    };
    // backup: always; its sources after `--`.
    let mut a = base.clone();
    a.push("backup".into());
    if let Some(f) = &p.backup {
        a.extend(step_args("backup", f, specs));
    }
    if !p.paths.is_empty() {
        a.push("--".into());
        a.extend(p.paths.iter().cloned());
    }
    step("backup", a, secrets.clone(), None);
    for s in ["forget", "prune", "check"] {
        let Some(f) = p.step(s) else { continue };
        let mut a = base.clone();
        a.push(s.into());
        a.extend(step_args(s, f, specs));
        let mut skip = None;
        if s == "check" {
            if let (Some(every), Some(h)) = (p.check_every(), history) {
                if let Ok(Some(last)) = h.last_success_ms(name, "check") {
                    let age = history::now_ms() - last;
                    if age >= 0 && (age as u128) < every.as_millis() {
                        skip = Some(format!(
                            "checked {} ago; check.every is {}s",
                            human_age(age),
                            every.as_secs()
                        ));
                    }
                }
            }
        }
        step(s, a, secrets.clone(), skip);
    }
    for target in p.copy_targets() {
        let t = cfg
            .repository(&target)
            .ok_or_else(|| format!("profile {name}: no repository {target:?}"))?;
        let mut a = repo_args(t);
        a.extend([
            "copy".into(),
            "--from-repo".into(),
            repo.url.get_ref().clone(),
        ]);
        for o in repo.option_args() {
            a.push("--from-option".into());
            a.push(o);
        }
        if let Some(f) = &repo.password_file {
            a.push("--from-password-file".into());
            a.push(f.display().to_string());
        }
        if let Some(c) = &repo.password_command {
            a.push("--from-password-command".into());
            a.push(c.clone());
        }
        a.extend(step_args(
            "copy",
            p.copy.as_ref().expect("copy targets"),
            specs,
        ));
        let env: Vec<String> = secrets.iter().chain(t.secrets.keys()).cloned().collect();
        step(&format!("copy:{target}"), a, env, None);
    }
    Ok(steps)
}

/// A shell-quoted command line, for the plan and the logs (no secret is ever on it).
pub fn shell_line(exe: &str, args: &[String]) -> String {
    std::iter::once(exe.to_string())
        .chain(args.iter().map(|a| quote(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn human_age(ms: i64) -> String {
    let s = ms / 1000;
    match s {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}
