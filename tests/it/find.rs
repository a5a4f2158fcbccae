//! `find` across snapshots and `versions` of one path.

use std::collections::BTreeSet;
use std::fs;

use crate::common::*;

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap()
}

#[test]
fn find_reports_every_match_per_snapshot_and_reads_shared_directories_once() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    for d in ["a/b", "c"] {
        fs::create_dir_all(src.join(d)).unwrap();
    }
    fs::write(src.join("a/x.conf"), b"x").unwrap();
    fs::write(src.join("a/b/y.conf"), b"yy").unwrap();
    fs::write(src.join("c/z.txt"), b"z").unwrap();
    for i in 0..60 {
        let d = src.join(format!("same/d{i}"));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("file.txt"), format!("{i}")).unwrap();
    }
    let s1 = env.backup([&src]);
    fs::write(src.join("a/new.conf"), b"new").unwrap();
    fs::remove_file(src.join("c/z.txt")).unwrap();
    let s2 = env.backup([&src]);
    let s3 = env.backup([&src]);

    let out = env.ok(["--json", "find", "*.conf"]);
    let found: Vec<(String, BTreeSet<String>)> = json(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let paths = s["matches"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["path"].as_str().unwrap().to_string())
                .collect();
            (s["snapshot"].as_str().unwrap().to_string(), paths)
        })
        .collect();
    let p = |rel: &str| format!("{}/{rel}", src.display());
    let old: BTreeSet<String> = [p("a/x.conf"), p("a/b/y.conf")].into();
    let mut new = old.clone();
    new.insert(p("a/new.conf"));
    assert_eq!(
        found,
        vec![(s1.clone(), old), (s2, new.clone()), (s3.clone(), new)]
    );

    // Sizes and kinds come with each match.
    let first = &json(&out)[0]["matches"][0];
    assert_eq!(first["type"], "file");
    assert!(first["size"].as_u64().unwrap() >= 1);

    // A directory pattern, one snapshot, and nothing found (exit 0).
    let out = env.ok(["--json", "find", "--snapshot", &s1[..8], "z.txt"]);
    assert_eq!(json(&out)[0]["hits"], 1);
    let out = env.ok(["--json", "find", "--snapshot", &s3[..8], "z.txt"]);
    assert_eq!(json(&out), serde_json::json!([]));

    // Three snapshots of ~70 directories: the unchanged ones are read once.
    let text = env.ok(["find", "*.txt"]);
    let read: u64 = text
        .lines()
        .last()
        .unwrap()
        .split('(')
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let depth = src.components().count() as u64;
    assert!(
        read <= 64 + depth + 2 * (depth + 3),
        "{read} directories read for three snapshots:\n{text}"
    );
    assert!(text.contains(&p("same/d59/file.txt")), "{text}");
}

#[test]
fn versions_lists_each_distinct_content_once_with_its_first_and_last_snapshot() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let f = src.join("f");
    let good = random_bytes(70_000, 1);
    fs::write(&f, &good).unwrap();
    let s1 = env.backup([&src]);
    let _s2 = env.backup([&src]);
    fs::write(&f, random_bytes(70_000, 2)).unwrap();
    let s3 = env.backup([&src]);
    fs::remove_file(&f).unwrap();
    env.backup([&src]);
    fs::write(&f, &good).unwrap();
    let s5 = env.backup([&src]);

    let out = env.ok(["--json", "versions", f.to_str().unwrap()]);
    let list = json(&out);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{out}");
    assert_eq!(list[0]["first_snapshot"], s1.as_str());
    assert_eq!(list[0]["last_snapshot"], s5.as_str());
    assert_eq!(list[0]["snapshots"], 3);
    assert_eq!(list[0]["size"], 70_000);
    assert_eq!(list[0]["type"], "file");
    assert_eq!(list[1]["first_snapshot"], s3.as_str());
    assert_eq!(list[1]["last_snapshot"], s3.as_str());
    assert_ne!(list[0]["content"], list[1]["content"]);

    // The version named restores the good bytes.
    let target = env.path("t");
    env.restore(
        &format!(
            "{}:{}",
            list[0]["last_snapshot"].as_str().unwrap(),
            f.display()
        ),
        &target,
        &[],
    );
    assert!(fs::read(target.join("f")).unwrap() == good);

    // Relative to the current directory, `.` and `..` resolved by name.
    let out = env
        .cmd()
        .current_dir(src.join("."))
        .args(["--json", "versions", "../src/./f"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let rel: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rel.as_array().unwrap().len(), 2, "{rel}");

    // A directory has versions too (its tree id); a path in no snapshot is an error.
    let out = env.ok(["--json", "versions", src.to_str().unwrap()]);
    assert!(json(&out).as_array().unwrap().len() >= 3, "{out}");
    let out = env.run(["versions", "/no/such/path"]);
    assert_eq!(code(&out), 1);
    assert_eq!(stderr(&out).trim().lines().count(), 1, "{}", stderr(&out));
    let text = env.ok(["versions", f.to_str().unwrap()]);
    assert!(
        text.contains(&s5[..8]) && text.contains("2 versions"),
        "{text}"
    );
}
