//! `skiff run`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};

use skiff::{CreateOptions, Engine, Network, PullPolicy, RunOptions, Seccomp, Volume};
use skiff::{LimitFlags, Limits};

/// `--pull` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum PullArg {
    /// Pull only when the store lacks the image.
    Missing,
    /// Always pull first.
    Always,
    /// Never pull.
    Never,
}

/// The process flags `run`, `create` and `exec` share.
#[derive(Debug, Args)]
pub struct ProcessArgs {
    /// Keep stdin open
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short, long)]
    pub tty: bool,
    /// Set an environment variable (KEY=VALUE, or KEY to take it from this environment)
    #[arg(short, long = "env", value_name = "KEY[=VALUE]")]
    pub env: Vec<String>,
    /// Read environment variables from a file (one KEY=VALUE or KEY a line)
    #[arg(long, value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// Working directory inside the container (created if missing)
    #[arg(short, long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// User: name|uid[:group|gid]
    #[arg(short, long, value_name = "USER")]
    pub user: Option<String>,
}

/// Arguments of `skiff run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Remove the container when it exits (a foreground run always is; with -d the monitor
    /// removes it)
    #[arg(long)]
    rm: bool,
    /// Run the container in the background and print its ID
    #[arg(short, long)]
    detach: bool,
    /// Assign a name to the container (used with -d, and by create)
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Set metadata on a container (used with -d, and by create)
    #[arg(short = 'l', long = "label", value_name = "KEY=VALUE")]
    label: Vec<String>,
    #[command(flatten)]
    process: ProcessArgs,
    /// Bind-mount a host path: HOST:CONTAINER[:ro|rw]
    #[arg(short, long = "volume", value_name = "HOST:CONTAINER[:ro]")]
    volume: Vec<String>,
    /// Mount a tmpfs: /path[:options]
    #[arg(long, value_name = "PATH[:OPTIONS]")]
    tmpfs: Vec<String>,
    /// Mount the root filesystem read-only
    #[arg(long)]
    read_only: bool,
    /// Container hostname
    #[arg(long, value_name = "NAME")]
    hostname: Option<String>,
    /// Network: host (the default), none, or a network made with `network create` (host
    /// networking; its members find each other by name)
    #[arg(long, alias = "net", default_value = "host", value_name = "NETWORK")]
    network: String,
    /// A name for the container in its network (with --network NAME)
    #[arg(long, alias = "net-alias", value_name = "ALIAS")]
    network_alias: Vec<String>,
    /// Add a capability (or ALL)
    #[arg(long, value_name = "CAP")]
    cap_add: Vec<String>,
    /// Drop a capability (or ALL)
    #[arg(long, value_name = "CAP")]
    cap_drop: Vec<String>,
    /// Security options: seccomp=unconfined|PROFILE.json, no-new-privileges[=true|false]
    #[arg(long, value_name = "OPT")]
    security_opt: Vec<String>,
    /// Add a line to /etc/hosts: NAME:IP (IP may be host-gateway: 127.0.0.1, the host)
    #[arg(long, value_name = "NAME:IP")]
    add_host: Vec<String>,
    /// Add a supplementary group (a name from the image's /etc/group, or a gid)
    #[arg(long, value_name = "GROUP")]
    group_add: Vec<String>,
    /// Signal the payload gets when skiff receives SIGTERM (default: the image's, else SIGTERM)
    #[arg(long, value_name = "SIGNAL")]
    stop_signal: Option<String>,
    /// Seconds from a forwarded stop signal to SIGKILL (default 10; -1: never)
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    stop_timeout: Option<i64>,
    /// Run skiff's init as PID 1: it reaps zombies and forwards signals
    #[arg(long)]
    init: bool,
    /// Start an image that is not in the store from its lazy index (see `skiff index`): files
    /// are fetched as they are read while the image is pulled whole
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    lazy: Option<bool>,
    /// Every capability, no seccomp, no masked paths, the host's devices, /sys writable
    #[arg(long)]
    privileged: bool,
    /// Give the container a host device: HOST[:CONTAINER][:PERMISSIONS] (r, w, m)
    #[arg(long, value_name = "DEVICE")]
    device: Vec<String>,
    /// Override the image's entrypoint ("" clears it); resets its Cmd
    #[arg(long, value_name = "CMD")]
    entrypoint: Option<String>,
    /// When to pull the image
    #[arg(long, value_enum, default_value = "missing")]
    pull: PullArg,
    /// Suppress the pull progress
    #[arg(short, long)]
    pub quiet: bool,
    /// Print the start-up phases with their durations to stderr
    #[arg(long, env = "SKIFF_TIMINGS")]
    timings: bool,
    /// Image, then the command and its arguments
    #[arg(
        required = true,
        trailing_var_arg = true,
        value_name = "IMAGE [COMMAND [ARG...]]"
    )]
    args: Vec<String>,
    /// Resource limits
    #[command(flatten)]
    limits: LimitArgs,
}

