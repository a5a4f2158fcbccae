//! Whole tree packs in memory, for a remote repository read without the local cache
//! (`check` bypasses it): one request per tree pack instead of one per tree. Each pack
//! is checked against its name before use; within a budget, oldest out first.

use std::collections::VecDeque;
use std::io::Read;
use std::sync::{Arc, Mutex};

use crate::backend::{Backend, FileType};
use crate::id::Id;

const BUDGET: usize = 128 << 20;

/// Packs held, oldest first, and their bytes in all.
type Held = (VecDeque<(Id, Arc<Vec<u8>>)>, usize);

#[derive(Default)]
pub struct TreePacks {
    held: Mutex<Held>,
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
        if let Some(d) = self.held(pack) {
            return Some(d);
        }
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
