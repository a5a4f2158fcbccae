//! `cairn test-storage`: on every real server it passes and leaves nothing behind,
//! before and after `init` (the repository is untouched); on storage that refuses
//! something it exits 1 with a line that says what will break, and reports what it
//! could not clean up; an unreachable server or a wrong secret is diagnosed as the
//! other commands diagnose it.

use std::net::TcpListener;

use cairn::backend::FileType;

use crate::common::*;
use crate::servers::{self, Kind, RemoteRepo, Restriction};

/// Runs `cairn [repo] test-storage --json --size 1MiB args…`; returns (code, the JSON
/// report, stderr).
fn probe(env: &Env, args: &[&str]) -> (i32, serde_json::Value, String) {
    let mut all = vec!["test-storage", "--json", "--size", "1MiB", "--rounds", "2"];
    all.extend_from_slice(args);
    let out = env.run(all);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let report = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("no JSON report ({e}):\n{stdout}\n{}", stderr(&out)));
    (code(&out), report, stderr(&out))
}

/// Probe objects left at the repository place: read from the server's disk where it
/// stores plain files (temporary names too), else listed.
fn probe_objects(r: &RemoteRepo) -> Vec<String> {
    if r.disk.as_os_str().is_empty() {
        return r
            .backend()
            .list(FileType::Probe)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| n.contains("cairn-probe-"))
            .collect();
    }
    files_with_hashes(&r.disk)
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| p.contains("cairn-probe-"))
        .collect()
}

/// Every file under `dir` (relative path) with a hash of its content.
fn files_with_hashes(dir: &std::path::Path) -> Vec<(String, String)> {
    if !dir.exists() {
        return Vec::new();
    }
    let mut files: Vec<(String, String)> = walk(dir)
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| {
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            let hash = blake3::hash(&std::fs::read(&p).unwrap())
                .to_hex()
                .to_string();
            (rel, hash)
        })
        .collect();
    files.sort();
    files
}

const STEP_NAMES: [&str; 11] = [
    "check repository",
    "write small",
    "stat small",
    "read small",
    "read range",
    "read missing",
    "list",
    "write large",
    "read large",
    "delete",
    "deleted is gone",
];

fn step<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {report}"))
}