/// Runs the command and returns its exit code.
/// The image, and the run options the flags give.
fn options(args: &RunArgs) -> anyhow::Result<(&str, RunOptions)> {
    let (image, command) = args.args.split_first().context("an image is required")?;
    let volumes = args
        .volume
        .iter()
        .map(|v| Volume::parse(v))
        .collect::<Result<Vec<_>, _>>()?;
    let security = SecurityOpts::parse(&args.security_opt)?;
    let options = RunOptions {
        command: command.to_vec(),
        entrypoint: args.entrypoint.clone(),
        env: args.process.env.clone(),
        env_files: args.process.env_file.clone(),
        workdir: args.process.workdir.clone(),
        user: args.process.user.clone(),
        volumes,
        tmpfs: args.tmpfs.clone(),
        read_only: args.read_only,
        hostname: args.hostname.clone(),
        network: match args.network.as_str() {
            "none" => Network::None,
            "bridge" => anyhow::bail!(
                "skiff has no bridge network: use --network host (the default), none, or a \
                 network made with `skiff network create` (host networking, names resolved)"
            ),
            _ => Network::Host,
        },
        cap_add: args.cap_add.clone(),
        cap_drop: args.cap_drop.clone(),
        interactive: args.process.interactive,
        tty: args.process.tty,
        seccomp: security.seccomp,
        no_new_privileges: security.no_new_privileges,
        limits: args.limits.parse()?,
        add_hosts: args.add_host.clone(),
        group_add: args.group_add.clone(),
        stop_signal: args.stop_signal.clone(),
        stop_timeout: args.stop_timeout,
        init: args.init,
        lazy: args.lazy.unwrap_or(false),
        privileged: args.privileged,
        devices: args.device.clone(),
    };
    options.validate()?;
    Ok((image, options))
}

fn pull_policy(args: &RunArgs) -> PullPolicy {
    match args.pull {
        PullArg::Missing => PullPolicy::Missing,
        PullArg::Always => PullPolicy::Always,
        PullArg::Never => PullPolicy::Never,
    }
}

/// `--label KEY=VALUE` (or `KEY`, an empty value) as docker takes them.
pub fn labels(args: &[String]) -> std::collections::BTreeMap<String, String> {
    args.iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (l.clone(), String::new()),
        })
        .collect()
}

/// `skiff create`: prints the new container's id.
pub fn create(engine: &Engine, args: &RunArgs) -> anyhow::Result<i32> {
    let id = create_container(engine, args)?;
    println!("{id}");
    Ok(0)
}

fn create_container(engine: &Engine, args: &RunArgs) -> anyhow::Result<String> {
    let (image, options) = options(args)?;
    Ok(engine.create(
        image,
        &CreateOptions {
            run: options,
            name: args.name.clone(),
            labels: labels(&args.label),
            auto_remove: args.rm,
            pull: pull_policy(args),
            network: (args.network != "host" || !args.network_alias.is_empty())
                .then(|| args.network.clone()),
            network_aliases: args.network_alias.clone(),
        },
    )?)
}

pub fn run(engine: &Engine, args: &RunArgs) -> anyhow::Result<i32> {
    if args.detach {
        let id = create_container(engine, args)?;
        if let Err(err) = engine.start(&id) {
            // docker keeps a container that failed to start (unless --rm).
            if args.rm {
                let _ = engine.remove(&id, true);
            }
            return Err(err.into());
        }
        println!("{id}");
        return Ok(0);
    }
    let (image, mut options) = options(args)?;
    // A named network: its members' names, as a created container gets them.
    options
        .add_hosts
        .extend(engine.network_hosts(&args.network, &args.network_alias)?);

    let pull = pull_policy(args);
    let outcome = engine.run(image, &options, pull)?;
    if args.timings {
        eprint!("{}", outcome.timings.report());
    }
    Ok(outcome.exit_code)
}

