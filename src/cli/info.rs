//! `skiff info`.

use clap::{Args, ValueEnum};

use skiff::Engine;

/// Output format of `skiff info`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    /// Human-readable lines.
    Text,
    /// One JSON object.
    Json,
}

/// Arguments of `skiff info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Output format
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

/// Prints the engine and host description.
pub fn run(engine: &Engine, args: &InfoArgs) -> anyhow::Result<i32> {
    let info = engine.info();
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&info)?),
        Format::Text => {
            println!("version:       {}", info.version);
            println!("root:          {}", info.root.display());
            println!("rootless:      {}", info.rootless);
            println!(
                "cgroup layout: {}",
                serde_json::to_value(info.cgroup_layout)?
                    .as_str()
                    .unwrap_or("?")
            );
            println!("kernel:        {}", info.kernel);
            println!("architecture:  {}", info.architecture);
        }
    }
    Ok(0)
}
