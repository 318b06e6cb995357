//! A layer's uncompressed stream in chunks, the stretches between two inflate checkpoints: a
//! file read lazily fetches the chunks it covers, the missing ones next to each other in one
//! Range request (coalescing), inflates them once and keeps them (the rest of a chunk is the
//! read-ahead: the next files of a directory are usually there). Concurrent readers of a chunk
//! wait for the one fetching it. The cache is bounded; the least recently used chunks go first.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Condvar, Mutex};

use super::LazyError;
use super::inflate::{Checkpoint, Inflater, WINDOW};
use super::toc::{LayerToc, TocEntry};
use crate::Digest;

/// How many bytes of inflated chunks the cache keeps by default.
pub(crate) const CACHE_BYTES: usize = 256 << 20;

/// Fetches byte ranges `(blob, start, end)`, all at once: their bytes in the same order.
pub(crate) type Fetch<'a> = dyn Fn(&[(Digest, u64, u64)]) -> Result<Vec<Vec<u8>>, LazyError> + 'a;

enum Slot {
    /// Some reader is fetching it.
    Loading,
    /// Inflated; the tick of its last use.
    Ready(Arc<Vec<u8>>, u64),
}

#[derive(Default)]
struct State {
    slots: HashMap<(Digest, usize), Slot>,
    bytes: usize,
    tick: u64,
    /// By layer: how many misses in a row went on where the last one ended.
    streaks: HashMap<Digest, u32>,
}

/// Read-ahead doubles with each miss in order, up to 2^(MAX_STREAK-1) chunks (16 MiB of
/// stream): a reader of the whole layer then makes few, large requests.
const MAX_STREAK: u32 = 6;

/// The chunk cache of an image's layers.
pub(crate) struct Chunks {
    state: Mutex<State>,
    changed: Condvar,
    budget: usize,
}

impl std::fmt::Debug for Chunks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunks")
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

/// Chunk `i` of `toc`: the checkpoint it starts from (None: the stream's start), its
/// uncompressed start and end, and its compressed end.
fn bounds(toc: &LayerToc, i: usize) -> (Option<&Checkpoint>, u64, u64, u64) {
    let from = i.checked_sub(1).and_then(|j| toc.checkpoints.get(j));
    let (out_end, in_end) = toc
        .checkpoints
        .get(i)
        .map_or((toc.uncompressed_size, toc.compressed_size), |p| {
            (p.output, p.input)
        });
    (from, from.map_or(0, |p| p.output), out_end, in_end)
}

/// The chunk holding uncompressed byte `at`.
fn chunk_at(toc: &LayerToc, at: u64) -> usize {
    toc.checkpoints.partition_point(|p| p.output <= at)
}

/// The compressed bytes `[start, end)` of `toc`'s blob that uncompressed bytes `[from, to)`
/// are inflated from (checkpoint to checkpoint).
pub(crate) fn compressed_span(toc: &LayerToc, from: u64, to: u64) -> (u64, u64) {
    let first = bounds(toc, chunk_at(toc, from)).0.map_or(0, |p| p.input);
    let last = bounds(toc, chunk_at(toc, to.saturating_sub(1).max(from))).3;
    (first, last)
}