/// docker's resource limit flags (`skiff::Limits`); values in docker's syntax, checked as docker
/// checks them.
#[derive(Debug, Args)]
#[command(next_help_heading = "Resource limits")]
struct LimitArgs {
    /// Memory limit (e.g. 64m, 1g; at least 6m)
    #[arg(short, long, value_name = "BYTES")]
    memory: Option<String>,
    /// Memory plus swap limit (-1: unlimited swap; default twice --memory)
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true)]
    memory_swap: Option<String>,
    /// Memory soft limit
    #[arg(long, value_name = "BYTES")]
    memory_reservation: Option<String>,
    /// Number of CPUs (e.g. 1.5)
    #[arg(long, value_name = "NUMBER", allow_negative_numbers = true)]
    cpus: Option<String>,
    /// CPU shares (relative weight, default 1024)
    #[arg(short, long, value_name = "SHARES", allow_negative_numbers = true)]
    cpu_shares: Option<String>,
    /// CPUs in which to allow execution (0-3, 0,1)
    #[arg(long, value_name = "LIST")]
    cpuset_cpus: Option<String>,
    /// Container pids limit (-1: unlimited)
    #[arg(long, value_name = "NUMBER", allow_negative_numbers = true)]
    pids_limit: Option<String>,
    /// Ulimit: NAME=SOFT[:HARD] (e.g. nofile=1024:2048)
    #[arg(long, value_name = "NAME=SOFT[:HARD]")]
    ulimit: Vec<String>,
    /// Size of /dev/shm (default 64m)
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true)]
    shm_size: Option<String>,
}

impl LimitArgs {
    fn parse(&self) -> Result<Limits, skiff::LimitError> {
        Limits::from_flags(&LimitFlags {
            memory: self.memory.clone(),
            memory_swap: self.memory_swap.clone(),
            memory_reservation: self.memory_reservation.clone(),
            cpus: self.cpus.clone(),
            cpu_shares: self.cpu_shares.clone(),
            cpuset_cpus: self.cpuset_cpus.clone(),
            pids_limit: self.pids_limit.clone(),
            ulimits: self.ulimit.clone(),
            shm_size: self.shm_size.clone(),
        })
    }
}

/// What `--security-opt` asked for.
#[derive(Debug, Default)]
struct SecurityOpts {
    seccomp: Seccomp,
    no_new_privileges: bool,
}

impl SecurityOpts {
    /// docker's forms: `seccomp=unconfined`, `seccomp=FILE`, `no-new-privileges`,
    /// `no-new-privileges=true|false` (and the old `:` separator); AppArmor and SELinux
    /// options that only turn confinement off are accepted, there being none to turn off.
    fn parse(opts: &[String]) -> anyhow::Result<Self> {
        let mut out = Self::default();
        for opt in opts {
            let (key, value) = match opt.split_once(['=', ':']) {
                Some((k, v)) => (k, Some(v)),
                None => (opt.as_str(), None),
            };
            match (key, value) {
                ("seccomp", Some("unconfined")) => out.seccomp = Seccomp::Unconfined,
                ("seccomp", Some(path)) if !path.is_empty() => {
                    out.seccomp = Seccomp::Profile(path.into());
                }
                ("no-new-privileges", None | Some("true")) => out.no_new_privileges = true,
                ("no-new-privileges", Some("false")) => out.no_new_privileges = false,
                ("apparmor", Some("unconfined")) | ("label", Some("disable")) => {}
                _ => anyhow::bail!(
                    "invalid --security-opt {opt:?}: skiff takes seccomp=unconfined, \
                     seccomp=PROFILE.json and no-new-privileges[=true|false]"
                ),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_opts_parse_as_docker_takes_them() {
        let parse = |opts: &[&str]| {
            SecurityOpts::parse(&opts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        let o = parse(&["seccomp=unconfined", "no-new-privileges"]).unwrap();
        assert_eq!(o.seccomp, Seccomp::Unconfined);
        assert!(o.no_new_privileges);
        let o = parse(&["seccomp=/etc/p.json", "no-new-privileges:false"]).unwrap();
        assert_eq!(o.seccomp, Seccomp::Profile("/etc/p.json".into()));
        assert!(!o.no_new_privileges);
        assert_eq!(parse(&[]).unwrap().seccomp, Seccomp::Default);
        for bad in [
            "seccomp",
            "seccomp=",
            "no-new-privileges=maybe",
            "apparmor=docker-default",
        ] {
            let err = parse(&[bad]).unwrap_err().to_string();
            assert!(err.contains("invalid --security-opt"), "{bad}: {err}");
        }
    }
}
