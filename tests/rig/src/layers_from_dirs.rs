//! Layers from a root filesystem that changes step by step, as `docker build` makes them, and a
//! streaming push of big layer files. Used by `benches/build-tool-image.sh` through `skiff-rig`:
//!
//! - `snapshot DIR OUT`: records every path under DIR with its inode, size, mode, owner, mtime
//!   and ctime (nanoseconds);
//! - `diff-layer DIR SNAPSHOT OUT.tar`: writes what changed since the snapshot as a tar layer:
//!   new and changed paths (any recorded field differs; ctime catches chmod, chown and new hard
//!   links), the parent directories of every such path, and an OCI whiteout (`.wh.NAME`) for each
//!   topmost deleted path. With no snapshot, the whole tree;
//! - `push-layers REPO:TAG --layer L.tar…`: gzips each tar once (cached next to it as
//!   `L.tar.gz` + `L.tar.gz.json`), streams the blobs to the registry and pushes an OCI manifest.
//!
//! Contents of `dev/`, `proc/` and `sys/` are left out (a runtime provides them).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, LOCATION};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use skiff_test_rig::image::{Blob, OCI_CONFIG, OCI_MANIFEST};

/// Directories whose contents never go into a layer.
const SKIPPED_CONTENTS: [&str; 3] = ["dev", "proc", "sys"];

/// What the snapshot keeps of one path; any difference marks the path as changed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stat {
    ino: u64,
    size: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stat {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            ino: meta.ino(),
            size: meta.size(),
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        }
    }

    fn line(&self) -> String {
        format!(
            "{} {} {} {} {} {} {}",
            self.ino, self.size, self.mode, self.uid, self.gid, self.mtime_ns, self.ctime_ns
        )
    }

    fn parse(s: &str) -> Result<Self> {
        let f: Vec<&str> = s.split(' ').collect();
        if f.len() != 7 {
            bail!("bad snapshot line {s:?}");
        }
        Ok(Self {
            ino: f[0].parse()?,
            size: f[1].parse()?,
            mode: f[2].parse()?,
            uid: f[3].parse()?,
            gid: f[4].parse()?,
            mtime_ns: f[5].parse()?,
            ctime_ns: f[6].parse()?,
        })
    }
}

/// Relative path (bytes, no leading `/`) → stat, sorted so parents come before children.
type Tree = BTreeMap<Vec<u8>, Stat>;

/// Walks `root` (not crossing into other filesystems' mount points' contents is the caller's
/// job: unmount proc/sys/dev binds first).
fn scan(root: &Path) -> Result<Tree> {
    let mut tree = Tree::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        for child in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let child = child?;
            let rel_child = rel.join(child.file_name());
            let meta = child.metadata()?;
            if meta.is_dir() && !SKIPPED_CONTENTS.iter().any(|s| rel_child == Path::new(s)) {
                stack.push(rel_child.clone());
            }
            tree.insert(rel_child.as_os_str().as_bytes().to_vec(), Stat::of(&meta));
        }
    }
    Ok(tree)
}

