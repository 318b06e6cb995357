//! Endpoints: how to talk to a host (HTTPS with the certs.d CAs and configured ones, plain HTTP
//! where the configuration allows it and HTTPS fails), one reqwest client per host.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::Response;

use super::client::RegistryClient;
use super::errors::{RegistryError, is_certificate_error, is_dns_error, unresolvable, untrusted};
use crate::error_chain;

/// The most redirects one request follows (then it fails, not retried).
pub(super) const MAX_REDIRECTS: usize = 10;

/// How to reach one host: its base URL and the client trusting its CAs.
#[derive(Debug, Clone)]
pub(super) struct Endpoint {
    pub(super) base: String,
    pub(super) http: reqwest::Client,
}

/// The endpoints found so far, by host.
pub(super) type Endpoints = tokio::sync::Mutex<HashMap<String, Endpoint>>;

impl RegistryClient {
    fn build_http(&self, host: &str) -> Result<reqwest::Client, RegistryError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .user_agent(concat!("skiff/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS));
        let mut cas = Vec::new();
        for dir in &self.inner.config.certs_dirs {
            let host_dir = dir.join(host);
            if let Ok(entries) = std::fs::read_dir(&host_dir) {
                for entry in entries.flatten() {
                    let p = entry.path();
                    if p.extension().is_some_and(|e| e == "crt") {
                        cas.push(p);
                    }
                }
            }
        }
        for entry in &self.inner.config.registries {
            if entry.prefix.split('/').next() == Some(host)
                || entry.mirrors.iter().any(|m| m == host)
            {
                cas.extend(entry.ca_file.clone());
            }
        }
        for ca in cas {
            let pem = std::fs::read(&ca).map_err(|e| RegistryError::Auth {
                registry: host.to_owned(),
                reason: format!("reading CA file {}: {e}", ca.display()),
            })?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| RegistryError::Auth {
                    registry: host.to_owned(),
                    reason: format!("CA file {} is not PEM: {e}", ca.display()),
                })?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        builder.build().map_err(|e| RegistryError::Unreachable {
            registry: host.to_owned(),
            reason: e.to_string(),
        })
    }

    /// Finds how to talk to `host` ahead of the first request that needs it (a failure shows
    /// again at that request).
    pub(crate) async fn warm_up(&self, host: &str) {
        let _ = self.endpoint(host).await;
    }

    /// Finds how to talk to `host`: HTTPS, or plain HTTP where allowed and HTTPS fails.
    pub(super) async fn endpoint(&self, host: &str) -> Result<Endpoint, RegistryError> {
        let mut endpoints = self.inner.endpoints.lock().await;
        if let Some(ep) = endpoints.get(host) {
            return Ok(ep.clone());
        }
        let http = self.build_http(host)?;
        let https = Endpoint {
            base: format!("https://{host}"),
            http: http.clone(),
        };
        let chosen = if self.inner.config.allows_http(host) {
            match http.get(format!("{}/v2/", https.base)).send().await {
                Ok(_) => https,
                Err(https_err) if is_certificate_error(&https_err) => {
                    return Err(untrusted(host, &https_err));
                }
                Err(https_err) if is_dns_error(&https_err) => {
                    return Err(unresolvable(host, &https_err));
                }
                Err(https_err) => {
                    let plain = Endpoint {
                        base: format!("http://{host}"),
                        http,
                    };
                    match plain.http.get(format!("{}/v2/", plain.base)).send().await {
                        Ok(_) => plain,
                        Err(_) => {
                            return Err(RegistryError::Unreachable {
                                registry: host.to_owned(),
                                reason: error_chain(&https_err),
                            });
                        }
                    }
                }
            }
        } else {
            https
        };
        tracing::debug!(host, base = %chosen.base, "registry endpoint");
        endpoints.insert(host.to_owned(), chosen.clone());
        Ok(chosen)
    }
}

/// Guards one response body against a stall and against a trickle: no chunk for `stall` is a
/// stall; fewer than `min_speed × stall` bytes in a window of `stall` is too slow (a slowloris
/// sending a byte every few seconds never stalls).
#[derive(Debug, Clone, Copy)]
pub(super) struct Pace {
    stall: Duration,
    min_speed: u64,
    window_start: Instant,
    window_bytes: u64,
}

/// What the next read of a paced body gave.
pub(super) enum Next {
    /// A chunk of the body.
    Chunk(Bytes),
    /// The body ended.
    End,
    /// The connection broke, stalled or was too slow: why.
    Broken(String),
}

impl Pace {
    pub(super) fn new(stall: Duration, min_speed: u64) -> Self {
        Self {
            stall,
            min_speed,
            window_start: Instant::now(),
            window_bytes: 0,
        }
    }

