//! Entry points for child processes of a test binary, chosen before the test harness starts.
//!
//! A test that needs a body run in another process (as another user, or several at once)
//! re-executes its own test binary with `SKIFF_TEST_HELPER=NAME`. [`child_helper!`] registers
//! `NAME` in the binary's `.init_array`: in that child the body runs before libtest's `main`,
//! and the process exits with its outcome, so the test list never runs there. A helper is not
//! a `#[test]`: `cargo test` cannot count it as passed.
//!
//! ```text
//! fn commit_one_layer() { /* the child's work; panics on failure */ }
//! skiff_test_rig::child_helper!(commit_one_layer);
//!
//! #[test]
//! fn two_processes_commit_at_once() {
//!     let children: Vec<_> = (0..2)
//!         .map(|_| skiff_test_rig::child::command("commit_one_layer").spawn().unwrap())
//!         .collect();
//!     for child in children {
//!         skiff_test_rig::child::assert_passed("commit_one_layer", &child.wait_with_output().unwrap());
//!     }
//! }
//! ```

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output};

/// The variable naming the helper a child runs.
pub const HELPER_ENV: &str = "SKIFF_TEST_HELPER";

/// Printed on stdout by a child whose helper returned.
const PASSED: &str = "skiff-test-rig helper passed: ";

/// Arguments for the test harness, used only when no helper of that name is registered: it then
/// lists no test and runs none, and [`assert_passed`] fails for want of the helper's line.
const NO_TEST: [&str; 3] = [
    "--list",
    "--exact",
    "skiff-test-rig: no helper of this name",
];

/// Called from the `.init_array` entry of [`child_helper!`]: when this process is the child
/// for `name`, runs `body`, then exits (0 when it returned, 101 when it panicked).
pub fn dispatch(name: &str, body: fn()) {
    if std::env::var_os(HELPER_ENV).is_none_or(|v| v != OsStr::new(name)) {
        return;
    }
    // SAFETY: this runs from .init_array, before main: no other thread reads the environment.
    unsafe { std::env::remove_var(HELPER_ENV) };
    ignore_sigpipe();
    // A thread of its own, as libtest gives a test: named, and a panic is caught at the join.
    let outcome = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(body)
        .map(std::thread::JoinHandle::join);
    let code = match outcome {
        Ok(Ok(())) => {
            println!("{PASSED}{name}");
            0
        }
        Ok(Err(_)) => 101, // the panic message is on stderr already
        Err(e) => {
            eprintln!("helper {name}: cannot start its thread: {e}");
            101
        }
    };
    use std::io::Write;
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}

/// libtest's process ignores SIGPIPE (Rust's `main` sets it); a child running before `main`
/// does the same, so that a write to a closed pipe is an error, not death.
fn ignore_sigpipe() {
    unsafe extern "C" {
        fn signal(signum: std::ffi::c_int, handler: usize) -> usize;
    }
    const SIGPIPE: std::ffi::c_int = 13;
    const SIG_IGN: usize = 1;
    // SAFETY: signal(2) with SIG_IGN installs no handler code; SIGPIPE is 13 on Linux.
    unsafe { signal(SIGPIPE, SIG_IGN) };
}

/// A command running helper `name` in a new process of this test binary.
pub fn command(name: &str) -> Command {
    let exe = std::env::current_exe().expect("the current test binary");
    command_for(&exe, name)
}

/// A command running helper `name` of the test binary `exe` (e.g. a copy of this one).
pub fn command_for(exe: &Path, name: &str) -> Command {
    let mut cmd = Command::new(exe);
    cmd.args(NO_TEST).env(HELPER_ENV, name);
    cmd
}

/// Variable `name` of this child's environment, set by the test that started the helper (with
/// [`command`]`(..).env(name, ..)`); panics naming the variable when it is missing or not
/// UTF-8.
#[track_caller]
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|e| {
        panic!("{name}: {e} (the test that starts this helper sets it with child::command(..).env)")
    })
}

/// Panics unless the child that ran helper `name` exited 0 after the helper returned.
#[track_caller]
pub fn assert_passed(name: &str, out: &Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.lines().any(|l| l == format!("{PASSED}{name}")),
        "helper {name} failed in its child process ({}){}:\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status,
        if stdout.contains("0 tests") {
            format!(
                " — it is not registered: add skiff_test_rig::child_helper!({name}) to the test file"
            )
        } else {
            String::new()
        }
    );
}

/// Registers helper `$name` (a `fn()`; `$name` alone when the function has the helper's name):
/// a child of this test binary started by [`command`]`("$name")` runs it before the test
/// harness, instead of the tests.
#[macro_export]
macro_rules! child_helper {
    ($name:ident) => {
        $crate::child_helper!($name, $name);
    };
    ($name:ident, $body:path) => {
        const _: () = {
            extern "C" fn dispatch() {
                $crate::child::dispatch(stringify!($name), $body);
            }
            // Runs before main in every process of this binary; returns at once unless the
            // process is the child for this helper.
            #[used]
            // SAFETY: an .init_array entry is a pointer to a function taking nothing (the
            // arguments glibc passes are ignored under the C ABI) and returning nothing.
            #[unsafe(link_section = ".init_array")]
            static DISPATCH: extern "C" fn() = dispatch;
        };
    };
}
