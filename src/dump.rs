//! `dump`: one file's bytes, or a directory as a tar or zip stream, written as it is
//! read: a file's content is pulled blob by blob into the archive writer, so memory stays
//! flat for any size. tar keeps modes, owners, times, symlinks, hard links, devices,
//! fifos and xattrs (PAX `SCHILY.xattr.*`); zip keeps modes, times and symlinks (it has
//! no owners, hard links or special files: those are reported and left out).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::tree::{check_depth, is_safe_name, Node, NodeKind};
use crate::repo::Repository;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Archive {
    Tar,
    Zip,
}

impl std::str::FromStr for Archive {
    type Err = Error;
    fn from_str(s: &str) -> Result<Archive> {
        match s {
            "tar" => Ok(Archive::Tar),
            "zip" => Ok(Archive::Zip),
            _ => Err(Error::Usage(format!(
                "--archive {s:?}: expected tar or zip"
            ))),
        }
    }
}

/// What a dump wrote.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DumpSummary {
    pub files: u64,
    pub dirs: u64,
    pub others: u64,
    /// Hard links written as links (tar).
    pub links: u64,
    pub bytes: u64,
    /// Entries the archive format cannot hold, or with unsafe names, left out.
    pub skipped: u64,
}

/// A file's content, read blob by blob: exactly the node's size, or an error when the
/// blobs say otherwise (a damaged or hostile repository), never a short or long entry.
pub struct ContentReader<'a> {
    repo: &'a Repository,
    ids: &'a [Id],
    next: usize,
    buf: Vec<u8>,
    pos: usize,
    left: u64,
    name: String,
}

impl<'a> ContentReader<'a> {
    pub fn new(repo: &'a Repository, node: &'a Node, name: &str) -> Self {
        ContentReader {
            repo,
            ids: &node.content,
            next: 0,
            buf: Vec::new(),
            pos: 0,
            left: node.size,
            name: name.to_string(),
        }
    }

    fn damaged(&self, what: &str) -> io::Error {
        io::Error::other(Error::integrity(
            format!("file {}", self.name),
            what.to_string(),
        ))
    }
}

impl Read for ContentReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            let Some(id) = self.ids.get(self.next) else {
                if self.left > 0 {
                    return Err(self.damaged("content is shorter than the snapshot says"));
                }
                return Ok(0);
            };
            self.next += 1;
            self.buf = self.repo.read_blob(id).map_err(io::Error::other)?;
            self.pos = 0;
            if self.buf.len() as u64 > self.left {
                return Err(self.damaged("content is longer than the snapshot says"));
            }
            self.left -= self.buf.len() as u64;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Turns a writer's I/O error back into cairn's error (an integrity error from a
/// `ContentReader` stays one; an OS error keeps its cause).
fn from_io(e: io::Error) -> Error {
    if e.get_ref().is_some_and(|i| i.is::<Error>()) {
        let inner = e.into_inner().expect("checked");
        return match inner.downcast::<Error>() {
            Ok(err) => *err,
            Err(other) => Error::Other(format!("writing the dump: {other}")),
        };
    }
    Error::Other(format!("writing the dump: {e}"))
}

/// The archive's output: once the dump has failed, nothing more is written, so the
/// archive writers' own finishing (on drop) cannot close a broken stream as if it were
/// whole: a reader sees a truncated archive and fails.
struct Guarded<'a> {
    inner: &'a mut dyn Write,
    failed: std::rc::Rc<std::cell::Cell<bool>>,
}

impl Write for Guarded<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.failed.get() {
            return Err(io::Error::other("the dump failed"));
        }
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        if self.failed.get() {
            return Err(io::Error::other("the dump failed"));
        }
        self.inner.flush()
    }
}

/// Writes one file's content to `out`; returns the bytes written.
pub fn dump_file(repo: &Repository, node: &Node, out: &mut dyn Write) -> Result<u64> {
    let mut r = ContentReader::new(repo, node, &node.name_lossy());
    io::copy(&mut r, out).map_err(from_io)
}

/// Writes `node` (a directory, or a single file) as an archive to `out`. Entries are
/// named below `top` (the dumped directory's own name; empty for a snapshot's root).
pub fn dump_archive(
    repo: &Repository,
    node: &Node,
    top: &Path,
    archive: Archive,
    out: &mut dyn Write,
    warn: &mut dyn FnMut(String),
) -> Result<DumpSummary> {
    let failed = std::rc::Rc::new(std::cell::Cell::new(false));
    let mut guarded = Guarded {
        inner: out,
        failed: failed.clone(),
    };
    write_archive(repo, node, top, archive, &mut guarded, warn)
}

