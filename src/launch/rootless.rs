//! Rootless set-up: a user namespace (the caller as root, and its /etc/subuid range when
//! newuidmap/newgidmap can map it), a mount namespace, and a cgroup namespace with cgroup2
//! mounted on /sys/fs/cgroup so that libcontainer picks its v2 manager.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Uid, fork};

use super::RunError;

/// How the user namespace maps ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdMapping {
    /// Only the caller, as root.
    Single,
    /// The caller as root and its subordinate range as 1.. (uids, gids).
    Full {
        /// Subordinate uids mapped.
        uids: u32,
        /// Subordinate gids mapped.
        gids: u32,
    },
}

impl IdMapping {
    /// Whether an id inside the namespace is mapped.
    pub fn maps_gid(self, gid: u32) -> bool {
        match self {
            Self::Single => gid == 0,
            Self::Full { gids, .. } => gid <= gids,
        }
    }

    /// Whether a uid inside the namespace is mapped.
    pub fn maps_uid(self, uid: u32) -> bool {
        match self {
            Self::Single => uid == 0,
            Self::Full { uids, .. } => uid <= uids,
        }
    }
}

/// The first range of `name` or `id` in a /etc/subuid-style file.
fn sub_range(file: &Path, name: Option<&str>, id: u32) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let mut f = line.trim().split(':');
        let who = f.next()?;
        let start = f.next()?.parse().ok()?;
        let count = f.next()?.parse().ok()?;
        (Some(who) == name || who == id.to_string()).then_some((start, count))
    })
}

fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

fn find_tool(name: &str) -> Option<PathBuf> {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

fn write_file(path: &str, content: &str) -> Result<(), RunError> {
    std::fs::write(path, content).map_err(|source| RunError::Io {
        op: "writing",
        path: path.into(),
        source,
    })
}

/// Enters new user, mount and cgroup namespaces; the process must be single-threaded.
pub(crate) fn enter() -> Result<IdMapping, RunError> {
    let uid = Uid::current().as_raw();
    let gid = Gid::current().as_raw();
    let name = user_name(uid);
    let ranges = (
        sub_range(Path::new("/etc/subuid"), name.as_deref(), uid),
        sub_range(Path::new("/etc/subgid"), name.as_deref(), uid),
        find_tool("newuidmap"),
        find_tool("newgidmap"),
    );
    let flags = CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWCGROUP;
    let mapping = match ranges {
        (Some((us, uc)), Some((gs, gc)), Some(newuidmap), Some(newgidmap)) if uc > 0 && gc > 0 => {
            let uid_args = [
                "0".to_owned(),
                uid.to_string(),
                "1".into(),
                "1".into(),
                us.to_string(),
                uc.to_string(),
            ];
            let gid_args = [
                "0".to_owned(),
                gid.to_string(),
                "1".into(),
                "1".into(),
                gs.to_string(),
                gc.to_string(),
            ];
            match map_with_helper(flags, &newuidmap, &uid_args, &newgidmap, &gid_args)? {
                true => IdMapping::Full { uids: uc, gids: gc },
                false => {
                    tracing::warn!(
                        "newuidmap/newgidmap failed: mapping only the caller (files of other \
                         users and setuid to them will not work)"
                    );
                    map_single(uid, gid)?;
                    IdMapping::Single
                }
            }
        }
        _ => {
            nix::sched::unshare(flags).map_err(|e| RunError::Sys {
                op: "unshare(user, mount, cgroup)",
                source: e,
            })?;
            map_single(uid, gid)?;
            IdMapping::Single
        }
    };
    setup_mounts()?;
    Ok(mapping)
}

/// Maps only the caller to root, from inside the new namespace.
fn map_single(uid: u32, gid: u32) -> Result<(), RunError> {
    write_file("/proc/self/setgroups", "deny")?;
    write_file("/proc/self/uid_map", &format!("0 {uid} 1\n"))?;
    write_file("/proc/self/gid_map", &format!("0 {gid} 1\n"))
}

/// Forks a helper that waits until this process has unshared, then runs newuidmap and newgidmap
/// on it at once (a setuid tool does not work from inside the new namespace). Returns whether both
/// succeeded; the namespaces are entered either way.
fn map_with_helper(
    flags: CloneFlags,
    newuidmap: &Path,
    uid_args: &[String],
    newgidmap: &Path,
    gid_args: &[String],
) -> Result<bool, RunError> {
    let (ready_r, ready_w) = nix::unistd::pipe().map_err(|e| RunError::Sys {
        op: "pipe",
        source: e,
    })?;
    let parent = nix::unistd::getpid().as_raw().to_string();
    // SAFETY: the process is single-threaded (checked by the caller), so the child may run
    // arbitrary code; it only waits, spawns the two tools and exits.
    match unsafe { fork() }.map_err(|e| RunError::Sys {
        op: "fork",
        source: e,
    })? {
        ForkResult::Child => {
            drop(ready_w);
            let mut byte = [0u8; 1];
            // Both tools at once: they write different files (uid_map, gid_map).
            let ok = std::fs::File::from(ready_r).read_exact(&mut byte).is_ok() && {
                let uids = Command::new(newuidmap).arg(&parent).args(uid_args).spawn();
                let gids = Command::new(newgidmap).arg(&parent).args(gid_args).spawn();
                let done = |c: std::io::Result<std::process::Child>| {
                    c.and_then(|mut c| c.wait()).is_ok_and(|s| s.success())
                };
                // Both waited for, whichever fails.
                let (u, g) = (done(uids), done(gids));
                u && g
            };
            // SAFETY: leave the forked helper without running the parent's destructors.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) }
        }
        ForkResult::Parent { child } => {
            drop(ready_r);
            let unshared = nix::sched::unshare(flags);
            let mut w = std::fs::File::from(ready_w);
            if unshared.is_ok() {
                let _ = w.write_all(b"1");
            }
            drop(w);
            let status = waitpid(child, None).map_err(|e| RunError::Sys {
                op: "waiting for the id-mapping helper",
                source: e,
            })?;
            unshared.map_err(|e| RunError::Sys {
                op: "unshare(user, mount, cgroup)",
                source: e,
            })?;
            Ok(matches!(status, WaitStatus::Exited(_, 0)))
        }
    }
}

/// Keeps mounts private to this namespace and mounts cgroup2 on /sys/fs/cgroup.
fn setup_mounts() -> Result<(), RunError> {
    make_root_slave()?;
    mount_unified()
}

/// Mounts cgroup2 on /sys/fs/cgroup (in skiff's own mount namespace), where libcontainer then
/// picks its v2 manager.
pub(crate) fn mount_unified() -> Result<(), RunError> {
    nix::mount::mount(
        Some("cgroup2"),
        "/sys/fs/cgroup",
        Some("cgroup2"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| RunError::Sys {
        op: "mounting cgroup2 on /sys/fs/cgroup",
        source: e,
    })
}

/// Root: a private mount namespace, so nothing skiff mounts is visible outside or outlives it.
pub(crate) fn private_mounts() -> Result<(), RunError> {
    nix::sched::unshare(CloneFlags::CLONE_NEWNS).map_err(|e| RunError::Sys {
        op: "unshare(mount)",
        source: e,
    })?;
    make_root_slave()
}

/// Mounts made here stay here; the host's later mounts still show up.
fn make_root_slave() -> Result<(), RunError> {
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(|e| RunError::Sys {
        op: "making / a slave mount",
        source: e,
    })
}

/// The mapping of the user namespace this process is already in, from /proc/self/uid_map and
/// gid_map; `None` in the initial namespace (the whole id space mapped onto itself).
pub(crate) fn current_mapping() -> Option<IdMapping> {
    fn ranges(file: &str) -> Vec<(u32, u32, u32)> {
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace().map(|n| n.parse::<u32>().ok());
                Some((f.next()??, f.next()??, f.next()??))
            })
            .collect()
    }
    let uids = ranges("/proc/self/uid_map");
    let gids = ranges("/proc/self/gid_map");
    if uids.is_empty() || uids == [(0, 0, u32::MAX)] {
        return None;
    }
    let sub = |r: &[(u32, u32, u32)]| r.iter().find(|(inner, _, _)| *inner == 1).map(|r| r.2);
    Some(match (sub(&uids), sub(&gids)) {
        (Some(uids), Some(gids)) => IdMapping::Full { uids, gids },
        _ => IdMapping::Single,
    })
}

