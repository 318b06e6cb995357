//! Running test bodies as the unprivileged test user (created by scripts/setup.sh).
//!
//! ```text
//! fn layer_extracts() { /* assertions; here the process is unprivileged */ }
//! skiff_test_rig::rootless_test!(layer_extracts_rootless, layer_extracts);
//! ```
//!
//! As root, the test re-executes its binary as the test user, where [`child_helper!`] runs the
//! body before the test harness starts; the test fails unless the body passed there. Run by
//! an unprivileged user, the test runs the body itself: it is rootless already.
//!
//! [`child_helper!`]: crate::child_helper

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::child;
use crate::require::{is_root, require_user};

/// The unprivileged user: $SKIFF_TEST_USER, else `skiff-test`.
pub fn test_user() -> String {
    std::env::var("SKIFF_TEST_USER").unwrap_or_else(|_| "skiff-test".into())
}

/// The unprivileged user with no /etc/subuid or /etc/subgid range (rootless with no set-up):
/// $SKIFF_TEST_NOSUB_USER, else `skiff-nosub`.
pub fn nosub_user() -> String {
    std::env::var("SKIFF_TEST_NOSUB_USER").unwrap_or_else(|_| "skiff-nosub".into())
}

/// A directory the test user can enter, for copies of binaries from the build tree (which may
/// sit under a directory only root can enter).
/// Where binaries are shared with the test users: one directory for every test process, each
/// binary under its name, size and mtime, so that runs reuse it instead of piling up copies.
fn shared_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let me = std::fs::metadata("/proc/self").expect("/proc/self").uid();
        let dir = std::env::temp_dir().join(format!("skiff-rootless-{me}"));
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => panic!("creating {}: {e}", dir.display()),
        }
        let meta = std::fs::symlink_metadata(&dir).expect("inspecting the shared binaries dir");
        assert!(
            meta.is_dir() && meta.uid() == me,
            "{} is not a directory of ours",
            dir.display()
        );
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        dir
    })
    .clone()
}

/// Makes a binary runnable by the test user (a hard link where it can be, else a copy), once
/// per build of it.
pub fn share_binary(path: &Path) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    // Test threads share the copies: one copies at a time.
    static COPYING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = COPYING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let meta = std::fs::metadata(path).expect("the binary to share");
    let name = path.file_name().expect("binary name").to_string_lossy();
    let copy = shared_dir().join(format!(
        "{name}-{}-{}",
        meta.size(),
        meta.mtime_nsec() ^ meta.mtime() as i64
    ));
    if !copy.exists() {
        prune_copies(&shared_dir());
        let tmp = copy.with_extension(format!("tmp{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        if std::fs::hard_link(path, &tmp).is_err() {
            std::fs::copy(path, &tmp).expect("copying a binary for the test user");
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::rename(&tmp, &copy).expect("placing the binary copy");
    }
    copy
}

/// Removes the copies of earlier builds: every rebuild of a test binary leaves one (tens of
/// MB each), placed more than two hours ago (by ctime: a hard link keeps the build's mtime). A
/// test still running from one keeps its inode.
fn prune_copies(dir: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    for entry in entries.flatten() {
        if let Ok(meta) = entry.metadata()
            && meta.is_file()
            && now - meta.ctime() > 2 * 3600
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn shared_copy() -> PathBuf {
    share_binary(&std::env::current_exe().expect("current test binary"))
}

/// `runuser -u USER -- COMMAND` with the user's HOME, from /tmp.
fn as_user(user: &str, inner: &Command) -> Command {
    require_user(user);
    let home = format!("/home/{user}");
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", user, "--"])
        .arg(inner.get_program())
        .args(inner.get_args())
        .env("HOME", &home)
        .env("XDG_DATA_HOME", format!("{home}/.local/share"))
        .current_dir("/tmp");
    for (key, value) in inner.get_envs() {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    cmd
}

/// No extra environment for [`run`].
pub fn no_env() -> Vec<(String, OsString)> {
    Vec::new()
}

/// Runs `body`, registered with [`child_helper!`](crate::child_helper) as helper `name`,
/// unprivileged. As root: in a copy of this test binary run as the test user (with `env`
/// added, e.g. the path of a binary copied with [`share_binary`]), and panics unless it passed
/// there. Unprivileged: here.
#[track_caller]
pub fn run(name: &str, env: &[(String, OsString)], body: fn()) {
    run_as(&test_user(), name, env, body);
}

/// [`run`] as `user` (e.g. [`nosub_user`]) instead of the test user.
#[track_caller]
pub fn run_as(user: &str, name: &str, env: &[(String, OsString)], body: fn()) {
    if !is_root() {
        body();
        return;
    }
    let mut inner = child::command_for(&shared_copy(), name);
    inner.envs(env.iter().map(|(k, v)| (k, v)));
    let mut cmd = as_user(user, &inner);
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "runuser (util-linux) for the test user: {e}; {}",
            crate::require::SETUP
        )
    });
    child::assert_passed(name, &out);
}

/// Defines test `$name` running the body `$body` (a `fn()`) as the unprivileged test user,
/// through [`run`]; `env = PATH` names a function giving extra environment for the child.
#[macro_export]
macro_rules! rootless_test {
    ($name:ident, $body:path) => {
        $crate::rootless_test!($name, $body, env = $crate::rootless::no_env);
    };
    ($name:ident, $body:path, env = $env:path, user = $user:path) => {
        #[test]
        fn $name() {
            $crate::rootless::run_as(&$user(), stringify!($name), &$env(), $body);
        }

        $crate::child_helper!($name, $body);
    };
    // After the arm with `user`: a matched path fragment cannot be given back.
    ($name:ident, $body:path, env = $env:path) => {
        $crate::rootless_test!($name, $body, env = $env, user = $crate::rootless::test_user);
    };
}

/// Defines two tests running `$body`: `$root` as root (it fails when the tests do not run as
/// root) and `$rootless` as the unprivileged test user ([`rootless_test!`]).
#[macro_export]
macro_rules! as_root_and_rootless {
    ($body:ident, $root:ident, $rootless:ident) => {
        #[test]
        fn $root() {
            $crate::require_root();
            $body();
        }

        $crate::rootless_test!($rootless, $body);
    };
}
