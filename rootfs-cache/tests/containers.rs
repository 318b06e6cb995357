//! Persistent container directories (`containers/<id>/`): created, listed, holding their layers
//! and images against gc with no process alive, refused removal while mounted, removed, and
//! checked by verify.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::io;
use std::path::{Path, PathBuf};

use common::{commit, dir_names, layer};
use rootfs_cache::{Digest, GcOptions, GcReport, ImageLayer, ImageRecord, Store, StoreError};
use skiff_test_rig::image::Image;
use skiff_test_rig::{Compression, Entry, Format, ImageBuilder, child, child_helper, require_root};

/// Entries of a small layer, distinct per seed, with a read-only directory so that removal has
/// to cope with one.
fn entries(seed: &str) -> Vec<Entry> {
    vec![
        Entry::dir("ro/").mode(0o555),
        Entry::file("ro/data", seed.repeat(50)),
        Entry::file("seed", seed),
    ]
}

/// A layer committed with no image using it.
fn loose_layer(store: &Store, seed: &str) -> Digest {
    let l = layer(&entries(seed), Compression::Gzip);
    commit(store, &l);
    l.diff_id
}

/// An image with one layer: layer committed, blobs and record stored.
fn add_image(store: &Store, seed: &str, last_used: u64) -> Image {
    let image = ImageBuilder::new(Format::Oci)
        .layer(&entries(seed), Compression::None)
        .unwrap()
        .env(&[&format!("SEED={seed}")])
        .build()
        .unwrap();
    for l in &image.layers {
        commit(store, l);
    }
    for blob in [&image.manifest, &image.config] {
        store.put_blob(&blob.digest, &blob.bytes).unwrap();
    }
    store
        .put_image(&ImageRecord {
            manifest: image.manifest.digest,
            config: image.config.digest,
            layers: image
                .layers
                .iter()
                .map(|l| ImageLayer {
                    digest: l.blob.digest,
                    diff_id: l.diff_id,
                    size: l.blob.bytes.len() as u64,
                    media_type: l.blob.media_type.clone(),
                })
                .collect(),
            created_at: 1,
            last_used,
        })
        .unwrap();
    image
}

fn gc(store: &Store, budget_bytes: Option<u64>) -> GcReport {
    store
        .gc(&GcOptions {
            budget_bytes,
            dry_run: false,
        })
        .unwrap()
}

fn hold_json(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("hold.json")).unwrap()).unwrap()
}

const CHILD_ROOT: &str = "SKIFF_CONTAINER_TEST_ROOT";
const CHILD_ID: &str = "SKIFF_CONTAINER_TEST_ID";
const CHILD_LAYERS: &str = "SKIFF_CONTAINER_TEST_LAYERS";
const CHILD_IMAGES: &str = "SKIFF_CONTAINER_TEST_IMAGES";

fn digests(list: &str) -> Vec<Digest> {
    list.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| Digest::parse(s).unwrap())
        .collect()
}

