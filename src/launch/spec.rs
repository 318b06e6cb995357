//! Image config + run options → OCI runtime spec, with docker's semantics.
//!
//! Entrypoint/Cmd override rules, environment merge, user resolution from the image's
//! /etc/passwd and /etc/group, default mounts, capabilities and masked paths as docker sets them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use oci_spec::OciSpecError;
use oci_spec::image::Config as RunConfig;
use oci_spec::runtime::{
    Capabilities, Capability, LinuxBuilder, LinuxCapabilities, LinuxCapabilitiesBuilder,
    LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType, Mount, MountBuilder, Process,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

/// docker's PATH when the image has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// docker's default capability set, in docker's order.
pub const DEFAULT_CAPS: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Every capability the kernel may know, for `--cap-add ALL`.
const ALL_CAPS: [Capability; 41] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::LinuxImmutable,
    Capability::NetBindService,
    Capability::NetBroadcast,
    Capability::NetAdmin,
    Capability::NetRaw,
    Capability::IpcLock,
    Capability::IpcOwner,
    Capability::SysModule,
    Capability::SysRawio,
    Capability::SysChroot,
    Capability::SysPtrace,
    Capability::SysPacct,
    Capability::SysAdmin,
    Capability::SysBoot,
    Capability::SysNice,
    Capability::SysResource,
    Capability::SysTime,
    Capability::SysTtyConfig,
    Capability::Mknod,
    Capability::Lease,
    Capability::AuditWrite,
    Capability::AuditControl,
    Capability::Setfcap,
    Capability::MacOverride,
    Capability::MacAdmin,
    Capability::Syslog,
    Capability::WakeAlarm,
    Capability::BlockSuspend,
    Capability::AuditRead,
    Capability::Perfmon,
    Capability::Bpf,
    Capability::CheckpointRestore,
];

/// /proc and /sys paths docker hides.
const MASKED_PATHS: [&str; 11] = [
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
const READONLY_PATHS: [&str; 5] = [
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

/// Errors turning an image config and run options into a runtime spec (exit code 125).
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Neither the image nor the command line gives a command.
    #[error("no command specified (the image has no Entrypoint or Cmd: give one after the image)")]
    NoCommand,
    /// A `-u` user is not in the image's /etc/passwd.
    #[error("unable to find user {0}: no matching entries in passwd file")]
    UnknownUser(String),
    /// A `-u` group is not in the image's /etc/group.
    #[error("unable to find group {0}: no matching entries in group file")]
    UnknownGroup(String),
    /// A malformed option value.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        /// Which option.
        what: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// An env file could not be read.
    #[error("reading env file {path}: {source}")]
    EnvFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A `--cap-add`/`--cap-drop` name that is no capability.
    #[error(
        "unknown capability {0:?} (--cap-add and --cap-drop take names such as NET_ADMIN or \
         CAP_NET_ADMIN, or ALL)"
    )]
    UnknownCapability(String),
    /// A `--device` host path cannot be read.
    #[error(
        "error gathering device information while adding custom device {}: {source}",
        path.display()
    )]
    Device {
        /// The host path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The runtime spec types rejected a part of the spec.
    #[error("building the runtime spec ({part}): {source}")]
    Build {
        /// Which part.
        part: &'static str,
        /// Why.
        #[source]
        source: OciSpecError,
    },
}

/// Maps an oci-spec builder error to [`SpecError::Build`] naming the `part` built.
fn built<T>(part: &'static str, result: Result<T, OciSpecError>) -> Result<T, SpecError> {
    result.map_err(|source| SpecError::Build { part, source })
}

/// The container's network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Network {
    /// The host's network namespace (docker's `--network host`).
    #[default]
    Host,
    /// A new network namespace with only a loopback interface.
    None,
}

/// The container's seccomp filter (`--security-opt seccomp=…`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Seccomp {
    /// docker's default profile, resolved for the container's capabilities and architecture.
    #[default]
    Default,
    /// No filter (`seccomp=unconfined`).
    Unconfined,
    /// A profile in docker's JSON format (`seccomp=PROFILE.json`).
    Profile(PathBuf),
}

