//! Real storage servers on loopback, started once per test process and shared: s3s-fs
//! (an S3 server that checks SigV4 signatures), moto (another S3 implementation), a
//! private sshd for SFTP and rclone's WebDAV server (../shared/TESTING.md). Each test
//! gets its own bucket or folder. A server that cannot start is a skipped test, and a
//! failure under `CI=true` (`prerequisite`).
//!
//! Servers are spawned from a keeper thread that lives as long as the process, with
//! PR_SET_PDEATHSIG: when the test process ends, so do they.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::prerequisite;

pub const S3_KEY: &str = "cairntestkey";
pub const S3_SECRET: &str = "cairn-test-secret-0123456789";

/// The kinds of remote storage the tests run against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// s3s-fs: checks signatures; objects are plain files under its root.
    S3,
    /// moto: a second S3 implementation (no signature check).
    Moto,
    Sftp,
    Webdav,
    /// Azurite: Azure Blob Storage; objects live in its own database.
    Azure,
    /// gcp-storage-emulator: Google Cloud Storage's JSON API, no credentials.
    Gcs,
    /// pyftpdlib: an FTP server with a user and password; plain files.
    Ftp,
}

pub const ALL: [Kind; 7] = [
    Kind::S3,
    Kind::Moto,
    Kind::Sftp,
    Kind::Webdav,
    Kind::Azure,
    Kind::Gcs,
    Kind::Ftp,
];

/// Azurite's well-known development account (documented by Microsoft, not a secret).
pub const AZURE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
pub const FTP_USER: &str = "cairn";
pub const FTP_PASSWORD: &str = "cairn-ftp-secret-42";

/// A fresh, empty place for one repository on a running server.
#[derive(Clone, Debug)]
pub struct RemoteRepo {
    pub kind: Kind,
    pub url: String,
    /// `-o` options for it (credentials are given by environment, like a user would).
    pub options: Vec<String>,
    pub env: Vec<(String, String)>,
    /// The repository's files on this machine's disk (every server here stores plain
    /// files), for tests that damage or inspect them.
    pub disk: PathBuf,
}

impl RemoteRepo {
    /// The same settings as `-o` options only (for in-process backends).
    pub fn all_options(&self) -> Vec<String> {
        let mut o = self.options.clone();
        for (k, v) in &self.env {
            let key = match k.as_str() {
                "AWS_ACCESS_KEY_ID" => "access_key_id",
                "AWS_SECRET_ACCESS_KEY" => "secret_access_key",
                "AZURE_STORAGE_ACCOUNT" => "account_name",
                "AZURE_STORAGE_KEY" => "account_key",
                "FTP_USER" => "user",
                "FTP_PASSWORD" => "password",
                _ => continue,
            };
            o.push(format!("{key}={v}"));
        }
        o
    }

    /// An in-process backend for it.
    pub fn backend(&self) -> std::sync::Arc<dyn cairn::backend::Backend> {
        cairn::backend::open(&self.url, &self.all_options()).unwrap()
    }
}

struct Server {
    port: u16,
    root: PathBuf,
    /// For SFTP: the client key and the user.
    key: Option<PathBuf>,
    /// For SFTP: ports where the server refuses deletes, and every change.
    restricted_ports: [u16; 2],
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, what: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("{what} did not answer on port {port}");
    false
}

/// Spawns `cmd` from a thread that outlives every test, killed with the process. Its
/// output goes to `log` (shown when the server does not come up), else nowhere.
fn spawn_kept(mut cmd: Command, log: Option<&Path>) -> bool {
    let (tx, rx) = std::sync::mpsc::channel();
    let out = log.and_then(|p| std::fs::File::create(p).ok());
    std::thread::spawn(move || {
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let (stdout, stderr) = match out.and_then(|f| Some((f.try_clone().ok()?, f))) {
            Some((a, b)) => (Stdio::from(a), Stdio::from(b)),
            None => (Stdio::null(), Stdio::null()),
        };
        match cmd.stdout(stdout).stderr(stderr).spawn() {
            Ok(mut child) => {
                tx.send(true).unwrap();
                let _ = child.wait();
            }
            Err(e) => {
                eprintln!("cannot start {:?}: {e}", cmd.get_program());
                tx.send(false).unwrap()
            }
        }
    });
    rx.recv().unwrap()
}

