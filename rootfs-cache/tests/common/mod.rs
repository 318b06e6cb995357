//! Shared by rootfs-cache's integration tests: layers built from entries and committed into a
//! store, and looks into the store's directories. The rest (registry, root check, child
//! processes, rootless bodies, loop filesystems) is the rig's: `skiff_test_rig`.

#![allow(dead_code)] // each test crate uses a different part of it

use std::path::Path;

use rootfs_cache::{LayerOutcome, Store, StoreError};
use skiff_test_rig::image::Layer;
use skiff_test_rig::{Compression, Entry, Format};

/// The OCI layer of `entries`, compressed with `compression`.
#[track_caller]
pub fn layer(entries: &[Entry], compression: Compression) -> Layer {
    let tar = skiff_test_rig::entry::tar(entries).expect("a tar of the entries");
    Layer::from_tar(&tar, compression, Format::Oci).expect("a layer of the tar")
}

/// Commits `layer` (its blob, under its own digests and media type) into `store`.
pub fn try_commit(store: &Store, layer: &Layer) -> Result<LayerOutcome, StoreError> {
    store.commit_layer(
        &layer.blob.digest,
        &layer.diff_id,
        &layer.blob.media_type,
        std::io::Cursor::new(layer.blob.bytes.clone()),
    )
}

/// [`try_commit`], which must succeed.
#[track_caller]
pub fn commit(store: &Store, layer: &Layer) -> LayerOutcome {
    try_commit(store, layer).unwrap_or_else(|e| panic!("committing {}: {e}", layer.diff_id))
}

/// The names in directory `path`, sorted.
#[track_caller]
pub fn dir_names(path: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .map(|e| {
            e.unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// Whether directory `path` is empty.
#[track_caller]
pub fn is_empty_dir(path: &Path) -> bool {
    dir_names(path).is_empty()
}
