//! Writing to a registry (blobs, manifests: what `skiff index push` publishes), the referrers
//! API, and Range reads of a blob (what a lazy read fetches).

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, RANGE};

use super::client::RegistryClient;
use super::errors::{RegistryError, check_status};
use super::transport::read_limited;
use crate::Digest;
use crate::image::{ACCEPT_MANIFESTS, MAX_MANIFEST_BYTES};

/// Largest referrers list accepted (an image index).
const MAX_REFERRERS_BYTES: u64 = 4 << 20;

impl RegistryClient {
    /// Uploads `bytes` as a blob of `repository` unless the registry has it (monolithic upload:
    /// POST, then PUT with the digest).
    pub async fn push_blob(
        &self,
        host: &str,
        registry: &str,
        repository: &str,
        bytes: Bytes,
    ) -> Result<Digest, RegistryError> {
        let digest = Digest::of(&bytes);
        let head = self
            .send(host, registry, repository, |ep| {
                ep.http
                    .head(format!("{}/v2/{repository}/blobs/{digest}", ep.base))
            })
            .await?;
        if head.status().is_success() {
            return Ok(digest);
        }
        let what = format!("an upload of blob {digest}");
        let started = self
            .send(host, registry, repository, |ep| {
                ep.http
                    .post(format!("{}/v2/{repository}/blobs/uploads/", ep.base))
                    .header(CONTENT_LENGTH, 0)
            })
            .await?;
        let started = check_status(started, host, repository, &what).await?;
        let location = started
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| RegistryError::Status {
                url: started.url().to_string(),
                status: started.status(),
                body: "no Location for the upload".into(),
            })?;
        let resp = self
            .send(host, registry, repository, |ep| {
                let url = if location.starts_with('/') {
                    format!("{}{location}", ep.base)
                } else {
                    location.clone()
                };
                let sep = if url.contains('?') { '&' } else { '?' };
                ep.http
                    .put(format!("{url}{sep}digest={digest}"))
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .body(bytes.clone())
            })
            .await?;
        check_status(resp, host, repository, &what).await?;
        Ok(digest)
    }

    /// Puts a manifest or index under `reference` (a tag or its digest).
    pub async fn put_manifest(
        &self,
        host: &str,
        registry: &str,
        repository: &str,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<(), RegistryError> {
        let resp = self
            .send(host, registry, repository, |ep| {
                ep.http
                    .put(format!("{}/v2/{repository}/manifests/{reference}", ep.base))
                    .header(CONTENT_TYPE, media_type)
                    .body(bytes.clone())
            })
            .await?;
        check_status(resp, host, repository, &format!("manifest {reference}")).await?;
        Ok(())
    }

    /// The referrers list (an image index, as JSON) of `subject` through the referrers API;
    /// `None` when the registry does not have that API (distribution 2.8 answers 404).
    pub async fn referrers(
        &self,
        host: &str,
        registry: &str,
        repository: &str,
        subject: &Digest,
    ) -> Result<Option<Vec<u8>>, RegistryError> {
        let resp = self
            .send(host, registry, repository, |ep| {
                ep.http
                    .get(format!("{}/v2/{repository}/referrers/{subject}", ep.base))
                    .header(ACCEPT, "application/vnd.oci.image.index.v1+json")
            })
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let what = format!("the referrers of {subject}");
        let resp = check_status(resp, host, repository, &what).await?;
        let is_index = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("application/vnd.oci.image.index.v1+json"));
        if !is_index {
            // Some registries answer unknown routes with a page: no referrers API there.
            return Ok(None);
        }
        read_limited(resp, MAX_REFERRERS_BYTES, &what, self.pace())
            .await
            .map(Some)
    }

    /// A manifest or index by tag or digest, raw (digest checked when asked for by digest);
    /// `None` when the registry has none.
    pub async fn manifest_bytes(
        &self,
        host: &str,
        registry: &str,
        repository: &str,
        reference: &str,
    ) -> Result<Option<Vec<u8>>, RegistryError> {
        let resp = self
            .send(host, registry, repository, |ep| {
                ep.http
                    .get(format!("{}/v2/{repository}/manifests/{reference}", ep.base))
                    .header(ACCEPT, ACCEPT_MANIFESTS)
            })
            .await?;
        let what = format!("manifest {reference}");
        let resp = match check_status(resp, host, repository, &what).await {
            Ok(resp) => resp,
            Err(RegistryError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let bytes = read_limited(resp, MAX_MANIFEST_BYTES, &what, self.pace()).await?;
        if let Ok(expected) = Digest::parse(reference) {
            let actual = Digest::of(&bytes);
            if actual != expected {
                return Err(RegistryError::DigestMismatch {
                    what: format!("manifest {repository}@{reference}"),
                    expected,
                    actual,
                });
            }
        }
        Ok(Some(bytes))
    }

    /// Bytes `start..end` of blob `digest` (a Range request; the caller checks them). A body
    /// cut short is asked for again, with backoff, as a pull resumes a layer.
    pub async fn blob_range(
        &self,
        host: &str,
        registry: &str,
        repository: &str,
        digest: &Digest,
        start: u64,
        end: u64,
    ) -> Result<Vec<u8>, RegistryError> {
        let policy = self.inner.policy;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self
                .range_once(host, registry, repository, digest, start, end)
                .await
            {
                Err(e @ (RegistryError::Body { .. } | RegistryError::Download { .. }))
                    if attempt < policy.attempts =>
                {
                    tracing::warn!(host, attempt, error = %e, "a range read failed, retrying");
                    tokio::time::sleep(super::retry::backoff(policy, attempt)).await;
                }
                Err(e @ (RegistryError::Body { .. } | RegistryError::Download { .. })) => {
                    return Err(RegistryError::Download {
                        digest: *digest,
                        registry: registry.to_owned(),
                        reason: format!("{e}; gave up after {attempt} attempts"),
                    });
                }
                other => return other,
            }
        }
    }

    async fn range_once(
        &self,
        host: &str,
        registry: &str,
        repository: &str,
        digest: &Digest,
        start: u64,
        end: u64,
    ) -> Result<Vec<u8>, RegistryError> {
        let what = format!("bytes {start}-{end} of blob {digest}");
        if end <= start {
            return Ok(Vec::new());
        }
        let resp = self
            .send(host, registry, repository, |ep| {
                ep.http
                    .get(format!("{}/v2/{repository}/blobs/{digest}", ep.base))
                    .header(RANGE, format!("bytes={start}-{}", end - 1))
            })
            .await?;
        let resp = check_status(resp, host, repository, &what).await?;
        let len = end - start;
        let body = match resp.status() {
            StatusCode::PARTIAL_CONTENT => read_limited(resp, len, &what, self.pace()).await?,
            status => {
                return Err(RegistryError::Status {
                    url: resp.url().to_string(),
                    status,
                    body: "the registry ignored the Range request (lazy reads need ranges)".into(),
                });
            }
        };
        if body.len() as u64 != len {
            return Err(RegistryError::Download {
                digest: *digest,
                registry: registry.to_owned(),
                reason: format!("asked for {len} bytes at {start}, got {}", body.len()),
            });
        }
        Ok(body)
    }
}