/// `skiff-rig snapshot`: one line per path, `STAT\tPATH` (paths hex-free: names never hold
/// newlines in a Debian rootfs, and one that does is refused).
pub fn snapshot(root: &Path, out: &Path) -> Result<()> {
    let tree = scan(root)?;
    let mut w = BufWriter::new(File::create(out)?);
    for (path, stat) in &tree {
        if path.contains(&b'\n') || path.contains(&b'\t') {
            bail!("path with a tab or newline: {:?}", OsStr::from_bytes(path));
        }
        w.write_all(stat.line().as_bytes())?;
        w.write_all(b"\t")?;
        w.write_all(path)?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    eprintln!("snapshot: {} paths", tree.len());
    Ok(())
}

fn read_snapshot(path: &Path) -> Result<Tree> {
    let mut tree = Tree::new();
    for line in BufReader::new(File::open(path)?).split(b'\n') {
        let line = line?;
        let tab = line
            .iter()
            .position(|&b| b == b'\t')
            .context("bad snapshot line")?;
        let stat = Stat::parse(std::str::from_utf8(&line[..tab])?)?;
        tree.insert(line[tab + 1..].to_vec(), stat);
    }
    Ok(tree)
}

fn parent(path: &[u8]) -> Option<&[u8]> {
    path.iter().rposition(|&b| b == b'/').map(|i| &path[..i])
}

/// Counts of what a layer holds.
#[derive(Debug, Default)]
struct LayerCounts {
    entries: usize,
    files: usize,
    whiteouts: usize,
    skipped_special: usize,
    bytes: u64,
}

/// `skiff-rig diff-layer`: the layer of changes since `since` (or the whole tree) as a tar.
pub fn diff_layer(root: &Path, since: Option<&Path>, out: &Path) -> Result<()> {
    let now = scan(root)?;
    let before = since.map(read_snapshot).transpose()?.unwrap_or_default();

    let mut include: HashSet<&[u8]> = HashSet::new();
    for (path, stat) in &now {
        if before.get(path) != Some(stat) {
            include.insert(path);
            let mut p = path.as_slice();
            while let Some(up) = parent(p) {
                if !include.insert(up) {
                    break;
                }
                p = up;
            }
        }
    }
    // Topmost deleted paths: gone now, and their parent still exists (or they sat at the root).
    let deleted: Vec<&[u8]> = before
        .keys()
        .filter(|p| !now.contains_key(*p))
        .filter(|p| parent(p).is_none_or(|up| now.contains_key(up)))
        .map(Vec::as_slice)
        .collect();
    for d in &deleted {
        if let Some(up) = parent(d) {
            include.insert(up);
        }
    }

    let mut builder = tar::Builder::new(BufWriter::with_capacity(1 << 20, File::create(out)?));
    builder.mode(tar::HeaderMode::Complete);
    builder.follow_symlinks(false);
    let mut counts = LayerCounts::default();
    let mut first_link: HashMap<u64, &[u8]> = HashMap::new();
    for path in now.keys().filter(|p| include.contains(p.as_slice())) {
        let name = Path::new(OsStr::from_bytes(path));
        let full = root.join(name);
        let meta = std::fs::symlink_metadata(&full)?;
        let ft = meta.file_type();
        if ft.is_block_device() || ft.is_char_device() || ft.is_fifo() || ft.is_socket() {
            counts.skipped_special += 1;
            continue;
        }
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
        if ft.is_file() && meta.nlink() > 1 {
            if let Some(first) = first_link.get(&meta.ino()) {
                header.set_entry_type(tar::EntryType::Link);
                header.set_size(0);
                builder.append_link(&mut header, name, Path::new(OsStr::from_bytes(first)))?;
                counts.entries += 1;
                continue;
            }
            first_link.insert(meta.ino(), path);
        }
        if ft.is_dir() {
            builder.append_data(&mut header, name, std::io::empty())?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&full)?;
            builder.append_link(&mut header, name, &target)?;
        } else {
            let file = File::open(&full).with_context(|| format!("opening {}", full.display()))?;
            builder.append_data(&mut header, name, file)?;
            counts.files += 1;
            counts.bytes += meta.size();
        }
        counts.entries += 1;
    }
    for d in &deleted {
        let (dir, base) = match parent(d) {
            Some(up) => (
                format!("{}/", String::from_utf8_lossy(up)),
                &d[up.len() + 1..],
            ),
            None => (String::new(), *d),
        };
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(0);
        header.set_mode(0o644);
        header.set_mtime(skiff_test_rig::entry::DEFAULT_MTIME);
        let name = format!("{dir}.wh.{}", String::from_utf8_lossy(base));
        builder.append_data(&mut header, name, std::io::empty())?;
        counts.whiteouts += 1;
        counts.entries += 1;
    }
    builder.into_inner()?.flush()?;
    println!(
        "{}",
        json!({
            "layer": out.display().to_string(),
            "entries": counts.entries,
            "regular_files": counts.files,
            "file_bytes": counts.bytes,
            "whiteouts": counts.whiteouts,
            "skipped_device_fifo_socket": counts.skipped_special,
        })
    );
    Ok(())
}

