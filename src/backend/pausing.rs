//! A backend that stops at a chosen call: it wraps another and, at its Nth call of any
//! kind, blocks the calling thread until the test resumes it. Interleaving tests pause
//! an operation (a backup, a prune) at many points and run other cairn processes
//! against the same repository meanwhile, to walk the races a test would otherwise
//! leave to chance.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::{Backend, FileType};
use crate::error::Result;

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    Paused,
    Resumed,
}

pub struct PausingBackend {
    inner: Arc<dyn Backend>,
    pause_at: usize,
    calls: AtomicUsize,
    state: Mutex<State>,
    changed: Condvar,
}

impl PausingBackend {
    /// Pauses at the `pause_at`th call (1-based); 0 never pauses (to count calls).
    pub fn new(inner: Arc<dyn Backend>, pause_at: usize) -> Self {
        PausingBackend {
            inner,
            pause_at,
            calls: AtomicUsize::new(0),
            state: Mutex::new(State::Running),
            changed: Condvar::new(),
        }
    }

    /// Calls made so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Waits until the operation is paused; false if it did not pause within `timeout`
    /// (it finished, or failed, before reaching the call).
    pub fn wait_paused(&self, timeout: Duration) -> bool {
        let state = self.state.lock().unwrap();
        let (state, _) = self
            .changed
            .wait_timeout_while(state, timeout, |s| *s == State::Running)
            .unwrap();
        *state == State::Paused
    }

    /// Lets the paused call (and every later one) go on.
    pub fn resume(&self) {
        *self.state.lock().unwrap() = State::Resumed;
        self.changed.notify_all();
    }

    fn gate(&self) {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if n != self.pause_at {
            return;
        }
        let mut state = self.state.lock().unwrap();
        if *state == State::Running {
            *state = State::Paused;
            self.changed.notify_all();
        }
        while *state == State::Paused {
            state = self.changed.wait(state).unwrap();
        }
    }
}

impl Backend for PausingBackend {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn create(&self) -> Result<()> {
        self.gate();
        self.inner.create()
    }
    fn read(&self, ft: FileType, name: &str) -> Result<Vec<u8>> {
        self.gate();
        self.inner.read(ft, name)
    }
    fn read_range(&self, ft: FileType, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.gate();
        self.inner.read_range(ft, name, offset, len)
    }
    fn write(&self, ft: FileType, name: &str, data: &[u8]) -> Result<()> {
        self.gate();
        self.inner.write(ft, name, data)
    }
    fn list(&self, ft: FileType) -> Result<Vec<(String, u64)>> {
        self.gate();
        self.inner.list(ft)
    }
    fn delete(&self, ft: FileType, name: &str) -> Result<()> {
        self.gate();
        self.inner.delete(ft, name)
    }
    fn size(&self, ft: FileType, name: &str) -> Result<u64> {
        self.gate();
        self.inner.size(ft, name)
    }

    fn connections(&self) -> usize {
        self.inner.connections()
    }

    fn is_remote(&self) -> bool {
        self.inner.is_remote()
    }
}
