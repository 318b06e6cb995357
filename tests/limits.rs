//! Resource limits end to end (`--memory`, `--memory-swap`, `--cpus`, `--cpu-shares`,
//! `--cpuset-cpus`, `--pids-limit`, `--ulimit`, `--shm-size`): real containers from the
//! busybox fixture, as root and as the unprivileged test user. The cgroup files are read at
//! the layout the host has (v1 hierarchies or the v2 unified one), so the tests hold on either.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use common::run::{RunEnv, cgroup_dirs, run_id_from_cgroup};
use skiff_test_rig::{require_root, rootless_test};

/// A private skiff environment with a registry holding the busybox fixture; every run asserts
/// that it left no run directory.
fn busybox_env() -> RunEnv {
    RunEnv::new().checking_runs()
}

/// Runs expecting skiff's own failure (125) before anything started; returns stderr.
fn refused(env: &RunEnv, opts: &[&str]) -> String {
    let (code, stdout, stderr) = env.sh_status(opts, "echo started");
    assert_eq!(code, 125, "skiff run {opts:?}: {stdout}\n{stderr}");
    assert!(!stdout.contains("started"), "{stdout}");
    stderr
}

/// The host's cgroup layout: v2 when /sys/fs/cgroup is the unified hierarchy.
fn unified() -> bool {
    nix::sys::statfs::statfs("/sys/fs/cgroup")
        .map(|s| s.filesystem_type().0 == 0x6367_7270)
        .unwrap()
}

/// The container's cgroup file for a v1 `controller` (`memory`) and a v1/v2 file name, at
/// /sys/fs/cgroup as docker mounts it.
fn cg(controller: &str, v1: &str, v2: &str) -> String {
    if unified() {
        format!("/sys/fs/cgroup/{v2}")
    } else {
        format!("/sys/fs/cgroup/{controller}/{v1}")
    }
}

#[test]
fn limits_read_back_in_the_container_cgroups() {
    require_root();
    let env = busybox_env();
    let files = [
        cg("memory", "memory.limit_in_bytes", "memory.max"),
        cg("memory", "memory.soft_limit_in_bytes", "memory.low"),
        cg("pids", "pids.max", "pids.max"),
        cg("cpu", "cpu.cfs_quota_us", "cpu.max"),
        cg("cpu", "cpu.cfs_period_us", "cpu.max"),
        cg("cpu", "cpu.shares", "cpu.weight"),
        cg("cpuset", "cpuset.cpus", "cpuset.cpus"),
    ];
    let script = files
        .iter()
        .map(|f| format!("cat {f}"))
        .collect::<Vec<_>>()
        .join("; ");
    let out = env.sh(
        &[
            "--memory",
            "16m",
            "--memory-reservation",
            "8m",
            "--pids-limit",
            "8",
            "--cpus",
            "0.5",
            "--cpu-shares",
            "512",
            "--cpuset-cpus",
            "0",
        ],
        &script,
    );
    let lines: Vec<&str> = out.lines().collect();
    if unified() {
        // cpu.max is "quota period"; shares 512 are weight 59 in libcontainer's conversion.
        assert_eq!(
            lines,
            [
                "16777216",
                "8388608",
                "8",
                "50000 100000",
                "50000 100000",
                "59",
                "0"
            ]
        );
    } else {
        assert_eq!(
            lines,
            ["16777216", "8388608", "8", "50000", "100000", "512", "0"]
        );
    }
}

#[test]
fn memory_swap_defaults_to_twice_the_memory_and_follows_the_flag() {
    require_root();
    let env = busybox_env();
    let file = cg("memory", "memory.memsw.limit_in_bytes", "memory.swap.max");
    let read = |opts: &[&str]| env.sh(opts, &format!("cat {file}")).trim().to_owned();
    // v1 shows memory+swap, v2 the swap alone (docker's value minus the memory).
    let (twice, same, unlimited) = if unified() {
        ("16777216", "0", "max")
    } else {
        ("33554432", "16777216", "9223372036854771712")
    };
    assert_eq!(read(&["--memory", "16m"]), twice);
    assert_eq!(read(&["--memory", "16m", "--memory-swap", "16m"]), same);
    assert_eq!(read(&["--memory", "16m", "--memory-swap", "-1"]), unlimited);
}

