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

use std::path::{Path, PathBuf};

use oci_spec::OciSpecError;
use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder, MountBuilder, PosixRlimit,
    PosixRlimitBuilder, PosixRlimitType, Spec,
};

use crate::host::CgroupLayout;

/// docker's smallest memory limit and reservation (6 MiB).
pub const MIN_MEMORY: i64 = 6 * 1024 * 1024;
/// docker's /dev/shm size when `--shm-size` is not given (64 MiB).
pub const DEFAULT_SHM_SIZE: i64 = 64 * 1024 * 1024;
/// The CFS period docker sets with `--cpus` (100 ms).
pub const CPU_PERIOD_US: u64 = 100_000;
/// cgroup v1's range of cpu.shares (docker clamps to it).
const MIN_CPU_SHARES: u64 = 2;
const MAX_CPU_SHARES: u64 = 262_144;
/// Where libcontainer (and docker) find the cgroup filesystem.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// `RLIM_INFINITY`, what docker's `-1` means in a `--ulimit`.
const UNLIMITED: u64 = u64::MAX;

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

/// One `--ulimit NAME=SOFT[:HARD]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ulimit {
    /// docker's name (`nofile`, `nproc`, ...).
    pub name: String,
    /// Soft limit (`u64::MAX`: unlimited).
    pub soft: u64,
    /// Hard limit (`u64::MAX`: unlimited).
    pub hard: u64,
}

/// docker's `--ulimit` names and their rlimits (`as` is left out, as docker leaves it out).
const ULIMITS: [(&str, PosixRlimitType, nix::sys::resource::Resource); 15] = {
    use PosixRlimitType as T;
    use nix::sys::resource::Resource as R;
    [
        ("core", T::RlimitCore, R::RLIMIT_CORE),
        ("cpu", T::RlimitCpu, R::RLIMIT_CPU),
        ("data", T::RlimitData, R::RLIMIT_DATA),
        ("fsize", T::RlimitFsize, R::RLIMIT_FSIZE),
        ("locks", T::RlimitLocks, R::RLIMIT_LOCKS),
        ("memlock", T::RlimitMemlock, R::RLIMIT_MEMLOCK),
        ("msgqueue", T::RlimitMsgqueue, R::RLIMIT_MSGQUEUE),
        ("nice", T::RlimitNice, R::RLIMIT_NICE),
        ("nofile", T::RlimitNofile, R::RLIMIT_NOFILE),
        ("nproc", T::RlimitNproc, R::RLIMIT_NPROC),
        ("rss", T::RlimitRss, R::RLIMIT_RSS),
        ("rtprio", T::RlimitRtprio, R::RLIMIT_RTPRIO),
        ("rttime", T::RlimitRttime, R::RLIMIT_RTTIME),
        ("sigpending", T::RlimitSigpending, R::RLIMIT_SIGPENDING),
        ("stack", T::RlimitStack, R::RLIMIT_STACK),
    ]
};

impl Ulimit {
    /// Parses docker's `NAME=SOFT[:HARD]` (the hard limit defaults to the soft one; `-1` is
    /// unlimited), with docker's messages.
    pub fn parse(arg: &str) -> Result<Self, LimitError> {
        let invalid = |reason: String| LimitError::InvalidFlag {
            flag: "--ulimit",
            value: arg.to_owned(),
            reason,
        };
        let Some((name, values)) = arg.split_once('=') else {
            return Err(invalid(format!("invalid ulimit argument: {arg}")));
        };
        if !ULIMITS.iter().any(|(n, _, _)| *n == name) {
            return Err(invalid(format!("invalid ulimit type: {name}")));
        }
        let value = |s: &str, which: &str| -> Result<u64, LimitError> {
            match s.parse::<i64>() {
                Ok(-1) => Ok(UNLIMITED),
                Ok(v) if v >= 0 => Ok(v.unsigned_abs()),
                Ok(_) => Err(invalid(format!(
                    "invalid ulimit {which} value {s}: only -1 (unlimited) may be negative"
                ))),
                Err(e) => Err(invalid(format!("invalid ulimit {which} value {s}: {e}"))),
            }
        };
        let parts: Vec<&str> = values.split(':').collect();
        let (soft, hard) = match parts.as_slice() {
            [soft] => {
                let v = value(soft, "soft")?;
                (v, v)
            }
            [soft, hard] => (value(soft, "soft")?, value(hard, "hard")?),
            _ => {
                return Err(invalid(format!(
                    "too many limit value arguments - {values}, can only have up to two, \
                     `soft[:hard]`"
                )));
            }
        };
        if soft > hard {
            return Err(invalid(format!(
                "ulimit soft limit must be less than or equal to hard limit: {} > {}",
                show_limit(soft),
                show_limit(hard)
            )));
        }
        Ok(Self {
            name: name.to_owned(),
            soft,
            hard,
        })
    }

