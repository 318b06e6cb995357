//! What the host lets skiff enforce: the cgroup filesystem libcontainer will use, and for each
//! limit its controller (and v1 file) mounted, or available and delegated on v2.

use std::path::{Path, PathBuf};

use crate::host::CgroupLayout;

use super::{CGROUP_ROOT, LimitError, Limits};

impl Limits {
    /// The cgroup controllers (and v1 files) each limit needs.
    pub(super) fn needs(&self) -> Vec<Need> {
        let mut needs = Vec::new();
        let mut need = |flag, controller, v1_file| {
            needs.push(Need {
                flag,
                controller,
                v1_file,
            })
        };
        if self.memory.is_some() {
            need("--memory", "memory", Some("memory.limit_in_bytes"));
        }
        if self.memory_swap.is_some_and(|s| s != -1) {
            need(
                "--memory-swap",
                "memory",
                Some("memory.memsw.limit_in_bytes"),
            );
        }
        if self.memory_reservation.is_some() {
            need(
                "--memory-reservation",
                "memory",
                Some("memory.soft_limit_in_bytes"),
            );
        }
        if self.nano_cpus.is_some() {
            need("--cpus", "cpu", Some("cpu.cfs_quota_us"));
        }
        if self.cpu_shares.is_some() {
            need("--cpu-shares", "cpu", Some("cpu.shares"));
        }
        if self.cpuset_cpus.is_some() {
            need("--cpuset-cpus", "cpuset", Some("cpuset.cpus"));
        }
        if self.pids_limit.is_some() {
            need("--pids-limit", "pids", None);
        }
        needs
    }
}

/// One limit's requirement of the host.
#[derive(Debug, Clone, Copy)]
pub(super) struct Need {
    pub(super) flag: &'static str,
    pub(super) controller: &'static str,
    /// The file the limit is written to, on v1 present in the hierarchy's root already.
    pub(super) v1_file: Option<&'static str>,
}

/// The cgroup filesystem libcontainer will use, as it decides (the layout of /sys/fs/cgroup
/// in this mount namespace: skiff's own cgroup2 mount when rootless).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Cgroups {
    /// The v1 manager: one hierarchy per controller under the root.
    V1(PathBuf),
    /// The v2 manager: the unified hierarchy at the root.
    V2(PathBuf),
    /// No cgroup filesystem skiff knows.
    None,
}

impl Cgroups {
    pub(super) fn detect() -> Self {
        match CgroupLayout::detect() {
            CgroupLayout::Unified => Self::V2(CGROUP_ROOT.into()),
            CgroupLayout::Hybrid | CgroupLayout::Legacy => Self::V1(CGROUP_ROOT.into()),
            CgroupLayout::Unknown => Self::None,
        }
    }
}

