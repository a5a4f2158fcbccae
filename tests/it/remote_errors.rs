//! Remote storage that fails: each failure is one line a person can act on, with exit
//! 1 (10 for "no repository"), and no credential in any output, even with -v and --json.
//! Real servers throughout: s3s-fs checks signatures, moto knows missing buckets, a
//! listener that never answers stands in for a dead server, sshd shows a host key
//! that known_hosts does not list.

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::common::*;
use crate::servers::{self, Kind};

/// Runs cairn against `url` with `opts`; returns (exit code, stdout + stderr).
fn attempt(env: &Env, url: &str, opts: &[String], args: &[&str]) -> (i32, String) {
    let mut c = env.bare();
    c.arg("-r").arg(url);
    for o in opts {
        c.arg("-o").arg(o);
    }
    let out = c.args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (code(&out), text)
}

fn error_line(text: &str) -> &str {
    text.lines()
        .find(|l| l.starts_with("cairn: error: "))
        .unwrap_or_else(|| panic!("no error line in:\n{text}"))
}

#[test]
fn a_wrong_secret_is_named_and_never_shown() {
    let Some(r) = servers::remote(Kind::S3) else {
        return;
    };
    let env = Env::on(r.clone());
    let secret = "Wr0ngSecretValue-do-not-print";
    for args in [
        &["init"][..],
        &["-v", "-v", "--json", "snapshots"],
        &["-v", "backup", "/etc/hostname"],
    ] {
        let mut c = env.bare();
        c.env("AWS_SECRET_ACCESS_KEY", secret).args(env.repo_args());
        let out = c.args(args).output().unwrap();
        let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
        assert_eq!(code(&out), 1, "{args:?}: {all}");
        assert!(
            error_line(&all).contains("the secret key does not match the access key"),
            "{args:?}: {all}"
        );
        assert!(
            !all.contains(secret) && !all.contains("Wr0ngSecret"),
            "secret shown: {all}"
        );
    }
    // The same secret given as -o is hidden too.
    let mut opts = r.options.clone();
    opts.push(format!("secret_access_key={secret}"));
    let (rc, all) = attempt(&env, &r.url, &opts, &["-v", "snapshots"]);
    assert_eq!(rc, 1, "{all}");
    assert!(!all.contains(secret), "secret shown: {all}");
}

#[test]
fn an_unknown_access_key_is_named() {
    let Some(r) = servers::remote(Kind::S3) else {
        return;
    };
    let env = Env::on(r.clone());
    let out = env
        .bare()
        .env("AWS_ACCESS_KEY_ID", "NOSUCHKEY")
        .args(env.repo_args())
        .arg("init")
        .output()
        .unwrap();
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("does not know this access key"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_missing_bucket_is_named_not_taken_for_a_missing_repository() {
    let Some(r) = servers::remote(Kind::Moto) else {
        return;
    };
    let env = Env::on(r.clone());
    let url = r.url.replace("cairn-", "nobucket-");
    for args in [&["init"][..], &["snapshots"]] {
        let mut c = env.bare();
        c.arg("-r").arg(&url);
        for o in &r.options {
            c.arg("-o").arg(o);
        }
        let out = c.args(args).output().unwrap();
        assert_eq!(code(&out), 1, "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("the bucket does not exist"),
            "{}",
            stderr(&out)
        );
    }
    // An existing bucket without a repository is "no repository" (exit 10).
    let out = env.run(["snapshots"]);
    assert_eq!(code(&out), 10, "{}", stderr(&out));
}

#[test]
fn a_refused_connection_and_an_unknown_host_are_named_after_retries() {
    let env = Env::new();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let opts = vec![
        format!("endpoint=http://127.0.0.1:{port}"),
        "retries=1".into(),
        "access_key_id=k".into(),
        "secret_access_key=s3cr3t-value".into(),
    ];
    let (rc, text) = attempt(&env, "s3:b/r", &opts, &["snapshots"]);
    assert_eq!(rc, 1, "{text}");
    let line = error_line(&text);
    assert!(
        line.contains("refused the connection") && line.contains("gave up after 1 retries"),
        "{line}"
    );

    let opts = vec![
        "endpoint=http://no-such-host.invalid".into(),
        "retries=0".into(),
        "access_key_id=k".into(),
        "secret_access_key=s3cr3t-value".into(),
    ];
    let (rc, text) = attempt(&env, "s3:b/r", &opts, &["snapshots"]);
    assert_eq!(rc, 1, "{text}");
    assert!(
        error_line(&text).contains("cannot resolve the host name"),
        "{text}"
    );
    assert!(!text.contains("s3cr3t-value"));
}

/// A server that accepts connections and never answers: each try times out and is
/// retried (the timeout sits below the retry), then the error says so.
#[test]
fn a_server_that_never_answers_times_out_and_each_try_is_retried() {
    let env = Env::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let seen = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming() {
            seen.fetch_add(1, Ordering::SeqCst);
            held.push(s); // keep it open, say nothing
        }
    });
    let opts = vec![
        format!("endpoint=http://127.0.0.1:{port}"),
        "timeout=1s".into(),
        "retries=2".into(),
        "access_key_id=k".into(),
        "secret_access_key=secret-value".into(),
    ];
    let (rc, text) = attempt(&env, "s3:b/r", &opts, &["snapshots"]);
    assert_eq!(rc, 1, "{text}");
    let line = error_line(&text);
    assert!(
        line.contains("no answer from") && line.contains("2 retries"),
        "{line}"
    );
    assert!(
        accepted.load(Ordering::SeqCst) >= 3,
        "{} connections: a timed-out try was not retried",
        accepted.load(Ordering::SeqCst)
    );
}

