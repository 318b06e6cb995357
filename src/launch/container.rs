//! libcontainer create/start/wait/delete, and the executor that replaces the container's init
//! with the payload, exiting 126/127 as docker does when it cannot.

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::oci_spec::runtime::Spec;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use nix::sys::signal::{SigSet, SigmaskHow, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::RunError;
use super::seccomp;

/// Exit code when the command cannot be invoked (docker's 126).
pub const EXIT_CANNOT_INVOKE: i32 = 126;
/// Exit code when the command is not found (docker's 127).
pub const EXIT_NOT_FOUND: i32 = 127;

/// Directory in the run dir that holds libcontainer's state.
pub(crate) const STATE: &str = "state";
/// File in the run dir recording the init pid and its start time, for sweeping a dead run.
pub(crate) const INIT_FILE: &str = "init";

/// Exit code when skiff fails (docker's 125): here, when the seccomp filter cannot be applied.
const EXIT_SKIFF_FAILED: i32 = 125;

/// Runs the payload in place of the container's init: looks the command up in PATH, loads the
/// seccomp filter, restores the signal mask skiff blocked, and exits 127/126 when exec fails
/// (125 when the filter cannot be loaded: the payload never runs unfiltered).
#[derive(Clone)]
struct PayloadExecutor {
    /// The container's seccomp filter, compiled before the init was cloned.
    seccomp: Option<seccomp::Loader>,
}

/// Ends the container's init process when the payload cannot be executed, with docker's
/// message on the payload's own stderr (the one place the library writes to a terminal: it is
/// the container's output, not the engine's).
#[allow(clippy::print_stderr)]
fn fail(code: i32, message: &str) -> ! {
    eprintln!("skiff: {message}");
    // SAFETY: _exit ends this (cloned container init) process without running any destructors.
    unsafe { libc::_exit(code) }
}

fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Gives every signal its default action, as docker's payloads have: an ignored signal stays
/// ignored across exec, and skiff's own must not reach the payload (SIGPIPE, which Rust
/// ignores; SIGINT and SIGQUIT when skiff was started in the background of a script, where a
/// shell ignores them — the payload's `trap ... INT` then does nothing; 32, which glibc keeps
/// for itself, so the raw system call).
fn default_signal_actions() {
    /// The kernel's `struct sigaction` (x86_64, aarch64): SIG_DFL is all zeros.
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: libc::c_ulong,
        restorer: usize,
        mask: u64,
    }
    let default = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for signal in 1..=libc::SIGRTMAX() {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction(2) reads the action from a live struct of the kernel's layout
        // and size (8-byte mask); SIG_DFL installs no handler code.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                &raw const default,
                std::ptr::null_mut::<KernelSigaction>(),
                std::mem::size_of::<u64>(),
            )
        };
    }
}

impl Executor for PayloadExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        let args = spec
            .process()
            .as_ref()
            .and_then(|p| p.args().as_ref())
            .filter(|a| !a.is_empty())
            .ok_or(ExecutorError::InvalidArg)?;
        let name = &args[0];
        let path = if name.contains('/') {
            PathBuf::from(name)
        } else {
            let search = std::env::var("PATH").unwrap_or_default();
            let found = search
                .split(':')
                .map(|d| Path::new(if d.is_empty() { "." } else { d }).join(name))
                .find(|p| is_executable_file(p));
            match found {
                Some(p) => p,
                None => fail(
                    EXIT_NOT_FOUND,
                    &format!("exec: {name:?}: executable file not found in $PATH"),
                ),
            }
        };
        let Ok(cpath) = CString::new(path.as_os_str().as_encoded_bytes()) else {
            fail(EXIT_CANNOT_INVOKE, &format!("exec: {name:?}: invalid name"));
        };
        let Ok(argv) = args
            .iter()
            .map(|a| CString::new(a.as_bytes()))
            .collect::<Result<Vec<_>, _>>()
        else {
            fail(EXIT_CANNOT_INVOKE, "exec: an argument contains a NUL byte");
        };
        if let Some(filter) = &self.seccomp
            && let Err(e) = filter.apply()
        {
            fail(EXIT_SKIFF_FAILED, &format!("seccomp: {e}"));
        }
        default_signal_actions();
        // With --init, this process stays PID 1 (filtered, as docker's init is) and a child
        // goes on.
        super::init::fork_if_requested(spec);
        // skiff blocks the signals it forwards; the payload starts with none blocked.
        let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
        let err = match nix::unistd::execv(&cpath, &argv) {
            Ok(never) => match never {},
            Err(e) => e,
        };
        let code = if err == nix::errno::Errno::ENOENT {
            EXIT_NOT_FOUND
        } else {
            EXIT_CANNOT_INVOKE
        };
        fail(code, &format!("exec: {:?}: {}", path.display(), err.desc()))
    }

    fn validate(&self, _spec: &Spec) -> Result<(), ExecutorValidationError> {
        // Checked at exec time, where a failure becomes exit code 126 or 127.
        Ok(())
    }
}

