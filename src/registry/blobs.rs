//! Blobs: a small one (a config) fetched whole and checked, a large one (a layer) streamed
//! into a channel, resumed with a Range request after a broken or stalled connection. Beside a
//! lazy run, a layer's stream takes the parts the payload's reads already fetched from them
//! and asks the registry only for the rest.

use bytes::Bytes;
use reqwest::header::RANGE;
use reqwest::{Response, StatusCode};
use tokio::sync::mpsc;

use super::client::RegistryClient;
use super::errors::{RegistryError, check_status};
use super::parts::BlobParts;
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
            until: None,
            // Shared only where the size is known: the parts must not run past the blob.
            parts: self
                .foreground
                .as_deref()
                .map(|f| &f.parts)
                .filter(|_| size.is_some()),
        };
        // Reads waiting for this stream stop waiting when it ends, however it ends.
        let _ended = fetch.parts.map(|parts| StreamEnded(parts, digest));
        let mut failures = 0u32;
        loop {
            if fetch.parts.is_some() {
                if !fetch.send_kept(&sink, &progress).await {
                    return Ok(());
                }
                if size == Some(fetch.offset) {
                    return Ok(());
                }
                fetch.until = fetch.parts.and_then(|p| p.next_start(digest, fetch.offset));
            }
            let resp = fetch.request_from_offset().await?;
            let end = fetch.stream_into_sink(resp, &sink, &progress).await?;
            let reason = match (end, size) {
                (StreamEnd::SinkClosed, _) => return Ok(()),
                (_, Some(size)) if fetch.offset == size => return Ok(()),
                (StreamEnd::Kept, _) => continue,
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
    /// Where the next kept part starts: the request stops there.
    until: Option<u64>,
    /// The parts a lazy run's reads fetched, and this stream keeps.
    parts: Option<&'a BlobParts>,
}

/// Tells the parts that a blob's stream has ended when dropped.
struct StreamEnded<'a>(&'a BlobParts, &'a Digest);

impl Drop for StreamEnded<'_> {
    fn drop(&mut self) {
        self.0.stream_ended(self.1);
    }
}

/// The most bytes of kept parts sent to the sink at once.
const PART_PIECE: u64 = 1 << 20;

/// How one response's body ended.
enum StreamEnd {
    /// The body ended: complete or short, the size tells.
    Ended,
    /// The connection broke or stalled.
    Broken(String),
    /// The consumer hung up (it failed and reports why).
    SinkClosed,
    /// The stream reached bytes that are kept: they come from there.
    Kept,
}

