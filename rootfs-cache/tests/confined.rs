//! ConfinedRoot's public API, as the launcher uses it on a container's rootfs: files opened and
//! directories created inside a root whatever its symlinks say.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;

use rootfs_cache::ConfinedRoot;
use skiff_test_rig::require_root;

#[test]
fn files_are_opened_inside_the_root_whatever_the_symlinks_say() {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    std::fs::write(dir.path().join("secret"), "host").unwrap();
    symlink("/", rootfs.join("up")).unwrap();
    symlink("../../secret", rootfs.join("rel")).unwrap();
    let root = ConfinedRoot::open(&rootfs).unwrap();

    let mut passwd = String::new();
    std::fs::File::from(
        root.open_file(Path::new("/up/etc/passwd"), libc::O_RDONLY)
            .unwrap(),
    )
    .read_to_string(&mut passwd)
    .unwrap();
    assert!(passwd.starts_with("root:"), "{passwd}");
    let err = root
        .open_file(Path::new("rel"), libc::O_RDONLY)
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
}

#[test]
fn directories_are_created_inside_the_root_with_their_owner() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    // A dangling absolute symlink: its target is made inside the root, as in a chroot.
    symlink("/elsewhere/made", rootfs.join("work")).unwrap();
    let root = ConfinedRoot::open(&rootfs).unwrap();

    root.create_dir_all(Path::new("/work/sub"), Some((1234, 4321)))
        .unwrap();
    let made = rootfs.join("elsewhere/made/sub");
    let meta = std::fs::metadata(&made).unwrap();
    assert!(meta.is_dir());
    assert_eq!((meta.uid(), meta.gid()), (1234, 4321));
    assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
    assert!(!Path::new("/elsewhere").exists());

    // Existing directories are opened, not changed; a file in the way is ENOTDIR.
    root.create_dir_all(Path::new("work/sub"), None).unwrap();
    assert_eq!(std::fs::metadata(&made).unwrap().uid(), 1234);
    std::fs::write(rootfs.join("file"), "x").unwrap();
    let err = root
        .create_dir_all(Path::new("file/sub"), None)
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTDIR), "{err}");
}
