//! The store end to end: layers streamed in, verified, committed; records; refs.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use common::{commit, is_empty_dir, layer};
use rootfs_cache::{Digest, ImageLayer, ImageRecord, LayerOutcome, RefRecord, Store, StoreError};
use skiff_test_rig::{Compression, Entry, busybox, is_root, rootless_test};

#[test]
fn busybox_layer_commits_once_in_every_compression() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let entries = busybox::entries().unwrap();
    for compression in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let layer = layer(&entries, compression);
        let outcome = commit(&store, &layer);
        let first_time = compression == Compression::Gzip;
        assert_eq!(
            matches!(outcome, LayerOutcome::Committed(_)),
            first_time,
            "{compression:?}"
        );
        assert_eq!(outcome.record().diff_id, layer.diff_id);
    }
    let fs = store.layer_dir(&busybox_diff_id());
    let sh = std::fs::read_link(fs.join("bin/sh")).unwrap();
    assert_eq!(sh, Path::new("/bin/busybox"));
    let bin = std::fs::metadata(fs.join("bin/busybox")).unwrap();
    assert_eq!(bin.permissions().mode() & 0o7777, 0o755);
    assert_eq!(
        std::fs::metadata(fs.join("tmp"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o1777
    );
    assert!(store.has_layer(&layer(&entries, Compression::None).diff_id));
    assert!(is_empty_dir(&dir.path().join("tmp")));
}

fn busybox_diff_id() -> Digest {
    layer(&busybox::entries().unwrap(), Compression::None).diff_id
}

#[test]
fn whiteouts_become_overlay_whiteouts_and_opaque_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let l = layer(
        &[
            Entry::dir("etc/"),
            Entry::whiteout("etc/motd"),
            Entry::dir("var/cache/"),
            Entry::opaque("var/cache"),
            Entry::file("var/cache/kept", "x"),
        ],
        Compression::Gzip,
    );
    commit(&store, &l);
    let fs = store.layer_dir(&l.diff_id);
    let wh = std::fs::symlink_metadata(fs.join("etc/motd")).unwrap();
    assert!(wh.file_type().is_char_device());
    assert_eq!(wh.rdev(), 0);
    assert!(!fs.join("etc/.wh.motd").exists());
    assert!(!fs.join("var/cache/.wh..wh..opq").exists());
    let xattr = if is_root() {
        "trusted.overlay.opaque"
    } else {
        "user.overlay.opaque"
    };
    let value = xattr_get(&fs.join("var/cache"), xattr);
    assert_eq!(value.as_deref(), Some(&b"y"[..]));
    assert_eq!(std::fs::read(fs.join("var/cache/kept")).unwrap(), b"x");
}

fn xattr_get(path: &Path, name: &str) -> Option<Vec<u8>> {
    rootfs_cache::read_xattr(path, name).unwrap()
}

#[test]
fn digest_mismatch_names_the_layer_and_both_digests_and_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let good = layer(&[Entry::file("a", "payload")], Compression::Gzip);
    let other = layer(&[Entry::file("a", "tampered")], Compression::Gzip);

    // Tampered blob: the bytes of another layer under this layer's digests.
    let err = store
        .commit_layer(
            &good.blob.digest,
            &good.diff_id,
            &good.blob.media_type,
            std::io::Cursor::new(other.blob.bytes.clone()),
        )
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            StoreError::DigestMismatch {
                what: "compressed",
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains(&good.blob.digest.to_string()) && msg.contains(&other.blob.digest.to_string()),
        "{msg}"
    );

    // Right blob, wrong diff_id in the config.
    let err = store
        .commit_layer(
            &good.blob.digest,
            &other.diff_id,
            &good.blob.media_type,
            std::io::Cursor::new(good.blob.bytes.clone()),
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::DigestMismatch {
                what: "uncompressed (diff_id)",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains(&good.diff_id.to_string()));

    assert!(store.layers().unwrap().is_empty());
    assert!(is_empty_dir(&dir.path().join("tmp")));
    assert!(is_empty_dir(&dir.path().join("layers/sha256")));
}

#[test]
fn media_type_must_match_magic_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let gz = layer(&[Entry::file("a", "x")], Compression::Gzip);
    let zst = "application/vnd.oci.image.layer.v1.tar+zstd";
    let err = store
        .commit_layer(
            &gz.blob.digest,
            &gz.diff_id,
            zst,
            std::io::Cursor::new(gz.blob.bytes.clone()),
        )
        .unwrap_err();
    assert!(err.to_string().contains("starts like gzip"), "{err}");
    let err = store
        .commit_layer(
            &gz.blob.digest,
            &gz.diff_id,
            "application/vnd.oci.image.config.v1+json",
            std::io::Cursor::new(Vec::new()),
        )
        .unwrap_err();
    assert!(
        matches!(err, StoreError::UnsupportedMediaType { .. }),
        "{err}"
    );
    assert!(store.layers().unwrap().is_empty());
}

