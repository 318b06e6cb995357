//! Lazy-start indexes: publishing one for an image, and reading a file of an image through it.

use super::{Engine, EngineError};
use crate::image;
use crate::lazy::{self, IndexReport, Place};
use crate::pull;
use crate::reference::Reference;

impl Engine {
    /// Builds the lazy-start index of `reference` (the image for this host's platform) from its
    /// layers in the registry and publishes it in the image's repository, as an OCI artifact
    /// whose subject is the image manifest.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use skiff::{Engine, Reference};
    ///
    /// let engine = Engine::new(Default::default())?;
    /// let image: Reference = "127.0.0.1:5000/tools/terraform:1.9".parse()?;
    /// let report = engine.push_index(&image)?;
    /// println!("{} layers indexed as {}", report.layers, report.artifact);
    /// # Ok(())
    /// # }
    /// ```
    pub fn push_index(&self, reference: &Reference) -> Result<IndexReport, EngineError> {
        let store = self.store()?;
        let client = self.client();
        self.block_on(async {
            let (place, fetched, manifest) = resolve(&client, &store, reference).await?;
            Ok(lazy::push_index(&client, &place, &fetched, &manifest).await?)
        })?
    }

    /// Reads one file of `reference` through its lazy-start index, with Range requests of the
    /// layers that hold it, checked against the index's digest; nothing is pulled or stored.
    pub fn read_file_lazily(
        &self,
        reference: &Reference,
        path: &str,
    ) -> Result<Vec<u8>, EngineError> {
        let (reader, tables) = self.lazy_reader(reference)?;
        Ok(lazy::read_file(
            &reader,
            &tables,
            path,
            &reference.familiar(),
        )?)
    }

    /// A reader of `reference`'s layers through its index, on a runtime of its own (shut down
    /// when the reader goes), and the index's tables.
    fn lazy_reader(
        &self,
        reference: &Reference,
    ) -> Result<(lazy::LayerReader, Vec<std::sync::Arc<lazy::toc::LayerToc>>), EngineError> {
        let store = self.store()?;
        let client = self.client();
        let name = reference.familiar();
        let runtime = std::sync::Arc::new(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(EngineError::Runtime)?,
        );
        let (place, tables) = runtime.block_on(async {
            let (place, fetched, manifest) = resolve(&client, &store, reference).await?;
            let tables =
                lazy::fetch_index(&client, &place, &fetched.digest, &manifest, &name).await?;
            Ok::<_, EngineError>((place, tables))
        })?;
        Ok((lazy::LayerReader::new(runtime, client, place, None), tables))
    }
}

impl Engine {
    /// Mounts `reference` read-only at `target` (root only) through its lazy-start index: each
    /// layer a FUSE file system whose files are fetched with Range requests on first read and
    /// checked against the index, under an overlay. Dropping the returned mount unmounts it.
    pub fn mount_lazily(
        &self,
        reference: &Reference,
        target: &std::path::Path,
    ) -> Result<lazy::LazyMount, EngineError> {
        if self.rootless {
            return Err(lazy::LazyError::Mount {
                reason: "a lazy mount outside a container needs root".into(),
            }
            .into());
        }
        // The reader's runtime serves the layers' reads for as long as the mount lives.
        let (reader, tables) = self.lazy_reader(reference)?;
        Ok(lazy::mount::mount(
            &tables,
            &std::sync::Arc::new(reader),
            target,
        )?)
    }
}

/// The image manifest `reference` names for this host's platform, and where it lives.
async fn resolve(
    client: &crate::registry::RegistryClient,
    store: &rootfs_cache::Store,
    reference: &Reference,
) -> Result<
    (
        Place,
        crate::registry::FetchedManifest,
        image::ImageManifest,
    ),
    EngineError,
> {
    let (hosts, fetched, manifest) =
        pull::manifest_for(client, store, reference, &image::host_platform())
            .await
            .map_err(Box::new)?;
    Ok((place(reference, hosts), fetched, manifest))
}

fn place(reference: &Reference, hosts: Vec<String>) -> Place {
    Place {
        hosts,
        registry: reference.registry().to_owned(),
        repository: reference.repository().to_owned(),
    }
}

