//! `skiff pull` onto a full disk: the user reads the cause (no space left on device) and where
//! (the store), the store stays consistent, and `skiff gc` gives the space back. The store is on
//! a small ext4 loop filesystem, so this needs root.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Env;
use skiff_test_rig::{Compression, Entry, Format, ImageBuilder, Registry, require_root};

/// A small ext4 filesystem on a loop device, unmounted and detached when dropped (also when
/// the test fails).
struct LoopFs {
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
    /// Makes a filesystem of `size` (truncate's syntax) in `dir` and mounts it at `dir/mnt`.
    fn new(dir: &Path, size: &str) -> Self {
        let image = dir.join("fs.img");
        let mnt = dir.join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let image = image.to_str().unwrap();
        run("truncate", &["-s", size, image]);
        run("mkfs.ext4", &["-q", "-F", image]);
        let device = run("losetup", &["--find", "--show", image]);
        // From here on, Drop detaches the device (and unmounts once mounted).
        let fs = Self {
            mnt,
            device: Some(device),
        };
        run(
            "mount",
            &[
                fs.device.as_deref().unwrap_or_default(),
                fs.mnt.to_str().unwrap(),
            ],
        );
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
