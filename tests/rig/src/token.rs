//! Token auth for a test registry: a small token endpoint that issues ES256 JWTs the
//! distribution server's `auth: token` mode accepts, and a parser for Bearer challenges.
//!
//! The signing key is a fresh P-256 key with a self-signed certificate; the registry trusts that
//! certificate through its `rootcertbundle`, and every token names it in its `x5c` header.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rcgen::{CertificateParams, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use serde_json::{Value, json};

/// The `service` of token-auth test registries (the tokens' audience).
pub const SERVICE: &str = "skiff-test-registry";

/// The `issuer` of token-auth test registries (the tokens' `iss`).
pub const ISSUER: &str = "skiff-test-issuer";

/// How long an issued token is valid, in seconds.
pub const EXPIRES_IN: u64 = 300;

/// Token auth for a [`crate::Registry`]: who may log in, and what anonymous users may do.
#[derive(Debug, Clone, Default)]
pub struct TokenAuth {
    /// Users and passwords; a user with the right password gets pull and push.
    pub users: Vec<(String, String)>,
    /// Anonymous users get tokens with pull access (like Docker Hub for public repositories);
    /// otherwise their tokens grant nothing.
    pub anonymous_pull: bool,
}

/// A parsed `WWW-Authenticate: Bearer …` challenge.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BearerChallenge {
    /// Where to fetch a token.
    pub realm: String,
    /// The `service` parameter to send to the realm.
    pub service: Option<String>,
    /// The scope(s) the request needs, space-separated as the registry sent them.
    pub scope: Option<String>,
    /// The `error` parameter (`invalid_token`, `insufficient_scope`), when sent.
    pub error: Option<String>,
}

/// Parses a `Bearer realm="…",service="…",scope="…"` challenge; `None` for other schemes.
pub fn parse_challenge(header: &str) -> Option<BearerChallenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        for c in chars.by_ref() {
            if c == '=' {
                break;
            }
            key.push(c);
        }
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != ',') {
                value.push(c);
            }
        }
        params.insert(key.trim().to_ascii_lowercase(), value);
    }
    Some(BearerChallenge {
        realm: params.remove("realm")?,
        service: params.remove("service"),
        scope: params.remove("scope"),
        error: params.remove("error"),
    })
}

/// What the token endpoint was asked for and what it granted (for a test's assertions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// The authenticated user; `None` for anonymous requests (and refused ones).
    pub user: Option<String>,
    /// The requested scopes, as sent.
    pub scopes: Vec<String>,
    /// The HTTP status the endpoint answered.
    pub status: u16,
}

struct Signer {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    cert_der_b64: String,
}

impl Signer {
    /// The compact JWS of `claims`.
    fn sign(&self, claims: &Value) -> Result<String> {
        let header = json!({"typ": "JWT", "alg": "ES256", "x5c": [self.cert_der_b64]});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?)
        );
        let signature = self
            .key
            .sign(&self.rng, input.as_bytes())
            .map_err(|_| anyhow!("ES256 signing failed"))?;
        Ok(format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }
}

struct Shared {
    auth: TokenAuth,
    signer: Signer,
    shutdown: AtomicBool,
    count: AtomicUsize,
    log: std::sync::Mutex<Vec<TokenRequest>>,
    next_jti: AtomicUsize,
    /// Bytes of whitespace appended to each token reply (a hostile endpoint).
    padding: AtomicUsize,
}

/// A token endpoint on 127.0.0.1 (`GET /token?service=…&scope=…`); stopped on drop.
pub struct TokenServer {
    addr: SocketAddr,
    cert_pem: String,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for TokenServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenServer")
            .field("addr", &self.addr)
            .field("requests", &self.token_requests())
            .finish_non_exhaustive()
    }
}

