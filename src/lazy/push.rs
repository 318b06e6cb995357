//! Files of a layer the store holds, pushed into the kernel's page cache as their directory is
//! listed (FUSE_NOTIFY_STORE): a payload that walks the image (`tar`, `cp -a`, a checksum of
//! every file) then finds each small file cached instead of asking the file system for it, one
//! round trip per file. Only from the store (committed, checked): nothing is fetched for it.

use std::collections::HashSet;
use std::io::Read as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use fuser::{INodeNo, Notifier};

use super::LayerReader;
use super::toc::{LayerToc, TocEntry};

/// The largest file pushed: bigger ones take few reads for their size.
pub(crate) const PUSH_MAX: u64 = 256 << 10;

/// The file system's end: the files of a listing to push.
pub(crate) struct PushQueue {
    tx: mpsc::Sender<Vec<(u64, TocEntry)>>,
    pushed: Arc<AtomicU64>,
}

/// The pushing thread's end, started once the file system is mounted.
pub(crate) struct PushWork {
    rx: mpsc::Receiver<Vec<(u64, TocEntry)>>,
    pushed: Arc<AtomicU64>,
}

pub(crate) fn channel() -> (PushQueue, PushWork) {
    let (tx, rx) = mpsc::channel();
    let pushed = Arc::new(AtomicU64::new(0));
    (
        PushQueue {
            tx,
            pushed: pushed.clone(),
        },
        PushWork { rx, pushed },
    )
}

impl PushQueue {
    /// Asks for `files` (inode, entry) to be pushed; the small regular ones are.
    pub(crate) fn push(&self, files: Vec<(u64, TocEntry)>) {
        if !files.is_empty() {
            let _ = self.tx.send(files);
        }
    }

    /// Files pushed so far.
    pub(crate) fn pushed(&self) -> u64 {
        self.pushed.load(Ordering::Relaxed)
    }
}

impl PushWork {
    /// Pushes what is queued of layer `toc`, from the store `reader` reads committed layers
    /// of, on a thread of its own, until the file system is gone.
    pub(crate) fn start(self, notifier: Notifier, reader: Arc<LayerReader>, toc: Arc<LayerToc>) {
        let spawned = std::thread::Builder::new()
            .name("lazy-push".into())
            .spawn(move || self.run(&notifier, &reader, &toc));
        if let Err(err) = spawned {
            tracing::debug!(%err, "no thread to push files into the page cache");
        }
    }

    fn run(self, notifier: &Notifier, reader: &LayerReader, toc: &LayerToc) {
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
                if !done.insert(ino) {
                    continue;
                }
                let Some(file) = reader.committed_file(toc, &entry) else {
                    continue;
                };
                data.clear();
                let read = file.take(PUSH_MAX + 1).read_to_end(&mut data);
                if read.is_err() || data.len() as u64 != entry.size {
                    continue;
                }
                // The kernel forgot the inode already (ENOENT) or has no room: not pushed.
                if notifier.store(INodeNo(ino), 0, &data).is_ok() {
                    self.pushed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// How often files listed before their layer was committed are looked for in the store.
const RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// Whether `entry` is worth pushing: a regular file with content, and small.
pub(crate) fn worth_pushing(entry: &TocEntry) -> bool {
    entry.kind == super::toc::Kind::File && entry.size > 0 && entry.size <= PUSH_MAX
}
