//! Hostile layers: every way a tar entry could reach outside the layer root is refused or
//! confined, nothing of a refused layer is committed, and a "victim" directory next to the
//! store (with a sentinel file) is never touched. Run as root and as the unprivileged user.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::io::{Cursor, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use common::{is_empty_dir, layer, try_commit};
use rootfs_cache::extract::{self, ExtractError, ExtractOptions, Limits, UnsafeName};
use rootfs_cache::{LayerOutcome, Store, StoreError};
use skiff_test_rig::as_root_and_rootless;
use skiff_test_rig::image::Layer;
use skiff_test_rig::{Compression, Entry};

/// Everything observable about a tree: type, mode, owner, size, times, inode, links, content,
/// link target and xattr names of every path.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        for child in std::fs::read_dir(dir).unwrap() {
            let path = child.unwrap().path();
            let m = std::fs::symlink_metadata(&path).unwrap();
            let content = if m.is_file() {
                format!("{:?}", std::fs::read(&path).unwrap())
            } else if m.file_type().is_symlink() {
                format!("-> {:?}", std::fs::read_link(&path).unwrap())
            } else {
                String::new()
            };
            out.insert(
                path.strip_prefix(root).unwrap().to_owned(),
                format!(
                    "mode={:o} uid={} gid={} size={} mtime={}.{} ctime={}.{} ino={} nlink={} \
                     xattrs={:?} {content}",
                    m.mode(),
                    m.uid(),
                    m.gid(),
                    m.size(),
                    m.mtime(),
                    m.mtime_nsec(),
                    m.ctime(),
                    m.ctime_nsec(),
                    m.ino(),
                    m.nlink(),
                    xattr_names(&path),
                ),
            );
            if m.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    let m = std::fs::symlink_metadata(root).unwrap();
    out.insert(
        PathBuf::from("."),
        format!(
            "mode={:o} mtime={}.{} ctime={}.{} xattrs={:?}",
            m.mode(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
            xattr_names(root)
        ),
    );
    walk(root, root, &mut out);
    out
}

/// The names of a path's extended attributes (not following a symlink), whatever namespace
/// this process can see.
fn xattr_names(path: &Path) -> Vec<String> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: `c` is NUL-terminated and `buf` writable for its whole length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return vec![format!("error {}", std::io::Error::last_os_error())];
    }
    buf.truncate(n as usize);
    buf.split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect()
}

/// A store and a victim directory side by side in one temp dir:
/// `<tmp>/store` and `<tmp>/victim/{sentinel,secret,sub/kept}`.
struct Rig {
    dir: tempfile::TempDir,
    store: Store,
    victim: PathBuf,
    before: BTreeMap<PathBuf, String>,
}

impl Rig {
    fn new() -> Self {
        Self::with_options(ExtractOptions::for_current_user())
    }

    fn with_options(options: ExtractOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with(dir.path().join("store"), options).unwrap();
        let victim = dir.path().join("victim");
        std::fs::create_dir_all(victim.join("sub")).unwrap();
        std::fs::write(victim.join("sentinel"), "original").unwrap();
        std::fs::write(victim.join("secret"), "host secret").unwrap();
        std::fs::write(victim.join("sub/kept"), "kept").unwrap();
        let before = snapshot(&victim);
        Self {
            dir,
            store,
            victim,
            before,
        }
    }

    /// The victim's absolute path, as a hostile layer would name it.
    fn victim_abs(&self) -> String {
        self.victim.to_str().unwrap().to_owned()
    }

    /// The victim's path as it appears inside a layer that followed a symlink to it.
    fn victim_in(&self, layer: &Path) -> PathBuf {
        layer.join(self.victim.strip_prefix("/").unwrap())
    }

    fn commit(&self, entries: &[Entry]) -> (Layer, Result<LayerOutcome, StoreError>) {
        let layer = layer(entries, Compression::Gzip);
        let result = try_commit(&self.store, &layer);
        (layer, result)
    }

    /// Commits a layer that must be refused; checks the error names `entry`, that nothing was
    /// committed and the victim is untouched; returns the extraction error.
    fn refused(&self, entries: &[Entry], entry: &str) -> ExtractError {
        let (_, result) = self.commit(entries);
        self.check_refused(result, entry)
    }

    /// [`Rig::refused`] for a layer written byte by byte.
    fn refused_tar(&self, tar: &[u8], entry: &str) -> ExtractError {
        let layer = Layer::from_tar(tar, Compression::Gzip, skiff_test_rig::Format::Oci).unwrap();
        let result = try_commit(&self.store, &layer);
        self.check_refused(result, entry)
    }

