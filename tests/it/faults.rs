//! Any single failed (or truncated) write, read, delete or list during backup, forget +
//! prune or a password change leaves a repository that passes `check --read-data` and
//! whose every snapshot restores exactly. On a local folder and over S3 (s3s-fs, whose
//! objects are plain files: each try's repository is a bucket copied from the fixture,
//! and the faults are injected between cairn and the S3 client).

use std::fs;
use std::path::{Path, PathBuf};
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
        cp_a(&src, &state);
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

fn verify(f: &Fixture, dir: &Path, what: &str) {
    assert_sound(
        &f.env,
        dir,
        &[PASSWORD, NEW_PASSWORD],
        &f.states,
        &f.src,
        what,
    );
}

/// Where each try's repository lives.
#[derive(Clone, Copy, PartialEq)]
enum Storage {
    Local,
    S3,
}

/// A copy of the fixture repository on `storage`: its folder on disk (for verifying)
/// and the backend to run the operation against.
fn place(f: &Fixture, storage: Storage, name: &str) -> Option<(PathBuf, Arc<dyn Backend>)> {
    match storage {
        Storage::Local => {
            let dir = f.env.path(name);
            cp_a(&f.env.repo, &dir);
            Some((dir.clone(), Arc::new(LocalBackend::new(dir))))
        }
        Storage::S3 => {
            let base = crate::servers::remote(crate::servers::Kind::S3)?;
            // The fresh bucket's folder, holding a copy of the fixture at its root.
            let bucket_dir = base.disk.parent().unwrap().to_path_buf();
            let dir = bucket_dir.join("repo");
            cp_a(&f.env.repo, &dir);
            Some((dir, base.backend()))
        }
    }
}

fn exercise(name: &str, op: Operation) {
    exercise_on(name, op, Storage::Local, 6);
}

fn exercise_on(name: &str, op: Operation, storage: Storage, per_kind: usize) {
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
    let Some((counting_dir, inner)) = place(&f, storage, "counting") else {
        return;
    };
    let counter = Arc::new(FaultyBackend::new(inner, Op::Write, 0, Fault::Fail));
    op(counter.clone(), &f.src).unwrap();
    verify(&f, &counting_dir, &format!("{name} without faults"));
    let mut tried = 0;
    for (kind, fault) in faults {
        for n in positions(counter.count(kind), per_kind) {
            let (dir, inner) = place(&f, storage, &format!("try-{kind:?}-{fault:?}-{n}")).unwrap();
            let faulty = Arc::new(FaultyBackend::new(inner, kind, n, fault));
            let _ = op(faulty, &f.src);
            verify(&f, &dir, &format!("{name} with {fault:?} on {kind:?} #{n}"));
            fs::remove_dir_all(&dir).unwrap();
            tried += 1;
        }
    }
    assert!(tried >= 10, "{name}: only {tried} faults tried");
}

#[test]
fn backup_over_s3_survives_any_single_fault() {
    exercise_on("backup over S3", do_backup, Storage::S3, 6);
}

#[test]
fn forget_and_prune_over_s3_survive_any_single_fault() {
    exercise_on("forget+prune over S3", do_forget_prune, Storage::S3, 6);
}

#[test]
fn password_change_over_s3_survives_any_single_fault() {
    exercise_on("key passwd over S3", do_passwd, Storage::S3, 6);
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
