//! gc, run holds and verify on real stores: real files, real flocks, runs held by other
//! processes (this test binary re-run as a child) and crashed runs (that child SIGKILLed).

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::thread::JoinHandle;

use common::{commit, dir_names, layer};
use rootfs_cache::lock::FileLock;
use rootfs_cache::{
    Digest, GcOptions, GcReport, ImageLayer, ImageRecord, LayerSlot, RefRecord, Store, StoreError,
};
use skiff_test_rig::image::Image;
use skiff_test_rig::{Compression, Entry, Format, ImageBuilder, child, child_helper};

/// Entries of a layer of about `bytes` bytes, distinct per seed, with a read-only directory
/// and a whiteout (a device node) so that removal has to cope with both.
fn entries(seed: &str, bytes: usize) -> Vec<Entry> {
    let data: Vec<u8> = seed
        .bytes()
        .cycle()
        .enumerate()
        .map(|(i, b)| b.wrapping_add((i % 251) as u8) | 1)
        .take(bytes)
        .collect();
    vec![
        Entry::dir("ro/").mode(0o555),
        Entry::file("ro/data", data),
        Entry::file("seed", seed),
        Entry::whiteout("gone"),
    ]
}

fn loose_layer(store: &Store, seed: &str) -> Digest {
    let l = layer(&entries(seed, 100), Compression::Gzip);
    commit(store, &l);
    l.diff_id
}

/// An image with one layer of about `bytes` bytes: layer committed, blobs and record stored.
fn add_image(store: &Store, seed: &str, bytes: usize, last_used: u64) -> Image {
    let image = ImageBuilder::new(Format::Oci)
        .layer(&entries(seed, bytes), Compression::None)
        .unwrap()
        .env(&[&format!("SEED={seed}")])
        .build()
        .unwrap();
    for l in &image.layers {
        commit(store, l);
    }
    store
        .put_blob(&image.manifest.digest, &image.manifest.bytes)
        .unwrap();
    store
        .put_blob(&image.config.digest, &image.config.bytes)
        .unwrap();
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

fn set_ref(store: &Store, tag: &str, manifest: Digest, index: Option<Digest>) {
    let record = RefRecord {
        manifest,
        index,
        resolved_at: 1,
    };
    store.set_ref("reg.test", "demo/app", tag, &record).unwrap();
}

fn gc(store: &Store) -> GcReport {
    store.gc(&GcOptions::default()).unwrap()
}

/// Every path under the root (but locks/, where looking takes locks) with its size and mode.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, (u64, u32)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path == root.join("locks") {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path.clone());
            }
            out.insert(path, (meta.len(), meta.mode()));
        }
    }
    out
}

/// A pid that certainly belonged to a process that has exited.
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

const CHILD_ROOT: &str = "SKIFF_GC_TEST_ROOT";
const CHILD_RUN: &str = "SKIFF_GC_TEST_RUN";
const CHILD_LAYERS: &str = "SKIFF_GC_TEST_LAYERS";

/// Helper `child_process_holding_a_run`, the body of the child process that holds a run
/// ([`Holder`]): it registers the run, says `HELD`, and releases it when its stdin closes.
fn child_process_holding_a_run() {
    let root = child::env(CHILD_ROOT);
    let id = child::env(CHILD_RUN);
    let layers: Vec<Digest> = child::env(CHILD_LAYERS)
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| Digest::parse(s).unwrap())
        .collect();
    let store = Store::open(root).unwrap();
    let hold = store.hold_run(&id, &layers, &[]).unwrap();
    println!("HELD {}", hold.path().display());
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut rest);
    hold.release().unwrap();
    println!("RELEASED");
}
child_helper!(child_process_holding_a_run);

/// A run held by another process.
struct Holder {
    child: Child,
    stdin: Option<ChildStdin>,
    /// The rest of the child's stdout, read to its end (so the child never blocks on a full
    /// pipe).
    stdout: JoinHandle<Vec<u8>>,
}

