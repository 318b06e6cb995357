//! `skiff network create/rm/prune/ls/inspect`: named networks on host networking.

use std::io::BufRead as _;

use clap::{Args, Subcommand};
use skiff::template::Template;
use skiff::{Engine, NetworkSummary};

use super::{fail, template_error};

/// `skiff network`.
#[derive(Debug, Args)]
pub struct NetworkArgs {
    #[command(subcommand)]
    command: NetworkCommand,
}

#[derive(Debug, Subcommand)]
enum NetworkCommand {
    /// Create a network (members share the host's network and find each other by name)
    Create(CreateArgs),
    /// Remove one or more networks
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
    /// Remove all networks no running container is in
    Prune(PruneArgs),
    /// List networks
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Display detailed information on one or more networks
    Inspect(InspectArgs),
}

#[derive(Debug, Args)]
struct CreateArgs {
    /// Set metadata on a network (KEY=VALUE or KEY)
    #[arg(long)]
    label: Vec<String>,
    /// Driver: only host networking exists (bridge is taken as host, with a warning)
    #[arg(short, long, default_value = "host")]
    driver: String,
    /// The network's name
    name: String,
}

#[derive(Debug, Args)]
struct RmArgs {
    /// Do not error if the network does not exist
    #[arg(short, long)]
    force: bool,
    /// Networks (names or ids)
    #[arg(required = true)]
    networks: Vec<String>,
}

#[derive(Debug, Args)]
struct PruneArgs {
    /// Do not prompt for confirmation
    #[arg(short, long)]
    force: bool,
    /// Provide filter values (label=KEY or label=KEY=VALUE)
    #[arg(long)]
    filter: Vec<String>,
}

#[derive(Debug, Args)]
struct LsArgs {
    /// Only display network IDs
    #[arg(short, long)]
    quiet: bool,
    /// Do not truncate the output
    #[arg(long)]
    no_trunc: bool,
    /// Provide filter values (id=, name=, label=, driver=)
    #[arg(short, long)]
    filter: Vec<String>,
    /// Format output using a Go template, `table`, `table TEMPLATE` or `json`
    #[arg(long)]
    format: Option<String>,
}

#[derive(Debug, Args)]
struct InspectArgs {
    /// Format output using a Go template
    #[arg(short, long)]
    format: Option<String>,
    /// Networks (names or ids)
    #[arg(required = true)]
    networks: Vec<String>,
}

/// Runs `skiff network …`.
pub fn run(engine: &Engine, args: &NetworkArgs) -> anyhow::Result<i32> {
    match &args.command {
        NetworkCommand::Create(a) => create(engine, a),
        NetworkCommand::Rm(a) => rm(engine, a),
        NetworkCommand::Prune(a) => prune(engine, a),
        NetworkCommand::Ls(a) => ls(engine, a),
        NetworkCommand::Inspect(a) => inspect(engine, a),
    }
}

fn create(engine: &Engine, args: &CreateArgs) -> anyhow::Result<i32> {
    match args.driver.as_str() {
        "host" => {}
        "bridge" => eprintln!(
            "skiff: a bridge network is not available: {} shares the host's network",
            args.name
        ),
        other => anyhow::bail!(
            "network driver {other:?} is not available (skiff networks share the host's network: \
             use -d host)"
        ),
    }
    match engine.create_network(&args.name, &super::run::labels(&args.label)) {
        Ok(id) => {
            println!("{id}");
            Ok(0)
        }
        Err(err) => {
            fail(&err);
            Ok(1)
        }
    }
}

fn rm(engine: &Engine, args: &RmArgs) -> anyhow::Result<i32> {
    let mut code = 0;
    for n in &args.networks {
        match engine.remove_network(n) {
            Ok(()) => println!("{n}"),
            Err(skiff::EngineError::Container(skiff::ContainerError::NetworkNotFound(_)))
                if args.force => {}
            Err(err) => {
                fail(&err);
                code = 1;
            }
        }
    }
    Ok(code)
}

fn prune(engine: &Engine, args: &PruneArgs) -> anyhow::Result<i32> {
    let mut labels = Vec::new();
    for f in &args.filter {
        match f.split_once('=') {
            Some(("label", l)) => labels.push(l.to_owned()),
            Some((k, _)) if k != "until" => anyhow::bail!("invalid filter '{k}'"),
            Some(_) => anyhow::bail!("the until filter is not supported by skiff"),
            None => anyhow::bail!("bad format of filter (expected name=value)"),
        }
    }
    if !args.force {
        eprint!(
            "WARNING! This will remove all custom networks not used by at least one container.\n\
             Are you sure you want to continue? [y/N] "
        );
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Ok(0);
        }
    }
    let removed = engine.prune_networks(&labels)?;
    if !removed.is_empty() {
        println!("Deleted Networks:");
        for n in removed {
            println!("{n}");
        }
        println!();
    }
    Ok(0)
}

