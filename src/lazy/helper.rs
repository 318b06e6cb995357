//! The lazy run's helper: a process forked from the launcher, once the launcher is in its own
//! namespaces and before it builds the rootfs, that serves the image's tree as a FUSE file
//! system and meanwhile pulls the image whole into the store. Its threads (the FUSE sessions,
//! tokio's) never share a process with libcontainer's clone. It dies with the launcher
//! (PDEATHSIG), and its mounts live in the launcher's private mount namespace.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid};

use super::toc::LayerToc;
use super::{LayerReader, LazyError};

/// What the helper does once forked: it mounts the image and keeps the session until the end,
/// and meanwhile `background` (the full pull) runs.
pub(crate) struct HelperWork {
    /// Builds the runtime-backed reader in the helper (no thread may exist before the fork).
    pub(crate) reader: Box<dyn FnOnce() -> Result<Arc<LayerReader>, LazyError>>,
    /// The image's tables, bottom layer first.
    pub(crate) tables: Vec<Arc<LayerToc>>,
    /// Runs after the layers are served: the full pull into the store.
    pub(crate) background: Box<dyn FnOnce() -> Result<(), String>>,
    /// The commands the payload starts (see [`super::prefetch`]) and its search path.
    pub(crate) commands: Vec<String>,
    pub(crate) path: String,
}

/// The launcher's handle on its helper.
#[derive(Debug)]
pub(crate) struct Helper {
    pid: Pid,
    /// Closed to tell the helper the run is over.
    done: Option<OwnedFd>,
}

fn failed(reason: String) -> LazyError {
    LazyError::Mount { reason }
}

impl Helper {
    /// Forks the helper, which mounts the image at `dir`; returns once it is mounted. The
    /// process must be single-threaded.
    pub(crate) fn spawn(dir: &Path, work: HelperWork) -> Result<Self, LazyError> {
        let (ready_r, ready_w) = nix::unistd::pipe().map_err(|e| failed(format!("pipe: {e}")))?;
        let (done_r, done_w) = nix::unistd::pipe().map_err(|e| failed(format!("pipe: {e}")))?;
        // SAFETY: the caller guarantees a single-threaded process (libcontainer's launch
        // needs the same), so the child owns a consistent copy of every lock and allocation.
        match unsafe { nix::unistd::fork() }.map_err(|e| failed(format!("fork: {e}")))? {
            ForkResult::Child => {
                drop(ready_r);
                drop(done_w);
                let code = serve(dir, work, ready_w, done_r);
                // SAFETY: _exit ends this forked process without running the launcher's
                // destructors (its run directory and holds belong to the parent).
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => {
                drop(ready_w);
                drop(done_r);
                let helper = Self {
                    pid: child,
                    done: Some(done_w),
                };
                let mut answer = String::new();
                let _ = std::fs::File::from(ready_r).read_to_string(&mut answer);
                match answer.trim_end() {
                    "ready" => Ok(helper),
                    "" => Err(failed("the helper exited before serving the layers".into())),
                    why => Err(failed(why.to_owned())),
                }
            }
        }
    }

    /// After the run: lets the helper finish the pull (`wait`) or stops it, and reaps it.
    pub(crate) fn finish(mut self, wait: bool) {
        if !wait {
            let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
        }
        self.done.take();
        let _ = waitpid(self.pid, None);
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        if self.done.is_some() {
            let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
            self.done.take();
            let _ = waitpid(self.pid, None);
        }
    }
}

/// The helper's life: mount, say so, pull, wait for the run's end, unmount.
fn serve(dir: &Path, work: HelperWork, ready: OwnedFd, done: OwnedFd) -> i32 {
    // SAFETY: prctl(PR_SET_PDEATHSIG) only sets this process's parent-death signal.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
    let mut ready = std::fs::File::from(ready);
    // The signals the launcher forwards (a Ctrl-C on the terminal reaches the whole process
    // group) stay blocked: the payload may outlive them, and needs its files. The helper ends
    // when the launcher says so, or dies with it.
    let HelperWork {
        reader,
        tables,
        background,
        commands,
        path,
    } = work;
    let session = match mount_image(dir, reader, &tables, &commands, &path) {
        Ok(session) => session,
        Err(err) => {
            let _ = writeln!(ready, "{}", crate::error_chain(&err));
            return 1;
        }
    };
    let _ = ready.write_all(b"ready\n");
    drop(ready);
    if let Err(err) = background() {
        tracing::warn!(%err, "the background pull failed; the next run pulls again");
    }
    // Until the launcher is done with the layers.
    let mut done = std::fs::File::from(done);
    let _ = done.read(&mut [0u8; 1]);
    let _ = done.as_raw_fd();
    // The container's mount namespace holds a copy of the mount, which keeps the file system
    // alive a moment after the container ended (by then the launcher may have removed the
    // mount point); exiting before its end loses the layers' last log lines.
    super::mount::end_session(dir, session);
    0
}

/// Builds the reader, starts the prefetch, mounts the image.
fn mount_image(
    dir: &Path,
    reader: Box<dyn FnOnce() -> Result<Arc<LayerReader>, LazyError>>,
    tables: &[Arc<LayerToc>],
    commands: &[String],
    path: &str,
) -> Result<super::mount::Mounted, LazyError> {
    let reader = reader()?;
    super::prefetch::start(&reader, tables, commands, path);
    super::mount::mount_image(dir, tables, &reader)
}
