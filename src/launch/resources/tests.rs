#![allow(clippy::unwrap_used)]

use oci_spec::runtime::{LinuxNamespaceType, PosixRlimitType};

use super::checks::{HostCpus, MIN_MEMORY};
use super::flags::{parse_cpus, parse_size};
use super::host::Need;
use super::ulimits::UNLIMITED;
use super::*;

fn flags() -> LimitFlags {
    LimitFlags::default()
}

fn host() -> HostCpus {
    HostCpus {
        count: 2,
        available: "0-1".into(),
    }
}

#[test]
fn sizes_parse_as_docker_ram_in_bytes() {
    assert_eq!(parse_size("64m"), Ok(64 << 20));
    assert_eq!(parse_size("64M"), Ok(64 << 20));
    assert_eq!(parse_size("64MiB"), Ok(64 << 20));
    assert_eq!(parse_size("64mb"), Ok(64 << 20));
    assert_eq!(parse_size("1g"), Ok(1 << 30));
    assert_eq!(parse_size("1.5g"), Ok(3 << 29));
    assert_eq!(parse_size("16 k"), Ok(16 << 10));
    assert_eq!(parse_size("4096"), Ok(4096));
    assert_eq!(parse_size("4096b"), Ok(4096));
    for bad in [
        "", "m", "-1", "64x", "1.g", ".5g", "64 m b", "64mm", "1..2m",
    ] {
        assert_eq!(
            parse_size(bad),
            Err(format!("invalid size: '{bad}'")),
            "{bad}"
        );
    }
}

#[test]
fn cpus_parse_as_rationals() {
    assert_eq!(parse_cpus("1.5"), Ok(1_500_000_000));
    assert_eq!(parse_cpus("0.5"), Ok(500_000_000));
    assert_eq!(parse_cpus(".25"), Ok(250_000_000));
    assert_eq!(parse_cpus("2"), Ok(2_000_000_000));
    assert_eq!(parse_cpus("3/2"), Ok(1_500_000_000));
    assert_eq!(parse_cpus("-1"), Ok(-1_000_000_000));
    assert_eq!(
        parse_cpus("0.0000000001"),
        Err("value is too precise".into())
    );
    assert_eq!(
        parse_cpus("abc"),
        Err("failed to parse abc as a rational number".into())
    );
}

#[test]
fn flags_parse_with_docker_messages() {
    let l = Limits::from_flags(&LimitFlags {
        memory: Some("64m".into()),
        memory_swap: Some("-1".into()),
        cpus: Some("1.5".into()),
        cpu_shares: Some("512".into()),
        cpuset_cpus: Some("0".into()),
        pids_limit: Some("32".into()),
        ulimits: vec![
            "nofile=1024:2048".into(),
            "nproc=100".into(),
            "nofile=10".into(),
        ],
        shm_size: Some("32m".into()),
        ..flags()
    })
    .unwrap();
    assert_eq!(l.memory, Some(64 << 20));
    assert_eq!(l.memory_swap, Some(-1));
    assert_eq!(l.nano_cpus, Some(1_500_000_000));
    assert_eq!(l.cpu_shares, Some(512));
    assert_eq!(l.pids_limit, Some(32));
    assert_eq!(l.shm_size, Some(32 << 20));
    // The last --ulimit of a name wins.
    assert_eq!(
        l.ulimits,
        [
            Ulimit {
                name: "nproc".into(),
                soft: 100,
                hard: 100
            },
            Ulimit {
                name: "nofile".into(),
                soft: 10,
                hard: 10
            }
        ]
    );
    let err = Limits::from_flags(&LimitFlags {
        memory: Some("lots".into()),
        ..flags()
    })
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid argument \"lots\" for \"-m, --memory\" flag: invalid size: 'lots'"
    );
    let err = Limits::from_flags(&LimitFlags {
        pids_limit: Some("x".into()),
        ..flags()
    })
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid argument \"x\" for \"--pids-limit\" flag: strconv.ParseInt: parsing \"x\": \
         invalid syntax"
    );
    // Zero and unlimited values are no limit; shares are clamped.
    let l = Limits::from_flags(&LimitFlags {
        memory: Some("0".into()),
        pids_limit: Some("-1".into()),
        cpu_shares: Some("1".into()),
        shm_size: Some("0".into()),
        ..flags()
    })
    .unwrap();
    assert_eq!(
        l,
        Limits {
            cpu_shares: Some(2),
            ..Limits::default()
        }
    );
    assert_eq!(
        Limits::from_flags(&LimitFlags {
            shm_size: Some("-1".into()),
            ..flags()
        }),
        Err(LimitError::InvalidFlag {
            flag: "--shm-size",
            value: "-1".into(),
            reason: "invalid size: '-1'".into()
        })
    );
}

