//! `skiff run` end to end: real containers from the busybox fixture, pushed to a rig registry
//! and pulled by the skiff binary; as root, and as the unprivileged test user.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use common::run::{RunEnv, cgroup_dirs, run_id_from_cgroup};
use skiff_test_rig::{Compression, Format, busybox, require_root, rootless_test};

#[test]
fn exit_codes_pass_through() {
    require_root();
    let env = RunEnv::new();
    let img = env.busybox();
    assert_eq!(env.run(&[&img, "/bin/true"]).0, 0);
    env.assert_clean();
    assert_eq!(env.run(&[&img, "sh", "-c", "exit 3"]).0, 3);
    env.assert_clean();
    // Killed by a signal: 128 + N.
    killed_payload_exits_137(&env, "1003");
    // Not executable: 126. Not found: 127.
    let (code, _, stderr) = env.run(&[&img, "/etc/passwd"]);
    assert_eq!(code, 126, "{stderr}");
    env.assert_clean();
    let (code, _, stderr) = env.run(&[&img, "no-such-command"]);
    assert_eq!(code, 127, "{stderr}");
    assert!(stderr.contains("not found"), "{stderr}");
    let (code, _, _) = env.run(&[&img, "/no/such/path"]);
    assert_eq!(code, 127);
    env.assert_clean();
    // skiff's own failures: 125.
    assert_eq!(env.run(&["--no-such-flag", &img]).0, 125);
    let (code, _, stderr) = env.run(&["--pull", "never", &env.image("missing:1"), "true"]);
    assert_eq!(code, 125, "{stderr}");
    assert!(stderr.contains("no such image"), "{stderr}");
    let (code, _, _) = env.run(&[&env.image("missing:1"), "true"]);
    assert_eq!(code, 125);
    let (code, _, stderr) = env.run(&["-u", "nosuchuser", &img, "true"]);
    assert_eq!(code, 125, "{stderr}");
    env.assert_clean();
}

#[test]
fn a_cached_image_runs_without_the_registry() {
    require_root();
    let mut env = RunEnv::new();
    let img = env.busybox();
    env.ok(&[&img, "true"]);
    // The registry is gone: a cached tag still runs, and only --pull always needs it.
    drop(env.registry.take());
    env.ok(&[&img, "true"]);
    env.ok(&["--pull", "never", &img, "true"]);
    let (code, _, stderr) = env.run(&["--pull", "always", &img, "true"]);
    assert_eq!(code, 125, "{stderr}");
    env.assert_clean();
}

/// pid of the process whose command line is exactly `args`.
fn pid_of(args: &[&str]) -> Option<i32> {
    let want: Vec<u8> = args.iter().flat_map(|a| a.bytes().chain([0])).collect();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        (std::fs::read(e.path().join("cmdline")).ok()? == want).then_some(pid)
    })
}

/// A payload killed with SIGKILL from outside makes skiff exit 137.
fn killed_payload_exits_137(env: &RunEnv, marker: &str) {
    let (mut child, _stdout) = spawn_ready(env, &format!("echo ready; exec sleep {marker}"));
    // "ready" comes just before the exec: wait for the sleep to be there.
    let pid = (0..500)
        .find_map(|_| {
            pid_of(&["sleep", marker]).or_else(|| {
                std::thread::sleep(std::time::Duration::from_millis(10));
                None
            })
        })
        .expect("the payload runs");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(137));
    env.assert_clean();
}

#[test]
fn entrypoint_and_cmd_follow_docker_rules() {
    require_root();
    let env = RunEnv::new();
    let image = busybox::builder(Format::Oci, Compression::Gzip)
        .unwrap()
        .entrypoint(&["echo", "ep"])
        .cmd(&["c1", "c2"])
        .build()
        .unwrap();
    env.push("ep", "1", &image);
    let img = env.image("ep:1");
    assert_eq!(env.ok(&[&img]), "ep c1 c2\n");
    assert_eq!(env.ok(&[&img, "a", "-b"]), "ep a -b\n");
    // --entrypoint resets the image's Cmd.
    assert_eq!(env.ok(&["--entrypoint", "echo", &img]), "\n");
    assert_eq!(env.ok(&["--entrypoint", "echo", &img, "x"]), "x\n");
    assert_eq!(env.ok(&["--entrypoint", "", &img, "echo", "y"]), "y\n");
}

