//! A directory's plain files go to the writer threads while the walk goes on to the
//! next directories; the directory's own metadata (and `--delete`'s clean-up) waits for
//! the last of its files. (When the walk waited for each directory's files, a tree of
//! small directories kept most writers idle between one directory and the next.)

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::{meta, Dir, Restorer};
use crate::repo::tree::{Node, Tree};

/// A directory whose entries are in place but for its plain files.
pub(super) struct DirJob {
    pub tree: Tree,
    /// The plain files still to write: indices into `tree.nodes`.
    pub files: Vec<usize>,
    pub dir: Dir,
    pub snap_dir: PathBuf,
    /// `--delete`: remove what the snapshot does not have, once the files are in.
    pub delete: bool,
    /// The metadata the directory gets last (None: it keeps its own).
    pub meta: Option<Node>,
}

struct Running {
    job: DirJob,
    /// Files not written yet, plus one for the walk until it has handed them all out.
    left: AtomicUsize,
}

/// Files handed to the writers and not written yet. Bounded: each holds its directory
/// open, and its tree in memory.
pub(super) struct InFlight {
    count: AtomicUsize,
    max: usize,
    room: Mutex<()>,
    freed: Condvar,
    /// A writer panicked: the walk hands out nothing more and stops (the panic is
    /// raised again when the scope ends), instead of waiting for room that never comes.
    aborted: AtomicBool,
}

impl InFlight {
    pub fn new(max: usize) -> Self {
        InFlight {
            count: AtomicUsize::new(0),
            max: max.max(1),
            room: Mutex::new(()),
            freed: Condvar::new(),
            aborted: AtomicBool::new(false),
        }
    }

    pub fn aborted(&self) -> bool {
        self.aborted.load(Ordering::Acquire)
    }

    /// Counts one more file. When `max` are in flight it first waits until only half
    /// are (one wake-up per half-batch, not one per file: a thread switch per file cost
    /// more than the files). The walk does not write one itself meanwhile: it could be a
    /// large file, and nothing would be handed out. (It blocks a pool thread: the pool
    /// has at least four, see `restore`.) Only the walk calls this, so nothing else
    /// raises the count. False once a writer panicked.
    fn acquire(&self) -> bool {
        if self.count.load(Ordering::Acquire) >= self.max {
            loop {
                if self.aborted() {
                    return false;
                }
                let guard = self.room.lock().unwrap_or_else(|e| e.into_inner());
                if self.count.load(Ordering::Acquire) <= self.low() {
                    break;
                }
                if !self.aborted() {
                    // A release takes the lock before it notifies, so none is missed;
                    // the timeout is only a second line.
                    let _ = self.freed.wait_timeout(guard, Duration::from_millis(50));
                }
            }
        }
        if self.aborted() {
            return false;
        }
        self.count.fetch_add(1, Ordering::AcqRel);
        true
    }

    fn low(&self) -> usize {
        self.max / 2
    }

    fn release(&self) {
        if self.count.fetch_sub(1, Ordering::AcqRel) == self.low() + 1 {
            let _guard = self.room.lock().unwrap_or_else(|e| e.into_inner());
            self.freed.notify_all();
        }
    }
}

/// Makes room for the next file however a writer's task ends; a panic also stops the
/// walk (rayon keeps the scope going after a task panics, until its end).
struct Slot<'a>(&'a InFlight);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.aborted.store(true, Ordering::Release);
            let _guard = self.0.room.lock().unwrap_or_else(|e| e.into_inner());
            self.0.freed.notify_all();
        }
        self.0.release();
    }
}

impl<'a> Restorer<'a> {
    /// Hands a directory's files to the writers; whichever finishes last (or the walk,
    /// when there are none) finishes the directory.
    pub(super) fn hand_off<'s>(&'s self, scope: &rayon::Scope<'s>, job: DirJob)
    where
        'a: 's,
    {
        // After a writer panicked the walk stops part-way: a directory whose entries
        // are not all made must not get its metadata or `--delete`'s clean-up.
        if self.in_flight.aborted() {
            return;
        }
        let n = job.files.len();
        let running = Arc::new(Running {
            job,
            left: AtomicUsize::new(n + 1),
        });
        for i in 0..n {
            if !self.in_flight.acquire() {
                return;
            }
            let running = running.clone();
            scope.spawn(move |_| {
                let slot = Slot(&self.in_flight);
                let job = &running.job;
                let node = &job.tree.nodes[job.files[i]];
                let name = OsStr::from_bytes(&node.name);
                let path = job.dir.path.join(name);
                if let Err(e) = self.restore_file(node, &job.dir, name, &path) {
                    self.problem(e);
                }
                self.one_done(&running);
                // The directory is closed (when this was its last file) before room is
                // made for another.
                drop(running);
                drop(slot);
            });
        }
        self.one_done(&running);
    }

    fn one_done(&self, running: &Running) {
        if running.left.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let job = &running.job;
        if job.delete {
            self.delete_extra(&job.tree, &job.dir, &job.snap_dir);
        }
        if let Some(node) = &job.meta {
            // After the contents, so their creation does not bump the times again.
            match job.dir.fd() {
                Ok(fd) => self.report_all(meta::apply_fd(fd, &job.dir.path, node, self.is_root)),
                Err(e) => self.problem(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn the_walk_waits_for_half_the_files_in_flight() {
        let f = InFlight::new(4);
        for _ in 0..4 {
            assert!(f.acquire());
        }
        let acquired = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(50));
                f.release();
                std::thread::sleep(Duration::from_millis(100));
                assert!(
                    !acquired.load(Ordering::SeqCst),
                    "the walk went on with 3 of 4 in flight"
                );
                f.release();
            });
            assert!(f.acquire());
            acquired.store(true, Ordering::SeqCst);
        });
        assert_eq!(f.count.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_writer_that_panics_stops_the_walk() {
        let f = InFlight::new(2);
        assert!(f.acquire() && f.acquire());
        std::thread::scope(|s| {
            // The walk waits for room; the writer's panic must end the wait.
            let walk = s.spawn(|| f.acquire());
            let writer = s.spawn(|| {
                std::thread::sleep(Duration::from_millis(50));
                let _slot = Slot(&f);
                panic!("a writer's bug");
            });
            assert!(writer.join().is_err());
            assert!(
                !walk.join().unwrap(),
                "the walk handed out more after a panic"
            );
        });
        assert!(f.aborted());
        assert!(!f.acquire());
        assert_eq!(f.count.load(Ordering::SeqCst), 1);
    }
}
