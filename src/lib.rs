//! skiff: a daemonless container executor.
//!
//! This library is what the `skiff` binary is built on; another Rust program embeds the same
//! [`Engine`] to do everything the CLI does: pull an image from any registry into the
//! content-addressed store, list, inspect and remove images, collect garbage, and run a
//! command in an image, as root or rootless. The library prints nothing: notices and pull
//! progress go to the [`Progress`] an embedder gives the engine.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use skiff::{Engine, EngineOptions, PullPolicy, RunOptions};
//!
//! let engine = Engine::new(EngineOptions::default())?;
//! let options = RunOptions {
//!     command: vec!["echo".into(), "hello".into()],
//!     ..Default::default()
//! };
//! let outcome = engine.run("127.0.0.1:5000/demo/busybox", &options, PullPolicy::Missing)?;
//! std::process::exit(outcome.exit_code);
//! # }
//! ```

// The library prints nothing: notices go through `Progress`, errors are returned.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod containers;
mod engine;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz;
mod host;
mod image;
mod launch;
mod lazy;
mod progress;
mod pull;
mod reference;
mod registry;
#[cfg(feature = "cli")]
pub mod template;

pub use containers::{ContainerError, LogLine, LogOptions, Status, Stream};
pub use engine::{
    ContainerSummary, CreateOptions, Engine, EngineError, EngineOptions, ImageSummary, Info,
    NetworkSummary,
};
pub use error::error_chain;
pub use host::CgroupLayout;
pub use image::ManifestError;
pub use launch::{ExecOptions, PullPolicy, RunError, RunOutcome, Timings};
pub use launch::{LimitError, LimitFlags, Limits, Ulimit};
pub use launch::{Network, RunOptions, Seccomp, SpecError, Volume};
pub use lazy::{IndexReport, LazyError, LazyMount};
pub use progress::{LayerEvent, Notice, Progress, Silent};
pub use pull::{PullError, PullOptions, PullReport};
pub use reference::{Reference, ReferenceError};
pub use registry::{AuthFiles, ConfigError, CredentialError, RegistryError, RetryPolicy};
pub use rootfs_cache::{
    Digest, DigestError, Finding, GcOptions, GcReport, ImageLayer, ImageRecord, Kept, StoreError,
    VerifyReport,
};

/// Serves a container monitor when this process was started as one (by [`Engine::start`],
/// which re-executes the running program), and never returns then; otherwise returns at once.
///
/// The `skiff` binary calls it first in `main`. A program that embeds skiff and starts
/// detached containers does the same, before any thread starts (or points
/// [`EngineOptions::monitor_program`] at the `skiff` binary).
///
/// ```no_run
/// skiff::serve_monitor_if_requested();
/// // ... the program's own work, then Engine::start of a container
/// ```
pub fn serve_monitor_if_requested() {
    if let Some(request) = launch::MonitorRequest::from_env() {
        launch::serve_monitor(request)
    }
}
