//! `skiff run` failures a user can act on: exit 125 with a message naming what is wrong,
//! nothing left behind (mounts, run directories, cgroups), and no runtime log lines on the
//! terminal. As root, and as the unprivileged test user.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::os::unix::fs::PermissionsExt;

use common::run::{RunEnv, assert_no_new_cgroups, skiff_cgroups};
use skiff_test_rig::{require_root, rootless_test};

/// A store and a registry holding the busybox fixture, pulled already (so that `run` prints
/// nothing of a pull).
fn pulled_env() -> RunEnv {
    RunEnv::new().pulled()
}

/// Lines a log framework would print: libcontainer's (or anyone's) tracing output.
fn log_lines(stderr: &str) -> Vec<&str> {
    const LEVELS: [&str; 5] = ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"];
    stderr
        .lines()
        .filter(|l| {
            let timestamp = l.len() > 5
                && l.as_bytes()[..4].iter().all(u8::is_ascii_digit)
                && l.as_bytes()[4] == b'-';
            timestamp
                || l.contains("libcontainer")
                || l.contains("youki")
                || l.split(|c: char| !c.is_ascii_alphabetic())
                    .any(|w| LEVELS.contains(&w))
        })
        .collect()
}

/// Every line of `stderr` is skiff's own (`skiff: ...`), and none is a log line.
fn assert_only_skiff_messages(stderr: &str) {
    assert!(
        log_lines(stderr).is_empty(),
        "log lines on stderr:\n{stderr}"
    );
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            line.starts_with("skiff: "),
            "not skiff's message: {line:?}\n{stderr}"
        );
    }
}

fn missing_host_directory_is_created_body() {
    let env = pulled_env();
    let host = env.dir.path().join("new/nested");
    let volume = format!("{}:/ctr", host.display());
    let (code, stdout, stderr) = env.run_busybox(
        &["-v", &volume],
        &["sh", "-c", "test -d /ctr && echo dir && touch /ctr/made"],
    );
    assert_eq!((code, stdout.as_str()), (0, "dir\n"), "{stderr}");
    for dir in [&host, &env.dir.path().join("new")] {
        let meta = std::fs::metadata(dir).unwrap();
        assert!(meta.is_dir(), "{}", dir.display());
        assert_eq!(
            meta.permissions().mode() & 0o7777,
            0o755,
            "{}",
            dir.display()
        );
    }
    assert!(host.join("made").exists());
    env.assert_clean();
}

#[test]
fn missing_host_directory_is_created() {
    require_root();
    missing_host_directory_is_created_body();
}
rootless_test!(
    rootless_missing_host_directory_is_created,
    missing_host_directory_is_created_body,
    env = common::rootless_env
);

/// A mount that cannot be made: 125, a message naming source, target and cause, nothing left.
fn assert_mount_fails(env: &RunEnv, opts: &[&str], expected: &str) {
    let cgroups = skiff_cgroups();
    let (code, stdout, stderr) = env.run_busybox(opts, &["true"]);
    assert_eq!(code, 125, "{stdout}\n{stderr}");
    assert!(stderr.contains(expected), "want {expected:?} in:\n{stderr}");
    assert_only_skiff_messages(&stderr);
    env.assert_clean();
    assert_no_new_cgroups(&cgroups);
}

fn bad_mounts_name_source_target_and_cause_body() {
    let env = pulled_env();
    let host = env.dir.path().join("x");
    std::fs::create_dir(&host).unwrap();
    let file = env.dir.path().join("file");
    std::fs::write(&file, "f").unwrap();
    // Below a file of the image.
    assert_mount_fails(
        &env,
        &["-v", &format!("{}:/bin/sh/sub", host.display())],
        &format!(
            "mounting {} on /bin/sh/sub: Not a directory",
            host.display()
        ),
    );
    // A directory onto a file, and a file onto a directory.
    assert_mount_fails(
        &env,
        &["-v", &format!("{}:/etc/passwd", host.display())],
        &format!(
            "mounting {} on /etc/passwd: Not a directory",
            host.display()
        ),
    );
    assert_mount_fails(
        &env,
        &["-v", &format!("{}:/etc", file.display())],
        &format!("mounting {} on /etc: Not a directory", file.display()),
    );
    // A tmpfs below a file.
    assert_mount_fails(
        &env,
        &["--tmpfs", "/bin/sh/tmp"],
        "mounting tmpfs on /bin/sh/tmp: Not a directory",
    );
    // The host directory cannot be created (its parent is a file).
    let under_file = file.join("sub");
    let (code, _, stderr) = env.run_busybox(
        &["-v", &format!("{}:/ctr", under_file.display())],
        &["true"],
    );
    assert_eq!(code, 125, "{stderr}");
    assert!(
        stderr.contains(&under_file.display().to_string()) && stderr.contains("Not a directory"),
        "{stderr}"
    );
    assert_only_skiff_messages(&stderr);
    env.assert_clean();
}

#[test]
fn bad_mounts_name_source_target_and_cause() {
    require_root();
    bad_mounts_name_source_target_and_cause_body();
}
rootless_test!(
    rootless_bad_mounts_name_source_target_and_cause,
    bad_mounts_name_source_target_and_cause_body,
    env = common::rootless_env
);

fn failing_runs_print_no_runtime_log_lines_body() {
    let env = pulled_env();
    // Not found in the container: 127, skiff's message from the container's init only.
    let (code, _, stderr) = env.run_busybox(&[], &["no-such-command"]);
    assert_eq!(code, 127, "{stderr}");
    assert!(stderr.contains("not found"), "{stderr}");
    assert_only_skiff_messages(&stderr);
    // A mount the kernel refuses inside libcontainer (bad tmpfs option).
    let cgroups = skiff_cgroups();
    let (code, _, stderr) = env.run_busybox(&["--tmpfs", "/scratch:size=bogus"], &["true"]);
    assert_eq!(code, 125, "{stderr}");
    assert!(
        stderr.contains("mounting tmpfs on /scratch: Invalid argument (options size=bogus)"),
        "{stderr}"
    );
    assert_only_skiff_messages(&stderr);
    env.assert_clean();
    assert_no_new_cgroups(&cgroups);
}

#[test]
fn failing_runs_print_no_runtime_log_lines() {
    require_root();
    failing_runs_print_no_runtime_log_lines_body();
}
rootless_test!(
    rootless_failing_runs_print_no_runtime_log_lines,
    failing_runs_print_no_runtime_log_lines_body,
    env = common::rootless_env
);
