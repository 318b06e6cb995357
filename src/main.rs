//! The `skiff` binary: parse the command line, call the library, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;
use skiff::cli::Cli;
use tracing_subscriber::EnvFilter;

/// docker's exit code when the engine itself fails.
const EXIT_ENGINE_FAILED: u8 = 125;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            // Usage errors are skiff's own failure (docker exits 125); --help and --version exit 0.
            return if err.use_stderr() {
                ExitCode::from(EXIT_ENGINE_FAILED)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_logging(cli.verbose);
    match cli.run() {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(EXIT_ENGINE_FAILED)),
        Err(err) => {
            eprintln!("skiff: {}", error_message(&err));
            ExitCode::from(EXIT_ENGINE_FAILED)
        }
    }
}

fn init_logging(verbose: u8) {
    // libcontainer warns about every cgroup v1 controller the host lacks: errors only.
    let default = match verbose {
        0 => "warn,libcontainer=error,libcgroups=error",
        1 => "info,libcontainer=warn,libcgroups=warn",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

/// The error and its causes, each cause added only when the message does not already say it
/// (library errors often quote their source), so nothing is printed twice.
fn error_message(err: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !message.contains(&text) {
            if !message.is_empty() {
                message.push_str(": ");
            }
            message.push_str(&text);
        }
    }
    message
}
