//! The cold-start pipeline: resolve → manifest (index → platform) → config → every missing
//! layer at once (bounded), each streamed from the socket through both digests,
//! decompression and extraction into the store, with no temporary file.

mod layers;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rootfs_cache::{ImageLayer, ImageRecord, RefRecord, Store, StoreError};

use crate::Digest;
use crate::image::{self, Fetched, ImageManifest, MAX_CONFIG_BYTES, ManifestError, Platform};
use crate::progress::Progress;
use crate::reference::Reference;
use crate::registry::{FetchedManifest, Registry, RegistryClient, RegistryError};

/// Why a pull failed; the message names the image and what to do.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The registry side failed.
    #[error("pulling {reference}: {source}")]
    Registry {
        /// The image.
        reference: String,
        /// What failed.
        #[source]
        source: RegistryError,
    },
    /// No manifest for this platform in a multi-platform image.
    #[error(
        "pulling {reference}: no image for platform {platform} (the image has: {available}); use --platform to choose one"
    )]
    NoPlatform {
        /// The image.
        reference: String,
        /// What was wanted.
        platform: String,
        /// What the index offers.
        available: String,
    },
    /// An index pointing at another index, or similar nonsense.
    #[error("pulling {reference}: {reason}")]
    BadImage {
        /// The image.
        reference: String,
        /// What is wrong.
        reason: String,
    },
    /// The store refused a layer or could not record the image.
    #[error("pulling {reference}: {source}")]
    Store {
        /// The image.
        reference: String,
        /// What failed (boxed: a store error is large).
        #[source]
        source: Box<StoreError>,
    },
}

/// Options of one pull.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Platform to select from a multi-platform image, `os/arch[/variant]` (default: this
    /// host's).
    pub platform: Option<String>,
    /// Layers downloaded at once (default: from the configuration).
    pub max_concurrent: Option<usize>,
}

/// What a pull did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PullReport {
    /// The image's manifest digest (its identity).
    pub manifest: Digest,
    /// The index the tag pointed at, for multi-platform images.
    pub index: Option<Digest>,
    /// The config digest (docker's image id).
    pub config: Digest,
    /// Layers downloaded now.
    pub downloaded_layers: usize,
    /// Layers already in the store.
    pub cached_layers: usize,
    /// Compressed bytes downloaded.
    pub downloaded_bytes: u64,
    /// Wall time of the pull.
    pub elapsed: Duration,
}

/// One pull's context: where from, into what, for whom.
struct Job<'a, R> {
    client: &'a R,
    store: &'a Store,
    reference: &'a Reference,
    hosts: Vec<String>,
    name: String,
}

impl<'a, R: Registry> Job<'a, R> {
    fn new(client: &'a R, store: &'a Store, reference: &'a Reference) -> Self {
        Job {
            client,
            store,
            reference,
            hosts: client.hosts_for(
                reference.api_registry(),
                reference.registry(),
                reference.repository(),
            ),
            name: reference.to_string(),
        }
    }
}

impl<R> Job<'_, R> {
    fn registry_err(&self, source: RegistryError) -> PullError {
        PullError::Registry {
            reference: self.name.clone(),
            source,
        }
    }

    fn store_err(&self, source: StoreError) -> PullError {
        PullError::Store {
            reference: self.name.clone(),
            source: Box::new(source),
        }
    }

    fn bad_image(&self, reason: String) -> PullError {
        PullError::BadImage {
            reference: self.name.clone(),
            reason,
        }
    }

    fn manifest_err(&self, source: ManifestError) -> PullError {
        self.registry_err(RegistryError::Manifest {
            reference: self.name.clone(),
            source,
        })
    }
}

/// The image a pull resolved to: its manifest (and the index it came from) and config.
struct Resolved {
    index: Option<FetchedManifest>,
    fetched: FetchedManifest,
    config_digest: Digest,
    config_bytes: Vec<u8>,
    layers: Vec<ImageLayer>,
}

/// Pulls `reference` into `store`: resolve the manifest for the platform, fetch and check the
/// config, hold the layers, stream the missing ones into the store, then record the image.
pub(crate) async fn pull(
    client: &RegistryClient,
    store: &Store,
    reference: &Reference,
    options: &PullOptions,
    progress: &Arc<dyn Progress>,
) -> Result<PullReport, PullError> {
    pull_from(client, store, reference, options, progress).await
}