/// stdio for the container init.
#[derive(Debug, Default)]
pub(crate) struct Stdio {
    /// Replaces stdin (e.g. /dev/null without `-i`).
    pub stdin: Option<OwnedFd>,
    /// Replaces stdout (a detached container's log pipe).
    pub stdout: Option<OwnedFd>,
    /// Replaces stderr (a detached container's log pipe).
    pub stderr: Option<OwnedFd>,
    /// Console socket path for a TTY.
    pub console_socket: Option<PathBuf>,
}

/// A created container; deleted (killed if needed, cgroup and state removed) on drop.
pub(crate) struct Created {
    container: Option<Container>,
    pid: Pid,
}

impl std::fmt::Debug for Created {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Created").field("pid", &self.pid).finish()
    }
}

/// Creates the container from `<bundle>/config.json` with its state under `<bundle>/state`;
/// the init loads `seccomp` (from [`seccomp::prepare`]: libcontainer is built without
/// libseccomp, skiff applies the filter itself).
pub(crate) fn create(
    id: &str,
    bundle: &Path,
    stdio: Stdio,
    seccomp: Option<seccomp::Loader>,
) -> Result<Created, RunError> {
    let state = bundle.join(STATE);
    let lc = |e: libcontainer::error::LibcontainerError| RunError::Container(Box::new(e));
    let mut builder = ContainerBuilder::new(id.to_owned(), SyscallType::default())
        .with_root_path(&state)
        .map_err(lc)?
        .with_executor(PayloadExecutor { seccomp });
    if let Some(stdin) = stdio.stdin {
        builder = builder.with_stdin(stdin);
    }
    if let Some(stdout) = stdio.stdout {
        builder = builder.with_stdout(stdout);
    }
    if let Some(stderr) = stdio.stderr {
        builder = builder.with_stderr(stderr);
    }
    let tty = stdio.console_socket.is_some();
    builder = builder.with_console_socket(stdio.console_socket);
    let container = builder
        .as_init(bundle)
        .with_systemd(false)
        // libcontainer wants "detached" to accept a console socket; the init stays our child.
        .with_detach(tty)
        .build()
        .map_err(lc)?;
    let pid = container
        .pid()
        .ok_or_else(|| RunError::Launch("the container has no init pid".into()))?;
    // Recorded for a later sweep, should skiff be killed: pid and start time (pid reuse).
    let record = bundle.join(INIT_FILE);
    if let Some(start) = start_time(pid.as_raw()) {
        let _ = std::fs::write(&record, format!("{} {start}\n", pid.as_raw()));
    }
    Ok(Created {
        container: Some(container),
        pid,
    })
}

impl Created {
    /// The init's pid (in skiff's pid namespace).
    pub(crate) fn pid(&self) -> Pid {
        self.pid
    }

    /// Starts the payload.
    pub(crate) fn start(&mut self) -> Result<(), RunError> {
        match &mut self.container {
            Some(c) => c.start().map_err(|e| RunError::Container(Box::new(e))),
            None => Err(RunError::Launch("container already deleted".into())),
        }
    }