impl TokenServer {
    /// Generates a signing key and certificate and starts serving tokens on a free port.
    pub fn start(auth: TokenAuth) -> Result<Self> {
        let key_pair = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "skiff test token signer");
        let cert = params.self_signed(&key_pair)?;
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &key_pair.serialize_der(),
            &rng,
        )
        .map_err(|e| anyhow!("loading the token signing key: {e}"))?;
        let signer = Signer {
            key,
            rng,
            cert_der_b64: STANDARD.encode(cert.der()),
        };

        let listener = TcpListener::bind("127.0.0.1:0").context("binding the token server")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            auth,
            signer,
            shutdown: AtomicBool::new(false),
            count: AtomicUsize::new(0),
            log: std::sync::Mutex::new(Vec::new()),
            next_jti: AtomicUsize::new(0),
            padding: AtomicUsize::new(0),
        });
        let accept_shared = Arc::clone(&shared);
        let accept = std::thread::Builder::new()
            .name("token-server".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if accept_shared.shutdown.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let shared = Arc::clone(&accept_shared);
                    // Detached: each connection carries one request and has socket timeouts.
                    let _ =
                        std::thread::Builder::new()
                            .name("token-conn".into())
                            .spawn(move || {
                                let _ = serve(&shared, stream);
                            });
                }
            })?;
        Ok(Self {
            addr,
            cert_pem: cert.pem(),
            shared,
            accept: Some(accept),
        })
    }

    /// The socket address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/token`, the registry's `realm`.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// The users and anonymous policy it serves.
    pub fn auth(&self) -> &TokenAuth {
        &self.shared.auth
    }

    /// The signing certificate (PEM), the registry's `rootcertbundle`.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// From now on, every token reply carries `bytes` of whitespace after its JSON (still
    /// valid JSON): a hostile or broken endpoint that answers more than any token needs.
    pub fn pad_replies(&self, bytes: usize) {
        self.shared.padding.store(bytes, Ordering::SeqCst);
    }

    /// How many requests the endpoint has received (granted or refused).
    pub fn token_requests(&self) -> usize {
        self.shared.count.load(Ordering::SeqCst)
    }

    /// Every request so far, in order of arrival.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.shared
            .log
            .lock()
            .map(|log| log.clone())
            .unwrap_or_default()
    }

    /// Signs a token for `sub` with the given access, valid now (for tests of rejected tokens).
    pub fn issue(&self, sub: &str, access: &[(String, Vec<String>)]) -> Result<String> {
        issue(&self.shared, sub, SERVICE, access)
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch.
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn issue(
    shared: &Shared,
    sub: &str,
    service: &str,
    access: &[(String, Vec<String>)],
) -> Result<String> {
    let now = unix_now();
    let jti = format!(
        "skiff-{now}-{}",
        shared.next_jti.fetch_add(1, Ordering::SeqCst)
    );
    let access: Vec<Value> = access
        .iter()
        .map(|(name, actions)| json!({"type": "repository", "name": name, "actions": actions}))
        .collect();
    shared.signer.sign(&json!({
        "iss": ISSUER,
        "sub": sub,
        "aud": service,
        "exp": now + EXPIRES_IN,
        "nbf": now.saturating_sub(1),
        "iat": now,
        "jti": jti,
        "access": access,
    }))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if bytes
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) =>
            {
                let hex = |b: u8| (b as char).to_digit(16).unwrap_or(0) as u8;
                out.push(hex(bytes[i + 1]) << 4 | hex(bytes[i + 2]));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn respond(
    stream: &mut TcpStream,
    status: u16,
    reason: &str,
    extra: &str,
    body: &str,
) -> Result<()> {
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n{extra}\r\n{body}",
        body.len()
    )?;
    stream.flush()?;
    Ok(())
}

/// Handles one request on `stream`, then closes it.
fn serve(shared: &Shared, mut stream: TcpStream) -> Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    if request_line.is_empty() || shared.shutdown.load(Ordering::SeqCst) {
        return Ok(());
    }
    let mut authorization = None;
    let mut content_length = 0u64;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("authorization") {
                authorization = Some(value.to_owned());
            } else if name.eq_ignore_ascii_case("content-length") {
                content_length = value.parse().unwrap_or(0);
            }
        }
    }
    // Drain a body, if any, so that closing does not reset the connection.
    std::io::copy(
        &mut reader.by_ref().take(content_length),
        &mut std::io::sink(),
    )?;
    shared.count.fetch_add(1, Ordering::SeqCst);

    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut scopes = Vec::new();
    let mut service = SERVICE.to_owned();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match percent_decode(k).as_str() {
            "scope" => scopes.extend(percent_decode(v).split(' ').map(str::to_owned)),
            "service" => service = percent_decode(v),
            _ => {}
        }
    }
    scopes.retain(|s| !s.is_empty());
    let record = |user: Option<String>, status: u16| {
        if let Ok(mut log) = shared.log.lock() {
            log.push(TokenRequest {
                user,
                scopes: scopes.clone(),
                status,
            });
        }
    };

    if method != "GET" || path != "/token" {
        record(None, 404);
        return respond(
            &mut stream,
            404,
            "Not Found",
            "",
            r#"{"details":"not found"}"#,
        );
    }

    // Who is asking: anonymous, a known user, or refused.
    let user =
        match &authorization {
            None => None,
            Some(value) => {
                let decoded = value
                    .strip_prefix("Basic ")
                    .or_else(|| value.strip_prefix("basic "))
                    .and_then(|b64| STANDARD.decode(b64.trim()).ok())
                    .map(|raw| String::from_utf8_lossy(&raw).into_owned());
                let known = decoded.as_deref().and_then(|d| d.split_once(':')).and_then(
                    |(user, password)| {
                        shared
                            .auth
                            .users
                            .iter()
                            .any(|(u, p)| u == user && p == password)
                            .then(|| user.to_owned())
                    },
                );
                match known {
                    Some(user) => Some(user),
                    None => {
                        record(None, 401);
                        return respond(
                            &mut stream,
                            401,
                            "Unauthorized",
                            "WWW-Authenticate: Basic realm=\"skiff-test-token\"\r\n",
                            r#"{"details":"incorrect username or password"}"#,
                        );
                    }
                }
            }
        };

    let mut access: Vec<(String, Vec<String>)> = Vec::new();
    for scope in &scopes {
        // repository:NAME:ACTIONS (a resource type may carry a class: repository(plugin)).
        let Some((kind, rest)) = scope.split_once(':') else {
            continue;
        };
        let Some((name, actions)) = rest.rsplit_once(':') else {
            continue;
        };
        if kind != "repository" {
            continue;
        }
        let granted: Vec<String> = actions
            .split(',')
            .filter(|a| match (&user, *a) {
                (Some(_), "pull" | "push") => true,
                (None, "pull") => shared.auth.anonymous_pull,
                _ => false,
            })
            .map(str::to_owned)
            .collect();
        if !granted.is_empty() {
            access.push((name.to_owned(), granted));
        }
    }
    let token = issue(shared, user.as_deref().unwrap_or(""), &service, &access)?;
    let body = json!({
        "token": token,
        "access_token": token,
        "expires_in": EXPIRES_IN,
        "issued_at": rfc3339(unix_now()),
    })
    .to_string()
        + &" ".repeat(shared.padding.load(Ordering::SeqCst));
    record(user, 200);
    let result = respond(&mut stream, 200, "OK", "", &body);
    let _ = stream.shutdown(Shutdown::Write);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_with_quoted_commas() {
        let c = parse_challenge(
            r#"Bearer realm="http://127.0.0.1:1/token",service="svc",scope="repository:a/b:pull,push",error="insufficient_scope""#,
        );
        assert_eq!(
            c,
            Some(BearerChallenge {
                realm: "http://127.0.0.1:1/token".into(),
                service: Some("svc".into()),
                scope: Some("repository:a/b:pull,push".into()),
                error: Some("insufficient_scope".into()),
            })
        );
        assert_eq!(parse_challenge(r#"Basic realm="x""#), None);
    }

    #[test]
    fn dates_and_decoding() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(
            percent_decode("repository%3Aa%2Fb%3Apull%2Cpush"),
            "repository:a/b:pull,push"
        );
        assert_eq!(percent_decode("a+b%zz%4"), "a b%zz%4");
    }
}
