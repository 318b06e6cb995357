//! `skiff run`'s security and process flags on real containers (busybox fixture and the Debian
//! image), as root, as the unprivileged test user, and as a user with no subordinate id range:
//! no_new_privileges off by default, setuid binaries, --add-host, --group-add, --stop-signal,
//! --stop-timeout, --init, --privileged, --device, --cap-add ALL.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::run::RunEnv;
use skiff_test_rig::{Compression, Format, busybox, require_root, rootless_test};

/// A skiff environment with a registry holding the busybox fixture (no `Cmd`); runs are
/// `skiff run --rm -q`. The Debian image is pushed when asked ([`RunEnv::debian`]).
fn busybox_env() -> RunEnv {
    let image = busybox::builder(Format::Oci, Compression::Gzip)
        .unwrap()
        .build()
        .unwrap();
    RunEnv::with(common::Env::new(), &image).quiet()
}

/// Starts `skiff run --rm -q OPTS busybox sh -c SCRIPT`; returns once the payload printed
/// `ready`.
fn spawn_ready(
    env: &RunEnv,
    opts: &[&str],
    script: &str,
) -> (Child, BufReader<std::process::ChildStdout>) {
    let img = env.busybox();
    let mut args = vec!["run", "--rm", "-q"];
    args.extend_from_slice(opts);
    args.extend_from_slice(&[&img, "sh", "-c", script]);
    env.spawn_ready(&args)
}

fn sigterm(child: &Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
}

fn rest(mut stdout: BufReader<std::process::ChildStdout>) -> String {
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    rest
}

// no_new_privileges and setuid binaries (Debian image).

/// setuid-root `passwd` reads /etc/shadow for user nobody: it works unless no_new_privileges
/// is set; NoNewPrivs reads back 0 by default, 1 with the flag.
fn setuid_binaries_work_without_no_new_privileges() {
    let env = busybox_env();
    let debian = env.debian(Compression::Gzip);
    let nobody = ["-u", "65534:65534"];
    let out = env.sh_in(
        &debian,
        &nobody,
        "grep NoNewPrivs /proc/self/status; stat -c '%U %a' /usr/bin/passwd; \
         cat /etc/shadow >/dev/null 2>&1 || echo shadow-unreadable; passwd -S",
    );
    // nobody cannot read /etc/shadow itself; setuid-root passwd can, and finds the account
    // locked there (L).
    assert!(
        out.starts_with("NoNewPrivs:\t0\nroot 4755\nshadow-unreadable\nnobody L "),
        "{out}"
    );

    let mut args = vec!["--security-opt", "no-new-privileges"];
    args.extend_from_slice(&nobody);
    args.extend_from_slice(&[
        &debian,
        "sh",
        "-c",
        "grep NoNewPrivs /proc/self/status; passwd -S",
    ]);
    let (code, out, err) = env.run(&args);
    // No privileges gained: passwd cannot read /etc/shadow and only sees the x of /etc/passwd
    // (P).
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("NoNewPrivs:\t1\nnobody P"), "{out}");
    // Root in the container sees the flag too.
    assert_eq!(
        env.sh_in(
            &debian,
            &["--security-opt", "no-new-privileges=true"],
            "grep NoNewPrivs /proc/self/status"
        ),
        "NoNewPrivs:\t1\n"
    );
    env.assert_no_runs_left();
}

#[test]
fn setuid_binaries_as_root() {
    require_root();
    setuid_binaries_work_without_no_new_privileges();
}

rootless_test!(
    setuid_binaries_rootless,
    setuid_binaries_work_without_no_new_privileges,
    env = common::rootless_env
);

// Rootless with no set-up: a user without /etc/subuid and /etc/subgid ranges.