    fn check_refused(&self, result: Result<LayerOutcome, StoreError>, entry: &str) -> ExtractError {
        let err = result.unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&format!("{entry:?}")), "{msg}");
        assert!(msg.contains("nothing was committed"), "{msg}");
        self.assert_nothing_committed();
        self.assert_victim_untouched();
        match err {
            StoreError::Extract { source, .. } => source,
            other => panic!("expected an extraction error, got {other}"),
        }
    }

    /// Commits a layer that must be accepted, with everything inside it; returns its dir.
    fn accepted(&self, entries: &[Entry]) -> PathBuf {
        let (layer, result) = self.commit(entries);
        let outcome = result.unwrap();
        assert!(matches!(outcome, LayerOutcome::Committed(_)));
        self.assert_victim_untouched();
        assert_eq!(self.store.layers().unwrap(), [layer.diff_id]);
        assert!(is_empty_dir(&self.store.root().join("tmp")));
        self.store.layer_dir(&layer.diff_id)
    }

    fn assert_nothing_committed(&self) {
        assert!(self.store.layers().unwrap().is_empty());
        assert!(is_empty_dir(&self.store.root().join("tmp")));
        assert!(is_empty_dir(&self.store.root().join("layers/sha256")));
    }

    fn assert_victim_untouched(&self) {
        assert_eq!(
            snapshot(&self.victim),
            self.before,
            "the victim dir changed"
        );
        let top: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(
            top,
            ["store", "victim"],
            "something appeared next to the store"
        );
    }
}

fn unsafe_name(err: &ExtractError) -> (String, UnsafeName) {
    match err {
        ExtractError::UnsafeName { path, reason } => (path.clone(), *reason),
        other => panic!("expected an unsafe name error, got {other}"),
    }
}

fn bad_hardlink(err: &ExtractError) -> (String, String, String) {
    match err {
        ExtractError::BadHardlink {
            path,
            target,
            reason,
        } => (path.clone(), target.clone(), reason.clone()),
        other => panic!("expected a bad hard link error, got {other}"),
    }
}

// ---- names ----

fn absolute_names() {
    let rig = Rig::new();
    for name in [
        "/x".to_owned(),
        format!("{}/pwned", rig.victim_abs()),
        format!("{}/sentinel", rig.victim_abs()),
    ] {
        let err = rig.refused(
            &[Entry::file("ok", "x"), Entry::file(&name, "pwned")],
            &name,
        );
        assert_eq!(unsafe_name(&err), (name.clone(), UnsafeName::Absolute));
    }
    assert!(!Path::new("/x").exists());
}
as_root_and_rootless!(
    absolute_names,
    absolute_names_are_refused,
    absolute_names_are_refused_rootless
);

#[test]
fn dotdot_names_are_refused() {
    let rig = Rig::new();
    // From the layer root <store>/tmp/<staging>/fs, four `..` reach the directory holding the
    // victim: these names would hit it exactly if they were followed.
    for name in [
        "../x",
        "../../../../victim/pwned",
        "../../../../victim/sentinel",
    ] {
        let err = rig.refused(&[Entry::dir("d/"), Entry::file(name, "pwned")], name);
        assert_eq!(unsafe_name(&err), (name.to_owned(), UnsafeName::DotDot));
    }
}

#[test]
fn dotdot_inside_a_name_is_refused() {
    let rig = Rig::new();
    for name in [
        "a/../../x",
        "a/../../../../../victim/pwned",
        "a/b/../../../../../../victim/sentinel",
        "./a/..",
    ] {
        let err = rig.refused(&[Entry::dir("a/b/"), Entry::file(name, "pwned")], name);
        assert_eq!(unsafe_name(&err), (name.to_owned(), UnsafeName::DotDot));
    }
    // The same refusal for directories and symlinks named that way.
    let name = "a/../../../../../victim/newdir/";
    let err = rig.refused(&[Entry::dir(name)], name);
    assert_eq!(unsafe_name(&err).1, UnsafeName::DotDot);
    let name = "a/../../../../../victim/link";
    let err = rig.refused(&[Entry::symlink(name, "/")], name);
    assert_eq!(unsafe_name(&err).1, UnsafeName::DotDot);
}

#[test]
fn overlong_name_component_is_refused() {
    let rig = Rig::new();
    let long = "x".repeat(256);
    for name in [format!("{long}/f"), format!("d/{long}")] {
        let err = rig.refused(&[Entry::file(&name, "x")], &name);
        assert_eq!(
            unsafe_name(&err),
            (name.clone(), UnsafeName::ComponentTooLong)
        );
    }
    // 255 bytes is a legal component.
    let fs = rig.accepted(&[Entry::file(format!("d/{}", "y".repeat(255)), "ok")]);
    assert_eq!(
        std::fs::read(fs.join("d").join("y".repeat(255))).unwrap(),
        b"ok"
    );
}

// ---- symlinks planted by earlier entries ----

fn absolute_symlink() {
    let rig = Rig::new();
    let fs = rig.accepted(&[
        Entry::symlink("evil", rig.victim_abs()),
        Entry::file("evil/pwned", "pwned"),
        Entry::file("evil/sentinel", "overwritten"),
        Entry::dir("evil/newdir/"),
        Entry::file("evil/sub/kept", "overwritten"),
    ]);
    // Resolved as in a chroot: the layer's own <victim path>, never the host's.
    let inside = rig.victim_in(&fs);
    assert_eq!(std::fs::read(inside.join("pwned")).unwrap(), b"pwned");
    assert_eq!(
        std::fs::read(inside.join("sentinel")).unwrap(),
        b"overwritten"
    );
    assert!(inside.join("newdir").is_dir());
    assert_eq!(
        std::fs::read(inside.join("sub/kept")).unwrap(),
        b"overwritten"
    );
    // The link itself is kept verbatim.
    assert_eq!(
        std::fs::read_link(fs.join("evil")).unwrap(),
        Path::new(&rig.victim_abs())
    );
}
as_root_and_rootless!(
    absolute_symlink,
    absolute_symlink_is_followed_inside_the_layer,
    absolute_symlink_is_followed_inside_the_layer_rootless
);

