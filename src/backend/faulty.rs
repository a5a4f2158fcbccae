//! A backend that fails on purpose: it wraps another and makes the Nth write, read,
//! delete or list fail, or truncates it. Tests drive every operation through it to show
//! that after any single failure the repository is still sound.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::{Backend, FileType};
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Write,
    Read,
    Delete,
    List,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The operation does nothing and reports an error.
    Fail,
    /// A write stores only the first half and reports an error (a non-atomic store
    /// cut off); a read or list returns only the first half, without an error.
    Truncate,
}

pub struct FaultyBackend {
    inner: Arc<dyn Backend>,
    op: Op,
    nth: usize,
    fault: Fault,
    counts: [AtomicUsize; 4],
}

impl FaultyBackend {
    /// Injects `fault` into the `nth` (1-based) operation of kind `op`.
    pub fn new(inner: Arc<dyn Backend>, op: Op, nth: usize, fault: Fault) -> Self {
        FaultyBackend {
            inner,
            op,
            nth,
            fault,
            counts: Default::default(),
        }
    }

    /// How many operations of a kind ran (to learn how many faults to try).
    pub fn count(&self, op: Op) -> usize {
        self.counts[op as usize].load(Ordering::Relaxed)
    }

    /// Counts this operation; true when it is the one to break.
    fn hit(&self, op: Op) -> bool {
        let n = self.counts[op as usize].fetch_add(1, Ordering::Relaxed) + 1;
        op == self.op && n == self.nth
    }

    fn injected(what: &str) -> Error {
        Error::io(
            format!("injected fault in {what}"),
            std::io::Error::other("injected"),
        )
    }
}

impl Backend for FaultyBackend {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn create(&self) -> Result<()> {
        self.inner.create()
    }

    fn read(&self, ft: FileType, name: &str) -> Result<Vec<u8>> {
        if self.hit(Op::Read) {
            if self.fault == Fault::Fail {
                return Err(Self::injected("read"));
            }
            let mut d = self.inner.read(ft, name)?;
            d.truncate(d.len() / 2);
            return Ok(d);
        }
        self.inner.read(ft, name)
    }

    fn read_range(&self, ft: FileType, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        if self.hit(Op::Read) {
            if self.fault == Fault::Fail {
                return Err(Self::injected("read"));
            }
            let mut d = self.inner.read_range(ft, name, offset, len)?;
            d.truncate(d.len() / 2);
            return Ok(d);
        }
        self.inner.read_range(ft, name, offset, len)
    }

    fn write(&self, ft: FileType, name: &str, data: &[u8]) -> Result<()> {
        if self.hit(Op::Write) {
            if self.fault == Fault::Truncate {
                self.inner.write(ft, name, &data[..data.len() / 2])?;
            }
            return Err(Self::injected("write"));
        }
        self.inner.write(ft, name, data)
    }

    fn list(&self, ft: FileType) -> Result<Vec<(String, u64)>> {
        if self.hit(Op::List) {
            if self.fault == Fault::Fail {
                return Err(Self::injected("list"));
            }
            let mut l = self.inner.list(ft)?;
            l.truncate(l.len() / 2);
            return Ok(l);
        }
        self.inner.list(ft)
    }

    fn delete(&self, ft: FileType, name: &str) -> Result<()> {
        if self.hit(Op::Delete) {
            return Err(Self::injected("delete"));
        }
        self.inner.delete(ft, name)
    }

    fn size(&self, ft: FileType, name: &str) -> Result<u64> {
        self.inner.size(ft, name)
    }

    fn connections(&self) -> usize {
        self.inner.connections()
    }

    fn is_remote(&self) -> bool {
        self.inner.is_remote()
    }
}
