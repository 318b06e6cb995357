//! Resource limits with docker's flags and semantics: `--memory`, `--memory-swap`,
//! `--memory-reservation`, `--cpus`, `--cpu-shares`, `--cpuset-cpus`, `--pids-limit` (cgroup
//! resources, applied by libcontainer's v1 or v2 manager), `--ulimit` (process rlimits) and
//! `--shm-size` (the /dev/shm tmpfs).
//!
//! Values are parsed as docker's CLI parses them and checked as docker's daemon checks them,
//! with docker's messages. Before the container is created, every cgroup limit is checked
//! against what the host lets skiff enforce (the v1 hierarchy mounted, or the v2 controller
//! available and delegated): a limit that cannot be enforced is refused, never ignored. The
//! container sees its own cgroups read-only at /sys/fs/cgroup, as docker shows them.
//!
//! Here: [`Limits`], the errors, and [`apply`] with the spec's cgroup resources; the parts are
//! in `flags` (docker's flags parsed), `ulimits` (`--ulimit`), `checks` (docker's daemon
//! checks), `host` (what the host's cgroups can enforce) and `cgroup_mount` (the container's
//! cgroups at /sys/fs/cgroup).

mod cgroup_mount;
mod checks;
mod flags;
mod host;
mod ulimits;

use std::path::Path;

use oci_spec::OciSpecError;
use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder,
    Spec,
};

pub use flags::LimitFlags;
pub use ulimits::Ulimit;

use cgroup_mount::mount_cgroups;
use host::{Cgroups, check_v1, check_v2, swap_accounted, v1_controllers_joined};
use ulimits::{check_ulimits, rlimits};

/// docker's /dev/shm size when `--shm-size` is not given (64 MiB).
pub const DEFAULT_SHM_SIZE: i64 = 64 * 1024 * 1024;
/// The CFS period docker sets with `--cpus` (100 ms).
pub const CPU_PERIOD_US: u64 = 100_000;
/// Where libcontainer (and docker) find the cgroup filesystem.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Why a limit was refused (skiff exits 125). The messages are docker's where docker refuses
/// the same thing.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LimitError {
    /// A flag's value does not parse.
    #[error("invalid argument {value:?} for \"{flag}\" flag: {reason}")]
    InvalidFlag {
        /// The flag, as docker names it (`-m, --memory`).
        flag: &'static str,
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `--memory` below 6 MiB.
    #[error("Minimum memory limit allowed is 6MB")]
    MemoryTooSmall,
    /// `--memory-reservation` below 6 MiB.
    #[error("Minimum memory reservation allowed is 6MB")]
    ReservationTooSmall,
    /// `--memory` below `--memory-reservation`.
    #[error("Minimum memory limit can not be less than memory reservation limit, see usage")]
    MemoryBelowReservation,
    /// `--memory-swap` below `--memory`.
    #[error("Minimum memoryswap limit should be larger than memory limit, see usage")]
    SwapBelowMemory,
    /// `--memory-swap` without `--memory`.
    #[error("You should always set the Memory limit when using Memoryswap limit, see usage")]
    SwapWithoutMemory,
    /// `--cpus` outside what the host has.
    #[error("range of CPUs is from 0.01 to {cpus}.00, as there are only {cpus} CPUs available")]
    CpuRange {
        /// CPUs this process may run on.
        cpus: usize,
    },
    /// `--cpuset-cpus` that is no CPU list.
    #[error("Invalid value {0} for cpuset cpus")]
    CpusetInvalid(String),
    /// `--cpuset-cpus` naming CPUs the host does not have.
    #[error("Requested CPUs are not available - requested {requested}, available: {available}")]
    CpusetUnavailable {
        /// The list given.
        requested: String,
        /// The CPUs the host's cpuset allows.
        available: String,
    },
    /// `--shm-size` below 0.
    #[error("SHM size can not be less than 0")]
    ShmNegative,
    /// A `--ulimit` above the hard limit skiff may set.
    #[error(
        "--ulimit {name}={value}: the hard limit {value} is above {max}, the most {who} may set \
         for {name} ({fix})"
    )]
    UlimitTooHigh {
        /// The ulimit's name.
        name: String,
        /// The hard limit asked for.
        value: u64,
        /// The most that may be set.
        max: u64,
        /// Whose limit that is.
        who: &'static str,
        /// What to do.
        fix: &'static str,
    },
    /// A cgroup limit the host does not let skiff enforce.
    #[error("{flag} cannot be enforced: {why}; {fix}")]
    NotEnforceable {
        /// The flag.
        flag: &'static str,
        /// Why not (what is missing, where).
        why: String,
        /// What to do.
        fix: String,
    },
    /// The runtime spec types rejected a part.
    #[error("building the runtime spec ({part}): {reason}")]
    Build {
        /// Which part.
        part: &'static str,
        /// Why.
        reason: String,
    },
}

fn built<T>(part: &'static str, result: Result<T, OciSpecError>) -> Result<T, LimitError> {
    result.map_err(|e| LimitError::Build {
        part,
        reason: e.to_string(),
    })
}

