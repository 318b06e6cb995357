//! The rig's child processes: helpers chosen before the test harness starts, and bodies run as
//! the unprivileged test user.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use skiff_test_rig::{child, child_helper, require_root};

fn passes() {
    println!("the helper ran");
}
child_helper!(passes);

fn panics() {
    panic!("the helper's assertion failed");
}
child_helper!(panics);

#[test]
fn a_helper_runs_alone_and_its_outcome_is_the_exit_status() {
    let out = child::command("passes").output().unwrap();
    child::assert_passed("passes", &out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("the helper ran"), "{stdout}");
    // The test harness did not run in the child.
    assert!(!stdout.contains("test result"), "{stdout}");

    let out = child::command("panics").output().unwrap();
    assert_eq!(out.status.code(), Some(101));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the helper's assertion failed"), "{stderr}");
    let failed = std::panic::catch_unwind(|| child::assert_passed("panics", &out));
    assert!(failed.is_err(), "a panicking helper must fail its test");
}

#[test]
fn an_unregistered_helper_fails_its_test() {
    let out = child::command("no_such_helper").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("test result"), "no test ran: {stdout}");
    let failed = std::panic::catch_unwind(|| child::assert_passed("no_such_helper", &out));
    let message = *failed.unwrap_err().downcast::<String>().unwrap();
    assert!(message.contains("not registered"), "{message}");
}

fn reads_its_env() {
    println!("GOT={}", child::env("SKIFF_RIG_TEST_VALUE"));
}
child_helper!(reads_its_env);

#[test]
fn a_helper_reads_the_environment_its_test_set_and_names_a_missing_variable() {
    let out = child::command("reads_its_env")
        .env("SKIFF_RIG_TEST_VALUE", "forty-two")
        .output()
        .unwrap();
    child::assert_passed("reads_its_env", &out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("GOT=forty-two"), "{stdout}");

    let out = child::command("reads_its_env")
        .env_remove("SKIFF_RIG_TEST_VALUE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(101));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("SKIFF_RIG_TEST_VALUE: environment variable not found"),
        "{stderr}"
    );
}

/// The process's real and effective uid.
fn uids() -> (u32, u32) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let ids: Vec<u32> = line
        .split_whitespace()
        .skip(1)
        .map(|u| u.parse().unwrap())
        .collect();
    (ids[0], ids[1])
}

fn as_the_test_user() {
    let user = skiff_test_rig::rootless::test_user();
    let uid = skiff_test_rig::require::require_user(&user);
    assert_eq!(uids(), (uid, uid), "runs as {user}");
    assert!(!skiff_test_rig::is_root());
    assert_eq!(
        std::env::var("HOME").unwrap(),
        format!("/home/{user}"),
        "with the test user's HOME"
    );
}
child_helper!(as_the_test_user);

#[test]
fn a_body_runs_as_the_test_user() {
    require_root();
    skiff_test_rig::rootless::run("as_the_test_user", &[], as_the_test_user);
}

fn fails_as_the_test_user() {
    panic!("assertion failed as the test user");
}
child_helper!(fails_as_the_test_user);

#[test]
fn a_failure_as_the_test_user_fails_the_test() {
    require_root();
    let failed = std::panic::catch_unwind(|| {
        skiff_test_rig::rootless::run("fails_as_the_test_user", &[], fails_as_the_test_user)
    });
    let message = *failed.unwrap_err().downcast::<String>().unwrap();
    assert!(
        message.contains("assertion failed as the test user"),
        "{message}"
    );
}
