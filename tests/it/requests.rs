//! Request economy: what a command asks of the storage (issue 8 counts what a cloud
//! bill shows). Counts, never times.

use std::fs;

use crate::common::*;

/// The `cairn: storage: N requests (list …)` line that `-v` prints.
fn requests(stderr: &str) -> (u64, u64) {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("cairn: storage: "))
        .unwrap_or_else(|| panic!("no storage line in {stderr}"));
    let total = line["cairn: storage: ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let ranged = line
        .split("ranged read ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap()
        .parse()
        .unwrap();
    (total, ranged)
}

/// The requests (`--json` summary) of a backup that found nothing to store. A backup
/// records the metadata of the source's parent folders, and other tests create files
/// in /tmp at any moment: a backup that stored a changed parent folder's tree is not
/// the no-change case, and the next one is taken instead (as many as twenty: with the
/// whole suite running, /tmp changes several times a second).
fn no_change_requests(env: &Env, src: &std::path::Path) -> serde_json::Value {
    for _ in 0..20 {
        let out = env.ok(["--json", "backup", src.to_str().unwrap()]);
        let summary = summary_line(&out);
        if summary["tree_blobs"] == 0 && summary["data_blobs"] == 0 {
            return summary["requests"].clone();
        }
    }
    panic!("twenty backups in a row stored something");
}

/// A no-change backup with a warm cache asks the same small number of requests however
/// many files the source has, and reads no pack.
#[test]
fn a_no_change_backup_costs_the_same_few_requests_for_any_source_size() {
    let mut totals = Vec::new();
    for files in [20, 2000] {
        let env = Env::new();
        env.init();
        let src = env.path("src");
        for i in 0..files {
            let d = src.join(format!("d{}", i % 40));
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join(format!("f{i}")), random_bytes(1000 + i, i as u64)).unwrap();
        }
        // Out of the racy window, so the second backup trusts its parent.
        std::thread::sleep(std::time::Duration::from_millis(2100));
        // Two backups first: the first one's listing moves the directories' atimes
        // once (relatime), which the second stores; the third is the no-change one.
        env.backup([&src]);
        env.backup([&src]);
        // -v prints the counts on stderr.
        let out = env.run(["-v", "backup", src.to_str().unwrap()]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let (_, ranged) = requests(&stderr(&out));
        assert_eq!(ranged, 0, "a no-change backup read packs: {}", stderr(&out));
        let r = no_change_requests(&env, &src);
        let total = r["total"].as_u64().unwrap();
        assert!(total <= 10, "{total} requests: {r}");
        totals.push(total);
    }
    assert_eq!(totals[0], totals[1], "request count grew with the source");
}

/// Issue 8: on S3 (s3s-fs), a no-change backup with a warm cache makes at most 10
/// requests, lock handling included, the same for 20 files as for 2000, and reads no
/// pack. The `--json` summary carries the same counts.
#[test]
fn a_no_change_backup_on_s3_makes_at_most_ten_requests() {
    let mut totals = Vec::new();
    for files in [20, 2000] {
        let Some(remote) = crate::servers::remote(crate::servers::Kind::S3) else {
            return;
        };
        let env = Env::on(remote);
        env.init();
        let src = env.path("src");
        for i in 0..files {
            let d = src.join(format!("d{}", i % 40));
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join(format!("f{i}")), random_bytes(1000 + i, i as u64)).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(2100));
        env.backup([&src]);
        let r = no_change_requests(&env, &src);
        assert_eq!(r["read_range"], 0, "a no-change backup read packs: {r}");
        assert!(r["write"].as_u64().unwrap() >= 2, "lock and snapshot: {r}");
        let total = r["total"].as_u64().unwrap();
        assert!(total <= 10, "{total} requests on S3: {r}");
        totals.push(total);
    }
    assert_eq!(totals[0], totals[1], "request count grew with the source");
}

/// A prune keeps the packs it deleted in the index, marked; the `check` after it (the
/// cron line `forget --prune && check`) takes them for deleted without asking storage
/// about each one, and still passes.
#[test]
fn a_check_after_prune_asks_nothing_about_the_packs_prune_deleted() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for round in 0..3u64 {
        for i in 0..4u64 {
            fs::write(
                src.join(format!("f{i}")),
                random_bytes(600_000, round * 10 + i),
            )
            .unwrap();
        }
        env.backup([&src]);
    }
    env.ok(["forget", "--keep-last", "1", "--prune"]);
    for args in [
        &["--json", "check"][..],
        &["--json", "check", "--read-data"],
    ] {
        let out = env.ok(args);
        let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert!(
            report["deleted_packs"].as_u64().unwrap() > 0,
            "the prune deleted no pack: {report}"
        );
        assert_eq!(report["requests"]["stat"], 0, "{args:?}: {report}");
        assert!(
            report["problems"].as_array().unwrap().is_empty(),
            "{report}"
        );
    }
}

/// A remote restore reads each pack's needed blobs in a few large ranged reads, fetched
/// ahead of the writers with several requests under way at once (bound by bandwidth,
/// not one request's latency after another), and asks again for nothing. Restoring into
/// a target that has the files already prefetches nothing (`--overwrite if-changed`
/// keeps them): no pack is read.
#[test]
fn a_remote_restore_reads_packs_in_few_requests_several_at_once() {
    let Some(remote) = crate::servers::remote(crate::servers::Kind::S3) else {
        return;
    };
    let env = Env::on(remote);
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("small")).unwrap();
    fs::write(src.join("big"), random_bytes(56 << 20, 5)).unwrap();
    for i in 0..40 {
        fs::write(
            src.join("small").join(format!("f{i}")),
            random_bytes(5000 + i * 100, i as u64),
        )
        .unwrap();
    }
    env.backup([&src]);
    let target = env.path("t");
    let out = env.ok([
        "--json",
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
    ]);
    let r = summary_line(&out)["requests"].clone();
    // 56 MiB of data fill four 16 MiB packs: one ranged read each, at most.
    let ranged = r["read_range"].as_u64().unwrap();
    assert!((1..=4).contains(&ranged), "{ranged} ranged reads: {r}");
    assert!(
        r["peak_in_flight"].as_u64().unwrap() >= 2,
        "one request at a time: {r}"
    );
    let restored = target.join(src.strip_prefix("/").unwrap());
    assert_same_tree_but_atime(&src, &restored);

    // Again into the same target: every file is equal and kept, nothing is fetched.
    let out = env.ok([
        "--json",
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
    ]);
    let r = summary_line(&out)["requests"].clone();
    assert_eq!(
        r["read_range"], 0,
        "a restore that keeps every file read packs: {r}"
    );
    assert_same_tree_but_atime(&src, &restored);
}
