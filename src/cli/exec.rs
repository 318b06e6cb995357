//! `skiff exec`: run a command in a running container.

use std::path::PathBuf;

use clap::Args;
use skiff::{Engine, ExecOptions};

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Keep STDIN open even if not attached
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short, long)]
    tty: bool,
    /// Detached mode: run command in the background
    #[arg(short, long)]
    detach: bool,
    /// Set environment variables
    #[arg(short, long = "env", value_name = "KEY[=VALUE]")]
    env: Vec<String>,
    /// Read in a file of environment variables
    #[arg(long, value_name = "FILE")]
    env_file: Vec<PathBuf>,
    /// Working directory inside the container
    #[arg(short, long, value_name = "DIR")]
    workdir: Option<String>,
    /// Username or UID (format: "<name|uid>[:<group|gid>]")
    #[arg(short, long, value_name = "USER")]
    user: Option<String>,
    /// Give extended privileges to the command
    #[arg(long)]
    privileged: bool,
    #[arg(
        required = true,
        num_args = 2..,
        trailing_var_arg = true,
        value_name = "CONTAINER COMMAND [ARG...]"
    )]
    args: Vec<String>,
}

pub fn exec(engine: &Engine, args: &ExecArgs) -> anyhow::Result<i32> {
    let (container, command) = args
        .args
        .split_first()
        .ok_or_else(|| anyhow::anyhow!("\"exec\" requires at least 2 arguments"))?;
    let options = ExecOptions {
        command: command.to_vec(),
        env: args.env.clone(),
        env_files: args.env_file.clone(),
        workdir: args.workdir.clone(),
        user: args.user.clone(),
        privileged: args.privileged,
        interactive: args.interactive,
        tty: args.tty,
        detach: args.detach,
    };
    match engine.exec(container, &options) {
        Ok(code) => Ok(code),
        Err(err @ skiff::EngineError::Container(_)) => {
            super::fail(&err);
            Ok(1)
        }
        Err(err) => Err(err.into()),
    }
}
