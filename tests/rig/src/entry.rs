//! Tar entries written byte for byte, so tests can build ordinary layers and hostile ones.
//!
//! Unlike `tar::Builder::append_path`, nothing here sanitises names: `../x`, `/etc/x` and links
//! that point anywhere are written as given.

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result};

/// What a tar entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A regular file with its content.
    File(Vec<u8>),
    /// A directory.
    Dir,
    /// A symbolic link to the target.
    Symlink(String),
    /// A hard link to an earlier entry's name.
    Hardlink(String),
    /// A named pipe.
    Fifo,
    /// A character device.
    CharDevice(u32, u32),
    /// A block device.
    BlockDevice(u32, u32),
}

/// One tar entry: name, kind and metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The name exactly as written into the archive.
    pub path: String,
    /// What it is.
    pub kind: Kind,
    /// Permission bits, including setuid/setgid/sticky.
    pub mode: u32,
    /// Owner uid.
    pub uid: u64,
    /// Owner gid.
    pub gid: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: u64,
    /// Extended attributes, written as PAX `SCHILY.xattr.*` records.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// A fixed mtime so that layers built twice are byte-identical.
pub const DEFAULT_MTIME: u64 = 1_700_000_000;

impl Entry {
    fn new(path: impl Into<String>, kind: Kind, mode: u32) -> Self {
        Self {
            path: path.into(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: DEFAULT_MTIME,
            xattrs: Vec::new(),
        }
    }

    /// A regular file, mode 0644.
    pub fn file(path: impl Into<String>, data: impl Into<Vec<u8>>) -> Self {
        Self::new(path, Kind::File(data.into()), 0o644)
    }

    /// A directory, mode 0755.
    pub fn dir(path: impl Into<String>) -> Self {
        Self::new(path, Kind::Dir, 0o755)
    }

    /// A symlink, mode 0777.
    pub fn symlink(path: impl Into<String>, target: impl Into<String>) -> Self {
        Self::new(path, Kind::Symlink(target.into()), 0o777)
    }

    /// A hard link to `target`, a name earlier in the archive.
    pub fn hardlink(path: impl Into<String>, target: impl Into<String>) -> Self {
        Self::new(path, Kind::Hardlink(target.into()), 0o644)
    }

    /// A named pipe, mode 0644.
    pub fn fifo(path: impl Into<String>) -> Self {
        Self::new(path, Kind::Fifo, 0o644)
    }

    /// A character device node, mode 0666.
    pub fn char_device(path: impl Into<String>, major: u32, minor: u32) -> Self {
        Self::new(path, Kind::CharDevice(major, minor), 0o666)
    }

    /// A block device node, mode 0660.
    pub fn block_device(path: impl Into<String>, major: u32, minor: u32) -> Self {
        Self::new(path, Kind::BlockDevice(major, minor), 0o660)
    }

    /// An OCI whiteout for `path` (`dir/.wh.name`): the lower layers' `path` is deleted.
    pub fn whiteout(path: &str) -> Self {
        let (dir, name) = match path.rsplit_once('/') {
            Some((dir, name)) => (format!("{dir}/"), name),
            None => (String::new(), path),
        };
        Self::file(format!("{dir}.wh.{name}"), Vec::new())
    }

    /// An OCI opaque-directory marker: lower layers' contents of `dir` are hidden.
    pub fn opaque(dir: &str) -> Self {
        Self::file(
            format!("{}/.wh..wh..opq", dir.trim_end_matches('/')),
            Vec::new(),
        )
    }

    /// Sets the permission bits.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the owner.
    pub fn owner(mut self, uid: u64, gid: u64) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }

    /// Sets the modification time.
    pub fn mtime(mut self, mtime: u64) -> Self {
        self.mtime = mtime;
        self
    }

    /// Adds an extended attribute.
    pub fn xattr(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.xattrs.push((name.into(), value.into()));
        self
    }
}

/// Writes `entries` as an uncompressed tar stream, names and link targets verbatim.
pub fn tar(entries: &[Entry]) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        append(&mut builder, entry).with_context(|| format!("tar entry {:?}", entry.path))?;
    }
    Ok(builder.into_inner()?)
}

fn append(builder: &mut tar::Builder<Vec<u8>>, entry: &Entry) -> Result<()> {
    let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
    // ustar's name field holds 100 bytes; longer names and link targets go in PAX records, which
    // is how docker and BuildKit write them.
    if entry.path.len() > 100 {
        pax.push(("path".into(), entry.path.as_bytes().to_vec()));
    }
    let link = match &entry.kind {
        Kind::Symlink(t) | Kind::Hardlink(t) => Some(t.as_str()),
        _ => None,
    };
    if let Some(link) = link.filter(|l| l.len() > 100) {
        pax.push(("linkpath".into(), link.as_bytes().to_vec()));
    }
    for (id, field) in [(entry.uid, "uid"), (entry.gid, "gid")] {
        if id > 0o7_777_777 {
            pax.push((field.into(), id.to_string().into_bytes()));
        }
    }
    for (name, value) in &entry.xattrs {
        pax.push((format!("SCHILY.xattr.{name}"), value.clone()));
    }
    if !pax.is_empty() {
        builder.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
    }

    let mut header = tar::Header::new_ustar();
    copy_truncated(&mut header.as_old_mut().name, entry.path.as_bytes());
    if let Some(link) = link {
        copy_truncated(&mut header.as_old_mut().linkname, link.as_bytes());
    }
    let (entry_type, data): (tar::EntryType, &[u8]) = match &entry.kind {
        Kind::File(data) => (tar::EntryType::Regular, data),
        Kind::Dir => (tar::EntryType::Directory, &[]),
        Kind::Symlink(_) => (tar::EntryType::Symlink, &[]),
        Kind::Hardlink(_) => (tar::EntryType::Link, &[]),
        Kind::Fifo => (tar::EntryType::Fifo, &[]),
        Kind::CharDevice(..) => (tar::EntryType::Char, &[]),
        Kind::BlockDevice(..) => (tar::EntryType::Block, &[]),
    };
    header.set_entry_type(entry_type);
    if let Kind::CharDevice(major, minor) | Kind::BlockDevice(major, minor) = entry.kind {
        header.set_device_major(major)?;
        header.set_device_minor(minor)?;
    }
    header.set_size(data.len() as u64);
    header.set_mode(entry.mode);
    header.set_uid(entry.uid.min(0o7_777_777));
    header.set_gid(entry.gid.min(0o7_777_777));
    header.set_mtime(entry.mtime);
    header.set_cksum();
    builder.append(&header, data)?;
    Ok(())
}

