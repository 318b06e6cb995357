//! Shared by the tests that run containers: [`RunEnv`] (a skiff environment with a registry
//! holding the busybox fixture, `skiff run` and the checks that nothing of a run is left), the
//! cgroup leftovers checks and the Debian image.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Stdio};
use std::time::{Duration, Instant};

use skiff_test_rig::{Compression, Format, Image, ImageBuilder, Registry, busybox};

use super::Env;

/// The config of the run tests: two attempts, a stall timeout a loaded host does not hit.
pub const RUN_CONFIG: &str = "retries = 2\nstall_timeout_secs = 5\n";

/// The busybox fixture as the run tests push it: OCI, gzip, `Cmd ["sh"]`.
pub fn busybox_image() -> Image {
    busybox::image(Format::Oci, Compression::Gzip).unwrap()
}

/// A private skiff environment ([`Env`]: store, config, the skiff command) with a registry
/// holding the busybox fixture as `busybox:1`, and the mounts that were there before any run.
pub struct RunEnv {
    base: Env,
    /// `None` once a test dropped it (a cached image runs without it).
    pub registry: Option<Registry>,
    mountinfo_before: Vec<String>,
    /// `run -q`, and no panic on stderr.
    quiet: bool,
    /// Every run asserts that no run directory is left.
    check_runs: bool,
}

impl std::ops::Deref for RunEnv {
    type Target = Env;

    fn deref(&self) -> &Env {
        &self.base
    }
}

/// The lines of /proc/self/mountinfo that mention `needle`.
pub fn mount_lines_mentioning(needle: &Path) -> Vec<String> {
    let needle = needle.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_owned)
        .collect()
}

impl RunEnv {
    /// [`RUN_CONFIG`], and the fixture of [`busybox_image`].
    pub fn new() -> Self {
        Self::with(Env::with_config(RUN_CONFIG), &busybox_image())
    }

    /// `base`, and a registry with `busybox` pushed as `busybox:1`.
    pub fn with(base: Env, busybox: &Image) -> Self {
        let env = Self::bare(base);
        env.push("busybox", "1", busybox);
        env
    }

    /// `base`, and an empty registry.
    pub fn bare(base: Env) -> Self {
        Self {
            mountinfo_before: mount_lines_mentioning(base.dir.path()),
            base,
            registry: Some(Registry::start().unwrap()),
            quiet: false,
            check_runs: false,
        }
    }

    /// Runs with `-q`, and fails a run whose stderr shows a panic.
    pub fn quiet(mut self) -> Self {
        self.quiet = true;
        self
    }

    /// Every run asserts that it left no run directory.
    pub fn checking_runs(mut self) -> Self {
        self.check_runs = true;
        self
    }

    /// Pulls `busybox:1` already (so that a run prints nothing of a pull).
    pub fn pulled(mut self) -> Self {
        self.base.ok(&["pull", "-q", &self.busybox()]);
        self.mountinfo_before = mount_lines_mentioning(self.base.dir.path());
        self
    }

    pub fn push(&self, repo: &str, tag: &str, image: &Image) {
        self.registry
            .as_ref()
            .unwrap()
            .push_image(repo, tag, image)
            .unwrap();
    }

