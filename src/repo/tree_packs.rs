//! Whole tree packs in memory, for a remote repository read without the local cache
//! (`check` bypasses it): one request per tree pack instead of one per tree. Each pack
//! is checked against its name before use; within a budget, oldest out first. Threads
//! walking trees at once read each pack once: the others wait for it.

use std::collections::{HashSet, VecDeque};
use std::io::Read;
use std::sync::{Arc, Condvar, Mutex};

use crate::backend::{Backend, FileType};
use crate::id::Id;

const BUDGET: usize = 128 << 20;

/// Packs held, oldest first, and their bytes in all.
type Held = (VecDeque<(Id, Arc<Vec<u8>>)>, usize);

#[derive(Default)]
pub struct TreePacks {
    held: Mutex<Held>,
    /// Packs a thread is reading now; `read` is signalled when one is done.
    reading: Mutex<HashSet<Id>>,
    read: Condvar,
}

/// Ends a thread's read of a pack however it ends, and wakes those waiting for it.
struct Reading<'a>(&'a TreePacks, Id);

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        self.0.reading.lock().unwrap().remove(&self.1);
        self.0.read.notify_all();
    }
}

impl TreePacks {
    /// The pack's bytes if it is held (already read and checked against its name).
    pub fn held(&self, pack: &Id) -> Option<Arc<Vec<u8>>> {
        let held = self.held.lock().unwrap();
        held.0
            .iter()
            .find(|(p, _)| p == pack)
            .map(|(_, d)| d.clone())
    }

    /// The pack's bytes if it is held, no longer held from now on.
    pub fn take(&self, pack: &Id) -> Option<Arc<Vec<u8>>> {
        let mut held = self.held.lock().unwrap();
        let at = held.0.iter().position(|(p, _)| p == pack)?;
        let (_, data) = held.0.remove(at).expect("found");
        held.1 -= data.len();
        Some(data)
    }

    /// The pack's bytes; `None` when it cannot be read whole or does not match its
    /// name (the caller then reads the blob alone and reports what is wrong).
    pub fn get(&self, backend: &dyn Backend, pack: &Id) -> Option<Arc<Vec<u8>>> {
        // Held, or read by this thread, or waited for while another reads it (a read
        // that failed is tried again here). A reader holds the pack before it stops
        // reading, and `held` is asked under the `reading` lock: no pack is read twice.
        let _reading = {
            let mut reading = self.reading.lock().unwrap();
            loop {
                if let Some(d) = self.held(pack) {
                    return Some(d);
                }
                if reading.insert(*pack) {
                    break Reading(self, *pack);
                }
                while reading.contains(pack) {
                    reading = self.read.wait(reading).unwrap();
                }
            }
        };
        // Streamed into one buffer: a whole read holds the body's pieces and their copy
        // at once, twice the pack, while check's data packs stream beside it. The
        // buffer's spare room is given back before it is held.
        let mut bytes = Vec::new();
        let mut body = backend.read_stream(FileType::Pack, &pack.to_hex()).ok()?;
        body.read_to_end(&mut bytes).ok()?;
        drop(body); // a remote stream holds a connection until dropped
        bytes.shrink_to_fit();
        if Id::of_file(&bytes) != *pack {
            return None;
        }
        let data = Arc::new(bytes);
        let mut held = self.held.lock().unwrap();
        held.1 += data.len();
        held.0.push_back((*pack, data.clone()));
        while held.1 > BUDGET && held.0.len() > 1 {
            let (_, old) = held.0.pop_front().expect("not empty");
            held.1 -= old.len();
        }
        Some(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{LocalBackend, PausingBackend};
    use std::time::Duration;

    /// Threads walking trees at once that need the same pack wait for the one read of
    /// it: it is fetched once, and each gets the whole pack.
    #[test]
    fn a_pack_many_threads_ask_for_at_once_is_read_once() {
        let dir = tempfile::tempdir().unwrap();
        let local = Arc::new(LocalBackend::new(dir.path().to_path_buf()));
        let bytes: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let id = Id::of_file(&bytes);
        local.create().unwrap();
        local.write(FileType::Pack, &id.to_hex(), &bytes).unwrap();
        let backend = PausingBackend::new(local, 1);
        let packs = TreePacks::default();
        std::thread::scope(|s| {
            let got: Vec<_> = (0..8)
                .map(|_| s.spawn(|| packs.get(&backend, &id)))
                .collect();
            assert!(backend.wait_paused(Duration::from_secs(10)));
            // The others have asked by now; none of them reads.
            std::thread::sleep(Duration::from_millis(200));
            let calls_while_reading = backend.calls();
            backend.resume();
            assert_eq!(calls_while_reading, 1);
            for g in got {
                assert_eq!(
                    g.join().unwrap().expect("read whole").as_slice(),
                    &bytes[..]
                );
            }
        });
        assert_eq!(backend.calls(), 1);
        assert!(packs.held(&id).is_some());
    }
}