impl Holder {
    fn spawn(store: &Store, id: &str, layers: &[Digest]) -> Self {
        let layers: Vec<String> = layers.iter().map(|d| d.to_string()).collect();
        let mut child = child::command("child_process_holding_a_run")
            .env(CHILD_ROOT, store.root())
            .env(CHILD_RUN, id)
            .env(CHILD_LAYERS, layers.join(","))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                stdout.read_line(&mut line).unwrap() > 0,
                "child exited before holding the run"
            );
            if line.contains("HELD ") {
                break;
            }
        }
        let stdout = std::thread::spawn(move || {
            let mut rest = Vec::new();
            let _ = std::io::Read::read_to_end(&mut stdout, &mut rest);
            rest
        });
        Self {
            child,
            stdin,
            stdout,
        }
    }

    /// The run ends normally: the child releases its hold and exits, its helper passed.
    fn release(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        let stdout = self.stdout.join().unwrap();
        assert!(
            String::from_utf8_lossy(&stdout).contains("RELEASED"),
            "the child did not release its run"
        );
        let out = Output {
            status,
            stdout,
            stderr: Vec::new(),
        };
        child::assert_passed("child_process_holding_a_run", &out);
    }

    /// The run crashes: SIGKILL, nothing is cleaned up.
    fn crash(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

#[test]
fn gc_removes_unreferenced_layers_and_blobs_and_keeps_referenced_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let image = add_image(&store, "kept", 1000, 10);
    let index = br#"{"manifests":[]}"#;
    let index_digest = Digest::of(index);
    store.put_blob(&index_digest, index).unwrap();
    set_ref(&store, "latest", image.manifest.digest, Some(index_digest));
    let loose = loose_layer(&store, "loose");
    let blob = br#"{"unused":true}"#;
    let blob_digest = Digest::of(blob);
    store.put_blob(&blob_digest, blob).unwrap();

    let report = gc(&store);
    assert_eq!(report.removed_layers, vec![loose]);
    assert_eq!(report.removed_blobs, vec![blob_digest]);
    assert!(report.removed_images.is_empty() && report.removed_refs.is_empty());
    assert!(report.kept_busy.is_empty(), "{:?}", report.kept_busy);
    assert!(report.bytes_freed > 0);
    assert!(!store.has_layer(&loose));
    assert!(!dir.path().join("layers/sha256").join(loose.hex()).exists());
    assert!(store.blob(&blob_digest).unwrap().is_none());
    assert!(store.has_layer(&image.layers[0].diff_id));
    for d in [image.manifest.digest, image.config.digest, index_digest] {
        assert!(store.blob(&d).unwrap().is_some());
    }
    assert!(store.image(&image.manifest.digest).unwrap().is_some());
    assert!(dir_names(&dir.path().join("tmp")).is_empty());
    assert!(store.verify().unwrap().is_clean());

    // Nothing left to do.
    let again = gc(&store);
    assert!(again.removed_layers.is_empty() && again.removed_blobs.is_empty());
    assert_eq!(again.bytes_freed, 0);
}

#[test]
fn layer_held_by_a_live_run_in_another_process_survives_until_the_run_ends() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let held = loose_layer(&store, "held");
    let holder = Holder::spawn(&store, "run-1", &[held]);
    let run_dir = dir.path().join("runs/run-1");
    assert!(run_dir.join("hold.json").is_file());

    let report = gc(&store);
    assert!(report.removed_layers.is_empty(), "{report:?}");
    assert!(report.removed_runs.is_empty());
    assert!(store.has_layer(&held));
    assert!(run_dir.is_dir());
    assert!(store.sweep_runs().unwrap().is_empty());
    let verify = store.verify().unwrap();
    assert!(verify.is_clean(), "{verify:?}");

    holder.release();
    assert!(!run_dir.exists());
    let report = gc(&store);
    assert_eq!(report.removed_layers, vec![held]);
    assert!(!store.has_layer(&held));
}