    /// `REGISTRY/REPO:TAG`.
    pub fn image(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.registry.as_ref().unwrap().host())
    }

    pub fn busybox(&self) -> String {
        self.image("busybox:1")
    }

    /// Pushes the Debian bookworm minbase rootfs (setup.sh) as a one-layer image,
    /// `debian/minbase:bookworm`; returns its name.
    pub fn debian(&self, compression: Compression) -> String {
        self.push("debian/minbase", "bookworm", &debian_image(compression));
        self.image("debian/minbase:bookworm")
    }

    /// `skiff run --rm [-q] ARGS`: (exit code, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        let mut all = vec!["run", "--rm"];
        if self.quiet {
            all.push("-q");
        }
        all.extend_from_slice(args);
        let out = self.skiff(&all);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if self.quiet {
            assert!(!stderr.contains("panicked"), "{stderr}");
        }
        if self.check_runs {
            self.assert_no_runs_left();
        }
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr,
        )
    }

    /// `skiff run --rm [-q] OPTS IMAGE ARGS`: (exit code, stdout, stderr).
    pub fn run_in(&self, image: &str, opts: &[&str], args: &[&str]) -> (i32, String, String) {
        let mut all = opts.to_vec();
        all.push(image);
        all.extend_from_slice(args);
        self.run(&all)
    }

    /// [`RunEnv::run_in`] the busybox image.
    pub fn run_busybox(&self, opts: &[&str], args: &[&str]) -> (i32, String, String) {
        self.run_in(&self.busybox(), opts, args)
    }

    /// `sh -c SCRIPT` in `image` with `opts` first: (exit code, stdout, stderr).
    pub fn sh_status_in(&self, image: &str, opts: &[&str], script: &str) -> (i32, String, String) {
        self.run_in(image, opts, &["sh", "-c", script])
    }

    /// `sh -c SCRIPT` in the busybox image with `opts` first: (exit code, stdout, stderr).
    pub fn sh_status(&self, opts: &[&str], script: &str) -> (i32, String, String) {
        self.sh_status_in(&self.busybox(), opts, script)
    }

    /// `sh -c SCRIPT` in `image` with `opts` first; expects exit 0 and returns stdout.
    pub fn sh_in(&self, image: &str, opts: &[&str], script: &str) -> String {
        let (code, stdout, stderr) = self.sh_status_in(image, opts, script);
        assert_eq!(
            code, 0,
            "skiff run {opts:?} {image} sh -c {script:?}: {stdout}\n{stderr}"
        );
        stdout
    }

    /// [`RunEnv::sh_in`] the busybox image.
    pub fn sh(&self, opts: &[&str], script: &str) -> String {
        self.sh_in(&self.busybox(), opts, script)
    }

    /// Runs and expects success and nothing left ([`RunEnv::assert_clean`]); returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let (code, stdout, stderr) = self.run(args);
        assert_eq!(code, 0, "skiff run {args:?}: {stdout}\n{stderr}");
        self.assert_clean();
        stdout
    }

    /// [`RunEnv::ok`] with `sh -c SCRIPT` in the busybox image, `opts` first.
    pub fn sh_clean(&self, opts: &[&str], script: &str) -> String {
        let image = self.busybox();
        let mut args: Vec<&str> = opts.to_vec();
        args.extend_from_slice(&[&image, "sh", "-c", script]);
        self.ok(&args)
    }

    /// Expects skiff itself to fail (125); returns stderr.
    pub fn refused(&self, args: &[&str]) -> String {
        let (code, stdout, stderr) = self.run(args);
        assert_eq!(code, 125, "skiff run {args:?}: {stdout}\n{stderr}");
        stderr
    }

    /// Starts `skiff ARGS` (a payload that prints `ready` once set up); returns once the line
    /// arrived.
    pub fn spawn_ready(&self, args: &[&str]) -> (Child, BufReader<ChildStdout>) {
        let mut child = self.cmd(args).stdout(Stdio::piped()).spawn().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line, "ready\n", "skiff {args:?}");
        (child, stdout)
    }

    /// Nothing of finished runs is left: no mounts, no run directories.
    pub fn assert_clean(&self) {
        assert_eq!(
            mount_lines_mentioning(self.dir.path()),
            self.mountinfo_before,
            "mounts left behind"
        );
        self.assert_no_runs_left();
    }

    /// No run directory left.
    pub fn assert_no_runs_left(&self) {
        let runs: Vec<_> = std::fs::read_dir(self.root().join("runs"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(runs.is_empty(), "run directories left: {runs:?}");
    }
}

const DEBIAN_TAR: &str = "/var/cache/skiff-test/debian-bookworm-minbase.tar";

/// The Debian bookworm minbase rootfs (setup.sh makes it) as a one-layer docker image: a PATH,
/// `Cmd ["bash"]`.
pub fn debian_image(compression: Compression) -> Image {
    let path = std::env::var("SKIFF_TEST_DEBIAN_TAR").unwrap_or_else(|_| DEBIAN_TAR.into());
    let tar = skiff_test_rig::require::require_file(
        path.as_ref(),
        "the Debian bookworm minbase tar (setup.sh makes it with debootstrap)",
    );
    ImageBuilder::new(Format::Docker)
        .layer_tar(&tar, compression)
        .unwrap()
        .env(&["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"])
        .cmd(&["bash"])
        .build()
        .unwrap()
}

/// Cgroup directories on the host whose name is `run_id`
/// (`/sys/fs/cgroup[/unified][/<controller>]/skiff/<id>`).
pub fn cgroup_dirs(run_id: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for base in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        let mut bases = vec![PathBuf::from(base)];
        if let Ok(entries) = std::fs::read_dir(base) {
            bases.extend(entries.flatten().map(|e| e.path()));
        }
        for b in bases {
            let dir = b.join("skiff").join(run_id);
            if dir.exists() {
                out.push(dir);
            }
        }
    }
    out
}

/// The run id in a /proc/self/cgroup printed by the payload (`…/skiff/<id>`: a v1 cgroup, or
/// without a cgroup namespace), else in its /proc/self/mountinfo (the overlay's
/// `…/runs/<id>/…`: in a cgroup namespace /proc/self/cgroup shows `0::/`).
pub fn run_id_from_cgroup(text: &str) -> Option<String> {
    let cgroup_line = |l: &&str| {
        l.split(':').count() >= 3
            && l.split(':')
                .next()
                .is_some_and(|n| n.parse::<u32>().is_ok())
    };
    text.lines()
        .filter(|l| cgroup_line(l))
        .filter_map(|l| l.split_once("/skiff/"))
        .map(|(_, id)| id.trim().to_owned())
        .next()
        .or_else(|| {
            text.split("/runs/")
                .skip(1)
                .filter_map(|rest| rest.split('/').next())
                .find(|id| id.starts_with("skiff-"))
                .map(str::to_owned)
        })
}

/// skiff's cgroup directories on this host (`/sys/fs/cgroup[/<controller>]/skiff/<id>`).
pub fn skiff_cgroups() -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") else {
        return out;
    };
    let bases = entries
        .flatten()
        .map(|e| e.path().join("skiff"))
        .chain([PathBuf::from("/sys/fs/cgroup/skiff")]);
    for base in bases {
        if let Ok(ids) = std::fs::read_dir(&base) {
            out.extend(ids.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
    }
    out
}

/// Fails if a cgroup directory that was not in `before` stays (runs of other test processes
/// on this host come and go within seconds; a leaked one stays).
pub fn assert_no_new_cgroups(before: &BTreeSet<PathBuf>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let new: Vec<_> = skiff_cgroups().difference(before).cloned().collect();
        if new.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "cgroups left behind: {new:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
