//! Reading the store's directories the way gc and verify both need: sorted listings, refs,
//! sizes on disk, and who owns an entry of tmp/.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::records::{ImageRecord, RefRecord};
use crate::store::{io_err, read_json};
use crate::verify::Finding;
use crate::{Digest, StoreError};

/// Age after which a `file.<pid>.*` or unrecognised tmp entry is garbage even if its pid lives
/// (pids are reused).
pub(crate) const STALE_TMP: Duration = Duration::from_secs(3600);

/// A ref file and what it says.
#[derive(Debug)]
pub(crate) struct RefEntry {
    pub(crate) path: PathBuf,
    /// `registry/repository:tag`.
    pub(crate) name: String,
    pub(crate) record: RefRecord,
}

/// Adds what an image uses: its manifest and config blobs and its layers.
pub(crate) fn add_image(
    record: &ImageRecord,
    layers: &mut HashSet<Digest>,
    blobs: &mut HashSet<Digest>,
) {
    blobs.insert(record.manifest);
    blobs.insert(record.config);
    layers.extend(record.layers.iter().map(|l| l.diff_id));
}

/// Who owns an entry of tmp/.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TmpOwner {
    /// `layer-<hex>.*`: the writer holding `locks/layer-<hex>`.
    Layer(Digest),
    /// `<kind>.<pid>.<nanos>.<seq>`: a process; `stale_ok` when age alone makes it garbage.
    Process { pid: i32, stale_ok: bool },
    /// Anything else: garbage once it is old.
    Unknown,
}

pub(crate) fn classify_tmp(name: &str) -> TmpOwner {
    let layer = name
        .strip_prefix("layer-")
        .and_then(|rest| rest.split_once('.'))
        .and_then(|(hex, _)| Digest::from_hex(hex));
    if let Some(digest) = layer {
        return TmpOwner::Layer(digest);
    }
    let mut parts = name.rsplitn(4, '.');
    let (Some(seq), Some(nanos), Some(pid), Some(kind)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return TmpOwner::Unknown;
    };
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match pid.parse::<i32>() {
        Ok(pid) if pid > 0 && numeric(seq) && numeric(nanos) && !kind.is_empty() => {
            TmpOwner::Process {
                pid,
                stale_ok: !kind.starts_with("deleting-"),
            }
        }
        _ => TmpOwner::Unknown,
    }
}

/// Whether process `pid` exists (EPERM means it exists but is someone else's).
pub(crate) fn pid_alive(pid: i32) -> bool {
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(Errno::ESRCH) => false,
        Err(_) => true,
    }
}

pub(crate) fn older_than(meta: &fs::Metadata, age: Duration) -> bool {
    meta.modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .is_some_and(|d| d > age)
}

/// Whether someone holds a flock on `path`, without creating it (a missing file is not held).
pub(crate) fn lock_is_held(path: &Path) -> io::Result<bool> {
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        // Dropping the lock releases it at once: this only looked.
        Ok(_lock) => Ok(false),
        Err((_, Errno::EWOULDBLOCK)) => Ok(true),
        Err((_, e)) => Err(e.into()),
    }
}

/// Disk usage of a tree (st_blocks * 512), not following symlinks, hard links counted once.
/// Parts that cannot be read (a rootless mode-0 directory) count as nothing.
pub(crate) fn disk_usage(path: &Path) -> u64 {
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack = vec![path.to_owned()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&p) else {
            continue;
        };
        if !meta.is_dir() && meta.nlink() > 1 && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        total += meta.blocks() * 512;
        if meta.is_dir() {
            if let Ok(entries) = fs::read_dir(&p) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        }
    }
    total
}

/// Disk usage of one file (0 when it is gone).
pub(crate) fn file_size(path: &Path) -> u64 {
    fs::symlink_metadata(path)
        .map(|m| m.blocks() * 512)
        .unwrap_or(0)
}

pub(crate) fn entry_name(entry: &fs::DirEntry) -> String {
    entry.file_name().to_string_lossy().into_owned()
}

/// The entries of a directory, sorted by name.
pub(crate) fn read_dir_entries(dir: &Path) -> Result<Vec<fs::DirEntry>, StoreError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("listing", dir))? {
        out.push(entry.map_err(io_err("listing", dir))?);
    }
    out.sort_by_key(|e| e.file_name());
    Ok(out)
}

/// Every ref file under `dir`, parsed; a ref that does not parse goes to `bad` (or is an error
/// when `bad` is `None`).
pub(crate) fn walk_refs(
    base: &Path,
    dir: &Path,
    out: &mut Vec<RefEntry>,
    mut bad: Option<&mut Vec<Finding>>,
) -> Result<(), StoreError> {
    for entry in read_dir_entries(dir)? {
        let path = entry.path();
        let is_dir = entry
            .file_type()
            .map_err(io_err("listing", &path))?
            .is_dir();
        if is_dir {
            walk_refs(base, &path, out, bad.as_deref_mut())?;
            continue;
        }
        let record = match (read_json::<RefRecord>(&path), bad.as_deref_mut()) {
            (Ok(Some(record)), _) => record,
            (Ok(None), _) => continue,
            (Err(StoreError::Corrupt { reason, .. }), Some(bad)) => {
                bad.push(Finding {
                    path,
                    reason: format!("ref does not parse: {reason}"),
                });
                continue;
            }
            (Err(err), _) => return Err(err),
        };
        let rel = path.strip_prefix(base).unwrap_or(&path);
        let tag = rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let repo = rel
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push(RefEntry {
            name: format!("{repo}:{tag}"),
            path,
            record,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmp_names_are_classified() {
        let hex = "a".repeat(64);
        let d = Digest::from_hex(&hex);
        assert_eq!(
            d.map(TmpOwner::Layer),
            Some(classify_tmp(&format!("layer-{hex}.12.34.5")))
        );
        assert_eq!(
            classify_tmp("file.42.123.7"),
            TmpOwner::Process {
                pid: 42,
                stale_ok: true
            }
        );
        assert_eq!(
            classify_tmp("deleting-run-a.b.9.1.2"),
            TmpOwner::Process {
                pid: 9,
                stale_ok: false
            }
        );
        assert_eq!(classify_tmp("junk"), TmpOwner::Unknown);
        assert_eq!(classify_tmp("file.x.1.2"), TmpOwner::Unknown);
    }
}
