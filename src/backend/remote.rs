//! Any storage OpenDAL speaks (S3 and kin, SFTP, WebDAV, GCS, Azure, B2, Google
//! Drive, Dropbox, FTP, …) behind the `Backend` trait. Nothing outside this file sees an
//! OpenDAL type.
//!
//! Hardened by default: each request has a timeout, a timed-out or otherwise transient
//! failure is retried with exponential backoff and jitter, and at most
//! `-o connections=N` requests are in flight. Errors are turned into sentences a person
//! can act on, and no credential ever appears in one (`diagnose.rs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Once};
use std::time::Duration;

use opendal::blocking;
use opendal::layers::{ConcurrentLimitLayer, RetryLayer, TimeoutLayer};
use opendal::options::{ListOptions, ReadOptions, WriteOptions};
use opendal::Operator;

use super::diagnose::Diagnosis;
use super::location::{is_secret_setting, Remote, Tuning};
use super::{Backend, FileType};
use crate::error::{Error, Result};

/// The runtime every OpenDAL request runs on; cairn's own threads block on it.
static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .thread_name("cairn-io")
        .enable_all()
        .build()
        .expect("cannot start the I/O runtime")
});

/// Set once an SFTP location is opened: its sessions end in runtime tasks.
static SFTP_USED: AtomicBool = AtomicBool::new(false);

/// Lets the runtime's background tasks end before the process does (at most 3 s),
/// after every backend is dropped. An SFTP session, once its last connection is
/// dropped, tells its ssh master process to exit from a runtime task; a process that
/// exits first leaves that ssh process running for good (one per cairn run).
pub fn settle() {
    if !SFTP_USED.load(Ordering::Relaxed) {
        return;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let metrics = RUNTIME.metrics();
    while metrics.num_alive_tasks() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// TLS with ring and reqwest as the HTTP transport, installed once per process (the
/// lean build leaves both to the program).
fn install_defaults() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        opendal_http_transport_reqwest::install_default();
        opendal::init_default_registry();
    });
}

/// Services whose single upload is atomic: a reader sees the whole object or none.
/// Elsewhere (SFTP, WebDAV, FTP, fs) a file is written under a temporary name and
/// renamed into place.
const ATOMIC_PUT: &[&str] = &[
    "s3", "gcs", "azblob", "b2", "memory", "gdrive", "dropbox", "oss", "obs", "cos",
];

/// Files larger than this are uploaded in parts of `MULTIPART_CHUNK`; a pack of the
/// default size (16 MiB and its header) goes up in one request, not five.
const MULTIPART_THRESHOLD: usize = 32 << 20;
const MULTIPART_CHUNK: usize = 8 << 20;
const BINARY: &str = "application/octet-stream";

pub struct OpendalBackend {
    op: blocking::Operator,
    display: String,
    scheme: String,
    atomic_put: bool,
    can_create_dir: bool,
    /// Large files go up in parts, several at once (S3 multipart: still atomic, the
    /// object appears when the upload completes).
    multipart: bool,
    /// Shared with the streams `read_stream` hands out, whose errors it words too.
    diagnosis: Arc<Diagnosis>,
}

impl OpendalBackend {
    pub fn new(remote: Remote) -> Result<Self> {
        install_defaults();
        let Remote {
            scheme,
            config,
            display,
            tuning,
        } = remote;
        let secrets: Vec<String> = config
            .iter()
            .filter(|(k, v)| is_secret_setting(k) && v.len() >= 4)
            .map(|(_, v)| v.clone())
            .collect();
        let endpoint = config.get("endpoint").cloned();
        let diagnosis = Arc::new(Diagnosis {
            display: display.clone(),
            scheme: scheme.clone(),
            endpoint,
            region: config.get("region").cloned(),
            secrets,
            tuning: tuning.clone(),
        });
        if scheme == "sftp" {
            SFTP_USED.store(true, Ordering::Relaxed);
        }
        if let Some(known) = known_settings(&scheme) {
            if let Some(k) = config.keys().find(|k| !known.contains(k)) {
                return Err(Error::Usage(format!(
                    "{display}: -o {k}: not a setting of {scheme}; it knows {} (and cairn's own connections, timeout, retries, multipart)",
                    known.join(", ")
                )));
            }
        }
        let op = Operator::via_iter(&scheme, config.clone()).map_err(|e| {
            if e.kind() == opendal::ErrorKind::Unsupported {
                Error::Usage(format!(
                    "{display}: storage service {scheme:?} is not compiled into cairn (README: Storage lists them)"
                ))
            } else {
                Error::Usage(format!(
                    "{display}: bad settings: {}",
                    diagnosis.scrub(&super::diagnose::chain(&e))
                ))
            }
        })?;
        let op = layered(op, &tuning);
        let info = op.info();
        let cap = info.capability();
        let _guard = RUNTIME.enter();
        let op = blocking::Operator::new(op)
            .map_err(|e| Error::Other(format!("{display}: {}", diagnosis.scrub(&e.to_string()))))?;
        Ok(OpendalBackend {
            op,
            atomic_put: ATOMIC_PUT.contains(&scheme.as_str()) || !cap.rename,
            // Folders matter on file-like services only; on an object store they would
            // be 261 empty objects.
            can_create_dir: cap.create_dir && !ATOMIC_PUT.contains(&scheme.as_str()),
            multipart: cap.write_can_multi && tuning.multipart,
            display,
            scheme,
            diagnosis,
        })
    }

