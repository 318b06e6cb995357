//! Shared by the integration tests that drive the `skiff` binary: a private environment with
//! its own store, config, HOME and auth file, and what a rootless child needs. Preconditions
//! (root, the test user, fixtures) are the rig's: `skiff_test_rig::require`.

#![allow(dead_code)] // each test crate uses a different part of it

pub mod run;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use rootfs_cache::Store;

/// The skiff binary: the build's, or (in a test re-run as the unprivileged user) a copy that
/// user can execute.
pub fn skiff_bin() -> PathBuf {
    std::env::var_os("SKIFF_TEST_SKIFF_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_skiff")))
}

/// The environment of a rootless child: a copy of skiff the test user can run. For
/// `skiff_test_rig::rootless_test!(NAME, BODY, env = common::rootless_env)`.
pub fn rootless_env() -> Vec<(String, std::ffi::OsString)> {
    let bin =
        skiff_test_rig::rootless::share_binary(std::path::Path::new(env!("CARGO_BIN_EXE_skiff")));
    vec![("SKIFF_TEST_SKIFF_BIN".into(), bin.into_os_string())]
}

/// A private skiff environment: store, config, HOME and auth file in a temp dir.
pub struct Env {
    pub dir: tempfile::TempDir,
}

/// A test that failed half-way leaves no container running on the machine: whatever is in
/// the store is removed with `rm -f` before the store goes.
impl Drop for Env {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(self.root().join("containers")) else {
            return;
        };
        let ids: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.len() == 64)
            .collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids.iter().map(String::as_str));
            let _ = self.cmd(&args).output();
        }
    }
}

impl Env {
    /// Fast failure in tests: two attempts, short stall timeout.
    pub fn new() -> Self {
        Self::with_config("retries = 2\nstall_timeout_secs = 2\n")
    }

    /// An environment with this skiff config file.
    pub fn with_config(toml: &str) -> Self {
        let env = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        env.config(toml);
        env
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    pub fn auth_file(&self) -> PathBuf {
        self.dir.path().join("auth.json")
    }

    pub fn config(&self, toml: &str) {
        std::fs::write(self.dir.path().join("config.toml"), toml).unwrap();
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(skiff_bin());
        cmd.args(args)
            .env("SKIFF_ROOT", self.root())
            .env("SKIFF_CONFIG", self.dir.path().join("config.toml"))
            .env("HOME", self.dir.path())
            .env("REGISTRY_AUTH_FILE", self.auth_file())
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("DOCKER_CONFIG")
            .env_remove("RUST_LOG")
            .env_remove("SKIFF_TIMINGS")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs the shell command line `inner` under `script`, which gives it a pseudo-terminal of
    /// its own, in this environment; (exit code, output with the terminal's CRs taken out).
    pub fn in_terminal(&self, inner: &str) -> (Option<i32>, String) {
        let mut cmd = Command::new("script");
        cmd.args(["-qefc", inner, "/dev/null"]);
        for (k, v) in self.cmd(&[]).get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let out = cmd.stdin(Stdio::null()).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).replace('\r', ""),
        )
    }

    /// The skiff binary the tests run.
    pub fn skiff_path(&self) -> String {
        self.cmd(&[]).get_program().to_string_lossy().into_owned()
    }

    pub fn skiff(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs skiff expecting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.skiff(args);
        assert!(
            out.status.success(),
            "skiff {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs skiff expecting failure with exit 125; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.skiff(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(125), "skiff {args:?}: {stderr}");
        stderr
    }

    pub fn store(&self) -> Store {
        Store::open(self.root()).unwrap()
    }

    /// `skiff login -u USER --password-stdin HOST` with `password` on stdin.
    pub fn login(&self, user: &str, host: &str, password: &str) -> Output {
        let mut child = self
            .cmd(&["login", "-u", user, "--password-stdin", host])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        (&stdin)
            .write_all(format!("{password}\n").as_bytes())
            .unwrap();
        drop(stdin);
        child.wait_with_output().unwrap()
    }
}

/// An image with one uncompressed layer holding `size` incompressible bytes (the rig's noise).
pub fn big_image(size: usize, seed: u64) -> skiff_test_rig::Image {
    use skiff_test_rig::{Compression, Entry, Format, ImageBuilder};
    ImageBuilder::new(Format::Oci)
        .layer(
            &[Entry::file(
                "data.bin",
                skiff_test_rig::synth::noise(seed, size),
            )],
            Compression::None,
        )
        .unwrap()
        .build()
        .unwrap()
}
