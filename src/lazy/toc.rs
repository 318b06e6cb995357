//! A layer's table of contents: every tar entry's metadata, where its content lies in the
//! uncompressed stream and its digest, plus the inflate checkpoints that make any file readable
//! with a Range request of the compressed blob.

use std::collections::BTreeMap;
use std::io::{self, Read};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::LazyError;
use super::inflate::{Checkpoint, Inflater};
use crate::Digest;

/// The version of the table's format this build writes: 2, the checkpoints' windows in a blob
/// of their own. It reads 1 too (windows in the table).
pub(crate) const TOC_VERSION: u32 = 2;
/// Output between two checkpoints: a file read lazily inflates at most this much it does not
/// need. Each checkpoint costs its 32 KiB window (about 10 KiB deflated) in the windows blob,
/// fetched only with the chunk it starts.
pub(crate) const CHECKPOINT_SPAN: u64 = 512 << 10;
/// The most a window takes deflated (32 KiB stored, plus block headers).
const MAX_WINDOW_BLOB: u64 = 33 << 10;
/// Largest table accepted from a registry (uncompressed JSON).
pub(crate) const MAX_TOC_BYTES: u64 = 256 << 20;

/// What a tar entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Char,
    Block,
    Fifo,
}

/// One entry of a layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TocEntry {
    /// The path in the layer, without a leading `./` or `/`.
    pub(crate) path: String,
    pub(crate) kind: Kind,
    pub(crate) mode: u32,
    pub(crate) uid: u64,
    pub(crate) gid: u64,
    pub(crate) mtime: u64,
    /// Content bytes (regular files).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) size: u64,
    /// Offset of the content in the uncompressed stream.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) offset: u64,
    /// The content's digest (regular files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) digest: Option<Digest>,
    /// A symlink's target or a hard link's source path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) link: Option<String>,
    /// Device numbers (char and block devices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) dev: Option<(u32, u32)>,
    /// Extended attributes (PAX `SCHILY.xattr.`), values base64.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) xattrs: BTreeMap<String, String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A layer's table of contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LayerToc {
    pub(crate) version: u32,
    /// The compressed blob this table describes.
    pub(crate) layer: Digest,
    pub(crate) compressed_size: u64,
    /// The digest of the uncompressed stream.
    pub(crate) diff_id: Digest,
    pub(crate) uncompressed_size: u64,
    pub(crate) checkpoints: Vec<Checkpoint>,
    /// Where the checkpoints' windows are (format 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) windows: Option<WindowsBlob>,
    pub(crate) entries: Vec<TocEntry>,
}

/// A layer's windows blob: its checkpoints' windows, each raw deflate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WindowsBlob {
    pub(crate) digest: Digest,
    pub(crate) size: u64,
}

/// Counts and hashes what passes through.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
    len: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

