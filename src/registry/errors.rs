//! Why a registry operation fails, how the answers of a registry map to those reasons, and the
//! retry policy.

use std::time::Duration;

use reqwest::{Response, StatusCode};

use super::credentials::CredentialError;
use super::transport::{MAX_ERROR_BODY_BYTES, Pace, read_prefix};
use crate::Digest;
use crate::error_chain;
use crate::image::ManifestError;

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No connection could be made (after retries).
    #[error(
        "cannot reach registry {registry}: {reason} (check the name, the network, and for a private registry its TLS settings)"
    )]
    Unreachable {
        /// host[:port].
        registry: String,
        /// The last error.
        reason: String,
    },
    /// The registry's name does not resolve: permanent, not retried.
    #[error(
        "cannot reach registry {registry}: the name does not resolve (check the name, and this machine's DNS settings): {reason}"
    )]
    Unresolvable {
        /// host[:port].
        registry: String,
        /// The resolver's answer.
        reason: String,
    },
    /// Credentials missing or refused.
    #[error(
        "{registry}/{repository}: authentication required or access denied (run `skiff login {registry}`, or check the repository name)"
    )]
    Unauthorized {
        /// host[:port].
        registry: String,
        /// Repository.
        repository: String,
    },
    /// The manifest or blob does not exist.
    #[error("{what} not found in {registry}/{repository}: check the image name and tag")]
    NotFound {
        /// What was asked for.
        what: String,
        /// host[:port].
        registry: String,
        /// Repository.
        repository: String,
    },
    /// An unexpected HTTP status.
    #[error("{url}: registry answered {status}: {body}")]
    Status {
        /// Request URL.
        url: String,
        /// Status.
        status: StatusCode,
        /// Start of the body.
        body: String,
    },
    /// Content larger than allowed.
    #[error("{what} is larger than the {limit} bytes allowed")]
    TooLarge {
        /// What.
        what: String,
        /// Limit.
        limit: u64,
    },
    /// Content does not hash to its digest.
    #[error(
        "{what}: digest mismatch, expected {expected}, got {actual} (the registry or a proxy served wrong content)"
    )]
    DigestMismatch {
        /// What.
        what: String,
        /// Expected digest.
        expected: Digest,
        /// Actual digest.
        actual: Digest,
    },
    /// A bad manifest, index or config.
    #[error("{reference}: {source}")]
    Manifest {
        /// The reference.
        reference: String,
        /// What is wrong.
        #[source]
        source: ManifestError,
    },
    /// The auth handshake failed.
    #[error("authenticating to {registry}: {reason}")]
    Auth {
        /// host[:port].
        registry: String,
        /// What went wrong.
        reason: String,
    },
    /// A response body broke off, stalled or came too slowly.
    #[error("reading {what} from {registry}: {reason}")]
    Body {
        /// What was being read.
        what: String,
        /// host[:port].
        registry: String,
        /// How it ended.
        reason: String,
    },
    /// Redirects went on past the limit: a loop, or a misconfigured registry.
    #[error("{url}: more than {limit} redirects (a redirect loop?); not retried")]
    TooManyRedirects {
        /// The URL first asked for.
        url: String,
        /// The most redirects followed.
        limit: usize,
    },
    /// Credentials could not be read.
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    /// A blob download could not be completed.
    #[error("downloading {digest} from {registry}: {reason}")]
    Download {
        /// Blob digest.
        digest: Digest,
        /// host[:port].
        registry: String,
        /// What went wrong (after retries).
        reason: String,
    },
}

impl RegistryError {
    /// Whether another host (the next mirror, or the registry itself) may succeed where this
    /// one failed: not found there, unreachable, or an unexpected status.
    pub(super) fn next_host_may_help(&self) -> bool {
        matches!(
            self,
            Self::NotFound { .. }
                | Self::Unreachable { .. }
                | Self::Unresolvable { .. }
                | Self::Status { .. }
                | Self::Body { .. }
                | Self::TooManyRedirects { .. }
        )
    }
}

/// Retry and timeout policy.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts per request (the first included).
    pub attempts: u32,
    /// First backoff delay; doubled each time.
    pub base_delay: Duration,
    /// Longest backoff (and longest Retry-After honoured).
    pub max_delay: Duration,
    /// A blob stream that delivers nothing for this long is restarted.
    pub stall_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(30),
        }
    }
}

pub(super) fn is_certificate_error(e: &reqwest::Error) -> bool {
    let chain = error_chain(e);
    chain.contains("certificate")
        || chain.contains("UnknownIssuer")
        || chain.contains("CertNotValid")
}

pub(super) fn untrusted(host: &str, e: &reqwest::Error) -> RegistryError {
    RegistryError::Unreachable {
        registry: host.to_owned(),
        reason: format!(
            "its TLS certificate is not trusted ({}); put the registry's CA certificate in \
             /etc/docker/certs.d/{host}/ca.crt or set ca_file for it in skiff's config",
            error_chain(e)
        ),
    }
}

/// Whether a request failed because the host name does not resolve: hyper-util's connector
/// says "dns error", the system resolver "failed to lookup address information".
pub(super) fn is_dns_error(e: &reqwest::Error) -> bool {
    causes(e).any(|cause| {
        let text = cause.to_string();
        text == "dns error"
            || text.contains("failed to lookup address information")
            || text.contains("Name or service not known")
            || text.contains("No address associated with hostname")
    })
}

/// The error for a host whose name does not resolve, with the resolver's own words.
pub(super) fn unresolvable(host: &str, e: &reqwest::Error) -> RegistryError {
    let reason = causes(e)
        .last()
        .map_or_else(|| e.to_string(), |cause| cause.to_string());
    RegistryError::Unresolvable {
        registry: host.to_owned(),
        reason,
    }
}

/// An error and its sources, outermost first.
fn causes<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |e| e.source())
}

pub(super) async fn check_status(
    resp: Response,
    host: &str,
    repository: &str,
    what: &str,
) -> Result<Response, RegistryError> {
    match resp.status() {
        s if s.is_success() => Ok(resp),
        StatusCode::NOT_FOUND => Err(RegistryError::NotFound {
            what: what.to_owned(),
            registry: host.to_owned(),
            repository: repository.to_owned(),
        }),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(RegistryError::Unauthorized {
            registry: host.to_owned(),
            repository: repository.to_owned(),
        }),
        status => {
            let url = resp.url().to_string();
            // A hostile body may be endless: read its start only, paced like any other.
            let pace = Pace::new(Duration::from_secs(10), 1024);
            let body = read_prefix(resp, MAX_ERROR_BODY_BYTES, pace).await;
            let body: String = String::from_utf8_lossy(&body).chars().take(300).collect();
            // distribution answers 404-worthy conditions (MANIFEST_UNKNOWN, NAME_UNKNOWN) in the body.
            if body.contains("MANIFEST_UNKNOWN")
                || body.contains("NAME_UNKNOWN")
                || body.contains("BLOB_UNKNOWN")
            {
                return Err(RegistryError::NotFound {
                    what: what.to_owned(),
                    registry: host.to_owned(),
                    repository: repository.to_owned(),
                });
            }
            Err(RegistryError::Status { url, status, body })
        }
    }
}
