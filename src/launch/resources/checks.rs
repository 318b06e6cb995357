//! docker's daemon checks of the limits, with its messages: memory sizes and their order,
//! `--cpus` and `--cpuset-cpus` against this host's CPUs.

use super::{LimitError, Limits};

/// docker's smallest memory limit and reservation (6 MiB).
pub const MIN_MEMORY: i64 = 6 * 1024 * 1024;

/// Parses a CPU list (`0-1,3`) into its CPUs; `None` when it is no list.
fn parse_cpu_list(s: &str) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (lo.parse::<u32>().ok()?, hi.parse::<u32>().ok()?),
            None => {
                let v = part.parse::<u32>().ok()?;
                (v, v)
            }
        };
        if lo > hi || hi - lo > 65_536 {
            return None;
        }
        out.extend(lo..=hi);
    }
    Some(out)
}

/// What of the host [`Limits::validate`] checks against.
#[derive(Debug, Clone)]
pub(crate) struct HostCpus {
    /// CPUs this process may run on (docker's `NumCPU`).
    pub(crate) count: usize,
    /// The CPU list the host's cpuset allows.
    pub(crate) available: String,
}

impl HostCpus {
    /// This host's.
    pub(crate) fn detect() -> Self {
        let count = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
            .map(|set| {
                (0..nix::sched::CpuSet::count())
                    .filter(|&i| set.is_set(i).unwrap_or(false))
                    .count()
            })
            .ok()
            .filter(|&n| n > 0)
            .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
            .unwrap_or(1);
        let available = [
            "/sys/fs/cgroup/cpuset/cpuset.cpus",
            "/sys/fs/cgroup/cpuset.cpus.effective",
            "/sys/devices/system/cpu/online",
        ]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| format!("0-{}", count.saturating_sub(1)));
        Self { count, available }
    }
}

impl Limits {
    /// docker's daemon checks, with its messages, against this host's CPUs.
    pub fn validate(&self) -> Result<(), LimitError> {
        self.validate_against(&HostCpus::detect())
    }

    /// [`Limits::validate`] against `host`.
    pub(crate) fn validate_against(&self, host: &HostCpus) -> Result<(), LimitError> {
        let memory = self.memory.unwrap_or(0);
        let swap = self.memory_swap.unwrap_or(0);
        let reservation = self.memory_reservation.unwrap_or(0);
        if memory != 0 && memory < MIN_MEMORY {
            return Err(LimitError::MemoryTooSmall);
        }
        if memory > 0 && swap > 0 && swap < memory {
            return Err(LimitError::SwapBelowMemory);
        }
        if memory == 0 && swap > 0 {
            return Err(LimitError::SwapWithoutMemory);
        }
        if reservation != 0 && reservation < MIN_MEMORY {
            return Err(LimitError::ReservationTooSmall);
        }
        if memory > 0 && reservation > 0 && memory < reservation {
            return Err(LimitError::MemoryBelowReservation);
        }
        if let Some(nano) = self.nano_cpus {
            let max = i64::try_from(host.count)
                .unwrap_or(i64::MAX)
                .saturating_mul(1_000_000_000);
            // docker leaves the lower bound to the kernel, whose smallest quota is 1 ms.
            if !(10_000_000..=max).contains(&nano) {
                return Err(LimitError::CpuRange { cpus: host.count });
            }
        }
        if let Some(cpus) = &self.cpuset_cpus {
            let requested =
                parse_cpu_list(cpus).ok_or_else(|| LimitError::CpusetInvalid(cpus.clone()))?;
            let available = parse_cpu_list(&host.available).unwrap_or_default();
            if requested.iter().any(|c| !available.contains(c)) {
                return Err(LimitError::CpusetUnavailable {
                    requested: cpus.clone(),
                    available: host.available.clone(),
                });
            }
        }
        Ok(())
    }
}