/// [`pull`] from any [`Registry`].
pub(crate) async fn pull_from<R: Registry + Clone + 'static>(
    client: &R,
    store: &Store,
    reference: &Reference,
    options: &PullOptions,
    progress: &Arc<dyn Progress>,
) -> Result<PullReport, PullError> {
    let started = Instant::now();
    let job = Job::new(client, store, reference);
    let want = match &options.platform {
        Some(p) => image::parse_platform(p).ok_or_else(|| {
            job.bad_image(format!(
                "invalid --platform {p:?}: expected os/arch[/variant], e.g. linux/arm64"
            ))
        })?,
        None => image::host_platform(),
    };
    let (index, fetched, manifest) = resolve_manifest(&job, &want).await?;
    let resolved = fetch_config(&job, &want, index, fetched, manifest).await?;
    let hold = hold_layers(&job, &resolved)?;
    let (downloaded_layers, cached_layers, downloaded_bytes) =
        layers::pull_layers(&job, &resolved.layers, options, progress).await?;
    record_image(&job, &resolved)?;
    hold.release().map_err(|e| job.store_err(e))?;
    Ok(PullReport {
        manifest: resolved.fetched.digest,
        index: resolved.index.map(|i| i.digest),
        config: resolved.config_digest,
        downloaded_layers,
        cached_layers,
        downloaded_bytes,
        elapsed: started.elapsed(),
    })
}

/// The image manifest `reference` names for `want` (through an index), with the hosts to
/// try: what `index push` describes and a lazy run reads.
pub(crate) async fn manifest_for(
    client: &RegistryClient,
    store: &Store,
    reference: &Reference,
    want: &Platform,
) -> Result<(Vec<String>, FetchedManifest, ImageManifest), PullError> {
    let job = Job::new(client, store, reference);
    let (_, fetched, manifest) = resolve_manifest(&job, want).await?;
    Ok((job.hosts, fetched, manifest))
}

/// The manifest the reference names; through an index, the entry for `want`.
async fn resolve_manifest<R: Registry>(
    job: &Job<'_, R>,
    want: &Platform,
) -> Result<(Option<FetchedManifest>, FetchedManifest, ImageManifest), PullError> {
    let (registry, repository) = (job.reference.registry(), job.reference.repository());
    let top = job
        .client
        .manifest(
            &job.hosts,
            registry,
            repository,
            &job.reference.api_reference(),
        )
        .await
        .map_err(|e| job.registry_err(e))?;
    let idx = match top.parsed.clone() {
        Fetched::Manifest(m) => return Ok((None, top, *m)),
        Fetched::Index(idx) => idx,
    };
    let entry = image::select_platform(&idx, want).map_err(|available| PullError::NoPlatform {
        reference: job.name.clone(),
        platform: image::platform_string(want),
        available: if available.is_empty() {
            "no platforms".into()
        } else {
            available.join(", ")
        },
    })?;
    let digest = image::digest_of(entry, "index entry").map_err(|e| job.manifest_err(e))?;
    let child = job
        .client
        .manifest(&job.hosts, registry, repository, &digest.to_string())
        .await
        .map_err(|e| job.registry_err(e))?;
    match child.parsed.clone() {
        Fetched::Manifest(m) => Ok((Some(top), child, *m)),
        Fetched::Index(_) => Err(job.bad_image(format!(
            "index entry {digest} for {} is itself an index",
            image::platform_string(want)
        ))),
    }
}