fn climbing_symlink() {
    let rig = Rig::new();
    let fs = rig.accepted(&[
        Entry::symlink("up", "../../../../.."),
        Entry::file("up/pwned", "pwned"),
        // Four `..` from the layer root would be exactly the victim's parent.
        Entry::symlink("up4", "../../../../victim"),
        Entry::file("up4/pwned", "pwned"),
        Entry::file("up4/sentinel", "overwritten"),
        Entry::dir("d/e/"),
        Entry::symlink("d/e/deep", "../../../../../../../../victim"),
        Entry::file("d/e/deep/pwned2", "pwned"),
    ]);
    // `..` stops at the layer root.
    assert_eq!(std::fs::read(fs.join("pwned")).unwrap(), b"pwned");
    assert_eq!(std::fs::read(fs.join("victim/pwned")).unwrap(), b"pwned");
    assert_eq!(
        std::fs::read(fs.join("victim/sentinel")).unwrap(),
        b"overwritten"
    );
    assert_eq!(std::fs::read(fs.join("victim/pwned2")).unwrap(), b"pwned");
}
as_root_and_rootless!(
    climbing_symlink,
    relative_symlink_climbing_out_stays_inside,
    relative_symlink_climbing_out_stays_inside_rootless
);

fn symlink_chain() {
    let rig = Rig::new();
    let fs = rig.accepted(&[
        Entry::dir("c/"),
        Entry::symlink("a", "b"),
        Entry::symlink("b", "c/../d"),
        Entry::symlink("d", rig.victim_abs()),
        Entry::file("a/x", "pwned"),
        Entry::file("a/sub/kept", "overwritten"),
    ]);
    let inside = rig.victim_in(&fs);
    assert_eq!(std::fs::read(inside.join("x")).unwrap(), b"pwned");
    assert_eq!(
        std::fs::read(inside.join("sub/kept")).unwrap(),
        b"overwritten"
    );
    assert!(is_empty_dir(&fs.join("c")));
}
as_root_and_rootless!(
    symlink_chain,
    symlink_chain_stays_inside,
    symlink_chain_stays_inside_rootless
);

fn symlink_loop() {
    let rig = Rig::new();
    let err = rig.refused(
        &[
            Entry::symlink("a", "b"),
            Entry::symlink("b", "a"),
            Entry::file("a/x", "x"),
        ],
        "a/x",
    );
    match err {
        ExtractError::Io { path, source, .. } => {
            assert_eq!(path, "a/x");
            assert_eq!(source.raw_os_error(), Some(libc::ELOOP), "{source}");
        }
        other => panic!("expected ELOOP, got {other}"),
    }
}
as_root_and_rootless!(
    symlink_loop,
    symlink_loop_is_an_error,
    symlink_loop_is_an_error_rootless
);

// ---- hard links ----

fn hardlink_absolute() {
    let rig = Rig::new();
    let passwd_links = std::fs::metadata("/etc/passwd").unwrap().nlink();
    for target in [
        "/etc/passwd".to_owned(),
        format!("{}/secret", rig.victim_abs()),
    ] {
        let err = rig.refused(&[Entry::file("f", "x"), Entry::hardlink("h", &target)], "h");
        let (path, t, reason) = bad_hardlink(&err);
        assert_eq!((path.as_str(), t.as_str()), ("h", target.as_str()));
        assert!(reason.contains("absolute"), "{reason}");
    }
    assert_eq!(
        std::fs::metadata("/etc/passwd").unwrap().nlink(),
        passwd_links
    );
}
as_root_and_rootless!(
    hardlink_absolute,
    hardlink_to_an_absolute_path_is_refused,
    hardlink_to_an_absolute_path_is_refused_rootless
);

fn hardlink_dotdot() {
    let rig = Rig::new();
    for target in ["../outside", "../../../../victim/secret", "d/../../x"] {
        let err = rig.refused(&[Entry::dir("d/"), Entry::hardlink("d/h", target)], "d/h");
        let (path, t, reason) = bad_hardlink(&err);
        assert_eq!((path.as_str(), t.as_str()), ("d/h", target));
        assert!(reason.contains("`..`"), "{reason}");
    }
}
as_root_and_rootless!(
    hardlink_dotdot,
    hardlink_climbing_out_is_refused,
    hardlink_climbing_out_is_refused_rootless
);

