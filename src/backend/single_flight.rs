//! One fetch of a thing at a time: threads that need what another thread is fetching
//! wait for it instead of fetching it too (a tree pack wanted by two threads of a
//! tree walk is downloaded once, not once per thread).

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::{Condvar, Mutex};

pub struct SingleFlight<K> {
    /// Keys a thread is fetching now; `done` is signalled when one is no longer.
    busy: Mutex<HashSet<K>>,
    done: Condvar,
}

impl<K> Default for SingleFlight<K> {
    fn default() -> Self {
        SingleFlight {
            busy: Mutex::new(HashSet::new()),
            done: Condvar::new(),
        }
    }
}

/// The right to fetch one key; given up when dropped, however the fetch ends.
pub struct Flight<'a, K: Eq + Hash> {
    gate: &'a SingleFlight<K>,
    key: Option<K>,
}

impl<K: Eq + Hash> Drop for Flight<'_, K> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.gate.busy.lock().unwrap().remove(&key);
            self.gate.done.notify_all();
        }
    }
}

impl<K: Eq + Hash + Clone> SingleFlight<K> {
    /// `ready()` when it answers (asked first, and again after each fetch of `key` by
    /// another thread ends), else the right to fetch `key` now. `ready` is asked under
    /// the gate's lock, so a fetcher must make its result visible to `ready` before it
    /// drops its `Flight`: then no key is fetched twice.
    pub fn enter<T>(&self, key: &K, ready: impl Fn() -> Option<T>) -> Result<T, Flight<'_, K>> {
        let mut busy = self.busy.lock().unwrap();
        loop {
            if let Some(t) = ready() {
                return Ok(t);
            }
            if busy.insert(key.clone()) {
                return Err(Flight {
                    gate: self,
                    key: Some(key.clone()),
                });
            }
            while busy.contains(key) {
                busy = self.done.wait(busy).unwrap();
            }
        }
    }
}
