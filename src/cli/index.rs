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
    /// Mount an image read-only through its index until interrupted (root; nothing is pulled)
    Mount(MountArgs),
}

#[derive(Debug, Args)]
struct MountArgs {
    /// The image
    image: String,
    /// An existing directory to mount it on
    dir: std::path::PathBuf,
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
                    "{}: indexed {} layers ({} entries, {} of tables, {} of windows; a file \
                     read inflates at most {} more than it needs) as {}, found by {}",
                    reference.familiar(),
                    report.layers,
                    report.entries,
                    super::human_size(report.table_bytes),
                    super::human_size(report.window_bytes),
                    super::human_size(report.longest_span),
                    report.artifact,
                    report.published_as
                );
            }
            Ok(0)
        }
        IndexCommand::Mount(a) => {
            use nix::sys::signal::{SigSet, Signal};
            let reference = Reference::parse(&a.image)?;
            // Blocked before the file system's threads start, so they inherit the mask and
            // this thread receives the signal that ends the mount.
            let mut signals = SigSet::empty();
            signals.add(Signal::SIGINT);
            signals.add(Signal::SIGTERM);
            signals.thread_block()?;
            let mount = engine.mount_lazily(&reference, &a.dir)?;
            eprintln!(
                "{} mounted at {} (files are fetched as they are read); Ctrl-C unmounts",
                reference.familiar(),
                mount.target().display()
            );
            signals.wait()?;
            drop(mount);
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
