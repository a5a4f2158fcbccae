//! `cairn init`

use clap::Args;
use serde_json::json;

use super::{output, password, Ctx, FromRepoArgs};
use cairn::repo::config::{parse_compression, Config};
use cairn::{Error, Repository, Result};

#[derive(Args)]
pub struct InitArgs {
    /// off, fastest, auto (zstd 3), max (zstd 19) or a zstd level 0-22.
    #[arg(long, default_value = "auto")]
    compression: String,
    /// Chunk and name blobs exactly as the --from-repo repository does (its chunker
    /// sizes, gear seed and blob id key), so copies between the two store only what is
    /// new and backups of the same data into either deduplicate.
    #[arg(long, requires = "from_repo")]
    copy_chunker_params: bool,
    /// The repository to take the chunker parameters from (with --copy-chunker-params).
    #[arg(long, env = "CAIRN_FROM_REPOSITORY", value_name = "URL")]
    from_repo: Option<String>,
    #[command(flatten)]
    from: FromRepoArgs,
}

pub fn run(ctx: &Ctx, a: InitArgs) -> Result<i32> {
    let level = parse_compression(&a.compression)?;
    let (backend, _) = ctx.backend()?;
    if cairn::repo::exists(&*backend)? {
        return Err(Error::RepoExists(backend.location()));
    }
    // The source is opened first (its config only: no lock, no index), so a wrong
    // source password creates nothing.
    let source = match (&a.from_repo, a.copy_chunker_params) {
        (Some(url), true) => Some(ctx.open_source(url, &a.from)?),
        _ => None,
    };
    let config = match &source {
        Some(s) => Config::sharing_keys_of(level, &s.config, &s.key),
        None => Config::new(level),
    };
    let pw = password::new_password(&ctx.g)?;
    let repo = Repository::init_with_config(backend, pw.as_bytes(), ctx.kdf(), config)?;
    if ctx.json() {
        output::print_json(&json!({
            "message_type": "initialized",
            "id": repo.config.id,
            "repository": repo.backend().location(),
            "chunker_params_from": source.as_ref().map(|s| s.config.id),
        }));
    } else {
        ctx.say(format!(
            "created cairn repository {} at {}",
            repo.config.id.short(),
            repo.backend().location()
        ));
        if let Some(s) = &source {
            ctx.say(format!(
                "chunker parameters and blob ids shared with repository {} at {}: copies between the two deduplicate",
                s.config.id.short(),
                s.backend().location()
            ));
        }
        ctx.say("Keep the password safe: without it the data cannot be read back.");
    }
    Ok(0)
}
