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
            let (hosts, fetched, manifest) =
                pull::manifest_for(&client, &store, reference, &image::host_platform())
                    .await
                    .map_err(Box::new)?;
            let place = place(reference, hosts);
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
        let store = self.store()?;
        let client = self.client();
        let name = reference.familiar();
        self.block_on(async {
            let (hosts, fetched, manifest) =
                pull::manifest_for(&client, &store, reference, &image::host_platform())
                    .await
                    .map_err(Box::new)?;
            let place = place(reference, hosts);
            let tables =
                lazy::fetch_index(&client, &place, &fetched.digest, &manifest, &name).await?;
            Ok(lazy::read_file(&client, &place, &tables, path, &name).await?)
        })?
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
        let store = self.store()?;
        let client = self.client();
        let name = reference.familiar();
        // The runtime serves the layers' reads for as long as the mount lives.
        let runtime = std::sync::Arc::new(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(EngineError::Runtime)?,
        );
        let (place, tables) = runtime.block_on(async {
            let (hosts, fetched, manifest) =
                pull::manifest_for(&client, &store, reference, &image::host_platform())
                    .await
                    .map_err(Box::new)?;
            let place = place(reference, hosts);
            let tables =
                lazy::fetch_index(&client, &place, &fetched.digest, &manifest, &name).await?;
            Ok::<_, EngineError>((place, tables))
        })?;
        let rt = runtime.clone();
        let fetch: std::sync::Arc<lazy::FetchLayerEntry> =
            std::sync::Arc::new(move |toc, entry| {
                rt.block_on(lazy::fetch_entry(&client, &place, toc, entry))
            });
        Ok(lazy::mount::mount(&tables, &fetch, target, false)?)
    }
}

fn place(reference: &Reference, hosts: Vec<String>) -> Place {
    Place {
        hosts,
        registry: reference.registry().to_owned(),
        repository: reference.repository().to_owned(),
    }
}
