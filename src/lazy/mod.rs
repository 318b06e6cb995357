//! Lazy start's index: for each gzip layer of an image, a table of its files (metadata, where
//! each file's content lies, its digest) and inflate checkpoints, so that one file can be read
//! with a Range request of the compressed blob instead of the whole layer. `skiff index push`
//! builds it and publishes it beside the image as an OCI artifact that refers to the image
//! manifest; a reader finds it by the image's digest, in the image's own repository only.
//!
//! Why a format of skiff's own rather than SOCI's zTOC or eStargz's TOC: eStargz needs the
//! layers rebuilt; a SOCI index is a flatbuffers zTOC whose checkpoints are zlib's raw inflate
//! state, which the pure-Rust inflater here cannot resume from. This index serves existing
//! gzip images unchanged, is JSON, and checks every file against a digest it carries.

mod ahead;
pub(crate) mod artifact;
pub(crate) mod chunks;
pub(crate) mod fs;
pub(crate) mod helper;
pub(crate) mod inflate;
pub(crate) mod mount;
pub(crate) mod prefetch;
mod push;
pub(crate) mod toc;

use std::io::{Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::Digest;
use crate::image::ImageManifest;
use crate::registry::{FetchedManifest, RegistryClient, RegistryError};
use toc::{LayerToc, MAX_TOC_BYTES};

/// Why an index could not be built, published, found or used.
#[derive(Debug, thiserror::Error)]
pub enum LazyError {
    /// A layer could not be indexed.
    #[error("indexing layer {layer}: {reason}")]
    Layer {
        /// The layer blob.
        layer: Digest,
        /// What was wrong.
        reason: String,
    },
    /// A layer that is not gzip-compressed.
    #[error("layer {layer} is {media_type}: only gzip layers can be indexed")]
    NotGzip {
        /// The layer blob.
        layer: Digest,
        /// Its media type.
        media_type: String,
    },
    /// The index (artifact, referrers list or a table) is malformed or not for this image.
    #[error("the lazy index is unusable: {reason}")]
    Index {
        /// What was wrong.
        reason: String,
    },
    /// The image has no index.
    #[error("{image} has no lazy index (publish one with `skiff index push {image}`)")]
    NoIndex {
        /// The image.
        image: String,
    },
    /// No such file in the image.
    #[error("{path}: no such file in {image}")]
    NoFile {
        /// The path asked for.
        path: String,
        /// The image.
        image: String,
    },
    /// A file's content disagrees with the index, or could not be inflated.
    #[error("{path} (layer {layer}): {reason}")]
    Content {
        /// The file.
        path: String,
        /// Its layer.
        layer: Digest,
        /// What was wrong.
        reason: String,
    },
    /// A file's chunks could not be fetched.
    #[error("reading {path} (layer {layer})")]
    Read {
        /// The file.
        path: String,
        /// Its layer.
        layer: Digest,
        /// The registry's failure.
        #[source]
        source: Box<RegistryError>,
    },
    /// The lazy file system could not be mounted.
    #[error("mounting the image lazily: {reason}")]
    Mount {
        /// What failed.
        reason: String,
    },
    /// The registry failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

pub use mount::LazyMount;

/// Where an image lives: the hosts to try, its registry and repository.
#[derive(Debug, Clone)]
pub(crate) struct Place {
    pub(crate) hosts: Vec<String>,
    pub(crate) registry: String,
    pub(crate) repository: String,
}

impl Place {
    fn host(&self) -> &str {
        self.hosts
            .last()
            .map_or(self.registry.as_str(), String::as_str)
    }
}

/// What `index push` published.
#[derive(Debug, Clone)]
pub struct IndexReport {
    /// The image manifest the index describes.
    pub subject: Digest,
    /// The index's artifact manifest.
    pub artifact: Digest,
    /// Layers indexed.
    pub layers: usize,
    /// Files (all entries) across the layers.
    pub entries: usize,
    /// Bytes of the compressed tables.
    pub table_bytes: u64,
    /// Bytes of the layers' windows blobs (a read fetches one window per chunk it starts).
    pub window_bytes: u64,
    /// The most a file read inflates beyond what it needs: the longest stretch of a layer
    /// between two checkpoints (long where the layer's deflate blocks are long).
    pub longest_span: u64,
    /// How it can be found: `referrers API` or `tag sha256-…`.
    pub published_as: String,
}

fn is_gzip(media_type: &str) -> bool {
    media_type.ends_with("tar+gzip") || media_type.ends_with("tar.gzip")
}

/// Builds the tables of `manifest`'s layers (each downloaded once, its digest checked), pushes
/// them and the artifact, and makes it findable from the image manifest `subject`.
pub(crate) async fn push_index(
    client: &RegistryClient,
    place: &Place,
    subject: &FetchedManifest,
    manifest: &ImageManifest,
) -> Result<IndexReport, LazyError> {
    let mut tables = Vec::new();
    let mut windows = Vec::new();
    let mut entries = 0;
    let mut table_bytes = 0;
    let mut window_bytes = 0;
    let mut longest_span = 0;
    let push =
        |blob: Bytes| client.push_blob(place.host(), &place.registry, &place.repository, blob);
    for layer in manifest.layers() {
        let digest = Digest::parse(layer.digest().as_ref()).map_err(|e| LazyError::Index {
            reason: format!("a layer digest: {e}"),
        })?;
        let media_type = layer.media_type().to_string();
        if !is_gzip(&media_type) {
            return Err(LazyError::NotGzip {
                layer: digest,
                media_type,
            });
        }
        let mut toc = build_table(client, place, &digest, layer.size()).await?;
        let window_blob = toc.split_windows()?;
        if let Some(w) = toc.windows {
            window_bytes += w.size;
            let pushed = push(Bytes::from(window_blob)).await?;
            windows.push((digest, pushed, w.size));
        }
        entries += toc.entries.len();
        longest_span = longest_span.max(toc.longest_span());
        let json = serde_json::to_vec(&toc).map_err(|e| LazyError::Index {
            reason: e.to_string(),
        })?;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let compressed = gz
            .write_all(&json)
            .and_then(|()| gz.finish())
            .map_err(|e| LazyError::Index {
                reason: format!("compressing a table: {e}"),
            })?;
        table_bytes += compressed.len() as u64;
        let size = compressed.len() as u64;
        let blob = push(Bytes::from(compressed)).await?;
        tables.push((digest, blob, size));
    }
    client
        .push_blob(
            place.host(),
            &place.registry,
            &place.repository,
            Bytes::from_static(artifact::EMPTY_CONFIG),
        )
        .await?;
    let subject_type = subject_media_type(subject);
    let bytes = artifact::manifest(
        &subject.digest,
        &subject_type,
        subject.bytes.len() as u64,
        &tables,
        &windows,
    )?;
    let artifact_digest = Digest::of(&bytes);
    let size = bytes.len() as u64;
    client
        .put_manifest(
            place.host(),
            &place.registry,
            &place.repository,
            &artifact_digest.to_string(),
            "application/vnd.oci.image.manifest.v1+json",
            Bytes::from(bytes),
        )
        .await?;
    // A registry with the referrers API lists the artifact by its subject by itself.
    let listed = client
        .referrers(
            place.host(),
            &place.registry,
            &place.repository,
            &subject.digest,
        )
        .await?;
    let published_as = match listed {
        Some(list) if artifact::find_ours(&list)? == Some(artifact_digest) => {
            "referrers API".to_owned()
        }
        _ => {
            let tag = artifact::referrers_tag(&subject.digest);
            let existing = client
                .manifest_bytes(place.host(), &place.registry, &place.repository, &tag)
                .await?;
            let index = artifact::add_referrer(existing.as_deref(), &artifact_digest, size)?;
            client
                .put_manifest(
                    place.host(),
                    &place.registry,
                    &place.repository,
                    &tag,
                    "application/vnd.oci.image.index.v1+json",
                    Bytes::from(index),
                )
                .await?;
            format!("tag {tag}")
        }
    };
    Ok(IndexReport {
        subject: subject.digest,
        artifact: artifact_digest,
        layers: tables.len(),
        entries,
        table_bytes,
        window_bytes,
        longest_span,
        published_as,
    })
}

/// The media type of the image manifest, as the registry served it.
fn subject_media_type(subject: &FetchedManifest) -> String {
    serde_json::from_slice::<serde_json::Value>(&subject.bytes)
        .ok()
        .and_then(|v| v.get("mediaType")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".to_owned())
}

/// A blocking reader over the chunks a blob download sends, hashing them.
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    chunk: Bytes,
    hash: sha2::Sha256,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use sha2::Digest as _;
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(c) => {
                    self.hash.update(&c);
                    self.chunk = c;
                }
                None => return Ok(0),
            }
        }
        let n = self.chunk.len().min(buf.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        bytes::Buf::advance(&mut self.chunk, n);
        Ok(n)
    }
}

