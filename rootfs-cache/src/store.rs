//! The store on disk: blobs, layers, image records and refs under one root, all addressed by
//! digest. Layers appear only by an atomic rename of a fully verified directory.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::Digest;
use crate::extract::{self, ExtractError, ExtractOptions};
use crate::layer_writer::{self, Compression, StreamError};
use crate::lock::FileLock;
use crate::records::{ImageRecord, LayerRecord, RefRecord, now};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A filesystem operation on the store failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A blob or layer did not hash to its digest; nothing was committed.
    #[error(
        "layer {layer}: {what} digest mismatch: expected {expected}, got {actual}; nothing was committed (the blob is corrupt or was tampered with: pull again)"
    )]
    DigestMismatch {
        /// The layer (its compressed digest).
        layer: Digest,
        /// `compressed` or `uncompressed (diff_id)`.
        what: &'static str,
        /// What the manifest or config promised.
        expected: Digest,
        /// What the bytes hash to.
        actual: Digest,
    },
    /// A blob's content does not match its digest.
    #[error("blob {expected}: content hashes to {actual}; not stored")]
    BlobMismatch {
        /// Promised digest.
        expected: Digest,
        /// Actual digest.
        actual: Digest,
    },
    /// The layer's tar could not be extracted safely; nothing was committed.
    #[error("layer {layer}: {source}; nothing was committed")]
    Extract {
        /// The layer (its compressed digest).
        layer: Digest,
        /// What went wrong.
        #[source]
        source: ExtractError,
    },
    /// The layer could not be written into the store (the disk is full, say); nothing was
    /// committed, and the partly written staging directory is gone.
    #[error("layer {layer}: writing into {path}: {source}; nothing was committed")]
    Write {
        /// The layer (its compressed digest).
        layer: Digest,
        /// The staging directory in the store's tmp/ it was being unpacked into.
        path: PathBuf,
        /// The entry and the OS error.
        #[source]
        source: Box<ExtractError>,
    },
    /// The layer stream could not be read or decompressed; nothing was committed.
    #[error("layer {layer}: {source}; nothing was committed")]
    Stream {
        /// The layer (its compressed digest).
        layer: Digest,
        /// What went wrong.
        #[source]
        source: StreamError,
    },
    /// A layer media type skiff cannot unpack.
    #[error("layer {layer}: unsupported media type {media_type:?}")]
    UnsupportedMediaType {
        /// The layer.
        layer: Digest,
        /// Its media type.
        media_type: String,
    },
    /// A name component that cannot be a path in the store.
    #[error("invalid {what} {value:?} for the store")]
    InvalidName {
        /// Registry, repository or tag.
        what: &'static str,
        /// The value.
        value: String,
    },
    /// A record on disk cannot be read.
    #[error("corrupt store record {path}: {reason}; run `skiff verify` (or remove it)")]
    Corrupt {
        /// The record.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// What [`Store::commit_layer`] did.
#[derive(Debug, Clone)]
pub enum LayerOutcome {
    /// The layer was already in the store; the stream was not read.
    Present(LayerRecord),
    /// The layer was extracted, verified and committed now.
    Committed(LayerRecord),
}

impl LayerOutcome {
    /// The layer's record, either way.
    pub fn record(&self) -> &LayerRecord {
        match self {
            Self::Present(r) | Self::Committed(r) => r,
        }
    }
}

/// A content-addressed layer store rooted at one directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    options: ExtractOptions,
    /// Told how far each layer's unpacking has got (None: nobody asked).
    unpacking: Option<std::sync::Arc<crate::Unpacking>>,
}

const DIRS: [&str; 7] = [
    "blobs/sha256",
    "layers/sha256",
    "images/sha256",
    "refs",
    "runs",
    "tmp",
    "locks",
];