/// A bind mount from the host (`-v host:container[:ro]`).
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// What `skiff run` was asked for, beyond the image.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Arguments after the image: replace the image's Cmd.
    pub command: Vec<String>,
    /// `--entrypoint`: replaces the image's Entrypoint and resets its Cmd ("" clears it).
    pub entrypoint: Option<String>,
    /// `-e KEY=VAL` or `-e KEY` (taken from the caller's environment), in order.
    pub env: Vec<String>,
    /// `--env-file` files, read before `-e`.
    pub env_files: Vec<PathBuf>,
    /// `-w`: working directory (created if missing).
    pub workdir: Option<String>,
    /// `-u name|uid[:group|gid]`.
    pub user: Option<String>,
    /// `-v` bind mounts.
    pub volumes: Vec<Volume>,
    /// `--tmpfs /path[:options]`.
    pub tmpfs: Vec<String>,
    /// `--read-only`: the root filesystem is mounted read-only.
    pub read_only: bool,
    /// `--hostname`.
    pub hostname: Option<String>,
    /// `--network`.
    pub network: Network,
    /// `--cap-add` (`ALL` for all).
    pub cap_add: Vec<String>,
    /// `--cap-drop` (`ALL` for all).
    pub cap_drop: Vec<String>,
    /// `-i`: keep stdin open.
    pub interactive: bool,
    /// `-t`: allocate a TTY.
    pub tty: bool,
    /// `--security-opt seccomp=…`.
    pub seccomp: Seccomp,
    /// `--security-opt no-new-privileges`: setuid binaries no longer raise privileges (off by
    /// default, as in docker).
    pub no_new_privileges: bool,
    /// Resource limits (`--memory`, `--cpus`, `--pids-limit`, `--ulimit`, `--shm-size`...).
    pub limits: super::resources::Limits,
    /// `--add-host NAME:IP` (or `NAME=IP`; IP may be `host-gateway`): lines added to
    /// /etc/hosts.
    pub add_hosts: Vec<String>,
    /// `--group-add GROUP|GID`: more supplementary groups (names from the image's /etc/group).
    pub group_add: Vec<String>,
    /// `--stop-signal`: what the payload receives when skiff receives SIGTERM (default: the
    /// image's StopSignal, else SIGTERM).
    pub stop_signal: Option<String>,
    /// `--stop-timeout`: seconds from a forwarded SIGTERM/SIGINT/SIGHUP to SIGKILL (default 10;
    /// negative: never).
    pub stop_timeout: Option<i64>,
    /// `--init`: skiff's own init runs as PID 1, reaps zombies and forwards signals.
    pub init: bool,
    /// `--privileged`: every capability, no seccomp filter, no masked or read-only paths,
    /// the host's devices, /sys writable.
    pub privileged: bool,
    /// `--device HOST[:CONTAINER][:PERMISSIONS]`.
    pub devices: Vec<String>,
}

/// A resolved container user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// uid.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
    /// Supplementary gids (the primary one included, as `id` shows it).
    pub groups: Vec<u32>,
    /// Home directory, for HOME.
    pub home: String,
}

/// The image's argv under docker's override rules.
pub fn command(config: &RunConfig, options: &RunOptions) -> Result<Vec<String>, SpecError> {
    let (entrypoint, cmd) = match &options.entrypoint {
        Some(e) if e.is_empty() => (Vec::new(), options.command.clone()),
        Some(e) => (vec![e.clone()], options.command.clone()),
        None => (
            config.entrypoint().clone().unwrap_or_default(),
            if options.command.is_empty() {
                config.cmd().clone().unwrap_or_default()
            } else {
                options.command.clone()
            },
        ),
    };
    let argv: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if argv.is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok(argv)
}

/// Sets `KEY=VAL` in `env`, replacing an earlier value of KEY in place.
fn set_env(env: &mut Vec<String>, entry: String) {
    let key = entry.split('=').next().unwrap_or_default().to_owned();
    match env
        .iter_mut()
        .find(|e| e.split('=').next() == Some(key.as_str()))
    {
        Some(slot) => *slot = entry,
        None => env.push(entry),
    }
}

/// Adds one `-e`/env-file entry: `KEY=VAL` literally, `KEY` from `lookup` (dropped if unset).
fn add_env(env: &mut Vec<String>, entry: &str, lookup: &dyn Fn(&str) -> Option<String>) {
    if entry.contains('=') {
        set_env(env, entry.to_owned());
    } else if let Some(value) = lookup(entry) {
        set_env(env, format!("{entry}={value}"));
    }
}

/// The environment: image Env, then env files, then `-e`; PATH, HOSTNAME, HOME and TERM as docker
/// adds them.
pub fn environment(
    config: &RunConfig,
    options: &RunOptions,
    hostname: &str,
    home: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, SpecError> {
    let mut env = vec![
        format!("PATH={DEFAULT_PATH}"),
        format!("HOSTNAME={hostname}"),
    ];
    if options.tty {
        env.push("TERM=xterm".into());
    }
    for entry in config.env().iter().flatten() {
        set_env(&mut env, entry.clone());
    }
    for path in &options.env_files {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::EnvFile {
            path: path.clone(),
            source,
        })?;
        for line in text.lines() {
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            add_env(&mut env, line, lookup);
        }
    }
    for entry in &options.env {
        if entry.is_empty() || entry.starts_with('=') {
            return Err(SpecError::Invalid {
                what: "environment variable",
                value: entry.clone(),
                reason: "expected KEY=VALUE or KEY".into(),
            });
        }
        add_env(&mut env, entry, lookup);
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={home}"));
    }
    Ok(env)
}

/// One line of /etc/passwd.
struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

fn passwd_entries(passwd: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    passwd.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        Some(PasswdEntry {
            name: f.first()?,
            uid: f.get(2)?.parse().ok()?,
            gid: f.get(3)?.parse().ok()?,
            home: f.get(5).copied().unwrap_or("/"),
        })
    })
}

/// (name, gid, members) of each /etc/group line.
fn group_entries(group: &str) -> impl Iterator<Item = (&str, u32, Vec<&str>)> {
    group.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        Some((
            *f.first()?,
            f.get(2)?.parse().ok()?,
            f.get(3)
                .map(|m| m.split(',').filter(|m| !m.is_empty()).collect())
                .unwrap_or_default(),
        ))
    })
}

