//! Concurrency, crashes and memory: real processes committing one layer at once, a writer
//! killed mid-extraction, many layers in parallel, and peak memory on a large layer.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{commit, dir_names, layer};
use rootfs_cache::{Digest, LayerOutcome, Store};
use skiff_test_rig::image::Layer;
use skiff_test_rig::{Compression, Entry, child, child_helper};

/// A reader that sleeps between small reads, so a commit lasts long enough to overlap.
struct Slow<R> {
    inner: R,
    delay: Duration,
}

impl<R: Read> Read for Slow<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        std::thread::sleep(self.delay);
        let n = buf.len().min(16 * 1024);
        self.inner.read(&mut buf[..n])
    }
}

fn many_files_layer(files: usize, tag: &str) -> Layer {
    let mut entries = vec![Entry::dir("data/")];
    for i in 0..files {
        let body: Vec<u8> = (0..4096u32).map(|b| (b as usize * 31 + i) as u8).collect();
        entries.push(Entry::file(format!("data/{tag}-{i:05}"), body));
    }
    layer(&entries, Compression::Gzip)
}

/// The child side of the multi-process tests (helper `child_commit`, started by
/// [`spawn_child`]): commits the layer described by the environment and prints what happened.
fn child_commit() {
    let root = child::env("SKIFF_CHILD_ROOT");
    let blob = std::fs::read(child::env("SKIFF_CHILD_BLOB")).unwrap();
    let digest = Digest::parse(&child::env("SKIFF_CHILD_DIGEST")).unwrap();
    let diff_id = Digest::parse(&child::env("SKIFF_CHILD_DIFF_ID")).unwrap();
    let delay_us: u64 = child::env("SKIFF_CHILD_DELAY_US").parse().unwrap();
    let store = Store::open(&root).unwrap();
    let source = Slow {
        inner: Cursor::new(blob),
        delay: Duration::from_micros(delay_us),
    };
    let outcome = store
        .commit_layer(
            &digest,
            &diff_id,
            "application/vnd.oci.image.layer.v1.tar+gzip",
            source,
        )
        .unwrap();
    println!(
        "OUTCOME={}",
        match outcome {
            LayerOutcome::Committed(_) => "committed",
            LayerOutcome::Present(_) => "present",
        }
    );
}
child_helper!(child_commit);

fn spawn_child(root: &Path, blob: &Path, layer: &Layer, delay_us: u64) -> std::process::Child {
    child::command("child_commit")
        .env("SKIFF_CHILD_ROOT", root)
        .env("SKIFF_CHILD_BLOB", blob)
        .env("SKIFF_CHILD_DIGEST", layer.blob.digest.to_string())
        .env("SKIFF_CHILD_DIFF_ID", layer.diff_id.to_string())
        .env("SKIFF_CHILD_DELAY_US", delay_us.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn write_blob(dir: &Path, layer: &Layer) -> PathBuf {
    let path = dir.join("blob");
    std::fs::write(&path, &layer.blob.bytes).unwrap();
    path
}

#[test]
fn two_processes_committing_one_layer_do_the_work_once_and_both_succeed() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    let layer = many_files_layer(300, "c");
    let blob = write_blob(work.path(), &layer);
    let children: Vec<_> = (0..2)
        .map(|_| spawn_child(&root, &blob, &layer, 500))
        .collect();
    let mut outcomes = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        child::assert_passed("child_commit", &out);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let outcome = stdout
            .lines()
            .find_map(|l| l.split("OUTCOME=").nth(1))
            .unwrap_or_else(|| panic!("no outcome in {stdout}"))
            .to_owned();
        outcomes.push(outcome);
    }
    outcomes.sort();
    assert_eq!(outcomes, ["committed", "present"]);
    let store = Store::open(&root).unwrap();
    assert_eq!(store.layers().unwrap(), [layer.diff_id]);
    assert_eq!(
        dir_names(&store.layer_dir(&layer.diff_id).join("data")).len(),
        300
    );
    assert!(dir_names(&root.join("tmp")).is_empty());
}

#[test]
fn writer_killed_mid_extraction_leaves_only_tmp_garbage_that_the_next_writer_clears() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    let layer = many_files_layer(400, "k");
    let blob = write_blob(work.path(), &layer);
    let mut child = spawn_child(&root, &blob, &layer, 20_000);

    // Wait until the child has written part of the layer into tmp/, then kill it hard.
    let deadline = Instant::now() + Duration::from_secs(60);
    let staged = loop {
        let tmp = root.join("tmp");
        let staged = if tmp.is_dir() {
            dir_names(&tmp)
        } else {
            Vec::new()
        };
        if let Some(name) = staged.iter().find(|n| n.starts_with("layer-")) {
            let data = tmp.join(name).join("fs/data");
            if data.is_dir() && dir_names(&data).len() >= 5 {
                break name.clone();
            }
        }
        assert!(Instant::now() < deadline, "child never started extracting");
        std::thread::sleep(Duration::from_millis(5));
    };
    child.kill().unwrap();
    child.wait().unwrap();

    let store = Store::open(&root).unwrap();
    assert!(
        store.layers().unwrap().is_empty(),
        "a killed writer must commit nothing"
    );
    assert!(!store.has_layer(&layer.diff_id));
    assert!(
        root.join("tmp").join(&staged).exists(),
        "the garbage is still in tmp/"
    );

    // The lock died with the process: the next writer gets it, clears the garbage, commits.
    let outcome = commit(&store, &layer);
    assert!(matches!(outcome, LayerOutcome::Committed(_)));
    assert!(
        dir_names(&root.join("tmp")).is_empty(),
        "{:?}",
        dir_names(&root.join("tmp"))
    );
    assert_eq!(
        dir_names(&store.layer_dir(&layer.diff_id).join("data")).len(),
        400
    );
}

