//! Foreground reads that background downloads give way to: while a lazy run's payload waits for
//! a file, the full pull beside it stops reading its bodies (TCP then holds the sender back), so
//! the file's Range request gets the link. The pull resumes once no read has been waiting for
//! a short quiet spell, so a payload's run of reads (an interpreter importing its modules) is
//! not interleaved with the pull. Both keep what they fetch in the gate's [`BlobParts`], and
//! take from it what the other fetched. A payload that reads much of the image (a tar of it, a
//! test suite) is better served by the pull at full speed than by one read after another: once
//! the reads have fetched [`HEAVY`] bytes or asked for [`HEAVY_FILES`] files, or the payload is
//! seen walking the tree (`lazy::ahead`), the pull starts and no longer waits (and reads take
//! what its streams are about to bring from them, see `BlobParts::wait_for_stream`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::parts::BlobParts;

/// How long after the last foreground read the background may go on.
const QUIET: Duration = Duration::from_millis(150);
/// How long without a read before the background starts at all.
const START_QUIET: Duration = Duration::from_secs(1);
/// The bytes the reads fetch before the pull stops giving way to them. Through a 25 MB/s link
/// the tool image's `java -version` fetches 63 MB before its first output, `node` 40 MB,
/// python3 8 MB; a whole-image read got its first output in 23.9 s instead of 29.3 s with
/// this bound (18.4 s with 32 MiB, but java and node then 1.5 s slower).
const HEAVY: u64 = 96 << 20;
/// The files the reads ask the registry for before the pull stops giving way to them: each
/// costs a round trip at least, so a payload that walks the image (a tar of it) is served
/// faster by the pull. Until their first output the tool image's python3 reads 114 files
/// lazily, git 74, java 458, node 585 (the latter two mostly within their first megabytes).
/// Through a 25 MB/s link a whole-image read with 512 files here used the link at about
/// 10 MB/s for its first 4 s (one read after another); with 200 it ended 1-1.5 s sooner, and
/// java's and node's first output came no later (their reads after the bound take what the
/// pull's streams bring, see `LayerReader::fetch`).
const HEAVY_FILES: u64 = 200;

/// Foreground reads in flight, and when the last one ended.
#[derive(Debug)]
pub(crate) struct Foreground {
    active: AtomicUsize,
    last_end: Mutex<Option<Instant>>,
    quiet: Duration,
    start_quiet: Duration,
    created: Instant,
    /// Bytes the foreground reads fetched from the registry.
    fetched: AtomicU64,
    /// From how many fetched bytes on the background no longer waits.
    heavy: u64,
    /// Files the foreground reads asked for (not found in the store).
    files: AtomicU64,
    /// From how many such files on the background no longer waits.
    heavy_files: u64,
    /// Whether the payload walks the image's tree (see `lazy::ahead`): the pull then no
    /// longer waits, as for heavy reads.
    walking: std::sync::atomic::AtomicBool,
    /// What either side fetched of the blobs.
    pub(crate) parts: BlobParts,
    /// How far the pull has unpacked each layer: the reads take a file from there once it is
    /// written.
    pub(crate) unpacking: std::sync::Arc<rootfs_cache::Unpacking>,
}

impl Default for Foreground {
    fn default() -> Self {
        Self::with_quiet(QUIET, START_QUIET)
    }
}

/// One foreground read; the background waits while it lives.
#[derive(Debug)]
pub(crate) struct ForegroundRead<'a>(&'a Foreground);

