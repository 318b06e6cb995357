//! The small JSON records the store keeps next to layers: layer, image and ref records.

use serde::{Deserialize, Serialize};

use crate::Digest;
use crate::extract::{ExtractStats, OverlayXattrs, Ownership};
use crate::layer_writer::Compression;

/// `layers/sha256/<diff_id>/layer.json`: how a committed layer was made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerRecord {
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// sha256 of the blob as the registry served it.
    pub compressed_digest: Digest,
    /// Compression of that blob.
    pub compression: Compression,
    /// Bytes of the compressed blob.
    pub compressed_size: u64,
    /// Bytes of the uncompressed tar.
    pub size: u64,
    /// How ownership was kept; the launcher needs it to present the right owners.
    pub ownership: Ownership,
    /// Which opaque xattr the layer uses; decides the overlay mount options.
    pub overlay_xattrs: OverlayXattrs,
    /// What the extraction wrote and skipped.
    pub stats: ExtractStats,
    /// Unix seconds when it was committed.
    pub committed_at: u64,
}

/// One layer of an image, as its manifest and config name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageLayer {
    /// Compressed blob digest (manifest).
    pub digest: Digest,
    /// Uncompressed digest (config rootfs.diff_ids): the store key.
    pub diff_id: Digest,
    /// Compressed size from the manifest.
    pub size: u64,
    /// Layer media type from the manifest.
    pub media_type: String,
}

/// `images/sha256/<manifest>.json`: an image known to the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Digest of the platform manifest: the image's identity.
    pub manifest: Digest,
    /// Digest of the image config blob.
    pub config: Digest,
    /// Layers, bottom first.
    pub layers: Vec<ImageLayer>,
    /// Unix seconds when it entered the store.
    pub created_at: u64,
    /// Unix seconds of the last pull or run; gc removes the least recently used first.
    pub last_used: u64,
}

/// `refs/<registry>/<repo>/<tag>`: what a name resolved to, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefRecord {
    /// The image manifest digest for this host's platform.
    pub manifest: Digest,
    /// The index / manifest list the tag pointed at, when multi-platform.
    pub index: Option<Digest>,
    /// Unix seconds when the tag was resolved against the registry.
    pub resolved_at: u64,
}

/// Seconds since the epoch, now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
