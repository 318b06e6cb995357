//! A layer that does not fit on the store's filesystem: the error keeps its cause (no space
//! left on device) and names the store; nothing half-written stays visible; gc leaves the
//! space as it was. Runs on a small ext4 loop filesystem, so it needs root.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use common::{commit, is_empty_dir, layer, try_commit};
use rootfs_cache::{GcOptions, Store};
use skiff_test_rig::{Compression, Entry, LoopFs, synth};

/// The error and all its sources, as a user would read them.
fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str("\n  caused by: ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

#[test]
fn a_layer_bigger_than_the_disk_fails_with_its_cause_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fs = LoopFs::new(dir.path(), "24M");
    let root = fs.mnt.join("store");
    let store = Store::open(&root).unwrap();
    let free_before = fs.free();

    // Five 8 MiB files of noise: 40 MiB that no compression shrinks, on a 24 MiB filesystem.
    let mut entries = vec![Entry::dir("data/")];
    for i in 0..5 {
        entries.push(Entry::file(
            format!("data/big{i}"),
            synth::noise(i, 8 << 20),
        ));
    }
    let layer = layer(&entries, Compression::Gzip);
    assert!(layer.blob.bytes.len() as u64 > free_before);

    let err = try_commit(&store, &layer).unwrap_err();
    let message = chain(&err);
    assert!(
        message.to_lowercase().contains("no space left on device"),
        "the cause is lost: {message}"
    );
    assert!(
        message.contains(&root.display().to_string()),
        "the store path is missing: {message}"
    );
    assert!(message.contains("nothing was committed"), "{message}");

    // Nothing half-written is visible.
    assert!(!store.has_layer(&layer.diff_id));
    assert!(store.layers().unwrap().is_empty());
    assert!(store.images().unwrap().is_empty());
    let report = store.verify().unwrap();
    assert!(report.corrupt.is_empty(), "{report:?}");

    // gc takes whatever staging is left, and the space is back.
    let gc = store.gc(&GcOptions::default()).unwrap();
    assert!(gc.removed_layers.is_empty(), "{gc:?}");
    assert!(is_empty_dir(&root.join("tmp")), "{gc:?}");
    assert!(is_empty_dir(&root.join("layers/sha256")));
    assert!(store.verify().unwrap().is_clean());
    let free_after = fs.free();
    assert!(
        free_after + (1 << 20) >= free_before,
        "free space before {free_before}, after gc {free_after}"
    );

    // And the store still works once there is room: a small layer commits.
    let small = common::layer(&[Entry::file("ok", "fits")], Compression::Gzip);
    commit(&store, &small);
    assert!(store.has_layer(&small.diff_id));
}
