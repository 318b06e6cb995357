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

/// A directory the test user can enter, for copies of binaries from the build tree (which may
/// sit under a directory only root can enter).
fn shared_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("skiff-rootless-")
            .tempdir()
            .expect("temp dir for test binaries")
            .keep();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        dir
    })
    .clone()
}

/// Copies a binary where the test user can run it (once per process and name).
pub fn share_binary(path: &std::path::Path) -> PathBuf {
    // Test threads share the copies: one copies at a time.
    static COPYING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = COPYING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let copy = shared_dir().join(path.file_name().expect("binary name"));
    if !copy.exists() {
        let tmp = copy.with_extension("tmp");
        std::fs::copy(path, &tmp).expect("copying a binary for the test user");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::rename(&tmp, &copy).expect("placing the binary copy");
    }
    copy
}

fn shared_copy() -> PathBuf {
    share_binary(&std::env::current_exe().expect("current test binary"))
}

/// As root: runs test `name` of this binary as the test user and panics unless it passed;
/// returns true. Unprivileged: returns false, so the caller runs the body itself.
pub fn delegate(name: &str) -> bool {
    delegate_with_env(name, &[])
}

/// [`delegate`], passing extra environment variables to the test user's run (e.g. the path
/// of a binary copied with [`share_binary`]).
pub fn delegate_with_env(name: &str, env: &[(&str, &std::ffi::OsStr)]) -> bool {
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
        .envs(env.iter().map(|(k, v)| (k, v)))
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

/// Defines two tests running `$body`: `$root` as the test process (root under `cargo test` as
/// root) and `$rootless` re-run through [`delegate`] as the unprivileged test user.
#[macro_export]
macro_rules! as_root_and_rootless {
    ($body:ident, $root:ident, $rootless:ident) => {
        #[test]
        fn $root() {
            $body();
        }

        #[test]
        fn $rootless() {
            if $crate::rootless::delegate(stringify!($rootless)) {
                return;
            }
            $body();
        }
    };
}
