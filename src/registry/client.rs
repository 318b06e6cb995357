//! The Registry HTTP API v2 client: one per engine, shared by every registry it talks to. Its
//! parts: `transport` (endpoints), `session` (auth), `retry` (sending), `manifests`, `blobs`.

use std::sync::Arc;

use super::config::Config;
use super::credentials::AuthFiles;
use super::errors::{RegistryError, RetryPolicy, check_status};
use super::session::AuthCache;
use super::transport::Endpoints;

/// A client for every registry an engine talks to.
#[derive(Debug, Clone)]
pub struct RegistryClient {
    pub(super) inner: Arc<Inner>,
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

    /// Checks credentials against a registry (for `login`): GET /v2/ with the auth handshake.
    pub async fn check_login(&self, host: &str) -> Result<(), RegistryError> {
        let resp = self
            .send(host, host, "", |ep| ep.http.get(format!("{}/v2/", ep.base)))
            .await?;
        check_status(resp, host, "", "/v2/").await.map(|_| ())
    }
}
