//! Where passwords come from (CLI.md): CAIRN_PASSWORD, --password-file,
//! --password-command, else a prompt on a terminal; never a hang without one.

use std::io::IsTerminal;
use std::process::{Command, Stdio};

use zeroize::Zeroizing;

use super::{FromRepoArgs, GlobalArgs};
use cairn::{Error, Result};

const NO_SOURCE: &str = "no password given: set CAIRN_PASSWORD, --password-file or --password-command (no terminal to ask on)";

fn first_line(s: &str) -> &str {
    s.split(['\n', '\r']).next().unwrap_or("")
}

fn configured(g: &GlobalArgs) -> Result<Option<Zeroizing<String>>> {
    from_sources(
        "CAIRN_PASSWORD",
        g.password_file.as_deref(),
        g.password_command.as_deref(),
    )
}

/// The password from an environment variable, a file or a command, in that order.
fn from_sources(
    env: &str,
    file: Option<&std::path::Path>,
    command: Option<&str>,
) -> Result<Option<Zeroizing<String>>> {
    if let Ok(p) = std::env::var(env) {
        return Ok(Some(Zeroizing::new(p)));
    }
    if let Some(f) = file {
        let text = Zeroizing::new(std::fs::read_to_string(f).map_err(|e| Error::io_path(f, e))?);
        return Ok(Some(Zeroizing::new(first_line(&text).to_string())));
    }
    if let Some(cmd) = command {
        let out = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| Error::io(format!("running password command {cmd:?}"), e))?;
        if !out.status.success() {
            return Err(Error::Usage(format!(
                "password command {cmd:?} failed ({})",
                out.status
            )));
        }
        let text = Zeroizing::new(String::from_utf8_lossy(&out.stdout).into_owned());
        return Ok(Some(Zeroizing::new(first_line(&text).to_string())));
    }
    Ok(None)
}

fn prompt(text: &str) -> Result<Zeroizing<String>> {
    prompt_or(text, NO_SOURCE)
}

fn prompt_or(text: &str, no_terminal: &str) -> Result<Zeroizing<String>> {
    if !std::io::stdin().is_terminal() {
        return Err(Error::Usage(no_terminal.into()));
    }
    rpassword::prompt_password(text)
        .map(Zeroizing::new)
        .map_err(|e| Error::io("reading password", e))
}

/// The password of an existing repository.
pub fn password(g: &GlobalArgs) -> Result<Zeroizing<String>> {
    match configured(g)? {
        Some(p) => Ok(p),
        None => prompt("enter password for repository: "),
    }
}

/// The password of the source repository of `copy` / `init --copy-chunker-params`:
/// CAIRN_FROM_PASSWORD, --from-password-file, --from-password-command, else a prompt.
pub fn source_password(from: &FromRepoArgs) -> Result<Zeroizing<String>> {
    let configured = from_sources(
        "CAIRN_FROM_PASSWORD",
        from.from_password_file.as_deref(),
        from.from_password_command.as_deref(),
    )?;
    match configured {
        Some(p) => Ok(p),
        None => prompt_or(
            "enter password for source repository: ",
            "no password for the source repository given: set CAIRN_FROM_PASSWORD, --from-password-file or --from-password-command (no terminal to ask on)",
        ),
    }
}

/// A password for a new repository: asked twice on a terminal.
pub fn new_password(g: &GlobalArgs) -> Result<Zeroizing<String>> {
    if let Some(p) = configured(g)? {
        return check_new(p);
    }
    ask_twice("enter password for new repository: ")
}

pub fn ask_twice(text: &str) -> Result<Zeroizing<String>> {
    let a = prompt(text)?;
    let b = prompt("enter the same password again: ")?;
    if *a != *b {
        return Err(Error::Usage("the passwords do not match".into()));
    }
    check_new(a)
}

pub fn check_new(p: Zeroizing<String>) -> Result<Zeroizing<String>> {
    if p.is_empty() {
        return Err(Error::Usage("an empty password is not allowed".into()));
    }
    Ok(p)
}

/// The new password for `key add` / `key passwd`.
pub fn new_key_password(file: Option<&std::path::Path>) -> Result<Zeroizing<String>> {
    if let Some(f) = file {
        let text = Zeroizing::new(std::fs::read_to_string(f).map_err(|e| Error::io_path(f, e))?);
        return check_new(Zeroizing::new(first_line(&text).to_string()));
    }
    if let Ok(p) = std::env::var("CAIRN_NEW_PASSWORD") {
        return check_new(Zeroizing::new(p));
    }
    ask_twice("enter new password: ")
}
