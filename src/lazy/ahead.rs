//! The image's tree listed ahead of a payload that walks it (`tar`, `find`, `cp -a`, `du`):
//! once the payload has listed [`LIST_AFTER`] directories, a thread of the serving process
//! lists every directory of the mount, the payload's first one's first. Listings come from the
//! index (nothing is fetched), and the kernel keeps what they bring: each directory's entries
//! (FUSE's directory cache: the file system answers no opendir), the entries' inodes and
//! attributes, and, through the listing's push, the small files of committed layers in the
//! page cache. The payload's own walk then waits for none of these round trips.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

/// How many different directories the payload lists before the whole tree is listed for it:
/// more than a start reads (python3's imports list a handful), fewer than a walk's first
/// moment.
pub(crate) const LIST_AFTER: usize = 32;

#[derive(Default)]
struct State {
    /// The directories listed so far, until the walk starts.
    listed: HashSet<u64>,
    /// The first directory listed, relative to the image's root.
    first: Option<PathBuf>,
    start: bool,
    stop: bool,
}

/// Shared by the file system (which counts the payload's listings) and the listing thread.
#[derive(Default)]
pub(crate) struct Ahead {
    state: Mutex<State>,
    changed: Condvar,
}

impl Ahead {
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
            s.start = true;
            s.listed = HashSet::new();
            self.changed.notify_all();
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
