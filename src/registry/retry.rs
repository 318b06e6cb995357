//! Sending a request: the auth handshake on a 401, retries with backoff for connection
//! errors, 5xx and 429 (honouring Retry-After); the response head must come within the stall
//! timeout (a head trickled byte by byte is cut there), a redirect loop fails at once.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode};

use super::auth::parse_challenge;
use super::client::RegistryClient;
use super::errors::{
    RegistryError, RetryPolicy, is_certificate_error, is_dns_error, unresolvable, untrusted,
};
use super::transport::{Endpoint, MAX_REDIRECTS};
use crate::error_chain;

impl RegistryClient {
    /// Sends a request with auth, retrying connection errors, 5xx and 429 with backoff.
    pub(super) async fn send(
        &self,
        host: &str,
        registry: &str,
        repository: &str,
        build: impl Fn(&Endpoint) -> RequestBuilder,
    ) -> Result<Response, RegistryError> {
        let policy = self.inner.policy;
        let ep = self.endpoint(host).await?;
        let mut authenticated = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = build(&ep);
            if let Some(h) = self.cached_auth(host, repository) {
                req = req.header(AUTHORIZATION, h);
            }
            let sent = tokio::time::timeout(policy.stall_timeout, req.send())
                .await
                .ok();
            let delay = match sent {
                None => {
                    let reason = format!(
                        "no complete response head within {:?} (stall_timeout_secs)",
                        policy.stall_timeout
                    );
                    if attempt >= policy.attempts {
                        return Err(RegistryError::Unreachable {
                            registry: host.to_owned(),
                            reason: format!("{reason}; gave up after {attempt} attempts"),
                        });
                    }
                    tracing::warn!(host, attempt, reason, "request failed, retrying");
                    backoff(policy, attempt)
                }
                Some(sent) => match sent {
                    // Following the same redirects again ends the same way.
                    Err(e) if e.is_redirect() => {
                        return Err(RegistryError::TooManyRedirects {
                            url: e.url().map(ToString::to_string).unwrap_or_default(),
                            limit: MAX_REDIRECTS,
                        });
                    }
                    Err(e) if is_certificate_error(&e) => return Err(untrusted(host, &e)),
                    // A name that does not resolve now will not in a second either.
                    Err(e) if is_dns_error(&e) => return Err(unresolvable(host, &e)),
                    Err(e) => {
                        if attempt >= policy.attempts {
                            return Err(RegistryError::Unreachable {
                                registry: host.to_owned(),
                                reason: error_chain(&e),
                            });
                        }
                        tracing::warn!(host, attempt, error = %error_chain(&e), "request failed, retrying");
                        backoff(policy, attempt)
                    }
                    Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED => {
                        let challenge = resp
                            .headers()
                            .get(WWW_AUTHENTICATE)
                            .and_then(|v| v.to_str().ok())
                            .and_then(parse_challenge);
                        match challenge {
                            Some(ch) if !authenticated => {
                                authenticated = true;
                                self.authenticate(&ep, host, registry, repository, ch)
                                    .await?;
                                attempt -= 1;
                                continue;
                            }
                            _ => {
                                return Err(RegistryError::Unauthorized {
                                    registry: registry.to_owned(),
                                    repository: repository.to_owned(),
                                });
                            }
                        }
                    }
                    Ok(resp)
                        if resp.status() == StatusCode::TOO_MANY_REQUESTS
                            || resp.status().is_server_error() =>
                    {
                        if attempt >= policy.attempts {
                            return Ok(resp);
                        }
                        let retry_after = resp
                            .headers()
                            .get(RETRY_AFTER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.trim().parse::<u64>().ok())
                            .map(|s| Duration::from_secs(s).min(policy.max_delay));
                        tracing::warn!(host, attempt, status = %resp.status(), "registry busy, retrying");
                        retry_after.unwrap_or_else(|| backoff(policy, attempt))
                    }
                    Ok(resp) => return Ok(resp),
                },
            };
            tokio::time::sleep(delay).await;
        }
    }
}

pub(super) fn backoff(policy: RetryPolicy, attempt: u32) -> Duration {
    let exp = policy
        .base_delay
        .saturating_mul(1 << attempt.saturating_sub(1).min(16));
    exp.min(policy.max_delay)
}
