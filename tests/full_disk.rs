//! `skiff pull` onto a full disk: the user reads the cause (no space left on device) and where
//! (the store), the store stays consistent, and `skiff gc` gives the space back. The store is on
//! a small ext4 loop filesystem, so this needs root.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use common::Env;
use skiff_test_rig::synth::noise;
use skiff_test_rig::{Compression, Entry, Format, ImageBuilder, LoopFs, Registry, require_root};

#[test]
fn pull_onto_a_full_disk_says_why_and_leaves_the_store_consistent() {
    require_root();
    let registry = Registry::start().unwrap();
    let client = registry.client().unwrap();
    // Five 8 MiB files of noise: 40 MiB that gzip does not shrink, on a 24 MiB filesystem.
    let mut entries = vec![Entry::dir("data/")];
    for i in 0..5 {
        entries.push(Entry::file(format!("data/big{i}"), noise(i, 8 << 20)));
    }
    let image = ImageBuilder::new(Format::Oci)
        .layer(&entries, Compression::Gzip)
        .unwrap()
        .cmd(&["sh"])
        .build()
        .unwrap();
    client.push_image("big/noise", "1", &image).unwrap();
    let name = format!("{}/big/noise:1", registry.host());

    let env = Env::new();
    let disk = LoopFs::new(env.dir.path(), "24M");
    let root = disk.mnt.join("store");
    let root_s = root.to_str().unwrap();
    // The store exists before the pull, so what gc gives back is compared with an empty store.
    env.ok(&["--root", root_s, "images", "-q"]);
    let free_before = disk.free();
    assert!(
        free_before < 40 << 20,
        "the filesystem is too big: {free_before}"
    );

    let stderr = env.fails(&["--root", root_s, "pull", &name]);
    assert!(
        stderr.to_lowercase().contains("no space left on device"),
        "the cause is missing: {stderr}"
    );
    assert!(
        stderr.contains(root_s),
        "the store path is missing: {stderr}"
    );

    // No image record, nothing corrupt.
    let images = env.ok(&["--root", root_s, "images", "-q"]);
    assert_eq!(images.trim(), "", "{images}");
    env.ok(&["--root", root_s, "verify"]);

    // gc removes what the failed pull left (staging, blobs) and the space is back.
    env.ok(&["--root", root_s, "gc"]);
    assert!(
        std::fs::read_dir(root.join("tmp"))
            .unwrap()
            .next()
            .is_none(),
        "tmp/ is not empty after gc"
    );
    let verify = env.ok(&["--root", root_s, "verify"]);
    assert!(verify.contains("store is consistent"), "{verify}");
    let free_after = disk.free();
    assert!(
        free_after + (1 << 20) >= free_before,
        "free space before the pull {free_before}, after gc {free_after}"
    );
}
