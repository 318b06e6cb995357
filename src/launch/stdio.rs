//! The payload's process side: signals forwarded to it, a SIGKILL fallback, the TTY (pty master
//! received over libcontainer's console socket, copied to and from the caller's terminal, window
//! size kept in step), and waiting for it to exit.

use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use nix::sys::termios::{self, SetArg, Termios};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::RunError;

/// Grace period between a forwarded SIGINT/SIGTERM/SIGHUP and SIGKILL (docker's default
/// `--stop-timeout`).
pub const KILL_GRACE: Duration = Duration::from_secs(10);

/// How skiff stops the payload when it is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stop {
    /// Sent to the payload in place of a SIGTERM skiff receives (`--stop-signal`, the image's
    /// StopSignal); SIGINT and SIGHUP are forwarded as they are, as docker's attached client
    /// does.
    pub signal: Signal,
    /// From then to SIGKILL (`--stop-timeout`); `None`: never.
    pub grace: Option<Duration>,
}

impl Default for Stop {
    fn default() -> Self {
        Self {
            signal: Signal::SIGTERM,
            grace: Some(KILL_GRACE),
        }
    }
}

/// Signals skiff forwards to the payload.
const FORWARDED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// A replacement for `fd` when it is the host's /dev/null: `/dev/zero`, write-only, which
/// discards what is written as well. libcontainer (0.7) points a container's stdio that is
/// /dev/null at the container's own /dev/null opened read-only, so the payload's writes there
/// fail (EBADF: `echo x 2>/dev/null`-style redirections of `skiff run` broke `tar` and any
/// program that checks its writes). docker gives the payload a pipe whose reader discards.
pub(crate) fn writable_discard(fd: BorrowedFd<'_>) -> Result<Option<OwnedFd>, RunError> {
    let Ok(stat) = nix::sys::stat::fstat(fd.as_raw_fd()) else {
        return Ok(None);
    };
    let null = libc::makedev(1, 3);
    if stat.st_mode & libc::S_IFMT != libc::S_IFCHR || stat.st_rdev != null {
        return Ok(None);
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/zero")
        .map(|f| Some(OwnedFd::from(f)))
        .map_err(|source| RunError::Io {
            op: "opening",
            path: "/dev/zero".into(),
            source,
        })
}

fn sys(op: &'static str) -> impl FnOnce(nix::Error) -> RunError {
    move |e| RunError::Sys { op, source: e }
}

/// The signals skiff handles, blocked and read from a signalfd; the mask is restored on drop.
#[derive(Debug)]
pub(crate) struct Signals {
    fd: SignalFd,
    previous: SigSet,
}

impl Signals {
    /// Blocks the forwarded signals, SIGWINCH and SIGCHLD (children inherit the mask; the
    /// payload executor clears it before exec).
    pub(crate) fn block() -> Result<Self, RunError> {
        let mut mask = SigSet::empty();
        for s in FORWARDED {
            mask.add(s);
        }
        mask.add(Signal::SIGWINCH);
        mask.add(Signal::SIGCHLD);
        let mut previous = SigSet::empty();
        sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), Some(&mut previous))
            .map_err(sys("blocking signals"))?;
        let fd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(sys("signalfd"))?;
        Ok(Self { fd, previous })
    }

    /// A terminating signal already received (e.g. Ctrl-C during set-up), if any.
    pub(crate) fn pending_termination(&self) -> Option<Signal> {
        while let Ok(Some(info)) = self.fd.read_signal() {
            if let Ok(sig) = Signal::try_from(info.ssi_signo as i32)
                && matches!(sig, Signal::SIGINT | Signal::SIGTERM | Signal::SIGHUP)
            {
                return Some(sig);
            }
        }
        None
    }
}

impl AsFd for Signals {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Signals {
    /// Reads and discards the pending signals.
    pub(crate) fn drain(&self) {
        while let Ok(Some(_)) = self.fd.read_signal() {}
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&self.previous), None);
    }
}

/// The caller's terminal in raw mode; restored on drop.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enter() -> Option<Self> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// Receives the pty master that the container's init sends over the console socket.
pub(crate) fn receive_pty(listener: &UnixListener) -> Result<OwnedFd, RunError> {
    let (stream, _) = listener.accept().map_err(|source| RunError::Io {
        op: "accepting the console socket",
        path: Default::default(),
        source,
    })?;
    let mut buf = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(sys("receiving the pty master"))?;
    for cmsg in msg.cmsgs().map_err(sys("reading the pty master message"))? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg
            && let Some(&fd) = fds.first()
        {
            // SAFETY: SCM_RIGHTS gave this process a new descriptor that nothing else owns.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
    Err(RunError::Launch(
        "the container sent no pty master on the console socket".into(),
    ))
}

/// Copies the caller's window size to the pty.
fn sync_window_size(master: BorrowedFd<'_>) {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a winsize into the struct we pass; stdin may not be a tty.
    if unsafe { libc::ioctl(libc::STDIN_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0 {
        // SAFETY: TIOCSWINSZ reads the winsize we pass on the pty master we own.
        unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }
}

/// Prepares the pty before the payload starts: initial window size.
pub(crate) fn prepare_pty(master: &OwnedFd) {
    sync_window_size(master.as_fd());
}

fn read_fd(fd: RawFd, buf: &mut [u8]) -> Option<usize> {
    match nix::unistd::read(fd, buf) {
        Ok(0) => None,
        Ok(n) => Some(n),
        Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => Some(0),
        Err(_) => None,
    }
}

fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) if n > 0 => data = &data[n..],
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
            _ => return,
        }
    }
}

