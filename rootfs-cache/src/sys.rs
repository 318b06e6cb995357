//! Thin safe wrappers over the *at syscalls extraction needs; every `unsafe` of the crate's
//! file handling lives here.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Seconds since the epoch as a timespec pair (atime = mtime), for utimensat.
fn times(mtime: i64) -> [libc::timespec; 2] {
    let ts = libc::timespec {
        tv_sec: mtime as libc::time_t,
        tv_nsec: 0,
    };
    [ts, ts]
}

/// fchown on an open fd.
pub fn fchown(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: plain syscall on a valid fd.
    check(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) })
}

/// fchmod on an open fd.
pub fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    // SAFETY: plain syscall on a valid fd.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode) })
}

/// futimens on an open fd.
pub fn futimens(fd: BorrowedFd<'_>, mtime: i64) -> io::Result<()> {
    let t = times(mtime);
    // SAFETY: `t` is a valid two-element timespec array for the duration of the call.
    check(unsafe { libc::futimens(fd.as_raw_fd(), t.as_ptr()) })
}

/// lchown of `name` in `dir` (never follows a symlink).
pub fn lchownat(dir: BorrowedFd<'_>, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and outlives the call.
    check(unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            name.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// chmod of `name` in `dir`; only used on nodes skiff just created, never on symlinks.
pub fn fchmodat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and outlives the call.
    check(unsafe { libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), mode, 0) })
}

/// Sets atime and mtime of `name` in `dir` without following a symlink.
pub fn lutimensat(dir: BorrowedFd<'_>, name: &CStr, mtime: i64) -> io::Result<()> {
    let t = times(mtime);
    // SAFETY: `name` is NUL-terminated, `t` a valid timespec pair; both outlive the call.
    check(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            name.as_ptr(),
            t.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// mknodat: fifos, device nodes and overlay whiteouts (char 0:0).
pub fn mknodat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    mode: u32,
    major: u32,
    minor: u32,
) -> io::Result<()> {
    let dev = libc::makedev(major, minor);
    // SAFETY: `name` is NUL-terminated and outlives the call.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, dev) })
}

/// symlinkat: creates `name` in `dir` pointing at `target` (stored verbatim, never followed).
pub fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: both strings are NUL-terminated and outlive the call.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })
}

/// linkat without following a symlink at the source.
pub fn linkat(
    old_dir: BorrowedFd<'_>,
    old_name: &CStr,
    new_dir: BorrowedFd<'_>,
    new_name: &CStr,
) -> io::Result<()> {
    // SAFETY: both names are NUL-terminated and outlive the call.
    check(unsafe {
        libc::linkat(
            old_dir.as_raw_fd(),
            old_name.as_ptr(),
            new_dir.as_raw_fd(),
            new_name.as_ptr(),
            0,
        )
    })
}

/// unlinkat; `dir_flag` removes an empty directory.
pub fn unlinkat(dir: BorrowedFd<'_>, name: &CStr, remove_dir: bool) -> io::Result<()> {
    let flags = if remove_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: `name` is NUL-terminated and outlives the call.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) })
}

/// mkdirat.
pub fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and outlives the call.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) })
}

/// The file type bits (S_IFMT) of `name` in `dir`, not following a symlink.
pub fn lstat_type(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<u32> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is writable storage for one stat struct; `name` is NUL-terminated.
    check(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    // SAFETY: fstatat succeeded, so it initialised `st`.
    Ok(unsafe { st.assume_init() }.st_mode & libc::S_IFMT)
}

/// fsetxattr on an open (non-O_PATH) fd.
pub fn fsetxattr(fd: BorrowedFd<'_>, name: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated; `value` is valid for `value.len()` bytes.
    check(unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

/// Writes all of `buf` at the fd's current offset.
pub fn write_all(fd: BorrowedFd<'_>, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: `buf` is valid for reads of `buf.len()` bytes.
        let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// Moves the fd's offset forward by `by` bytes, leaving a hole.
pub fn skip(fd: BorrowedFd<'_>, by: u64) -> io::Result<()> {
    // SAFETY: plain syscall on a valid fd.
    let r = unsafe { libc::lseek(fd.as_raw_fd(), by as libc::off_t, libc::SEEK_CUR) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Sets the file's length (materialises a trailing hole).
pub fn ftruncate(fd: BorrowedFd<'_>, len: u64) -> io::Result<()> {
    // SAFETY: plain syscall on a valid fd.
    check(unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) })
}

/// lgetxattr: an extended attribute of `path` (not following a final symlink); `None` if unset.
pub fn lgetxattr(path: &CStr, name: &CStr) -> io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: both strings are NUL-terminated; `buf` is writable for its full length.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENODATA) => Ok(None),
            _ => Err(err),
        };
    }
    buf.truncate(n as usize);
    Ok(Some(buf))
}

/// readlinkat: the target of the symlink `name` in `dir`, verbatim.
pub fn readlinkat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    // A link target is at most PATH_MAX bytes; one more detects truncation.
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: `name` is NUL-terminated; `buf` is writable for its full length.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    if n >= buf.len() {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    buf.truncate(n);
    Ok(buf)
}
