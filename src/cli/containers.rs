//! The job-container commands: `start`, `stop`, `kill`, `restart`, `rm`, `wait`, `logs`,
//! `ps` and `inspect`, each a thin layer over [`skiff::Engine`] with docker's flags and output.

use std::io::Write;
use std::time::Duration;

use clap::Args;
use skiff::{ContainerSummary, Engine, EngineError, LogOptions, Status, Stream};

use super::{fail, template_error};
use skiff::template::Template;

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Attach STDOUT/STDERR and forward signals
    #[arg(short, long)]
    attach: bool,
    /// Attach container's STDIN
    #[arg(short, long)]
    interactive: bool,
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait before killing the container
    #[arg(
        short = 't',
        long = "time",
        visible_alias = "timeout",
        value_name = "SECONDS",
        allow_negative_numbers = true
    )]
    time: Option<i64>,
    /// Signal to send to the container
    #[arg(short, long, value_name = "SIGNAL")]
    signal: Option<String>,
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// Signal to send to the container
    #[arg(short, long, value_name = "SIGNAL")]
    signal: Option<String>,
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Force the removal of a running container (uses SIGKILL)
    #[arg(short, long)]
    force: bool,
    /// Remove anonymous volumes associated with the container (skiff has none)
    #[arg(short, long)]
    volumes: bool,
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Follow log output
    #[arg(short, long)]
    follow: bool,
    /// Number of lines to show from the end of the logs ("all" for all)
    #[arg(short = 'n', long, value_name = "N", default_value = "all")]
    tail: String,
    /// Show timestamps
    #[arg(short, long)]
    timestamps: bool,
    /// Show extra details provided to logs
    #[arg(long)]
    details: bool,
    #[arg(value_name = "CONTAINER")]
    container: String,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all containers (default shows just running)
    #[arg(short, long)]
    all: bool,
    /// Only display container IDs
    #[arg(short, long)]
    quiet: bool,
    /// Don't truncate output
    #[arg(long)]
    no_trunc: bool,
    /// Filter output based on conditions provided (id, name, label, status, ancestor)
    #[arg(short, long, value_name = "FILTER")]
    filter: Vec<String>,
    /// Format output using a Go template ("table", "json" or a template)
    #[arg(long, value_name = "TEMPLATE")]
    format: Option<String>,
    /// Show the latest created container
    #[arg(short, long)]
    latest: bool,
    /// Show n last created containers
    #[arg(short = 'n', long, value_name = "N")]
    last: Option<usize>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Format output using a Go template
    #[arg(short, long, value_name = "TEMPLATE")]
    format: Option<String>,
    /// Only inspect objects of this type (container or image)
    #[arg(long = "type", value_name = "TYPE")]
    kind: Option<String>,
    /// Display total file sizes (accepted; skiff shows none)
    #[arg(short, long)]
    size: bool,
    #[arg(required = true, value_name = "NAME|ID")]
    objects: Vec<String>,
}

/// Runs `f` for each container, printing the argument after success and docker's message
/// after failure; 1 when any failed.
fn each(
    containers: &[String],
    mut f: impl FnMut(&str) -> Result<(), EngineError>,
) -> anyhow::Result<i32> {
    let mut code = 0;
    for c in containers {
        match f(c) {
            Ok(()) => println!("{c}"),
            Err(err) => {
                fail(&err);
                code = 1;
            }
        }
    }
    Ok(code)
}

/// `-t SECONDS`: negative waits forever (`Duration::MAX`).
fn seconds(t: Option<i64>) -> Option<Duration> {
    t.map(|t| u64::try_from(t).map_or(Duration::MAX, Duration::from_secs))
}

