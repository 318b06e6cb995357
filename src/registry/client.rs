//! The Registry HTTP API v2 client: endpoints (TLS with certs.d CAs, plain HTTP where
//! allowed), the auth handshake with cached tokens, retries with backoff, mirrors, manifests
//! and resumable blob streams.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, RANGE, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode};
use tokio::sync::mpsc;

use super::auth::{Challenge, parse_challenge};
use super::config::Config;
use super::credentials::{AuthFiles, Credential, CredentialError};
use crate::Digest;
use crate::error_chain;
use crate::image::{self, ACCEPT_MANIFESTS, Fetched, MAX_MANIFEST_BYTES, ManifestError};

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No connection could be made (after retries).
    #[error(
        "cannot reach registry {registry}: {reason} (check the name, the network, and for a private registry its TLS settings)"
    )]
    Unreachable {
        /// host[:port].
        registry: String,
        /// The last error.
        reason: String,
    },
    /// Credentials missing or refused.
    #[error(
        "{registry}/{repository}: authentication required or access denied (run `skiff login {registry}`, or check the repository name)"
    )]
    Unauthorized {
        /// host[:port].
        registry: String,
        /// Repository.
        repository: String,
    },
    /// The manifest or blob does not exist.
    #[error("{what} not found in {registry}/{repository}: check the image name and tag")]
    NotFound {
        /// What was asked for.
        what: String,
        /// host[:port].
        registry: String,
        /// Repository.
        repository: String,
    },
    /// An unexpected HTTP status.
    #[error("{url}: registry answered {status}: {body}")]
    Status {
        /// Request URL.
        url: String,
        /// Status.
        status: StatusCode,
        /// Start of the body.
        body: String,
    },
    /// Content larger than allowed.
    #[error("{what} is larger than the {limit} bytes allowed")]
    TooLarge {
        /// What.
        what: String,
        /// Limit.
        limit: u64,
    },
    /// Content does not hash to its digest.
    #[error(
        "{what}: digest mismatch, expected {expected}, got {actual} (the registry or a proxy served wrong content)"
    )]
    DigestMismatch {
        /// What.
        what: String,
        /// Expected digest.
        expected: Digest,
        /// Actual digest.
        actual: Digest,
    },
    /// A bad manifest, index or config.
    #[error("{reference}: {source}")]
    Manifest {
        /// The reference.
        reference: String,
        /// What is wrong.
        #[source]
        source: ManifestError,
    },
    /// The auth handshake failed.
    #[error("authenticating to {registry}: {reason}")]
    Auth {
        /// host[:port].
        registry: String,
        /// What went wrong.
        reason: String,
    },
    /// Credentials could not be read.
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    /// A blob download could not be completed.
    #[error("downloading {digest} from {registry}: {reason}")]
    Download {
        /// Blob digest.
        digest: Digest,
        /// host[:port].
        registry: String,
        /// What went wrong (after retries).
        reason: String,
    },
}

/// Retry and timeout policy.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts per request (the first included).
    pub attempts: u32,
    /// First backoff delay; doubled each time.
    pub base_delay: Duration,
    /// Longest backoff (and longest Retry-After honoured).
    pub max_delay: Duration,
    /// A blob stream that delivers nothing for this long is restarted.
    pub stall_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone)]
struct Endpoint {
    base: String,
    http: reqwest::Client,
}

#[derive(Debug, Clone)]
enum AuthState {
    Basic(String),
    Bearer { header: String, expires: Instant },
}

/// A client for every registry an engine talks to.
#[derive(Debug, Clone)]
pub struct RegistryClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    credentials: AuthFiles,
    policy: RetryPolicy,
    endpoints: tokio::sync::Mutex<HashMap<String, Endpoint>>,
    auth: Mutex<HashMap<(String, String), AuthState>>,
}

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

impl RegistryClient {
    /// A client with a configuration, credential files and retry policy.
    pub fn new(config: Config, credentials: AuthFiles, policy: RetryPolicy) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                credentials,
                policy,
                endpoints: tokio::sync::Mutex::new(HashMap::new()),
                auth: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Hosts to try for `registry/repository`: its mirrors in order, then the registry itself.
    pub fn hosts_for(&self, api_registry: &str, registry: &str, repository: &str) -> Vec<String> {
        let mut hosts: Vec<String> = self
            .inner
            .config
            .entry_for(registry, repository)
            .map(|e| e.mirrors.clone())
            .unwrap_or_default();
        hosts.push(api_registry.to_owned());
        hosts
    }

