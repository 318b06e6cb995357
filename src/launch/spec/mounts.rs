//! Mounts as docker sets them up: the default mounts, `-v` volumes, `--tmpfs`, and the masked
//! and read-only /proc and /sys paths.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{Mount, MountBuilder};

use super::{Network, SpecContext, SpecError, built};

/// /proc and /sys paths docker hides.
pub(super) const MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// /proc paths docker makes read-only.
pub(super) const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// One mount of the table below: (destination, type, source, options).
type MountRow = (
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
);

/// The mounts every container gets, as docker sets them up. /dev/pts gains `gid=5` when the
/// tty group is mapped, and /sys is a read-only bind of the host's when a rootless container
/// shares the host network (see [`default_mounts`]).
const DEFAULT_MOUNTS: [MountRow; 6] = [
    ("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
    (
        "/dev",
        "tmpfs",
        "tmpfs",
        &["nosuid", "strictatime", "mode=755", "size=65536k"],
    ),
    (
        "/dev/pts",
        "devpts",
        "devpts",
        &[
            "nosuid",
            "noexec",
            "newinstance",
            "ptmxmode=0666",
            "mode=0620",
        ],
    ),
    (
        "/dev/shm",
        "tmpfs",
        "shm",
        &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
    ),
    (
        "/dev/mqueue",
        "mqueue",
        "mqueue",
        &["nosuid", "noexec", "nodev"],
    ),
    (
        "/sys",
        "sysfs",
        "sysfs",
        &["nosuid", "noexec", "nodev", "ro"],
    ),
];

/// The /sys of a rootless container on the host network: sysfs needs a network namespace owned
/// by the user namespace, so the host's is bound instead.
const SYS_BIND: MountRow = (
    "/sys",
    "none",
    "/sys",
    &["rbind", "nosuid", "noexec", "nodev", "ro"],
);

/// Options of a `-v` bind mount (`ro` added for `:ro`) and of the /etc files skiff supplies.
const BIND_OPTIONS: [&str; 2] = ["rbind", "rprivate"];

/// Options every `--tmpfs` mount starts with.
const TMPFS_OPTIONS: [&str; 3] = ["nosuid", "nodev", "noexec"];

/// A bind mount from the host (`-v host:container[:ro]`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Volume {
    /// Absolute host path.
    pub host: PathBuf,
    /// Absolute path in the container.
    pub container: String,
    /// Mounted read-only.
    pub read_only: bool,
}

impl Volume {
    /// Parses `host:container[:ro|rw]`; a relative host path is taken from the current directory.
    pub fn parse(s: &str) -> Result<Self, SpecError> {
        let invalid = |reason: &str| SpecError::Invalid {
            what: "volume",
            value: s.to_owned(),
            reason: reason.to_owned(),
        };
        let parts: Vec<&str> = s.split(':').collect();
        let (host, container, mode) = match parts.as_slice() {
            [h, c] => (*h, *c, None),
            [h, c, m] => (*h, *c, Some(*m)),
            _ => return Err(invalid("expected HOST:CONTAINER[:ro|rw]")),
        };
        let read_only = match mode {
            None | Some("rw") => false,
            Some("ro") => true,
            Some(_) => return Err(invalid("the mode must be ro or rw")),
        };
        if host.is_empty() || !container.starts_with('/') {
            return Err(invalid(
                "both paths are needed and the container path must be absolute",
            ));
        }
        let host = if Path::new(host).is_absolute() {
            PathBuf::from(host)
        } else if host.starts_with('.') {
            std::env::current_dir()
                .map_err(|e| invalid(&e.to_string()))?
                .join(host)
        } else {
            return Err(invalid(
                "named volumes are not supported: give an absolute host path",
            ));
        };
        Ok(Self {
            host,
            container: container.to_owned(),
            read_only,
        })
    }
}

/// One mount from a table row.
fn mount(row: MountRow) -> Result<Mount, SpecError> {
    let (destination, typ, source, options) = row;
    built(
        "mount",
        MountBuilder::default()
            .destination(destination)
            .typ(typ)
            .source(source)
            .options(options.iter().map(|o| (*o).to_owned()).collect::<Vec<_>>())
            .build(),
    )
}

/// A bind mount of `source` on `destination`.
pub(super) fn bind(source: &Path, destination: &str, read_only: bool) -> Result<Mount, SpecError> {
    let mut options: Vec<String> = BIND_OPTIONS.iter().map(|o| (*o).to_owned()).collect();
    if read_only {
        options.push("ro".into());
    }
    built(
        "bind mount",
        MountBuilder::default()
            .destination(destination)
            .typ("none")
            .source(source)
            .options(options)
            .build(),
    )
}

/// The mounts every container gets ([`DEFAULT_MOUNTS`]), adapted to this one.
pub(super) fn default_mounts(ctx: &SpecContext, network: Network) -> Result<Vec<Mount>, SpecError> {
    let mut out = Vec::with_capacity(DEFAULT_MOUNTS.len());
    for row in DEFAULT_MOUNTS {
        let mut m = match row.0 {
            "/sys" if ctx.rootless && network == Network::Host => mount(SYS_BIND)?,
            _ => mount(row)?,
        };
        if row.0 == "/dev/pts"
            && ctx.tty_gid_mapped
            && let Some(options) = m.options_mut()
        {
            options.push("gid=5".into());
        }
        out.push(m);
    }
    Ok(out)
}

/// A `--tmpfs /path[:options]` mount.
pub(super) fn tmpfs(arg: &str) -> Result<Mount, SpecError> {
    let (destination, extra) = arg.split_once(':').unwrap_or((arg, ""));
    if !destination.starts_with('/') {
        return Err(SpecError::Invalid {
            what: "tmpfs",
            value: arg.to_owned(),
            reason: "the path must be absolute".into(),
        });
    }
    let options: Vec<String> = TMPFS_OPTIONS
        .into_iter()
        .chain(extra.split(',').filter(|o| !o.is_empty()))
        .map(str::to_owned)
        .collect();
    built(
        "tmpfs mount",
        MountBuilder::default()
            .destination(destination)
            .typ("tmpfs")
            .source("tmpfs")
            .options(options)
            .build(),
    )
}
