//! Extraction throughput of rootfs-cache: one synthetic layer (30,000 small files and four
//! 16 MiB files, gzip), and two such layers committed at once from two streams.
//!
//! The store goes under $SKIFF_BENCH_DIR (default target/bench-store); put it on a journaled
//! ext4 to compare with other tools (benches/compare-extract.sh makes one).

use std::io::Cursor;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rootfs_cache::Store;
use skiff_test_rig::image::Layer;
use skiff_test_rig::synth::{LayerShape, entries};
use skiff_test_rig::{Compression, Format};

fn bench_dir() -> PathBuf {
    std::env::var_os("SKIFF_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-store"))
}

fn make_layer(seed: u64) -> (Layer, u64) {
    let shape = LayerShape {
        seed,
        ..LayerShape::default()
    };
    let tar = skiff_test_rig::entry::tar(&entries(shape)).expect("synthetic tar");
    let layer = Layer::from_tar(&tar, Compression::Gzip, Format::Oci).expect("layer");
    (layer, tar.len() as u64)
}

/// Commits `layers` into a fresh store, all at once, and returns the time it took.
fn commit_all(layers: &[Layer]) -> Duration {
    let root = bench_dir().join("store");
    let _ = std::fs::remove_dir_all(&root);
    let store = Store::open(&root).expect("store");
    let start = Instant::now();
    std::thread::scope(|s| {
        for layer in layers {
            let store = &store;
            s.spawn(move || {
                store
                    .commit_layer(
                        &layer.blob.digest,
                        &layer.diff_id,
                        &layer.blob.media_type,
                        Cursor::new(layer.blob.bytes.clone()),
                    )
                    .expect("commit");
            });
        }
    });
    let elapsed = start.elapsed();
    let _ = std::fs::remove_dir_all(&root);
    elapsed
}

fn extract(c: &mut Criterion) {
    let (l1, tar1) = make_layer(1);
    let (l2, tar2) = make_layer(2);
    let files = LayerShape::default().small_files as u64 + 4;

    let mut group = c.benchmark_group("extract");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(30));
    group.throughput(Throughput::Bytes(tar1));
    group.bench_function("one_layer_bytes", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| commit_all(std::slice::from_ref(&l1)))
                .sum()
        })
    });
    group.throughput(Throughput::Elements(files));
    group.bench_function("one_layer_files", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| commit_all(std::slice::from_ref(&l1)))
                .sum()
        })
    });
    group.throughput(Throughput::Bytes(tar1 + tar2));
    let both = [l1, l2];
    group.bench_function("two_layers_parallel_bytes", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| commit_all(&both)).sum())
    });
    group.finish();
}

criterion_group!(benches, extract);
criterion_main!(benches);
