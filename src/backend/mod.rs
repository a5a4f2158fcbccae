//! Storage. The rest of the program sees only the `Backend` trait: named files of a few
//! kinds, whole or ranged reads, atomic writes, listing and deletion.
//!
//! A local folder is served by `LocalBackend`; every other service (S3, SFTP, WebDAV,
//! GCS, Azure, B2, … through OpenDAL) by `OpendalBackend`. `location` parses the URLs.

mod cache;
mod counting;
mod diagnose;
mod faulty;
mod local;
pub mod location;
mod pausing;
pub mod probe;
mod remote;
pub mod single_flight;

use std::sync::Arc;

pub use cache::CachedBackend;
pub use counting::{CountingBackend, RequestCounts, RequestSummary};
pub use faulty::{Fault, FaultyBackend, Op};
pub use local::LocalBackend;
pub use pausing::PausingBackend;
pub use remote::{http_post, settle, OpendalBackend};

use crate::error::Result;

/// The kinds of file a repository holds; each has its own folder (docs/format.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileType {
    Config,
    Key,
    Lock,
    Snapshot,
    Index,
    Pack,
    /// `test-storage`'s probe objects, beside the repository's folders.
    Probe,
}

impl FileType {
    pub fn dir(self) -> &'static str {
        match self {
            FileType::Config | FileType::Probe => "",
            FileType::Key => "keys",
            FileType::Lock => "locks",
            FileType::Snapshot => "snapshots",
            FileType::Index => "index",
            FileType::Pack => "data",
        }
    }

    /// The path of a file relative to the repository root (`data/ab/abcd…` for packs).
    pub fn path(self, name: &str) -> String {
        match self {
            FileType::Config => "config".into(),
            FileType::Probe => {
                // Only probe objects: never a name that reaches repository files.
                assert!(
                    name.starts_with("cairn-probe-") && !name.contains('/'),
                    "not a probe object name: {name:?}"
                );
                name.into()
            }
            FileType::Pack => format!("data/{}/{name}", &name[..2.min(name.len())]),
            other => format!("{}/{name}", other.dir()),
        }
    }
}

pub trait Backend: Send + Sync {
    /// Where the repository is, for messages.
    fn location(&self) -> String;
    /// Creates the folder structure of a new repository.
    fn create(&self) -> Result<()>;
    fn read(&self, ft: FileType, name: &str) -> Result<Vec<u8>>;
    fn read_range(&self, ft: FileType, name: &str, offset: u64, len: usize) -> Result<Vec<u8>>;
    /// A whole file as a stream, front to back, for readers that need not hold it
    /// whole (`check --read-data`, prune's repack). By default the whole file is read
    /// at once. A remote stream holds one of `connections` until dropped: its reader
    /// must not wait on another request of the same backend meanwhile.
    fn read_stream(&self, ft: FileType, name: &str) -> Result<Box<dyn std::io::Read + Send>> {
        Ok(Box::new(std::io::Cursor::new(self.read(ft, name)?)))
    }
    /// `len` bytes at `offset` as a stream (a restore's runs of blobs), for readers that
    /// need not hold them whole; by default read at once. A remote stream holds a
    /// connection as `read_stream`'s does.
    fn read_range_stream(
        &self,
        ft: FileType,
        name: &str,
        offset: u64,
        len: usize,
    ) -> Result<Box<dyn std::io::Read + Send>> {
        Ok(Box::new(std::io::Cursor::new(
            self.read_range(ft, name, offset, len)?,
        )))
    }
    /// Writes a whole file atomically: a reader sees all of it or nothing.
    fn write(&self, ft: FileType, name: &str, data: &[u8]) -> Result<()>;
    /// Names and sizes of all files of one kind.
    fn list(&self, ft: FileType) -> Result<Vec<(String, u64)>>;
    fn delete(&self, ft: FileType, name: &str) -> Result<()>;
    /// Size of a file, or a not-found error.
    fn size(&self, ft: FileType, name: &str) -> Result<u64>;
    /// How many requests may usefully be in flight at once.
    fn connections(&self) -> usize {
        8
    }
    /// True when every request crosses a network (worth a cache and parallel reads).
    fn is_remote(&self) -> bool {
        false
    }
}

/// Stores a file every write of which has the same content (named by its hash, or a
/// config that is written once). No look first (a request per file on remote storage):
/// writing the same bytes again is harmless, every write being atomic. When a write
/// fails, whatever part of it a non-atomic store kept is removed again, so a failed
/// write never leaves a damaged file under a valid name.
pub fn store(backend: &dyn Backend, ft: FileType, name: &str, data: &[u8]) -> Result<()> {
    backend.write(ft, name, data).inspect_err(|_| {
        let _ = backend.delete(ft, name);
    })
}

/// Checks a repository URL and its options without connecting (`config check`).
pub fn check_location(url: &str, options: &[String]) -> Result<()> {
    location::parse(url, options, &|_| None).map(|_| ())
}

/// Builds the backend for a repository URL with its `-o KEY=VALUE` options (CLI.md);
/// services read their usual environment variables too.
pub fn open(url: &str, options: &[String]) -> Result<Arc<dyn Backend>> {
    match location::parse(url, options, &|k| std::env::var(k).ok())? {
        location::Target::Local(path) => Ok(Arc::new(LocalBackend::new(path))),
        location::Target::Remote(r) => remote::open(r),
    }
}
