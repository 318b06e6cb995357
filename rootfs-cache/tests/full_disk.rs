//! A layer that does not fit on the store's filesystem: the error keeps its cause (no space
//! left on device) and names the store; nothing half-written stays visible; gc leaves the
//! space as it was. Runs on a small ext4 loop filesystem, so it needs root.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::Command;

use rootfs_cache::{GcOptions, Store};
use skiff_test_rig::image::Layer;
use skiff_test_rig::{Compression, Entry, Format, require_root};

/// A small ext4 filesystem on a loop device, unmounted and detached when dropped (also when
/// the test fails).
struct LoopFs {
    _dir: tempfile::TempDir,
    mnt: PathBuf,
    device: Option<String>,
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl LoopFs {
    fn new(size: &str) -> Self {
        require_root();
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("fs.img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let image_s = image.to_str().unwrap();
        let mnt_s = mnt.to_str().unwrap().to_owned();
        run("truncate", &["-s", size, image_s]);
        run("mkfs.ext4", &["-q", "-F", image_s]);
        let device = run("losetup", &["--find", "--show", image_s]);
        // From here on, Drop detaches the device (and unmounts once mounted).
        let fs = Self {
            _dir: dir,
            mnt,
            device: Some(device),
        };
        let device = fs.device.as_deref().unwrap_or_default();
        run("mount", &[device, &mnt_s]);
        fs
    }

    /// Free bytes (for root: reserved blocks count as free).
    fn free(&self) -> u64 {
        let st = nix::sys::statvfs::statvfs(&self.mnt).unwrap();
        st.blocks_free() * st.fragment_size()
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let mounted = Command::new("mountpoint")
            .arg("-q")
            .arg(&self.mnt)
            .status()
            .is_ok_and(|s| s.success());
        if mounted {
            let _ = Command::new("umount").arg(&self.mnt).status();
        }
        if let Some(device) = self.device.take() {
            let _ = Command::new("losetup").args(["-d", &device]).status();
        }
    }
}

/// Incompressible bytes, deterministic per seed.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

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

fn is_empty_dir(path: &Path) -> bool {
    std::fs::read_dir(path).unwrap().next().is_none()
}

#[test]
fn a_layer_bigger_than_the_disk_fails_with_its_cause_and_leaves_nothing() {
    let fs = LoopFs::new("24M");
    let root = fs.mnt.join("store");
    let store = Store::open(&root).unwrap();
    let free_before = fs.free();

    // Five 8 MiB files of noise: 40 MiB that no compression shrinks, on a 24 MiB filesystem.
    let mut entries = vec![Entry::dir("data/")];
    for i in 0..5 {
        entries.push(Entry::file(format!("data/big{i}"), noise(i, 8 << 20)));
    }
    let tar = skiff_test_rig::entry::tar(&entries).unwrap();
    let layer = Layer::from_tar(&tar, Compression::Gzip, Format::Oci).unwrap();
    assert!(layer.blob.bytes.len() as u64 > free_before);

    let err = store
        .commit_layer(
            &layer.blob.digest,
            &layer.diff_id,
            &layer.blob.media_type,
            std::io::Cursor::new(layer.blob.bytes.clone()),
        )
        .unwrap_err();
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
    let small = skiff_test_rig::entry::tar(&[Entry::file("ok", "fits")]).unwrap();
    let small = Layer::from_tar(&small, Compression::Gzip, Format::Oci).unwrap();
    store
        .commit_layer(
            &small.blob.digest,
            &small.diff_id,
            &small.blob.media_type,
            std::io::Cursor::new(small.blob.bytes.clone()),
        )
        .unwrap();
    assert!(store.has_layer(&small.diff_id));
}
