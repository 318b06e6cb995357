//! skiff as the docker CLI: invoked through a symlink named `docker`, it runs the command
//! sequence GitHub's actions runner uses for a container job (with a service container on the
//! job's network), and an Octopus-style exec of a script mounted from the host. Real
//! containers, as root and as the unprivileged test users.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::run::RunEnv;
use skiff_test_rig::{require_root, rootless_test};

/// `docker`: a symlink to skiff in the test's directory.
fn docker_bin(env: &RunEnv) -> PathBuf {
    let link = env.dir.path().join("bin").join("docker");
    if !link.exists() {
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        let skiff = env.cmd(&[]).get_program().to_owned();
        std::os::unix::fs::symlink(skiff, &link).unwrap();
    }
    link
}

/// `docker ARGS` with the test's store: (exit code, stdout, stderr).
fn docker(env: &RunEnv, args: &[&str]) -> (i32, String, String) {
    let out = docker_cmd(env, args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn docker_cmd(env: &RunEnv, args: &[&str]) -> Command {
    let template = env.cmd(args);
    let mut cmd = Command::new(docker_bin(env));
    cmd.args(args).stdin(Stdio::null());
    for (k, v) in template.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd
}

fn ok(env: &RunEnv, args: &[&str]) -> String {
    let (code, stdout, stderr) = docker(env, args);
    assert_eq!(code, 0, "docker {args:?}: {stdout}\n{stderr}");
    stdout
}

/// The runner's sequence for a job with `container:` and one service, as its
/// DockerCommandManager issues it.
fn github_runner_job() {
    let env = RunEnv::new();
    let img = env.busybox();
    let label = "5fe1e1c2a5d1d1b3";
    let uid = nix::unistd::getuid().as_raw();
    let net = format!("github_network_{uid}a");

    // The runner checks the server first.
    assert_eq!(
        ok(&env, &["version", "--format", "{{.Server.APIVersion}}"]),
        "1.43\n"
    );
    assert_eq!(
        ok(&env, &["version", "--format", "{{.Client.APIVersion}}"]),
        "1.43\n"
    );
    let net_id = ok(&env, &["network", "create", "--label", label, &net]);
    assert_eq!(net_id.trim().len(), 64, "{net_id}");
    assert!(ok(&env, &["pull", &img]).contains("Status: Downloaded newer image for"));

    // The work directory the runner mounts, with a step script it writes.
    let work = tempfile::tempdir_in(env.dir.path()).unwrap();
    std::fs::create_dir_all(work.path().join("_temp")).unwrap();
    std::fs::create_dir_all(work.path().join("repo/repo")).unwrap();
    std::fs::write(
        work.path().join("_temp/step1.sh"),
        "echo \"step in $(pwd) as $GITHUB_ACTIONS, home $HOME\"\n\
         grep -c redis-svc /etc/hosts\n\
         echo made > out.txt\n\
         read line; echo \"stdin: $line\"\n",
    )
    .unwrap();
    std::fs::write(
        work.path().join("_temp/step2.sh"),
        "cat out.txt\nfalse\necho not reached\n",
    )
    .unwrap();
    // Rootless: the container's root is the test user, who owns the work directory.
    let vol = format!("{}:/__w", work.path().display());

    // A service container on the job's network, under an alias.
    let svc = ok(
        &env,
        &[
            "create",
            "--name",
            &format!("redis_{uid}"),
            "--label",
            label,
            "--network",
            &net,
            "--network-alias",
            "redis-svc",
            "-e",
            "SVC=1",
            &img,
            "sleep",
            "1000",
        ],
    );
    let svc = svc.trim().to_owned();
    assert_eq!(ok(&env, &["start", &svc]), format!("{svc}\n"));

    let name = format!("job_{uid}");
    let id = ok(
        &env,
        &[
            "create",
            "--name",
            &name,
            "--label",
            label,
            "--workdir",
            "/__w/repo/repo",
            "--network",
            &net,
            "-e",
            "HOME=/github/home",
            "-e",
            "GITHUB_ACTIONS=true",
            "-e",
            "CI=true",
            "-v",
            &vol,
            "--entrypoint",
            "tail",
            &img,
            "-f",
            "/dev/null",
        ],
    );
    let id = id.trim().to_owned();
    assert_eq!(id.len(), 64, "{id}");
    assert_eq!(ok(&env, &["start", &id]), format!("{id}\n"));
    assert_eq!(
        ok(
            &env,
            &[
                "ps",
                "--all",
                "--filter",
                &format!("id={id}"),
                "--filter",
                "status=running",
                "--no-trunc",
                "--format",
                "{{.ID}} {{.Status}}"
            ]
        )
        .split(' ')
        .next()
        .unwrap(),
        id
    );
    let env_lines = ok(
        &env,
        &[
            "inspect",
            "--format",
            "{{range .Config.Env}}{{println .}}{{end}}",
            &id,
        ],
    );
    for want in [
        "HOME=/github/home",
        "GITHUB_ACTIONS=true",
        "CI=true",
        "PATH=/usr/local/sbin:",
    ] {
        assert!(
            env_lines.lines().any(|l| l.starts_with(want)),
            "{want}: {env_lines}"
        );
    }
    assert_eq!(
        ok(
            &env,
            &[
                "inspect",
                "--format",
                "{{.State.Running}} {{.Config.WorkingDir}} {{index .Config.Labels \"5fe1e1c2a5d1d1b3\"}}|",
                &id
            ]
        ),
        "true /__w/repo/repo |\n"
    );
    // The runner's OS check.
    assert_eq!(
        ok(
            &env,
            &[
                "exec",
                &id,
                "sh",
                "-c",
                "cat /etc/*release 2>/dev/null; echo ID=ok"
            ]
        )
        .trim_end()
        .lines()
        .last()
        .unwrap(),
        "ID=ok"
    );

    // Steps: exec -i -w -e sh -e SCRIPT, its input on stdin; exit codes pass through.
    let mut child = docker_cmd(
        &env,
        &[
            "exec",
            "-i",
            "--workdir",
            "/__w/repo/repo",
            "-e",
            "GITHUB_ACTIONS=yes",
            &id,
            "sh",
            "-e",
            "/__w/_temp/step1.sh",
        ],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
        ),
        (
            Some(0),
            "step in /__w/repo/repo as yes, home /github/home\n1\nstdin: hello\n".into()
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, stdout, _) = docker(
        &env,
        &[
            "exec",
            "-i",
            "-w",
            "/__w/repo/repo",
            &id,
            "sh",
            "-e",
            "/__w/_temp/step2.sh",
        ],
    );
    assert_eq!((code, stdout.as_str()), (1, "made\n"));
    assert_eq!(
        std::fs::read_to_string(work.path().join("repo/repo/out.txt")).unwrap(),
        "made\n"
    );

    // A docker action's step: a foreground run on the job's network sees the service too.
    assert_eq!(
        ok(
            &env,
            &[
                "run",
                "--rm",
                "--network",
                &net,
                &img,
                "sh",
                "-c",
                "grep -c redis-svc /etc/hosts"
            ]
        ),
        "1\n"
    );
    // The service's logs (printed by the runner on failure); the network lists both members.
    assert_eq!(ok(&env, &["logs", "--details", &svc]), "");
    let nets = ok(
        &env,
        &[
            "network",
            "ls",
            "--filter",
            &format!("label={label}"),
            "--format",
            "{{.Name}} {{.Driver}}",
        ],
    );
    assert_eq!(nets, format!("{net} host\n"));
    let members = ok(
        &env,
        &[
            "network",
            "inspect",
            "--format",
            "{{len .Containers}}",
            &net,
        ],
    );
    assert_eq!(members, "2\n");
    // A running member keeps the network.
    let (code, _, stderr) = docker(&env, &["network", "rm", &net]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.starts_with("Error response from daemon: error while removing network:"),
        "{stderr}"
    );
    assert!(stderr.contains("has active endpoints"), "{stderr}");

    // Clean-up as the runner does it.
    assert_eq!(ok(&env, &["rm", "--force", &id]), format!("{id}\n"));
    assert_eq!(ok(&env, &["rm", "--force", &svc]), format!("{svc}\n"));
    assert_eq!(ok(&env, &["network", "rm", &net]), format!("{net}\n"));
    // What the runner prunes at the next job: its label's networks only.
    ok(
        &env,
        &["network", "create", "--label", label, &format!("{net}2")],
    );
    ok(
        &env,
        &["network", "create", "--label", "other", &format!("{net}3")],
    );
    assert_eq!(
        ok(
            &env,
            &[
                "network",
                "prune",
                "--force",
                "--filter",
                &format!("label={label}")
            ]
        ),
        format!("Deleted Networks:\n{net}2\n\n")
    );
    assert_eq!(
        ok(&env, &["network", "ls", "-q", "--filter", "label=other"])
            .lines()
            .count(),
        1
    );
    assert_eq!(ok(&env, &["ps", "-aq"]), "");
    let (code, _, stderr) = docker(&env, &["rm", "--force", &id]);
    assert_eq!((code, stderr.as_str()), (0, ""));
    let (code, _, stderr) = docker(&env, &["exec", &id, "true"]);
    assert_eq!(
        (code, stderr.as_str()),
        (
            1,
            format!("Error response from daemon: No such container: {id}\n").as_str()
        )
    );
    assert!(
        !env.root()
            .join("containers")
            .read_dir()
            .unwrap()
            .any(|_| true)
    );
}

#[test]
fn github_runner_job_as_root() {
    require_root();
    github_runner_job();
}

rootless_test!(
    github_runner_job_rootless,
    github_runner_job,
    env = common::rootless_env
);
rootless_test!(
    github_runner_job_rootless_without_subuid_range,
    github_runner_job,
    env = common::rootless_env,
    user = skiff_test_rig::rootless::nosub_user
);

/// Octopus sends its step runner to the worker and execs it in the step's container: a script
/// from a host directory, its arguments, environment from a file, output and exit code back.
fn octopus_exec() {
    let env = RunEnv::new().pulled();
    let img = env.busybox();
    let host = tempfile::tempdir_in(env.dir.path()).unwrap();
    std::fs::write(
        host.path().join("Calamari.sh"),
        "#!/bin/sh\necho \"deploying $1 to $OCTOPUS_ENV\"\necho warn >&2\nexit 3\n",
    )
    .unwrap();
    std::fs::write(host.path().join("vars.env"), "OCTOPUS_ENV=production\n").unwrap();
    let mount = format!("{}:/octopus:ro", host.path().display());
    let id = ok(&env, &["run", "-d", "-v", &mount, &img, "sleep", "1000"]);
    let id = id.trim();
    let env_file = host.path().join("vars.env");
    let (code, stdout, stderr) = docker(
        &env,
        &[
            "exec",
            "--env-file",
            env_file.to_str().unwrap(),
            &id[..12],
            "sh",
            "/octopus/Calamari.sh",
            "web-1.2",
        ],
    );
    assert_eq!(
        (code, stdout.as_str(), stderr.as_str()),
        (3, "deploying web-1.2 to production\n", "warn\n")
    );
    // The mount is read-only in the container.
    let (code, _, _) = docker(&env, &["exec", id, "touch", "/octopus/x"]);
    assert_eq!(code, 1);
    ok(&env, &["rm", "-f", id]);
}

#[test]
fn octopus_exec_as_root() {
    require_root();
    octopus_exec();
}

rootless_test!(
    octopus_exec_rootless,
    octopus_exec,
    env = common::rootless_env
);
