//! Interleavings (issue 7): an operation is paused at its Nth storage call, for N spread
//! over all its calls, while other real cairn processes work on the same repository;
//! then it resumes. Afterwards either the paused operation failed loudly and wrote no
//! snapshot, or it succeeded; in both cases `check --read-data` passes and every
//! snapshot restores exactly the source state it was taken from.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cairn::archiver::{self, BackupOptions};
use cairn::backend::{Backend, LocalBackend, PausingBackend};
use cairn::crypto::KdfParams;
use cairn::prune::{prune, PruneOptions};
use cairn::repo::lock::LockKind;
use cairn::Repository;

use crate::common::*;

const NEW_PASSWORD: &str = "another password";

struct World {
    env: Env,
    src: PathBuf,
    /// Tag → the source state a snapshot with that tag holds.
    states: Vec<(String, PathBuf)>,
}

/// Snapshots s1 and s2 of a changing source; the source is left in state s3, which
/// the paused backup and any interfering backup store (tags s3, s3-other).
fn world() -> World {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    let mut states = Vec::new();
    for (i, tag) in ["s1", "s2", "s3"].iter().enumerate() {
        for f in 0..5 {
            // Half the files change each time: later snapshots rely on earlier packs.
            let seed = if f % 2 == 0 {
                f as u64
            } else {
                (i * 10 + f) as u64
            };
            fs::write(
                src.join(format!("d/f{f}")),
                random_bytes(30_000 + f * 7000, seed),
            )
            .unwrap();
        }
        fs::write(
            src.join("big"),
            random_bytes(1_200_000, 50 + (i as u64 % 2)),
        )
        .unwrap();
        let state = env.path(&format!("state-{tag}"));
        cp_a(&src, &state);
        states.push((tag.to_string(), state.clone()));
        if *tag == "s3" {
            states.push(("s3-other".into(), state));
        } else {
            env.backup(["--tag", tag, src.to_str().unwrap()]);
        }
    }
    World { env, src, states }
}

/// The paused operation: what a cairn command does, through the given backend.
type Paused = fn(Arc<dyn Backend>, &World) -> cairn::Result<()>;
/// What other processes do meanwhile, against the repository at the target.
type Interfere = fn(&World, &Target);

/// One try's repository: its folder on disk, and the server it is served from when the
/// try runs over S3 (s3s-fs keeps objects as plain files: a bucket is a folder).
struct Target {
    dir: PathBuf,
    remote: Option<crate::servers::RemoteRepo>,
}

impl Target {
    fn place(w: &World, name: &str, over_s3: bool) -> Option<Target> {
        if !over_s3 {
            let dir = w.env.path(name);
            cp_a(&w.env.repo, &dir);
            return Some(Target { dir, remote: None });
        }
        let remote = crate::servers::remote(crate::servers::Kind::S3)?;
        cp_a(&w.env.repo, &remote.disk);
        Some(Target {
            dir: remote.disk.clone(),
            remote: Some(remote),
        })
    }

    fn backend(&self) -> Arc<dyn Backend> {
        match &self.remote {
            Some(r) => r.backend(),
            None => Arc::new(LocalBackend::new(self.dir.clone())),
        }
    }

    /// `cairn` for this repository (`-r`, `-o` and credentials).
    fn cmd(&self, w: &World) -> std::process::Command {
        let mut c = w.env.bare();
        match &self.remote {
            Some(r) => {
                c.envs(r.env.iter().map(|(k, v)| (k, v)));
                c.arg("-r").arg(&r.url);
                for o in &r.options {
                    c.arg("-o").arg(o);
                }
            }
            None => {
                c.arg("-r").arg(&self.dir);
            }
        }
        c
    }
}

fn open(backend: Arc<dyn Backend>, pw: &str) -> cairn::Result<Repository> {
    Repository::open(backend, pw.as_bytes())
}

fn paused_backup(b: Arc<dyn Backend>, w: &World) -> cairn::Result<()> {
    let mut repo = open(b, PASSWORD)?;
    let _lock = repo.lock(LockKind::Shared)?;
    repo.load_index()?;
    archiver::adopt_left_packs(&mut repo)?;
    let opts = BackupOptions {
        paths: vec![w.src.clone()],
        tags: vec!["s3".into()],
        ..Default::default()
    };
    archiver::backup(&mut repo, &opts, &|_| {}).map(|_| ())
}

const COPY_SOURCE_PASSWORD: &str = "the copy source's password";

