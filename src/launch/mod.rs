//! Launching a container: the runtime spec (image config + run options), rootfs assembly,
//! libcontainer create/start/wait/delete, rootless id maps, stdio/TTY/signals, and cleanup of
//! this run and of runs that died before cleaning up. It uses the image module and the store,
//! never the registry.
//!
//! Everything here runs on the calling thread of a single-threaded process: libcontainer clones
//! the caller, which hangs now and then from a multi-threaded one (youki #2425, #3011, #3027).

mod container;
mod detached;
mod devices_bpf;
mod exec;
mod init;
mod resources;
mod rootfs;
mod rootless;
pub(crate) mod seccomp;
mod spec;
mod stdio;

use std::io::ErrorKind;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rootfs_cache::{ImageRecord, OverlayXattrs, Store, StoreError};

pub use detached::{MonitorRequest, serve_monitor};
pub(crate) use detached::{STDIN_FIFO, spawn as spawn_monitor};
pub use exec::ExecOptions;
pub(crate) use exec::exec;
use oci_spec::image::Config as RunConfig;
pub use resources::{LimitError, LimitFlags, Limits, Ulimit};
use spec::SpecContext;
pub(crate) use spec::parse_signal;
pub use spec::{Network, RunOptions, Seccomp, SpecError, Volume};

/// The container's command line (Entrypoint/Cmd with docker's override rules).
pub(crate) fn command_line(
    config: &RunConfig,
    options: &RunOptions,
) -> Result<Vec<String>, SpecError> {
    spec::command(config, options)
}

/// The container's environment as docker records it (Config.Env): the image's, then
/// `--env-file`, then `-e`.
pub(crate) fn config_env(
    config: &RunConfig,
    options: &RunOptions,
) -> Result<Vec<String>, SpecError> {
    spec::exec_environment(
        config.env().as_deref().unwrap_or_default(),
        &options.env_files,
        &options.env,
        &|k| std::env::var(k).ok(),
    )
}

/// Failures of a launch; skiff exits 125 on them (docker's "the engine failed").
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A system call failed.
    #[error("{op}: {source}")]
    Sys {
        /// What was being done.
        op: &'static str,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// The overlay mount failed.
    #[error("mounting the overlay rootfs at {target} ({data}): {source}")]
    Mount {
        /// The mount point.
        target: PathBuf,
        /// The mount options.
        data: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A `-v` or `--tmpfs` mount cannot be made at its target.
    #[error("mounting {what} on {target}: {cause}")]
    BindMount {
        /// The host path (or `tmpfs`).
        what: String,
        /// The path in the container.
        target: String,
        /// Why.
        cause: String,
    },
    /// libcontainer failed.
    #[error("container runtime: {}", crate::error_chain(.0.as_ref()))]
    Container(#[source] Box<libcontainer::error::LibcontainerError>),
    /// Any other launch failure.
    #[error("{0}")]
    Launch(String),
    /// The run options or the image config are unusable.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A resource limit is invalid or the host cannot enforce it.
    #[error(transparent)]
    Limits(#[from] LimitError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The device allow-list could not be enforced on cgroup v2.
    #[error(transparent)]
    Devices(#[from] devices_bpf::DeviceBpfError),
    /// Threads were still running where a launch must be single-threaded.
    #[error(
        "skiff must fork or enter its user namespace from a single-threaded process, and this one \
         runs {0} threads (an embedder calls skiff from a helper process)"
    )]
    Threads(usize),
    /// `--group-add` in a user namespace that maps only the caller.
    #[error(
        "--group-add {0}: a rootless user namespace that maps only your user cannot give \
         supplementary groups (give your user a range in /etc/subuid and /etc/subgid, with \
         uidmap installed)"
    )]
    NoSupplementaryGroups(String),
    /// The user namespace cannot represent the requested user.
    #[error(
        "user {0} is not mapped in the rootless user namespace (give your user a range in \
         /etc/subuid and /etc/subgid, with uidmap installed)"
    )]
    NotMapped(String),
}

