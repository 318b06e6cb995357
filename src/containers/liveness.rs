//! Whether a container's monitor and payload still live, from the store alone: the monitor
//! holds `monitor.lock` for its whole life (so a monitor killed with -9 is seen at once, as a
//! crashed run is), and the payload is its recorded pid with the recorded start time.

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use rootfs_cache::lock::FileLock;

use super::error::{ContainerError, io};
use super::record::{State, Status};

/// The monitor's lock file in the container directory.
const MONITOR_LOCK: &str = "monitor.lock";

/// Held by a container's monitor while it lives.
#[derive(Debug)]
pub(crate) struct MonitorLock(#[allow(dead_code)] FileLock);

impl MonitorLock {
    /// Takes the lock (a monitor starting); fails if another monitor holds it.
    pub(crate) fn acquire(dir: &Path) -> Result<Self, ContainerError> {
        let path = dir.join(MONITOR_LOCK);
        match FileLock::try_exclusive(&path).map_err(io("locking", &path))? {
            Some(lock) => Ok(Self(lock)),
            None => Err(ContainerError::Start(
                "the container already has a monitor".into(),
            )),
        }
    }

    /// Whether a monitor holds the lock now.
    pub(crate) fn held(dir: &Path) -> bool {
        matches!(FileLock::try_exclusive(&dir.join(MONITOR_LOCK)), Ok(None))
    }

    /// Waits until no monitor holds the lock.
    pub(crate) fn wait_released(dir: &Path) {
        let _ = FileLock::shared(&dir.join(MONITOR_LOCK));
    }
}

/// Field 22 of /proc/<pid>/stat: the start time in clock ticks.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after) = stat.rsplit_once(')')?;
    let mut fields = after.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// Whether `pid` is still the process that started at `start` (and not a zombie).
pub(crate) fn pid_alive(pid: i32, start: u64) -> bool {
    pid > 0 && start_time(pid) == Some(start)
}

/// The recorded start time of `pid` (for a state record).
pub(crate) fn pid_start(pid: i32) -> Option<u64> {
    start_time(pid)
}

fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just gave this process the descriptor; nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Waits up to `timeout` (forever: None) for `pid` (started at `start`) to exit; whether it did.
pub(crate) fn wait_pid_exit(pid: i32, start: u64, timeout: Option<Duration>) -> bool {
    // A timeout too long to represent waits forever.
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let pidfd = pidfd_open(pid);
    loop {
        if !pid_alive(pid, start) {
            return true;
        }
        let left = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return false;
                }
                left
            }
            None => Duration::from_secs(3600),
        };
        match &pidfd {
            Some(fd) => {
                let mut fds = [nix::poll::PollFd::new(
                    fd.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                let ms = left.as_millis().min(60_000) as u16;
                let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms));
                // A reaped or zombie process is checked again at the loop's top.
                if fds[0].revents().is_some_and(|r| !r.is_empty()) {
                    return true;
                }
            }
            None => std::thread::sleep(left.min(Duration::from_millis(5))),
        }
    }
}

/// A container's status as it really is, from its recorded state and the processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Liveness {
    /// As recorded (created, exited, or running under a live monitor).
    Recorded(Status),
    /// Recorded running, the monitor is gone but the payload still runs.
    Orphaned,
    /// Recorded running, but the monitor and the payload are gone.
    Lost,
}

impl Liveness {
    /// Checks a state against the processes.
    pub(crate) fn of(dir: &Path, state: &State) -> Self {
        if state.status != Status::Running {
            return Self::Recorded(state.status);
        }
        if MonitorLock::held(dir) {
            return Self::Recorded(Status::Running);
        }
        // The monitor may have written "exited" and gone between the two reads.
        if let Ok(now) = super::record::ContainerDir::new(dir.to_owned()).state()
            && now.status != Status::Running
        {
            return Self::Recorded(now.status);
        }
        if pid_alive(state.pid, state.pid_start) {
            Self::Orphaned
        } else {
            Self::Lost
        }
    }

    /// Whether the payload runs.
    pub(crate) fn running(self) -> bool {
        matches!(self, Self::Recorded(Status::Running) | Self::Orphaned)
    }

    /// The status to report.
    pub(crate) fn status(self) -> Status {
        match self {
            Self::Recorded(s) => s,
            Self::Orphaned => Status::Running,
            Self::Lost => Status::Exited,
        }
    }
}