pub fn start(engine: &Engine, args: &StartArgs) -> anyhow::Result<i32> {
    if args.attach || args.interactive {
        let [container] = args.containers.as_slice() else {
            anyhow::bail!("you cannot start and attach multiple containers at once");
        };
        let mut out = std::io::stdout().lock();
        let mut err = std::io::stderr();
        let stdin: Option<Box<dyn std::io::Read + Send>> = args
            .interactive
            .then(|| Box::new(std::io::stdin()) as Box<dyn std::io::Read + Send>);
        let code = engine.start_attached(container, stdin, &mut |line| match line.stream {
            Stream::Stdout => out
                .write_all(line.log.as_bytes())
                .and_then(|()| out.flush()),
            Stream::Stderr => err.write_all(line.log.as_bytes()),
        });
        return match code {
            Ok(code) => Ok(code),
            Err(err) => {
                fail(&err);
                Ok(1)
            }
        };
    }
    each(&args.containers, |c| engine.start(c))
}

pub fn stop(engine: &Engine, args: &StopArgs) -> anyhow::Result<i32> {
    let timeout = seconds(args.time);
    each(&args.containers, |c| {
        engine.stop_with_signal(c, args.signal.as_deref(), timeout)
    })
}

pub fn kill(engine: &Engine, args: &KillArgs) -> anyhow::Result<i32> {
    each(&args.containers, |c| engine.kill(c, args.signal.as_deref()))
}

pub fn restart(engine: &Engine, args: &StopArgs) -> anyhow::Result<i32> {
    let timeout = seconds(args.time);
    each(&args.containers, |c| engine.restart(c, timeout))
}

pub fn rm(engine: &Engine, args: &RmArgs) -> anyhow::Result<i32> {
    let mut code = 0;
    for c in &args.containers {
        match engine.remove(c, args.force) {
            Ok(()) => println!("{c}"),
            // docker: `rm -f` of a container that is not there is no error.
            Err(EngineError::Container(skiff::ContainerError::NotFound(_))) if args.force => {}
            Err(err) => {
                fail(&err);
                code = 1;
            }
        }
    }
    Ok(code)
}

pub fn wait(engine: &Engine, args: &WaitArgs) -> anyhow::Result<i32> {
    let mut code = 0;
    for c in &args.containers {
        match engine.wait(c) {
            Ok(exit) => println!("{exit}"),
            Err(err) => {
                fail(&err);
                code = 1;
            }
        }
    }
    Ok(code)
}

pub fn logs(engine: &Engine, args: &LogsArgs) -> anyhow::Result<i32> {
    let tail = match args.tail.as_str() {
        "all" | "-1" => None,
        n => Some(n.parse::<usize>().map_err(|_| {
            anyhow::anyhow!("invalid value {n:?} for --tail: give a number of lines or \"all\"")
        })?),
    };
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr();
    let result = engine.logs(
        &args.container,
        &LogOptions {
            follow: args.follow,
            tail,
        },
        &mut |line| {
            let mut text = String::new();
            if args.timestamps {
                text.push_str(&line.time);
                text.push(' ');
            }
            if args.details {
                // docker prints the log's extra attributes (none here), then a space.
                text.push(' ');
            }
            text.push_str(&line.log);
            match line.stream {
                Stream::Stdout => out.write_all(text.as_bytes()).and_then(|()| out.flush()),
                Stream::Stderr => err.write_all(text.as_bytes()),
            }
        },
    );
    match result {
        Ok(()) => Ok(0),
        Err(e) => {
            fail(&e);
            Ok(1)
        }
    }
}

/// docker's units.HumanDuration.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs < 1 {
        return "Less than a second".into();
    }
    if secs == 1 {
        return "1 second".into();
    }
    if secs < 60 {
        return format!("{secs} seconds");
    }
    let minutes = secs / 60;
    if minutes == 1 {
        return "About a minute".into();
    }
    if minutes < 60 {
        return format!("{minutes} minutes");
    }
    let hours = (d.as_secs_f64() / 3600.0 + 0.5) as u64;
    if hours == 1 {
        return "About an hour".into();
    }
    if hours < 48 {
        return format!("{hours} hours");
    }
    if hours < 24 * 7 * 2 {
        return format!("{} days", hours / 24);
    }
    if hours < 24 * 30 * 2 {
        return format!("{} weeks", hours / 24 / 7);
    }
    if hours < 24 * 365 * 2 {
        return format!("{} months", hours / 24 / 30);
    }
    format!("{} years", hours / 24 / 365)
}

