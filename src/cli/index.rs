//! `skiff index`: lazy-start indexes.

use std::io::Write;

use clap::{Args, Subcommand};
use skiff::{Engine, Reference};

/// `skiff index`.
#[derive(Debug, Args)]
pub struct IndexArgs {
    #[command(subcommand)]
    command: IndexCommand,
}

#[derive(Debug, Subcommand)]
enum IndexCommand {
    /// Build an image's lazy-start index from its layers and publish it in its repository
    Push(PushArgs),
    /// Print one file of an image, read through its index (nothing is pulled)
    Cat(CatArgs),
}

#[derive(Debug, Args)]
struct PushArgs {
    /// The image, e.g. host:5000/tools/terraform:1.9
    image: String,
    /// Print only the index's digest
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Debug, Args)]
struct CatArgs {
    /// The image
    image: String,
    /// The file's absolute path in the image
    path: String,
}

/// Runs `skiff index …`.
pub fn run(engine: &Engine, args: &IndexArgs) -> anyhow::Result<i32> {
    match &args.command {
        IndexCommand::Push(a) => {
            let reference = Reference::parse(&a.image)?;
            let report = engine.push_index(&reference)?;
            if a.quiet {
                println!("{}", report.artifact);
            } else {
                println!(
                    "{}: indexed {} layers ({} entries, {} of tables; a file read inflates at \
                     most {} more than it needs) as {}, found by {}",
                    reference.familiar(),
                    report.layers,
                    report.entries,
                    super::human_size(report.table_bytes),
                    super::human_size(report.longest_span),
                    report.artifact,
                    report.published_as
                );
            }
            Ok(0)
        }
        IndexCommand::Cat(a) => {
            let reference = Reference::parse(&a.image)?;
            let content = engine.read_file_lazily(&reference, &a.path)?;
            std::io::stdout().lock().write_all(&content)?;
            Ok(0)
        }
    }
}
