//! What extraction keeps of each entry: content, modes and special bits, owners (chown as root,
//! an xattr rootless), link targets, hard links, special files, xattrs, long names, sparse
//! files, times, and docker's rules for entries that replace one another.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::io::Cursor;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rootfs_cache::extract::{self, ExtractOptions};
use rootfs_cache::{LayerRecord, Store};
use skiff_test_rig::{
    Compression, Entry, as_root_and_rootless, is_root, require_root, rootless_test,
};

/// A temp dir that can be removed even when a layer left read-only or mode-0 directories in it
/// (rootless, the owner needs write and search permission to remove their children).
struct Scratch(tempfile::TempDir);

impl Drop for Scratch {
    fn drop(&mut self) {
        fn open_up(dir: &Path) {
            let Ok(children) = std::fs::read_dir(dir) else {
                return;
            };
            for child in children.flatten() {
                let path = child.path();
                if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700));
                    open_up(&path);
                }
            }
        }
        open_up(self.0.path());
    }
}

/// Commits `entries` as one layer into a fresh store; returns the scratch dir (keep it alive),
/// the layer's directory and its record.
fn commit(entries: &[Entry]) -> (Scratch, PathBuf, LayerRecord) {
    let dir = Scratch(tempfile::tempdir().unwrap());
    let store = Store::open(dir.0.path().join("store")).unwrap();
    let layer = common::layer(entries, Compression::Gzip);
    let record = common::commit(&store, &layer).record().clone();
    let fs = store.layer_dir(&layer.diff_id);
    (dir, fs, record)
}

