//! The distribution client: auth, credentials, configuration, manifests, blob streams. It
//! speaks HTTP and nothing more: what a manifest means is the `image` module's business.

mod auth;
mod blobs;
mod client;
mod config;
mod credentials;
mod errors;
mod manifests;
mod retry;
mod session;
mod transport;

pub(crate) use client::RegistryClient;
pub(crate) use config::Config;
pub use config::ConfigError;
pub use credentials::{AuthFiles, CredentialError};
pub use errors::{RegistryError, RetryPolicy};
pub(crate) use manifests::FetchedManifest;
