//! The embedding API: one [`Engine`] per store root does what the CLI does.

mod containers;
mod index;
mod networks;

pub use containers::{ContainerSummary, CreateOptions};
pub use networks::NetworkSummary;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rootfs_cache::{GcOptions, GcReport, ImageRecord, Store, StoreError, VerifyReport};

use crate::Digest;
use crate::host::{self, CgroupLayout};
use crate::progress::{Notice, Progress, Silent};
use crate::pull::{self, PullError, PullOptions, PullReport};
use crate::reference::{Reference, ReferenceError};
use crate::registry::ConfigError;
use crate::registry::CredentialError;
use crate::registry::{AuthFiles, Config, RegistryClient, RegistryError, RetryPolicy};

/// Failures of the engine; the CLI maps them to exit code 125.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The store root is not an absolute path.
    #[error("store root {0:?} must be an absolute path (set --root or SKIFF_ROOT)")]
    RelativeRoot(PathBuf),
    /// The configuration file is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A bad image reference.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// The store failed.
    #[error("store {root}: {source}")]
    Store {
        /// The store root.
        root: PathBuf,
        /// What failed.
        #[source]
        source: Box<StoreError>,
    },
    /// A pull failed.
    #[error(transparent)]
    Pull(#[from] Box<PullError>),
    /// A registry operation (login) failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Credentials could not be read or written.
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    /// No such image in the store.
    #[error("no such image: {0} (see `skiff images`, or pull it first)")]
    ImageNotFound(String),
    /// A container launch failed.
    #[error(transparent)]
    Run(#[from] Box<crate::launch::RunError>),
    /// The async runtime could not start.
    #[error("starting the I/O runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// A job container command failed.
    #[error(transparent)]
    Container(#[from] crate::containers::ContainerError),
    /// A lazy index could not be built, published, found or used.
    #[error(transparent)]
    Lazy(#[from] crate::lazy::LazyError),
}

/// How to open an [`Engine`].
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// Store root; `None` picks [`host::default_root`].
    pub root: Option<PathBuf>,
    /// skiff configuration file; `None` picks [`Config::default_path`].
    pub config_path: Option<PathBuf>,
    /// Credential files; `None` uses docker's and podman's usual ones.
    pub auth_files: Option<AuthFiles>,
    /// Retry and timeout policy for registries.
    pub retry: Option<RetryPolicy>,
    /// The program that monitors detached containers (default: this program, which then
    /// calls [`crate::serve_monitor_if_requested`] first in `main`; the `skiff` binary does).
    pub monitor_program: Option<PathBuf>,
}

/// A handle on one skiff store and the host it runs on.
#[derive(Clone)]
pub struct Engine {
    root: PathBuf,
    rootless: bool,
    config: Config,
    auth: AuthFiles,
    retry: RetryPolicy,
    progress: Arc<dyn Progress>,
    monitor_program: PathBuf,
    /// Foreground reads the engine's blob downloads give way to (a lazy run's full pull).
    foreground: Option<Arc<crate::registry::Foreground>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("root", &self.root)
            .field("rootless", &self.rootless)
            .field("config", &self.config)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// What `skiff info` reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Info {
    /// skiff's version.
    pub version: &'static str,
    /// The store root.
    pub root: PathBuf,
    /// Whether skiff runs without root privileges.
    pub rootless: bool,
    /// The host's cgroup layout.
    pub cgroup_layout: CgroupLayout,
    /// The host's kernel release (uname -r).
    pub kernel: String,
    /// The host's machine architecture in OCI terms (amd64, arm64, …).
    pub architecture: &'static str,
}

/// One image as `skiff images` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageSummary {
    /// Names (`registry/repository:tag`) pointing at it.
    pub names: Vec<String>,
    /// The manifest digest.
    pub manifest: Digest,
    /// The config digest (docker's image id).
    pub id: Digest,
    /// Compressed size of its layers.
    pub size: u64,
    /// Unix seconds when it entered the store.
    pub created_at: u64,
    /// Unix seconds of its last use.
    pub last_used: u64,
}

impl Engine {
    /// Opens an engine; nothing is written until an operation needs it.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), skiff::EngineError> {
    /// use skiff::{Engine, EngineOptions};
    ///
    /// // The default root: /var/lib/skiff as root, $XDG_DATA_HOME/skiff otherwise.
    /// let engine = Engine::new(EngineOptions {
    ///     root: Some("/srv/ci/skiff".into()),
    ///     ..Default::default()
    /// })?;
    /// println!("store at {}, rootless: {}", engine.root().display(), engine.rootless());
    /// # Ok(()) }
    /// ```
    pub fn new(options: EngineOptions) -> Result<Self, EngineError> {
        let root = options.root.unwrap_or_else(host::default_root);
        if !root.is_absolute() {
            return Err(EngineError::RelativeRoot(root));
        }
        let config = Config::load(&options.config_path.unwrap_or_else(Config::default_path))?;
        Ok(Self {
            root,
            rootless: host::is_rootless(),
            config: config.clone(),
            auth: options.auth_files.unwrap_or_else(AuthFiles::from_env),
            retry: options.retry.unwrap_or(RetryPolicy {
                attempts: config.retries,
                stall_timeout: std::time::Duration::from_secs(config.stall_timeout_secs),
                ..RetryPolicy::default()
            }),
            progress: Arc::new(Silent),
            foreground: None,
            monitor_program: options
                .monitor_program
                .unwrap_or_else(|| PathBuf::from("/proc/self/exe")),
        })
    }

    /// Sends notices and pull progress to `progress` (the default shows nothing).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), skiff::EngineError> {
    /// use std::sync::Arc;
    /// use skiff::{Engine, Notice, Progress};
    ///
    /// struct Notices;
    /// impl Progress for Notices {
    ///     fn notice(&self, notice: &Notice) {
    ///         eprintln!("{notice}");
    ///     }
    /// }
    /// let engine = Engine::new(Default::default())?.with_progress(Arc::new(Notices));
    /// # Ok(()) }
    /// ```
    pub fn with_progress(mut self, progress: Arc<dyn Progress>) -> Self {
        self.progress = progress;
        self
    }

    /// The store root this engine works on.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether this engine runs containers rootless.
    pub fn rootless(&self) -> bool {
        self.rootless
    }

    /// Describes the engine and the host, as `docker info` does.
    pub fn info(&self) -> Info {
        Info {
            version: env!("CARGO_PKG_VERSION"),
            root: self.root.clone(),
            rootless: self.rootless,
            cgroup_layout: CgroupLayout::detect(),
            kernel: nix::sys::utsname::uname()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default(),
            architecture: host::oci_architecture(),
        }
    }

    /// Opens (creating) the store.
    pub(crate) fn store(&self) -> Result<Store, EngineError> {
        let store = Store::open(&self.root).map_err(|source| self.store_err(source))?;
        // A lazy run's pull: its reads take files from the layers it is unpacking.
        Ok(match &self.foreground {
            Some(fg) => store.reporting_unpacking_to(fg.unpacking.clone()),
            None => store,
        })
    }

    fn store_err(&self, source: StoreError) -> EngineError {
        EngineError::Store {
            root: self.root.clone(),
            source: Box::new(source),
        }
    }

    /// A registry client with this engine's configuration and credentials.
    pub(crate) fn client(&self) -> RegistryClient {
        let client = RegistryClient::new(self.config.clone(), self.auth.clone(), self.retry);
        match &self.foreground {
            Some(fg) => client.giving_way_to(fg.clone()),
            None => client,
        }
    }

    /// This engine with its blob downloads giving way to `foreground` reads.
    pub(crate) fn giving_way_to(mut self, foreground: Arc<crate::registry::Foreground>) -> Self {
        self.foreground = Some(foreground);
        self
    }

    /// Runs async work on a runtime that is shut down before returning, so that no I/O thread
    /// outlives the call (a container launch must start from a single-threaded process).
    fn block_on<F: std::future::Future>(&self, f: F) -> Result<F::Output, EngineError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(EngineError::Runtime)?;
        let out = runtime.block_on(f);
        runtime.shutdown_timeout(std::time::Duration::from_secs(10));
        Ok(out)
    }

    /// Pulls an image into the store.
    ///
    /// Rootless, the first store-writing call enters skiff's user namespace, which needs a
    /// single-threaded process (see [`Engine::run`]).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use skiff::{Engine, PullOptions, Reference};
    ///
    /// let engine = Engine::new(Default::default())?;
    /// let reference: Reference = "127.0.0.1:5000/demo/busybox:latest".parse()?;
    /// let options = PullOptions {
    ///     platform: Some("linux/arm64".into()),
    ///     ..Default::default()
    /// };
    /// let report = engine.pull(&reference, &options)?;
    /// println!("{} ({} layers downloaded)", report.manifest, report.downloaded_layers);
    /// # Ok(()) }
    /// ```
    pub fn pull(
        &self,
        reference: &Reference,
        options: &PullOptions,
    ) -> Result<PullReport, EngineError> {
        self.enter_store_namespace()?;
        let store = self.store()?;
        let client = self.client();
        self.progress.notice(&Notice::Pulling {
            image: reference.familiar(),
        });
        Ok(self
            .block_on(pull::pull(
                &client,
                &store,
                reference,
                options,
                &self.progress,
            ))?
            .map_err(Box::new)?)
    }

    /// The image a name refers to, from the store only (no network), if every layer is there.
    pub fn local_image(&self, reference: &Reference) -> Result<Option<ImageRecord>, EngineError> {
        pull::resolve_local(&self.store()?, reference).map_err(|e| self.store_err(e))
    }

    /// Finds an image by name, by full or short config id, or by manifest digest.
    pub fn find_image(&self, name: &str) -> Result<ImageRecord, EngineError> {
        let store = self.store()?;
        let id = name.strip_prefix("sha256:").unwrap_or(name);
        if id.len() >= 4
            && id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            let images = store.images().map_err(|e| self.store_err(e))?;
            let matches: Vec<_> = images
                .into_iter()
                .filter(|i| i.config.hex().starts_with(id) || i.manifest.hex().starts_with(id))
                .collect();
            if matches.len() == 1 {
                return matches
                    .into_iter()
                    .next()
                    .ok_or_else(|| EngineError::ImageNotFound(name.into()));
            }
        }
        let reference = Reference::parse(name)?;
        let manifest = match (reference.digest(), reference.tag()) {
            (Some(d), _) => Some(*d),
            (None, Some(tag)) => store
                .get_ref(reference.registry(), reference.repository(), tag)
                .map_err(|e| self.store_err(e))?
                .map(|r| r.manifest),
            _ => None,
        };
        manifest
            .and_then(|m| store.image(&m).ok().flatten())
            .ok_or_else(|| EngineError::ImageNotFound(name.into()))
    }

    /// Every image with the names that point at it, newest first.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), skiff::EngineError> {
    /// let engine = skiff::Engine::new(Default::default())?;
    /// for image in engine.images()? {
    ///     println!("{} {:?} {} bytes", image.id.short(), image.names, image.size);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn images(&self) -> Result<Vec<ImageSummary>, EngineError> {
        let store = self.store()?;
        let refs = store.refs().map_err(|e| self.store_err(e))?;
        let mut out: Vec<ImageSummary> = store
            .images()
            .map_err(|e| self.store_err(e))?
            .into_iter()
            .map(|img| ImageSummary {
                names: refs
                    .iter()
                    .filter(|(_, _, r)| r.manifest == img.manifest)
                    .map(|(name, tag, _)| format!("{name}:{tag}"))
                    .collect(),
                manifest: img.manifest,
                id: img.config,
                size: img.layers.iter().map(|l| l.size).sum(),
                created_at: img.created_at,
                last_used: img.last_used,
            })
            .collect();
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.names.cmp(&b.names)));
        Ok(out)
    }

    /// The image config JSON, as `docker inspect` shows its `Config` part.
    pub fn inspect(&self, name: &str) -> Result<serde_json::Value, EngineError> {
        let image = self.find_image(name)?;
        let store = self.store()?;
        let bytes = store
            .blob(&image.config)
            .map_err(|e| self.store_err(e))?
            .ok_or_else(|| {
                EngineError::ImageNotFound(format!(
                    "{name} (its config blob is missing: pull it again)"
                ))
            })?;
        let config: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            self.store_err(StoreError::Corrupt {
                path: store.blob_path(&image.config),
                reason: e.to_string(),
            })
        })?;
        Ok(serde_json::json!({
            "Id": image.config.to_string(),
            "Digest": image.manifest.to_string(),
            "RepoTags": self.images()?.into_iter().find(|s| s.manifest == image.manifest).map(|s| s.names).unwrap_or_default(),
            "Layers": image.layers,
            "Config": config,
        }))
    }

    /// Removes a name; the image goes with its last name (or at once when given by id).
    /// Returns what was untagged and deleted, as docker's rmi prints it.
    pub fn remove_image(&self, name: &str) -> Result<Vec<String>, EngineError> {
        self.enter_store_namespace()?;
        let store = self.store()?;
        let image = self.find_image(name)?;
        let refs = store.refs().map_err(|e| self.store_err(e))?;
        let by_name = Reference::parse(name)
            .ok()
            .filter(|r| r.tag().is_some() && r.digest().is_none());
        let mut out = Vec::new();
        for (full, tag, record) in refs.iter().filter(|(_, _, r)| r.manifest == image.manifest) {
            let matches_name = by_name.as_ref().is_none_or(|r| {
                format!("{}/{}", r.registry(), r.repository()) == *full && r.tag() == Some(tag)
            });
            if matches_name {
                let (registry, repository) = full.split_once('/').unwrap_or((full, ""));
                store
                    .remove_ref(registry, repository, tag)
                    .map_err(|e| self.store_err(e))?;
                out.push(format!("Untagged: {full}:{tag}"));
                let _ = record;
            }
        }
        let remaining = store
            .refs()
            .map_err(|e| self.store_err(e))?
            .iter()
            .any(|(_, _, r)| r.manifest == image.manifest);
        if !remaining {
            store
                .remove_image(&image.manifest)
                .map_err(|e| self.store_err(e))?;
            out.push(format!("Deleted: {}", image.config));
        }
        Ok(out)
    }

    /// Removes unused layers and blobs, then least-recently-used images down to a budget.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), skiff::EngineError> {
    /// use skiff::{Engine, GcOptions};
    ///
    /// let engine = Engine::new(Default::default())?;
    /// let report = engine.gc(&GcOptions {
    ///     budget_bytes: Some(10 << 30),
    ///     ..Default::default()
    /// })?;
    /// assert!(engine.verify()?.is_clean());
    /// # let _ = report;
    /// # Ok(()) }
    /// ```
    pub fn gc(&self, options: &GcOptions) -> Result<GcReport, EngineError> {
        self.sweep_as_root()?;
        if !self.rootless {
            crate::launch::remove_stale_run_cgroups();
        }
        self.enter_store_namespace()?;
        let store = self.store()?;
        // Containers whose `create` was killed before its record was written.
        let abandoned = store
            .abandoned_containers(crate::containers::RECORD)
            .map_err(|e| self.store_err(e))?;
        for id in abandoned {
            tracing::info!(container = %id, "removing a container whose creation never finished");
            store
                .remove_container_dir(&id)
                .map_err(|e| self.store_err(e))?;
        }
        store.gc(options).map_err(|e| self.store_err(e))
    }

    /// Checks the store for corrupt and orphaned entries.
    pub fn verify(&self) -> Result<VerifyReport, EngineError> {
        self.enter_store_namespace()?;
        self.store()?.verify().map_err(|e| self.store_err(e))
    }

    /// Runs a command in an image, pulling it first as `pull` says; returns the payload's exit
    /// code (128+N after signal N, 126/127 when the command cannot be run or is not found).
    ///
    /// libcontainer clones the calling process, so the launch must happen in a single-threaded
    /// process (the engine's own I/O threads are gone by then): an embedder with threads of its
    /// own calls this from a helper process. Rootless, the process enters a user namespace it
    /// cannot leave: one run per process.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), skiff::EngineError> {
    /// use skiff::{Engine, PullPolicy, RunOptions, Volume};
    ///
    /// let engine = Engine::new(Default::default())?;
    /// let options = RunOptions {
    ///     command: vec!["terraform".into(), "plan".into()],
    ///     workdir: Some("/work".into()),
    ///     volumes: vec![Volume::parse("/srv/job:/work").expect("a valid volume")],
    ///     env: vec!["TF_LOG".into()],
    ///     ..Default::default()
    /// };
    /// let outcome = engine.run("ghcr.io/acme/tools:6.1.0", &options, PullPolicy::Missing)?;
    /// std::process::exit(outcome.exit_code);
    /// # }
    /// ```
    pub fn run(
        &self,
        image: &str,
        options: &crate::launch::RunOptions,
        pull: crate::launch::PullPolicy,
    ) -> Result<crate::launch::RunOutcome, EngineError> {
        use crate::launch::{self, Timings};
        let mut timings = Timings::new();
        self.sweep_as_root()?;
        let store = self.store()?;
        self.enter_store_namespace()?;
        if options.lazy
            && let Some(mut lazy) = self.lazy_image(&store, image, pull, &mut timings)?
        {
            let run_config = lazy.config.run_config();
            let record = lazy.record.clone();
            // What the payload runs first is fetched while the container is set up.
            if let Ok(argv) = launch::command_line(&run_config, options) {
                lazy.commands = crate::lazy::prefetch::commands(&argv);
            }
            if let Some(path) = launch::config_env(&run_config, options)
                .unwrap_or_default()
                .iter()
                .rev()
                .find_map(|v| v.strip_prefix("PATH="))
            {
                path.clone_into(&mut lazy.path);
            }
            let outcome = launch::run(
                &store,
                &record,
                &run_config,
                options,
                self.rootless,
                timings,
                Some(&mut lazy),
            );
            // The pull goes on to its end after a payload that exited by itself; after one
            // that ended by a signal (a Ctrl-C forwarded to it, say), it stops.
            lazy.finish(matches!(&outcome, Ok(o) if o.exit_code < 128));
            return outcome.map_err(|e| EngineError::Run(Box::new(e)));
        }
        let (record, config) = self.resolve_image(&store, image, pull, &mut timings)?;
        let run_config = config.run_config();
        launch::run(
            &store,
            &record,
            &run_config,
            options,
            self.rootless,
            timings,
            None,
        )
        .map_err(|e| EngineError::Run(Box::new(e)))
    }

    /// Rootless: enters the user namespace every store-writing operation runs in, so that
    /// layers keep the image's owners (with an /etc/subuid range) and gc can remove them.
    /// Called by those operations themselves; once entered, the process stays inside. As root
    /// it does nothing. The process must still be single-threaded (an unshare of the user
    /// namespace, and later the container launch, need it): an embedder with threads runs
    /// skiff in a helper process.
    /// The image a run or create uses, pulled first as `pull` says, and its parsed config.
    pub(crate) fn resolve_image(
        &self,
        store: &Store,
        image: &str,
        pull: crate::launch::PullPolicy,
        timings: &mut crate::launch::Timings,
    ) -> Result<(ImageRecord, crate::image::ImageConfig), EngineError> {
        use crate::launch::PullPolicy;
        let reference = Reference::parse(image);
        let local = match (pull, &reference) {
            (PullPolicy::Always, Ok(_)) => None,
            (_, Ok(r)) => match self.local_image(r)? {
                Some(record) => Some(record),
                None => self.find_image(image).ok(),
            },
            (_, Err(_)) => self.find_image(image).ok(),
        };
        timings.mark("resolve");
        let record = match (local, pull) {
            (Some(record), _) => record,
            (None, PullPolicy::Never) => return Err(EngineError::ImageNotFound(image.into())),
            (None, _) => {
                let reference = reference?;
                if pull == PullPolicy::Missing {
                    self.progress.notice(&Notice::ImageNotFoundLocally {
                        image: reference.familiar(),
                    });
                }
                self.pull(&reference, &PullOptions::default())?;
                self.local_image(&reference)?
                    .ok_or_else(|| EngineError::ImageNotFound(image.into()))?
            }
        };
        timings.mark("pull");
        let bytes = store
            .blob(&record.config)
            .map_err(|e| self.store_err(e))?
            .ok_or_else(|| {
                EngineError::ImageNotFound(format!("{image} (its config blob is missing)"))
            })?;
        let config = crate::image::ImageConfig::parse(&bytes).map_err(|e| {
            self.store_err(StoreError::Corrupt {
                path: store.blob_path(&record.config),
                reason: crate::error_chain(&e),
            })
        })?;
        Ok((record, config))
    }

    /// As root: cleans up after runs that died without cleaning up (their payload, cgroups,
    /// mounts and directory). Rootless, [`Engine::enter_store_namespace`] does it.
    fn sweep_as_root(&self) -> Result<(), EngineError> {
        if !self.rootless
            && let Err(err) = crate::launch::sweep_dead_runs(&self.store()?, false)
        {
            tracing::warn!(err = %crate::error_chain(&err), "sweeping dead runs");
        }
        Ok(())
    }

    fn enter_store_namespace(&self) -> Result<(), EngineError> {
        if !self.rootless || crate::launch::in_user_namespace() {
            return Ok(());
        }
        crate::launch::ensure_single_threaded().map_err(|e| EngineError::Run(Box::new(e)))?;
        let store = self.store()?;
        // Dead runs' payloads can only be killed from outside their user namespace.
        if let Err(err) = crate::launch::sweep_dead_runs(&store, true) {
            tracing::warn!(err = %crate::error_chain(&err), "sweeping dead runs");
        }
        crate::launch::enter_user_namespace().map_err(|e| EngineError::Run(Box::new(e)))?;
        Ok(())
    }

    /// Checks credentials against the registry, then saves them; returns the file written.
    pub fn login(
        &self,
        registry: &str,
        username: &str,
        password: &str,
    ) -> Result<PathBuf, EngineError> {
        // Try the credentials from a private scratch file before touching the real one.
        let scratch = tempfile::tempdir().map_err(EngineError::Runtime)?;
        let probe = AuthFiles::new(vec![scratch.path().join("auth.json")]);
        probe.login(registry, username, password)?;
        let client = RegistryClient::new(self.config.clone(), probe, self.retry);
        let host = if registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            registry
        };
        self.block_on(client.check_login(host))??;
        Ok(self.auth.login(registry, username, password)?)
    }

    /// Forgets stored credentials for a registry; true if there were any.
    pub fn logout(&self, registry: &str) -> Result<bool, EngineError> {
        Ok(self.auth.logout(registry)?)
    }
}
