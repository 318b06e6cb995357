//! The distribution client: auth, credentials, configuration, manifests, blob streams. It
//! speaks HTTP and nothing more: what a manifest means is the `image` module's business.

mod auth;
mod client;
mod config;
mod credentials;

pub(crate) use client::{FetchedManifest, RegistryClient};
pub use client::{RegistryError, RetryPolicy};
pub(crate) use config::Config;
pub use config::ConfigError;
pub use credentials::{AuthFiles, CredentialError};