    fn err(&self, doing: &str, path: &str, e: opendal::Error) -> Error {
        self.diagnosis.error(doing, path, &e)
    }

    /// A body as it arrives, never held whole: one request, which OpenDAL's retry
    /// resumes from where it broke off (a ranged read of the rest). The request goes
    /// out here, so a missing or forbidden file is said as `read` says it. The stream
    /// holds one of the `connections` slots until it is dropped.
    fn stream(
        &self,
        ft: FileType,
        name: &str,
        range: opendal::BytesRange,
    ) -> Result<Box<dyn std::io::Read + Send>> {
        use std::io::BufRead;
        let p = ft.path(name);
        let mut body = self
            .op
            .reader(&p)
            .and_then(|r| r.into_std_read(range))
            .map_err(|e| self.err("reading", &p, e))?;
        if let Err(e) = body.fill_buf() {
            return Err(said(&self.diagnosis, &p, e));
        }
        Ok(Box::new(BodyStream {
            body,
            path: p,
            diagnosis: self.diagnosis.clone(),
        }))
    }
}

/// The settings a service's builder takes, from its config type: a misspelt `-o`
/// key is an error, not silently ignored.
fn known_settings(scheme: &str) -> Option<Vec<String>> {
    use opendal::services::*;
    let v = match scheme {
        "s3" => serde_json::to_value(S3Config::default()),
        "sftp" => serde_json::to_value(SftpConfig::default()),
        "webdav" => serde_json::to_value(WebdavConfig::default()),
        "gcs" => serde_json::to_value(GcsConfig::default()),
        "azblob" => serde_json::to_value(AzblobConfig::default()),
        "b2" => serde_json::to_value(B2Config::default()),
        "gdrive" => serde_json::to_value(GdriveConfig::default()),
        "dropbox" => serde_json::to_value(DropboxConfig::default()),
        "ftp" => serde_json::to_value(FtpConfig::default()),
        "fs" => serde_json::to_value(FsConfig::default()),
        "memory" => serde_json::to_value(MemoryConfig::default()),
        _ => return None,
    };
    let mut keys: Vec<String> = v.ok()?.as_object()?.keys().cloned().collect();
    keys.sort();
    Some(keys)
}

/// Timeout innermost (one try), then the concurrency limit, then retry outermost: a
/// timed-out try is retried, and a retry waiting out its backoff holds no slot.
fn layered(op: Operator, t: &Tuning) -> Operator {
    op.layer(
        TimeoutLayer::new()
            .with_timeout(t.timeout)
            .with_io_timeout(t.timeout),
    )
    .layer(ConcurrentLimitLayer::new(t.connections))
    .layer(
        RetryLayer::new()
            .with_jitter()
            .with_factor(2.0)
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(15))
            .with_max_times(t.retries),
    )
}

/// A random name beside `path` that listings skip (it starts with a dot).
fn temp_name(path: &str) -> String {
    let mut r = [0u8; 8];
    getrandom::getrandom(&mut r).expect("no randomness");
    match path.rsplit_once('/') {
        Some((dir, name)) => format!("{dir}/.tmp-{}-{name}", hex::encode(r)),
        None => format!(".tmp-{}-{path}", hex::encode(r)),
    }
}

impl Backend for OpendalBackend {
    fn location(&self) -> String {
        self.display.clone()
    }