fn read_words(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|s| s.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The v1 controllers this process's /proc/self/cgroup lists.
pub(super) fn v1_controllers_joined() -> Vec<String> {
    std::fs::read_to_string("/proc/self/cgroup")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .flat_map(|c| c.split(','))
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Checks the v1 hierarchies under `root` (with `joined`, the controllers of
/// /proc/self/cgroup) for every need.
pub(super) fn check_v1(root: &Path, joined: &[String], needs: &[Need]) -> Result<(), LimitError> {
    for need in needs {
        let dir = root.join(need.controller);
        let mounted = joined.iter().any(|c| c == need.controller) && dir.is_dir();
        if !mounted {
            return Err(LimitError::NotEnforceable {
                flag: need.flag,
                why: format!(
                    "the cgroup v1 {} controller is not mounted at {}",
                    need.controller,
                    dir.display()
                ),
                fix: format!(
                    "mount it (mount -t cgroup -o {c} cgroup {d}) or run without {f}",
                    c = need.controller,
                    d = dir.display(),
                    f = need.flag
                ),
            });
        }
        if let Some(file) = need.v1_file
            && !dir.join(file).exists()
        {
            let fix = match file {
                "memory.memsw.limit_in_bytes" => {
                    "boot the kernel with swapaccount=1, or give --memory-swap -1".to_owned()
                }
                "cpu.cfs_quota_us" => {
                    "the kernel lacks CFS bandwidth control (CONFIG_CFS_BANDWIDTH): use \
                     --cpu-shares or --cpuset-cpus instead"
                        .to_owned()
                }
                _ => format!("run without {}", need.flag),
            };
            return Err(LimitError::NotEnforceable {
                flag: need.flag,
                why: format!(
                    "the kernel's cgroup v1 {} controller has no {} in {}",
                    need.controller,
                    file,
                    dir.display()
                ),
                fix,
            });
        }
    }
    Ok(())
}

/// Checks the v2 hierarchy at `root` for every need, the container's cgroup to be created at
/// `cgroups_path` below it: each controller must be available at the root and enabled (or
/// possible to enable, as libcontainer will) in `cgroup.subtree_control` of the deepest
/// existing ancestor of the container's cgroup.
pub(super) fn check_v2(
    root: &Path,
    cgroups_path: &Path,
    needs: &[Need],
    rootless: bool,
) -> Result<(), LimitError> {
    let mut deepest = root.to_owned();
    if let Some(parent) = cgroups_path.parent() {
        for part in parent
            .components()
            .filter(|c| !matches!(c, std::path::Component::RootDir))
        {
            let next = deepest.join(part);
            if !next.is_dir() {
                break;
            }
            deepest = next;
        }
    }
    let available = read_words(&deepest.join("cgroup.controllers"));
    let whose = if rootless {
        "skiff's own cgroup (rootless, cgroup v2)"
    } else {
        "the cgroup v2 hierarchy"
    };
    let fix = |controller: &str| {
        if rootless {
            format!(
                "resource limits rootless need cgroup v2 with the {controller} controller \
                 delegated to your user (systemd delegates memory, pids and cpu to user \
                 sessions: run skiff from one, e.g. systemd-run --user --scope -p Delegate=yes \
                 skiff run ...; cpuset needs Delegate=cpuset), or run skiff as root"
            )
        } else {
            format!("enable the {controller} controller for {}", root.display())
        }
    };
    for need in needs {
        if !available.iter().any(|c| c == need.controller) {
            let hint = if rootless && available.is_empty() {
                " (no controller at all: on a host with cgroup v1 controllers only root can \
                 use them)"
            } else {
                ""
            };
            return Err(LimitError::NotEnforceable {
                flag: need.flag,
                why: format!(
                    "the {} controller is not available in {whose} at {} (it has: {}){hint}",
                    need.controller,
                    deepest.display(),
                    if available.is_empty() {
                        "none".to_owned()
                    } else {
                        available.join(" ")
                    }
                ),
                fix: fix(need.controller),
            });
        }
        let control = deepest.join("cgroup.subtree_control");
        if read_words(&control).iter().any(|c| c == need.controller) {
            continue;
        }
        // What libcontainer does when it creates the cgroup, done now to learn whether it can.
        if let Err(err) = std::fs::write(&control, format!("+{}", need.controller)) {
            return Err(LimitError::NotEnforceable {
                flag: need.flag,
                why: format!(
                    "the {} controller cannot be enabled for child cgroups in {} ({err}{})",
                    need.controller,
                    control.display(),
                    if err.raw_os_error() == Some(libc::EBUSY) {
                        ": the cgroup holds processes itself"
                    } else {
                        ""
                    }
                ),
                fix: fix(need.controller),
            });
        }
    }
    Ok(())
}

/// Whether the host accounts swap, so that docker's default `--memory-swap` can be set.
pub(super) fn swap_accounted(cgroups: &Cgroups) -> bool {
    match cgroups {
        Cgroups::V1(root) => root.join("memory/memory.memsw.limit_in_bytes").exists(),
        Cgroups::V2(_) => true,
        Cgroups::None => false,
    }
}