fn joined(list: &[Digest]) -> String {
    list.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Helper `child_process_creating_a_container`: creates a container and exits, as
/// `skiff create` would.
fn child_process_creating_a_container() {
    let store = Store::open(child::env(CHILD_ROOT)).unwrap();
    let layers = digests(&child::env(CHILD_LAYERS));
    let images = digests(&child::env(CHILD_IMAGES));
    let dir = store
        .create_container_dir(&child::env(CHILD_ID), &layers, &images)
        .unwrap();
    println!("CREATED {}", dir.display());
}
child_helper!(child_process_creating_a_container);

/// Creates container `id` in another process, which has exited when this returns; its pid.
fn create_in_child(store: &Store, id: &str, layers: &[Digest], images: &[Digest]) -> u32 {
    let child = child::command("child_process_creating_a_container")
        .env(CHILD_ROOT, store.root())
        .env(CHILD_ID, id)
        .env(CHILD_LAYERS, joined(layers))
        .env(CHILD_IMAGES, joined(images))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    child::assert_passed("child_process_creating_a_container", &out);
    pid
}

#[test]
fn container_holds_its_layers_and_image_through_gc_until_removed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert!(
        store.container_ids().unwrap().is_empty(),
        "no containers/ yet"
    );
    let held_image = add_image(&store, "held", 1);
    let other_image = add_image(&store, "other", 2);
    let held_loose = loose_layer(&store, "held-loose");
    let loose = loose_layer(&store, "loose");
    let held_layers = vec![held_image.layers[0].diff_id, held_loose];

    // Made by a process that is gone by now: nothing keeps the hold but the directory.
    let creator = create_in_child(&store, "web-1", &held_layers, &[held_image.manifest.digest]);
    let cdir = store.container_dir("web-1");
    assert_eq!(cdir, dir.path().join("containers/web-1"));
    assert!(cdir.is_dir());
    assert_eq!(store.container_ids().unwrap(), vec!["web-1".to_owned()]);
    let hold = hold_json(&cdir);
    assert_eq!(hold["id"], "web-1");
    assert_eq!(hold["pid"], creator);
    assert_eq!(hold["layers"].as_array().unwrap().len(), 2);
    assert_eq!(hold["images"][0], held_image.manifest.digest.to_string());
    assert!(hold["created_at"].as_u64().unwrap() > 0);
    // Only the layer nothing uses is an orphan.
    let verify = store.verify().unwrap();
    assert!(verify.corrupt.is_empty(), "{verify:?}");
    let orphans: Vec<&Path> = verify.orphaned.iter().map(|f| f.path.as_path()).collect();
    assert_eq!(
        orphans,
        vec![dir.path().join("layers/sha256").join(loose.hex())],
        "{verify:?}"
    );

    // Plain gc: only the layer nothing uses goes.
    let report = gc(&store, None);
    assert_eq!(report.removed_layers, vec![loose], "{report:?}");
    assert!(report.removed_runs.is_empty());
    for d in &held_layers {
        assert!(store.has_layer(d), "{d}");
    }
    assert!(cdir.join("hold.json").is_file());

    // A budget of 0 bytes evicts everything it may: the other image and its layer, never what
    // the container holds.
    let report = gc(&store, Some(0));
    assert_eq!(report.removed_images, vec![other_image.manifest.digest]);
    assert_eq!(
        report.removed_layers,
        vec![other_image.layers[0].diff_id],
        "{report:?}"
    );
    assert!(report.over_budget);
    assert!(
        report
            .kept_busy
            .iter()
            .any(|k| k.reason.contains("container")),
        "{report:?}"
    );
    for d in &held_layers {
        assert!(store.has_layer(d), "{d}");
    }
    assert!(store.image(&held_image.manifest.digest).unwrap().is_some());
    assert!(store.blob(&held_image.manifest.digest).unwrap().is_some());
    assert_eq!(store.container_ids().unwrap(), vec!["web-1".to_owned()]);
    let verify = store.verify().unwrap();
    assert!(verify.is_clean(), "{verify:?}");

    // Removed: gone whole, nothing left in tmp/, and gc then collects what it held.
    store.remove_container_dir("web-1").unwrap();
    assert!(!cdir.exists());
    assert!(store.container_ids().unwrap().is_empty());
    assert!(dir_names(&dir.path().join("tmp")).is_empty());
    store.remove_container_dir("web-1").unwrap();
    let report = gc(&store, Some(0));
    assert_eq!(report.removed_images, vec![held_image.manifest.digest]);
    let mut removed = report.removed_layers.clone();
    removed.sort();
    let mut expected = held_layers.clone();
    expected.sort();
    assert_eq!(removed, expected, "{report:?}");
    assert!(store.layers().unwrap().is_empty());
    assert!(!report.over_budget);
    assert!(dir_names(&dir.path().join("containers")).is_empty());
}

