//! Manifests and indexes: fetched by tag or digest, mirrors first, digest checked, parsed by
//! the `image` module.

use reqwest::header::{ACCEPT, CONTENT_TYPE};

use super::client::RegistryClient;
use super::errors::{RegistryError, check_status};
use super::transport::read_limited;
use crate::Digest;
use crate::image::{self, ACCEPT_MANIFESTS, Fetched, MAX_MANIFEST_BYTES};

/// A manifest or index fetched and verified.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// The raw bytes (what the digest covers).
    pub bytes: Vec<u8>,
    /// Their digest.
    pub digest: Digest,
    /// Parsed.
    pub parsed: Fetched,
}

impl FetchedManifest {
    /// Parses verified manifest bytes (checked by `image::parse`) into a fetched manifest;
    /// `name` names the image in an error.
    pub(crate) fn parse(
        bytes: Vec<u8>,
        digest: Digest,
        content_type: Option<&str>,
        name: impl FnOnce() -> String,
    ) -> Result<Self, RegistryError> {
        let parsed =
            image::parse(&bytes, content_type).map_err(|source| RegistryError::Manifest {
                reference: name(),
                source,
            })?;
        Ok(Self {
            bytes,
            digest,
            parsed,
        })
    }
}

impl RegistryClient {
    /// Fetches a manifest or index by tag or digest, trying mirrors first, verifying the digest.
    pub async fn manifest(
        &self,
        hosts: &[String],
        registry: &str,
        repository: &str,
        reference: &str,
    ) -> Result<FetchedManifest, RegistryError> {
        let mut last = None;
        for (i, host) in hosts.iter().enumerate() {
            match self
                .manifest_from(host, registry, repository, reference)
                .await
            {
                Ok(m) => return Ok(m),
                // Only a mirror's failure falls through to the next host.
                Err(e) if e.next_host_may_help() && i + 1 < hosts.len() => {
                    tracing::info!(mirror = %host, error = %e, "mirror failed, trying the next host");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| RegistryError::Unreachable {
            registry: registry.to_owned(),
            reason: "no hosts".into(),
        }))
    }

    async fn manifest_from(
        &self,
        host: &str,
        registry: &str,
        repository: &str,
        reference: &str,
    ) -> Result<FetchedManifest, RegistryError> {
        let resp = self
            .send(host, registry, repository, |ep| {
                ep.http
                    .get(format!("{}/v2/{repository}/manifests/{reference}", ep.base))
                    .header(ACCEPT, ACCEPT_MANIFESTS)
            })
            .await?;
        let resp = check_status(resp, host, repository, &format!("manifest {reference}")).await?;
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let header_digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Digest::parse(v).ok());
        let bytes = read_limited(
            resp,
            MAX_MANIFEST_BYTES,
            &format!("manifest {reference}"),
            self.pace(),
        )
        .await?;
        let digest = Digest::of(&bytes);
        let expected = Digest::parse(reference).ok().or(header_digest);
        if let Some(expected) = expected.filter(|e| *e != digest) {
            return Err(RegistryError::DigestMismatch {
                what: format!("manifest {repository}@{reference}"),
                expected,
                actual: digest,
            });
        }
        FetchedManifest::parse(bytes, digest, content_type.as_deref(), || {
            format!("{registry}/{repository}:{reference}")
        })
    }
}
