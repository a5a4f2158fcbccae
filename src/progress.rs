//! Counters that long operations bump as they go, for a progress display to poll.
//! The library never draws anything; the CLI decides (bar on a TTY, JSON lines, nothing).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[derive(Default)]
pub struct Progress {
    pub files_done: AtomicU64,
    pub bytes_done: AtomicU64,
    /// Totals, when known (0 = not yet).
    pub files_total: AtomicU64,
    pub bytes_total: AtomicU64,
    /// Set once the totals are final.
    pub totals_final: AtomicBool,
}

impl Progress {
    pub fn add(&self, files: u64, bytes: u64) {
        self.files_done.fetch_add(files, Ordering::Relaxed);
        self.bytes_done.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn add_total(&self, files: u64, bytes: u64) {
        self.files_total.fetch_add(files, Ordering::Relaxed);
        self.bytes_total.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> ProgressSnapshot {
        ProgressSnapshot {
            files_done: self.files_done.load(Ordering::Relaxed),
            bytes_done: self.bytes_done.load(Ordering::Relaxed),
            files_total: self.files_total.load(Ordering::Relaxed),
            bytes_total: self.bytes_total.load(Ordering::Relaxed),
            totals_final: self.totals_final.load(Ordering::Relaxed),
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct ProgressSnapshot {
    pub files_done: u64,
    pub bytes_done: u64,
    pub files_total: u64,
    pub bytes_total: u64,
    pub totals_final: bool,
}

/// Counts the files and bytes below `paths` (not following symlinks), adding them to the
/// totals as it goes: a backup's progress display runs this beside the backup.
pub fn scan_totals(paths: &[std::path::PathBuf], progress: &Progress) {
    let mut stack: Vec<std::path::PathBuf> = paths.to_vec();
    while let Some(p) = stack.pop() {
        let Ok(meta) = p.symlink_metadata() else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        } else if meta.is_file() {
            progress.add_total(1, meta.len());
        }
    }
    progress.totals_final.store(true, Ordering::Relaxed);
}
