//! Command-line interface: clap definitions, the repository and password plumbing
//! every command shares, and the one place where errors become exit codes (CLI.md).

mod cmd_backup;
mod cmd_cat;
mod cmd_check;
mod cmd_config;
mod cmd_copy;
mod cmd_daemon;
mod cmd_diff;
mod cmd_dump;
mod cmd_find;
mod cmd_forget;
mod cmd_health;
mod cmd_history;
mod cmd_init;
mod cmd_key;
mod cmd_ls;
mod cmd_mount;
mod cmd_prune;
mod cmd_repair;
mod cmd_restore;
mod cmd_run;
mod cmd_schedule;
mod cmd_snapshots;
mod cmd_stats;
mod cmd_tag;
mod cmd_test_storage;
mod cmd_unlock;
mod cmd_versions;
mod output;
mod password;
mod profile;
mod progress;
mod signals;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use clap::{ArgAction, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use cairn::crypto::KdfParams;
use cairn::repo::lock::{LockGuard, LockKind};
use cairn::repo::snapshot::Snapshot;
use cairn::selector::SnapshotFilter;
use cairn::{backend, Error, Repository, Result};

/// Deduplicating, encrypted backups.
#[derive(Parser)]
#[command(name = "cairn", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
pub struct GlobalArgs {
    /// Repository: a local path or fs:/path. Without it (and without
    /// CAIRN_REPOSITORY) a default repository in your data directory is used.
    #[arg(
        short = 'r',
        long = "repo",
        env = "CAIRN_REPOSITORY",
        global = true,
        value_name = "URL"
    )]
    repo: Option<String>,
    /// Read the password from the first line of this file.
    #[arg(long, env = "CAIRN_PASSWORD_FILE", global = true, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Run this shell command and take its output as the password.
    #[arg(
        long,
        env = "CAIRN_PASSWORD_COMMAND",
        global = true,
        value_name = "CMD"
    )]
    password_command: Option<String>,
    /// Backend option KEY=VALUE (for remote backends; repeatable).
    #[arg(short = 'o', long = "option", global = true, value_name = "KEY=VALUE")]
    options: Vec<String>,
    /// Machine-readable output: one JSON document (JSON lines for backup).
    #[arg(long, global = true)]
    json: bool,
    /// Print nothing but errors and warnings.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Say more (repeatable).
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,
    /// Local cache directory (default: the XDG cache directory).
    #[arg(long, env = "CAIRN_CACHE_DIR", global = true, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Do not use a local cache.
    #[arg(long, global = true)]
    no_cache: bool,
    /// Do not take a lock (read-only commands only).
    #[arg(long, global = true)]
    no_lock: bool,
    /// How long to wait for a conflicting lock (e.g. 30s, 5m, 1h; 0 = fail at once)
    /// before giving up with exit 11.
    #[arg(
        long,
        env = "CAIRN_RETRY_LOCK",
        global = true,
        value_name = "DURATION",
        default_value = "5m"
    )]
    retry_lock: String,
    /// The config file of profiles (default: ~/.config/cairn/cairn.toml, else
    /// /etc/cairn/cairn.toml).
    #[arg(long, env = "CAIRN_CONFIG", global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Use this profile of the config file: its repository, and its flags for backup,
    /// forget, prune, check and copy (flags on the command line win); for history and
    /// health, the profile to report on.
    #[arg(long, global = true, value_name = "NAME")]
    profile: Option<String>,
    /// The run history database (default: <data dir>/cairn/history.sqlite; "off" for
    /// none).
    #[arg(long, env = "CAIRN_HISTORY", global = true, value_name = "FILE")]
    history: Option<String>,
    /// Argon2id memory (KiB) for keys created by init / key add / key passwd.
    #[arg(long, env = "CAIRN_KDF_MEMORY_KIB", global = true, value_name = "KIB",
          value_parser = clap::value_parser!(u32).range(8..=cairn::crypto::KDF_MAX_MEMORY_KIB as i64))]
    kdf_memory_kib: Option<u32>,
    /// Argon2id passes for keys created by init / key add / key passwd.
    #[arg(long, env = "CAIRN_KDF_ITERATIONS", global = true, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=cairn::crypto::KDF_MAX_ITERATIONS as i64))]
    kdf_iterations: Option<u32>,
}

