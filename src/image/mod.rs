//! Images as registries serve them and the store keeps them: manifests, indexes, configs,
//! descriptors and platforms are `oci-spec`'s types; this module adds the checks skiff makes
//! before trusting one (size limits, manifest/index confusion, artifacts, Docker media types,
//! diff_id count, platform choice). Both `pull` and `launch` use it; it knows nothing of HTTP.

mod config;
mod manifest;
mod platform;

pub(crate) use config::{ImageConfig, parse_config};
pub use manifest::ManifestError;
pub(crate) use manifest::{
    ACCEPT_MANIFESTS, Fetched, MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES, digest_of, parse,
};
pub(crate) use oci_spec::image::{ImageManifest, Platform};
pub(crate) use platform::{host_platform, parse_platform, platform_string, select_platform};
