//! Image config + run options → OCI runtime spec, with docker's semantics.
//!
//! Entrypoint/Cmd override rules, environment merge, user resolution from the image's
//! /etc/passwd and /etc/group, default mounts, capabilities and masked paths as docker sets them.
//!
//! Here: the run options, the spec's errors and [`build`]; the parts are in `command` (argv,
//! environment, stop signal), `user` (users and groups), `capabilities`, `mounts` (default
//! mounts, volumes, tmpfs, masked and read-only paths), `devices`, `hosts` (`--add-host`) and
//! `process` (the OCI process).

mod capabilities;
mod command;
mod devices;
mod hosts;
mod mounts;
mod process;
mod user;

use std::path::{Path, PathBuf};

use oci_spec::OciSpecError;
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType,
    RootBuilder, Spec, SpecBuilder,
};

pub use capabilities::capabilities;
pub use command::{command, environment, exec_environment, parse_signal};
pub(crate) use devices::host_devices;
pub use devices::{HostDevice, parse_device};
pub use hosts::extra_host;
pub use mounts::Volume;
pub use user::{User, group_add, resolve_user};

use devices::{STANDARD_DEVICES, set_devices};
use mounts::{MASKED_PATHS, READONLY_PATHS, bind, default_mounts, tmpfs};
pub use process::exec_process;
use process::process;

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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Network {
    /// The host's network namespace (docker's `--network host`).
    #[default]
    Host,
    /// A new network namespace with only a loopback interface.
    None,
}

/// The container's seccomp filter (`--security-opt seccomp=…`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Seccomp {
    /// docker's default profile, resolved for the container's capabilities and architecture.
    #[default]
    Default,
    /// No filter (`seccomp=unconfined`).
    Unconfined,
    /// A profile in docker's JSON format (`seccomp=PROFILE.json`).
    Profile(PathBuf),
}

/// What `skiff run` was asked for, beyond the image.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
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
    /// `--lazy`: an image that is not in the store and has a lazy index starts from its index
    /// (files fetched as they are read) while it is pulled whole; without an index, a full
    /// pull first, as always.
    pub lazy: bool,
    /// `--privileged`: every capability, no seccomp filter, no masked or read-only paths,
    /// the host's devices, /sys writable.
    pub privileged: bool,
    /// `--device HOST[:CONTAINER][:PERMISSIONS]`.
    pub devices: Vec<String>,
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
mod tests;