/// Resource limits of a container, docker's `HostConfig` resources: `None` (or an empty list)
/// is no limit. [`Limits::from_flags`] parses them from docker's flags.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Limits {
    /// `--memory`: bytes (at least 6 MiB).
    pub memory: Option<i64>,
    /// `--memory-swap`: memory plus swap, bytes; `-1` unlimited swap. Unset with `--memory`:
    /// twice `--memory` (docker's default) where the host accounts swap.
    pub memory_swap: Option<i64>,
    /// `--memory-reservation`: the soft limit, bytes.
    pub memory_reservation: Option<i64>,
    /// `--cpus`: CPUs in billionths (1.5 CPUs is 1_500_000_000), as docker's NanoCPUs.
    pub nano_cpus: Option<i64>,
    /// `--cpu-shares`: relative weight (cgroup v1 shares, converted to cpu.weight on v2).
    pub cpu_shares: Option<u64>,
    /// `--cpuset-cpus`: the CPUs the container may use (`0-1`, `0,2`).
    pub cpuset_cpus: Option<String>,
    /// `--pids-limit`: most tasks in the container.
    pub pids_limit: Option<i64>,
    /// `--ulimit`: process rlimits (the last of a name wins).
    pub ulimits: Vec<Ulimit>,
    /// `--shm-size`: bytes of the /dev/shm tmpfs (64 MiB when unset).
    pub shm_size: Option<i64>,
}

impl Limits {
    /// Whether any limit needs a cgroup (all but `--ulimit` and `--shm-size`).
    pub fn needs_cgroup(&self) -> bool {
        self.memory.is_some()
            || self.memory_swap.is_some_and(|s| s != -1)
            || self.memory_reservation.is_some()
            || self.nano_cpus.is_some()
            || self.cpu_shares.is_some()
            || self.cpuset_cpus.is_some()
            || self.pids_limit.is_some()
    }

    /// `linux.resources` of the spec; `swap_accounted`: the host limits swap (else docker's
    /// default of twice the memory is not set).
    fn resources(&self, swap_accounted: bool) -> Result<Option<LinuxResources>, LimitError> {
        if !self.needs_cgroup() {
            return Ok(None);
        }
        let mut resources = LinuxResourcesBuilder::default();
        if self.memory.is_some() || self.memory_reservation.is_some() {
            let mut memory = LinuxMemoryBuilder::default();
            if let Some(limit) = self.memory {
                memory = memory.limit(limit);
                let swap = match self.memory_swap {
                    Some(swap) => Some(swap),
                    None if swap_accounted => Some(limit.saturating_mul(2)),
                    None => None,
                };
                if let Some(swap) = swap {
                    memory = memory.swap(swap);
                }
            }
            if let Some(reservation) = self.memory_reservation {
                memory = memory.reservation(reservation);
            }
            resources = resources.memory(built("memory", memory.build())?);
        }
        if self.nano_cpus.is_some() || self.cpu_shares.is_some() || self.cpuset_cpus.is_some() {
            let mut cpu = LinuxCpuBuilder::default();
            if let Some(nano) = self.nano_cpus {
                let period = i128::from(CPU_PERIOD_US);
                let quota =
                    i64::try_from(i128::from(nano) * period / 1_000_000_000).unwrap_or(i64::MAX);
                cpu = cpu.period(CPU_PERIOD_US).quota(quota);
            }
            if let Some(shares) = self.cpu_shares {
                cpu = cpu.shares(shares);
            }
            if let Some(cpus) = &self.cpuset_cpus {
                cpu = cpu.cpus(cpus.clone());
            }
            resources = resources.cpu(built("cpu", cpu.build())?);
        }
        if let Some(limit) = self.pids_limit {
            resources = resources.pids(built(
                "pids",
                LinuxPidsBuilder::default().limit(limit).build(),
            )?);
        }
        let mut resources = built("resources", resources.build())?;
        // The builder's defaults are not docker's: only what was asked for.
        if resources.devices().as_ref().is_some_and(|d| d.is_empty()) {
            resources.set_devices(None);
        }
        Ok(Some(resources))
    }
}

/// Puts `limits` into the runtime spec: the cgroup resources after checking the host can
/// enforce them (`cgroups_path`: the container's, `rootless`: skiff runs in its user
/// namespace), the rlimits, the /dev/shm size, and the container's cgroups mounted read-only
/// at /sys/fs/cgroup (in a cgroup namespace of its own on cgroup v2).
pub(crate) fn apply(
    spec: &mut Spec,
    limits: &Limits,
    rootless: bool,
    cgroups_path: &str,
) -> Result<(), LimitError> {
    limits.validate()?;
    let cgroups = Cgroups::detect();
    let needs = limits.needs();
    if !needs.is_empty() {
        match &cgroups {
            Cgroups::V1(root) => check_v1(root, &v1_controllers_joined(), &needs)?,
            Cgroups::V2(root) => check_v2(root, Path::new(cgroups_path), &needs, rootless)?,
            Cgroups::None => {
                return Err(LimitError::NotEnforceable {
                    flag: needs[0].flag,
                    why: format!("there is no cgroup filesystem at {CGROUP_ROOT}"),
                    fix: format!("mount cgroup2 at {CGROUP_ROOT}, or run without limits"),
                });
            }
        }
    }
    check_ulimits(&limits.ulimits, rootless)?;
    let resources = limits.resources(swap_accounted(&cgroups))?;
    let rlimits = rlimits(&limits.ulimits)?;
    if let Some(process) = spec.process_mut()
        && !rlimits.is_empty()
    {
        process.set_rlimits(Some(rlimits));
    }
    set_shm_size(spec, limits.shm_size.unwrap_or(DEFAULT_SHM_SIZE));
    mount_cgroups(spec, &cgroups)?;
    if let Some(linux) = spec.linux_mut() {
        linux.set_resources(resources);
    }
    Ok(())
}

/// Sets the size of the /dev/shm tmpfs.
fn set_shm_size(spec: &mut Spec, bytes: i64) {
    let Some(mounts) = spec.mounts_mut() else {
        return;
    };
    for m in mounts
        .iter_mut()
        .filter(|m| m.destination() == Path::new("/dev/shm"))
    {
        if let Some(options) = m.options_mut() {
            options.retain(|o| !o.starts_with("size="));
            options.push(format!("size={bytes}"));
        }
    }
}

#[cfg(test)]
mod tests;