#[test]
fn gc_never_removes_container_directories() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let cdir = store.create_container_dir("idle", &[], &[]).unwrap();
    std::fs::create_dir(cdir.join("upper")).unwrap();
    std::fs::write(cdir.join("upper/state"), b"kept").unwrap();
    // Not a container (no hold.json), but still not gc's to remove.
    let stray = dir.path().join("containers/half-made");
    std::fs::create_dir(&stray).unwrap();

    let report = gc(&store, Some(0));
    assert!(report.removed_tmp.is_empty() && report.removed_runs.is_empty());
    assert_eq!(std::fs::read(cdir.join("upper/state")).unwrap(), b"kept");
    assert!(stray.is_dir());
    assert_eq!(store.container_ids().unwrap(), vec!["idle".to_owned()]);
}

#[test]
fn creating_an_existing_container_fails_and_keeps_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let first = loose_layer(&store, "first");
    let second = loose_layer(&store, "second");
    let cdir = store.create_container_dir("app", &[first], &[]).unwrap();
    std::fs::write(cdir.join("config.json"), b"{}").unwrap();

    let err = store
        .create_container_dir("app", &[second], &[])
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Io { source, .. } if source.kind() == io::ErrorKind::AlreadyExists),
        "{err}"
    );
    assert_eq!(store.container_ids().unwrap(), vec!["app".to_owned()]);
    assert_eq!(hold_json(&cdir)["layers"][0], first.to_string());
    assert_eq!(std::fs::read(cdir.join("config.json")).unwrap(), b"{}");
    assert_eq!(dir_names(&cdir), vec!["config.json", "hold.json"]);

    let report = gc(&store, None);
    assert_eq!(report.removed_layers, vec![second]);
    assert!(store.has_layer(&first));
}

#[test]
fn invalid_container_ids_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // A directory a bad id could reach, which must survive the attempts.
    let victim = dir.path().join("runs/victim");
    std::fs::create_dir(&victim).unwrap();
    let long = "a".repeat(129);
    for bad in [
        "",
        ".",
        "..",
        ".hidden",
        "a/b",
        "../runs/victim",
        "a b",
        "é",
        &long,
    ] {
        let err = store.create_container_dir(bad, &[], &[]).unwrap_err();
        assert!(
            matches!(&err, StoreError::InvalidName { what: "container id", value } if value == bad),
            "{bad:?}: {err}"
        );
        let err = store.remove_container_dir(bad).unwrap_err();
        assert!(
            matches!(&err, StoreError::InvalidName { .. }),
            "{bad:?}: {err}"
        );
    }
    assert!(victim.is_dir());
    assert!(store.container_ids().unwrap().is_empty());
    assert!(
        !dir.path().join("containers").exists()
            || dir_names(&dir.path().join("containers")).is_empty()
    );
    assert!(dir_names(&dir.path().join("tmp")).is_empty());

    for ok in ["a", "job-1.x_Y", &"b".repeat(128)] {
        store.create_container_dir(ok, &[], &[]).unwrap();
    }
    assert_eq!(store.container_ids().unwrap().len(), 3);
}

#[test]
fn container_ids_list_only_directories_with_a_hold() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.create_container_dir("b", &[], &[]).unwrap();
    store.create_container_dir("a", &[], &[]).unwrap();
    let containers = dir.path().join("containers");
    std::fs::create_dir(containers.join("no-hold")).unwrap();
    std::fs::write(containers.join("a-file"), b"x").unwrap();
    std::os::unix::fs::symlink(store.container_dir("a"), containers.join("link")).unwrap();
    assert_eq!(store.container_ids().unwrap(), vec!["a", "b"]);
}

/// A tmpfs mounted for the length of a test, detached when dropped (also when it fails).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path) -> Self {
        std::fs::create_dir_all(at).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            at,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=1m"),
        )
        .unwrap_or_else(|e| panic!("mounting a tmpfs on {}: {e}", at.display()));
        Self(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Err(e) = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH) {
            eprintln!("unmounting {}: {e}", self.0.display());
        }
    }
}