/// When `run` pulls the image (docker's `--pull`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PullPolicy {
    /// Only when the store lacks it (a cached tag does no network at all).
    #[default]
    Missing,
    /// Always ask the registry first.
    Always,
    /// Never; a missing image is an error.
    Never,
}

/// Start-up phases and their durations, for `--timings`.
#[derive(Debug, Clone)]
pub struct Timings {
    last: Instant,
    /// (phase, duration) in order.
    pub phases: Vec<(&'static str, Duration)>,
}

impl Default for Timings {
    fn default() -> Self {
        Self::new()
    }
}

impl Timings {
    /// Starts timing now.
    pub fn new() -> Self {
        Self {
            last: Instant::now(),
            phases: Vec::new(),
        }
    }

    /// Ends a phase.
    pub fn mark(&mut self, phase: &'static str) {
        let now = Instant::now();
        self.phases.push((phase, now - self.last));
        self.last = now;
    }

    /// One line per phase, and the total.
    pub fn report(&self) -> String {
        let mut out = String::new();
        for (phase, d) in &self.phases {
            out.push_str(&format!("{phase:>8} {:>10.3} ms\n", d.as_secs_f64() * 1e3));
        }
        let total: Duration = self.phases.iter().map(|(_, d)| *d).sum();
        out.push_str(&format!(
            "{:>8} {:>10.3} ms\n",
            "total",
            total.as_secs_f64() * 1e3
        ));
        out
    }
}

/// How `run` ended.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The payload's exit code (128+N after signal N; 126/127 when it could not be executed).
    pub exit_code: i32,
    /// Start-up phases.
    pub timings: Timings,
}

/// Threads of this process, from /proc/self/status.
fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Fails unless this process runs one thread (a fork or an unshare of the user namespace
/// needs it).
pub(crate) fn ensure_single_threaded() -> Result<(), RunError> {
    match thread_count() {
        n if n > 1 => Err(RunError::Threads(n)),
        _ => Ok(()),
    }
}

/// Waits (briefly) for I/O threads of an earlier pull to be gone.
fn wait_single_threaded() -> Result<(), RunError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = thread_count();
        if n <= 1 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(RunError::Threads(n));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A unique run (and container) id.
fn new_id() -> String {
    let mut bytes = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut bytes);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let mut id = String::from("skiff-");
    for b in bytes {
        id.push_str(&format!("{b:02x}"));
    }
    id.push_str(&format!("{:x}", nanos ^ std::process::id()));
    id
}

/// Unmounts whatever is left under the run directory when dropped.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        rootfs::unmount_under(&self.0);
    }
}

/// Cleans up runs that died without cleaning up (skiff killed with SIGKILL): kills their
/// payload, removes their cgroup and state, unmounts what they left, removes their directory.
///
/// Rootless, this only kills the payloads (possible only from outside their user namespace, so
/// call it before [`run`]); [`run`] removes the directories from inside its own user namespace,
/// where the files the payload left under other uids can be deleted.
///
/// A run killed between its container's create and start leaves an init that still holds the
/// run's lock (it keeps every descriptor until its payload's exec): such a run, whose owner is
/// gone, is swept too, its init killed first.
pub fn sweep_dead_runs(store: &Store, rootless: bool) -> Result<Vec<String>, RunError> {
    let orphaned = store.orphaned_runs();
    let dead = dead_runs(store);
    for dir in orphaned.iter().chain(&dead) {
        container::sweep(dir, rootless);
        if !rootless {
            rootfs::unmount_under(dir);
        }
    }
    for dir in &orphaned {
        wait_lock_free(dir);
    }
    if (dead.is_empty() && orphaned.is_empty()) || rootless {
        return Ok(Vec::new());
    }
    Ok(store.sweep_runs()?)
}

