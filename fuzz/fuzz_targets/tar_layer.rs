#![no_main]
//! Fuzzes the layer extractor: the input is a tar (the first byte picks plain, gzip or zstd,
//! compressed here so the digests match and extraction runs to the end) committed into a
//! fresh store. Nothing may appear outside the store, and the store must verify clean
//! whether the layer was committed or refused.

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use rootfs_cache::{Digest, Store};

const TYPES: [&str; 3] = [
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
];

fn compress(kind: usize, tar: &[u8]) -> Vec<u8> {
    match kind {
        1 => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar).expect("gzip in memory");
            e.finish().expect("gzip in memory")
        }
        2 => zstd::encode_all(tar, 1).expect("zstd in memory"),
        _ => tar.to_vec(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, tar)) = data.split_first() else {
        return;
    };
    let kind = usize::from(kind) % TYPES.len();
    let blob = compress(kind, tar);
    let parent = tempfile::tempdir().expect("tempdir");
    let root = parent.path().join("store");
    let store = Store::open(&root).expect("store opens");
    let diff_id = Digest::of(tar);
    let _ = store.commit_layer(
        &Digest::of(&blob),
        &diff_id,
        TYPES[kind],
        std::io::Cursor::new(blob),
    );
    let outside: Vec<_> = std::fs::read_dir(parent.path())
        .expect("read parent")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(outside, ["store"], "the layer wrote outside the store");
    let report = store.verify().expect("verify runs");
    assert!(report.corrupt.is_empty(), "corrupt store: {report:?}");
});
