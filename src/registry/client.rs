//! The Registry HTTP API v2 client: one per engine, shared by every registry it talks to. Its
//! parts: `transport` (endpoints), `session` (auth), `retry` (sending), `manifests`, `blobs`.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::config::Config;
use super::credentials::AuthFiles;
use super::errors::{RegistryError, RetryPolicy, check_status};
use super::session::AuthCache;
use super::transport::Endpoints;
use super::{FetchedManifest, Registry};
use crate::Digest;

/// A client for every registry an engine talks to.
#[derive(Debug, Clone)]
pub struct RegistryClient {
    pub(super) inner: Arc<Inner>,
    /// Foreground reads this client's blob downloads give way to (a lazy run's full pull).
    pub(super) foreground: Option<Arc<super::Foreground>>,
}

/// What the clones of a client share.
#[derive(Debug)]
pub(super) struct Inner {
    pub(super) config: Config,
    pub(super) credentials: AuthFiles,
    pub(super) policy: RetryPolicy,
    pub(super) endpoints: Endpoints,
    pub(super) auth: AuthCache,
}

impl RegistryClient {
    /// A client with a configuration, credential files and retry policy.
    pub fn new(config: Config, credentials: AuthFiles, policy: RetryPolicy) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                credentials,
                policy,
                endpoints: Endpoints::default(),
                auth: AuthCache::default(),
            }),
            foreground: None,
        }
    }

    /// This client with its blob downloads giving way to `foreground` reads.
    pub(crate) fn giving_way_to(mut self, foreground: Arc<super::Foreground>) -> Self {
        self.foreground = Some(foreground);
        self
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

    /// Checks credentials against a registry (for `login`): GET /v2/ with the auth handshake.
    pub async fn check_login(&self, host: &str) -> Result<(), RegistryError> {
        let resp = self
            .send(host, host, "", |ep| ep.http.get(format!("{}/v2/", ep.base)))
            .await?;
        check_status(resp, host, "", "/v2/").await.map(|_| ())
    }
}

impl Registry for RegistryClient {
    fn hosts_for(&self, api_registry: &str, registry: &str, repository: &str) -> Vec<String> {
        RegistryClient::hosts_for(self, api_registry, registry, repository)
    }

    fn max_concurrent_downloads(&self) -> usize {
        self.config().max_concurrent_downloads
    }

    fn manifest(
        &self,
        hosts: &[String],
        registry: &str,
        repository: &str,
        reference: &str,
    ) -> impl Future<Output = Result<FetchedManifest, RegistryError>> + Send {
        RegistryClient::manifest(self, hosts, registry, repository, reference)
    }

    fn small_blob(
        &self,
        hosts: &[String],
        registry: &str,
        repository: &str,
        digest: &Digest,
        limit: u64,
    ) -> impl Future<Output = Result<Vec<u8>, RegistryError>> + Send {
        RegistryClient::small_blob(self, hosts, registry, repository, digest, limit)
    }

    fn blob(
        &self,
        hosts: &[String],
        registry: &str,
        repository: &str,
        digest: &Digest,
        size: Option<u64>,
        limit: u64,
        sink: mpsc::Sender<Bytes>,
        progress: impl Fn(u64) + Send + Sync,
    ) -> impl Future<Output = Result<(), RegistryError>> + Send {
        RegistryClient::blob(
            self, hosts, registry, repository, digest, size, limit, sink, progress,
        )
    }
}
