//! Consistent database backups: a dump command's output as a file, and SQLite
//! databases copied through SQLite's backup API while a process writes to them.

use std::process::{Command, Stdio};

use crate::common::*;
use crate::ops::{with_config, write_config};

fn snapshot_count(env: &Env) -> usize {
    let v: serde_json::Value = serde_json::from_str(&env.ok(["--json", "snapshots"])).unwrap();
    v.as_array().unwrap().len()
}

#[test]
fn a_commands_output_is_stored_and_a_failed_command_writes_no_snapshot() {
    let env = Env::new();
    env.init();
    let out = env.ok([
        "backup",
        "--stdin-from-command",
        "printf 'CREATE TABLE t;\\n'; head -c 3000000 /dev/zero | tr '\\0' x",
        "--stdin-filename",
        "dump.sql",
    ]);
    assert!(out.contains("saved"), "{out}");
    let dumped = env
        .cmd()
        .args(["dump", "latest", "/dump.sql"])
        .output()
        .unwrap();
    assert!(dumped.status.success());
    assert_eq!(dumped.stdout.len(), "CREATE TABLE t;\n".len() + 3_000_000);
    assert!(dumped.stdout.starts_with(b"CREATE TABLE t;\nxxx"));

    // Half a dump, then a failure: no snapshot, the command's stderr shown, exit 1.
    let out = env.run([
        "backup",
        "--stdin-from-command",
        "echo 'CREATE TABLE half;'; echo 'pg_dump: connection lost' >&2; exit 3",
        "--stdin-filename",
        "dump.sql",
    ]);
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    assert!(err.contains("pg_dump: connection lost"), "{err}");
    assert!(err.contains("no snapshot written"), "{err}");
    assert_eq!(snapshot_count(&env), 1);
    // Paths and a command together are a usage error.
    let out = env.run(["backup", "--stdin-from-command", "true", "/etc"]);
    assert_eq!(code(&out), 1);

    // In a profile: the run fails at backup with the command's exit.
    let cfg = write_config(
        &env,
        "[profiles.db]\nrepository = \"main\"\n\n[profiles.db.backup]\n\
         stdin-from-command = \"echo dump; exit 2\"\nstdin-filename = \"db.sql\"\n",
    );
    let out = with_config(&env, &cfg, &["run", "db"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("FAILED at backup"),
        "{}",
        stderr(&out)
    );
    assert_eq!(snapshot_count(&env), 1);
}

/// Kills the writer however the test ends.
struct Writer(std::process::Child);

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Python process that rewrites every row of a 1500-row table in each transaction
/// (rollback journal mode: the database file itself is written in place at each
/// commit, the case a plain read tears) and keeps the transaction number in `meta`;
/// prints "ready" after a few commits.
fn start_writer(db: &std::path::Path) -> Writer {
    let mut c = Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3,sys,os\n\
             c=sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             c.execute('PRAGMA journal_mode=DELETE')\n\
             c.execute('CREATE TABLE t(id INTEGER PRIMARY KEY, gen INTEGER, v BLOB)')\n\
             c.execute('CREATE TABLE meta(n INTEGER)')\n\
             c.execute('BEGIN')\n\
             c.execute('INSERT INTO meta VALUES(0)')\n\
             for k in range(1500): c.execute('INSERT INTO t VALUES(?, 0, ?)', (k, os.urandom(2000)))\n\
             c.execute('COMMIT')\n\
             i=0\n\
             while True:\n\
             \x20 i+=1\n\
             \x20 c.execute('BEGIN')\n\
             \x20 c.execute('UPDATE t SET gen=?, v=randomblob(2000)', (i,))\n\
             \x20 c.execute('UPDATE meta SET n=?', (i,))\n\
             \x20 c.execute('COMMIT')\n\
             \x20 if i == 3: print('ready', flush=True)\n",
        )
        .arg(db)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(c.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ready");
    Writer(c)
}

/// integrity_check; the committed transaction number; the lowest and highest
/// generation among the rows (all equal to it when the copy is one point in time).
fn check_db(db: &std::path::Path) -> (String, i64, i64, i64) {
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3,sys\n\
             c=sqlite3.connect(sys.argv[1])\n\
             ok=c.execute('PRAGMA integrity_check').fetchone()[0]\n\
             n=c.execute('SELECT n FROM meta').fetchone()[0]\n\
             lo,hi=c.execute('SELECT min(gen), max(gen) FROM t').fetchone()\n\
             print(ok, n, lo, hi)\n",
        )
        .arg(db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let f: Vec<&str> = text.split_whitespace().collect();
    (
        f[0].to_string(),
        f[1].parse().unwrap(),
        f[2].parse().unwrap(),
        f[3].parse().unwrap(),
    )
}

#[test]
fn a_sqlite_database_written_during_the_backup_restores_whole_and_consistent() {
    if !prerequisite(
        Command::new("python3").arg("--version").output().is_ok(),
        "python3 (the test's database writer)",
    ) {
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("other.txt"), b"not a database").unwrap();
    let db = src.join("app.db");
    let writer = start_writer(&db);
    // Several backups while it writes.
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(env.backup([src.to_str().unwrap()]));
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    drop(writer);
    let mut last_n = 0;
    for (i, id) in ids.iter().enumerate() {
        let target = env.path(&format!("r{i}"));
        env.restore(id, &target, &[]);
        let dir = target.join(src.strip_prefix("/").unwrap());
        assert!(!dir.join("app.db-journal").exists());
        assert_eq!(
            std::fs::read(dir.join("other.txt")).unwrap(),
            b"not a database"
        );
        let (ok, n, lo, hi) = check_db(&dir.join("app.db"));
        assert_eq!(ok, "ok");
        // One point in time: every row of the transaction the count says.
        assert_eq!((lo, hi), (n, n), "snapshot {i}");
        assert!(n >= 3 && n >= last_n, "snapshot {i}: {n} after {last_n}");
        last_n = n;
    }

    // --sqlite-raw stores the bytes as they are (side files too).
    let id = env.backup(["--sqlite-raw", "*.db", src.to_str().unwrap()]);
    let ls = env.ok(["ls", &id]);
    assert!(ls.contains("app.db"), "{ls}");
}

/// Adds `rows` rows to a WAL database and exits without a checkpoint: the rows sit in
/// `-wal`, the database file itself unchanged.
fn add_rows_in_wal(db: &std::path::Path, first: i64, rows: i64) {
    let st = Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3,sys,os\n\
             c=sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             c.execute('PRAGMA journal_mode=WAL')\n\
             c.execute('PRAGMA wal_autocheckpoint=0')\n\
             c.execute('CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)')\n\
             a,n=int(sys.argv[2]),int(sys.argv[3])\n\
             for i in range(a, a+n): c.execute('INSERT INTO t VALUES(?, ?)', (i, os.urandom(500)))\n\
             os._exit(0)\n",
        )
        .arg(db)
        .arg(first.to_string())
        .arg(rows.to_string())
        .status()
        .unwrap();
    assert!(st.success());
}

