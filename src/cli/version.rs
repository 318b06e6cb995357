//! `skiff version`: the client and "server" versions, docker's shape (there is no server: the
//! engine is the library in this binary), for tools that ask `{{.Server.APIVersion}}`.

use clap::Args;
use skiff::template::Template;

/// The docker Engine API version whose behaviour skiff's commands follow (docker 24).
const API_VERSION: &str = "1.43";

#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Format output using a Go template
    #[arg(short, long, value_name = "TEMPLATE")]
    format: Option<String>,
}

pub fn run(args: &VersionArgs) -> anyhow::Result<i32> {
    let version = env!("CARGO_PKG_VERSION");
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let part = serde_json::json!({
        "Version": version,
        "ApiVersion": API_VERSION,
        "APIVersion": API_VERSION,
        "MinAPIVersion": "1.24",
        "Os": "linux",
        "Arch": arch,
        "GoVersion": "none (skiff is written in Rust)",
    });
    let value = serde_json::json!({
        "Client": part,
        "Server": part,
    });
    match &args.format {
        Some(f) => {
            let t = Template::parse(f).map_err(super::template_error)?;
            println!("{}", t.render(&value).map_err(super::template_error)?);
        }
        None => {
            for (title, _) in [
                ("Client: skiff", ()),
                ("Server: skiff (daemonless, in-process)", ()),
            ] {
                println!("{title}");
                println!(" Version:           {version}");
                println!(" API version:       {API_VERSION}");
                println!(" OS/Arch:           linux/{arch}");
                println!();
            }
        }
    }
    Ok(0)
}
