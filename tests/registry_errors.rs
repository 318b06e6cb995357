//! Registry failures reported at once, without a registry to test against: a registry whose
//! name does not resolve (`.invalid` never does, RFC 6761) is not retried.

use std::process::{Command, Stdio};

#[test]
fn unresolvable_registry_fails_at_once_naming_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
        // -vv: debug output, so that every retry would show.
        .arg("-vv")
        .arg("--root")
        .arg(dir.path().join("store"))
        .arg("--config")
        .arg(dir.path().join("missing.toml"))
        .args(["pull", "no-such-host.invalid/x:1"])
        .env("HOME", dir.path())
        .env("REGISTRY_AUTH_FILE", dir.path().join("auth.json"))
        .env_remove("RUST_LOG")
        .env_remove("DOCKER_CONFIG")
        .env_remove("SKIFF_ROOT")
        .env_remove("SKIFF_CONFIG")
        .env_remove("XDG_RUNTIME_DIR")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains("cannot reach registry no-such-host.invalid: the name does not resolve"),
        "{stderr}"
    );
    // The debug log was on (the endpoint choice is logged before the first request)...
    assert!(stderr.contains("registry endpoint"), "{stderr}");
    // ...and shows no retry: the first failed lookup ended the pull.
    assert!(!stderr.contains("retrying"), "{stderr}");
}
