//! Consistent copies of SQLite databases found in a source.
//!
//! A database written to during the backup would be stored torn if read as bytes (and
//! its `-wal` file read a moment later would not match it). A file whose header says
//! SQLite is stored as read only when no side file is there (no transaction, no WAL)
//! and it does not change while read (an idle database comes back byte for byte);
//! otherwise it is copied through SQLite's online backup API, in one step under one
//! read transaction, into a temporary file, and that copy is stored under the
//! original's name and metadata. Its `-wal`, `-shm` and `-journal` siblings are then left out: the
//! copy holds every committed transaction, and a stale WAL or journal restored beside
//! it would be replayed onto it. When the copy cannot be made (a hot journal on a
//! read-only open, an encrypted file, …) the database and its siblings are stored as
//! read, with a warning.

use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::source::{stat_at, DirHandle};
use super::walk::{At, Walker};
use crate::error::Result as CairnResult;
use crate::fsmeta::StatFields;
use crate::id::Id;

const HEADER: &[u8; 16] = b"SQLite format 3\0";

/// The smallest page size, so the smallest database file with a header.
const MIN_DATABASE: u64 = 512;

/// What SQLite keeps beside a database.
pub(super) const SIDE_SUFFIXES: [&[u8]; 3] = [b"-wal", b"-shm", b"-journal"];

/// How long a copy waits for a writer holding the database locked (then the file is
/// stored as read, with a warning).
const BUSY_WAIT: Duration = Duration::from_secs(10);

/// True when the file starts with SQLite's header.
pub(super) fn is_sqlite(f: &File) -> bool {
    let mut h = [0u8; 16];
    f.read_exact_at(&mut h, 0).is_ok() && &h == HEADER
}

/// The base name of a side file (`db-wal` -> `db`), if `name` looks like one (the
/// caller checks that it is a plain file and no database itself).
pub(super) fn side_file_base(name: &[u8]) -> Option<&[u8]> {
    SIDE_SUFFIXES
        .iter()
        .find_map(|s| name.strip_suffix(*s))
        .filter(|b| !b.is_empty())
}

/// Copies the database at `path` into a private temporary file and returns it,
/// positioned at the start. `path` is the database's real path (no symlink in it:
/// SQLite opens it with NOFOLLOW) and must name the file the walk found, `expect`
/// (device, inode), before and after the copy; the caller has checked that its side
/// files are plain files or absent (SQLite opens them by name too).
pub(super) fn consistent_copy(path: &Path, expect: (u64, u64), size: u64) -> Result<File, String> {
    let same = || {
        std::fs::symlink_metadata(path).is_ok_and(|m| {
            use std::os::unix::fs::MetadataExt;
            (m.dev(), m.ino()) == expect
        })
    };
    if !same() {
        return Err("it was replaced during the backup".into());
    }
    let dir = private_dir()?;
    room_for(dir, size)?;
    // Read-only, no symlinks; SQLite may still create the `-shm` index readers of a
    // WAL database share, as any reader does.
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_NOFOLLOW;
    let src = Connection::open_with_flags(path, flags).map_err(|e| e.to_string())?;
    src.busy_timeout(BUSY_WAIT).map_err(|e| e.to_string())?;
    let tmp = new_temp_file(dir)?;
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

/// This process's folder for copies: `TMPDIR/cairn-sqlite-PID-RANDOM`, mode 0700, made
/// once; folders of processes that are gone (killed mid-copy) are removed first.
fn private_dir() -> Result<&'static Path, String> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = std::env::temp_dir();
        remove_stale(&base);
        let mut b = [0u8; 8];
        getrandom::getrandom(&mut b).map_err(|e| e.to_string())?;
        let dir = base.join(format!(
            "cairn-sqlite-{}-{}",
            std::process::id(),
            hex::encode(b)
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(dir)
    })
    .as_ref()
    .map_err(|e| e.clone())
    .and_then(|dir| {
        // Removed at the end of an earlier backup of this process: made again.
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(format!("{}: {e}", dir.display()));
            }
            _ => {}
        }
        // Ours alone: a folder someone else made under that name is not used.
        let m = std::fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        if !m.is_dir()
            || m.uid() != nix::unistd::getuid().as_raw()
            || m.permissions().mode() & 0o077 != 0
        {
            return Err(format!(
                "{} is not this user's private folder",
                dir.display()
            ));
        }
        Ok(dir.as_path())
    })
}

