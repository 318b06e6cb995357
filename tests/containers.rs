//! Job containers end to end (create, start, exec, stop, kill, rm, ps, inspect, logs, wait,
//! run -d): real containers from the busybox fixture, as root and as the unprivileged test
//! users, with their monitor killed with -9 on the way.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::run::{RunEnv, cgroup_dirs, mount_lines_mentioning};
use skiff_test_rig::{require_root, rootless_test};

/// `skiff ARGS`: (exit code, stdout, stderr).
fn sk(env: &RunEnv, args: &[&str]) -> (i32, String, String) {
    let out: Output = env.skiff(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `skiff ARGS`, expecting exit 0; stdout.
fn ok(env: &RunEnv, args: &[&str]) -> String {
    let (code, stdout, stderr) = sk(env, args);
    assert_eq!(code, 0, "skiff {args:?}: {stdout}\n{stderr}");
    stdout
}

/// The container's recorded state file.
fn state(env: &RunEnv, id: &str) -> serde_json::Value {
    let bytes = std::fs::read(env.root().join("containers").join(id).join("state.json")).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline)
                .replace('\0', " ")
                .contains(marker)
                .then_some(pid)
        })
        .collect()
}

/// A `sleep` argument unique to this test and user (tests run in parallel, as root and as the
/// test users, and look for their payloads by command line).
fn marker(n: u32) -> String {
    format!("{n}{:06}", nix::unistd::getuid().as_raw())
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Nothing of container `id` is left: no directory, mount, cgroup or process with `marker`.
fn assert_gone(env: &RunEnv, id: &str, marker: &str) {
    assert!(
        !env.root().join("containers").join(id).exists(),
        "container directory left"
    );
    assert!(
        mount_lines_mentioning(env.dir.path()).is_empty(),
        "mounts left"
    );
    let left: Vec<_> = cgroup_dirs(id).into_iter().filter(|d| d.exists()).collect();
    assert!(left.is_empty(), "cgroups left: {left:?}");
    wait_until("the payload to go", || processes_with(marker).is_empty());
}

fn lifecycle() {
    let env = RunEnv::new().pulled();
    let img = env.busybox();
    let host = tempfile::tempdir_in(env.dir.path()).unwrap();
    std::fs::write(
        host.path().join("step.sh"),
        "echo step $STEP in $(pwd)\nexit 4\n",
    )
    .unwrap();
    let vol = format!("{}:/__w", host.path().display());
    let id = ok(
        &env,
        &[
            "create",
            "--name",
            "job1",
            "--label",
            "a=b",
            "--label",
            "c",
            "-e",
            "K=V",
            "-w",
            "/w",
            "-v",
            &vol,
            &img,
            "sleep",
            &marker(1),
        ],
    );
    let id = id.trim().to_owned();
    assert_eq!(id.len(), 64, "{id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    // A created container is listed with -a only.
    assert_eq!(ok(&env, &["ps", "-q"]), "");
    assert_eq!(ok(&env, &["ps", "-aq"]), format!("{}\n", &id[..12]));
    assert_eq!(
        ok(
            &env,
            &["ps", "-a", "--format", "{{.Names}} {{.State}} {{.Status}}"]
        ),
        "job1 created Created\n"
    );
    assert_eq!(ok(&env, &["start", "job1"]), "job1\n");
    // Starting a running container is no error.
    assert_eq!(ok(&env, &["start", &id[..8]]), format!("{}\n", &id[..8]));
    assert_eq!(
        ok(
            &env,
            &[
                "ps",
                "--no-trunc",
                "--format",
                "{{.ID}} {{.Names}} {{.Image}} {{.Command}} {{.State}} {{.Labels}}"
            ]
        ),
        format!("{id} job1 {img} \"sleep {}\" running a=b,c=\n", marker(1))
    );
    // printf and .CreatedAt (docker's "2006-01-02 15:04:05 -0700 MST").
    let line = ok(
        &env,
        &[
            "ps",
            "--format",
            "{{printf \"%.6s|\" .ID}}{{.CreatedAt}}|{{.RunningFor}}",
        ],
    );
    let (short, rest) = line.split_once('|').unwrap();
    assert_eq!(short, &id[..6]);
    let (created, running_for) = rest.trim_end().split_once('|').unwrap();
    assert!(
        created.len() == 29 && created.ends_with(" +0000 UTC"),
        "{created}"
    );
    assert!(running_for.ends_with(" ago"), "{running_for}");
    let table = ok(&env, &["ps"]);
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    for column in [
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ] {
        assert!(header.contains(column), "{header}");
    }
    let row = lines.next().unwrap();
    assert!(row.starts_with(&id[..12]) && row.ends_with("job1"), "{row}");
    assert!(row.contains("Up "), "{row}");
    // Filters: id prefix, name, label key and key=value, status, ancestor; AND across keys.
    for filter in [
        format!("id={}", &id[..10]),
        "name=job1".into(),
        "label=a=b".into(),
        "label=c".into(),
        "status=running".into(),
        format!("ancestor={img}"),
    ] {
        assert_eq!(
            ok(&env, &["ps", "-q", "--filter", &filter]),
            format!("{}\n", &id[..12]),
            "{filter}"
        );
    }
    for filter in [
        "name=other",
        "label=a=c",
        "status=exited",
        "ancestor=other:1",
    ] {
        assert_eq!(ok(&env, &["ps", "-aq", "--filter", filter]), "", "{filter}");
    }
    let (code, _, stderr) = sk(&env, &["ps", "--filter", "foo=bar"]);
    assert_eq!(code, 125, "{stderr}");
    assert!(stderr.contains("invalid filter 'foo'"), "{stderr}");

    // exec: the container's environment and directory, -e, -w, -u, exit codes.
    assert_eq!(
        ok(
            &env,
            &["exec", "job1", "sh", "-c", "echo $K $(pwd) $(id -u)"]
        ),
        "V /w 0\n"
    );
    assert_eq!(
        ok(
            &env,
            &[
                "exec",
                "-e",
                "K=W",
                "-e",
                "X=1",
                "-w",
                "/tmp",
                "-u",
                "1000:1000",
                "job1",
                "sh",
                "-c",
                "echo $K $X $(pwd) $(id -u):$(id -g)"
            ]
        ),
        "W 1 /tmp 1000:1000\n"
    );
    let (code, stdout, _) = sk(
        &env,
        &[
            "exec",
            "-e",
            "STEP=1",
            "-w",
            "/__w",
            "job1",
            "sh",
            "/__w/step.sh",
        ],
    );
    assert_eq!((code, stdout.as_str()), (4, "step 1 in /__w\n"));
    let (code, _, stderr) = sk(&env, &["exec", "job1", "no-such-command"]);
    assert_eq!(code, 127, "{stderr}");
    assert!(stderr.contains("not found"), "{stderr}");
    assert_eq!(sk(&env, &["exec", "job1", "/etc/passwd"]).0, 126);
    // stdin with -i, none without.
    let mut child = env
        .cmd(&["exec", "-i", "job1", "sh", "-c", "tr a-z A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"piped\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "PIPED\n");
    assert_eq!(ok(&env, &["exec", "job1", "cat"]), "");
    // -d returns at once; the command runs on in the container.
    assert_eq!(
        ok(
            &env,
            &[
                "exec",
                "-d",
                "job1",
                "sh",
                "-c",
                "sleep 0.3; touch /w/detached"
            ]
        ),
        ""
    );
    wait_until("the detached exec", || {
        sk(&env, &["exec", "job1", "test", "-e", "/w/detached"]).0 == 0
    });

    // stop/start keeps the writable layer.
    ok(&env, &["exec", "job1", "sh", "-c", "echo kept > /w/file"]);
    assert_eq!(ok(&env, &["stop", "-t", "1", "job1"]), "job1\n");
    let left = processes_with(&marker(1));
    assert!(
        left.is_empty(),
        "{:?}",
        left.iter()
            .map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default())
            .collect::<Vec<_>>()
    );
    // sleep as PID 1 ignores SIGTERM: killed after the timeout, as docker's stop does.
    assert_eq!(
        ok(
            &env,
            &[
                "inspect",
                "--format",
                "{{.State.Status}} {{.State.Running}} {{.State.ExitCode}}",
                "job1"
            ]
        ),
        "exited false 137\n"
    );
    let (code, _, stderr) = sk(&env, &["exec", "job1", "true"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("container {id} is not running")),
        "{stderr}"
    );
    // Stopping a stopped container is no error.
    assert_eq!(ok(&env, &["stop", "job1"]), "job1\n");
    ok(&env, &["start", "job1"]);
    assert_eq!(ok(&env, &["exec", "job1", "cat", "/w/file"]), "kept\n");
    assert_eq!(
        ok(
            &env,
            &[
                "inspect",
                "--format",
                "{{.RestartCount}} {{json .Config.Env}} {{.Config.WorkingDir}} {{range .Mounts}}{{.Destination}}{{end}} {{.Name}}",
                "job1"
            ]
        ),
        "1 [\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\",\"K=V\"] /w /__w /job1\n"
    );
    let inspect: serde_json::Value = serde_json::from_str(&ok(&env, &["inspect", "job1"])).unwrap();
    assert_eq!(inspect[0]["Id"], id.as_str());
    assert_eq!(inspect[0]["State"]["Running"], true);
    assert_eq!(inspect[0]["Config"]["Labels"]["a"], "b");

    // rm refuses a running container without -f; -f kills it; nothing is left.
    let (code, _, stderr) = sk(&env, &["rm", "job1"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("container is running: stop the container before removing or force remove"),
        "{stderr}"
    );
    assert_eq!(ok(&env, &["rm", "-f", "job1"]), "job1\n");
    assert_gone(&env, &id, &marker(1));
    assert_eq!(ok(&env, &["ps", "-aq"]), "");
    // The image is no longer held: gc may take it.
    let (code, _, stderr) = sk(&env, &["verify"]);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn lifecycle_as_root() {
    require_root();
    lifecycle();
}

rootless_test!(lifecycle_rootless, lifecycle, env = common::rootless_env);
rootless_test!(
    lifecycle_rootless_without_subuid_range,
    lifecycle_nosub,
    env = common::rootless_env,
    user = skiff_test_rig::rootless::nosub_user
);

/// Without a subuid range only uid 0 exists in the container: the same life cycle, but no
/// `-u 1000`.
fn lifecycle_nosub() {
    let env = RunEnv::new().pulled();
    let img = env.busybox();
    let id = ok(
        &env,
        &["run", "-d", "--name", "solo", &img, "sleep", &marker(2)],
    );
    let id = id.trim();
    assert_eq!(
        ok(
            &env,
            &["exec", "solo", "sh", "-c", "echo $(id -u) > /f; cat /f"]
        ),
        "0\n"
    );
    let (code, _, stderr) = sk(&env, &["exec", "-u", "1000", "solo", "true"]);
    assert_eq!(code, 125, "{stderr}");
    assert!(stderr.contains("not mapped"), "{stderr}");
    ok(&env, &["restart", "-t", "0", "solo"]);
    assert_eq!(ok(&env, &["exec", "solo", "cat", "/f"]), "0\n");
    ok(&env, &["rm", "-f", "solo"]);
    assert_gone(&env, id, &marker(2));
}

fn logs_wait_and_auto_remove() {
    let env = RunEnv::new().pulled();
    let img = env.busybox();
    let id = ok(
        &env,
        &[
            "run",
            "-d",
            "--name",
            "talker",
            &img,
            "sh",
            "-c",
            "echo out1; echo err1 >&2; sleep 0.2; echo out2; exit 3",
        ],
    );
    let id = id.trim().to_owned();
    assert_eq!(ok(&env, &["wait", "talker"]), "3\n");
    let (code, stdout, stderr) = sk(&env, &["logs", "talker"]);
    assert_eq!(
        (code, stdout.as_str(), stderr.as_str()),
        (0, "out1\nout2\n", "err1\n")
    );
    assert_eq!(ok(&env, &["logs", "--tail", "1", "talker"]), "out2\n");
    let stamped = ok(&env, &["logs", "-t", "talker"]);
    for line in stamped.lines() {
        let (time, text) = line.split_once(' ').unwrap();
        assert!(time.ends_with('Z') && time.contains('T'), "{line}");
        assert!(text.starts_with("out"), "{line}");
    }
    assert_eq!(ok(&env, &["logs", "--details", "talker"]), " out1\n out2\n");
    assert_eq!(
        ok(
            &env,
            &[
                "ps",
                "-a",
                "--filter",
                "status=exited",
                "--format",
                "{{.Names}} {{.Status}}"
            ]
        ),
        "talker Exited (3) Less than a second ago\n"
            .replace("Less than a second", &human_since(&env, &id))
    );
    // The log file is docker's json-file.
    let log = std::fs::read_to_string(
        env.root()
            .join("containers")
            .join(&id)
            .join(format!("{id}-json.log")),
    )
    .unwrap();
    let first: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(first["log"], "out1\n");
    assert_eq!(first["stream"], "stdout");
    // logs -f follows until the container stops.
    ok(
        &env,
        &[
            "run",
            "-d",
            "--name",
            "ticker",
            &img,
            "sh",
            "-c",
            "for i in 1 2 3; do echo tick $i; sleep 0.2; done",
        ],
    );
    assert_eq!(
        ok(&env, &["logs", "-f", "ticker"]),
        "tick 1\ntick 2\ntick 3\n"
    );
    // start -a attaches from this start on and passes the exit code.
    let (code, stdout, stderr) = sk(&env, &["start", "-a", "talker"]);
    assert_eq!(
        (code, stdout.as_str(), stderr.as_str()),
        (3, "out1\nout2\n", "err1\n")
    );
    assert_eq!(ok(&env, &["logs", "talker"]), "out1\nout2\nout1\nout2\n");
    // create -i, start -ai: the caller's stdin is the payload's, and ends where it ends.
    ok(
        &env,
        &["create", "-i", "--name", "upper", &img, "tr", "a-z", "A-Z"],
    );
    let mut child = env
        .cmd(&["start", "-ai", "upper"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"piped\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
        ),
        (Some(0), "PIPED\n".to_owned())
    );
    // Without -i at create, start -i gives it nothing to read (stdin is /dev/null).
    let (code, stdout, _) = sk(&env, &["start", "-ai", "ticker"]);
    assert_eq!((code, stdout.as_str()), (0, "tick 1\ntick 2\ntick 3\n"));
    ok(&env, &["rm", "talker", "ticker", "upper"]);
    assert_gone(&env, &id, "echo out1");

    // --rm with -d: gone once it exits on its own, or once stopped.
    let id = ok(&env, &["run", "-d", "--rm", &img, "sh", "-c", "exit 0"]);
    wait_until("the --rm container to go", || {
        !env.root().join("containers").join(id.trim()).exists()
    });
    let id = ok(
        &env,
        &[
            "run",
            "-d",
            "--rm",
            "--name",
            "tmp1",
            &img,
            "sleep",
            &marker(3),
        ],
    );
    ok(&env, &["stop", "-t", "0", "tmp1"]);
    wait_until("the stopped --rm container to go", || {
        !env.root().join("containers").join(id.trim()).exists()
    });
    assert_gone(&env, id.trim(), &marker(3));
    assert_eq!(ok(&env, &["ps", "-aq"]), "");
}

/// What ps shows for the time since the container `id` finished (it may have crossed into
/// "1 second" between the runs).
fn human_since(env: &RunEnv, id: &str) -> String {
    let finished = state(env, id)["finished_at"].as_i64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    match (now - finished) / 1_000_000_000 {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        n => format!("{n} seconds"),
    }
}

#[test]
fn logs_wait_and_auto_remove_as_root() {
    require_root();
    logs_wait_and_auto_remove();
}

rootless_test!(
    logs_wait_and_auto_remove_rootless,
    logs_wait_and_auto_remove,
    env = common::rootless_env
);

/// The monitor killed with -9: the container still runs and is reported running; exec works;
/// stop and rm find it and leave nothing; a killed monitor whose payload also died is reported
/// exited, and the container starts again.
fn killed_monitor() {
    let env = RunEnv::new().pulled();
    let img = env.busybox();
    let id = ok(
        &env,
        &["run", "-d", "--name", "orphan", &img, "sleep", &marker(4)],
    );
    let id = id.trim().to_owned();
    ok(
        &env,
        &["exec", "orphan", "sh", "-c", "echo before > /marker"],
    );
    let monitor = state(&env, &id)["monitor_pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
    wait_until("the monitor to die", || {
        std::fs::read_to_string(format!("/proc/{monitor}/stat")).is_err()
            || std::fs::read_to_string(format!("/proc/{monitor}/stat"))
                .unwrap()
                .contains(") Z")
    });
    assert_eq!(
        ok(&env, &["ps", "--format", "{{.Names}} {{.State}}"]),
        "orphan running\n"
    );
    assert_eq!(ok(&env, &["exec", "orphan", "cat", "/marker"]), "before\n");
    assert_eq!(ok(&env, &["stop", "-t", "1", "orphan"]), "orphan\n");
    assert_eq!(
        ok(
            &env,
            &[
                "inspect",
                "--format",
                "{{.State.Status}} {{.State.Pid}}",
                "orphan"
            ]
        ),
        "exited 0\n"
    );
    let left: Vec<_> = cgroup_dirs(&id)
        .into_iter()
        .filter(|d| d.exists())
        .collect();
    assert!(left.is_empty(), "cgroups left: {left:?}");
    assert!(processes_with(&marker(4)).is_empty());
    // It starts again with its writable layer.
    ok(&env, &["start", "orphan"]);
    assert_eq!(ok(&env, &["exec", "orphan", "cat", "/marker"]), "before\n");
    // Monitor and payload both killed: reported exited, removed cleanly.
    let st = state(&env, &id);
    let (monitor, payload) = (
        st["monitor_pid"].as_i64().unwrap() as i32,
        st["pid"].as_i64().unwrap() as i32,
    );
    for pid in [monitor, payload] {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    }
    wait_until("the payload to die", || {
        processes_with(&marker(4)).is_empty()
    });
    // The init of the container's pid namespace outlives its children by a moment (it is
    // still exiting when they are gone): until then `ps` rightly sees it running.
    wait_until("ps to see the container exited", || {
        ok(&env, &["ps", "-a", "--format", "{{.Names}} {{.State}}"]) == "orphan exited\n"
    });
    ok(&env, &["rm", "orphan"]);
    assert_gone(&env, &id, &marker(4));
}

#[test]
fn killed_monitor_as_root() {
    require_root();
    killed_monitor();
}

rootless_test!(
    killed_monitor_rootless,
    killed_monitor,
    env = common::rootless_env
);

#[test]
fn errors_name_what_failed() {
    require_root();
    let env = RunEnv::new().pulled();
    let img = env.busybox();
    for args in [
        vec!["start", "nosuch"],
        vec!["stop", "nosuch"],
        vec!["kill", "nosuch"],
        vec!["rm", "nosuch"],
        vec!["wait", "nosuch"],
        vec!["logs", "nosuch"],
        vec!["exec", "nosuch", "true"],
    ] {
        let (code, _, stderr) = sk(&env, &args);
        assert_eq!(code, 1, "{args:?}: {stderr}");
        assert!(
            stderr.contains("No such container: nosuch"),
            "{args:?}: {stderr}"
        );
    }
    let (code, _, stderr) = sk(&env, &["inspect", "nosuch"]);
    assert_eq!(
        (code, stderr.as_str()),
        (1, "Error: No such object: nosuch\n")
    );
    // rm -f of a missing container is no error (docker's).
    assert_eq!(sk(&env, &["rm", "-f", "nosuch"]).0, 0);
    let id = ok(&env, &["create", "--name", "dup", &img, "true"]);
    let (code, _, stderr) = sk(&env, &["create", "--name", "dup", &img, "true"]);
    assert_eq!(code, 125, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "The container name \"/dup\" is already in use by container \"{}\"",
            id.trim()
        )),
        "{stderr}"
    );
    let (code, _, stderr) = sk(&env, &["create", "--name", "bad name", &img, "true"]);
    assert_eq!(code, 125, "{stderr}");
    assert!(
        stderr.contains("Invalid container name (bad name)"),
        "{stderr}"
    );
    let (code, _, stderr) = sk(&env, &["kill", "dup"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("is not running"), "{stderr}");
    // A missing image: 125, and no container is left.
    let (code, _, stderr) = sk(
        &env,
        &["create", "--pull", "never", &env.image("missing:1"), "true"],
    );
    assert_eq!(code, 125, "{stderr}");
    assert_eq!(ok(&env, &["ps", "-aq"]).lines().count(), 1);
    // An ambiguous id prefix (two containers whose ids share a first digit are likely among
    // 40; the test makes sure of one pair).
    let mut ids = vec![id.trim().to_owned()];
    while !ids.iter().any(|a| {
        ids.iter()
            .filter(|b| b.as_bytes()[0] == a.as_bytes()[0])
            .count()
            > 1
    }) {
        ids.push(ok(&env, &["create", &img, "true"]).trim().to_owned());
    }
    let prefix = ids
        .iter()
        .find(|a| {
            ids.iter()
                .filter(|b| b.as_bytes()[0] == a.as_bytes()[0])
                .count()
                > 1
        })
        .unwrap()[..1]
        .to_owned();
    let (code, _, stderr) = sk(&env, &["rm", &prefix]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("Multiple IDs found with provided prefix"),
        "{stderr}"
    );
    let all: Vec<String> = ok(&env, &["ps", "-aq", "--no-trunc"])
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(all.len(), ids.len());
    let mut args = vec!["rm".to_owned()];
    args.extend(all);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&env, &args);
    assert_eq!(ok(&env, &["ps", "-aq"]), "");
    assert!(
        !Path::new(&env.root().join("containers"))
            .read_dir()
            .unwrap()
            .any(|_| true)
    );
}

/// `exec -t` gets a terminal of the caller's size; `exec --privileged` every capability;
/// signals to `exec` reach the command; `kill -s` signals the payload and `kill` kills it;
/// `inspect` finds images too.
fn exec_tty_privileged_and_signals() {
    let env = RunEnv::new().pulled();
    let img = env.busybox();
    let script = "trap 'echo usr1' USR1; echo up; while true; do sleep 0.1; done";
    let id = ok(
        &env,
        &["run", "-d", "--name", "sig", &img, "sh", "-c", script],
    );
    let id = id.trim().to_owned();
    wait_until("the payload's first line", || {
        ok(&env, &["logs", "sig"]) == "up\n"
    });

    // `script` gives skiff a pseudo-terminal of its own, 37 rows x 111 columns.
    let (code, text) = env.in_terminal(&format!(
        "stty rows 37 cols 111; {} exec -t sig sh -c 'tty; stty size; test -t 0 && echo stdin-is-tty; exit 4'",
        env.skiff_path()
    ));
    assert_eq!(code, Some(4), "{text}");
    assert!(text.contains("/dev/pts/"), "{text}");
    assert!(text.contains("37 111"), "{text}");
    // The terminal is its stdin too (docker's exec -t: without -i nothing is typed into it).
    assert!(text.contains("stdin-is-tty"), "{text}");

    let caps = |args: &[&str]| {
        let mut full = vec!["exec"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["sig", "sh", "-c", "grep CapEff /proc/self/status"]);
        ok(&env, &full)
    };
    let default = caps(&[]);
    let privileged = caps(&["--privileged"]);
    assert_eq!(default, "CapEff:\t00000000a80425fb\n");
    // Every capability: as root those of root's bounding set (this host's root lacks
    // CAP_SYS_RESOURCE), rootless all the kernel has (in the container's user namespace).
    let bounding = if nix::unistd::geteuid().is_root() {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("CapBnd:\t").map(str::to_owned))
            .unwrap()
    } else {
        let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        format!("{:016x}", (1u64 << (last + 1)) - 1)
    };
    assert_eq!(privileged, format!("CapEff:\t{bounding}\n"));

    // SIGTERM to `exec` reaches the command, whose exit code comes back.
    let mut child = env
        .cmd(&[
            "exec",
            "sig",
            "sh",
            "-c",
            "trap 'echo got TERM; exit 7' TERM; echo ready; while true; do sleep 0.1; done",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line, "ready\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::SIGTERM,
    )
    .unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert_eq!(
        (child.wait().unwrap().code(), rest.as_str()),
        (Some(7), "got TERM\n")
    );

    // kill -s USR1: the payload's trap runs; kill: SIGKILL, exit 137.
    assert_eq!(ok(&env, &["kill", "-s", "USR1", "sig"]), "sig\n");
    wait_until("the USR1 trap", || {
        ok(&env, &["logs", "sig"]) == "up\nusr1\n"
    });
    assert_eq!(ok(&env, &["kill", "sig"]), "sig\n");
    assert_eq!(ok(&env, &["wait", "sig"]), "137\n");
    let (code, _, stderr) = sk(&env, &["kill", "-s", "NOSUCH", &id]);
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("NOSUCH"), "{stderr}");

    // run -d -t: the payload's terminal output is logged.
    let tid = ok(&env, &["run", "-d", "-t", &img, "sh", "-c", "tty"]);
    assert_eq!(ok(&env, &["wait", tid.trim()]), "0\n");
    assert!(ok(&env, &["logs", tid.trim()]).starts_with("/dev/pts/"));
    ok(&env, &["rm", tid.trim()]);

    // inspect takes images as well as containers.
    let image_id = ok(&env, &["inspect", "--format", "{{.Image}}", "sig"]);
    assert!(image_id.starts_with("sha256:"), "{image_id}");
    assert_eq!(
        ok(&env, &["inspect", "--format", "{{.Id}}", &img]),
        image_id
    );
    assert_eq!(
        ok(
            &env,
            &["inspect", "--type", "image", "--format", "{{.Id}}", &img]
        ),
        image_id
    );
    let (code, _, stderr) = sk(&env, &["inspect", "--type", "container", &img]);
    assert_eq!(
        (code, stderr.as_str()),
        (1, format!("Error: No such container: {img}\n").as_str())
    );
    ok(&env, &["rm", "sig"]);
}

#[test]
fn exec_tty_privileged_and_signals_as_root() {
    require_root();
    exec_tty_privileged_and_signals();
}

rootless_test!(
    exec_tty_privileged_and_signals_rootless,
    exec_tty_privileged_and_signals,
    env = common::rootless_env
);

/// A `create` killed with -9 after it made the container's directory but before its record
/// leaves a directory no command can name; `gc` removes it once its creator is gone.
fn create_killed_before_its_record_body() {
    let env = RunEnv::new();
    let img = env.busybox();
    env.ok(&[&img, "true"]); // pulled
    let mut child = env
        .cmd(&["create", "--name", "half", &img, "sleep", "1"])
        .env("SKIFF_TEST_STOP_AT", "record")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stat = format!("/proc/{}/stat", child.id());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&stat).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, a)| a.trim_start().starts_with('T'))
    }) {
        assert!(Instant::now() < deadline, "skiff create never stopped");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let containers = env.root().join("containers");
    let left: Vec<_> = std::fs::read_dir(&containers)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].join("hold.json").exists());
    assert!(!left[0].join("config.v2.json").exists());
    let ps = env.skiff(&["ps", "-a", "-q"]);
    assert!(
        ps.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&ps.stdout)
    );

    let gc = env.skiff(&["gc"]);
    assert!(
        gc.status.success(),
        "{}",
        String::from_utf8_lossy(&gc.stderr)
    );
    assert_eq!(std::fs::read_dir(&containers).unwrap().count(), 0);
    // The name is free again.
    let created = env.skiff(&["create", "--name", "half", &img, "true"]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    assert!(env.skiff(&["rm", "half"]).status.success());
}

#[test]
fn a_create_killed_before_its_record_is_removed_by_gc() {
    require_root();
    create_killed_before_its_record_body();
}

rootless_test!(
    rootless_a_create_killed_before_its_record_is_removed_by_gc,
    create_killed_before_its_record_body,
    env = common::rootless_env
);