#[test]
fn crashed_run_is_swept_and_its_layers_collected() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let held = loose_layer(&store, "crash");
    Holder::spawn(&store, "crashy", &[held]).crash();
    let run_dir = dir.path().join("runs/crashy");
    assert!(
        run_dir.join("hold.json").is_file(),
        "a crash cleans nothing"
    );
    let verify = store.verify().unwrap();
    assert!(
        verify
            .orphaned
            .iter()
            .any(|f| f.path == run_dir && f.reason.contains("dead run")),
        "{verify:?}"
    );

    assert_eq!(store.sweep_runs().unwrap(), vec!["crashy".to_owned()]);
    assert!(!run_dir.exists());
    let report = gc(&store);
    assert_eq!(report.removed_layers, vec![held]);

    // Crashed again, this time gc does the sweeping itself.
    let held = loose_layer(&store, "crash-2");
    Holder::spawn(&store, "crashy-2", &[held]).crash();
    let report = gc(&store);
    assert_eq!(report.removed_runs, vec!["crashy-2".to_owned()]);
    assert_eq!(report.removed_layers, vec![held]);
    assert!(!dir.path().join("runs/crashy-2").exists());
}

#[test]
fn run_hold_in_process_lives_until_dropped_and_ids_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let held = loose_layer(&store, "local");
    let hold = store.hold_run("local.run_1", &[held], &[]).unwrap();
    assert_eq!(hold.path(), dir.path().join("runs/local.run_1"));
    assert_eq!(hold.id(), "local.run_1");
    std::fs::create_dir_all(hold.path().join("upper/ro")).unwrap();
    std::fs::set_permissions(
        hold.path().join("upper/ro"),
        std::fs::Permissions::from_mode(0o500),
    )
    .unwrap();
    assert!(store.sweep_runs().unwrap().is_empty());
    assert!(gc(&store).removed_layers.is_empty());
    assert!(matches!(
        store.hold_run("local.run_1", &[], &[]),
        Err(StoreError::Io { .. })
    ));
    let path = hold.path().to_owned();
    drop(hold);
    assert!(!path.exists());
    assert!(dir_names(&dir.path().join("tmp")).is_empty());
    assert_eq!(gc(&store).removed_layers, vec![held]);

    let hold = store.hold_run("r2", &[], &[]).unwrap();
    let path = hold.path().to_owned();
    hold.release().unwrap();
    assert!(!path.exists());

    let long = "a".repeat(129);
    for bad in ["", ".hidden", "a/b", "..", "sp ace", long.as_str()] {
        assert!(
            matches!(
                store.hold_run(bad, &[], &[]),
                Err(StoreError::InvalidName { .. })
            ),
            "{bad:?}"
        );
    }
    assert!(store.hold_run(&"a".repeat(128), &[], &[]).is_ok());
}