    fn rlimit(&self) -> Option<(PosixRlimitType, nix::sys::resource::Resource)> {
        ULIMITS
            .iter()
            .find(|(n, _, _)| *n == self.name)
            .map(|(_, t, r)| (*t, *r))
    }
}

fn show_limit(v: u64) -> String {
    if v == UNLIMITED {
        "-1".into()
    } else {
        v.to_string()
    }
}

/// Resource limits of a container, docker's `HostConfig` resources: `None` (or an empty list)
/// is no limit. [`Limits::from_flags`] parses them from docker's flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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

/// docker's limit flags as given on the command line, for [`Limits::from_flags`].
#[derive(Debug, Clone, Default)]
pub struct LimitFlags {
    /// `-m, --memory` (`64m`, `1g`, `1.5g`, bytes).
    pub memory: Option<String>,
    /// `--memory-swap` (a size, or `-1`).
    pub memory_swap: Option<String>,
    /// `--memory-reservation` (a size).
    pub memory_reservation: Option<String>,
    /// `--cpus` (`1.5`).
    pub cpus: Option<String>,
    /// `-c, --cpu-shares` (an integer).
    pub cpu_shares: Option<String>,
    /// `--cpuset-cpus` (`0-1`, `0,2`).
    pub cpuset_cpus: Option<String>,
    /// `--pids-limit` (an integer; 0 or -1: unlimited).
    pub pids_limit: Option<String>,
    /// `--ulimit NAME=SOFT[:HARD]`, repeated.
    pub ulimits: Vec<String>,
    /// `--shm-size` (a size).
    pub shm_size: Option<String>,
}

/// Parses a size as docker's `RAMInBytes`: a number, optionally fractional, then an optional
/// binary unit `b`, `k`, `m`, `g`, `t`, `p` (any case, with optional `i` and `b`: `64m`,
/// `64MiB`, `1.5g`).
pub fn parse_size(s: &str) -> Result<i64, String> {
    let invalid = || format!("invalid size: '{s}'");
    let end = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(end);
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return Err(invalid());
    }
    let value: f64 = number.parse().map_err(|_| invalid())?;
    let unit = unit.strip_prefix(' ').unwrap_or(unit).to_ascii_lowercase();
    let mut rest = unit.as_str();
    let mut multiplier = 1f64;
    if let Some(c) = rest.chars().next()
        && let Some(power) = "kmgtp".find(c)
    {
        multiplier = 1024f64.powi(i32::try_from(power).map_err(|_| invalid())? + 1);
        rest = &rest[1..];
        rest = rest.strip_prefix('i').unwrap_or(rest);
    }
    rest = rest.strip_prefix('b').unwrap_or(rest);
    if !rest.is_empty() {
        return Err(invalid());
    }
    let bytes = value * multiplier;
    if !bytes.is_finite() || bytes >= i64::MAX as f64 {
        return Err(invalid());
    }
    // Truncated, as docker's int64(size).
    Ok(bytes as i64)
}

