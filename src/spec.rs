//! Image config + run options → OCI runtime spec, with docker's semantics.
//!
//! Entrypoint/Cmd override rules, environment merge, user resolution from the image's
//! /etc/passwd and /etc/group, default mounts, capabilities and masked paths as docker sets them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use libcontainer::oci_spec::runtime::Spec;
use serde_json::{Value, json};

use oci_spec::image::Config as RunConfig;

/// docker's PATH when the image has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// docker's default capability set.
pub const DEFAULT_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability the kernel may know, for `--cap-add ALL`.
const ALL_CAPS: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
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
    /// The assembled spec was rejected by the runtime spec types.
    #[error("building the runtime spec: {0}")]
    Build(#[source] serde_json::Error),
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

/// The capability set: docker's defaults with `--cap-add`/`--cap-drop` applied.
pub fn capabilities(add: &[String], drop: &[String]) -> Result<Vec<String>, SpecError> {
    let norm = |c: &str| -> Result<String, SpecError> {
        let up = c.to_ascii_uppercase();
        let name = if up.starts_with("CAP_") {
            up
        } else {
            format!("CAP_{up}")
        };
        if name == "CAP_ALL" || ALL_CAPS.contains(&name.as_str()) {
            Ok(name)
        } else {
            Err(SpecError::Invalid {
                what: "capability",
                value: c.to_owned(),
                reason: "unknown capability".into(),
            })
        }
    };
    let add: Vec<String> = add.iter().map(|c| norm(c)).collect::<Result<_, _>>()?;
    let drop: Vec<String> = drop.iter().map(|c| norm(c)).collect::<Result<_, _>>()?;
    let mut caps: Vec<String> = if drop.iter().any(|c| c == "CAP_ALL") {
        Vec::new()
    } else {
        DEFAULT_CAPS
            .iter()
            .filter(|c| !drop.iter().any(|d| d == *c))
            .map(|c| (*c).to_owned())
            .collect()
    };
    let extra: Vec<&str> = if add.iter().any(|c| c == "CAP_ALL") {
        ALL_CAPS.to_vec()
    } else {
        add.iter().map(String::as_str).collect()
    };
    for c in extra {
        if !caps.iter().any(|x| x == c) {
            caps.push(c.to_owned());
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
}

/// Builds the runtime spec.
pub fn build(
    argv: Vec<String>,
    env: Vec<String>,
    cwd: &str,
    user: &User,
    options: &RunOptions,
    ctx: &SpecContext,
) -> Result<Spec, SpecError> {
    let caps = capabilities(&options.cap_add, &options.cap_drop)?;
    // Like docker: a non-root user keeps the bounding set but starts without effective caps.
    let effective: Vec<String> = if user.uid == 0 {
        caps.clone()
    } else {
        Vec::new()
    };
    let mut devpts = vec![
        "nosuid",
        "noexec",
        "newinstance",
        "ptmxmode=0666",
        "mode=0620",
    ];
    if ctx.tty_gid_mapped {
        devpts.push("gid=5");
    }
    let sys = if ctx.rootless && options.network == Network::Host {
        // sysfs needs a network namespace owned by the user namespace: bind the host's.
        json!({"destination": "/sys", "type": "none", "source": "/sys",
               "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})
    } else {
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", "ro"]})
    };
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": devpts}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        sys,
    ];
    for (source, dest) in &ctx.etc_files {
        mounts.push(
            json!({"destination": dest, "type": "none", "source": source,
                           "options": ["rbind", "rprivate"]}),
        );
    }
    for v in &options.volumes {
        let mut opts = vec!["rbind", "rprivate"];
        if v.read_only {
            opts.push("ro");
        }
        mounts.push(
            json!({"destination": v.container, "type": "none", "source": v.host,
                           "options": opts}),
        );
    }
    for t in &options.tmpfs {
        let (dest, extra) = t.split_once(':').unwrap_or((t.as_str(), ""));
        if !dest.starts_with('/') {
            return Err(SpecError::Invalid {
                what: "tmpfs",
                value: t.clone(),
                reason: "the path must be absolute".into(),
            });
        }
        let mut opts = vec!["nosuid", "nodev", "noexec"];
        opts.extend(extra.split(',').filter(|o| !o.is_empty()));
        mounts.push(
            json!({"destination": dest, "type": "tmpfs", "source": "tmpfs",
                           "options": opts}),
        );
    }
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    if options.network == Network::None {
        namespaces.push(json!({"type": "network"}));
    }
    let spec: Value = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": options.tty,
            "user": {"uid": user.uid, "gid": user.gid, "additionalGids": user.groups},
            "args": argv,
            "env": env,
            "cwd": cwd,
            "capabilities": {
                "bounding": caps,
                "permitted": effective,
                "effective": effective,
                "inheritable": [],
                "ambient": [],
            },
            "noNewPrivileges": true,
        },
        "root": {"path": ctx.rootfs, "readonly": options.read_only},
        "hostname": ctx.hostname,
        "mounts": mounts,
        "linux": {
            "cgroupsPath": ctx.cgroups_path,
            "namespaces": namespaces,
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
        },
    });
    serde_json::from_value(spec).map_err(SpecError::Build)
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
    fn capabilities_add_and_drop() {
        let caps = capabilities(&["net_admin".into()], &["CAP_KILL".into()]).unwrap();
        assert!(caps.contains(&"CAP_NET_ADMIN".to_owned()));
        assert!(!caps.contains(&"CAP_KILL".to_owned()));
        assert!(capabilities(&[], &["ALL".into()]).unwrap().is_empty());
        assert!(capabilities(&["bogus".into()], &[]).is_err());
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
