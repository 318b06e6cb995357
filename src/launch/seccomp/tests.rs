#![allow(clippy::unwrap_used)]

use oci_spec::runtime::{Arch, LinuxSeccompAction as Action, LinuxSeccompOperator as Op};

use super::profile::{Host, Profile, kernel_version, names_with};
use super::*;

fn amd64(kernel: (u64, u64, u64)) -> Host {
    Host {
        arch: "amd64",
        native: Some(Arch::ScmpArchX86_64),
        kernel,
    }
}

fn arm64() -> Host {
    Host {
        arch: "arm64",
        native: Some(Arch::ScmpArchAarch64),
        kernel: (6, 1, 0),
    }
}

fn caps(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

const DOCKER_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

fn allowed(host: &Host, caps: &[String]) -> Vec<String> {
    let seccomp = default::profile().resolve(caps, host).unwrap().unwrap();
    names_with(&seccomp, Action::ScmpActAllow)
}

#[test]
fn default_profile_denies_by_eperm_on_x86_64_x86_x32() {
    let seccomp = default::profile()
        .resolve(&caps(DOCKER_CAPS), &amd64((6, 1, 0)))
        .unwrap()
        .unwrap();
    assert_eq!(seccomp.default_action(), Action::ScmpActErrno);
    assert_eq!(seccomp.default_errno_ret(), Some(1));
    assert_eq!(
        seccomp.architectures().as_deref(),
        Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32][..])
    );
    let arm = default::profile()
        .resolve(&caps(DOCKER_CAPS), &arm64())
        .unwrap()
        .unwrap();
    assert_eq!(
        arm.architectures().as_deref(),
        Some(&[Arch::ScmpArchAarch64, Arch::ScmpArchArm][..])
    );
}

#[test]
fn capability_rules_follow_the_bounding_set() {
    let host = amd64((6, 1, 0));
    let plain = allowed(&host, &caps(DOCKER_CAPS));
    for name in ["read", "mkdir", "chroot", "execve", "capset", "prctl"] {
        assert!(plain.iter().any(|n| n == name), "{name}");
    }
    // Not without their capability.
    for name in [
        "unshare",
        "mount",
        "setns",
        "reboot",
        "bpf",
        "ptrace_never",
        "init_module",
    ] {
        assert!(!plain.iter().any(|n| n == name), "{name}");
    }
    let mut with_admin = caps(DOCKER_CAPS);
    with_admin.push("CAP_SYS_ADMIN".into());
    let admin = allowed(&host, &with_admin);
    for name in ["unshare", "mount", "setns", "clone", "clone3", "umount2"] {
        assert!(admin.iter().any(|n| n == name), "{name}");
    }
    // chroot needs CAP_SYS_CHROOT.
    let no_chroot: Vec<String> = caps(DOCKER_CAPS)
        .into_iter()
        .filter(|c| c != "SYS_CHROOT")
        .collect();
    assert!(!allowed(&host, &no_chroot).iter().any(|n| n == "chroot"));
    // Any spelling of the names.
    assert!(
        allowed(&host, &caps(&["cap_sys_admin"]))
            .iter()
            .any(|n| n == "mount")
    );
}

#[test]
fn clone_rules_exclude_sys_admin() {
    let host = amd64((6, 1, 0));
    let plain = default::profile()
        .resolve(&caps(DOCKER_CAPS), &host)
        .unwrap()
        .unwrap();
    let clone: Vec<_> = plain
        .syscalls()
        .iter()
        .flatten()
        .filter(|s| s.names().iter().any(|n| n == "clone"))
        .collect();
    // Only the x86 rule (argument 0), masked against the namespace flags, equal to 0.
    assert_eq!(clone.len(), 1);
    let arg = &clone[0].args().as_ref().unwrap()[0];
    assert_eq!((arg.index(), arg.op()), (0, Op::ScmpCmpMaskedEq));
    assert_eq!(arg.value(), 0x7e02_0000);
    assert_eq!(arg.value_two(), Some(0));
    let clone3 = plain
        .syscalls()
        .iter()
        .flatten()
        .find(|s| s.names().iter().any(|n| n == "clone3"))
        .unwrap();
    assert_eq!(
        (clone3.action(), clone3.errno_ret()),
        (Action::ScmpActErrno, Some(libc::ENOSYS as u32))
    );
    let admin = default::profile()
        .resolve(&caps(&["SYS_ADMIN"]), &host)
        .unwrap()
        .unwrap();
    assert!(
        !admin
            .syscalls()
            .iter()
            .flatten()
            .any(|s| s.args().is_some() && s.names().iter().any(|n| n == "clone"))
    );
}

#[test]
fn arch_and_kernel_rules() {
    let x86 = allowed(&amd64((6, 1, 0)), &[]);
    assert!(x86.iter().any(|n| n == "arch_prctl"));
    assert!(x86.iter().any(|n| n == "modify_ldt"));
    assert!(!x86.iter().any(|n| n == "set_tls"));
    let arm = allowed(&arm64(), &[]);
    assert!(arm.iter().any(|n| n == "set_tls"));
    assert!(!arm.iter().any(|n| n == "arch_prctl"));
    // ptrace from 4.8 on only (without CAP_SYS_PTRACE).
    assert!(x86.iter().any(|n| n == "ptrace"));
    assert!(
        !allowed(&amd64((4, 4, 0)), &[])
            .iter()
            .any(|n| n == "ptrace")
    );
    assert!(
        allowed(&amd64((4, 4, 0)), &caps(&["SYS_PTRACE"]))
            .iter()
            .any(|n| n == "ptrace")
    );
}

