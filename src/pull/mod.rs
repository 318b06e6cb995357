//! The cold-start pipeline: resolve → manifest (index → platform) → config → every missing
//! layer at once (bounded), each streamed from the socket through both digests,
//! decompression and extraction into the store, with no temporary file.

use std::io::{self, Read};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rootfs_cache::{ImageLayer, ImageRecord, LayerSlot, RefRecord, Store, StoreError};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::Digest;
use crate::image::{self, Fetched, ImageManifest, MAX_CONFIG_BYTES, ManifestError, Platform};
use crate::progress::{LayerEvent, Progress};
use crate::reference::Reference;
use crate::registry::{FetchedManifest, RegistryClient, RegistryError};

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
        /// What failed.
        #[source]
        source: StoreError,
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
struct Job<'a> {
    client: &'a RegistryClient,
    store: &'a Store,
    reference: &'a Reference,
    hosts: Vec<String>,
    name: String,
}

impl Job<'_> {
    fn registry_err(&self, source: RegistryError) -> PullError {
        PullError::Registry {
            reference: self.name.clone(),
            source,
        }
    }

    fn store_err(&self, source: StoreError) -> PullError {
        PullError::Store {
            reference: self.name.clone(),
            source,
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
    let started = Instant::now();
    let job = Job {
        client,
        store,
        reference,
        hosts: client.hosts_for(
            reference.api_registry(),
            reference.registry(),
            reference.repository(),
        ),
        name: reference.to_string(),
    };
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
        pull_layers(&job, &resolved.layers, options, progress).await?;
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

/// The manifest the reference names; through an index, the entry for `want`.
async fn resolve_manifest(
    job: &Job<'_>,
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
async fn fetch_config(
    job: &Job<'_>,
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
fn hold_layers(job: &Job<'_>, resolved: &Resolved) -> Result<rootfs_cache::RunHold, PullError> {
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
fn record_image(job: &Job<'_>, resolved: &Resolved) -> Result<(), PullError> {
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

/// Every layer at once (bounded): cached ones are skipped, missing ones streamed into the
/// store. The first failure stops the others. Returns (downloaded, cached, bytes).
async fn pull_layers(
    job: &Job<'_>,
    layers: &[ImageLayer],
    options: &PullOptions,
    progress: &Arc<dyn Progress>,
) -> Result<(usize, usize, u64), PullError> {
    let limit = options
        .max_concurrent
        .unwrap_or(job.client.config().max_concurrent_downloads)
        .max(1);
    let permits = Arc::new(Semaphore::new(limit));
    let mut tasks = tokio::task::JoinSet::new();
    for layer in layers {
        let source = LayerSource {
            client: job.client.clone(),
            hosts: job.hosts.clone(),
            registry: job.reference.registry().to_owned(),
            repository: job.reference.repository().to_owned(),
        };
        let (store, layer, permits, progress) = (
            job.store.clone(),
            layer.clone(),
            permits.clone(),
            progress.clone(),
        );
        progress.layer(&layer.digest, LayerEvent::Waiting { size: layer.size });
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            pull_layer(&source, store, &layer, progress.as_ref()).await
        });
    }
    let (mut downloaded, mut cached, mut bytes) = (0, 0, 0);
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(Some(n))) => {
                downloaded += 1;
                bytes += n;
            }
            Ok(Ok(None)) => cached += 1,
            Ok(Err(e)) => {
                if first_error.is_none() {
                    first_error = Some(e);
                    // One bad layer fails the pull: stop the others rather than finish them.
                    tasks.abort_all();
                }
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => return Err(job.bad_image(format!("layer task failed: {e}"))),
        }
    }
    match first_error {
        Some(LayerError::Registry(source)) => Err(job.registry_err(source)),
        Some(LayerError::Store(source)) => Err(job.store_err(source)),
        None => Ok((downloaded, cached, bytes)),
    }
}

enum LayerError {
    Registry(RegistryError),
    Store(StoreError),
}

/// Where a layer is downloaded from.
struct LayerSource {
    client: RegistryClient,
    hosts: Vec<String>,
    registry: String,
    repository: String,
}

/// One layer: takes its lock on a blocking thread; if it is missing, streams the download
/// into the store's writer. Returns the bytes downloaded, or None if it was cached.
async fn pull_layer(
    source: &LayerSource,
    store: Store,
    layer: &ImageLayer,
    progress: &dyn Progress,
) -> Result<Option<u64>, LayerError> {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let (start_tx, start_rx) = oneshot::channel::<bool>();
    let (digest, diff_id, media) = (layer.digest, layer.diff_id, layer.media_type.clone());
    let writer = tokio::task::spawn_blocking(move || -> Result<bool, StoreError> {
        match store.begin_layer(&diff_id)? {
            LayerSlot::Present(_) => {
                let _ = start_tx.send(false);
                Ok(false)
            }
            LayerSlot::Vacant(writer) => {
                let _ = start_tx.send(true);
                writer.write(
                    &digest,
                    &media,
                    ChannelRead {
                        rx,
                        chunk: Bytes::new(),
                    },
                )?;
                Ok(true)
            }
        }
    });
    let wanted = start_rx.await.unwrap_or(false);
    let mut downloaded = 0u64;
    let download = if wanted {
        progress.layer(&layer.digest, LayerEvent::Downloading);
        let counter = std::sync::atomic::AtomicU64::new(0);
        let result = source
            .client
            .blob(
                &source.hosts,
                &source.registry,
                &source.repository,
                &layer.digest,
                Some(layer.size),
                u64::MAX,
                tx,
                |n| {
                    counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                    progress.layer(&layer.digest, LayerEvent::Advanced { bytes: n });
                },
            )
            .await;
        downloaded = counter.into_inner();
        result
    } else {
        drop(tx);
        Ok(())
    };
    let stored = writer.await.map_err(|e| {
        LayerError::Store(StoreError::Io {
            op: "layer writer",
            path: Default::default(),
            source: io::Error::other(e),
        })
    })?;
    // A failed download explains a truncated stream better than the store's view of it.
    download.map_err(LayerError::Registry)?;
    if stored.map_err(LayerError::Store)? {
        progress.layer(&layer.digest, LayerEvent::Complete);
        Ok(Some(downloaded))
    } else {
        progress.layer(&layer.digest, LayerEvent::AlreadyExists);
        Ok(None)
    }
}

/// The blocking end of a download: what the store's writer reads.
struct ChannelRead {
    rx: mpsc::Receiver<Bytes>,
    chunk: Bytes,
}

impl Read for ChannelRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.chunk = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk = self.chunk.slice(n..);
        Ok(n)
    }
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