#[test]
fn truncated_stream_is_an_error_and_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let big: Vec<u8> = (0..2_000_000u64).map(|i| (i * 7919 % 251) as u8).collect();
    let l = layer(&[Entry::file("big", big)], Compression::Gzip);
    let half = l.blob.bytes[..l.blob.bytes.len() / 2].to_vec();
    let err = store
        .commit_layer(
            &l.blob.digest,
            &l.diff_id,
            &l.blob.media_type,
            std::io::Cursor::new(half),
        )
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Stream { .. } | StoreError::Extract { .. }),
        "{err}"
    );
    assert!(store.layers().unwrap().is_empty());
    assert!(is_empty_dir(&dir.path().join("tmp")));
}

#[test]
fn blobs_images_and_refs_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let config = br#"{"architecture":"amd64"}"#;
    let config_digest = Digest::of(config);
    store.put_blob(&config_digest, config).unwrap();
    assert_eq!(store.blob(&config_digest).unwrap().unwrap(), config);
    let err = store.put_blob(&Digest::of(b"other"), config).unwrap_err();
    assert!(matches!(err, StoreError::BlobMismatch { .. }));

    let l = layer(&[Entry::file("a", "x")], Compression::Gzip);
    let record = ImageRecord {
        manifest: Digest::of(b"manifest"),
        config: config_digest,
        layers: vec![ImageLayer {
            digest: l.blob.digest,
            diff_id: l.diff_id,
            size: l.blob.bytes.len() as u64,
            media_type: l.blob.media_type.clone(),
        }],
        created_at: 1,
        last_used: 1,
    };
    store.put_image(&record).unwrap();
    assert_eq!(store.image(&record.manifest).unwrap().unwrap(), record);
    store.touch_image(&record.manifest).unwrap();
    assert!(store.image(&record.manifest).unwrap().unwrap().last_used > 1);
    assert_eq!(store.images().unwrap().len(), 1);

    let r = RefRecord {
        manifest: record.manifest,
        index: None,
        resolved_at: 5,
    };
    store
        .set_ref("127.0.0.1:5000", "demo/busybox", "latest", &r)
        .unwrap();
    assert_eq!(
        store
            .get_ref("127.0.0.1:5000", "demo/busybox", "latest")
            .unwrap()
            .unwrap(),
        r
    );
    let all = store.refs().unwrap();
    assert_eq!(
        all,
        vec![(
            "127.0.0.1:5000/demo/busybox".to_owned(),
            "latest".to_owned(),
            r
        )]
    );
    for (registry, repo, tag) in [
        ("..", "a", "b"),
        ("r", "a/../b", "t"),
        ("r", "a", "x/y"),
        ("r", "a", ""),
    ] {
        assert!(matches!(
            store.set_ref(registry, repo, tag, &all[0].2),
            Err(StoreError::InvalidName { .. })
        ));
    }
    assert!(
        store
            .remove_ref("127.0.0.1:5000", "demo/busybox", "latest")
            .unwrap()
    );
    assert!(store.remove_image(&record.manifest).unwrap());
    assert!(store.images().unwrap().is_empty());
}

fn rootless_layer() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let l = layer(
        &[
            Entry::dir("home/user/").owner(1000, 1000).mode(0o750),
            Entry::file("home/user/f", "x")
                .owner(1000, 1001)
                .mode(0o4755),
            Entry::file("root-owned", "x"),
            Entry::char_device("dev/null", 1, 3),
            Entry::dir("d/"),
            Entry::opaque("d"),
        ],
        Compression::Gzip,
    );
    let record = commit(&store, &l).record().clone();
    let fs = store.layer_dir(&l.diff_id);
    let me = nix::unistd::geteuid().as_raw();
    let f = std::fs::metadata(fs.join("home/user/f")).unwrap();
    assert_eq!(f.uid(), me);
    assert_eq!(f.permissions().mode() & 0o7777, 0o4755);
    // protobuf Resource{uid: 1000, gid: 1001}
    assert_eq!(
        xattr_get(&fs.join("home/user/f"), "user.rootlesscontainers").unwrap(),
        [0x08, 0xe8, 0x07, 0x10, 0xe9, 0x07]
    );
    assert_eq!(
        xattr_get(&fs.join("root-owned"), "user.rootlesscontainers"),
        None
    );
    assert_eq!(
        std::fs::metadata(fs.join("home/user"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o750
    );
    assert!(!fs.join("dev/null").exists());
    assert!(
        record.stats.skipped.iter().any(|s| s.contains("dev/null")),
        "{:?}",
        record.stats.skipped
    );
    assert_eq!(
        xattr_get(&fs.join("d"), "user.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
}
rootless_test!(
    rootless_layer_keeps_owners_in_an_xattr_and_skips_devices,
    rootless_layer
);