/// An image started lazily: its record and config from the registry, its tables, and the
/// helper that serves them once the launch asks.
pub(crate) struct LazyImage {
    pub(crate) record: rootfs_cache::ImageRecord,
    pub(crate) config: image::ImageConfig,
    engine: Engine,
    reference: Reference,
    place: Place,
    tables: Vec<std::sync::Arc<lazy::toc::LayerToc>>,
    helper: Option<lazy::helper::Helper>,
    /// The commands the run starts and its search path, for the prefetch.
    pub(crate) commands: Vec<String>,
    pub(crate) path: String,
}

impl LazyImage {
    /// After the run: the helper finishes the pull (`wait`) or is stopped.
    pub(crate) fn finish(&mut self, wait: bool) {
        if let Some(helper) = self.helper.take() {
            helper.finish(wait);
        }
    }
}

impl crate::launch::LazyLayers for LazyImage {
    fn serve(&mut self, dir: &std::path::Path) -> Result<(), crate::launch::RunError> {
        let engine = self.engine.clone();
        let place = self.place.clone();
        let reference = self.reference.clone();
        // The payload's reads go first: the full pull gives way while one waits.
        // The two share what they fetch (in unnamed files in the store's temporary directory,
        // which gc sweeps should a file ever keep its name).
        let foreground = std::sync::Arc::new(crate::registry::Foreground::keeping_parts_in(
            self.engine.root.join("tmp"),
        ));
        let fg = foreground.clone();
        let waiting = foreground.clone();
        let reader = Box::new(move || {
            let runtime = std::sync::Arc::new(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .map_err(|e| lazy::LazyError::Mount {
                        reason: format!("starting the I/O runtime: {e}"),
                    })?,
            );
            let mut reader = lazy::LayerReader::new(runtime, engine.client(), place, Some(fg));
            if let Ok(store) = engine.store() {
                reader = reader.reading_committed_layers_of(store);
            }
            // Meanwhile the layers are mounted.
            reader.warm_up();
            Ok(std::sync::Arc::new(reader))
        });
        // Quiet: the payload's output owns the terminal meanwhile.
        let puller = self
            .engine
            .clone()
            .giving_way_to(foreground)
            .with_progress(std::sync::Arc::new(crate::progress::Silent));
        let tables = self.tables.clone();
        let subject = self.record.manifest;
        let background = Box::new(move || {
            waiting.wait_start();
            puller
                .pull(&reference, &crate::pull::PullOptions::default())
                .map_err(|e| crate::error_chain(&e))?;
            // The index against the real layers: a table whose metadata lied is not used again.
            let store = puller.store().map_err(|e| crate::error_chain(&e))?;
            for toc in &tables {
                if let Some(why) = toc.disagreement_with(&store.layer_dir(&toc.diff_id)) {
                    let _ = refuse_index(&puller.root, &subject, &why);
                    return Err(format!(
                        "the lazy index of {} disagrees with layer {}: {why}; it is not used again",
                        reference.familiar(),
                        toc.layer
                    ));
                }
            }
            Ok(())
        });
        let work = lazy::helper::HelperWork {
            reader,
            tables: self.tables.clone(),
            background,
            commands: self.commands.clone(),
            path: self.path.clone(),
        };
        let helper = lazy::helper::Helper::spawn(dir, work)
            .map_err(|e| crate::launch::RunError::Launch(crate::error_chain(&e)))?;
        self.helper = Some(helper);
        Ok(())
    }
}

