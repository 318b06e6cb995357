//! `skiff gc` and `skiff verify`.

use clap::Args;
use skiff::GcOptions;

use super::{Format, human_size, parse_size};
use skiff::Engine;

/// Arguments of `skiff gc`.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// Also remove least recently used images until the store fits (e.g. 10G)
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    budget: Option<u64>,
    /// Report what would be removed without removing it
    #[arg(long)]
    dry_run: bool,
    /// Output format
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

/// Arguments of `skiff verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Output format
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

/// Collects garbage.
pub fn gc(engine: &Engine, args: &GcArgs) -> anyhow::Result<i32> {
    let report = engine.gc(&GcOptions {
        budget_bytes: args.budget,
        dry_run: args.dry_run,
    })?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Table => {
            let verb = if report.dry_run {
                "would remove"
            } else {
                "removed"
            };
            println!(
                "{verb} {} layers, {} blobs, {} images, {} dead runs, {} tmp entries; {} freed, {} in use",
                report.removed_layers.len(),
                report.removed_blobs.len(),
                report.removed_images.len(),
                report.removed_runs.len(),
                report.removed_tmp.len(),
                human_size(report.bytes_freed),
                human_size(report.bytes_after)
            );
            for kept in &report.kept_busy {
                println!("kept {}: {}", kept.path.display(), kept.reason);
            }
            if report.over_budget {
                println!("still over budget: everything left is in use");
            }
        }
    }
    Ok(0)
}

/// Verifies the store; exit 1 when something is corrupt.
pub fn verify(engine: &Engine, args: &VerifyArgs) -> anyhow::Result<i32> {
    let report = engine.verify()?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Table => {
            for f in &report.corrupt {
                println!("corrupt  {}: {}", f.path.display(), f.reason);
            }
            for f in &report.orphaned {
                println!("orphaned {}: {}", f.path.display(), f.reason);
            }
            if report.is_clean() {
                println!("store is consistent");
            } else if report.corrupt.is_empty() {
                println!("no corruption; `skiff gc` removes the orphaned entries");
            }
        }
    }
    Ok(if report.corrupt.is_empty() { 0 } else { 1 })
}