#[test]
fn ulimits_parse_as_docker_parses_them() {
    assert_eq!(
        Ulimit::parse("nofile=1024:2048").unwrap(),
        Ulimit {
            name: "nofile".into(),
            soft: 1024,
            hard: 2048
        }
    );
    assert_eq!(Ulimit::parse("core=-1").unwrap().hard, UNLIMITED);
    let msg = |arg: &str| Ulimit::parse(arg).unwrap_err().to_string();
    assert_eq!(
        msg("nofile"),
        "invalid argument \"nofile\" for \"--ulimit\" flag: invalid ulimit argument: nofile"
    );
    assert!(msg("as=1").ends_with("invalid ulimit type: as"));
    assert!(
        msg("nofile=2048:1024")
            .ends_with("ulimit soft limit must be less than or equal to hard limit: 2048 > 1024")
    );
    assert!(msg("nofile=1:2:3").contains("too many limit value arguments"));
    assert!(msg("nofile=x").contains("invalid ulimit soft value x"));
}

#[test]
fn docker_daemon_checks() {
    let check = |l: Limits| l.validate_against(&host());
    let mem = |m: i64| Limits {
        memory: Some(m),
        ..Limits::default()
    };
    assert_eq!(check(mem(4 << 20)), Err(LimitError::MemoryTooSmall));
    assert_eq!(
        LimitError::MemoryTooSmall.to_string(),
        "Minimum memory limit allowed is 6MB"
    );
    assert_eq!(check(mem(MIN_MEMORY)), Ok(()));
    assert_eq!(
        check(Limits {
            memory_swap: Some(32 << 20),
            ..mem(64 << 20)
        }),
        Err(LimitError::SwapBelowMemory)
    );
    assert_eq!(
        check(Limits {
            memory_swap: Some(-1),
            ..mem(64 << 20)
        }),
        Ok(())
    );
    assert_eq!(
        check(Limits {
            memory_swap: Some(64 << 20),
            ..Limits::default()
        }),
        Err(LimitError::SwapWithoutMemory)
    );
    assert_eq!(
        check(Limits {
            memory_reservation: Some(128 << 20),
            ..mem(64 << 20)
        }),
        Err(LimitError::MemoryBelowReservation)
    );
    assert_eq!(
        check(Limits {
            memory_reservation: Some(1 << 20),
            ..Limits::default()
        }),
        Err(LimitError::ReservationTooSmall)
    );
    let cpus = |nano: i64| Limits {
        nano_cpus: Some(nano),
        ..Limits::default()
    };
    assert_eq!(check(cpus(2_000_000_000)), Ok(()));
    let err = check(cpus(2_500_000_000)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "range of CPUs is from 0.01 to 2.00, as there are only 2 CPUs available"
    );
    assert!(check(cpus(-1_000_000_000)).is_err());
    let cpuset = |s: &str| Limits {
        cpuset_cpus: Some(s.into()),
        ..Limits::default()
    };
    assert_eq!(check(cpuset("0-1")), Ok(()));
    assert_eq!(check(cpuset("1,0")), Ok(()));
    assert_eq!(
        check(cpuset("0-3")).unwrap_err().to_string(),
        "Requested CPUs are not available - requested 0-3, available: 0-1"
    );
    assert_eq!(
        check(cpuset("0-x")).unwrap_err().to_string(),
        "Invalid value 0-x for cpuset cpus"
    );
}

#[test]
fn resources_are_docker_s() {
    let l = Limits {
        memory: Some(16 << 20),
        nano_cpus: Some(500_000_000),
        cpu_shares: Some(512),
        cpuset_cpus: Some("0".into()),
        pids_limit: Some(8),
        ..Limits::default()
    };
    let r = l.resources(true).unwrap().unwrap();
    let m = r.memory().as_ref().unwrap();
    assert_eq!(m.limit(), Some(16 << 20));
    // docker's default swap: twice the memory, where swap is accounted.
    assert_eq!(m.swap(), Some(32 << 20));
    let c = r.cpu().as_ref().unwrap();
    assert_eq!((c.quota(), c.period()), (Some(50_000), Some(100_000)));
    assert_eq!(c.shares(), Some(512));
    assert_eq!(c.cpus().as_deref(), Some("0"));
    assert_eq!(r.pids().as_ref().unwrap().limit(), 8);
    assert_eq!(r.devices(), &None);
    let no_swap = l.resources(false).unwrap().unwrap();
    assert_eq!(no_swap.memory().as_ref().unwrap().swap(), None);
    assert_eq!(Limits::default().resources(true).unwrap(), None);
    // --ulimit and --shm-size need no cgroup.
    let rlimits_only = Limits {
        ulimits: vec![Ulimit::parse("nofile=10").unwrap()],
        shm_size: Some(1 << 20),
        ..Limits::default()
    };
    assert!(!rlimits_only.needs_cgroup());
    assert!(rlimits_only.needs().is_empty());
}