/// Parses `--cpus` as docker does (a rational number: `1.5`, `3/2`) into billionths of a CPU.
pub fn parse_cpus(s: &str) -> Result<i64, String> {
    let not_rational = || format!("failed to parse {s} as a rational number");
    let too_precise = || "value is too precise".to_owned();
    let (negative, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let nano: i128 = if let Some((num, den)) = body.split_once('/') {
        let num: i128 = num.parse().map_err(|_| not_rational())?;
        let den: i128 = den.parse().map_err(|_| not_rational())?;
        if den <= 0 || num < 0 {
            return Err(not_rational());
        }
        let scaled = num.checked_mul(1_000_000_000).ok_or_else(not_rational)?;
        if scaled % den != 0 {
            return Err(too_precise());
        }
        scaled / den
    } else {
        let (int, frac) = body.split_once('.').unwrap_or((body, ""));
        if (int.is_empty() && frac.is_empty())
            || !int.chars().all(|c| c.is_ascii_digit())
            || !frac.chars().all(|c| c.is_ascii_digit())
        {
            return Err(not_rational());
        }
        let significant = frac.trim_end_matches('0');
        if significant.len() > 9 {
            return Err(too_precise());
        }
        let int: i128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| not_rational())?
        };
        let frac_nano: i128 = format!("{significant:0<9}")
            .parse()
            .map_err(|_| not_rational())?;
        int.checked_mul(1_000_000_000)
            .and_then(|n| n.checked_add(frac_nano))
            .ok_or_else(not_rational)?
    };
    let nano = if negative { -nano } else { nano };
    i64::try_from(nano).map_err(|_| not_rational())
}

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
    /// Parses docker's flags (docker's syntax and messages) and checks them as docker's daemon
    /// does ([`Limits::validate`]). Zero means unset, as in docker.
    pub fn from_flags(flags: &LimitFlags) -> Result<Self, LimitError> {
        fn flag<T>(
            value: &Option<String>,
            name: &'static str,
            parse: impl Fn(&str) -> Result<T, String>,
        ) -> Result<Option<T>, LimitError> {
            value
                .as_deref()
                .map(|v| {
                    parse(v).map_err(|reason| LimitError::InvalidFlag {
                        flag: name,
                        value: v.to_owned(),
                        reason,
                    })
                })
                .transpose()
        }
        // Go's strconv messages, as docker's flag parsing reports them.
        let int = |s: &str| {
            s.parse::<i64>().map_err(|e| {
                let why = match e.kind() {
                    std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow => {
                        "value out of range"
                    }
                    _ => "invalid syntax",
                };
                format!("strconv.ParseInt: parsing {s:?}: {why}")
            })
        };
        let swap = |s: &str| if s == "-1" { Ok(-1) } else { parse_size(s) };
        let nonzero = |v: Option<i64>| v.filter(|&v| v != 0);
        let mut ulimits: Vec<Ulimit> = Vec::new();
        for arg in &flags.ulimits {
            let u = Ulimit::parse(arg)?;
            ulimits.retain(|old| old.name != u.name);
            ulimits.push(u);
        }
        let shm_size = flag(&flags.shm_size, "--shm-size", parse_size)?;
        if shm_size.is_some_and(|s| s < 0) {
            return Err(LimitError::ShmNegative);
        }
        let limits = Self {
            memory: nonzero(flag(&flags.memory, "-m, --memory", parse_size)?),
            memory_swap: nonzero(flag(&flags.memory_swap, "--memory-swap", swap)?),
            memory_reservation: nonzero(flag(
                &flags.memory_reservation,
                "--memory-reservation",
                parse_size,
            )?),
            nano_cpus: nonzero(flag(&flags.cpus, "--cpus", parse_cpus)?),
            cpu_shares: flag(&flags.cpu_shares, "-c, --cpu-shares", int)?
                .filter(|&s| s != 0)
                // docker clamps shares to what the kernel takes.
                .map(|s| {
                    u64::try_from(s)
                        .unwrap_or(0)
                        .clamp(MIN_CPU_SHARES, MAX_CPU_SHARES)
                }),
            cpuset_cpus: flags.cpuset_cpus.clone().filter(|s| !s.is_empty()),
            // docker: 0 and -1 (any negative) are unlimited.
            pids_limit: flag(&flags.pids_limit, "--pids-limit", int)?.filter(|&p| p > 0),
            ulimits,
            shm_size: shm_size.filter(|&s| s > 0),
        };
        limits.validate()?;
        Ok(limits)
    }

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

    /// The cgroup controllers (and v1 files) each limit needs.
    fn needs(&self) -> Vec<Need> {
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
struct Need {
    flag: &'static str,
    controller: &'static str,
    /// The file the limit is written to, on v1 present in the hierarchy's root already.
    v1_file: Option<&'static str>,
}

/// The cgroup filesystem libcontainer will use, as it decides (the layout of /sys/fs/cgroup
/// in this mount namespace: skiff's own cgroup2 mount when rootless).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cgroups {
    /// The v1 manager: one hierarchy per controller under the root.
    V1(PathBuf),
    /// The v2 manager: the unified hierarchy at the root.
    V2(PathBuf),
    /// No cgroup filesystem skiff knows.
    None,
}

