//! Run history: every profile run and every command that changes a repository, in a
//! local SQLite database (WAL, versioned schema).
//!
//! The history serves the admin; it never stands in the backup's way. Every failure to
//! open, read or write it is returned to the caller, who warns and goes on. SQLite in
//! WAL mode survives a killed process or a lost machine without corruption (the last
//! transaction may be lost on power loss with `synchronous=NORMAL`, never the file).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde::{Deserialize, Serialize};

/// Schema migrations, in order; `PRAGMA user_version` says how many have run.
const MIGRATIONS: &[&str] = &[
    // 1: one row per run or command; `run_id` ties a profile run's steps to the run.
    "CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        run_id INTEGER,
        kind TEXT NOT NULL,
        profile TEXT,
        command TEXT NOT NULL,
        repository TEXT,
        host TEXT,
        user TEXT,
        pid INTEGER,
        started_ms INTEGER NOT NULL,
        ended_ms INTEGER,
        outcome TEXT NOT NULL,
        exit_code INTEGER,
        snapshot TEXT,
        files INTEGER,
        files_new INTEGER,
        files_changed INTEGER,
        bytes_read INTEGER,
        bytes_added INTEGER,
        requests INTEGER,
        request_bytes INTEGER,
        error TEXT,
        warnings TEXT
    );
    CREATE INDEX runs_by_profile ON runs(profile, started_ms);
    CREATE INDEX runs_by_started ON runs(started_ms);",
];

/// How long a write waits for another process's transaction before giving up (and the
/// caller warns): short, as a backup must not wait on its history.
const BUSY_TIMEOUT: Duration = Duration::from_secs(3);

/// An error of the history store, already worded for a `warning:` line.
#[derive(Debug)]
pub struct HistoryError(pub String);

impl std::fmt::Display for HistoryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

type HResult<T> = std::result::Result<T, HistoryError>;

fn err(path: &Path, what: &str, e: impl std::fmt::Display) -> HistoryError {
    HistoryError(format!("run history {}: {what}: {e}", path.display()))
}

/// The default database: `<data dir>/cairn/history.sqlite`.
pub fn default_path() -> Option<PathBuf> {
    dirs::data_dir().map(|d| d.join("cairn").join("history.sqlite"))
}

/// What a run or command is at its start.
#[derive(Debug, Clone, Default)]
pub struct Start {
    pub run_id: Option<i64>,
    /// "run" for a profile run, "command" for one command.
    pub kind: String,
    pub profile: Option<String>,
    pub command: String,
    pub repository: Option<String>,
}

/// What a run or command came to.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Outcome {
    /// "success", "warning" (finished, some files unreadable) or "failed".
    pub outcome: String,
    pub exit_code: i32,
    pub snapshot: Option<String>,
    pub files: Option<u64>,
    pub files_new: Option<u64>,
    pub files_changed: Option<u64>,
    pub bytes_read: Option<u64>,
    pub bytes_added: Option<u64>,
    pub requests: Option<u64>,
    pub request_bytes: Option<u64>,
    pub error: Option<String>,
    /// Warnings worth keeping (a size anomaly, say), one per line.
    pub warnings: Option<String>,
}

/// One row of the history, as `cairn history` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Entry {
    pub id: i64,
    pub run_id: Option<i64>,
    pub kind: String,
    pub profile: Option<String>,
    pub command: String,
    pub repository: Option<String>,
    pub host: Option<String>,
    pub user: Option<String>,
    pub pid: Option<i64>,
    /// Milliseconds since the epoch.
    pub started_ms: i64,
    pub ended_ms: Option<i64>,
    /// As `Outcome::outcome`, or "running" (or, when its process is gone,
    /// "interrupted").
    pub outcome: String,
    pub exit_code: Option<i32>,
    pub snapshot: Option<String>,
    pub files: Option<u64>,
    pub files_new: Option<u64>,
    pub files_changed: Option<u64>,
    pub bytes_read: Option<u64>,
    pub bytes_added: Option<u64>,
    pub requests: Option<u64>,
    pub request_bytes: Option<u64>,
    pub error: Option<String>,
    pub warnings: Option<String>,
}

