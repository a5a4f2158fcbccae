//! `cairn key list|add|remove|passwd`

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::json;

use super::{output, password, Ctx};
use cairn::backend::FileType;
use cairn::{Error, Result};

#[derive(Args)]
pub struct KeyArgs {
    #[command(subcommand)]
    action: KeyAction,
}

impl KeyArgs {
    /// `key list` changes nothing (the history leaves it out).
    pub fn is_list(&self) -> bool {
        matches!(self.action, KeyAction::List)
    }
}

#[derive(Subcommand)]
enum KeyAction {
    /// List the keys (passwords) of the repository.
    List,
    /// Add a password.
    Add {
        /// Read the new password from FILE (else CAIRN_NEW_PASSWORD or a prompt).
        #[arg(long, value_name = "FILE")]
        new_password_file: Option<PathBuf>,
    },
    /// Remove a key (not the one in use).
    Remove {
        /// Key id or unique prefix.
        id: String,
    },
    /// Change the password in use: add the new key, then remove the old.
    Passwd {
        #[arg(long, value_name = "FILE")]
        new_password_file: Option<PathBuf>,
    },
}

pub fn run(ctx: &Ctx, a: KeyArgs) -> Result<i32> {
    let repo = ctx.open()?;
    let read_only = matches!(a.action, KeyAction::List);
    let _lock = ctx.lock(&repo, cairn::repo::lock::LockKind::Shared, read_only)?;
    match a.action {
        KeyAction::List => {
            let keys = repo.keys()?;
            if ctx.json() {
                let list: Vec<_> = keys
                    .iter()
                    .map(|(id, k)| {
                        json!({
                            "id": id,
                            "current": *id == repo.key_id,
                            "user_name": k.username,
                            "host_name": k.hostname,
                            "created": k.created.to_rfc3339(),
                        })
                    })
                    .collect();
                output::print_json(&list);
            } else {
                ctx.say(format!(
                    " {:<8}  {:<12}  {:<16}  created",
                    "ID", "user", "host"
                ));
                for (id, k) in &keys {
                    let mark = if *id == repo.key_id { '*' } else { ' ' };
                    ctx.say(format!(
                        "{mark}{:<8}  {:<12}  {:<16}  {}",
                        &id[..8],
                        k.username,
                        k.hostname,
                        k.created.format("%Y-%m-%d %H:%M:%S")
                    ));
                }
            }
        }
        KeyAction::Add { new_password_file } => {
            let pw = password::new_key_password(new_password_file.as_deref())?;
            let id = repo.add_key(pw.as_bytes(), ctx.kdf())?;
            report(ctx, "added", &id);
        }
        KeyAction::Remove { id } => {
            let name = repo.find_file(FileType::Key, &id)?;
            if name == repo.key_id {
                return Err(Error::Usage(
                    "refusing to remove the key in use; open the repository with another password first".into(),
                ));
            }
            repo.backend().delete(FileType::Key, &name)?;
            report(ctx, "removed", &name);
        }
        KeyAction::Passwd { new_password_file } => {
            let pw = password::new_key_password(new_password_file.as_deref())?;
            // The new key is written before the old one goes: a crash between the
            // two leaves both passwords working, never neither.
            let id = repo.add_key(pw.as_bytes(), ctx.kdf())?;
            repo.backend().delete(FileType::Key, &repo.key_id)?;
            report(ctx, "changed password; new key", &id);
        }
    }
    Ok(0)
}

fn report(ctx: &Ctx, what: &str, id: &str) {
    if ctx.json() {
        output::print_json(&json!({ "message_type": what, "id": id }));
    } else {
        ctx.say(format!("{what} key {}", &id[..8.min(id.len())]));
    }
}