#[test]
fn environment_merges_image_file_and_flags() {
    require_root();
    let env = RunEnv::new();
    let image = busybox::builder(Format::Oci, Compression::Gzip)
        .unwrap()
        .env(&[busybox::PATH, "A=image", "B=image", "C=image"])
        .build()
        .unwrap();
    env.push("env", "1", &image);
    let file = env.dir.path().join("env.list");
    std::fs::write(&file, "# comment\nB=file\nC=file\n\nFROM_FILE_HOST\n").unwrap();
    let out = env
        .cmd(&[
            "run",
            "--env-file",
            file.to_str().unwrap(),
            "-e",
            "C=flag",
            "-e",
            "FROMHOST",
            "-e",
            "UNSET_ON_HOST",
            &env.image("env:1"),
            "env",
        ])
        .env("FROMHOST", "host value")
        .env("FROM_FILE_HOST", "fh")
        .env_remove("UNSET_ON_HOST")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let vars: Vec<&str> = stdout.lines().collect();
    for expected in [
        "A=image",
        "B=file",
        "C=flag",
        "FROMHOST=host value",
        "FROM_FILE_HOST=fh",
        "HOME=/root",
    ] {
        assert!(vars.contains(&expected), "{expected} missing in {vars:?}");
    }
    assert!(!stdout.contains("UNSET_ON_HOST"), "{stdout}");
    assert!(vars.iter().any(|v| v.starts_with("HOSTNAME=")));
    env.assert_clean();
}

#[test]
fn working_directory_from_image_or_flag_is_created() {
    require_root();
    let env = RunEnv::new();
    let image = busybox::builder(Format::Oci, Compression::Gzip)
        .unwrap()
        .working_dir("/srv/app")
        .build()
        .unwrap();
    env.push("wd", "1", &image);
    assert_eq!(env.ok(&[&env.image("wd:1"), "pwd"]), "/srv/app\n");
    assert_eq!(env.ok(&["-w", "/a/b/c", &env.busybox(), "pwd"]), "/a/b/c\n");
    assert_eq!(env.ok(&["-w", "/tmp", &env.busybox(), "pwd"]), "/tmp\n");
}

#[test]
fn users_resolve_with_groups_and_home() {
    require_root();
    let env = RunEnv::new();
    assert_eq!(
        env.sh_clean(&["-u", "user"], "id; echo $HOME"),
        "uid=1000(user) gid=1000(user) groups=1000(user)\n/home/user\n"
    );
    assert_eq!(
        env.sh_clean(&["-u", "1000:0"], "id; echo $HOME"),
        "uid=1000(user) gid=0(root) groups=0(root)\n/home/user\n"
    );
    assert_eq!(
        env.sh_clean(&["-u", "4242:65534"], "id -u; id -g; echo $HOME"),
        "4242\n65534\n/\n"
    );
    let image = busybox::builder(Format::Oci, Compression::Gzip)
        .unwrap()
        .user("user")
        .build()
        .unwrap();
    env.push("user", "1", &image);
    assert_eq!(env.ok(&[&env.image("user:1"), "id", "-u"]), "1000\n");
    assert_eq!(
        env.ok(&["-u", "root", &env.image("user:1"), "id", "-u"]),
        "0\n"
    );
    // A non-root user starts without effective capabilities, as in docker.
    assert!(
        env.sh_clean(&["-u", "user"], "grep CapEff /proc/self/status")
            .contains("0000000000000000")
    );
}

#[test]
fn volumes_bind_read_only_and_read_write() {
    require_root();
    let env = RunEnv::new();
    let host = env.dir.path().join("shared");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("in"), "from host").unwrap();
    let rw = format!("{}:/data", host.display());
    let ro = format!("{}:/data:ro", host.display());
    assert_eq!(
        env.sh_clean(&["-v", &rw], "cat /data/in; echo hi > /data/out"),
        "from host"
    );
    assert_eq!(std::fs::read_to_string(host.join("out")).unwrap(), "hi\n");
    let (code, _, _) = env.run(&["-v", &ro, &env.busybox(), "sh", "-c", "echo x > /data/out2"]);
    assert_ne!(code, 0);
    assert!(!host.join("out2").exists());
    env.assert_clean();
}

