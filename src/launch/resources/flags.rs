//! docker's limit flags parsed as docker's CLI parses them: sizes, `--cpus` as a rational
//! number, integers with Go's messages, and [`Limits::from_flags`].

use super::{LimitError, Limits, Ulimit};

/// cgroup v1's range of cpu.shares (docker clamps to it).
const MIN_CPU_SHARES: u64 = 2;
const MAX_CPU_SHARES: u64 = 262_144;

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
}