    fn create(&self) -> Result<()> {
        if !self.can_create_dir {
            return Ok(()); // object stores have no folders
        }
        let mut dirs: Vec<String> = ["keys/", "locks/", "snapshots/", "index/", "data/"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        dirs.extend((0..=255u8).map(|i| format!("data/{i:02x}/")));
        for d in dirs {
            self.op
                .create_dir(&d)
                .map_err(|e| self.err("creating", &d, e))?;
        }
        Ok(())
    }

    fn read(&self, ft: FileType, name: &str) -> Result<Vec<u8>> {
        let p = ft.path(name);
        let buf = self.op.read(&p).map_err(|e| self.err("reading", &p, e))?;
        Ok(buf.to_vec())
    }

    fn read_stream(&self, ft: FileType, name: &str) -> Result<Box<dyn std::io::Read + Send>> {
        self.stream(ft, name, (..).into())
    }

    /// As `read_stream`; a body that ends early is a short read for the caller to
    /// notice. FTP has no ranged read (see `read_range`): there the range is read whole.
    fn read_range_stream(
        &self,
        ft: FileType,
        name: &str,
        offset: u64,
        len: usize,
    ) -> Result<Box<dyn std::io::Read + Send>> {
        if self.scheme == "ftp" || len == 0 {
            let bytes = self.read_range(ft, name, offset, len)?;
            return Ok(Box::new(std::io::Cursor::new(bytes)));
        }
        self.stream(ft, name, (offset..offset + len as u64).into())
    }

    fn read_range(&self, ft: FileType, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let p = ft.path(name);
        if len == 0 {
            return Ok(Vec::new());
        }
        // FTP has no ranged read: a read from the offset that the client closes early is
        // "426 transfer aborted" on servers that notice in time (pyftpdlib does, now and
        // then). So on FTP the read runs to the end of the file and is cut here.
        let range = if self.scheme == "ftp" {
            (offset..).into()
        } else {
            (offset..offset + len as u64).into()
        };
        let opts = ReadOptions {
            range,
            ..Default::default()
        };
        let buf = match self.op.read_options(&p, opts) {
            Ok(b) => b,
            // A range past the end: refused by the server, or cut short and caught
            // by OpenDAL's length check.
            Err(e)
                if e.kind() == opendal::ErrorKind::RangeNotSatisfied
                    || e.message().contains("too little data") =>
            {
                return Err(truncated(&self.display, &p, offset, len))
            }
            Err(e) => return Err(self.err("reading", &p, e)),
        };
        if buf.len() < len || (buf.len() > len && self.scheme != "ftp") {
            return Err(truncated(&self.display, &p, offset, len));
        }
        Ok(buf.slice(..len).to_vec())
    }

    fn write(&self, ft: FileType, name: &str, data: &[u8]) -> Result<()> {
        let p = ft.path(name);
        let bytes = opendal::Buffer::from(data.to_vec());
        if self.atomic_put {
            // The type the object stores default to, said outright: a store that
            // records no type (gcp-storage-emulator) otherwise answers with a null the
            // GCS client cannot parse.
            let mut opts = WriteOptions {
                content_type: Some(BINARY.into()),
                ..Default::default()
            };
            if self.multipart && data.len() > MULTIPART_THRESHOLD {
                opts.chunk = Some(MULTIPART_CHUNK);
                opts.concurrent = 4;
            }
            let parts = opts.chunk.is_some();
            self.op.write_options(&p, bytes, opts).map_err(|e| {
                let unsupported = matches!(e.kind(), opendal::ErrorKind::Unsupported)
                    || e.to_string().contains("status: 501");
                let err = self.err("writing", &p, e);
                if parts && unsupported {
                    Error::Other(format!(
                        "{err}; the store does not take multipart uploads: try -o multipart=off"
                    ))
                } else {
                    err
                }
            })?;
            return Ok(());
        }
        let tmp = temp_name(&p);
        let result = self
            .op
            .write(&tmp, bytes)
            .map(|_| ())
            .and_then(|_| self.op.rename(&tmp, &p));
        result.map_err(|e| {
            let _ = self.op.delete(&tmp);
            self.err("writing", &p, e)
        })
    }

    fn list(&self, ft: FileType) -> Result<Vec<(String, u64)>> {
        let dir = match ft {
            FileType::Config => return Err(Error::Other("config is not listed".into())),
            other => format!("{}/", other.dir()),
        };
        let opts = ListOptions {
            recursive: ft == FileType::Pack,
            ..Default::default()
        };
        let entries = match self.op.list_options(&dir, opts) {
            Ok(v) => v,
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(self.err("listing", &dir, e)),
        };
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let meta = entry.metadata();
            let name = entry.name().trim_end_matches('/');
            if !meta.is_file()
                || name.is_empty()
                || name.starts_with('.')
                || entry.path().ends_with('/')
            {
                continue;
            }
            // Repository files are never empty (every one is sealed); a listing that
            // does not carry sizes is completed by a stat, and an entry gone by then
            // is simply not listed.
            let mut size = meta.content_length();
            if size == 0 {
                match self.op.stat(entry.path()) {
                    Ok(m) => size = m.content_length(),
                    Err(e) if e.kind() == opendal::ErrorKind::NotFound => continue,
                    Err(e) => return Err(self.err("listing", entry.path(), e)),
                }
            }
            out.push((name.to_string(), size));
        }
        out.sort();
        out.dedup_by(|a, b| a.0 == b.0);
        Ok(out)
    }