fn runs_without_a_subordinate_range() {
    let env = busybox_env();
    let img = env.busybox();
    assert_eq!(env.run(&[&img, "true"]).0, 0);
    assert_eq!(env.run(&[&img, "sh", "-c", "exit 3"]).0, 3);
    assert_eq!(env.run(&[&img, "no-such-command"]).0, 127);
    // Only the caller is mapped, as root, with no supplementary groups.
    assert_eq!(
        env.sh(&[], "id"),
        "uid=0(root) gid=0(root) groups=0(root)\n"
    );
    assert_eq!(env.sh(&["-u", "0"], "id -u"), "0\n");
    assert_eq!(
        env.sh(
            &[],
            "echo hi > /tmp/f && cat /tmp/f && mkdir -p /a/b && echo ok > /a/b/c && cat /a/b/c"
        ),
        "hi\nok\n"
    );
    // A user the namespace cannot represent is refused, naming what to do.
    let err = env.refused(&["-u", "1000", &img, "true"]);
    assert!(
        err.contains("user 1000 is not mapped") && err.contains("/etc/subuid"),
        "{err}"
    );
    let err = env.refused(&["--group-add", "10", &img, "true"]);
    assert!(
        err.contains("--group-add 10") && err.contains("/etc/subgid"),
        "{err}"
    );

    // Debian: its files of other owners appear as the mapped user; apt's user is refused.
    let debian = env.debian(Compression::Gzip);
    let out = env.sh_in(
        &debian,
        &[],
        "cat /etc/debian_version; id; stat -c '%U:%G' /etc/shadow /usr/bin/chage; \
         echo x > /root/f && cat /root/f",
    );
    assert!(out.starts_with("12."), "{out}");
    assert!(
        out.contains("uid=0(root) gid=0(root) groups=0(root)\nroot:root\nroot:root\nx\n"),
        "{out}"
    );
    let err = env.refused(&["-u", "_apt", &debian, "true"]);
    assert!(err.contains("user _apt is not mapped"), "{err}");
    env.assert_no_runs_left();
}

rootless_test!(
    no_subordinate_range_rootless,
    runs_without_a_subordinate_range,
    env = common::rootless_env,
    user = skiff_test_rig::rootless::nosub_user
);

// --add-host, --group-add.

fn add_host_and_group_add() {
    let env = busybox_env();
    let hosts = env.sh(
        &[
            "--add-host",
            "db:10.1.2.3",
            "--add-host",
            "v6=[::1]",
            "--add-host",
            "gw:host-gateway",
        ],
        "cat /etc/hosts",
    );
    assert!(
        hosts.contains("10.1.2.3\tdb\n::1\tv6\n127.0.0.1\tgw\n"),
        "{hosts}"
    );
    let err = env.refused(&["--add-host", "db:nowhere", &env.busybox(), "true"]);
    assert!(
        err.contains("invalid --add-host \"db:nowhere\"") && err.contains("IP address"),
        "{err}"
    );

    // Supplementary groups: a name of the image's /etc/group and a bare gid.
    assert_eq!(
        env.sh(&["--group-add", "nogroup", "--group-add", "4242"], "id -G"),
        "0 4242 65534\n"
    );
    assert_eq!(
        env.sh(&["-u", "1000:1000", "--group-add", "10"], "id -G"),
        "1000 10\n"
    );
    let err = env.refused(&["--group-add", "nosuchgroup", &env.busybox(), "true"]);
    assert!(err.contains("unable to find group nosuchgroup"), "{err}");
    env.assert_no_runs_left();
}

#[test]
fn add_host_and_group_add_as_root() {
    require_root();
    add_host_and_group_add();
}

rootless_test!(
    add_host_and_group_add_rootless,
    add_host_and_group_add,
    env = common::rootless_env
);

// --stop-signal, --stop-timeout, and the image's StopSignal.