    fn build_http(&self, host: &str) -> Result<reqwest::Client, RegistryError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .user_agent(concat!("skiff/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::limited(10));
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

    /// Finds how to talk to `host`: HTTPS, or plain HTTP where allowed and HTTPS fails.
    async fn endpoint(&self, host: &str) -> Result<Endpoint, RegistryError> {
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

    fn cached_auth(&self, host: &str, repository: &str) -> Option<String> {
        let auth = self.inner.auth.lock().ok()?;
        match auth.get(&(host.to_owned(), repository.to_owned()))? {
            AuthState::Basic(h) => Some(h.clone()),
            AuthState::Bearer { header, expires } if *expires > Instant::now() => {
                Some(header.clone())
            }
            AuthState::Bearer { .. } => None,
        }
    }

    fn credential_for(
        &self,
        host: &str,
        registry: &str,
    ) -> Result<Option<Credential>, RegistryError> {
        // Credentials are stored under the registry's name (docker.io), mirrors under their own.
        match self.inner.credentials.lookup(registry)? {
            Some(c) => Ok(Some(c)),
            None if host != registry => Ok(self.inner.credentials.lookup(host)?),
            None => Ok(None),
        }
    }

    async fn authenticate(
        &self,
        ep: &Endpoint,
        host: &str,
        registry: &str,
        repository: &str,
        challenge: Challenge,
    ) -> Result<(), RegistryError> {
        let credential = self.credential_for(host, registry)?;
        let state = match challenge {
            Challenge::Basic => match credential {
                Some(Credential::Basic { username, password }) => {
                    use base64::Engine as _;
                    let token = base64::engine::general_purpose::STANDARD
                        .encode(format!("{username}:{password}"));
                    AuthState::Basic(format!("Basic {token}"))
                }
                _ => {
                    return Err(RegistryError::Unauthorized {
                        registry: registry.to_owned(),
                        repository: repository.to_owned(),
                    });
                }
            },
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                // A login check (no repository) asks for no scope, as docker login does.
                let scope = scope.or_else(|| {
                    (!repository.is_empty()).then(|| format!("repository:{repository}:pull"))
                });
                let (token, expires_in) = self
                    .fetch_token(
                        ep,
                        host,
                        &realm,
                        service.as_deref(),
                        scope.as_deref(),
                        credential,
                    )
                    .await?;
                // Renew a little early so a token never expires mid-request.
                let ttl =
                    Duration::from_secs(expires_in.max(60)).saturating_sub(Duration::from_secs(10));
                AuthState::Bearer {
                    header: format!("Bearer {token}"),
                    expires: Instant::now() + ttl,
                }
            }
        };
        if let Ok(mut auth) = self.inner.auth.lock() {
            auth.insert((host.to_owned(), repository.to_owned()), state);
        }
        Ok(())
    }

    async fn fetch_token(
        &self,
        ep: &Endpoint,
        host: &str,
        realm: &str,
        service: Option<&str>,
        scope: Option<&str>,
        credential: Option<Credential>,
    ) -> Result<(String, u64), RegistryError> {
        let fail = |reason: String| RegistryError::Auth {
            registry: host.to_owned(),
            reason,
        };
        let mut query: Vec<(&str, &str)> = scope.map(|s| ("scope", s)).into_iter().collect();
        if let Some(s) = service {
            query.push(("service", s));
        }
        let req = match &credential {
            Some(Credential::IdentityToken(refresh)) => {
                let mut form = vec![
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh.as_str()),
                    ("client_id", "skiff"),
                ];
                if let Some(s) = scope {
                    form.push(("scope", s));
                }
                if let Some(s) = service {
                    form.push(("service", s));
                }
                ep.http.post(realm).form(&form)
            }
            Some(Credential::Basic { username, password }) => ep
                .http
                .get(realm)
                .query(&query)
                .basic_auth(username, Some(password)),
            None => ep.http.get(realm).query(&query),
        };
        let resp = req
            .send()
            .await
            .map_err(|e| fail(format!("token endpoint {realm}: {}", error_chain(&e))))?;
        match resp.status() {
            s if s.is_success() => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(fail(format!(
                    "the token endpoint refused the credentials ({}); run `skiff login {host}`",
                    resp.status()
                )));
            }
            s => return Err(fail(format!("token endpoint {realm} answered {s}"))),
        }
        let body = read_limited(resp, 1 << 20, "token response")
            .await
            .map_err(|e| fail(e.to_string()))?;
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| fail(format!("token response is not JSON: {e}")))?;
        let token = v
            .get("token")
            .or_else(|| v.get("access_token"))
            .and_then(serde_json::Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| fail("token response has no token".into()))?;
        let expires_in = v
            .get("expires_in")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(60);
        Ok((token.to_owned(), expires_in))
    }

    /// Sends a request with auth, retrying connection errors, 5xx and 429 with backoff.
    async fn send(
        &self,
        host: &str,
        registry: &str,
        repository: &str,
        build: impl Fn(&Endpoint) -> RequestBuilder,
    ) -> Result<Response, RegistryError> {
        let policy = self.inner.policy;
        let ep = self.endpoint(host).await?;
        let mut authenticated = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = build(&ep);
            if let Some(h) = self.cached_auth(host, repository) {
                req = req.header(AUTHORIZATION, h);
            }
            let delay = match req.send().await {
                Err(e) if is_certificate_error(&e) => return Err(untrusted(host, &e)),
                Err(e) => {
                    if attempt >= policy.attempts {
                        return Err(RegistryError::Unreachable {
                            registry: host.to_owned(),
                            reason: error_chain(&e),
                        });
                    }
                    tracing::warn!(host, attempt, error = %error_chain(&e), "request failed, retrying");
                    backoff(policy, attempt)
                }
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED => {
                    let challenge = resp
                        .headers()
                        .get(WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_challenge);
                    match challenge {
                        Some(ch) if !authenticated => {
                            authenticated = true;
                            self.authenticate(&ep, host, registry, repository, ch)
                                .await?;
                            attempt -= 1;
                            continue;
                        }
                        _ => {
                            return Err(RegistryError::Unauthorized {
                                registry: registry.to_owned(),
                                repository: repository.to_owned(),
                            });
                        }
                    }
                }
                Ok(resp)
                    if resp.status() == StatusCode::TOO_MANY_REQUESTS
                        || resp.status().is_server_error() =>
                {
                    if attempt >= policy.attempts {
                        return Ok(resp);
                    }
                    let retry_after = resp
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(|s| Duration::from_secs(s).min(policy.max_delay));
                    tracing::warn!(host, attempt, status = %resp.status(), "registry busy, retrying");
                    retry_after.unwrap_or_else(|| backoff(policy, attempt))
                }
                Ok(resp) => return Ok(resp),
            };
            tokio::time::sleep(delay).await;
        }
    }

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
                Err(
                    e @ (RegistryError::NotFound { .. }
                    | RegistryError::Unreachable { .. }
                    | RegistryError::Status { .. }),
                ) if i + 1 < hosts.len() => {
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
        let bytes =
            read_limited(resp, MAX_MANIFEST_BYTES, &format!("manifest {reference}")).await?;
        let digest = Digest::of(&bytes);
        let expected = Digest::parse(reference).ok().or(header_digest);
        if let Some(expected) = expected.filter(|e| *e != digest) {
            return Err(RegistryError::DigestMismatch {
                what: format!("manifest {repository}@{reference}"),
                expected,
                actual: digest,
            });
        }
        let parsed = image::parse(&bytes, content_type.as_deref()).map_err(|source| {
            RegistryError::Manifest {
                reference: format!("{registry}/{repository}:{reference}"),
                source,
            }
        })?;
        Ok(FetchedManifest {
            bytes,
            digest,
            parsed,
        })
    }

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

    /// Checks credentials against a registry (for `login`): GET /v2/ with the auth handshake.
    pub async fn check_login(&self, host: &str) -> Result<(), RegistryError> {
        let resp = self
            .send(host, host, "", |ep| ep.http.get(format!("{}/v2/", ep.base)))
            .await?;
        check_status(resp, host, "", "/v2/").await.map(|_| ())
    }
}