    /// Starts a new speed window (after the reader paused on purpose).
    pub(super) fn restart(&mut self) {
        self.window_start = Instant::now();
        self.window_bytes = 0;
    }

    /// The next chunk of `stream`, within the stall timeout and the minimum speed.
    pub(super) async fn next(
        &mut self,
        stream: &mut (impl Stream<Item = reqwest::Result<Bytes>> + Unpin),
    ) -> Next {
        let chunk = match tokio::time::timeout(self.stall, stream.next()).await {
            Err(_) => return Next::Broken(format!("no data for {:?}", self.stall)),
            Ok(None) => return Next::End,
            Ok(Some(Err(e))) => return Next::Broken(error_chain(&e)),
            Ok(Some(Ok(chunk))) => chunk,
        };
        self.window_bytes += chunk.len() as u64;
        if self.window_start.elapsed() >= self.stall {
            let least = self.min_speed.saturating_mul(self.stall.as_secs().max(1));
            if self.window_bytes < least {
                return Next::Broken(format!(
                    "{} bytes in {:?}, slower than the {} bytes/s allowed (min_speed_bytes_per_sec)",
                    self.window_bytes, self.stall, self.min_speed
                ));
            }
            self.window_start = Instant::now();
            self.window_bytes = 0;
        }
        Next::Chunk(chunk)
    }
}

impl RegistryClient {
    /// A fresh pace for one response body, from the policy and the configuration.
    pub(super) fn pace(&self) -> Pace {
        Pace::new(
            self.inner.policy.stall_timeout,
            self.inner.config.min_speed_bytes_per_sec,
        )
    }
}

/// Reads a whole body of at most `limit` bytes (more is refused as soon as it shows, by
/// `Content-Length` or by count), paced by `pace`.
pub(super) async fn read_limited(
    resp: Response,
    limit: u64,
    what: &str,
    mut pace: Pace,
) -> Result<Vec<u8>, RegistryError> {
    let too_large = || RegistryError::TooLarge {
        what: what.to_owned(),
        limit,
    };
    if resp.content_length().is_some_and(|l| l > limit) {
        return Err(too_large());
    }
    let host = resp
        .url()
        .host_str()
        .map(|h| match resp.url().port() {
            Some(p) => format!("{h}:{p}"),
            None => h.to_owned(),
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    loop {
        let chunk = match pace.next(&mut stream).await {
            Next::Chunk(chunk) => chunk,
            Next::End => return Ok(out),
            Next::Broken(reason) => {
                return Err(RegistryError::Body {
                    what: what.to_owned(),
                    registry: host,
                    reason,
                });
            }
        };
        if out.len() as u64 + chunk.len() as u64 > limit {
            return Err(too_large());
        }
        out.extend_from_slice(&chunk);
    }
}

/// The most of an error response's body read (for its message); the rest is never read.
pub(super) const MAX_ERROR_BODY_BYTES: usize = 64 << 10;

/// The first `limit` bytes of a body (less when it ends, breaks, stalls or trickles first).
pub(super) async fn read_prefix(resp: Response, limit: usize, mut pace: Pace) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while out.len() < limit {
        match pace.next(&mut stream).await {
            Next::Chunk(chunk) => {
                let n = chunk.len().min(limit - out.len());
                out.extend_from_slice(&chunk[..n]);
            }
            Next::End | Next::Broken(_) => break,
        }
    }
    out
}