#[test]
fn kernel_versions_parse() {
    assert_eq!(kernel_version("6.18.44-fc-v857"), Some((6, 18, 44)));
    assert_eq!(kernel_version("4.8"), Some((4, 8, 0)));
    assert_eq!(kernel_version("5.10.0-28-amd64"), Some((5, 10, 0)));
    assert_eq!(kernel_version("x"), None);
}

#[test]
fn docker_format_parses_and_resolves() {
    let json = r#"{
        "defaultAction": "SCMP_ACT_ALLOW",
        "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": null}],
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
             "args": null, "includes": {}, "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"name": "chmod", "action": "SCMP_ACT_ERRNO", "comment": "old form"},
            {"names": ["personality"], "action": "SCMP_ACT_ERRNO",
             "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}],
             "includes": {"minKernel": "99.0"}}
        ]
    }"#;
    let profile: Profile = serde_json::from_str(json).unwrap();
    let host = amd64((6, 1, 0));
    let seccomp = profile.resolve(&caps(DOCKER_CAPS), &host).unwrap().unwrap();
    assert_eq!(
        names_with(&seccomp, Action::ScmpActErrno),
        ["mkdir", "mkdirat", "chmod"]
    );
    assert_eq!(
        seccomp.architectures().as_deref(),
        Some(&[Arch::ScmpArchX86_64][..])
    );
    let admin = profile
        .resolve(&caps(&["SYS_ADMIN"]), &host)
        .unwrap()
        .unwrap();
    assert_eq!(names_with(&admin, Action::ScmpActErrno), ["chmod"]);
    // No default action and no rules: no filter, as docker reads it.
    let empty: Profile = serde_json::from_str("{}").unwrap();
    assert!(empty.resolve(&[], &host).unwrap().is_none());
}

#[test]
fn bad_profiles_are_refused() {
    assert!(serde_json::from_str::<Profile>(r#"{"defaultAction": "SCMP_ACT_BOGUS"}"#).is_err());
    assert!(serde_json::from_str::<Profile>(r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": "NOPE"}]}"#).is_err());
    let host = amd64((6, 1, 0));
    let both: Profile = serde_json::from_str(
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
            "archMap": [{"architecture": "SCMP_ARCH_X86_64"}]}"#,
    )
    .unwrap();
    assert!(both.resolve(&[], &host).is_err());
    let notify: Profile = serde_json::from_str(r#"{"defaultAction": "SCMP_ACT_NOTIFY"}"#).unwrap();
    assert!(
        notify
            .resolve(&[], &host)
            .unwrap_err()
            .contains("SCMP_ACT_NOTIFY")
    );
    let index: Profile = serde_json::from_str(
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"],
            "action": "SCMP_ACT_ERRNO", "args": [{"index": 6, "value": 0, "op": "SCMP_CMP_EQ"}]}]}"#,
    )
    .unwrap();
    assert!(index.resolve(&[], &host).unwrap_err().contains("index 6"));
    // A missing file and a broken one name the file.
    let missing = resolve(&Seccomp::Profile("/nonexistent/p.json".into()), &[]).unwrap_err();
    assert!(
        missing.to_string().contains("/nonexistent/p.json"),
        "{missing}"
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{not json").unwrap();
    let err = resolve(&Seccomp::Profile(bad.clone()), &[]).unwrap_err();
    let (profile, cause) = err.profile_and_cause();
    assert_eq!(profile, bad.display().to_string());
    assert!(cause.contains("not a docker seccomp profile"), "{cause}");
}

#[test]
fn unconfined_has_no_filter() {
    assert!(resolve(&Seccomp::Unconfined, &[]).unwrap().is_none());
    assert!(resolve(&Seccomp::Default, &[]).unwrap().is_some());
}

#[test]
#[allow(clippy::print_stderr)] // the figures, with --nocapture
fn compiles_once_and_caches() {
    let seccomp = resolve(&Seccomp::Default, &[Capability::Chown])
        .unwrap()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let first = compile::program(&seccomp, dir.path()).unwrap();
    let compiled = started.elapsed();
    assert!(!first.cached);
    let started = std::time::Instant::now();
    let second = compile::program(&seccomp, dir.path()).unwrap();
    let cached = started.elapsed();
    assert!(second.cached);
    assert_eq!(first.instructions.len(), second.instructions.len());
    eprintln!(
        "docker's default profile: {} instructions, compiled in {compiled:?}, from the cache in \
         {cached:?}",
        first.instructions.len()
    );
    // A damaged entry is recompiled.
    let entry = std::fs::read_dir(dir.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    std::fs::write(entry.path(), b"abc").unwrap();
    assert!(!compile::program(&seccomp, dir.path()).unwrap().cached);
    assert!(compile::compile_uncached(&seccomp).unwrap().len() % 8 == 0);
}