/// Downloads layer `digest` and builds its table on a blocking thread as the bytes arrive.
async fn build_table(
    client: &RegistryClient,
    place: &Place,
    digest: &Digest,
    size: u64,
) -> Result<LayerToc, LazyError> {
    let (tx, rx) = mpsc::channel(32);
    let layer = *digest;
    let builder = tokio::task::spawn_blocking(move || {
        let mut reader = ChannelReader {
            rx,
            chunk: Bytes::new(),
            hash: sha2::Digest::new(),
        };
        let toc = LayerToc::build(&mut reader, layer);
        // Drain what the table did not need (nothing, for a well-formed layer) for the digest.
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
        (toc, Digest::from_sha256(reader.hash))
    });
    let download = client.blob(
        &place.hosts,
        &place.registry,
        &place.repository,
        digest,
        Some(size),
        size,
        tx,
        |_| {},
    );
    let downloaded = download.await;
    let (toc, actual) = builder.await.map_err(|e| LazyError::Layer {
        layer: *digest,
        reason: e.to_string(),
    })?;
    downloaded?;
    if actual != *digest {
        return Err(RegistryError::DigestMismatch {
            what: format!("layer {digest}"),
            expected: *digest,
            actual,
        }
        .into());
    }
    let toc = toc?;
    if toc.compressed_size != size {
        return Err(LazyError::Layer {
            layer: *digest,
            reason: format!(
                "the gzip stream ends at byte {} of {size}",
                toc.compressed_size
            ),
        });
    }
    Ok(toc)
}

/// The image's index: its tables by layer (fetched by digest and checked), in layer order.
pub(crate) async fn fetch_index(
    client: &RegistryClient,
    place: &Place,
    subject: &Digest,
    manifest: &ImageManifest,
    image: &str,
) -> Result<Vec<Arc<LayerToc>>, LazyError> {
    // The referrers API and the tag scheme at once: a registry without the API needs the tag.
    let tag = artifact::referrers_tag(subject);
    let (api, by_tag) = tokio::join!(
        client.referrers(place.host(), &place.registry, &place.repository, subject),
        client.manifest_bytes(place.host(), &place.registry, &place.repository, &tag),
    );
    let listed = match api? {
        Some(list) => Some(list),
        None => by_tag?,
    };
    let no_index = || LazyError::NoIndex {
        image: image.to_owned(),
    };
    let artifact_digest = match listed {
        Some(list) => artifact::find_ours(&list)?.ok_or_else(no_index)?,
        None => return Err(no_index()),
    };
    let bytes = client
        .manifest_bytes(
            place.host(),
            &place.registry,
            &place.repository,
            &artifact_digest.to_string(),
        )
        .await?
        .ok_or_else(no_index)?;
    if Digest::of(&bytes) != artifact_digest {
        return Err(LazyError::Index {
            reason: format!("the index manifest is not {artifact_digest}"),
        });
    }
    let tables = artifact::tables(&bytes, subject)?;
    // All tables at once: each is a round trip and a download, then a parse.
    let mut wanted = Vec::new();
    for layer in manifest.layers() {
        let digest = Digest::parse(layer.digest().as_ref()).map_err(|e| LazyError::Index {
            reason: format!("a layer digest: {e}"),
        })?;
        let (blob, size) = *tables.get(&digest).ok_or_else(|| LazyError::Index {
            reason: format!("no table for layer {digest}"),
        })?;
        wanted.push(fetch_table(client, place, digest, layer.size(), blob, size));
    }
    futures_util::future::try_join_all(wanted).await
}