impl Engine {
    /// The image to run lazily: not in the store, pulling allowed, and an index in its
    /// repository; `None` (with a notice saying why, where it is not simply cached) otherwise.
    pub(crate) fn lazy_image(
        &self,
        store: &rootfs_cache::Store,
        image: &str,
        pull: crate::launch::PullPolicy,
        timings: &mut crate::launch::Timings,
    ) -> Result<Option<LazyImage>, EngineError> {
        use crate::launch::PullPolicy;
        let Ok(reference) = Reference::parse(image) else {
            return Ok(None);
        };
        if pull == PullPolicy::Never
            || (pull == PullPolicy::Missing && self.local_image(&reference)?.is_some())
        {
            return Ok(None);
        }
        let name = reference.familiar();
        if let Err(e) = nix::unistd::access(
            "/dev/fuse",
            nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::W_OK,
        ) {
            self.progress
                .notice(&crate::progress::Notice::LazyFallback {
                    image: name,
                    reason: format!("FUSE is not available here: /dev/fuse: {e}"),
                });
            return Ok(None);
        }
        let client = self.client();
        let found = self.block_on(async {
            let (place, fetched, manifest) = resolve(&client, store, &reference).await?;
            let config_digest = image::digest_of(manifest.config(), "config").map_err(|e| {
                lazy::LazyError::Index {
                    reason: e.to_string(),
                }
            })?;
            // The config and the index at once: each is a few round trips.
            let (config_bytes, tables) = tokio::join!(
                client.small_blob(
                    &place.hosts,
                    &place.registry,
                    &place.repository,
                    &config_digest,
                    image::MAX_CONFIG_BYTES,
                ),
                lazy::fetch_index(&client, &place, &fetched.digest, &manifest, &name),
            );
            let config_bytes = config_bytes?;
            Ok::<_, EngineError>((
                place,
                fetched,
                manifest,
                config_digest,
                config_bytes,
                tables,
            ))
        })??;
        let (place, fetched, manifest, config_digest, config_bytes, tables) = found;
        let tables = match tables.and_then(|t| match refused(&self.root, &fetched.digest) {
            Some(why) => Err(lazy::LazyError::Index {
                reason: format!("it disagreed with the image's layers before: {why}"),
            }),
            None => Ok(t),
        }) {
            Ok(tables) => tables,
            Err(err) => {
                self.progress
                    .notice(&crate::progress::Notice::LazyFallback {
                        image: name,
                        reason: crate::error_chain(&err),
                    });
                return Ok(None);
            }
        };
        let config = image::ImageConfig::parse(&config_bytes).map_err(|e| {
            EngineError::Lazy(lazy::LazyError::Index {
                reason: format!("the image config: {e}"),
            })
        })?;
        if config.diff_ids.len() != manifest.layers().len() {
            return Err(lazy::LazyError::Index {
                reason: "the config's diff_ids do not match the manifest's layers".into(),
            }
            .into());
        }
        let mut layers = Vec::new();
        for ((layer, diff_id), toc) in manifest.layers().iter().zip(&config.diff_ids).zip(&tables) {
            if toc.diff_id != *diff_id {
                return Err(lazy::LazyError::Index {
                    reason: format!(
                        "the table of layer {} gives diff_id {}, the image config {diff_id}",
                        toc.layer, toc.diff_id
                    ),
                }
                .into());
            }
            layers.push(rootfs_cache::ImageLayer {
                digest: toc.layer,
                diff_id: *diff_id,
                size: layer.size(),
                media_type: layer.media_type().to_string(),
            });
        }
        timings.mark("resolve");
        if pull == PullPolicy::Missing {
            self.progress
                .notice(&crate::progress::Notice::ImageNotFoundLocally { image: name });
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Ok(Some(LazyImage {
            record: rootfs_cache::ImageRecord {
                manifest: fetched.digest,
                config: config_digest,
                layers,
                created_at: now,
                last_used: now,
            },
            config,
            engine: self.clone(),
            reference,
            place,
            tables,
            helper: None,
            commands: Vec::new(),
            path: lazy::prefetch::DEFAULT_PATH.to_owned(),
        }))
    }
}

/// Where the store keeps the images whose index lied: `lazy-refused/<manifest hex>`.
fn refused_path(root: &std::path::Path, subject: &crate::Digest) -> std::path::PathBuf {
    root.join("lazy-refused").join(subject.hex())
}

/// Records that the index of image `subject` disagreed with its layers.
fn refuse_index(root: &std::path::Path, subject: &crate::Digest, why: &str) -> std::io::Result<()> {
    let path = refused_path(root, subject);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, why)
}

/// Why the index of image `subject` is not to be used, if it disagreed before.
fn refused(root: &std::path::Path, subject: &crate::Digest) -> Option<String> {
    std::fs::read_to_string(refused_path(root, subject)).ok()
}