/// Gzips `tar` into `tar.gz` (cached, with a `.json` sidecar of digests and sizes) and returns
/// the sidecar.
fn gzip_cached(tar_path: &Path, level: u32) -> Result<(PathBuf, serde_json::Value)> {
    let mut gz = tar_path.as_os_str().to_owned();
    gz.push(".gz");
    let gz = PathBuf::from(gz);
    let mut side = gz.as_os_str().to_owned();
    side.push(".json");
    let side = PathBuf::from(side);
    let tar_meta = std::fs::metadata(tar_path)?;
    if let Ok(bytes) = std::fs::read(&side) {
        let meta: serde_json::Value = serde_json::from_slice(&bytes)?;
        let fresh = meta["tar_bytes"] == json!(tar_meta.len())
            && meta["tar_mtime"] == json!(tar_meta.mtime())
            && meta["level"] == json!(level)
            && std::fs::metadata(&gz).is_ok_and(|m| json!(m.len()) == meta["size"]);
        if fresh {
            return Ok((gz, meta));
        }
    }
    /// Hashes everything written through it.
    struct HashWriter<W> {
        inner: W,
        hash: Sha256,
        len: u64,
    }
    impl<W: Write> Write for HashWriter<W> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = self.inner.write(buf)?;
            self.hash.update(&buf[..n]);
            self.len += n as u64;
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.inner.flush()
        }
    }
    let tmp = gz.with_extension("gz.tmp");
    let out = HashWriter {
        inner: BufWriter::new(File::create(&tmp)?),
        hash: Sha256::new(),
        len: 0,
    };
    let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::new(level));
    let mut input = File::open(tar_path)?;
    let mut diff = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        diff.update(&buf[..n]);
        enc.write_all(&buf[..n])?;
    }
    let mut out = enc.finish()?;
    out.inner.flush()?;
    std::fs::rename(&tmp, &gz)?;
    let meta = json!({
        "digest": format!("sha256:{:x}", out.hash.finalize()),
        "diff_id": format!("sha256:{:x}", diff.finalize()),
        "media_type": "application/vnd.oci.image.layer.v1.tar+gzip",
        "size": out.len,
        "tar_bytes": tar_meta.len(),
        "tar_mtime": tar_meta.mtime(),
        "level": level,
    });
    std::fs::write(&side, serde_json::to_vec_pretty(&meta)?)?;
    Ok((gz, meta))
}

/// Uploads a file as a blob (monolithic POST + PUT, streamed from disk) unless present.
fn push_file_blob(
    http: &reqwest::blocking::Client,
    base: &str,
    repo: &str,
    digest: &str,
    file: &Path,
) -> Result<()> {
    let head = http
        .head(format!("{base}/v2/{repo}/blobs/{digest}"))
        .send()?;
    if head.status() == StatusCode::OK {
        return Ok(());
    }
    let started = http
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .send()?;
    if started.status() != StatusCode::ACCEPTED {
        bail!("start upload of {digest}: {}", started.status());
    }
    let location = started
        .headers()
        .get(LOCATION)
        .and_then(|l| l.to_str().ok())
        .context("upload without Location")?;
    let mut url = if location.starts_with('/') {
        format!("{base}{location}")
    } else {
        location.to_owned()
    };
    url.push(if url.contains('?') { '&' } else { '?' });
    url.push_str(&format!("digest={digest}"));
    let put = http
        .put(&url)
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(File::open(file)?)
        .send()?;
    if put.status() != StatusCode::CREATED {
        bail!(
            "upload {digest}: {}: {}",
            put.status(),
            put.text().unwrap_or_default()
        );
    }
    Ok(())
}