#[derive(Subcommand)]
enum Command {
    /// Create a repository.
    Init(cmd_init::InitArgs),
    /// Take a snapshot of files and directories.
    Backup(cmd_backup::BackupArgs),
    /// List snapshots.
    Snapshots(cmd_snapshots::SnapshotsArgs),
    /// List the files in a snapshot.
    Ls(cmd_ls::LsArgs),
    /// Restore a snapshot, or part of one.
    Restore(cmd_restore::RestoreArgs),
    /// Print repository objects (JSON; `blob` prints raw bytes).
    Cat(cmd_cat::CatArgs),
    /// Manage passwords (keys).
    Key(cmd_key::KeyArgs),
    /// Remove stale locks (all locks with --remove-all).
    Unlock(cmd_unlock::UnlockArgs),
    /// Verify the repository (exit 13 when something is wrong).
    Check(cmd_check::CheckArgs),
    /// Remove snapshots by a retention policy.
    Forget(cmd_forget::ForgetArgs),
    /// What changed between two snapshots, or a snapshot and a directory.
    Diff(cmd_diff::DiffArgs),
    /// Find paths matching patterns across snapshots.
    Find(cmd_find::FindArgs),
    /// The distinct versions of one path across snapshots.
    Versions(cmd_versions::VersionsArgs),
    /// Browse snapshots in a read-only FUSE mount.
    Mount(cmd_mount::MountArgs),
    /// Write a file, or a directory as a tar or zip stream, to stdout.
    Dump(cmd_dump::DumpArgs),
    /// Sizes, deduplication and compression of snapshots or the repository.
    Stats(cmd_stats::StatsArgs),
    /// Add, remove or set snapshot tags.
    Tag(cmd_tag::TagArgs),
    /// Remove data that no snapshot needs.
    Prune(cmd_prune::PruneArgs),
    /// Rebuild repository metadata.
    Repair(cmd_repair::RepairArgs),
    /// Copy snapshots from another repository into this one.
    Copy(cmd_copy::CopyArgs),
    /// Try a storage location before trusting it: write, read, list and delete probe
    /// objects there (no password needed).
    #[command(name = "test-storage", visible_alias = "probe")]
    TestStorage(cmd_test_storage::TestStorageArgs),
    /// Run a profile: backup, forget, prune, check and copy as the config file says.
    Run(cmd_run::RunArgs),
    /// Run the profiles' schedules in the foreground (SIGHUP reloads, SIGTERM stops).
    Daemon(cmd_daemon::DaemonArgs),
    /// systemd timers (or crontab lines) for profiles, and their next run times.
    Schedule(cmd_schedule::ScheduleArgs),
    /// Check the config file.
    Config(cmd_config::ConfigArgs),
    /// Past runs and repository-changing commands, from the local history.
    History(cmd_history::HistoryArgs),
    /// Exit 14 when the newest snapshot is too old or the profile's last run failed.
    Health(cmd_health::HealthArgs),
}

/// `--host`, `--tag`, `--path` for commands that pick snapshots.
#[derive(Args, Clone, Default)]
pub struct FilterArgs {
    /// Only snapshots of this host (repeatable).
    #[arg(long = "host", value_name = "HOST")]
    hosts: Vec<String>,
    /// Only snapshots with these tags (`a,b` = both; repeatable = either).
    #[arg(long = "tag", value_name = "TAGS")]
    tags: Vec<String>,
    /// Only snapshots that include this path (repeatable).
    #[arg(long = "path", value_name = "PATH")]
    paths: Vec<String>,
}

impl FilterArgs {
    pub fn filter(&self) -> SnapshotFilter {
        SnapshotFilter {
            hosts: self.hosts.clone(),
            tags: self.tags.clone(),
            paths: self.paths.clone(),
        }
    }
}