fn meta(path: impl AsRef<Path>) -> std::fs::Metadata {
    let path = path.as_ref();
    std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn mode(path: impl AsRef<Path>) -> u32 {
    meta(path).mode() & 0o7777
}

fn xattr(path: impl AsRef<Path>, name: &str) -> Option<Vec<u8>> {
    rootfs_cache::read_xattr(path.as_ref(), name).unwrap()
}

const T1: u64 = 1_100_000_000;
const T2: u64 = 1_200_000_000;
const T3: u64 = 1_300_000_000;

fn regular_files() {
    let big: Vec<u8> = (0..1_500_000u32).map(|i| (i * 31 % 253) as u8).collect();
    let (_dir, fs, record) = commit(&[
        Entry::file("hello", "hello world\n").mode(0o640).mtime(T1),
        Entry::file("empty", "").mode(0o400),
        Entry::file("bin/big", big.clone()).mode(0o755),
    ]);
    assert_eq!(std::fs::read(fs.join("hello")).unwrap(), b"hello world\n");
    assert_eq!(mode(fs.join("hello")), 0o640);
    assert_eq!(meta(fs.join("hello")).mtime(), T1 as i64);
    assert!(meta(fs.join("empty")).is_file());
    assert_eq!(meta(fs.join("empty")).len(), 0);
    assert_eq!(mode(fs.join("empty")), 0o400);
    assert_eq!(std::fs::read(fs.join("bin/big")).unwrap(), big);
    assert_eq!(mode(fs.join("bin/big")), 0o755);
    assert_eq!(record.stats.files, 3);
    assert_eq!(record.stats.file_bytes, 12 + big.len() as u64);
}
as_root_and_rootless!(
    regular_files,
    regular_files_keep_content_mode_and_mtime,
    regular_files_keep_content_mode_and_mtime_rootless
);

fn directory_modes() {
    let (_dir, fs, _) = commit(&[
        Entry::dir("private/").mode(0o700),
        Entry::dir("ro/").mode(0o555),
        Entry::file("ro/child", "c"),
        Entry::dir("ro/sub/").mode(0o555),
        Entry::file("ro/sub/f", "f").mode(0o444),
        Entry::dir("tmp/").mode(0o1777),
        Entry::dir("closed/").mode(0o000),
        Entry::dir("closed/inner/").mode(0o711),
        Entry::file("closed/inner/f", "f"),
    ]);
    assert_eq!(mode(fs.join("private")), 0o700);
    assert_eq!(mode(fs.join("ro")), 0o555);
    assert_eq!(std::fs::read(fs.join("ro/child")).unwrap(), b"c");
    assert_eq!(mode(fs.join("ro/sub")), 0o555);
    assert_eq!(std::fs::read(fs.join("ro/sub/f")).unwrap(), b"f");
    assert_eq!(mode(fs.join("tmp")), 0o1777);
    assert_eq!(mode(fs.join("closed")), 0o000);
    // Rootless, a mode-0 directory cannot be searched even by its owner: open it to look.
    std::fs::set_permissions(fs.join("closed"), std::fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(mode(fs.join("closed/inner")), 0o711);
    assert_eq!(std::fs::read(fs.join("closed/inner/f")).unwrap(), b"f");
}
as_root_and_rootless!(
    directory_modes,
    directories_keep_their_modes_and_children,
    directories_keep_their_modes_and_children_rootless
);

fn special_bits() {
    let (_dir, fs, _) = commit(&[
        Entry::file("suid", "x").mode(0o4755).owner(1000, 1001),
        Entry::file("sgid", "x").mode(0o2755).owner(1000, 1001),
        Entry::file("sticky", "x").mode(0o1644),
        Entry::file("all", "x").mode(0o7755).owner(1000, 1001),
        Entry::dir("sgid-dir/").mode(0o2775).owner(1000, 1001),
        Entry::file("sgid-dir/f", "x"),
        Entry::dir("sticky-dir/").mode(0o1777),
    ]);
    assert_eq!(mode(fs.join("suid")), 0o4755);
    assert_eq!(mode(fs.join("sgid")), 0o2755);
    assert_eq!(mode(fs.join("sticky")), 0o1644);
    assert_eq!(mode(fs.join("all")), 0o7755);
    assert_eq!(mode(fs.join("sgid-dir")), 0o2775);
    assert_eq!(mode(fs.join("sticky-dir")), 0o1777);
    if is_root() {
        // chown (which clears setuid/setgid) happened before chmod.
        assert_eq!(
            (meta(fs.join("suid")).uid(), meta(fs.join("suid")).gid()),
            (1000, 1001)
        );
        assert_eq!(meta(fs.join("all")).uid(), 1000);
    }
}
as_root_and_rootless!(
    special_bits,
    setuid_setgid_and_sticky_bits_are_kept,
    setuid_setgid_and_sticky_bits_are_kept_rootless
);

fn owned_entries() -> Vec<Entry> {
    vec![
        Entry::dir("home/user/").owner(1000, 1001).mode(0o750),
        Entry::file("home/user/f", "x").owner(1000, 1001),
        Entry::file("root-owned", "x"),
        Entry::symlink("home/user/link", "f").owner(1000, 1001),
        Entry::fifo("home/user/pipe").owner(1002, 1003),
        // Above the ustar field's range: the uid comes from a PAX record.
        Entry::file("big-uid", "x").owner(100_000_000, 0),
    ]
}

#[test]
fn ownership_as_root_is_chowned() {
    require_root();
    let (_dir, fs, _) = commit(&owned_entries());
    let owner = |p: &str| {
        let m = meta(fs.join(p));
        (m.uid(), m.gid())
    };
    assert_eq!(owner("home/user"), (1000, 1001));
    assert_eq!(owner("home/user/f"), (1000, 1001));
    assert_eq!(owner("root-owned"), (0, 0));
    // lchown'd (that it does not follow the link is checked in the symlink test).
    assert_eq!(owner("home/user/link"), (1000, 1001));
    assert_eq!(owner("home/user/pipe"), (1002, 1003));
    assert_eq!(owner("big-uid"), (100_000_000, 0));
    assert_eq!(
        xattr(fs.join("home/user/f"), "user.rootlesscontainers"),
        None
    );
}

fn ownership_rootless() {
    let (_dir, fs, _) = commit(&owned_entries());
    let me = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    for p in ["home/user", "home/user/f", "root-owned", "big-uid"] {
        let m = meta(fs.join(p));
        assert_eq!((m.uid(), m.gid()), me, "{p}");
    }
    // protobuf Resource{uid: 1000, gid: 1001}
    let r1000 = [0x08, 0xe8, 0x07, 0x10, 0xe9, 0x07];
    assert_eq!(
        xattr(fs.join("home/user"), "user.rootlesscontainers").unwrap(),
        r1000
    );
    assert_eq!(
        xattr(fs.join("home/user/f"), "user.rootlesscontainers").unwrap(),
        r1000
    );
    // Resource{uid: 100000000, gid: 0}
    assert_eq!(
        xattr(fs.join("big-uid"), "user.rootlesscontainers").unwrap(),
        [0x08, 0x80, 0xc2, 0xd7, 0x2f, 0x10, 0x00]
    );
    assert_eq!(
        xattr(fs.join("root-owned"), "user.rootlesscontainers"),
        None
    );
}
rootless_test!(ownership_rootless_is_an_xattr, ownership_rootless);

fn symlinks() {
    let long_target = format!("/{}", "t/".repeat(80));
    let (_dir, fs, _) = commit(&[
        Entry::file("target", "t").mtime(T2),
        Entry::symlink("abs", "/bin/busybox").mtime(T1),
        Entry::symlink("rel", "../up/./x//y").mtime(T1),
        Entry::symlink("dangling", "nowhere"),
        Entry::symlink("to-target", "target")
            .mtime(T1)
            .owner(1000, 1001),
        Entry::symlink("long", &long_target),
    ]);
    let link = |p: &str| std::fs::read_link(fs.join(p)).unwrap();
    assert_eq!(link("abs"), Path::new("/bin/busybox"));
    // Verbatim: not cleaned, not resolved.
    assert_eq!(link("rel").as_os_str().as_encoded_bytes(), b"../up/./x//y");
    assert_eq!(link("dangling"), Path::new("nowhere"));
    assert_eq!(link("long"), Path::new(&long_target));
    // The link's own mtime; the target keeps its own.
    assert_eq!(meta(fs.join("to-target")).mtime(), T1 as i64);
    assert_eq!(meta(fs.join("abs")).mtime(), T1 as i64);
    assert_eq!(
        std::fs::metadata(fs.join("to-target")).unwrap().mtime(),
        T2 as i64
    );
    if is_root() {
        let l = meta(fs.join("to-target"));
        assert_eq!((l.uid(), l.gid()), (1000, 1001));
        let t = meta(fs.join("target"));
        assert_eq!((t.uid(), t.gid()), (0, 0));
    }
}
as_root_and_rootless!(
    symlinks,
    symlinks_keep_target_owner_and_their_own_mtime,
    symlinks_keep_target_owner_and_their_own_mtime_rootless
);

fn hardlinks() {
    let (_dir, fs, _) = commit(&[
        Entry::file("a", "shared").mode(0o640),
        Entry::hardlink("h", "a"),
        Entry::dir("real/"),
        Entry::file("real/x", "x"),
        Entry::symlink("ln", "real"),
        // The target's parent is an in-layer symlink: followed, inside the layer.
        Entry::hardlink("dir/h2", "ln/x"),
        Entry::file("./dotted", "d"),
        Entry::hardlink("h3", "./dotted"),
    ]);
    let (a, h) = (meta(fs.join("a")), meta(fs.join("h")));
    assert_eq!(a.ino(), h.ino());
    assert_eq!(a.nlink(), 2);
    assert_eq!(std::fs::read(fs.join("h")).unwrap(), b"shared");
    assert_eq!(h.mode() & 0o7777, 0o640);
    let (x, h2) = (meta(fs.join("real/x")), meta(fs.join("dir/h2")));
    assert_eq!(x.ino(), h2.ino());
    assert_eq!(x.nlink(), 2);
    assert_eq!(meta(fs.join("h3")).ino(), meta(fs.join("dotted")).ino());
}
as_root_and_rootless!(
    hardlinks,
    hardlinks_share_the_inode,
    hardlinks_share_the_inode_rootless
);

fn fifos() {
    let (_dir, fs, _) = commit(&[Entry::fifo("run/pipe").mode(0o620).mtime(T1)]);
    let m = meta(fs.join("run/pipe"));
    assert!(m.file_type().is_fifo());
    assert_eq!(m.mode() & 0o7777, 0o620);
    assert_eq!(m.mtime(), T1 as i64);
}
as_root_and_rootless!(fifos, fifos_are_created, fifos_are_created_rootless);

fn devices() {
    let (_dir, fs, record) = commit(&[
        Entry::char_device("dev/null", 1, 3),
        Entry::block_device("dev/loop0", 7, 0).owner(0, 6),
        Entry::char_device("dev/big", 300, 70_000),
    ]);
    if is_root() {
        let null = meta(fs.join("dev/null"));
        assert!(null.file_type().is_char_device());
        assert_eq!((libc::major(null.rdev()), libc::minor(null.rdev())), (1, 3));
        assert_eq!(null.mode() & 0o7777, 0o666);
        let lo = meta(fs.join("dev/loop0"));
        assert!(lo.file_type().is_block_device());
        assert_eq!((libc::major(lo.rdev()), libc::minor(lo.rdev())), (7, 0));
        assert_eq!(lo.mode() & 0o7777, 0o660);
        assert_eq!(lo.gid(), 6);
        let big = meta(fs.join("dev/big"));
        assert_eq!(
            (libc::major(big.rdev()), libc::minor(big.rdev())),
            (300, 70_000)
        );
        assert!(
            record.stats.skipped.is_empty(),
            "{:?}",
            record.stats.skipped
        );
    } else {
        for name in ["dev/null", "dev/loop0", "dev/big"] {
            assert!(std::fs::symlink_metadata(fs.join(name)).is_err(), "{name}");
            assert!(
                record
                    .stats
                    .skipped
                    .iter()
                    .any(|s| s.contains(name) && s.contains("device")),
                "{name}: {:?}",
                record.stats.skipped
            );
        }
    }
}
as_root_and_rootless!(
    devices,
    devices_are_created_as_root_and_skipped_rootless,
    devices_are_created_as_root_and_skipped_rootless_rootless
);

/// security.capability for cap_net_bind_service, effective (VFS_CAP_REVISION_2).
fn net_bind_capability() -> Vec<u8> {
    let mut v = Vec::new();
    for word in [0x0200_0001u32, 1 << 10, 0, 0, 0] {
        v.extend_from_slice(&word.to_le_bytes());
    }
    v
}

fn xattrs() {
    let cap = net_bind_capability();
    let (_dir, fs, record) = commit(&[
        Entry::dir("d/").xattr("user.dirattr", b"on a dir".to_vec()),
        Entry::file("d/f", "x")
            .xattr("user.foo", b"bar".to_vec())
            .xattr("user.binary", vec![0u8, 255, 1])
            .mode(0o755),
        Entry::file("ping", "x")
            .xattr("security.capability", cap.clone())
            .mode(0o755),
    ]);
    assert_eq!(xattr(fs.join("d/f"), "user.foo").unwrap(), b"bar");
    assert_eq!(xattr(fs.join("d/f"), "user.binary").unwrap(), [0u8, 255, 1]);
    assert_eq!(xattr(fs.join("d"), "user.dirattr").unwrap(), b"on a dir");
    let skipped = &record.stats.skipped;
    assert!(!skipped.iter().any(|s| s.contains("user.")), "{skipped:?}");
    if is_root() {
        assert_eq!(xattr(fs.join("ping"), "security.capability").unwrap(), cap);
        assert!(skipped.is_empty(), "{skipped:?}");
    } else {
        assert_eq!(xattr(fs.join("ping"), "security.capability"), None);
        assert!(
            skipped
                .iter()
                .any(|s| s.contains("ping") && s.contains("security.capability")),
            "{skipped:?}"
        );
    }
    // The file itself is there either way.
    assert_eq!(mode(fs.join("ping")), 0o755);
}
as_root_and_rootless!(xattrs, pax_xattrs_are_set, pax_xattrs_are_set_rootless);

fn long_names() {
    let long_file = format!("{}/{}", "d".repeat(120), "f".repeat(200));
    let deep_dir = (0..5)
        .map(|i| format!("{i}{}", "c".repeat(99)))
        .collect::<Vec<_>>()
        .join("/");
    let deep_file = format!("{deep_dir}/{}", "e".repeat(150));
    let link_target = format!("../{}", "l".repeat(140));
    let (_dir, fs, _) = commit(&[
        Entry::file(&long_file, "long").mode(0o600),
        Entry::dir(format!("{deep_dir}/")).mode(0o750).mtime(T1),
        Entry::file(&deep_file, "deep"),
        Entry::symlink(format!("{deep_dir}/link"), &link_target),
        Entry::hardlink(format!("{}/hard", "h".repeat(110)), &deep_file),
    ]);
    assert!(long_file.len() > 255 && deep_file.len() > 500);
    assert_eq!(std::fs::read(fs.join(&long_file)).unwrap(), b"long");
    assert_eq!(mode(fs.join(&long_file)), 0o600);
    assert_eq!(std::fs::read(fs.join(&deep_file)).unwrap(), b"deep");
    assert_eq!(mode(fs.join(&deep_dir)), 0o750);
    assert_eq!(meta(fs.join(&deep_dir)).mtime(), T1 as i64);
    assert_eq!(
        std::fs::read_link(fs.join(&deep_dir).join("link")).unwrap(),
        Path::new(&link_target)
    );
    let hard = fs.join("h".repeat(110)).join("hard");
    assert_eq!(meta(&hard).ino(), meta(fs.join(&deep_file)).ino());
}
as_root_and_rootless!(
    long_names,
    pax_long_names_and_link_targets,
    pax_long_names_and_link_targets_rootless
);

const SPARSE_SIZE: u64 = 64 << 20;
const SPARSE_AT: u64 = 32 << 20;

/// The sparse file's content is right and it costs far less disk than its size.
fn check_sparse(path: &Path, data: &[u8]) {
    let m = meta(path);
    assert_eq!(m.len(), SPARSE_SIZE);
    assert!(
        m.blocks() * 512 < 1 << 20,
        "{} bytes on disk for a {SPARSE_SIZE}-byte file of {} non-zero bytes",
        m.blocks() * 512,
        data.len()
    );
    let content = std::fs::read(path).unwrap();
    let at = SPARSE_AT as usize;
    assert_eq!(&content[at..at + data.len()], data);
    assert!(content[..at].iter().all(|&b| b == 0));
    assert!(content[at + data.len()..].iter().all(|&b| b == 0));
}

#[test]
fn zero_runs_become_holes() {
    let mut content = vec![0u8; SPARSE_SIZE as usize];
    content[SPARSE_AT as usize] = 0x5a;
    let tar = skiff_test_rig::entry::tar(&[Entry::file("sparse", content)]).unwrap();
    let dir = Scratch(tempfile::tempdir().unwrap());
    let dest = dir.0.path().join("fs");
    std::fs::create_dir(&dest).unwrap();
    let stats =
        extract::extract(Cursor::new(tar), &dest, &ExtractOptions::for_current_user()).unwrap();
    assert_eq!(stats.file_bytes, SPARSE_SIZE);
    check_sparse(&dest.join("sparse"), &[0x5a]);
}

/// An octal numeric field of a GNU header.
fn octal(field: &mut [u8; 12], value: u64) {
    let s = format!("{value:011o}\0");
    field.copy_from_slice(s.as_bytes());
}

#[test]
fn gnu_sparse_entries_expand_to_their_real_size() {
    // GNU tar --sparse: 4 KiB stored, at 32 MiB in a 64 MiB file (the final empty block marks
    // the real end).
    let data = vec![0xa5u8; 4096];
    let mut header = tar::Header::new_gnu();
    header.set_path("sparse").unwrap();
    header.set_entry_type(tar::EntryType::GNUSparse);
    header.set_mode(0o644);
    header.set_mtime(T1);
    header.set_size(data.len() as u64);
    {
        let gnu = header.as_gnu_mut().unwrap();
        octal(&mut gnu.sparse[0].offset, SPARSE_AT);
        octal(&mut gnu.sparse[0].numbytes, data.len() as u64);
        octal(&mut gnu.sparse[1].offset, SPARSE_SIZE);
        octal(&mut gnu.sparse[1].numbytes, 0);
        octal(&mut gnu.realsize, SPARSE_SIZE);
    }
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append(&header, data.as_slice()).unwrap();
    let tar = builder.into_inner().unwrap();

    let dir = Scratch(tempfile::tempdir().unwrap());
    let dest = dir.0.path().join("fs");
    std::fs::create_dir(&dest).unwrap();
    let stats =
        extract::extract(Cursor::new(tar), &dest, &ExtractOptions::for_current_user()).unwrap();
    assert_eq!(stats.file_bytes, SPARSE_SIZE);
    check_sparse(&dest.join("sparse"), &data);
    assert_eq!(meta(dest.join("sparse")).mtime(), T1 as i64);
}

fn mtimes() {
    let (_dir, fs, _) = commit(&[
        Entry::dir("a/").mtime(T1),
        Entry::dir("a/b/").mtime(T2),
        Entry::file("a/b/f", "x").mtime(T3),
        Entry::dir("c/").mtime(T2),
        // Children written after other directories' entries, and into a directory whose
        // entry came long before.
        Entry::file("a/late", "x").mtime(T3),
        Entry::symlink("a/b/link", "f").mtime(T1),
        Entry::whiteout("c/gone"),
        Entry::file("file", "x").mtime(T2),
    ]);
    let mtime = |p: &str| meta(fs.join(p)).mtime();
    assert_eq!(mtime("a"), T1 as i64);
    assert_eq!(mtime("a/b"), T2 as i64);
    assert_eq!(mtime("c"), T2 as i64);
    assert_eq!(mtime("a/b/f"), T3 as i64);
    assert_eq!(mtime("a/late"), T3 as i64);
    assert_eq!(mtime("a/b/link"), T1 as i64);
    assert_eq!(mtime("file"), T2 as i64);
}
as_root_and_rootless!(
    mtimes,
    mtimes_are_kept_and_directory_times_are_set_last,
    mtimes_are_kept_and_directory_times_are_set_last_rootless
);

fn replacing() {
    let (_dir, fs, _) = commit(&[
        // A file replaces a directory tree.
        Entry::dir("x/"),
        Entry::file("x/child", "c"),
        Entry::dir("x/sub/").mode(0o555),
        Entry::file("x/sub/deep", "d"),
        Entry::file("x", "now a file"),
        // A directory replaces a file.
        Entry::file("y", "was a file"),
        Entry::dir("y/").mode(0o750),
        Entry::file("y/in", "in"),
        // A directory over a directory merges; the later entry's metadata wins.
        Entry::dir("m/").mode(0o700).mtime(T1),
        Entry::file("m/one", "1"),
        Entry::dir("m/").mode(0o755).mtime(T2),
        Entry::file("m/two", "2"),
        // A symlink and a fifo replace directories too.
        Entry::dir("s/"),
        Entry::file("s/child", "c"),
        Entry::symlink("s", "m"),
        Entry::dir("p/"),
        Entry::fifo("p"),
    ]);
    assert!(meta(fs.join("x")).is_file());
    assert_eq!(std::fs::read(fs.join("x")).unwrap(), b"now a file");
    assert!(meta(fs.join("y")).is_dir());
    assert_eq!(mode(fs.join("y")), 0o750);
    assert_eq!(std::fs::read(fs.join("y/in")).unwrap(), b"in");
    assert_eq!(std::fs::read(fs.join("m/one")).unwrap(), b"1");
    assert_eq!(std::fs::read(fs.join("m/two")).unwrap(), b"2");
    assert_eq!(mode(fs.join("m")), 0o755);
    assert_eq!(meta(fs.join("m")).mtime(), T2 as i64);
    assert!(meta(fs.join("s")).file_type().is_symlink());
    assert!(meta(fs.join("p")).file_type().is_fifo());
}
as_root_and_rootless!(
    replacing,
    entries_replace_each_other_by_dockers_rules,
    entries_replace_each_other_by_dockers_rules_rootless
);

fn overriding() {
    let (_dir, fs, _) = commit(&[
        Entry::file("f", "first").mode(0o644).mtime(T1),
        Entry::file("f", "second").mode(0o600).mtime(T2),
        Entry::dir("d/").mode(0o700).mtime(T1),
        Entry::dir("d/").mode(0o751).mtime(T2),
        Entry::symlink("l", "one"),
        Entry::symlink("l", "two"),
        Entry::file("h-target", "t"),
        Entry::file("h", "plain"),
        Entry::hardlink("h", "h-target"),
    ]);
    assert_eq!(std::fs::read(fs.join("f")).unwrap(), b"second");
    assert_eq!(mode(fs.join("f")), 0o600);
    assert_eq!(meta(fs.join("f")).mtime(), T2 as i64);
    assert_eq!(meta(fs.join("f")).nlink(), 1);
    assert_eq!(mode(fs.join("d")), 0o751);
    assert_eq!(meta(fs.join("d")).mtime(), T2 as i64);
    assert_eq!(std::fs::read_link(fs.join("l")).unwrap(), Path::new("two"));
    assert_eq!(std::fs::read(fs.join("h")).unwrap(), b"t");
    assert_eq!(meta(fs.join("h")).ino(), meta(fs.join("h-target")).ino());
}
as_root_and_rootless!(
    overriding,
    a_later_entry_with_the_same_name_overrides,
    a_later_entry_with_the_same_name_overrides_rootless
);

fn replaced_symlink_parent() {
    let (_dir, fs, _) = commit(&[
        Entry::dir("z/y/"),
        Entry::symlink("x", "z"),
        // Written through the symlink, into z/y.
        Entry::file("x/y/f1", "1"),
        // Now x is a real directory: x/y/f2 goes there, not through the old symlink.
        Entry::dir("x/"),
        Entry::file("x/y/f2", "2"),
    ]);
    assert_eq!(std::fs::read(fs.join("z/y/f1")).unwrap(), b"1");
    assert!(meta(fs.join("x")).is_dir());
    assert_eq!(std::fs::read(fs.join("x/y/f2")).unwrap(), b"2");
    assert!(!fs.join("z/y/f2").exists());
}
as_root_and_rootless!(
    replaced_symlink_parent,
    a_replaced_symlink_is_not_used_as_a_parent_again,
    a_replaced_symlink_is_not_used_as_a_parent_again_rootless
);

fn aufs() {
    let (_dir, fs, record) = commit(&[
        Entry::dir(".wh..wh..plnk/").mode(0o700),
        Entry::file(".wh..wh..plnk/1234.5678", "hardlink source"),
        Entry::file(".wh..wh.aufs", ""),
        Entry::dir(".wh..wh.orph/"),
        Entry::file("kept", "x"),
    ]);
    let names: Vec<_> = std::fs::read_dir(&fs)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["kept"]);
    assert_eq!(record.stats.whiteouts, 0);
    for name in [".wh..wh..plnk/", ".wh..wh..plnk/1234.5678", ".wh..wh.aufs"] {
        assert!(
            record
                .stats
                .skipped
                .iter()
                .any(|s| s.starts_with(&format!("{name}:")) && s.contains("aufs")),
            "{name}: {:?}",
            record.stats.skipped
        );
    }
}
as_root_and_rootless!(
    aufs,
    aufs_metadata_is_skipped,
    aufs_metadata_is_skipped_rootless
);

fn implicit_parents() {
    let (_dir, fs, _) = commit(&[
        Entry::file("a/b/c", "x"),
        Entry::file("p/q/r", "x"),
        Entry::dir("p/").mode(0o700),
    ]);
    assert!(meta(fs.join("a")).is_dir());
    assert_eq!(mode(fs.join("a")), 0o755);
    assert_eq!(mode(fs.join("a/b")), 0o755);
    assert_eq!(std::fs::read(fs.join("a/b/c")).unwrap(), b"x");
    assert_eq!(mode(fs.join("p")), 0o700);
    assert_eq!(mode(fs.join("p/q")), 0o755);
    if is_root() {
        assert_eq!(meta(fs.join("a/b")).uid(), 0);
    }
}
as_root_and_rootless!(
    implicit_parents,
    implicit_parents_are_created_0755,
    implicit_parents_are_created_0755_rootless
);

fn root_entry() {
    // `tar -C rootfs -cf layer.tar .` starts with `./`: the layer root's own metadata.
    let (_dir, fs, _) = commit(&[
        Entry::dir("./").mode(0o751).mtime(T1),
        Entry::dir("./etc/").mtime(T2),
        Entry::file("./etc/hostname", "box"),
    ]);
    assert_eq!(mode(&fs), 0o751);
    assert_eq!(meta(&fs).mtime(), T1 as i64);
    assert_eq!(meta(fs.join("etc")).mtime(), T2 as i64);
    assert_eq!(std::fs::read(fs.join("etc/hostname")).unwrap(), b"box");
}
as_root_and_rootless!(
    root_entry,
    a_root_entry_sets_the_layer_roots_metadata,
    a_root_entry_sets_the_layer_roots_metadata_rootless
);
