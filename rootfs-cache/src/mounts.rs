//! What is mounted where, from this process's mount table (`/proc/self/mountinfo`, read by the
//! `procfs` crate).

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use procfs::ProcError;

/// Mount points at or under `dir` in this process's mount namespace, in mount-table order
/// (parents before the mounts made on top of them).
///
/// `dir` is canonicalised first, so a store reached through a symlink still matches; a `dir`
/// that does not exist has nothing mounted under it. An unreadable mount table is an error,
/// never an empty list: callers decide whether removing a directory is safe from this.
pub fn mount_points_under(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let dir = match std::fs::canonicalize(dir) {
        Ok(dir) => dir,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mounts = procfs::process::Process::myself()
        .and_then(|me| me.mountinfo())
        .map_err(proc_to_io)?;
    Ok(mounts
        .into_iter()
        .map(|m| unescape_mountinfo(&m.mount_point))
        .filter(|p| p.starts_with(&dir))
        .collect())
}

fn proc_to_io(err: ProcError) -> io::Error {
    match err {
        ProcError::Io(e, _) => e,
        ProcError::NotFound(_) => io::Error::new(io::ErrorKind::NotFound, err.to_string()),
        ProcError::PermissionDenied(_) => {
            io::Error::new(io::ErrorKind::PermissionDenied, err.to_string())
        }
        other => io::Error::other(other.to_string()),
    }
}

/// Undoes the kernel's octal escapes of space, tab, newline and backslash (`\040` for a space),
/// which procfs 0.18 leaves in `mount_point`.
fn unescape_mountinfo(raw: &Path) -> PathBuf {
    let bytes = raw.as_os_str().as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|oct| bytes[i] == b'\\' && oct.iter().all(|b| (b'0'..=b'7').contains(b)));
        if let Some(oct) = octal {
            out.push(
                oct.iter()
                    .fold(0u8, |acc, b| acc.wrapping_mul(8).wrapping_add(b - b'0')),
            );
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    PathBuf::from(OsString::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(
            unescape_mountinfo(Path::new(r"/a\040b\\c\011d")),
            PathBuf::from("/a b\\\\c\td")
        );
    }

    #[test]
    fn mounts_under_root_include_root() -> io::Result<()> {
        let mounts = mount_points_under(Path::new("/"))?;
        assert!(mounts.iter().any(|m| m == Path::new("/")), "{mounts:?}");
        assert!(mount_points_under(Path::new("/nonexistent/skiff"))?.is_empty());
        Ok(())
    }
}
