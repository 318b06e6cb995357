//! `skiff run` on a Debian-based image (bookworm minbase from debootstrap, made once by
//! scripts/setup.sh), pushed to a real registry and run as root and rootless.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use common::Env;
use skiff_test_rig::{Compression, Format, ImageBuilder, Registry, require_root, rootless_test};

const DEBIAN_TAR: &str = "/var/cache/skiff-test/debian-bookworm-minbase.tar";

/// Pushes the Debian rootfs as a one-layer image; returns the registry and the image name.
fn debian_image() -> (Registry, String) {
    let path = std::env::var("SKIFF_TEST_DEBIAN_TAR").unwrap_or_else(|_| DEBIAN_TAR.into());
    let tar = skiff_test_rig::require::require_file(
        path.as_ref(),
        "the Debian bookworm minbase tar (setup.sh makes it with debootstrap)",
    );
    let image = ImageBuilder::new(Format::Docker)
        .layer_tar(&tar, Compression::Zstd)
        .unwrap()
        .env(&["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"])
        .cmd(&["bash"])
        .build()
        .unwrap();
    let registry = Registry::start().unwrap();
    registry
        .push_image("debian/minbase", "bookworm", &image)
        .unwrap();
    let name = format!("{}/debian/minbase:bookworm", registry.host());
    (registry, name)
}

/// `skiff run --rm [opts] IMAGE bash -c SCRIPT`: (exit code, stdout).
fn bash(env: &Env, image: &str, opts: &[&str], script: &str) -> (i32, String) {
    let mut args = vec!["run", "--rm", "-q"];
    args.extend_from_slice(opts);
    args.extend_from_slice(&[image, "bash", "-c", script]);
    let out = env.skiff(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn debian_checks() {
    let (_registry, image) = debian_image();
    let env = Env::new();
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
