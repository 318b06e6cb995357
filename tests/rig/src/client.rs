//! A small push/read client for the Registry HTTP API v2, used to seed test registries.
//!
//! This is test tooling, deliberately independent of skiff's own registry client, so that a bug
//! in one cannot hide a bug in the other.
//!
//! Against a token-auth registry it follows the Bearer flow: on a 401 with a `Bearer` challenge
//! it fetches a token from the realm (with its credentials, if any) and retries once; tokens are
//! cached per scope and the latest one per repository is sent up front.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use reqwest::StatusCode;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{ACCEPT, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use rootfs_cache::Digest;

use crate::image::{Blob, Image, Index};
use crate::token::{BearerChallenge, parse_challenge};

/// A manifest as the registry served it.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// The body.
    pub bytes: Vec<u8>,
    /// The Content-Type header.
    pub media_type: String,
    /// The Docker-Content-Digest header, when sent.
    pub digest_header: Option<String>,
}

/// Blocking client bound to one registry.
#[derive(Debug, Clone)]
pub struct RegistryClient {
    base: String,
    http: Client,
    credentials: Option<(String, String)>,
    tokens: Arc<Mutex<TokenCache>>,
}

/// Bearer tokens: by challenge scope, and the latest one per repository.
#[derive(Debug, Default)]
struct TokenCache {
    by_scope: HashMap<String, String>,
    by_repo: HashMap<String, String>,
}

