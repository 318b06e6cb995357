//! `--init`: skiff's own init as the container's PID 1, nothing installed in the image.
//!
//! The container's init process is skiff code (cloned by libcontainer) until it executes the
//! payload. With `--init` it forks there instead: the child goes on to execute the payload as
//! usual, and the parent stays PID 1 as `skiff-init`: it reaps every child (orphans included),
//! forwards SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and SIGWINCH to the payload, and
//! exits with the payload's status (128+N when signal N ended it), as docker's tini does.

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::signal::{kill, sigaction, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};
use oci_spec::runtime::Spec;

use super::spec::INIT_ANNOTATION;

/// The name PID 1 shows (`/proc/1/comm`, `ps`).
pub const INIT_NAME: &str = "skiff-init";

/// What the init passes on to the payload.
const FORWARDED: [Signal; 7] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// Exit code when the init cannot start the payload (docker's "cannot invoke").
const EXIT_CANNOT_INVOKE: i32 = 126;

/// Whether the spec asks for skiff's init (`--init`).
pub(crate) fn requested(spec: &Spec) -> bool {
    spec.annotations()
        .as_ref()
        .and_then(|a| a.get(INIT_ANNOTATION))
        .is_some_and(|v| v == "true")
}

/// Called in the container's init process right before it executes the payload. Without
/// `--init` it returns at once. With it, this process forks: the child returns (and executes
/// the payload), the parent stays PID 1 until the payload ends and never returns.
pub(crate) fn fork_if_requested(spec: &Spec) {
    if !requested(spec) {
        return;
    }
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(s);
    }
    set.add(Signal::SIGCHLD);
    // Blocked before the fork, so that nothing sent meanwhile is lost; the payload's executor
    // clears the mask before it executes the payload.
    if let Err(e) = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None) {
        fail(&format!("blocking signals: {}", e.desc()));
    }
    // SAFETY: the container's init process runs one thread; the child only sets its process
    // group and returns to the executor, which executes the payload.
    match unsafe { fork() } {
        Err(e) => fail(&format!("fork: {}", e.desc())),
        Ok(ForkResult::Child) => foreground(),
        Ok(ForkResult::Parent { child }) => supervise(child, &set),
    }
}

/// The init's last word, on the container's stderr.
#[allow(clippy::print_stderr)]
fn fail(message: &str) -> ! {
    eprintln!("{INIT_NAME}: {message}");
    // SAFETY: _exit ends this (cloned container init) process without running destructors.
    unsafe { libc::_exit(EXIT_CANNOT_INVOKE) }
}

/// The payload gets a process group of its own and, on a TTY, the foreground, so that Ctrl-C
/// typed on the TTY reaches it once (not once from the TTY and once forwarded by the init).
fn foreground() {
    let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
    let stdin = std::io::stdin();
    if nix::unistd::isatty(libc::STDIN_FILENO).unwrap_or(false) {
        // A background process group changing the foreground gets SIGTTOU unless blocked.
        let mut ttou = SigSet::empty();
        ttou.add(Signal::SIGTTOU);
        let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&ttou), None);
        let _ = nix::unistd::tcsetpgrp(&stdin, nix::unistd::getpgrp());
    }
}

/// PID 1's loop: reap, forward, and exit with the payload's status once it ends.
fn supervise(payload: Pid, set: &SigSet) -> ! {
    let _ = nix::sys::prctl::set_name(c"skiff-init");
    // SIGCHLD must not be ignored, or children are reaped by the kernel without a signal.
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    // SAFETY: sigaction(2) installing SIG_DFL runs no handler code.
    let _ = unsafe { sigaction(Signal::SIGCHLD, &default) };
    loop {
        let mut status = None;
        loop {
            match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == payload => status = Some(code),
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid == payload => {
                    status = Some(128 + sig as i32);
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
        if let Some(code) = status {
            // SAFETY: _exit ends PID 1; the kernel kills what is left in the namespace.
            unsafe { libc::_exit(code) }
        }
        match set.wait() {
            Ok(Signal::SIGCHLD) | Err(_) => {}
            Ok(sig) => {
                let _ = kill(payload, sig);
            }
        }
    }
}