fn hardlink_through_symlink() {
    let rig = Rig::new();
    let attacks: [(Vec<Entry>, &str); 3] = [
        (
            vec![
                Entry::symlink("s", rig.victim_abs()),
                Entry::hardlink("h", "s/secret"),
            ],
            "s/secret",
        ),
        (
            vec![
                Entry::symlink("up", "../../../.."),
                Entry::hardlink("h", "up/victim/secret"),
            ],
            "up/victim/secret",
        ),
        (
            vec![
                Entry::symlink("a", "b"),
                Entry::symlink("b", format!("{}/sub", rig.victim_abs())),
                Entry::hardlink("h", "a/kept"),
            ],
            "a/kept",
        ),
    ];
    for (entries, target) in attacks {
        let err = rig.refused(&entries, "h");
        let (path, t, reason) = bad_hardlink(&err);
        assert_eq!((path.as_str(), t.as_str()), ("h", target));
        assert!(reason.contains("is not in this layer"), "{reason}");
    }
    assert_eq!(
        std::fs::metadata(rig.victim.join("secret"))
            .unwrap()
            .nlink(),
        1
    );
}
as_root_and_rootless!(
    hardlink_through_symlink,
    hardlink_through_a_planted_symlink_does_not_link_the_host_file,
    hardlink_through_a_planted_symlink_does_not_link_the_host_file_rootless
);

fn hardlink_to_symlink() {
    let rig = Rig::new();
    let secret = format!("{}/secret", rig.victim_abs());
    // The target is itself a symlink to the host file: the link is to the symlink, never to
    // what it points at.
    let fs = rig.accepted(&[Entry::symlink("s", &secret), Entry::hardlink("h", "s")]);
    let h = std::fs::symlink_metadata(fs.join("h")).unwrap();
    assert!(h.file_type().is_symlink());
    assert_eq!(
        h.ino(),
        std::fs::symlink_metadata(fs.join("s")).unwrap().ino()
    );
    assert_eq!(
        std::fs::read_link(fs.join("h")).unwrap(),
        Path::new(&secret)
    );
    assert_eq!(
        std::fs::metadata(rig.victim.join("secret"))
            .unwrap()
            .nlink(),
        1
    );
}
as_root_and_rootless!(
    hardlink_to_symlink,
    hardlink_to_a_planted_symlink_links_the_symlink_itself,
    hardlink_to_a_planted_symlink_links_the_symlink_itself_rootless
);

// ---- whiteouts ----

fn whiteout_through_symlink() {
    let rig = Rig::new();
    let fs = rig.accepted(&[
        Entry::symlink("s", rig.victim_abs()),
        Entry::whiteout("s/sentinel"),
        Entry::whiteout("s/sub"),
        Entry::symlink("up", "../../../.."),
        Entry::whiteout("up/victim/secret"),
    ]);
    let inside = rig.victim_in(&fs);
    for wh in [
        inside.join("sentinel"),
        inside.join("sub"),
        fs.join("victim/secret"),
    ] {
        let m = std::fs::symlink_metadata(&wh).unwrap();
        assert!(m.file_type().is_char_device(), "{}", wh.display());
        assert_eq!(m.rdev(), 0);
    }
}
as_root_and_rootless!(
    whiteout_through_symlink,
    whiteout_through_a_symlink_stays_inside,
    whiteout_through_a_symlink_stays_inside_rootless
);

