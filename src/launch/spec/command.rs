//! The command and its environment under docker's rules: Entrypoint/Cmd overrides, the
//! environment merge (image Env, env files, `-e`), and `--stop-signal`.

use oci_spec::image::Config as RunConfig;

use super::{RunOptions, SpecError};

/// docker's PATH when the image has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The image's argv under docker's override rules.
pub fn command(config: &RunConfig, options: &RunOptions) -> Result<Vec<String>, SpecError> {
    let (entrypoint, cmd) = match &options.entrypoint {
        Some(e) if e.is_empty() => (Vec::new(), options.command.clone()),
        Some(e) => (vec![e.clone()], options.command.clone()),
        None => (
            config.entrypoint().clone().unwrap_or_default(),
            if options.command.is_empty() {
                config.cmd().clone().unwrap_or_default()
            } else {
                options.command.clone()
            },
        ),
    };
    let argv: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if argv.is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok(argv)
}

/// Sets `KEY=VAL` in `env`, replacing an earlier value of KEY in place.
fn set_env(env: &mut Vec<String>, entry: String) {
    let key = entry.split('=').next().unwrap_or_default().to_owned();
    match env
        .iter_mut()
        .find(|e| e.split('=').next() == Some(key.as_str()))
    {
        Some(slot) => *slot = entry,
        None => env.push(entry),
    }
}

/// Adds one `-e`/env-file entry: `KEY=VAL` literally, `KEY` from `lookup` (dropped if unset).
fn add_env(env: &mut Vec<String>, entry: &str, lookup: &dyn Fn(&str) -> Option<String>) {
    if entry.contains('=') {
        set_env(env, entry.to_owned());
    } else if let Some(value) = lookup(entry) {
        set_env(env, format!("{entry}={value}"));
    }
}

/// Adds `--env-file` files' entries (blank lines and `#` comments skipped), then `-e` entries.
fn add_user_env(
    env: &mut Vec<String>,
    env_files: &[std::path::PathBuf],
    entries: &[String],
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), SpecError> {
    for path in env_files {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::EnvFile {
            path: path.clone(),
            source,
        })?;
        for line in text.lines() {
            let line = line.trim_start();
            if !line.is_empty() && !line.starts_with('#') {
                add_env(env, line, lookup);
            }
        }
    }
    for entry in entries {
        if entry.is_empty() || entry.starts_with('=') {
            return Err(SpecError::Invalid {
                what: "environment variable",
                value: entry.clone(),
                reason: "expected KEY=VALUE or KEY".into(),
            });
        }
        add_env(env, entry, lookup);
    }
    Ok(())
}

/// The environment: image Env, then env files, then `-e`; PATH, HOSTNAME, HOME and TERM as docker
/// adds them.
pub fn environment(
    config: &RunConfig,
    options: &RunOptions,
    hostname: &str,
    home: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, SpecError> {
    let mut env = vec![
        format!("PATH={DEFAULT_PATH}"),
        format!("HOSTNAME={hostname}"),
    ];
    if options.tty {
        env.push("TERM=xterm".into());
    }
    for entry in config.env().iter().flatten() {
        set_env(&mut env, entry.clone());
    }
    add_user_env(&mut env, &options.env_files, &options.env, lookup)?;
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={home}"));
    }
    Ok(env)
}

/// An exec's environment: the container's `base`, then `--env-file` files, then `-e`.
pub fn exec_environment(
    base: &[String],
    env_files: &[std::path::PathBuf],
    extra: &[String],
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, SpecError> {
    let mut env = base.to_vec();
    add_user_env(&mut env, env_files, extra, lookup)?;
    Ok(env)
}

/// Parses a signal as docker does: `SIGTERM`, `TERM`, `term` or a number.
pub fn parse_signal(arg: &str) -> Result<nix::sys::signal::Signal, SpecError> {
    let invalid = || SpecError::Invalid {
        what: "signal",
        value: arg.to_owned(),
        reason: "give a name such as SIGTERM or TERM, or a number".into(),
    };
    if let Ok(n) = arg.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n).map_err(|_| invalid());
    }
    let upper = arg.trim().to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse().map_err(|_| invalid())
}