/// How to open the source repository of `copy` and `init --copy-chunker-params`
/// (the URL itself is each command's `--from-repo`).
#[derive(Args, Clone, Default)]
pub struct FromRepoArgs {
    /// Read the source repository's password from the first line of this file
    /// (CAIRN_FROM_PASSWORD gives it directly).
    #[arg(long, env = "CAIRN_FROM_PASSWORD_FILE", value_name = "FILE")]
    from_password_file: Option<PathBuf>,
    /// Run this shell command and take its output as the source repository's password.
    #[arg(long, env = "CAIRN_FROM_PASSWORD_COMMAND", value_name = "CMD")]
    from_password_command: Option<String>,
    /// Backend option KEY=VALUE for the source repository (repeatable), as -o is for
    /// the target.
    #[arg(long = "from-option", value_name = "KEY=VALUE")]
    from_options: Vec<String>,
}

pub struct Ctx {
    pub g: GlobalArgs,
}

impl Ctx {
    pub fn json(&self) -> bool {
        self.g.json
    }

    /// Prints a human line on stdout unless --quiet or --json.
    pub fn say(&self, line: impl AsRef<str>) {
        if !self.g.quiet && !self.g.json {
            println!("{}", line.as_ref());
        }
    }

    /// The Argon2id cost for a new key (call once per key created: it warns).
    pub fn kdf(&self) -> KdfParams {
        let d = KdfParams::default();
        let p = KdfParams {
            memory_kib: self.g.kdf_memory_kib.unwrap_or(d.memory_kib),
            iterations: self.g.kdf_iterations.unwrap_or(d.iterations),
            parallelism: d.parallelism,
        };
        if p.below_owasp() {
            eprintln!(
                "warning: Argon2id cost {} KiB x {} passes is below OWASP's minimum (19 MiB x 2 passes): this password is cheap to guess",
                p.memory_kib, p.iterations
            );
        }
        p
    }

    /// The run history database: --history / CAIRN_HISTORY ("off": none), else the
    /// config file's `history`, else the data directory's.
    pub fn history_path(&self, cfg: Option<&cairn::ops::profile::Config>) -> Option<PathBuf> {
        match self.g.history.as_deref() {
            Some("off") => None,
            Some(p) => Some(PathBuf::from(p)),
            None => match cfg {
                Some(c) => c.history.clone(),
                // Commands that load no config still follow its `history` setting.
                None => cairn::ops::profile::find(self.g.config.as_deref())
                    .and_then(|p| cairn::ops::profile::history_setting(&p)),
            }
            .or_else(cairn::ops::history::default_path),
        }
    }

    /// The flags a profile run hands on to each of its steps.
    pub fn step_args(&self) -> Vec<String> {
        let g = &self.g;
        let mut a = Vec::new();
        for _ in 0..g.verbose {
            a.push("-v".to_string());
        }
        if g.quiet || g.json {
            a.push("-q".into());
        }
        if let Some(d) = &g.cache_dir {
            a.extend(["--cache-dir".into(), d.display().to_string()]);
        }
        if g.no_cache {
            a.push("--no-cache".into());
        }
        a.extend(["--retry-lock".into(), g.retry_lock.clone()]);
        a
    }

    /// The repository URL, and whether it is the default one (neither -r nor env).
    pub fn repo_url(&self) -> Result<(String, bool)> {
        match &self.g.repo {
            Some(r) => Ok((r.clone(), false)),
            None => {
                let base = dirs::data_dir().ok_or_else(|| {
                    Error::Usage("no repository given (-r) and no data directory known; set CAIRN_REPOSITORY".into())
                })?;
                Ok((
                    base.join("cairn").join("repository").display().to_string(),
                    true,
                ))
            }
        }
    }

    /// The repository's storage, with every request counted (`-v` prints the counts).
    pub fn backend(&self) -> Result<(Arc<dyn backend::Backend>, bool)> {
        let (url, default) = self.repo_url()?;
        Ok((counted_backend(&url, &self.g.options)?, default))
    }

