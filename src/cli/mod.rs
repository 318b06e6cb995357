//! The command line: one module per subcommand, each a thin layer over [`skiff::Engine`].

mod containers;
mod exec;
mod gc;
mod images;
mod index;
mod info;
mod login;
mod network;
mod progress;
mod pull;
mod run;
mod version;

use std::path::PathBuf;

use clap::{ArgAction, Parser, Subcommand};
use progress::ProgressMode;

/// Daemonless container executor: pull OCI images and run them without a daemon.
#[derive(Debug, Parser)]
#[command(name = "skiff", version, about, propagate_version = true)]
pub struct Cli {
    /// Store root [default: /var/lib/skiff as root, $XDG_DATA_HOME/skiff otherwise]
    #[arg(long, global = true, env = "SKIFF_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// skiff configuration file [default: $SKIFF_CONFIG, /etc/skiff/config.toml as root,
    /// ~/.config/skiff/config.toml otherwise]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// More log output (-v info, -vv debug, -vvv trace), before the subcommand (`run -v` is a
    /// volume); RUST_LOG overrides
    #[arg(short, long, action = ArgAction::Count)]
    pub verbose: u8,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// skiff's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command in a new container from an image (pulled first if missing)
    Run(Box<run::RunArgs>),
    /// Create a new container (started later with `start`)
    Create(Box<run::RunArgs>),
    /// Start one or more stopped containers
    Start(containers::StartArgs),
    /// Stop one or more running containers
    Stop(containers::StopArgs),
    /// Kill one or more running containers
    Kill(containers::KillArgs),
    /// Restart one or more containers
    Restart(containers::StopArgs),
    /// Remove one or more containers
    Rm(containers::RmArgs),
    /// Execute a command in a running container
    Exec(Box<exec::ExecArgs>),
    /// List containers
    Ps(containers::PsArgs),
    /// Fetch the logs of a container
    Logs(containers::LogsArgs),
    /// Block until one or more containers stop, then print their exit codes
    Wait(containers::WaitArgs),
    /// Manage networks (named networks on host networking)
    Network(network::NetworkArgs),
    /// Lazy-start indexes: publish one for an image, read a file through one
    Index(index::IndexArgs),
    /// Show the version (docker's shape: `--format '{{.Server.APIVersion}}'`)
    Version(version::VersionArgs),
    /// Pull an image from a registry into the store
    Pull(pull::PullArgs),
    /// List images in the store
    Images(images::ImagesArgs),
    /// Return low-level information on containers and images
    Inspect(containers::InspectArgs),
    /// Remove images (a name untags; the image goes with its last name)
    Rmi(images::RmiArgs),
    /// Remove unused layers and blobs, then old images down to a size budget
    Gc(gc::GcArgs),
    /// Check the store for corrupt and orphaned entries
    Verify(gc::VerifyArgs),
    /// Log in to a registry (saved in docker's config.json format)
    Login(login::LoginArgs),
    /// Remove saved credentials for a registry
    Logout(login::LogoutArgs),
    /// Show the store root, rootless mode and host facts that decide how containers run
    Info(info::InfoArgs),
}

impl Cli {
    /// Runs the parsed command and returns the process exit code.
    pub fn run(self) -> anyhow::Result<i32> {
        let quiet = match &self.command {
            Command::Run(args) | Command::Create(args) => args.quiet,
            Command::Pull(args) => args.quiet,
            _ => false,
        };
        let mode = if quiet {
            ProgressMode::Quiet
        } else {
            ProgressMode::Auto
        };
        let engine = skiff::Engine::new(skiff::EngineOptions {
            root: self.root,
            config_path: self.config,
            ..Default::default()
        })?
        .with_progress(std::sync::Arc::new(progress::Display::new(mode)));
        match self.command {
            Command::Run(args) => run::run(&engine, &args),
            Command::Create(args) => run::create(&engine, &args),
            Command::Start(args) => containers::start(&engine, &args),
            Command::Stop(args) => containers::stop(&engine, &args),
            Command::Kill(args) => containers::kill(&engine, &args),
            Command::Restart(args) => containers::restart(&engine, &args),
            Command::Rm(args) => containers::rm(&engine, &args),
            Command::Exec(args) => exec::exec(&engine, &args),
            Command::Ps(args) => containers::ps(&engine, &args),
            Command::Logs(args) => containers::logs(&engine, &args),
            Command::Wait(args) => containers::wait(&engine, &args),
            Command::Version(args) => version::run(&args),
            Command::Network(args) => network::run(&engine, &args),
            Command::Index(args) => index::run(&engine, &args),
            Command::Pull(args) => pull::run(&engine, &args),
            Command::Images(args) => images::list(&engine, &args),
            Command::Inspect(args) => containers::inspect(&engine, &args),
            Command::Rmi(args) => images::rmi(&engine, &args),
            Command::Gc(args) => gc::gc(&engine, &args),
            Command::Verify(args) => gc::verify(&engine, &args),
            Command::Login(args) => login::login(&engine, &args),
            Command::Logout(args) => login::logout(&engine, &args),
            Command::Info(args) => info::run(&engine, &args),
        }
    }
}

/// Whether skiff was invoked as `docker` (a symlink): it then speaks docker's words exactly.
pub fn as_docker() -> bool {
    std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n == "docker"))
        .unwrap_or(false)
}

/// Prints a container command's failure as docker does (`Error response from daemon: No such
/// container: x` as `docker`, `skiff: …` otherwise); the caller exits 1, as docker does.
pub fn fail(err: &skiff::EngineError) {
    let prefix = if as_docker() {
        "Error response from daemon: "
    } else {
        "skiff: "
    };
    eprintln!("{prefix}{}", skiff::error_chain(err));
}

/// A `--format` template error, as an error of the command.
pub fn template_error(err: skiff::template::TemplateError) -> anyhow::Error {
    anyhow::Error::new(err)
}

/// Output formats shared by listing commands.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// Human-readable.
    Table,
    /// JSON.
    Json,
}

/// Sizes as docker prints them (decimal units).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.3}{}", UNITS[unit]).replace(".000", "")
    }
}

/// Parses `512M`, `2G`, `1.5GB`, `1000000` into bytes (binary units for K/M/G/T).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?} (examples: 500M, 2G)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("invalid size unit in {s:?} (use K, M, G or T)")),
    };
    Ok((value * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("12X").is_err());
        assert!(parse_size("G").is_err());
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(4_300_000), "4.300MB");
        assert_eq!(human_size(2_000_000_000), "2GB");
    }
}
