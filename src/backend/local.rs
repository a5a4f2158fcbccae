//! A repository on a local file system.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{Backend, FileType};
use crate::error::{Error, Result};

pub struct LocalBackend {
    root: PathBuf,
    /// Recently read packs, kept open: a restore reads many small ranges of each.
    open_packs: Mutex<Vec<(String, Arc<File>)>>,
}

const OPEN_PACKS: usize = 32;

impl LocalBackend {
    pub fn new(root: PathBuf) -> Self {
        LocalBackend {
            root,
            open_packs: Mutex::new(Vec::new()),
        }
    }

    fn open_pack(&self, name: &str) -> std::io::Result<Arc<File>> {
        let mut cache = self.open_packs.lock().unwrap();
        if let Some(i) = cache.iter().position(|(n, _)| n == name) {
            let entry = cache.remove(i);
            let f = entry.1.clone();
            cache.push(entry);
            return Ok(f);
        }
        let f = Arc::new(File::open(self.path(FileType::Pack, name))?);
        if cache.len() >= OPEN_PACKS {
            cache.remove(0);
        }
        cache.push((name.to_string(), f.clone()));
        Ok(f)
    }

    fn path(&self, ft: FileType, name: &str) -> PathBuf {
        self.root.join(ft.path(name))
    }

    fn context(&self, ft: FileType, name: &str) -> String {
        self.path(ft, name).display().to_string()
    }
}

/// Creates a folder (and missing parents) readable by the owner only, as restic does:
/// key files are only as safe as their password's KDF, and packs' sizes and times
/// tell others what was backed up when. Existing folders are left as they are.
pub(crate) fn private_dir(p: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().recursive(true).mode(0o700).create(p)
}

/// Creates a new file, owner-only (0600), refusing an existing file or a symlink
/// planted under the name (`O_EXCL | O_NOFOLLOW`).
pub(crate) fn private_file(p: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(p)
}

/// Writes and fsyncs a new file. Packs go past the page cache (`O_DIRECT`): written
/// once and read back rarely, they would otherwise push the machine's own working set
/// out of memory, and the kernel's copy into freshly allocated cache pages was a fifth
/// of an initial backup's CPU time on the benchmark machine. A file system that
/// refuses `O_DIRECT` (EINVAL) gets the file written the ordinary way.
fn write_new(tmp: &Path, data: &[u8], direct: bool) -> std::io::Result<()> {
    if direct && data.len() >= DIRECT_MIN {
        match write_direct(tmp, data) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                let _ = fs::remove_file(tmp);
            }
            r => return r,
        }
    }
    let mut f = private_file(tmp)?;
    f.write_all(data)?;
    f.sync_all()
}

/// Files smaller than this are written through the page cache.
const DIRECT_MIN: usize = 1 << 20;
/// `O_DIRECT` wants buffer addresses, offsets and lengths in whole blocks.
const DIRECT_ALIGN: usize = 4096;
const DIRECT_PIECE: usize = 1 << 20;

fn write_direct(tmp: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECT)
        .open(tmp)?;
    BUF.with(|b| -> std::io::Result<()> {
        let mut b = b.borrow_mut();
        if b.is_empty() {
            b.resize(DIRECT_PIECE + DIRECT_ALIGN, 0);
        }
        let start = b.as_ptr().align_offset(DIRECT_ALIGN);
        let buf = &mut b[start..start + DIRECT_PIECE];
        for (i, piece) in data.chunks(DIRECT_PIECE).enumerate() {
            // The last piece is padded to a whole block; set_len cuts the padding off.
            let padded = piece.len().next_multiple_of(DIRECT_ALIGN);
            buf[..piece.len()].copy_from_slice(piece);
            buf[piece.len()..padded].fill(0);
            f.write_all_at(&buf[..padded], (i * DIRECT_PIECE) as u64)?;
        }
        Ok(())
    })?;
    if !data.len().is_multiple_of(DIRECT_ALIGN) {
        f.set_len(data.len() as u64)?;
    }
    f.sync_all()
}