fn context(n: &NetworkSummary, no_trunc: bool) -> serde_json::Value {
    let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    serde_json::json!({
        "ID": if no_trunc { n.id.as_str() } else { &n.id[..12] },
        "Name": n.name,
        "Driver": n.driver,
        "Scope": "local",
        "IPv6": "false",
        "Internal": "false",
        "Labels": labels.join(","),
        "CreatedAt": super::containers::created_text(n.created),
    })
}

const LS_DEFAULT: &str = "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}";
const LS_TITLES: [(&str, &str); 8] = [
    ("ID", "NETWORK ID"),
    ("Name", "NAME"),
    ("Driver", "DRIVER"),
    ("Scope", "SCOPE"),
    ("IPv6", "IPV6"),
    ("Internal", "INTERNAL"),
    ("Labels", "LABELS"),
    ("CreatedAt", "CREATED"),
];

fn ls(engine: &Engine, args: &LsArgs) -> anyhow::Result<i32> {
    let mut filters = Vec::new();
    for f in &args.filter {
        let Some((k, v)) = f.split_once('=') else {
            anyhow::bail!("bad format of filter (expected name=value)");
        };
        if !["id", "name", "label", "driver"].contains(&k) {
            anyhow::bail!("invalid filter '{k}'");
        }
        filters.push((k, v));
    }
    let mut list = engine.list_networks()?;
    list.retain(|n| {
        ["id", "name", "label", "driver"].iter().all(|key| {
            let mut values = filters.iter().filter(|(k, _)| k == key).peekable();
            values.peek().is_none()
                || values.any(|(_, v)| match *key {
                    "id" => n.id.starts_with(v),
                    "name" => n.name.contains(v),
                    "driver" => n.driver == *v,
                    _ => match v.split_once('=') {
                        Some((k, v)) => n.labels.get(k).is_some_and(|have| have == v),
                        None => n.labels.contains_key(*v),
                    },
                })
        })
    });
    if args.quiet {
        for n in &list {
            println!("{}", if args.no_trunc { &n.id } else { &n.id[..12] });
        }
        return Ok(0);
    }
    let format = match args.format.as_deref() {
        None | Some("table") => LS_DEFAULT.to_owned(),
        Some("json") => "{{json .}}".to_owned(),
        Some(f) => f.to_owned(),
    };
    let template = Template::parse(&format).map_err(template_error)?;
    let values: Vec<_> = list.iter().map(|n| context(n, args.no_trunc)).collect();
    print!(
        "{}",
        template
            .render_all(&values, &LS_TITLES)
            .map_err(template_error)?
    );
    Ok(0)
}

fn inspect(engine: &Engine, args: &InspectArgs) -> anyhow::Result<i32> {
    let list = engine.list_networks()?;
    let mut values = Vec::new();
    let mut code = 0;
    for name in &args.networks {
        let found = list
            .iter()
            .find(|n| &n.name == name || &n.id == name)
            .or_else(|| {
                let mut by_prefix = list.iter().filter(|n| n.id.starts_with(name.as_str()));
                match (by_prefix.next(), by_prefix.next()) {
                    (Some(n), None) => Some(n),
                    _ => None,
                }
            });
        match found {
            Some(n) => values.push(serde_json::json!({
                "Name": n.name,
                "Id": n.id,
                "Created": chrono::DateTime::from_timestamp_nanos(n.created)
                    .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
                "Scope": "local",
                "Driver": n.driver,
                "EnableIPv6": false,
                "Internal": false,
                "Attachable": false,
                "Containers": n.containers.iter().map(|c| (c.clone(), serde_json::json!({"Name": c})))
                    .collect::<serde_json::Map<_, _>>(),
                "Options": {},
                "Labels": n.labels,
            })),
            None => {
                eprintln!("Error response from daemon: network {name} not found");
                code = 1;
            }
        }
    }
    match &args.format {
        Some(f) => {
            let template = Template::parse(f).map_err(template_error)?;
            for v in &values {
                println!("{}", template.render(v).map_err(template_error)?);
            }
        }
        None => println!(
            "{}",
            super::containers::pretty(&serde_json::Value::Array(values))?
        ),
    }
    Ok(code)
}
