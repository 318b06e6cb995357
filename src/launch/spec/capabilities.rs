//! Capabilities as docker sets them: the default set, `--cap-add`/`--cap-drop` names, the
//! process's capability sets, and what skiff itself holds.

use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities, LinuxCapabilitiesBuilder};

use super::{SpecError, built};

/// docker's default capability set, in docker's order.
pub const DEFAULT_CAPS: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Every capability the kernel may know, for `--cap-add ALL`.
pub(super) const ALL_CAPS: [Capability; 41] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::LinuxImmutable,
    Capability::NetBindService,
    Capability::NetBroadcast,
    Capability::NetAdmin,
    Capability::NetRaw,
    Capability::IpcLock,
    Capability::IpcOwner,
    Capability::SysModule,
    Capability::SysRawio,
    Capability::SysChroot,
    Capability::SysPtrace,
    Capability::SysPacct,
    Capability::SysAdmin,
    Capability::SysBoot,
    Capability::SysNice,
    Capability::SysResource,
    Capability::SysTime,
    Capability::SysTtyConfig,
    Capability::Mknod,
    Capability::Lease,
    Capability::AuditWrite,
    Capability::AuditControl,
    Capability::Setfcap,
    Capability::MacOverride,
    Capability::MacAdmin,
    Capability::Syslog,
    Capability::WakeAlarm,
    Capability::BlockSuspend,
    Capability::AuditRead,
    Capability::Perfmon,
    Capability::Bpf,
    Capability::CheckpointRestore,
];

/// A `--cap-add`/`--cap-drop` argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapArg {
    /// `ALL`.
    All,
    /// One capability.
    One(Capability),
}

/// Parses a capability name as docker does: `NET_ADMIN` or `CAP_NET_ADMIN`, in any case, or
/// `ALL`.
pub fn parse_capability(name: &str) -> Result<CapArg, SpecError> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    if bare == "ALL" {
        return Ok(CapArg::All);
    }
    bare.parse::<Capability>()
        .map(CapArg::One)
        .map_err(|_| SpecError::UnknownCapability(name.to_owned()))
}

/// The capability set: docker's defaults with `--cap-drop` then `--cap-add` applied, in
/// docker's order with added ones last.
pub fn capabilities(add: &[String], drop: &[String]) -> Result<Vec<Capability>, SpecError> {
    let parse = |names: &[String]| -> Result<Vec<CapArg>, SpecError> {
        names.iter().map(|n| parse_capability(n)).collect()
    };
    let add = parse(add)?;
    let drop = parse(drop)?;
    let mut caps: Vec<Capability> = if drop.contains(&CapArg::All) {
        Vec::new()
    } else {
        DEFAULT_CAPS
            .into_iter()
            .filter(|c| !drop.contains(&CapArg::One(*c)))
            .collect()
    };
    let extra: Vec<Capability> = if add.contains(&CapArg::All) {
        ALL_CAPS.to_vec()
    } else {
        add.iter()
            .filter_map(|a| match a {
                CapArg::One(c) => Some(*c),
                CapArg::All => None,
            })
            .collect()
    };
    for c in extra {
        if !caps.contains(&c) {
            caps.push(c);
        }
    }
    Ok(caps)
}

/// The process's capabilities: `caps` bounding; effective and permitted too for root (like
/// docker, a non-root user keeps the bounding set but starts without effective caps).
pub(super) fn process_capabilities(
    caps: &[Capability],
    uid: u32,
) -> Result<LinuxCapabilities, SpecError> {
    let bounding: Capabilities = caps.iter().copied().collect();
    let effective = if uid == 0 {
        bounding.clone()
    } else {
        Capabilities::new()
    };
    built(
        "capabilities",
        LinuxCapabilitiesBuilder::default()
            .bounding(bounding)
            .permitted(effective.clone())
            .effective(effective)
            .inheritable(Capabilities::new())
            .ambient(Capabilities::new())
            .build(),
    )
}

/// The kernel's number of a capability: its index in [`ALL_CAPS`], which is in the kernel's
/// order.
pub(super) fn cap_bit(c: Capability) -> u32 {
    ALL_CAPS.iter().position(|x| *x == c).unwrap_or(63) as u32
}

/// The capabilities this process may pass on: its bounding set (`CapBnd` in
/// /proc/self/status), every one when that cannot be read.
pub(super) fn held_capabilities() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX)
}
