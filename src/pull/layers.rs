//! The layers of a pull: every missing one streamed from the registry into the store's
//! writer at once (bounded), the cached ones skipped.

use std::io::{self, Read};
use std::sync::Arc;

use bytes::Bytes;
use rootfs_cache::{ImageLayer, LayerSlot, Store, StoreError};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{Job, PullError, PullOptions};
use crate::progress::{LayerEvent, Progress};
use crate::registry::{Registry, RegistryError};

/// Every layer at once (bounded): cached ones are skipped, missing ones streamed into the
/// store. The first failure stops the others. Returns (downloaded, cached, bytes).
pub(super) async fn pull_layers<R: Registry + Clone + 'static>(
    job: &Job<'_, R>,
    layers: &[ImageLayer],
    options: &PullOptions,
    progress: &Arc<dyn Progress>,
) -> Result<(usize, usize, u64), PullError> {
    let limit = options
        .max_concurrent
        .unwrap_or_else(|| job.client.max_concurrent_downloads())
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
struct LayerSource<R> {
    client: R,
    hosts: Vec<String>,
    registry: String,
    repository: String,
}

/// One layer: takes its lock on a blocking thread; if it is missing, streams the download
/// into the store's writer. Returns the bytes downloaded, or None if it was cached.
async fn pull_layer<R: Registry>(
    source: &LayerSource<R>,
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