impl Drop for ForegroundRead<'_> {
    fn drop(&mut self) {
        if let Ok(mut last) = self.0.last_end.lock() {
            *last = Some(Instant::now());
        }
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Foreground {
    pub(crate) fn with_quiet(quiet: Duration, start_quiet: Duration) -> Self {
        Self {
            active: AtomicUsize::new(0),
            last_end: Mutex::new(None),
            quiet,
            start_quiet,
            created: Instant::now(),
            fetched: AtomicU64::new(0),
            heavy: HEAVY,
            files: AtomicU64::new(0),
            heavy_files: HEAVY_FILES,
            walking: std::sync::atomic::AtomicBool::new(false),
            parts: BlobParts::default(),
            unpacking: std::sync::Arc::default(),
        }
    }

    /// A gate whose fetched parts are kept in files in `dir`.
    pub(crate) fn keeping_parts_in(dir: std::path::PathBuf) -> Self {
        Self {
            parts: BlobParts::in_dir(dir),
            ..Self::default()
        }
    }

    /// This gate with the pull going its full speed once the reads fetched `bytes` or asked
    /// for `files`.
    #[cfg(test)]
    pub(crate) fn heavy_from(mut self, bytes: u64, files: u64) -> Self {
        self.heavy = bytes;
        self.heavy_files = files;
        self
    }

    /// Counts a file a foreground read asks for.
    pub(crate) fn read_file(&self) {
        self.files.fetch_add(1, Ordering::AcqRel);
    }

    /// Counts bytes a foreground read fetched from the registry.
    pub(crate) fn fetched(&self, bytes: u64) {
        self.fetched.fetch_add(bytes, Ordering::AcqRel);
    }

    /// Whether the payload has read so much that the pull should no longer wait.
    pub(crate) fn heavy(&self) -> bool {
        self.fetched.load(Ordering::Acquire) >= self.heavy
            || self.files.load(Ordering::Acquire) >= self.heavy_files
            || self.walking.load(Ordering::Acquire)
    }

    /// The payload walks the image's tree: it will read much of it, as heavy reads do.
    pub(crate) fn walks(&self) {
        self.walking.store(true, Ordering::Release);
    }

    /// Marks a foreground read until the guard drops.
    pub(crate) fn begin(&self) -> ForegroundRead<'_> {
        self.active.fetch_add(1, Ordering::AcqRel);
        ForegroundRead(self)
    }

    /// How long the background should wait before reading on (zero: go on).
    fn wait_needed(&self) -> Duration {
        if self.heavy() {
            return Duration::ZERO;
        }
        if self.active.load(Ordering::Acquire) > 0 {
            return self.quiet;
        }
        let last = self.last_end.lock().ok().and_then(|l| *l);
        last.map_or(Duration::ZERO, |t| self.quiet.saturating_sub(t.elapsed()))
    }

    /// Blocks until no read has been waiting for `start_quiet` ([`START_QUIET`]) (counted from this gate's
    /// making before the first read), or the reads are heavy: the background starts no download while the payload is
    /// starting up (which reads without long pauses), because each connection it opens lets
    /// megabytes through the link into socket buffers, which a pause of the reader does not
    /// stop.
    pub(crate) fn wait_start(&self) {
        loop {
            let since = self
                .last_end
                .lock()
                .ok()
                .and_then(|l| *l)
                .unwrap_or(self.created);
            let wait = if self.active.load(Ordering::Acquire) > 0 {
                self.start_quiet
            } else {
                self.start_quiet.saturating_sub(since.elapsed())
            };
            if wait.is_zero() || self.heavy() {
                return;
            }
            std::thread::sleep(wait.min(Duration::from_millis(50)));
        }
    }

    /// Waits until no foreground read is waiting and the quiet spell has passed; returns
    /// whether it waited (a paced body then restarts its speed window).
    pub(crate) async fn give_way(&self) -> bool {
        let mut waited = false;
        loop {
            let wait = self.wait_needed();
            if wait.is_zero() {
                return waited;
            }
            waited = true;
            // Polling at a fraction of the quiet spell: a read's end is seen within it.
            tokio::time::sleep(wait.min(self.quiet / 4).max(Duration::from_millis(5))).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_background_waits_for_reads_and_the_quiet_spell() {
        let fg = Foreground::with_quiet(Duration::from_millis(50), Duration::ZERO);
        assert!(!fg.give_way().await, "no read yet: go on at once");
        let read = fg.begin();
        let start = tokio::time::Instant::now();
        let waiter = async {
            fg.give_way().await;
            start.elapsed()
        };
        let ender = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(read);
        };
        let (waited, ()) = tokio::join!(waiter, ender);
        // The read ended at 100 ms, then the quiet spell.
        assert!(waited >= Duration::from_millis(150), "{waited:?}");
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(!fg.give_way().await, "quiet long enough: go on at once");
    }

    #[tokio::test]
    async fn the_background_no_longer_waits_once_the_reads_are_heavy() {
        let fg = std::sync::Arc::new(
            Foreground::with_quiet(Duration::from_secs(600), Duration::from_secs(600))
                .heavy_from(1000, u64::MAX),
        );
        let read = fg.begin();
        fg.fetched(999);
        assert!(
            tokio::time::timeout(Duration::from_millis(100), fg.give_way())
                .await
                .is_err(),
            "a read waits: the background too"
        );
        fg.fetched(1);
        // A read still waits, yet neither the start nor the stream waits any more.
        let no_wait = tokio::time::timeout(Duration::from_secs(5), fg.give_way()).await;
        assert_eq!(no_wait, Ok(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let starting = fg.clone();
        std::thread::spawn(move || {
            starting.wait_start();
            let _ = tx.send(());
        });
        assert!(
            rx.recv_timeout(Duration::from_secs(5)).is_ok(),
            "the start waited for a quiet spell"
        );
        drop(read);
    }

    #[tokio::test]
    async fn the_background_no_longer_waits_once_the_reads_touched_many_files() {
        let fg = Foreground::with_quiet(Duration::from_secs(600), Duration::from_secs(600))
            .heavy_from(u64::MAX, 3);
        let read = fg.begin();
        fg.read_file();
        fg.read_file();
        assert!(
            tokio::time::timeout(Duration::from_millis(100), fg.give_way())
                .await
                .is_err(),
            "two files: the background still waits"
        );
        fg.read_file();
        let no_wait = tokio::time::timeout(Duration::from_secs(5), fg.give_way()).await;
        assert_eq!(no_wait, Ok(false));
        drop(read);
    }

    #[test]
    fn the_background_starts_after_a_long_quiet_spell() {
        let fg = Foreground::with_quiet(Duration::from_millis(10), Duration::from_millis(200));
        let start = std::time::Instant::now();
        std::thread::scope(|s| {
            s.spawn(|| {
                // Reads every 50 ms for 300 ms: never quiet long enough.
                for _ in 0..6 {
                    drop(fg.begin());
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
            std::thread::sleep(Duration::from_millis(20));
            fg.wait_start();
        });
        // The last read ended at about 250 ms, then 200 ms of quiet.
        assert!(
            start.elapsed() >= Duration::from_millis(400),
            "{:?}",
            start.elapsed()
        );
    }
}