/// Waits (up to 2 s) for the processes that held a run's lock to be gone.
fn wait_lock_free(dir: &std::path::Path) {
    for _ in 0..400 {
        if !matches!(
            rootfs_cache::lock::FileLock::try_exclusive(&dir.join("lock")),
            Ok(None)
        ) {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    tracing::warn!(run = %dir.display(), "a dead run's lock is still held");
}

static USER_NAMESPACE: std::sync::OnceLock<rootless::IdMapping> = std::sync::OnceLock::new();

/// Rootless: enters skiff's user, mount and cgroup namespaces, once per process (later calls
/// return the same mapping). The process must be single-threaded. Inside, the caller is root
/// and its /etc/subuid range is mapped, so layers are extracted with their real owners.
pub fn enter_user_namespace() -> Result<rootless::IdMapping, RunError> {
    if let Some(mapping) = USER_NAMESPACE.get() {
        return Ok(*mapping);
    }
    let mapping = rootless::enter()?;
    let _ = USER_NAMESPACE.set(mapping);
    Ok(mapping)
}

/// Records that this process joined a container's user namespace (the same mapping as its own).
pub(crate) fn joined_user_namespace(mapping: rootless::IdMapping) {
    let _ = USER_NAMESPACE.set(mapping);
}

/// Whether this process is in the user namespace of process `pid`.
pub fn same_user_namespace(pid: i32) -> bool {
    rootless::same_namespace(pid, "user")
}

/// Whether this process already entered its rootless user namespace.
pub fn in_user_namespace() -> bool {
    USER_NAMESPACE.get().is_some()
}

/// Removes empty run cgroups over 10 s old that killed runs left (root; for `gc`, kept off
/// the run's start-up path).
pub(crate) fn remove_stale_run_cgroups() -> usize {
    container::remove_stale_run_cgroups()
}

/// Cleans up after a job container whose monitor died, once its init is gone.
pub(crate) fn release_orphan(bundle: &std::path::Path, id: &str) {
    container::release_orphan(bundle, id);
}

/// Run directories whose lock nobody holds.
fn dead_runs(store: &Store) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(store.root().join("runs")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|dir| {
            matches!(
                rootfs_cache::lock::FileLock::try_exclusive(&dir.join("lock")),
                Ok(Some(_))
            )
        })
        .collect()
}

/// A test hook: `SKIFF_TEST_STOP_AT=<point>` makes skiff stop itself (SIGSTOP) at that point
/// (`start`: between a run's container create and start; `record`: between a job container's
/// directory and its record), where a worker's kill -9 may land, so a test can kill it there.
pub(crate) fn test_stop_point(point: &str) {
    if std::env::var_os("SKIFF_TEST_STOP_AT").is_some_and(|p| p == point) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP);
    }
}

/// Runs `options` in `image` (its config `config`) from the store; returns the exit code.
///
/// The process must be single-threaded (no runtime of an earlier pull left running); rootless,
/// it enters a user namespace it cannot leave, so call this once per process.
pub fn run(
    store: &Store,
    image: &ImageRecord,
    config: &RunConfig,
    options: &RunOptions,
    rootless: bool,
    mut timings: Timings,
    lazy: Option<&mut dyn LazyLayers>,
) -> Result<RunOutcome, RunError> {
    let stop = stop_settings(config, options)?;
    let prepared = prepare_namespace(store, rootless, options)?;
    let rootfs = assemble_rootfs(store, image, rootless, lazy)?;
    timings.mark("mount");
    let (seccomp, v2_devices) = build_spec(&rootfs, config, options, prepared.mapping, false)?;
    timings.mark("spec");
    let mut container = create_container(&rootfs, options, seccomp, v2_devices, None, None)?;
    timings.mark("create");
    test_stop_point("start");
    let (exit_code, reaped) = match prepared.signals.pending_termination() {
        // Interrupted during set-up: the payload never starts.
        Some(sig) => (128 + sig as i32, false),
        None => (
            start_and_wait(
                &mut container,
                &prepared.signals,
                options,
                stop,
                &mut timings,
            )?,
            true,
        ),
    };
    cleanup(container, rootfs, reaped)?;
    drop(prepared);
    timings.mark("cleanup");
    Ok(RunOutcome { exit_code, timings })
}

/// What [`prepare_namespace`] set up for the whole run.
struct Prepared {
    /// The forwarded signals, blocked until the run ends.
    signals: stdio::Signals,
    /// Rootless: the user namespace's id mapping.
    mapping: Option<rootless::IdMapping>,
}

