//! `cairn test-storage` (alias `probe`): write, read, range-read, list and delete probe
//! objects at the repository URL, before or after `init`, and say what works, how
//! fast, and what a failure will break. No password: no repository file is touched.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use clap::Args;

use super::{output, Ctx};
use cairn::backend::location::{self, Target};
use cairn::backend::probe::{self, ProbeOptions, ProbeReport};
use cairn::{Error, Result};

#[derive(Args)]
pub struct TestStorageArgs {
    /// Size of the large probe object, for throughput (e.g. 4MiB, 100M, 1GiB).
    #[arg(long, value_name = "SIZE", default_value = "48MiB", value_parser = parse_size)]
    size: usize,
    /// How many small objects are written, stat'ed and read, one after another
    /// (latency).
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u64).range(1..=1000))]
    rounds: u64,
}

pub fn run(ctx: &Ctx, a: TestStorageArgs) -> Result<i32> {
    let (url, _) = ctx.repo_url()?;
    // A local folder that does not exist yet is made for the probe (private, as init
    // makes it) and removed again, with every parent the probe made.
    let made = match location::parse(&url, &ctx.g.options, &|k| std::env::var(k).ok())? {
        Target::Local(path) => make_folder(&path),
        Target::Remote(_) => Vec::new(),
    };
    let (backend, _) = ctx.backend()?;
    let opts = ProbeOptions {
        large_size: a.size,
        rounds: a.rounds as usize,
    };
    let report = probe::run(&*backend, &opts);
    for dir in made {
        if std::fs::remove_dir(&dir).is_err() {
            break;
        }
    }
    if ctx.json() {
        output::print_json(&serde_json::json!({
            "ok": report.ok(),
            "location": report.location,
            "repository": report.repository,
            "steps": report.steps,
            "diagnosis": report.diagnosis,
            "left_behind": report.left_behind,
        }));
    } else {
        print_human(ctx, &report);
    }
    if !report.left_behind.is_empty() {
        eprintln!(
            "cairn: warning: probe objects left at {}: {} (delete them by hand)",
            report.location,
            report.left_behind.join(", ")
        );
    }
    match report.diagnosis.first() {
        None => Ok(0),
        Some(first) if ctx.json() => {
            eprintln!("cairn: error: {}: {first}", report.location);
            Ok(1)
        }
        Some(first) => Err(Error::Other(format!("{}: {first}", report.location))),
    }
}

fn print_human(ctx: &Ctx, r: &ProbeReport) {
    ctx.say(format!(
        "storage {}: {}",
        r.location,
        match r.repository {
            Some(true) => "a cairn repository is here",
            Some(false) => "no repository here yet",
            None => "cannot be reached",
        }
    ));
    for s in &r.steps {
        let speed = s
            .bytes_per_second
            .map(|b| format!(", {}/s", output::bytes(b as u64)))
            .unwrap_or_default();
        let status = match (s.ok, s.skipped) {
            (true, _) => "ok  ",
            (false, true) => "skip",
            (false, false) => "FAIL",
        };
        ctx.say(format!(
            "  {status} {:<17} {:>9.1} ms{speed}",
            s.step, s.millis
        ));
    }
    // Every problem but the first (which is the error line) is printed here.
    for d in r.diagnosis.iter().skip(1) {
        eprintln!("cairn: also: {d}");
    }
    if r.ok() {
        ctx.say("all storage operations cairn needs work here");
    }
}

/// The folders from `path` up to the first one that exists, made with mode 0700;
/// returned deepest first (the order to remove them in). Empty when `path` exists or
/// cannot be made (the probe's first write then says why).
fn make_folder(path: &Path) -> Vec<PathBuf> {
    let mut missing = Vec::new();
    let mut p = Some(path);
    while let Some(dir) = p {
        if dir.as_os_str().is_empty() || dir.exists() {
            break;
        }
        missing.push(dir.to_path_buf());
        p = dir.parent();
    }
    if missing.is_empty() {
        return missing;
    }
    let made = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path);
    if made.is_err() {
        // Remove whatever part was made.
        for dir in &missing {
            let _ = std::fs::remove_dir(dir);
        }
        return Vec::new();
    }
    missing
}

/// `4096`, `64K`, `8MiB`, `1G`: binary units, at least 4 KiB, at most 1 GiB (the
/// largest pack a repository can be set to; the probe holds it in memory a few times).
fn parse_size(s: &str) -> std::result::Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as 8MiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown unit {other:?} in {s:?} (use K, M or G)")),
    };
    let v = n.checked_mul(mult).ok_or("size too large")?;
    if !(4096..=1 << 30).contains(&v) {
        return Err(format!("{s:?}: the size must be between 4KiB and 1GiB"));
    }
    Ok(v as usize)
}
