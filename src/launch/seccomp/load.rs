//! Loading the compiled filter in the container's init, right before execve.
//!
//! Without no_new_privileges the kernel loads a filter only for a task with CAP_SYS_ADMIN, which
//! a docker-default container does not have. So the bundle gives the init CAP_SYS_ADMIN (and
//! CAP_SETPCAP, to shrink the bounding set) for the time being; here the filter is loaded, then
//! both are dropped from every set the payload would not have had, so that it starts with
//! exactly the container's capabilities.

use caps::{CapSet, CapsHashSet};

use super::compile::Program;

/// The capability sets the payload must start with.
#[derive(Debug, Clone)]
pub(crate) struct Restore {
    pub(crate) bounding: CapsHashSet,
    pub(crate) effective: CapsHashSet,
    pub(crate) permitted: CapsHashSet,
    pub(crate) inheritable: CapsHashSet,
}

/// What the init does before execve.
#[derive(Debug, Clone)]
pub(crate) struct Loader {
    /// The filter.
    pub(crate) program: Program,
    /// The real capability sets, when temporary ones were given for loading.
    pub(crate) restore: Option<Restore>,
}

const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;

impl Loader {
    /// Loads the filter, then drops the temporary capabilities. On error the caller must not
    /// run the payload.
    pub(crate) fn apply(&self) -> Result<(), String> {
        let instructions = &self.program.instructions;
        let prog = libc::sock_fprog {
            len: u16::try_from(instructions.len())
                .map_err(|_| format!("{} instructions is too long", instructions.len()))?,
            filter: instructions.as_ptr().cast_mut(),
        };
        // SAFETY: `prog` points at `len` initialised instructions that outlive the call; the
        // kernel copies them and does not keep the pointer.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                SECCOMP_SET_MODE_FILTER,
                0 as libc::c_ulong,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc != 0 {
            return Err(format!(
                "loading the filter: {}",
                std::io::Error::last_os_error()
            ));
        }
        if let Some(restore) = &self.restore {
            restore.apply().map_err(|e| {
                format!(
                    "dropping the capabilities given for loading the filter: {e} (the profile \
                     must allow capset and prctl)"
                )
            })?;
        }
        Ok(())
    }
}

impl Restore {
    /// Drops from the bounding set what the payload may not have (needs CAP_SETPCAP, still
    /// effective), then sets effective, permitted and inheritable (effective first: it must
    /// stay within permitted).
    fn apply(&self) -> Result<(), caps::errors::CapsError> {
        for cap in caps::read(None, CapSet::Bounding)? {
            if !self.bounding.contains(&cap) {
                caps::drop(None, CapSet::Bounding, cap)?;
            }
        }
        caps::set(None, CapSet::Effective, &self.effective)?;
        caps::set(None, CapSet::Permitted, &self.permitted)?;
        caps::set(None, CapSet::Inheritable, &self.inheritable)?;
        Ok(())
    }
}
