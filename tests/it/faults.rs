//! Any single failed (or truncated) write, read, delete or list during backup, forget +
//! prune or a password change leaves a repository that passes `check --read-data` and
//! whose every snapshot restores exactly.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use cairn::archiver::{self, BackupOptions};
use cairn::backend::{Backend, Fault, FaultyBackend, LocalBackend, Op};
use cairn::crypto::KdfParams;
use cairn::forget::{self, GroupBy, KeepPolicy};
use cairn::prune::{prune, PruneOptions};
use cairn::Repository;

use crate::common::*;

const NEW_PASSWORD: &str = "the new password";
const CHEAP: KdfParams = KdfParams {
    memory_kib: 64,
    iterations: 1,
    parallelism: 1,
};

fn cp(from: &Path, to: &Path) {
    assert!(Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap()
        .success());
}

struct Fixture {
    env: Env,
    src: PathBuf,
    /// Tag → the source state that snapshot holds.
    states: Vec<(String, PathBuf)>,
}

fn fixture() -> Fixture {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    let mut states = Vec::new();
    for (i, tag) in ["s1", "s2", "s3"].iter().enumerate() {
        for f in 0..6 {
            fs::write(
                src.join(format!("d/f{f}")),
                random_bytes(10_000 + f * 5000, (i * 10 + f) as u64),
            )
            .unwrap();
        }
        fs::write(src.join("big"), random_bytes(1_500_000, 50 + i as u64)).unwrap();
        let state = env.path(&format!("state-{tag}"));
        cp(&src, &state);
        states.push((tag.to_string(), state));
        if *tag != "s3" {
            env.backup(["--tag", tag, src.to_str().unwrap()]);
        }
    }
    Fixture { env, src, states }
}

fn open(backend: Arc<dyn Backend>, pw: &str) -> cairn::Result<Repository> {
    let mut repo = Repository::open(backend, pw.as_bytes())?;
    repo.load_index()?;
    Ok(repo)
}

type Operation = fn(Arc<dyn Backend>, &Path) -> cairn::Result<()>;

fn do_backup(b: Arc<dyn Backend>, src: &Path) -> cairn::Result<()> {
    let mut repo = open(b, PASSWORD)?;
    let opts = BackupOptions {
        paths: vec![src.to_path_buf()],
        tags: vec!["s3".into()],
        ..Default::default()
    };
    archiver::backup(&mut repo, &opts, &|_| {}).map(|_| ())
}

fn do_forget_prune(b: Arc<dyn Backend>, _: &Path) -> cairn::Result<()> {
    let mut repo = open(b, PASSWORD)?;
    let policy = KeepPolicy {
        last: 1,
        ..Default::default()
    };
    let snaps = repo.snapshots()?;
    let groups = forget::plan(
        &snaps,
        "host,paths".parse::<GroupBy>()?,
        &policy,
        chrono::Local::now().fixed_offset(),
    )?;
    forget::remove(&repo, &groups)?;
    let opts = PruneOptions {
        max_unused: 5.0,
        dry_run: false,
        instant_delete: true,
        delete_when_idle: false,
        grace: std::time::Duration::from_secs(0),
        now: chrono::Utc::now().timestamp(),
    };
    prune(&mut repo, &opts).map(|_| ())
}

fn do_passwd(b: Arc<dyn Backend>, _: &Path) -> cairn::Result<()> {
    let repo = open(b, PASSWORD)?;
    repo.add_key(NEW_PASSWORD.as_bytes(), CHEAP)?;
    repo.backend()
        .delete(cairn::backend::FileType::Key, &repo.key_id)
}

/// The repository at `dir` passes check and restores every snapshot to its state.
fn verify(f: &Fixture, dir: &Path, what: &str) {
    let run = |pw: &str, args: &[&str]| {
        f.env
            .bare()
            .env("CAIRN_PASSWORD", pw)
            .arg("-r")
            .arg(dir)
            .args(args)
            .output()
            .unwrap()
    };
    let pw = if code(&run(PASSWORD, &["snapshots"])) == 0 {
        PASSWORD
    } else {
        NEW_PASSWORD
    };
    let out = run(pw, &["check", "--read-data"]);
    assert_eq!(code(&out), 0, "{what}: check failed: {}", stderr(&out));
    let list: serde_json::Value =
        serde_json::from_slice(&run(pw, &["--json", "snapshots"]).stdout).unwrap();
    for s in list.as_array().unwrap() {
        let tag = s["tags"][0].as_str().unwrap();
        let state = &f.states.iter().find(|(t, _)| t == tag).unwrap().1;
        let target = f.env.path(&format!(
            "restore-{}",
            crate::common::random_bytes(4, rand_seed())[0]
        ));
        let _ = fs::remove_dir_all(&target);
        let out = run(
            pw,
            &[
                "restore",
                s["id"].as_str().unwrap(),
                "--target",
                target.to_str().unwrap(),
            ],
        );
        assert_eq!(code(&out), 0, "{what}: restore failed: {}", stderr(&out));
        assert_same_tree_but_atime(state, &target.join(f.src.strip_prefix("/").unwrap()));
        fs::remove_dir_all(&target).unwrap();
    }
}

fn rand_seed() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Up to `cap` fault positions spread over `1..=count`.
fn positions(count: usize, cap: usize) -> Vec<usize> {
    if count <= cap {
        return (1..=count).collect();
    }
    let mut v: Vec<usize> = (0..cap).map(|i| 1 + i * (count - 1) / (cap - 1)).collect();
    v.dedup();
    v
}

fn exercise(name: &str, op: Operation) {
    let f = fixture();
    let faults = [
        (Op::Write, Fault::Fail),
        (Op::Write, Fault::Truncate),
        (Op::Read, Fault::Fail),
        (Op::Read, Fault::Truncate),
        (Op::Delete, Fault::Fail),
        (Op::List, Fault::Fail),
        (Op::List, Fault::Truncate),
    ];
    // A clean run counts the operations of each kind.
    let counting_dir = f.env.path("counting");
    cp(&f.env.repo, &counting_dir);
    let counter = Arc::new(FaultyBackend::new(
        Arc::new(LocalBackend::new(counting_dir.clone())),
        Op::Write,
        0,
        Fault::Fail,
    ));
    op(counter.clone(), &f.src).unwrap();
    verify(&f, &counting_dir, &format!("{name} without faults"));
    let mut tried = 0;
    for (kind, fault) in faults {
        for n in positions(counter.count(kind), 6) {
            let dir = f.env.path(&format!("try-{kind:?}-{fault:?}-{n}"));
            cp(&f.env.repo, &dir);
            let faulty = Arc::new(FaultyBackend::new(
                Arc::new(LocalBackend::new(dir.clone())),
                kind,
                n,
                fault,
            ));
            let _ = op(faulty, &f.src);
            verify(&f, &dir, &format!("{name} with {fault:?} on {kind:?} #{n}"));
            fs::remove_dir_all(&dir).unwrap();
            tried += 1;
        }
    }
    assert!(tried >= 10, "{name}: only {tried} faults tried");
}

#[test]
fn backup_survives_any_single_fault() {
    exercise("backup", do_backup);
}

#[test]
fn forget_and_prune_survive_any_single_fault() {
    exercise("forget+prune", do_forget_prune);
}

#[test]
fn password_change_survives_any_single_fault() {
    exercise("key passwd", do_passwd);
}
