//! The one error type of the library. The CLI maps each kind to an exit code
//! (see `cli::exit_code`), so every layer reports what went wrong, not how to exit.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("repository {0} does not exist")]
    RepoNotFound(String),
    #[error("repository {0} already exists")]
    RepoExists(String),
    #[error("wrong password: no key in the repository matches it")]
    WrongPassword,
    /// A wrong password for a second repository a command opens (`copy --from-repo`).
    #[error("wrong password for {0}: no key in it matches")]
    WrongPasswordFor(String),
    #[error("repository is locked: {0}")]
    Locked(String),
    /// This process's own lock can no longer be proven alive; it stopped before
    /// writing or deleting anything.
    #[error("lost the repository lock: {0}; stopped before writing or deleting anything")]
    LockLost(String),
    /// Something read back from the repository failed authentication or did not parse.
    #[error("integrity error in {file}: {detail}")]
    Integrity { file: String, detail: String },
    /// The repository (or a file in it) was written by a newer cairn.
    #[error("{0}")]
    Unsupported(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A bad argument or source that the user can fix.
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub fn io_path(path: &Path, source: std::io::Error) -> Self {
        Error::io(path.display().to_string(), source)
    }

    pub fn integrity(file: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Integrity {
            file: file.into(),
            detail: detail.into(),
        }
    }

    /// True when the error is a file that is not there (used to tell "no repository").
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}