    /// After the init was reaped: removes the container's cgroups and state without
    /// libcontainer's delete, which builds its cgroup manager again (as root on cgroup v1,
    /// mountinfo read once per hierarchy through its checked procfs: about 1 ms of a warm
    /// start). As libcontainer does, what is still in a cgroup is killed and the removal
    /// retried while the cgroup is busy; should a cgroup stay, libcontainer's delete runs.
    pub(crate) fn remove_reaped(&mut self) -> Result<(), RunError> {
        let Some(container) = self.container.take() else {
            return Ok(());
        };
        if !remove_cgroups(container.id()) {
            self.container = Some(container);
            return self.delete();
        }
        match std::fs::remove_dir_all(&container.root) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(RunError::Io {
                op: "removing the container state",
                path: container.root.clone(),
                source: e,
            }),
            _ => Ok(()),
        }
    }

    /// Kills what is left, removes the cgroup and the state directory.
    pub(crate) fn delete(&mut self) -> Result<(), RunError> {
        if let Some(mut c) = self.container.take() {
            c.delete(true)
                .map_err(|e| RunError::Container(Box::new(e)))?;
        }
        // Reap the init if it was killed here.
        let _ = waitpid(self.pid, Some(WaitPidFlag::WNOHANG));
        Ok(())
    }
}

impl Drop for Created {
    fn drop(&mut self) {
        if let Err(err) = self.delete() {
            tracing::warn!(%err, "deleting the container");
        }
    }
}

/// How the payload ended, as a shell reports it: its code, or 128+N after signal N.
pub(crate) fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// Field 22 of /proc/<pid>/stat: the process start time in clock ticks.
pub(crate) fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Sweeps what a dead run left of its container: kills its processes (when the recorded init is
/// still the same process), then lets libcontainer remove the cgroup and state.
pub(crate) fn sweep(run: &Path, rootless: bool) {
    match std::fs::read_to_string(run.join(INIT_FILE)) {
        Ok(record) => {
            let mut f = record.split_whitespace();
            if let (Some(Ok(pid)), Some(Ok(start))) = (
                f.next().map(str::parse::<i32>),
                f.next().map(str::parse::<u64>),
            ) && start_time(pid) == Some(start)
            {
                kill_and_wait(run, pid, start);
            }
        }
        // Killed before the record was written: libcontainer's state may name the init.
        Err(_) => {
            for pid in state_pids(run) {
                if let Some(start) = start_time(pid)
                    && is_waiting_init(pid)
                {
                    kill_and_wait(run, pid, start);
                }
            }
        }
    }
    if rootless {
        // No cgroup was created rootless, and the state goes with the run directory.
        return;
    }
    let Ok(entries) = std::fs::read_dir(run.join(STATE)) else {
        return;
    };
    for entry in entries.flatten() {
        match Container::load(entry.path()) {
            Ok(mut c) => {
                if let Err(err) = c.delete(true) {
                    tracing::warn!(%err, "removing a dead run's container");
                }
            }
            Err(err) => tracing::warn!(%err, "loading a dead run's container state"),
        }
    }
    if let Some(id) = run.file_name().and_then(|n| n.to_str()) {
        // Whatever is still in a dead run's cgroups is its own (an init that never started).
        remove_cgroups(id);
    }
}

/// Kills a dead run's init `pid` (started at `start`) and waits for it to go; it is not our
/// child, its mounts and the descriptors it held go with it.
fn kill_and_wait(run: &Path, pid: i32, start: u64) {
    tracing::info!(pid, run = %run.display(), "killing the payload of a dead run");
    let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    for _ in 0..200 {
        if start_time(pid) != Some(start) || is_zombie(pid) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The init pids libcontainer's state under a run directory records.
fn state_pids(run: &Path) -> Vec<i32> {
    std::fs::read_dir(run.join(STATE))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| Container::load(entry.path()).ok()?.pid())
        .map(Pid::as_raw)
        .collect()
}

/// Whether `pid` is a libcontainer init that has not executed its payload yet (a reused pid
/// is some other program).
fn is_waiting_init(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|comm| comm.trim_end() == "youki:[2:INIT]")
}

/// The cgroup directories a container `id` may have: `skiff/<id>` in every hierarchy mounted
/// at /sys/fs/cgroup (the container's cgroups path is `/skiff/<id>`), the unified one at
/// /sys/fs/cgroup/unified on a hybrid host included; only `/sys/fs/cgroup/skiff/<id>` where
/// /sys/fs/cgroup is cgroup2 (a v2 host, or skiff's own mount for libcontainer's v2 manager).
fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        return vec![Path::new("/sys/fs/cgroup/skiff").join(id)];
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|h| h.file_type().is_ok_and(|t| t.is_dir()))
        .map(|h| h.path().join("skiff").join(id))
        .collect();
    dirs.push(Path::new("/sys/fs/cgroup/skiff").join(id));
    dirs
}

