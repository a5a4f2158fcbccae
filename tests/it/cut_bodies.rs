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
/// (of the packs named `only`, when given) that run past `after` bytes are cut there
/// (both sockets shut, as a dropped connection looks to the client), `on_cut` run first.
struct CuttingProxy {
    port: u16,
    rules: Arc<Rules>,
}

struct Rules {
    after: usize,
    only: Option<String>,
    on_cut: Option<Box<dyn Fn() + Send + Sync>>,
    /// Cuts still to make.
    left: AtomicUsize,
    /// Responses cut so far.
    cut: AtomicUsize,
    /// Pack reads asked for from a byte other than the first, after a cut.
    resumed: AtomicUsize,
}

impl CuttingProxy {
    fn start(upstream: u16, after: usize, cuts: usize) -> CuttingProxy {
        Self::start_with(upstream, after, cuts, None, None)
    }

    fn start_with(
        upstream: u16,
        after: usize,
        cuts: usize,
        only: Option<String>,
        on_cut: Option<Box<dyn Fn() + Send + Sync>>,
    ) -> CuttingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let rules = Arc::new(Rules {
            after,
            only,
            on_cut,
            left: AtomicUsize::new(cuts),
            cut: AtomicUsize::new(0),
            resumed: AtomicUsize::new(0),
        });
        let shared = rules.clone();
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let link = Link {
                    pack_get: Arc::new(AtomicBool::new(false)),
                    sent: Arc::new(AtomicUsize::new(0)),
                };
                link.pump(client, server, shared.clone());
            }
        });
        CuttingProxy { port, rules }
    }

    fn cut(&self) -> usize {
        self.rules.cut.load(Ordering::SeqCst)
    }

    fn resumed(&self) -> usize {
        self.rules.resumed.load(Ordering::SeqCst)
    }
}

/// One client connection: whether its request in flight is a GET of a pack to cut, and
/// how many response bytes went back since it was asked.
#[derive(Clone)]
struct Link {
    pack_get: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
}

impl Link {
    fn pump(self, client: TcpStream, server: TcpStream, rules: Arc<Rules>) {
        let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        let up = self.clone();
        let up_rules = rules.clone();
        thread::spawn(move || {
            let mut buf = vec![0u8; 64 << 10];
            while let Ok(n) = c_in.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
                if head.starts_with("get ") {
                    let pack = head.lines().next().is_some_and(|l| {
                        l.contains("/data/")
                            && up_rules
                                .only
                                .as_ref()
                                .is_none_or(|o| l.contains(o.as_str()))
                    });
                    up.pack_get.store(pack, Ordering::SeqCst);
                    up.sent.store(0, Ordering::SeqCst);
                    let from_later_byte = head
                        .split("range: bytes=")
                        .nth(1)
                        .and_then(|r| r.split('-').next())
                        .is_some_and(|start| start.trim() != "0");
                    if pack && from_later_byte && up_rules.cut.load(Ordering::SeqCst) > 0 {
                        up_rules.resumed.fetch_add(1, Ordering::SeqCst);
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
                    && sent > rules.after
                    && rules
                        .left
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| l.checked_sub(1))
                        .is_ok()
                {
                    let _ = c_out.write_all(&buf[..n - (sent - rules.after).min(n)]);
                    if let Some(hook) = &rules.on_cut {
                        hook();
                    }
                    rules.cut.fetch_add(1, Ordering::SeqCst);
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
    assert_eq!(proxy.cut(), 2, "the proxy cut no download");
    assert!(
        proxy.resumed() >= 1,
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
    assert!(proxy.cut() >= 1, "the proxy cut no download");
    assert_same_tree_but_atime(&src, &target.join(src.strip_prefix("/").unwrap()));
}

/// A pack whose download is cut, and which a concurrent prune deletes before the rest is
/// asked for, was deleted, not damaged: check passes and says so.
#[test]
fn a_pack_pruned_while_its_cut_download_waits_is_gone_not_damaged() {
    let Some(remote) = servers::remote(Kind::S3) else {
        return;
    };
    let port = servers::port(Kind::S3).unwrap();
    let direct = Arc::new(Env::on(remote.clone()));
    direct.init();
    let src = direct.path("src");
    fs::create_dir_all(&src).unwrap();
    let packs = || -> Vec<std::path::PathBuf> {
        walk(&remote.disk)
            .into_iter()
            .filter(|p| p.is_file() && p.to_string_lossy().contains("/data/"))
            .collect()
    };
    fs::write(src.join("big"), random_bytes(600_000, 51)).unwrap();
    direct.backup([&src]);
    // The first snapshot's data pack: forgotten and pruned during the check below.
    let first = packs()
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    for i in 0..2 {
        fs::write(src.join("big"), random_bytes(600_000, 52 + i)).unwrap();
        direct.backup([&src]);
    }
    // Forgotten and marked three days ago, beside another client's lock (so marked, not
    // deleted at once): past its grace period, a prune during the check may delete it.
    let repo = cairn::Repository::open(remote.backend(), PASSWORD.as_bytes()).unwrap();
    let other = repo.lock(cairn::repo::lock::LockKind::Shared).unwrap();
    direct.ok(["forget", "--keep-last", "1"]);
    let past = (chrono::Utc::now().timestamp() - 3 * 24 * 3600).to_string();
    let out = direct
        .cmd()
        .env("CAIRN_PRUNE_NOW", &past)
        .args(["prune", "--max-unused", "0"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "prune: {}", stderr(&out));
    assert!(first.exists(), "marked, not deleted yet");
    drop(other);
    drop(repo);
    let name = first.file_name().unwrap().to_string_lossy().to_string();
    let pruner = direct.clone();
    let prune = move || {
        pruner.ok(["prune", "--max-unused", "0"]);
    };
    let proxy = CuttingProxy::start_with(port, 100 << 10, 1, Some(name), Some(Box::new(prune)));
    let cut = Env::on(through(&remote, &proxy));
    let out = cut.run(["-v", "check", "--read-data"]);
    assert_eq!(proxy.cut(), 1, "the proxy cut no download");
    assert!(
        !first.exists(),
        "the prune did not delete the pack being read"
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("deleted by a concurrent prune")
            || stderr(&out).contains("deleted by a concurrent prune"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
}

/// `Env::run_within`, and the command must succeed; returns stdout.
fn finishes(env: &Env, args: &[&str], limit: std::time::Duration) -> String {
    let out = env.run_within(args, limit);
    assert!(out.status.success(), "cairn {args:?}: {}", stderr(&out));
    String::from_utf8(out.stdout).unwrap()
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