fn is_certificate_error(e: &reqwest::Error) -> bool {
    let chain = error_chain(e);
    chain.contains("certificate")
        || chain.contains("UnknownIssuer")
        || chain.contains("CertNotValid")
}

fn untrusted(host: &str, e: &reqwest::Error) -> RegistryError {
    RegistryError::Unreachable {
        registry: host.to_owned(),
        reason: format!(
            "its TLS certificate is not trusted ({}); put the registry's CA certificate in \
             /etc/docker/certs.d/{host}/ca.crt or set ca_file for it in skiff's config",
            error_chain(e)
        ),
    }
}

fn backoff(policy: RetryPolicy, attempt: u32) -> Duration {
    let exp = policy
        .base_delay
        .saturating_mul(1 << attempt.saturating_sub(1).min(16));
    exp.min(policy.max_delay)
}

async fn check_status(
    resp: Response,
    host: &str,
    repository: &str,
    what: &str,
) -> Result<Response, RegistryError> {
    match resp.status() {
        s if s.is_success() => Ok(resp),
        StatusCode::NOT_FOUND => Err(RegistryError::NotFound {
            what: what.to_owned(),
            registry: host.to_owned(),
            repository: repository.to_owned(),
        }),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(RegistryError::Unauthorized {
            registry: host.to_owned(),
            repository: repository.to_owned(),
        }),
        status => {
            let url = resp.url().to_string();
            let body = resp.text().await.unwrap_or_default();
            let body: String = body.chars().take(300).collect();
            // distribution answers 404-worthy conditions (MANIFEST_UNKNOWN, NAME_UNKNOWN) in the body.
            if body.contains("MANIFEST_UNKNOWN")
                || body.contains("NAME_UNKNOWN")
                || body.contains("BLOB_UNKNOWN")
            {
                return Err(RegistryError::NotFound {
                    what: what.to_owned(),
                    registry: host.to_owned(),
                    repository: repository.to_owned(),
                });
            }
            Err(RegistryError::Status { url, status, body })
        }
    }
}

async fn read_limited(resp: Response, limit: u64, what: &str) -> Result<Vec<u8>, RegistryError> {
    let too_large = || RegistryError::TooLarge {
        what: what.to_owned(),
        limit,
    };
    if resp.content_length().is_some_and(|l| l > limit) {
        return Err(too_large());
    }
    let host = resp.url().host_str().unwrap_or_default().to_owned();
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| RegistryError::Unreachable {
            registry: host.clone(),
            reason: error_chain(&e),
        })?;
        if out.len() as u64 + chunk.len() as u64 > limit {
            return Err(too_large());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}
