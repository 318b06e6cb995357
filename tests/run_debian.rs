//! `skiff run` on a Debian-based image (bookworm minbase from debootstrap, made once by
//! scripts/setup.sh), pushed to a real registry and run as root and rootless.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use common::Env;
use common::run::RunEnv;
use skiff_test_rig::{Compression, require_root, rootless_test};

/// `skiff run --rm -q [opts] IMAGE bash -c SCRIPT`: (exit code, stdout).
fn bash(env: &RunEnv, image: &str, opts: &[&str], script: &str) -> (i32, String) {
    let (code, stdout, _) = env.run_in(image, opts, &["bash", "-c", script]);
    (code, stdout)
}

fn debian_checks() {
    let env = RunEnv::bare(Env::new()).quiet();
    let image = env.debian(Compression::Zstd);
    let (code, out) = bash(
        &env,
        &image,
        &[],
        "cat /etc/debian_version; echo $0; exit 3",
    );
    assert_eq!(code, 3, "{out}");
    assert!(out.starts_with("12."), "{out}");
    assert!(out.contains("bash"), "{out}");

    // The dynamic loader, glibc and dpkg's database all work inside.
    let (code, out) = bash(
        &env,
        &image,
        &[],
        "dpkg-query -W -f='${Package}\\n' | wc -l; apt-get --version | head -1",
    );
    assert_eq!(code, 0, "{out}");
    let packages: usize = out.lines().next().unwrap().trim().parse().unwrap();
    assert!(packages > 50, "{out}");
    assert!(out.contains("apt "), "{out}");

    // A system user of the image (uid 42); files the image gives to other groups keep their
    // owners and setgid bits inside (rootless too: the subordinate range is mapped).
    let (code, out) = bash(
        &env,
        &image,
        &["-u", "_apt", "-w", "/srv/work"],
        "id -un; id -u; pwd; stat -c '%U:%G %a' /etc/shadow /usr/bin/chage /var/mail",
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out,
        "_apt\n42\n/srv/work\nroot:shadow 640\nroot:shadow 2755\nroot:mail 2775\n"
    );

    // Nothing written inside reaches the store; the layer is shared by the next run.
    let (code, _) = bash(
        &env,
        &image,
        &[],
        "rm -rf /usr/bin/apt && touch /etc/marker",
    );
    assert_eq!(code, 0);
    let (code, out) = bash(
        &env,
        &image,
        &[],
        "test -x /usr/bin/apt && test ! -e /etc/marker && echo clean",
    );
    assert_eq!((code, out.as_str()), (0, "clean\n"));
    let runs = std::fs::read_dir(env.root().join("runs")).unwrap().count();
    assert_eq!(runs, 0, "every run cleaned up");
}

#[test]
fn debian_image_runs_as_root() {
    require_root();
    debian_checks();
}

rootless_test!(
    debian_image_runs_rootless,
    debian_checks,
    env = common::rootless_env
);
