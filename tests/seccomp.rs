//! Seccomp in real containers: docker's default profile on every run, `--security-opt
//! seccomp=unconfined` and `seccomp=PROFILE.json` (docker's format), capability-conditional
//! rules, and profiles that cannot be used failing with 125; as root and as the unprivileged
//! test user.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use common::Env;
use common::run::{RunEnv, busybox_image};
use skiff_test_rig::{Compression, require_root, rootless_test};

/// A store and a registry with the busybox fixture; runs are `skiff run --rm -q`.
fn busybox_env() -> RunEnv {
    RunEnv::with(Env::new(), &busybox_image()).quiet()
}

const UNCONFINED: [&str; 2] = ["--security-opt", "seccomp=unconfined"];

/// The `Seccomp:` mode of the payload (0 none, 2 filter).
fn seccomp_mode(b: &RunEnv, opts: &[&str]) -> String {
    b.sh(opts, "grep '^Seccomp:' /proc/self/status | tr -d '\\t '")
        .trim()
        .to_owned()
}

/// The payload's capability lines of /proc/self/status.
fn caps(b: &RunEnv, opts: &[&str]) -> String {
    b.sh(opts, "grep '^Cap' /proc/self/status")
}

/// A profile in docker's format that allows everything but mkdir and mkdirat.
const NO_MKDIR: &str = r#"{
    "defaultAction": "SCMP_ACT_ALLOW",
    "archMap": [
        {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
        {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}
    ],
    "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
         "comment": "no new directories"}
    ]
}"#;

fn checks(b: &RunEnv) {
    // The default profile: a filter, and unshare refused (EPERM) where unconfined allows it.
    assert_eq!(seccomp_mode(b, &[]), "Seccomp:2");
    assert_eq!(seccomp_mode(b, &UNCONFINED), "Seccomp:0");
    let (code, out, err) = b.sh_status(&[], "unshare -U true");
    assert_ne!(code, 0, "unshare -U under the default profile: {out}{err}");
    assert!(err.contains("Operation not permitted"), "{err}");
    b.sh(&UNCONFINED, "unshare -U true");
    // Ordinary work under the filter: fork, pipes, files, signals.
    let out = b.sh(
        &[],
        "mkdir /tmp/x && echo a | cat > /tmp/x/f && (sleep 0 &); wait; cat /tmp/x/f",
    );
    assert_eq!(out.trim(), "a");
    // The payload never sees the capabilities skiff needs to load the filter.
    assert_eq!(caps(b, &[]), caps(b, &UNCONFINED));
    assert_eq!(
        caps(b, &["-u", "1000"]),
        caps(b, &["-u", "1000", "--security-opt", "seccomp=unconfined"])
    );
    assert_eq!(
        caps(b, &["--cap-drop", "ALL"]),
        caps(
            b,
            &["--cap-drop", "ALL", "--security-opt", "seccomp=unconfined"]
        )
    );
    // With no_new_privileges the filter needs no capabilities at all.
    let nnp = ["--security-opt", "no-new-privileges"];
    assert_eq!(seccomp_mode(b, &nnp), "Seccomp:2");
    assert_eq!(caps(b, &nnp), caps(b, &UNCONFINED));
    // Capability-conditional rules: with CAP_SYS_ADMIN, docker's profile allows unshare and
    // the namespace flags of clone.
    b.sh(
        &["--cap-add", "SYS_ADMIN"],
        "unshare -U true && unshare -m true",
    );
    assert_eq!(seccomp_mode(b, &["--cap-add", "SYS_ADMIN"]), "Seccomp:2");
    // A non-root user under the filter.
    let out = b.sh(
        &["-u", "1000:1000"],
        "id -u; grep '^Seccomp:' /proc/self/status",
    );
    assert!(out.starts_with("1000\n") && out.contains('2'), "{out}");

    // A profile of one's own in docker's format.
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("no-mkdir.json");
    std::fs::write(&profile, NO_MKDIR).unwrap();
    let opt = format!("seccomp={}", profile.display());
    let (code, _, err) = b.sh_status(&["--security-opt", &opt], "mkdir /tmp/x");
    assert_ne!(code, 0);
    assert!(err.contains("Operation not permitted"), "{err}");
    b.sh(&["--security-opt", &opt], "unshare -U true && touch /tmp/f");
    b.sh(&[], "mkdir /tmp/x");

    // Profiles that cannot be used: 125, naming the file.
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, "{\"defaultAction\": ").unwrap();
    let unknown = dir.path().join("unknown-action.json");
    std::fs::write(
        &unknown,
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_FROBNICATE"}]}"#,
    )
    .unwrap();
    let missing = dir.path().join("missing.json");
    for (path, cause) in [
        (&broken, "EOF"),
        (&unknown, "SCMP_ACT_FROBNICATE"),
        (&missing, "No such file"),
    ] {
        let opt = format!("seccomp={}", path.display());
        let (code, out, err) = b.sh_status(&["--security-opt", &opt], "echo ran");
        assert_eq!(code, 125, "{}: {out}{err}", path.display());
        assert!(!out.contains("ran"));
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains(cause), "{err}");
    }
}

