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
use crate::progress::Progress;
use crate::reference::Reference;
use crate::registry::manifest::{self, Fetched, ImageManifest, MAX_CONFIG_BYTES, Platform};
use crate::registry::{RegistryClient, RegistryError};

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
    /// Platform to select from a multi-platform image (default: this host).
    pub platform: Option<Platform>,
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

/// Pulls `reference` into `store`.
pub async fn pull(
    client: &RegistryClient,
    store: &Store,
    reference: &Reference,
    options: &PullOptions,
    progress: &Progress,
) -> Result<PullReport, PullError> {
    let started = Instant::now();
    let name = reference.to_string();
    let reg_err = |source| PullError::Registry {
        reference: name.clone(),
        source,
    };
    let registry = reference.registry();
    let repository = reference.repository();
    let hosts = client.hosts_for(reference.api_registry(), registry, repository);
    let want = options.platform.clone().unwrap_or_else(Platform::host);

    let top = client
        .manifest(&hosts, registry, repository, &reference.api_reference())
        .await
        .map_err(reg_err)?;
    let (index, image) = match top.parsed.clone() {
        Fetched::Manifest(m) => (None, (top.clone(), m)),
        Fetched::Index(idx) => {
            let entry = manifest::select_platform(&idx, &want).map_err(|available| {
                PullError::NoPlatform {
                    reference: name.clone(),
                    platform: want.to_string(),
                    available: if available.is_empty() {
                        "no platforms".into()
                    } else {
                        available.join(", ")
                    },
                }
            })?;
            let child = client
                .manifest(&hosts, registry, repository, &entry.digest.to_string())
                .await
                .map_err(reg_err)?;
            match child.parsed.clone() {
                Fetched::Manifest(m) => (Some(top.clone()), (child, m)),
                Fetched::Index(_) => {
                    return Err(PullError::BadImage {
                        reference: name,
                        reason: format!(
                            "index entry {} for {want} is itself an index",
                            entry.digest
                        ),
                    });
                }
            }
        }
    };
    let (fetched, manifest) = image;
    if manifest.config.size > MAX_CONFIG_BYTES {
        return Err(reg_err(RegistryError::TooLarge {
            what: format!(
                "image config {} ({} bytes)",
                manifest.config.digest, manifest.config.size
            ),
            limit: MAX_CONFIG_BYTES,
        }));
    }
    let config_bytes = client
        .small_blob(
            &hosts,
            registry,
            repository,
            &manifest.config.digest,
            MAX_CONFIG_BYTES,
        )
        .await
        .map_err(reg_err)?;
    let config = manifest::parse_config(&config_bytes, &manifest).map_err(|source| {
        reg_err(RegistryError::Manifest {
            reference: name.clone(),
            source,
        })
    })?;
    if !config.os.is_empty() && config.os != want.os {
        return Err(PullError::BadImage {
            reference: name,
            reason: format!(
                "the image is for {}/{}, not {want}",
                config.os, config.architecture
            ),
        });
    }

    let store_err = |source| PullError::Store {
        reference: name.clone(),
        source,
    };
    let layers: Vec<ImageLayer> = manifest
        .layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .map(|(d, diff_id)| ImageLayer {
            digest: d.digest,
            diff_id: *diff_id,
            size: d.size,
            media_type: d.media_type.clone(),
        })
        .collect();
    // Hold the layers like a run does, so a concurrent gc cannot remove one that is
    // committed before the image record that references it is written.
    static PULLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = PULLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let hold_id = format!(
        "pull-{}-{seq}-{}",
        std::process::id(),
        fetched.digest.short()
    );
    let diff_ids: Vec<Digest> = layers.iter().map(|l| l.diff_id).collect();
    let hold = store
        .hold_run(&hold_id, &diff_ids, &[fetched.digest])
        .map_err(store_err)?;
    let (downloaded_layers, cached_layers, downloaded_bytes) = pull_layers(
        client, store, &hosts, reference, &manifest, &layers, options, progress,
    )
    .await?;

    store
        .put_blob(&manifest.config.digest, &config_bytes)
        .map_err(store_err)?;
    store
        .put_blob(&fetched.digest, &fetched.bytes)
        .map_err(store_err)?;
    if let Some(index) = &index {
        store
            .put_blob(&index.digest, &index.bytes)
            .map_err(store_err)?;
    }
    let now = rootfs_cache::records::now();
    let created_at = store
        .image(&fetched.digest)
        .ok()
        .flatten()
        .map_or(now, |r| r.created_at);
    store
        .put_image(&ImageRecord {
            manifest: fetched.digest,
            config: manifest.config.digest,
            layers,
            created_at,
            last_used: now,
        })
        .map_err(store_err)?;
    if let Some(tag) = reference.tag() {
        let record = RefRecord {
            manifest: fetched.digest,
            index: index.as_ref().map(|i| i.digest),
            resolved_at: now,
        };
        store
            .set_ref(registry, repository, tag, &record)
            .map_err(store_err)?;
    }
    hold.release().map_err(store_err)?;
    Ok(PullReport {
        manifest: fetched.digest,
        index: index.map(|i| i.digest),
        config: manifest.config.digest,
        downloaded_layers,
        cached_layers,
        downloaded_bytes,
        elapsed: started.elapsed(),
    })
}

