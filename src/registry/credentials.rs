//! Registry credentials as docker and podman keep them: auth files (`auths`, `credsStore`,
//! `credHelpers` → `docker-credential-NAME`), looked up in docker's precedence; `login` and
//! `logout` write the same format.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde_json::{Value, json};

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// Username and password (or a token used as password).
    Basic {
        /// User.
        username: String,
        /// Password.
        password: String,
    },
    /// An OAuth2 refresh token from `identitytoken` (token flow only).
    IdentityToken(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets, not even in debug logs.
        match self {
            Self::Basic { username, .. } => write!(f, "Basic({username}, ****)"),
            Self::IdentityToken(_) => f.write_str("IdentityToken(****)"),
        }
    }
}

/// Why credentials could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// An auth file is unreadable or not JSON.
    #[error("auth file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A credential helper failed.
    #[error("credential helper docker-credential-{helper} failed for {registry}: {reason}")]
    Helper {
        /// Helper name.
        helper: String,
        /// Registry.
        registry: String,
        /// What it said.
        reason: String,
    },
}

/// The docker.io key docker writes into auth files.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// Auth files in lookup order.
#[derive(Debug, Clone)]
pub struct AuthFiles {
    read: Vec<PathBuf>,
    write: PathBuf,
}

fn docker_config_file() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(Path::new(&dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker/config.json"))
}

impl AuthFiles {
    /// $REGISTRY_AUTH_FILE, ${XDG_RUNTIME_DIR}/containers/auth.json,
    /// ~/.config/containers/auth.json, then docker's config.json ($DOCKER_CONFIG or ~/.docker).
    pub fn from_env() -> Self {
        let mut read = Vec::new();
        if let Some(f) = std::env::var_os("REGISTRY_AUTH_FILE") {
            read.push(PathBuf::from(f));
        }
        if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
            read.push(Path::new(&d).join("containers/auth.json"));
        }
        if let Some(h) = std::env::var_os("HOME") {
            read.push(Path::new(&h).join(".config/containers/auth.json"));
        }
        let docker = docker_config_file();
        read.extend(docker.clone());
        let write = std::env::var_os("REGISTRY_AUTH_FILE")
            .map(PathBuf::from)
            .or(docker)
            .unwrap_or_else(|| PathBuf::from(".docker/config.json"));
        Self { read, write }
    }

    /// Explicit files (tests, embedding): read in order, write to the first.
    pub fn new(files: Vec<PathBuf>) -> Self {
        let write = files.first().cloned().unwrap_or_default();
        Self { read: files, write }
    }

    /// The file `login` writes.
    pub fn write_path(&self) -> &Path {
        &self.write
    }

    /// Credentials for `registry` (as in a reference: `docker.io`, `host:port`), if any.
    pub fn lookup(&self, registry: &str) -> Result<Option<Credential>, CredentialError> {
        for path in &self.read {
            let Some(doc) = read_file(path)? else {
                continue;
            };
            if let Some(helper) = doc
                .get("credHelpers")
                .and_then(|h| find_key(h, registry))
                .and_then(Value::as_str)
            {
                return run_helper(helper, registry);
            }
            if let Some(entry) = doc.get("auths").and_then(|a| find_key(a, registry)) {
                if let Some(cred) = parse_entry(entry, path)? {
                    return Ok(Some(cred));
                }
            }
            if let Some(store) = doc
                .get("credsStore")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
            {
                if let Some(cred) = run_helper(store, registry)? {
                    return Ok(Some(cred));
                }
            }
        }
        Ok(None)
    }

    /// Saves credentials for `registry` in the write file (mode 0600), keeping everything else.
    pub fn login(
        &self,
        registry: &str,
        username: &str,
        password: &str,
    ) -> Result<PathBuf, CredentialError> {
        let path = &self.write;
        let mut doc = read_file(path)?.unwrap_or_else(|| json!({}));
        let auth =
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
        let key = file_key(registry);
        if !doc.get("auths").is_some_and(Value::is_object) {
            doc["auths"] = json!({});
        }
        if let Some(auths) = doc["auths"].as_object_mut() {
            auths.retain(|k, _| normalize_key(k) != normalize_key(&key));
            auths.insert(key, json!({ "auth": auth }));
        }
        write_file(path, &doc)?;
        Ok(path.clone())
    }

    /// Removes stored credentials for `registry` from every auth file; true if any existed.
    pub fn logout(&self, registry: &str) -> Result<bool, CredentialError> {
        let mut removed = false;
        for path in &self.read {
            let Some(mut doc) = read_file(path)? else {
                continue;
            };
            let Some(auths) = doc.get_mut("auths").and_then(Value::as_object_mut) else {
                continue;
            };
            let before = auths.len();
            auths.retain(|k, _| normalize_key(k) != normalize_key(registry));
            if auths.len() != before {
                removed = true;
                write_file(path, &doc)?;
            }
        }
        Ok(removed)
    }
}