fn need(flag: &'static str, controller: &'static str, v1_file: Option<&'static str>) -> Need {
    Need {
        flag,
        controller,
        v1_file,
    }
}

#[test]
fn v1_refuses_a_missing_hierarchy_or_file() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("memory")).unwrap();
    std::fs::write(root.path().join("memory/memory.limit_in_bytes"), "").unwrap();
    let joined = vec!["memory".to_owned()];
    let mem = need("--memory", "memory", Some("memory.limit_in_bytes"));
    assert_eq!(check_v1(root.path(), &joined, &[mem]), Ok(()));
    let err = check_v1(root.path(), &joined, &[need("--pids-limit", "pids", None)])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(
            "--pids-limit cannot be enforced: the cgroup v1 pids controller is not mounted at"
        ),
        "{err}"
    );
    let err = check_v1(
        root.path(),
        &joined,
        &[need(
            "--memory-swap",
            "memory",
            Some("memory.memsw.limit_in_bytes"),
        )],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("swapaccount=1"), "{err}");
}

#[test]
fn v2_refuses_a_controller_not_available() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("cgroup.controllers"), "hugetlb\n").unwrap();
    std::fs::write(root.path().join("cgroup.subtree_control"), "").unwrap();
    let mem = need("--memory", "memory", None);
    let err = check_v2(root.path(), Path::new("/skiff/x"), &[mem], true)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(
            "--memory cannot be enforced: the memory controller is not available in \
             skiff's own cgroup (rootless, cgroup v2)"
        ),
        "{err}"
    );
    assert!(err.contains("it has: hugetlb"), "{err}");
    assert!(err.contains("or run skiff as root"), "{err}");
    // Available: enabled in subtree_control of the deepest existing ancestor.
    std::fs::create_dir(root.path().join("skiff")).unwrap();
    std::fs::write(root.path().join("skiff/cgroup.controllers"), "memory pids").unwrap();
    std::fs::write(root.path().join("skiff/cgroup.subtree_control"), "").unwrap();
    assert_eq!(
        check_v2(root.path(), Path::new("/skiff/x"), &[mem], false),
        Ok(())
    );
    assert_eq!(
        std::fs::read_to_string(root.path().join("skiff/cgroup.subtree_control")).unwrap(),
        "+memory"
    );
}

#[test]
fn the_spec_gets_rlimits_shm_and_cgroup_mount() {
    let mut spec = Spec::default();
    let limits = Limits {
        ulimits: vec![Ulimit::parse("nofile=1024:2048").unwrap()],
        shm_size: Some(32 << 20),
        ..Limits::default()
    };
    let rl = rlimits(&limits.ulimits).unwrap();
    assert_eq!(rl[0].typ(), PosixRlimitType::RlimitNofile);
    assert_eq!((rl[0].soft(), rl[0].hard()), (1024, 2048));
    set_shm_size(&mut spec, 32 << 20);
    mount_cgroups(&mut spec, &Cgroups::V2(CGROUP_ROOT.into())).unwrap();
    let mounts = spec.mounts().as_ref().unwrap();
    let shm = mounts
        .iter()
        .find(|m| m.destination() == Path::new("/dev/shm"))
        .unwrap();
    assert!(
        shm.options()
            .iter()
            .flatten()
            .any(|o| o == &format!("size={}", 32 << 20))
    );
    let sys = mounts
        .iter()
        .position(|m| m.destination() == Path::new("/sys"))
        .unwrap();
    assert_eq!(mounts[sys + 1].typ().as_deref(), Some("cgroup"));
    assert!(
        mounts[sys + 1]
            .options()
            .iter()
            .flatten()
            .any(|o| o == "ro")
    );
    let linux = spec.linux().as_ref().unwrap();
    assert!(
        linux
            .namespaces()
            .iter()
            .flatten()
            .any(|n| n.typ() == LinuxNamespaceType::Cgroup)
    );
}
