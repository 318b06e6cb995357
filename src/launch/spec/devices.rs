//! Devices: `--device` parsing, the host devices a container gets (every one with
//! `--privileged`), their nodes in the spec and the device cgroup's allow-list.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::{RunOptions, SpecContext, SpecError, built};

/// A device node of the host given to the container (`--device`, or every host device with
/// `--privileged`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDevice {
    /// Path on the host.
    pub host: PathBuf,
    /// Path in the container.
    pub path: String,
    /// A block device (else a character device).
    pub block: bool,
    /// Major number.
    pub major: i64,
    /// Minor number.
    pub minor: i64,
    /// Permission bits of the host's node.
    pub mode: u32,
    /// Owner of the host's node.
    pub uid: u32,
    /// Group of the host's node.
    pub gid: u32,
    /// Device cgroup access: r, w and m combined.
    pub access: String,
}

/// Parses `--device HOST[:CONTAINER][:PERMISSIONS]` as docker does: (host path, container
/// path, permissions).
pub fn parse_device(arg: &str) -> Result<(PathBuf, String, String), SpecError> {
    let invalid = |reason: &str| SpecError::Invalid {
        what: "device",
        value: arg.to_owned(),
        reason: reason.to_owned(),
    };
    let is_access = |a: &str| {
        !a.is_empty()
            && a.len() <= 3
            && a.chars()
                .all(|c| matches!(c, 'r' | 'w' | 'm') && a.matches(c).count() == 1)
    };
    let parts: Vec<&str> = arg.split(':').collect();
    let (host, container, access) = match parts.as_slice() {
        [h] => (*h, *h, "rwm"),
        [h, a] if is_access(a) => (*h, *h, *a),
        [h, c] => (*h, *c, "rwm"),
        [h, c, a] => (*h, *c, *a),
        _ => return Err(invalid("expected HOST[:CONTAINER][:PERMISSIONS]")),
    };
    if !is_access(access) {
        return Err(invalid(
            "the permissions are r, w and m, each at most once (e.g. rwm or r)",
        ));
    }
    if !host.starts_with('/') || !container.starts_with("/dev/") {
        return Err(invalid(
            "the host path must be absolute and the container path under /dev/",
        ));
    }
    Ok((PathBuf::from(host), container.to_owned(), access.to_owned()))
}

/// The devices libcontainer gives every container.
pub(super) const STANDARD_DEVICES: [&str; 6] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
];

/// Directories and files of the host's /dev that `--privileged` does not copy (docker's list).
const HOST_DEV_SKIPPED: [&str; 9] = [
    "pts",
    "shm",
    "fd",
    "mqueue",
    ".lxc",
    ".lxd-mounts",
    ".udev",
    "console",
    "ptmx",
];

/// The device nodes at or under `host`, as they appear under `container`.
fn devices_at(
    host: &Path,
    container: &str,
    access: &str,
    skip: &[&str],
    out: &mut Vec<HostDevice>,
) -> std::io::Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::symlink_metadata(host)?;
    let ft = meta.file_type();
    if ft.is_dir() {
        for entry in std::fs::read_dir(host)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if skip.contains(&name.as_ref()) {
                continue;
            }
            let sub = format!("{}/{name}", container.trim_end_matches('/'));
            // An entry gone meanwhile is skipped, as docker does.
            if let Err(e) = devices_at(&entry.path(), &sub, access, &[], out)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                return Err(e);
            }
        }
    } else if ft.is_char_device() || ft.is_block_device() {
        let rdev = meta.rdev();
        out.push(HostDevice {
            host: host.to_owned(),
            path: container.to_owned(),
            block: ft.is_block_device(),
            major: i64::from(nix::sys::stat::major(rdev) as u32),
            minor: i64::from(nix::sys::stat::minor(rdev) as u32),
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            access: access.to_owned(),
        });
    }
    Ok(())
}

