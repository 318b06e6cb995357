//! Detached (job) containers: the monitor, which is skiff re-executed, creates and starts the
//! container, writes its output to the container's log, records its exit and applies `--rm`.
//! It outlives the command that started it; nothing else talks to it (see `containers`).
//!
//! The monitor is small: no async runtime and no threads; one poll loop over the payload's
//! output pipes and a signalfd until the payload exits.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use rootfs_cache::Store;

use super::{
    RunError, assemble_container_rootfs, build_spec, cleanup, container, create_container,
    rootless, stdio,
};
use crate::containers::{
    ContainerDir, ContainerError, LogWriter, MonitorLock, State, Status, Stream,
};

/// The environment variable that makes a process a monitor: `<store root>\n<container id>`.
const ENV: &str = "SKIFF_MONITOR";
/// The descriptor on which the monitor reports "ok" or why the start failed.
const NOTIFY_FD: RawFd = 3;

/// A request, from the environment, for this process to be a container's monitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorRequest {
    /// The store root.
    pub root: PathBuf,
    /// The container id.
    pub id: String,
}

impl MonitorRequest {
    /// The request in this process's environment, if any.
    pub fn from_env() -> Option<Self> {
        let value = std::env::var_os(ENV)?;
        let value = value.to_str()?;
        let (root, id) = value.split_once('\n')?;
        Some(Self {
            root: root.into(),
            id: id.to_owned(),
        })
    }
}