#[allow(clippy::too_many_arguments)]
async fn pull_layers(
    client: &RegistryClient,
    store: &Store,
    hosts: &[String],
    reference: &Reference,
    manifest: &ImageManifest,
    layers: &[ImageLayer],
    options: &PullOptions,
    progress: &Progress,
) -> Result<(usize, usize, u64), PullError> {
    let name = reference.to_string();
    let limit = options
        .max_concurrent
        .unwrap_or(client.config().max_concurrent_downloads)
        .max(1);
    let permits = Arc::new(Semaphore::new(limit));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, layer) in layers.iter().enumerate() {
        let media_type = manifest.layers[i].media_type.clone();
        if rootfs_cache::Compression::from_media_type(&media_type).is_none() {
            return Err(PullError::Store {
                reference: name,
                source: StoreError::UnsupportedMediaType {
                    layer: layer.digest,
                    media_type,
                },
            });
        }
        let (client, store, hosts, layer, permits) = (
            client.clone(),
            store.clone(),
            hosts.to_vec(),
            layer.clone(),
            permits.clone(),
        );
        let (registry, repository) = (
            reference.registry().to_owned(),
            reference.repository().to_owned(),
        );
        let bar = progress.layer(&layer.digest, layer.size);
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let result = pull_layer(
                &client,
                store,
                &hosts,
                &registry,
                &repository,
                &layer,
                &media_type,
                &bar,
            )
            .await;
            (layer, result)
        });
    }
    let (mut downloaded, mut cached, mut bytes) = (0, 0, 0);
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((_, Ok(Some(n)))) => {
                downloaded += 1;
                bytes += n;
            }
            Ok((_, Ok(None))) => cached += 1,
            Ok((layer, Err(e))) => {
                if first_error.is_none() {
                    first_error = Some((layer, e));
                    // One bad layer fails the pull: stop the others rather than finish them.
                    tasks.abort_all();
                }
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                return Err(PullError::BadImage {
                    reference: name,
                    reason: format!("layer task failed: {e}"),
                });
            }
        }
    }
    if let Some((_, e)) = first_error {
        return Err(match e {
            LayerError::Registry(source) => PullError::Registry {
                reference: name,
                source,
            },
            LayerError::Store(source) => PullError::Store {
                reference: name,
                source,
            },
        });
    }
    Ok((downloaded, cached, bytes))
}

enum LayerError {
    Registry(RegistryError),
    Store(StoreError),
}

/// One layer: takes its lock on a blocking thread; if it is missing, streams the download
/// into the store's writer. Returns the bytes downloaded, or None if it was cached.
#[allow(clippy::too_many_arguments)]
async fn pull_layer(
    client: &RegistryClient,
    store: Store,
    hosts: &[String],
    registry: &str,
    repository: &str,
    layer: &ImageLayer,
    media_type: &str,
    bar: &crate::progress::LayerProgress,
) -> Result<Option<u64>, LayerError> {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let (start_tx, start_rx) = oneshot::channel::<bool>();
    let (digest, diff_id, media) = (layer.digest, layer.diff_id, media_type.to_owned());
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
        bar.status("Downloading");
        let counter = std::sync::atomic::AtomicU64::new(0);
        let result = client
            .blob(
                hosts,
                registry,
                repository,
                &layer.digest,
                Some(layer.size),
                u64::MAX,
                tx,
                |n| {
                    counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                    bar.advance(n);
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
    match stored.map_err(LayerError::Store)? {
        true => {
            bar.finish("Pull complete");
            Ok(Some(downloaded))
        }
        false => {
            bar.finish("Already exists");
            Ok(None)
        }
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
pub fn resolve_local(
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