/// The table of layer `digest` (`layer_size` bytes), blob `blob` of `size` bytes, checked.
async fn fetch_table(
    client: &RegistryClient,
    place: &Place,
    digest: Digest,
    layer_size: u64,
    blob: Digest,
    size: u64,
) -> Result<Arc<LayerToc>, LazyError> {
    if size > MAX_TOC_BYTES {
        return Err(LazyError::Index {
            reason: format!("the table of layer {digest} is {size} bytes"),
        });
    }
    let compressed = client
        .small_blob(
            &place.hosts,
            &place.registry,
            &place.repository,
            &blob,
            size,
        )
        .await?;
    let parse = move || {
        let mut json = Vec::new();
        flate2::read::GzDecoder::new(&compressed[..])
            .take(MAX_TOC_BYTES + 1)
            .read_to_end(&mut json)
            .map_err(|e| LazyError::Index {
                reason: format!("the table of layer {digest}: {e}"),
            })?;
        if json.len() as u64 > MAX_TOC_BYTES {
            return Err(LazyError::Index {
                reason: format!("the table of layer {digest} is over {MAX_TOC_BYTES} bytes"),
            });
        }
        LayerToc::parse(&json)
    };
    // Parsing a large table takes a while: off the I/O threads, tables in parallel.
    let toc = tokio::task::spawn_blocking(parse)
        .await
        .map_err(|e| LazyError::Index {
            reason: format!("parsing the table of layer {digest}: {e}"),
        })??;
    if toc.layer != digest || toc.compressed_size != layer_size {
        return Err(LazyError::Index {
            reason: format!("the table for layer {digest} describes {}", toc.layer),
        });
    }
    Ok(Arc::new(toc))
}

/// The topmost entry at `path` (no leading `/`) across `tables`, unless a whiteout in a layer
/// above hides it.
fn lookup<'a>(
    tables: &'a [Arc<LayerToc>],
    path: &str,
) -> Option<(&'a LayerToc, &'a toc::TocEntry)> {
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    let whiteout = if dir.is_empty() {
        format!(".wh.{name}")
    } else {
        format!("{dir}/.wh.{name}")
    };
    for t in tables.iter().rev() {
        if let Some(e) = t.entry(path) {
            return Some((t, e));
        }
        if t.entry(&whiteout).is_some() {
            return None;
        }
    }
    None
}

/// `path` with every symlink along it followed inside the image (at most 40, as Linux).
fn resolve(tables: &[Arc<LayerToc>], path: &str) -> Option<String> {
    let mut rest: std::collections::VecDeque<String> = path.split('/').map(str::to_owned).collect();
    let mut done: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(c) = rest.pop_front() {
        match c.as_str() {
            "" | "." => continue,
            ".." => {
                done.pop();
                continue;
            }
            _ => {}
        }
        let candidate = if done.is_empty() {
            c.clone()
        } else {
            format!("{}/{c}", done.join("/"))
        };
        match lookup(tables, &candidate) {
            Some((_, e)) if e.kind == toc::Kind::Symlink => {
                hops += 1;
                if hops > 40 {
                    return None;
                }
                let target = e.link.clone().unwrap_or_default();
                if target.starts_with('/') {
                    done.clear();
                }
                for part in target.split('/').rev() {
                    rest.push_front(part.to_owned());
                }
            }
            _ => done.push(c),
        }
    }
    Some(done.join("/"))
}

/// How far ahead of the pull's stream of a blob a read waits for it rather than asking the
/// link: a whole-image read (a tar of it) wants what the stream brings next, and the bytes
/// would otherwise cross the link twice.
const STREAM_AHEAD: u64 = 8 << 20;
/// The longest a read (all its ranges) waits for the pull's streams before asking the link
/// itself.
const STREAM_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Files up to this size taken from a layer the pull is unpacking are read whole (and kept by
/// the file system); bigger ones are checked once, kept open and read as asked.
const UNPACKED_WHOLE: u64 = 1 << 20;
/// How many such big files are kept open (all are closed when one more is wanted).
const UNPACKED_KEPT: usize = 64;
/// The smallest file that waits for the pull (see `LayerReader::wait_for_pull`).
const PULL_WAIT_MIN: u64 = 4 << 20;
/// The longest such a wait.
const PULL_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long the unpacking of a layer may stand still before a read waiting for it asks the
/// link instead.
const UNPACKING_STALL: std::time::Duration = std::time::Duration::from_secs(2);
/// How long after its stream ended a layer may take to be committed (its extraction's tail).
const COMMIT_AFTER_STREAM: std::time::Duration = std::time::Duration::from_secs(3);

/// `entry`'s file in a layer's directory `root`, where it is a regular file of the size the
/// index says.
fn file_in(root: &rootfs_cache::ConfinedRoot, entry: &toc::TocEntry) -> Option<std::fs::File> {
    let fd = root
        .open_file(
            std::path::Path::new(&entry.path),
            libc::O_RDONLY | libc::O_NOFOLLOW,
        )
        .ok()?;
    let file = std::fs::File::from(fd);
    let meta = file.metadata().ok()?;
    (meta.is_file() && meta.len() == entry.size).then_some(file)
}

/// Reads files of an image's layers: the chunks that hold them by Range requests on a runtime
/// of its own, cached and shared by concurrent readers (`chunks`), each file checked against
/// its table. While a read waits, the background pull (if any) gives way to it. What the pull
/// has written already is read from there: a committed layer's files from the store, a file of
/// a layer it is still unpacking from its staging directory once its tar entry is written
/// (checked against the table, as nothing there is verified yet).
pub(crate) struct LayerReader {
    runtime: Arc<tokio::runtime::Runtime>,
    client: RegistryClient,
    place: Place,
    chunks: chunks::Chunks,
    foreground: Option<Arc<crate::registry::Foreground>>,
    /// The store the background pull commits layers to: a committed layer's files are read
    /// from there.
    store: Option<rootfs_cache::Store>,
    /// The committed layers opened so far: looked up and opened once each.
    committed_roots:
        std::sync::Mutex<std::collections::HashMap<Digest, Arc<rootfs_cache::ConfinedRoot>>>,
    /// Big files taken from layers being unpacked, checked, by layer and offset.
    unpacked_files: std::sync::Mutex<std::collections::HashMap<(Digest, u64), Arc<std::fs::File>>>,
}

impl std::fmt::Debug for LayerReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerReader")
            .field("place", &self.place)
            .finish_non_exhaustive()
    }
}