#[test]
fn tmpfs_read_only_and_hostname() {
    require_root();
    let env = RunEnv::new();
    let mounts = env.sh_clean(
        &["--tmpfs", "/scratch:size=1m"],
        "grep ' /scratch ' /proc/mounts",
    );
    assert!(mounts.starts_with("tmpfs /scratch tmpfs"), "{mounts}");
    let (code, _, _) = env.run(&["--read-only", &env.busybox(), "touch", "/x"]);
    assert_ne!(code, 0);
    env.assert_clean();
    // A read-only root still has writable /tmp when a tmpfs is asked for.
    env.sh_clean(&["--read-only", "--tmpfs", "/tmp"], "touch /tmp/x");
    let out = env.sh_clean(
        &["--hostname", "boxname"],
        "hostname; cat /etc/hostname; grep boxname /etc/hosts; grep -c localhost /etc/hosts",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "boxname");
    assert_eq!(lines[1], "boxname");
    assert!(lines[2].contains("boxname"), "{out}");
    let resolv = std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_else(|_| "nameserver 127.0.0.1\n".into());
    assert_eq!(env.sh_clean(&[], "cat /etc/resolv.conf"), resolv);
}

#[test]
fn network_none_has_only_loopback() {
    require_root();
    let env = RunEnv::new();
    assert_eq!(
        env.sh_clean(&["--network", "none"], "ls /sys/class/net"),
        "lo\n"
    );
    let host: Vec<_> = std::fs::read_dir("/sys/class/net").unwrap().collect();
    let inside = env.sh_clean(&[], "ls /sys/class/net | wc -l");
    assert_eq!(inside.trim(), host.len().to_string());
}

#[test]
fn default_mounts_devices_and_masked_paths() {
    require_root();
    let env = RunEnv::new();
    let mounts = env.sh_clean(&[], "cat /proc/mounts");
    for (what, target) in [
        ("proc", "/proc"),
        ("tmpfs", "/dev"),
        ("devpts", "/dev/pts"),
        ("tmpfs", "/dev/shm"),
        ("mqueue", "/dev/mqueue"),
        ("sysfs", "/sys"),
        ("overlay", "/"),
    ] {
        assert!(
            mounts
                .lines()
                .any(|l| l.split(' ').nth(1) == Some(target) && l.split(' ').nth(2) == Some(what)),
            "{what} on {target} missing:\n{mounts}"
        );
    }
    let devs = env.sh_clean(
        &[],
        "for d in null zero full random urandom tty; do test -c /dev/$d && echo $d; done",
    );
    assert_eq!(devs, "null\nzero\nfull\nrandom\nurandom\ntty\n");
    // Masked and read-only /proc paths.
    assert_eq!(env.sh_clean(&[], "cat /proc/kcore | wc -c"), "0\n");
    let (code, _, _) = env.run(&[
        &env.busybox(),
        "sh",
        "-c",
        "echo 1 > /proc/sys/kernel/domainname",
    ]);
    assert_ne!(code, 0);
    // Own pid namespace: the payload is pid 1.
    assert_eq!(env.sh_clean(&[], "echo $$"), "1\n");
    env.assert_clean();
}

