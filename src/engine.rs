//! The embedding API: one [`Engine`] per store root does what the CLI does.

use std::path::{Path, PathBuf};

use crate::host::{self, CgroupLayout};

/// Failures of the engine that the CLI maps to exit code 125.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The store root is not an absolute path.
    #[error("store root {0:?} must be an absolute path (set --root or SKIFF_ROOT)")]
    RelativeRoot(PathBuf),
}

/// How to open an [`Engine`].
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// Store root; `None` picks [`host::default_root`].
    pub root: Option<PathBuf>,
}

/// A handle on one skiff store and the host it runs on.
#[derive(Debug, Clone)]
pub struct Engine {
    root: PathBuf,
    rootless: bool,
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

impl Engine {
    /// Opens an engine; nothing is written until an operation needs it.
    pub fn new(options: EngineOptions) -> Result<Self, EngineError> {
        let root = options.root.unwrap_or_else(host::default_root);
        if !root.is_absolute() {
            return Err(EngineError::RelativeRoot(root));
        }
        Ok(Self {
            root,
            rootless: host::is_rootless(),
        })
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
}
