//! `cairn daemon`: run the config file's schedules in the foreground.

use std::sync::atomic::AtomicBool;

use clap::Args;

use super::{profile, signals, Ctx};
use cairn::ops::profile::Config;
use cairn::ops::schedule::daemon::{self, DaemonOptions};
use cairn::{Error, Result};

#[derive(Args)]
pub struct DaemonArgs {}

static STOP: AtomicBool = AtomicBool::new(false);
static RELOAD: AtomicBool = AtomicBool::new(false);

pub fn run(ctx: &Ctx, _a: DaemonArgs) -> Result<i32> {
    let path = profile::config_path(&ctx.g)?;
    let path = std::fs::canonicalize(&path).unwrap_or(path);
    profile::load(&ctx.g)?;
    let given = ctx.g.history.clone();
    // The history of each loaded config: --history / CAIRN_HISTORY, else the file's own.
    let history: &'static (dyn Fn(&Config) -> Option<std::path::PathBuf> + Sync) =
        Box::leak(Box::new(move |cfg: &Config| match given.as_deref() {
            Some("off") => None,
            Some(p) => Some(std::path::PathBuf::from(p)),
            None => cfg
                .history
                .clone()
                .or_else(cairn::ops::history::default_path),
        }));
    let exe =
        std::env::current_exe().map_err(|e| Error::Other(format!("finding cairn itself: {e}")))?;
    signals::on_stop(&STOP);
    signals::on_reload(&RELOAD);
    let load_path = path.clone();
    let load = move || -> std::result::Result<Config, String> {
        Config::load(&load_path, &profile::flag_specs)
            .map_err(|e| e.to_string().replace('\n', "; "))
    };
    let mut global_args = ctx.step_args();
    if let Some(h) = &ctx.g.history {
        global_args.extend(["--history".to_string(), h.clone()]);
    }
    daemon::log(&format!(
        "started (config {}, pid {})",
        path.display(),
        std::process::id()
    ));
    let opts = DaemonOptions {
        exe,
        config_path: path,
        global_args,
        history,
        stop: &STOP,
        reload: &RELOAD,
    };
    Ok(daemon::run(&load, &opts))
}