impl Store {
    /// Opens (creating if needed) a store with extraction options for the current user.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        Self::open_with(root, ExtractOptions::for_current_user())
    }

    /// Opens (creating if needed) a store with explicit extraction options.
    pub fn open_with(
        root: impl Into<PathBuf>,
        options: ExtractOptions,
    ) -> Result<Self, StoreError> {
        let root = root.into();
        for dir in DIRS {
            let path = root.join(dir);
            fs::create_dir_all(&path).map_err(io_err("creating", &path))?;
        }
        Ok(Self {
            root,
            options,
            unpacking: None,
        })
    }

    /// This store with its layer writers telling `unpacking` how far they have got.
    pub fn reporting_unpacking_to(mut self, unpacking: std::sync::Arc<crate::Unpacking>) -> Self {
        self.unpacking = Some(unpacking);
        self
    }

    /// The store root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The extraction options layers are committed with.
    pub fn options(&self) -> &ExtractOptions {
        &self.options
    }

    pub(crate) fn layer_base(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers/sha256").join(diff_id.hex())
    }

    /// The directory to use as an overlay lower dir for a committed layer.
    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.layer_base(diff_id).join("fs")
    }

    /// Whether the layer with this diff_id is committed.
    pub fn has_layer(&self, diff_id: &Digest) -> bool {
        self.layer_base(diff_id).join("layer.json").is_file()
    }

    /// The record of a committed layer.
    pub fn layer(&self, diff_id: &Digest) -> Result<Option<LayerRecord>, StoreError> {
        read_json(&self.layer_base(diff_id).join("layer.json"))
    }

    /// diff_ids of every committed layer.
    pub fn layers(&self) -> Result<Vec<Digest>, StoreError> {
        list_digests(&self.root.join("layers/sha256"), "")
    }

    pub(crate) fn lock_path(&self, kind: &str, digest: &Digest) -> PathBuf {
        self.root
            .join("locks")
            .join(format!("{kind}-{}", digest.hex()))
    }

    /// Streams a compressed layer into the store, or does nothing if it is there already.
    ///
    /// `digest` is the blob digest from the manifest, `diff_id` the one from the image config.
    /// Two processes committing the same layer serialise on a lock: the second finds it
    /// committed and does not read its stream.
    pub fn commit_layer<R: Read + Send + 'static>(
        &self,
        digest: &Digest,
        diff_id: &Digest,
        media_type: &str,
        source: R,
    ) -> Result<LayerOutcome, StoreError> {
        match self.begin_layer(diff_id)? {
            LayerSlot::Present(record) => Ok(LayerOutcome::Present(record)),
            LayerSlot::Vacant(writer) => writer
                .write(digest, media_type, source)
                .map(LayerOutcome::Committed),
        }
    }

    /// Takes the layer's lock unless it is committed; the pull uses this to decide whether to
    /// download at all.
    pub fn begin_layer(&self, diff_id: &Digest) -> Result<LayerSlot<'_>, StoreError> {
        if let Some(record) = self.layer(diff_id)? {
            return Ok(LayerSlot::Present(record));
        }
        let lock_path = self.lock_path("layer", diff_id);
        let lock = FileLock::exclusive(&lock_path).map_err(io_err("locking", &lock_path))?;
        if let Some(record) = self.layer(diff_id)? {
            return Ok(LayerSlot::Present(record));
        }
        Ok(LayerSlot::Vacant(LayerWriter {
            store: self,
            diff_id: *diff_id,
            _lock: lock,
        }))
    }

    /// Removes leftovers of crashed writers of this layer (we hold its lock, so none is live).
    fn clear_tmp_for(&self, diff_id: &Digest) -> Result<(), StoreError> {
        let tmp = self.root.join("tmp");
        let prefix = format!("layer-{}.", diff_id.hex());
        for entry in fs::read_dir(&tmp).map_err(io_err("listing", &tmp))? {
            let entry = entry.map_err(io_err("listing", &tmp))?;
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                tracing::info!(path = %entry.path().display(), "removing a crashed writer's leftovers");
                remove_tree(&entry.path())?;
            }
        }
        Ok(())
    }

    /// Stores a small blob (manifest, index, config) after checking its digest.
    pub fn put_blob(&self, digest: &Digest, bytes: &[u8]) -> Result<(), StoreError> {
        let actual = Digest::of(bytes);
        if actual != *digest {
            return Err(StoreError::BlobMismatch {
                expected: *digest,
                actual,
            });
        }
        let path = self.blob_path(digest);
        if path.is_file() {
            return Ok(());
        }
        self.write_atomic(&path, bytes)
    }

    /// A stored blob, re-verified on read.
    pub fn blob(&self, digest: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.blob_path(digest);
        match fs::read(&path) {
            Ok(bytes) => {
                let actual = Digest::of(&bytes);
                if actual != *digest {
                    return Err(StoreError::Corrupt {
                        path,
                        reason: format!("content hashes to {actual}"),
                    });
                }
                Ok(Some(bytes))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("reading", &path)(e)),
        }
    }

    /// Path of a blob (which may not exist).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    /// Every stored blob.
    pub fn blobs(&self) -> Result<Vec<Digest>, StoreError> {
        list_digests(&self.root.join("blobs/sha256"), "")
    }

    pub(crate) fn image_path(&self, manifest: &Digest) -> PathBuf {
        self.root
            .join("images/sha256")
            .join(format!("{}.json", manifest.hex()))
    }

    /// Records an image (replacing an older record of the same manifest).
    pub fn put_image(&self, record: &ImageRecord) -> Result<(), StoreError> {
        let path = self.image_path(&record.manifest);
        self.write_atomic(&path, &to_json(record))
    }

    /// An image record by manifest digest.
    pub fn image(&self, manifest: &Digest) -> Result<Option<ImageRecord>, StoreError> {
        read_json(&self.image_path(manifest))
    }

    /// Every image record.
    pub fn images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let mut out = Vec::new();
        for digest in list_digests(&self.root.join("images/sha256"), ".json")? {
            if let Some(record) = self.image(&digest)? {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// Marks an image as used now (for least-recently-used gc).
    pub fn touch_image(&self, manifest: &Digest) -> Result<(), StoreError> {
        if let Some(mut record) = self.image(manifest)? {
            record.last_used = now();
            self.put_image(&record)?;
        }
        Ok(())
    }

    /// Removes an image record (its layers go at the next gc if nothing else uses them).
    pub fn remove_image(&self, manifest: &Digest) -> Result<bool, StoreError> {
        let path = self.image_path(manifest);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("removing", &path)(e)),
        }
    }

    fn ref_path(&self, registry: &str, repository: &str, tag: &str) -> Result<PathBuf, StoreError> {
        check_component("registry", registry)?;
        for part in repository.split('/') {
            check_component("repository", part)?;
        }
        check_component("tag", tag)?;
        Ok(self
            .root
            .join("refs")
            .join(registry)
            .join(repository)
            .join(tag))
    }

    /// Points `registry/repository:tag` at an image.
    pub fn set_ref(
        &self,
        registry: &str,
        repository: &str,
        tag: &str,
        record: &RefRecord,
    ) -> Result<(), StoreError> {
        let path = self.ref_path(registry, repository, tag)?;
        self.write_atomic(&path, &to_json(record))
    }

    /// What `registry/repository:tag` points at.
    pub fn get_ref(
        &self,
        registry: &str,
        repository: &str,
        tag: &str,
    ) -> Result<Option<RefRecord>, StoreError> {
        read_json(&self.ref_path(registry, repository, tag)?)
    }

    /// Removes a ref; true if it existed.
    pub fn remove_ref(
        &self,
        registry: &str,
        repository: &str,
        tag: &str,
    ) -> Result<bool, StoreError> {
        let path = self.ref_path(registry, repository, tag)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("removing", &path)(e)),
        }
    }

    /// Every ref as (`registry/repository`, tag, record).
    pub fn refs(&self) -> Result<Vec<(String, String, RefRecord)>, StoreError> {
        let mut out = Vec::new();
        let base = self.root.join("refs");
        walk_refs(&base, &base, &mut out)?;
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        Ok(out)
    }

    /// Writes a file by rename from tmp/, so readers see the old or the new content only.
    pub(crate) fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
        }
        let tmp = self.tmp_path("file");
        let mut file = fs::File::create(&tmp).map_err(io_err("creating", &tmp))?;
        file.write_all(bytes).map_err(io_err("writing", &tmp))?;
        drop(file);
        fs::rename(&tmp, path).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_err("renaming into place", path)(e)
        })
    }

    pub(crate) fn tmp_path(&self, kind: &str) -> PathBuf {
        use std::sync::atomic::{AtomicU64, Ordering};
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        self.root.join("tmp").join(format!(
            "{kind}.{}.{nanos}.{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ))
    }
}

/// Either a committed layer's record or the exclusive right to write it.
#[derive(Debug)]
pub enum LayerSlot<'a> {
    /// Already committed.
    Present(LayerRecord),
    /// Ours to write; the lock is held until the writer is dropped.
    Vacant(LayerWriter<'a>),
}

/// The right to commit one layer, holding its lock.
#[derive(Debug)]
pub struct LayerWriter<'a> {
    store: &'a Store,
    diff_id: Digest,
    _lock: FileLock,
}

