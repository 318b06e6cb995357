//! `skiff run` failures a user can act on: exit 125 with a message naming what is wrong,
//! nothing left behind (mounts, run directories, cgroups), and no runtime log lines on the
//! terminal. As root, and as the unprivileged test user.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use skiff_test_rig::{Compression, Format, Registry, busybox, require_root, rootless_test};

/// A store and a registry holding the busybox fixture, pulled already (so that `run` prints
/// nothing of a pull).
struct Env {
    base: common::Env,
    _registry: Registry,
    image: String,
    mountinfo_before: Vec<String>,
}

impl std::ops::Deref for Env {
    type Target = common::Env;

    fn deref(&self) -> &common::Env {
        &self.base
    }
}

fn mount_lines_mentioning(needle: &Path) -> Vec<String> {
    let needle = needle.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_owned)
        .collect()
}

impl Env {
    fn new() -> Self {
        let base = common::Env::with_config("retries = 2\nstall_timeout_secs = 5\n");
        let registry = Registry::start().unwrap();
        registry
            .push_image(
                "busybox",
                "1",
                &busybox::image(Format::Oci, Compression::Gzip).unwrap(),
            )
            .unwrap();
        let image = format!("{}/busybox:1", registry.host());
        base.ok(&["pull", "-q", &image]);
        Self {
            mountinfo_before: mount_lines_mentioning(base.dir.path()),
            base,
            _registry: registry,
            image,
        }
    }

    /// `skiff run --rm OPTS IMAGE ARGS`: (exit code, stdout, stderr).
    fn run(&self, opts: &[&str], args: &[&str]) -> (i32, String, String) {
        let mut all = vec!["run", "--rm"];
        all.extend_from_slice(opts);
        all.push(&self.image);
        all.extend_from_slice(args);
        let out = self.skiff(&all);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Nothing of finished runs is left: no mounts, no run directories.
    fn assert_clean(&self) {
        assert_eq!(
            mount_lines_mentioning(self.dir.path()),
            self.mountinfo_before,
            "mounts left behind"
        );
        let runs: Vec<_> = std::fs::read_dir(self.root().join("runs"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(runs.is_empty(), "run directories left: {runs:?}");
    }
}

/// skiff's cgroup directories on this host (`/sys/fs/cgroup[/<controller>]/skiff/<id>`).
fn skiff_cgroups() -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") else {
        return out;
    };
    let bases = entries
        .flatten()
        .map(|e| e.path().join("skiff"))
        .chain([PathBuf::from("/sys/fs/cgroup/skiff")]);
    for base in bases {
        if let Ok(ids) = std::fs::read_dir(&base) {
            out.extend(ids.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
    }
    out
}

/// Fails if a cgroup directory that was not in `before` stays (runs of other test processes
/// on this host come and go within seconds; a leaked one stays).
fn assert_no_new_cgroups(before: &BTreeSet<PathBuf>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let new: Vec<_> = skiff_cgroups().difference(before).cloned().collect();
        if new.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "cgroups left behind: {new:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
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
    let env = Env::new();
    let host = env.dir.path().join("new/nested");
    let volume = format!("{}:/ctr", host.display());
    let (code, stdout, stderr) = env.run(
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
fn assert_mount_fails(env: &Env, opts: &[&str], expected: &str) {
    let cgroups = skiff_cgroups();
    let (code, stdout, stderr) = env.run(opts, &["true"]);
    assert_eq!(code, 125, "{stdout}\n{stderr}");
    assert!(stderr.contains(expected), "want {expected:?} in:\n{stderr}");
    assert_only_skiff_messages(&stderr);
    env.assert_clean();
    assert_no_new_cgroups(&cgroups);
}

fn bad_mounts_name_source_target_and_cause_body() {
    let env = Env::new();
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
    let (code, _, stderr) = env.run(
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
    let env = Env::new();
    // Not found in the container: 127, skiff's message from the container's init only.
    let (code, _, stderr) = env.run(&[], &["no-such-command"]);
    assert_eq!(code, 127, "{stderr}");
    assert!(stderr.contains("not found"), "{stderr}");
    assert_only_skiff_messages(&stderr);
    // A mount the kernel refuses inside libcontainer (bad tmpfs option).
    let cgroups = skiff_cgroups();
    let (code, _, stderr) = env.run(&["--tmpfs", "/scratch:size=bogus"], &["true"]);
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
