//! `test-storage`: before a destination is trusted with backups, write, read,
//! range-read, list and delete two probe objects there and say what works, how fast,
//! and, when something does not, which cairn command it will break.
//!
//! The probe objects live beside the repository's folders, named
//! `cairn-probe-<random>-small` and `-large` (FileType::Probe): nothing of a
//! repository is read, written or listed by name, so the probe is safe before and
//! after `init`, and beside a running backup.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Backend, FileType};

/// How hard to probe.
#[derive(Clone, Debug)]
pub struct ProbeOptions {
    /// Size of the large object (throughput); above the multipart threshold of S3 by
    /// default, so that path is exercised too.
    pub large_size: usize,
    /// How many times the small object is written and read (latency).
    pub rounds: usize,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            large_size: 32 << 20,
            rounds: 3,
        }
    }
}

/// One step of the probe.
#[derive(Clone, Debug, Serialize)]
pub struct ProbeStep {
    pub step: &'static str,
    pub ok: bool,
    /// Median time of the step's requests, in milliseconds.
    pub millis: f64,
    /// Bytes per second, for the large transfers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_per_second: Option<f64>,
    /// What went wrong (credentials scrubbed, as in every error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What the probe found.
#[derive(Clone, Debug, Serialize)]
pub struct ProbeReport {
    pub location: String,
    /// A repository is already there (its config exists).
    pub repository: bool,
    pub steps: Vec<ProbeStep>,
    /// One line per problem, each naming what it breaks; empty when all is well.
    pub diagnosis: Vec<String>,
    /// Probe objects that could not be removed (the user must delete them).
    pub left_behind: Vec<String>,
}

impl ProbeReport {
    pub fn ok(&self) -> bool {
        self.diagnosis.is_empty()
    }

    pub fn step(&self, name: &str) -> Option<&ProbeStep> {
        self.steps.iter().find(|s| s.step == name)
    }
}

/// The steps, in order, and what their failure breaks.
const BREAKS: &[(&str, &str)] = &[
    ("check repository", "cannot even look for a repository: every command will fail"),
    ("write small", "cannot write: init and backup will fail"),
    ("stat small", "cannot stat a written object: backup, check and prune will fail"),
    ("read small", "can write but cannot read: restore, check and every command that opens the repository will fail"),
    ("read range", "ranged reads fail: restore, check and mount will fail"),
    ("read missing", "a missing object does not read as \"not found\": cairn cannot tell an empty place from a broken one"),
    ("list", "a written object is not listed: backup, check and prune will miss data"),
    ("write large", "cannot write a large object: backups of large files will fail"),
    ("read large", "cannot read a large object back intact: restore and check will fail"),
    ("delete", "can write but cannot delete: prune, forget and unlock will fail"),
    ("deleted is gone", "a deleted object can still be read or listed: prune and lock handling need read-after-delete consistency"),
];

/// Runs the probe. Never fails itself: every problem is in the report.
pub fn run(backend: &dyn Backend, opts: &ProbeOptions) -> ProbeReport {
    let mut p = Probe {
        backend,
        steps: Vec::new(),
    };
    let tag = random_hex();
    let small_name = format!("cairn-probe-{tag}-small");
    let large_name = format!("cairn-probe-{tag}-large");
    let small = pattern(&tag, 4096);
    let large = pattern(&format!("{tag}-large"), opts.large_size.max(1));

    let repository = p
        .timed("check repository", 1, || {
            match backend.size(FileType::Config, "") {
                Ok(_) => Ok(true),
                Err(e) if e.is_not_found() => Ok(false),
                Err(e) => Err(e.to_string()),
            }
        })
        .unwrap_or(false);
    let mut written = Vec::new();
    let unreachable = p.failed("check repository");
    if !unreachable {
        let wrote = p.timed("write small", opts.rounds, || {
            backend
                .write(FileType::Probe, &small_name, &small)
                .map_err(|e| e.to_string())
        });
        if wrote.is_some() {
            written.push(small_name.clone());
            p.small_checks(&small_name, &small, opts.rounds);
            p.timed("read missing", 1, || {
                match backend.read(FileType::Probe, &format!("cairn-probe-{tag}-missing")) {
                    Ok(_) => Err("an object never written was read".into()),
                    Err(e) if e.is_not_found() => Ok(()),
                    Err(e) => Err(format!("expected \"not found\", got: {e}")),
                }
            });
            p.timed("list", 1, || {
                let listed = backend.list(FileType::Probe).map_err(|e| e.to_string())?;
                match listed.iter().find(|(n, _)| *n == small_name) {
                    Some((_, size)) if *size == small.len() as u64 => Ok(()),
                    Some((_, size)) => Err(format!(
                        "listed with {size} bytes, {} were written",
                        small.len()
                    )),
                    None => Err(format!("{small_name} was written but is not listed")),
                }
            });
            if p.large_transfers(&large_name, &large) {
                written.push(large_name.clone());
            }
        }
    }
    let mut left_behind = Vec::new();
    if !written.is_empty() {
        let deleted = p.timed("delete", 1, || {
            let mut first_err = None;
            for name in &written {
                if let Err(e) = backend.delete(FileType::Probe, name) {
                    left_behind.push(name.clone());
                    first_err.get_or_insert(e.to_string());
                }
            }
            first_err.map_or(Ok(()), Err)
        });
        if deleted.is_some() {
            p.timed("deleted is gone", 1, || {
                match backend.read(FileType::Probe, &small_name) {
                    Ok(_) => return Err("a deleted object still reads".to_string()),
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(format!("expected \"not found\", got: {e}")),
                }
                let listed = backend.list(FileType::Probe).map_err(|e| e.to_string())?;
                if listed.iter().any(|(n, _)| written.contains(n)) {
                    return Err("a deleted object is still listed".into());
                }
                Ok(())
            });
        }
    }

    let diagnosis = p
        .steps
        .iter()
        .filter(|s| !s.ok)
        .map(|s| {
            let breaks = BREAKS
                .iter()
                .find(|(n, _)| *n == s.step)
                .map_or("", |(_, b)| b);
            format!("{breaks} ({})", s.error.as_deref().unwrap_or("failed"))
        })
        .collect();
    ProbeReport {
        location: backend.location(),
        repository,
        steps: p.steps,
        diagnosis,
        left_behind,
    }
}

struct Probe<'a> {
    backend: &'a dyn Backend,
    steps: Vec<ProbeStep>,
}