/// Waits for a single thread, blocks the forwarded signals, and enters skiff's rootless
/// namespaces (sweeping dead runs from inside) or, as root, a private mount namespace; there,
/// on a hybrid host and without a limit that needs a v1 controller, cgroup2 is mounted over
/// /sys/fs/cgroup so that libcontainer uses its v2 manager (one cgroup to create and join
/// instead of one per v1 hierarchy; the device allow-list is skiff's eBPF program there).
fn prepare_namespace(
    store: &Store,
    rootless: bool,
    options: &RunOptions,
) -> Result<Prepared, RunError> {
    wait_single_threaded()?;
    let signals = stdio::Signals::block()?;
    let mapping = if rootless {
        let mapping = enter_user_namespace()?;
        if !dead_runs(store).is_empty()
            && let Err(err) = store.sweep_runs()
        {
            tracing::warn!(%err, "removing dead runs");
        }
        Some(mapping)
    } else {
        rootless::private_mounts()?;
        if !options.limits.needs_cgroup()
            && crate::host::CgroupLayout::detect() == crate::host::CgroupLayout::Hybrid
        {
            rootless::mount_unified()?;
        }
        None
    };
    Ok(Prepared { signals, mapping })
}

/// A run directory with the image's rootfs mounted in it. Dropped, it unmounts everything under
/// the directory, then removes it.
struct Assembled {
    /// The run (and container) id.
    id: String,
    /// The run directory: the bundle.
    dir: PathBuf,
    /// Dropped before `hold`: nothing is mounted when the directory goes.
    mounted: Mounted,
    /// A run's hold on its layers (a job container's directory holds them itself).
    hold: Option<rootfs_cache::RunHold>,
}

impl Assembled {
    /// The mounted rootfs.
    fn rootfs(&self) -> PathBuf {
        self.dir.join(rootfs::ROOTFS)
    }
}

/// An image's layers served from elsewhere than the store (lazy start): their merged tree
/// mounted on demand at a directory of the run, in the run's mount namespace.
pub(crate) trait LazyLayers {
    /// Mounts the image's tree at `dir`; returns once it is there.
    fn serve(&mut self, dir: &Path) -> Result<(), RunError>;
}

/// Holds the image's layers for a new run and mounts them as its overlay rootfs: the store's
/// layer directories, or `lazy`'s mounts.
fn assemble_rootfs(
    store: &Store,
    image: &ImageRecord,
    rootless: bool,
    lazy: Option<&mut dyn LazyLayers>,
) -> Result<Assembled, RunError> {
    let id = new_id();
    let diff_ids: Vec<_> = image.layers.iter().map(|l| l.diff_id).collect();
    let hold = store.hold_run(&id, &diff_ids, &[image.manifest])?;
    let dir = hold.path().to_owned();
    let mounted = Mounted(dir.clone());
    let mut userxattr = rootless;
    let lowers: Vec<PathBuf> = match lazy {
        Some(lazy) => {
            let lazy_dir = dir.join("lazy");
            std::fs::create_dir(&lazy_dir).map_err(|source| RunError::Io {
                op: "creating",
                path: lazy_dir.clone(),
                source,
            })?;
            lazy.serve(&lazy_dir)?;
            vec![lazy_dir]
        }
        None => {
            for d in &diff_ids {
                if let Some(layer) = store.layer(d)? {
                    userxattr |= layer.overlay_xattrs == OverlayXattrs::User;
                }
            }
            diff_ids.iter().rev().map(|d| store.layer_dir(d)).collect()
        }
    };
    rootfs::mount_overlay(&dir, &lowers, userxattr)?;
    Ok(Assembled {
        id,
        dir,
        mounted,
        hold: Some(hold),
    })
}