#[test]
fn the_cgroup_filesystem_is_read_only_and_the_container_s_own() {
    require_root();
    let env = busybox_env();
    let pids = cg("pids", "pids.max", "pids.max");
    let (code, stdout, stderr) = env.sh_status(
        &["--pids-limit", "8"],
        &format!("echo 100 > {pids} || echo refused; cat {pids}; ls /sys/fs/cgroup | grep -c ."),
    );
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stderr.contains("Read-only file system"), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(&lines[..2], ["refused", "8"], "{stdout}");
    let entries: usize = lines[2].parse().unwrap();
    assert!(entries > 1, "/sys/fs/cgroup is empty: {stdout}");
    // A v1 hierarchy the container has no cgroup in (name=systemd) would show the host's
    // whole tree: it is masked. (With a limit: on a hybrid host a run without one has its
    // cgroup on the unified hierarchy, and sees cgroup2, as on a v2 host.)
    if !unified() && std::path::Path::new("/sys/fs/cgroup/systemd").is_dir() {
        let out = env.sh(
            &["--pids-limit", "100"],
            "ls /sys/fs/cgroup/systemd | wc -l; ls /sys/fs/cgroup/memory | grep -c .",
        );
        let counts: Vec<&str> = out.lines().collect();
        assert_eq!(counts[0], "0", "{out}");
        assert_ne!(counts[1], "0", "{out}");
    }
    // Without a limit (or on a v2 host): the container's own cgroup2, read-only.
    let (code, stdout, stderr) = env.sh_status(
        &[],
        "echo 1 > /sys/fs/cgroup/cgroup.procs || echo refused; \
         test -f /sys/fs/cgroup/cgroup.controllers && echo cgroup2; grep -x 0::/ /proc/self/cgroup",
    );
    if unified() || std::path::Path::new("/sys/fs/cgroup/unified").is_dir() {
        assert_eq!(code, 0, "{stdout}\n{stderr}");
        assert!(stderr.contains("Read-only file system"), "{stderr}");
        assert_eq!(stdout, "refused\ncgroup2\n0::/\n", "{stdout}");
    }
}

#[test]
fn over_its_memory_limit_a_container_is_oom_killed_with_137() {
    require_root();
    let env = busybox_env();
    // busybox tail keeps a line it has not finished in memory: /dev/zero has no newline.
    let (code, stdout, stderr) = env.sh_status(
        &["--memory", "16m", "--memory-swap", "16m"],
        "cat /proc/self/cgroup; exec tail /dev/zero",
    );
    assert_eq!(code, 137, "{stdout}\n{stderr}");
    if let Some(id) = run_id_from_cgroup(&stdout) {
        assert!(
            cgroup_dirs(&id).is_empty(),
            "cgroups left: {:?}",
            cgroup_dirs(&id)
        );
    } else {
        assert!(unified(), "no run id in {stdout}");
    }
    // Under the limit the same payload runs to the end.
    let out = env.sh(
        &["--memory", "64m", "--memory-swap", "64m"],
        "head -c 8m /dev/zero | tail | wc -c",
    );
    assert_eq!(out.trim(), "8388608");
}

#[test]
fn a_pids_limit_stops_forks_and_the_container_exits_cleanly() {
    require_root();
    let env = busybox_env();
    let (code, stdout, stderr) = env.sh_status(
        &["--pids-limit", "8"],
        "cat /proc/self/cgroup; sh -c 'i=0; while [ $i -lt 16 ]; do sleep 2 & i=$((i+1)); done; \
         wait'; echo survived",
    );
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.ends_with("survived\n"), "{stdout}");
    assert!(
        stderr.contains("Resource temporarily unavailable") || stderr.contains("can't fork"),
        "{stderr}"
    );
    if let Some(id) = run_id_from_cgroup(&stdout) {
        assert!(cgroup_dirs(&id).is_empty(), "{:?}", cgroup_dirs(&id));
    }
}