fn opaque_through_symlink() {
    let rig = Rig::new();
    let fs = rig.accepted(&[
        Entry::symlink("s", rig.victim_abs()),
        Entry::opaque("s"),
        Entry::symlink("t", format!("{}/sub", rig.victim_abs())),
        Entry::opaque("t"),
    ]);
    let name = match rig.store.options().overlay_xattrs {
        rootfs_cache::OverlayXattrs::Trusted => "trusted.overlay.opaque",
        rootfs_cache::OverlayXattrs::User => "user.overlay.opaque",
    };
    // The marker went on the layer's own directories...
    let inside = rig.victim_in(&fs);
    for dir in [inside.clone(), inside.join("sub")] {
        assert_eq!(
            rootfs_cache::read_xattr(&dir, name).unwrap().as_deref(),
            Some(&b"y"[..]),
            "{}",
            dir.display()
        );
    }
    // ...and not on the host's (the snapshot compares xattr names too).
    for dir in [rig.victim.clone(), rig.victim.join("sub")] {
        assert_eq!(rootfs_cache::read_xattr(&dir, name).unwrap(), None);
    }
    // The symlinks were not replaced by directories.
    assert!(
        std::fs::symlink_metadata(fs.join("s"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}
as_root_and_rootless!(
    opaque_through_symlink,
    opaque_marker_through_a_symlink_stays_inside,
    opaque_marker_through_a_symlink_stays_inside_rootless
);

// ---- entries over planted symlinks ----

fn file_over_symlink() {
    let rig = Rig::new();
    let sentinel = format!("{}/sentinel", rig.victim_abs());
    let fs = rig.accepted(&[
        Entry::symlink("l", &sentinel),
        Entry::file("l", "pwned").mode(0o600),
        Entry::symlink("f", &sentinel),
        Entry::fifo("f"),
        Entry::symlink("m", &sentinel),
        Entry::symlink("m", "elsewhere"),
        Entry::file("target", "t"),
        Entry::symlink("n", &sentinel),
        Entry::hardlink("n", "target"),
    ]);
    let l = std::fs::symlink_metadata(fs.join("l")).unwrap();
    assert!(l.is_file());
    assert_eq!(l.mode() & 0o7777, 0o600);
    assert_eq!(std::fs::read(fs.join("l")).unwrap(), b"pwned");
    assert!(
        std::fs::symlink_metadata(fs.join("f"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert_eq!(
        std::fs::read_link(fs.join("m")).unwrap(),
        Path::new("elsewhere")
    );
    assert_eq!(std::fs::read(fs.join("n")).unwrap(), b"t");
    assert_eq!(std::fs::metadata(fs.join("target")).unwrap().nlink(), 2);
}
as_root_and_rootless!(
    file_over_symlink,
    file_over_a_symlink_replaces_it,
    file_over_a_symlink_replaces_it_rootless
);

fn dir_over_symlink() {
    let rig = Rig::new();
    let fs = rig.accepted(&[
        Entry::symlink("d", rig.victim_abs()),
        Entry::dir("d/").mode(0o700).mtime(1_000_000_000),
        Entry::file("d/f", "x"),
        Entry::symlink("e", format!("{}/sub", rig.victim_abs())),
        Entry::dir("e/").mode(0o500),
    ]);
    let d = std::fs::symlink_metadata(fs.join("d")).unwrap();
    assert!(d.is_dir());
    assert_eq!(d.mode() & 0o7777, 0o700);
    assert_eq!(d.mtime(), 1_000_000_000);
    assert_eq!(std::fs::read(fs.join("d/f")).unwrap(), b"x");
    let e = std::fs::symlink_metadata(fs.join("e")).unwrap();
    assert!(e.is_dir());
    assert_eq!(e.mode() & 0o7777, 0o500);
    assert!(is_empty_dir(&fs.join("e")));
}
as_root_and_rootless!(
    dir_over_symlink,
    directory_over_a_symlink_replaces_it,
    directory_over_a_symlink_replaces_it_rootless
);

// ---- limits ----

fn limited(max_entries: u64, max_file_bytes: u64) -> ExtractOptions {
    ExtractOptions {
        limits: Limits {
            max_entries,
            max_file_bytes,
        },
        ..ExtractOptions::for_current_user()
    }
}

#[test]
fn entry_count_limit() {
    let many: Vec<Entry> = (0..11).map(|i| Entry::file(format!("f{i}"), "x")).collect();

    // Directly: ten entries pass, the eleventh is refused by name.
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("fs");
    std::fs::create_dir(&dest).unwrap();
    let tar = skiff_test_rig::entry::tar(&many[..10]).unwrap();
    let stats = extract::extract(Cursor::new(tar), &dest, &limited(10, u64::MAX)).unwrap();
    assert_eq!(stats.entries, 10);
    let dest2 = dir.path().join("fs2");
    std::fs::create_dir(&dest2).unwrap();
    let tar = skiff_test_rig::entry::tar(&many).unwrap();
    let err = extract::extract(Cursor::new(tar), &dest2, &limited(10, u64::MAX)).unwrap_err();
    match &err {
        ExtractError::Limit { path, what, limit } => {
            assert_eq!((path.as_str(), *what, *limit), ("f10", "entries", 10));
        }
        other => panic!("expected the entry limit, got {other}"),
    }
    assert!(!dest2.join("f10").exists());

    // Through the store: nothing committed.
    let rig = Rig::with_options(limited(10, u64::MAX));
    let err = rig.refused(&many, "f10");
    assert!(
        matches!(
            err,
            ExtractError::Limit {
                what: "entries",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn file_bytes_limit() {
    let entries = [
        Entry::file("a", vec![1u8; 600]),
        Entry::dir("d/"),
        Entry::file("d/b", vec![2u8; 401]),
    ];
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("fs");
    std::fs::create_dir(&dest).unwrap();
    let tar = skiff_test_rig::entry::tar(&entries).unwrap();
    let err = extract::extract(Cursor::new(&tar), &dest, &limited(u64::MAX, 1000)).unwrap_err();
    match &err {
        ExtractError::Limit { path, what, limit } => {
            assert_eq!(path, "d/b");
            assert_eq!(*limit, 1000);
            assert!(what.contains("bytes"), "{what}");
        }
        other => panic!("expected the byte limit, got {other}"),
    }
    // Refused before any of its content was written.
    assert!(!dest.join("d/b").exists());
    // Exactly at the limit is fine.
    let dest2 = dir.path().join("fs2");
    std::fs::create_dir(&dest2).unwrap();
    let stats = extract::extract(Cursor::new(&tar), &dest2, &limited(u64::MAX, 1001)).unwrap();
    assert_eq!(stats.file_bytes, 1001);

    let rig = Rig::with_options(limited(u64::MAX, 1000));
    let err = rig.refused(&entries, "d/b");
    assert!(matches!(err, ExtractError::Limit { .. }), "{err}");
}

/// A PAX `size` record overrides the header's size field: a header claiming 0 bytes can carry
/// any amount of content, which must count against the limit all the same.
#[test]
fn pax_size_cannot_smuggle_content_past_the_byte_limit() {
    let mut builder = tar::Builder::new(Vec::new());
    let content = vec![7u8; 20_000];
    builder
        .append_pax_extensions([("size", b"20000".as_slice())])
        .unwrap();
    let mut header = tar::Header::new_ustar();
    header.set_path("big").unwrap();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_size(0);
    header.set_cksum();
    builder.append(&header, content.as_slice()).unwrap();
    let tar = builder.into_inner().unwrap();

    let dir = tempfile::tempdir().unwrap();
    // Unlimited, the file is the PAX size.
    let dest = dir.path().join("fs");
    std::fs::create_dir(&dest).unwrap();
    extract::extract(Cursor::new(&tar), &dest, &limited(u64::MAX, u64::MAX)).unwrap();
    assert_eq!(std::fs::read(dest.join("big")).unwrap(), content);
    // Limited, it is refused before a byte is written.
    let dest = dir.path().join("fs2");
    std::fs::create_dir(&dest).unwrap();
    let err = extract::extract(Cursor::new(&tar), &dest, &limited(u64::MAX, 10_000)).unwrap_err();
    assert!(
        matches!(&err, ExtractError::Limit { path, .. } if path == "big"),
        "{err}"
    );
    assert!(!dest.join("big").exists());
}

// ---- long names, PAX headers, xattrs: bounded before they are read ----

/// A header block of `kind` named `name` whose size field says `size` (base-256 when large).
fn raw_header(name: &str, kind: tar::EntryType, size: u64) -> Vec<u8> {
    let mut header = tar::Header::new_gnu();
    header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    header.set_entry_type(kind);
    header.set_mode(0o644);
    header.set_size(size);
    header.set_cksum();
    header.as_bytes().to_vec()
}

/// Counts the bytes read through it.
struct Counted<'a, R>(R, &'a std::cell::Cell<u64>);

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.read(buf)?;
        self.1.set(self.1.get() + n as u64);
        Ok(n)
    }
}

/// Extracts `prefix` then as many bytes as its last header claims (generated, never held):
/// the refusal must come from the header, having read only a few KiB. Returns the error.
fn refused_from_header(prefix: &[u8], claimed: u64) -> ExtractError {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("fs");
    std::fs::create_dir(&dest).unwrap();
    let read = std::cell::Cell::new(0);
    let stream = Counted(
        Cursor::new(prefix).chain(Read::take(std::io::repeat(b'a'), claimed)),
        &read,
    );
    let err = extract::extract(stream, &dest, &ExtractOptions::for_current_user()).unwrap_err();
    assert!(
        read.get() <= prefix.len() as u64 + 8192,
        "read {} bytes before refusing: {err}",
        read.get()
    );
    err
}

#[track_caller]
fn assert_limit(err: &ExtractError, want_path: &str, want_what: &str, want_limit: u64) {
    match err {
        ExtractError::Limit { path, what, limit } => {
            assert_eq!((path.as_str(), *limit), (want_path, want_limit), "{err}");
            assert!(what.contains(want_what), "{err}");
            assert!(err.to_string().contains(&want_limit.to_string()), "{err}");
        }
        other => panic!("expected a limit, got {other}"),
    }
}

#[test]
fn gnu_long_name_claiming_a_gib_is_refused_from_its_header() {
    let mut tar = skiff_test_rig::entry::tar(&[Entry::file("before", "x")]).unwrap();
    tar.truncate(tar.len() - 1024); // no end-of-archive blocks
    tar.extend(raw_header(
        "././@LongLink",
        tar::EntryType::GNULongName,
        1 << 30,
    ));
    let err = refused_from_header(&tar, 1 << 30);
    assert_limit(
        &err,
        "././@LongLink",
        "GNU long name",
        extract::MAX_LONG_NAME,
    );

    // Through the store (the layer carries a few KiB of the name): nothing committed.
    tar.extend(vec![b'a'; 8192]);
    let err = Rig::new().refused_tar(&tar, "././@LongLink");
    assert_limit(
        &err,
        "././@LongLink",
        "GNU long name",
        extract::MAX_LONG_NAME,
    );
}

#[test]
fn gnu_long_link_name_with_a_base256_size_is_refused_from_its_header() {
    let header = raw_header("././@LongLink", tar::EntryType::GNULongLink, 1 << 40);
    assert_eq!(header[124] & 0x80, 0x80, "a base-256 size field");
    let err = refused_from_header(&header, 1 << 40);
    assert_limit(&err, "././@LongLink", "link name", extract::MAX_LONG_NAME);
}

#[test]
fn pax_header_claiming_100_mib_is_refused_from_its_header() {
    for kind in [tar::EntryType::XHeader, tar::EntryType::XGlobalHeader] {
        let header = raw_header("PaxHeaders.0/big", kind, 100 << 20);
        let err = refused_from_header(&header, 100 << 20);
        assert_limit(
            &err,
            "PaxHeaders.0/big",
            "PAX extended header",
            extract::MAX_PAX_HEADER,
        );
    }
    let mut tar = raw_header("PaxHeaders.0/big", tar::EntryType::XHeader, 100 << 20);
    tar.extend(vec![b'a'; 8192]);
    let err = Rig::new().refused_tar(&tar, "PaxHeaders.0/big");
    assert!(matches!(err, ExtractError::Limit { .. }), "{err}");
}

#[test]
fn huge_xattrs_are_refused() {
    // One value over XATTR_SIZE_MAX (its PAX header is well under 1 MiB).
    let rig = Rig::new();
    let err = rig.refused(
        &[Entry::file("f", "x").xattr("user.big", vec![b'v'; 65 << 10])],
        "f",
    );
    assert_limit(&err, "f", "xattr value", extract::MAX_XATTR_VALUE);
    // Each value at the bound, over 1 MiB together: the PAX header carrying them is refused.
    let mut many = Entry::file("g", "x");
    for i in 0..17 {
        many = many.xattr(format!("user.x{i}"), vec![b'v'; 64 << 10]);
    }
    // tar-rs writes PAX headers without a name.
    let err = rig.refused(&[many], "(unnamed PAX extended header)");
    assert_limit(
        &err,
        "(unnamed PAX extended header)",
        "PAX extended header",
        extract::MAX_PAX_HEADER,
    );
}

#[test]
fn directory_xattrs_held_until_the_end_are_bounded() {
    // Each directory's metadata waits for the layer's end: directories with ~1 MiB of
    // xattrs each go over the 64 MiB held at the 69th.
    let dir_with_xattrs = |i: usize| {
        let mut dir = Entry::dir(format!("d{i}/"));
        for j in 0..15 {
            dir = dir.xattr(format!("user.x{j}"), vec![b'v'; 64 << 10]);
        }
        dir
    };
    let entries: Vec<Entry> = (0..70).map(dir_with_xattrs).collect();
    let err = Rig::new().refused(&entries, "d68/");
    assert_limit(&err, "d68/", "directory xattrs", extract::MAX_DIR_XATTRS);
}

/// A path of `len` bytes in components of at most 100, and its directories.
fn long_path_entries(len: usize) -> (String, Vec<String>) {
    let mut path = String::new();
    let mut dirs = Vec::new();
    while path.len() + 101 < len {
        path.push_str(&"d".repeat(99));
        path.push('/');
        dirs.push(path.clone());
    }
    path.push_str(&"f".repeat(len - path.len()));
    (path, dirs)
}

#[test]
fn long_names_and_pax_headers_within_the_bounds_extract() {
    let mut builder = tar::Builder::new(Vec::new());
    let mut expect = Vec::new();
    for len in [200, 4000, 4096] {
        let (path, dirs) = long_path_entries(len);
        for d in dirs {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            builder
                .append_data(&mut header, &d, std::io::empty())
                .unwrap();
        }
        // GNU long name (`L`) for the file, GNU long link name (`K`) for a symlink to it.
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(3);
        builder
            .append_data(&mut header, &path, b"abc".as_slice())
            .unwrap();
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_mode(0o777);
        header.set_size(0);
        // A symlink's target is at most PATH_MAX with its NUL.
        let link = (len < 4096).then(|| format!("link{len}"));
        if let Some(link) = &link {
            builder.append_link(&mut header, link, &path).unwrap();
        }
        expect.push((path, link));
    }
    let mut tar = builder.into_inner().unwrap();
    let long_names = tar
        .chunks(512)
        .filter(|b| b.starts_with(b"././@LongLink"))
        .count();
    assert!(long_names >= 5, "GNU long names and link names written");
    // And a PAX header near its bound: xattrs (where this user may set them) and a path.
    tar.truncate(tar.len() - 1024);
    let (pax_path, pax_dirs) = long_path_entries(3000);
    let mut pax: Vec<Entry> = pax_dirs.iter().map(Entry::dir).collect();
    pax.push(
        Entry::file(pax_path.clone(), "pax")
            .xattr("user.a", vec![b'v'; 64 << 10])
            .xattr("user.b", vec![b'w'; 64 << 10]),
    );
    tar.extend(skiff_test_rig::entry::tar(&pax).unwrap());

    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("fs");
    std::fs::create_dir(&dest).unwrap();
    extract::extract(
        Cursor::new(&tar),
        &dest,
        &ExtractOptions::for_current_user(),
    )
    .unwrap();
    for (path, link) in &expect {
        assert_eq!(read_deep(&dest, path), b"abc");
        if let Some(link) = link {
            assert_eq!(
                std::fs::read_link(dest.join(link)).unwrap(),
                PathBuf::from(path)
            );
        }
    }
    assert_eq!(read_deep(&dest, &pax_path), b"pax");

    // Through the store too.
    let layer = Layer::from_tar(&tar, Compression::Gzip, skiff_test_rig::Format::Oci).unwrap();
    let rig = Rig::new();
    assert!(matches!(
        try_commit(&rig.store, &layer).unwrap(),
        LayerOutcome::Committed(_)
    ));
    rig.assert_victim_untouched();
}

/// Reads `root/path` where that is longer than PATH_MAX: through an open directory halfway.
fn read_deep(root: &Path, path: &str) -> Vec<u8> {
    let cut = path[..path.len() / 2].rfind('/').unwrap();
    let half = std::fs::File::open(root.join(&path[..cut])).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&half);
    std::fs::read(format!("/proc/self/fd/{fd}{}", &path[cut..])).unwrap()
}

/// The guard finds every header where `tar` does: after content whose size a PAX `size` record
/// gives (content that looks like a header is content), and after GNU sparse extension blocks.
#[test]
fn headers_are_found_after_pax_sizes_and_sparse_extension_blocks() {
    let hostile_l = raw_header("././@LongLink", tar::EntryType::GNULongName, 1 << 30);
    // A file whose header says 0 bytes and whose PAX size says 2048: its content starts with
    // what looks like a hostile long-name header.
    let pax_sized = |content: &[u8]| {
        let mut builder = tar::Builder::new(Vec::new());
        builder
            .append_pax_extensions([("size", b"2048".as_slice())])
            .unwrap();
        let mut header = tar::Header::new_ustar();
        header.set_path("sized").unwrap();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(0);
        header.set_cksum();
        builder.append(&header, content).unwrap();
        let mut tar = builder.into_inner().unwrap();
        tar.truncate(tar.len() - 1024);
        tar
    };
    let mut content = hostile_l.clone();
    content.resize(2048, 0);
    let mut tar = pax_sized(&content);
    tar.extend(vec![0; 1024]);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("fs");
    std::fs::create_dir(&dest).unwrap();
    extract::extract(
        Cursor::new(&tar),
        &dest,
        &ExtractOptions::for_current_user(),
    )
    .unwrap();
    assert_eq!(std::fs::read(dest.join("sized")).unwrap(), content);
    // The real header after it is checked.
    let mut tar = pax_sized(&[0; 2048]);
    tar.extend(&hostile_l);
    let err = refused_from_header(&tar, 1 << 30);
    assert_limit(
        &err,
        "././@LongLink",
        "GNU long name",
        extract::MAX_LONG_NAME,
    );

    // GNU sparse: 27 chunks of 512 bytes, 4 in the header, 21 in a first extension block and 2
    // in a second.
    const CHUNKS: u64 = 27;
    let sparse = |after: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_path("sparse").unwrap();
        header.set_entry_type(tar::EntryType::GNUSparse);
        header.set_mode(0o644);
        header.set_size(CHUNKS * 512);
        let chunk = |field: &mut tar::GnuSparseHeader, i: u64| {
            field.offset = octal12(i * 8192);
            field.numbytes = octal12(512);
        };
        let mut ext1 = tar::GnuExtSparseHeader::new();
        let mut ext2 = tar::GnuExtSparseHeader::new();
        {
            let gnu = header.as_gnu_mut().unwrap();
            for i in 0..4 {
                chunk(&mut gnu.sparse[i], i as u64);
            }
            gnu.isextended[0] = 1;
            gnu.realsize = octal12(CHUNKS * 8192);
            for i in 0..21 {
                chunk(&mut ext1.sparse_mut()[i], 4 + i as u64);
            }
            ext1.set_is_extended(true);
            chunk(&mut ext2.sparse_mut()[0], 25);
            chunk(&mut ext2.sparse_mut()[1], 26);
            // The real end: an empty chunk there.
            ext2.sparse_mut()[2].offset = octal12(CHUNKS * 8192);
            ext2.sparse_mut()[2].numbytes = octal12(0);
        }
        header.set_cksum();
        let mut tar = header.as_bytes().to_vec();
        tar.extend(ext1.as_bytes());
        tar.extend(ext2.as_bytes());
        for i in 0..CHUNKS {
            // Chunks 0 and 4 (where headers would be were an extension block missed) look
            // like hostile headers.
            if i == 0 || i == 4 {
                tar.extend(&hostile_l);
            } else {
                tar.extend([b'0' + i as u8; 512]);
            }
        }
        tar.extend(after);
        tar
    };
    let mut tar = sparse(&skiff_test_rig::entry::tar(&[Entry::file("after", "ok")]).unwrap());
    let dest = dir.path().join("fs2");
    std::fs::create_dir(&dest).unwrap();
    extract::extract(
        Cursor::new(&tar),
        &dest,
        &ExtractOptions::for_current_user(),
    )
    .unwrap();
    let data = std::fs::read(dest.join("sparse")).unwrap();
    assert_eq!(data.len() as u64, CHUNKS * 8192);
    assert_eq!(&data[..512], hostile_l.as_slice());
    assert_eq!(&data[4 * 8192..4 * 8192 + 512], hostile_l.as_slice());
    assert_eq!(&data[26 * 8192..26 * 8192 + 512], [b'0' + 26; 512]);
    assert_eq!(std::fs::read(dest.join("after")).unwrap(), b"ok");
    tar = sparse(&hostile_l);
    let err = refused_from_header(&tar, 1 << 30);
    assert_limit(
        &err,
        "././@LongLink",
        "GNU long name",
        extract::MAX_LONG_NAME,
    );
}

fn octal12(n: u64) -> [u8; 12] {
    let s = format!("{n:011o}\0");
    s.as_bytes().try_into().unwrap()
}