fn read_file(path: &Path) -> Result<Option<Value>, CredentialError> {
    match std::fs::read(path) {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Ok(None),
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| CredentialError::File {
                path: path.to_owned(),
                reason: format!("not valid JSON: {e}"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CredentialError::File {
            path: path.to_owned(),
            reason: e.to_string(),
        }),
    }
}

fn write_file(path: &Path, doc: &Value) -> Result<(), CredentialError> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |e: std::io::Error| CredentialError::File {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    let text = serde_json::to_vec_pretty(doc).map_err(|e| err(std::io::Error::other(e)))?;
    file.write_all(&text).map_err(err)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(err)
}

/// The key docker uses for a registry in `auths`.
fn file_key(registry: &str) -> String {
    if is_docker_hub(registry) {
        DOCKER_HUB_KEY.to_owned()
    } else {
        registry.to_owned()
    }
}

fn is_docker_hub(registry: &str) -> bool {
    matches!(
        registry,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    )
}

/// `https://host/v1/` → `host`, with Docker Hub's aliases folded into `docker.io`.
fn normalize_key(key: &str) -> String {
    let stripped = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = stripped.split('/').next().unwrap_or(stripped);
    if is_docker_hub(host) {
        "docker.io".into()
    } else {
        host.to_owned()
    }
}

pub(crate) fn find_key<'a>(map: &'a Value, registry: &str) -> Option<&'a Value> {
    let want = normalize_key(registry);
    map.as_object()?
        .iter()
        .find(|(k, _)| normalize_key(k) == want)
        .map(|(_, v)| v)
}

pub(crate) fn parse_entry(
    entry: &Value,
    path: &Path,
) -> Result<Option<Credential>, CredentialError> {
    if let Some(token) = entry
        .get("identitytoken")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        return Ok(Some(Credential::IdentityToken(token.to_owned())));
    }
    if let Some(auth) = entry
        .get("auth")
        .and_then(Value::as_str)
        .filter(|a| !a.is_empty())
    {
        let bad = |reason: &str| CredentialError::File {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| bad("an `auth` entry is not base64"))?;
        let decoded =
            String::from_utf8(decoded).map_err(|_| bad("an `auth` entry is not UTF-8"))?;
        let (username, password) = decoded
            .split_once(':')
            .ok_or_else(|| bad("an `auth` entry is not user:password"))?;
        return Ok(Some(Credential::Basic {
            username: username.to_owned(),
            password: password.to_owned(),
        }));
    }
    match (
        entry.get("username").and_then(Value::as_str),
        entry.get("password").and_then(Value::as_str),
    ) {
        (Some(u), Some(p)) => Ok(Some(Credential::Basic {
            username: u.to_owned(),
            password: p.to_owned(),
        })),
        _ => Ok(None),
    }
}

