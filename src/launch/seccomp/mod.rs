//! Seccomp as docker applies it: docker's default profile (or a profile in docker's format)
//! resolved for the container's capabilities, architecture and kernel; compiled once per
//! resolved filter with libseccomp and cached in the store; loaded by skiff's own executor in
//! the container's init right before execve.
//!
//! Flow: [`resolve`] (spec building) puts the resolved filter in the runtime spec's
//! `linux.seccomp`; [`prepare`] (before the spec is written to the bundle) compiles it or takes
//! it from the cache, moves it out of the spec (libcontainer is built without libseccomp) and
//! gives the init the capabilities it needs to load it; [`Loader::apply`] loads it in the init.

mod compile;
mod default;
mod load;
pub(crate) mod profile;

use std::path::{Path, PathBuf};

use caps::CapsHashSet;
use oci_spec::runtime::{Capabilities, Capability, LinuxSeccomp, Spec};

pub(crate) use load::Loader;

use super::spec::Seccomp;

/// Failures to build or apply a seccomp filter (the run fails with 125: never a silent run
/// without the filter).
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// A profile file cannot be read.
    #[error("reading seccomp profile {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A profile file is not in docker's format.
    #[error("seccomp profile {path} is not a docker seccomp profile: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where and why.
        #[source]
        source: serde_json::Error,
    },
    /// A profile says something skiff cannot apply.
    #[error("seccomp profile {profile}: {reason}")]
    Invalid {
        /// The file, or "docker's default profile".
        profile: String,
        /// What is wrong.
        reason: String,
    },
    /// libseccomp could not compile the filter.
    #[error("compiling the seccomp filter: {0}")]
    Compile(String),
}

impl SeccompError {
    /// The profile at fault (a file, or docker's default) and the cause without it, for an
    /// error that names the profile once.
    pub(crate) fn profile_and_cause(&self) -> (String, String) {
        match self {
            Self::Read { path, source } => (path.display().to_string(), source.to_string()),
            Self::Parse { path, source } => (
                path.display().to_string(),
                format!("not a docker seccomp profile: {source}"),
            ),
            Self::Invalid { profile, reason } => (profile.clone(), reason.clone()),
            other => (DEFAULT_NAME.into(), other.to_string()),
        }
    }
}

/// The name error messages give docker's default profile.
pub(crate) const DEFAULT_NAME: &str = "docker's default profile";

/// The filter for `choice` and a container whose bounding set is `caps`: `None` for
/// `seccomp=unconfined` (what `--privileged` asks for too) and for a profile that asks for
/// none; else the profile resolved for `caps`, this architecture and this kernel.
pub(crate) fn resolve(
    choice: &Seccomp,
    caps: &[Capability],
) -> Result<Option<LinuxSeccomp>, SeccompError> {
    let caps: Vec<String> = caps.iter().map(|c| format!("CAP_{c}")).collect();
    let host = profile::Host::current();
    match choice {
        Seccomp::Unconfined => Ok(None),
        Seccomp::Default => {
            default::profile()
                .resolve(&caps, &host)
                .map_err(|reason| SeccompError::Invalid {
                    profile: DEFAULT_NAME.into(),
                    reason,
                })
        }
        Seccomp::Profile(path) => {
            let text = std::fs::read(path).map_err(|source| SeccompError::Read {
                path: path.clone(),
                source,
            })?;
            let parsed: profile::Profile =
                serde_json::from_slice(&text).map_err(|source| SeccompError::Parse {
                    path: path.clone(),
                    source,
                })?;
            parsed
                .resolve(&caps, &host)
                .map_err(|reason| SeccompError::Invalid {
                    profile: path.display().to_string(),
                    reason,
                })
        }
    }
}

/// The store's cache of compiled filters, from a run directory `<root>/runs/<id>`.
fn cache_dir(bundle: &Path) -> PathBuf {
    let root = bundle.parent().and_then(Path::parent).unwrap_or(bundle);
    root.join("cache").join("seccomp")
}

fn to_caps(set: Option<&Capabilities>) -> CapsHashSet {
    set.into_iter()
        .flatten()
        .filter_map(|c| format!("CAP_{c}").parse::<caps::Capability>().ok())
        .collect()
}

/// The capabilities the init needs to load a filter without no_new_privileges.
const LOADING_CAPS: [Capability; 2] = [Capability::SysAdmin, Capability::Setpcap];

/// Prepares the spec's seccomp filter for skiff's executor, before the spec is written to the
/// bundle (once: libcontainer reads it from there): compiles the filter (or reads it from the
/// cache of the store that holds the run directory `bundle`), removes it from the spec
/// (libcontainer is built without libseccomp) and, unless no_new_privileges is set, gives the
/// init the capabilities needed to load it. `None` when the spec has no filter.
pub(crate) fn prepare(spec: &mut Spec, bundle: &Path) -> Result<Option<Loader>, SeccompError> {
    let Some(seccomp) = spec
        .linux_mut()
        .as_mut()
        .and_then(|l| l.seccomp_mut().take())
    else {
        return Ok(None);
    };
    let program = compile::program(&seccomp, &cache_dir(bundle))?;
    let mut restore = None;
    if let Some(process) = spec.process_mut()
        && process.no_new_privileges() != Some(true)
        && let Some(mut caps) = process.capabilities().clone()
    {
        restore = Some(load::Restore {
            bounding: to_caps(caps.bounding().as_ref()),
            effective: to_caps(caps.effective().as_ref()),
            permitted: to_caps(caps.permitted().as_ref()),
            inheritable: to_caps(caps.inheritable().as_ref()),
        });
        let add = |set: Option<&Capabilities>| -> Capabilities {
            set.into_iter()
                .flatten()
                .copied()
                .chain(LOADING_CAPS)
                .collect()
        };
        caps.set_bounding(Some(add(caps.bounding().as_ref())));
        caps.set_permitted(Some(add(caps.permitted().as_ref())));
        caps.set_effective(Some(add(caps.effective().as_ref())));
        process.set_capabilities(Some(caps));
    }
    Ok(Some(Loader { program, restore }))
}

#[cfg(test)]
mod tests;