    /// Opens a second repository (the source of `copy`) from its URL, backend options
    /// and password source; its requests are counted with the others, and it gets the
    /// local cache as the target does. Exit 10 when it does not exist, 12 for a wrong
    /// password.
    pub fn open_source(&self, url: &str, from: &FromRepoArgs) -> Result<Repository> {
        let backend = counted_backend(url, &from.from_options)?;
        let keys = cairn::repo::key_files(&*backend)?;
        let location = backend.location();
        let pw = password::source_password(from)?;
        self.open_with(backend, pw.as_bytes(), keys)
            .map_err(|e| match e {
                Error::WrongPassword => {
                    Error::WrongPasswordFor(format!("the source repository {location}"))
                }
                e => e,
            })
    }

    /// Opens the repository at `backend` with `password`, behind the local cache
    /// unless --no-cache.
    fn open_with(
        &self,
        backend: Arc<dyn backend::Backend>,
        password: &[u8],
        keys: Vec<(String, u64)>,
    ) -> Result<Repository> {
        let mut repo = Repository::open_with_keys(backend, password, keys)?;
        if !self.g.no_cache {
            if let Some(dir) = self
                .g
                .cache_dir
                .clone()
                .or_else(|| dirs::cache_dir().map(|d| d.join("cairn")))
            {
                repo.use_cache(&dir)?;
            }
        }
        Ok(repo)
    }

    /// Opens the repository; the default one is created on first use, with a notice.
    pub fn open(&self) -> Result<Repository> {
        let (backend, default) = self.backend()?;
        if default && !cairn::repo::exists(&*backend)? {
            let pw = password::new_password(&self.g)?;
            let repo = Repository::init(backend, pw.as_bytes(), self.kdf(), 3)?;
            eprintln!(
                "cairn: no repository given (-r or CAIRN_REPOSITORY): created the default repository at {}",
                repo.backend().location()
            );
            return Ok(repo);
        }
        // Before asking for a password: is there a repository at all?
        let keys = cairn::repo::key_files(&*backend)?;
        let pw = password::password(&self.g)?;
        self.open_with(backend, pw.as_bytes(), keys)
    }

    /// Opens the repository, takes its lock, then loads the index: in that order, so
    /// no prune can change the index between our reading it and our lock.
    pub fn open_locked(
        &self,
        kind: LockKind,
        read_only: bool,
    ) -> Result<(Repository, Option<LockGuard>)> {
        let mut repo = self.open()?;
        let lock = self.lock(&repo, kind, read_only)?;
        repo.load_index()?;
        Ok((repo, lock))
    }

    /// `--retry-lock`.
    pub fn retry_lock(&self) -> Result<std::time::Duration> {
        parse_wait(&self.g.retry_lock).ok_or_else(|| {
            Error::Usage(format!(
                "--retry-lock takes a duration such as 30s, 5m or 1h (at most 7 days), not {:?}",
                self.g.retry_lock
            ))
        })
    }

    /// Takes the lock a command needs, waiting `--retry-lock` for a conflicting one;
    /// `--no-lock` skips it for read-only commands.
    pub fn lock(
        &self,
        repo: &Repository,
        kind: LockKind,
        read_only: bool,
    ) -> Result<Option<LockGuard>> {
        if self.g.no_lock {
            if !read_only {
                return Err(Error::Usage(
                    "--no-lock is only for read-only commands".into(),
                ));
            }
            return Ok(None);
        }
        let wait = self.retry_lock()?;
        let json = self.json();
        let waiting = move |who: &str, left: std::time::Duration| {
            let msg = format!(
                "repository is locked ({who}); waiting up to {}s more (--retry-lock)",
                left.as_secs()
            );
            if json {
                eprintln!(
                    "{}",
                    serde_json::json!({"message_type": "waiting", "message": msg})
                );
            } else {
                eprintln!("cairn: {msg}");
            }
        };
        repo.lock_wait(kind, wait, &waiting).map(Some)
    }
}

/// Storage at `url` with `options`, every request counted in this process's totals.
fn counted_backend(url: &str, options: &[String]) -> Result<Arc<dyn backend::Backend>> {
    let counted = backend::CountingBackend::new(backend::open(url, options)?, REQUESTS.clone());
    Ok(Arc::new(counted))
}

/// Picks one snapshot by selector and filter; unreadable snapshots are reported as
/// warnings (once: callers pick once) and skipped unless asked for by id.
pub fn pick(
    repo: &Repository,
    selector: &str,
    filter: &FilterArgs,
) -> Result<(cairn::id::Id, Snapshot)> {
    let all = snapshots_warned(repo)?;
    cairn::selector::select_in(&all, selector, &filter.filter()).cloned()
}

