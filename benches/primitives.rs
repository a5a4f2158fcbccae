//! Throughput of the per-byte stages of the backup pipeline, one core each:
//! chunking, keyed hashing, compress+seal, open+decompress+verify, the random-data
//! test, a local pack write, pack parsing and index lookups; and the key derivation
//! every command pays once. Run with `cargo bench --bench primitives`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use cairn::chunker::ChunkerParams;
use cairn::crypto::{KdfParams, MasterKey};
use cairn::id::Id;
use cairn::repo::index::{Index, IndexFile, IndexedPack};
use cairn::repo::pack::{open_blob, parse_pack, seal_blob, BlobType, PackEntry, PackWriter};

fn random(len: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

fn text(len: usize) -> Vec<u8> {
    b"the quick brown fox jumps over the lazy dog 0123456789\n"
        .iter()
        .cycle()
        .take(len)
        .copied()
        .collect()
}

fn stages(c: &mut Criterion) {
    let key = MasterKey::generate();
    let data = random(32 << 20);
    let mut g = c.benchmark_group("stages");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("chunk 32MiB", |b| {
        b.iter(|| {
            ChunkerParams::default()
                .chunks(&data[..], key.chunker_seed)
                .count()
        })
    });
    g.bench_function("keyed blake3 32MiB", |b| {
        b.iter(|| key.id_key.blob_id(black_box(&data)))
    });
    let chunk = random(1 << 20);
    let txt = text(1 << 20);
    g.throughput(Throughput::Bytes(chunk.len() as u64));
    for (name, input) in [("random", &chunk), ("text", &txt)] {
        g.bench_with_input(BenchmarkId::new("seal 1MiB zstd3", name), input, |b, d| {
            b.iter(|| seal_blob(&key.sealing, 3, d))
        });
        let (sealed, ul) = seal_blob(&key.sealing, 3, input);
        let entry = PackEntry {
            ty: BlobType::Data,
            id: key.id_key.blob_id(input),
            offset: 0,
            length: sealed.len() as u32,
            uncompressed_length: ul,
        };
        g.bench_with_input(BenchmarkId::new("open 1MiB", name), &sealed, |b, s| {
            b.iter(|| open_blob(&key.sealing, &key.id_key, &entry, s, "bench").unwrap())
        });
    }
    g.bench_function("looks_random 1MiB", |b| {
        b.iter(|| cairn::repo::pack::looks_random(black_box(&chunk)))
    });
    g.finish();

    // Writing a 16 MiB pack to the local disk (O_DIRECT, fsync) and deleting it.
    let dir = tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| ".".into()))
        .expect("a folder to write packs in");
    let local = cairn::backend::LocalBackend::new(dir.path().to_path_buf());
    use cairn::backend::{Backend, FileType};
    local.create().unwrap();
    let pack = random(16 << 20);
    let mut g = c.benchmark_group("local pack write");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(pack.len() as u64));
    g.bench_function("16MiB", |b| {
        b.iter(|| {
            local
                .write(FileType::Pack, &"ab".repeat(32), &pack)
                .unwrap();
            local.delete(FileType::Pack, &"ab".repeat(32)).unwrap();
        })
    });
    g.finish();
}

fn packs_and_index(c: &mut Criterion) {
    let key = MasterKey::generate();
    let mut w = PackWriter::default();
    for i in 0..1000u32 {
        let blob = i.to_le_bytes().repeat(256);
        let (sealed, ul) = seal_blob(&key.sealing, 0, &blob);
        w.add(BlobType::Data, key.id_key.blob_id(&blob), &sealed, ul);
    }
    let (_, pack, _) = w.finish(&key.sealing);
    c.bench_function("parse pack header (1000 blobs)", |b| {
        b.iter(|| parse_pack(&pack, &key.sealing, "bench").unwrap())
    });

    let mut g = c.benchmark_group("index");
    g.sample_size(10);
    for n in [1_000_000u32, 10_000_000] {
        let file = IndexFile {
            packs: (0..n / 1000)
                .map(|p| IndexedPack {
                    id: Id::of_file(&p.to_le_bytes()),
                    marked: None,
                    blobs: (0..1000)
                        .map(|i| PackEntry {
                            ty: BlobType::Data,
                            id: Id::of_file(&(p * 1000 + i).to_le_bytes()),
                            offset: i * 1000,
                            length: 1000,
                            uncompressed_length: 0,
                        })
                        .collect(),
                })
                .collect(),
        };
        let start = std::time::Instant::now();
        let idx = Index::from_files([&file]);
        drop(file);
        // Resident bytes per blob: the blob table, plus the pack table spread over it.
        let per_blob =
            Index::BYTES_PER_BLOB as f64 + (idx.packs().len() * (32 + 8 + 48)) as f64 / n as f64;
        eprintln!(
            "index of {n} blobs: built in {:.2?}, {per_blob:.1} resident bytes per blob",
            start.elapsed()
        );
        let probe: Vec<Id> = (0..1000u32)
            .map(|i| Id::of_file(&(i * 997).to_le_bytes()))
            .collect();
        g.throughput(Throughput::Elements(probe.len() as u64));
        g.bench_function(format!("lookup 1000 in {n}"), |b| {
            b.iter(|| probe.iter().filter(|id| idx.get(id).is_some()).count())
        });
    }
    g.finish();
}

/// Argon2id at the default cost, which every command that opens a key pays once.
fn key_derivation(c: &mut Criterion) {
    let mut g = c.benchmark_group("key derivation");
    g.sample_size(10);
    let p = KdfParams::default();
    g.bench_function("argon2id 48MiB x6", |b| {
        b.iter(|| p.derive(b"password", b"0123456789abcdef").unwrap())
    });
    g.finish();
}

criterion_group!(benches, stages, packs_and_index, key_derivation);
criterion_main!(benches);