#[test]
fn tmp_garbage_of_dead_writers_goes_and_live_writers_stay() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let tmp = dir.path().join("tmp");
    let me = std::process::id();

    // A crashed layer writer: nobody holds the layer's lock. Read-only dir inside.
    let crashed = layer(&entries("crashed", 10), Compression::Gzip);
    let crashed_tmp = format!("layer-{}.{}.1.0", crashed.diff_id.hex(), dead_pid());
    std::fs::create_dir_all(tmp.join(&crashed_tmp).join("fs/ro")).unwrap();
    std::fs::write(tmp.join(&crashed_tmp).join("fs/ro/f"), "x").unwrap();
    std::fs::set_permissions(
        tmp.join(&crashed_tmp).join("fs/ro"),
        std::fs::Permissions::from_mode(0o555),
    )
    .unwrap();

    // A live writer: it holds the layer's lock (begin_layer), its staging dir is in tmp/.
    let writing = layer(&entries("writing", 10), Compression::Gzip);
    let slot = store.begin_layer(&writing.diff_id).unwrap();
    assert!(matches!(slot, LayerSlot::Vacant(_)));
    let writing_tmp = format!("layer-{}.{me}.2.0", writing.diff_id.hex());
    std::fs::create_dir_all(tmp.join(&writing_tmp).join("fs")).unwrap();

    // Small files of a dead and of a live process.
    let dead_file = format!("file.{}.3.0", dead_pid());
    let live_file = format!("file.{me}.4.0");
    std::fs::write(tmp.join(&dead_file), "x").unwrap();
    std::fs::write(tmp.join(&live_file), "x").unwrap();

    let verify = store.verify().unwrap();
    let orphans: Vec<&Path> = verify.orphaned.iter().map(|f| f.path.as_path()).collect();
    assert_eq!(
        orphans,
        vec![tmp.join(&dead_file), tmp.join(&crashed_tmp)],
        "{verify:?}"
    );

    let report = gc(&store);
    let mut removed = report.removed_tmp.clone();
    removed.sort();
    assert_eq!(removed, vec![dead_file.clone(), crashed_tmp.clone()]);
    let mut kept: Vec<PathBuf> = report.kept_busy.iter().map(|k| k.path.clone()).collect();
    kept.sort();
    assert_eq!(kept, vec![tmp.join(&live_file), tmp.join(&writing_tmp)]);
    assert!(
        report
            .kept_busy
            .iter()
            .any(|k| k.reason.contains("writer") && k.reason.contains(&writing.diff_id.hex()))
    );
    assert_eq!(
        dir_names(&dir.path().join("tmp")),
        vec![live_file.clone(), writing_tmp.clone()]
    );

    // The writer gives up (its lock is released): its leftovers are garbage now.
    drop(slot);
    let report = gc(&store);
    assert_eq!(report.removed_tmp, vec![writing_tmp]);
    assert_eq!(dir_names(&dir.path().join("tmp")), vec![live_file]);
}

#[test]
fn layer_whose_lock_is_held_is_kept_busy() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let diff_id = loose_layer(&store, "busy");
    let lock =
        FileLock::exclusive(&dir.path().join(format!("locks/layer-{}", diff_id.hex()))).unwrap();
    let report = gc(&store);
    assert!(report.removed_layers.is_empty());
    assert_eq!(report.kept_busy.len(), 1, "{report:?}");
    assert_eq!(
        report.kept_busy[0].path,
        dir.path().join("layers/sha256").join(diff_id.hex())
    );
    assert!(store.has_layer(&diff_id));
    drop(lock);
    assert_eq!(gc(&store).removed_layers, vec![diff_id]);
}

/// Three images of about 256 KiB each, last used at 100, 200 and 300, with a ref each (the
/// oldest one also through an index blob); returns them oldest first and the store size.
fn three_images(store: &Store) -> (Vec<Image>, u64) {
    let images: Vec<Image> = [("old", 100), ("mid", 200), ("new", 300)]
        .iter()
        .map(|(seed, used)| add_image(store, seed, 256 * 1024, *used))
        .collect();
    let index = br#"{"manifests":["old"]}"#;
    store.put_blob(&Digest::of(index), index).unwrap();
    set_ref(
        store,
        "old",
        images[0].manifest.digest,
        Some(Digest::of(index)),
    );
    set_ref(store, "mid", images[1].manifest.digest, None);
    set_ref(store, "new", images[2].manifest.digest, None);
    let size = store
        .gc(&GcOptions {
            budget_bytes: None,
            dry_run: true,
        })
        .unwrap()
        .bytes_after;
    (images, size)
}

fn ref_names(store: &Store) -> Vec<String> {
    store
        .refs()
        .unwrap()
        .into_iter()
        .map(|(name, tag, _)| format!("{name}:{tag}"))
        .collect()
}