/// Resolves `-u`/the image's User against the image's /etc/passwd and /etc/group contents.
pub fn resolve_user(spec: &str, passwd: &str, group: &str) -> Result<User, SpecError> {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user = if user.is_empty() { "0" } else { user };
    let entry = passwd_entries(passwd).find(|e| e.name == user || e.uid.to_string() == user);
    let (uid, mut gid, home, name) = match (entry, user.parse::<u32>()) {
        (Some(e), _) => (e.uid, e.gid, e.home.to_owned(), Some(e.name.to_owned())),
        (None, Ok(uid)) => (uid, 0, "/".to_owned(), None),
        (None, Err(_)) => return Err(SpecError::UnknownUser(user.to_owned())),
    };
    if let Some(g) = grp.filter(|g| !g.is_empty()) {
        gid = match group_entries(group).find(|(n, id, _)| *n == g || id.to_string() == g) {
            Some((_, id, _)) => id,
            None => g
                .parse()
                .map_err(|_| SpecError::UnknownGroup(g.to_owned()))?,
        };
    }
    let mut groups = BTreeSet::from([gid]);
    // Supplementary groups come from membership, unless a group was forced with user:group.
    if grp.is_none()
        && let Some(name) = &name
    {
        groups.extend(
            group_entries(group)
                .filter(|(_, _, members)| members.iter().any(|m| m == name))
                .map(|(_, id, _)| id),
        );
    }
    Ok(User {
        uid,
        gid,
        groups: groups.into_iter().collect(),
        home,
    })
}

/// A `--cap-add`/`--cap-drop` argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapArg {
    /// `ALL`.
    All,
    /// One capability.
    One(Capability),
}

/// Parses a capability name as docker does: `NET_ADMIN` or `CAP_NET_ADMIN`, in any case, or
/// `ALL`.
pub fn parse_capability(name: &str) -> Result<CapArg, SpecError> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    if bare == "ALL" {
        return Ok(CapArg::All);
    }
    bare.parse::<Capability>()
        .map(CapArg::One)
        .map_err(|_| SpecError::UnknownCapability(name.to_owned()))
}

/// The capability set: docker's defaults with `--cap-drop` then `--cap-add` applied, in
/// docker's order with added ones last.
pub fn capabilities(add: &[String], drop: &[String]) -> Result<Vec<Capability>, SpecError> {
    let parse = |names: &[String]| -> Result<Vec<CapArg>, SpecError> {
        names.iter().map(|n| parse_capability(n)).collect()
    };
    let add = parse(add)?;
    let drop = parse(drop)?;
    let mut caps: Vec<Capability> = if drop.contains(&CapArg::All) {
        Vec::new()
    } else {
        DEFAULT_CAPS
            .into_iter()
            .filter(|c| !drop.contains(&CapArg::One(*c)))
            .collect()
    };
    let extra: Vec<Capability> = if add.contains(&CapArg::All) {
        ALL_CAPS.to_vec()
    } else {
        add.iter()
            .filter_map(|a| match a {
                CapArg::One(c) => Some(*c),
                CapArg::All => None,
            })
            .collect()
    };
    for c in extra {
        if !caps.contains(&c) {
            caps.push(c);
        }
    }
    Ok(caps)
}

