//! `skiff images`, `skiff inspect`, `skiff rmi`.

use clap::Args;

use super::{Format, human_size};
use skiff::Engine;

/// Arguments of `skiff images`.
#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Output format
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Print only image ids
    #[arg(short, long)]
    quiet: bool,
}

/// Arguments of `skiff inspect`.
/// Arguments of `skiff rmi`.
#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Image names, ids or digests
    #[arg(required = true)]
    images: Vec<String>,
}

fn age(secs: u64) -> String {
    let now = rootfs_cache::records::now();
    let d = now.saturating_sub(secs);
    match d {
        0..=59 => "Less than a minute ago".into(),
        60..=3599 => format!("{} minutes ago", d / 60),
        3600..=86399 => format!("{} hours ago", d / 3600),
        _ => format!("{} days ago", d / 86400),
    }
}

/// Lists images.
pub fn list(engine: &Engine, args: &ImagesArgs) -> anyhow::Result<i32> {
    let images = engine.images()?;
    if args.quiet {
        for img in &images {
            println!("{}", img.id.short());
        }
        return Ok(0);
    }
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&images)?),
        Format::Table => {
            println!(
                "{:<50} {:<20} {:<14} {:<24} {:>10}",
                "REPOSITORY", "TAG", "IMAGE ID", "PULLED", "SIZE"
            );
            for img in &images {
                let names = if img.names.is_empty() {
                    vec!["<none>:<none>".to_owned()]
                } else {
                    img.names.clone()
                };
                for name in names {
                    let (repo, tag) = name.rsplit_once(':').unwrap_or((&name, "<none>"));
                    println!(
                        "{:<50} {:<20} {:<14} {:<24} {:>10}",
                        repo,
                        tag,
                        img.id.short(),
                        age(img.created_at),
                        human_size(img.size)
                    );
                }
            }
        }
    }
    Ok(0)
}

/// Prints an image's config.
/// Removes images; like docker, goes on with the others when one fails.
pub fn rmi(engine: &Engine, args: &RmiArgs) -> anyhow::Result<i32> {
    let mut failed = false;
    for image in &args.images {
        match engine.remove_image(image) {
            Ok(lines) => lines.iter().for_each(|l| println!("{l}")),
            Err(e) => {
                eprintln!("skiff: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}
