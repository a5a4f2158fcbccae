//! `cairn run PROFILE [--dry-run]`

use std::sync::atomic::AtomicBool;

use clap::Args;

use super::{output, profile, signals, Ctx};
use cairn::ops::history::History;
use cairn::ops::runner::{self, RunOptions};
use cairn::{Error, Result};

#[derive(Args)]
pub struct RunArgs {
    /// The profile to run (a [profiles.NAME] of the config file).
    profile: String,
    /// Print the plan (each step's command line) and run nothing.
    #[arg(short = 'n', long)]
    dry_run: bool,
}

static STOP: AtomicBool = AtomicBool::new(false);

fn say_line(s: &str) {
    println!("{s}");
}

fn say_nothing(_: &str) {}

pub fn run(ctx: &Ctx, a: RunArgs) -> Result<i32> {
    let cfg = profile::load(&ctx.g)?;
    let p = cfg.profile(&a.profile).ok_or_else(|| {
        Error::Usage(format!(
            "no profile {:?} in {} (it has: {})",
            a.profile,
            cfg.path.display(),
            cfg.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
    })?;
    let history = ctx.history_path(Some(&cfg));
    let exe =
        std::env::current_exe().map_err(|e| Error::Other(format!("finding cairn itself: {e}")))?;
    if a.dry_run {
        let h = history.as_deref().and_then(|p| History::open(p).ok());
        let steps = runner::plan(&cfg, &a.profile, &profile::flag_specs, h.as_ref())
            .map_err(Error::Usage)?;
        if ctx.json() {
            output::print_json(&serde_json::json!({"profile": a.profile, "steps": steps}));
            return Ok(0);
        }
        println!("profile {} (dry run: nothing is run)", a.profile);
        let hooks = p.hooks.clone().unwrap_or_default();
        if let Some(h) = &hooks.before {
            println!("  before hook: {h}");
        }
        for s in &steps {
            let line = runner::shell_line("cairn", &s.args);
            match &s.skip {
                Some(why) => println!("  {}: skipped ({why}): {line}", s.name),
                None => println!("  {}: {line}", s.name),
            }
            if !s.secret_env.is_empty() {
                println!(
                    "    with {} from the profile's secrets",
                    s.secret_env.join(", ")
                );
            }
        }
        for (which, h) in [
            ("after", &hooks.after),
            ("on-failure", &hooks.on_failure),
            ("finally", &hooks.finally),
        ] {
            if let Some(h) = h {
                println!("  {which} hook: {h}");
            }
        }
        return Ok(0);
    }
    signals::on_stop(&STOP);
    // A closed terminal or ssh session does not end a run (nor, inherited, its steps).
    signals::ignore_hangup();
    let opts = RunOptions {
        exe,
        global_args: ctx.step_args(),
        history,
        show_output: !ctx.json() && !ctx.g.quiet,
        stop: &STOP,
        say: if ctx.json() || ctx.g.quiet {
            &say_nothing
        } else {
            &say_line
        },
    };
    let r = runner::run(&cfg, &a.profile, &profile::flag_specs, &opts);
    if ctx.json() {
        output::print_json(&r);
    } else if r.success {
        ctx.say(format!(
            "run {}: success{}{} in {:.1}s",
            r.profile,
            r.snapshot
                .as_deref()
                .map(|s| format!(", snapshot {}", &s[..s.len().min(8)]))
                .unwrap_or_default(),
            r.bytes_added
                .map(|b| format!(", {} added", output::bytes(b)))
                .unwrap_or_default(),
            r.duration_seconds
        ));
    } else {
        eprintln!(
            "cairn: run {} FAILED at {}: {}",
            r.profile,
            r.failed_step.as_deref().unwrap_or("?"),
            r.error.as_deref().unwrap_or("?")
        );
    }
    Ok(r.exit_code)
}
