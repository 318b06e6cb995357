//! Advisory file locks (flock) that coordinate skiff processes sharing one store.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

/// A held flock; released when dropped (or when the process dies, which is what makes a crash
/// safe: no stale lock files to clean up).
#[derive(Debug)]
pub struct FileLock {
    _lock: Flock<File>,
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
}

impl FileLock {
    /// Waits for an exclusive lock on `path` (created if missing).
    pub fn exclusive(path: &Path) -> io::Result<Self> {
        Self::take(path, FlockArg::LockExclusive)
    }

    /// Waits for a shared lock on `path` (created if missing).
    pub fn shared(path: &Path) -> io::Result<Self> {
        Self::take(path, FlockArg::LockShared)
    }

    /// Takes an exclusive lock if nobody holds one; `None` when it is busy.
    pub fn try_exclusive(path: &Path) -> io::Result<Option<Self>> {
        match Flock::lock(open(path)?, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(Self { _lock: lock })),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(e.into()),
        }
    }

    fn take(path: &Path, arg: FlockArg) -> io::Result<Self> {
        let mut file = open(path)?;
        loop {
            match Flock::lock(file, arg) {
                Ok(lock) => return Ok(Self { _lock: lock }),
                Err((f, nix::errno::Errno::EINTR)) => file = f,
                Err((_, e)) => return Err(e.into()),
            }
        }
    }
}