    fn delete(&self, ft: FileType, name: &str) -> Result<()> {
        let p = ft.path(name);
        self.op.delete(&p).map_err(|e| self.err("deleting", &p, e))
    }

    fn size(&self, ft: FileType, name: &str) -> Result<u64> {
        let p = ft.path(name);
        let meta = match self.op.stat(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == opendal::ErrorKind::PermissionDenied => {
                // A HEAD answer has no body to say why; a GET of the same file does
                // (wrong key or wrong secret).
                let why = self.op.read_options(
                    &p,
                    ReadOptions {
                        range: (0..1).into(),
                        ..Default::default()
                    },
                );
                return Err(self.err("reading", &p, why.err().unwrap_or(e)));
            }
            Err(e) if e.kind() == opendal::ErrorKind::NotFound && ft == FileType::Config => {
                // No repository here, or no bucket at all: a listing tells which,
                // and costs a request only when there is no repository.
                let opts = ListOptions {
                    limit: Some(1),
                    ..Default::default()
                };
                if let Err(le) = self.op.list_options("", opts) {
                    if le.kind() != opendal::ErrorKind::NotFound || self.scheme == "s3" {
                        return Err(self.err("reading", &p, le));
                    }
                }
                return Err(self.err("reading", &p, e));
            }
            Err(e) => return Err(self.err("reading", &p, e)),
        };
        if meta.is_dir() {
            return Err(Error::Other(format!("{}/{p}: is a folder", self.display)));
        }
        Ok(meta.content_length())
    }

    fn connections(&self) -> usize {
        self.diagnosis.tuning.connections
    }

    fn is_remote(&self) -> bool {
        self.scheme != "fs"
    }
}

/// A file's body as it arrives (`read_stream`); its errors worded as every other
/// storage error is, secrets scrubbed.
struct BodyStream {
    body: blocking::StdReader,
    path: String,
    diagnosis: Arc<Diagnosis>,
}

impl std::io::Read for BodyStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.body.read(buf).map_err(|e| {
            let err = said(&self.diagnosis, &self.path, e);
            let kind = match &err {
                Error::Io { source, .. } => source.kind(),
                _ => std::io::ErrorKind::Other,
            };
            std::io::Error::new(kind, err.to_string())
        })
    }
}

/// An I/O error out of an OpenDAL reader as the storage error it carries.
fn said(diagnosis: &Diagnosis, path: &str, e: std::io::Error) -> Error {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<opendal::Error>())
    {
        Some(oe) => diagnosis.error("reading", path, oe),
        None => Error::Other(diagnosis.scrub(&format!("{}/{path}: {e}", diagnosis.display))),
    }
}

fn truncated(display: &str, path: &str, offset: u64, len: usize) -> Error {
    Error::integrity(
        format!("{display}/{path}"),
        format!("file is truncated: wanted {len} bytes at offset {offset}"),
    )
}

/// The backend for a remote location, shared.
pub fn open(remote: Remote) -> Result<Arc<dyn Backend>> {
    Ok(Arc::new(OpendalBackend::new(remote)?))
}

/// One plain HTTP POST (notifications: webhooks, pings) over the backends' own HTTP
/// client and runtime; returns the status code. Not a storage request: not counted.
pub fn http_post(
    url: &str,
    content_type: &str,
    body: Vec<u8>,
    timeout: Duration,
) -> std::result::Result<u16, String> {
    install_defaults();
    RUNTIME.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| format!("{e}"))?;
        let resp = client
            .post(url)
            .header("content-type", content_type)
            .header("user-agent", concat!("cairn/", env!("CARGO_PKG_VERSION")))
            .body(body)
            .send()
            .await
            .map_err(|e| {
                // reqwest's error names the URL, which may carry a token: say only
                // what kind of failure it was.
                if e.is_timeout() {
                    "timed out".to_string()
                } else if e.is_connect() {
                    "could not connect".to_string()
                } else {
                    "request failed".to_string()
                }
            })?;
        Ok(resp.status().as_u16())
    })
}
