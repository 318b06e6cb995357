//! `skiff-rig`: pushes the demo images into a running registry.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use skiff_test_rig::{Compression, Format, RegistryClient, busybox};

/// Local registry and demo images for skiff's README, tests and benches.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build the busybox fixture image and push it as REPO:TAG
    PushBusybox {
        /// Registry URL
        #[arg(long, default_value = "http://127.0.0.1:5000")]
        registry: String,
        /// Repository and tag
        #[arg(default_value = "demo/busybox:latest")]
        name: String,
        /// Push a Docker schema2 manifest instead of OCI
        #[arg(long)]
        docker: bool,
    },
}

fn main() -> Result<()> {
    match Args::parse().command {
        Cmd::PushBusybox {
            registry,
            name,
            docker,
        } => {
            let (repo, tag) = name.rsplit_once(':').context("NAME must be REPO:TAG")?;
            let format = if docker { Format::Docker } else { Format::Oci };
            let image = busybox::image(format, Compression::Gzip)?;
            RegistryClient::new(&registry, None, None)?.push_image(repo, tag, &image)?;
            println!("{}", image.manifest.digest);
            Ok(())
        }
    }
}
