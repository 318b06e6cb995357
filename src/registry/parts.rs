//! The parts of blobs a lazy run has fetched, shared by its two downloaders: the payload's Range
//! reads record what they fetch and the full pull beside them records its stream, so that each
//! takes from the other what has arrived instead of asking the link for it again. Each blob's
//! bytes sit at their own offsets in an unnamed temporary file (sparse; gone with the process);
//! a map of byte ranges says which are there. Everything here is best effort: a write that fails
//! (a full disk) only means the bytes are not shared, and the full pull still checks the whole
//! blob against its digest.
//!
//! A read that wants bytes just ahead of where the pull's stream of that blob has got to waits
//! for the stream ([`BlobParts::wait_for_stream`]) instead of asking the link for them a second
//! time: the stream then stops where the read's bytes begin, and their bytes would cross the
//! link twice.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use crate::Digest;

/// Byte ranges `[start, end)`, merged where they touch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Ranges(BTreeMap<u64, u64>);

impl Ranges {
    pub(crate) fn insert(&mut self, mut start: u64, mut end: u64) {
        if end <= start {
            return;
        }
        // Absorb every range that overlaps or touches [start, end).
        let touching: Vec<(u64, u64)> = self
            .0
            .range(..=end)
            .rev()
            .take_while(|(_, e)| **e >= start)
            .map(|(s, e)| (*s, *e))
            .collect();
        for (s, e) in touching {
            self.0.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        self.0.insert(start, end);
    }

    /// The end of the range holding `at`, if one does.
    pub(crate) fn end_from(&self, at: u64) -> Option<u64> {
        self.0
            .range(..=at)
            .next_back()
            .filter(|(_, e)| **e > at)
            .map(|(_, e)| *e)
    }

    /// Where the first range after `at` starts.
    pub(crate) fn next_start(&self, at: u64) -> Option<u64> {
        self.0.range(at.saturating_add(1)..).next().map(|(s, _)| *s)
    }

    /// The stretches of `[start, end)` no range holds.
    pub(crate) fn missing(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut at = start;
        while at < end {
            match self.end_from(at) {
                Some(e) => at = e,
                None => {
                    let stop = self.next_start(at).map_or(end, |s| s.min(end));
                    out.push((at, stop));
                    at = stop;
                }
            }
        }
        out
    }
}

struct Blob {
    file: File,
    have: Ranges,
    /// Where the pull's stream of this blob has got to, while one runs.
    front: Option<u64>,
}

/// The fetched parts of a lazy run's blobs.
#[derive(Default)]
pub(crate) struct BlobParts {
    /// Where the temporary files go (`None`: the system's temporary directory).
    dir: Option<PathBuf>,
    blobs: Mutex<HashMap<Digest, Blob>>,
    /// Signalled whenever bytes are kept or a stream ends.
    arrived: Condvar,
}

impl std::fmt::Debug for BlobParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobParts")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl BlobParts {
    pub(crate) fn in_dir(dir: PathBuf) -> Self {
        Self {
            dir: Some(dir),
            blobs: Mutex::default(),
            arrived: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Blob>> {
        self.blobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps `bytes`, found at `start` of `blob`.
    pub(crate) fn record(&self, blob: &Digest, start: u64, bytes: &[u8]) {
        self.keep(blob, start, bytes, false);
    }

    /// Keeps `bytes`, found at `start` of `blob` by the pull's stream, which has got to
    /// their end.
    pub(crate) fn record_streamed(&self, blob: &Digest, start: u64, bytes: &[u8]) {
        self.keep(blob, start, bytes, true);
    }

    fn keep(&self, blob: &Digest, start: u64, bytes: &[u8], streamed: bool) {
        let end = start + bytes.len() as u64;
        {
            let mut blobs = self.lock();
            if !blobs.contains_key(blob) {
                let file = match &self.dir {
                    Some(dir) => tempfile::tempfile_in(dir),
                    None => tempfile::tempfile(),
                };
                let Ok(file) = file else { return };
                blobs.insert(
                    *blob,
                    Blob {
                        file,
                        have: Ranges::default(),
                        front: None,
                    },
                );
            }
            let Some(entry) = blobs.get_mut(blob) else {
                return;
            };
            // Written before it is marked: a reader never sees a range whose bytes are not there.
            if entry.file.write_all_at(bytes, start).is_ok() {
                entry.have.insert(start, end);
            }
            if streamed {
                entry.front = Some(end);
            }
        }
        self.arrived.notify_all();
    }

    /// The pull's stream of `blob` has got to `at` (it sent kept bytes up to there).
    pub(crate) fn stream_at(&self, blob: &Digest, at: u64) {
        if let Some(entry) = self.lock().get_mut(blob) {
            entry.front = Some(at);
        }
        self.arrived.notify_all();
    }

    /// Where the pull's stream of `blob` has got to, while one runs.
    pub(crate) fn front(&self, blob: &Digest) -> Option<u64> {
        self.lock().get(blob)?.front
    }

    /// The pull's stream of `blob` has ended (complete, failed or abandoned).
    pub(crate) fn stream_ended(&self, blob: &Digest) {
        if let Some(entry) = self.lock().get_mut(blob) {
            entry.front = None;
        }
        self.arrived.notify_all();
    }

    /// Waits while the first byte of `[start, end)` of `blob` not kept lies at most `ahead`
    /// bytes past where the pull's stream of it has got to, until `deadline` at the latest:
    /// the stream brings it soon, without a second trip over the link. Returns at once where
    /// no stream runs, or the bytes lie behind or far ahead of it.
    pub(crate) fn wait_for_stream(
        &self,
        blob: &Digest,
        start: u64,
        end: u64,
        ahead: u64,
        deadline: Instant,
    ) {
        let mut blobs = self.lock();
        loop {
            let Some(b) = blobs.get(blob) else { return };
            let Some(front) = b.front else { return };
            let Some(&(first, _)) = b.have.missing(start, end).first() else {
                return;
            };
            if first < front || first - front > ahead {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            blobs = match self.arrived.wait_timeout(blobs, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// The stretches of `[start, end)` of `blob` not kept.
    pub(crate) fn missing(&self, blob: &Digest, start: u64, end: u64) -> Vec<(u64, u64)> {
        match self.lock().get(blob) {
            Some(b) => b.have.missing(start, end),
            None if start < end => vec![(start, end)],
            None => Vec::new(),
        }
    }

    /// The end of the kept stretch of `blob` holding `at`, if one does.
    pub(crate) fn end_from(&self, blob: &Digest, at: u64) -> Option<u64> {
        self.lock().get(blob)?.have.end_from(at)
    }

    /// Where the next kept stretch of `blob` after `at` starts.
    pub(crate) fn next_start(&self, blob: &Digest, at: u64) -> Option<u64> {
        self.lock().get(blob)?.have.next_start(at)
    }

    /// Bytes `[start, end)` of `blob`, if all are kept and can be read back.
    pub(crate) fn read(&self, blob: &Digest, start: u64, end: u64) -> Option<Vec<u8>> {
        let file = {
            let blobs = self.lock();
            let b = blobs.get(blob)?;
            if !b.have.missing(start, end).is_empty() {
                return None;
            }
            b.file.try_clone().ok()?
        };
        let mut out = vec![0; usize::try_from(end.checked_sub(start)?).ok()?];
        file.read_exact_at(&mut out, start).ok()?;
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn ranges_merge_and_say_what_is_missing() {
        let mut r = Ranges::default();
        r.insert(10, 20);
        r.insert(30, 40);
        assert_eq!(r.missing(0, 50), vec![(0, 10), (20, 30), (40, 50)]);
        assert_eq!(r.end_from(10), Some(20));
        assert_eq!(r.end_from(19), Some(20));
        assert_eq!(r.end_from(20), None);
        assert_eq!(r.next_start(20), Some(30));
        assert_eq!(r.next_start(30), None);
        // Touching and overlapping ranges become one.
        r.insert(20, 30);
        assert_eq!(r.0.len(), 1);
        assert_eq!(r.end_from(12), Some(40));
        r.insert(5, 12);
        r.insert(35, 45);
        assert_eq!(r.0, BTreeMap::from([(5, 45)]));
        r.insert(0, 100);
        assert_eq!(r.0, BTreeMap::from([(0, 100)]));
        assert!(r.missing(3, 90).is_empty());
        r.insert(7, 7);
        assert_eq!(r.0.len(), 1);
    }

    #[test]
    fn parts_read_back_only_what_was_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let parts = BlobParts::in_dir(dir.path().to_owned());
        let blob = Digest::of(b"blob");
        let other = Digest::of(b"other");
        assert_eq!(parts.missing(&blob, 0, 10), vec![(0, 10)]);
        parts.record(&blob, 4, b"4567");
        parts.record(&blob, 0, b"0123");
        assert_eq!(parts.read(&blob, 1, 7).as_deref(), Some(&b"123456"[..]));
        assert_eq!(parts.read(&blob, 6, 9), None, "byte 8 never came");
        assert_eq!(parts.read(&other, 0, 1), None);
        assert_eq!(parts.missing(&blob, 0, 12), vec![(8, 12)]);
        assert_eq!(parts.end_from(&blob, 3), Some(8));
        parts.record(&blob, 10, b"ab");
        assert_eq!(parts.next_start(&blob, 8), Some(10));
        // Nothing is left on disk: the files have no name.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_read_waits_only_for_bytes_just_ahead_of_a_running_stream() {
        let parts = std::sync::Arc::new(BlobParts::default());
        let blob = Digest::of(b"blob");
        let long = Instant::now() + Duration::from_secs(30);
        // No stream: nothing to wait for.
        parts.wait_for_stream(&blob, 0, 10, 100, long);
        parts.record(&blob, 0, b"0123");
        parts.wait_for_stream(&blob, 8, 10, 100, long);
        assert!(Instant::now() < long);
        // The stream has got to 4: bytes 8-10 come within 100 bytes, 200-210 do not.
        parts.record_streamed(&blob, 0, b"0123");
        parts.wait_for_stream(&blob, 200, 210, 100, long);
        parts.wait_for_stream(&blob, 0, 4, 100, long);
        assert!(Instant::now() < long);
        let streamer = std::thread::spawn({
            let parts = parts.clone();
            move || {
                for at in (4..12).step_by(2) {
                    std::thread::sleep(Duration::from_millis(50));
                    parts.record_streamed(&blob, at, b"xy");
                }
            }
        });
        parts.wait_for_stream(&blob, 8, 10, 100, long);
        assert!(
            parts.missing(&blob, 0, 10).is_empty(),
            "returned before the bytes came"
        );
        streamer.join().unwrap();
        // A stream that ends wakes the waiting read, which then asks for the bytes itself.
        let waiter = std::thread::spawn({
            let parts = parts.clone();
            move || parts.wait_for_stream(&blob, 20, 30, 100, long)
        });
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !waiter.is_finished(),
            "bytes 20-30 are 8 past the stream's front"
        );
        parts.stream_ended(&blob);
        waiter.join().unwrap();
        assert!(Instant::now() < long);
        // A stream that stalls is waited for no longer than the limit.
        parts.stream_at(&blob, 12);
        parts.wait_for_stream(
            &blob,
            20,
            30,
            100,
            Instant::now() + Duration::from_millis(50),
        );
    }
}
