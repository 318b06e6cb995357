//! A real registry: Debian's `docker-registry` (the reference distribution server) on a free
//! 127.0.0.1 port, with temporary storage, optional htpasswd basic auth or token auth (with a
//! [`TokenServer`] run by the test) and optional TLS.

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::client::RegistryClient;
use crate::tls::TestPki;
use crate::token::{ISSUER, SERVICE, TokenAuth, TokenServer};

/// How to start a [`Registry`].
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Require HTTP basic auth with this user and password (htpasswd, bcrypt).
    pub basic_auth: Option<(String, String)>,
    /// Serve HTTPS with a certificate from a freshly generated CA.
    pub tls: bool,
    /// Require bearer tokens from a [`TokenServer`] started with the registry.
    pub token_auth: Option<TokenAuth>,
    /// Listen on this port instead of a free one.
    pub port: Option<u16>,
    /// Keep storage here instead of a temporary directory.
    pub storage: Option<PathBuf>,
}

/// A running registry process; stopped and its storage removed on drop.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    _dir: tempfile::TempDir,
    addr: SocketAddr,
    pki: Option<TestPki>,
    ca_file: Option<PathBuf>,
    basic_auth: Option<(String, String)>,
    token: Option<TokenServer>,
    log: PathBuf,
}

/// The registry binary: $SKIFF_TEST_REGISTRY_BIN, else `docker-registry` from Debian's package.
pub fn registry_binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("SKIFF_TEST_REGISTRY_BIN") {
        return Ok(bin.into());
    }
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/bin"])
    {
        let candidate = Path::new(dir).join("docker-registry");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "docker-registry not found: run `sudo scripts/setup.sh` (installs Debian's docker-registry)"
    )
}

impl Registry {
    /// Starts a plain-HTTP registry without auth.
    pub fn start() -> Result<Self> {
        Self::start_with(RegistryOptions::default())
    }

    /// Starts a registry with the given options and waits until it accepts connections.
    pub fn start_with(options: RegistryOptions) -> Result<Self> {
        // A free port found by binding :0 can be taken before the registry binds it; retry then.
        let mut last_err = None;
        for _ in 0..5 {
            match Self::try_start(&options) {
                Ok(registry) => return Ok(registry),
                Err(err) if options.port.is_none() => last_err = Some(err),
                Err(err) => return Err(err),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("registry did not start")))
    }

    fn try_start(options: &RegistryOptions) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("skiff-registry-")
            .tempdir()?;
        let port = match options.port {
            Some(port) => port,
            None => TcpListener::bind("127.0.0.1:0")?.local_addr()?.port(),
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let storage = options
            .storage
            .clone()
            .unwrap_or_else(|| dir.path().join("storage"));
        fs::create_dir_all(&storage)?;

        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  \
             filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            storage.display()
        );
        let mut pki = None;
        let mut ca_file = None;
        if options.tls {
            let generated = TestPki::generate()?;
            let cert = dir.path().join("server.crt");
            let key = dir.path().join("server.key");
            let ca = dir.path().join("ca.crt");
            fs::write(&cert, &generated.server_cert_pem)?;
            fs::write(&key, &generated.server_key_pem)?;
            fs::write(&ca, &generated.ca_pem)?;
            config += &format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            );
            pki = Some(generated);
            ca_file = Some(ca);
        }
        if let Some((user, password)) = &options.basic_auth {
            let hash =
                bcrypt::hash_with_result(password, 4)?.format_for_version(bcrypt::Version::TwoY);
            let htpasswd = dir.path().join("htpasswd");
            fs::write(&htpasswd, format!("{user}:{hash}\n"))?;
            config += &format!(
                "auth:\n  htpasswd:\n    realm: skiff-test\n    path: {}\n",
                htpasswd.display()
            );
        }
        let mut token = None;
        if let Some(auth) = &options.token_auth {
            if options.basic_auth.is_some() {
                bail!("basic_auth and token_auth are exclusive");
            }
            let server = TokenServer::start(auth.clone())?;
            let bundle = dir.path().join("token-signer.crt");
            fs::write(&bundle, server.cert_pem())?;
            config += &format!(
                "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    \
                 rootcertbundle: {}\n",
                server.realm(),
                bundle.display()
            );
            token = Some(server);
        }
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, config)?;
        let log = dir.path().join("registry.log");
        let log_file = fs::File::create(&log)?;

        let mut child = Command::new(registry_binary()?)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .context("starting docker-registry")?;

        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait()? {
                let text = fs::read_to_string(&log).unwrap_or_default();
                bail!("docker-registry exited with {status} before listening on {addr}:\n{text}");
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("docker-registry did not listen on {addr} within 15 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(Self {
            child,
            _dir: dir,
            addr,
            pki,
            ca_file,
            basic_auth: options.basic_auth.clone(),
            token,
            log,
        })
    }

    /// `127.0.0.1:PORT`, the registry part of an image reference.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The socket address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` or `https://…`.
    pub fn url(&self) -> String {
        let scheme = if self.pki.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The CA certificate (PEM) to trust, when serving TLS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.pki.as_ref().map(|p| p.ca_pem.as_str())
    }

    /// The CA certificate as a file, when serving TLS.
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// The basic-auth user and password, or with token auth the first user's, when configured.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.basic_auth
            .as_ref()
            .or_else(|| self.token.as_ref().and_then(|t| t.auth().users.first()))
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// The token endpoint (`http://127.0.0.1:PORT/token`), with token auth.
    pub fn token_realm(&self) -> Option<String> {
        self.token.as_ref().map(TokenServer::realm)
    }

    /// The token endpoint itself (request counts and log), with token auth.
    pub fn token_server(&self) -> Option<&TokenServer> {
        self.token.as_ref()
    }

    /// The registry's own log, for a failing test's message.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A client that trusts this registry's CA and sends its credentials.
    pub fn client(&self) -> Result<RegistryClient> {
        RegistryClient::new(&self.url(), self.ca_pem(), self.credentials())
    }

    /// Pushes `image` as `repo:tag` with a [`client`](Self::client).
    pub fn push_image(&self, repo: &str, tag: &str, image: &crate::Image) -> Result<()> {
        self.client()?.push_image(repo, tag, image)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