/// npm's global bin folder, where `npm install -g` puts programs (not always on PATH).
fn npm_bin() -> String {
    Command::new("npm")
        .args(["prefix", "-g"])
        .output()
        .ok()
        .map(|o| format!("{}/bin", String::from_utf8_lossy(&o.stdout).trim()))
        .unwrap_or_default()
}

fn program(name: &str, extra: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn scratch(name: &str) -> PathBuf {
    let base = std::env::temp_dir().join(format!("cairn-servers-{}", std::process::id()));
    let p = base.join(name);
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn start(kind: Kind) -> Option<Server> {
    let port = free_port();
    match kind {
        Kind::S3 => {
            let home = std::env::var("HOME").unwrap_or_default();
            let bin = program("s3s-fs", &[&format!("{home}/.cargo/bin")])?;
            let root = scratch("s3s");
            let mut c = Command::new(bin);
            c.args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", S3_KEY, "--secret-key", S3_SECRET])
                .arg(&root);
            plain_server(c, port, "s3s-fs", root)
        }
        Kind::Moto => {
            let bin = program("moto_server", &["/opt/moto/bin"])?;
            let mut c = Command::new(bin);
            c.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
            plain_server(c, port, "moto", PathBuf::new())
        }
        Kind::Sftp => start_sshd(port),
        Kind::Webdav => {
            let bin = program("rclone", &[])?;
            let root = scratch("webdav");
            let mut c = Command::new(bin);
            c.args(["serve", "webdav"]).arg(&root).args([
                "--addr",
                &format!("127.0.0.1:{port}"),
                "--config",
                "/dev/null",
            ]);
            plain_server(c, port, "rclone", root)
        }
        Kind::Azure => {
            let bin = program("azurite-blob", &[&npm_bin()])?;
            let root = scratch("azurite");
            let mut c = Command::new(bin);
            c.args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
                .arg("--location")
                .arg(&root)
                .args(["--disableTelemetry", "--skipApiVersionCheck", "--silent"]);
            plain_server(c, port, "azurite", root)
        }
        Kind::Gcs => {
            let bin = program("gcp-storage-emulator", &[PY_SERVERS])?;
            let mut c = Command::new(bin);
            c.args(["start", "--in-memory", "--quiet", "--host", "127.0.0.1"])
                .args(["--port", &port.to_string()]);
            plain_server(c, port, "gcp-storage-emulator", PathBuf::new())
        }
        Kind::Ftp => {
            // The venv's python first: a `python` earlier on PATH (a pyenv shim, the
            // system's) does not have pyftpdlib.
            let venv = Path::new(PY_SERVERS).join("python");
            let python = if venv.is_file() {
                venv
            } else {
                program("python3", &[])?
            };
            let root = scratch("ftp");
            let mut c = Command::new(python);
            c.args(["-m", "pyftpdlib", "-i", "127.0.0.1", "-w"])
                .args(["-p", &port.to_string(), "-u", FTP_USER, "-P", FTP_PASSWORD])
                .arg("-d")
                .arg(&root);
            plain_server(c, port, "pyftpdlib", root)
        }
    }
}

/// The virtual environment `.ci/run` installs the Python servers into
/// (gcp-storage-emulator, pyftpdlib).
const PY_SERVERS: &str = "/opt/cairn-py/bin";

/// Starts `c` and waits for it on `port`: a server with no keys and no restricted ports.
fn plain_server(c: Command, port: u16, what: &str, root: PathBuf) -> Option<Server> {
    let log = scratch("logs").join(format!("{what}.log"));
    let up = spawn_kept(c, Some(&log)) && wait_for_port(port, what);
    if !up {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        eprintln!("{what} printed (last lines):");
        for l in tail.iter().rev() {
            eprintln!("  {l}");
        }
    }
    up.then_some(Server {
        port,
        root,
        key: None,
        restricted_ports: [0; 2],
    })
}

fn sh(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A private sshd (its own config, host key and authorized keys; the system's are not
/// touched), and an `ssh` wrapper first on PATH that checks host keys against a
/// known_hosts file of the tests' own: OpenDAL runs the system `ssh`, which otherwise
/// reads the passwd home's files.
fn start_sshd(port: u16) -> Option<Server> {
    let sshd = PathBuf::from("/usr/sbin/sshd");
    if !sshd.is_file() || program("ssh", &[]).is_none() {
        return None;
    }
    let dir = scratch("sshd");
    for k in ["host_key", "client_key"] {
        let _ = std::fs::remove_file(dir.join(k));
        if !sh(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(dir.join(k)))
        {
            return None;
        }
    }
    std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).ok()?;
    // Two more ports where the SFTP server refuses requests, as a restricted account
    // would: one refuses deletes, one every change.
    let (no_delete, read_only) = (free_port(), free_port());
    let config = format!(
        "Port {port}\nPort {no_delete}\nPort {read_only}\nListenAddress 127.0.0.1\n\
         HostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
         AuthorizedKeysFile {d}/authorized_keys\nPasswordAuthentication no\n\
         KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n\
         Subsystem sftp internal-sftp\n\
         Match LocalPort {no_delete}\n  ForceCommand internal-sftp -P remove,rmdir\n\
         Match LocalPort {read_only}\n  ForceCommand internal-sftp -R\n",
        d = dir.display()
    );
    std::fs::write(dir.join("sshd_config"), config).ok()?;
    std::fs::create_dir_all("/run/sshd").ok()?;
    let mut c = Command::new(&sshd);
    c.args(["-D", "-e", "-f"]).arg(dir.join("sshd_config"));
    if !(spawn_kept(c, None) && wait_for_port(port, "sshd")) {
        return None;
    }
    let mut known = Vec::new();
    for p in [port, no_delete, read_only] {
        if !wait_for_port(p, "sshd") {
            return None;
        }
        let scan = Command::new("ssh-keyscan")
            .args(["-p", &p.to_string(), "127.0.0.1"])
            .output()
            .ok()?;
        known.extend_from_slice(&scan.stdout);
    }
    std::fs::write(dir.join("known_hosts"), &known).ok()?;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).ok()?;
    let wrapper = bin.join("ssh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec /usr/bin/ssh -o UserKnownHostsFile=\"${{CAIRN_TEST_KNOWN_HOSTS:-{}}}\" -o BatchMode=yes \"$@\"\n",
            dir.join("known_hosts").display()
        ),
    )
    .ok()?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).ok()?;
    // The one change to this process's environment: `ssh` is found on PATH at spawn
    // time, by this process (in-process tests) and by the cairn it runs. Done once,
    // under the OnceLock, before any SFTP test goes on.
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![bin.clone()];
    dirs.extend(std::env::split_paths(&path));
    std::env::set_var("PATH", std::env::join_paths(dirs).unwrap());
    let state = dir.join("state");
    std::fs::create_dir_all(&state).ok()?;
    std::env::set_var("XDG_STATE_HOME", &state);
    Some(Server {
        port,
        root: PathBuf::new(),
        key: Some(dir.join("client_key")),
        restricted_ports: [no_delete, read_only],
    })
}

