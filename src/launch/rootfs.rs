//! The container's root filesystem: an overlay of the image's cached layers with a per-run upper
//! dir, the /etc files skiff supplies, and confined access to files inside the rootfs.

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use super::RunError;

/// Where the overlay's parts live in a run directory.
pub(crate) const ROOTFS: &str = "rootfs";
const UPPER: &str = "upper";
const WORK: &str = "work";
const LOWERS: &str = "l";

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RunError + use<> {
    let path = path.to_owned();
    move |source| RunError::Io { op, path, source }
}

/// The kernel's `struct open_how` for openat2(2).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Restores the working directory when dropped.
struct CwdGuard(Option<File>);

impl Drop for CwdGuard {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = nix::unistd::fchdir(dir.as_raw_fd());
        }
    }
}

/// Mounts the overlay at `<run>/rootfs` with `lowers` (top layer first) as lower dirs.
///
/// Lower dirs are reached through one-character symlinks in `<run>/l/`, with the mount call made
/// from inside the run directory, so the mount data stays short for images with many layers.
pub(crate) fn mount_overlay(
    run: &Path,
    lowers: &[PathBuf],
    userxattr: bool,
) -> Result<(), RunError> {
    let links = run.join(LOWERS);
    for dir in [
        links.as_path(),
        &run.join(UPPER),
        &run.join(WORK),
        &run.join(ROOTFS),
    ] {
        std::fs::create_dir(dir).map_err(io("creating", dir))?;
    }
    let mut lowerdir = String::new();
    for (i, layer) in lowers.iter().enumerate() {
        let name = format!("{i:x}");
        let link = links.join(&name);
        std::os::unix::fs::symlink(layer, &link).map_err(io("linking a layer", &link))?;
        if !lowerdir.is_empty() {
            lowerdir.push(':');
        }
        lowerdir.push_str(LOWERS);
        lowerdir.push('/');
        lowerdir.push_str(&name);
    }
    // volatile: the upper dir is thrown away, so no sync at unmount (that costs a journal
    // commit of the whole store filesystem, hundreds of milliseconds).
    let mut data = format!("lowerdir={lowerdir},upperdir={UPPER},workdir={WORK},volatile");
    if userxattr {
        data.push_str(",userxattr");
    }
    let previous = File::open(".").ok();
    let _restore = CwdGuard(previous);
    nix::unistd::chdir(run).map_err(|e| RunError::Io {
        op: "entering run directory",
        path: run.to_owned(),
        source: e.into(),
    })?;
    nix::mount::mount(
        Some("overlay"),
        ROOTFS,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(|e| RunError::Mount {
        target: run.join(ROOTFS),
        data,
        source: e.into(),
    })
}

/// Detaches every mount at or under `dir`, deepest first; returns how many.
pub(crate) fn unmount_under(dir: &Path) -> usize {
    let mut mounts = mounts_under(dir);
    mounts.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
    let mut n = 0;
    for m in mounts {
        if nix::mount::umount2(&m, MntFlags::MNT_DETACH).is_ok() {
            n += 1;
        } else {
            tracing::warn!(mount = %m.display(), "could not unmount");
        }
    }
    n
}

/// Mount points at or under `dir` in this process's mount namespace.
pub(crate) fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// openat2(2) with RESOLVE_IN_ROOT: `rel` resolved as if `root` were `/`.
fn open_in_root(root: &File, rel: &str, flags: i32) -> std::io::Result<OwnedFd> {
    let path = CString::new(rel.trim_start_matches('/'))?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: openat2 with a valid dirfd, a NUL-terminated path and a correctly sized open_how.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Reads a file inside the rootfs, symlinks resolved within it; empty when missing.
pub(crate) fn read_in_root(rootfs: &Path, rel: &str) -> Result<String, RunError> {
    let root = File::open(rootfs).map_err(io("opening", rootfs))?;
    match open_in_root(&root, rel, libc::O_RDONLY) {
        Ok(fd) => {
            let mut s = String::new();
            File::from(fd)
                .take(16 << 20)
                .read_to_string(&mut s)
                .map_err(io("reading", &rootfs.join(rel.trim_start_matches('/'))))?;
            Ok(s)
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(String::new()),
        Err(e) => Err(io("opening", &rootfs.join(rel.trim_start_matches('/')))(e)),
    }
}

/// Creates directory `rel` (and its parents) inside the rootfs, confined to it.
pub(crate) fn mkdir_in_root(rootfs: &Path, rel: &str, uid: u32, gid: u32) -> Result<(), RunError> {
    let root = File::open(rootfs).map_err(io("opening", rootfs))?;
    let mut current = String::new();
    for part in rel.split('/').filter(|p| !p.is_empty() && *p != ".") {
        let parent = if current.is_empty() { "." } else { &current };
        let path = rootfs.join(format!("{current}/{part}").trim_start_matches('/'));
        let dir = open_in_root(&root, parent, libc::O_DIRECTORY | libc::O_PATH)
            .map_err(io("opening", &path))?;
        let name = CString::new(part).map_err(|e| io("creating", &path)(e.into()))?;
        // SAFETY: mkdirat on a directory fd we own with a NUL-terminated single component.
        let rc = unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o755) };
        if rc == 0 {
            // SAFETY: fchownat on the fd we own, no symlink followed.
            let rc = unsafe {
                libc::fchownat(
                    dir.as_raw_fd(),
                    name.as_ptr(),
                    uid,
                    gid,
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            };
            if rc != 0 {
                tracing::debug!(path = %path.display(), "chown of a new working directory failed");
            }
        } else {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EEXIST) {
                return Err(io("creating", &path)(err));
            }
        }
        current = format!("{current}/{part}");
    }
    Ok(())
}

/// Writes /etc/hosts, /etc/resolv.conf and /etc/hostname for the container into the run
/// directory; returns (file, container path) pairs to bind-mount.
pub(crate) fn write_etc_files(
    run: &Path,
    hostname: &str,
    host_network: bool,
) -> Result<Vec<(PathBuf, &'static str)>, RunError> {
    let mut hosts = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n",
    );
    if host_network && let Ok(host) = std::fs::read_to_string("/etc/hosts") {
        hosts = host;
        if !hosts.ends_with('\n') {
            hosts.push('\n');
        }
    }
    hosts.push_str(&format!("127.0.1.1\t{hostname}\n"));
    let resolv = std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_else(|_| "nameserver 127.0.0.1\n".into());
    let files = [
        ("hosts", hosts, "/etc/hosts"),
        ("resolv.conf", resolv, "/etc/resolv.conf"),
        ("hostname", format!("{hostname}\n"), "/etc/hostname"),
    ];
    let mut out = Vec::new();
    for (name, content, dest) in files {
        let path = run.join(name);
        std::fs::write(&path, content).map_err(io("writing", &path))?;
        out.push((path, dest));
    }
    Ok(out)
}
