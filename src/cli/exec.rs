//! `skiff exec`: run a command in a running container.

use clap::Args;
use skiff::{Engine, ExecOptions};

#[derive(Debug, Args)]
pub struct ExecArgs {
    #[command(flatten)]
    process: super::run::ProcessArgs,
    /// Detached mode: run command in the background
    #[arg(short, long)]
    detach: bool,
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
        env: args.process.env.clone(),
        env_files: args.process.env_file.clone(),
        workdir: args.process.workdir.clone(),
        user: args.process.user.clone(),
        privileged: args.privileged,
        interactive: args.process.interactive,
        tty: args.process.tty,
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