impl BlobFetch<'_> {
    fn fail(&self, reason: String) -> RegistryError {
        RegistryError::Download {
            digest: *self.digest,
            registry: self.registry.to_owned(),
            reason,
        }
    }

    /// Sends the kept bytes from the offset on; false if the consumer hung up. Kept bytes that
    /// cannot be read back are not used again.
    async fn send_kept(&mut self, sink: &mpsc::Sender<Bytes>, progress: &impl Fn(u64)) -> bool {
        let Some(parts) = self.parts else {
            return true;
        };
        let last = self.size.unwrap_or(0).min(self.limit);
        while let Some(end) = parts.end_from(self.digest, self.offset) {
            let stop = end.min(self.offset + PART_PIECE).min(last);
            let bytes = parts
                .read(self.digest, self.offset, stop)
                .filter(|b| !b.is_empty());
            let Some(bytes) = bytes else {
                self.parts = None;
                return true;
            };
            self.offset = stop;
            parts.stream_at(self.digest, stop);
            progress(bytes.len() as u64);
            if sink.send(Bytes::from(bytes)).await.is_err() {
                return false;
            }
        }
        true
    }

    /// GET the blob from the current offset (a Range request once some of it arrived, up to
    /// the next kept part); before the first byte, a mirror's failure moves on to the next host.
    async fn request_from_offset(&mut self) -> Result<Response, RegistryError> {
        let (repository, digest, offset) = (self.repository, self.digest, self.offset);
        let until = self.until;
        loop {
            let host = &self.hosts[self.host_idx.min(self.hosts.len() - 1)];
            let resp = self
                .client
                .send(host, self.registry, repository, |ep| {
                    let req = ep
                        .http
                        .get(format!("{}/v2/{repository}/blobs/{digest}", ep.base));
                    if let Some(until) = until.filter(|u| *u > offset) {
                        req.header(RANGE, format!("bytes={offset}-{}", until - 1))
                    } else if offset > 0 {
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
            let start = self.offset;
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
            if let Some(parts) = self.parts {
                parts.record_streamed(self.digest, start, &chunk);
            }
            if sink.send(chunk).await.is_err() {
                return Ok(StreamEnd::SinkClosed);
            }
            // The rest of this stretch was fetched meanwhile, or the next kept part begins.
            if self.until.is_some_and(|u| self.offset >= u)
                || self
                    .parts
                    .is_some_and(|p| p.end_from(self.digest, self.offset).is_some())
            {
                return Ok(StreamEnd::Kept);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::registry::{AuthFiles, Config, Foreground, RetryPolicy};

    /// Streams `digest` of repository `parts/blob` at `host` through a client whose
    /// foreground keeps `fg`'s parts; the bytes the sink got.
    pub(crate) fn stream(host: &str, digest: &Digest, size: u64, fg: Arc<Foreground>) -> Vec<u8> {
        let client = RegistryClient::new(
            Config::default(),
            AuthFiles::new(Vec::new()),
            RetryPolicy::default(),
        )
        .giving_way_to(fg);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (tx, mut rx) = mpsc::channel(16);
            let hosts = [host.to_owned()];
            let fetch = client.blob(
                &hosts,
                host,
                "parts/blob",
                digest,
                Some(size),
                size,
                tx,
                |_| {},
            );
            let collect = async {
                let mut out = Vec::new();
                while let Some(chunk) = rx.recv().await {
                    out.extend_from_slice(&chunk);
                }
                out
            };
            let (done, out) = tokio::join!(fetch, collect);
            done.unwrap();
            out
        })
    }

    /// A registry holding 3 MiB of pseudo-random bytes (from `seed`) as blob `parts/blob`.
    pub(crate) fn registry_with_blob(seed: u64) -> (skiff_test_rig::Registry, Vec<u8>) {
        let registry = skiff_test_rig::Registry::start().unwrap();
        let mut x = seed;
        let bytes: Vec<u8> = (0..3 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let blob = skiff_test_rig::image::Blob::new(bytes.clone(), "application/octet-stream");
        registry
            .client()
            .unwrap()
            .push_blob("parts/blob", &blob)
            .unwrap();
        (registry, bytes)
    }

    #[test]
    fn a_stream_takes_the_kept_parts_and_asks_only_for_the_rest() {
        let (registry, bytes) = registry_with_blob(7);
        let proxy = skiff_test_rig::FaultProxy::start(registry.addr(), Vec::new()).unwrap();
        let digest = Digest::of(&bytes);
        let size = bytes.len() as u64;
        let mib = 1usize << 20;

        // The middle MiB was read lazily: the stream asks for the two stretches around it.
        let fg = Arc::new(Foreground::with_quiet(Duration::ZERO, Duration::ZERO));
        fg.parts.record(&digest, mib as u64, &bytes[mib..2 * mib]);
        assert!(stream(&proxy.host(), &digest, size, fg.clone()) == bytes);
        let ranges: Vec<Option<String>> = proxy
            .requests()
            .into_iter()
            .filter(|r| r.path.contains(&digest.to_string()))
            .map(|r| r.range)
            .collect();
        assert_eq!(
            ranges,
            [
                Some(format!("bytes=0-{}", mib - 1)),
                Some(format!("bytes={}-", 2 * mib)),
            ]
        );
        // What the stream fetched is kept in turn, for the lazy reads.
        assert!(fg.parts.missing(&digest, 0, size).is_empty());
        assert!(fg.parts.read(&digest, 0, size).as_deref() == Some(&bytes[..]));

        // Kept bytes are not trusted blindly: the stream is what the pull checks against the
        // digest, and a wrong part shows there.
        let fg = Arc::new(Foreground::with_quiet(Duration::ZERO, Duration::ZERO));
        fg.parts.record(&digest, 0, &[0u8; 4096]);
        let got = stream(&proxy.host(), &digest, size, fg);
        assert_eq!(got.len(), bytes.len());
        assert_ne!(Digest::of(&got), digest);
    }
}
