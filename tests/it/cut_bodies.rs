//! A network that cuts a download part-way (a reset connection, a proxy that gives up)
//! must cost a retry, never a false report of damage or a wrong restore: a pack read
//! as a stream (`check --read-data`) goes on from the byte where it broke off. The
//! cuts come from a real TCP proxy between cairn and a real S3 server.

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use crate::common::*;
use crate::servers::{self, Kind};

/// Forwards loopback TCP to a server; the first `cuts` responses to a GET of a pack
/// that run past `after` bytes are cut there (both sockets shut, as a dropped
/// connection looks to the client).
struct CuttingProxy {
    port: u16,
    /// Responses cut so far.
    cut: Arc<AtomicUsize>,
    /// Pack reads asked for from a byte other than the first, after a cut.
    resumed: Arc<AtomicUsize>,
}

impl CuttingProxy {
    fn start(upstream: u16, after: usize, cuts: usize) -> CuttingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let left = Arc::new(AtomicUsize::new(cuts));
        let cut = Arc::new(AtomicUsize::new(0));
        let resumed = Arc::new(AtomicUsize::new(0));
        let (c, r) = (cut.clone(), resumed.clone());
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let link = Link {
                    pack_get: Arc::new(AtomicBool::new(false)),
                    sent: Arc::new(AtomicUsize::new(0)),
                };
                link.pump(client, server, after, left.clone(), c.clone(), r.clone());
            }
        });
        CuttingProxy { port, cut, resumed }
    }
}

/// One client connection: whether its request in flight is a GET of a pack, and how
/// many response bytes went back since it was asked.
#[derive(Clone)]
struct Link {
    pack_get: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
}

impl Link {
    fn pump(
        self,
        client: TcpStream,
        server: TcpStream,
        after: usize,
        left: Arc<AtomicUsize>,
        cut: Arc<AtomicUsize>,
        resumed: Arc<AtomicUsize>,
    ) {
        let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        let up = self.clone();
        let cut_seen = cut.clone();
        thread::spawn(move || {
            let mut buf = vec![0u8; 64 << 10];
            while let Ok(n) = c_in.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
                if head.starts_with("get ") {
                    let pack = head.lines().next().is_some_and(|l| l.contains("/data/"));
                    up.pack_get.store(pack, Ordering::SeqCst);
                    up.sent.store(0, Ordering::SeqCst);
                    let from_later_byte = head
                        .split("range: bytes=")
                        .nth(1)
                        .and_then(|r| r.split('-').next())
                        .is_some_and(|start| start.trim() != "0");
                    if pack && from_later_byte && cut_seen.load(Ordering::SeqCst) > 0 {
                        resumed.fetch_add(1, Ordering::SeqCst);
                    }
                }
                if s_out.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = s_out.shutdown(Shutdown::Write);
        });
        let (mut s_in, mut c_out) = (server, client);
        thread::spawn(move || {
            let mut buf = vec![0u8; 16 << 10];
            while let Ok(n) = s_in.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let sent = self.sent.fetch_add(n, Ordering::SeqCst) + n;
                if self.pack_get.load(Ordering::SeqCst)
                    && sent > after
                    && left
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| l.checked_sub(1))
                        .is_ok()
                {
                    let _ = c_out.write_all(&buf[..n - (sent - after).min(n)]);
                    cut.fetch_add(1, Ordering::SeqCst);
                    let _ = c_out.shutdown(Shutdown::Both);
                    let _ = s_in.shutdown(Shutdown::Both);
                    return;
                }
                if c_out.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = c_out.shutdown(Shutdown::Write);
        });
    }
}

/// The S3 repository reached through the proxy instead of directly.
fn through(remote: &servers::RemoteRepo, proxy: &CuttingProxy) -> servers::RemoteRepo {
    let mut r = remote.clone();
    for o in r.options.iter_mut() {
        if o.starts_with("endpoint=") {
            *o = format!("endpoint=http://127.0.0.1:{}", proxy.port);
        }
    }
    r
}

