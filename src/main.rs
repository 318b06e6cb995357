//! The `skiff` binary: parse the command line, call the library, map errors to exit codes.

mod cli;

use std::process::ExitCode;

use clap::Parser;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use cli::Cli;
use tracing_subscriber::EnvFilter;

/// docker's exit code when the engine itself fails.
const EXIT_ENGINE_FAILED: u8 = 125;

fn main() -> ExitCode {
    // A detached container's monitor is skiff re-executed: it never gets here.
    skiff::serve_monitor_if_requested();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return usage_error(&err),
    };
    init_logging(cli.verbose);
    match cli.run() {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(EXIT_ENGINE_FAILED)),
        Err(err) => {
            // As `docker`, docker's prefix (`docker: No such image…`).
            let name = if cli::as_docker() { "docker" } else { "skiff" };
            eprintln!("{name}: {}", skiff::error_chain(err.as_ref()));
            ExitCode::from(EXIT_ENGINE_FAILED)
        }
    }
}

/// Prints a command-line error as docker does (`unknown flag: --bogus`, the usage, where to
/// get help) and returns 125; `--help` and `--version` print and exit 0.
fn usage_error(err: &clap::Error) -> ExitCode {
    if !err.use_stderr() {
        let _ = err.print();
        return ExitCode::SUCCESS;
    }
    if err.kind() == ErrorKind::UnknownArgument
        && let Some(ContextValue::String(flag)) = err.get(ContextKind::InvalidArg)
        && flag.starts_with('-')
    {
        let flag = flag.split('=').next().unwrap_or(flag);
        let usage = match err.get(ContextKind::Usage) {
            Some(ContextValue::StyledStr(usage)) => usage.to_string(),
            _ => "Usage: skiff [OPTIONS] <COMMAND>".to_owned(),
        };
        let command = usage
            .trim_start_matches("Usage:")
            .split_whitespace()
            .take_while(|w| !w.starts_with(['[', '<', '-']) && !w.chars().all(char::is_uppercase))
            .collect::<Vec<_>>()
            .join(" ");
        eprintln!("unknown flag: {flag}\n\n{}\n", usage.trim_end());
        eprintln!("Run '{command} --help' for more information");
    } else {
        let _ = err.print();
    }
    ExitCode::from(EXIT_ENGINE_FAILED)
}

fn init_logging(verbose: u8) {
    // libcontainer and libcgroups log what skiff reports itself (and warn about every v1
    // controller the host lacks): their lines are debug output only, never the user's.
    let default = match verbose {
        0 => "warn,libcontainer=off,libcgroups=off,fuser=off",
        1 => "info,libcontainer=off,libcgroups=off,fuser=off",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(verbose >= 2);
    // A user's warnings read as messages; timestamps are for debug output.
    if verbose == 0 {
        logs.without_time().init();
    } else {
        logs.init();
    }
}