fn write_archive(
    repo: &Repository,
    node: &Node,
    top: &Path,
    archive: Archive,
    out: &mut Guarded,
    warn: &mut dyn FnMut(String),
) -> Result<DumpSummary> {
    let failed_flag = out.failed.clone();
    let out: &mut dyn Write = out;
    let mut sink: Box<dyn Sink + '_> = match archive {
        Archive::Tar => Box::new(TarSink {
            tar: tar::Builder::new(out),
            links: HashMap::new(),
        }),
        Archive::Zip => Box::new(ZipSink {
            zip: Some(zip::ZipWriter::new_stream(out)),
        }),
    };
    let failed = failed_flag;
    let mut d = Dumper {
        repo,
        summary: DumpSummary::default(),
        warn,
    };
    let r = if node.kind == NodeKind::Dir && top.as_os_str().is_empty() {
        d.children(node, top, &mut *sink, 0)
    } else {
        d.entry(node, top, &mut *sink, 0)
    };
    if let Err(e) = r {
        // Before the writer is dropped: its finishing must not reach the output.
        failed.set(true);
        return Err(e);
    }
    sink.finish()?;
    Ok(d.summary)
}

struct Dumper<'a, 'w> {
    repo: &'a Repository,
    summary: DumpSummary,
    warn: &'w mut dyn FnMut(String),
}

impl Dumper<'_, '_> {
    fn children(
        &mut self,
        dir: &Node,
        path: &Path,
        sink: &mut dyn Sink,
        depth: usize,
    ) -> Result<()> {
        let Some(tree) = dir.subtree else {
            return Err(Error::integrity(
                format!("tree of {}", path.display()),
                "directory has no subtree",
            ));
        };
        for child in self.repo.load_tree(&tree)?.nodes {
            if !is_safe_name(&child.name) {
                (self.warn)(format!(
                    "left out {:?} in {}: not a safe name",
                    String::from_utf8_lossy(&child.name),
                    path.display()
                ));
                self.summary.skipped += 1;
                continue;
            }
            let p = path.join(OsStr::from_bytes(&child.name));
            self.entry(&child, &p, sink, depth + 1)?;
        }
        Ok(())
    }

    fn entry(&mut self, node: &Node, path: &Path, sink: &mut dyn Sink, depth: usize) -> Result<()> {
        check_depth(path.display(), depth)?;
        match node.kind {
            NodeKind::Dir => {
                sink.dir(node, path)?;
                self.summary.dirs += 1;
                self.children(node, path, sink, depth)
            }
            NodeKind::File => {
                let linked = sink.file(self.repo, node, path)?;
                if linked {
                    self.summary.links += 1;
                } else {
                    self.summary.files += 1;
                    self.summary.bytes += node.size;
                }
                Ok(())
            }
            _ => {
                if sink.other(node, path)? {
                    self.summary.others += 1;
                } else {
                    (self.warn)(format!(
                        "left out {} ({}): the archive format cannot hold it",
                        path.display(),
                        node.kind.name()
                    ));
                    self.summary.skipped += 1;
                }
                Ok(())
            }
        }
    }
}

/// One archive format.
trait Sink {
    fn dir(&mut self, node: &Node, path: &Path) -> Result<()>;
    /// Writes a file; true when it was written as a hard link to an earlier member.
    fn file(&mut self, repo: &Repository, node: &Node, path: &Path) -> Result<bool>;
    /// Writes a symlink, fifo, device or socket; false when the format cannot.
    fn other(&mut self, node: &Node, path: &Path) -> Result<bool>;
    fn finish(&mut self) -> Result<()>;
}

struct TarSink<W: Write> {
    tar: tar::Builder<W>,
    /// (device, inode) of a hard-link group → the first member's path and content.
    links: HashMap<(u64, u64), (PathBuf, Vec<Id>)>,
}

impl<W: Write> TarSink<W> {
    fn header(&mut self, node: &Node, kind: tar::EntryType) -> Result<tar::Header> {
        // A PAX header right before the entry carries what the GNU header cannot: the
        // mtime's fraction of a second, and xattrs.
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        if node.mtime.nanos != 0 && node.mtime.secs >= 0 {
            let t = format!("{}.{:09}", node.mtime.secs, node.mtime.nanos);
            pax.push(("mtime".into(), t.into_bytes()));
        }
        for x in &node.xattrs {
            let key = format!("SCHILY.xattr.{}", String::from_utf8_lossy(&x.name));
            pax.push((key, x.value.clone()));
        }
        if !pax.is_empty() {
            self.tar
                .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .map_err(from_io)?;
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(node.mode);
        h.set_uid(node.uid as u64);
        h.set_gid(node.gid as u64);
        // Names longer than the header holds are left to the numeric ids.
        let _ = h.set_username(&node.user);
        let _ = h.set_groupname(&node.group);
        h.set_mtime(node.mtime.secs.max(0) as u64);
        h.set_size(0);
        Ok(h)
    }
}

impl<W: Write> Sink for TarSink<W> {
    fn dir(&mut self, node: &Node, path: &Path) -> Result<()> {
        let mut h = self.header(node, tar::EntryType::Directory)?;
        self.tar
            .append_data(&mut h, path, io::empty())
            .map_err(from_io)
    }