/// Whether this process is in the namespace `ns` (user, cgroup...) of process `pid`.
pub(crate) fn same_namespace(pid: i32, ns: &str) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (
        std::fs::metadata(format!("/proc/self/ns/{ns}")),
        std::fs::metadata(format!("/proc/{pid}/ns/{ns}")),
    ) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Rootless exec: joins the user and cgroup namespaces of a job container's init (those of
/// the monitor that made it), then, as root there, a private mount namespace with cgroup2 on
/// /sys/fs/cgroup as the monitor had, so that libcontainer finds the container's cgroup.
/// The process must be single-threaded and not in another user namespace (one it is in
/// already, as after an earlier exec into a container its monitor shares, is kept).
pub(crate) fn join_container(init: i32) -> Result<IdMapping, RunError> {
    for (ns, flag) in [
        ("user", CloneFlags::CLONE_NEWUSER),
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ] {
        if same_namespace(init, ns) {
            continue;
        }
        let path = format!("/proc/{init}/ns/{ns}");
        let file = std::fs::File::open(&path).map_err(|source| RunError::Io {
            op: "opening the container's namespace",
            path: path.clone().into(),
            source,
        })?;
        nix::sched::setns(&file, flag).map_err(|e| RunError::Sys {
            op: if ns == "user" {
                "joining the container's user namespace"
            } else {
                "joining the container's cgroup namespace"
            },
            source: e,
        })?;
    }
    let mapping = current_mapping().unwrap_or(IdMapping::Single);
    private_mounts()?;
    match mount_unified() {
        // The same cgroup2 view is mounted there already (an earlier exec of this process).
        Err(RunError::Sys {
            source: nix::errno::Errno::EBUSY,
            ..
        }) => {}
        other => other?,
    }
    Ok(mapping)
}
