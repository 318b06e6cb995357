#![allow(clippy::unwrap_used)]

use oci_spec::image::Config as RunConfig;
use oci_spec::runtime::Capabilities;

use super::capabilities::{
    ALL_CAPS, CapArg, DEFAULT_CAPS, cap_bit, held_capabilities, parse_capability,
};
use super::hosts::HOST_GATEWAY;
use super::*;

fn config(entrypoint: Option<&[&str]>, cmd: Option<&[&str]>) -> RunConfig {
    let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect();
    let mut c = RunConfig::default();
    c.set_entrypoint(entrypoint.map(v));
    c.set_cmd(cmd.map(v));
    c
}

fn opts(entrypoint: Option<&str>, command: &[&str]) -> RunOptions {
    RunOptions {
        entrypoint: entrypoint.map(str::to_owned),
        command: command.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

#[test]
fn command_follows_docker_rules() {
    let c = config(Some(&["/ep", "x"]), Some(&["c1"]));
    assert_eq!(command(&c, &opts(None, &[])).unwrap(), ["/ep", "x", "c1"]);
    assert_eq!(command(&c, &opts(None, &["a"])).unwrap(), ["/ep", "x", "a"]);
    assert_eq!(command(&c, &opts(Some("/e2"), &[])).unwrap(), ["/e2"]);
    assert_eq!(
        command(&c, &opts(Some("/e2"), &["b"])).unwrap(),
        ["/e2", "b"]
    );
    assert_eq!(command(&c, &opts(Some(""), &["ls"])).unwrap(), ["ls"]);
    assert!(matches!(
        command(&config(None, None), &opts(None, &[])),
        Err(SpecError::NoCommand)
    ));
}

#[test]
fn env_merges_in_order() {
    let mut c = RunConfig::default();
    c.set_env(Some(vec![
        "PATH=/bin".into(),
        "A=image".into(),
        "B=image".into(),
    ]));
    let o = RunOptions {
        env: vec!["A=cli".into(), "FROMHOST".into(), "MISSING".into()],
        ..Default::default()
    };
    let lookup = |k: &str| (k == "FROMHOST").then(|| "h".to_owned());
    let env = environment(&c, &o, "box", "/root", &lookup).unwrap();
    assert_eq!(
        env,
        [
            "PATH=/bin",
            "HOSTNAME=box",
            "A=cli",
            "B=image",
            "FROMHOST=h",
            "HOME=/root"
        ]
    );
}

#[test]
fn users_resolve_from_passwd_and_group() {
    let passwd = "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n";
    let group = "root:x:0:\nuser:x:1000:\nwheel:x:10:user,other\n";
    let u = resolve_user("user", passwd, group).unwrap();
    assert_eq!((u.uid, u.gid, u.home.as_str()), (1000, 1000, "/home/user"));
    assert_eq!(u.groups, [10, 1000]);
    let u = resolve_user("1000:10", passwd, group).unwrap();
    assert_eq!((u.uid, u.gid), (1000, 10));
    let u = resolve_user("4242:wheel", passwd, group).unwrap();
    assert_eq!((u.uid, u.gid, u.home.as_str()), (4242, 10, "/"));
    assert!(resolve_user("nobody", passwd, group).is_err());
    assert!(resolve_user("user:nogroup", passwd, group).is_err());
    assert_eq!(resolve_user("", passwd, group).unwrap().uid, 0);
}

#[test]
fn capability_names_parse_as_docker_takes_them() {
    for name in ["NET_ADMIN", "CAP_NET_ADMIN", "net_admin", "cap_Net_Admin"] {
        assert_eq!(
            parse_capability(name).unwrap(),
            CapArg::One(Capability::NetAdmin),
            "{name}"
        );
    }
    assert_eq!(parse_capability("all").unwrap(), CapArg::All);
    assert_eq!(parse_capability("CAP_ALL").unwrap(), CapArg::All);
    assert_eq!(
        parse_capability("SYS_TTY_CONFIG").unwrap(),
        CapArg::One(Capability::SysTtyConfig)
    );
    for bad in ["bogus", "NetAdmin", "CAP_", ""] {
        let err = parse_capability(bad).unwrap_err();
        assert!(
            matches!(&err, SpecError::UnknownCapability(n) if n == bad),
            "{err}"
        );
    }
    // Every capability of the ALL table parses back from its kernel name.
    for c in ALL_CAPS {
        assert_eq!(
            parse_capability(&format!("CAP_{c}")).unwrap(),
            CapArg::One(c)
        );
    }
}

#[test]
fn capabilities_add_and_drop() {
    let caps = capabilities(&["net_admin".into()], &["CAP_KILL".into()]).unwrap();
    assert!(caps.contains(&Capability::NetAdmin));
    assert!(!caps.contains(&Capability::Kill));
    assert!(capabilities(&[], &["ALL".into()]).unwrap().is_empty());
    assert_eq!(capabilities(&["ALL".into()], &[]).unwrap().len(), 41);
    assert!(matches!(
        capabilities(&["bogus".into()], &[]),
        Err(SpecError::UnknownCapability(_))
    ));
}

fn context(rootless: bool) -> SpecContext {
    SpecContext {
        rootfs: PathBuf::from("rootfs"),
        etc_files: vec![(PathBuf::from("/run/x/hosts"), "/etc/hosts")],
        hostname: "box".into(),
        cgroups_path: "/skiff/r1".into(),
        rootless,
        tty_gid_mapped: true,
        devices: Vec::new(),
    }
}

fn root_user() -> User {
    User {
        uid: 0,
        gid: 0,
        groups: vec![0],
        home: "/root".into(),
    }
}

fn destinations(spec: &Spec) -> Vec<String> {
    spec.mounts()
        .iter()
        .flatten()
        .map(|m| m.destination().display().to_string())
        .collect()
}

#[test]
fn built_spec_has_docker_defaults() {
    let options = RunOptions {
        volumes: vec![Volume::parse("/host:/data:ro").unwrap()],
        tmpfs: vec!["/scratch:size=1m".into()],
        ..Default::default()
    };
    let spec = build(
        vec!["sh".into()],
        vec!["PATH=/bin".into()],
        "/",
        &root_user(),
        &options,
        &context(false),
    )
    .unwrap();
    let process = spec.process().as_ref().unwrap();
    let caps = process.capabilities().as_ref().unwrap();
    let default: Capabilities = DEFAULT_CAPS.into_iter().collect();
    assert_eq!(caps.bounding().as_ref(), Some(&default));
    assert_eq!(caps.effective().as_ref(), Some(&default));
    assert_eq!(caps.permitted().as_ref(), Some(&default));
    assert_eq!(caps.inheritable().as_ref(), Some(&Capabilities::new()));
    assert_eq!(caps.ambient().as_ref(), Some(&Capabilities::new()));
    // Off as in docker, and absent rather than false (libcontainer 0.7 treats any value as
    // a reason to load seccomp late).
    assert_eq!(process.no_new_privileges(), None);
    assert_eq!(process.args().as_deref(), Some(&["sh".to_owned()][..]));
    // Nothing of oci-spec's example config leaks in.
    assert_eq!(process.rlimits(), &None);
    assert_eq!(spec.annotations(), &None);
    let linux = spec.linux().as_ref().unwrap();
    // As root, the device cgroup denies everything but the standard devices (libcontainer
    // allows those after this rule).
    let rules = linux
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .clone()
        .unwrap();
    assert_eq!(
        (rules[0].allow(), rules[0].to_string()),
        (false, "a *:* rwm".into())
    );
    assert_eq!(rules.len(), 1);
    assert_eq!(linux.uid_mappings(), &None);
    assert_eq!(
        linux.masked_paths().as_deref(),
        Some(&strings(&MASKED_PATHS)[..])
    );
    assert_eq!(
        linux.readonly_paths().as_deref(),
        Some(&strings(&READONLY_PATHS)[..])
    );
    let ns: Vec<_> = linux
        .namespaces()
        .iter()
        .flatten()
        .map(|n| n.typ())
        .collect();
    assert_eq!(
        ns,
        [
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Mount
        ]
    );
    assert_eq!(
        linux.cgroups_path().as_deref(),
        Some(Path::new("/skiff/r1"))
    );
    assert_eq!(
        destinations(&spec),
        [
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/shm",
            "/dev/mqueue",
            "/sys",
            "/etc/hosts",
            "/data",
            "/scratch"
        ]
    );
    let mounts = spec.mounts().as_ref().unwrap();
    assert_eq!(mounts[5].typ().as_deref(), Some("sysfs"));
    assert!(mounts[2].options().iter().flatten().any(|o| o == "gid=5"));
    assert_eq!(
        mounts[7].options().as_deref(),
        Some(&strings(&["rbind", "rprivate", "ro"])[..])
    );
    assert_eq!(
        mounts[8].options().as_deref(),
        Some(&strings(&["nosuid", "nodev", "noexec", "size=1m"])[..])
    );
    let root = spec.root().as_ref().unwrap();
    assert_eq!(
        (root.path().as_path(), root.readonly()),
        (Path::new("rootfs"), Some(false))
    );
    assert_eq!(spec.hostname().as_deref(), Some("box"));
}

#[test]
fn variants_of_the_defaults() {
    let user = User {
        uid: 1000,
        ..root_user()
    };
    let options = RunOptions {
        network: Network::None,
        tty: true,
        cap_drop: vec!["ALL".into()],
        cap_add: vec!["CAP_NET_RAW".into()],
        ..Default::default()
    };
    let spec = build(
        vec!["sh".into()],
        vec![],
        "/",
        &user,
        &options,
        &context(true),
    )
    .unwrap();
    let process = spec.process().as_ref().unwrap();
    assert_eq!(process.terminal(), Some(true));
    let caps = process.capabilities().as_ref().unwrap();
    assert_eq!(
        caps.bounding().as_ref(),
        Some(&Capabilities::from([Capability::NetRaw]))
    );
    // A non-root user starts without effective capabilities.
    assert_eq!(caps.effective().as_ref(), Some(&Capabilities::new()));
    let linux = spec.linux().as_ref().unwrap();
    assert!(
        linux
            .namespaces()
            .iter()
            .flatten()
            .any(|n| n.typ() == LinuxNamespaceType::Network)
    );
    // Rootless with its own network namespace: a real sysfs.
    assert_eq!(
        spec.mounts().as_ref().unwrap()[5].typ().as_deref(),
        Some("sysfs")
    );
    // Rootless on the host network: the host's /sys bound read-only.
    let host = build(
        vec!["sh".into()],
        vec![],
        "/",
        &user,
        &RunOptions::default(),
        &context(true),
    )
    .unwrap();
    let sys = &host.mounts().as_ref().unwrap()[5];
    assert_eq!(
        (sys.typ().as_deref(), sys.source().as_deref()),
        (Some("none"), Some(Path::new("/sys")))
    );
    let bad = RunOptions {
        tmpfs: vec!["relative".into()],
        ..Default::default()
    };
    assert!(build(vec!["sh".into()], vec![], "/", &user, &bad, &context(false)).is_err());
}

#[test]
fn no_new_privileges_privileged_devices_and_init() {
    let full = HostDevice {
        host: "/dev/full".into(),
        path: "/dev/myfull".into(),
        block: false,
        major: 1,
        minor: 7,
        mode: 0o666,
        uid: 0,
        gid: 0,
        access: "r".into(),
    };
    let ctx = SpecContext {
        devices: vec![full.clone()],
        ..context(false)
    };
    let options = RunOptions {
        no_new_privileges: true,
        init: true,
        ..Default::default()
    };
    let spec = build(vec!["sh".into()], vec![], "/", &root_user(), &options, &ctx).unwrap();
    assert_eq!(
        spec.process().as_ref().unwrap().no_new_privileges(),
        Some(true)
    );
    assert!(
        spec.annotations()
            .as_ref()
            .is_some_and(|a| a[INIT_ANNOTATION] == "true")
    );
    let linux = spec.linux().as_ref().unwrap();
    let devices = linux.devices().as_ref().unwrap();
    assert_eq!(devices[0].path(), Path::new("/dev/myfull"));
    let rules: Vec<String> = linux
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .iter()
        .flatten()
        .map(|r| format!("{} {r}", r.allow()))
        .collect();
    assert_eq!(rules, ["false a *:* rwm", "true c 1:7 r"]);

    let privileged = RunOptions {
        privileged: true,
        ..Default::default()
    };
    let spec = build(
        vec!["sh".into()],
        vec![],
        "/",
        &root_user(),
        &privileged,
        &ctx,
    )
    .unwrap();
    let caps = spec
        .process()
        .as_ref()
        .unwrap()
        .capabilities()
        .clone()
        .unwrap();
    let held = ALL_CAPS
        .iter()
        .filter(|c| held_capabilities() & (1 << cap_bit(**c)) != 0)
        .count();
    assert_eq!(caps.effective().as_ref().unwrap().len(), held);
    let linux = spec.linux().as_ref().unwrap();
    assert_eq!(linux.masked_paths(), &None);
    assert_eq!(linux.readonly_paths(), &None);
    let rules = linux
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .clone()
        .unwrap();
    assert_eq!(rules[1].to_string(), "a *:* rwm");
    let sys = &spec.mounts().as_ref().unwrap()[5];
    assert!(!sys.options().iter().flatten().any(|o| o == "ro"));

    // Rootless: the node (a bind mount), no device cgroup, and only rwm.
    let rootless = SpecContext {
        devices: vec![HostDevice {
            access: "rwm".into(),
            ..full.clone()
        }],
        ..context(true)
    };
    let spec = build(
        vec!["sh".into()],
        vec![],
        "/",
        &root_user(),
        &RunOptions::default(),
        &rootless,
    )
    .unwrap();
    let linux = spec.linux().as_ref().unwrap();
    assert_eq!(linux.devices(), &None);
    assert_eq!(linux.resources(), &None);
    assert_eq!(destinations(&spec).last().unwrap(), "/dev/myfull");
    let ro = SpecContext {
        devices: vec![full],
        ..context(true)
    };
    let err = build(
        vec!["sh".into()],
        vec![],
        "/",
        &root_user(),
        &RunOptions::default(),
        &ro,
    )
    .unwrap_err();
    assert!(err.to_string().contains("only root"), "{err}");
}

#[test]
fn add_host_signal_device_and_group_add_parse_as_docker_takes_them() {
    let ok = |a: &str| extra_host(a).unwrap();
    assert_eq!(ok("db:10.0.0.2"), ("db".into(), "10.0.0.2".into()));
    assert_eq!(ok("db=10.0.0.2"), ("db".into(), "10.0.0.2".into()));
    assert_eq!(ok("v6:::1"), ("v6".into(), "::1".into()));
    assert_eq!(ok("v6=[::1]"), ("v6".into(), "::1".into()));
    assert_eq!(ok("gw:host-gateway"), ("gw".into(), HOST_GATEWAY.into()));
    for bad in ["db", "db:", ":1.2.3.4", "db:1.2.3", "db:nowhere"] {
        assert!(extra_host(bad).is_err(), "{bad}");
    }
    use nix::sys::signal::Signal;
    for s in ["SIGQUIT", "QUIT", "quit", "3"] {
        assert_eq!(parse_signal(s).unwrap(), Signal::SIGQUIT, "{s}");
    }
    for bad in ["", "SIGNOPE", "0", "99"] {
        assert!(parse_signal(bad).is_err(), "{bad}");
    }
    let d = |a: &str| parse_device(a).unwrap();
    assert_eq!(
        d("/dev/full"),
        ("/dev/full".into(), "/dev/full".into(), "rwm".into())
    );
    assert_eq!(
        d("/dev/full:r"),
        ("/dev/full".into(), "/dev/full".into(), "r".into())
    );
    assert_eq!(
        d("/dev/full:/dev/f"),
        ("/dev/full".into(), "/dev/f".into(), "rwm".into())
    );
    assert_eq!(
        d("/dev/full:/dev/f:rw"),
        ("/dev/full".into(), "/dev/f".into(), "rw".into())
    );
    for bad in [
        "dev/full",
        "/dev/full:/x",
        "/dev/full:/dev/f:rx",
        "/dev/full:/dev/f:rr",
        "a:b:c:d",
    ] {
        assert!(parse_device(bad).is_err(), "{bad}");
    }
    let group = "root:x:0:\nwheel:x:10:\n";
    assert_eq!(
        group_add(&["wheel".into(), "4242".into()], group).unwrap(),
        [10, 4242]
    );
    assert!(matches!(
        group_add(&["nogroup".into()], group),
        Err(SpecError::UnknownGroup(g)) if g == "nogroup"
    ));
}

#[test]
fn volumes_parse() {
    let v = Volume::parse("/a:/b:ro").unwrap();
    assert!(v.read_only);
    assert!(Volume::parse("/a").is_err());
    assert!(Volume::parse("name:/b").is_err());
    assert!(Volume::parse("/a:b").is_err());
}