#[test]
fn capabilities_default_add_and_drop() {
    require_root();
    let env = RunEnv::new();
    let caps = |opts: &[&str]| -> u64 {
        let out = env.sh_clean(opts, "grep CapEff /proc/self/status");
        u64::from_str_radix(out.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    assert_eq!(caps(&[]), 0xa80425fb, "docker's default set");
    assert_eq!(caps(&["--cap-drop", "ALL"]), 0);
    const CAP_SYS_ADMIN: u64 = 1 << 21;
    const CAP_KILL: u64 = 1 << 5;
    let c = caps(&["--cap-add", "SYS_ADMIN", "--cap-drop", "kill"]);
    assert_ne!(c & CAP_SYS_ADMIN, 0);
    assert_eq!(c & CAP_KILL, 0);
    // Off by default, as in docker (tests/run_flags.rs covers --security-opt no-new-privileges).
    assert_eq!(
        env.sh_clean(&[], "grep NoNewPrivs /proc/self/status"),
        "NoNewPrivs:\t0\n"
    );
}

/// Files in a layer directory: (path, size, mode).
fn snapshot(dir: &Path) -> Vec<(PathBuf, u64, u32)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let m = e.path().symlink_metadata().unwrap();
            out.push((e.path(), m.size(), m.mode()));
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

fn writes_do_not_reach_the_store_body() {
    let env = RunEnv::new();
    env.ok(&[&env.busybox(), "true"]);
    let store = env.store();
    let image = store.images().unwrap().into_iter().next().unwrap();
    let layer = store.layer_dir(&image.layers[0].diff_id);
    let before = snapshot(&layer);
    env.sh_clean(
        &[],
        "touch /bin/x && echo changed > /etc/passwd && rm /bin/ls && mkdir /newdir",
    );
    assert_eq!(snapshot(&layer), before, "a run changed the cached layer");
    // And the next run sees the image as it was.
    assert_eq!(
        env.sh_clean(
            &[],
            "test -e /bin/x || test -e /newdir || echo pristine; test -e /bin/ls && echo ls"
        ),
        "pristine\nls\n"
    );
}

#[test]
fn writes_do_not_reach_the_store() {
    require_root();
    writes_do_not_reach_the_store_body();
}

/// Starts `skiff run` with a payload that prints `ready` once set up; returns the child after
/// the line arrived.
fn spawn_ready(env: &RunEnv, script: &str) -> (Child, BufReader<std::process::ChildStdout>) {
    let img = env.busybox();
    env.spawn_ready(&["run", &img, "sh", "-c", script])
}

/// SIGTERM sent to skiff reaches the payload, whose exit code becomes skiff's.
fn assert_sigterm_is_forwarded(env: &RunEnv) {
    let (mut child, mut stdout) = spawn_ready(
        env,
        "trap 'echo got TERM; exit 7' TERM; echo ready; while true; do sleep 0.05; done",
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert_eq!(rest, "got TERM\n");
    assert_eq!(status.code(), Some(7));
    env.assert_clean();
}

#[test]
fn sigterm_is_forwarded_to_the_payload() {
    require_root();
    assert_sigterm_is_forwarded(&RunEnv::new());
}

#[test]
fn cleanup_leaves_no_cgroup_and_a_killed_skiff_is_swept() {
    require_root();
    let env = RunEnv::new();
    let out = env.sh_clean(&[], "cat /proc/self/cgroup /proc/self/mountinfo");
    let id = run_id_from_cgroup(&out).expect("the payload's cgroup names the run");
    assert!(
        cgroup_dirs(&id).is_empty(),
        "cgroups left: {:?}",
        cgroup_dirs(&id)
    );

    let (mut child, _stdout) = spawn_ready(
        &env,
        "cat /proc/self/cgroup >&2; echo ready; exec sleep 1000",
    );
    let runs: Vec<_> = std::fs::read_dir(env.root().join("runs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(runs.len(), 1);
    let id = runs[0].clone();
    child.kill().unwrap();
    child.wait().unwrap();
    // The dead run is still there (nobody could clean up)…
    assert!(env.root().join("runs").join(&id).exists());
    let sleeper = find_process("sleep 1000", &id);
    // …until the next skiff run sweeps it: payload killed, cgroups, mounts and directory gone.
    env.ok(&[&env.busybox(), "true"]);
    assert!(!env.root().join("runs").join(&id).exists());
    assert!(
        cgroup_dirs(&id).is_empty(),
        "cgroups left: {:?}",
        cgroup_dirs(&id)
    );
    if let Some(pid) = sleeper {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| s.contains(") Z"))
                    .unwrap_or(true),
            "the dead run's payload still runs"
        );
    }
}

/// A `skiff run` killed with -9 between its container's create and start leaves the init
/// waiting for its start message, holding the run's lock: the run looks alive. `sweep` (gc as
/// root, the next run rootless) still kills that init and removes what the run left.
fn killed_between_create_and_start(env: &RunEnv, sweep: &[&str]) {
    let img = env.busybox();
    env.ok(&[&img, "true"]); // pulled: the killed run gets to its create at once
    let mut child = env
        .cmd(&["run", "--rm", &img, "echo", "never"])
        .env("SKIFF_TEST_STOP_AT", "start")
        // Not the test's pipes: a surviving init would hold them open.
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stat = format!("/proc/{}/stat", child.id());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !std::fs::read_to_string(&stat).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, a)| a.trim_start().starts_with('T'))
    }) {
        assert!(
            std::time::Instant::now() < deadline,
            "skiff never stopped before the start"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let runs: Vec<_> = std::fs::read_dir(env.root().join("runs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let id = &runs[0];
    let record = std::fs::read_to_string(env.root().join("runs").join(id).join("init")).unwrap();
    let init: i32 = record.split_whitespace().next().unwrap().parse().unwrap();
    let comm = |pid: i32| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert_eq!(
        comm(init),
        "youki:[2:INIT]\n",
        "the init waits for its start"
    );

    let out = env.skiff(sweep);
    assert!(
        out.status.success(),
        "skiff {sweep:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !env.root().join("runs").join(id).exists(),
        "the killed run's directory is left"
    );
    let stat = std::fs::read_to_string(format!("/proc/{init}/stat")).unwrap_or_default();
    assert!(
        comm(init) != "youki:[2:INIT]\n" || stat.contains(") Z"),
        "the killed run's init survived the sweep"
    );
    if nix::unistd::geteuid().is_root() {
        assert!(
            cgroup_dirs(id).is_empty(),
            "cgroups left: {:?}",
            cgroup_dirs(id)
        );
    }
    env.assert_clean();
}

#[test]
fn a_run_killed_between_create_and_start_is_swept_by_gc() {
    require_root();
    let env = RunEnv::new();
    killed_between_create_and_start(&env, &["gc"]);
}

fn killed_between_create_and_start_unprivileged() {
    let env = RunEnv::new();
    killed_between_create_and_start(&env, &["run", "--rm", &env.busybox(), "true"]);
}
rootless_test!(
    rootless_a_run_killed_between_create_and_start_is_swept,
    killed_between_create_and_start_unprivileged,
    env = common::rootless_env
);

/// The pid of a process whose cmdline is `cmdline` and whose cgroup names `run_id`.
fn find_process(cmdline: &str, run_id: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        (cmd.trim() == cmdline && cg.contains(run_id)).then_some(pid)
    })
}

#[test]
fn timings_list_the_phases() {
    require_root();
    let env = RunEnv::new();
    let out = env.skiff(&["run", "--timings", &env.busybox(), "true"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for phase in [
        "resolve", "pull", "mount", "spec", "create", "start", "exit", "cleanup",
    ] {
        assert!(stderr.contains(phase), "{phase} missing:\n{stderr}");
    }
}

// Rootless: the same paths as the unprivileged test user (as root, each body runs in a child
// process switched to that user; a failure there fails the test).

fn runs_and_cleans_up_unprivileged() {
    let env = RunEnv::new();
    let img = env.busybox();
    assert_eq!(env.run(&[&img, "true"]).0, 0);
    env.assert_clean();
    assert_eq!(env.run(&[&img, "sh", "-c", "exit 3"]).0, 3);
    killed_payload_exits_137(&env, "1004");
    assert_eq!(env.run(&[&img, "no-such-command"]).0, 127);
    assert_eq!(env.run(&[&img, "/etc/passwd"]).0, 126);
    env.assert_clean();
    assert_eq!(env.sh_clean(&[], "id -u"), "0\n");
    assert_eq!(
        env.sh_clean(&["--network", "none"], "ls /sys/class/net"),
        "lo\n"
    );
    assert_eq!(env.sh_clean(&["--hostname", "rl"], "hostname"), "rl\n");
    assert_eq!(env.sh_clean(&["-w", "/x/y"], "pwd"), "/x/y\n");
    let caps = env.sh_clean(&[], "grep CapEff /proc/self/status");
    assert!(caps.contains("a80425fb"), "{caps}");
}
rootless_test!(
    rootless_runs_and_cleans_up,
    runs_and_cleans_up_unprivileged,
    env = common::rootless_env
);

rootless_test!(
    rootless_writes_do_not_reach_the_store,
    writes_do_not_reach_the_store_body,
    env = common::rootless_env
);

fn other_users_with_a_subuid_range() {
    let me = nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .unwrap()
        .name;
    skiff_test_rig::require::require_subid_range(&me);
    let env = RunEnv::new();
    assert_eq!(
        env.sh_clean(
            &["-u", "user"],
            "id; echo $HOME; touch /tmp/mine && stat -c %u /tmp/mine"
        ),
        "uid=1000(user) gid=1000(user) groups=1000(user)\n/home/user\n1000\n"
    );
    // The image gives /home/user to uid 1000: it keeps that owner inside, so the user can
    // write its own home; the setgid/sticky modes and root-owned files stay as they were.
    assert_eq!(
        env.sh_clean(
            &["-u", "user"],
            "stat -c '%u:%g %a' /home/user /tmp /etc/passwd; touch /home/user/mine && echo ok"
        ),
        "1000:1000 755\n0:0 1777\n0:0 644\nok\n"
    );
    // Layers hold files of other (subordinate) uids; rmi + gc still remove them.
    assert!(env.skiff(&["rmi", &env.busybox()]).status.success());
    let gc = env.skiff(&["gc"]);
    assert!(
        gc.status.success(),
        "{}",
        String::from_utf8_lossy(&gc.stderr)
    );
    let layers = std::fs::read_dir(env.root().join("layers/sha256"))
        .unwrap()
        .count();
    assert_eq!(layers, 0, "gc removed the layer with subuid-owned files");
}
rootless_test!(
    rootless_other_users_with_a_subuid_range,
    other_users_with_a_subuid_range,
    env = common::rootless_env
);

fn sigterm_and_killed_skiff_sweep_unprivileged() {
    let env = RunEnv::new();
    assert_sigterm_is_forwarded(&env);

    let (mut child, _stdout) = spawn_ready(&env, "echo ready; exec sleep 1001");
    child.kill().unwrap();
    child.wait().unwrap();
    let left: Vec<_> = std::fs::read_dir(env.root().join("runs"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(left.len(), 1);
    env.ok(&[&env.busybox(), "true"]);
    let sleeping = std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read(e.path().join("cmdline"))
            .map(|c| c == b"sleep\x001001\x00")
            .unwrap_or(false)
    });
    assert!(!sleeping, "the killed run's payload survived the sweep");
}
rootless_test!(
    rootless_sigterm_and_killed_skiff_sweep,
    sigterm_and_killed_skiff_sweep_unprivileged,
    env = common::rootless_env
);

/// `skiff ARGS` started as a script starts a command in the background (SIGINT and SIGQUIT
/// ignored): its stdout.
fn skiff_ignoring_int_and_quit(env: &RunEnv, args: &[&str]) -> String {
    use std::os::unix::process::CommandExt;
    let mut cmd = env.cmd(args);
    // SAFETY: between fork and exec, signal(2) setting SIG_IGN only changes the child's
    // dispositions.
    unsafe {
        cmd.pre_exec(|| {
            use nix::sys::signal::{SigHandler, Signal, signal};
            signal(Signal::SIGINT, SigHandler::SigIgn)?;
            signal(Signal::SIGQUIT, SigHandler::SigIgn)?;
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "skiff {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The payload starts with no signal ignored or blocked, as docker's do, whatever skiff itself
/// ignores (SIGPIPE, as every Rust program; SIGINT and SIGQUIT in a script's background job,
/// where a payload's `trap ... INT` would otherwise do nothing): in a run and in an exec.
fn payload_signals_are_default_body() {
    let env = RunEnv::new();
    let img = env.busybox();
    let status = ["grep", "^Sig[IB]", "/proc/self/status"];
    let default = "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n";
    let mut run = vec!["run", "--rm", &img];
    run.extend(status);
    assert_eq!(skiff_ignoring_int_and_quit(&env, &run), default);

    common::Env::ok(&env, &["run", "-d", "--name", "sig", &img, "sleep", "1000"]);
    let mut exec = vec!["exec", "sig"];
    exec.extend(status);
    assert_eq!(skiff_ignoring_int_and_quit(&env, &exec), default);
    common::Env::ok(&env, &["rm", "-f", "sig"]);
}

#[test]
fn payload_signals_are_default() {
    require_root();
    payload_signals_are_default_body();
}
rootless_test!(
    rootless_payload_signals_are_default,
    payload_signals_are_default_body,
    env = common::rootless_env
);
rootless_test!(
    rootless_without_a_subuid_range_payload_signals_are_default,
    payload_signals_are_default_body,
    env = common::rootless_env,
    user = skiff_test_rig::rootless::nosub_user
);

#[test]
fn stdin_is_closed_unless_interactive() {
    require_root();
    let env = RunEnv::new();
    let img = env.busybox();
    env.ok(&[&img, "true"]); // pull first, so the next runs' output is the payload's alone
    let run_with_stdin = |opts: &[&str]| {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(opts);
        args.extend_from_slice(&[&img, "cat"]);
        let mut child = env
            .cmd(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        (&stdin).write_all(b"typed in\n").unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    assert_eq!(run_with_stdin(&["-i"]), (Some(0), "typed in\n".to_owned()));
    assert_eq!(run_with_stdin(&[]), (Some(0), String::new()));
    env.assert_clean();
}

#[test]
fn tty_gives_a_terminal_with_the_callers_window_size() {
    require_root();
    let env = RunEnv::new();
    let img = env.busybox();
    env.ok(&[&img, "true"]);
    // `script` gives skiff a pseudo-terminal of its own, sized here to 37 rows x 111 columns.
    let (code, text) = env.in_terminal(&format!(
        "stty rows 37 cols 111; {} run --rm -t {img} sh -c 'tty; stty size; test -t 0 && echo stdin-is-tty; exit 4'",
        env.skiff_path()
    ));
    assert_eq!(code, Some(4), "{text}");
    assert!(text.contains("/dev/pts/"), "{text}");
    assert!(text.contains("37 111"), "{text}");
    assert!(text.contains("stdin-is-tty"), "{text}");
    env.assert_clean();
}

/// Empty run cgroups a killed run left (made by libcontainer after the run was swept) go at
/// the next `gc` once 10 s old; a fresh one (a run about to join it) stays.
#[test]
fn gc_removes_stale_empty_run_cgroups() {
    require_root();
    let env = RunEnv::new();
    env.ok(&[&env.busybox(), "true"]); // the skiff/ parent cgroups exist
    let parent = ["/sys/fs/cgroup/unified/skiff", "/sys/fs/cgroup/skiff"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.join("cgroup.procs").exists())
        .expect("a cgroup2 skiff/ parent");
    let tag = std::process::id();
    let old = parent.join(format!("skiff-stale{tag}"));
    let fresh = parent.join(format!("skiff-fresh{tag}"));
    std::fs::create_dir(&old).unwrap();
    std::fs::create_dir(&fresh).unwrap();
    let status = std::process::Command::new("touch")
        .args(["-d", "2 minutes ago"])
        .arg(&old)
        .status()
        .unwrap();
    assert!(status.success());
    let gc = env.skiff(&["gc"]);
    assert!(
        gc.status.success(),
        "{}",
        String::from_utf8_lossy(&gc.stderr)
    );
    let fresh_left = fresh.exists();
    let _ = std::fs::remove_dir(&fresh);
    let old_left = old.exists();
    let _ = std::fs::remove_dir(&old);
    assert!(!old_left, "the stale cgroup is left");
    assert!(fresh_left, "a fresh cgroup was removed");
}

/// skiff's stdout or stderr redirected to /dev/null: the payload can still write there (as in
/// docker, where it writes into a pipe). libcontainer alone would give it a read-only
/// /dev/null, failing every write with EBADF.
fn output_to_dev_null_is_writable_body() {
    let env = RunEnv::new();
    let img = env.busybox();
    env.ok(&[&img, "true"]);
    let run = |script: &str, null_stdout: bool| {
        let mut cmd = env.cmd(&["run", "--rm", &img, "sh", "-c", script]);
        if null_stdout {
            cmd.stdout(Stdio::null());
        } else {
            cmd.stderr(Stdio::null());
        }
        cmd.output().unwrap()
    };
    // stderr to /dev/null: the payload reports its write to stderr on stdout.
    let out = run("echo lost >&2 && echo wrote", false);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "wrote\n",
        "{:?}",
        out.status
    );
    assert!(out.status.success());
    // stdout to /dev/null: reported on stderr.
    let out = run("echo lost && echo wrote >&2", true);
    assert!(
        String::from_utf8_lossy(&out.stderr).ends_with("wrote\n"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success());
    env.assert_clean();
}

#[test]
fn output_to_dev_null_is_writable() {
    require_root();
    output_to_dev_null_is_writable_body();
}
rootless_test!(
    rootless_output_to_dev_null_is_writable,
    output_to_dev_null_is_writable_body,
    env = common::rootless_env
);