/// Which rows `query` returns.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub profile: Option<String>,
    pub since_ms: Option<i64>,
    pub failed_only: bool,
    pub kind: Option<String>,
    pub command: Option<String>,
    pub limit: Option<usize>,
}

pub struct History {
    conn: Connection,
    path: PathBuf,
}

impl History {
    /// Opens (creating it and its folder, owner-only) and migrates the database.
    pub fn open(path: &Path) -> HResult<History> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() && !dir.exists() {
                std::fs::create_dir_all(dir).map_err(|e| err(path, "creating its folder", e))?;
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
            }
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| err(path, "open", e))?;
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| err(path, "open", e))?;
        // WAL: readers never block the writer, and a crash never corrupts the file.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| err(path, "open", e))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| err(path, "open", e))?;
        let h = History {
            conn,
            path: path.to_path_buf(),
        };
        h.migrate()?;
        Ok(h)
    }

    fn migrate(&self) -> HResult<()> {
        let version: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| err(&self.path, "reading its version", e))?;
        if version as usize > MIGRATIONS.len() {
            return Err(HistoryError(format!(
                "run history {}: written by a newer cairn (schema {version}, this one knows {})",
                self.path.display(),
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            // Each migration and its version bump in one transaction: a crash leaves
            // the schema either before or after it.
            let batch = format!(
                "BEGIN IMMEDIATE; {sql}; PRAGMA user_version = {}; COMMIT;",
                i + 1
            );
            if let Err(e) = self.conn.execute_batch(&batch) {
                let _ = self.conn.execute_batch("ROLLBACK");
                return Err(err(&self.path, "upgrading its schema", e));
            }
        }
        Ok(())
    }

    /// Records the start of a run or command; returns its row id.
    pub fn start(&self, s: &Start) -> HResult<i64> {
        self.conn
            .execute(
                "INSERT INTO runs (run_id, kind, profile, command, repository, host, user, pid,
                                   started_ms, outcome)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'running')",
                params![
                    s.run_id,
                    s.kind,
                    s.profile,
                    s.command,
                    s.repository,
                    crate::fsmeta::hostname(),
                    crate::fsmeta::current_username(),
                    std::process::id() as i64,
                    now_ms(),
                ],
            )
            .map_err(|e| err(&self.path, "recording a start", e))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Records how row `id` ended.
    pub fn finish(&self, id: i64, o: &Outcome) -> HResult<()> {
        let n = |v: Option<u64>| v.map(|v| v as i64);
        self.conn
            .execute(
                "UPDATE runs SET ended_ms = ?2, outcome = ?3, exit_code = ?4, snapshot = ?5,
                    files = ?6, files_new = ?7, files_changed = ?8, bytes_read = ?9,
                    bytes_added = ?10, requests = ?11, request_bytes = ?12, error = ?13,
                    warnings = ?14
                 WHERE id = ?1",
                params![
                    id,
                    now_ms(),
                    o.outcome,
                    o.exit_code,
                    o.snapshot,
                    n(o.files),
                    n(o.files_new),
                    n(o.files_changed),
                    n(o.bytes_read),
                    n(o.bytes_added),
                    n(o.requests),
                    n(o.request_bytes),
                    o.error,
                    o.warnings,
                ],
            )
            .map_err(|e| err(&self.path, "recording an end", e))?;
        Ok(())
    }

    /// Adds a warning line to row `id` (a size anomaly found after the backup).
    pub fn add_warning(&self, id: i64, warning: &str) -> HResult<()> {
        self.conn
            .execute(
                "UPDATE runs SET warnings = CASE WHEN warnings IS NULL OR warnings = ''
                     THEN ?2 ELSE warnings || char(10) || ?2 END WHERE id = ?1",
                params![id, warning],
            )
            .map_err(|e| err(&self.path, "recording a warning", e))?;
        Ok(())
    }

    /// Rows matching `q`, oldest first (the newest `limit` of them).
    pub fn query(&self, q: &Query) -> HResult<Vec<Entry>> {
        let mut sql = String::from(
            "SELECT id, run_id, kind, profile, command, repository, host, user, pid,
                    started_ms, ended_ms, outcome, exit_code, snapshot, files, files_new,
                    files_changed, bytes_read, bytes_added, requests, request_bytes, error,
                    warnings
             FROM runs WHERE 1=1",
        );
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(p) = &q.profile {
            args.push(p.clone().into());
            sql += &format!(" AND profile = ?{}", args.len());
        }
        if let Some(t) = q.since_ms {
            args.push(t.into());
            sql += &format!(" AND started_ms >= ?{}", args.len());
        }
        if let Some(k) = &q.kind {
            args.push(k.clone().into());
            sql += &format!(" AND kind = ?{}", args.len());
        }
        if let Some(c) = &q.command {
            args.push(c.clone().into());
            sql += &format!(" AND command = ?{}", args.len());
        }
        if q.failed_only {
            sql += " AND outcome NOT IN ('success', 'warning')";
        }
        sql += " ORDER BY started_ms DESC, id DESC";
        if let Some(l) = q.limit {
            sql += &format!(" LIMIT {l}");
        }
        let mut stmt = self
            .conn
            .prepare(&sql)
            .map_err(|e| err(&self.path, "reading", e))?;
        let u = |v: Option<i64>| v.map(|v| v as u64);
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args), |r| {
                Ok(Entry {
                    id: r.get(0)?,
                    run_id: r.get(1)?,
                    kind: r.get(2)?,
                    profile: r.get(3)?,
                    command: r.get(4)?,
                    repository: r.get(5)?,
                    host: r.get(6)?,
                    user: r.get(7)?,
                    pid: r.get(8)?,
                    started_ms: r.get(9)?,
                    ended_ms: r.get(10)?,
                    outcome: r.get(11)?,
                    exit_code: r.get(12)?,
                    snapshot: r.get(13)?,
                    files: u(r.get(14)?),
                    files_new: u(r.get(15)?),
                    files_changed: u(r.get(16)?),
                    bytes_read: u(r.get(17)?),
                    bytes_added: u(r.get(18)?),
                    requests: u(r.get(19)?),
                    request_bytes: u(r.get(20)?),
                    error: r.get(21)?,
                    warnings: r.get(22)?,
                })
            })
            .map_err(|e| err(&self.path, "reading", e))?;
        let mut out = Vec::new();
        for row in rows {
            let mut e = row.map_err(|e| err(&self.path, "reading", e))?;
            if e.outcome == "running"
                && !e
                    .pid
                    .is_some_and(|p| u32::try_from(p).is_ok_and(crate::fsmeta::process_alive))
            {
                e.outcome = "interrupted".into();
            }
            out.push(e);
        }
        out.reverse();
        Ok(out)
    }

    /// The newest finished row of `profile`'s runs (kind "run"), if any.
    pub fn last_run(&self, profile: &str) -> HResult<Option<Entry>> {
        let q = Query {
            profile: Some(profile.into()),
            kind: Some("run".into()),
            ..Default::default()
        };
        Ok(self
            .query(&q)?
            .into_iter()
            .rev()
            .find(|e| e.outcome != "running"))
    }

    /// When `profile`'s step `command` last succeeded (for "check once a week").
    pub fn last_success_ms(&self, profile: &str, command: &str) -> HResult<Option<i64>> {
        self.conn
            .query_row(
                "SELECT MAX(started_ms) FROM runs WHERE profile = ?1 AND command = ?2
                   AND kind = 'command' AND outcome IN ('success', 'warning')",
                params![profile, command],
                |r| r.get::<_, Option<i64>>(0),
            )
            .optional()
            .map(|v| v.flatten())
            .map_err(|e| err(&self.path, "reading", e))
    }
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
