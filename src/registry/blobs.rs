//! Blobs: a small one (a config) fetched whole and checked, a large one (a layer) streamed
//! into a channel, resumed with a Range request after a broken or stalled connection.

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::StatusCode;
use reqwest::header::RANGE;
use tokio::sync::mpsc;

use super::client::RegistryClient;
use super::errors::{RegistryError, check_status};
use super::retry::backoff;
use crate::Digest;
use crate::error_chain;

impl RegistryClient {
    /// Fetches a small blob (a config) whole, verifying its digest and size.
    pub async fn small_blob(
        &self,
        hosts: &[String],
        registry: &str,
        repository: &str,
        digest: &Digest,
        limit: u64,
    ) -> Result<Vec<u8>, RegistryError> {
        let (tx, mut rx) = mpsc::channel(16);
        let client = self.clone();
        let hosts_owned = hosts.to_vec();
        let (registry_o, repository_o, digest_o) =
            (registry.to_owned(), repository.to_owned(), *digest);
        let fetch = tokio::spawn(async move {
            client
                .blob(
                    &hosts_owned,
                    &registry_o,
                    &repository_o,
                    &digest_o,
                    None,
                    limit,
                    tx,
                    |_| {},
                )
                .await
        });
        let mut out = Vec::new();
        while let Some(chunk) = rx.recv().await {
            out.extend_from_slice(&chunk);
        }
        fetch.await.map_err(|e| RegistryError::Download {
            digest: *digest,
            registry: registry.to_owned(),
            reason: e.to_string(),
        })??;
        let actual = Digest::of(&out);
        if actual != *digest {
            return Err(RegistryError::DigestMismatch {
                what: format!("blob {digest}"),
                expected: *digest,
                actual,
            });
        }
        Ok(out)
    }

    /// Streams a blob into `sink`, resuming with a Range request after a broken or stalled
    /// connection, trying mirrors first. The caller verifies the digest over the whole stream.
    #[allow(clippy::too_many_arguments)]
    pub async fn blob(
        &self,
        hosts: &[String],
        registry: &str,
        repository: &str,
        digest: &Digest,
        size: Option<u64>,
        limit: u64,
        sink: mpsc::Sender<Bytes>,
        progress: impl Fn(u64),
    ) -> Result<(), RegistryError> {
        let policy = self.inner.policy;
        let mut offset = 0u64;
        let mut failures = 0u32;
        let mut host_idx = 0;
        let fail = |reason: String| RegistryError::Download {
            digest: *digest,
            registry: registry.to_owned(),
            reason,
        };
        loop {
            let host = &hosts[host_idx.min(hosts.len() - 1)];
            let resp = self
                .send(host, registry, repository, |ep| {
                    let req = ep
                        .http
                        .get(format!("{}/v2/{repository}/blobs/{digest}", ep.base));
                    if offset > 0 {
                        req.header(RANGE, format!("bytes={offset}-"))
                    } else {
                        req
                    }
                })
                .await;
            let resp = match resp {
                Ok(r) => check_status(r, host, repository, &format!("blob {digest}")).await,
                Err(e) => Err(e),
            };
            let resp = match resp {
                Ok(r) => r,
                Err(
                    e @ (RegistryError::NotFound { .. }
                    | RegistryError::Unreachable { .. }
                    | RegistryError::Status { .. }),
                ) if host_idx + 1 < hosts.len() && offset == 0 => {
                    tracing::info!(mirror = %host, error = %e, "mirror failed, trying the next host");
                    host_idx += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            // A server that ignores Range restarts from 0: skip what we already have.
            let mut skip = if offset > 0 && resp.status() != StatusCode::PARTIAL_CONTENT {
                offset
            } else {
                0
            };
            let mut stream = resp.bytes_stream();
            let mut broken = None;
            loop {
                match tokio::time::timeout(policy.stall_timeout, stream.next()).await {
                    Err(_) => {
                        broken = Some(format!("no data for {:?}", policy.stall_timeout));
                        break;
                    }
                    Ok(None) => break,
                    Ok(Some(Err(e))) => {
                        broken = Some(error_chain(&e));
                        break;
                    }
                    Ok(Some(Ok(mut chunk))) => {
                        if skip > 0 {
                            let n = (skip as usize).min(chunk.len());
                            chunk = chunk.slice(n..);
                            skip -= n as u64;
                        }
                        if chunk.is_empty() {
                            continue;
                        }
                        offset += chunk.len() as u64;
                        if offset > limit {
                            return Err(RegistryError::TooLarge {
                                what: format!("blob {digest}"),
                                limit,
                            });
                        }
                        if size.is_some_and(|s| offset > s) {
                            return Err(fail(format!(
                                "more data than the {} bytes announced",
                                size.unwrap_or(limit)
                            )));
                        }
                        progress(chunk.len() as u64);
                        if sink.send(chunk).await.is_err() {
                            // The consumer stopped (it failed and reports why).
                            return Ok(());
                        }
                    }
                }
            }
            let complete = match size {
                Some(s) => offset == s,
                None => broken.is_none(),
            };
            if complete {
                return Ok(());
            }
            failures += 1;
            let reason =
                broken.unwrap_or_else(|| format!("connection closed after {offset} bytes"));
            if failures >= policy.attempts {
                return Err(fail(format!("{reason}; gave up after {failures} attempts")));
            }
            tracing::warn!(%digest, offset, reason, "blob download interrupted, resuming");
            tokio::time::sleep(backoff(policy, failures)).await;
        }
    }
}