impl LayerReader {
    /// A reader of `place`'s blobs on `runtime` (never entered by the caller's thread while
    /// it reads).
    pub(crate) fn new(
        runtime: Arc<tokio::runtime::Runtime>,
        client: RegistryClient,
        place: Place,
        foreground: Option<Arc<crate::registry::Foreground>>,
    ) -> Self {
        Self {
            runtime,
            client,
            place,
            chunks: chunks::Chunks::new(chunks::CACHE_BYTES),
            foreground,
            store: None,
            committed_roots: std::sync::Mutex::default(),
            unpacked_files: std::sync::Mutex::default(),
        }
    }

    /// This reader taking the files of layers committed to `store` from there.
    pub(crate) fn reading_committed_layers_of(mut self, store: rootfs_cache::Store) -> Self {
        self.store = Some(store);
        self
    }

    /// Starts finding how to reach the registry (HTTPS or plain HTTP, its first connection)
    /// while the caller does something else, so the first read need not.
    pub(crate) fn warm_up(&self) {
        let client = self.client.clone();
        let host = self.place.host().to_owned();
        self.runtime
            .spawn(async move { client.warm_up(&host).await });
    }

    /// The checked content of `entry` of layer `toc`.
    pub(crate) fn read(&self, toc: &LayerToc, entry: &toc::TocEntry) -> Result<Vec<u8>, LazyError> {
        if let Some(content) = self.committed(toc, entry, 0..entry.size) {
            return Ok(content);
        }
        if let Some(content) = self.unpacked_whole(toc, entry) {
            return Ok(content);
        }
        self.read_remote(toc, entry)
    }

    /// `size` bytes at `offset` of `entry` of layer `toc`: just those from a layer the pull
    /// committed already (or from a big file it has unpacked), else the whole checked file.
    pub(crate) fn read_at(
        &self,
        toc: &LayerToc,
        entry: &toc::TocEntry,
        offset: u64,
        size: u32,
    ) -> Result<fs::Content, LazyError> {
        let start = offset.min(entry.size);
        let end = start.saturating_add(u64::from(size)).min(entry.size);
        // What the pull wrote already: its committed layer, or the layer it is unpacking.
        let from_pull = || {
            self.committed(toc, entry, start..end)
                .map(fs::Content::Range)
                .or_else(|| self.unpacked(toc, entry, start..end))
        };
        if let Some(content) = from_pull() {
            return Ok(content);
        }
        if self.wait_for_pull(toc, entry)
            && let Some(content) = from_pull()
        {
            return Ok(content);
        }
        self.read_remote(toc, entry).map(fs::Content::Whole)
    }

    /// `range` of `entry` from the layer the pull is unpacking, once the file is written
    /// there: a small file whole, a big one (checked once, then kept open) just the range.
    /// `None` where it is not written yet or not as the index says.
    fn unpacked(
        &self,
        toc: &LayerToc,
        entry: &toc::TocEntry,
        range: std::ops::Range<u64>,
    ) -> Option<fs::Content> {
        use std::os::unix::fs::FileExt as _;
        if entry.size <= UNPACKED_WHOLE {
            return self.unpacked_whole(toc, entry).map(fs::Content::Whole);
        }
        let key = (toc.diff_id, entry.offset);
        let kept = self.unpacked_files.lock().ok()?.get(&key).cloned();
        let file = match kept {
            Some(file) => file,
            None => {
                let file = Arc::new(self.unpacked_file(toc, entry)?);
                let mut kept = self.unpacked_files.lock().ok()?;
                if kept.len() >= UNPACKED_KEPT {
                    kept.clear();
                }
                kept.insert(key, file.clone());
                file
            }
        };
        let mut content = vec![0; usize::try_from(range.end.saturating_sub(range.start)).ok()?];
        file.read_exact_at(&mut content, range.start).ok()?;
        Some(fs::Content::Range(content))
    }

    /// The whole of `entry`, from the layer the pull is unpacking, checked.
    fn unpacked_whole(&self, toc: &LayerToc, entry: &toc::TocEntry) -> Option<Vec<u8>> {
        use std::io::Read as _;
        let mut file = self.unpacked_open(toc, entry)?;
        let mut content = Vec::with_capacity(usize::try_from(entry.size).ok()?);
        file.read_to_end(&mut content).ok()?;
        (Some(Digest::of(&content)) == entry.digest).then_some(content)
    }