/// Mounts a job container's rootfs in its directory `dir` (held by the store as long as the
/// container exists), keeping its writable layer from earlier starts.
fn assemble_container_rootfs(
    store: &Store,
    id: &str,
    dir: &std::path::Path,
    diff_ids: &[rootfs_cache::Digest],
    rootless: bool,
) -> Result<Assembled, RunError> {
    let mounted = Mounted(dir.to_owned());
    let lowers: Vec<PathBuf> = diff_ids.iter().rev().map(|d| store.layer_dir(d)).collect();
    let mut userxattr = rootless;
    for d in diff_ids {
        match store.layer(d)? {
            Some(layer) => userxattr |= layer.overlay_xattrs == OverlayXattrs::User,
            None => {
                return Err(RunError::Launch(format!(
                    "the image's layer {d} is missing from the store (run `skiff verify`, then \
                     pull the image again)"
                )));
            }
        }
    }
    rootfs::mount_overlay(dir, &lowers, userxattr)?;
    Ok(Assembled {
        id: id.to_owned(),
        dir: dir.to_owned(),
        mounted,
        hold: None,
    })
}

/// The working directory: `-w`, the image's, or `/`; absolute.
fn working_dir(config: &RunConfig, options: &RunOptions) -> Result<String, SpecError> {
    let cwd = options
        .workdir
        .clone()
        .or_else(|| config.working_dir().clone().filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        return Err(SpecError::Invalid {
            what: "working directory",
            value: cwd,
            reason: "the path must be absolute".into(),
        });
    }
    Ok(cwd)
}

/// The container's hostname: `--hostname`, the host's on the host network, else from the id.
fn hostname(options: &RunOptions, id: &str) -> String {
    match (&options.hostname, options.network) {
        (Some(h), _) => h.clone(),
        (None, Network::Host) => nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| id[6..18].to_owned()),
        (None, Network::None) => id[6..18].to_owned(),
    }
}

/// Prepares what the `-v` and `--tmpfs` mounts need before libcontainer makes them: a missing
/// host directory is created (as docker does), and a target that cannot take its mount is an
/// error naming source, target and cause.
fn prepare_mounts(rootfs: &std::path::Path, options: &RunOptions) -> Result<(), RunError> {
    for v in &options.volumes {
        if std::fs::symlink_metadata(&v.host).is_err_and(|e| e.kind() == ErrorKind::NotFound) {
            rootfs::create_host_dir(&v.host)?;
        }
        rootfs::check_mount_target(rootfs, rootfs::MountSource::Bind(&v.host), &v.container)?;
    }
    for t in &options.tmpfs {
        let target = t.split_once(':').map_or(t.as_str(), |(target, _)| target);
        if target.starts_with('/') {
            rootfs::check_mount_target(rootfs, rootfs::MountSource::Tmpfs, target)?;
        }
    }
    Ok(())
}

/// The device cgroup rules skiff enforces itself with its eBPF program (root on cgroup v2,
/// not `--privileged`).
type V2Devices = Option<Vec<oci_spec::runtime::LinuxDeviceCgroup>>;

