//! The image's tree listed ahead of a payload that walks it (`tar`, `find`, `cp -a`, `du`):
//! once the payload has listed [`LIST_AFTER`] directories, a thread of the serving process
//! lists every directory of the mount, the payload's first one's first. Listings come from the
//! index (nothing is fetched), and the kernel keeps what they bring: each directory's entries
//! (FUSE's directory cache: the file system answers no opendir), the entries' inodes and
//! attributes, and, through the listing's push, the small files of committed layers in the
//! page cache. The payload's own walk then waits for none of these round trips.
//!
//! A walk also tells the background pull to stop giving way to the payload's reads (as heavy
//! reads do): a payload that lists [`LIST_AFTER`] directories, or reads [`SWEEP_FILES`] files of
//! one directory one after another in listing order, as `tar` and `cp -r` do from their first
//! directory on, will read much of the image, which the pull's streams bring faster than
//! one read after another.
//!
//! A walk that reads files (the second kind) starts the listing at once, and the files of
//! every size under its root (see [`Ahead::reads_through`]) are pushed, not only the small
//! ones: the payload is about to read them all.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

/// How many different directories the payload lists before the whole tree is listed for it:
/// more than a start reads (python3's imports list a handful), fewer than a walk's first
/// moment.
pub(crate) const LIST_AFTER: usize = 32;

/// How many files of one directory, read one after another in listing order, make a walk:
/// python3's, git's, node's and java's starts read none so many in order.
pub(crate) const SWEEP_FILES: usize = 32;

/// The payload's latest run of files of one directory read in listing order.
#[derive(Default)]
struct Sweep {
    parent: u64,
    /// The last file's path (files of one directory sort by path as by name).
    last: String,
    files: usize,
    seen: bool,
}

#[derive(Default)]
struct State {
    /// The directories listed so far, until the walk starts.
    listed: HashSet<u64>,
    /// The first directory listed, relative to the image's root.
    first: Option<PathBuf>,
    /// The root of a walk that reads files, once seen ("" for the image's root).
    reads_under: Option<String>,
    start: bool,
    stop: bool,
}

/// Shared by the file system (which counts the payload's listings) and the listing thread.
#[derive(Default)]
pub(crate) struct Ahead {
    state: Mutex<State>,
    changed: Condvar,
    sweep: Mutex<Sweep>,
    /// Told when the walk starts.
    foreground: Option<Arc<crate::registry::Foreground>>,
}

impl Ahead {
    /// Telling `foreground` (the background pull's gate) when the walk starts.
    pub(crate) fn telling(foreground: Option<Arc<crate::registry::Foreground>>) -> Self {
        Self {
            foreground,
            ..Self::default()
        }
    }

    /// The payload started listing directory `ino`; `path` (relative to the image's root) is
    /// asked for the first one only.
    pub(crate) fn listed(&self, ino: u64, path: impl FnOnce() -> PathBuf) {
        let Ok(mut s) = self.state.lock() else { return };
        if s.start || s.stop || !s.listed.insert(ino) {
            return;
        }
        if s.first.is_none() {
            s.first = Some(path());
        }
        if s.listed.len() >= LIST_AFTER {
            self.walks();
            self.start_listing(&mut s);
        }
    }

    /// Wakes the listing thread (the directories counted are no longer needed).
    fn start_listing(&self, s: &mut State) {
        s.start = true;
        s.listed = HashSet::new();
        self.changed.notify_all();
    }

    /// The payload starts reading the file at `path` of directory `parent`.
    pub(crate) fn file_read(&self, parent: u64, path: &str) {
        let Ok(mut s) = self.sweep.lock() else { return };
        if s.seen {
            return;
        }
        if s.parent == parent && path > s.last.as_str() {
            s.files += 1;
        } else {
            s.parent = parent;
            s.files = 1;
        }
        path.clone_into(&mut s.last);
        if s.files >= SWEEP_FILES {
            s.seen = true;
            drop(s);
            let directory = path.rsplit_once('/').map_or("", |(d, _)| d);
            tracing::debug!(
                directory,
                "the payload reads a directory's files in listing order: a walk"
            );
            self.walks();
            self.reads_from(directory);
        }
    }