/// `--ulimit` and `--shm-size` (and the default /dev/shm of 64m), as root or rootless.
fn ulimits_and_shm_size() {
    let env = busybox_env();
    let out = env.sh(
        &[
            "--ulimit",
            "nofile=1024:2048",
            "--ulimit",
            "nproc=100",
            "--shm-size",
            "32m",
        ],
        "ulimit -n; ulimit -Hn; ulimit -u; df -k /dev/shm | tail -n 1",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..3], ["1024", "2048", "100"], "{out}");
    assert_eq!(lines[3].split_whitespace().nth(1), Some("32768"), "{out}");
    let out = env.sh(&[], "df -k /dev/shm | tail -n 1");
    assert_eq!(out.split_whitespace().nth(1), Some("65536"), "{out}");
    // A hard limit above what skiff may set is refused, saying why.
    let err = refused(&env, &["--ulimit", "nofile=1024:999999999"]);
    assert!(
        err.contains("--ulimit nofile=999999999: the hard limit 999999999 is above"),
        "{err}"
    );
}

#[test]
fn ulimits_and_shm_size_as_root() {
    require_root();
    ulimits_and_shm_size();
}

rootless_test!(
    rootless_ulimits_and_shm_size,
    ulimits_and_shm_size,
    env = common::rootless_env
);

/// Rootless, a cgroup limit is enforced where the host delegates the controller to the user
/// (cgroup v2), and refused with why and what to do where it does not: never ignored.
fn rootless_cgroup_limits_are_enforced_or_refused() {
    let env = busybox_env();
    let (code, stdout, stderr) =
        env.sh_status(&["--pids-limit", "8"], "cat /sys/fs/cgroup/pids.max");
    if code == 0 {
        assert_eq!(stdout.trim(), "8", "{stderr}");
        return;
    }
    assert_eq!(code, 125, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("--pids-limit cannot be enforced: the pids controller"),
        "{stderr}"
    );
    assert!(stderr.contains("rootless"), "{stderr}");
    assert!(stderr.contains("or run skiff as root"), "{stderr}");
    let err = refused(&env, &["--memory", "64m"]);
    assert!(
        err.contains("--memory cannot be enforced: the memory controller"),
        "{err}"
    );
}

rootless_test!(
    rootless_cgroup_limits_are_refused_where_not_delegated,
    rootless_cgroup_limits_are_enforced_or_refused,
    env = common::rootless_env
);

/// skiff's answer to `skiff run FLAGS busybox true` when it refuses the flags (exit 125): no
/// image is pulled, nothing runs.
fn refusal(env: &common::Env, flags: &[&str]) -> String {
    let mut args = vec!["run", "--rm"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["127.0.0.1:9/none:1", "true"]);
    env.fails(&args)
}

#[test]
fn invalid_limits_are_refused_with_docker_s_messages() {
    let env = common::Env::new();
    let cases: [(&[&str], &str); 12] = [
        (&["--memory", "4m"], "Minimum memory limit allowed is 6MB"),
        (
            &["-m", "lots"],
            "invalid argument \"lots\" for \"-m, --memory\" flag: invalid size: 'lots'",
        ),
        (
            &["--memory", "64m", "--memory-swap", "32m"],
            "Minimum memoryswap limit should be larger than memory limit, see usage",
        ),
        (
            &["--memory-swap", "64m"],
            "You should always set the Memory limit when using Memoryswap limit, see usage",
        ),
        (
            &["--memory-reservation", "1m"],
            "Minimum memory reservation allowed is 6MB",
        ),
        (
            &["--memory", "16m", "--memory-reservation", "32m"],
            "Minimum memory limit can not be less than memory reservation limit, see usage",
        ),
        (&["--cpus", "100000"], "range of CPUs is from 0.01 to "),
        (
            &["--cpus", "x"],
            "invalid argument \"x\" for \"--cpus\" flag: failed to parse x as a rational number",
        ),
        (
            &["--cpuset-cpus", "0-1023"],
            "Requested CPUs are not available - requested 0-1023, available: ",
        ),
        (&["--cpuset-cpus", "a"], "Invalid value a for cpuset cpus"),
        (
            &["--ulimit", "nofile=2048:1024"],
            "ulimit soft limit must be less than or equal to hard limit: 2048 > 1024",
        ),
        (
            &["--ulimit", "bogus=1"],
            "invalid argument \"bogus=1\" for \"--ulimit\" flag: invalid ulimit type: bogus",
        ),
    ];
    for (flags, message) in cases {
        let err = refusal(&env, flags);
        assert!(err.contains(message), "{flags:?}: {err}");
    }
    let err = refusal(&env, &["--cpus", "100000"]);
    assert!(err.contains(" CPUs available"), "{err}");
}
