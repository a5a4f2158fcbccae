//! cairn: content-addressed, deduplicating, encrypted backups.
//!
//! Layers, each using only those below it (see docs/overview.md):
//! `cli` → operations (`archiver`, `restorer`) → `repo` → `crypto`, `chunker`, `id`,
//! `backend`.

pub mod archiver;
pub mod backend;
pub mod check;
pub mod chunker;
pub mod copy;
pub mod crypto;
pub mod diff;
pub mod dump;
pub mod error;
pub mod find;
pub mod forget;
pub mod fsmeta;
#[doc(hidden)]
pub mod fuzz_targets;
pub mod id;
pub mod mount;
pub mod ops;
pub mod pattern;
pub mod progress;
pub mod prune;
pub mod repo;
pub mod restorer;
pub mod selector;
pub mod stats;
pub mod tag;
pub mod versions;

pub use error::{Error, Result};
pub use repo::Repository;
