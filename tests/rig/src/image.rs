//! OCI and Docker images built in memory: layers, config, manifest, index / manifest list.

use std::io::Write;

use anyhow::Result;
use rootfs_cache::Digest;
use serde_json::{Value, json};

use crate::entry::{self, Entry};

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config media type.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker schema2 manifest media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list media type.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config media type.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Which manifest family an image uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OCI image manifest / index.
    Oci,
    /// Docker schema2 manifest / manifest list.
    Docker,
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// gzip (the common case), at the fastest level (quick to build in tests; zlib-rs then
    /// writes few, long deflate blocks).
    Gzip,
    /// gzip at the default level, as docker and BuildKit write layers: deflate blocks a few
    /// dozen KiB apart (what a lazy index checkpoints).
    GzipDefault,
    /// zstd.
    Zstd,
    /// A plain tar.
    None,
}

impl Compression {
    /// Compresses a tar stream.
    pub fn compress(self, tar: &[u8]) -> Result<Vec<u8>> {
        Ok(match self {
            Self::Gzip | Self::GzipDefault => {
                let level = if self == Self::Gzip {
                    flate2::Compression::fast()
                } else {
                    flate2::Compression::default()
                };
                let mut enc = flate2::write::GzEncoder::new(Vec::new(), level);
                enc.write_all(tar)?;
                enc.finish()?
            }
            Self::Zstd => zstd::encode_all(tar, 3)?,
            Self::None => tar.to_vec(),
        })
    }

    /// The layer media type for this compression in the given manifest family.
    pub fn media_type(self, format: Format) -> &'static str {
        match (format, self) {
            (Format::Docker, Self::Gzip | Self::GzipDefault) => {
                "application/vnd.docker.image.rootfs.diff.tar.gzip"
            }
            (Format::Docker, Self::None) => "application/vnd.docker.image.rootfs.diff.tar",
            (_, Self::Gzip | Self::GzipDefault) => "application/vnd.oci.image.layer.v1.tar+gzip",
            (_, Self::Zstd) => "application/vnd.oci.image.layer.v1.tar+zstd",
            (Format::Oci, Self::None) => "application/vnd.oci.image.layer.v1.tar",
        }
    }
}

/// A content-addressed blob with its media type.
#[derive(Debug, Clone)]
pub struct Blob {
    /// The bytes as stored in the registry.
    pub bytes: Vec<u8>,
    /// sha256 of `bytes`.
    pub digest: Digest,
    /// Media type a descriptor gives it.
    pub media_type: String,
}

impl Blob {
    /// Wraps bytes, computing their digest.
    pub fn new(bytes: Vec<u8>, media_type: impl Into<String>) -> Self {
        Self {
            digest: Digest::of(&bytes),
            bytes,
            media_type: media_type.into(),
        }
    }

    /// The OCI descriptor of this blob.
    pub fn descriptor(&self) -> Value {
        json!({
            "mediaType": self.media_type,
            "digest": self.digest.to_string(),
            "size": self.bytes.len(),
        })
    }
}

/// A compressed layer blob and the digest of its uncompressed tar (the diff_id).
#[derive(Debug, Clone)]
pub struct Layer {
    /// The compressed blob.
    pub blob: Blob,
    /// sha256 of the uncompressed tar stream.
    pub diff_id: Digest,
}

impl Layer {
    /// Compresses a tar stream into a layer.
    pub fn from_tar(tar: &[u8], compression: Compression, format: Format) -> Result<Self> {
        Ok(Self {
            blob: Blob::new(compression.compress(tar)?, compression.media_type(format)),
            diff_id: Digest::of(tar),
        })
    }
}

/// An image's platform (os, architecture, variant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// Operating system, e.g. linux.
    pub os: String,
    /// Architecture in OCI terms, e.g. amd64.
    pub architecture: String,
    /// Optional CPU variant, e.g. v8.
    pub variant: Option<String>,
}

impl Platform {
    /// linux on the given architecture.
    pub fn linux(architecture: &str) -> Self {
        Self {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: None,
        }
    }

    /// The platform of this machine.
    pub fn host() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        Self::linux(arch)
    }

    fn to_json(&self) -> Value {
        let mut v = json!({ "os": self.os, "architecture": self.architecture });
        if let Some(variant) = &self.variant {
            v["variant"] = json!(variant);
        }
        v
    }
}

/// Builds one single-platform image.
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    format: Format,
    platform: Platform,
    layers: Vec<Layer>,
    config: Value,
}

impl ImageBuilder {
    /// A new image of the host platform, no layers, empty config.
    pub fn new(format: Format) -> Self {
        Self {
            format,
            platform: Platform::host(),
            layers: Vec::new(),
            config: json!({}),
        }
    }

    /// Adds a layer from a raw tar stream.
    pub fn layer_tar(mut self, tar: &[u8], compression: Compression) -> Result<Self> {
        self.layers
            .push(Layer::from_tar(tar, compression, self.format)?);
        Ok(self)
    }

