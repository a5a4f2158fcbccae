//! The config file from the command line: the flag definitions profiles are checked
//! against, and `--profile NAME` on a single command (its repository, and its flags
//! for that command, under the flags given on the command line).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, CommandFactory};

use cairn::ops::profile::{self, Config, FlagSpec};
use cairn::{Error, Result};

use super::{Cli, GlobalArgs};

/// The long flags of `cairn STEP`, from its clap definition.
pub fn flag_specs(step: &str) -> Option<Vec<FlagSpec>> {
    let cmd = Cli::command();
    let sub = cmd.find_subcommand(step)?;
    Some(
        sub.get_arguments()
            .filter(|a| !a.is_positional() && !a.is_global_set())
            .filter_map(|a| {
                let long = a.get_long()?;
                if long == "help" {
                    return None;
                }
                Some(FlagSpec {
                    long: long.to_string(),
                    takes_value: a.get_action().takes_values(),
                    repeatable: matches!(a.get_action(), ArgAction::Append | ArgAction::Count),
                })
            })
            .collect(),
    )
}

/// The config file's path: --config, CAIRN_CONFIG, the user's, the system's.
pub fn config_path(g: &GlobalArgs) -> Result<PathBuf> {
    profile::find(g.config.as_deref()).ok_or_else(|| {
        Error::Usage(
            "no config file: give --config FILE, or write ~/.config/cairn/cairn.toml or /etc/cairn/cairn.toml (docs/config.md)"
                .into(),
        )
    })
}

/// Loads and checks the config file; its problems become one usage error, a line each.
pub fn load(g: &GlobalArgs) -> Result<Config> {
    let path = config_path(g)?;
    Config::load(&path, &flag_specs).map_err(|e| Error::Usage(e.to_string()))
}

/// Global flags that take a value, so the command's name is found after them.
const GLOBAL_WITH_VALUE: &[&str] = &[
    "-r",
    "--repo",
    "--password-file",
    "--password-command",
    "-o",
    "--option",
    "--cache-dir",
    "--retry-lock",
    "--kdf-memory-kib",
    "--kdf-iterations",
    "--config",
    "--profile",
    "--history",
];

/// Rewrites the command line for `--profile NAME`: the profile's repository (unless -r
/// is given), and its flags for this command where the command line sets none of them.
/// Commands other than the run steps get only the repository.
pub fn apply(args: Vec<OsString>, m: &ArgMatches, g: &GlobalArgs) -> Result<Vec<OsString>> {
    let Some(name) = &g.profile else {
        return Ok(args);
    };
    let Some((sub, sm)) = m.subcommand() else {
        return Ok(args);
    };
    // Commands that read --profile as a filter or run the profile themselves.
    if matches!(sub, "run" | "history" | "config" | "daemon" | "schedule") {
        return Ok(args);
    }
    let cfg = load(g)?;
    let p = cfg
        .profile(name)
        .ok_or_else(|| Error::Usage(format!("no profile {name:?} in {}", cfg.path.display())))?;
    let repo = cfg
        .repository(p.repository.get_ref())
        .expect("checked by load");
    // Where the command's name is.
    let mut at = 1;
    while at < args.len() {
        let a = args[at].to_string_lossy();
        if GLOBAL_WITH_VALUE.contains(&a.as_ref()) {
            at += 2;
        } else if a.starts_with('-') {
            at += 1;
        } else {
            break;
        }
    }
    let mut front: Vec<OsString> = Vec::new();
    let given = |id: &str| m.value_source(id) == Some(ValueSource::CommandLine);
    if !given("repo") {
        front.extend(["-r".into(), repo.url.get_ref().into()]);
        for o in repo.option_args() {
            front.extend(["-o".into(), o.into()]);
        }
        if !given("password_file") && !given("password_command") {
            if repo.password_file.is_some() || repo.password_command.is_some() {
                // The profile says where the password is: the environment's password
                // (read first) must not win. Safe: no other thread runs yet.
                for v in [
                    "CAIRN_PASSWORD",
                    "CAIRN_PASSWORD_FILE",
                    "CAIRN_PASSWORD_COMMAND",
                ] {
                    std::env::remove_var(v);
                }
            }
            if let Some(f) = &repo.password_file {
                front.extend(["--password-file".into(), f.into()]);
            }
            if let Some(c) = &repo.password_command {
                front.extend(["--password-command".into(), c.into()]);
            }
        }
        // The profile's secrets, for this process's backend.
        for (var, s) in &repo.secrets {
            let s = s.get_ref();
            let v = cairn::ops::hooks::read_secret(s.file.as_deref(), s.command.as_deref())
                .map_err(|e| Error::Other(format!("secret {var}: {e}")))?;
            // Safe: no other thread runs yet.
            std::env::set_var(var, v);
        }
    }
    let mut flags: Vec<OsString> = Vec::new();
    if let Some(table) = p.step(sub) {
        let specs = flag_specs(sub).unwrap_or_default();
        let cmd = Cli::command();
        let subcmd = cmd.find_subcommand(sub).expect("parsed");
        for (k, v) in table {
            let Some(arg) = subcmd.get_arguments().find(|a| a.get_long() == Some(k)) else {
                continue;
            };
            if sm.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine) {
                continue;
            }
            let mut one = profile::Flags::new();
            one.insert(k.clone(), v.clone());
            let spec_of = |s: &str| (s == sub).then(|| specs.clone());
            flags.extend(
                profile::step_args(sub, &one, &spec_of)
                    .into_iter()
                    .map(OsString::from),
            );
        }
    }
    let mut out: Vec<OsString> = vec![args[0].clone()];
    out.extend(front);
    out.extend(args[1..=at.min(args.len() - 1)].iter().cloned());
    out.extend(flags);
    out.extend(args.iter().skip(at + 1).cloned());
    // The profile's sources when backup is given none.
    if sub == "backup"
        && !sm.contains_id("paths")
        && !sm.get_flag("stdin")
        && !p.paths.is_empty()
        && p.backup
            .as_ref()
            .is_none_or(|b| !b.contains_key("stdin-from-command"))
    {
        if !out.iter().any(|a| a == "--") {
            out.push("--".into());
        }
        out.extend(p.paths.iter().map(OsString::from));
    }
    Ok(out)
}
