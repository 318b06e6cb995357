//! `skiff pull`.

use clap::Args;
use skiff::{Engine, PullOptions, Reference};

/// Arguments of `skiff pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// Image to pull, e.g. busybox, ghcr.io/acme/tools:1.2, host:5000/app@sha256:…
    image: String,
    /// Print only the image's manifest digest
    #[arg(short, long)]
    pub quiet: bool,
    /// Platform to select from a multi-platform image (os/arch[/variant])
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<String>,
    /// Layers to download at once [default: 6, or max_concurrent_downloads in the config]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    max_concurrent_downloads: Option<u16>,
}

/// Pulls the image and prints its digest.
pub fn run(engine: &Engine, args: &PullArgs) -> anyhow::Result<i32> {
    let reference = Reference::parse(&args.image)?;
    let options = PullOptions {
        platform: args.platform.clone(),
        max_concurrent: args.max_concurrent_downloads.map(usize::from),
    };
    let report = engine.pull(&reference, &options)?;
    if args.quiet {
        println!("{}", report.manifest);
    } else {
        eprintln!(
            "layers: {} downloaded ({}), {} already present, in {:.2?}",
            report.downloaded_layers,
            super::human_size(report.downloaded_bytes),
            report.cached_layers,
            report.elapsed
        );
        println!("Digest: {}", report.manifest);
        // docker's words: a pull that fetched nothing found the image up to date.
        let status = if report.downloaded_layers == 0 {
            "Image is up to date for"
        } else {
            "Downloaded newer image for"
        };
        println!("Status: {status} {}", reference.familiar());
    }
    Ok(0)
}