fn passes_and_cleans_up(r: RemoteRepo) {
    let env = Env::on(r.clone());
    let (rc, report, err) = probe(&env, &[]);
    assert_eq!(rc, 0, "{:?}: {report}\n{err}", r.kind);
    assert_eq!(report["ok"], true);
    assert_eq!(report["repository"], false);
    assert!(report["diagnosis"].as_array().unwrap().is_empty());
    let steps = report["steps"].as_array().unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(names, STEP_NAMES);
    for s in steps {
        assert_eq!(s["ok"], true, "{s}");
        assert_eq!(s["skipped"], false, "{s}");
    }
    assert!(
        step(&report, "write large")["bytes_per_second"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(
        step(&report, "read large")["bytes_per_second"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(report["requests"]["write"].as_u64().unwrap() >= 3);
    assert!(probe_objects(&r).is_empty(), "{:?}", r.kind);

    // After init, with a snapshot: the probe sees the repository and changes nothing.
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), random_bytes(300_000, 7)).unwrap();
    env.backup([&src]);
    let before = env.ok(["snapshots", "--json"]);
    let files_before = files_with_hashes(&r.disk);
    let (rc, report, err) = probe(&env, &[]);
    assert_eq!(rc, 0, "{report}\n{err}");
    assert_eq!(report["repository"], true);
    // Not one repository file added, changed or removed.
    assert_eq!(files_with_hashes(&r.disk), files_before);
    assert_eq!(env.ok(["snapshots", "--json"]), before);
    env.ok(["check", "--read-data"]);
    assert!(probe_objects(&r).is_empty());
}

#[test]
fn passes_on_s3_and_leaves_nothing() {
    if let Some(r) = servers::remote(Kind::S3) {
        passes_and_cleans_up(r);
    }
}

#[test]
fn passes_on_moto_and_leaves_nothing() {
    if let Some(r) = servers::remote(Kind::Moto) {
        passes_and_cleans_up(r);
    }
}

#[test]
fn passes_on_sftp_and_leaves_nothing() {
    if let Some(r) = servers::remote(Kind::Sftp) {
        passes_and_cleans_up(r);
    }
}

#[test]
fn passes_on_webdav_and_leaves_nothing() {
    if let Some(r) = servers::remote(Kind::Webdav) {
        passes_and_cleans_up(r);
    }
}

#[test]
fn passes_on_azure_gcs_and_ftp_and_leaves_nothing() {
    for kind in [Kind::Azure, Kind::Gcs, Kind::Ftp] {
        if let Some(r) = servers::remote(kind) {
            passes_and_cleans_up(r);
        }
    }
}

#[test]
fn a_local_folder_that_does_not_exist_yet_passes_and_is_not_left_behind() {
    let env = Env::new();
    let (rc, report, err) = probe(&env, &[]);
    assert_eq!(rc, 0, "{report}\n{err}");
    assert_eq!(report["repository"], false);
    assert!(!env.repo.exists(), "the probe left {}", env.repo.display());
    // Parents the probe had to make go too.
    let deep = env.path("a/b/repo");
    let out = env
        .bare()
        .arg("-r")
        .arg(&deep)
        .args(["test-storage", "--size", "64K"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        !env.path("a").exists(),
        "the probe left {}",
        env.path("a").display()
    );
    // The human form: a line per step, a closing verdict.
    let out = env.run(["test-storage", "--size", "64K"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ok   delete"), "{text}");
    assert!(
        text.contains("all storage operations cairn needs work here"),
        "{text}"
    );
    // The alias a restic user might type.
    let out = env.run(["probe", "--size", "64K", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn storage_that_cannot_delete_fails_naming_prune_and_reports_what_it_left() {
    let Some(r) = servers::sftp_restricted(Restriction::NoDelete) else {
        return;
    };
    let env = Env::on(r.clone());
    let (rc, report, err) = probe(&env, &[]);
    assert_eq!(rc, 1, "{report}\n{err}");
    assert_eq!(report["ok"], false);
    assert_eq!(step(&report, "write small")["ok"], true);
    assert_eq!(step(&report, "read range")["ok"], true);
    assert_eq!(step(&report, "delete")["ok"], false);
    let line = err
        .lines()
        .find(|l| l.starts_with("cairn: error: "))
        .unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(
        line.contains("can write but cannot delete: prune, forget and unlock will fail"),
        "{line}"
    );
    // What it could not delete is named, and really is there.
    let left: Vec<String> = report["left_behind"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        left.len(),
        3,
        "two small objects and the large one: {report}"
    );
    let mut on_disk: Vec<String> = std::fs::read_dir(&r.disk)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    on_disk.sort();
    let mut expected = left.clone();
    expected.sort();
    assert_eq!(on_disk, expected);
    assert!(err.contains("delete them by hand"), "{err}");
}

#[test]
fn read_only_storage_fails_naming_backup() {
    let Some(r) = servers::sftp_restricted(Restriction::ReadOnly) else {
        return;
    };
    let env = Env::on(r.clone());
    // Without --json: the one error line and exit 1.
    let out = env.run(["test-storage", "--size", "64K"]);
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("cairn: error: "))
        .unwrap();
    assert!(
        line.contains("cannot write: init and backup will fail"),
        "{line}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("FAIL write small"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(std::fs::read_dir(&r.disk).unwrap().count(), 0);
}

#[test]
fn an_unreachable_server_and_a_wrong_secret_are_diagnosed() {
    // A port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = Env::new();
    let out = env
        .bare()
        .args(["-r", "s3:nobucket/x", "-o"])
        .arg(format!("endpoint=http://127.0.0.1:{port}"))
        .args(["-o", "retries=1", "-o", "access_key_id=k", "-o"])
        .arg("secret_access_key=s3cr3t-never-shown")
        .args(["test-storage", "--size", "64K"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert!(err.contains("refused the connection"), "{err}");
    assert!(!err.contains("s3cr3t"), "{err}");

    let Some(r) = servers::remote(Kind::S3) else {
        return;
    };
    let env = Env::on(r);
    let out = env
        .cmd()
        .env("AWS_SECRET_ACCESS_KEY", "Wr0ng-secret-never-shown")
        .args(["test-storage", "--json", "--size", "64K"])
        .output()
        .unwrap();
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert_eq!(code(&out), 1, "{all}");
    assert!(
        all.contains("the secret key does not match the access key"),
        "{all}"
    );
    assert!(!all.contains("Wr0ng"), "{all}");
}

#[test]
fn a_bad_size_is_a_usage_error() {
    let env = Env::new();
    for bad in ["12T", "2G", "100", "MiB", "1.5M"] {
        let out = env.run(["test-storage", "--size", bad]);
        assert_eq!(code(&out), 2, "{bad}: {}", stderr(&out));
        assert!(!env.repo.exists());
    }
    // Binary units, any case.
    let out = env.run(["test-storage", "--json", "--size", "64k", "--rounds", "1"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let written = report["requests"]["bytes_written"].as_u64().unwrap();
    assert!(((64 << 10)..(128 << 10)).contains(&written), "{report}");
}

/// Two probes and a backup at the same moment on one repository: each probe passes,
/// the backup's snapshot is whole, and no probe object is left.
#[test]
fn probes_beside_a_running_backup_change_nothing() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..40u64 {
        std::fs::write(src.join(format!("f{i}")), random_bytes(1 << 20, i)).unwrap();
    }
    let mut backup = env.cmd();
    backup.args(["backup", src.to_str().unwrap()]);
    let backup = backup.spawn().unwrap();
    let probes: Vec<_> = (0..2)
        .map(|_| {
            let mut c = env.cmd();
            c.args(["test-storage", "--json", "--size", "4MiB", "--rounds", "5"]);
            c.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for p in probes {
        let out = p.wait_with_output().unwrap();
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["ok"], true, "{report}");
    }
    let out = backup.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    env.ok(["check", "--read-data"]);
    let snaps: serde_json::Value = serde_json::from_str(&env.ok(["snapshots", "--json"])).unwrap();
    assert_eq!(snaps.as_array().unwrap().len(), 1);
    let restored = env.path("restored");
    env.restore("latest", &restored, &[]);
    assert_same_tree(&src, &restored.join(src.strip_prefix("/").unwrap()));
    let left: Vec<_> = std::fs::read_dir(&env.repo)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().contains("cairn-probe-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