/// Downloads the config (bounded), checks it against the manifest and the platform.
async fn fetch_config<R: Registry>(
    job: &Job<'_, R>,
    want: &Platform,
    index: Option<FetchedManifest>,
    fetched: FetchedManifest,
    manifest: ImageManifest,
) -> Result<Resolved, PullError> {
    let descriptor = manifest.config();
    let config_digest = image::digest_of(descriptor, "config").map_err(|e| job.manifest_err(e))?;
    if descriptor.size() > MAX_CONFIG_BYTES {
        return Err(job.registry_err(RegistryError::TooLarge {
            what: format!("image config {config_digest} ({} bytes)", descriptor.size()),
            limit: MAX_CONFIG_BYTES,
        }));
    }
    let config_bytes = job
        .client
        .small_blob(
            &job.hosts,
            job.reference.registry(),
            job.reference.repository(),
            &config_digest,
            MAX_CONFIG_BYTES,
        )
        .await
        .map_err(|e| job.registry_err(e))?;
    let config = image::parse_config(&config_bytes, &manifest).map_err(|e| job.manifest_err(e))?;
    if config.config.os() != want.os() {
        return Err(job.bad_image(format!(
            "the image is for {}/{}, not {}",
            config.config.os(),
            config.config.architecture(),
            image::platform_string(want)
        )));
    }
    let mut layers = Vec::with_capacity(config.diff_ids.len());
    for (descriptor, diff_id) in manifest.layers().iter().zip(&config.diff_ids) {
        let digest = image::digest_of(descriptor, "layer").map_err(|e| job.manifest_err(e))?;
        let media_type = descriptor.media_type().to_string();
        if rootfs_cache::Compression::from_media_type(&media_type).is_none() {
            return Err(job.store_err(StoreError::UnsupportedMediaType {
                layer: digest,
                media_type,
            }));
        }
        layers.push(ImageLayer {
            digest,
            diff_id: *diff_id,
            size: descriptor.size(),
            media_type,
        });
    }
    Ok(Resolved {
        index,
        fetched,
        config_digest,
        config_bytes,
        layers,
    })
}

/// Holds the layers as a run does, so that a concurrent gc cannot remove one committed before
/// the image record that references it is written.
fn hold_layers<R>(
    job: &Job<'_, R>,
    resolved: &Resolved,
) -> Result<rootfs_cache::RunHold, PullError> {
    static PULLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = PULLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let hold_id = format!(
        "pull-{}-{seq}-{}",
        std::process::id(),
        resolved.fetched.digest.short()
    );
    let diff_ids: Vec<Digest> = resolved.layers.iter().map(|l| l.diff_id).collect();
    job.store
        .hold_run(&hold_id, &diff_ids, &[resolved.fetched.digest])
        .map_err(|e| job.store_err(e))
}

/// Writes the blobs, the image record and the tag, once every layer is in the store.
fn record_image<R>(job: &Job<'_, R>, resolved: &Resolved) -> Result<(), PullError> {
    let store = job.store;
    let err = |e| job.store_err(e);
    store
        .put_blob(&resolved.config_digest, &resolved.config_bytes)
        .map_err(err)?;
    store
        .put_blob(&resolved.fetched.digest, &resolved.fetched.bytes)
        .map_err(err)?;
    if let Some(index) = &resolved.index {
        store.put_blob(&index.digest, &index.bytes).map_err(err)?;
    }
    let now = rootfs_cache::records::now();
    let created_at = store
        .image(&resolved.fetched.digest)
        .ok()
        .flatten()
        .map_or(now, |r| r.created_at);
    store
        .put_image(&ImageRecord {
            manifest: resolved.fetched.digest,
            config: resolved.config_digest,
            layers: resolved.layers.clone(),
            created_at,
            last_used: now,
        })
        .map_err(err)?;
    if let Some(tag) = job.reference.tag() {
        let record = RefRecord {
            manifest: resolved.fetched.digest,
            index: resolved.index.as_ref().map(|i| i.digest),
            resolved_at: now,
        };
        store
            .set_ref(
                job.reference.registry(),
                job.reference.repository(),
                tag,
                &record,
            )
            .map_err(err)?;
    }
    Ok(())
}

/// The image a reference names, from the store alone (no network): by digest, or by the
/// tag's last resolution; `None` unless every layer is present.
pub(crate) fn resolve_local(
    store: &Store,
    reference: &Reference,
) -> Result<Option<ImageRecord>, StoreError> {
    let manifest = match (reference.digest(), reference.tag()) {
        (Some(d), _) => *d,
        (None, Some(tag)) => {
            match store.get_ref(reference.registry(), reference.repository(), tag)? {
                Some(r) => r.manifest,
                None => return Ok(None),
            }
        }
        (None, None) => return Ok(None),
    };
    // A digest reference may name the index: follow the ref's record if it matches.
    let Some(record) = store.image(&manifest)? else {
        return Ok(None);
    };
    if record.layers.iter().all(|l| store.has_layer(&l.diff_id)) {
        Ok(Some(record))
    } else {
        Ok(None)
    }
}