/// Starts the monitor of container `id` (`program` is skiff, or an embedder that serves
/// monitors) and waits until it has started the payload, or reports why it could not.
pub(crate) fn spawn(program: &Path, root: &Path, id: &str) -> Result<(), ContainerError> {
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| ContainerError::Io {
        op: "creating a pipe for",
        path: program.to_owned(),
        source: e.into(),
    })?;
    let mut cmd = std::process::Command::new(program);
    // What `ps` shows of it: `skiff monitor <id>` (the request is in the environment).
    cmd.arg0("skiff")
        .args(["monitor", id.get(..12).unwrap_or(id)])
        .env(ENV, format!("{}\n{id}", root.display()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let fd = write.as_raw_fd();
    // SAFETY: between fork and exec the closure only calls dup2 and fcntl, which are
    // async-signal-safe, on a descriptor this process owns.
    unsafe {
        cmd.pre_exec(move || {
            if fd == NOTIFY_FD {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, NOTIFY_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| ContainerError::Monitor {
        program: program.to_owned(),
        source,
    })?;
    drop(write);
    // The first process forks the real monitor and exits at once.
    let _ = child.wait();
    let mut message = String::new();
    let _ = std::fs::File::from(read).read_to_string(&mut message);
    match message.trim_end() {
        "ok" => Ok(()),
        "" => Err(ContainerError::Start(
            "the container monitor ended without starting the container".into(),
        )),
        err => Err(ContainerError::Start(err.to_owned())),
    }
}

/// Serves a monitor request: forks the monitor proper (in a session of its own, so that it
/// outlives the caller and no terminal signal reaches it), which runs the container until it
/// exits. Never returns; call it first in `main`, before any thread starts.
pub fn serve_monitor(request: MonitorRequest) -> ! {
    // SAFETY: the monitor's notify pipe is descriptor 3, given by `spawn`; nothing else here
    // owns it.
    let notify = unsafe { OwnedFd::from_raw_fd(NOTIFY_FD) };
    // SAFETY: the process is single-threaded here (called first in main).
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { .. }) => {
            // SAFETY: _exit ends the intermediate process without running destructors.
            unsafe { libc::_exit(0) }
        }
        Ok(nix::unistd::ForkResult::Child) => {}
        Err(e) => {
            report(&notify, &format!("forking the container monitor: {e}"));
            // SAFETY: as above.
            unsafe { libc::_exit(1) }
        }
    }
    let _ = nix::unistd::setsid();
    // Descriptors the caller leaked (a CI runner's pipes) must not keep its pipes open.
    // SAFETY: close_range closes descriptors from 4 up; none of them is owned by Rust code
    // yet in this fresh process.
    unsafe { libc::syscall(libc::SYS_close_range, NOTIFY_FD + 1, u32::MAX, 0) };
    let code = match monitor(&request, notify) {
        Ok(()) => 0,
        Err(()) => 1,
    };
    // SAFETY: as above; the monitor has cleaned up what it made.
    unsafe { libc::_exit(code) }
}

fn report(notify: &OwnedFd, message: &str) {
    let _ = nix::unistd::write(notify.as_fd(), message.as_bytes());
}

/// The monitor: starts the container, reports, pumps its output into the log until it exits,
/// records the exit, cleans up and applies `--rm`.
fn monitor(request: &MonitorRequest, notify: OwnedFd) -> Result<(), ()> {
    let store = match Store::open(&request.root) {
        Ok(store) => store,
        Err(e) => {
            report(&notify, &crate::error_chain(&e));
            return Err(());
        }
    };
    let dir = ContainerDir::new(store.container_dir(&request.id));
    let _lock = match MonitorLock::acquire(dir.path()) {
        Ok(lock) => lock,
        Err(e) => {
            report(&notify, &crate::error_chain(&e));
            return Err(());
        }
    };
    let started = match start(&store, &dir, &request.id) {
        Ok(started) => started,
        Err(e) => {
            let message = crate::error_chain(&e);
            let _ = dir.update(|s| {
                s.error = message.clone();
                if s.status == Status::Running {
                    s.status = Status::Exited;
                }
            });
            report(&notify, &message);
            return Err(());
        }
    };
    report(&notify, "ok");
    drop(notify);
    finish(&store, &dir, &request.id, started)
}

/// A started container and what the monitor watches.
struct Started {
    launched: super::Launched,
    rootfs: super::Assembled,
    signals: stdio::Signals,
    outputs: Vec<(OwnedFd, Stream)>,
    log: LogWriter,
    auto_remove: bool,
    input: Option<Input>,
}

/// A container created with `-i`: what `start -ai` writes to the `stdin` FIFO in its
/// directory goes to the payload's stdin (a pipe, or the TTY); the pipe closes when the
/// attached writer closes the FIFO, as `run -i`'s stdin ends with the caller's.
struct Input {
    /// The FIFO's read end (non-blocking).
    fifo: OwnedFd,
    /// The payload's stdin (non-blocking), or the TTY master.
    sink: Option<OwnedFd>,
    /// Read from the FIFO, not yet taken by the payload.
    pending: Vec<u8>,
    /// The writer closed the FIFO: close the sink once `pending` is written.
    ended: bool,
}

/// The FIFO a `start -ai` writes the container's input to.
pub(crate) const STDIN_FIFO: &str = "stdin";

impl Input {
    /// Creates the FIFO in `dir` and the payload's end: (input, payload's stdin or None for a
    /// TTY).
    fn new(dir: &Path, tty: bool) -> Result<(Self, Option<OwnedFd>), RunError> {
        let path = dir.join(STDIN_FIFO);
        let _ = std::fs::remove_file(&path);
        let sys = |op: &'static str| move |source| RunError::Sys { op, source };
        nix::unistd::mkfifo(
            &path,
            nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
        )
        .map_err(sys("creating the stdin FIFO"))?;
        let fifo = nix::fcntl::open(
            &path,
            OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(sys("opening the stdin FIFO"))?;
        // SAFETY: open(2) returned a new descriptor that nothing else owns.
        let fifo = unsafe { OwnedFd::from_raw_fd(fifo) };
        if tty {
            return Ok((
                Self {
                    fifo,
                    sink: None,
                    pending: Vec::new(),
                    ended: false,
                },
                None,
            ));
        }
        let (read, write) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys("creating the stdin pipe"))?;
        set_nonblocking(&write);
        Ok((
            Self {
                fifo,
                sink: Some(write),
                pending: Vec::new(),
                ended: false,
            },
            Some(read),
        ))
    }
}

fn set_nonblocking(fd: &OwnedFd) {
    let _ = nix::fcntl::fcntl(
        fd.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK),
    );
}

/// Enters the namespaces, mounts the rootfs (keeping the writable layer), writes the spec and
/// creates and starts the container, its stdout and stderr on pipes (or a TTY) to the monitor.
fn start(store: &Store, dir: &ContainerDir, id: &str) -> Result<Started, StartError> {
    let record = dir.record()?;
    super::wait_single_threaded()?;
    let signals = stdio::Signals::block()?;
    let rootless = !nix::unistd::geteuid().is_root() || rootless::current_mapping().is_some();
    let (mapping, unified) = if rootless {
        let mapping = match rootless::current_mapping() {
            // Started from a process in skiff's user namespace (an embedder's): mounts of
            // its own all the same, none left in the starter's namespace.
            Some(m) => {
                rootless::private_mounts()?;
                m
            }
            None => super::enter_user_namespace()?,
        };
        (Some(mapping), false)
    } else {
        rootless::private_mounts()?;
        let unified = !record.options.limits.needs_cgroup()
            && crate::host::CgroupLayout::detect() == crate::host::CgroupLayout::Hybrid;
        if unified {
            rootless::mount_unified()?;
        }
        (None, unified)
    };
    let bytes = store.blob(&record.image_id)?.ok_or_else(|| {
        StartError::Other(format!(
            "the image config {} is missing from the store (pull {} again)",
            record.image_id, record.image
        ))
    })?;
    let config = crate::image::ImageConfig::parse(&bytes)
        .map_err(|e| StartError::Other(crate::error_chain(&e)))?
        .run_config();
    let rootfs = assemble_container_rootfs(store, id, dir.path(), &record.layers, rootless)?;
    // What a monitor killed with -9 left of libcontainer's state.
    let state_dir = dir.path().join(container::STATE);
    if state_dir.exists() {
        let _ = std::fs::remove_dir_all(&state_dir);
    }
    let mut options = record.options.clone();
    // A detached container reads nothing (docker's `-d` without `-i` attached).
    options.interactive = false;
    // Named networks: the other members' names and aliases in /etc/hosts.
    let peers: Vec<crate::containers::Record> = if record.networks.is_empty() {
        Vec::new()
    } else {
        crate::containers::all(store)?
            .into_iter()
            .map(|(_, r)| r)
            .collect()
    };
    for (name, ip) in crate::containers::peer_hosts(id, &record.networks, &peers) {
        options.add_hosts.push(format!("{name}:{ip}"));
    }
    let (seccomp, v2_devices) = build_spec(&rootfs, &config, &options, mapping, true)?;
    let pipe = || {
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| RunError::Sys {
            op: "creating the output pipes",
            source: e,
        })
    };
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (mut input, payload_stdin) = if record.options.interactive {
        let (input, payload) = Input::new(dir.path(), options.tty)?;
        (Some(input), payload)
    } else {
        (None, None)
    };
    let mut launched = create_container(
        &rootfs,
        &options,
        seccomp,
        v2_devices,
        (!options.tty).then_some((out_w, err_w)),
        payload_stdin,
    )?;
    launched.created.start()?;
    let pid = launched.created.pid().as_raw();
    let pid_start = crate::containers::pid_start(pid).unwrap_or(0);
    announce(store, &record, &peers);
    let log = LogWriter::open(&dir.log_path(id))?;
    dir.update(|s: &mut State| {
        if s.started_at != 0 {
            s.restart_count += 1;
        }
        s.status = Status::Running;
        s.pid = pid;
        s.pid_start = pid_start;
        s.monitor_pid = std::process::id() as i32;
        s.started_at = crate::containers::now_ns();
        s.finished_at = 0;
        s.exit_code = 0;
        s.error.clear();
        s.oom_killed = false;
        s.unified_cgroup = unified;
    })?;
    let outputs = match launched.pty.take() {
        Some(master) => {
            if let Some(input) = input.as_mut() {
                input.sink = master.try_clone().ok();
            }
            vec![(master, Stream::Stdout)]
        }
        None => vec![(out_r, Stream::Stdout), (err_r, Stream::Stderr)],
    };
    Ok(Started {
        launched,
        rootfs,
        signals,
        outputs,
        log,
        auto_remove: record.auto_remove,
        input,
    })
}