    /// `entry`'s file in the layer the pull is unpacking, its content checked.
    fn unpacked_file(&self, toc: &LayerToc, entry: &toc::TocEntry) -> Option<std::fs::File> {
        let mut file = self.unpacked_open(toc, entry)?;
        let (digest, _) = toc::content_digest(&mut file).ok()?;
        (Some(digest) == entry.digest).then_some(file)
    }

    /// The layer the pull is unpacking, where `entry`'s tar entry is written in it.
    fn unpacked_layer(
        &self,
        toc: &LayerToc,
        entry: &toc::TocEntry,
    ) -> Option<Arc<rootfs_cache::Unpacked>> {
        let layer = self.foreground.as_deref()?.unpacking.layer(&toc.diff_id)?;
        (layer.written() >= entry.offset.saturating_add(entry.size)).then_some(layer)
    }

    /// `entry`'s file in the layer the pull is unpacking, once its tar entry is written.
    fn unpacked_open(&self, toc: &LayerToc, entry: &toc::TocEntry) -> Option<std::fs::File> {
        entry.digest?;
        file_in(self.unpacked_layer(toc, entry)?.root(), entry)
    }

    /// Whether the pull has big file `entry` of layer `toc` after a wait for it (written where
    /// it unpacks the layer, or the layer committed), for a heavy reader: once the pull
    /// unpacks the layer, or while its stream of the layer has no more to bring than the
    /// file's own compressed bytes. The pull inflates the file anyway, and from there it is
    /// served with no inflating here (128 MiB of a JDK's `modules` cost 0.7 s of a serving
    /// thread on two busy CPUs, the pull doing the same beside it). The wait ends where the
    /// unpacking stops moving for [`UNPACKING_STALL`], or after [`PULL_WAIT`].
    fn wait_for_pull(&self, toc: &LayerToc, entry: &toc::TocEntry) -> bool {
        let Some(fg) = self.foreground.as_deref().filter(|f| f.heavy()) else {
            return false;
        };
        if entry.size < PULL_WAIT_MIN || !self.reads_committed_layers() {
            return false;
        }
        let start = std::time::Instant::now();
        if let Some(layer) = fg.unpacking.layer(&toc.diff_id) {
            let end = entry.offset.saturating_add(entry.size);
            let mut moved = (layer.written(), start);
            while start.elapsed() < PULL_WAIT {
                let written = layer.written();
                if written >= end || self.has_committed(toc) {
                    return true;
                }
                if written != moved.0 {
                    moved = (written, std::time::Instant::now());
                } else if moved.1.elapsed() > UNPACKING_STALL {
                    return false;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            return false;
        }
        let (first, last) =
            chunks::compressed_span(toc, entry.offset, entry.offset.saturating_add(entry.size));
        let coming = match fg.parts.front(&toc.layer) {
            Some(front) => toc.compressed_size.saturating_sub(front) <= last.saturating_sub(first),
            // The whole blob arrived: its extraction's tail is all that is left.
            None => fg
                .parts
                .missing(&toc.layer, 0, toc.compressed_size)
                .is_empty(),
        };
        if !coming {
            return false;
        }
        let mut ended: Option<std::time::Instant> = None;
        while start.elapsed() < PULL_WAIT {
            if self.has_committed(toc) || self.unpacked_layer(toc, entry).is_some() {
                return true;
            }
            // A stream that ended without a commit soon after failed: no more waiting.
            if fg.parts.front(&toc.layer).is_none() {
                let at = *ended.get_or_insert_with(std::time::Instant::now);
                if at.elapsed() > COMMIT_AFTER_STREAM {
                    return false;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        false
    }

    fn read_remote(&self, toc: &LayerToc, entry: &toc::TocEntry) -> Result<Vec<u8>, LazyError> {
        if let Some(fg) = &self.foreground {
            fg.read_file();
        }
        let fetch = |ranges: &[(Digest, u64, u64)]| self.fetch(ranges);
        self.chunks.read(toc, entry, &fetch)
    }

    /// Bytes `range` of `entry` from its layer in the store, once the background pull
    /// committed it (checked against the layer's digests then): nothing to fetch, inflate or
    /// hash. `None` where it is not there, or not as the index says (the lazy read then fails
    /// on the index's digest, as it would have).
    fn committed(
        &self,
        toc: &LayerToc,
        entry: &toc::TocEntry,
        range: std::ops::Range<u64>,
    ) -> Option<Vec<u8>> {
        use std::os::unix::fs::FileExt as _;
        if range.end > entry.size {
            return None;
        }
        let file = self.committed_file(toc, entry)?;
        let mut content = vec![0; usize::try_from(range.end.saturating_sub(range.start)).ok()?];
        file.read_exact_at(&mut content, range.start).ok()?;
        Some(content)
    }

    /// The file of `entry` in its layer in the store, once the background pull committed it,
    /// where it is a regular file of the size the index says.
    pub(crate) fn committed_file(
        &self,
        toc: &LayerToc,
        entry: &toc::TocEntry,
    ) -> Option<std::fs::File> {
        let root = self.committed_root(&toc.diff_id)?;
        file_in(&root, entry)
    }

    /// Whether the background pull has committed layer `toc` to the store.
    pub(crate) fn has_committed(&self, toc: &LayerToc) -> bool {
        self.committed_root(&toc.diff_id).is_some()
    }

    /// Whether files of committed layers are read from the store.
    pub(crate) fn reads_committed_layers(&self) -> bool {
        self.store.is_some()
    }

    /// Layer `diff_id` in the store, once committed.
    fn committed_root(&self, diff_id: &Digest) -> Option<Arc<rootfs_cache::ConfinedRoot>> {
        let store = self.store.as_ref()?;
        let mut roots = self.committed_roots.lock().ok()?;
        if let Some(root) = roots.get(diff_id) {
            return Some(root.clone());
        }
        if !store.has_layer(diff_id) {
            return None;
        }
        let root = Arc::new(rootfs_cache::ConfinedRoot::open(&store.layer_dir(diff_id)).ok()?);
        roots.insert(*diff_id, root.clone());
        Some(root)
    }

    /// Byte ranges of blobs: what the background pull (or an earlier read) already has from
    /// its parts, the rest by Range requests, which it keeps there in turn.
    fn fetch(&self, ranges: &[(Digest, u64, u64)]) -> Result<Vec<Vec<u8>>, LazyError> {
        let parts = self.foreground.as_deref().map(|f| &f.parts);
        // Once the pull no longer gives way, bytes just ahead of its stream come from there.
        if let Some(fg) = self.foreground.as_deref().filter(|f| f.heavy()) {
            let deadline = std::time::Instant::now() + STREAM_WAIT;
            for (blob, start, end) in ranges {
                fg.parts
                    .wait_for_stream(blob, *start, *end, STREAM_AHEAD, deadline);
            }
        }
        let wanted: Vec<(Digest, u64, u64)> = match parts {
            Some(parts) => ranges
                .iter()
                .flat_map(|(blob, start, end)| {
                    let missing = parts.missing(blob, *start, *end);
                    missing.into_iter().map(|(a, b)| (*blob, a, b))
                })
                .collect(),
            None => ranges.to_vec(),
        };
        let fetched = self.fetch_remote(&wanted)?;
        let Some(parts) = parts else {
            return Ok(fetched);
        };
        for ((blob, start, _), bytes) in wanted.iter().zip(&fetched) {
            parts.record(blob, *start, bytes);
        }
        // Nothing was held: what came is the answer, no need to read it back.
        if wanted.as_slice() == ranges {
            return Ok(fetched);
        }
        let local: Option<Vec<Vec<u8>>> = ranges
            .iter()
            .map(|(blob, start, end)| parts.read(blob, *start, *end))
            .collect();
        match local {
            Some(local) => Ok(local),
            // Not kept (a full disk): from the registry whole.
            None => self.fetch_remote(ranges),
        }
    }

    /// Byte ranges by Range requests, all at once, the background pull giving way meanwhile.
    fn fetch_remote(&self, ranges: &[(Digest, u64, u64)]) -> Result<Vec<Vec<u8>>, LazyError> {
        if ranges.is_empty() {
            return Ok(Vec::new());
        }
        let _first = self
            .foreground
            .as_deref()
            .map(crate::registry::Foreground::begin);
        let each = ranges.iter().map(|(blob, start, end)| {
            self.client.blob_range(
                self.place.host(),
                &self.place.registry,
                &self.place.repository,
                blob,
                *start,
                *end,
            )
        });
        let fetched = self
            .runtime
            .block_on(futures_util::future::try_join_all(each))?;
        if let Some(fg) = &self.foreground {
            fg.fetched(fetched.iter().map(|b| b.len() as u64).sum());
        }
        Ok(fetched)
    }
}

/// Reads file `path` of the image through its index: symlinks followed inside the image, the
/// entry from the top layer down, its content through `reader`, checked against the index.
pub(crate) fn read_file(
    reader: &LayerReader,
    tables: &[Arc<LayerToc>],
    path: &str,
    image: &str,
) -> Result<Vec<u8>, LazyError> {
    let found = resolve(tables, path).and_then(|p| lookup(tables, &p));
    let Some((toc, entry)) = found.filter(|(_, e)| e.kind == toc::Kind::File) else {
        return Err(LazyError::NoFile {
            path: path.to_owned(),
            image: image.to_owned(),
        });
    };
    reader.read(toc, entry)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    /// A reader of a registry nobody answers at: every range read fails, at its first try.
    fn unanswered_reader(fg: Option<Arc<crate::registry::Foreground>>) -> LayerReader {
        let runtime = Arc::new(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        );
        let policy = crate::registry::RetryPolicy {
            attempts: 1,
            ..Default::default()
        };
        let client = RegistryClient::new(
            crate::registry::Config::default(),
            crate::registry::AuthFiles::new(Vec::new()),
            policy,
        );
        let place = Place {
            hosts: vec!["127.0.0.1:9".into()],
            registry: "127.0.0.1:9".into(),
            repository: "none".into(),
        };
        LayerReader::new(runtime, client, place, fg)
    }

    #[test]
    fn a_committed_layer_is_read_from_the_store_and_a_disagreeing_one_is_not() {
        let content = vec![7u8; 100_000];
        let mut tar = tar::Builder::new(Vec::new());
        for (path, body) in [("usr/big", &content[..]), ("usr/small", &b"small\n"[..])] {
            let mut header = tar::Header::new_gnu();
            header.set_size(body.len() as u64);
            header.set_mode(0o644);
            tar.append_data(&mut header, path, body).unwrap();
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar.into_inner().unwrap()).unwrap();
        let blob = gz.finish().unwrap();
        let digest = Digest::of(&blob);
        let toc = LayerToc::build(&blob[..], digest).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = rootfs_cache::Store::open(dir.path()).unwrap();
        store
            .commit_layer(
                &digest,
                &toc.diff_id,
                "application/vnd.oci.image.layer.v1.tar+gzip",
                std::io::Cursor::new(blob.clone()),
            )
            .unwrap();
        let reader = unanswered_reader(None).reading_committed_layers_of(store);
        let big = toc.entry("usr/big").unwrap();
        assert!(reader.read(&toc, big).unwrap() == content);
        // Where the store's file is not what the index says, the read goes to the registry.
        let mut lying = toc.clone();
        lying
            .entries
            .iter_mut()
            .find(|e| e.path == "usr/small")
            .unwrap()
            .size = 5;
        let small = lying.entry("usr/small").unwrap();
        assert!(reader.read(&lying, small).is_err());
        assert_eq!(
            reader.read(&toc, toc.entry("usr/small").unwrap()).unwrap(),
            b"small\n"
        );
        // A read of a range takes just that range from the store.
        let range = |toc: &LayerToc, path: &str, offset: u64, size: u32| match reader.read_at(
            toc,
            toc.entry(path).unwrap(),
            offset,
            size,
        ) {
            Ok(fs::Content::Range(bytes)) => Ok(bytes),
            Ok(fs::Content::Whole(_)) => panic!("a committed layer's read came whole"),
            Err(e) => Err(e),
        };
        assert!(range(&toc, "usr/big", 4096, 4096).unwrap() == content[4096..8192]);
        assert!(range(&toc, "usr/big", 99_000, 4096).unwrap() == content[99_000..]);
        assert!(range(&toc, "usr/big", 100_000, 10).unwrap().is_empty());
        assert!(
            range(&toc, "usr/big", u64::MAX, u32::MAX)
                .unwrap()
                .is_empty()
        );
        assert!(matches!(
            range(&lying, "usr/small", 0, 4096),
            Err(LazyError::Read { .. })
        ));
    }

    /// A gzip layer of `files` (path, content), stored rather than compressed (its offsets
    /// nearly the tar's), its digest and its table.
    fn stored_layer(files: &[(&str, &[u8])]) -> (Vec<u8>, Digest, Arc<LayerToc>) {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, body) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(body.len() as u64);
            header.set_mode(0o644);
            tar.append_data(&mut header, path, *body).unwrap();
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
        gz.write_all(&tar.into_inner().unwrap()).unwrap();
        let blob = gz.finish().unwrap();
        let digest = Digest::of(&blob);
        let toc = Arc::new(LayerToc::build(&blob[..], digest).unwrap());
        (blob, digest, toc)
    }

    #[test]
    fn files_of_a_layer_the_pull_unpacks_are_read_from_there_once_written_and_checked() {
        use crate::registry::Foreground;
        use skiff_test_rig::synth::noise;
        use std::time::Duration;

        let (small, big, after) = (noise(1, 100_000), noise(2, 5 << 20), noise(3, 700_000));
        let (blob, digest, toc) = stored_layer(&[
            ("usr/small", &small),
            ("usr/big", &big),
            ("usr/after", &after),
        ]);
        let end = |path: &str| {
            let e = toc.entry(path).unwrap();
            usize::try_from(e.offset + e.size).unwrap()
        };

        // The payload reads heavily; the pull unpacks the layer as its bytes come. With no
        // registry, a read served from anywhere but the pull's unpacking fails.
        let fg = Arc::new(Foreground::with_quiet(Duration::ZERO, Duration::ZERO).heavy_from(0, 0));
        let dir = tempfile::tempdir().unwrap();
        let store = rootfs_cache::Store::open(dir.path())
            .unwrap()
            .reporting_unpacking_to(fg.unpacking.clone());
        let reader = Arc::new(
            unanswered_reader(Some(fg.clone())).reading_committed_layers_of(store.clone()),
        );
        let (tx, source) = skiff_test_rig::gated::gated();
        let pull = std::thread::spawn({
            let (store, diff_id) = (store.clone(), toc.diff_id);
            move || {
                store.commit_layer(
                    &digest,
                    &diff_id,
                    "application/vnd.oci.image.layer.v1.tar+gzip",
                    source,
                )
            }
        });
        let unpacked_to = |at: usize| {
            let begun = std::time::Instant::now();
            while fg
                .unpacking
                .layer(&toc.diff_id)
                .is_none_or(|l| l.written() < at as u64)
            {
                assert!(
                    begun.elapsed() < Duration::from_secs(30),
                    "never unpacked to {at}"
                );
                std::thread::sleep(Duration::from_millis(2));
            }
        };

        // 300 kB past the small file (more than the decoder holds back): it is written.
        let mut sent = end("usr/small") + 300_000;
        tx.send(blob[..sent].to_vec()).unwrap();
        unpacked_to(end("usr/small"));
        match reader.read_at(&toc, toc.entry("usr/small").unwrap(), 0, 4096) {
            Ok(fs::Content::Whole(bytes)) => assert!(bytes == small),
            Ok(fs::Content::Range(_)) => panic!("a small file came as a range"),
            Err(e) => panic!("{e}"),
        }
        // Checked against the index: a file the index describes otherwise is not taken.
        let mut lying = (*toc).clone();
        let e = lying
            .entries
            .iter_mut()
            .find(|e| e.path == "usr/small")
            .unwrap();
        e.digest = Some(Digest::of(b"another small file"));
        assert!(
            reader
                .read_at(&lying, lying.entry("usr/small").unwrap(), 0, 4096)
                .is_err()
        );

        // The big file, not written yet: the heavy read waits for the unpacking to pass it
        // (not for the commit, which the rest of the stream holds back), then reads its range.
        let read = std::thread::spawn({
            let (reader, toc) = (reader.clone(), toc.clone());
            move || match reader.read_at(&toc, toc.entry("usr/big").unwrap(), 4096, 4096) {
                Ok(fs::Content::Range(bytes)) => bytes,
                Ok(fs::Content::Whole(_)) => panic!("a big file came whole"),
                Err(e) => panic!("{e}"),
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        assert!(!read.is_finished(), "the read did not wait for the pull");
        let to = end("usr/big") + 300_000;
        tx.send(blob[sent..to].to_vec()).unwrap();
        sent = to;
        assert!(read.join().unwrap() == big[4096..8192]);
        assert!(!store.has_layer(&toc.diff_id), "read from the commit");

        tx.send(blob[sent..].to_vec()).unwrap();
        drop(tx);
        pull.join().unwrap().unwrap();
        assert!(fg.unpacking.layer(&toc.diff_id).is_none());
    }

    #[test]
    fn a_heavy_read_just_ahead_of_the_pulls_stream_waits_for_it_instead_of_fetching() {
        use crate::registry::Foreground;
        use std::time::Duration;

        let (registry, bytes) = crate::registry::registry_with_blob(11);
        // 2 MB/s: the stream reaches the read's bytes, 2 MiB in, after about a second.
        let proxy = skiff_test_rig::FaultProxy::start(registry.addr(), Vec::new()).unwrap();
        proxy.set_link(skiff_test_rig::Link {
            bytes_per_sec: Some(2_000_000),
            round_trip: Duration::ZERO,
        });
        let (digest, size, host) = (Digest::of(&bytes), bytes.len() as u64, proxy.host());
        let wanted = (2u64 << 20, (2u64 << 20) + 4096);
        let reader_on = |fg: Arc<Foreground>| {
            let runtime = Arc::new(
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap(),
            );
            let client = RegistryClient::new(
                crate::registry::Config::default(),
                crate::registry::AuthFiles::new(Vec::new()),
                crate::registry::RetryPolicy::default(),
            )
            .giving_way_to(fg.clone());
            let place = Place {
                hosts: vec![host.clone()],
                registry: host.clone(),
                repository: "parts/blob".into(),
            };
            LayerReader::new(runtime, client, place, Some(fg))
        };
        let requests = || -> Vec<Option<String>> {
            proxy
                .requests()
                .into_iter()
                .filter(|r| r.path.contains(&digest.to_string()))
                .map(|r| r.range)
                .collect()
        };

        // The payload reads heavily (the pull no longer gives way) while the pull streams.
        let fg = Arc::new(Foreground::with_quiet(Duration::ZERO, Duration::ZERO).heavy_from(0, 0));
        let reader = reader_on(fg.clone());
        let puller = std::thread::spawn({
            let (host, fg) = (host.clone(), fg.clone());
            move || crate::registry::stream_test_blob(&host, &digest, size, fg)
        });
        let begun = std::time::Instant::now();
        while fg.parts.end_from(&digest, 0).is_none() {
            assert!(
                begun.elapsed() < Duration::from_secs(30),
                "the stream never began"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            !fg.parts.missing(&digest, wanted.0, wanted.1).is_empty(),
            "the stream got there before the read"
        );
        let got = reader.fetch(&[(digest, wanted.0, wanted.1)]).unwrap();
        assert!(got[0] == bytes[wanted.0 as usize..wanted.1 as usize]);
        assert!(puller.join().unwrap() == bytes);
        // One request, the stream's, uncut: the read's bytes crossed the link once.
        assert_eq!(requests(), [None]);

        // With no stream running, the same read asks the link for its bytes.
        let fg = Arc::new(Foreground::with_quiet(Duration::ZERO, Duration::ZERO).heavy_from(0, 0));
        let reader = reader_on(fg);
        let got = reader.fetch(&[(digest, wanted.0, wanted.1)]).unwrap();
        assert!(got[0] == bytes[wanted.0 as usize..wanted.1 as usize]);
        assert_eq!(
            requests()[1..],
            [Some(format!("bytes={}-{}", wanted.0, wanted.1 - 1))]
        );
    }

    #[test]
    fn a_heavy_read_of_a_big_file_waits_for_its_layers_commit_when_the_stream_nears_its_end() {
        use crate::registry::Foreground;
        use std::time::Duration;

        // Bytes that do not compress: 9 MiB before the big file (further than a read waits for
        // the stream to come), the big file's 5 MiB, 6 MiB after it.
        use skiff_test_rig::synth::noise;
        let (before, content, after) = (noise(1, 9 << 20), noise(2, 5 << 20), noise(3, 6 << 20));
        let (blob, digest, toc) = stored_layer(&[
            ("usr/before", &before),
            ("usr/big", &content),
            ("usr/after", &after),
        ]);
        // A read that does not wait fails.
        let reader_with = |fg: Arc<Foreground>, store: rootfs_cache::Store| {
            unanswered_reader(Some(fg)).reading_committed_layers_of(store)
        };
        let big = toc.entry("usr/big").unwrap().clone();
        let heavy =
            || Arc::new(Foreground::with_quiet(Duration::ZERO, Duration::ZERO).heavy_from(0, 0));

        // The stream has brought all but the blob's last 64 KiB: the read waits for the
        // commit (made here 300 ms later) and takes its bytes from the store.
        let dir = tempfile::tempdir().unwrap();
        let store = rootfs_cache::Store::open(dir.path()).unwrap();
        let fg = heavy();
        let front = blob.len() - (64 << 10);
        fg.parts.record_streamed(&digest, 0, &blob[..front]);
        let reader = reader_with(fg, store.clone());
        let committer = std::thread::spawn({
            let (blob, diff_id) = (blob.clone(), toc.diff_id);
            move || {
                std::thread::sleep(Duration::from_millis(300));
                store
                    .commit_layer(
                        &digest,
                        &diff_id,
                        "application/vnd.oci.image.layer.v1.tar+gzip",
                        std::io::Cursor::new(blob),
                    )
                    .unwrap();
            }
        });
        match reader.read_at(&toc, &big, 4096, 4096) {
            Ok(fs::Content::Range(bytes)) => assert!(bytes == content[4096..8192]),
            Ok(fs::Content::Whole(_)) => panic!("read whole, not from the store"),
            Err(e) => panic!("{e}"),
        }
        committer.join().unwrap();

        // The stream at the blob's start: more to come than the file's own bytes, so no
        // waiting for the commit (nor for the stream, so far behind), and with no registry the
        // read fails at once.
        let dir = tempfile::tempdir().unwrap();
        let fg = heavy();
        fg.parts.record_streamed(&digest, 0, &blob[..64 << 10]);
        let reader = reader_with(fg, rootfs_cache::Store::open(dir.path()).unwrap());
        let begun = std::time::Instant::now();
        assert!(reader.read_at(&toc, &big, 0, 4096).is_err());
        assert!(begun.elapsed() < PULL_WAIT, "it waited for a commit");
    }
}