/// The repository `copy` reads from: one snapshot of the source in state s3 (tag s3),
/// made on first use. Its own master key: the copy re-chunks, and finds much of s3's
/// data already in the target (from s1 and s2), relying on it.
fn copy_source(w: &World) -> PathBuf {
    let dir = w.env.path("copy-source");
    if !dir.join("config").exists() {
        let src = w.src.to_str().unwrap();
        for args in [vec!["init"], vec!["backup", "--tag", "s3", src]] {
            let out = w
                .env
                .bare()
                .env("CAIRN_PASSWORD", COPY_SOURCE_PASSWORD)
                .arg("-r")
                .arg(&dir)
                .args(args)
                .output()
                .unwrap();
            assert_eq!(code(&out), 0, "{}", stderr(&out));
        }
    }
    dir
}

/// `cairn copy --from-repo SOURCE` into the paused repository.
fn paused_copy(b: Arc<dyn Backend>, w: &World) -> cairn::Result<()> {
    let source_dir = copy_source(w);
    let mut source = open(
        Arc::new(LocalBackend::new(source_dir)),
        COPY_SOURCE_PASSWORD,
    )?;
    let _source_lock = source.lock(LockKind::Shared)?;
    source.load_index()?;
    let all = source.snapshots()?.list;
    let ids: Vec<_> = all.iter().map(|(id, _)| *id).collect();
    let mut repo = open(b, PASSWORD)?;
    let _lock = repo.lock(LockKind::Shared)?;
    repo.load_index()?;
    archiver::adopt_left_packs(&mut repo)?;
    let r = cairn::copy::copy(&source, &mut repo, &all, &ids, &|_| {})?;
    assert_eq!(r.snapshots_copied, 1);
    assert!(r.blobs_present > 0, "the copy relies on no target data");
    Ok(())
}

fn paused_prune(b: Arc<dyn Backend>, _: &World) -> cairn::Result<()> {
    let mut repo = open(b, PASSWORD)?;
    let _lock = repo.lock(LockKind::Prune)?;
    let opts = PruneOptions {
        max_unused: 5.0,
        dry_run: false,
        instant_delete: false,
        delete_when_idle: true,
        grace: Duration::from_secs(24 * 3600),
        now: chrono::Utc::now().timestamp(),
    };
    prune(&mut repo, &opts).map(|_| ())
}

fn paused_passwd(b: Arc<dyn Backend>, _: &World) -> cairn::Result<()> {
    let repo = open(b, PASSWORD)?;
    let _lock = repo.lock(LockKind::Shared)?;
    let cheap = KdfParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };
    repo.add_key(NEW_PASSWORD.as_bytes(), cheap)?;
    repo.backend()
        .delete(cairn::backend::FileType::Key, &repo.key_id)
}

/// Runs cairn against `dir`; the exit code may be anything but a crash (a command that
/// meets a lock it must not share exits 11).
fn cairn(w: &World, dir: &Target, envs: &[(&str, String)], args: &[&str]) {
    for pw in [PASSWORD, NEW_PASSWORD] {
        let mut c = dir.cmd(w);
        c.env("CAIRN_PASSWORD", pw);
        for (k, v) in envs {
            c.env(k, v);
        }
        let out = c.args(args).output().unwrap();
        let code = code(&out);
        assert!(
            [0, 11, 12].contains(&code),
            "cairn {args:?} exited {code}: {}",
            stderr(&out)
        );
        if code != 12 {
            return;
        }
    }
}

fn later() -> String {
    (chrono::Utc::now().timestamp() + 25 * 3600).to_string()
}

fn forget_prune_prune(w: &World, dir: &Target) {
    cairn(w, dir, &[], &["forget", "--keep-last", "1"]);
    cairn(w, dir, &[], &["prune"]);
    cairn(w, dir, &[("CAIRN_PRUNE_NOW", later())], &["prune"]);
}

fn forget_instant_prune(w: &World, dir: &Target) {
    cairn(w, dir, &[], &["forget", "--keep-last", "1"]);
    cairn(w, dir, &[], &["prune", "--instant-delete"]);
    cairn(w, dir, &[("CAIRN_PRUNE_NOW", later())], &["prune"]);
}

fn backup_and_prune(w: &World, dir: &Target) {
    let src = w.src.to_str().unwrap().to_string();
    cairn(w, dir, &[], &["backup", "--tag", "s3-other", &src]);
    cairn(w, dir, &[], &["forget", "--keep-last", "1"]);
    cairn(w, dir, &[("CAIRN_PRUNE_NOW", later())], &["prune"]);
    cairn(w, dir, &[], &["backup", "--tag", "s3-other", &src]);
}