fn copy_truncated(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
    field[n..].fill(0);
}

/// Reads a directory tree into entries (sorted, hardlinks detected, owners kept), for a layer.
pub fn entries_from_dir(root: &Path) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    let mut seen_inodes = HashMap::new();
    walk(root, root, &mut out, &mut seen_inodes)?;
    Ok(out)
}

fn walk(
    root: &Path,
    dir: &Path,
    out: &mut Vec<Entry>,
    seen: &mut HashMap<(u64, u64), String>,
) -> Result<()> {
    let mut children: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    children.sort_by_key(|c| c.file_name());
    for child in children {
        let path = child.path();
        let rel = path
            .strip_prefix(root)?
            .to_str()
            .with_context(|| format!("non-UTF-8 name {}", path.display()))?
            .to_owned();
        let meta = std::fs::symlink_metadata(&path)?;
        let ft = meta.file_type();
        let mode = meta.permissions().mode() & 0o7777;
        let mut entry = if ft.is_dir() {
            Entry::dir(format!("{rel}/"))
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&path)?;
            Entry::symlink(&rel, target.to_str().context("non-UTF-8 link target")?)
        } else if ft.is_file() {
            let key = (meta.dev(), meta.ino());
            if meta.nlink() > 1 {
                if let Some(first) = seen.get(&key) {
                    out.push(Entry::hardlink(&rel, first.clone()).mode(mode));
                    continue;
                }
                seen.insert(key, rel.clone());
            }
            Entry::file(&rel, std::fs::read(&path)?)
        } else {
            anyhow::bail!("unsupported file type at {}", path.display());
        };
        if !ft.is_symlink() {
            entry = entry.mode(mode);
        }
        entry = entry
            .owner(u64::from(meta.uid()), u64::from(meta.gid()))
            .mtime(u64::try_from(meta.mtime()).unwrap_or(0));
        out.push(entry);
        if ft.is_dir() {
            walk(root, &path, out, seen)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_back(bytes: &[u8]) -> Vec<(String, tar::EntryType, Option<String>)> {
        let mut archive = tar::Archive::new(bytes);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let path = String::from_utf8(e.path_bytes().into_owned()).unwrap();
                let link = e
                    .link_name_bytes()
                    .map(|l| String::from_utf8(l.into_owned()).unwrap());
                (path, e.header().entry_type(), link)
            })
            .collect()
    }

    #[test]
    fn hostile_names_are_written_verbatim() {
        let long = format!("{}/f", "d".repeat(150));
        let bytes = tar(&[
            Entry::file("../escape", "x"),
            Entry::file("/etc/abs", "x"),
            Entry::symlink("link", format!("/{}", "t".repeat(120))),
            Entry::file(long.clone(), "x"),
        ])
        .unwrap();
        let got = read_back(&bytes);
        assert_eq!(got[0].0, "../escape");
        assert_eq!(got[1].0, "/etc/abs");
        assert_eq!(got[2].2.as_deref().map(str::len), Some(121));
        assert_eq!(got[3].0, long);
    }

    #[test]
    fn whiteout_names_follow_the_oci_spec() {
        assert_eq!(Entry::whiteout("a/b/c").path, "a/b/.wh.c");
        assert_eq!(Entry::whiteout("c").path, ".wh.c");
        assert_eq!(Entry::opaque("a/b/").path, "a/b/.wh..wh..opq");
    }

    #[test]
    fn xattrs_and_devices_survive_a_round_trip() {
        let bytes = tar(&[
            Entry::file("f", "x").xattr("user.k", b"v".to_vec()),
            Entry::char_device("null", 1, 3),
        ])
        .unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let mut entries = archive.entries().unwrap();
        let mut f = entries.next().unwrap().unwrap();
        let ext: Vec<_> = f
            .pax_extensions()
            .unwrap()
            .unwrap()
            .map(|x| x.unwrap().key().unwrap().to_owned())
            .collect();
        assert_eq!(ext, ["SCHILY.xattr.user.k"]);
        let mut s = String::new();
        std::io::Read::read_to_string(&mut f, &mut s).unwrap();
        assert_eq!(s, "x");
        let dev = entries.next().unwrap().unwrap();
        assert_eq!(dev.header().device_major().unwrap(), Some(1));
        assert_eq!(dev.header().device_minor().unwrap(), Some(3));
    }
}
