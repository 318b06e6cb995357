//! Facts about the host that decide how skiff sets up containers.

use std::path::{Path, PathBuf};

/// Which cgroup layout the host mounts at /sys/fs/cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupLayout {
    /// cgroup v2 only (unified hierarchy at /sys/fs/cgroup).
    Unified,
    /// v1 controllers plus cgroup2 at /sys/fs/cgroup/unified.
    Hybrid,
    /// v1 controllers only.
    Legacy,
    /// /sys/fs/cgroup is missing or unrecognised.
    Unknown,
}

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

impl CgroupLayout {
    /// Detects the layout of the running host.
    pub fn detect() -> Self {
        Self::detect_at(Path::new("/sys/fs/cgroup"))
    }

    fn detect_at(root: &Path) -> Self {
        if fs_magic(root) == Some(CGROUP2_SUPER_MAGIC) {
            return Self::Unified;
        }
        if !root.is_dir() {
            return Self::Unknown;
        }
        if fs_magic(&root.join("unified")) == Some(CGROUP2_SUPER_MAGIC) {
            Self::Hybrid
        } else if root.join("memory").is_dir() || root.join("cpu").is_dir() {
            Self::Legacy
        } else {
            Self::Unknown
        }
    }
}

fn fs_magic(path: &Path) -> Option<i64> {
    nix::sys::statfs::statfs(path)
        .ok()
        .map(|s| s.filesystem_type().0)
}

/// The host architecture in OCI/Go terms, for platform selection.
pub fn oci_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// True when skiff runs without root privileges (effective uid other than 0).
pub fn is_rootless() -> bool {
    !nix::unistd::geteuid().is_root()
}

/// The default store root: /var/lib/skiff as root, `$XDG_DATA_HOME/skiff` otherwise.
pub fn default_root() -> PathBuf {
    default_root_for(
        is_rootless(),
        std::env::var_os("XDG_DATA_HOME").map(PathBuf::from),
        std::env::var_os("HOME").map(PathBuf::from),
    )
}

fn default_root_for(rootless: bool, xdg: Option<PathBuf>, home: Option<PathBuf>) -> PathBuf {
    if !rootless {
        return PathBuf::from("/var/lib/skiff");
    }
    match (xdg.filter(|p| p.is_absolute()), home) {
        (Some(xdg), _) => xdg.join("skiff"),
        (None, Some(home)) => home.join(".local/share/skiff"),
        // No HOME: fall back to a per-user directory that is at least not shared with root.
        (None, None) => PathBuf::from(format!("/tmp/skiff-{}", nix::unistd::geteuid().as_raw())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_root_follows_docker_and_podman_conventions() {
        assert_eq!(
            default_root_for(false, None, None),
            Path::new("/var/lib/skiff")
        );
        assert_eq!(
            default_root_for(true, Some("/x/data".into()), Some("/home/u".into())),
            Path::new("/x/data/skiff")
        );
        // A relative XDG_DATA_HOME is invalid per the XDG spec and must be ignored.
        assert_eq!(
            default_root_for(true, Some("rel".into()), Some("/home/u".into())),
            Path::new("/home/u/.local/share/skiff")
        );
    }

    #[test]
    fn cgroup_layout_of_a_plain_directory_is_unknown() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(CgroupLayout::detect_at(dir.path()), CgroupLayout::Unknown);
        assert_eq!(
            CgroupLayout::detect_at(&dir.path().join("missing")),
            CgroupLayout::Unknown
        );
    }
}
