//! `cairn config check`

use clap::{Args, Subcommand};

use super::{output, profile, Ctx};
use cairn::ops::profile::Config;
use cairn::Result;

#[derive(Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    action: ConfigAction,
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Check the config file: every problem with its line; exit 1 when there is one.
    Check,
}

pub fn run(ctx: &Ctx, a: ConfigArgs) -> Result<i32> {
    match a.action {
        ConfigAction::Check => {
            let path = profile::config_path(&ctx.g)?;
            match Config::load(&path, &profile::flag_specs) {
                Ok(c) => {
                    if ctx.json() {
                        output::print_json(&serde_json::json!({
                            "path": path, "ok": true,
                            "repositories": c.repositories.keys().collect::<Vec<_>>(),
                            "profiles": c.profiles.keys().collect::<Vec<_>>(),
                        }));
                    } else {
                        ctx.say(format!(
                            "{}: ok ({} repositories, {} profiles)",
                            path.display(),
                            c.repositories.len(),
                            c.profiles.len()
                        ));
                    }
                    Ok(0)
                }
                Err(e) => {
                    if ctx.json() {
                        let problems: Vec<_> = e
                            .problems
                            .iter()
                            .map(|p| serde_json::json!({"line": p.line, "message": p.message}))
                            .collect();
                        output::print_json(
                            &serde_json::json!({"path": path, "ok": false, "problems": problems}),
                        );
                    } else {
                        eprintln!("{e}");
                    }
                    Ok(1)
                }
            }
        }
    }
}