impl Cgroups {
    fn detect() -> Self {
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
fn v1_controllers_joined() -> Vec<String> {
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
fn check_v1(root: &Path, joined: &[String], needs: &[Need]) -> Result<(), LimitError> {
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
fn check_v2(
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
fn swap_accounted(cgroups: &Cgroups) -> bool {
    match cgroups {
        Cgroups::V1(root) => root.join("memory/memory.memsw.limit_in_bytes").exists(),
        Cgroups::V2(_) => true,
        Cgroups::None => false,
    }
}

/// Checks every `--ulimit` against what skiff may set: rootless, no hard limit above skiff's
/// own; as root, no open-file limit above the kernel's `fs.nr_open`.
fn check_ulimits(ulimits: &[Ulimit], rootless: bool) -> Result<(), LimitError> {
    for u in ulimits {
        let Some((_, resource)) = u.rlimit() else {
            continue;
        };
        if rootless {
            let (_, hard) =
                nix::sys::resource::getrlimit(resource).unwrap_or((UNLIMITED, UNLIMITED));
            if u.hard > hard {
                return Err(LimitError::UlimitTooHigh {
                    name: u.name.clone(),
                    value: u.hard,
                    max: hard,
                    who: "skiff running rootless (its own hard limit)",
                    fix: "an unprivileged process cannot raise a hard limit: raise it before \
                          starting skiff (limits.conf, systemd's LimitNOFILE=...), or ask for \
                          less",
                });
            }
        } else if u.name == "nofile" {
            let max = std::fs::read_to_string("/proc/sys/fs/nr_open")
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .unwrap_or(1_048_576);
            if u.hard > max {
                return Err(LimitError::UlimitTooHigh {
                    name: u.name.clone(),
                    value: u.hard,
                    max,
                    who: "the kernel allows (fs.nr_open)",
                    fix: "raise fs.nr_open with sysctl, or ask for less",
                });
            }
        }
    }
    Ok(())
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

fn rlimits(ulimits: &[Ulimit]) -> Result<Vec<PosixRlimit>, LimitError> {
    ulimits
        .iter()
        .filter_map(|u| u.rlimit().map(|(typ, _)| (u, typ)))
        .map(|(u, typ)| {
            built(
                "rlimit",
                PosixRlimitBuilder::default()
                    .typ(typ)
                    .soft(u.soft)
                    .hard(u.hard)
                    .build(),
            )
        })
        .collect()
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

/// The controllers libcontainer's v1 manager puts the container in (a hierarchy of none of
/// them, such as name=systemd, keeps the container in skiff's cgroup, usually the root).
const V1_JOINED: [&str; 12] = [
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "hugetlb",
    "memory",
    "pids",
    "perf_event",
    "blkio",
    "net_prio",
    "net_cls",
    "freezer",
];

/// The v1 hierarchies mounted right under the cgroup root, from /proc/self/mountinfo (as
/// libcontainer will bind each into the container): (directory name, whether the container
/// has a cgroup of its own in it).
fn v1_hierarchies(root: &Path) -> Vec<(String, bool)> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?;
            let mut fields = right.split(' ');
            if fields.next()? != "cgroup" {
                return None;
            }
            let options = fields.nth(1)?;
            let joined = options.split(',').any(|o| V1_JOINED.contains(&o));
            let name = Path::new(mount_point).strip_prefix(root).ok()?.to_str()?;
            (!name.is_empty() && !name.contains('/')).then(|| (name.to_owned(), joined))
        })
        .collect()
}

/// Mounts the container's cgroups read-only at /sys/fs/cgroup, as docker does: on v1 each
/// hierarchy with the container's cgroup at its root (libcontainer binds them; they are made
/// read-only through `readonly_paths`, libcontainer ignoring the mount's `ro` there; a
/// hierarchy the container has no cgroup in would show the host's, and is masked), on v2
/// cgroup2 in a cgroup namespace of the container's own.
fn mount_cgroups(spec: &mut Spec, cgroups: &Cgroups) -> Result<(), LimitError> {
    let (readonly, masked): (Vec<String>, Vec<String>) = match cgroups {
        Cgroups::None => return Ok(()),
        Cgroups::V1(root) => {
            let (joined, other): (Vec<_>, Vec<_>) =
                v1_hierarchies(root).into_iter().partition(|(_, j)| *j);
            let path = |(h, _): (String, bool)| format!("{CGROUP_ROOT}/{h}");
            (
                std::iter::once(CGROUP_ROOT.to_owned())
                    .chain(joined.into_iter().map(path))
                    .collect(),
                other.into_iter().map(path).collect(),
            )
        }
        Cgroups::V2(_) => (Vec::new(), Vec::new()),
    };
    let mount = built(
        "cgroup mount",
        MountBuilder::default()
            .destination(CGROUP_ROOT)
            .typ("cgroup")
            .source("cgroup")
            .options(
                ["nosuid", "noexec", "nodev", "relatime", "ro"]
                    .map(str::to_owned)
                    .to_vec(),
            )
            .build(),
    )?;
    if let Some(mounts) = spec.mounts_mut() {
        // Right after /sys, before any -v or --tmpfs below it.
        let at = mounts
            .iter()
            .position(|m| m.destination() == Path::new("/sys"))
            .map_or(mounts.len(), |i| i + 1);
        mounts.insert(at, mount);
    }
    let Some(linux) = spec.linux_mut() else {
        return Ok(());
    };
    if matches!(cgroups, Cgroups::V2(_)) {
        let mut namespaces = linux.namespaces().clone().unwrap_or_default();
        if !namespaces
            .iter()
            .any(|n| n.typ() == LinuxNamespaceType::Cgroup)
        {
            namespaces.push(built(
                "cgroup namespace",
                LinuxNamespaceBuilder::default()
                    .typ(LinuxNamespaceType::Cgroup)
                    .build(),
            )?);
        }
        linux.set_namespaces(Some(namespaces));
    }
    if !readonly.is_empty() {
        let mut paths = linux.readonly_paths().clone().unwrap_or_default();
        paths.extend(readonly);
        linux.set_readonly_paths(Some(paths));
    }
    if !masked.is_empty() {
        let mut paths = linux.masked_paths().clone().unwrap_or_default();
        paths.extend(masked);
        linux.set_masked_paths(Some(paths));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn flags() -> LimitFlags {
        LimitFlags::default()
    }

    fn host() -> HostCpus {
        HostCpus {
            count: 2,
            available: "0-1".into(),
        }
    }

    #[test]
    fn sizes_parse_as_docker_ram_in_bytes() {
        assert_eq!(parse_size("64m"), Ok(64 << 20));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("64mb"), Ok(64 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        assert_eq!(parse_size("16 k"), Ok(16 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4096b"), Ok(4096));
        for bad in [
            "", "m", "-1", "64x", "1.g", ".5g", "64 m b", "64mm", "1..2m",
        ] {
            assert_eq!(
                parse_size(bad),
                Err(format!("invalid size: '{bad}'")),
                "{bad}"
            );
        }
    }

    #[test]
    fn cpus_parse_as_rationals() {
        assert_eq!(parse_cpus("1.5"), Ok(1_500_000_000));
        assert_eq!(parse_cpus("0.5"), Ok(500_000_000));
        assert_eq!(parse_cpus(".25"), Ok(250_000_000));
        assert_eq!(parse_cpus("2"), Ok(2_000_000_000));
        assert_eq!(parse_cpus("3/2"), Ok(1_500_000_000));
        assert_eq!(parse_cpus("-1"), Ok(-1_000_000_000));
        assert_eq!(
            parse_cpus("0.0000000001"),
            Err("value is too precise".into())
        );
        assert_eq!(
            parse_cpus("abc"),
            Err("failed to parse abc as a rational number".into())
        );
    }

    #[test]
    fn flags_parse_with_docker_messages() {
        let l = Limits::from_flags(&LimitFlags {
            memory: Some("64m".into()),
            memory_swap: Some("-1".into()),
            cpus: Some("1.5".into()),
            cpu_shares: Some("512".into()),
            cpuset_cpus: Some("0".into()),
            pids_limit: Some("32".into()),
            ulimits: vec![
                "nofile=1024:2048".into(),
                "nproc=100".into(),
                "nofile=10".into(),
            ],
            shm_size: Some("32m".into()),
            ..flags()
        })
        .unwrap();
        assert_eq!(l.memory, Some(64 << 20));
        assert_eq!(l.memory_swap, Some(-1));
        assert_eq!(l.nano_cpus, Some(1_500_000_000));
        assert_eq!(l.cpu_shares, Some(512));
        assert_eq!(l.pids_limit, Some(32));
        assert_eq!(l.shm_size, Some(32 << 20));
        // The last --ulimit of a name wins.
        assert_eq!(
            l.ulimits,
            [
                Ulimit {
                    name: "nproc".into(),
                    soft: 100,
                    hard: 100
                },
                Ulimit {
                    name: "nofile".into(),
                    soft: 10,
                    hard: 10
                }
            ]
        );
        let err = Limits::from_flags(&LimitFlags {
            memory: Some("lots".into()),
            ..flags()
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid argument \"lots\" for \"-m, --memory\" flag: invalid size: 'lots'"
        );
        let err = Limits::from_flags(&LimitFlags {
            pids_limit: Some("x".into()),
            ..flags()
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid argument \"x\" for \"--pids-limit\" flag: strconv.ParseInt: parsing \"x\": \
             invalid syntax"
        );
        // Zero and unlimited values are no limit; shares are clamped.
        let l = Limits::from_flags(&LimitFlags {
            memory: Some("0".into()),
            pids_limit: Some("-1".into()),
            cpu_shares: Some("1".into()),
            shm_size: Some("0".into()),
            ..flags()
        })
        .unwrap();
        assert_eq!(
            l,
            Limits {
                cpu_shares: Some(2),
                ..Limits::default()
            }
        );
        assert_eq!(
            Limits::from_flags(&LimitFlags {
                shm_size: Some("-1".into()),
                ..flags()
            }),
            Err(LimitError::InvalidFlag {
                flag: "--shm-size",
                value: "-1".into(),
                reason: "invalid size: '-1'".into()
            })
        );
    }

    #[test]
    fn ulimits_parse_as_docker_parses_them() {
        assert_eq!(
            Ulimit::parse("nofile=1024:2048").unwrap(),
            Ulimit {
                name: "nofile".into(),
                soft: 1024,
                hard: 2048
            }
        );
        assert_eq!(Ulimit::parse("core=-1").unwrap().hard, UNLIMITED);
        let msg = |arg: &str| Ulimit::parse(arg).unwrap_err().to_string();
        assert_eq!(
            msg("nofile"),
            "invalid argument \"nofile\" for \"--ulimit\" flag: invalid ulimit argument: nofile"
        );
        assert!(msg("as=1").ends_with("invalid ulimit type: as"));
        assert!(
            msg("nofile=2048:1024").ends_with(
                "ulimit soft limit must be less than or equal to hard limit: 2048 > 1024"
            )
        );
        assert!(msg("nofile=1:2:3").contains("too many limit value arguments"));
        assert!(msg("nofile=x").contains("invalid ulimit soft value x"));
    }

    #[test]
    fn docker_daemon_checks() {
        let check = |l: Limits| l.validate_against(&host());
        let mem = |m: i64| Limits {
            memory: Some(m),
            ..Limits::default()
        };
        assert_eq!(check(mem(4 << 20)), Err(LimitError::MemoryTooSmall));
        assert_eq!(
            LimitError::MemoryTooSmall.to_string(),
            "Minimum memory limit allowed is 6MB"
        );
        assert_eq!(check(mem(MIN_MEMORY)), Ok(()));
        assert_eq!(
            check(Limits {
                memory_swap: Some(32 << 20),
                ..mem(64 << 20)
            }),
            Err(LimitError::SwapBelowMemory)
        );
        assert_eq!(
            check(Limits {
                memory_swap: Some(-1),
                ..mem(64 << 20)
            }),
            Ok(())
        );
        assert_eq!(
            check(Limits {
                memory_swap: Some(64 << 20),
                ..Limits::default()
            }),
            Err(LimitError::SwapWithoutMemory)
        );
        assert_eq!(
            check(Limits {
                memory_reservation: Some(128 << 20),
                ..mem(64 << 20)
            }),
            Err(LimitError::MemoryBelowReservation)
        );
        assert_eq!(
            check(Limits {
                memory_reservation: Some(1 << 20),
                ..Limits::default()
            }),
            Err(LimitError::ReservationTooSmall)
        );
        let cpus = |nano: i64| Limits {
            nano_cpus: Some(nano),
            ..Limits::default()
        };
        assert_eq!(check(cpus(2_000_000_000)), Ok(()));
        let err = check(cpus(2_500_000_000)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "range of CPUs is from 0.01 to 2.00, as there are only 2 CPUs available"
        );
        assert!(check(cpus(-1_000_000_000)).is_err());
        let cpuset = |s: &str| Limits {
            cpuset_cpus: Some(s.into()),
            ..Limits::default()
        };
        assert_eq!(check(cpuset("0-1")), Ok(()));
        assert_eq!(check(cpuset("1,0")), Ok(()));
        assert_eq!(
            check(cpuset("0-3")).unwrap_err().to_string(),
            "Requested CPUs are not available - requested 0-3, available: 0-1"
        );
        assert_eq!(
            check(cpuset("0-x")).unwrap_err().to_string(),
            "Invalid value 0-x for cpuset cpus"
        );
    }

    #[test]
    fn resources_are_docker_s() {
        let l = Limits {
            memory: Some(16 << 20),
            nano_cpus: Some(500_000_000),
            cpu_shares: Some(512),
            cpuset_cpus: Some("0".into()),
            pids_limit: Some(8),
            ..Limits::default()
        };
        let r = l.resources(true).unwrap().unwrap();
        let m = r.memory().as_ref().unwrap();
        assert_eq!(m.limit(), Some(16 << 20));
        // docker's default swap: twice the memory, where swap is accounted.
        assert_eq!(m.swap(), Some(32 << 20));
        let c = r.cpu().as_ref().unwrap();
        assert_eq!((c.quota(), c.period()), (Some(50_000), Some(100_000)));
        assert_eq!(c.shares(), Some(512));
        assert_eq!(c.cpus().as_deref(), Some("0"));
        assert_eq!(r.pids().as_ref().unwrap().limit(), 8);
        assert_eq!(r.devices(), &None);
        let no_swap = l.resources(false).unwrap().unwrap();
        assert_eq!(no_swap.memory().as_ref().unwrap().swap(), None);
        assert_eq!(Limits::default().resources(true).unwrap(), None);
        // --ulimit and --shm-size need no cgroup.
        let rlimits_only = Limits {
            ulimits: vec![Ulimit::parse("nofile=10").unwrap()],
            shm_size: Some(1 << 20),
            ..Limits::default()
        };
        assert!(!rlimits_only.needs_cgroup());
        assert!(rlimits_only.needs().is_empty());
    }

    fn need(flag: &'static str, controller: &'static str, v1_file: Option<&'static str>) -> Need {
        Need {
            flag,
            controller,
            v1_file,
        }
    }

    #[test]
    fn v1_refuses_a_missing_hierarchy_or_file() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("memory")).unwrap();
        std::fs::write(root.path().join("memory/memory.limit_in_bytes"), "").unwrap();
        let joined = vec!["memory".to_owned()];
        let mem = need("--memory", "memory", Some("memory.limit_in_bytes"));
        assert_eq!(check_v1(root.path(), &joined, &[mem]), Ok(()));
        let err = check_v1(root.path(), &joined, &[need("--pids-limit", "pids", None)])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "--pids-limit cannot be enforced: the cgroup v1 pids controller is not mounted at"
            ),
            "{err}"
        );
        let err = check_v1(
            root.path(),
            &joined,
            &[need(
                "--memory-swap",
                "memory",
                Some("memory.memsw.limit_in_bytes"),
            )],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("swapaccount=1"), "{err}");
    }

    #[test]
    fn v2_refuses_a_controller_not_available() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), "hugetlb\n").unwrap();
        std::fs::write(root.path().join("cgroup.subtree_control"), "").unwrap();
        let mem = need("--memory", "memory", None);
        let err = check_v2(root.path(), Path::new("/skiff/x"), &[mem], true)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "--memory cannot be enforced: the memory controller is not available in \
                 skiff's own cgroup (rootless, cgroup v2)"
            ),
            "{err}"
        );
        assert!(err.contains("it has: hugetlb"), "{err}");
        assert!(err.contains("or run skiff as root"), "{err}");
        // Available: enabled in subtree_control of the deepest existing ancestor.
        std::fs::create_dir(root.path().join("skiff")).unwrap();
        std::fs::write(root.path().join("skiff/cgroup.controllers"), "memory pids").unwrap();
        std::fs::write(root.path().join("skiff/cgroup.subtree_control"), "").unwrap();
        assert_eq!(
            check_v2(root.path(), Path::new("/skiff/x"), &[mem], false),
            Ok(())
        );
        assert_eq!(
            std::fs::read_to_string(root.path().join("skiff/cgroup.subtree_control")).unwrap(),
            "+memory"
        );
    }

    #[test]
    fn the_spec_gets_rlimits_shm_and_cgroup_mount() {
        let mut spec = Spec::default();
        let limits = Limits {
            ulimits: vec![Ulimit::parse("nofile=1024:2048").unwrap()],
            shm_size: Some(32 << 20),
            ..Limits::default()
        };
        let rl = rlimits(&limits.ulimits).unwrap();
        assert_eq!(rl[0].typ(), PosixRlimitType::RlimitNofile);
        assert_eq!((rl[0].soft(), rl[0].hard()), (1024, 2048));
        set_shm_size(&mut spec, 32 << 20);
        mount_cgroups(&mut spec, &Cgroups::V2(CGROUP_ROOT.into())).unwrap();
        let mounts = spec.mounts().as_ref().unwrap();
        let shm = mounts
            .iter()
            .find(|m| m.destination() == Path::new("/dev/shm"))
            .unwrap();
        assert!(
            shm.options()
                .iter()
                .flatten()
                .any(|o| o == &format!("size={}", 32 << 20))
        );
        let sys = mounts
            .iter()
            .position(|m| m.destination() == Path::new("/sys"))
            .unwrap();
        assert_eq!(mounts[sys + 1].typ().as_deref(), Some("cgroup"));
        assert!(
            mounts[sys + 1]
                .options()
                .iter()
                .flatten()
                .any(|o| o == "ro")
        );
        let linux = spec.linux().as_ref().unwrap();
        assert!(
            linux
                .namespaces()
                .iter()
                .flatten()
                .any(|n| n.typ() == LinuxNamespaceType::Cgroup)
        );
    }
}