impl LayerWriter<'_> {
    /// Extracts the compressed stream, verifies both digests and commits the layer.
    pub fn write<R: Read + Send + 'static>(
        self,
        digest: &Digest,
        media_type: &str,
        source: R,
    ) -> Result<LayerRecord, StoreError> {
        let store = self.store;
        let compression = Compression::from_media_type(media_type).ok_or_else(|| {
            StoreError::UnsupportedMediaType {
                layer: *digest,
                media_type: media_type.to_owned(),
            }
        })?;
        store.clear_tmp_for(&self.diff_id)?;
        let staging = store.tmp_path(&format!("layer-{}", self.diff_id.hex()));
        let fs_dir = staging.join("fs");
        fs::create_dir_all(&fs_dir).map_err(io_err("creating", &fs_dir))?;
        let result = self.fill(&staging, digest, compression, source);
        if let Some(unpacking) = &store.unpacking {
            unpacking.end(&self.diff_id);
        }
        match result {
            Ok(record) => Ok(record),
            Err(err) => {
                // Nothing of a failed layer stays: not in layers/, not in tmp/.
                let _ = remove_tree(&staging);
                Err(err)
            }
        }
    }

    fn fill<R: Read + Send + 'static>(
        &self,
        staging: &Path,
        digest: &Digest,
        compression: Compression,
        source: R,
    ) -> Result<LayerRecord, StoreError> {
        let store = self.store;
        let fs_dir = staging.join("fs");
        // Readers of the staging directory get it open now: it is renamed on commit.
        let unpacked = store.unpacking.as_ref().and_then(|unpacking| {
            let root = crate::ConfinedRoot::open(&fs_dir).ok()?;
            unpacking.begin(self.diff_id, root)
        });
        let (mut reader, decoder) =
            layer_writer::spawn_decoder(source, compression).map_err(|e| StoreError::Stream {
                layer: *digest,
                source: e.into(),
            })?;
        let extracted =
            extract::extract_reporting(&mut reader, &fs_dir, &store.options, &|written| {
                if let Some(u) = &unpacked {
                    u.advance(written);
                }
            });
        let drained = if extracted.is_ok() {
            reader.drain()
        } else {
            Ok(())
        };
        drop(reader);
        let decoded = decoder
            .join()
            .unwrap_or_else(|_| Err(StreamError::Io(io::Error::other("decoder thread panicked"))));
        // A stream error explains an extraction error (a truncated tar is a broken download),
        // unless the stream only stopped because extraction did: then extraction's error is
        // the cause (a full disk must not read as a broken stream).
        let digests = match (decoded, extracted) {
            (Err(StreamError::ExtractionStopped) | Ok(_), Err(source)) => {
                return Err(extract_failure(*digest, staging, source));
            }
            (Err(source), _) => {
                return Err(StoreError::Stream {
                    layer: *digest,
                    source,
                });
            }
            (Ok(d), Ok(stats)) => (d, stats),
        };
        drained.map_err(|e| StoreError::Stream {
            layer: *digest,
            source: e.into(),
        })?;
        let (d, stats) = digests;
        if d.compressed != *digest {
            return Err(StoreError::DigestMismatch {
                layer: *digest,
                what: "compressed",
                expected: *digest,
                actual: d.compressed,
            });
        }
        if d.diff_id != self.diff_id {
            return Err(StoreError::DigestMismatch {
                layer: *digest,
                what: "uncompressed (diff_id)",
                expected: self.diff_id,
                actual: d.diff_id,
            });
        }
        let record = LayerRecord {
            diff_id: self.diff_id,
            compressed_digest: *digest,
            compression,
            compressed_size: d.compressed_size,
            size: d.size,
            ownership: store.options.ownership,
            overlay_xattrs: store.options.overlay_xattrs,
            stats,
            committed_at: now(),
        };
        let record_path = staging.join("layer.json");
        fs::write(&record_path, to_json(&record)).map_err(io_err("writing", &record_path))?;
        let target = store.layer_base(&self.diff_id);
        fs::rename(staging, &target).map_err(io_err("committing layer", &target))?;
        Ok(record)
    }
}