/// Resolves the user, hostname, argv, environment and working directory, writes the /etc files
/// and the runtime spec into the run directory (once, the seccomp filter taken out of it for
/// skiff's executor: what the init loads is returned), and the device rules skiff's eBPF
/// program enforces when libcontainer's v2 manager runs the container as root.
fn build_spec(
    run: &Assembled,
    config: &RunConfig,
    options: &RunOptions,
    mapping: Option<rootless::IdMapping>,
    keep_seccomp: bool,
) -> Result<(Option<seccomp::Loader>, V2Devices), RunError> {
    let rootfs_dir = run.rootfs();
    let user_spec = options
        .user
        .clone()
        .or_else(|| config.user().clone())
        .unwrap_or_default();
    let group_file = rootfs::read_in_root(&rootfs_dir, "/etc/group")?;
    let mut user = spec::resolve_user(
        &user_spec,
        &rootfs::read_in_root(&rootfs_dir, "/etc/passwd")?,
        &group_file,
    )?;
    let added = spec::group_add(&options.group_add, &group_file)?;
    user.groups.extend(&added);
    user.groups.sort_unstable();
    user.groups.dedup();
    if let Some(m) = mapping {
        if !m.maps_uid(user.uid) || !m.maps_gid(user.gid) {
            return Err(RunError::NotMapped(user_spec));
        }
        if m == rootless::IdMapping::Single {
            // setgroups(2) is denied in a user namespace that maps only the caller: the
            // process keeps no supplementary groups (libcontainer skips an empty list).
            if let Some(g) = options.group_add.first() {
                return Err(RunError::NoSupplementaryGroups(g.clone()));
            }
            user.groups.clear();
        } else if let Some(g) = user.groups.iter().find(|g| !m.maps_gid(**g)) {
            return Err(RunError::NotMapped(format!("{user_spec} (group {g})")));
        }
    }
    let hostname = hostname(options, &run.id);
    let argv = spec::command(config, options)?;
    let env = spec::environment(config, options, &hostname, &user.home, &|k| {
        std::env::var(k).ok()
    })?;
    let cwd = working_dir(config, options)?;
    if cwd != "/" {
        rootfs::mkdir_in_root(&rootfs_dir, &cwd, user.uid, user.gid)?;
    }
    prepare_mounts(&rootfs_dir, options)?;
    let extra_hosts = options
        .add_hosts
        .iter()
        .map(|h| spec::extra_host(h))
        .collect::<Result<Vec<_>, _>>()?;
    let etc_files = rootfs::write_etc_files(
        &run.dir,
        &hostname,
        options.network == Network::Host,
        &extra_hosts,
    )?;
    let ctx = SpecContext {
        rootfs: PathBuf::from(rootfs::ROOTFS),
        etc_files,
        hostname,
        cgroups_path: format!("/skiff/{}", run.id),
        rootless: mapping.is_some(),
        tty_gid_mapped: mapping.is_none_or(|m| m.maps_gid(5)),
        devices: spec::host_devices(options)?,
    };
    let mut oci = spec::build(argv, env, &cwd, &user, options, &ctx)?;
    // The device cgroup's allow-list (spec::build) survives the limits replacing the resources.
    let device_rules = oci
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.devices().clone());
    resources::apply(&mut oci, &options.limits, ctx.rootless, &ctx.cgroups_path)?;
    // libcontainer's v2 manager is built without its device program: skiff attaches its own.
    // --privileged allows every device (no program, as docker); rootless there is no device
    // cgroup (and the kernel refuses mknod in a user namespace).
    let v2_devices = (!ctx.rootless
        && !options.privileged
        && crate::host::CgroupLayout::detect() == crate::host::CgroupLayout::Unified)
        .then(|| device_rules.clone().unwrap_or_default());
    if let Some(rules) = device_rules
        && let Some(linux) = oci.linux_mut()
    {
        let mut resources = linux.resources().clone().unwrap_or_default();
        resources.set_devices(Some(rules));
        linux.set_resources(Some(resources));
    }
    if keep_seccomp {
        // An exec into a job container loads the same filter.
        let filter = oci.linux().as_ref().and_then(|l| l.seccomp().clone());
        exec::save_seccomp(&run.dir, filter.as_ref())?;
    }
    let seccomp = seccomp::prepare(&mut oci, &run.dir)
        .map_err(|e| RunError::Launch(crate::error_chain(&e)))?;
    let config_path = run.dir.join("config.json");
    oci.save(&config_path)
        .map_err(|e| RunError::Launch(format!("writing {}: {e}", config_path.display())))?;
    Ok((seccomp, v2_devices))
}

/// A created container, and the TTY's master end with `-t`.
struct Launched {
    /// Deleted (killed, cgroup and state removed) on drop.
    created: container::Created,
    pty: Option<std::os::fd::OwnedFd>,
}

