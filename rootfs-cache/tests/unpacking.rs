//! A layer being unpacked, as a reader in the same process sees it (lazy start takes files from
//! there before the commit): each file once its tar entry is written, until the commit or the
//! failure.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::io::Read;
use std::path::Path;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use rootfs_cache::{Digest, Store, Unpacked, Unpacking};
use skiff_test_rig::image::Layer;
use skiff_test_rig::synth::noise;
use skiff_test_rig::{Compression, Entry};

/// Each regular file of a plain tar: its path, content, and where its content ends.
fn files(tar: &[u8]) -> Vec<(String, Vec<u8>, u64)> {
    let mut archive = tar::Archive::new(tar);
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let end = entry.raw_file_position() + entry.size();
        let mut content = Vec::new();
        entry.read_to_end(&mut content).unwrap();
        out.push((path, content, end));
    }
    out
}

fn read(unpacked: &Unpacked, path: &str) -> Vec<u8> {
    let fd = unpacked
        .root()
        .open_file(Path::new(path), libc::O_RDONLY)
        .unwrap();
    let mut content = Vec::new();
    std::fs::File::from(fd).read_to_end(&mut content).unwrap();
    content
}

/// Starts committing `layer` (as `diff_id`) into a store reporting to the returned
/// [`Unpacking`], its bytes given through the returned sender.
#[allow(clippy::type_complexity)]
fn start(
    layer: &Layer,
    diff_id: Digest,
) -> (
    Store,
    Arc<Unpacking>,
    mpsc::Sender<Vec<u8>>,
    std::thread::JoinHandle<Result<rootfs_cache::LayerOutcome, rootfs_cache::StoreError>>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let unpacking = Arc::new(Unpacking::default());
    let store = Store::open(dir.path())
        .unwrap()
        .reporting_unpacking_to(unpacking.clone());
    let (tx, source) = skiff_test_rig::gated::gated();
    let writer = std::thread::spawn({
        let (store, digest, media) = (
            store.clone(),
            layer.blob.digest,
            layer.blob.media_type.clone(),
        );
        move || store.commit_layer(&digest, &diff_id, &media, source)
    });
    (store, unpacking, tx, writer, dir)
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let begun = Instant::now();
    while !ready() {
        assert!(begun.elapsed() < Duration::from_secs(30), "{what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_layer_being_unpacked_shows_each_file_once_it_is_written_until_the_commit() {
    let entries: Vec<Entry> = (0..8)
        .map(|i| Entry::file(format!("usr/f{i}"), noise(i, 40_000 + 37_000 * i as usize)))
        .collect();
    // Uncompressed: the blob is the tar stream itself.
    let layer = common::layer(&entries, Compression::None);
    let tar = layer.blob.bytes.clone();
    let files = files(&tar);
    let (store, unpacking, tx, writer, _dir) = start(&layer, layer.diff_id);
    assert!(unpacking.layer(&layer.diff_id).is_none(), "not begun yet");

    // All but the stream's end, in pieces that end inside files: after each, every file whose
    // content ends where the reported mark is, or before, is there in full.
    let last = tar.len() - 1000;
    let check = |written: u64, unpacked: &Unpacked| {
        for (path, content, end) in &files {
            if *end <= written {
                assert!(read(unpacked, path) == *content, "{path} is not whole");
            }
        }
    };
    let mut sent = 0;
    while sent < last {
        let piece = (sent + 29_000).min(last);
        tx.send(tar[sent..piece].to_vec()).unwrap();
        sent = piece;
        if let Some(unpacked) = unpacking.layer(&layer.diff_id) {
            let written = unpacked.written();
            assert!(written <= sent as u64, "reported beyond what was sent");
            check(written, &unpacked);
        }
    }
    // The stream is several times what the decoder hands on at once: its first files reach
    // the writer before the end.
    wait_for("the unpacking to report its first file", || {
        unpacking
            .layer(&layer.diff_id)
            .is_some_and(|l| l.written() >= files[0].2)
    });
    let Some(unpacked) = unpacking.layer(&layer.diff_id) else {
        panic!("committed before the stream ended");
    };
    check(unpacked.written(), &unpacked);
    assert!(!store.has_layer(&layer.diff_id));
    tx.send(tar[last..].to_vec()).unwrap();
    drop(tx);
    writer.join().unwrap().unwrap();
    assert!(store.has_layer(&layer.diff_id));
    assert!(
        unpacking.layer(&layer.diff_id).is_none(),
        "still shown once committed"
    );
    // A reader that held on to it still reads it: the directory it opened is the layer's now.
    for (path, content, _) in &files {
        assert!(read(&unpacked, path) == *content, "{path}");
    }
}

#[test]
fn a_layer_that_fails_is_no_longer_shown_as_unpacking_and_leaves_nothing() {
    let entries = [Entry::file("usr/a", noise(7, 100_000))];
    // Uncompressed: the blob is the tar stream itself.
    let layer = common::layer(&entries, Compression::None);
    let tar = layer.blob.bytes.clone();
    // Another diff_id than the stream's: the whole layer unpacks, then fails its check.
    let (store, unpacking, tx, writer, dir) = start(&layer, Digest::of(b"another layer"));
    tx.send(tar[..60_000].to_vec()).unwrap();
    wait_for("the unpacking to begin", || {
        unpacking.layer(&Digest::of(b"another layer")).is_some()
    });
    tx.send(tar[60_000..].to_vec()).unwrap();
    drop(tx);
    assert!(writer.join().unwrap().is_err());
    assert!(unpacking.layer(&Digest::of(b"another layer")).is_none());
    assert!(!store.has_layer(&Digest::of(b"another layer")));
    assert!(common::is_empty_dir(&dir.path().join("tmp")));
}
