//! The distribution client: auth, credentials, configuration, manifests, blob streams.

pub mod auth;
pub mod client;
pub mod config;
pub mod credentials;
pub mod manifest;

pub use client::{FetchedManifest, RegistryClient, RegistryError, RetryPolicy};
pub use config::Config;
pub use credentials::{AuthFiles, Credential};