    /// The payload walks the tree reading its files, seen in `directory`: the listing starts
    /// now, and the walk's root is the first directory the payload listed where that holds
    /// `directory` (`tar -c /usr` lists `usr`, then reads `usr/bin`), else `directory`.
    fn reads_from(&self, directory: &str) {
        let Ok(mut s) = self.state.lock() else { return };
        let root = match s.first.as_deref().and_then(Path::to_str) {
            Some(first) if under(directory, first) => first.to_owned(),
            _ => directory.to_owned(),
        };
        tracing::debug!(root, "the walk reads the files under its root");
        s.reads_under = Some(root);
        if !s.start && !s.stop {
            if s.first.is_none() {
                s.first = Some(PathBuf::from(directory));
            }
            self.start_listing(&mut s);
        }
    }

    /// Whether the payload walks the tree reading its files, and `path` (relative to the
    /// image's root) lies under the walk's root: it will be read.
    pub(crate) fn reads_through(&self, path: &str) -> bool {
        self.state
            .lock()
            .ok()
            .and_then(|s| s.reads_under.as_deref().map(|root| under(path, root)))
            .unwrap_or(false)
    }

    fn walks(&self) {
        if let Some(fg) = &self.foreground {
            fg.walks();
        }
    }

    /// The mount is ending: the listing stops at its next directory.
    pub(crate) fn stop(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.stop = true;
            self.changed.notify_all();
        }
    }

    fn stopped(&self) -> bool {
        self.state.lock().map_or(true, |s| s.stop)
    }

    /// Waits for the walk to start: the first directory listed, or None once stopped.
    fn wait_start(&self) -> Option<PathBuf> {
        let mut s = self.state.lock().ok()?;
        while !s.start && !s.stop {
            s = self.changed.wait(s).ok()?;
        }
        (!s.stop).then(|| s.first.clone().unwrap_or_default())
    }
}