    fn file(&mut self, repo: &Repository, node: &Node, path: &Path) -> Result<bool> {
        if node.links > 1 {
            let key = (node.device, node.inode);
            // Linked only to a member with the same content (a hostile tree may give
            // different files one inode).
            if let Some((first, content)) = self.links.get(&key) {
                if *content == node.content {
                    let first = first.clone();
                    let mut h = self.header(node, tar::EntryType::Link)?;
                    self.tar
                        .append_link(&mut h, path, &first)
                        .map_err(from_io)?;
                    return Ok(true);
                }
            } else {
                self.links
                    .insert(key, (path.to_path_buf(), node.content.clone()));
            }
        }
        let mut h = self.header(node, tar::EntryType::Regular)?;
        h.set_size(node.size);
        let reader = ContentReader::new(repo, node, &path.display().to_string());
        self.tar
            .append_data(&mut h, path, reader)
            .map_err(from_io)?;
        Ok(false)
    }

    fn other(&mut self, node: &Node, path: &Path) -> Result<bool> {
        let kind = match node.kind {
            NodeKind::Symlink => {
                let mut h = self.header(node, tar::EntryType::Symlink)?;
                let target = Path::new(OsStr::from_bytes(&node.link_target));
                self.tar
                    .append_link(&mut h, path, target)
                    .map_err(from_io)?;
                return Ok(true);
            }
            NodeKind::Fifo => tar::EntryType::Fifo,
            NodeKind::CharDevice => tar::EntryType::Char,
            NodeKind::BlockDevice => tar::EntryType::Block,
            _ => return Ok(false),
        };
        let mut h = self.header(node, kind)?;
        if kind != tar::EntryType::Fifo {
            let rdev = node.rdev as libc::dev_t;
            h.set_device_major(libc::major(rdev)).map_err(from_io)?;
            h.set_device_minor(libc::minor(rdev)).map_err(from_io)?;
        }
        self.tar
            .append_data(&mut h, path, io::empty())
            .map_err(from_io)?;
        Ok(true)
    }

    fn finish(&mut self) -> Result<()> {
        self.tar.finish().map_err(from_io)
    }
}

struct ZipSink<W: Write> {
    /// Taken by `finish`, which consumes the writer.
    zip: Option<zip::ZipWriter<zip::write::StreamWriter<W>>>,
}

impl<W: Write> ZipSink<W> {
    fn zip(&mut self) -> Result<&mut zip::ZipWriter<zip::write::StreamWriter<W>>> {
        self.zip
            .as_mut()
            .ok_or_else(|| Error::Other("the zip is already finished".into()))
    }
}

/// zip names are UTF-8 with `/` separators; directories end in `/`.
fn zip_name(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

fn zip_options(node: &Node) -> zip::write::SimpleFileOptions {
    use chrono::{Datelike, Timelike};
    let t = chrono::DateTime::from_timestamp(node.mtime.secs, node.mtime.nanos)
        .unwrap_or_default()
        .naive_utc();
    // zip's times run from 1980 to 2107; outside, the format's default.
    let time = zip::DateTime::from_date_and_time(
        t.year().clamp(1980, 2107) as u16,
        t.month() as u8,
        t.day() as u8,
        t.hour() as u8,
        t.minute() as u8,
        t.second() as u8,
    )
    .unwrap_or_default();
    zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(node.mode)
        .last_modified_time(time)
        .large_file(node.size >= (u32::MAX as u64) / 2)
}

fn zip_err(e: zip::result::ZipError) -> Error {
    match e {
        zip::result::ZipError::Io(io) => from_io(io),
        other => Error::Other(format!("writing the zip: {other}")),
    }
}

impl<W: Write> Sink for ZipSink<W> {
    fn dir(&mut self, node: &Node, path: &Path) -> Result<()> {
        self.zip()?
            .add_directory(format!("{}/", zip_name(path)), zip_options(node))
            .map_err(zip_err)
    }

    fn file(&mut self, repo: &Repository, node: &Node, path: &Path) -> Result<bool> {
        let zip = self.zip()?;
        zip.start_file(zip_name(path), zip_options(node))
            .map_err(zip_err)?;
        let mut reader = ContentReader::new(repo, node, &path.display().to_string());
        io::copy(&mut reader, zip).map_err(from_io)?;
        Ok(false)
    }

    fn other(&mut self, node: &Node, path: &Path) -> Result<bool> {
        if node.kind != NodeKind::Symlink {
            return Ok(false);
        }
        let target = String::from_utf8_lossy(&node.link_target).into_owned();
        self.zip()?
            .add_symlink(zip_name(path), target, zip_options(node))
            .map_err(zip_err)?;
        Ok(true)
    }

    fn finish(&mut self) -> Result<()> {
        if let Some(zip) = self.zip.take() {
            zip.finish().map_err(zip_err)?;
        }
        Ok(())
    }
}
