//! The `skiff` binary's command line: help, version, global options, exit codes.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::process::{Command, Output};

fn skiff(args: &[&str]) -> Output {
    Command::new(common::skiff_bin())
        .args(args)
        .env_remove("SKIFF_ROOT")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn version_and_help_exit_zero() {
    let out = skiff(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        stdout(&out).trim(),
        format!("skiff {}", env!("CARGO_PKG_VERSION"))
    );
    let out = skiff(&["--help"]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("--root"), "{}", stdout(&out));
}

#[test]
fn every_subcommand_has_help() {
    let help = stdout(&skiff(&["--help"]));
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(!commands.is_empty(), "no subcommands listed in:\n{help}");
    for command in commands {
        let out = skiff(&[command, "--help"]);
        assert!(out.status.success(), "{command} --help failed");
        assert!(
            stdout(&out).contains("Usage: skiff"),
            "{command} --help: {}",
            stdout(&out)
        );
    }
}

#[test]
fn unknown_flag_and_subcommand_exit_125_with_a_message() {
    for args in [&["no-such-command"][..], &["info", "--format", "xml"]] {
        let out = skiff(args);
        assert_eq!(out.status.code(), Some(125), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("error:"), "{args:?}: {err}");
    }
}

/// docker: `unknown flag: --bogus`, the usage and where to get help, exit 125 — and a flag
/// before the image is never taken for the image's name.
#[test]
fn unknown_flags_are_named_with_the_usage_as_docker_does() {
    for (args, usage) in [
        (&["--no-such-flag", "images"][..], "Usage: skiff [OPTIONS]"),
        (
            &["run", "--bogus", "busybox", "true"],
            "Usage: skiff run [OPTIONS]",
        ),
        (
            &["run", "--bogus=1", "busybox"],
            "Usage: skiff run [OPTIONS]",
        ),
        (&["images", "--bogus"], "Usage: skiff images [OPTIONS]"),
    ] {
        let out = skiff(args);
        assert_eq!(out.status.code(), Some(125), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        let flag = args.iter().find(|a| a.starts_with("--")).unwrap();
        let flag = flag.split('=').next().unwrap();
        assert!(
            err.starts_with(&format!("unknown flag: {flag}\n")),
            "{args:?}: {err}"
        );
        assert!(err.contains(usage), "{args:?}: {err}");
        assert!(
            err.contains("--help' for more information"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("Unable to find image"), "{args:?}: {err}");
    }
    // After the image, flags belong to the command.
    let out = skiff(&["run", "--help"]);
    assert!(out.status.success());
}

#[test]
fn root_comes_from_flag_then_env() {
    let out = skiff(&["--root", "/tmp/skiff-flag", "info", "--format", "json"]);
    assert!(out.status.success());
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["root"], "/tmp/skiff-flag");

    let out = Command::new(common::skiff_bin())
        .args(["info", "--format", "json"])
        .env("SKIFF_ROOT", "/tmp/skiff-env")
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["root"], "/tmp/skiff-env");
}

#[test]
fn relative_root_is_refused_with_125() {
    let out = skiff(&["--root", "relative/dir", "info"]);
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("absolute path"), "{err}");
}

#[test]
fn info_reports_the_host() {
    let out = skiff(&["info", "--format", "json"]);
    assert!(out.status.success());
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rootless = !skiff_test_rig::is_root();
    assert_eq!(info["rootless"], rootless);
    if !rootless {
        assert_eq!(info["root"], "/var/lib/skiff");
    }
    assert!(
        ["unified", "hybrid", "legacy", "unknown"]
            .contains(&info["cgroup_layout"].as_str().unwrap())
    );
    let text = stdout(&skiff(&["-v", "info"]));
    assert!(text.contains("cgroup layout:"), "{text}");
}
