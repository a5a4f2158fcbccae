//! Consistent copies of SQLite databases found in a source.
//!
//! A database written to during the backup would be stored torn if read as bytes (and
//! its `-wal` file read a moment later would not match it). A file whose header says
//! SQLite is instead copied through SQLite's online backup API, in one step under one
//! read transaction, into a temporary file; that copy is stored under the original's
//! name and metadata. Its `-wal`, `-shm` and `-journal` siblings are then left out: the
//! copy holds every committed transaction, and a stale WAL or journal restored beside
//! it would be replayed onto it. When the copy cannot be made (a hot journal on a
//! read-only open, an encrypted file, …) the database and its siblings are stored as
//! read, with a warning.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

const HEADER: &[u8; 16] = b"SQLite format 3\0";

/// What SQLite keeps beside a database.
pub(super) const SIDE_SUFFIXES: [&[u8]; 3] = [b"-wal", b"-shm", b"-journal"];

/// How long a copy waits for a writer holding the database locked.
const BUSY_WAIT: Duration = Duration::from_secs(60);

/// True when the file starts with SQLite's header.
pub(super) fn is_sqlite(f: &File) -> bool {
    let mut h = [0u8; 16];
    f.read_exact_at(&mut h, 0).is_ok() && &h == HEADER
}

/// The base name of a side file (`db-wal` -> `db`), if `name` is one.
pub(super) fn side_file_base(name: &[u8]) -> Option<&[u8]> {
    SIDE_SUFFIXES
        .iter()
        .find_map(|s| name.strip_suffix(*s))
        .filter(|b| !b.is_empty())
}

/// Copies the database at `path` (a path through the walk's open directory) into an
/// unlinked temporary file and returns it, positioned at the start. `expect` is the
/// (device, inode) the walk found there: SQLite opens by path (it finds the WAL beside
/// it by name), so the path must name that file before and after the copy, or the
/// copy is not used.
pub(super) fn consistent_copy(path: &Path, expect: (u64, u64)) -> Result<File, String> {
    let same = || {
        std::fs::metadata(path).is_ok_and(|m| {
            use std::os::unix::fs::MetadataExt;
            (m.dev(), m.ino()) == expect
        })
    };
    if !same() {
        return Err("it was replaced during the backup".into());
    }
    // Read-only: closing it never checkpoints or otherwise writes the source.
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let src = Connection::open_with_flags(path, flags).map_err(|e| e.to_string())?;
    src.busy_timeout(BUSY_WAIT).map_err(|e| e.to_string())?;
    let tmp = temp_name();
    let mut result = copy_into(&src, &tmp);
    drop(src);
    if result.is_ok() && !same() {
        result = Err("it was replaced during the backup".into());
    }
    let file = result.and_then(|()| File::open(&tmp).map_err(|e| e.to_string()));
    for suffix in ["", "-journal", "-wal", "-shm"] {
        let mut p = tmp.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    file
}

fn copy_into(src: &Connection, tmp: &Path) -> Result<(), String> {
    let mut dst = Connection::open(tmp).map_err(|e| e.to_string())?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o600));
    }
    let backup = Backup::new(src, &mut dst).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + BUSY_WAIT;
    loop {
        // -1: every page in one step, under one read transaction: one point in time.
        match backup.step(-1).map_err(|e| e.to_string())? {
            StepResult::Done => break,
            StepResult::More => continue,
            StepResult::Busy | StepResult::Locked if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            _ => return Err("the database stayed locked".into()),
        }
    }
    drop(backup);
    dst.close().map_err(|(_, e)| e.to_string())
}

fn temp_name() -> std::path::PathBuf {
    let mut b = [0u8; 8];
    let _ = getrandom::getrandom(&mut b);
    std::env::temp_dir().join(format!(
        "cairn-sqlite-{}-{}.db",
        std::process::id(),
        hex::encode(b)
    ))
}