/// Removes the cgroups of a container whose init was reaped, killing what is still in them
/// (as libcontainer's cgroup managers do); whether none is left.
fn remove_cgroups(id: &str) -> bool {
    let mut all = true;
    for dir in cgroup_dirs(id) {
        let procs = match std::fs::read_to_string(dir.join("cgroup.procs")) {
            Ok(procs) => procs,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                continue;
            }
            Err(_) => {
                all = false;
                continue;
            }
        };
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        all &= remove_cgroup_dir(&dir);
    }
    all
}

/// Removes an empty cgroup directory, retrying for up to 2 s while it is busy (its last tasks
/// being torn down); whether it is gone.
fn remove_cgroup_dir(dir: &Path) -> bool {
    for _ in 0..400 {
        match std::fs::remove_dir(dir) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return true,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "removing a cgroup");
                return false;
            }
            Ok(()) => return true,
        }
    }
    false
}

/// Removes empty run cgroups (`skiff/skiff-<run id>` in any hierarchy) over 10 s old: a run
/// killed while libcontainer was creating its container can leave its cgroup made after the
/// sweep of the run went by. Only empty ones (rmdir refuses others) and only old ones (a run
/// of another store joins its new cgroup within milliseconds) go. Returns how many went.
pub(crate) fn remove_stale_run_cgroups() -> usize {
    let mut parents: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|h| h.file_type().is_ok_and(|t| t.is_dir()))
        .map(|h| h.path().join("skiff"))
        .collect();
    parents.push(PathBuf::from("/sys/fs/cgroup/skiff"));
    let mut removed = 0;
    for parent in parents {
        for entry in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
            let is_run = entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with("skiff-"));
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age.as_secs() > 10);
            let empty = std::fs::read_to_string(entry.path().join("cgroup.procs"))
                .is_ok_and(|p| p.trim().is_empty());
            if is_run && old && empty && std::fs::remove_dir(entry.path()).is_ok() {
                tracing::info!(cgroup = %entry.path().display(), "removed a stale run cgroup");
                removed += 1;
            }
        }
    }
    removed
}

/// Removes a dead run's cgroup directories that libcontainer's delete left (it gives up when a
/// cgroup is still busy while the killed payload is being torn down).
fn remove_leftover_cgroups(id: &str) {
    for dir in cgroup_dirs(id) {
        remove_cgroup_dir(&dir);
    }
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, a)| a.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Starts a process in a running container (libcontainer's tenant builder): it joins the
/// init's namespaces and cgroup and runs `process` (a JSON process spec file), the executor
/// loading `seccomp` as for the init. Returns the process's pid (a child of this process).
pub(crate) fn exec_tenant(
    id: &str,
    bundle: &Path,
    process: &Path,
    stdio: Stdio,
    seccomp: Option<seccomp::Loader>,
) -> Result<Pid, RunError> {
    let lc = |e: libcontainer::error::LibcontainerError| RunError::Container(Box::new(e));
    let mut builder = ContainerBuilder::new(id.to_owned(), SyscallType::default())
        .with_root_path(bundle.join(STATE))
        .map_err(lc)?
        .with_executor(PayloadExecutor { seccomp });
    if let Some(stdin) = stdio.stdin {
        builder = builder.with_stdin(stdin);
    }
    let tty = stdio.console_socket.is_some();
    builder = builder.with_console_socket(stdio.console_socket);
    builder
        .as_tenant()
        .with_process(Some(process))
        .with_detach(tty)
        .build()
        .map_err(lc)
}

/// What a job container whose monitor died leaves once its init is gone: its cgroups (root)
/// and libcontainer's state. Its mounts were in the monitor's mount namespace and went with it.
pub(crate) fn release_orphan(bundle: &Path, id: &str) {
    if nix::unistd::geteuid().is_root() {
        remove_leftover_cgroups(id);
    }
    let state = bundle.join(STATE);
    if let Err(err) = std::fs::remove_dir_all(&state)
        && err.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %state.display(), %err, "removing a dead container's state");
    }
}
