//! `skiff login` and `skiff logout`.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, bail};
use clap::Args;

use skiff::Engine;

/// Arguments of `skiff login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Registry host[:port] (docker.io when omitted)
    registry: Option<String>,
    /// Username
    #[arg(short, long)]
    username: Option<String>,
    /// Password (prefer --password-stdin: command lines are visible to other users)
    #[arg(short, long, conflicts_with = "password_stdin")]
    password: Option<String>,
    /// Read the password from standard input
    #[arg(long)]
    password_stdin: bool,
}

/// Arguments of `skiff logout`.
#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// Registry host[:port] (docker.io when omitted)
    registry: Option<String>,
}

fn registry_name(arg: Option<&str>) -> String {
    let r = arg.unwrap_or("docker.io");
    let r = r
        .strip_prefix("https://")
        .or_else(|| r.strip_prefix("http://"))
        .unwrap_or(r);
    let r = r.split('/').next().unwrap_or(r);
    if r == "index.docker.io" {
        "docker.io".into()
    } else {
        r.to_owned()
    }
}

/// Verifies and saves credentials.
pub fn login(engine: &Engine, args: &LoginArgs) -> anyhow::Result<i32> {
    let registry = registry_name(args.registry.as_deref());
    let stdin = std::io::stdin();
    let username = match &args.username {
        Some(u) => u.clone(),
        None if stdin.is_terminal() && !args.password_stdin => {
            eprint!("Username: ");
            std::io::stderr().flush()?;
            let mut line = String::new();
            stdin.lock().read_line(&mut line)?;
            line.trim().to_owned()
        }
        None => bail!("--username is required when standard input is not a terminal"),
    };
    let password = match (&args.password, args.password_stdin) {
        (Some(p), _) => p.clone(),
        (None, true) => {
            let mut line = String::new();
            stdin
                .lock()
                .read_line(&mut line)
                .context("reading the password from standard input")?;
            line.trim_end_matches(['\n', '\r']).to_owned()
        }
        (None, false) => bail!("give the password with --password-stdin (or --password)"),
    };
    if username.is_empty() || password.is_empty() {
        bail!("username and password must not be empty");
    }
    let path = engine.login(&registry, &username, &password)?;
    eprintln!("Credentials saved in {}", path.display());
    println!("Login Succeeded");
    Ok(0)
}

/// Removes saved credentials.
pub fn logout(engine: &Engine, args: &LogoutArgs) -> anyhow::Result<i32> {
    let registry = registry_name(args.registry.as_deref());
    if engine.logout(&registry)? {
        println!("Removing login credentials for {registry}");
    } else {
        println!("Not logged in to {registry}");
    }
    Ok(0)
}
