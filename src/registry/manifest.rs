//! Manifests, indexes and image configs as registries serve them (OCI and Docker schema2),
//! with the checks skiff makes before trusting one.

use serde::{Deserialize, Serialize};

use crate::Digest;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// The Accept header for a manifest request: every type skiff can use.
pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest or index accepted (the distribution spec recommends 4 MiB).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// Largest image config accepted.
pub const MAX_CONFIG_BYTES: u64 = 32 << 20;

/// Why a manifest, index or config is refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not valid JSON of the expected shape.
    #[error("{what} is not valid: {source}")]
    Parse {
        /// manifest, index or config.
        what: &'static str,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A media type skiff does not handle.
    #[error(
        "unsupported manifest media type {0:?} (skiff handles OCI and Docker schema2 manifests and indexes)"
    )]
    UnsupportedMediaType(String),
    /// The declared media type disagrees with the content or with what was asked for.
    #[error("media type mismatch: {0}")]
    MediaTypeMismatch(String),
    /// schemaVersion other than 2.
    #[error(
        "unsupported schemaVersion {0} (only 2; Docker schema1 images are deprecated: rebuild or re-push the image)"
    )]
    SchemaVersion(u32),
    /// The config's diff_ids do not line up with the manifest's layers.
    #[error(
        "the image config lists {diff_ids} layer diff_ids but the manifest has {layers} layers"
    )]
    LayerCount {
        /// In the config.
        diff_ids: usize,
        /// In the manifest.
        layers: usize,
    },
}

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the target.
    #[serde(default)]
    pub media_type: String,
    /// Digest of the target.
    pub digest: Digest,
    /// Size of the target in bytes.
    pub size: u64,
    /// Platform, in index entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Alternative download locations (foreign layers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
}