/// Waits for the payload (pid `init`): forwards signals (SIGTERM as `stop.signal`), kills it
/// after `stop.grace` or a second Ctrl-C, pumps the TTY; returns its wait status.
pub(crate) fn wait(
    init: Pid,
    signals: &Signals,
    pty: Option<OwnedFd>,
    interactive: bool,
    stop: Stop,
) -> Result<WaitStatus, RunError> {
    let _raw = pty.as_ref().and_then(|_| RawMode::enter());
    let stdout = std::io::stdout();
    let stdin = std::io::stdin();
    let mut master_open = pty.is_some();
    let mut stdin_open = pty.is_some() && interactive;
    let mut deadline: Option<Instant> = None;
    let mut stopping = false;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match waitpid(init, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(status @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
                if let Some(master) = &pty {
                    drain(master.as_fd(), stdout.as_fd(), &mut buf);
                }
                return Ok(status);
            }
            Ok(_) => {}
            Err(e) => return Err(sys("waiting for the payload")(e)),
        }
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                PollTimeout::try_from(left.as_millis().min(60_000) as u32 + 1)
                    .unwrap_or(PollTimeout::NONE)
            }
        };
        let mut fds = vec![PollFd::new(signals.fd.as_fd(), PollFlags::POLLIN)];
        let master_idx = match (&pty, master_open) {
            (Some(m), true) => {
                fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
                Some(fds.len() - 1)
            }
            _ => None,
        };
        let stdin_idx = if stdin_open {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            Some(fds.len() - 1)
        } else {
            None
        };
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(sys("poll")(e)),
        }
        let ready = |i: usize| fds[i].revents().is_some_and(|r| !r.is_empty());
        let master_ready = master_idx.is_some_and(ready);
        let stdin_ready = stdin_idx.is_some_and(ready);
        drop(fds);
        if let Some(d) = deadline
            && Instant::now() >= d
        {
            tracing::info!("payload did not stop within the grace period: SIGKILL");
            let _ = kill(init, Signal::SIGKILL);
            deadline = None;
        }
        while let Ok(Some(info)) = signals.fd.read_signal() {
            let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                continue;
            };
            match sig {
                Signal::SIGCHLD => {}
                Signal::SIGWINCH => {
                    if let Some(master) = &pty {
                        sync_window_size(master.as_fd());
                    }
                }
                Signal::SIGINT if stopping => {
                    // A second Ctrl-C: no more patience.
                    let _ = kill(init, Signal::SIGKILL);
                }
                sig => {
                    let _ = kill(
                        init,
                        if sig == Signal::SIGTERM {
                            stop.signal
                        } else {
                            sig
                        },
                    );
                    if matches!(sig, Signal::SIGINT | Signal::SIGTERM | Signal::SIGHUP) && !stopping
                    {
                        stopping = true;
                        deadline = stop.grace.map(|g| Instant::now() + g);
                    }
                }
            }
        }
        if let Some(master) = &pty {
            if master_ready {
                match read_fd(master.as_raw_fd(), &mut buf) {
                    Some(n) => write_all(stdout.as_fd(), &buf[..n]),
                    None => master_open = false,
                }
            }
            if stdin_ready {
                match read_fd(libc::STDIN_FILENO, &mut buf) {
                    Some(n) => write_all(master.as_fd(), &buf[..n]),
                    None => stdin_open = false,
                }
            }
        }
    }
}

/// Copies what is left in the pty after the payload exited.
fn drain(master: BorrowedFd<'_>, out: BorrowedFd<'_>, buf: &mut [u8]) {
    let _ = nix::fcntl::fcntl(
        master.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    );
    while let Some(n) = read_fd(master.as_raw_fd(), buf) {
        if n == 0 {
            break;
        }
        write_all(out, &buf[..n]);
    }
}

/// A listening console socket for libcontainer; removed (with its private directory) on drop.
pub(crate) struct ConsoleSocket {
    /// Where the container's init sends the pty master.
    pub listener: std::os::unix::net::UnixListener,
    /// The socket's path, for libcontainer.
    pub path: std::path::PathBuf,
    /// A private directory made for it, when `preferred` was too long.
    dir: Option<std::path::PathBuf>,
}

/// The longest path a Unix socket address holds (sun_path, with its NUL).
const MAX_SOCKET_PATH: usize = 107;

impl ConsoleSocket {
    /// Binds `preferred`, or, when that path is too long for a socket address (a container's
    /// directory deep in a store can be), a socket in a new private directory of the temp dir.
    pub fn bind(preferred: &std::path::Path) -> Result<Self, RunError> {
        use std::os::unix::fs::DirBuilderExt as _;
        let (path, dir) = if preferred.as_os_str().len() <= MAX_SOCKET_PATH {
            (preferred.to_owned(), None)
        } else {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let dir = std::env::temp_dir()
                .join(format!("skiff-console-{}-{nanos:x}", std::process::id()));
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&dir)
                .map_err(|source| RunError::Io {
                    op: "creating a directory for the console socket",
                    path: dir.clone(),
                    source,
                })?;
            (dir.join("console.sock"), Some(dir))
        };
        let _ = std::fs::remove_file(&path);
        match std::os::unix::net::UnixListener::bind(&path) {
            Ok(listener) => Ok(Self {
                listener,
                path,
                dir,
            }),
            Err(source) => {
                if let Some(dir) = &dir {
                    let _ = std::fs::remove_dir(dir);
                }
                Err(RunError::Io {
                    op: "binding the console socket",
                    path,
                    source,
                })
            }
        }
    }
}

impl ConsoleSocket {
    /// The pty master the container's init sends, set up for the caller's terminal.
    pub fn pty(&self) -> Result<OwnedFd, RunError> {
        let master = receive_pty(&self.listener)?;
        prepare_pty(&master);
        Ok(master)
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir(dir);
        }
    }
}
