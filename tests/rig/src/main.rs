//! `skiff-rig`: pushes the demo images into a running registry; makes and unpacks bench layers.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use skiff_test_rig::{Compression, Format, RegistryClient, busybox};

mod layers_from_dirs;

/// Local registry and demo images for skiff's README, tests and benches.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Write a synthetic layer (gzip) for benchmarks, with FILE.json holding its digests
    GenLayer {
        /// Output blob
        out: std::path::PathBuf,
        /// Seed (different seeds, different layers)
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Small files
        #[arg(long, default_value_t = 30_000)]
        files: usize,
        /// Also write the uncompressed tar here
        #[arg(long)]
        tar: Option<std::path::PathBuf>,
    },
    /// Commit layer blobs written by gen-layer into a rootfs-cache store, all at once
    Unpack {
        /// Store root (created if missing)
        #[arg(long)]
        root: std::path::PathBuf,
        /// Layer blobs (each with its FILE.json)
        #[arg(required = true)]
        blobs: Vec<std::path::PathBuf>,
    },
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
    /// Record every path under DIR (inode, size, mode, owner, mtime, ctime) for diff-layer
    Snapshot {
        /// Root filesystem
        dir: std::path::PathBuf,
        /// Snapshot file to write
        out: std::path::PathBuf,
    },
    /// Write what changed under DIR since a snapshot as a tar layer (with parent directories
    /// and whiteouts); without --since, the whole tree
    DiffLayer {
        /// Root filesystem
        dir: std::path::PathBuf,
        /// Snapshot taken before the step (from `snapshot`)
        #[arg(long)]
        since: Option<std::path::PathBuf>,
        /// Layer tar to write
        out: std::path::PathBuf,
    },
    /// Serve a worker-like link to a registry until killed: a proxy on LISTEN to UPSTREAM
    /// with a shared bandwidth limit and a round-trip delay
    Link {
        /// Address to listen on
        #[arg(long, default_value = "127.0.0.1:5001")]
        listen: std::net::SocketAddr,
        /// The registry's address
        #[arg(long, default_value = "127.0.0.1:5000")]
        upstream: std::net::SocketAddr,
        /// Bandwidth in bytes per second, shared by all connections (0: unlimited)
        #[arg(long, default_value_t = 25_000_000)]
        rate: u64,
        /// Round-trip time in milliseconds
        #[arg(long, default_value_t = 20)]
        rtt_ms: u64,
    },
    /// Gzip tar layers (cached as LAYER.gz) and push them as one OCI image REPO:TAG
    PushLayers {
        /// Registry URL
        #[arg(long, default_value = "http://127.0.0.1:5000")]
        registry: String,
        /// Repository and tag
        name: String,
        /// Layer tars, bottom first
        #[arg(long = "layer", required = true)]
        layers: Vec<std::path::PathBuf>,
        /// gzip level (6 is gzip's and docker's default)
        #[arg(long, default_value_t = 6)]
        level: u32,
        /// config.Cmd of the image
        #[arg(long, default_value = "bash")]
        cmd: Vec<String>,
    },
}

fn sidecar(blob: &std::path::Path) -> std::path::PathBuf {
    let mut s = blob.as_os_str().to_owned();
    s.push(".json");
    s.into()
}

fn main() -> Result<()> {
    match Args::parse().command {
        Cmd::GenLayer {
            out,
            seed,
            files,
            tar,
        } => {
            let shape = skiff_test_rig::synth::LayerShape {
                seed,
                small_files: files,
                ..Default::default()
            };
            let raw = skiff_test_rig::entry::tar(&skiff_test_rig::synth::entries(shape))?;
            let layer =
                skiff_test_rig::image::Layer::from_tar(&raw, Compression::Gzip, Format::Oci)?;
            std::fs::write(&out, &layer.blob.bytes)?;
            if let Some(tar) = tar {
                std::fs::write(tar, &raw)?;
            }
            let meta = serde_json::json!({
                "digest": layer.blob.digest.to_string(),
                "diff_id": layer.diff_id.to_string(),
                "media_type": layer.blob.media_type,
                "tar_bytes": raw.len(),
                "entries": files + 4,
            });
            std::fs::write(sidecar(&out), serde_json::to_vec_pretty(&meta)?)?;
            println!("{meta}");
            Ok(())
        }
        Cmd::Unpack { root, blobs } => {
            let store = rootfs_cache::Store::open(&root)?;
            std::thread::scope(|s| -> Result<()> {
                let handles: Vec<_> = blobs
                    .iter()
                    .map(|blob| {
                        let store = &store;
                        s.spawn(move || -> Result<()> {
                            let meta: serde_json::Value =
                                serde_json::from_slice(&std::fs::read(sidecar(blob))?)?;
                            let field = |k: &str| {
                                meta[k].as_str().map(str::to_owned).context("bad sidecar")
                            };
                            let digest = rootfs_cache::Digest::parse(&field("digest")?)?;
                            let diff_id = rootfs_cache::Digest::parse(&field("diff_id")?)?;
                            let file = std::fs::File::open(blob)?;
                            store.commit_layer(&digest, &diff_id, &field("media_type")?, file)?;
                            Ok(())
                        })
                    })
                    .collect();
                for h in handles {
                    h.join()
                        .map_err(|_| anyhow::anyhow!("unpack thread panicked"))??;
                }
                Ok(())
            })
        }
        Cmd::Link {
            listen,
            upstream,
            rate,
            rtt_ms,
        } => {
            let proxy = skiff_test_rig::FaultProxy::start_on(listen, upstream, vec![])?;
            proxy.set_link(skiff_test_rig::Link {
                bytes_per_sec: (rate > 0).then_some(rate),
                round_trip: std::time::Duration::from_millis(rtt_ms),
            });
            println!(
                "link: {} -> {upstream}, {rate} B/s, {rtt_ms} ms round trip",
                proxy.url()
            );
            loop {
                std::thread::park();
            }
        }
        Cmd::Snapshot { dir, out } => layers_from_dirs::snapshot(&dir, &out),
        Cmd::DiffLayer { dir, since, out } => {
            layers_from_dirs::diff_layer(&dir, since.as_deref(), &out)
        }
        Cmd::PushLayers {
            registry,
            name,
            layers,
            level,
            cmd,
        } => layers_from_dirs::push_layers(&registry, &name, &layers, level, &cmd),
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
