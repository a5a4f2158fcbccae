//! `test-storage`: before a destination is trusted with backups, write, read,
//! range-read, list and delete probe objects there and say what works, how fast,
//! and, when something does not, which cairn command it will break.
//!
//! The probe objects live beside the repository's folders, named
//! `cairn-probe-<random>-small<N>` and `-large` (FileType::Probe): nothing of a
//! repository is read, written or listed by name, so the probe is safe before and
//! after `init`, and beside a running backup.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Backend, FileType};

/// How hard to probe.
#[derive(Clone, Debug)]
pub struct ProbeOptions {
    /// Size of the large object (throughput); above the multipart threshold of S3 by
    /// default, so that path is exercised too.
    pub large_size: usize,
    /// How many small objects are written, stat'ed and read, one after another
    /// (latency); each round has its own name, as a backup's files do.
    pub rounds: usize,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            large_size: 48 << 20,
            rounds: 3,
        }
    }
}

/// One step of the probe.
#[derive(Clone, Debug, Serialize)]
pub struct ProbeStep {
    pub step: &'static str,
    pub ok: bool,
    /// Not run, because an earlier step failed.
    pub skipped: bool,
    /// Median time of the step's requests, in milliseconds (retries included).
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
    /// A repository is already there (its config exists); None when the storage
    /// could not be asked.
    pub repository: Option<bool>,
    /// Every step, in order (skipped ones too).
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
pub const STEPS: &[(&str, &str)] = &[
    ("check repository", "cannot even look for a repository: every command will fail"),
    ("write small", "cannot write: init and backup will fail"),
    ("stat small", "cannot stat a written object: backup, check and prune will fail"),
    ("read small", "can write but cannot read back what was written: restore, check and every command that opens the repository will fail"),
    ("read range", "ranged reads fail: restore and check will fail"),
    ("read missing", "a missing object does not read as \"not found\": cairn cannot tell an empty place from a broken one"),
    ("list", "a written object is not listed: backup, check and prune will miss data"),
    ("write large", "cannot write a large object (--size): packs of that size will fail"),
    ("read large", "cannot read a large object back intact: restore and check will fail"),
    ("delete", "can write but cannot delete: prune, forget and unlock will fail"),
    ("deleted is gone", "a deleted object can still be read or listed after 10 s: prune and lock handling need deletions to show"),
];

/// How long a deletion may take to show before the storage is called inconsistent.
const DELETE_VISIBLE_WITHIN: Duration = Duration::from_secs(10);

/// Runs the probe. Never fails itself: every problem is in the report.
pub fn run(backend: &dyn Backend, opts: &ProbeOptions) -> ProbeReport {
    let mut p = Probe {
        backend,
        steps: Vec::new(),
    };
    let tag = random_hex();
    let rounds = opts.rounds.max(1);
    let smalls: Vec<(String, Vec<u8>)> = (0..rounds)
        .map(|i| {
            let name = format!("cairn-probe-{tag}-small{i}");
            let data = pattern(&name, 4096);
            (name, data)
        })
        .collect();
    let large_name = format!("cairn-probe-{tag}-large");
    // Every name a write was attempted for: a write that failed or timed out may still
    // have stored something, so each is deleted (a "not found" is fine).
    let written = RefCell::new(Vec::<String>::new());
    let write = |name: &str, data: &[u8]| {
        written.borrow_mut().push(name.to_string());
        backend
            .write(FileType::Probe, name, data)
            .map_err(|e| e.to_string())
    };

    let repository = p.timed("check repository", 1, |_| {
        match backend.size(FileType::Config, "") {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    });
    if repository.is_some()
        && p.timed("write small", rounds, |i| write(&smalls[i].0, &smalls[i].1))
            .is_some()
    {
        p.small_checks(&smalls);
        p.timed("read missing", 1, |_| {
            match backend.read(FileType::Probe, &format!("cairn-probe-{tag}-missing")) {
                Ok(_) => Err("an object never written was read".into()),
                Err(e) if e.is_not_found() => Ok(()),
                Err(e) => Err(format!("expected \"not found\", got: {e}")),
            }
        });
        p.timed("list", 1, |_| {
            let listed = backend.list(FileType::Probe).map_err(|e| e.to_string())?;
            for (name, data) in &smalls {
                match listed.iter().find(|(n, _)| n == name) {
                    Some((_, size)) if *size == data.len() as u64 => {}
                    Some((_, size)) => {
                        return Err(format!(
                            "{name} listed with {size} bytes, {} were written",
                            data.len()
                        ))
                    }
                    None => return Err(format!("{name} was written but is not listed")),
                }
            }
            Ok(())
        });
        let large = pattern(&large_name, opts.large_size.max(1));
        if p.timed("write large", 1, |_| write(&large_name, &large))
            .is_some()
        {
            p.set_throughput(large.len());
            p.timed("read large", 1, |_| {
                same(backend.read(FileType::Probe, &large_name), &large)
            });
            p.set_throughput(large.len());
        }
    }

    let written = written.into_inner();
    let mut left_behind = Vec::new();
    if !written.is_empty() {
        let deleted = p.timed("delete", 1, |_| {
            let mut first_err = None;
            for name in &written {
                match backend.delete(FileType::Probe, name) {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => {
                        left_behind.push(name.clone());
                        first_err.get_or_insert(e.to_string());
                    }
                }
            }
            first_err.map_or(Ok(()), Err)
        });
        if deleted.is_some() {
            p.timed("deleted is gone", 1, |_| {
                let start = Instant::now();
                loop {
                    let still = still_there(backend, &written);
                    match still {
                        Ok(None) => return Ok(()),
                        Err(e) => return Err(e),
                        Ok(Some(why)) if start.elapsed() >= DELETE_VISIBLE_WITHIN => {
                            return Err(why)
                        }
                        Ok(Some(_)) => std::thread::sleep(Duration::from_millis(500)),
                    }
                }
            });
        }
    }
    p.fill_skipped();

    let diagnosis = p
        .steps
        .iter()
        .filter(|s| !s.ok && !s.skipped)
        .map(|s| {
            let breaks = STEPS
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

/// Whether any of `names` still reads or is still listed (and why), or an error.
fn still_there(backend: &dyn Backend, names: &[String]) -> Result<Option<String>, String> {
    for name in names {
        match backend.read(FileType::Probe, name) {
            Ok(_) => return Ok(Some(format!("deleted {name} still reads"))),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(format!("expected \"not found\", got: {e}")),
        }
    }
    let listed = backend.list(FileType::Probe).map_err(|e| e.to_string())?;
    Ok(listed
        .iter()
        .find(|(n, _)| names.contains(n))
        .map(|(n, _)| format!("deleted {n} is still listed")))
}

/// Ok when a read returned exactly `data`.
fn same(read: crate::error::Result<Vec<u8>>, data: &[u8]) -> Result<(), String> {
    match read {
        Ok(d) if d == data => Ok(()),
        Ok(d) => Err(format!(
            "read back {} bytes that differ from the {} written",
            d.len(),
            data.len()
        )),
        Err(e) => Err(e.to_string()),
    }
}

struct Probe<'a> {
    backend: &'a dyn Backend,
    steps: Vec<ProbeStep>,
}

impl Probe<'_> {
    /// Runs `f(round)` for `rounds` rounds (stopping at the first failure) and records
    /// the step with the median time. Returns the last result when every round
    /// succeeded.
    fn timed<T>(
        &mut self,
        step: &'static str,
        rounds: usize,
        mut f: impl FnMut(usize) -> Result<T, String>,
    ) -> Option<T> {
        let mut times = Vec::new();
        let mut last = None;
        let mut error = None;
        for round in 0..rounds.max(1) {
            let start = Instant::now();
            let r = f(round);
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
            skipped: false,
            millis: millis(median(&mut times)),
            bytes_per_second: None,
            error,
        });
        last
    }

    fn small_checks(&mut self, smalls: &[(String, Vec<u8>)]) {
        let b = self.backend;
        let n = smalls.len();
        self.timed("stat small", n, |i| {
            let (name, data) = &smalls[i];
            match b.size(FileType::Probe, name) {
                Ok(n) if n == data.len() as u64 => Ok(()),
                Ok(n) => Err(format!("size {n}, {} were written", data.len())),
                Err(e) => Err(e.to_string()),
            }
        });
        self.timed("read small", n, |i| {
            let (name, data) = &smalls[i];
            same(b.read(FileType::Probe, name), data)
        });
        let (off, len) = (1000usize, 1500usize);
        self.timed("read range", n, |i| {
            let (name, data) = &smalls[i];
            same(
                b.read_range(FileType::Probe, name, off as u64, len),
                &data[off..off + len],
            )
        });
    }

    fn set_throughput(&mut self, bytes: usize) {
        if let Some(s) = self.steps.last_mut() {
            if s.ok && s.millis > 0.0 {
                s.bytes_per_second = Some(bytes as f64 / (s.millis / 1000.0));
            }
        }
    }

    /// Adds the steps that did not run, so a report always has every step, in order.
    fn fill_skipped(&mut self) {
        let mut all = Vec::with_capacity(STEPS.len());
        for (name, _) in STEPS {
            match self.steps.iter().position(|s| s.step == *name) {
                Some(i) => all.push(self.steps[i].clone()),
                None => all.push(ProbeStep {
                    step: name,
                    ok: false,
                    skipped: true,
                    millis: 0.0,
                    bytes_per_second: None,
                    error: None,
                }),
            }
        }
        self.steps = all;
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
    use std::sync::Arc;

    use super::*;
    use crate::backend::{Fault, FaultyBackend, LocalBackend, Op};

    fn small_opts() -> ProbeOptions {
        ProbeOptions {
            large_size: 256 << 10,
            rounds: 2,
        }
    }

    fn left_on_disk(dir: &std::path::Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_local_folder_passes_and_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().to_path_buf());
        let r = run(&b, &small_opts());
        assert!(r.ok(), "{:?}", r.diagnosis);
        assert_eq!(r.repository, Some(false));
        let names: Vec<&str> = r.steps.iter().map(|s| s.step).collect();
        let expected: Vec<&str> = STEPS.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, expected);
        assert!(r.steps.iter().all(|s| s.ok && !s.skipped));
        assert!(r.step("write large").unwrap().bytes_per_second.is_some());
        assert!(left_on_disk(dir.path()).is_empty());
    }

    #[test]
    fn a_folder_that_cannot_be_written_says_so_and_skips_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().join("missing/deeper"));
        let r = run(&b, &small_opts());
        assert_eq!(r.diagnosis.len(), 1, "{:?}", r.diagnosis);
        assert!(
            r.diagnosis[0].starts_with("cannot write: init and backup will fail"),
            "{:?}",
            r.diagnosis
        );
        assert!(r.step("read small").unwrap().skipped);
        assert!(r.left_behind.is_empty());
        assert_eq!(r.steps.len(), STEPS.len());
    }

    /// Every single failed or truncated write, read, list or delete: a failure is
    /// reported, and every probe object left on the disk is one the report names.
    #[test]
    fn every_single_fault_is_reported_and_nothing_is_left_unnamed() {
        for op in [Op::Write, Op::Read, Op::Delete, Op::List] {
            for fault in [Fault::Fail, Fault::Truncate] {
                for nth in 1.. {
                    let dir = tempfile::tempdir().unwrap();
                    let local = Arc::new(LocalBackend::new(dir.path().to_path_buf()));
                    let b = FaultyBackend::new(local, op, nth, fault);
                    let r = run(&b, &small_opts());
                    let what = format!("{op:?} {fault:?} #{nth}: {:?}", r.diagnosis);
                    if b.count(op) < nth {
                        assert!(r.ok(), "{what}");
                        break;
                    }
                    if fault == Fault::Fail {
                        assert!(!r.ok(), "{what}");
                    }
                    let mut named = r.left_behind.clone();
                    named.sort();
                    assert_eq!(left_on_disk(dir.path()), named, "{what}");
                }
            }
        }
    }
}