impl RegistryClient {
    /// A client for `base` (`http(s)://host:port`), trusting `ca_pem` and sending basic auth.
    pub fn new(
        base: &str,
        ca_pem: Option<&str>,
        credentials: Option<(&str, &str)>,
    ) -> Result<Self> {
        let mut builder = Client::builder().timeout(std::time::Duration::from_secs(60));
        if let Some(pem) = ca_pem {
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes())?);
        }
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            http: builder.build()?,
            credentials: credentials.map(|(u, p)| (u.to_owned(), p.to_owned())),
            tokens: Arc::default(),
        })
    }

    fn auth(&self, req: RequestBuilder, token: Option<&str>) -> RequestBuilder {
        match (token, &self.credentials) {
            (Some(token), _) => req.bearer_auth(token),
            (None, Some((user, password))) => req.basic_auth(user, Some(password)),
            (None, None) => req,
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, TokenCache> {
        self.tokens
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends the request `build` makes for `repo` ("" for /v2/), answering a Bearer challenge
    /// once with a cached or fresh token.
    fn send(&self, repo: &str, build: impl Fn() -> RequestBuilder) -> Result<Response> {
        let sent = self.cache().by_repo.get(repo).cloned();
        let resp = self.auth(build(), sent.as_deref()).send()?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let Some(challenge) = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_challenge)
        else {
            return Ok(resp);
        };
        let scope = challenge.scope.clone().unwrap_or_default();
        let cached = self.cache().by_scope.get(&scope).cloned();
        let token = match cached {
            Some(token) if Some(&token) != sent.as_ref() => token,
            _ => self.fetch_token(&challenge)?,
        };
        {
            let mut cache = self.cache();
            cache.by_scope.insert(scope, token.clone());
            cache.by_repo.insert(repo.to_owned(), token.clone());
        }
        Ok(self.auth(build(), Some(&token)).send()?)
    }

    /// GETs a token from the challenge's realm, with basic auth when the client has credentials.
    pub fn fetch_token(&self, challenge: &BearerChallenge) -> Result<String> {
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(service) = &challenge.service {
            query.push(("service", service));
        }
        for scope in challenge.scope.iter().flat_map(|s| s.split(' ')) {
            query.push(("scope", scope));
        }
        let mut req = self.http.get(&challenge.realm).query(&query);
        if let Some((user, password)) = &self.credentials {
            req = req.basic_auth(user, Some(password));
        }
        let resp = Self::check(
            req.send()?,
            &format!("token from {}", challenge.realm),
            &[StatusCode::OK],
        )?;
        let body: serde_json::Value = resp.json()?;
        body.get("token")
            .or_else(|| body.get("access_token"))
            .and_then(|t| t.as_str())
            .map(str::to_owned)
            .context("token response without a token")
    }

    fn check(resp: Response, what: &str, want: &[StatusCode]) -> Result<Response> {
        if want.contains(&resp.status()) {
            return Ok(resp);
        }
        let status = resp.status();
        let body = resp.text().unwrap_or_default();
        bail!("{what}: registry answered {status}: {body}")
    }

    /// GET /v2/ with credentials: the API version check.
    pub fn ping(&self) -> Result<StatusCode> {
        Ok(self
            .send("", || self.http.get(format!("{}/v2/", self.base)))?
            .status())
    }

    /// Uploads a blob (monolithic POST + PUT) unless the registry has it already.
    pub fn push_blob(&self, repo: &str, blob: &Blob) -> Result<()> {
        let what = format!("push blob {} to {repo}", blob.digest);
        let head = self.send(repo, || {
            self.http
                .head(format!("{}/v2/{repo}/blobs/{}", self.base, blob.digest))
        })?;
        if head.status() == StatusCode::OK {
            return Ok(());
        }
        let started = self.send(repo, || {
            self.http
                .post(format!("{}/v2/{repo}/blobs/uploads/", self.base))
        })?;
        let started = Self::check(started, &what, &[StatusCode::ACCEPTED])?;
        let location = started
            .headers()
            .get(LOCATION)
            .and_then(|l| l.to_str().ok())
            .context("upload without Location")?;
        let mut url = if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            location.to_owned()
        };
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("digest={}", blob.digest));
        let put = self.send(repo, || {
            self.http
                .put(&url)
                .header(CONTENT_TYPE, "application/octet-stream")
                .body(blob.bytes.clone())
        })?;
        Self::check(put, &what, &[StatusCode::CREATED])?;
        Ok(())
    }

    /// PUTs a manifest (or index) under a tag or its digest.
    pub fn push_manifest(&self, repo: &str, reference: &str, manifest: &Blob) -> Result<()> {
        let put = self.send(repo, || {
            self.http
                .put(format!("{}/v2/{repo}/manifests/{reference}", self.base))
                .header(CONTENT_TYPE, &manifest.media_type)
                .body(manifest.bytes.clone())
        })?;
        Self::check(
            put,
            &format!("push manifest {repo}:{reference}"),
            &[StatusCode::CREATED],
        )?;
        Ok(())
    }

    /// Pushes layers, config and manifest, tagging the manifest as `tag`.
    pub fn push_image(&self, repo: &str, tag: &str, image: &Image) -> Result<()> {
        for layer in &image.layers {
            self.push_blob(repo, &layer.blob)?;
        }
        self.push_blob(repo, &image.config)?;
        self.push_manifest(repo, tag, &image.manifest)
    }

    /// Pushes every platform's image by digest, then the index under `tag`.
    pub fn push_index(&self, repo: &str, tag: &str, index: &Index) -> Result<()> {
        for image in &index.images {
            self.push_image(repo, &image.manifest.digest.to_string(), image)?;
        }
        self.push_manifest(repo, tag, &index.manifest)
    }

    /// GETs a manifest, offering the given media types.
    pub fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
        accept: &[&str],
    ) -> Result<FetchedManifest> {
        let resp = self.send(repo, || {
            self.http
                .get(format!("{}/v2/{repo}/manifests/{reference}", self.base))
                .header(ACCEPT, accept.join(", "))
        })?;
        let resp = Self::check(
            resp,
            &format!("get manifest {repo}:{reference}"),
            &[StatusCode::OK],
        )?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let media_type = header(CONTENT_TYPE.as_str()).unwrap_or_default();
        let digest_header = header("docker-content-digest");
        Ok(FetchedManifest {
            bytes: resp.bytes()?.to_vec(),
            media_type,
            digest_header,
        })
    }

    /// GETs a blob and checks its digest.
    pub fn get_blob(&self, repo: &str, digest: &Digest) -> Result<Vec<u8>> {
        let resp = self.send(repo, || {
            self.http
                .get(format!("{}/v2/{repo}/blobs/{digest}", self.base))
        })?;
        let bytes = Self::check(resp, &format!("get blob {digest}"), &[StatusCode::OK])?
            .bytes()?
            .to_vec();
        let actual = Digest::of(&bytes);
        if actual != *digest {
            bail!("blob {digest} from {repo} has digest {actual}");
        }
        Ok(bytes)
    }
}