impl Probe<'_> {
    /// Runs `f` `rounds` times (stopping at the first failure) and records the step
    /// with the median time. Returns the last result when every round succeeded.
    fn timed<T>(
        &mut self,
        step: &'static str,
        rounds: usize,
        mut f: impl FnMut() -> Result<T, String>,
    ) -> Option<T> {
        let mut times = Vec::new();
        let mut last = None;
        let mut error = None;
        for _ in 0..rounds.max(1) {
            let start = Instant::now();
            let r = f();
            times.push(start.elapsed());
            match r {
                Ok(v) => last = Some(v),
                Err(e) => {
                    error = Some(e);
                    last = None;
                    break;
                }
            }
        }
        self.steps.push(ProbeStep {
            step,
            ok: error.is_none(),
            millis: millis(median(&mut times)),
            bytes_per_second: None,
            error,
        });
        last
    }

    fn failed(&self, step: &str) -> bool {
        self.steps.iter().any(|s| s.step == step && !s.ok)
    }

    fn small_checks(&mut self, name: &str, data: &[u8], rounds: usize) {
        let b = self.backend;
        self.timed("stat small", rounds, || {
            match b.size(FileType::Probe, name) {
                Ok(n) if n == data.len() as u64 => Ok(()),
                Ok(n) => Err(format!("size {n}, {} were written", data.len())),
                Err(e) => Err(e.to_string()),
            }
        });
        self.timed("read small", rounds, || {
            match b.read(FileType::Probe, name) {
                Ok(d) if d == data => Ok(()),
                Ok(d) => Err(format!(
                    "read back {} bytes that differ from the {} written",
                    d.len(),
                    data.len()
                )),
                Err(e) => Err(e.to_string()),
            }
        });
        let (off, len) = (1000usize, 1500usize);
        self.timed("read range", rounds, || {
            match b.read_range(FileType::Probe, name, off as u64, len) {
                Ok(d) if d == data[off..off + len] => Ok(()),
                Ok(d) => Err(format!(
                    "bytes {off}..{} came back as {} other bytes",
                    off + len,
                    d.len()
                )),
                Err(e) => Err(e.to_string()),
            }
        });
    }

    /// Writes and reads the large object, recording throughput. True when it was
    /// written (so it must be deleted).
    fn large_transfers(&mut self, name: &str, data: &[u8]) -> bool {
        let b = self.backend;
        let wrote = self
            .timed("write large", 1, || {
                b.write(FileType::Probe, name, data)
                    .map_err(|e| e.to_string())
            })
            .is_some();
        self.set_throughput(data.len());
        if !wrote {
            // A failed write may still have left something under the name.
            return b.size(FileType::Probe, name).is_ok();
        }
        self.timed("read large", 1, || match b.read(FileType::Probe, name) {
            Ok(d) if d == data => Ok(()),
            Ok(d) => Err(format!(
                "read back {} bytes that differ from the {} written",
                d.len(),
                data.len()
            )),
            Err(e) => Err(e.to_string()),
        });
        self.set_throughput(data.len());
        true
    }

    fn set_throughput(&mut self, bytes: usize) {
        if let Some(s) = self.steps.last_mut() {
            if s.ok && s.millis > 0.0 {
                s.bytes_per_second = Some(bytes as f64 / (s.millis / 1000.0));
            }
        }
    }
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times.get(times.len() / 2).copied().unwrap_or_default()
}

fn random_hex() -> String {
    let mut r = [0u8; 8];
    getrandom::getrandom(&mut r).expect("the operating system has no random source");
    hex::encode(r)
}

/// Incompressible bytes derived from `seed`: what a backup's packs look like to the
/// wire, and cheap to make.
fn pattern(seed: &str, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(seed.as_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::LocalBackend;

    #[test]
    fn a_local_folder_passes_and_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().to_path_buf());
        let opts = ProbeOptions {
            large_size: 1 << 20,
            rounds: 2,
        };
        let r = run(&b, &opts);
        assert!(r.ok(), "{:?}", r.diagnosis);
        assert!(!r.repository);
        assert_eq!(r.steps.len(), BREAKS.len());
        assert!(r.step("write large").unwrap().bytes_per_second.is_some());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_folder_that_cannot_be_written_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().join("missing/deeper"));
        let r = run(&b, &ProbeOptions::default());
        assert!(!r.ok());
        assert!(
            r.diagnosis[0].starts_with("cannot write"),
            "{:?}",
            r.diagnosis
        );
        assert!(r.left_behind.is_empty());
    }
}
