//! Paths resolved strictly inside a directory: the kernel's openat2(RESOLVE_IN_ROOT) does the
//! walk, so a symlink planted by an earlier tar entry can never lead a later one outside.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

/// A directory that every lookup stays inside of, plus the last parent it resolved.
#[derive(Debug)]
pub struct ConfinedRoot {
    root: OwnedFd,
    /// Tar entries come grouped by directory: one resolution serves a run of siblings.
    cached_parent: Option<(Vec<u8>, OwnedFd)>,
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in path"))
}

/// `struct open_how` of openat2(2) (libc's is non-exhaustive, so it cannot be built here).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// openat2 with RESOLVE_IN_ROOT: `path` is looked up as if `dir` were `/`.
fn openat2_in_root(dir: BorrowedFd<'_>, path: &CStr, flags: i32) -> io::Result<OwnedFd> {
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS | libc::RESOLVE_NO_XDEV,
    };
    loop {
        // SAFETY: `path` is a valid NUL-terminated string and `how` a correctly sized open_how
        // that both outlive the call; the kernel returns a new fd we take ownership of.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                path.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if fd >= 0 {
            // SAFETY: a non-negative return is a fresh fd owned by nobody else.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) });
        }
        let err = io::Error::last_os_error();
        // EAGAIN: a concurrent rename raced the lookup (documented for RESOLVE_IN_ROOT).
        if !matches!(err.raw_os_error(), Some(libc::EINTR) | Some(libc::EAGAIN)) {
            return Err(err);
        }
    }
}

/// openat relative to a directory fd, never following a final symlink.
pub fn openat_nofollow(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: i32,
    mode: u32,
) -> io::Result<OwnedFd> {
    // SAFETY: `name` is NUL-terminated and outlives the call; the result is a fresh fd.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a non-negative return is a fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl ConfinedRoot {
    /// Opens `dir` as the confinement root.
    pub fn open(dir: &Path) -> io::Result<Self> {
        let c = cstring(dir.as_os_str().as_encoded_bytes())?;
        // SAFETY: `c` is NUL-terminated and outlives the call; the result is a fresh fd.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            // SAFETY: a non-negative return is a fresh fd owned by nobody else.
            root: unsafe { OwnedFd::from_raw_fd(fd) },
            cached_parent: None,
        })
    }

    /// Forgets the cached parent, after an entry may have replaced a directory.
    pub fn invalidate(&mut self) {
        self.cached_parent = None;
    }

    /// Resolves a (clean, relative) directory path inside the root, creating missing
    /// components with mode 0755 as tar does for implicit parents.
    pub fn parent_dir(&mut self, dir: &[u8]) -> io::Result<BorrowedFd<'_>> {
        let hit = matches!(&self.cached_parent, Some((p, _)) if p.as_slice() == dir);
        if !hit {
            let fd = self.resolve_dir(dir, true)?;
            self.cached_parent = Some((dir.to_vec(), fd));
        }
        match &self.cached_parent {
            Some((_, fd)) => Ok(fd.as_fd()),
            None => Err(io::Error::other("parent cache empty")),
        }
    }

    /// Resolves an existing path inside the root to an O_PATH fd (symlinks followed, confined).
    pub fn resolve(&self, path: &[u8], flags: i32) -> io::Result<OwnedFd> {
        let c = cstring(if path.is_empty() { b"." } else { path })?;
        openat2_in_root(self.root.as_fd(), &c, flags)
    }

    fn resolve_dir(&self, dir: &[u8], create: bool) -> io::Result<OwnedFd> {
        match self.resolve(dir, libc::O_PATH | libc::O_DIRECTORY) {
            Err(e) if create && e.raw_os_error() == Some(libc::ENOENT) => {}
            other => return other,
        }
        // Walk down, creating what is missing. Every prefix is looked up again through the
        // confined resolver, so a symlink among the components is followed only inside the root.
        let mut current = self.resolve(b"", libc::O_PATH | libc::O_DIRECTORY)?;
        let mut end = 0;
        for component in dir.split(|&b| b == b'/') {
            end += component.len() + 1;
            if component.is_empty() {
                continue;
            }
            let prefix = &dir[..(end - 1).min(dir.len())];
            current = match self.resolve(prefix, libc::O_PATH | libc::O_DIRECTORY) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    match crate::sys::mkdirat(current.as_fd(), &cstring(component)?, 0o755) {
                        Ok(()) => {}
                        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                        Err(e) => return Err(e),
                    }
                    self.resolve(prefix, libc::O_PATH | libc::O_DIRECTORY)?
                }
                Err(e) => return Err(e),
            };
        }
        Ok(current)
    }
}
