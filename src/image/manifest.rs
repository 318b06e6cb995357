//! Manifests and indexes (OCI and Docker schema2) and the checks made before trusting one.

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};
use serde::Deserialize;

use crate::Digest;

/// Docker schema2 manifest.
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub(crate) const DOCKER_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config.
pub(crate) const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// The Accept header for a manifest request: every type skiff can use.
pub(crate) const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest or index accepted (the distribution spec recommends 4 MiB).
pub(crate) const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// Largest image config accepted.
pub(crate) const MAX_CONFIG_BYTES: u64 = 32 << 20;

/// Why a manifest, index or config is refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not valid JSON of the expected shape.
    #[error("{what} is not valid")]
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
    /// A digest skiff cannot verify (only sha256 is accepted).
    #[error("{what} digest {digest:?} is not a sha256 digest")]
    Digest {
        /// Which digest.
        what: &'static str,
        /// As written.
        digest: String,
    },
}

/// What a manifest request returned.
#[derive(Debug, Clone)]
pub(crate) enum Fetched {
    /// A single image.
    Manifest(Box<ImageManifest>),
    /// A multi-platform index.
    Index(Box<ImageIndex>),
}

/// The fields read before choosing how to parse: the kind is decided from the Content-Type,
/// the body's own mediaType and its shape together.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    schema_version: Option<u32>,
    media_type: Option<String>,
    manifests: Option<serde::de::IgnoredAny>,
    layers: Option<serde::de::IgnoredAny>,
}

/// Parses a manifest or index, checking the Content-Type, the body's own mediaType and its
/// shape all agree (no manifest/index confusion), and that a manifest's config is an image
/// config (not an artifact).
pub(crate) fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Fetched, ManifestError> {
    let probe: Probe = serde_json::from_slice(bytes).map_err(|source| ManifestError::Parse {
        what: "manifest",
        source,
    })?;
    let declared = declared_type(&probe, content_type)?;
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
        return Ok(Fetched::Index(Box::new(index)));
    }
    let manifest: ImageManifest =
        serde_json::from_slice(bytes).map_err(|source| ManifestError::Parse {
            what: "manifest",
            source,
        })?;
    let config_type = manifest.config().media_type();
    if !is_image_config(config_type) {
        // Artifacts (helm charts, signatures) use other config types: they are not images.
        return Err(ManifestError::MediaTypeMismatch(format!(
            "config media type {:?} is not an image config (is this an artifact rather than an image?)",
            config_type.to_string()
        )));
    }
    Ok(Fetched::Manifest(Box::new(manifest)))
}

/// The media type a manifest response declares: the body's, else a known Content-Type, else
/// (OCI allows omitting it) the shape's.
fn declared_type(probe: &Probe, content_type: Option<&str>) -> Result<String, ManifestError> {
    let content_type = content_type.map(|c| c.split(';').next().unwrap_or(c).trim());
    Ok(match (probe.media_type.as_deref(), content_type) {
        (Some(body), Some(header)) if body != header && is_known(header) => {
            return Err(ManifestError::MediaTypeMismatch(format!(
                "the registry says {header} but the manifest says {body}"
            )));
        }
        (Some(body), _) => body.to_owned(),
        (None, Some(header)) if is_known(header) => header.to_owned(),
        (None, _) if probe.manifests.is_some() => OCI_INDEX.to_owned(),
        (None, _) => OCI_MANIFEST.to_owned(),
    })
}

fn is_known(media_type: &str) -> bool {
    matches!(
        media_type,
        OCI_MANIFEST | OCI_INDEX | DOCKER_MANIFEST | DOCKER_MANIFEST_LIST
    )
}

fn is_image_config(media_type: &MediaType) -> bool {
    match media_type {
        MediaType::ImageConfig => true,
        MediaType::Other(other) => other == DOCKER_CONFIG || other.is_empty(),
        _ => false,
    }
}

/// Whether an index entry is a single-platform image manifest.
pub(crate) fn is_image_manifest(media_type: &MediaType) -> bool {
    match media_type {
        MediaType::ImageManifest => true,
        MediaType::Other(other) => other == DOCKER_MANIFEST || other.is_empty(),
        _ => false,
    }
}

/// The sha256 digest a descriptor names (the store verifies only sha256).
pub(crate) fn digest_of(
    descriptor: &Descriptor,
    what: &'static str,
) -> Result<Digest, ManifestError> {
    parse_digest(descriptor.digest().as_ref(), what)
}

/// A sha256 digest from its `sha256:<hex>` form.
pub(crate) fn parse_digest(digest: &str, what: &'static str) -> Result<Digest, ManifestError> {
    Digest::parse(digest).map_err(|_| ManifestError::Digest {
        what,
        digest: digest.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

    fn manifest() -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{D}","size":2}},"layers":[]}}"#
        )
    }

    #[test]
    fn manifest_and_index_cannot_be_confused() {
        let manifest = manifest();
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
    }

    #[test]
    fn artifacts_are_not_images() {
        let artifact = manifest().replace(OCI_CONFIG, "application/vnd.cncf.helm.config.v1+json");
        assert!(matches!(
            parse(artifact.as_bytes(), None),
            Err(ManifestError::MediaTypeMismatch(_))
        ));
    }

    #[test]
    fn docker_schema2_manifests_parse() {
        let docker = manifest()
            .replace(OCI_MANIFEST, DOCKER_MANIFEST)
            .replace(OCI_CONFIG, DOCKER_CONFIG);
        let Ok(Fetched::Manifest(m)) = parse(docker.as_bytes(), Some(DOCKER_MANIFEST)) else {
            panic!("docker manifest refused");
        };
        assert_eq!(digest_of(m.config(), "config").unwrap().to_string(), D);
    }

    #[test]
    fn only_sha256_digests_are_accepted() {
        let sha512 = format!("sha512:{}", "a".repeat(128));
        let odd = manifest().replace(D, &sha512);
        let Ok(Fetched::Manifest(m)) = parse(odd.as_bytes(), None) else {
            panic!("manifest refused");
        };
        assert!(matches!(
            digest_of(m.config(), "config"),
            Err(ManifestError::Digest { .. })
        ));
    }
}