#[test]
fn removal_is_refused_while_something_is_mounted_under_the_container() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let held = loose_layer(&store, "mounted");
    let cdir = store.create_container_dir("busy", &[held], &[]).unwrap();
    let rootfs = cdir.join("rootfs");
    let mount = Tmpfs::mount(&rootfs);
    std::fs::write(rootfs.join("inside-the-mount"), b"precious").unwrap();

    let err = store.remove_container_dir("busy").unwrap_err();
    match &err {
        StoreError::Io { path, source, .. } => {
            assert_eq!(source.kind(), io::ErrorKind::ResourceBusy, "{err}");
            assert_eq!(path, &rootfs.canonicalize().unwrap(), "{err}");
            assert!(err.to_string().contains("still mounted"), "{err}");
        }
        other => panic!("expected a refusal, got {other}"),
    }
    assert!(cdir.join("hold.json").is_file());
    assert_eq!(
        std::fs::read(rootfs.join("inside-the-mount")).unwrap(),
        b"precious"
    );
    assert_eq!(store.container_ids().unwrap(), vec!["busy".to_owned()]);
    assert!(dir_names(&dir.path().join("tmp")).is_empty());
    assert!(gc(&store, Some(0)).removed_layers.is_empty());

    drop(mount);
    store.remove_container_dir("busy").unwrap();
    assert!(!cdir.exists());
    assert_eq!(gc(&store, None).removed_layers, vec![held]);
}

#[test]
fn verify_reports_what_a_container_holds_that_the_store_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let present = loose_layer(&store, "present");
    let missing_layer = Digest::of(b"a layer never committed");
    let missing_image = Digest::of(b"an image never pulled");
    let cdir = store
        .create_container_dir("broken", &[present, missing_layer], &[missing_image])
        .unwrap();
    let hold = cdir.join("hold.json");

    let verify = store.verify().unwrap();
    let reasons: Vec<&str> = verify
        .corrupt
        .iter()
        .filter(|f| f.path == hold)
        .map(|f| f.reason.as_str())
        .collect();
    assert_eq!(
        reasons,
        vec![
            format!("layer {missing_layer} is missing"),
            format!("image {missing_image} is missing")
        ],
        "{verify:?}"
    );
    assert_eq!(verify.corrupt.len(), 2, "{verify:?}");
    // The layer it has counts as used.
    assert!(verify.orphaned.is_empty(), "{verify:?}");

    // A directory without hold.json is garbage; a hold.json that does not parse is corrupt,
    // and stops gc rather than have it guess.
    let stray = dir.path().join("containers/half-made");
    std::fs::create_dir(&stray).unwrap();
    let bad = store.create_container_dir("bad", &[], &[]).unwrap();
    std::fs::write(bad.join("hold.json"), b"{not json").unwrap();
    let verify = store.verify().unwrap();
    assert!(
        verify
            .orphaned
            .iter()
            .any(|f| f.path == stray && f.reason.contains("without hold.json")),
        "{verify:?}"
    );
    assert!(
        verify
            .corrupt
            .iter()
            .any(|f| f.path == bad.join("hold.json") && f.reason.contains("does not parse")),
        "{verify:?}"
    );
    let err = store.gc(&GcOptions::default()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(store.has_layer(&present));
}

#[test]
fn a_failed_creation_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // hold.json is written through tmp/: without it, the write fails after the directory is
    // made.
    let tmp = dir.path().join("tmp");
    std::fs::remove_dir(&tmp).unwrap();
    let err = store.create_container_dir("doomed", &[], &[]).unwrap_err();
    assert!(matches!(err, StoreError::Io { .. }), "{err}");
    assert!(!store.container_dir("doomed").exists());
    assert!(dir_names(&dir.path().join("containers")).is_empty());

    std::fs::create_dir(&tmp).unwrap();
    store.create_container_dir("doomed", &[], &[]).unwrap();
    assert_eq!(store.container_ids().unwrap(), vec!["doomed".to_owned()]);
}