impl LayerToc {
    /// Builds the table of the gzip layer blob `layer` (whose digest the caller checks over the
    /// same bytes) by inflating it once.
    pub(crate) fn build(blob: impl Read, layer: Digest) -> Result<Self, LazyError> {
        let bad = |e: io::Error| LazyError::Layer {
            layer,
            reason: e.to_string(),
        };
        let inflater = Inflater::new(blob).recording(CHECKPOINT_SPAN);
        let mut archive = tar::Archive::new(Hashing {
            inner: inflater,
            hash: Sha256::new(),
            len: 0,
        });
        let mut entries = Vec::new();
        for entry in archive.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            entries
                .push(toc_entry(&mut entry).map_err(|reason| LazyError::Layer { layer, reason })?);
        }
        let mut stream = archive.into_inner();
        // The archive's end (zero blocks, padding) counts in the diff_id.
        io::copy(&mut stream, &mut io::sink()).map_err(bad)?;
        Ok(Self {
            version: TOC_VERSION,
            layer,
            compressed_size: stream.inner.compressed_pos(),
            diff_id: Digest::from_sha256(stream.hash),
            uncompressed_size: stream.len,
            checkpoints: stream.inner.checkpoints().to_vec(),
            windows: None,
            entries,
        })
    }

    /// Parses a table fetched from a registry (its blob digest already checked), refusing one
    /// that is inconsistent.
    pub(crate) fn parse(json: &[u8]) -> Result<Self, LazyError> {
        let toc: Self = serde_json::from_slice(json).map_err(|e| LazyError::Index {
            reason: format!("a layer table is not valid: {e}"),
        })?;
        toc.check()?;
        Ok(toc)
    }

    fn check(&self) -> Result<(), LazyError> {
        let fail = |reason: String| {
            Err(LazyError::Index {
                reason: format!("the table of layer {}: {reason}", self.layer),
            })
        };
        if !(1..=TOC_VERSION).contains(&self.version) {
            return fail(format!(
                "format version {} (skiff reads 1 to {TOC_VERSION})",
                self.version
            ));
        }
        let mut last = (0, 0);
        let windows = self.windows.map_or(0, |w| w.size);
        for p in &self.checkpoints {
            if p.input <= last.0 || p.output <= last.1 || p.input > self.compressed_size {
                return fail("checkpoints out of order".into());
            }
            last = (p.input, p.output);
            let placed = match p.window_at {
                None => !p.window.is_empty(),
                Some((at, len)) => {
                    p.window.is_empty()
                        && len <= MAX_WINDOW_BLOB
                        && at.checked_add(len).is_some_and(|end| end <= windows)
                }
            };
            if !placed {
                return fail(format!("the window of checkpoint {} is missing", p.output));
            }
        }
        for e in &self.entries {
            if e.offset
                .checked_add(e.size)
                .is_none_or(|end| end > self.uncompressed_size)
            {
                return fail(format!("{} lies outside the layer", e.path));
            }
            if e.kind == Kind::File && e.digest.is_none() {
                return fail(format!("{} has no digest", e.path));
            }
        }
        Ok(())
    }

    /// Moves the checkpoints' windows out of the table into the layer's windows blob, which it
    /// returns (each window raw-deflated alone where its checkpoint says); the table then names
    /// the blob. A reader fetches a window with the chunk it starts, so the table stays small
    /// enough to fetch before the first read however close the checkpoints are.
    pub(crate) fn split_windows(&mut self) -> Result<Vec<u8>, LazyError> {
        let mut blob = Vec::new();
        for p in &mut self.checkpoints {
            if p.window.is_empty() {
                continue;
            }
            let mut z =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            let deflated = io::Write::write_all(&mut z, &p.window)
                .and_then(|()| z.finish())
                .map_err(|e| LazyError::Index {
                    reason: format!("compressing a window: {e}"),
                })?;
            p.window_at = Some((blob.len() as u64, deflated.len() as u64));
            p.window = Vec::new();
            blob.extend_from_slice(&deflated);
        }
        self.windows = (!blob.is_empty()).then(|| WindowsBlob {
            digest: Digest::of(&blob),
            size: blob.len() as u64,
        });
        Ok(blob)
    }

    /// The longest stretch of uncompressed bytes without a checkpoint.
    pub(crate) fn longest_span(&self) -> u64 {
        let mut last = 0;
        let mut longest = 0;
        for p in &self.checkpoints {
            longest = longest.max(p.output - last);
            last = p.output;
        }
        longest.max(self.uncompressed_size.saturating_sub(last))
    }

    /// The entry at `path` (leading `/` ignored): the last one of that name, as tar extraction
    /// leaves it.
    pub(crate) fn entry(&self, path: &str) -> Option<&TocEntry> {
        let path = path.trim_start_matches('/').trim_end_matches('/');
        self.entries.iter().rev().find(|e| e.path == path)
    }
}

/// The table entry of a tar entry, reading its content for the digest.
fn toc_entry<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<TocEntry, String> {
    let name = |bytes: &[u8], what: &str| {
        String::from_utf8(bytes.to_vec()).map_err(|_| {
            format!(
                "{what} {:?} is not UTF-8 (such a layer cannot be indexed)",
                String::from_utf8_lossy(bytes)
            )
        })
    };
    let raw_path = entry.path_bytes().into_owned();
    let path = name(&raw_path, "the name")?;
    let path = path
        .trim_start_matches("./")
        .trim_start_matches('/')
        .trim_end_matches('/')
        .to_owned();
    let header = entry.header();
    let kind = match header.entry_type() {
        tar::EntryType::Regular | tar::EntryType::Continuous => Kind::File,
        tar::EntryType::Directory => Kind::Dir,
        tar::EntryType::Symlink => Kind::Symlink,
        tar::EntryType::Link => Kind::Hardlink,
        tar::EntryType::Char => Kind::Char,
        tar::EntryType::Block => Kind::Block,
        tar::EntryType::Fifo => Kind::Fifo,
        other => return Err(format!("{path}: tar entry type {other:?} is not supported")),
    };
    // An empty numeric field reads as 0, as Go's archive/tar (which wrote most layers) and the
    // store's extraction take it (layer tools leave whiteouts' owners blank).
    let mode = header.mode().map_or(0, |m| m & 0o7777);
    let uid = header.uid().unwrap_or(0);
    let gid = header.gid().unwrap_or(0);
    let mtime = header.mtime().unwrap_or(0);
    let dev = match kind {
        Kind::Char | Kind::Block => Some((
            header.device_major().ok().flatten().unwrap_or(0),
            header.device_minor().ok().flatten().unwrap_or(0),
        )),
        _ => None,
    };
    let link = match entry.link_name_bytes() {
        Some(l) if matches!(kind, Kind::Symlink | Kind::Hardlink) => {
            Some(name(&l, "the link target")?)
        }
        _ => None,
    };
    let mut xattrs = BTreeMap::new();
    if let Ok(Some(pax)) = entry.pax_extensions() {
        use base64::Engine as _;
        for ext in pax.flatten() {
            if let Ok(key) = ext.key()
                && let Some(attr) = key.strip_prefix("SCHILY.xattr.")
            {
                xattrs.insert(
                    attr.to_owned(),
                    base64::engine::general_purpose::STANDARD.encode(ext.value_bytes()),
                );
            }
        }
    }
    let (size, offset, digest) = if kind == Kind::File {
        let offset = entry.raw_file_position();
        let (digest, size) =
            content_digest(entry).map_err(|e| format!("{path}: reading its content: {e}"))?;
        (size, offset, Some(digest))
    } else {
        (0, 0, None)
    };
    Ok(TocEntry {
        path,
        kind,
        mode,
        uid,
        gid,
        mtime,
        size,
        offset,
        digest,
        link,
        dev,
        xattrs,
    })
}