fn stop_signal_and_timeout() {
    let env = busybox_env();
    // SIGTERM to skiff becomes the stop signal.
    let (child, stdout) = spawn_ready(
        &env,
        &["--stop-signal", "USR1"],
        "trap 'echo got USR1; exit 5' USR1; trap 'echo got TERM; exit 6' TERM; echo ready; \
         while true; do sleep 0.05; done",
    );
    sigterm(&child);
    let status = child.wait_with_output().unwrap().status;
    assert_eq!(
        (status.code(), rest(stdout).as_str()),
        (Some(5), "got USR1\n")
    );

    // A payload that ignores it is killed after the stop timeout (137).
    let (mut child, _stdout) = spawn_ready(
        &env,
        &["--stop-timeout", "1"],
        "trap '' TERM; echo ready; while true; do sleep 0.05; done",
    );
    let start = Instant::now();
    sigterm(&child);
    let status = child.wait().unwrap();
    let took = start.elapsed();
    assert_eq!(status.code(), Some(137));
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );

    // The image's StopSignal is the default.
    let image = busybox::builder(Format::Oci, Compression::Gzip)
        .unwrap()
        .config_field("StopSignal", serde_json::json!("SIGQUIT"))
        .build()
        .unwrap();
    env.push("quits", "1", &image);
    let quits = env.image("quits:1");
    let mut child = env
        .cmd(&[
            "run",
            "--rm",
            "-q",
            &quits,
            "sh",
            "-c",
            "trap 'echo got QUIT; exit 9' QUIT; echo ready; while true; do sleep 0.05; done",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    sigterm(&child);
    assert_eq!(child.wait().unwrap().code(), Some(9));
    assert_eq!(rest(stdout), "got QUIT\n");

    let err = env.refused(&["--stop-signal", "SIGNOPE", &env.busybox(), "true"]);
    assert!(err.contains("invalid signal \"SIGNOPE\""), "{err}");
    env.assert_no_runs_left();
}

#[test]
fn stop_signal_and_timeout_as_root() {
    require_root();
    stop_signal_and_timeout();
}

rootless_test!(
    stop_signal_and_timeout_rootless,
    stop_signal_and_timeout,
    env = common::rootless_env
);

// --init.

fn init_reaps_and_forwards() {
    let env = busybox_env();
    // PID 1 is skiff's init; the payload is its child.
    assert_eq!(
        env.sh(
            &["--init"],
            "cat /proc/1/comm; echo $$; cat /proc/$PPID/comm"
        ),
        "skiff-init\n2\nskiff-init\n"
    );
    // Orphans are reparented to PID 1 and reaped: no zombie is left.
    let ps = env.sh(
        &["--init"],
        "(sleep 0.1 &); (sleep 0.1 &); sleep 0.6; ps -o pid,ppid,stat,comm",
    );
    assert!(!ps.lines().any(|l| l.contains(" Z")), "zombies:\n{ps}");
    // Exit codes pass through, 128+N after signal N.
    let img = env.busybox();
    assert_eq!(env.run(&["--init", &img, "sh", "-c", "exit 7"]).0, 7);
    assert_eq!(
        env.run(&["--init", &img, "sh", "-c", "kill -KILL $$"]).0,
        137
    );
    assert_eq!(env.run(&["--init", &img, "no-such-command"]).0, 127);
    // Signals reach the payload through the init.
    let (child, stdout) = spawn_ready(
        &env,
        &["--init"],
        "trap 'echo got TERM; exit 42' TERM; echo ready; while true; do sleep 0.05; done",
    );
    sigterm(&child);
    let status = child.wait_with_output().unwrap().status;
    assert_eq!(
        (status.code(), rest(stdout).as_str()),
        (Some(42), "got TERM\n")
    );
    env.assert_no_runs_left();
}

#[test]
fn init_as_root() {
    require_root();
    init_reaps_and_forwards();
}

rootless_test!(
    init_rootless,
    init_reaps_and_forwards,
    env = common::rootless_env
);

// --privileged, --cap-add ALL, --device and the device cgroup (root).

/// Every capability skiff can give: the bounding set it inherits from the host (which may
/// withhold some), as /proc/self/status prints it.
fn all_caps() -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn privileged_and_cap_add_all_as_root() {
    require_root();
    let env = busybox_env();
    let caps = env.sh(&["--cap-add", "ALL"], "grep CapEff /proc/self/status");
    assert!(caps.contains(&all_caps()), "{caps}");
    let out = env.sh(
        &["--privileged"],
        "grep CapEff /proc/self/status; grep Seccomp: /proc/self/status; \
         grep -c ' /proc/' /proc/mounts; \
         echo test > /proc/sys/kernel/domainname && echo proc-sys-rw; \
         grep ' /sys ' /proc/mounts | grep -q '[ ,]rw[ ,]' && echo sys-rw; \
         test -c /dev/loop-control && echo host-devices; \
         mknod /dev/lc c 10 237 && exec 3</dev/lc && echo opened",
    );
    assert_eq!(
        out,
        format!(
            "CapEff:\t{}\nSeccomp:\t0\n0\nproc-sys-rw\nsys-rw\nhost-devices\nopened\n",
            all_caps()
        )
    );
    env.assert_no_runs_left();
}

/// The host's cgroup layout: `(unified, hybrid)` — cgroup2 at /sys/fs/cgroup, or v1
/// hierarchies with cgroup2 at /sys/fs/cgroup/unified.
fn cgroup_layout() -> (bool, bool) {
    let cgroup2 = |p: &str| {
        nix::sys::statfs::statfs(p)
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
    };
    let unified = cgroup2("/sys/fs/cgroup");
    (unified, !unified && cgroup2("/sys/fs/cgroup/unified"))
}

/// The device allow-list as root with `limits` (none: libcontainer's v2 manager and skiff's
/// eBPF device program wherever the host has cgroup2; a limit on a hybrid host: the v1
/// devices controller).
fn device_cgroup_checks(env: &RunEnv, limits: &[&str]) {
    let opts = |more: &[&str]| -> Vec<String> {
        limits.iter().chain(more).map(|s| (*s).to_owned()).collect()
    };
    let sh = |more: &[&str], script: &str| {
        let o = opts(more);
        let o: Vec<&str> = o.iter().map(String::as_str).collect();
        env.sh(&o, script)
    };
    let run = |more: &[&str], script: &str| {
        let mut o = opts(more);
        o.extend([env.busybox(), "sh".into(), "-c".into(), script.into()]);
        let o: Vec<&str> = o.iter().map(String::as_str).collect();
        env.run(&o)
    };
    // A host device under another name; writing to /dev/full fails with ENOSPC.
    let out = sh(
        &["--device", "/dev/full:/dev/myfull"],
        "test -c /dev/myfull && echo node; { echo x > /dev/myfull; } 2>&1; head -c 3 /dev/myfull | wc -c",
    );
    assert!(
        out.starts_with("node\n") && out.contains("No space left on device"),
        "{out}"
    );
    assert!(out.ends_with("3\n"), "{out}");
    // :r — the device cgroup refuses opening it for writing. (Not /dev/full: docker's standard
    // devices, always allowed rwm, include its numbers.)
    assert!(std::path::Path::new("/dev/loop-control").exists());
    let (code, out, err) = run(
        &["--device", "/dev/loop-control:/dev/lc:r"],
        "exec 3</dev/lc && echo read; exec 4>/dev/lc",
    );
    assert_eq!((code, out.as_str()), (1, "read\n"), "{err}");
    assert!(err.contains("Operation not permitted"), "{err}");
    // A device node made inside (CAP_MKNOD is a default capability) cannot be opened unless
    // the allow-list has it.
    let (code, out, err) = run(&[], "mknod /dev/lc c 10 237 && echo made; exec 3</dev/lc");
    assert_eq!((code, out.as_str()), (1, "made\n"), "{err}");
    assert!(err.contains("Operation not permitted"), "{err}");
    assert_eq!(
        sh(
            &["--device", "/dev/loop-control"],
            "exec 3</dev/loop-control && echo opened"
        ),
        "opened\n"
    );
    // The standard devices and a TTY's pts stay usable.
    assert_eq!(
        sh(
            &[],
            "head -c 1 /dev/urandom | wc -c; echo > /dev/null && echo null"
        ),
        "1\nnull\n"
    );
    // --privileged: every device (no program, the cgroup allows all).
    let (code, out, err) = run(
        &["--privileged"],
        "mknod /dev/lc c 10 237 && exec 3</dev/lc && echo opened",
    );
    assert_eq!((code, out.as_str()), (0, "opened\n"), "{err}");
}

#[test]
fn devices_and_the_device_cgroup_as_root() {
    require_root();
    let env = busybox_env();
    let (unified, hybrid) = cgroup_layout();
    // Without a limit the container's cgroup is on the unified hierarchy (libcontainer's v2
    // manager; skiff's eBPF program holds the allow-list): its cgroup namespace shows `0::/`
    // and /sys/fs/cgroup is cgroup2; no v1 hierarchy has a skiff cgroup for it.
    let view = "grep -c /skiff/ /proc/self/cgroup; grep -x 0::/ /proc/self/cgroup; \
                test -f /sys/fs/cgroup/cgroup.controllers && echo cgroup2";
    if unified || hybrid {
        assert_eq!(env.sh(&[], view), "0\n0::/\ncgroup2\n");
    }
    device_cgroup_checks(&env, &[]);
    env.assert_no_runs_left();
    // Errors name the flag and the cause.
    let img = env.busybox();
    let err = env.refused(&["--device", "/dev/nope", &img, "true"]);
    assert!(
        err.contains("error gathering device information while adding custom device /dev/nope")
            && err.contains("No such file"),
        "{err}"
    );
    let err = env.refused(&["--device", "/etc/passwd:/dev/pw", &img, "true"]);
    assert!(err.contains("/etc/passwd is not a device node"), "{err}");
    let err = env.refused(&["--device", "/dev/full:/dev/f:rx", &img, "true"]);
    assert!(err.contains("invalid device"), "{err}");
    env.assert_no_runs_left();
}

/// With a limit, a hybrid host keeps libcontainer's v1 manager (the controllers are v1
/// hierarchies there): the devices controller holds the same allow-list.
#[test]
fn devices_and_the_device_cgroup_as_root_with_a_limit() {
    require_root();
    let env = busybox_env();
    let (_, hybrid) = cgroup_layout();
    if hybrid {
        let out = env.sh(
            &["--pids-limit", "100"],
            "cat /proc/self/cgroup; cat /sys/fs/cgroup/pids/pids.max",
        );
        assert!(
            out.contains(":pids:/skiff/skiff-") && out.ends_with("\n100\n"),
            "{out}"
        );
    }
    device_cgroup_checks(&env, &["--pids-limit", "100"]);
    env.assert_no_runs_left();
}

/// Rootless: a device is a bind mount of the host's node (no device cgroup: only rwm is
/// accepted); nodes cannot be created; --privileged and --cap-add ALL give the namespace's
/// capabilities.
fn devices_and_privileged_unprivileged() {
    let env = busybox_env();
    let img = env.busybox();
    let out = env.sh(
        &["--device", "/dev/full:/dev/myfull"],
        "{ echo x > /dev/myfull; } 2>&1; head -c 2 /dev/myfull | wc -c",
    );
    assert!(
        out.contains("No space left on device") && out.ends_with("2\n"),
        "{out}"
    );
    let err = env.refused(&["--device", "/dev/full:/dev/myfull:r", &img, "true"]);
    assert!(
        err.contains("invalid device \"/dev/myfull:r\"") && err.contains("only root has"),
        "{err}"
    );
    let (code, _, _) = env.run(&[&img, "mknod", "/dev/lc", "c", "10", "237"]);
    assert_eq!(
        code, 1,
        "the kernel refuses device nodes in a user namespace"
    );
    // In its own user namespace skiff holds every capability (of that namespace).
    let caps = env.sh(
        &["--cap-add", "ALL"],
        "grep -E 'CapEff|CapBnd' /proc/self/status",
    );
    assert_eq!(
        caps,
        "CapEff:\t000001ffffffffff\nCapBnd:\t000001ffffffffff\n"
    );
    let out = env.sh(
        &["--privileged"],
        "grep CapEff /proc/self/status; test -c /dev/loop-control && echo host-devices; \
         test -c /dev/tty && echo tty",
    );
    assert_eq!(out, "CapEff:\t000001ffffffffff\nhost-devices\ntty\n");
    env.assert_no_runs_left();
}

rootless_test!(
    devices_and_privileged_rootless,
    devices_and_privileged_unprivileged,
    env = common::rootless_env
);