#[test]
fn default_custom_and_unconfined_profiles() {
    require_root();
    checks(&busybox_env());
}

#[test]
fn privileged_means_unconfined() {
    require_root();
    let b = busybox_env();
    // As docker: no filter, whatever profile was asked for.
    assert_eq!(seccomp_mode(&b, &["--privileged"]), "Seccomp:0");
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("no-mkdir.json");
    std::fs::write(&profile, NO_MKDIR).unwrap();
    let opt = format!("seccomp={}", profile.display());
    assert_eq!(
        seccomp_mode(&b, &["--privileged", "--security-opt", &opt]),
        "Seccomp:0"
    );
    // A profile that cannot be read still fails, as docker's does.
    let (code, _, err) = b.sh_status(
        &["--privileged", "--security-opt", "seccomp=/no/such.json"],
        "true",
    );
    assert_eq!(code, 125, "{err}");
    assert!(err.contains("/no/such.json"), "{err}");
}

fn checks_unprivileged() {
    checks(&busybox_env());
}
rootless_test!(
    rootless_default_custom_and_unconfined_profiles,
    checks_unprivileged,
    env = common::rootless_env
);

/// podman's profile (Debian's containers-common) is in docker's format: it loads, and the
/// ordinary work of a shell runs under it.
const CONTAINERS_PROFILE: &str = "/usr/share/containers/seccomp.json";

fn containers_common_profile() {
    skiff_test_rig::require::require_file(
        CONTAINERS_PROFILE.as_ref(),
        "containers-common's seccomp profile (setup.sh installs golang-github-containers-common)",
    );
    let b = busybox_env();
    let opt = format!("seccomp={CONTAINERS_PROFILE}");
    let out = b.sh(
        &["--security-opt", &opt],
        "mkdir /tmp/d && echo hi > /tmp/d/f && cat /tmp/d/f && grep '^Seccomp:' /proc/self/status",
    );
    assert!(out.starts_with("hi\n") && out.contains('2'), "{out}");
    assert_eq!(caps(&b, &["--security-opt", &opt]), caps(&b, &UNCONFINED));
}

#[test]
fn containers_common_profile_loads() {
    require_root();
    containers_common_profile();
}
rootless_test!(
    rootless_containers_common_profile_loads,
    containers_common_profile,
    env = common::rootless_env
);

/// glibc's programs under the default profile (clone3 answered ENOSYS, so glibc falls back to
/// clone), and util-linux's unshare refused.
fn debian_checks() {
    let env = RunEnv::bare(Env::new()).quiet();
    let image = env.debian(Compression::Zstd);
    let (code, out, err) = env.sh_status_in(
        &image,
        &[],
        "dpkg-query -W | wc -l | tr -d ' '; (true &); wait; ls / | sort | head -1",
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.lines().nth(1), Some("bin"), "{out}");
    let (code, out, err) = env.sh_status_in(&image, &[], "unshare --user true");
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("Operation not permitted"), "{err}");
    let (code, out, err) = env.sh_status_in(&image, &UNCONFINED, "unshare --user true");
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn debian_under_the_default_profile() {
    require_root();
    debian_checks();
}
rootless_test!(
    rootless_debian_under_the_default_profile,
    debian_checks,
    env = common::rootless_env
);
