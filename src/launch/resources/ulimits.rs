//! `--ulimit NAME=SOFT[:HARD]`: parsed with docker's names and messages, checked against what
//! skiff may set, and turned into the process's rlimits.

use oci_spec::runtime::{PosixRlimit, PosixRlimitBuilder, PosixRlimitType};

use super::{LimitError, built};

/// `RLIM_INFINITY`, what docker's `-1` means in a `--ulimit`.
pub(super) const UNLIMITED: u64 = u64::MAX;

/// One `--ulimit NAME=SOFT[:HARD]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

/// Checks every `--ulimit` against what skiff may set: rootless, no hard limit above skiff's
/// own; as root, no open-file limit above the kernel's `fs.nr_open`.
pub(super) fn check_ulimits(ulimits: &[Ulimit], rootless: bool) -> Result<(), LimitError> {
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

pub(super) fn rlimits(ulimits: &[Ulimit]) -> Result<Vec<PosixRlimit>, LimitError> {
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
