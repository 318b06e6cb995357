//! Files of a layer the store holds, pushed into the kernel's page cache as their directory is
//! listed (FUSE_NOTIFY_STORE): a payload that walks the image (`tar`, `cp -a`, a checksum of
//! every file) then finds each file cached instead of asking the file system for it, one
//! round trip per file (per 128 KiB of a big one). Only from the store (committed, checked):
//! nothing is fetched for it. Small files are pushed for any listing; the others only under
//! the root of a walk that reads files ([`Ahead::reads_through`]), and not once the payload
//! reads them itself.

use std::collections::HashSet;
use std::io::Read as _;
use std::os::unix::fs::FileExt as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use fuser::{INodeNo, Notifier};

use super::LayerReader;
use super::ahead::Ahead;
use super::toc::{Kind, LayerToc, TocEntry};

/// The largest file pushed for any listing: bigger ones take few reads for their size.
pub(crate) const PUSH_MAX: u64 = 256 << 10;

/// How much of a bigger file one notification pushes.
const PIECE: usize = 1 << 20;

/// The file system's end: the files of a listing to push.
pub(crate) struct PushQueue {
    tx: mpsc::Sender<Vec<(u64, TocEntry)>>,
    pushed: Arc<AtomicU64>,
    read: Arc<Mutex<HashSet<u64>>>,
}

/// The pushing thread's end, started once the file system is mounted.
pub(crate) struct PushWork {
    rx: mpsc::Receiver<Vec<(u64, TocEntry)>>,
    pushed: Arc<AtomicU64>,
    /// Files the payload started reading itself: not pushed (again).
    read: Arc<Mutex<HashSet<u64>>>,
}

pub(crate) fn channel() -> (PushQueue, PushWork) {
    let (tx, rx) = mpsc::channel();
    let pushed = Arc::new(AtomicU64::new(0));
    let read = Arc::new(Mutex::new(HashSet::new()));
    (
        PushQueue {
            tx,
            pushed: pushed.clone(),
            read: read.clone(),
        },
        PushWork { rx, pushed, read },
    )
}

impl PushQueue {
    /// Asks for `files` (inode, entry) to be pushed; the regular ones with content are.
    pub(crate) fn push(&self, files: Vec<(u64, TocEntry)>) {
        if !files.is_empty() {
            let _ = self.tx.send(files);
        }
    }

    /// The payload reads file `ino` from its start: the kernel caches what it reads.
    pub(crate) fn reading(&self, ino: u64) {
        if let Ok(mut read) = self.read.lock() {
            read.insert(ino);
        }
    }

    /// Files pushed so far.
    pub(crate) fn pushed(&self) -> u64 {
        self.pushed.load(Ordering::Relaxed)
    }
}

impl PushWork {
    /// Pushes what is queued of layer `toc`, from the store `reader` reads committed layers
    /// of, on a thread of its own, until the file system is gone; `ahead` tells which big
    /// files a walk will read.
    pub(crate) fn start(
        self,
        notifier: Notifier,
        reader: Arc<LayerReader>,
        toc: Arc<LayerToc>,
        ahead: Arc<Ahead>,
    ) {
        let spawned = std::thread::Builder::new()
            .name("lazy-push".into())
            .spawn(move || self.run(&notifier, &reader, &toc, &ahead));
        if let Err(err) = spawned {
            tracing::debug!(%err, "no thread to push files into the page cache");
        }
    }

    fn run(self, notifier: &Notifier, reader: &LayerReader, toc: &LayerToc, ahead: &Ahead) {
        let mut done = HashSet::new();
        // Files listed and not pushed yet: all of them while the layer is not in the store.
        let mut queue: Vec<(u64, TocEntry)> = Vec::new();
        let mut data = Vec::new();
        loop {
            // Nothing waiting: asleep until a listing comes (a job container may live long).
            let next = if queue.is_empty() {
                self.rx
                    .recv()
                    .map_err(|_| mpsc::RecvTimeoutError::Disconnected)
            } else {
                self.rx.recv_timeout(RETRY)
            };
            match next {
                Ok(files) => queue.extend(files),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            if queue.is_empty() || !reader.has_committed(toc) {
                continue;
            }
            for (ino, entry) in queue.drain(..) {
                let small = entry.size <= PUSH_MAX;
                if (!small && !ahead.reads_through(&entry.path))
                    || self.read_by_payload(ino)
                    || !done.insert(ino)
                {
                    continue;
                }
                let Some(file) = reader.committed_file(toc, &entry) else {
                    continue;
                };
                let pushed = if small {
                    push_small(notifier, ino, &entry, file, &mut data)
                } else {
                    self.push_big(notifier, ino, &entry, &file, &mut data)
                };
                if pushed {
                    self.pushed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    fn read_by_payload(&self, ino: u64) -> bool {
        self.read.lock().is_ok_and(|read| read.contains(&ino))
    }

    /// Pushes file `ino` piece by piece, until the payload starts reading it itself.
    fn push_big(
        &self,
        notifier: &Notifier,
        ino: u64,
        entry: &TocEntry,
        file: &std::fs::File,
        piece: &mut Vec<u8>,
    ) -> bool {
        let mut at = 0;
        while at < entry.size {
            if self.read_by_payload(ino) {
                return false;
            }
            let len = usize::try_from(entry.size - at).map_or(PIECE, |rest| rest.min(PIECE));
            piece.resize(len, 0);
            // The kernel forgot the inode already (ENOENT) or has no room: not pushed.
            if file.read_exact_at(piece, at).is_err()
                || notifier.store(INodeNo(ino), at, piece).is_err()
            {
                return false;
            }
            at += len as u64;
        }
        true
    }
}

/// Pushes small file `ino` whole.
fn push_small(
    notifier: &Notifier,
    ino: u64,
    entry: &TocEntry,
    file: std::fs::File,
    data: &mut Vec<u8>,
) -> bool {
    data.clear();
    let read = file.take(PUSH_MAX + 1).read_to_end(data);
    // The kernel forgot the inode already (ENOENT) or has no room: not pushed.
    read.is_ok() && data.len() as u64 == entry.size && notifier.store(INodeNo(ino), 0, data).is_ok()
}

/// How often files listed before their layer was committed are looked for in the store.
const RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// Whether `entry` may be worth pushing: a regular file with content.
pub(crate) fn worth_pushing(entry: &TocEntry) -> bool {
    entry.kind == Kind::File && entry.size > 0
}