/// An extraction failure: the store's filesystem or the host failing (a full disk, a quota, a
/// read-only store) names the staging directory; a layer refused for what it contains (an
/// unsafe name, a symlink loop) does not need to.
fn extract_failure(layer: Digest, staging: &Path, source: ExtractError) -> StoreError {
    let store_side = matches!(
        &source,
        ExtractError::Io { source, .. } if extract::is_host_failure(source)
    );
    if store_side {
        StoreError::Write {
            layer,
            path: staging.join("fs"),
            source: Box::new(source),
        }
    } else {
        StoreError::Extract { layer, source }
    }
}

fn check_component(what: &'static str, value: &str) -> Result<(), StoreError> {
    if value.is_empty()
        || value == "."
        || value == ".."
        || value.contains(['/', '\0'])
        || value.len() > 255
    {
        return Err(StoreError::InvalidName {
            what,
            value: value.to_owned(),
        });
    }
    Ok(())
}

fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Serialising these plain records cannot fail (no maps with non-string keys).
    serde_json::to_vec_pretty(value).unwrap_or_default()
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(
    path: &Path,
) -> Result<Option<T>, StoreError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                path: path.to_owned(),
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("reading", path)(e)),
    }
}

pub(crate) fn list_digests(dir: &Path, suffix: &str) -> Result<Vec<Digest>, StoreError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("listing", dir))? {
        let entry = entry.map_err(io_err("listing", dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(d) = name.strip_suffix(suffix).and_then(Digest::from_hex) {
            out.push(d);
        }
    }
    out.sort();
    Ok(out)
}

fn walk_refs(
    base: &Path,
    dir: &Path,
    out: &mut Vec<(String, String, RefRecord)>,
) -> Result<(), StoreError> {
    for entry in fs::read_dir(dir).map_err(io_err("listing", dir))? {
        let entry = entry.map_err(io_err("listing", dir))?;
        let path = entry.path();
        if entry
            .file_type()
            .map_err(io_err("listing", &path))?
            .is_dir()
        {
            walk_refs(base, &path, out)?;
        } else if let Some(record) = read_json::<RefRecord>(&path)? {
            let rel = path.strip_prefix(base).unwrap_or(&path);
            let tag = rel
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let name = rel
                .parent()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.push((name, tag, record));
        }
    }
    Ok(())
}

/// Removes a directory tree that may hold read-only directories (a layer's own modes).
pub(crate) fn remove_tree(path: &Path) -> Result<(), StoreError> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    let name = path.file_name().unwrap_or_default();
    let dir = fs::File::open(parent).map_err(io_err("opening", parent))?;
    let cname = std::ffi::CString::new(name.as_encoded_bytes())
        .map_err(|_| io_err("removing", path)(io::ErrorKind::InvalidInput.into()))?;
    match extract::remove_tree_at(std::os::fd::AsFd::as_fd(&dir), &cname) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("removing", path)(e)),
    }
}