fn server(kind: Kind) -> Option<&'static Server> {
    static S3: OnceLock<Option<Server>> = OnceLock::new();
    static MOTO: OnceLock<Option<Server>> = OnceLock::new();
    static SFTP: OnceLock<Option<Server>> = OnceLock::new();
    static WEBDAV: OnceLock<Option<Server>> = OnceLock::new();
    static AZURE: OnceLock<Option<Server>> = OnceLock::new();
    static GCS: OnceLock<Option<Server>> = OnceLock::new();
    static FTP: OnceLock<Option<Server>> = OnceLock::new();
    let cell = match kind {
        Kind::S3 => &S3,
        Kind::Moto => &MOTO,
        Kind::Sftp => &SFTP,
        Kind::Webdav => &WEBDAV,
        Kind::Azure => &AZURE,
        Kind::Gcs => &GCS,
        Kind::Ftp => &FTP,
    };
    cell.get_or_init(|| start(kind)).as_ref()
}

fn what(kind: Kind) -> &'static str {
    match kind {
        Kind::S3 => "s3s-fs (cargo install s3s-fs@0.14.1 --features binary --locked)",
        Kind::Moto => "moto_server (pip install 'moto[server]')",
        Kind::Sftp => "sshd and ssh (apt-get install openssh-server)",
        Kind::Webdav => "rclone (apt-get install rclone)",
        Kind::Azure => "azurite-blob (npm install -g azurite)",
        Kind::Gcs => "gcp-storage-emulator (pip install gcp-storage-emulator, in /opt/cairn-py)",
        Kind::Ftp => "pyftpdlib (pip install pyftpdlib, in /opt/cairn-py)",
    }
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A new empty repository place on a server of `kind`; None (a skip, or a failure
/// under CI=true) when the server is not available.
pub fn remote(kind: Kind) -> Option<RemoteRepo> {
    let s = server(kind);
    if !prerequisite(s.is_some(), what(kind)) {
        return None;
    }
    let s = s.unwrap();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = format!("cairn-{n}");
    let s3_env = vec![
        ("AWS_ACCESS_KEY_ID".to_string(), S3_KEY.to_string()),
        ("AWS_SECRET_ACCESS_KEY".to_string(), S3_SECRET.to_string()),
    ];
    Some(match kind {
        Kind::S3 => {
            let disk = s.root.join(&name);
            std::fs::create_dir_all(&disk).unwrap();
            RemoteRepo {
                kind,
                url: format!("s3:{name}/repo"),
                options: vec![format!("endpoint=http://127.0.0.1:{}", s.port)],
                env: s3_env,
                disk: disk.join("repo"),
            }
        }
        Kind::Moto => {
            create_bucket(s.port, &name);
            RemoteRepo {
                kind,
                url: format!("s3:{name}/repo"),
                options: vec![format!("endpoint=http://127.0.0.1:{}", s.port)],
                env: s3_env,
                disk: PathBuf::new(),
            }
        }
        Kind::Sftp => {
            let disk = scratch("sftp").join(&name);
            RemoteRepo {
                kind,
                url: format!("sftp://root@127.0.0.1:{}{}", s.port, disk.display()),
                options: vec![format!("key={}", s.key.as_ref().unwrap().display())],
                env: vec![],
                disk,
            }
        }
        Kind::Webdav => {
            let disk = s.root.join(&name);
            std::fs::create_dir_all(&disk).unwrap();
            RemoteRepo {
                kind,
                url: format!("webdav:http://127.0.0.1:{}/{name}", s.port),
                options: vec![],
                env: vec![],
                disk,
            }
        }
        Kind::Azure => {
            create_azure_container(s.port, &name);
            RemoteRepo {
                kind,
                url: format!("azure:{name}/repo"),
                options: vec![format!(
                    "endpoint=http://127.0.0.1:{}/{AZURE_ACCOUNT}",
                    s.port
                )],
                env: vec![
                    ("AZURE_STORAGE_ACCOUNT".into(), AZURE_ACCOUNT.into()),
                    ("AZURE_STORAGE_KEY".into(), AZURE_KEY.into()),
                ],
                disk: PathBuf::new(),
            }
        }
        Kind::Gcs => {
            create_gcs_bucket(s.port, &name);
            RemoteRepo {
                kind,
                url: format!("gs:{name}/repo"),
                // The emulator takes no credentials: anonymous, and no looking for
                // a metadata server or a gcloud config.
                options: vec![
                    format!("endpoint=http://127.0.0.1:{}", s.port),
                    "allow_anonymous=true".into(),
                    "disable_vm_metadata=true".into(),
                    "disable_config_load=true".into(),
                    // The emulator has no XML multipart API (real GCS has):
                    // `remote_errors::a_store_without_multipart_uploads_is_named_with_the_way_out`.
                    "multipart=off".into(),
                ],
                env: vec![],
                disk: PathBuf::new(),
            }
        }
        Kind::Ftp => RemoteRepo {
            kind,
            url: "opendal:ftp".into(),
            options: vec![
                format!("endpoint=ftp://127.0.0.1:{}", s.port),
                format!("root=/{name}"),
            ],
            env: vec![
                ("FTP_USER".into(), FTP_USER.into()),
                ("FTP_PASSWORD".into(), FTP_PASSWORD.into()),
            ],
            disk: s.root.join(&name),
        },
    })
}

/// What an SFTP account may do, for `sftp_restricted`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restriction {
    /// The server refuses to remove files and folders.
    NoDelete,
    /// The server refuses every change.
    ReadOnly,
}