/// Host facts and run-directory files the spec refers to.
#[derive(Debug, Clone)]
pub struct SpecContext {
    /// The rootfs directory (relative to the bundle or absolute).
    pub rootfs: PathBuf,
    /// Run directory files bind-mounted as /etc/hosts, /etc/resolv.conf, /etc/hostname.
    pub etc_files: Vec<(PathBuf, &'static str)>,
    /// The container's hostname.
    pub hostname: String,
    /// Absolute cgroups path, unique per run.
    pub cgroups_path: String,
    /// Running inside a rootless user namespace.
    pub rootless: bool,
    /// The user namespace maps gid 5 (tty), so devpts may use it.
    pub tty_gid_mapped: bool,
    /// Host devices given to the container (`--device`, all of them with `--privileged`).
    pub devices: Vec<HostDevice>,
}

/// The annotation that asks the container's init to stay as PID 1 (`--init`, see
/// `launch::init`).
pub(crate) const INIT_ANNOTATION: &str = "org.skiff.init";

/// What `--add-host host-gateway` stands for. docker puts its bridge's address there; skiff
/// has no bridge, and on the host network (its default) the host is 127.0.0.1.
pub const HOST_GATEWAY: &str = "127.0.0.1";

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

/// Parses `--add-host NAME:IP` or `NAME=IP` as docker does (IPv6 as `NAME:::1` or
/// `NAME=[::1]`; `host-gateway` for the host): (name, address).
pub fn extra_host(arg: &str) -> Result<(String, String), SpecError> {
    let invalid = |reason: &str| SpecError::Invalid {
        what: "--add-host",
        value: arg.to_owned(),
        reason: reason.to_owned(),
    };
    let (name, ip) = arg
        .split_once('=')
        .or_else(|| arg.split_once(':'))
        .ok_or_else(|| invalid("expected NAME:IP"))?;
    if name.is_empty() || name.chars().any(|c| c.is_whitespace()) {
        return Err(invalid("the host name is empty or contains white space"));
    }
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    if ip == "host-gateway" {
        return Ok((name.to_owned(), HOST_GATEWAY.to_owned()));
    }
    match ip.parse::<std::net::IpAddr>() {
        Ok(addr) => Ok((name.to_owned(), addr.to_string())),
        Err(_) => Err(invalid(
            "invalid IP address (give an IPv4 or IPv6 address, or host-gateway)",
        )),
    }
}

/// Parses a signal as docker does: `SIGTERM`, `TERM`, `term` or a number.
pub fn parse_signal(arg: &str) -> Result<nix::sys::signal::Signal, SpecError> {
    let invalid = || SpecError::Invalid {
        what: "signal",
        value: arg.to_owned(),
        reason: "give a name such as SIGTERM or TERM, or a number".into(),
    };
    if let Ok(n) = arg.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n).map_err(|_| invalid());
    }
    let upper = arg.trim().to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse().map_err(|_| invalid())
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
const STANDARD_DEVICES: [&str; 6] = [
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

/// `--group-add` groups as gids: a number as it is, a name from the image's /etc/group.
pub fn group_add(groups: &[String], group_file: &str) -> Result<Vec<u32>, SpecError> {
    groups
        .iter()
        .map(
            |g| match group_entries(group_file).find(|(name, _, _)| name == g) {
                Some((_, gid, _)) => Ok(gid),
                None => g.parse().map_err(|_| SpecError::UnknownGroup(g.clone())),
            },
        )
        .collect()
}

impl RunOptions {
    /// Checks the flags that need no image (`--add-host`, `--stop-signal`, `--device`,
    /// capability names), so that a bad one fails before any pull.
    pub fn validate(&self) -> Result<(), SpecError> {
        for h in &self.add_hosts {
            extra_host(h)?;
        }
        if let Some(s) = &self.stop_signal {
            parse_signal(s)?;
        }
        for d in &self.devices {
            parse_device(d)?;
        }
        capabilities(&self.cap_add, &self.cap_drop)?;
        Ok(())
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
fn bind(source: &Path, destination: &str, read_only: bool) -> Result<Mount, SpecError> {
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
fn default_mounts(ctx: &SpecContext, network: Network) -> Result<Vec<Mount>, SpecError> {
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
fn tmpfs(arg: &str) -> Result<Mount, SpecError> {
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

/// The process's capabilities: `caps` bounding; effective and permitted too for root (like
/// docker, a non-root user keeps the bounding set but starts without effective caps).
fn process_capabilities(caps: &[Capability], uid: u32) -> Result<LinuxCapabilities, SpecError> {
    let bounding: Capabilities = caps.iter().copied().collect();
    let effective = if uid == 0 {
        bounding.clone()
    } else {
        Capabilities::new()
    };
    built(
        "capabilities",
        LinuxCapabilitiesBuilder::default()
            .bounding(bounding)
            .permitted(effective.clone())
            .effective(effective)
            .inheritable(Capabilities::new())
            .ambient(Capabilities::new())
            .build(),
    )
}

/// The device nodes of `ctx` in the container, and (as root) the device cgroup's allow-list:
/// everything denied but docker's standard devices (libcontainer adds those), the `--device`
/// nodes with their permissions, or everything with `--privileged`. Rootless there is no
/// device controller, and the nodes are bind mounts of the host's.
fn set_devices(
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

/// The kernel's number of a capability: its index in [`ALL_CAPS`], which is in the kernel's
/// order.
fn cap_bit(c: Capability) -> u32 {
    ALL_CAPS.iter().position(|x| *x == c).unwrap_or(63) as u32
}

/// The capabilities this process may pass on: its bounding set (`CapBnd` in
/// /proc/self/status), every one when that cannot be read.
fn held_capabilities() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX)
}

/// The container's process.
fn process(
    argv: Vec<String>,
    env: Vec<String>,
    cwd: &str,
    user: &User,
    options: &RunOptions,
) -> Result<Process, SpecError> {
    let mut caps = capabilities(&options.cap_add, &options.cap_drop)?;
    if options.privileged {
        caps = ALL_CAPS.to_vec();
    }
    let held = held_capabilities();
    let all_added = options.privileged
        || options
            .cap_add
            .iter()
            .any(|c| matches!(parse_capability(c), Ok(CapArg::All)));
    if all_added {
        // ALL is what skiff itself may give: a host (or an outer container) may withhold some.
        caps.retain(|c| held & (1 << cap_bit(*c)) != 0);
    } else if let Some(c) = caps.iter().find(|c| held & (1 << cap_bit(**c)) == 0) {
        return Err(SpecError::Invalid {
            what: "capability",
            value: format!("CAP_{c}"),
            reason: "skiff's own bounding set lacks it (the host, or the container skiff runs \
                     in, withholds it): drop it from --cap-add"
                .into(),
        });
    }
    let oci_user = built(
        "user",
        UserBuilder::default()
            .uid(user.uid)
            .gid(user.gid)
            .additional_gids(user.groups.clone())
            .build(),
    )?;
    let mut process = built(
        "process",
        ProcessBuilder::default()
            .terminal(options.tty)
            .user(oci_user)
            .args(argv)
            .env(env)
            .cwd(cwd)
            .capabilities(process_capabilities(&caps, user.uid)?)
            .build(),
    )?;
    // Off must be absent, not false: libcontainer 0.7 loads a seccomp filter after dropping
    // capabilities whenever the field is set at all, which fails without no_new_privileges.
    process.set_no_new_privileges(options.no_new_privileges.then_some(true));
    // The builder starts from oci-spec's example process, whose RLIMIT_NOFILE of 1024 docker
    // does not set: the payload inherits skiff's limits.
    process.set_rlimits(None);
    Ok(process)
}

/// The namespaces the container gets: its own pid, ipc, uts and mount, and network with
/// `--network none`.
fn namespaces(network: Network) -> Result<Vec<LinuxNamespace>, SpecError> {
    let mut types = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ];
    if network == Network::None {
        types.push(LinuxNamespaceType::Network);
    }
    types
        .into_iter()
        .map(|typ| {
            built(
                "namespace",
                LinuxNamespaceBuilder::default().typ(typ).build(),
            )
        })
        .collect()
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// The seccomp filter, in `linux.seccomp`: docker's default profile or `--security-opt
/// seccomp=PROFILE.json` resolved for the process's bounding set (as docker resolves them);
/// none with `seccomp=unconfined`, or with `--privileged` (as docker: a given profile must
/// still be readable and valid).
fn seccomp_of(spec: &mut Spec, options: &RunOptions) -> Result<(), SpecError> {
    let bounding: Vec<Capability> = spec
        .process()
        .as_ref()
        .and_then(|p| p.capabilities().as_ref())
        .and_then(|c| c.bounding().as_ref())
        .into_iter()
        .flatten()
        .copied()
        .collect();
    let filter = super::seccomp::resolve(&options.seccomp, &bounding).map_err(|e| {
        let (profile, reason) = e.profile_and_cause();
        SpecError::Invalid {
            what: "seccomp profile",
            value: profile,
            reason,
        }
    })?;
    if let Some(linux) = spec.linux_mut() {
        linux.set_seccomp(filter.filter(|_| !options.privileged));
    }
    Ok(())
}

/// Builds the runtime spec.
///
/// oci-spec's builders start from its own example config (youki's defaults), so everything
/// skiff does not set is cleared here: no rlimits, no cgroup resources, no annotations.
pub fn build(
    argv: Vec<String>,
    env: Vec<String>,
    cwd: &str,
    user: &User,
    options: &RunOptions,
    ctx: &SpecContext,
) -> Result<Spec, SpecError> {
    let mut mounts = default_mounts(ctx, options.network)?;
    if options.privileged {
        // docker's --privileged: /sys writable.
        for m in mounts
            .iter_mut()
            .filter(|m| m.destination() == Path::new("/sys"))
        {
            if let Some(o) = m.options_mut() {
                o.retain(|o| o != "ro");
            }
        }
    }
    for (source, destination) in &ctx.etc_files {
        mounts.push(bind(source, destination, false)?);
    }
    for v in &options.volumes {
        mounts.push(bind(&v.host, &v.container, v.read_only)?);
    }
    for t in &options.tmpfs {
        mounts.push(tmpfs(t)?);
    }
    if ctx.rootless {
        // libcontainer binds its standard devices itself (a second bind of /dev/tty on top
        // fails: opening it needs a controlling terminal).
        for d in ctx.devices.iter().filter(|d| {
            !(STANDARD_DEVICES.contains(&d.path.as_str()) && d.host == Path::new(&d.path))
        }) {
            mounts.push(bind(&d.host, &d.path, false)?);
        }
    }
    let mut linux = built(
        "linux",
        LinuxBuilder::default()
            .cgroups_path(PathBuf::from(&ctx.cgroups_path))
            .namespaces(namespaces(options.network)?)
            .masked_paths(strings(&MASKED_PATHS))
            .readonly_paths(strings(&READONLY_PATHS))
            .build(),
    )?;
    linux.set_resources(None);
    set_devices(&mut linux, options, ctx)?;
    if options.privileged {
        linux.set_masked_paths(None);
        linux.set_readonly_paths(None);
    }
    let root = built(
        "root",
        RootBuilder::default()
            .path(&ctx.rootfs)
            .readonly(options.read_only)
            .build(),
    )?;
    let mut spec = built(
        "spec",
        SpecBuilder::default()
            .version("1.0.2")
            .process(process(argv, env, cwd, user, options)?)
            .root(root)
            .hostname(ctx.hostname.clone())
            .mounts(mounts)
            .linux(linux)
            .build(),
    )?;
    spec.set_annotations(options.init.then(|| {
        [(INIT_ANNOTATION.to_owned(), "true".to_owned())]
            .into_iter()
            .collect()
    }));
    seccomp_of(&mut spec, options)?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn config(entrypoint: Option<&[&str]>, cmd: Option<&[&str]>) -> RunConfig {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect();
        let mut c = RunConfig::default();
        c.set_entrypoint(entrypoint.map(v));
        c.set_cmd(cmd.map(v));
        c
    }

    fn opts(entrypoint: Option<&str>, command: &[&str]) -> RunOptions {
        RunOptions {
            entrypoint: entrypoint.map(str::to_owned),
            command: command.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn command_follows_docker_rules() {
        let c = config(Some(&["/ep", "x"]), Some(&["c1"]));
        assert_eq!(command(&c, &opts(None, &[])).unwrap(), ["/ep", "x", "c1"]);
        assert_eq!(command(&c, &opts(None, &["a"])).unwrap(), ["/ep", "x", "a"]);
        assert_eq!(command(&c, &opts(Some("/e2"), &[])).unwrap(), ["/e2"]);
        assert_eq!(
            command(&c, &opts(Some("/e2"), &["b"])).unwrap(),
            ["/e2", "b"]
        );
        assert_eq!(command(&c, &opts(Some(""), &["ls"])).unwrap(), ["ls"]);
        assert!(matches!(
            command(&config(None, None), &opts(None, &[])),
            Err(SpecError::NoCommand)
        ));
    }

    #[test]
    fn env_merges_in_order() {
        let mut c = RunConfig::default();
        c.set_env(Some(vec![
            "PATH=/bin".into(),
            "A=image".into(),
            "B=image".into(),
        ]));
        let o = RunOptions {
            env: vec!["A=cli".into(), "FROMHOST".into(), "MISSING".into()],
            ..Default::default()
        };
        let lookup = |k: &str| (k == "FROMHOST").then(|| "h".to_owned());
        let env = environment(&c, &o, "box", "/root", &lookup).unwrap();
        assert_eq!(
            env,
            [
                "PATH=/bin",
                "HOSTNAME=box",
                "A=cli",
                "B=image",
                "FROMHOST=h",
                "HOME=/root"
            ]
        );
    }

    #[test]
    fn users_resolve_from_passwd_and_group() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n";
        let group = "root:x:0:\nuser:x:1000:\nwheel:x:10:user,other\n";
        let u = resolve_user("user", passwd, group).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (1000, 1000, "/home/user"));
        assert_eq!(u.groups, [10, 1000]);
        let u = resolve_user("1000:10", passwd, group).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 10));
        let u = resolve_user("4242:wheel", passwd, group).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (4242, 10, "/"));
        assert!(resolve_user("nobody", passwd, group).is_err());
        assert!(resolve_user("user:nogroup", passwd, group).is_err());
        assert_eq!(resolve_user("", passwd, group).unwrap().uid, 0);
    }

    #[test]
    fn capability_names_parse_as_docker_takes_them() {
        for name in ["NET_ADMIN", "CAP_NET_ADMIN", "net_admin", "cap_Net_Admin"] {
            assert_eq!(
                parse_capability(name).unwrap(),
                CapArg::One(Capability::NetAdmin),
                "{name}"
            );
        }
        assert_eq!(parse_capability("all").unwrap(), CapArg::All);
        assert_eq!(parse_capability("CAP_ALL").unwrap(), CapArg::All);
        assert_eq!(
            parse_capability("SYS_TTY_CONFIG").unwrap(),
            CapArg::One(Capability::SysTtyConfig)
        );
        for bad in ["bogus", "NetAdmin", "CAP_", ""] {
            let err = parse_capability(bad).unwrap_err();
            assert!(
                matches!(&err, SpecError::UnknownCapability(n) if n == bad),
                "{err}"
            );
        }
        // Every capability of the ALL table parses back from its kernel name.
        for c in ALL_CAPS {
            assert_eq!(
                parse_capability(&format!("CAP_{c}")).unwrap(),
                CapArg::One(c)
            );
        }
    }

    #[test]
    fn capabilities_add_and_drop() {
        let caps = capabilities(&["net_admin".into()], &["CAP_KILL".into()]).unwrap();
        assert!(caps.contains(&Capability::NetAdmin));
        assert!(!caps.contains(&Capability::Kill));
        assert!(capabilities(&[], &["ALL".into()]).unwrap().is_empty());
        assert_eq!(capabilities(&["ALL".into()], &[]).unwrap().len(), 41);
        assert!(matches!(
            capabilities(&["bogus".into()], &[]),
            Err(SpecError::UnknownCapability(_))
        ));
    }

    fn context(rootless: bool) -> SpecContext {
        SpecContext {
            rootfs: PathBuf::from("rootfs"),
            etc_files: vec![(PathBuf::from("/run/x/hosts"), "/etc/hosts")],
            hostname: "box".into(),
            cgroups_path: "/skiff/r1".into(),
            rootless,
            tty_gid_mapped: true,
            devices: Vec::new(),
        }
    }

    fn root_user() -> User {
        User {
            uid: 0,
            gid: 0,
            groups: vec![0],
            home: "/root".into(),
        }
    }

    fn destinations(spec: &Spec) -> Vec<String> {
        spec.mounts()
            .iter()
            .flatten()
            .map(|m| m.destination().display().to_string())
            .collect()
    }

    #[test]
    fn built_spec_has_docker_defaults() {
        let options = RunOptions {
            volumes: vec![Volume::parse("/host:/data:ro").unwrap()],
            tmpfs: vec!["/scratch:size=1m".into()],
            ..Default::default()
        };
        let spec = build(
            vec!["sh".into()],
            vec!["PATH=/bin".into()],
            "/",
            &root_user(),
            &options,
            &context(false),
        )
        .unwrap();
        let process = spec.process().as_ref().unwrap();
        let caps = process.capabilities().as_ref().unwrap();
        let default: Capabilities = DEFAULT_CAPS.into_iter().collect();
        assert_eq!(caps.bounding().as_ref(), Some(&default));
        assert_eq!(caps.effective().as_ref(), Some(&default));
        assert_eq!(caps.permitted().as_ref(), Some(&default));
        assert_eq!(caps.inheritable().as_ref(), Some(&Capabilities::new()));
        assert_eq!(caps.ambient().as_ref(), Some(&Capabilities::new()));
        // Off as in docker, and absent rather than false (libcontainer 0.7 treats any value as
        // a reason to load seccomp late).
        assert_eq!(process.no_new_privileges(), None);
        assert_eq!(process.args().as_deref(), Some(&["sh".to_owned()][..]));
        // Nothing of oci-spec's example config leaks in.
        assert_eq!(process.rlimits(), &None);
        assert_eq!(spec.annotations(), &None);
        let linux = spec.linux().as_ref().unwrap();
        // As root, the device cgroup denies everything but the standard devices (libcontainer
        // allows those after this rule).
        let rules = linux
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .clone()
            .unwrap();
        assert_eq!(
            (rules[0].allow(), rules[0].to_string()),
            (false, "a *:* rwm".into())
        );
        assert_eq!(rules.len(), 1);
        assert_eq!(linux.uid_mappings(), &None);
        assert_eq!(
            linux.masked_paths().as_deref(),
            Some(&strings(&MASKED_PATHS)[..])
        );
        assert_eq!(
            linux.readonly_paths().as_deref(),
            Some(&strings(&READONLY_PATHS)[..])
        );
        let ns: Vec<_> = linux
            .namespaces()
            .iter()
            .flatten()
            .map(|n| n.typ())
            .collect();
        assert_eq!(
            ns,
            [
                LinuxNamespaceType::Pid,
                LinuxNamespaceType::Ipc,
                LinuxNamespaceType::Uts,
                LinuxNamespaceType::Mount
            ]
        );
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(Path::new("/skiff/r1"))
        );
        assert_eq!(
            destinations(&spec),
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/dev/mqueue",
                "/sys",
                "/etc/hosts",
                "/data",
                "/scratch"
            ]
        );
        let mounts = spec.mounts().as_ref().unwrap();
        assert_eq!(mounts[5].typ().as_deref(), Some("sysfs"));
        assert!(mounts[2].options().iter().flatten().any(|o| o == "gid=5"));
        assert_eq!(
            mounts[7].options().as_deref(),
            Some(&strings(&["rbind", "rprivate", "ro"])[..])
        );
        assert_eq!(
            mounts[8].options().as_deref(),
            Some(&strings(&["nosuid", "nodev", "noexec", "size=1m"])[..])
        );
        let root = spec.root().as_ref().unwrap();
        assert_eq!(
            (root.path().as_path(), root.readonly()),
            (Path::new("rootfs"), Some(false))
        );
        assert_eq!(spec.hostname().as_deref(), Some("box"));
    }

    #[test]
    fn variants_of_the_defaults() {
        let user = User {
            uid: 1000,
            ..root_user()
        };
        let options = RunOptions {
            network: Network::None,
            tty: true,
            cap_drop: vec!["ALL".into()],
            cap_add: vec!["CAP_NET_RAW".into()],
            ..Default::default()
        };
        let spec = build(
            vec!["sh".into()],
            vec![],
            "/",
            &user,
            &options,
            &context(true),
        )
        .unwrap();
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.terminal(), Some(true));
        let caps = process.capabilities().as_ref().unwrap();
        assert_eq!(
            caps.bounding().as_ref(),
            Some(&Capabilities::from([Capability::NetRaw]))
        );
        // A non-root user starts without effective capabilities.
        assert_eq!(caps.effective().as_ref(), Some(&Capabilities::new()));
        let linux = spec.linux().as_ref().unwrap();
        assert!(
            linux
                .namespaces()
                .iter()
                .flatten()
                .any(|n| n.typ() == LinuxNamespaceType::Network)
        );
        // Rootless with its own network namespace: a real sysfs.
        assert_eq!(
            spec.mounts().as_ref().unwrap()[5].typ().as_deref(),
            Some("sysfs")
        );
        // Rootless on the host network: the host's /sys bound read-only.
        let host = build(
            vec!["sh".into()],
            vec![],
            "/",
            &user,
            &RunOptions::default(),
            &context(true),
        )
        .unwrap();
        let sys = &host.mounts().as_ref().unwrap()[5];
        assert_eq!(
            (sys.typ().as_deref(), sys.source().as_deref()),
            (Some("none"), Some(Path::new("/sys")))
        );
        let bad = RunOptions {
            tmpfs: vec!["relative".into()],
            ..Default::default()
        };
        assert!(build(vec!["sh".into()], vec![], "/", &user, &bad, &context(false)).is_err());
    }

    #[test]
    fn no_new_privileges_privileged_devices_and_init() {
        let full = HostDevice {
            host: "/dev/full".into(),
            path: "/dev/myfull".into(),
            block: false,
            major: 1,
            minor: 7,
            mode: 0o666,
            uid: 0,
            gid: 0,
            access: "r".into(),
        };
        let ctx = SpecContext {
            devices: vec![full.clone()],
            ..context(false)
        };
        let options = RunOptions {
            no_new_privileges: true,
            init: true,
            ..Default::default()
        };
        let spec = build(vec!["sh".into()], vec![], "/", &root_user(), &options, &ctx).unwrap();
        assert_eq!(
            spec.process().as_ref().unwrap().no_new_privileges(),
            Some(true)
        );
        assert!(
            spec.annotations()
                .as_ref()
                .is_some_and(|a| a[INIT_ANNOTATION] == "true")
        );
        let linux = spec.linux().as_ref().unwrap();
        let devices = linux.devices().as_ref().unwrap();
        assert_eq!(devices[0].path(), Path::new("/dev/myfull"));
        let rules: Vec<String> = linux
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .iter()
            .flatten()
            .map(|r| format!("{} {r}", r.allow()))
            .collect();
        assert_eq!(rules, ["false a *:* rwm", "true c 1:7 r"]);

        let privileged = RunOptions {
            privileged: true,
            ..Default::default()
        };
        let spec = build(
            vec!["sh".into()],
            vec![],
            "/",
            &root_user(),
            &privileged,
            &ctx,
        )
        .unwrap();
        let caps = spec
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .clone()
            .unwrap();
        let held = ALL_CAPS
            .iter()
            .filter(|c| held_capabilities() & (1 << cap_bit(**c)) != 0)
            .count();
        assert_eq!(caps.effective().as_ref().unwrap().len(), held);
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(linux.masked_paths(), &None);
        assert_eq!(linux.readonly_paths(), &None);
        let rules = linux
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .clone()
            .unwrap();
        assert_eq!(rules[1].to_string(), "a *:* rwm");
        let sys = &spec.mounts().as_ref().unwrap()[5];
        assert!(!sys.options().iter().flatten().any(|o| o == "ro"));

        // Rootless: the node (a bind mount), no device cgroup, and only rwm.
        let rootless = SpecContext {
            devices: vec![HostDevice {
                access: "rwm".into(),
                ..full.clone()
            }],
            ..context(true)
        };
        let spec = build(
            vec!["sh".into()],
            vec![],
            "/",
            &root_user(),
            &RunOptions::default(),
            &rootless,
        )
        .unwrap();
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(linux.devices(), &None);
        assert_eq!(linux.resources(), &None);
        assert_eq!(destinations(&spec).last().unwrap(), "/dev/myfull");
        let ro = SpecContext {
            devices: vec![full],
            ..context(true)
        };
        let err = build(
            vec!["sh".into()],
            vec![],
            "/",
            &root_user(),
            &RunOptions::default(),
            &ro,
        )
        .unwrap_err();
        assert!(err.to_string().contains("only root"), "{err}");
    }

    #[test]
    fn add_host_signal_device_and_group_add_parse_as_docker_takes_them() {
        let ok = |a: &str| extra_host(a).unwrap();
        assert_eq!(ok("db:10.0.0.2"), ("db".into(), "10.0.0.2".into()));
        assert_eq!(ok("db=10.0.0.2"), ("db".into(), "10.0.0.2".into()));
        assert_eq!(ok("v6:::1"), ("v6".into(), "::1".into()));
        assert_eq!(ok("v6=[::1]"), ("v6".into(), "::1".into()));
        assert_eq!(ok("gw:host-gateway"), ("gw".into(), HOST_GATEWAY.into()));
        for bad in ["db", "db:", ":1.2.3.4", "db:1.2.3", "db:nowhere"] {
            assert!(extra_host(bad).is_err(), "{bad}");
        }
        use nix::sys::signal::Signal;
        for s in ["SIGQUIT", "QUIT", "quit", "3"] {
            assert_eq!(parse_signal(s).unwrap(), Signal::SIGQUIT, "{s}");
        }
        for bad in ["", "SIGNOPE", "0", "99"] {
            assert!(parse_signal(bad).is_err(), "{bad}");
        }
        let d = |a: &str| parse_device(a).unwrap();
        assert_eq!(
            d("/dev/full"),
            ("/dev/full".into(), "/dev/full".into(), "rwm".into())
        );
        assert_eq!(
            d("/dev/full:r"),
            ("/dev/full".into(), "/dev/full".into(), "r".into())
        );
        assert_eq!(
            d("/dev/full:/dev/f"),
            ("/dev/full".into(), "/dev/f".into(), "rwm".into())
        );
        assert_eq!(
            d("/dev/full:/dev/f:rw"),
            ("/dev/full".into(), "/dev/f".into(), "rw".into())
        );
        for bad in [
            "dev/full",
            "/dev/full:/x",
            "/dev/full:/dev/f:rx",
            "/dev/full:/dev/f:rr",
            "a:b:c:d",
        ] {
            assert!(parse_device(bad).is_err(), "{bad}");
        }
        let group = "root:x:0:\nwheel:x:10:\n";
        assert_eq!(
            group_add(&["wheel".into(), "4242".into()], group).unwrap(),
            [10, 4242]
        );
        assert!(matches!(
            group_add(&["nogroup".into()], group),
            Err(SpecError::UnknownGroup(g)) if g == "nogroup"
        ));
    }

    #[test]
    fn volumes_parse() {
        let v = Volume::parse("/a:/b:ro").unwrap();
        assert!(v.read_only);
        assert!(Volume::parse("/a").is_err());
        assert!(Volume::parse("name:/b").is_err());
        assert!(Volume::parse("/a:b").is_err());
    }
}