/// The digest of what `content` reads to its end, and its length.
pub(crate) fn content_digest(content: &mut impl Read) -> io::Result<(Digest, u64)> {
    let mut hash = Sha256::new();
    let size = io::copy(content, &mut HashWriter(&mut hash))?;
    Ok((Digest::from_sha256(hash), size))
}

struct HashWriter<'a>(&'a mut Sha256);

impl io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl LayerToc {
    /// Compares the table with the layer as extracted at `root` (the store's layer directory):
    /// every entry's type, a file's size, a symlink's target; whiteouts as 0/0 devices. The
    /// first disagreement, if any: a table whose metadata lied (contents are checked on read).
    pub(crate) fn disagreement_with(&self, root: &std::path::Path) -> Option<String> {
        use std::os::unix::fs::FileTypeExt;
        // The last entry of a name is what extraction left.
        let mut last: std::collections::HashMap<&str, &TocEntry> = std::collections::HashMap::new();
        for e in &self.entries {
            last.insert(e.path.as_str(), e);
        }
        for (path, e) in last {
            if path.is_empty() || path.rsplit('/').next() == Some(".wh..wh..opq") {
                continue;
            }
            let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
            if let Some(hidden) = name.strip_prefix(".wh.") {
                let p = root.join(dir).join(hidden);
                match std::fs::symlink_metadata(&p) {
                    Ok(m) if m.file_type().is_char_device() => continue,
                    _ => return Some(format!("{path}: no whiteout for it in the layer")),
                }
            }
            let meta = match std::fs::symlink_metadata(root.join(path)) {
                Ok(m) => m,
                Err(err) => return Some(format!("{path}: {err}")),
            };
            let t = meta.file_type();
            let agrees = match e.kind {
                Kind::File | Kind::Hardlink => {
                    t.is_file() && (e.kind == Kind::Hardlink || meta.len() == e.size)
                }
                Kind::Dir => t.is_dir(),
                Kind::Symlink => {
                    t.is_symlink()
                        && std::fs::read_link(root.join(path)).ok().as_deref()
                            == e.link.as_deref().map(std::path::Path::new)
                }
                Kind::Char => t.is_char_device(),
                Kind::Block => t.is_block_device(),
                Kind::Fifo => t.is_fifo(),
            };
            if !agrees {
                return Some(format!(
                    "{path}: the index says {:?} of {} bytes, the layer has another",
                    e.kind, e.size
                ));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A gzip layer of `files` files of varied sizes, a directory, a symlink and a hard link.
    fn layer(files: usize) -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
        let mut tar = tar::Builder::new(Vec::new());
        let header = || {
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_700_000_000);
            h.set_mode(0o644);
            h
        };
        let mut dir = header();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_mode(0o755);
        dir.set_size(0);
        tar.append_data(&mut dir, "usr/", io::empty()).unwrap();
        let mut contents = Vec::new();
        let mut x = 12345u64;
        for i in 0..files {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = (x >> 40) as usize % 300_000;
            let body: Vec<u8> = (0..len).map(|j| ((j as u64 ^ x) % 251) as u8).collect();
            let path = format!("usr/f{i}");
            let mut h = header();
            h.set_uid(i as u64);
            h.set_size(len as u64);
            tar.append_data(&mut h, &path, &body[..]).unwrap();
            contents.push((path, body));
        }
        let mut l = header();
        l.set_entry_type(tar::EntryType::Symlink);
        l.set_size(0);
        tar.append_link(&mut l, "usr/link", "f0").unwrap();
        let mut h = header();
        h.set_entry_type(tar::EntryType::Link);
        h.set_size(0);
        tar.append_link(&mut h, "usr/hard", "usr/f1").unwrap();
        let data = tar.into_inner().unwrap();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&data).unwrap();
        (enc.finish().unwrap(), contents)
    }

