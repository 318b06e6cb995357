//! The distribution client: auth, credentials, configuration, manifests, blob streams. It
//! speaks HTTP and nothing more: what a manifest means is the `image` module's business.

pub(crate) mod auth;
mod blobs;
#[cfg(test)]
pub(crate) use blobs::tests::{registry_with_blob, stream as stream_test_blob};
mod client;
pub(crate) mod config;
pub(crate) mod credentials;
mod errors;
mod foreground;
mod manifests;
#[cfg(test)]
pub(crate) mod memory;
mod parts;
mod retry;
pub(crate) mod session;
mod transport;
mod upload;

pub(crate) use client::RegistryClient;
pub(crate) use config::Config;
pub use config::ConfigError;
pub use credentials::{AuthFiles, CredentialError};
pub use errors::{RegistryError, RetryPolicy};
pub(crate) use foreground::Foreground;
pub(crate) use manifests::FetchedManifest;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::Digest;

/// What a pull needs from a registry: the seam between the pipeline and HTTP.
/// [`RegistryClient`] speaks to real registries; tests use an in-memory one.
///
/// The futures are `Send`: a pull runs its layers on tokio tasks.
pub(crate) trait Registry: Send + Sync {
    /// Hosts to try for `registry/repository`, mirrors first.
    fn hosts_for(&self, api_registry: &str, registry: &str, repository: &str) -> Vec<String>;

    /// Layers downloaded at once unless a pull says otherwise.
    fn max_concurrent_downloads(&self) -> usize;

    /// A manifest or index by tag or digest, its digest verified.
    fn manifest(
        &self,
        hosts: &[String],
        registry: &str,
        repository: &str,
        reference: &str,
    ) -> impl Future<Output = Result<FetchedManifest, RegistryError>> + Send;

    /// A small blob (a config) whole, its digest verified, at most `limit` bytes.
    fn small_blob(
        &self,
        hosts: &[String],
        registry: &str,
        repository: &str,
        digest: &Digest,
        limit: u64,
    ) -> impl Future<Output = Result<Vec<u8>, RegistryError>> + Send;

    /// Streams a blob into `sink`, calling `progress` with the size of every chunk sent; the
    /// consumer verifies the digest. A closed sink ends the stream without error.
    #[allow(clippy::too_many_arguments)]
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
    ) -> impl Future<Output = Result<(), RegistryError>> + Send;
}
