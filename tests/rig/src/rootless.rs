//! Running a test body as the unprivileged test user (created by scripts/setup.sh).
//!
//! ```ignore
//! #[test]
//! fn layer_extracts_rootless() {
//!     if skiff_test_rig::rootless::delegate("layer_extracts_rootless") {
//!         return; // as root: the body ran as the test user, and passed
//!     }
//!     // here the process is unprivileged
//! }
//! ```

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The unprivileged user: $SKIFF_TEST_USER, else `skiff-test`.
pub fn test_user() -> String {
    std::env::var("SKIFF_TEST_USER").unwrap_or_else(|_| "skiff-test".into())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// A copy of the running test binary that the test user can execute (the build tree may sit
/// under a directory only root can enter).
fn shared_copy() -> PathBuf {
    static COPY: OnceLock<PathBuf> = OnceLock::new();
    COPY.get_or_init(|| {
        let exe = std::env::current_exe().expect("current test binary");
        let dir = tempfile::Builder::new()
            .prefix("skiff-rootless-")
            .tempdir()
            .expect("temp dir for the test binary")
            .keep();
        let copy = dir.join(exe.file_name().expect("binary name"));
        std::fs::copy(&exe, &copy).expect("copying the test binary");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        copy
    })
    .clone()
}

/// As root: runs test `name` of this binary as the test user and panics unless it passed;
/// returns true. Unprivileged: returns false, so the caller runs the body itself.
pub fn delegate(name: &str) -> bool {
    if !is_root() {
        return false;
    }
    let user = test_user();
    let home = format!("/home/{user}");
    let out = Command::new("runuser")
        .args(["-u", &user, "--"])
        .arg(shared_copy())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env("HOME", &home)
        .env("XDG_DATA_HOME", format!("{home}/.local/share"))
        .env("SKIFF_ROOTLESS_CHILD", "1")
        .current_dir("/tmp")
        .output()
        .unwrap_or_else(|e| panic!("runuser for test user {user}: {e} (run scripts/setup.sh)"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "test {name} as user {user} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    true
}