impl Chunks {
    pub(crate) fn new(budget: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            budget,
        }
    }

    /// `entry`'s content, checked against its digest; `fetch` gives ranges of the layer blob
    /// (and of its windows blob).
    pub(crate) fn read(
        &self,
        toc: &LayerToc,
        entry: &TocEntry,
        fetch: &Fetch<'_>,
    ) -> Result<Vec<u8>, LazyError> {
        let bad = |reason: String| LazyError::Content {
            path: entry.path.clone(),
            layer: toc.layer,
            reason,
        };
        let end = entry
            .offset
            .checked_add(entry.size)
            .filter(|end| *end <= toc.uncompressed_size)
            .ok_or_else(|| bad("the layer ends before the file does".into()))?;
        let mut content = Vec::new();
        if entry.size > 0 {
            let first = chunk_at(toc, entry.offset);
            let last = chunk_at(toc, end - 1);
            // The table's word: reserve no more than a sane file up front.
            content.reserve(usize::try_from(entry.size.min(1 << 26)).unwrap_or(0));
            // A chunk that cannot be fetched or inflated fails this file's read.
            let chunks = self.chunks(toc, first, last, fetch).map_err(|e| match e {
                LazyError::Layer { reason, .. } => bad(reason),
                LazyError::Registry(source) => LazyError::Read {
                    path: entry.path.clone(),
                    layer: toc.layer,
                    source: Box::new(source),
                },
                other => other,
            })?;
            for (i, chunk) in (first..=last).zip(chunks) {
                let (_, start, _, _) = bounds(toc, i);
                let from = usize::try_from(entry.offset.saturating_sub(start)).unwrap_or(0);
                let to = usize::try_from(end - start)
                    .unwrap_or(usize::MAX)
                    .min(chunk.len());
                content.extend_from_slice(chunk.get(from..to).unwrap_or_default());
            }
        }
        if content.len() as u64 != entry.size {
            return Err(bad("the layer ends before the file does".into()));
        }
        let actual = Digest::of(&content);
        match entry.digest {
            Some(d) if d == actual => Ok(content),
            Some(d) => Err(bad(format!("content digest {actual}, the index says {d}"))),
            None => Err(bad("not a regular file".into())),
        }
    }

    /// Chunks `first..=last` of `toc`, fetching the missing ones. What this read fetched
    /// itself it keeps, whatever the cache evicts meanwhile. Where the reader goes through the
    /// layer in order (the chunk before `first` is cached) and a request is made anyway, the
    /// chunk after `last` comes with it: the next files of a directory are there.
    fn chunks(
        &self,
        toc: &LayerToc,
        first: usize,
        last: usize,
        fetch: &Fetch<'_>,
    ) -> Result<Vec<Arc<Vec<u8>>>, LazyError> {
        let mut have: Vec<Option<Arc<Vec<u8>>>> = vec![None; last - first + 1];
        loop {
            let mut claimed: Vec<usize> = Vec::new();
            let mut waiting = false;
            {
                let mut state = self.lock();
                state.tick += 1;
                let tick = state.tick;
                for (i, slot) in (first..=last).zip(have.iter_mut()) {
                    if slot.is_some() {
                        continue;
                    }
                    match state.slots.get_mut(&(toc.layer, i)) {
                        Some(Slot::Ready(data, used)) => {
                            *used = tick;
                            *slot = Some(data.clone());
                        }
                        Some(Slot::Loading) => waiting = true,
                        None => {
                            state.slots.insert((toc.layer, i), Slot::Loading);
                            claimed.push(i);
                        }
                    }
                }
                if claimed.last() == Some(&last) {
                    let sequential = first
                        .checked_sub(1)
                        .is_some_and(|b| state.slots.contains_key(&(toc.layer, b)));
                    let streak = state.streaks.entry(toc.layer).or_insert(0);
                    *streak = if sequential {
                        (*streak + 1).min(MAX_STREAK)
                    } else {
                        0
                    };
                    let ahead = if sequential { 1 << (*streak - 1) } else { 0 };
                    for i in (last + 1..=last + ahead).take_while(|i| *i <= toc.checkpoints.len()) {
                        if state.slots.contains_key(&(toc.layer, i)) {
                            break;
                        }
                        state.slots.insert((toc.layer, i), Slot::Loading);
                        claimed.push(i);
                    }
                }
            }
            if claimed.is_empty() && !waiting {
                return Ok(have.into_iter().flatten().collect());
            }
            // Runs of adjacent claimed chunks, one request each.
            let mut runs: Vec<(usize, usize)> = Vec::new();
            for i in claimed {
                match runs.last_mut() {
                    Some((_, end)) if *end + 1 == i => *end = i,
                    _ => runs.push((i, i)),
                }
            }
            let mut failure = None;
            for (a, b) in runs {
                if failure.is_some() {
                    self.release(toc, a, b);
                    continue;
                }
                match fetch_run(toc, a, b, fetch) {
                    Ok(chunks) => {
                        for (i, chunk) in (a..).zip(self.store(toc, a, chunks)) {
                            if let Some(slot) = have.get_mut(i - first) {
                                *slot = Some(chunk);
                            }
                        }
                    }
                    Err(err) => {
                        self.release(toc, a, b);
                        failure = Some(err);
                    }
                }
            }
            if let Some(err) = failure {
                return Err(err);
            }
            // Wait for the chunks other readers fetch, then look again.
            let mut state = self.lock();
            while (first..=last)
                .any(|i| matches!(state.slots.get(&(toc.layer, i)), Some(Slot::Loading)))
            {
                state = self
                    .changed
                    .wait(state)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Gives up the claim on chunks `a..=b` (their fetch failed).
    fn release(&self, toc: &LayerToc, a: usize, b: usize) {
        let mut state = self.lock();
        for i in a..=b {
            state.slots.remove(&(toc.layer, i));
        }
        drop(state);
        self.changed.notify_all();
    }

    /// Keeps the chunks fetched from `a` on, and evicts the least recently used beyond the
    /// budget (never one just stored); gives them back shared.
    fn store(&self, toc: &LayerToc, a: usize, chunks: Vec<Vec<u8>>) -> Vec<Arc<Vec<u8>>> {
        let chunks: Vec<Arc<Vec<u8>>> = chunks.into_iter().map(Arc::new).collect();
        let mut state = self.lock();
        state.tick += 1;
        let tick = state.tick;
        for (i, data) in (a..).zip(&chunks) {
            state.bytes += data.len();
            state
                .slots
                .insert((toc.layer, i), Slot::Ready(data.clone(), tick));
        }
        while state.bytes > self.budget {
            let oldest = state
                .slots
                .iter()
                .filter_map(|(k, s)| match s {
                    Slot::Ready(d, used) if *used < tick => Some((*used, *k, d.len())),
                    _ => None,
                })
                .min();
            let Some((_, key, len)) = oldest else { break };
            state.slots.remove(&key);
            state.bytes -= len;
        }
        drop(state);
        self.changed.notify_all();
        chunks
    }
}

/// Fetches and inflates chunks `a..=b` of `toc` with one request (two at once where the
/// window of the checkpoint they start from is in the windows blob).
fn fetch_run(
    toc: &LayerToc,
    a: usize,
    b: usize,
    fetch: &Fetch<'_>,
) -> Result<Vec<Vec<u8>>, LazyError> {
    let bad = |reason: String| LazyError::Layer {
        layer: toc.layer,
        reason,
    };
    let (from, _, _, _) = bounds(toc, a);
    let (_, _, out_end, in_end) = bounds(toc, b);
    let in_start = from.map_or(0, |p| p.input);
    let mut ranges = vec![(toc.layer, in_start, in_end)];
    let placed = from.and_then(|p| Some((p.window_at?, toc.windows?)));
    if let Some(((at, len), windows)) = placed {
        ranges.push((windows.digest, at, at + len));
    }
    let mut fetched = fetch(&ranges)?.into_iter();
    let compressed = fetched.next().unwrap_or_default();
    let mut inflater = match from {
        Some(p) if placed.is_some() => {
            let window = window(&fetched.next().unwrap_or_default())
                .map_err(|e| bad(format!("the window of checkpoint {}: {e}", p.output)))?;
            let point = Checkpoint {
                window,
                window_at: None,
                ..p.clone()
            };
            Inflater::resume(&compressed[..], &point).map_err(|e| bad(e.to_string()))?
        }
        Some(p) => Inflater::resume(&compressed[..], p).map_err(|e| bad(e.to_string()))?,
        None => Inflater::new(&compressed[..]),
    };
    let mut chunks = Vec::with_capacity(b - a + 1);
    for i in a..=b {
        let (_, start, end, _) = bounds(toc, i);
        let len = end.saturating_sub(start);
        // Checkpoints lie CHECKPOINT_SPAN apart (more only where a deflate block is long); the
        // table's word reserves no more.
        let reserve = len.min(2 * super::toc::CHECKPOINT_SPAN);
        let mut chunk = Vec::with_capacity(usize::try_from(reserve).unwrap_or(0));
        (&mut inflater)
            .take(len)
            .read_to_end(&mut chunk)
            .map_err(|e| bad(format!("inflating bytes {start}..{end}: {e}")))?;
        if (chunk.len() as u64) < len {
            let at = start + chunk.len() as u64;
            return Err(bad(format!(
                "the layer ends before its table says: bytes {in_start}..{in_end} inflate to \
                 byte {at} of the stream, not {out_end}"
            )));
        }
        chunks.push(chunk);
    }
    Ok(chunks)
}

/// A window from its raw deflate in the windows blob.
fn window(deflated: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut window = Vec::with_capacity(WINDOW);
    flate2::read::DeflateDecoder::new(deflated)
        .take(WINDOW as u64 + 1)
        .read_to_end(&mut window)?;
    if window.is_empty() || window.len() > WINDOW {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} bytes, not 1 to {WINDOW}", window.len()),
        ));
    }
    Ok(window)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lazy::toc::Kind;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A gzip layer of `files` pseudo-random files (little compressible), and its table.
    fn layer(files: usize, size: usize) -> (Vec<u8>, LayerToc) {
        let mut tar = tar::Builder::new(Vec::new());
        let mut seed = 7u64;
        for n in 0..files {
            let data: Vec<u8> = (0..size)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (seed >> 56) as u8 % 16
                })
                .collect();
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, format!("f{n}"), &data[..]).unwrap();
        }
        let tar = tar.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        let blob = gz.finish().unwrap();
        let toc = LayerToc::build(&blob[..], Digest::of(&blob)).unwrap();
        (blob, toc)
    }

    /// The ranges asked for, out of `blobs`.
    fn serve(
        blobs: &[(Digest, &[u8])],
        ranges: &[(Digest, u64, u64)],
    ) -> Result<Vec<Vec<u8>>, LazyError> {
        ranges
            .iter()
            .map(|(d, a, b)| {
                let (_, blob) = blobs.iter().find(|(x, _)| x == d).expect("a known blob");
                let end = (*b as usize).min(blob.len());
                Ok(blob[(*a as usize).min(end)..end].to_vec())
            })
            .collect()
    }

    fn files(toc: &LayerToc) -> Vec<&TocEntry> {
        toc.entries
            .iter()
            .filter(|e| e.kind == Kind::File)
            .collect()
    }

    #[test]
    fn every_file_reads_back_and_neighbours_cost_no_request() {
        let (blob, mut toc) = layer(40, 300_000);
        assert!(toc.checkpoints.len() >= 6, "{}", toc.checkpoints.len());
        // As published: the windows in a blob of their own, the table through JSON.
        let windows = toc.split_windows().unwrap();
        let toc = LayerToc::parse(&serde_json::to_vec(&toc).unwrap()).unwrap();
        let w = toc.windows.unwrap().digest;
        let requests = AtomicUsize::new(0);
        let fetch = |r: &[(Digest, u64, u64)]| {
            requests.fetch_add(1, Ordering::SeqCst);
            serve(&[(toc.layer, &blob), (w, &windows)], r)
        };
        let chunks = Chunks::new(CACHE_BYTES);
        for e in files(&toc) {
            let content = chunks.read(&toc, e, &fetch).unwrap();
            assert_eq!(Some(Digest::of(&content)), e.digest, "{}", e.path);
        }
        // Read in order, each request brings chunks after the ones asked for, twice as many
        // each time (1 + 2 + 3 + 5 + 9 + 17 chunks in six requests; files straddling chunks
        // reuse the cached one). Without read-ahead, one request per chunk.
        let n = requests.load(Ordering::SeqCst);
        let chunk_count = toc.checkpoints.len() + 1;
        assert!(chunk_count >= 20, "{chunk_count} chunks");
        assert!(n <= 7, "{n} requests for {chunk_count} chunks");
        // All over again: from the cache.
        for e in files(&toc) {
            chunks.read(&toc, e, &fetch).unwrap();
        }
        assert_eq!(requests.load(Ordering::SeqCst), n);
    }

    #[test]
    fn adjacent_missing_chunks_come_in_one_request() {
        let (blob, toc) = layer(1, 7_000_000);
        let requests = Mutex::new(Vec::new());
        let fetch = |r: &[(Digest, u64, u64)]| {
            requests.lock().unwrap().push(r.to_vec());
            serve(&[(toc.layer, &blob)], r)
        };
        let e = files(&toc)[0];
        let content = Chunks::new(CACHE_BYTES).read(&toc, e, &fetch).unwrap();
        assert_eq!(content.len(), 7_000_000);
        assert_eq!(requests.lock().unwrap().len(), 1, "{:?}", requests.lock());
    }

    #[test]
    fn a_small_budget_evicts_and_a_failed_fetch_is_retried_by_the_next_read() {
        let (blob, toc) = layer(40, 300_000);
        let requests = AtomicUsize::new(0);
        let fail = AtomicUsize::new(1);
        let fetch = |r: &[(Digest, u64, u64)]| {
            requests.fetch_add(1, Ordering::SeqCst);
            if fail.swap(0, Ordering::SeqCst) == 1 {
                return Err(LazyError::Index {
                    reason: "dropped".into(),
                });
            }
            serve(&[(toc.layer, &blob)], r)
        };
        let chunks = Chunks::new(1);
        let all = files(&toc);
        assert!(chunks.read(&toc, all[0], &fetch).is_err());
        for e in &all {
            chunks.read(&toc, e, &fetch).unwrap();
        }
        let n = requests.load(Ordering::SeqCst);
        chunks.read(&toc, all[0], &fetch).unwrap();
        assert!(
            requests.load(Ordering::SeqCst) > n,
            "evicted: fetched again"
        );
        assert!(chunks.lock().bytes <= 4 << 20, "{}", chunks.lock().bytes);
    }

    #[test]
    fn concurrent_readers_of_a_chunk_share_one_fetch() {
        let (blob, toc) = layer(4, 100_000);
        let requests = AtomicUsize::new(0);
        let fetch = |r: &[(Digest, u64, u64)]| {
            requests.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(50));
            serve(&[(toc.layer, &blob)], r)
        };
        let chunks = Chunks::new(CACHE_BYTES);
        let all = files(&toc);
        std::thread::scope(|s| {
            for e in &all {
                s.spawn(|| chunks.read(&toc, e, &fetch).unwrap());
            }
        });
        assert_eq!(requests.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_lying_table_or_a_short_answer_fails_the_read() {
        let (blob, toc) = layer(3, 1000);
        let mut lying = files(&toc)[1].clone();
        lying.digest = Some(Digest::of(b"something else"));
        let fetch = |r: &[(Digest, u64, u64)]| serve(&[(toc.layer, &blob)], r);
        let err = Chunks::new(CACHE_BYTES)
            .read(&toc, &lying, &fetch)
            .unwrap_err();
        assert!(err.to_string().contains("the index says"), "{err}");
        let short = |r: &[(Digest, u64, u64)]| {
            let (d, a, b) = r[0];
            serve(
                &[(toc.layer, &blob)],
                &[(d, a, b.saturating_sub(100).max(a))],
            )
        };
        let err = Chunks::new(CACHE_BYTES)
            .read(&toc, files(&toc)[2], &short)
            .unwrap_err();
        let err = err.to_string();
        assert!(
            err.contains("inflating") || err.contains("the layer ends before"),
            "{err}"
        );
        let mut past_end = files(&toc)[2].clone();
        past_end.size = u64::MAX - 1;
        let err = Chunks::new(CACHE_BYTES)
            .read(&toc, &past_end, &fetch)
            .unwrap_err();
        assert!(err.to_string().contains("ends before the file"), "{err}");
    }

    #[test]
    fn a_damaged_windows_blob_fails_the_read_not_the_process() {
        let (blob, mut toc) = layer(40, 300_000);
        let mut windows = toc.split_windows().unwrap();
        let w = toc.windows.unwrap().digest;
        for b in windows.iter_mut().skip(7).step_by(13) {
            *b ^= 0x5a;
        }
        let fetch = |r: &[(Digest, u64, u64)]| serve(&[(toc.layer, &blob), (w, &windows)], r);
        let chunks = Chunks::new(CACHE_BYTES);
        // The last file lies past the first checkpoint: its chunk starts from a window.
        let last = *files(&toc).last().unwrap();
        let err = chunks.read(&toc, last, &fetch).unwrap_err().to_string();
        assert!(
            err.contains("window") || err.contains("inflating") || err.contains("the index says"),
            "{err}"
        );
    }
}
