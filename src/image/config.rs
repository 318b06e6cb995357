//! Image configs: oci-spec's `ImageConfiguration`, checked against the manifest it belongs to.

use oci_spec::image::{Config, ImageConfiguration, ImageManifest};

use super::manifest::{ManifestError, parse_digest};
use crate::Digest;

/// An image config as skiff uses it: parsed once, with its diff_ids checked.
#[derive(Debug, Clone)]
pub(crate) struct ImageConfig {
    /// The whole config.
    pub(crate) config: ImageConfiguration,
    /// Its layers' diff_ids, bottom first.
    pub(crate) diff_ids: Vec<Digest>,
}

impl ImageConfig {
    /// Parses a config blob (from the registry or the store).
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        let config: ImageConfiguration =
            serde_json::from_slice(bytes).map_err(|source| ManifestError::Parse {
                what: "image config",
                source,
            })?;
        let diff_ids = config
            .rootfs()
            .diff_ids()
            .iter()
            .map(|d| parse_digest(d, "layer diff_id"))
            .collect::<Result<_, _>>()?;
        Ok(Self { config, diff_ids })
    }

    /// The image's default run settings (docker's `Config` section; empty when absent).
    pub(crate) fn run_config(&self) -> Config {
        self.config.config().clone().unwrap_or_default()
    }
}

/// Parses an image config and checks it matches the manifest's layers.
pub(crate) fn parse_config(
    bytes: &[u8],
    manifest: &ImageManifest,
) -> Result<ImageConfig, ManifestError> {
    let config = ImageConfig::parse(bytes)?;
    if config.diff_ids.len() != manifest.layers().len() {
        return Err(ManifestError::LayerCount {
            diff_ids: config.diff_ids.len(),
            layers: manifest.layers().len(),
        });
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_ids_must_be_sha256_and_match_the_layers() {
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let json = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Cmd":["sh"],"WorkingDir":"/w"}},"rootfs":{{"type":"layers","diff_ids":["{d}"]}}}}"#
        );
        let parsed = ImageConfig::parse(json.as_bytes()).unwrap();
        assert_eq!(parsed.diff_ids.len(), 1);
        assert_eq!(parsed.run_config().working_dir().as_deref(), Some("/w"));
        let bad = json.replace(d, "md5:abc");
        assert!(matches!(
            ImageConfig::parse(bad.as_bytes()),
            Err(ManifestError::Digest { .. })
        ));
        assert!(matches!(
            ImageConfig::parse(b"{}"),
            Err(ManifestError::Parse { .. })
        ));
    }
}