#[test]
fn budget_evicts_least_recently_used_images_with_their_refs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (images, size) = three_images(&store);
    assert!(size > 3 * 256 * 1024, "{size}");
    let budget = size / 2; // room for one image, not two

    let report = store
        .gc(&GcOptions {
            budget_bytes: Some(budget),
            dry_run: false,
        })
        .unwrap();
    assert_eq!(
        report.removed_images,
        vec![images[0].manifest.digest, images[1].manifest.digest]
    );
    let mut refs = report.removed_refs.clone();
    refs.sort();
    assert_eq!(refs, vec!["reg.test/demo/app:mid", "reg.test/demo/app:old"]);
    assert_eq!(ref_names(&store), vec!["reg.test/demo/app:new"]);
    let mut gone_layers = vec![images[0].layers[0].diff_id, images[1].layers[0].diff_id];
    gone_layers.sort();
    let mut removed_layers = report.removed_layers.clone();
    removed_layers.sort();
    assert_eq!(removed_layers, gone_layers);
    // manifest + config of both, and the index only the old ref used.
    assert_eq!(report.removed_blobs.len(), 5, "{report:?}");
    assert!(report.bytes_after <= budget && !report.over_budget);
    assert!(report.bytes_freed >= 2 * 256 * 1024);

    for old in &images[..2] {
        assert!(store.image(&old.manifest.digest).unwrap().is_none());
        assert!(!store.has_layer(&old.layers[0].diff_id));
        assert!(store.blob(&old.config.digest).unwrap().is_none());
    }
    let newest = &images[2];
    assert!(store.image(&newest.manifest.digest).unwrap().is_some());
    assert!(store.has_layer(&newest.layers[0].diff_id));
    assert!(store.blob(&newest.config.digest).unwrap().is_some());
    let verify = store.verify().unwrap();
    assert!(verify.is_clean(), "{verify:?}");
}

#[test]
fn budget_spares_images_held_by_a_live_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (images, size) = three_images(&store);
    let oldest = &images[0];
    let hold = store
        .hold_run(
            "uses-oldest",
            &[oldest.layers[0].diff_id],
            &[oldest.manifest.digest],
        )
        .unwrap();
    let report = store
        .gc(&GcOptions {
            budget_bytes: Some(size / 2),
            dry_run: false,
        })
        .unwrap();
    assert_eq!(
        report.removed_images,
        vec![images[1].manifest.digest, images[2].manifest.digest]
    );
    assert!(store.image(&oldest.manifest.digest).unwrap().is_some());
    assert!(store.has_layer(&oldest.layers[0].diff_id));

    // A budget nothing can meet: the held image stays and the report says why.
    let report = store
        .gc(&GcOptions {
            budget_bytes: Some(1),
            dry_run: false,
        })
        .unwrap();
    assert!(report.removed_images.is_empty());
    assert!(report.over_budget);
    assert!(
        report
            .kept_busy
            .iter()
            .any(|k| k.reason.contains("live run")),
        "{report:?}"
    );
    drop(hold);
}

#[test]
fn dry_run_changes_nothing_but_reports_what_gc_does() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (_images, size) = three_images(&store);
    loose_layer(&store, "loose");
    store.put_blob(&Digest::of(b"loose"), b"loose").unwrap();
    std::fs::write(dir.path().join(format!("tmp/file.{}.1.1", dead_pid())), "x").unwrap();
    Holder::spawn(&store, "crashed", &[]).crash();
    let options = GcOptions {
        budget_bytes: Some(size / 2),
        dry_run: true,
    };

    let before = snapshot(dir.path());
    let dry = store.gc(&options).unwrap();
    assert_eq!(snapshot(dir.path()), before, "a dry run changed the store");
    assert!(dry.dry_run);
    assert_eq!(dry.removed_images.len(), 2);
    assert_eq!(dry.removed_layers.len(), 3);
    assert_eq!(dry.removed_runs, vec!["crashed".to_owned()]);
    assert_eq!(dry.removed_tmp.len(), 1);

    let real = store
        .gc(&GcOptions {
            dry_run: false,
            ..options
        })
        .unwrap();
    assert!(!real.dry_run);
    assert_eq!(real.removed_layers, dry.removed_layers);
    assert_eq!(real.removed_blobs, dry.removed_blobs);
    assert_eq!(real.removed_images, dry.removed_images);
    assert_eq!(real.removed_refs, dry.removed_refs);
    assert_eq!(real.removed_runs, dry.removed_runs);
    assert_eq!(real.removed_tmp, dry.removed_tmp);
    assert_eq!(real.bytes_after, dry.bytes_after);
    assert_ne!(snapshot(dir.path()), before);
}