fn prune_twice(w: &World, dir: &Target) {
    cairn(w, dir, &[], &["forget", "--keep-last", "1"]);
    cairn(w, dir, &[], &["prune"]);
    cairn(w, dir, &[("CAIRN_PRUNE_NOW", later())], &["prune"]);
}

fn passwd(w: &World, dir: &Target) {
    let mut c = dir.cmd(w);
    let out = c
        .env("CAIRN_NEW_PASSWORD", NEW_PASSWORD)
        .args(["key", "passwd"])
        .output()
        .unwrap();
    assert!([0, 11].contains(&code(&out)), "{}", stderr(&out));
}

/// `check --read-data` passes and every snapshot restores its state exactly.
fn verify(w: &World, dir: &Path, what: &str) {
    assert_sound(
        &w.env,
        dir,
        &[PASSWORD, NEW_PASSWORD],
        &w.states,
        &w.src,
        what,
    );
}

fn interleave(name: &str, op: Paused, interfere: Interfere) {
    interleave_on(name, op, interfere, false);
}

fn interleave_on(name: &str, op: Paused, interfere: Interfere, over_s3: bool) {
    let w = world();
    // A clean run counts the operation's storage calls.
    let Some(counting) = Target::place(&w, "counting", over_s3) else {
        return;
    };
    let counter = Arc::new(PausingBackend::new(counting.backend(), 0));
    op(counter.clone(), &w).unwrap();
    verify(&w, &counting.dir, &format!("{name} alone"));
    let mut paused = 0;
    for n in positions(counter.calls(), 7) {
        let target = Target::place(&w, &format!("try-{n}"), over_s3).unwrap();
        let dir = &target;
        let backend = Arc::new(PausingBackend::new(target.backend(), n));
        std::thread::scope(|s| {
            let b: Arc<dyn Backend> = backend.clone();
            let w = &w;
            let t = s.spawn(move || op(b, w));
            if backend.wait_paused(Duration::from_secs(60)) {
                paused += 1;
                interfere(w, dir);
                backend.resume();
            }
            // A loud failure is allowed: verify then finds no snapshot of it, or a
            // whole one.
            if let Err(e) = t.join().unwrap() {
                eprintln!("{name}: paused at call {n}: failed loudly: {e}");
            }
        });
        verify(&w, &target.dir, &format!("{name} paused at call {n}"));
        fs::remove_dir_all(&target.dir).unwrap();
    }
    assert!(paused >= 4, "{name}: paused only {paused} times");
}

#[test]
fn backup_paused_beside_forget_and_two_prunes() {
    interleave(
        "backup | forget+prune+prune",
        paused_backup,
        forget_prune_prune,
    );
}

#[test]
fn backup_paused_beside_forget_and_instant_prune() {
    interleave(
        "backup | forget+prune --instant-delete",
        paused_backup,
        forget_instant_prune,
    );
}

#[test]
fn backup_paused_beside_another_backup_and_prune() {
    interleave(
        "backup | backup+forget+prune",
        paused_backup,
        backup_and_prune,
    );
}

#[test]
fn copy_paused_beside_forget_and_two_prunes() {
    interleave("copy | forget+prune+prune", paused_copy, forget_prune_prune);
}

#[test]
fn prune_paused_beside_backups_and_prunes() {
    interleave(
        "prune | backup+forget+prune",
        paused_prune,
        backup_and_prune,
    );
    interleave("prune | forget+prune+prune", paused_prune, prune_twice);
}

#[test]
fn backup_paused_beside_key_passwd_and_passwd_paused_beside_backup() {
    interleave("backup | key passwd", paused_backup, passwd);
    interleave(
        "key passwd | backup+forget+prune",
        paused_passwd,
        backup_and_prune,
    );
}

/// The same races over S3: the paused backup talks to s3s-fs, and so do the forget and
/// the prunes that run meanwhile.
#[test]
fn backup_over_s3_paused_beside_forget_and_two_prunes() {
    interleave_on(
        "backup | forget+prune+prune over S3",
        paused_backup,
        forget_prune_prune,
        true,
    );
}

#[test]
fn prune_over_s3_paused_beside_backups_and_prunes() {
    interleave_on(
        "prune | backup+forget+prune+backup over S3",
        paused_prune,
        backup_and_prune,
        true,
    );
}
