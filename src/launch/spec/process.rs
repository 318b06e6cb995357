//! The container's OCI process: argv, environment, user, capabilities (checked against what
//! skiff holds), no_new_privileges.

use oci_spec::runtime::{Process, ProcessBuilder, UserBuilder};

use super::capabilities::{
    ALL_CAPS, CapArg, cap_bit, capabilities, held_capabilities, parse_capability,
    process_capabilities,
};
use super::{RunOptions, SpecError, User, built};

/// An exec's process: as the container's, for the exec's command, environment, directory and
/// user (`options` carries the container's capability flags and the exec's `--privileged`).
pub fn exec_process(
    argv: Vec<String>,
    env: Vec<String>,
    cwd: &str,
    user: &User,
    options: &RunOptions,
) -> Result<Process, SpecError> {
    process(argv, env, cwd, user, options)
}

/// The container's process.
pub(super) fn process(
    argv: Vec<String>,
    env: Vec<String>,
    cwd: &str,
    user: &User,
    options: &RunOptions,
) -> Result<Process, SpecError> {
    let mut caps = capabilities(&options.cap_add, &options.cap_drop)?;
    if options.privileged {
        caps = ALL_CAPS.to_vec();
    }
    let held = held_capabilities();
    let all_added = options.privileged
        || options
            .cap_add
            .iter()
            .any(|c| matches!(parse_capability(c), Ok(CapArg::All)));
    if all_added {
        // ALL is what skiff itself may give: a host (or an outer container) may withhold some.
        caps.retain(|c| held & (1 << cap_bit(*c)) != 0);
    } else if let Some(c) = caps.iter().find(|c| held & (1 << cap_bit(**c)) == 0) {
        return Err(SpecError::Invalid {
            what: "capability",
            value: format!("CAP_{c}"),
            reason: "skiff's own bounding set lacks it (the host, or the container skiff runs \
                     in, withholds it): drop it from --cap-add"
                .into(),
        });
    }
    let oci_user = built(
        "user",
        UserBuilder::default()
            .uid(user.uid)
            .gid(user.gid)
            .additional_gids(user.groups.clone())
            .build(),
    )?;
    let mut process = built(
        "process",
        ProcessBuilder::default()
            .terminal(options.tty)
            .user(oci_user)
            .args(argv)
            .env(env)
            .cwd(cwd)
            .capabilities(process_capabilities(&caps, user.uid)?)
            .build(),
    )?;
    // Off must be absent, not false: libcontainer 0.7 loads a seccomp filter after dropping
    // capabilities whenever the field is set at all, which fails without no_new_privileges.
    process.set_no_new_privileges(options.no_new_privileges.then_some(true));
    // The builder starts from oci-spec's example process, whose RLIMIT_NOFILE of 1024 docker
    // does not set: the payload inherits skiff's limits.
    process.set_rlimits(None);
    Ok(process)
}