#[test]
fn check_read_data_goes_on_where_a_cut_pack_download_broke_off() {
    let Some(remote) = servers::remote(Kind::S3) else {
        return;
    };
    let port = servers::port(Kind::S3).unwrap();
    let direct = Env::on(remote.clone());
    direct.init();
    let src = direct.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.bin"), random_bytes(3 << 20, 11)).unwrap();
    fs::write(src.join("b.bin"), random_bytes(2 << 20, 12)).unwrap();
    direct.backup([&src]);

    // Two pack downloads cut after 256 KiB each: check sees sound packs, having asked
    // for the rest of each from where it broke off.
    let proxy = CuttingProxy::start(port, 256 << 10, 2);
    let cut = Env::on(through(&remote, &proxy));
    let out = cut.run(["check", "--read-data"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        proxy.cut.load(Ordering::SeqCst),
        2,
        "the proxy cut no download"
    );
    assert!(
        proxy.resumed.load(Ordering::SeqCst) >= 1,
        "no pack read went on from a later byte after the cut"
    );
}

#[test]
fn a_restore_through_cut_downloads_is_exact() {
    let Some(remote) = servers::remote(Kind::S3) else {
        return;
    };
    let port = servers::port(Kind::S3).unwrap();
    let direct = Env::on(remote.clone());
    direct.init();
    let src = direct.path("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("a.bin"), random_bytes(3 << 20, 21)).unwrap();
    fs::write(src.join("sub/b.bin"), random_bytes(1 << 20, 22)).unwrap();
    fs::write(src.join("sub/c.txt"), b"small").unwrap();
    let snap = direct.backup([&src]);

    let proxy = CuttingProxy::start(port, 200 << 10, 3);
    let cut = Env::on(through(&remote, &proxy));
    let target = cut.path("target");
    cut.restore(&snap, &target, &[]);
    assert!(
        proxy.cut.load(Ordering::SeqCst) >= 1,
        "the proxy cut no download"
    );
    assert_same_tree_but_atime(&src, &target.join(src.strip_prefix("/").unwrap()));
}

/// Runs cairn, failing the test (not hanging it) if it has not finished in `limit`.
/// Its output goes to files, so a full pipe can never be what stops it.
fn finishes(env: &Env, args: &[&str], limit: std::time::Duration) -> String {
    let (out, err) = (env.path("finishes.out"), env.path("finishes.err"));
    let mut child = env
        .cmd()
        .args(args)
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("cairn {args:?} did not finish in {limit:?}: waiting on itself?");
        }
        thread::sleep(std::time::Duration::from_millis(50));
    };
    let stderr = fs::read_to_string(&err).unwrap();
    assert!(status.success(), "cairn {args:?}: {status}: {stderr}");
    fs::read_to_string(&out).unwrap()
}

/// With one connection, a stream that held it while its reader asked for something
/// else would wait forever: check (streamed packs) and prune (a repack that fills a
/// new pack part-way through a pack it streams: packs of 1 MiB here) must finish.
#[test]
fn check_and_prune_with_one_connection_finish() {
    let Some(mut remote) = servers::remote(Kind::S3) else {
        return;
    };
    let config = cairn::repo::config::Config {
        pack_size: 1 << 20,
        ..cairn::repo::config::Config::new(3)
    };
    let kdf = cairn::crypto::KdfParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };
    cairn::Repository::init_with_config(remote.backend(), PASSWORD.as_bytes(), kdf, config)
        .unwrap();
    remote.options.push("connections=1".into());
    let env = Env::on(remote);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    // Small files, one blob each, five or so to a pack; every other one is dropped, so
    // every pack is half unused and repacked.
    for i in 0..24 {
        fs::write(src.join(format!("f{i:02}")), random_bytes(200_000, 40 + i)).unwrap();
    }
    env.backup([&src]);
    for i in (1..24).step_by(2) {
        fs::remove_file(src.join(format!("f{i:02}"))).unwrap();
    }
    let snap = env.backup([&src]);
    let limit = std::time::Duration::from_secs(120);
    finishes(&env, &["check", "--read-data"], limit);
    let out = finishes(
        &env,
        &[
            "--json",
            "forget",
            "--keep-last",
            "1",
            "--prune",
            "--max-unused",
            "0",
        ],
        limit,
    );
    let repacked: u64 = out
        .split("\"packs_repacked\":")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no packs_repacked in {out}"));
    assert!(repacked >= 2, "too little was repacked: {out}");
    finishes(&env, &["check", "--read-data"], limit);
    let target = env.path("target");
    env.restore(&snap, &target, &[]);
    assert_same_tree_but_atime(&src, &target.join(src.strip_prefix("/").unwrap()));
}
