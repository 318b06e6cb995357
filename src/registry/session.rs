//! The auth session: answering a registry's challenge (Basic, or a Bearer token fetched from
//! its token endpoint with the stored credential), and the cache of what was negotiated per
//! host and repository.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use super::auth::Challenge;
use super::client::RegistryClient;
use super::credentials::Credential;
use super::errors::RegistryError;
use super::transport::{Endpoint, read_limited};
use crate::error_chain;

/// The most a token endpoint's answer may be.
pub(super) const MAX_TOKEN_RESPONSE_BYTES: u64 = 1 << 20;

/// What a challenge was answered with.
#[derive(Debug, Clone)]
pub(super) enum AuthState {
    Basic(String),
    Bearer { header: String, expires: Instant },
}

/// What was negotiated, by (host, repository).
pub(super) type AuthCache = Mutex<HashMap<(String, String), AuthState>>;

impl RegistryClient {
    pub(super) fn cached_auth(&self, host: &str, repository: &str) -> Option<String> {
        let auth = self.inner.auth.lock().ok()?;
        match auth.get(&(host.to_owned(), repository.to_owned()))? {
            AuthState::Basic(h) => Some(h.clone()),
            AuthState::Bearer { header, expires } if *expires > Instant::now() => {
                Some(header.clone())
            }
            AuthState::Bearer { .. } => None,
        }
    }

    fn credential_for(
        &self,
        host: &str,
        registry: &str,
    ) -> Result<Option<Credential>, RegistryError> {
        // Credentials are stored under the registry's name (docker.io), mirrors under their own.
        match self.inner.credentials.lookup(registry)? {
            Some(c) => Ok(Some(c)),
            None if host != registry => Ok(self.inner.credentials.lookup(host)?),
            None => Ok(None),
        }
    }

    pub(super) async fn authenticate(
        &self,
        ep: &Endpoint,
        host: &str,
        registry: &str,
        repository: &str,
        challenge: Challenge,
    ) -> Result<(), RegistryError> {
        let credential = self.credential_for(host, registry)?;
        let state = match challenge {
            Challenge::Basic => match credential {
                Some(Credential::Basic { username, password }) => {
                    use base64::Engine as _;
                    let token = base64::engine::general_purpose::STANDARD
                        .encode(format!("{username}:{password}"));
                    AuthState::Basic(format!("Basic {token}"))
                }
                _ => {
                    return Err(RegistryError::Unauthorized {
                        registry: registry.to_owned(),
                        repository: repository.to_owned(),
                    });
                }
            },
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                // A login check (no repository) asks for no scope, as docker login does.
                let scope = scope.or_else(|| {
                    (!repository.is_empty()).then(|| format!("repository:{repository}:pull"))
                });
                let (token, expires_in) = self
                    .fetch_token(
                        ep,
                        host,
                        &realm,
                        service.as_deref(),
                        scope.as_deref(),
                        credential,
                    )
                    .await?;
                // Renew a little early so a token never expires mid-request.
                let ttl =
                    Duration::from_secs(expires_in.max(60)).saturating_sub(Duration::from_secs(10));
                AuthState::Bearer {
                    header: format!("Bearer {token}"),
                    expires: Instant::now() + ttl,
                }
            }
        };
        if let Ok(mut auth) = self.inner.auth.lock() {
            auth.insert((host.to_owned(), repository.to_owned()), state);
        }
        Ok(())
    }

    async fn fetch_token(
        &self,
        ep: &Endpoint,
        host: &str,
        realm: &str,
        service: Option<&str>,
        scope: Option<&str>,
        credential: Option<Credential>,
    ) -> Result<(String, u64), RegistryError> {
        let fail = |reason: String| RegistryError::Auth {
            registry: host.to_owned(),
            reason,
        };
        let mut query: Vec<(&str, &str)> = scope.map(|s| ("scope", s)).into_iter().collect();
        if let Some(s) = service {
            query.push(("service", s));
        }
        let req = match &credential {
            Some(Credential::IdentityToken(refresh)) => {
                let mut form = vec![
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh.as_str()),
                    ("client_id", "skiff"),
                ];
                if let Some(s) = scope {
                    form.push(("scope", s));
                }
                if let Some(s) = service {
                    form.push(("service", s));
                }
                ep.http.post(realm).form(&form)
            }
            Some(Credential::Basic { username, password }) => ep
                .http
                .get(realm)
                .query(&query)
                .basic_auth(username, Some(password)),
            None => ep.http.get(realm).query(&query),
        };
        let resp = req
            .send()
            .await
            .map_err(|e| fail(format!("token endpoint {realm}: {}", error_chain(&e))))?;
        match resp.status() {
            s if s.is_success() => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(fail(format!(
                    "the token endpoint refused the credentials ({}); run `skiff login {host}`",
                    resp.status()
                )));
            }
            s => return Err(fail(format!("token endpoint {realm} answered {s}"))),
        }
        let body = read_limited(
            resp,
            MAX_TOKEN_RESPONSE_BYTES,
            "token response",
            self.pace(),
        )
        .await
        .map_err(|e| fail(e.to_string()))?;
        parse_token_reply(&body).map_err(fail)
    }
}

/// A token endpoint's answer: the token (`token`, else `access_token`) and its lifetime in
/// seconds (`expires_in`, 60 when absent).
pub(crate) fn parse_token_reply(body: &[u8]) -> Result<(String, u64), String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("token response is not JSON: {e}"))?;
    let token = v
        .get("token")
        .or_else(|| v.get("access_token"))
        .and_then(serde_json::Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| "token response has no token".to_owned())?;
    let expires_in = v
        .get("expires_in")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(60);
    Ok((token.to_owned(), expires_in))
}