/// A host key that known_hosts does not list for the server: the message names the
/// known_hosts file, the server's key fingerprint, and how to fix it.
#[test]
fn an_sftp_host_key_mismatch_names_the_file_and_the_fingerprint() {
    let Some(r) = servers::remote(Kind::Sftp) else {
        return;
    };
    let env = Env::on(r.clone());
    let port = servers::port(Kind::Sftp).unwrap();
    let other = env.path("otherkey");
    assert!(std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap()
        .success());
    let pubkey = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let known = env.path("known_hosts");
    std::fs::write(&known, format!("[127.0.0.1]:{port} {pubkey}")).unwrap();
    let real = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ssh-keyscan -p {port} 127.0.0.1 2>/dev/null | ssh-keygen -lf -"
        ))
        .output()
        .unwrap();
    let fingerprint = String::from_utf8_lossy(&real.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    let out = env
        .cmd()
        .env("CAIRN_TEST_KNOWN_HOSTS", &known)
        .arg("init")
        .output()
        .unwrap();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let line = error_line(&stderr(&out)).to_string();
    eprintln!("{line}");
    assert!(
        line.contains(known.to_str().unwrap()),
        "known_hosts not named: {line}"
    );
    assert!(
        line.contains(&fingerprint),
        "fingerprint {fingerprint} not named: {line}"
    );
    assert!(line.contains("ssh-keygen -R"), "{line}");
    assert!(
        !r.disk.join("config").exists(),
        "a repository was written anyway"
    );
}

#[test]
fn a_misspelt_option_or_unknown_service_is_a_usage_error() {
    let env = Env::new();
    let (rc, text) = attempt(&env, "s3:b/r", &["regoin=eu-west-1".into()], &["snapshots"]);
    assert_eq!(rc, 1, "{text}");
    assert!(
        error_line(&text).contains("-o regoin: not a setting of s3"),
        "{text}"
    );
    let (rc, text) = attempt(&env, "opendal:nosuchservice", &[], &["snapshots"]);
    assert_eq!(rc, 1, "{text}");
    assert!(
        error_line(&text).contains("not compiled into cairn"),
        "{text}"
    );
    let (rc, text) = attempt(&env, "ftp2:x", &[], &["snapshots"]);
    assert_eq!(rc, 1, "{text}");
    assert!(
        error_line(&text).contains("scheme \"ftp2\" is not known"),
        "{text}"
    );
}

/// A store without the multipart API (the GCS emulator answers 501) fails a large
/// upload with a line that names the way out, and `-o multipart=off` is that way: the
/// same file goes up in one request and reads back whole.
#[test]
fn a_store_without_multipart_uploads_is_named_with_the_way_out() {
    let Some(r) = servers::remote(Kind::Gcs) else {
        return;
    };
    let env = Env::on(r.clone());
    let with_parts: Vec<String> = r
        .options
        .iter()
        .filter(|o| !o.starts_with("multipart="))
        .cloned()
        .chain(["retries=0".to_string()])
        .collect();
    let args = ["test-storage", "--size", "40MiB", "--rounds", "1"];
    let (rc, all) = attempt(&env, &r.url, &with_parts, &args);
    assert_eq!(rc, 1, "{all}");
    assert!(error_line(&all).contains("try -o multipart=off"), "{all}");
    let mut without = with_parts.clone();
    without.push("multipart=off".into());
    let (rc, all) = attempt(&env, &r.url, &without, &args);
    assert_eq!(rc, 0, "{all}");
    let mut bad = with_parts.clone();
    bad.push("multipart=maybe".into());
    let (rc, all) = attempt(&env, &r.url, &bad, &["snapshots"]);
    assert_eq!(rc, 1, "{all}");
    assert!(
        error_line(&all).contains("multipart=maybe: expected on or off"),
        "{all}"
    );
}