/// Whether `path` is `dir` or lies under it (paths relative to the image's root, "" the root).
fn under(path: &str, dir: &str) -> bool {
    dir.is_empty()
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Starts the thread that lists the tree mounted at `root` once `ahead` says so.
pub(crate) fn start(ahead: Arc<Ahead>, root: PathBuf) {
    let spawned = std::thread::Builder::new()
        .name("lazy-list".into())
        .spawn(move || {
            if let Some(first) = ahead.wait_start() {
                let listed = list_tree(&ahead, &root, &first);
                tracing::debug!(
                    directories = listed,
                    "listed the image's tree ahead of the payload"
                );
            }
        });
    if let Err(err) = spawned {
        tracing::debug!(%err, "no thread to list the image ahead of the payload");
    }
}

/// Lists every directory under `root` to its end, depth first in listing order (a walker's
/// order), `first`'s subtree before the rest; returns how many it listed.
fn list_tree(ahead: &Ahead, root: &Path, first: &Path) -> usize {
    let first = root.join(first);
    let mut listed = 0;
    if list_from(ahead, &first, None, &mut listed) && first != root {
        list_from(ahead, root, Some(&first), &mut listed);
    }
    listed
}

/// Lists `top` and the directories under it but `skip`'s subtree, counting them in `listed`;
/// false once stopped.
fn list_from(ahead: &Ahead, top: &Path, skip: Option<&Path>, listed: &mut usize) -> bool {
    let mut stack = vec![top.to_owned()];
    while let Some(dir) = stack.pop() {
        if ahead.stopped() {
            return false;
        }
        if skip == Some(dir.as_path()) {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let subdirs: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        *listed += 1;
        stack.extend(subdirs.into_iter().rev());
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_walk_starts_after_enough_different_directories() {
        let ahead = Ahead::default();
        for _ in 0..LIST_AFTER {
            ahead.listed(7, || PathBuf::from("usr"));
        }
        assert!(
            !ahead.state.lock().unwrap().start,
            "one directory listed again and again"
        );
        for ino in 8..(7 + LIST_AFTER as u64) {
            ahead.listed(ino, || unreachable!("the first one's path is known"));
        }
        assert_eq!(ahead.wait_start(), Some(PathBuf::from("usr")));
    }

    #[test]
    fn a_directorys_files_read_in_listing_order_make_a_walk_and_the_pull_stops_giving_way() {
        use crate::registry::Foreground;
        let fg = Arc::new(Foreground::default());
        let ahead = Ahead::telling(Some(fg.clone()));
        let name = |i: usize| format!("usr/bin/f{i:03}");
        // Out of order, or one file per directory (an interpreter's imports): no walk.
        for i in (0..2 * SWEEP_FILES).rev() {
            ahead.file_read(2, &name(i));
        }
        for dir in 0..2 * SWEEP_FILES as u64 {
            ahead.file_read(100 + dir, &format!("usr/lib/d{dir:03}/f"));
        }
        // In order but interrupted by a read elsewhere just short of the count.
        for i in 0..SWEEP_FILES - 1 {
            ahead.file_read(2, &name(i));
        }
        ahead.file_read(3, "usr/lib/x");
        for i in SWEEP_FILES..2 * SWEEP_FILES - 1 {
            ahead.file_read(2, &name(i));
        }
        assert!(!fg.heavy(), "no walk yet");
        // In order, gaps allowed (files the kernel had cached ask nothing).
        for i in (0..2 * SWEEP_FILES).step_by(2) {
            ahead.file_read(2, &name(i));
        }
        assert!(fg.heavy(), "the pull gives way no longer");
    }

    #[test]
    fn a_walk_that_reads_files_starts_the_listing_and_names_the_files_it_will_read() {
        let sweep = |ahead: &Ahead, dir: &str| {
            for i in 0..SWEEP_FILES {
                ahead.file_read(2, &format!("{dir}/f{i:03}"));
            }
        };
        // `tar -c /usr`: lists usr, then reads usr/bin's files.
        let ahead = Ahead::default();
        ahead.listed(9, || PathBuf::from("usr"));
        assert!(!ahead.reads_through("usr/bin/f000"), "no walk yet");
        sweep(&ahead, "usr/bin");
        assert_eq!(ahead.wait_start(), Some(PathBuf::from("usr")), "listed now");
        assert!(ahead.reads_through("usr/lib/x/big"));
        assert!(ahead.reads_through("usr"));
        assert!(!ahead.reads_through("usrlocal/big"));
        assert!(!ahead.reads_through("etc/big"));
        // The first directory listed does not hold the walk's: the walk's own is its root.
        let ahead = Ahead::default();
        ahead.listed(9, || PathBuf::from("etc/profile.d"));
        sweep(&ahead, "usr/bin");
        assert!(ahead.reads_through("usr/bin/f999"));
        assert!(!ahead.reads_through("usr/lib/big"));
        assert!(!ahead.reads_through("etc/profile.d/big"));
        // Nothing listed before: the listing starts at the walk's directory.
        let ahead = Ahead::default();
        sweep(&ahead, "opt/app");
        assert_eq!(ahead.wait_start(), Some(PathBuf::from("opt/app")));
        // A walk seen in the image's root directory: every file.
        let ahead = Ahead::default();
        for i in 0..SWEEP_FILES {
            ahead.file_read(1, &format!("f{i:03}"));
        }
        assert!(ahead.reads_through("usr/lib/big"));
    }

    #[test]
    fn the_tree_is_listed_once_first_subtree_first_and_a_stop_ends_it() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["a/x", "a/y/z", "b", "usr/lib/deep", "usr/share"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::write(dir.path().join("usr/file"), b"f").unwrap();
        std::os::unix::fs::symlink("/usr", dir.path().join("link")).unwrap();
        let ahead = Ahead::default();
        // root, a, a/x, a/y, a/y/z, b, usr, usr/lib, usr/lib/deep, usr/share: no symlink
        // followed, usr's subtree not twice.
        assert_eq!(list_tree(&ahead, dir.path(), Path::new("usr")), 10);
        assert_eq!(list_tree(&ahead, dir.path(), Path::new("")), 10);
        ahead.stop();
        assert_eq!(list_tree(&ahead, dir.path(), Path::new("usr")), 0);
        assert_eq!(ahead.wait_start(), None);
    }
}