fn run_helper(helper: &str, registry: &str) -> Result<Option<Credential>, CredentialError> {
    let fail = |reason: String| CredentialError::Helper {
        helper: helper.to_owned(),
        registry: registry.to_owned(),
        reason,
    };
    if helper.is_empty() || helper.contains('/') {
        return Err(fail("invalid helper name".into()));
    }
    let server = if is_docker_hub(registry) {
        DOCKER_HUB_KEY.to_owned()
    } else {
        registry.to_owned()
    };
    let mut child = Command::new(format!("docker-credential-{helper}"))
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run it: {e} (is it installed and on PATH?)")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(server.as_bytes())
            .map_err(|e| fail(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // The helper protocol's way of saying "nothing stored".
        if stdout.contains("credentials not found")
            || String::from_utf8_lossy(&out.stderr).contains("credentials not found")
        {
            return Ok(None);
        }
        return Err(fail(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    parse_helper_reply(&stdout).map(Some).map_err(fail)
}

/// A credential helper's `get` output: `{"Username": …, "Secret": …}` (`<token>` as the
/// username means an identity token).
pub(crate) fn parse_helper_reply(stdout: &str) -> Result<Credential, String> {
    let v: Value = serde_json::from_str(stdout).map_err(|e| format!("invalid JSON output: {e}"))?;
    let username = v
        .get("Username")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let secret = v
        .get("Secret")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if username == "<token>" {
        return Ok(Credential::IdentityToken(secret));
    }
    Ok(Credential::Basic {
        username: username.to_owned(),
        password: secret,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_follows_precedence_and_docker_hub_aliases() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("auth.json");
        let second = dir.path().join("config.json");
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        std::fs::write(
            &first,
            json!({"auths": {"reg.example:5000": {"auth": b64("a:1")}}}).to_string(),
        )
        .unwrap();
        std::fs::write(
            &second,
            json!({"auths": {
                "https://reg.example:5000": {"auth": b64("b:2")},
                "https://index.docker.io/v1/": {"auth": b64("hub:3")},
                "tok.example": {"identitytoken": "refresh"},
            }})
            .to_string(),
        )
        .unwrap();
        let files = AuthFiles::new(vec![first.clone(), second]);
        assert_eq!(
            files.lookup("reg.example:5000").unwrap(),
            Some(Credential::Basic {
                username: "a".into(),
                password: "1".into()
            })
        );
        assert_eq!(
            files.lookup("docker.io").unwrap(),
            Some(Credential::Basic {
                username: "hub".into(),
                password: "3".into()
            })
        );
        assert_eq!(
            files.lookup("tok.example").unwrap(),
            Some(Credential::IdentityToken("refresh".into()))
        );
        assert_eq!(files.lookup("other.example").unwrap(), None);
        assert!(!format!("{:?}", files.lookup("docker.io").unwrap()).contains('3'));
    }

    #[test]
    fn login_and_logout_keep_other_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/config.json");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            &path,
            r#"{"auths":{"keep.example":{"auth":"a2VlcDpr"}},"psFormat":"x"}"#,
        )
        .unwrap();
        let files = AuthFiles::new(vec![path.clone()]);
        files.login("docker.io", "me", "pw").unwrap();
        let doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(doc["psFormat"], "x");
        assert!(doc["auths"]["https://index.docker.io/v1/"]["auth"].is_string());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            files.lookup("index.docker.io").unwrap(),
            Some(Credential::Basic {
                username: "me".into(),
                password: "pw".into()
            })
        );
        assert!(files.logout("docker.io").unwrap());
        assert!(!files.logout("docker.io").unwrap());
        assert_eq!(files.lookup("docker.io").unwrap(), None);
        assert!(files.lookup("keep.example").unwrap().is_some());
    }

    #[test]
    fn broken_files_and_missing_helpers_give_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, "{not json").unwrap();
        let err = AuthFiles::new(vec![path.clone()]).lookup("x").unwrap_err();
        assert!(err.to_string().contains("not valid JSON"), "{err}");
        std::fs::write(
            &path,
            r#"{"credHelpers":{"x.example":"skiff-no-such-helper"}}"#,
        )
        .unwrap();
        let err = AuthFiles::new(vec![path]).lookup("x.example").unwrap_err();
        assert!(
            err.to_string()
                .contains("docker-credential-skiff-no-such-helper"),
            "{err}"
        );
    }
}
