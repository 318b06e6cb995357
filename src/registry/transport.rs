//! Endpoints: how to talk to a host (HTTPS with the certs.d CAs and configured ones, plain HTTP
//! where the configuration allows it and HTTPS fails), one reqwest client per host.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::Response;

use super::client::RegistryClient;
use super::errors::{RegistryError, is_certificate_error, is_dns_error, unresolvable, untrusted};
use crate::error_chain;

/// How to reach one host: its base URL and the client trusting its CAs.
#[derive(Debug, Clone)]
pub(super) struct Endpoint {
    pub(super) base: String,
    pub(super) http: reqwest::Client,
}

/// The endpoints found so far, by host.
pub(super) type Endpoints = tokio::sync::Mutex<HashMap<String, Endpoint>>;

impl RegistryClient {
    fn build_http(&self, host: &str) -> Result<reqwest::Client, RegistryError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .user_agent(concat!("skiff/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::limited(10));
        let mut cas = Vec::new();
        for dir in &self.inner.config.certs_dirs {
            let host_dir = dir.join(host);
            if let Ok(entries) = std::fs::read_dir(&host_dir) {
                for entry in entries.flatten() {
                    let p = entry.path();
                    if p.extension().is_some_and(|e| e == "crt") {
                        cas.push(p);
                    }
                }
            }
        }
        for entry in &self.inner.config.registries {
            if entry.prefix.split('/').next() == Some(host)
                || entry.mirrors.iter().any(|m| m == host)
            {
                cas.extend(entry.ca_file.clone());
            }
        }
        for ca in cas {
            let pem = std::fs::read(&ca).map_err(|e| RegistryError::Auth {
                registry: host.to_owned(),
                reason: format!("reading CA file {}: {e}", ca.display()),
            })?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| RegistryError::Auth {
                    registry: host.to_owned(),
                    reason: format!("CA file {} is not PEM: {e}", ca.display()),
                })?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        builder.build().map_err(|e| RegistryError::Unreachable {
            registry: host.to_owned(),
            reason: e.to_string(),
        })
    }

    /// Finds how to talk to `host`: HTTPS, or plain HTTP where allowed and HTTPS fails.
    pub(super) async fn endpoint(&self, host: &str) -> Result<Endpoint, RegistryError> {
        let mut endpoints = self.inner.endpoints.lock().await;
        if let Some(ep) = endpoints.get(host) {
            return Ok(ep.clone());
        }
        let http = self.build_http(host)?;
        let https = Endpoint {
            base: format!("https://{host}"),
            http: http.clone(),
        };
        let chosen = if self.inner.config.allows_http(host) {
            match http.get(format!("{}/v2/", https.base)).send().await {
                Ok(_) => https,
                Err(https_err) if is_certificate_error(&https_err) => {
                    return Err(untrusted(host, &https_err));
                }
                Err(https_err) if is_dns_error(&https_err) => {
                    return Err(unresolvable(host, &https_err));
                }
                Err(https_err) => {
                    let plain = Endpoint {
                        base: format!("http://{host}"),
                        http,
                    };
                    match plain.http.get(format!("{}/v2/", plain.base)).send().await {
                        Ok(_) => plain,
                        Err(_) => {
                            return Err(RegistryError::Unreachable {
                                registry: host.to_owned(),
                                reason: error_chain(&https_err),
                            });
                        }
                    }
                }
            }
        } else {
            https
        };
        tracing::debug!(host, base = %chosen.base, "registry endpoint");
        endpoints.insert(host.to_owned(), chosen.clone());
        Ok(chosen)
    }
}

pub(super) async fn read_limited(
    resp: Response,
    limit: u64,
    what: &str,
) -> Result<Vec<u8>, RegistryError> {
    let too_large = || RegistryError::TooLarge {
        what: what.to_owned(),
        limit,
    };
    if resp.content_length().is_some_and(|l| l > limit) {
        return Err(too_large());
    }
    let host = resp.url().host_str().unwrap_or_default().to_owned();
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| RegistryError::Unreachable {
            registry: host.clone(),
            reason: error_chain(&e),
        })?;
        if out.len() as u64 + chunk.len() as u64 > limit {
            return Err(too_large());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}