/// `skiff-rig push-layers`: gzips (cached) and pushes the tar layers as one OCI image; prints
/// its manifest digest and sizes.
pub fn push_layers(
    registry: &str,
    name: &str,
    layers: &[PathBuf],
    level: u32,
    cmd: &[String],
) -> Result<()> {
    let (repo, tag) = name.rsplit_once(':').context("NAME must be REPO:TAG")?;
    let base = registry.trim_end_matches('/');
    let http = reqwest::blocking::Client::builder().timeout(None).build()?;
    let mut descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    let mut history = Vec::new();
    let (mut compressed, mut uncompressed) = (0u64, 0u64);
    for layer in layers {
        let (gz, meta) =
            gzip_cached(layer, level).with_context(|| format!("gzip {}", layer.display()))?;
        let digest = meta["digest"].as_str().context("sidecar without digest")?;
        push_file_blob(&http, base, repo, digest, &gz)?;
        eprintln!(
            "pushed {} ({} bytes gzip, {} bytes tar)",
            layer.display(),
            meta["size"],
            meta["tar_bytes"]
        );
        compressed += meta["size"].as_u64().unwrap_or(0);
        uncompressed += meta["tar_bytes"].as_u64().unwrap_or(0);
        descriptors.push(
            json!({ "mediaType": meta["media_type"], "digest": digest, "size": meta["size"] }),
        );
        diff_ids.push(meta["diff_id"].clone());
        let step = layer
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        history.push(json!({ "created": "2023-11-14T22:13:20Z", "created_by": step }));
    }
    let config = json!({
        "created": "2023-11-14T22:13:20Z",
        "architecture": skiff_test_rig::Platform::host().architecture,
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": cmd,
        },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "history": history,
    });
    let config = Blob::new(serde_json::to_vec(&config)?, OCI_CONFIG);
    let client = skiff_test_rig::RegistryClient::new(base, None, None)?;
    client.push_blob(repo, &config)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": descriptors,
    });
    let manifest = Blob::new(serde_json::to_vec_pretty(&manifest)?, OCI_MANIFEST);
    client.push_manifest(repo, tag, &manifest)?;
    println!(
        "{}",
        json!({
            "manifest": manifest.digest.to_string(),
            "layers": layers.len(),
            "compressed_bytes": compressed,
            "uncompressed_bytes": uncompressed,
        })
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(tar_path: &Path) -> Vec<(String, tar::EntryType)> {
        let mut archive = tar::Archive::new(File::open(tar_path).unwrap());
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let name = String::from_utf8(e.path_bytes().into_owned()).unwrap();
                (name, e.header().entry_type())
            })
            .collect()
    }

    #[test]
    fn a_layer_holds_changes_parents_links_and_whiteouts() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        for d in ["usr/lib/a", "usr/share/doc/pkg", "etc", "dev"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("usr/lib/a/old"), "x").unwrap();
        std::fs::write(root.join("usr/share/doc/pkg/README"), "x").unwrap();
        std::fs::write(root.join("etc/kept"), "x").unwrap();
        std::fs::write(root.join("etc/chmod"), "x").unwrap();
        std::fs::write(root.join("dev/null"), "").unwrap();
        let base = tmp.path().join("base.tar");
        diff_layer(&root, None, &base).unwrap();
        let base_names: Vec<String> = names(&base).into_iter().map(|(n, _)| n).collect();
        assert!(base_names.contains(&"dev".to_owned()), "{base_names:?}");
        assert!(
            !base_names.iter().any(|n| n.starts_with("dev/n")),
            "{base_names:?}"
        );

        let snap = tmp.path().join("snap");
        snapshot(&root, &snap).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(root.join("usr/lib/a/new"), "y").unwrap();
        std::fs::hard_link(root.join("usr/lib/a/new"), root.join("usr/lib/a/new2")).unwrap();
        std::fs::remove_dir_all(root.join("usr/share/doc/pkg")).unwrap();
        std::fs::set_permissions(
            root.join("etc/chmod"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let layer = tmp.path().join("l2.tar");
        diff_layer(&root, Some(&snap), &layer).unwrap();
        let got = names(&layer);
        let want = [
            ("etc", tar::EntryType::Directory),
            ("etc/chmod", tar::EntryType::Regular),
            ("usr", tar::EntryType::Directory),
            ("usr/lib", tar::EntryType::Directory),
            ("usr/lib/a", tar::EntryType::Directory),
            ("usr/lib/a/new", tar::EntryType::Regular),
            ("usr/lib/a/new2", tar::EntryType::Link),
            ("usr/share", tar::EntryType::Directory),
            ("usr/share/doc", tar::EntryType::Directory),
            ("usr/share/doc/.wh.pkg", tar::EntryType::Regular),
        ];
        let want: Vec<(String, tar::EntryType)> =
            want.iter().map(|(n, t)| ((*n).to_owned(), *t)).collect();
        assert_eq!(got, want);
    }
}