    /// `entry` read as a lazy run reads it: through the chunk cache, its ranges from `blob`.
    fn read(toc: &LayerToc, entry: &TocEntry, blob: &[u8]) -> Result<Vec<u8>, LazyError> {
        let fetch = |r: &[(Digest, u64, u64)]| {
            Ok(r.iter()
                .map(|(_, a, b)| {
                    let end = (*b as usize).min(blob.len());
                    blob[(*a as usize).min(end)..end].to_vec()
                })
                .collect())
        };
        crate::lazy::chunks::Chunks::new(1 << 20).read(toc, entry, &fetch)
    }

    #[test]
    fn every_file_reads_back_from_its_chunks() {
        let (blob, contents) = layer(60);
        let digest = Digest::of(&blob);
        let toc = LayerToc::build(&blob[..], digest).unwrap();
        assert_eq!(toc.compressed_size, blob.len() as u64);
        assert!(
            toc.checkpoints.len() >= 2,
            "{} checkpoints",
            toc.checkpoints.len()
        );
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&blob[..])
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(toc.diff_id, Digest::of(&tar));
        assert_eq!(toc.uncompressed_size, tar.len() as u64);
        for (path, body) in &contents {
            let got = read(&toc, toc.entry(path).unwrap(), &blob).unwrap();
            assert_eq!(&got, body, "{path}");
        }
        assert_eq!(toc.entry("/usr/link").unwrap().link.as_deref(), Some("f0"));
        assert_eq!(toc.entry("usr/hard").unwrap().kind, Kind::Hardlink);
        assert_eq!(toc.entry("usr").unwrap().kind, Kind::Dir);
        // Through JSON and back, unchanged.
        let json = serde_json::to_vec(&toc).unwrap();
        assert_eq!(LayerToc::parse(&json).unwrap(), toc);
    }

    #[test]
    fn content_that_disagrees_with_the_table_is_refused() {
        let (blob, _) = layer(5);
        let mut toc = LayerToc::build(&blob[..], Digest::of(&blob)).unwrap();
        let i = toc.entries.iter().position(|e| e.size > 0).unwrap();
        toc.entries[i].digest = Some(Digest::of(b"something else"));
        let entry = toc.entries[i].clone();
        let err = read(&toc, &entry, &blob).unwrap_err().to_string();
        assert!(err.contains(&entry.path) && err.contains("index"), "{err}");
    }

    #[test]
    fn a_size_the_layer_does_not_have_is_an_error_not_an_abort() {
        let (blob, _) = layer(3);
        let mut toc = LayerToc::build(&blob[..], Digest::of(&blob)).unwrap();
        toc.uncompressed_size = 1 << 50;
        let i = toc
            .entries
            .iter()
            .position(|e| e.kind == Kind::File)
            .unwrap();
        toc.entries[i].size = 1 << 49;
        let json = serde_json::to_vec(&toc).unwrap();
        let toc = LayerToc::parse(&json).unwrap();
        let err = read(&toc, &toc.entries[i], &blob).unwrap_err().to_string();
        assert!(err.contains("the layer ends before"), "{err}");
    }

    #[test]
    fn blank_numeric_fields_read_as_zero() {
        // A whiteout as layer tools write it: owner, group and mtime fields left blank.
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        tar.append_data(&mut h, "usr/share/doc/.wh.adduser", io::empty())
            .unwrap();
        let data = tar.into_inner().unwrap();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&data).unwrap();
        let blob = enc.finish().unwrap();
        let toc = LayerToc::build(&blob[..], Digest::of(&blob)).unwrap();
        let e = toc.entry("usr/share/doc/.wh.adduser").unwrap();
        assert_eq!((e.uid, e.gid, e.mtime), (0, 0, 0));
    }

    #[test]
    fn inconsistent_tables_are_refused() {
        let (blob, _) = layer(20);
        let toc = LayerToc::build(&blob[..], Digest::of(&blob)).unwrap();
        let mut outside = toc.clone();
        outside.entries[1].offset = toc.uncompressed_size;
        outside.entries[1].size = 1;
        let mut version = toc.clone();
        version.version = 99;
        let mut split = toc.clone();
        split.split_windows().unwrap();
        let mut unplaced = split.clone();
        unplaced.windows = None;
        let mut past = split.clone();
        if let Some(w) = &mut past.windows {
            w.size -= 1;
        }
        let mut missing = toc.clone();
        missing.checkpoints[0].window.clear();
        assert!(!toc.checkpoints.is_empty());
        assert!(LayerToc::parse(&serde_json::to_vec(&split).unwrap()).is_ok());
        for bad in [outside, version, unplaced, past, missing] {
            let json = serde_json::to_vec(&bad).unwrap();
            assert!(LayerToc::parse(&json).is_err());
        }
        assert!(LayerToc::parse(b"{").is_err());
    }
}
