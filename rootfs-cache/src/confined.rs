//! Paths resolved strictly inside a directory: the kernel's openat2(RESOLVE_IN_ROOT) does the
//! walk, so a symlink planted by an earlier tar entry can never lead a later one outside.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A directory that every lookup stays inside of, as if it were `/` (a chroot without one).
///
/// Paths are resolved by the kernel with openat2(2) and `RESOLVE_IN_ROOT`: an absolute symlink
/// target or a leading `/` starts again at the root, `..` never climbs above it, magic links
/// (`/proc/self/fd/N`) are refused and no mount point inside the root is crossed
/// (`RESOLVE_NO_XDEV`: `EXDEV`). Used for untrusted layers and for files inside a container's
/// rootfs:
///
/// ```no_run
/// # fn main() -> std::io::Result<()> {
/// use std::path::Path;
/// use rootfs_cache::ConfinedRoot;
///
/// let root = ConfinedRoot::open(Path::new("/var/lib/skiff/runs/r1/rootfs"))?;
/// let passwd = std::fs::File::from(root.open_file(Path::new("/etc/passwd"), libc::O_RDONLY)?);
/// let workdir = root.create_dir_all(Path::new("/work/sub"), Some((1000, 1000)))?;
/// # let _ = (passwd, workdir);
/// # Ok(())
/// # }
/// ```
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
pub(crate) fn openat_nofollow(
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

    /// Opens `path` inside the root with open(2) `flags` (`O_CLOEXEC` is always added);
    /// symlinks are followed, confined to the root. A missing file is `ENOENT`.
    pub fn open_file(&self, path: &Path, flags: i32) -> io::Result<OwnedFd> {
        self.resolve(path.as_os_str().as_bytes(), flags)
    }

    /// Opens directory `path` inside the root (an `O_PATH | O_DIRECTORY` fd), creating what is
    /// missing, as `mkdir -p` in a chroot would: new directories get mode 0755 whatever the
    /// umask, and, with `owner` `Some((uid, gid))`, that owner (not following symlinks; a
    /// chown the caller may not do, rootless with an unmapped id, is logged and ignored). A
    /// component that exists and is not a directory is `ENOTDIR`; a dangling symlink
    /// component creates its target inside the root.
    pub fn create_dir_all(&self, path: &Path, owner: Option<(u32, u32)>) -> io::Result<OwnedFd> {
        self.resolve_dir(path.as_os_str().as_bytes(), true, owner)
    }

    /// Forgets the cached parent, after an entry may have replaced a directory.
    pub(crate) fn invalidate(&mut self) {
        self.cached_parent = None;
    }

    /// Resolves a (clean, relative) directory path inside the root, creating missing
    /// components with mode 0755 as tar does for implicit parents. Returns a new fd of the
    /// (cached) directory, so callers may keep it while the cache moves on.
    pub(crate) fn parent_dir(&mut self, dir: &[u8]) -> io::Result<OwnedFd> {
        let hit = matches!(&self.cached_parent, Some((p, _)) if p.as_slice() == dir);
        if !hit {
            let fd = self.resolve_dir(dir, true, None)?;
            self.cached_parent = Some((dir.to_vec(), fd));
        }
        match &self.cached_parent {
            Some((_, fd)) => fd.try_clone(),
            None => Err(io::Error::other("parent cache empty")),
        }
    }

    /// Resolves an existing path inside the root to an O_PATH fd (symlinks followed, confined).
    pub(crate) fn resolve(&self, path: &[u8], flags: i32) -> io::Result<OwnedFd> {
        let c = cstring(if path.is_empty() { b"." } else { path })?;
        openat2_in_root(self.root.as_fd(), &c, flags)
    }

    fn resolve_dir(
        &self,
        dir: &[u8],
        create: bool,
        owner: Option<(u32, u32)>,
    ) -> io::Result<OwnedFd> {
        match self.resolve(dir, libc::O_PATH | libc::O_DIRECTORY) {
            Err(e) if create && e.raw_os_error() == Some(libc::ENOENT) => {}
            other => return other,
        }
        self.walk_creating(dir, owner)
    }

    /// Walks `dir` one component at a time, creating what is missing with mode 0755, and
    /// following symlinks exactly as RESOLVE_IN_ROOT does: an absolute target restarts at the
    /// root, `..` never climbs above it. So `evil -> /etc` then `evil/x` creates `<root>/etc/x`,
    /// as a chroot would. Every step looks up one name relative to a directory fd without
    /// following it, so nothing outside the root is ever opened, let alone created.
    fn walk_creating(&self, dir: &[u8], owner: Option<(u32, u32)>) -> io::Result<OwnedFd> {
        /// Linux's limit on symlinks followed in one lookup.
        const MAX_LINKS: u32 = 40;
        let mut pending: std::collections::VecDeque<Vec<u8>> =
            dir.split(|&b| b == b'/').map(<[u8]>::to_vec).collect();
        // The directories walked so far, the root first: `..` pops one.
        let mut stack = vec![self.resolve(b"", libc::O_PATH | libc::O_DIRECTORY)?];
        let mut links = 0;
        let mut just_created = false;
        while let Some(component) = pending.pop_front() {
            match component.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    if stack.len() > 1 {
                        stack.pop();
                    }
                    continue;
                }
                _ => {}
            }
            let name = cstring(&component)?;
            let current = match stack.last() {
                Some(fd) => fd.as_fd(),
                None => return Err(io::Error::other("empty directory stack")),
            };
            let kind = match crate::sys::lstat_type(current, &name) {
                Ok(kind) => kind,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) && !just_created => {
                    match crate::sys::mkdirat(current, &name, 0o755) {
                        // Exactly 0755 whatever the umask, as tar does for implicit parents.
                        Ok(()) => {
                            crate::sys::fchmodat(current, &name, 0o755)?;
                            if let Some((uid, gid)) = owner {
                                if let Err(e) = crate::sys::lchownat(current, &name, uid, gid) {
                                    tracing::debug!(
                                        dir = %String::from_utf8_lossy(&component),
                                        %e,
                                        "could not chown a new directory"
                                    );
                                }
                            }
                        }
                        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                        Err(e) => return Err(e),
                    }
                    just_created = true;
                    pending.push_front(component);
                    continue;
                }
                Err(e) => return Err(e),
            };
            just_created = false;
            match kind {
                libc::S_IFDIR => {
                    let fd = openat_nofollow(current, &name, libc::O_PATH | libc::O_DIRECTORY, 0)?;
                    stack.push(fd);
                }
                libc::S_IFLNK => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(io::Error::from_raw_os_error(libc::ELOOP));
                    }
                    let target = crate::sys::readlinkat(current, &name)?;
                    if target.starts_with(b"/") {
                        stack.truncate(1);
                    }
                    for part in target.split(|&b| b == b'/').rev() {
                        pending.push_front(part.to_vec());
                    }
                }
                _ => return Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
            }
        }
        stack
            .pop()
            .ok_or_else(|| io::Error::other("empty directory stack"))
    }
}