/// Sets up stdio (/dev/null without `-i`, a console socket with `-t`) and has libcontainer
/// create the container from the run directory's spec (the init loading `seccomp`); attaches
/// the device program for `v2_devices` to the container's cgroup (the init waits for start
/// meanwhile: nothing runs unfiltered); receives the TTY.
fn create_container(
    run: &Assembled,
    options: &RunOptions,
    seccomp: Option<seccomp::Loader>,
    v2_devices: V2Devices,
    outputs: Option<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)>,
    input: Option<std::os::fd::OwnedFd>,
) -> Result<Launched, RunError> {
    let mut stdio = container::Stdio::default();
    if let Some((stdout, stderr)) = outputs {
        stdio.stdout = Some(stdout);
        stdio.stderr = Some(stderr);
    } else {
        stdio.stdout = stdio::writable_discard(std::io::stdout().as_fd())?;
        stdio.stderr = stdio::writable_discard(std::io::stderr().as_fd())?;
    }
    if let Some(input) = input {
        stdio.stdin = Some(input);
    } else if !options.interactive && !options.tty {
        let null = std::fs::File::open("/dev/null").map_err(|source| RunError::Io {
            op: "opening",
            path: "/dev/null".into(),
            source,
        })?;
        stdio.stdin = Some(null.into());
    }
    let console = if options.tty {
        let socket = stdio::ConsoleSocket::bind(&run.dir.join("console.sock"))?;
        stdio.console_socket = Some(socket.path.clone());
        Some(socket)
    } else {
        None
    };
    let created = match container::create(&run.id, &run.dir, stdio, seccomp) {
        Ok(created) => created,
        // libcontainer's error says only that the rootfs could not be prepared: name the
        // mount at fault when one of the user's is.
        Err(err @ RunError::Container(_))
            if !options.volumes.is_empty() || !options.tmpfs.is_empty() =>
        {
            return Err(
                rootfs::probe_mounts(&run.dir, &options.volumes, &options.tmpfs).unwrap_or(err),
            );
        }
        Err(err) => return Err(err),
    };
    if let Some(rules) = v2_devices {
        // Dropped on an error: the container is deleted before it ever started.
        let cgroup = std::path::Path::new("/sys/fs/cgroup/skiff").join(&run.id);
        devices_bpf::attach(&cgroup, &rules)?;
    }
    let pty = console
        .as_ref()
        .map(stdio::ConsoleSocket::pty)
        .transpose()?;
    Ok(Launched { created, pty })
}

/// The stop signal (`--stop-signal`, else the image's StopSignal, else SIGTERM) and the time
/// before SIGKILL (`--stop-timeout`, else 10 s; negative: never).
fn stop_settings(config: &RunConfig, options: &RunOptions) -> Result<stdio::Stop, SpecError> {
    let mut stop = stdio::Stop::default();
    if let Some(sig) = options
        .stop_signal
        .as_deref()
        .or(config.stop_signal().as_deref())
        .filter(|s| !s.is_empty())
    {
        stop.signal = spec::parse_signal(sig)?;
    }
    if let Some(secs) = options.stop_timeout {
        stop.grace = u64::try_from(secs).ok().map(Duration::from_secs);
    }
    Ok(stop)
}

/// Starts the payload, forwards signals and the TTY until it exits; returns its exit code.
fn start_and_wait(
    container: &mut Launched,
    signals: &stdio::Signals,
    options: &RunOptions,
    stop: stdio::Stop,
    timings: &mut Timings,
) -> Result<i32, RunError> {
    container.created.start()?;
    timings.mark("start");
    let status = stdio::wait(
        container.created.pid(),
        signals,
        container.pty.take(),
        options.interactive,
        stop,
    )?;
    let exit_code = container::exit_code(status)
        .ok_or_else(|| RunError::Launch(format!("unexpected wait status {status:?}")))?;
    timings.mark("exit");
    Ok(exit_code)
}

/// Deletes the container (`reaped`: its init was waited for), unmounts the rootfs and removes
/// the run directory, reporting what fails (on an early error, the same happens on drop, with
/// warnings).
fn cleanup(container: Launched, rootfs: Assembled, reaped: bool) -> Result<(), RunError> {
    let Launched { mut created, pty } = container;
    drop(pty);
    if reaped {
        created.remove_reaped()?;
    } else {
        created.delete()?;
    }
    drop(created);
    let Assembled { mounted, hold, .. } = rootfs;
    drop(mounted);
    if let Some(hold) = hold {
        hold.release()?;
    }
    Ok(())
}