/// Removes the copy folders of processes that no longer run.
fn remove_stale(base: &Path) {
    let Ok(rd) = std::fs::read_dir(base) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("cairn-sqlite-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let alive = crate::fsmeta::process_alive(pid);
        let ours = e.metadata().is_ok_and(|m| {
            use std::os::unix::fs::MetadataExt;
            m.is_dir() && m.uid() == nix::unistd::getuid().as_raw()
        });
        if !alive && ours {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Removes this process's copy folder (at the end of a backup).
pub(super) fn cleanup() {
    if let Ok(dir) = private_dir_if_made() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn private_dir_if_made() -> Result<PathBuf, ()> {
    // Only when a copy was made: do not create the folder just to remove it.
    let base = std::env::temp_dir();
    let prefix = format!("cairn-sqlite-{}-", std::process::id());
    std::fs::read_dir(base)
        .map_err(|_| ())?
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .ok_or(())
}

/// A new empty file for a copy, owner-only from the start (never through a link).
fn new_temp_file(dir: &Path) -> Result<PathBuf, String> {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let p = dir.join(format!("copy-{n}.db"));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&p)
        .map_err(|e| format!("{}: {e}", p.display()))?;
    Ok(p)
}

/// The copy needs the database's size in the temporary folder (which may be a RAM
/// disk): with less room than that and a margin, the file is stored as read.
fn room_for(dir: &Path, size: u64) -> Result<(), String> {
    let st = nix::sys::statvfs::statvfs(dir).map_err(|e| e.to_string())?;
    let free = st.blocks_available() as u64 * st.fragment_size() as u64;
    let need = size + size / 10 + (64 << 20);
    if free < need {
        return Err(format!(
            "{} has {} MiB free, a copy needs {} MiB (set TMPDIR elsewhere)",
            dir.display(),
            free >> 20,
            need >> 20
        ));
    }
    Ok(())
}

/// The walk's side of SQLite: which names are databases with side files, and reading
/// a database through a copy.
impl Walker<'_> {
    /// Names in `names` of SQLite databases that have a side file there.
    pub(super) fn sqlite_bases(
        &self,
        dir: &Path,
        handle: &DirHandle,
        names: &[Vec<u8>],
    ) -> HashSet<Vec<u8>> {
        let mut bases = HashSet::new();
        for n in names {
            let Some(base) = side_file_base(n) else {
                continue;
            };
            if bases.contains(base) || names.binary_search_by(|x| x.as_slice().cmp(base)).is_err() {
                continue;
            }
            // A side file is a plain file and no database of its own (a database may
            // well be called `x-journal`).
            let side = At::Dir(handle, std::ffi::OsStr::from_bytes(n));
            let plain = side
                .stat()
                .is_ok_and(|st| st.mode & libc::S_IFMT == libc::S_IFREG)
                && side.open_file().is_ok_and(|f| !is_sqlite(&f));
            if !plain {
                continue;
            }
            let path = dir.join(std::ffi::OsStr::from_bytes(base));
            if self.sqlite_raw.as_ref().is_some_and(|p| p.is_match(&path)) {
                continue;
            }
            let at = At::Dir(handle, std::ffi::OsStr::from_bytes(base));
            let is_db = at
                .stat()
                .is_ok_and(|st| st.mode & libc::S_IFMT == libc::S_IFREG)
                && at.open_file().is_ok_and(|f| is_sqlite(&f));
            if is_db {
                bases.insert(base.to_vec());
            }
        }
        bases
    }

    /// The real path SQLite opens for a database (no symlink in it), and whether any
    /// side file is there, once they are known to be absent or plain files of the
    /// database's owner: SQLite opens them by name, and a FIFO there would block it, a
    /// link would pull in another file.
    fn sqlite_path(
        &self,
        at: &At,
        owner: u32,
    ) -> std::result::Result<(std::path::PathBuf, bool), String> {
        let (dir, name) = match at {
            At::Dir(d, name) => (std::fs::canonicalize(&d.access), name.as_bytes()),
            At::Path(p) => (
                p.parent()
                    .map_or(Ok(std::path::PathBuf::from("/")), std::fs::canonicalize),
                p.file_name().map_or(&b""[..], |n| n.as_bytes()),
            ),
        };
        let dir = dir.map_err(|e| format!("its folder: {e}"))?;
        let mut sides = false;
        for suffix in SIDE_SUFFIXES {
            let side = [name, suffix].concat();
            let side_os = std::ffi::OsStr::from_bytes(&side);
            let st = match at {
                At::Dir(d, _) => stat_at(d, side_os).map(|st| StatFields::from(&st)),
                At::Path(_) => dir
                    .join(side_os)
                    .symlink_metadata()
                    .map(|m| StatFields::from(&m)),
            };
            match st {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("{}: {e}", side_os.to_string_lossy())),
                Ok(st) if st.mode & libc::S_IFMT == libc::S_IFREG && st.uid == owner => {
                    sides = true;
                }
                Ok(_) => {
                    return Err(format!(
                        "{} is not a plain file of the database's owner",
                        side_os.to_string_lossy()
                    ))
                }
            }
        }
        Ok((dir.join(std::ffi::OsStr::from_bytes(name)), sides))
    }

    /// A SQLite database: read as it is when no side file shows a transaction and
    /// nothing changes while it is read, else through a consistent copy. None when the
    /// file is no database, is to be stored raw, or could not be copied (a warning
    /// says so; it is then read as any file).
    #[allow(clippy::type_complexity)]
    pub(super) fn read_sqlite(
        &self,
        path: &Path,
        at: &At,
        f: &File,
        size: u64,
    ) -> Option<std::io::Result<(CairnResult<(Vec<Id>, u64)>, bool)>> {
        // A database is at least one 512-byte page: smaller files (most of a typical
        // tree) are not even looked at.
        if size < MIN_DATABASE
            || self.sqlite_raw.as_ref().is_some_and(|p| p.is_match(path))
            || !is_sqlite(f)
        {
            return None;
        }
        let meta = f.metadata().ok()?;
        let copied = match self.sqlite_path(at, meta.uid()) {
            Ok((real, sides)) => {
                if !sides {
                    // No journal, no WAL: nobody is in a transaction. Its bytes as
                    // they are (a restore gives back the same file), unless a commit
                    // lands while they are read: then a consistent copy.
                    match self.read_file_checked(f, None) {
                        Ok((Ok(_), true)) => {}
                        done => return Some(done),
                    }
                }
                consistent_copy(&real, (meta.dev(), meta.ino()), meta.len())
            }
            Err(e) => Err(e),
        };
        match copied {
            Ok(copy) => {
                let len = copy.metadata().map(|m| m.len()).unwrap_or(0);
                let read = self.read_file(&copy, len).map(|r| (r, false));
                if matches!(read, Ok((Ok(_), _))) {
                    self.captured.lock().unwrap().insert(path.to_path_buf());
                }
                Some(read)
            }
            Err(e) => {
                // Not counted as an unreadable file: the database is stored, as read.
                (self.warn)(format!(
                    "{}: SQLite database stored as read, not through a consistent copy: {e}",
                    path.display()
                ));
                // Read again from the start by the caller.
                let _ = std::io::Seek::seek(&mut &*f, std::io::SeekFrom::Start(0));
                None
            }
        }
    }
}
