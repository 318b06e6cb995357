//! An image mounted lazily: one [`ImageFs`] FUSE mount of its merged tree.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::LazyError;
use super::ahead::{self, Ahead};
use super::fs::{Fetch, ImageFs, Layer};
use super::toc::LayerToc;

/// A lazily mounted image; dropping it unmounts it.
pub struct LazyMount {
    target: PathBuf,
    mounted: Option<Mounted>,
}

/// A mounted image's file system: its session and the listing ahead of the payload.
pub(crate) struct Mounted {
    session: fuser::BackgroundSession,
    ahead: Arc<Ahead>,
}

impl std::fmt::Debug for LazyMount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyMount")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl LazyMount {
    /// Where the image's root is.
    pub fn target(&self) -> &Path {
        &self.target
    }
}

impl Drop for LazyMount {
    fn drop(&mut self) {
        if let Some(mounted) = self.mounted.take() {
            end_session(&self.target, mounted);
        }
    }
}

/// How long the end of a lazy mount waits for its file system to end.
const END_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Detaches the mount at `dir` (a process may still be using it: it goes once nothing does)
/// and waits, up to [`END_WAIT`], for the file system to end, so that its serving threads are
/// joined and its last log lines written; a mount still in use is left to the kernel.
pub(crate) fn end_session(dir: &Path, mounted: Mounted) {
    let Mounted { session, ahead } = mounted;
    // The listing's open directory would keep the file system alive.
    ahead.stop();
    // Already gone (ENOENT, EINVAL) is fine: the join below is what waits.
    let _ = nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH);
    let (ended, end) = std::sync::mpsc::channel();
    let joiner = std::thread::Builder::new().spawn(move || {
        let _ = session.join();
        let _ = ended.send(());
    });
    if joiner.is_ok() && end.recv_timeout(END_WAIT).is_err() {
        tracing::debug!(dir = %dir.display(), "the lazy image's file system had not ended; leaving it");
    }
}

fn failed(what: &str, path: &Path, e: impl std::fmt::Display) -> LazyError {
    LazyError::Mount {
        reason: format!("{what} {}: {e}", path.display()),
    }
}

/// Requests served at once: a payload's threads (and the kernel's read-ahead) wait for
/// different files in parallel.
const SERVING_THREADS: usize = 8;

/// Serves the image of `tables` (bottom layer first) as a read-only FUSE file system at `dir`,
/// files read by `reader`.
pub(crate) fn mount_image(
    dir: &Path,
    tables: &[Arc<LayerToc>],
    reader: &Arc<super::LayerReader>,
) -> Result<Mounted, LazyError> {
    if tables.is_empty() {
        return Err(LazyError::Mount {
            reason: "the image has no layers".into(),
        });
    }
    let mut layers = Vec::new();
    let mut pushes = Vec::new();
    for toc in tables {
        let (toc_for_fetch, reader_for_fetch) = (toc.clone(), reader.clone());
        let fetch: Box<Fetch> = Box::new(move |entry, offset, size| {
            reader_for_fetch.read_at(&toc_for_fetch, entry, offset, size)
        });
        let push = if reader.reads_committed_layers() {
            let (queue, work) = super::push::channel();
            pushes.push((work, toc.clone()));
            Some(queue)
        } else {
            None
        };
        layers.push(Layer {
            toc: toc.clone(),
            fetch,
            push,
        });
    }
    let ahead = Arc::new(Ahead::telling(reader.foreground.clone()));
    let fs = ImageFs::new(layers).listing_ahead(ahead.clone());
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::RO,
        fuser::MountOption::FSName("skiff-lazy".into()),
        fuser::MountOption::Subtype("skiff".into()),
    ];
    config.n_threads = Some(SERVING_THREADS);
    // Each thread reads requests from a /dev/fuse descriptor of its own.
    config.clone_fd = true;
    let session =
        fuser::spawn_mount(fs, dir, &config).map_err(|e| failed("mounting FUSE on", dir, e))?;
    for (work, toc) in pushes {
        work.start(session.notifier(), reader.clone(), toc, ahead.clone());
    }
    ahead::start(ahead.clone(), dir.to_owned());
    Ok(Mounted { session, ahead })
}

/// Mounts `tables` (bottom layer first) at `target`, files read by `reader`.
pub(crate) fn mount(
    tables: &[Arc<LayerToc>],
    reader: &Arc<super::LayerReader>,
    target: &Path,
) -> Result<LazyMount, LazyError> {
    let mounted = mount_image(target, tables, reader)?;
    Ok(LazyMount {
        target: target.to_owned(),
        mounted: Some(mounted),
    })
}