/// os / architecture / variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// Operating system.
    pub os: String,
    /// CPU architecture (OCI / Go names).
    pub architecture: String,
    /// CPU variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of this host: linux on the host architecture (arm64 counts as v8).
    pub fn host() -> Self {
        let architecture = crate::host::oci_architecture().to_owned();
        let variant = (architecture == "arm64").then(|| "v8".to_owned());
        Self {
            os: "linux".into(),
            architecture,
            variant,
        }
    }

    /// Parses `os/arch[/variant]`, as `--platform` takes it.
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.split('/');
        let os = parts.next().filter(|p| !p.is_empty())?.to_owned();
        let architecture = parts.next().filter(|p| !p.is_empty())?.to_owned();
        let variant = parts.next().filter(|p| !p.is_empty()).map(str::to_owned);
        if parts.next().is_some() {
            return None;
        }
        Some(Self {
            os,
            architecture,
            variant,
        })
    }

    /// Whether an index entry's platform satisfies this wanted platform.
    fn accepts(&self, candidate: &Platform) -> bool {
        if self.os != candidate.os || self.architecture != candidate.architecture {
            return false;
        }
        match (&self.variant, &candidate.variant) {
            (None, _) | (_, None) => true,
            (Some(want), Some(have)) => want == have,
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A single-platform image manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    /// Must be 2.
    pub schema_version: u32,
    /// The declared media type (may be absent in OCI).
    #[serde(default)]
    pub media_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// Layer blobs, bottom first.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// A multi-platform index / manifest list.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    /// Must be 2.
    pub schema_version: u32,
    /// The declared media type.
    #[serde(default)]
    pub media_type: Option<String>,
    /// One entry per platform (and attestations, which have no usable platform).
    pub manifests: Vec<Descriptor>,
}

/// What a manifest request returned.
#[derive(Debug, Clone)]
pub enum Fetched {
    /// A single image.
    Manifest(ImageManifest),
    /// A multi-platform index.
    Index(ImageIndex),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    schema_version: Option<u32>,
    media_type: Option<String>,
    manifests: Option<serde_json::Value>,
    layers: Option<serde_json::Value>,
}

/// Parses a manifest or index, checking the Content-Type, the body's own mediaType and its
/// shape all agree (no manifest/index confusion).
pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Fetched, ManifestError> {
    let probe: Probe = serde_json::from_slice(bytes).map_err(|source| ManifestError::Parse {
        what: "manifest",
        source,
    })?;
    let content_type = content_type.map(|c| c.split(';').next().unwrap_or(c).trim());
    let declared = match (probe.media_type.as_deref(), content_type) {
        (Some(body), Some(header)) if body != header && is_known(header) => {
            return Err(ManifestError::MediaTypeMismatch(format!(
                "the registry says {header} but the manifest says {body}"
            )));
        }
        (Some(body), _) => body.to_owned(),
        (None, Some(header)) if is_known(header) => header.to_owned(),
        // OCI allows omitting mediaType: fall back on the shape.
        (None, _) if probe.manifests.is_some() => OCI_INDEX.to_owned(),
        (None, _) => OCI_MANIFEST.to_owned(),
    };
    match probe.schema_version {
        Some(2) => {}
        Some(v) => return Err(ManifestError::SchemaVersion(v)),
        None => return Err(ManifestError::SchemaVersion(0)),
    }
    let is_index = matches!(declared.as_str(), OCI_INDEX | DOCKER_MANIFEST_LIST);
    let is_manifest = matches!(declared.as_str(), OCI_MANIFEST | DOCKER_MANIFEST);
    if !is_index && !is_manifest {
        return Err(ManifestError::UnsupportedMediaType(declared));
    }
    if is_index && probe.layers.is_some() || is_manifest && probe.manifests.is_some() {
        return Err(ManifestError::MediaTypeMismatch(format!(
            "{declared} with the body of the other kind"
        )));
    }
    if is_index {
        let index: ImageIndex =
            serde_json::from_slice(bytes).map_err(|source| ManifestError::Parse {
                what: "index",
                source,
            })?;
        Ok(Fetched::Index(index))
    } else {
        let manifest: ImageManifest =
            serde_json::from_slice(bytes).map_err(|source| ManifestError::Parse {
                what: "manifest",
                source,
            })?;
        if !matches!(
            manifest.config.media_type.as_str(),
            OCI_CONFIG | DOCKER_CONFIG | ""
        ) {
            // Artifacts (helm charts, signatures) use other config types: they are not images.
            return Err(ManifestError::MediaTypeMismatch(format!(
                "config media type {:?} is not an image config (is this an artifact rather than an image?)",
                manifest.config.media_type
            )));
        }
        Ok(Fetched::Manifest(manifest))
    }
}

fn is_known(media_type: &str) -> bool {
    matches!(
        media_type,
        OCI_MANIFEST | OCI_INDEX | DOCKER_MANIFEST | DOCKER_MANIFEST_LIST
    )
}

/// Picks the index entry for `want`; on failure lists what the index offers.
pub fn select_platform<'a>(
    index: &'a ImageIndex,
    want: &Platform,
) -> Result<&'a Descriptor, Vec<String>> {
    let mut candidates: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|d| d.platform.as_ref().is_some_and(|p| want.accepts(p)))
        .filter(|d| matches!(d.media_type.as_str(), OCI_MANIFEST | DOCKER_MANIFEST | ""))
        .collect();
    // An exact variant match beats an entry without a variant.
    candidates.sort_by_key(|d| d.platform.as_ref().map(|p| p.variant != want.variant));
    candidates.first().copied().ok_or_else(|| {
        index
            .manifests
            .iter()
            .filter_map(|d| d.platform.as_ref())
            .filter(|p| p.os != "unknown")
            .map(ToString::to_string)
            .collect()
    })
}

/// The parts of an image config skiff uses; the whole JSON is kept as a blob for inspect.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    /// Architecture the image was built for.
    #[serde(default)]
    pub architecture: String,
    /// Operating system.
    #[serde(default)]
    pub os: String,
    /// CPU variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Creation time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// How to run it.
    #[serde(default)]
    pub config: Option<RunConfig>,
    /// The layers' diff_ids.
    pub rootfs: RootFs,
}