#[test]
fn many_layers_extract_in_parallel_each_independent() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let layers: Vec<Layer> = (0..6)
        .map(|i| many_files_layer(100, &format!("p{i}")))
        .collect();
    std::thread::scope(|s| {
        for layer in &layers {
            let store = &store;
            s.spawn(move || {
                let source = Slow {
                    inner: Cursor::new(layer.blob.bytes.clone()),
                    delay: Duration::from_micros(100),
                };
                let outcome = store
                    .commit_layer(
                        &layer.blob.digest,
                        &layer.diff_id,
                        &layer.blob.media_type,
                        source,
                    )
                    .unwrap();
                assert!(matches!(outcome, LayerOutcome::Committed(_)));
            });
        }
    });
    let mut want: Vec<Digest> = layers.iter().map(|l| l.diff_id).collect();
    want.sort();
    assert_eq!(store.layers().unwrap(), want);
    for (i, layer) in layers.iter().enumerate() {
        let names = dir_names(&store.layer_dir(&layer.diff_id).join("data"));
        assert_eq!(names.len(), 100);
        assert!(names.iter().all(|n| n.starts_with(&format!("p{i}-"))));
    }
}

/// A tar stream of one `size`-byte file generated on the fly: nothing of it is ever in memory.
struct TarGen {
    header: Vec<u8>,
    size: u64,
    pos: u64,
}

impl TarGen {
    fn new(size: u64) -> Self {
        let mut header = tar::Header::new_ustar();
        header.set_path("big.bin").unwrap();
        header.set_size(size);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        Self {
            header: header.as_bytes().to_vec(),
            size,
            pos: 0,
        }
    }

    fn total(&self) -> u64 {
        512 + self.size.div_ceil(512) * 512 + 1024
    }
}

impl Read for TarGen {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let total = self.total();
        if self.pos >= total {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(total - self.pos) as usize;
        let buf = &mut buf[..n];
        buf.fill(0);
        for (i, b) in buf
            .iter_mut()
            .enumerate()
            .take(512usize.saturating_sub(self.pos as usize))
        {
            *b = self.header[self.pos as usize + i];
        }
        // Mostly zeros (sparse on disk), a non-zero byte every 64 KiB so the content is real.
        let first = self.pos.max(512);
        let mut p = 512 + (first - 512).div_ceil(65536) * 65536;
        while p < self.pos + n as u64 && p - 512 < self.size {
            buf[(p - self.pos) as usize] = 0xa5;
            p += 65536;
        }
        self.pos += n as u64;
        Ok(n)
    }
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// Child side of the memory test (helper `child_big_layer`): commits a 1 GiB layer into the
/// store at `SKIFF_CHILD_BIG_ROOT` and prints its peak RSS.
fn child_big_layer() {
    let root = child::env("SKIFF_CHILD_BIG_ROOT");
    let size: u64 = 1 << 30;
    let digest = digest_of(TarGen::new(size));
    let store = Store::open(&root).unwrap();
    let before = peak_rss_kib();
    let record = store
        .commit_layer(
            &digest,
            &digest,
            "application/vnd.oci.image.layer.v1.tar",
            TarGen::new(size),
        )
        .unwrap();
    assert_eq!(record.record().size, TarGen::new(size).total());
    println!("RSS_BEFORE={before} RSS_PEAK={}", peak_rss_kib());
}
child_helper!(child_big_layer);

fn digest_of(mut r: impl Read) -> Digest {
    use sha2::Digest as _;
    let mut buf = vec![0u8; 1 << 20];
    let mut hasher = sha2::Sha256::new();
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Digest::from_sha256(hasher)
}

#[test]
fn memory_stays_bounded_on_a_one_gib_layer() {
    let dir = tempfile::tempdir().unwrap();
    let out = child::command("child_big_layer")
        .env("SKIFF_CHILD_BIG_ROOT", dir.path())
        .output()
        .unwrap();
    child::assert_passed("child_big_layer", &out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .split("RSS_BEFORE=")
        .nth(1)
        .unwrap()
        .lines()
        .next()
        .unwrap();
    let nums: Vec<u64> = format!("RSS_BEFORE={line}")
        .split_whitespace()
        .map(|kv| kv.split('=').nth(1).unwrap().parse().unwrap())
        .collect();
    let grown_kib = nums[1].saturating_sub(nums[0]);
    // The layer is 1 GiB; streaming keeps the extra memory to a few buffers.
    assert!(
        grown_kib < 64 * 1024,
        "peak RSS grew by {grown_kib} KiB while committing a 1 GiB layer"
    );
    let file = dir.path().join("layers/sha256");
    let layer = std::fs::read_dir(&file)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let meta = std::fs::metadata(layer.join("fs/big.bin")).unwrap();
    assert_eq!(meta.len(), 1 << 30);
}
