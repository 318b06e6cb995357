//! Blobs: a small one (a config) fetched whole and checked, a large one (a layer) streamed
//! into a channel, resumed with a Range request after a broken or stalled connection.

use bytes::Bytes;
use reqwest::header::RANGE;
use reqwest::{Response, StatusCode};
use tokio::sync::mpsc;

use super::client::RegistryClient;
use super::errors::{RegistryError, check_status};
use super::retry::backoff;
use super::transport::Next;
use crate::Digest;

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
        progress: impl Fn(u64) + Send + Sync,
    ) -> Result<(), RegistryError> {
        let policy = self.inner.policy;
        let mut fetch = BlobFetch {
            client: self,
            hosts,
            registry,
            repository,
            digest,
            size,
            limit,
            host_idx: 0,
            offset: 0,
        };
        let mut failures = 0u32;
        loop {
            let resp = fetch.request_from_offset().await?;
            let end = fetch.stream_into_sink(resp, &sink, &progress).await?;
            let reason = match (end, size) {
                (StreamEnd::SinkClosed, _) => return Ok(()),
                (_, Some(size)) if fetch.offset == size => return Ok(()),
                (StreamEnd::Ended, None) => return Ok(()),
                (StreamEnd::Broken(reason), _) => reason,
                (StreamEnd::Ended, Some(_)) => {
                    format!("connection closed after {} bytes", fetch.offset)
                }
            };
            failures += 1;
            if failures >= policy.attempts {
                return Err(fetch.fail(format!("{reason}; gave up after {failures} attempts")));
            }
            tracing::warn!(%digest, offset = fetch.offset, reason, "blob download interrupted, resuming");
            tokio::time::sleep(backoff(policy, failures)).await;
        }
    }
}

/// One blob download in progress: what, from where, how much may come, how far it got.
struct BlobFetch<'a> {
    client: &'a RegistryClient,
    hosts: &'a [String],
    registry: &'a str,
    repository: &'a str,
    digest: &'a Digest,
    /// The size the manifest announced, if any.
    size: Option<u64>,
    /// More than this is an error.
    limit: u64,
    /// The host in use: a mirror that fails before the first byte gives way to the next host.
    host_idx: usize,
    /// Bytes delivered to the sink so far.
    offset: u64,
}

/// How one response's body ended.
enum StreamEnd {
    /// The body ended: complete or short, the size tells.
    Ended,
    /// The connection broke or stalled.
    Broken(String),
    /// The consumer hung up (it failed and reports why).
    SinkClosed,
}

impl BlobFetch<'_> {
    fn fail(&self, reason: String) -> RegistryError {
        RegistryError::Download {
            digest: *self.digest,
            registry: self.registry.to_owned(),
            reason,
        }
    }

    /// GET the blob from the current offset (a Range request once some of it arrived); before
    /// the first byte, a mirror's failure moves on to the next host.
    async fn request_from_offset(&mut self) -> Result<Response, RegistryError> {
        let (repository, digest, offset) = (self.repository, self.digest, self.offset);
        loop {
            let host = &self.hosts[self.host_idx.min(self.hosts.len() - 1)];
            let resp = self
                .client
                .send(host, self.registry, repository, |ep| {
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
            match resp {
                Ok(r) => return Ok(r),
                Err(e)
                    if e.next_host_may_help()
                        && self.host_idx + 1 < self.hosts.len()
                        && offset == 0 =>
                {
                    tracing::info!(mirror = %host, error = %e, "mirror failed, trying the next host");
                    self.host_idx += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Copies the body into `sink`, chunk by chunk, advancing the offset; a stream silent for
    /// the stall timeout, or slower than the minimum speed, counts as broken. More than the
    /// limit or the announced size is an error.
    async fn stream_into_sink(
        &mut self,
        resp: Response,
        sink: &mpsc::Sender<Bytes>,
        progress: &impl Fn(u64),
    ) -> Result<StreamEnd, RegistryError> {
        let mut pace = self.client.pace();
        // A server that ignores Range restarts from 0: skip what we already have.
        let mut skip = if self.offset > 0 && resp.status() != StatusCode::PARTIAL_CONTENT {
            self.offset
        } else {
            0
        };
        let mut stream = resp.bytes_stream();
        loop {
            if let Some(fg) = &self.client.foreground
                && fg.give_way().await
            {
                pace.restart();
            }
            let mut chunk = match pace.next(&mut stream).await {
                Next::Broken(reason) => return Ok(StreamEnd::Broken(reason)),
                Next::End => return Ok(StreamEnd::Ended),
                Next::Chunk(chunk) => chunk,
            };
            if skip > 0 {
                let n = (skip as usize).min(chunk.len());
                chunk = chunk.slice(n..);
                skip -= n as u64;
            }
            if chunk.is_empty() {
                continue;
            }
            self.offset += chunk.len() as u64;
            if self.offset > self.limit {
                return Err(RegistryError::TooLarge {
                    what: format!("blob {}", self.digest),
                    limit: self.limit,
                });
            }
            if let Some(size) = self.size.filter(|s| self.offset > *s) {
                return Err(self.fail(format!("more data than the {size} bytes announced")));
            }
            progress(chunk.len() as u64);
            if sink.send(chunk).await.is_err() {
                return Ok(StreamEnd::SinkClosed);
            }
        }
    }
}
