//! `cairn init`

use clap::Args;
use serde_json::json;

use super::{output, password, Ctx};
use cairn::repo::config::parse_compression;
use cairn::{Error, Repository, Result};

#[derive(Args)]
pub struct InitArgs {
    /// off, fastest, auto (zstd 3), max (zstd 19) or a zstd level 0-22.
    #[arg(long, default_value = "auto")]
    compression: String,
}

pub fn run(ctx: &Ctx, a: InitArgs) -> Result<i32> {
    let level = parse_compression(&a.compression)?;
    let (backend, _) = ctx.backend()?;
    if cairn::repo::exists(&*backend)? {
        return Err(Error::RepoExists(backend.location()));
    }
    let pw = password::new_password(&ctx.g)?;
    let repo = Repository::init(backend, pw.as_bytes(), ctx.kdf(), level)?;
    if ctx.json() {
        output::print_json(&json!({
            "message_type": "initialized",
            "id": repo.config.id,
            "repository": repo.backend().location(),
        }));
    } else {
        ctx.say(format!(
            "created cairn repository {} at {}",
            repo.config.id.short(),
            repo.backend().location()
        ));
        ctx.say("Keep the password safe: without it the data cannot be read back.");
    }
    Ok(0)
}
