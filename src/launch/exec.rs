//! `exec`: a new process in a running job container, joining its namespaces, cgroup, user
//! namespace (rootless), capabilities and seccomp filter, with the container's environment
//! plus `-e`. Exit codes pass through (126/127 as docker when the command cannot run).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxSeccomp, Spec};

use super::{RunError, RunOptions, SpecError, container, rootfs, rootless, seccomp, spec, stdio};

/// The container's filter as the spec had it (the bundle's spec has it taken out).
const SECCOMP_FILE: &str = "seccomp.json";

/// What `exec` runs, and how.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// The command and its arguments.
    pub command: Vec<String>,
    /// `-e KEY=VAL` or `-e KEY` (from the caller's environment), after the container's.
    pub env: Vec<String>,
    /// `--env-file` files, read before `-e`.
    pub env_files: Vec<PathBuf>,
    /// `-w`: the working directory (default: the container's).
    pub workdir: Option<String>,
    /// `-u name|uid[:group|gid]` (default: the container's user).
    pub user: Option<String>,
    /// `--privileged`: every capability.
    pub privileged: bool,
    /// `-i`: keep stdin open.
    pub interactive: bool,
    /// `-t`: allocate a TTY.
    pub tty: bool,
    /// `-d`: start it and return.
    pub detach: bool,
}

/// Saves the container's seccomp filter next to its bundle for later execs.
pub(crate) fn save_seccomp(bundle: &Path, filter: Option<&LinuxSeccomp>) -> Result<(), RunError> {
    let path = bundle.join(SECCOMP_FILE);
    match filter {
        Some(filter) => {
            let json = serde_json::to_vec(filter)
                .map_err(|e| RunError::Launch(format!("saving the seccomp filter: {e}")))?;
            std::fs::write(&path, json).map_err(|source| RunError::Io {
                op: "writing",
                path,
                source,
            })
        }
        None => match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(RunError::Io {
                op: "removing",
                path,
                source: e,
            }),
            _ => Ok(()),
        },
    }
}

fn load_seccomp(bundle: &Path) -> Result<Option<LinuxSeccomp>, RunError> {
    let path = bundle.join(SECCOMP_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| RunError::Launch(format!("reading {}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(RunError::Io {
            op: "reading",
            path,
            source,
        }),
    }
}

/// Runs `options` in the container `id` whose bundle is `bundle` and whose init is `init`;
/// returns the exit code (0 at once with `detach`). `run_options` are the container's own
/// (capabilities, privileges). `unified`: the container's monitor put cgroup2 on
/// /sys/fs/cgroup. The process must be single-threaded; rootless, it must not have entered a
/// user namespace of its own.
pub(crate) fn exec(
    id: &str,
    bundle: &Path,
    init: i32,
    unified: bool,
    run_options: &RunOptions,
    options: &ExecOptions,
) -> Result<i32, RunError> {
    if options.command.is_empty() {
        return Err(SpecError::NoCommand.into());
    }
    super::wait_single_threaded()?;
    let signals = stdio::Signals::block()?;
    let rootless = !nix::unistd::geteuid().is_root() || super::in_user_namespace();
    let mapping = if rootless {
        let mapping = rootless::join_container(init)?;
        // The container's user namespace maps what skiff's own does: later store work in
        // this process (an embedder's next call) stays in it.
        super::joined_user_namespace(mapping);
        Some(mapping)
    } else {
        if unified {
            rootless::private_mounts()?;
            rootless::mount_unified()?;
        }
        None
    };
    let config_path = bundle.join("config.json");
    let mut oci = Spec::load(&config_path)
        .map_err(|e| RunError::Launch(format!("reading {}: {e}", config_path.display())))?;
    let base = oci.process().clone().unwrap_or_default();
    let root = PathBuf::from(format!("/proc/{init}/root"));
    let user = match &options.user {
        Some(u) => {
            let group_file = rootfs::read_in_root(&root, "/etc/group")?;
            let mut user =
                spec::resolve_user(u, &rootfs::read_in_root(&root, "/etc/passwd")?, &group_file)?;
            if let Some(m) = mapping {
                if !m.maps_uid(user.uid) || !m.maps_gid(user.gid) {
                    return Err(RunError::NotMapped(u.clone()));
                }
                if m == rootless::IdMapping::Single {
                    user.groups.clear();
                }
            }
            user
        }
        None => {
            let u = base.user();
            spec::User {
                uid: u.uid(),
                gid: u.gid(),
                groups: u.additional_gids().clone().unwrap_or_default(),
                home: String::new(),
            }
        }
    };
    let env = spec::exec_environment(
        base.env().as_deref().unwrap_or_default(),
        &options.env_files,
        &options.env,
        &|k| std::env::var(k).ok(),
    )?;
    let cwd = match &options.workdir {
        Some(w) if !w.starts_with('/') => {
            return Err(SpecError::Invalid {
                what: "working directory",
                value: w.clone(),
                reason: "the path must be absolute".into(),
            }
            .into());
        }
        Some(w) => w.clone(),
        None => base.cwd().to_string_lossy().into_owned(),
    };
    let exec_options = RunOptions {
        cap_add: run_options.cap_add.clone(),
        cap_drop: run_options.cap_drop.clone(),
        privileged: run_options.privileged || options.privileged,
        no_new_privileges: run_options.no_new_privileges,
        tty: options.tty,
        ..Default::default()
    };
    let mut process = spec::exec_process(options.command.clone(), env, &cwd, &user, &exec_options)?;
    process.set_rlimits(base.rlimits().clone());
    process.set_oom_score_adj(base.oom_score_adj());
    oci.set_process(Some(process));
    if let Some(linux) = oci.linux_mut() {
        linux.set_seccomp(load_seccomp(bundle)?);
    }
    let loader =
        seccomp::prepare(&mut oci, bundle).map_err(|e| RunError::Launch(crate::error_chain(&e)))?;
    let process_path = bundle.join(format!("exec-{}.json", std::process::id()));
    let json = serde_json::to_vec(oci.process())
        .map_err(|e| RunError::Launch(format!("writing the exec process: {e}")))?;
    std::fs::write(&process_path, json).map_err(|source| RunError::Io {
        op: "writing",
        path: process_path.clone(),
        source,
    })?;
    let _remove = RemoveOnDrop(process_path.clone());
    let mut stdio = container::Stdio::default();
    if !options.interactive || options.detach {
        stdio.stdin = Some(open_null()?);
    }
    let console = if options.tty {
        let socket =
            stdio::ConsoleSocket::bind(&bundle.join(format!("exec-{}.sock", std::process::id())))?;
        stdio.console_socket = Some(socket.path.clone());
        Some(socket)
    } else {
        None
    };
    let pid = container::exec_tenant(id, bundle, &process_path, stdio, loader)?;
    let pty = console
        .as_ref()
        .map(stdio::ConsoleSocket::pty)
        .transpose()?;
    if options.detach {
        return Ok(0);
    }
    let status = stdio::wait(
        pid,
        &signals,
        pty,
        options.interactive,
        stdio::Stop::default(),
    )?;
    container::exit_code(status)
        .ok_or_else(|| RunError::Launch(format!("unexpected wait status {status:?}")))
}

fn open_null() -> Result<OwnedFd, RunError> {
    std::fs::File::open("/dev/null")
        .map(OwnedFd::from)
        .map_err(|source| RunError::Io {
            op: "opening",
            path: "/dev/null".into(),
            source,
        })
}

/// Removes a file when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
