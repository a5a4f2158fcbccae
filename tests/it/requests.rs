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
        let out = env.run(["-v", "backup", src.to_str().unwrap()]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let (total, ranged) = requests(&stderr(&out));
        assert_eq!(ranged, 0, "a no-change backup read packs: {}", stderr(&out));
        assert!(total <= 30, "{total} requests: {}", stderr(&out));
        totals.push(total);
    }
    assert_eq!(totals[0], totals[1], "request count grew with the source");
}