/// fsync a directory so that a rename or create in it survives a crash.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn create(&self) -> Result<()> {
        for d in ["keys", "locks", "snapshots", "index", "data"] {
            let p = self.root.join(d);
            private_dir(&p).map_err(|e| Error::io_path(&p, e))?;
        }
        // Packs are spread over 256 folders so no folder grows huge.
        for i in 0..=255u8 {
            let p = self.root.join("data").join(format!("{i:02x}"));
            private_dir(&p).map_err(|e| Error::io_path(&p, e))?;
        }
        sync_dir(&self.root).map_err(|e| Error::io_path(&self.root, e))
    }

    fn read(&self, ft: FileType, name: &str) -> Result<Vec<u8>> {
        let p = self.path(ft, name);
        fs::read(&p).map_err(|e| Error::io_path(&p, e))
    }

    fn read_stream(&self, ft: FileType, name: &str) -> Result<Box<dyn std::io::Read + Send>> {
        let p = self.path(ft, name);
        Ok(Box::new(File::open(&p).map_err(|e| Error::io_path(&p, e))?))
    }

    fn read_range(&self, ft: FileType, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let p = self.path(ft, name);
        let err = |e| Error::io_path(&p, e);
        let f = if ft == FileType::Pack {
            self.open_pack(name).map_err(err)?
        } else {
            Arc::new(File::open(&p).map_err(err)?)
        };
        let mut buf = vec![0; len];
        f.read_exact_at(&mut buf, offset).map_err(|e| {
            if e.kind() == ErrorKind::UnexpectedEof {
                Error::integrity(
                    self.context(ft, name),
                    format!("file is truncated: wanted {len} bytes at offset {offset}"),
                )
            } else {
                Error::io_path(&p, e)
            }
        })?;
        Ok(buf)
    }

    fn write(&self, ft: FileType, name: &str, data: &[u8]) -> Result<()> {
        let p = self.path(ft, name);
        let dir = p.parent().expect("repository files live in a folder");
        // Temp file, fsync, rename, fsync the folder: a crash leaves the old state or
        // the new one, never half a file under the final name.
        let tmp = dir.join(format!(".tmp-{}-{name}", std::process::id()));
        let result = (|| {
            write_new(&tmp, data, ft == FileType::Pack)?;
            fs::rename(&tmp, &p)?;
            sync_dir(dir)
        })();
        result.map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Error::io(format!("writing {}", p.display()), e)
        })
    }

    fn list(&self, ft: FileType) -> Result<Vec<(String, u64)>> {
        let base = self.root.join(ft.dir());
        let mut dirs = vec![base.clone()];
        if ft == FileType::Pack {
            dirs = read_dir_sorted(&base)?
                .into_iter()
                .filter(|(_, m)| m.is_dir())
                .map(|(n, _)| base.join(n))
                .collect();
        }
        let mut out = Vec::new();
        for d in dirs {
            for (name, meta) in read_dir_sorted(&d)? {
                if meta.is_file() {
                    out.push((name, meta.len()));
                }
            }
        }
        Ok(out)
    }

    fn delete(&self, ft: FileType, name: &str) -> Result<()> {
        if ft == FileType::Pack {
            self.open_packs.lock().unwrap().retain(|(n, _)| n != name);
        }
        let p = self.path(ft, name);
        fs::remove_file(&p).map_err(|e| Error::io_path(&p, e))
    }

    fn size(&self, ft: FileType, name: &str) -> Result<u64> {
        let p = self.path(ft, name);
        fs::metadata(&p)
            .map(|m| m.len())
            .map_err(|e| Error::io_path(&p, e))
    }
}

/// A folder's entries with their metadata, sorted by name. Other processes write and
/// delete files here at any moment: temporary files (names starting with a dot) are
/// skipped without a look, and an entry that vanishes before it is stat'ed is simply
/// not listed.
fn read_dir_sorted(dir: &Path) -> Result<Vec<(String, fs::Metadata)>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io_path(dir, e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io_path(dir, e))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io_path(&entry.path(), e)),
        };
        out.push((name, meta));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().to_path_buf());
        b.create().unwrap();
        let name = "ab".repeat(32);
        b.write(FileType::Pack, &name, b"0123456789").unwrap();
        assert_eq!(b.read(FileType::Pack, &name).unwrap(), b"0123456789");
        assert_eq!(b.read_range(FileType::Pack, &name, 3, 4).unwrap(), b"3456");
        assert!(matches!(
            b.read_range(FileType::Pack, &name, 8, 4),
            Err(Error::Integrity { .. })
        ));
        assert_eq!(b.list(FileType::Pack).unwrap(), vec![(name.clone(), 10)]);
        assert_eq!(b.size(FileType::Pack, &name).unwrap(), 10);
        b.delete(FileType::Pack, &name).unwrap();
        assert!(b.read(FileType::Pack, &name).unwrap_err().is_not_found());
        assert!(b.list(FileType::Snapshot).unwrap().is_empty());
    }

    /// Packs written past the page cache come back byte for byte whatever their
    /// length (whole blocks, a padded last block, several pieces), owner-only, with
    /// nothing left under a temporary name.
    #[test]
    fn direct_pack_writes_keep_every_byte() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().to_path_buf());
        b.create().unwrap();
        for (i, len) in [DIRECT_MIN, DIRECT_MIN + 1, 3 * DIRECT_PIECE + 4095, 5 << 20]
            .into_iter()
            .enumerate()
        {
            let data: Vec<u8> = (0..len).map(|j| (j * 31 + i + j / 4099) as u8).collect();
            let name = format!("{i:02}").repeat(32);
            b.write(FileType::Pack, &name, &data).unwrap();
            assert_eq!(b.read(FileType::Pack, &name).unwrap(), data, "length {len}");
            let p = b.path(FileType::Pack, &name);
            assert_eq!(
                fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let dir_of = b.path(FileType::Pack, &"00".repeat(32));
        let leftovers: Vec<_> = fs::read_dir(dir_of.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    /// Issue 7, item 5: a listing never fails on files other processes write (through
    /// temporary files) and delete while it runs.
    #[test]
    fn listing_tolerates_files_that_come_and_go() {
        let dir = tempfile::tempdir().unwrap();
        let b = std::sync::Arc::new(LocalBackend::new(dir.path().to_path_buf()));
        b.create().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writers: Vec<_> = (0..2u8)
            .map(|t| {
                let (b, stop) = (b.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut i = 0u32;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 20_000 {
                        let name = format!("{t:02x}{i:062x}");
                        b.write(FileType::Snapshot, &name, b"x").unwrap();
                        b.delete(FileType::Snapshot, &name).unwrap();
                        i += 1;
                    }
                })
            })
            .collect();
        for _ in 0..300 {
            for (name, _) in b.list(FileType::Snapshot).unwrap() {
                assert!(
                    !name.starts_with('.'),
                    "a temporary file was listed: {name}"
                );
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
    }
}