/// Runs `f` on a thread with a large stack and waits for it: tree walks recurse once per
/// folder level, and a hostile or just very deep tree must not overflow the main
/// thread's 8 MiB (restore's writers have the same).
pub fn on_large_stack<T: Send>(what: &str, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .stack_size(256 << 20)
            .spawn_scoped(s, f)
            .map_err(|e| Error::Other(format!("starting {what}: {e}")))?
            .join()
            .map_err(|_| Error::Other(format!("{what} stopped unexpectedly")))?
    })
}

/// The repository's snapshots; each unreadable one is a `warning:` line on stderr.
pub fn snapshots_warned(repo: &Repository) -> Result<cairn::repo::snapshot::SnapshotSet> {
    let set = repo.snapshots()?;
    for w in set.warnings() {
        eprintln!("warning: {w}");
    }
    Ok(set)
}

/// A duration like `90`, `30s`, `5m`, `1h30m` (seconds when unitless), at most 7 days.
fn parse_wait(s: &str) -> Option<std::time::Duration> {
    cairn::ops::profile::parse_duration(s).filter(|d| d.as_secs() <= 7 * 86400)
}

/// Storage requests of this process, over every repository it opens.
static REQUESTS: std::sync::LazyLock<Arc<backend::RequestCounts>> =
    std::sync::LazyLock::new(Arc::default);

/// The storage requests of this process so far.
pub fn requests_so_far() -> backend::RequestSummary {
    REQUESTS.summary()
}

/// Exit codes of CLI.md.
fn exit_code(e: &Error) -> i32 {
    match e {
        Error::RepoNotFound(_) => 10,
        Error::Locked(_) | Error::LockLost(_) => 11,
        Error::WrongPassword | Error::WrongPasswordFor(_) => 12,
        Error::Integrity { .. } => 13,
        _ => 1,
    }
}

/// What a command found worth keeping in the history (a backup's snapshot and sizes).
pub static FACTS: Mutex<Option<cairn::ops::history::Outcome>> = Mutex::new(None);

/// Parses the command line; `--profile` fills in the profile's repository and flags.
fn parse() -> std::result::Result<Cli, i32> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let m = Cli::command()
        .try_get_matches_from(&args)
        .unwrap_or_else(|e| e.exit());
    let cli = Cli::from_arg_matches(&m).unwrap_or_else(|e| e.exit());
    if cli.global.profile.is_none() {
        return Ok(cli);
    }
    let args = match profile::apply(args, &m, &cli.global) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("cairn: error: {e}");
            return Err(exit_code(&e));
        }
    };
    Ok(Cli::parse_from(args))
}

/// The history's name of a command that changes a repository (or, for `check`, that a
/// profile's check plan needs to know about); None: not recorded.
fn recorded_name(c: &Command) -> Option<&'static str> {
    Some(match c {
        Command::Init(_) => "init",
        Command::Backup(_) => "backup",
        Command::Restore(_) => "restore",
        Command::Key(k) if !k.is_list() => "key",
        Command::Check(_) => "check",
        Command::Forget(_) => "forget",
        Command::Tag(_) => "tag",
        Command::Prune(_) => "prune",
        Command::Repair(_) => "repair",
        Command::Copy(_) => "copy",
        _ => return None,
    })
}

/// Records the start of a command in the history; a history that cannot be opened or
/// written is a warning, never a failure.
fn history_start(ctx: &Ctx, name: &str) -> Option<(cairn::ops::history::History, i64)> {
    use cairn::ops::history::{History, Start};
    let path = ctx.history_path(None)?;
    let h = History::open(&path)
        .inspect_err(|e| eprintln!("warning: {e}; going on without it"))
        .ok()?;
    let repository = ctx
        .repo_url()
        .ok()
        .map(|(u, _)| backend::location::shown_url(&u));
    let id = h
        .start(&Start {
            run_id: std::env::var("CAIRN_RUN_ID")
                .ok()
                .and_then(|v| v.parse().ok()),
            kind: "command".into(),
            profile: std::env::var("CAIRN_RUN_PROFILE")
                .ok()
                .or_else(|| ctx.g.profile.clone()),
            command: name.into(),
            repository,
        })
        .inspect_err(|e| eprintln!("warning: {e}; going on without it"))
        .ok()?;
    Some((h, id))
}