/// A rollback-journal database with `rows` rows, closed cleanly.
fn make_db(db: &std::path::Path, rows: i64) {
    let st = Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3,sys,os\n\
             c=sqlite3.connect(sys.argv[1])\n\
             c.execute('CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)')\n\
             c.executemany('INSERT INTO t VALUES(?, ?)', [(i, os.urandom(100)) for i in range(int(sys.argv[2]))])\n\
             c.commit(); c.close()\n",
        )
        .arg(db)
        .arg(rows.to_string())
        .status()
        .unwrap();
    assert!(st.success());
}

fn row_count(db: &std::path::Path) -> i64 {
    let out = Command::new("python3")
        .arg("-c")
        .arg("import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT count(*) FROM t').fetchone()[0])")
        .arg(db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn rows_that_sit_in_the_wal_are_backed_up_even_with_the_database_file_unchanged_or_hard_linked() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let db = src.join("app.db");
    add_rows_in_wal(&db, 0, 200);
    // A second name for the database file, which has no side files of its own.
    std::fs::hard_link(&db, src.join("app-link.db")).unwrap();
    let mtime = std::fs::metadata(&db).unwrap().modified().unwrap();
    let first = env.backup([src.to_str().unwrap()]);
    add_rows_in_wal(&db, 200, 300);
    assert_eq!(
        std::fs::metadata(&db).unwrap().modified().unwrap(),
        mtime,
        "the test needs the WAL to hold the rows"
    );
    let second = env.backup([src.to_str().unwrap()]);
    // Nothing was created in the source (a read-only open of app-link.db would have
    // made SQLite create app-link.db-wal).
    assert!(!src.join("app-link.db-wal").exists());
    for (id, rows) in [(first, 200), (second, 500)] {
        let target = env.path(&format!("r-{rows}"));
        env.restore(&id, &target, &[]);
        let dir = target.join(src.strip_prefix("/").unwrap());
        assert!(!dir.join("app.db-wal").exists());
        assert_eq!(row_count(&dir.join("app.db")), rows);
        // The other name is the database file as it is (its WAL is app.db's).
        assert!(dir.join("app-link.db").exists());
    }
}

#[test]
fn odd_side_files_neither_hang_the_backup_nor_go_missing() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    // A database whose "journal" is a FIFO: SQLite would block opening it.
    make_db(&src.join("a.db"), 10);
    let st = Command::new("mkfifo")
        .arg(src.join("a.db-journal"))
        .status()
        .unwrap();
    assert!(st.success());
    // A database called like another's journal is a database of its own.
    make_db(&src.join("b.db"), 5);
    make_db(&src.join("b.db-journal"), 7);
    let mut child = env
        .cmd()
        .args(["--json", "backup", src.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the backup hung on a FIFO beside a database");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    assert!(matches!(code(&out), 0 | 3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("a.db: SQLite database stored as read"),
        "{}",
        stderr(&out)
    );
    let target = env.path("r");
    env.restore("latest", &target, &[]);
    let dir = target.join(src.strip_prefix("/").unwrap());
    // The FIFO came back as a FIFO (SQLite would block on it: set aside to count).
    use std::os::unix::fs::FileTypeExt;
    let kind = std::fs::symlink_metadata(dir.join("a.db-journal")).unwrap();
    assert!(kind.file_type().is_fifo());
    std::fs::remove_file(dir.join("a.db-journal")).unwrap();
    assert_eq!(row_count(&dir.join("a.db")), 10);
    // (b.db-journal first: SQLite opening b.db would take it for b.db's journal.)
    assert_eq!(row_count(&dir.join("b.db-journal")), 7);
    assert_eq!(row_count(&dir.join("b.db")), 5);
}

#[test]
fn an_idle_database_comes_back_byte_for_byte() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    make_db(&src.join("idle.db"), 300);
    let id = env.backup([src.to_str().unwrap()]);
    let target = env.path("r");
    env.restore(&id, &target, &[]);
    let dir = target.join(src.strip_prefix("/").unwrap());
    assert_eq!(
        std::fs::read(dir.join("idle.db")).unwrap(),
        std::fs::read(src.join("idle.db")).unwrap()
    );
}
