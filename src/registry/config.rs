//! skiff's own configuration file (TOML): insecure registries, mirrors, CA files, download
//! concurrency.
//!
//! ```toml
//! max_concurrent_downloads = 6
//! retries = 5
//! stall_timeout_secs = 30
//! min_speed_bytes_per_sec = 1024
//! certs_dirs = ["/etc/docker/certs.d", "/etc/containers/certs.d"]
//!
//! [[registry]]
//! prefix = "docker.io"
//! mirrors = ["mirror.internal:5000"]
//!
//! [[registry]]
//! prefix = "build.internal:5000"
//! insecure = true
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Why the configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Unreadable.
    #[error("reading skiff config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML of the expected shape.
    #[error("skiff config {path} is invalid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong and where.
        message: String,
    },
}

/// Settings for registries whose name starts with `prefix`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryEntry {
    /// A registry host (`host[:port]`), optionally followed by a repository prefix.
    pub prefix: String,
    /// Allow plain HTTP (and unverified TLS is never allowed: use `ca_file`).
    #[serde(default)]
    pub insecure: bool,
    /// Mirrors tried in order before the registry itself (`host[:port]`).
    #[serde(default)]
    pub mirrors: Vec<String>,
    /// An extra CA certificate (PEM) to trust for this registry and its mirrors.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Layers downloaded at once during a pull.
    #[serde(default = "default_concurrency")]
    pub max_concurrent_downloads: usize,
    /// Directories in docker's certs.d layout (`<dir>/<host[:port]>/*.crt`).
    #[serde(default = "default_certs_dirs")]
    pub certs_dirs: Vec<PathBuf>,
    /// Attempts per registry request, the first included (connection errors, 5xx, 429).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Seconds without data after which a blob download is restarted with a Range request.
    #[serde(default = "default_stall")]
    pub stall_timeout_secs: u64,
    /// Slowest a response body may come, in bytes per second, measured over each window of
    /// `stall_timeout_secs` (a trickle of one byte every few seconds never stalls); 0 disables.
    #[serde(default = "default_min_speed")]
    pub min_speed_bytes_per_sec: u64,
    /// Per-registry settings.
    #[serde(default, rename = "registry")]
    pub registries: Vec<RegistryEntry>,
}

fn default_retries() -> u32 {
    5
}

fn default_stall() -> u64 {
    30
}

fn default_min_speed() -> u64 {
    1024
}

fn default_concurrency() -> usize {
    6
}

fn default_certs_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![
        PathBuf::from("/etc/docker/certs.d"),
        PathBuf::from("/etc/containers/certs.d"),
    ];
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".config/containers/certs.d"));
        dirs.push(Path::new(&home).join(".docker/certs.d"));
    }
    dirs
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_concurrent_downloads: default_concurrency(),
            certs_dirs: default_certs_dirs(),
            retries: default_retries(),
            stall_timeout_secs: default_stall(),
            min_speed_bytes_per_sec: default_min_speed(),
            registries: Vec::new(),
        }
    }
}

impl Config {
    /// The default location: $SKIFF_CONFIG, else /etc/skiff/config.toml as root and
    /// $XDG_CONFIG_HOME/skiff/config.toml (~/.config/skiff/config.toml) otherwise.
    pub fn default_path() -> PathBuf {
        if let Some(p) = std::env::var_os("SKIFF_CONFIG") {
            return p.into();
        }
        if !crate::host::is_rootless() {
            return PathBuf::from("/etc/skiff/config.toml");
        }
        match (
            std::env::var_os("XDG_CONFIG_HOME"),
            std::env::var_os("HOME"),
        ) {
            (Some(x), _) if Path::new(&x).is_absolute() => Path::new(&x).join("skiff/config.toml"),
            (_, Some(h)) => Path::new(&h).join(".config/skiff/config.toml"),
            _ => PathBuf::from("/etc/skiff/config.toml"),
        }
    }

    /// Loads a file; a missing file is the default configuration.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        Self::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let config: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        if config.max_concurrent_downloads == 0 {
            return Err("max_concurrent_downloads must be at least 1".into());
        }
        if config.retries == 0 || config.stall_timeout_secs == 0 {
            return Err("retries and stall_timeout_secs must be at least 1".into());
        }
        Ok(config)
    }

    /// The most specific entry for `registry/repository`.
    pub fn entry_for(&self, registry: &str, repository: &str) -> Option<&RegistryEntry> {
        let full = format!("{registry}/{repository}");
        self.registries
            .iter()
            .filter(|e| {
                e.prefix == registry
                    || full == e.prefix
                    || full.starts_with(&format!("{}/", e.prefix.trim_end_matches('/')))
            })
            .max_by_key(|e| e.prefix.len())
    }

    /// Whether plain HTTP is allowed for `host` (configured insecure, or loopback as docker does).
    pub fn allows_http(&self, host: &str) -> bool {
        is_loopback(host)
            || self.registries.iter().any(|e| {
                e.insecure && (e.prefix == host || e.prefix.starts_with(&format!("{host}/")))
            })
    }
}

/// localhost, 127.0.0.0/8 or ::1, with or without a port.
pub fn is_loopback(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, p)| {
            if p.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                host
            }
        })
    };
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_match_by_longest_prefix() {
        let c = Config::parse(
            r#"
            [[registry]]
            prefix = "docker.io"
            mirrors = ["m1:5000"]
            [[registry]]
            prefix = "docker.io/library"
            mirrors = ["m2:5000"]
            [[registry]]
            prefix = "build.internal:5000"
            insecure = true
            "#,
        )
        .unwrap();
        assert_eq!(
            c.entry_for("docker.io", "library/busybox").unwrap().mirrors,
            ["m2:5000"]
        );
        assert_eq!(
            c.entry_for("docker.io", "acme/app").unwrap().mirrors,
            ["m1:5000"]
        );
        assert!(c.entry_for("docker.iox", "a").is_none());
        assert!(c.allows_http("build.internal:5000"));
        assert!(!c.allows_http("docker.io"));
        assert_eq!(c.max_concurrent_downloads, 6);
    }

    #[test]
    fn loopback_hosts_allow_http() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "example.com",
            "10.0.0.1:5000",
            "[2001:db8::1]:5000",
            "localhost.example.com",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn bad_config_is_refused_with_the_reason() {
        let err = Config::parse("max_concurrent_downloads = 0").unwrap_err();
        assert!(err.contains("at least 1"));
        let err = Config::parse("[[registry]]\nprefix = \"x\"\nmirorrs = []").unwrap_err();
        assert!(err.contains("mirorrs"), "{err}");
    }
}
