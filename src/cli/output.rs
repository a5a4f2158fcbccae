//! Small formatting helpers shared by the commands.

use cairn::repo::tree::{Node, NodeKind};

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.3} {}", UNITS[u])
    }
}

/// Prints one JSON document. A summary object (not a status line) carries the storage
/// requests made so far, by kind, and the bytes moved: what a cloud bill shows.
pub fn print_json<T: serde::Serialize>(v: &T) {
    let mut value = serde_json::to_value(v).expect("serializable");
    if let Some(obj) = value.as_object_mut() {
        if obj.get("message_type").and_then(|m| m.as_str()) != Some("status") {
            obj.insert(
                "requests".into(),
                serde_json::to_value(super::requests_so_far()).expect("serializable"),
            );
        }
    }
    println!("{}", serde_json::to_string(&value).expect("serializable"));
}

/// Prints a JSON value as it is (a repository object for `cat`).
pub fn print_raw_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string(v).expect("serializable"));
}

/// `drwxr-xr-x`-style permissions.
pub fn mode_string(node: &Node) -> String {
    let t = match node.kind {
        NodeKind::Dir => 'd',
        NodeKind::Symlink => 'l',
        NodeKind::Fifo => 'p',
        NodeKind::CharDevice => 'c',
        NodeKind::BlockDevice => 'b',
        NodeKind::Socket => 's',
        NodeKind::File => '-',
    };
    let m = node.mode;
    let mut s = String::from(t);
    for (shift, special, ch) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
        let bits = (m >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        let x = bits & 1 != 0;
        s.push(match (m & special != 0, x) {
            (true, true) => ch,
            (true, false) => ch.to_ascii_uppercase(),
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

pub fn time(t: &cairn::repo::tree::Timestamp) -> chrono::DateTime<chrono::Local> {
    chrono::DateTime::from_timestamp(t.secs, t.nanos)
        .unwrap_or_default()
        .with_timezone(&chrono::Local)
}
