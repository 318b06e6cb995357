//! The command line: one module per subcommand, each a thin layer over [`crate::Engine`].

mod info;

use std::path::PathBuf;

use clap::{ArgAction, Parser, Subcommand};

/// Daemonless container executor: pull OCI images and run them without a daemon.
#[derive(Debug, Parser)]
#[command(name = "skiff", version, about, propagate_version = true)]
pub struct Cli {
    /// Store root [default: /var/lib/skiff as root, $XDG_DATA_HOME/skiff otherwise]
    #[arg(long, global = true, env = "SKIFF_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// skiff's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the store root, rootless mode and host facts that decide how containers run
    Info(info::InfoArgs),
}

impl Cli {
    /// Runs the parsed command and returns the process exit code.
    pub fn run(self) -> anyhow::Result<i32> {
        let engine = crate::Engine::new(crate::EngineOptions { root: self.root })?;
        match self.command {
            Command::Info(args) => info::run(&engine, &args),
        }
    }
}
