//! The parts of blobs a lazy run has fetched, shared by its two downloaders: the payload's Range
//! reads record what they fetch and the full pull beside them records its stream, so that each
//! takes from the other what has arrived instead of asking the link for it again. Each blob's
//! bytes sit at their own offsets in an unnamed temporary file (sparse; gone with the process);
//! a map of byte ranges says which are there. Everything here is best effort: a write that fails
//! (a full disk) only means the bytes are not shared, and the full pull still checks the whole
//! blob against its digest.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Mutex;

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
}

/// The fetched parts of a lazy run's blobs.
#[derive(Default)]
pub(crate) struct BlobParts {
    /// Where the temporary files go (`None`: the system's temporary directory).
    dir: Option<PathBuf>,
    blobs: Mutex<HashMap<Digest, Blob>>,
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
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Blob>> {
        self.blobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps `bytes`, found at `start` of `blob`.
    pub(crate) fn record(&self, blob: &Digest, start: u64, bytes: &[u8]) {
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
                },
            );
        }
        let Some(entry) = blobs.get_mut(blob) else {
            return;
        };
        // Written before it is marked: a reader never sees a range whose bytes are not there.
        if entry.file.write_all_at(bytes, start).is_ok() {
            entry.have.insert(start, start + bytes.len() as u64);
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
}