/// Appends the started container's name and aliases to the /etc/hosts of the other members of
/// its networks (the file is bind-mounted, so running members see the lines at once).
fn announce(
    store: &Store,
    record: &crate::containers::Record,
    peers: &[crate::containers::Record],
) {
    use std::io::Write as _;
    for peer in peers {
        if peer.id == record.id {
            continue;
        }
        let mut lines = String::new();
        for (net, aliases) in &record.networks {
            if peer.networks.contains_key(net) {
                for name in std::iter::once(&record.name).chain(aliases) {
                    lines.push_str(&format!("127.0.0.1\t{name}\n"));
                }
            }
        }
        if lines.is_empty() {
            continue;
        }
        let path = store.container_dir(&peer.id).join("hosts");
        let Ok(existing) = std::fs::read_to_string(&path) else {
            continue; // never started: its hosts file is written at its start
        };
        let missing: String = lines
            .lines()
            .filter(|l| !existing.lines().any(|e| e == *l))
            .map(|l| format!("{l}\n"))
            .collect();
        if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(&path) {
            let _ = f.write_all(missing.as_bytes());
        }
    }
}

/// Why a monitor could not start its container.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    Store(#[from] rootfs_cache::StoreError),
    #[error(transparent)]
    Spec(#[from] super::SpecError),
    #[error("{0}")]
    Other(String),
}

