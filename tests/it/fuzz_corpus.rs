//! Replays the fuzzers' checked-in corpus (fuzz/corpus/<target>/) through the same entry
//! points, on stable Rust, so every input a fuzzer found interesting stays covered.

use std::path::PathBuf;

use cairn::crypto::{KdfParams, MasterKey};
use cairn::fuzz_targets::{fuzz_key, run, TARGETS};
use cairn::id::Id;
use cairn::repo::config::Config;
use cairn::repo::index::{IndexFile, IndexedPack};
use cairn::repo::key::KeyFile;
use cairn::repo::pack::{encode_header, seal_blob, BlobType, PackEntry, PackWriter};
use cairn::repo::tree::{Node, NodeKind, Tree};

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

#[test]
fn replay_checked_in_corpus() {
    for t in TARGETS {
        let dir = corpus_dir(t);
        let files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        assert!(!files.is_empty(), "no corpus for fuzz target {t}");
        for f in files {
            run(t, &std::fs::read(&f).unwrap());
        }
    }
}

fn entry(n: u8) -> PackEntry {
    PackEntry {
        ty: BlobType::Data,
        id: Id([n; 32]),
        offset: n as u32 * 10,
        length: 10,
        uncompressed_length: 0,
    }
}

/// Writes valid samples of every format as the fuzzers' starting corpus.
/// `cargo test --test it write_seed_corpus -- --ignored` (then commit fuzz/corpus).
#[test]
#[ignore]
fn write_seed_corpus() {
    let mut tree_node = Node::new(b"file".to_vec(), NodeKind::File);
    tree_node.content = vec![Id([1; 32])];
    let mut dir_node = Node::new(b"dir".to_vec(), NodeKind::Dir);
    dir_node.subtree = Some(Id([2; 32]));
    let tree = Tree {
        nodes: vec![tree_node, dir_node],
    }
    .encode();
    let index_plain = {
        // IndexFile::encode seals; rebuild the plaintext the same way for the fuzzer.
        let f = IndexFile {
            packs: vec![IndexedPack {
                id: Id([3; 32]),
                marked: Some(1_800_000_000),
                blobs: vec![entry(1), entry(2)],
            }],
        };
        let k = fuzz_key();
        let sealed = f.encode(&k);
        k.open(cairn::crypto::aad::INDEX, &sealed).unwrap()
    };
    let snapshot_plain = br#"{"version":1,"time":"2026-11-20T14:00:05.5+01:00","tree":"0303030303030303030303030303030303030303030303030303030303030303","paths":["/etc"],"hostname":"h","username":"u","uid":0,"gid":0,"tags":["a"],"parent":null,"program_version":"cairn","summary":null}"#.to_vec();
    let config_plain = serde_json::to_vec(&Config::new(3)).unwrap();
    let key = KeyFile::create(
        &MasterKey::generate(),
        b"pw",
        KdfParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        },
    )
    .unwrap()
    .encode();
    let pack = {
        let k = fuzz_key();
        let mut w = PackWriter::default();
        for b in [&b"first blob"[..], &[7u8; 300][..]] {
            let (sealed, ul) = seal_blob(&k, 3, b);
            w.add(BlobType::Data, Id::of_file(b), &sealed, ul);
        }
        w.finish(&k).1
    };
    let seeds: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("config", vec![config_plain.clone()]),
        ("key", vec![key]),
        ("pack_header", vec![encode_header(&[entry(0), entry(1)])]),
        ("pack", vec![pack]),
        ("index", vec![index_plain.clone()]),
        ("tree", vec![tree]),
        ("snapshot", vec![snapshot_plain.clone()]),
        (
            "sealed",
            vec![
                [&[0u8][..], &index_plain].concat(),
                [&[1u8][..], &snapshot_plain].concat(),
                [&[2u8][..], &config_plain].concat(),
            ],
        ),
        (
            "chunker",
            vec![
                (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect(),
                vec![0; 3000],
            ],
        ),
    ];
    for (t, samples) in seeds {
        let dir = corpus_dir(t);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, s) in samples.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), s).unwrap();
        }
    }
}