fn since(ns: i64) -> Duration {
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    Duration::from_nanos(u64::try_from(now.saturating_sub(ns)).unwrap_or(0))
}

/// docker's STATUS column.
fn status_text(c: &ContainerSummary) -> String {
    match c.status {
        Status::Created => "Created".into(),
        Status::Running => format!("Up {}", human_duration(since(c.started_at))),
        Status::Exited => format!(
            "Exited ({}) {} ago",
            c.exit_code,
            human_duration(since(c.finished_at))
        ),
        Status::Removing => "Removal In Progress".into(),
    }
}

/// The command as docker's ps shows it: quoted, truncated to 20 characters with an ellipsis.
fn command_text(c: &ContainerSummary, no_trunc: bool) -> String {
    let command = c.command.join(" ");
    let command = if !no_trunc && command.chars().count() > 20 {
        format!("{}…", command.chars().take(19).collect::<String>())
    } else {
        command
    };
    format!("\"{command}\"")
}

pub fn created_text(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns)
        .format("%Y-%m-%d %H:%M:%S %z UTC")
        .to_string()
}

/// The values a `ps --format` template sees, as docker's container context gives them.
fn ps_context(c: &ContainerSummary, no_trunc: bool) -> serde_json::Value {
    let labels: Vec<String> = c.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mounts: Vec<String> = c
        .mounts
        .iter()
        .map(|(host, _)| host.display().to_string())
        .collect();
    serde_json::json!({
        "ID": if no_trunc { c.id.clone() } else { c.id[..12].to_owned() },
        "Names": c.name,
        "Image": c.image,
        "Command": command_text(c, no_trunc),
        "CreatedAt": created_text(c.created),
        "RunningFor": format!("{} ago", human_duration(since(c.created))),
        "Ports": "",
        "Status": status_text(c),
        "State": c.status.as_str(),
        "Size": "0B",
        "Labels": labels.join(","),
        "LabelMap": c.labels,
        "Mounts": mounts.join(","),
        "Networks": "host",
        "LocalVolumes": "0",
    })
}

const PS_TITLES: [(&str, &str); 14] = [
    ("ID", "CONTAINER ID"),
    ("Names", "NAMES"),
    ("Image", "IMAGE"),
    ("Command", "COMMAND"),
    ("CreatedAt", "CREATED AT"),
    ("RunningFor", "CREATED"),
    ("Ports", "PORTS"),
    ("Status", "STATUS"),
    ("State", "STATE"),
    ("Size", "SIZE"),
    ("Labels", "LABELS"),
    ("Mounts", "MOUNTS"),
    ("Networks", "NETWORKS"),
    ("LocalVolumes", "LOCAL VOLUMES"),
];

const PS_DEFAULT: &str =
    "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}";

/// One `--filter key=value` of `ps`.
fn matches(c: &ContainerSummary, key: &str, value: &str) -> bool {
    match key {
        "id" => c.id.starts_with(value) || c.id.contains(value),
        "name" => c.name.contains(value.trim_start_matches('/')),
        "label" => match value.split_once('=') {
            Some((k, v)) => c.labels.get(k).is_some_and(|l| l == v),
            None => c.labels.contains_key(value),
        },
        "status" => c.status.as_str() == value,
        "ancestor" => {
            let strip = |s: &str| s.strip_suffix(":latest").unwrap_or(s).to_owned();
            strip(&c.image) == strip(value)
                || c.image_id.to_string() == value
                || c.image_id
                    .hex()
                    .starts_with(value.trim_start_matches("sha256:"))
        }
        _ => false,
    }
}