/// The outcome of a finished command: the facts it left, its exit code and error.
fn outcome_of(result: &Result<i32>) -> cairn::ops::history::Outcome {
    let mut o = FACTS
        .lock()
        .map(|mut f| f.take())
        .unwrap_or_default()
        .unwrap_or_default();
    let r = REQUESTS.summary();
    o.requests = Some(r.total);
    o.request_bytes = Some(r.bytes_read + r.bytes_written);
    match result {
        Ok(code) => {
            o.exit_code = *code;
            o.outcome = match code {
                0 => "success",
                3 => "warning",
                _ => "failed",
            }
            .into();
        }
        Err(e) => {
            o.exit_code = exit_code(e);
            o.outcome = "failed".into();
            o.error = Some(e.to_string());
        }
    }
    o
}

pub fn run() -> i32 {
    let cli = match parse() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let ctx = Ctx { g: cli.global };
    REQUESTS.set_trace(ctx.g.verbose >= 2);
    let recorded = recorded_name(&cli.command).and_then(|n| history_start(&ctx, n));
    let result = match cli.command {
        Command::Init(a) => cmd_init::run(&ctx, a),
        Command::Backup(a) => cmd_backup::run(&ctx, a),
        Command::Snapshots(a) => cmd_snapshots::run(&ctx, a),
        Command::Ls(a) => cmd_ls::run(&ctx, a),
        Command::Restore(a) => cmd_restore::run(&ctx, a),
        Command::Cat(a) => cmd_cat::run(&ctx, a),
        Command::Key(a) => cmd_key::run(&ctx, a),
        Command::Unlock(a) => cmd_unlock::run(&ctx, a),
        Command::Check(a) => cmd_check::run(&ctx, a),
        Command::Forget(a) => cmd_forget::run(&ctx, a),
        Command::Tag(a) => cmd_tag::run(&ctx, a),
        Command::Diff(a) => cmd_diff::run(&ctx, a),
        Command::Stats(a) => cmd_stats::run(&ctx, a),
        Command::Dump(a) => cmd_dump::run(&ctx, a),
        Command::Mount(a) => cmd_mount::run(&ctx, a),
        Command::Find(a) => cmd_find::run(&ctx, a),
        Command::Versions(a) => cmd_versions::run(&ctx, a),
        Command::Prune(a) => cmd_prune::run(&ctx, a),
        Command::Repair(a) => cmd_repair::run(&ctx, a),
        Command::Copy(a) => cmd_copy::run(&ctx, a),
        Command::TestStorage(a) => cmd_test_storage::run(&ctx, a),
        Command::Run(a) => cmd_run::run(&ctx, a),
        Command::Daemon(a) => cmd_daemon::run(&ctx, a),
        Command::Schedule(a) => cmd_schedule::run(&ctx, a),
        Command::Config(a) => cmd_config::run(&ctx, a),
        Command::History(a) => cmd_history::run(&ctx, a),
        Command::Health(a) => cmd_health::run(&ctx, a),
    };
    // Every repository is closed by now; let remote sessions shut down cleanly.
    backend::settle();
    let outcome = outcome_of(&result);
    if let Some((h, id)) = recorded {
        if let Err(e) = h.finish(id, &outcome) {
            eprintln!("warning: {e}");
        }
    }
    // A profile run's step: its facts for the run (which reads them back).
    if let Some(path) = std::env::var_os("CAIRN_RESULT_FILE") {
        let _ = std::fs::write(path, serde_json::to_vec(&outcome).unwrap_or_default());
    }
    if ctx.g.verbose > 0 {
        let r = REQUESTS.summary();
        if r.total > 0 {
            eprintln!("cairn: storage: {r}");
        }
    }
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cairn: error: {e}");
            exit_code(&e)
        }
    }
}
