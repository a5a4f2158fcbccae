//! A backend that counts what it is asked to do: requests by kind and bytes moved.
//! What a cloud bill shows; `-v` prints it after every command, and tests assert
//! request budgets (counts, never times).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;

use super::{Backend, FileType};
use crate::error::Result;

/// Counters, shared by every counting backend of a process that is handed them.
#[derive(Default)]
pub struct RequestCounts {
    list: AtomicU64,
    read: AtomicU64,
    read_range: AtomicU64,
    write: AtomicU64,
    delete: AtomicU64,
    stat: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    /// Requests under way now, and the most there ever were at once.
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
    /// Print every request on stderr as it is made (`-vv`).
    trace: std::sync::atomic::AtomicBool,
}

/// The counts at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RequestSummary {
    pub list: u64,
    pub read: u64,
    pub read_range: u64,
    pub write: u64,
    pub delete: u64,
    pub stat: u64,
    pub total: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// The most requests that were under way at once.
    pub peak_in_flight: u64,
}

impl RequestCounts {
    pub fn set_trace(&self, on: bool) {
        self.trace.store(on, Ordering::Relaxed);
    }

    pub fn summary(&self) -> RequestSummary {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut s = RequestSummary {
            list: get(&self.list),
            read: get(&self.read),
            read_range: get(&self.read_range),
            write: get(&self.write),
            delete: get(&self.delete),
            stat: get(&self.stat),
            total: 0,
            bytes_read: get(&self.bytes_read),
            bytes_written: get(&self.bytes_written),
            peak_in_flight: get(&self.peak_in_flight),
        };
        s.total = s.list + s.read + s.read_range + s.write + s.delete + s.stat;
        s
    }
}

impl std::fmt::Display for RequestSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} requests (list {}, read {}, ranged read {}, write {}, delete {}, stat {}; at most {} at once); {} bytes read, {} written",
            self.total,
            self.list,
            self.read,
            self.read_range,
            self.write,
            self.delete,
            self.stat,
            self.peak_in_flight,
            self.bytes_read,
            self.bytes_written
        )
    }
}

pub struct CountingBackend {
    inner: Arc<dyn Backend>,
    counts: Arc<RequestCounts>,
}

impl CountingBackend {
    pub fn new(inner: Arc<dyn Backend>, counts: Arc<RequestCounts>) -> Self {
        CountingBackend { inner, counts }
    }
}

fn bump(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

/// A request under way, counted in `in_flight` until it is dropped.
struct InFlight<'a>(&'a RequestCounts);

impl RequestCounts {
    fn start(&self) -> InFlight<'_> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(self)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl CountingBackend {
    fn trace(&self, op: &str, ft: FileType, name: &str) {
        if self.counts.trace.load(Ordering::Relaxed) {
            let path = if ft == FileType::Pack || ft == FileType::Config {
                ft.path(name)
            } else if name.is_empty() {
                format!("{}/", ft.dir().trim_end_matches('/'))
            } else {
                ft.path(name)
            };
            eprintln!("cairn: request: {op} {path}");
        }
    }
}

/// A streamed read whose bytes count as read, under way from its request until it is
/// dropped.
struct CountedRead {
    inner: Box<dyn std::io::Read + Send>,
    counts: Arc<RequestCounts>,
}

impl CountedRead {
    fn open(
        counts: &Arc<RequestCounts>,
        open: impl FnOnce() -> Result<Box<dyn std::io::Read + Send>>,
    ) -> Result<Box<dyn std::io::Read + Send>> {
        let flight = counts.start();
        let inner = open()?;
        // Counted as under way until the stream is dropped.
        std::mem::forget(flight);
        Ok(Box::new(CountedRead {
            inner,
            counts: counts.clone(),
        }))
    }
}

impl Drop for CountedRead {
    fn drop(&mut self) {
        self.counts.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl std::io::Read for CountedRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        bump(&self.counts.bytes_read, n as u64);
        Ok(n)
    }
}

impl Backend for CountingBackend {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn create(&self) -> Result<()> {
        self.inner.create()
    }
    fn read(&self, ft: FileType, name: &str) -> Result<Vec<u8>> {
        bump(&self.counts.read, 1);
        let _flight = self.counts.start();
        self.trace("read", ft, name);
        let r = self.inner.read(ft, name);
        if let Ok(b) = &r {
            bump(&self.counts.bytes_read, b.len() as u64);
        }
        r
    }
    fn read_stream(&self, ft: FileType, name: &str) -> Result<Box<dyn std::io::Read + Send>> {
        bump(&self.counts.read, 1);
        self.trace("read", ft, name);
        CountedRead::open(&self.counts, || self.inner.read_stream(ft, name))
    }
    fn read_range_stream(
        &self,
        ft: FileType,
        name: &str,
        offset: u64,
        len: usize,
    ) -> Result<Box<dyn std::io::Read + Send>> {
        bump(&self.counts.read_range, 1);
        self.trace("ranged read", ft, name);
        CountedRead::open(&self.counts, || {
            self.inner.read_range_stream(ft, name, offset, len)
        })
    }
    fn read_range(&self, ft: FileType, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        bump(&self.counts.read_range, 1);
        let _flight = self.counts.start();
        self.trace("ranged read", ft, name);
        let r = self.inner.read_range(ft, name, offset, len);
        if let Ok(b) = &r {
            bump(&self.counts.bytes_read, b.len() as u64);
        }
        r
    }
    fn write(&self, ft: FileType, name: &str, data: &[u8]) -> Result<()> {
        bump(&self.counts.write, 1);
        let _flight = self.counts.start();
        self.trace("write", ft, name);
        bump(&self.counts.bytes_written, data.len() as u64);
        self.inner.write(ft, name, data)
    }
    fn list(&self, ft: FileType) -> Result<Vec<(String, u64)>> {
        self.trace("list", ft, "");
        let _flight = self.counts.start();
        let r = self.inner.list(ft);
        // An object store lists 1000 names per request (S3's page).
        let pages = r.as_ref().map_or(1, |v| v.len().div_ceil(1000).max(1));
        bump(&self.counts.list, pages as u64);
        r
    }
    fn delete(&self, ft: FileType, name: &str) -> Result<()> {
        bump(&self.counts.delete, 1);
        let _flight = self.counts.start();
        self.trace("delete", ft, name);
        self.inner.delete(ft, name)
    }
    fn size(&self, ft: FileType, name: &str) -> Result<u64> {
        bump(&self.counts.stat, 1);
        let _flight = self.counts.start();
        self.trace("stat", ft, name);
        self.inner.size(ft, name)
    }

    fn connections(&self) -> usize {
        self.inner.connections()
    }

    fn is_remote(&self) -> bool {
        self.inner.is_remote()
    }
}