#[test]
fn verify_of_a_clean_store_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let image = add_image(&store, "clean", 1000, 1);
    set_ref(&store, "latest", image.manifest.digest, None);
    let held = loose_layer(&store, "held-by-run");
    let _hold = store.hold_run("live", &[held], &[]).unwrap();
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert!(store.verify().unwrap().is_clean());
}

#[test]
fn verify_reports_corruption_and_orphans_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = Store::open(root).unwrap();

    // Tampered blob: a's manifest no longer hashes to its name.
    let a = add_image(&store, "a", 1000, 1);
    let tampered = store.blob_path(&a.manifest.digest);
    std::fs::write(&tampered, b"{}").unwrap();
    // A layer without its layer.json.
    let b = add_image(&store, "b", 1000, 1);
    let no_record = root.join("layers/sha256").join(b.layers[0].diff_id.hex());
    std::fs::remove_file(no_record.join("layer.json")).unwrap();
    // An image pointing at a missing layer and a missing config.
    let missing = Digest::of(b"never committed");
    let c_manifest = Digest::of(b"c manifest");
    store
        .put_image(&ImageRecord {
            manifest: c_manifest,
            config: Digest::of(b"c config"),
            layers: vec![ImageLayer {
                digest: Digest::of(b"c blob"),
                diff_id: missing,
                size: 1,
                media_type: "application/vnd.oci.image.layer.v1.tar".into(),
            }],
            created_at: 1,
            last_used: 1,
        })
        .unwrap();
    let c_path = root.join(format!("images/sha256/{}.json", c_manifest.hex()));
    // A ref to nothing, and a ref that is not JSON.
    set_ref(&store, "dangling", Digest::of(b"no such image"), None);
    let garbled = root.join("refs/reg.test/demo/app/garbled");
    std::fs::write(&garbled, "not json").unwrap();
    // Orphans: a layer, a blob, a crashed run, a dead writer's file.
    let loose = loose_layer(&store, "orphan");
    store.put_blob(&Digest::of(b"orphan"), b"orphan").unwrap();
    Holder::spawn(&store, "dead", &[]).crash();
    let dead_tmp = root.join(format!("tmp/file.{}.1.1", dead_pid()));
    std::fs::write(&dead_tmp, "x").unwrap();

    let before = snapshot(root);
    let report = store.verify().unwrap();
    assert_eq!(snapshot(root), before, "verify changed the store");
    assert!(!report.is_clean());
    let has = |list: &[rootfs_cache::Finding], path: &Path, word: &str| {
        list.iter()
            .any(|f| f.path == path && f.reason.contains(word))
    };
    let corrupt = &report.corrupt;
    assert!(has(corrupt, &tampered, "hashes to"), "{corrupt:#?}");
    assert!(has(corrupt, &no_record, "layer.json"), "{corrupt:#?}");
    assert!(has(corrupt, &c_path, &missing.to_string()), "{corrupt:#?}");
    assert!(has(corrupt, &c_path, "config"), "{corrupt:#?}");
    assert!(
        has(
            corrupt,
            &root.join("refs/reg.test/demo/app/dangling"),
            "missing image"
        ),
        "{corrupt:#?}"
    );
    assert!(has(corrupt, &garbled, "parse"), "{corrupt:#?}");
    assert_eq!(corrupt.len(), 6, "{corrupt:#?}");

    let orphaned = &report.orphaned;
    assert!(has(
        orphaned,
        &root.join("layers/sha256").join(loose.hex()),
        "no image"
    ));
    assert!(has(
        orphaned,
        &store.blob_path(&Digest::of(b"orphan")),
        "no image"
    ));
    assert!(has(orphaned, &root.join("runs/dead"), "dead run"));
    assert!(has(orphaned, &dead_tmp, "dead writer"));
    assert_eq!(orphaned.len(), 4, "{orphaned:#?}");
}