/// The image's default run settings (docker's `Config` section).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    /// Default user.
    #[serde(default)]
    pub user: Option<String>,
    /// Default environment.
    #[serde(default)]
    pub env: Option<Vec<String>>,
    /// Entrypoint.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// Default command.
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    /// Working directory.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// Signal to stop the container.
    #[serde(default)]
    pub stop_signal: Option<String>,
}

/// `rootfs` of an image config.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Uncompressed layer digests, bottom first.
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
}

/// Parses an image config and checks it matches the manifest's layers.
pub fn parse_config(bytes: &[u8], manifest: &ImageManifest) -> Result<ImageConfig, ManifestError> {
    let config: ImageConfig =
        serde_json::from_slice(bytes).map_err(|source| ManifestError::Parse {
            what: "image config",
            source,
        })?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(ManifestError::LayerCount {
            diff_ids: config.rootfs.diff_ids.len(),
            layers: manifest.layers.len(),
        });
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn index(platforms: &[(&str, &str, Option<&str>)]) -> ImageIndex {
        ImageIndex {
            schema_version: 2,
            media_type: Some(OCI_INDEX.into()),
            manifests: platforms
                .iter()
                .map(|(os, arch, variant)| Descriptor {
                    media_type: OCI_MANIFEST.into(),
                    digest: Digest::parse(D).unwrap(),
                    size: 1,
                    platform: Some(Platform {
                        os: (*os).into(),
                        architecture: (*arch).into(),
                        variant: variant.map(Into::into),
                    }),
                    urls: vec![],
                })
                .collect(),
        }
    }

    #[test]
    fn platform_selection_prefers_the_exact_variant() {
        let idx = index(&[
            ("linux", "arm", Some("v6")),
            ("linux", "arm", Some("v7")),
            ("linux", "amd64", None),
        ]);
        let want = Platform::parse("linux/arm/v7").unwrap();
        let pick = select_platform(&idx, &want).unwrap();
        assert_eq!(
            pick.platform.as_ref().unwrap().variant.as_deref(),
            Some("v7")
        );
        let amd = select_platform(&idx, &Platform::parse("linux/amd64").unwrap()).unwrap();
        assert_eq!(amd.platform.as_ref().unwrap().architecture, "amd64");
        let missing = select_platform(&idx, &Platform::parse("linux/s390x").unwrap()).unwrap_err();
        assert_eq!(missing, ["linux/arm/v6", "linux/arm/v7", "linux/amd64"]);
    }

    #[test]
    fn platform_strings_parse_like_docker() {
        assert_eq!(
            Platform::parse("linux/arm64/v8")
                .unwrap()
                .variant
                .as_deref(),
            Some("v8")
        );
        assert!(Platform::parse("linux").is_none());
        assert!(Platform::parse("linux/amd64/v1/x").is_none());
        assert!(Platform::parse("/amd64").is_none());
    }

    #[test]
    fn manifest_and_index_cannot_be_confused() {
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{D}","size":2}},"layers":[]}}"#
        );
        assert!(matches!(
            parse(manifest.as_bytes(), Some(OCI_MANIFEST)),
            Ok(Fetched::Manifest(_))
        ));
        // The registry claims an index but the body is a manifest.
        assert!(matches!(
            parse(manifest.as_bytes(), Some(OCI_INDEX)),
            Err(ManifestError::MediaTypeMismatch(_))
        ));
        let liar = manifest.replace(OCI_MANIFEST, OCI_INDEX);
        assert!(matches!(
            parse(liar.as_bytes(), None),
            Err(ManifestError::MediaTypeMismatch(_))
        ));
        let schema1 = r#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#;
        assert!(matches!(
            parse(schema1.as_bytes(), None),
            Err(ManifestError::SchemaVersion(1))
        ));
        assert!(matches!(
            parse(b"not json", None),
            Err(ManifestError::Parse { .. })
        ));
        let artifact = manifest.replace(OCI_CONFIG, "application/vnd.cncf.helm.config.v1+json");
        assert!(matches!(
            parse(artifact.as_bytes(), None),
            Err(ManifestError::MediaTypeMismatch(_))
        ));
    }
}