/// The host devices the container gets: each `--device` (a directory gives the devices under
/// it), and with `--privileged` every device of the host's /dev.
pub(crate) fn host_devices(options: &RunOptions) -> Result<Vec<HostDevice>, SpecError> {
    let mut out = Vec::new();
    if options.privileged {
        devices_at(
            Path::new("/dev"),
            "/dev",
            "rwm",
            &HOST_DEV_SKIPPED,
            &mut out,
        )
        .map_err(|source| SpecError::Device {
            path: "/dev".into(),
            source,
        })?;
    }
    for arg in &options.devices {
        let (host, container, access) = parse_device(arg)?;
        let before = out.len();
        devices_at(&host, &container, &access, &[], &mut out).map_err(|source| {
            SpecError::Device {
                path: host.clone(),
                source,
            }
        })?;
        if out.len() == before {
            return Err(SpecError::Invalid {
                what: "device",
                value: arg.clone(),
                reason: format!("{} is not a device node", host.display()),
            });
        }
    }
    // A later entry for the same path wins, as docker's --device after --privileged does.
    let mut seen = BTreeSet::new();
    let mut unique: Vec<HostDevice> = out
        .into_iter()
        .rev()
        .filter(|d| seen.insert(d.path.clone()))
        .collect();
    unique.reverse();
    Ok(unique)
}

/// The device nodes of `ctx` in the container, and (as root) the device cgroup's allow-list:
/// everything denied but docker's standard devices (libcontainer adds those), the `--device`
/// nodes with their permissions, or everything with `--privileged`. Rootless there is no
/// device controller, and the nodes are bind mounts of the host's.
pub(super) fn set_devices(
    linux: &mut oci_spec::runtime::Linux,
    options: &RunOptions,
    ctx: &SpecContext,
) -> Result<(), SpecError> {
    use oci_spec::runtime::{LinuxDeviceBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType};
    let typ = |d: &HostDevice| {
        if d.block {
            LinuxDeviceType::B
        } else {
            LinuxDeviceType::C
        }
    };
    let mut nodes = Vec::with_capacity(ctx.devices.len());
    for d in &ctx.devices {
        if ctx.rootless && !options.privileged && d.access != "rwm" {
            return Err(SpecError::Invalid {
                what: "device",
                value: format!("{}:{}", d.path, d.access),
                reason: "rootless, a device is a bind mount of the host's node with the host's \
                         permissions: limiting access needs the device cgroup, which only root \
                         has (give rwm, or run as root)"
                    .into(),
            });
        }
        if ctx.rootless {
            // A bind mount of the host's node (see build): the kernel refuses device nodes in a
            // user namespace, and libcontainer would bind the host path named like the
            // container's.
            continue;
        }
        nodes.push(built(
            "device",
            LinuxDeviceBuilder::default()
                .path(&d.path)
                .typ(typ(d))
                .major(d.major)
                .minor(d.minor)
                .file_mode(d.mode)
                .uid(d.uid)
                .gid(d.gid)
                .build(),
        )?);
    }
    if !nodes.is_empty() {
        linux.set_devices(Some(nodes));
    }
    if ctx.rootless {
        return Ok(());
    }
    let mut rules = vec![built(
        "device cgroup",
        LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build(),
    )?];
    if options.privileged {
        rules.push(built(
            "device cgroup",
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(LinuxDeviceType::A)
                .access("rwm")
                .build(),
        )?);
    } else {
        for d in &ctx.devices {
            rules.push(built(
                "device cgroup",
                LinuxDeviceCgroupBuilder::default()
                    .allow(true)
                    .typ(typ(d))
                    .major(d.major)
                    .minor(d.minor)
                    .access(d.access.clone())
                    .build(),
            )?);
        }
    }
    let mut resources = linux.resources().clone().unwrap_or_default();
    resources.set_devices(Some(rules));
    linux.set_resources(Some(resources));
    Ok(())
}
