//! A registry in memory, for fast tests of the pull pipeline: manifests by repository and
//! reference, blobs by digest, and faults on demand (a blob that fails, or serves other bytes).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{FetchedManifest, Registry, RegistryError};
use crate::Digest;

/// What a blob request gets.
#[derive(Debug, Clone)]
enum BlobAnswer {
    Bytes(Vec<u8>),
    Fail(String),
}

#[derive(Debug, Default)]
struct State {
    /// (repository, tag or digest) → (bytes, Content-Type).
    manifests: HashMap<(String, String), (Vec<u8>, Option<String>)>,
    blobs: HashMap<Digest, BlobAnswer>,
    /// Every blob streamed (not small blobs), in order.
    streamed: Vec<Digest>,
}

/// An in-memory registry; clones share it.
#[derive(Debug, Clone, Default)]
pub(crate) struct MemoryRegistry {
    state: Arc<Mutex<State>>,
}

impl MemoryRegistry {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores a manifest or index under `repository@digest` and, if given, `repository:tag`;
    /// returns its digest.
    pub(crate) fn put_manifest(
        &self,
        repository: &str,
        tag: Option<&str>,
        bytes: &[u8],
        content_type: &str,
    ) -> Digest {
        let digest = Digest::of(bytes);
        let entry = (bytes.to_vec(), Some(content_type.to_owned()));
        let mut state = self.state();
        for reference in [Some(digest.to_string()), tag.map(str::to_owned)]
            .into_iter()
            .flatten()
        {
            state
                .manifests
                .insert((repository.to_owned(), reference), entry.clone());
        }
        digest
    }

    /// Stores a blob under its digest; returns the digest.
    pub(crate) fn put_blob(&self, bytes: &[u8]) -> Digest {
        let digest = Digest::of(bytes);
        self.put_blob_as(digest, bytes);
        digest
    }

    /// Serves `bytes` for `digest`, whatever they hash to.
    pub(crate) fn put_blob_as(&self, digest: Digest, bytes: &[u8]) {
        self.state()
            .blobs
            .insert(digest, BlobAnswer::Bytes(bytes.to_vec()));
    }

    /// Makes every request for `digest` fail with a download error saying `reason`.
    pub(crate) fn fail_blob(&self, digest: Digest, reason: &str) {
        self.state()
            .blobs
            .insert(digest, BlobAnswer::Fail(reason.to_owned()));
    }

    /// The blobs streamed so far (layer downloads), in order.
    pub(crate) fn streamed(&self) -> Vec<Digest> {
        self.state().streamed.clone()
    }

    fn blob_bytes(
        &self,
        registry: &str,
        repository: &str,
        digest: &Digest,
    ) -> Result<Vec<u8>, RegistryError> {
        match self.state().blobs.get(digest) {
            Some(BlobAnswer::Bytes(bytes)) => Ok(bytes.clone()),
            Some(BlobAnswer::Fail(reason)) => Err(RegistryError::Download {
                digest: *digest,
                registry: registry.to_owned(),
                reason: reason.clone(),
            }),
            None => Err(RegistryError::NotFound {
                what: format!("blob {digest}"),
                registry: registry.to_owned(),
                repository: repository.to_owned(),
            }),
        }
    }
}

impl Registry for MemoryRegistry {
    fn hosts_for(&self, api_registry: &str, _registry: &str, _repository: &str) -> Vec<String> {
        vec![api_registry.to_owned()]
    }

    fn max_concurrent_downloads(&self) -> usize {
        3
    }

    async fn manifest(
        &self,
        _hosts: &[String],
        registry: &str,
        repository: &str,
        reference: &str,
    ) -> Result<FetchedManifest, RegistryError> {
        let found = self
            .state()
            .manifests
            .get(&(repository.to_owned(), reference.to_owned()))
            .cloned();
        let Some((bytes, content_type)) = found else {
            return Err(RegistryError::NotFound {
                what: format!("manifest {reference}"),
                registry: registry.to_owned(),
                repository: repository.to_owned(),
            });
        };
        let digest = Digest::of(&bytes);
        FetchedManifest::parse(bytes, digest, content_type.as_deref(), || {
            format!("{registry}/{repository}:{reference}")
        })
    }

    async fn small_blob(
        &self,
        _hosts: &[String],
        registry: &str,
        repository: &str,
        digest: &Digest,
        limit: u64,
    ) -> Result<Vec<u8>, RegistryError> {
        let bytes = self.blob_bytes(registry, repository, digest)?;
        if bytes.len() as u64 > limit {
            return Err(RegistryError::TooLarge {
                what: format!("blob {digest}"),
                limit,
            });
        }
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(RegistryError::DigestMismatch {
                what: format!("blob {digest}"),
                expected: *digest,
                actual,
            });
        }
        Ok(bytes)
    }

    async fn blob(
        &self,
        _hosts: &[String],
        registry: &str,
        repository: &str,
        digest: &Digest,
        _size: Option<u64>,
        limit: u64,
        sink: mpsc::Sender<Bytes>,
        progress: impl Fn(u64) + Send + Sync,
    ) -> Result<(), RegistryError> {
        self.state().streamed.push(*digest);
        let bytes = self.blob_bytes(registry, repository, digest)?;
        if bytes.len() as u64 > limit {
            return Err(RegistryError::TooLarge {
                what: format!("blob {digest}"),
                limit,
            });
        }
        // Small chunks, as a socket delivers them.
        for chunk in bytes.chunks(4096) {
            progress(chunk.len() as u64);
            if sink.send(Bytes::copy_from_slice(chunk)).await.is_err() {
                break;
            }
        }
        Ok(())
    }
}
