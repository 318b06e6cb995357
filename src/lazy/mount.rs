//! An image mounted lazily: each layer a [`LayerFs`] FUSE mount in a scratch directory, and a
//! read-only overlay of them (a bind mount for one layer) at the target.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::LazyError;
use super::fs::{Fetch, LayerFs};
use super::toc::LayerToc;

/// The mounts of one lazily mounted image; dropping it unmounts the overlay, then the layers.
pub struct LazyMount {
    target: PathBuf,
    /// Whether the overlay (or bind) mount at `target` was made.
    mounted: bool,
    sessions: Vec<fuser::BackgroundSession>,
    _scratch: tempfile::TempDir,
}

impl std::fmt::Debug for LazyMount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyMount")
            .field("target", &self.target)
            .field("layers", &self.sessions.len())
            .finish()
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
        if self.mounted
            && let Err(err) = nix::mount::umount2(&self.target, nix::mount::MntFlags::MNT_DETACH)
        {
            tracing::warn!(target = %self.target.display(), %err, "unmounting the lazy image");
        }
        for session in self.sessions.drain(..) {
            if let Err(err) = session.umount_and_join() {
                tracing::warn!(%err, "unmounting a lazy layer");
            }
        }
    }
}

fn failed(what: &str, path: &Path, e: impl std::fmt::Display) -> LazyError {
    LazyError::Mount {
        reason: format!("{what} {}: {e}", path.display()),
    }
}

/// Requests of one layer's file system served at once: a payload's threads (and the kernel's
/// read-ahead) wait for different files in parallel.
const SERVING_THREADS: usize = 4;

/// Serves layer `toc` as a read-only FUSE file system at `dir`, files read by `reader`.
pub(crate) fn mount_layer(
    dir: &Path,
    toc: &Arc<LayerToc>,
    reader: &Arc<super::LayerReader>,
    rootless: bool,
) -> Result<fuser::BackgroundSession, LazyError> {
    let (toc_for_fetch, reader_for_fetch) = (toc.clone(), reader.clone());
    let layer_fetch: Box<Fetch> = Box::new(move |entry, offset, size| {
        reader_for_fetch.read_at(&toc_for_fetch, entry, offset, size)
    });
    let (queue, work) = if reader.reads_committed_layers() {
        let (queue, work) = super::push::channel();
        (Some(queue), Some(work))
    } else {
        (None, None)
    };
    let fs = LayerFs::new(toc, layer_fetch, queue, rootless);
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
    if let Some(work) = work {
        work.start(session.notifier(), reader.clone(), toc.clone());
    }
    Ok(session)
}

/// Mounts `tables` (bottom layer first) at `target`, files read by `reader`.
pub(crate) fn mount(
    tables: &[Arc<LayerToc>],
    reader: &Arc<super::LayerReader>,
    target: &Path,
    rootless: bool,
) -> Result<LazyMount, LazyError> {
    let scratch = tempfile::Builder::new()
        .prefix("skiff-lazy-")
        .tempdir()
        .map_err(|e| failed("creating a scratch directory in", &std::env::temp_dir(), e))?;
    let mut sessions = Vec::new();
    let mut lowers = Vec::new();
    for (i, toc) in tables.iter().enumerate() {
        let dir = scratch.path().join(format!("l{i}"));
        std::fs::create_dir(&dir).map_err(|e| failed("creating", &dir, e))?;
        let session = mount_layer(&dir, toc, reader, rootless)?;
        sessions.push(session);
        lowers.push(dir);
    }
    let mut guard = LazyMount {
        target: target.to_owned(),
        mounted: false,
        sessions,
        _scratch: scratch,
    };
    let result = match lowers.as_slice() {
        [] => {
            return Err(LazyError::Mount {
                reason: "the image has no layers".into(),
            });
        }
        [only] => nix::mount::mount(
            Some(only.as_path()),
            target,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        ),
        _ => {
            let lowerdir: Vec<String> = lowers
                .iter()
                .rev()
                .map(|p| p.display().to_string())
                .collect();
            let mut data = format!("lowerdir={}", lowerdir.join(":"));
            if rootless {
                data.push_str(",userxattr");
            }
            nix::mount::mount(
                Some("overlay"),
                target,
                Some("overlay"),
                nix::mount::MsFlags::MS_RDONLY,
                Some(data.as_str()),
            )
        }
    };
    match result {
        Ok(()) => {
            guard.mounted = true;
            Ok(guard)
        }
        // Dropping the guard unmounts the layers.
        Err(e) => Err(failed("mounting the image's layers on", target, e)),
    }
}
