//! skiff: a daemonless container executor.
//!
//! This library is what the `skiff` binary is built on; another Rust program can embed the
//! same [`Engine`] to do everything the CLI does.

pub mod cli;
pub mod engine;
pub mod host;
pub mod launch;
pub mod progress;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod spec;

pub use engine::{Engine, EngineError, EngineOptions};
pub use launch::{PullPolicy, RunError, RunOutcome};
pub use reference::{Reference, ReferenceError};
pub use rootfs_cache::Digest;
pub use spec::RunOptions;