/// A new SFTP repository place on the private sshd, reached through a port where the
/// server enforces `restriction` (sftp-server's -P and -R). The folder exists.
pub fn sftp_restricted(restriction: Restriction) -> Option<RemoteRepo> {
    let mut r = remote(Kind::Sftp)?;
    let s = server(Kind::Sftp)?;
    let port = match restriction {
        Restriction::NoDelete => s.restricted_ports[0],
        Restriction::ReadOnly => s.restricted_ports[1],
    };
    std::fs::create_dir_all(&r.disk).unwrap();
    r.url = format!("sftp://root@127.0.0.1:{port}{}", r.disk.display());
    Some(r)
}

/// The port of a running server of `kind` (for tests that build their own URLs).
pub fn port(kind: Kind) -> Option<u16> {
    server(kind).map(|s| s.port)
}

/// The root folder of s3s-fs: one folder per bucket.
pub fn s3_root() -> Option<&'static Path> {
    server(Kind::S3).map(|s| s.root.as_path())
}

/// moto takes an unsigned `PUT /BUCKET`.
fn create_bucket(port: u16, name: &str) {
    let resp = http(
        port,
        &format!(
            "PUT /{name} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "moto: {resp}");
}

/// A Google Cloud Storage bucket on the emulator (its JSON API takes no credentials).
fn create_gcs_bucket(port: u16, name: &str) {
    let body = format!("{{\"name\":\"{name}\"}}");
    let resp = http(
        port,
        &format!(
            "POST /storage/v1/b?project=cairn HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    // The emulator answers in HTTP/1.0.
    assert!(
        resp.starts_with("HTTP/1.") && resp[8..].starts_with(" 200"),
        "gcs emulator: {resp}"
    );
}

/// An Azure container on Azurite, with a request signed by the account's Shared Key,
/// as `az storage container create` would send it.
fn create_azure_container(port: u16, name: &str) {
    let script = r#"
import base64, hmac, hashlib, sys, urllib.request, email.utils
port, account, key, container = sys.argv[1:5]
date = email.utils.formatdate(usegmt=True)
version = "2021-08-06"
to_sign = ("PUT" + "\n" * 12 + f"x-ms-date:{date}\nx-ms-version:{version}\n"
           + f"/{account}/{account}/{container}\nrestype:container")
sig = base64.b64encode(hmac.new(base64.b64decode(key), to_sign.encode(), hashlib.sha256).digest()).decode()
req = urllib.request.Request(
    f"http://127.0.0.1:{port}/{account}/{container}?restype=container", method="PUT",
    headers={"x-ms-date": date, "x-ms-version": version, "Content-Length": "0",
             "Authorization": f"SharedKey {account}:{sig}"})
urllib.request.urlopen(req)
"#;
    let status = Command::new("python3")
        .args([
            "-c",
            script,
            &port.to_string(),
            AZURE_ACCOUNT,
            AZURE_KEY,
            name,
        ])
        .status()
        .unwrap();
    assert!(status.success(), "azurite: creating container {name}");
}

fn http(port: u16, request: &str) -> String {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp
}