const PS_FILTERS: [&str; 5] = ["id", "name", "label", "status", "ancestor"];

pub fn ps(engine: &Engine, args: &PsArgs) -> anyhow::Result<i32> {
    let mut filters: Vec<(String, String)> = Vec::new();
    for f in &args.filter {
        let Some((k, v)) = f.split_once('=') else {
            anyhow::bail!("bad format of filter (expected name=value)");
        };
        if !PS_FILTERS.contains(&k) {
            anyhow::bail!("invalid filter '{k}'");
        }
        if k == "status"
            && ![
                "created",
                "restarting",
                "running",
                "removing",
                "paused",
                "exited",
                "dead",
            ]
            .contains(&v)
        {
            anyhow::bail!(
                "invalid filter 'status={v}': give one of created, restarting, running, \
                 removing, paused, exited or dead"
            );
        }
        filters.push((k.to_owned(), v.to_owned()));
    }
    // A status filter looks at stopped containers too, as docker's does.
    let all = args.all
        || args.latest
        || args.last.is_some()
        || filters.iter().any(|(k, v)| k == "status" && v != "running");
    let mut list = engine.list(all)?;
    // Filters of one key are alternatives; different keys must all match.
    list.retain(|c| {
        PS_FILTERS.iter().all(|key| {
            let mut values = filters.iter().filter(|(k, _)| k == key).peekable();
            values.peek().is_none() || values.any(|(_, v)| matches(c, key, v))
        })
    });
    if args.latest {
        list.truncate(1);
    } else if let Some(n) = args.last {
        list.truncate(n);
    }
    if args.quiet {
        for c in &list {
            println!("{}", if args.no_trunc { &c.id } else { &c.id[..12] });
        }
        return Ok(0);
    }
    let format = match args.format.as_deref() {
        None | Some("table") => PS_DEFAULT.to_owned(),
        Some("json") => "{{json .}}".to_owned(),
        Some(f) => f.to_owned(),
    };
    let template = Template::parse(&format).map_err(template_error)?;
    let values: Vec<serde_json::Value> =
        list.iter().map(|c| ps_context(c, args.no_trunc)).collect();
    print!(
        "{}",
        template
            .render_all(&values, &PS_TITLES)
            .map_err(template_error)?
    );
    Ok(0)
}

pub fn inspect(engine: &Engine, args: &InspectArgs) -> anyhow::Result<i32> {
    let template = args
        .format
        .as_deref()
        .map(Template::parse)
        .transpose()
        .map_err(template_error)?;
    let mut found = Vec::new();
    let mut code = 0;
    for name in &args.objects {
        let container = match args.kind.as_deref() {
            None | Some("container") => match engine.inspect_container(name) {
                Ok(v) => Some(v),
                Err(EngineError::Container(skiff::ContainerError::NotFound(_))) => None,
                Err(e) => return Err(e.into()),
            },
            Some("image") => None,
            Some(other) => anyhow::bail!("\"{other}\" is not a valid value for --type"),
        };
        let value = match container {
            Some(v) => Some(v),
            None if args.kind.as_deref() != Some("container") => engine.inspect(name).ok(),
            None => None,
        };
        match value {
            Some(v) => found.push(v),
            None => {
                let what = match args.kind.as_deref() {
                    Some("container") => "container",
                    Some("image") => "image",
                    _ => "object",
                };
                eprintln!("Error: No such {what}: {name}");
                code = 1;
            }
        }
    }
    match template {
        Some(t) => {
            for v in &found {
                println!("{}", t.render(v).map_err(template_error)?);
            }
        }
        None => println!("{}", pretty(&serde_json::Value::Array(found))?),
    }
    Ok(code)
}

/// JSON indented with four spaces, as docker prints it.
pub fn pretty(value: &serde_json::Value) -> anyhow::Result<String> {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    serde::Serialize::serialize(value, &mut ser)?;
    Ok(String::from_utf8(out)?)
}
