//! Entry points shared by the cargo-fuzz targets in `fuzz/` and the test that replays
//! their checked-in corpus on stable Rust: every decoder must return an error, never
//! panic, on any input.

use crate::chunker::ChunkerParams;
use crate::crypto::{aad, SealingKey};
use crate::repo::config::Config;
use crate::repo::index::IndexFile;
use crate::repo::key::KeyFile;
use crate::repo::pack::{decode_header, parse_pack};
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::Tree;

pub const TARGETS: &[&str] = &[
    "config",
    "key",
    "pack_header",
    "pack",
    "index",
    "tree",
    "snapshot",
    "sealed",
    "chunker",
];

/// The fixed key the `sealed` and `pack` targets use.
pub fn fuzz_key() -> SealingKey {
    SealingKey::new(&[0x42; 32])
}

/// Feeds `data` to one target's decoder. Panics only on an unknown target name.
pub fn run(target: &str, data: &[u8]) {
    match target {
        "config" => drop(Config::decode_plain(data)),
        "key" => {
            if let Ok(k) = KeyFile::decode(data, "fuzz") {
                // Cheap costs only: the decoder itself bounds absurd ones.
                if k.kdf_params.memory_kib <= 1024 && k.kdf_params.iterations <= 2 {
                    let _ = k.open(b"pw");
                }
            }
        }
        "pack_header" => drop(decode_header(data, u32::MAX as u64, "fuzz")),
        "pack" => drop(parse_pack(data, &fuzz_key(), "fuzz")),
        "index" => drop(IndexFile::decode_plain(data, "fuzz")),
        "tree" => drop(Tree::decode(data, "fuzz")),
        "snapshot" => drop(Snapshot::decode_plain(data, "fuzz")),
        // Decrypt-then-decode: seal the input as each kind, open it, decode it.
        "sealed" => {
            let k = fuzz_key();
            let (&kind, body) = match data.split_first() {
                Some(x) => x,
                None => return,
            };
            let sealed = k.seal(aad::INDEX, body);
            match kind % 3 {
                0 => drop(IndexFile::decode(&sealed, &k, "fuzz")),
                1 => drop(Snapshot::decode(&k.seal(aad::SNAPSHOT, body), &k, "fuzz")),
                _ => drop(Config::decode(&k.seal(aad::CONFIG, body), &k)),
            }
        }
        "chunker" => {
            let p = ChunkerParams {
                min_size: 64,
                avg_size: 256,
                max_size: 1024,
            };
            let mut total = 0;
            for c in p.chunks(data, 7) {
                let c = c.expect("chunking memory never fails");
                assert!(!c.is_empty() && c.len() <= 1024);
                total += c.len();
            }
            assert_eq!(total, data.len(), "chunks must cover the input");
        }
        other => panic!("unknown fuzz target {other}"),
    }
}
