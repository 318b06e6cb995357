//! Preconditions of the tests. A test whose precondition is missing fails, saying what is
//! missing and how to get it: it never passes without having checked anything. CI runs as root
//! on a machine prepared by `scripts/setup.sh`, where every precondition holds.

use std::path::Path;

/// How to get what a precondition needs.
pub const SETUP: &str =
    "run `sudo bash scripts/setup.sh` once, then `cargo test` as root (as CI does)";

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Panics unless the process runs as root.
#[track_caller]
pub fn require_root() {
    assert!(
        is_root(),
        "this test needs root (it checks what skiff does with real privileges): {SETUP}"
    );
}

/// The uid of `user` from /etc/passwd; panics when there is no such user.
#[track_caller]
pub fn require_user(user: &str) -> u32 {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .filter_map(|l| {
            let mut fields = l.split(':');
            let name = fields.next()?;
            let uid = fields.nth(1)?.parse().ok()?;
            (name == user).then_some(uid)
        })
        .next()
        .unwrap_or_else(|| {
            panic!(
                "no user {user:?} in /etc/passwd: the rootless tests run as this unprivileged \
                 user (SKIFF_TEST_USER, default skiff-test); {SETUP}"
            )
        })
}

/// Panics unless `user` has a subordinate uid and gid range (/etc/subuid, /etc/subgid) and
/// newuidmap/newgidmap are installed, so that rootless skiff maps a whole range.
#[track_caller]
pub fn require_subid_range(user: &str) {
    for file in ["/etc/subuid", "/etc/subgid"] {
        let has_range = std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with(&format!("{user}:")));
        assert!(
            has_range,
            "no {file} range for {user}: this test needs one (only the caller would be \
             mapped otherwise); {SETUP}"
        );
    }
    for tool in ["newuidmap", "newgidmap"] {
        assert!(
            ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
                .iter()
                .any(|d| Path::new(d).join(tool).is_file()),
            "{tool} is not installed (Debian package uidmap): this test maps a subordinate \
             range through it; {SETUP}"
        );
    }
}

/// Reads a fixture file that `scripts/setup.sh` makes; panics naming it when it is missing.
#[track_caller]
pub fn require_file(path: &Path, what: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{what} {}: {e}; {SETUP}", path.display()))
}