/// Pumps the output into the log until the payload exits, then records the exit, removes the
/// container's cgroups and state, unmounts, and removes the container with `--rm`.
fn finish(store: &Store, dir: &ContainerDir, id: &str, started: Started) -> Result<(), ()> {
    let Started {
        launched,
        rootfs,
        signals,
        mut outputs,
        mut log,
        auto_remove,
        mut input,
    } = started;
    let pid = launched.created.pid();
    let status = pump(pid, &signals, &mut outputs, &mut log, &mut input);
    drop(input);
    let _ = std::fs::remove_file(dir.path().join(STDIN_FIFO));
    drain(&mut outputs, &mut log);
    log.flush();
    drop(outputs);
    let exit_code = status.and_then(container::exit_code).unwrap_or(255);
    let cleaned = cleanup(launched, rootfs, status.is_some());
    let _ = dir.update(|s| {
        s.status = Status::Exited;
        s.pid = 0;
        s.pid_start = 0;
        s.exit_code = exit_code;
        s.finished_at = crate::containers::now_ns();
        if let Err(e) = &cleaned {
            s.error = crate::error_chain(e);
        }
    });
    drop(signals);
    if auto_remove && let Err(err) = store.remove_container_dir(id) {
        let _ = dir.update(|s| s.error = format!("removing the container: {err}"));
        return Err(());
    }
    cleaned.map_err(|_| ())
}

fn read_some(fd: &OwnedFd, buf: &mut [u8]) -> Option<usize> {
    match nix::unistd::read(fd.as_raw_fd(), buf) {
        Ok(0) => None,
        Ok(n) => Some(n),
        Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => Some(0),
        // EIO on a pty master once the last slave closed.
        Err(_) => None,
    }
}

/// Logs the payload's output until it exits, and feeds it its input; its wait status.
fn pump(
    pid: nix::unistd::Pid,
    signals: &stdio::Signals,
    outputs: &mut Vec<(OwnedFd, Stream)>,
    log: &mut LogWriter,
    input: &mut Option<Input>,
) -> Option<WaitStatus> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(status @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
                return Some(status);
            }
            Ok(_) => {}
            Err(_) => return None,
        }
        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        for (fd, _) in outputs.iter() {
            fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
        }
        // The input: read the FIFO while nothing is pending, else wait for room in the sink.
        let input_slot = fds.len();
        if let Some(i) = input.as_ref() {
            match (&i.sink, i.pending.is_empty()) {
                (Some(sink), false) => fds.push(PollFd::new(sink.as_fd(), PollFlags::POLLOUT)),
                (_, _) if !i.ended => fds.push(PollFd::new(i.fifo.as_fd(), PollFlags::POLLIN)),
                _ => {}
            }
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return None,
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if ready[0] {
            // SIGCHLD is checked at the loop's top; other signals are not the monitor's.
            signals.drain();
        }
        let mut closed = Vec::new();
        for (i, (fd, stream)) in outputs.iter().enumerate() {
            if ready[i + 1] {
                match read_some(fd, &mut buf) {
                    Some(n) => log.write(*stream, &buf[..n]),
                    None => closed.push(i),
                }
            }
        }
        for i in closed.into_iter().rev() {
            outputs.remove(i);
        }
        if ready.get(input_slot).copied().unwrap_or(false)
            && let Some(i) = input.as_mut()
        {
            feed(i, &mut buf);
        }
    }
}

/// Moves input from the FIFO to the payload (one step: a read or a write).
fn feed(input: &mut Input, buf: &mut [u8]) {
    if input.pending.is_empty() {
        match read_some(&input.fifo, buf) {
            Some(n) => input.pending.extend_from_slice(&buf[..n]),
            None => input.ended = true,
        }
    }
    if let Some(sink) = input.sink.take() {
        let mut open = true;
        while !input.pending.is_empty() {
            match nix::unistd::write(&sink, &input.pending) {
                Ok(n) => {
                    input.pending.drain(..n);
                }
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => break,
                // The payload closed its stdin: what is left has nowhere to go.
                Err(_) => {
                    input.pending.clear();
                    input.ended = true;
                    open = false;
                }
            }
        }
        if open {
            input.sink = Some(sink);
        }
    } else {
        input.pending.clear();
    }
    if input.ended && input.pending.is_empty() {
        // EOF for the payload (a pipe; a TTY keeps its master open for the output).
        input.sink = None;
    }
}

/// Logs what the pipes still hold (without waiting for processes that keep them open).
fn drain(outputs: &mut [(OwnedFd, Stream)], log: &mut LogWriter) {
    let mut buf = vec![0u8; 64 * 1024];
    for (fd, stream) in outputs.iter() {
        let _ = nix::fcntl::fcntl(
            fd.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK),
        );
        while let Some(n) = read_some(fd, &mut buf) {
            if n == 0 {
                break;
            }
            log.write(*stream, &buf[..n]);
        }
    }
}