    /// Adds a layer from tar entries (names written verbatim).
    pub fn layer(self, entries: &[Entry], compression: Compression) -> Result<Self> {
        let tar = entry::tar(entries)?;
        self.layer_tar(&tar, compression)
    }

    /// Adds a layer from a directory tree.
    pub fn layer_dir(self, dir: &std::path::Path, compression: Compression) -> Result<Self> {
        let entries = entry::entries_from_dir(dir)?;
        self.layer(&entries, compression)
    }

    /// Sets the platform.
    pub fn platform(mut self, platform: Platform) -> Self {
        self.platform = platform;
        self
    }

    /// Sets `config.Entrypoint`.
    pub fn entrypoint(self, args: &[&str]) -> Self {
        self.config_field("Entrypoint", json!(args))
    }

    /// Sets `config.Cmd`.
    pub fn cmd(self, args: &[&str]) -> Self {
        self.config_field("Cmd", json!(args))
    }

    /// Sets `config.Env` (`KEY=VALUE` strings).
    pub fn env(self, vars: &[&str]) -> Self {
        self.config_field("Env", json!(vars))
    }

    /// Sets `config.WorkingDir`.
    pub fn working_dir(self, dir: &str) -> Self {
        self.config_field("WorkingDir", json!(dir))
    }

    /// Sets `config.User`.
    pub fn user(self, user: &str) -> Self {
        self.config_field("User", json!(user))
    }

    /// Sets any other `config` field, e.g. Labels or StopSignal.
    pub fn config_field(mut self, key: &str, value: Value) -> Self {
        self.config[key] = value;
        self
    }

    /// Serialises config and manifest.
    pub fn build(self) -> Result<Image> {
        let (manifest_type, config_type) = match self.format {
            Format::Oci => (OCI_MANIFEST, OCI_CONFIG),
            Format::Docker => (DOCKER_MANIFEST, DOCKER_CONFIG),
        };
        let mut config = self.platform.to_json();
        config["created"] = json!("2023-11-14T22:13:20Z");
        config["config"] = self.config;
        config["rootfs"] = json!({
            "type": "layers",
            "diff_ids": self.layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>(),
        });
        config["history"] = self
            .layers
            .iter()
            .map(|_| json!({ "created_by": "skiff-test-rig" }))
            .collect();
        let config = Blob::new(serde_json::to_vec(&config)?, config_type);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": config.descriptor(),
            "layers": self.layers.iter().map(|l| l.blob.descriptor()).collect::<Vec<_>>(),
        });
        let manifest = Blob::new(serde_json::to_vec_pretty(&manifest)?, manifest_type);
        Ok(Image {
            format: self.format,
            platform: self.platform,
            manifest,
            config,
            layers: self.layers,
        })
    }
}

/// A built single-platform image.
#[derive(Debug, Clone)]
pub struct Image {
    /// Manifest family.
    pub format: Format,
    /// Its platform.
    pub platform: Platform,
    /// The manifest blob (its digest is the image's manifest digest).
    pub manifest: Blob,
    /// The config blob.
    pub config: Blob,
    /// Layers, bottom first.
    pub layers: Vec<Layer>,
}

/// A multi-platform image: an OCI index or a Docker manifest list.
#[derive(Debug, Clone)]
pub struct Index {
    /// The index / manifest list blob.
    pub manifest: Blob,
    /// The per-platform images it points to.
    pub images: Vec<Image>,
}

impl Index {
    /// Builds an index over images; the format decides OCI index vs Docker manifest list.
    pub fn new(format: Format, images: Vec<Image>) -> Result<Self> {
        let media_type = match format {
            Format::Oci => OCI_INDEX,
            Format::Docker => DOCKER_MANIFEST_LIST,
        };
        let manifests: Vec<Value> = images
            .iter()
            .map(|img| {
                let mut d = img.manifest.descriptor();
                d["platform"] = img.platform.to_json();
                d
            })
            .collect();
        let index = json!({ "schemaVersion": 2, "mediaType": media_type, "manifests": manifests });
        Ok(Self {
            manifest: Blob::new(serde_json::to_vec_pretty(&index)?, media_type),
            images,
        })
    }

    /// An index over two one-layer images, `linux/amd64` and `linux/arm64/v8`, each with a
    /// file `arch` holding `marker(architecture)`.
    pub fn amd64_and_arm64(format: Format, marker: impl Fn(&str) -> String) -> Result<Self> {
        let arm = Platform {
            variant: Some("v8".into()),
            ..Platform::linux("arm64")
        };
        let images = [Platform::linux("amd64"), arm]
            .into_iter()
            .map(|platform| {
                let content = marker(&platform.architecture);
                ImageBuilder::new(format)
                    .platform(platform)
                    .layer(&[Entry::file("arch", content)], Compression::Gzip)?
                    .build()
            })
            .collect::<Result<Vec<_>>>()?;
        Self::new(format, images)
    }
}
