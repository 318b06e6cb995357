//! The container's root filesystem: an overlay of the image's cached layers with a per-run upper
//! dir, the /etc files skiff supplies, and confined access to files inside the rootfs.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use rootfs_cache::ConfinedRoot;

use super::RunError;
use super::spec::Volume;

/// Where the overlay's parts live in a run directory.
pub(crate) const ROOTFS: &str = "rootfs";
const UPPER: &str = "upper";
const WORK: &str = "work";
const LOWERS: &str = "l";

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RunError + use<> {
    let path = path.to_owned();
    move |source| RunError::Io { op, path, source }
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
    // A job container mounts again at each start: its upper dir (the writable layer) stays,
    // the layer links and the work dir (which a volatile overlay marks as used) are made anew.
    for dir in [links.as_path(), &run.join(WORK)] {
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io("removing", dir)(e));
            }
            _ => {}
        }
    }
    for dir in [
        links.as_path(),
        &run.join(UPPER),
        &run.join(WORK),
        &run.join(ROOTFS),
    ] {
        match std::fs::create_dir(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(io("creating", dir)(e));
            }
            _ => {}
        }
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

/// Detaches every mount at or under `dir`, deepest (and, at one path, topmost) first; returns
/// how many.
pub(crate) fn unmount_under(dir: &Path) -> usize {
    let mut mounts = match rootfs_cache::mount_points_under(dir) {
        Ok(mounts) => mounts,
        Err(err) => {
            tracing::warn!(dir = %dir.display(), %err, "reading the mount table");
            return 0;
        }
    };
    // The table lists a mount before those made on top of it; the sort below is stable.
    mounts.reverse();
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

/// The rootfs as a [`ConfinedRoot`]: paths inside resolve as if it were `/`.
fn confined(rootfs: &Path) -> Result<ConfinedRoot, RunError> {
    ConfinedRoot::open(rootfs).map_err(io("opening", rootfs))
}

/// `rel` (absolute in the container) as a host path under `rootfs`, for messages.
fn host_path(rootfs: &Path, rel: &str) -> PathBuf {
    rootfs.join(rel.trim_start_matches('/'))
}

/// Reads a file inside the rootfs, symlinks resolved within it; empty when missing.
pub(crate) fn read_in_root(rootfs: &Path, rel: &str) -> Result<String, RunError> {
    match confined(rootfs)?.open_file(Path::new(rel), libc::O_RDONLY) {
        Ok(fd) => {
            let mut s = String::new();
            File::from(fd)
                .take(16 << 20)
                .read_to_string(&mut s)
                .map_err(io("reading", &host_path(rootfs, rel)))?;
            Ok(s)
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(String::new()),
        Err(e) => Err(io("opening", &host_path(rootfs, rel))(e)),
    }
}

/// Creates directory `rel` (and its parents) inside the rootfs, confined to it; what it creates
/// is given to `uid:gid`.
pub(crate) fn mkdir_in_root(rootfs: &Path, rel: &str, uid: u32, gid: u32) -> Result<(), RunError> {
    confined(rootfs)?
        .create_dir_all(Path::new(rel), Some((uid, gid)))
        .map(drop)
        .map_err(io("creating", &host_path(rootfs, rel)))
}

/// Creates a missing `-v` host directory as docker does: mode 0755, parents too. An existing
/// path is left as it is.
pub(crate) fn create_host_dir(path: &Path) -> Result<(), RunError> {
    let mut missing: Vec<&Path> = path
        .ancestors()
        .take_while(|p| {
            matches!(std::fs::symlink_metadata(p), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
        })
        .collect();
    missing.reverse();
    for dir in missing {
        match std::fs::DirBuilder::new().mode(0o755).create(dir) {
            Ok(()) => {
                // Exactly 0755, whatever the umask.
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                    .map_err(io("setting the mode of", dir))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(e) => return Err(io("creating the host directory", dir)(e)),
        }
    }
    Ok(())
}

/// What is to be mounted, for [`check_mount_target`].
pub(crate) enum MountSource<'a> {
    /// A host path, bind-mounted (`-v`).
    Bind(&'a Path),
    /// A new tmpfs (`--tmpfs`).
    Tmpfs,
}

/// Checks, before the container is created, that `target` in the rootfs can take the mount:
/// no component above it is a file (`-v /x:/bin/sh/sub`), a bind source can be reached, and an
/// existing target has the source's type (directory or not). The error names the source, the
/// target and the cause; what this lets through is left to libcontainer.
pub(crate) fn check_mount_target(
    rootfs: &Path,
    source: MountSource<'_>,
    target: &str,
) -> Result<(), RunError> {
    let (name, source_is_dir) = match source {
        MountSource::Bind(path) => match std::fs::metadata(path) {
            Ok(m) => (path.display().to_string(), m.is_dir()),
            Err(e) => return Err(bind_error(path.display().to_string(), target, &e, "")),
        },
        MountSource::Tmpfs => ("tmpfs".to_owned(), true),
    };
    let root = confined(rootfs)?;
    let target_path = Path::new(target);
    if let Some(parent) = target_path.parent()
        && let Err(e) = root.open_file(parent, libc::O_PATH | libc::O_DIRECTORY)
        && matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP))
    {
        return Err(bind_error(name, target, &e, ""));
    }
    if let Ok(fd) = root.open_file(target_path, libc::O_PATH)
        && let Ok(meta) = File::from(fd).metadata()
        && meta.is_dir() != source_is_dir
    {
        let hint = if source_is_dir {
            " (a directory cannot be mounted onto a file)"
        } else {
            " (a file cannot be mounted onto a directory)"
        };
        return Err(bind_error(
            name,
            target,
            &std::io::Error::from_raw_os_error(libc::ENOTDIR),
            hint,
        ));
    }
    Ok(())
}

/// mount(2) flags named in `--tmpfs` options (the rest is the filesystem's data), as the
/// runtime reads them: (name, flag, set or clear).
const MOUNT_FLAGS: [(&str, MsFlags, bool); 16] = [
    ("ro", MsFlags::MS_RDONLY, true),
    ("rw", MsFlags::MS_RDONLY, false),
    ("nosuid", MsFlags::MS_NOSUID, true),
    ("suid", MsFlags::MS_NOSUID, false),
    ("nodev", MsFlags::MS_NODEV, true),
    ("dev", MsFlags::MS_NODEV, false),
    ("noexec", MsFlags::MS_NOEXEC, true),
    ("exec", MsFlags::MS_NOEXEC, false),
    ("sync", MsFlags::MS_SYNCHRONOUS, true),
    ("async", MsFlags::MS_SYNCHRONOUS, false),
    ("dirsync", MsFlags::MS_DIRSYNC, true),
    ("noatime", MsFlags::MS_NOATIME, true),
    ("atime", MsFlags::MS_NOATIME, false),
    ("nodiratime", MsFlags::MS_NODIRATIME, true),
    ("relatime", MsFlags::MS_RELATIME, true),
    ("strictatime", MsFlags::MS_STRICTATIME, true),
];

/// After the runtime failed to prepare the rootfs (its error names no mount), finds the `-v`
/// or `--tmpfs` mount the kernel refuses by making each once on a scratch mount point in the
/// run directory (skiff's private mount namespace) and undoing it; the error names it. `None`
/// when every one of them mounts.
pub(crate) fn probe_mounts(run: &Path, volumes: &[Volume], tmpfs: &[String]) -> Option<RunError> {
    let dir = run.join("probe");
    let file = run.join("probe-file");
    std::fs::create_dir(&dir).ok()?;
    std::fs::write(&file, "").ok()?;
    let attempt =
        |source: &Path, target: &Path, fstype: Option<&str>, flags, data: Option<&str>| {
            let result = nix::mount::mount(Some(source), target, fstype, flags, data);
            if result.is_ok() {
                let _ = nix::mount::umount2(target, MntFlags::MNT_DETACH);
            }
            result
        };
    let mut found = None;
    for v in volumes {
        let target = if v.host.is_dir() { &dir } else { &file };
        let flags = MsFlags::MS_BIND | MsFlags::MS_REC;
        if let Err(errno) = attempt(&v.host, target, None, flags, None) {
            found = Some(RunError::BindMount {
                what: v.host.display().to_string(),
                target: v.container.clone(),
                cause: errno.desc().to_owned(),
            });
            break;
        }
    }
    for t in tmpfs {
        if found.is_some() {
            break;
        }
        let (target, options) = t.split_once(':').unwrap_or((t.as_str(), ""));
        let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        let mut data = Vec::new();
        for option in options.split(',').filter(|o| !o.is_empty()) {
            match MOUNT_FLAGS.iter().find(|(name, _, _)| *name == option) {
                Some((_, flag, true)) => flags |= *flag,
                Some((_, flag, false)) => flags &= !*flag,
                None => data.push(option),
            }
        }
        let data = data.join(",");
        if let Err(errno) = attempt(Path::new("tmpfs"), &dir, Some("tmpfs"), flags, Some(&data)) {
            found = Some(RunError::BindMount {
                what: "tmpfs".into(),
                target: target.to_owned(),
                cause: match data.is_empty() {
                    true => errno.desc().to_owned(),
                    false => format!("{} (options {data})", errno.desc()),
                },
            });
        }
    }
    let _ = std::fs::remove_dir(&dir);
    let _ = std::fs::remove_file(&file);
    found
}

/// [`RunError::BindMount`] with the cause as strerror(3) says it.
fn bind_error(source: String, target: &str, err: &std::io::Error, hint: &str) -> RunError {
    let cause = match err.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_owned(),
        None => err.to_string(),
    };
    RunError::BindMount {
        what: source,
        target: target.to_owned(),
        cause: format!("{cause}{hint}"),
    }
}

/// Writes /etc/hosts, /etc/resolv.conf and /etc/hostname for the container into the run
/// directory; returns (file, container path) pairs to bind-mount.
pub(crate) fn write_etc_files(
    run: &Path,
    hostname: &str,
    host_network: bool,
    extra_hosts: &[(String, String)],
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
    // docker's order: --add-host entries, then the container's own name.
    for (name, ip) in extra_hosts {
        hosts.push_str(&format!("{ip}\t{name}\n"));
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
