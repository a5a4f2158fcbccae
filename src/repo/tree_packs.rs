//! Whole tree packs in memory, for a remote repository read without the local cache
//! (`check` bypasses it): one request per tree pack instead of one per tree. Each pack
//! is checked against its name before use; within a budget, oldest out first. Threads
//! walking trees at once read each pack once: the others wait for it. A pack whose
//! bytes do not match its name is not read whole again (its trees are read alone); one
//! whose read failed is, by the next tree that needs it (a flaky remote).

use std::collections::{HashSet, VecDeque};
use std::io::Read;
use std::sync::{Arc, Mutex};

use crate::backend::single_flight::SingleFlight;
use crate::backend::{Backend, FileType};
use crate::id::Id;

const BUDGET: usize = 128 << 20;

/// Packs held, oldest first, and their bytes in all.
type Held = (VecDeque<(Id, Arc<Vec<u8>>)>, usize);

#[derive(Default)]
pub struct TreePacks {
    held: Mutex<Held>,
    damaged: Mutex<HashSet<Id>>,
    reading: SingleFlight<Id>,
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
        // Held, or found damaged before, or read by this thread; while another thread
        // reads it, waited for. Both sets are filled before the read's flight ends.
        let known = || match self.held(pack) {
            Some(d) => Some(Some(d)),
            None => self.damaged.lock().unwrap().contains(pack).then_some(None),
        };
        let _flight = match self.reading.enter(pack, known) {
            Ok(known) => return known,
            Err(flight) => flight,
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
            self.damaged.lock().unwrap().insert(*pack);
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
        drop(held); // before the flight ends, which takes the gate's lock
        Some(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Fault, FaultyBackend, LocalBackend, Op, PausingBackend};
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

    /// A pack that does not match its name is read whole once; later asks get `None`
    /// at once (their trees are read alone).
    #[test]
    fn a_damaged_pack_is_read_whole_once() {
        let dir = tempfile::tempdir().unwrap();
        let local = Arc::new(LocalBackend::new(dir.path().to_path_buf()));
        local.create().unwrap();
        let id = Id::of_file(b"other bytes");
        local
            .write(FileType::Pack, &id.to_hex(), &[9u8; 40_000])
            .unwrap();
        let backend = PausingBackend::new(local, 0);
        let packs = TreePacks::default();
        for _ in 0..5 {
            assert!(packs.get(&backend, &id).is_none());
        }
        assert_eq!(backend.calls(), 1);
    }

    /// A read that fails (a flaky remote) is not held against the pack: the next tree
    /// that needs it reads it whole again.
    #[test]
    fn a_pack_whose_read_failed_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let local = Arc::new(LocalBackend::new(dir.path().to_path_buf()));
        local.create().unwrap();
        let bytes = vec![3u8; 30_000];
        let id = Id::of_file(&bytes);
        local.write(FileType::Pack, &id.to_hex(), &bytes).unwrap();
        let backend = FaultyBackend::new(local, Op::Read, 1, Fault::Fail);
        let packs = TreePacks::default();
        assert!(packs.get(&backend, &id).is_none());
        assert_eq!(
            packs.get(&backend, &id).expect("read again").as_slice(),
            &bytes[..]
        );
        assert_eq!(backend.count(Op::Read), 2);
    }
}
