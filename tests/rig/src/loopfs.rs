//! A small ext4 filesystem on a loop device, for tests of what happens when a disk is full.
//! Needs root (losetup, mount) and e2fsprogs.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::require::require_root;

/// A small ext4 filesystem mounted at [`mnt`](Self::mnt), unmounted and its loop device
/// detached when dropped (also when the test fails).
#[derive(Debug)]
pub struct LoopFs {
    /// Where the filesystem is mounted.
    pub mnt: PathBuf,
    device: Option<String>,
}

/// Runs `cmd args`, panics unless it succeeded, returns its trimmed stdout.
#[track_caller]
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

fn utf8(path: &Path) -> &str {
    path.to_str()
        .unwrap_or_else(|| panic!("{} is not UTF-8", path.display()))
}

impl LoopFs {
    /// Makes a filesystem of `size` (truncate's syntax, e.g. "24M") in the image `dir/fs.img`
    /// and mounts it at `dir/mnt`. Panics unless the process runs as root. Keep `dir` until
    /// this is dropped.
    #[track_caller]
    pub fn new(dir: &Path, size: &str) -> Self {
        require_root();
        let image = dir.join("fs.img");
        let mnt = dir.join("mnt");
        std::fs::create_dir(&mnt).unwrap_or_else(|e| panic!("creating {}: {e}", mnt.display()));
        let image = utf8(&image);
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
            &[fs.device.as_deref().unwrap_or_default(), utf8(&fs.mnt)],
        );
        fs
    }

    /// Free bytes (for root: reserved blocks count as free), as statvfs(3) gives them: free
    /// blocks times the fragment size.
    #[track_caller]
    pub fn free(&self) -> u64 {
        let out = run("stat", &["-f", "-c", "%f %S", utf8(&self.mnt)]);
        let numbers: Vec<u64> = out
            .split_whitespace()
            .map(|n| {
                n.parse()
                    .unwrap_or_else(|e| panic!("stat -f said {out:?}: {e}"))
            })
            .collect();
        match numbers[..] {
            [blocks, size] => blocks * size,
            _ => panic!("stat -f said {out:?}, not free blocks and block size"),
        }
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
