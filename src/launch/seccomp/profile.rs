//! docker's seccomp profile format (`docker run --security-opt seccomp=PROFILE.json`) and its
//! resolution for one container, as moby's `setupSeccomp` does it: the architecture map picks the
//! host's architectures, and a rule applies only when its `includes` hold (every listed
//! capability in the container's bounding set, the host's architecture listed, the kernel at
//! least `minKernel`) and its `excludes` do not (no listed capability, architecture not listed,
//! kernel older than `minKernel`).

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction as Action, LinuxSeccompArgBuilder, LinuxSeccompBuilder,
    LinuxSeccompOperator as Op, LinuxSyscallBuilder,
};
use serde::{Deserialize, Deserializer};

/// A profile in docker's format.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Profile {
    /// What a syscall no rule matches gets (`SCMP_ACT_ERRNO` in docker's default).
    #[serde(default)]
    pub default_action: Option<Action>,
    /// The errno of an `SCMP_ACT_ERRNO` default action (EPERM when absent).
    #[serde(default)]
    pub default_errno_ret: Option<u32>,
    /// Architectures the filter accepts (exclusive with `arch_map`).
    #[serde(default, deserialize_with = "or_default")]
    pub architectures: Vec<Arch>,
    /// Per native architecture, the architectures the filter accepts.
    #[serde(default, deserialize_with = "or_default")]
    pub arch_map: Vec<ArchMap>,
    /// The rules, in order.
    #[serde(default, deserialize_with = "or_default")]
    pub syscalls: Vec<Rule>,
}

impl From<Action> for Profile {
    fn from(action: Action) -> Self {
        Self {
            default_action: Some(action),
            ..Self::default()
        }
    }
}

/// One entry of `archMap`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ArchMap {
    /// The native architecture this entry is for.
    pub architecture: Arch,
    /// The other architectures its binaries may use (x86 and x32 on x86_64).
    #[serde(default, deserialize_with = "or_default")]
    pub sub_architectures: Vec<Arch>,
}

/// One rule: syscalls, the action they get, and the conditions.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Rule {
    /// The syscalls.
    #[serde(default, deserialize_with = "or_default")]
    pub names: Vec<String>,
    /// One syscall (the older form of `names`).
    #[serde(default)]
    pub name: Option<String>,
    /// Their action.
    pub action: Action,
    /// The errno of `SCMP_ACT_ERRNO` (EPERM when absent).
    #[serde(default)]
    pub errno_ret: Option<u32>,
    /// Argument conditions, all of which must hold.
    #[serde(default, deserialize_with = "or_default")]
    pub args: Vec<Arg>,
    /// Conditions for the rule to apply.
    #[serde(default, deserialize_with = "or_default")]
    pub includes: Filter,
    /// Conditions for the rule not to apply.
    #[serde(default, deserialize_with = "or_default")]
    pub excludes: Filter,
}

/// One argument condition.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Arg {
    /// The argument (0-5).
    pub index: u32,
    /// The value compared (the mask for `SCMP_CMP_MASKED_EQ`).
    pub value: u64,
    /// The value the masked argument must equal, for `SCMP_CMP_MASKED_EQ`.
    #[serde(default)]
    pub value_two: u64,
    /// The comparison.
    pub op: Op,
}

/// Capabilities, architectures and kernel version a rule depends on.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Filter {
    /// Capability names (`CAP_SYS_ADMIN`).
    #[serde(default, deserialize_with = "or_default")]
    pub caps: Vec<String>,
    /// Architectures by docker's (Go) names: amd64, x86, x32, arm64, arm, s390x…
    #[serde(default, deserialize_with = "or_default")]
    pub arches: Vec<String>,
    /// A kernel version, `MAJOR.MINOR[.PATCH]`.
    #[serde(default)]
    pub min_kernel: Option<String>,
}

/// `null` reads as the default, as Go's encoding/json reads it.
fn or_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// What a profile is resolved against.
#[derive(Debug, Clone)]
pub(crate) struct Host {
    /// docker's name of the native architecture (amd64, arm64…).
    pub arch: &'static str,
    /// The native architecture as seccomp names it.
    pub native: Option<Arch>,
    /// The running kernel's version.
    pub kernel: (u64, u64, u64),
}

impl Host {
    /// This machine.
    pub(crate) fn current() -> Self {
        let (arch, native) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", Some(Arch::ScmpArchX86_64)),
            "x86" => ("x86", Some(Arch::ScmpArchX86)),
            "aarch64" => ("arm64", Some(Arch::ScmpArchAarch64)),
            "arm" => ("arm", Some(Arch::ScmpArchArm)),
            "s390x" => ("s390x", Some(Arch::ScmpArchS390x)),
            "powerpc64" => ("ppc64le", Some(Arch::ScmpArchPpc64le)),
            "riscv64" => ("riscv64", Some(Arch::ScmpArchRiscv64)),
            other => (other, None),
        };
        let kernel = nix::sys::utsname::uname()
            .ok()
            .and_then(|u| kernel_version(&u.release().to_string_lossy()))
            .unwrap_or((0, 0, 0));
        Self {
            arch,
            native,
            kernel,
        }
    }
}

/// `MAJOR.MINOR[.PATCH][-suffix]` → (major, minor, patch).
pub(crate) fn kernel_version(release: &str) -> Option<(u64, u64, u64)> {
    let numeric = release
        .split(|c: char| c != '.' && !c.is_ascii_digit())
        .next()?;
    let mut parts = numeric.split('.').map(str::parse::<u64>);
    let major = parts.next()?.ok()?;
    let minor = parts.next()?.ok()?;
    let patch = match parts.next() {
        Some(p) => p.ok()?,
        None => 0,
    };
    Some((major, minor, patch))
}

