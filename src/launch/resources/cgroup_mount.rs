//! The container's own cgroups, read-only at /sys/fs/cgroup as docker shows them: the v1
//! hierarchies it has a cgroup in (the others masked), or cgroup2 in a cgroup namespace.

use std::path::Path;

use oci_spec::runtime::{LinuxNamespaceBuilder, LinuxNamespaceType, MountBuilder, Spec};

use super::host::Cgroups;
use super::{CGROUP_ROOT, LimitError, built};

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
pub(super) fn mount_cgroups(spec: &mut Spec, cgroups: &Cgroups) -> Result<(), LimitError> {
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