/// `CAP_SYS_ADMIN`, `sys_admin`… → `CAP_SYS_ADMIN`.
pub(crate) fn cap_name(name: &str) -> String {
    let upper = name.trim().to_ascii_uppercase();
    if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    }
}

impl Filter {
    fn kernel_at_least(&self, host: &Host) -> Result<Option<bool>, String> {
        match &self.min_kernel {
            None => Ok(None),
            Some(v) => match kernel_version(v) {
                Some(min) => Ok(Some(host.kernel >= min)),
                None => Err(format!("invalid minKernel {v:?}")),
            },
        }
    }
}

impl Rule {
    /// Whether the rule applies to a container with bounding set `caps` on `host`.
    fn applies(&self, caps: &[String], host: &Host) -> Result<bool, String> {
        let has = |c: &String| caps.contains(&cap_name(c));
        let ex = &self.excludes;
        if ex.arches.iter().any(|a| a == host.arch)
            || ex.caps.iter().any(has)
            || ex.kernel_at_least(host)? == Some(true)
        {
            return Ok(false);
        }
        let inc = &self.includes;
        Ok(
            (inc.arches.is_empty() || inc.arches.iter().any(|a| a == host.arch))
                && inc.caps.iter().all(has)
                && inc.kernel_at_least(host)? != Some(false),
        )
    }
}

fn built<T>(r: Result<T, oci_spec::OciSpecError>) -> Result<T, String> {
    r.map_err(|e| e.to_string())
}

impl Profile {
    /// The filter for a container whose bounding set is `caps` (any spelling of the names), on
    /// `host`; `None` when the profile asks for no filter (no default action and no rules, as
    /// docker reads it).
    pub(crate) fn resolve(
        &self,
        caps: &[String],
        host: &Host,
    ) -> Result<Option<LinuxSeccomp>, String> {
        let caps: Vec<String> = caps.iter().map(|c| cap_name(c)).collect();
        let Some(default_action) = self.default_action else {
            if self.syscalls.is_empty() {
                return Ok(None);
            }
            return Err("defaultAction is missing".into());
        };
        check_action(default_action)?;
        if !self.architectures.is_empty() && !self.arch_map.is_empty() {
            return Err(
                "'architectures' and 'archMap' were both given: use one or the other".into(),
            );
        }
        let mut arches = self.architectures.clone();
        if let Some(native) = host.native
            && let Some(entry) = self.arch_map.iter().find(|m| m.architecture == native)
        {
            arches.push(entry.architecture);
            arches.extend(entry.sub_architectures.iter().copied());
        }
        let mut syscalls = Vec::new();
        for (i, rule) in self.syscalls.iter().enumerate() {
            let names = match (&rule.name, rule.names.is_empty()) {
                (Some(_), false) => {
                    return Err(format!(
                        "syscalls[{i}] gives both 'name' and 'names': use one or the other"
                    ));
                }
                (Some(name), true) => vec![name.clone()],
                (None, _) => rule.names.clone(),
            };
            check_action(rule.action).map_err(|e| format!("syscalls[{i}]: {e}"))?;
            if !rule
                .applies(&caps, host)
                .map_err(|e| format!("syscalls[{i}]: {e}"))?
                || names.is_empty()
            {
                continue;
            }
            if let Some(arg) = rule.args.iter().find(|a| a.index > 5) {
                return Err(format!(
                    "syscalls[{i}]: argument index {} is out of range (0 to 5)",
                    arg.index
                ));
            }
            let args = rule
                .args
                .iter()
                .map(|a| {
                    built(
                        LinuxSeccompArgBuilder::default()
                            .index(a.index as usize)
                            .value(a.value)
                            .value_two(a.value_two)
                            .op(a.op)
                            .build(),
                    )
                })
                .collect::<Result<Vec<_>, _>>()?;
            let mut b = LinuxSyscallBuilder::default()
                .names(names)
                .action(rule.action);
            if let Some(errno) = rule.errno_ret {
                b = b.errno_ret(errno);
            }
            if !args.is_empty() {
                b = b.args(args);
            }
            syscalls.push(built(b.build())?);
        }
        let mut b = LinuxSeccompBuilder::default()
            .default_action(default_action)
            .syscalls(syscalls);
        if let Some(errno) = self.default_errno_ret {
            b = b.default_errno_ret(errno);
        }
        if !arches.is_empty() {
            b = b.architectures(arches);
        }
        built(b.build()).map(Some)
    }
}

/// Refuses the actions skiff cannot honour.
fn check_action(action: Action) -> Result<(), String> {
    match action {
        Action::ScmpActNotify => Err(
            "SCMP_ACT_NOTIFY needs a seccomp agent (listenerPath), which skiff does not support"
                .into(),
        ),
        _ => Ok(()),
    }
}

/// The names of the syscalls a resolved filter gives `action`, for tests.
#[cfg(test)]
pub(crate) fn names_with(seccomp: &LinuxSeccomp, action: Action) -> Vec<String> {
    seccomp
        .syscalls()
        .iter()
        .flatten()
        .filter(|s| s.action() == action && s.args().is_none())
        .flat_map(|s| s.names().iter().cloned())
        .collect()
}
