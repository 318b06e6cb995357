//! One pass from a compressed layer stream to a committed layer directory: sha256 of the
//! compressed bytes, decompression (chosen by media type, checked against magic bytes), sha256
//! of the tar (the diff_id), extraction into tmp/, both digests checked, one atomic rename.
//!
//! Decompression and hashing run on their own thread, feeding extraction through a small
//! bounded channel, as `tar -xzf` runs gzip in a second process: one layer uses two cores, and
//! memory stays bounded whatever the layer size.

use std::io::{self, BufRead, BufReader, Read};
use std::sync::mpsc;

use sha2::{Digest as _, Sha256};

use crate::Digest;

/// How a layer blob is compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
    /// A plain tar.
    None,
}

impl Compression {
    /// The compression a layer media type declares, or `None` for a type that is not a layer.
    pub fn from_media_type(media_type: &str) -> Option<Self> {
        Some(match media_type {
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Self::Gzip,
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Self::Zstd,
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Self::None,
            _ => return None,
        })
    }

    /// What the first bytes of a blob say it is.
    fn sniff(head: &[u8]) -> Option<Self> {
        if head.starts_with(&[0x1f, 0x8b]) {
            Some(Self::Gzip)
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Self::Zstd)
        } else {
            None
        }
    }
}

/// Hashes everything read through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Reads to EOF (padding after the tar end, gzip trailer) and returns the digest and size.
    pub(crate) fn finish(mut self) -> io::Result<(Digest, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((Digest::from_sha256(self.hasher), self.bytes))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// What the decompression thread found.
#[derive(Debug)]
pub(crate) struct StreamDigests {
    pub compressed: Digest,
    pub compressed_size: u64,
    pub diff_id: Digest,
    pub size: u64,
}

/// Failures of the decompression side.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The blob's bytes do not match its declared compression.
    #[error("media type says {declared:?} but the content starts like {found}")]
    MagicMismatch {
        /// From the media type.
        declared: Compression,
        /// What the magic bytes say.
        found: &'static str,
    },
    /// Reading or decompressing failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The extraction side stopped reading (it failed, and its error is the one to report).
    #[error("extraction stopped reading the layer")]
    ExtractionStopped,
}

const CHUNK: usize = 256 * 1024;
const CHANNEL_DEPTH: usize = 8;

/// Starts decompressing `source` on a thread; returns a reader of the tar stream and a handle
/// whose result carries both digests once the stream is drained.
pub(crate) fn spawn_decoder<R: Read + Send + 'static>(
    source: R,
    compression: Compression,
) -> io::Result<(
    ChannelReader,
    std::thread::JoinHandle<Result<StreamDigests, StreamError>>,
)> {
    let (tx, rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(CHANNEL_DEPTH);
    // Consumed chunks go back to the decoder: a steady stream allocates nothing, which keeps
    // the allocator from piling up freed buffers across threads (peak RSS of a pull).
    let (back_tx, back_rx) = mpsc::sync_channel::<Vec<u8>>(CHANNEL_DEPTH + 2);
    let handle = std::thread::Builder::new()
        .name("layer-decode".into())
        .spawn(move || decode(source, compression, &tx, &back_rx))?;
    Ok((
        ChannelReader {
            rx,
            back: back_tx,
            current: Vec::new(),
            pos: 0,
            done: false,
        },
        handle,
    ))
}

fn decode<R: Read>(
    source: R,
    compression: Compression,
    tx: &mpsc::SyncSender<io::Result<Vec<u8>>>,
    recycled: &mpsc::Receiver<Vec<u8>>,
) -> Result<StreamDigests, StreamError> {
    let mut compressed = BufReader::with_capacity(CHUNK, HashingReader::new(source));
    let head = compressed.fill_buf()?;
    let found = Compression::sniff(head);
    match (compression, found) {
        (Compression::Gzip, Some(Compression::Gzip))
        | (Compression::Zstd, Some(Compression::Zstd)) => {}
        (Compression::None, None) => {}
        (declared, found) => {
            let found = match found {
                Some(Compression::Gzip) => "gzip",
                Some(Compression::Zstd) => "zstd",
                _ if head.is_empty() => "an empty blob",
                _ => "neither gzip nor zstd",
            };
            return Err(StreamError::MagicMismatch { declared, found });
        }
    }
    let decompressed: Box<dyn Read + '_> = match compression {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(&mut compressed)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(&mut compressed)?),
        Compression::None => Box::new(&mut compressed),
    };
    let mut tar = HashingReader::new(decompressed);
    loop {
        let mut chunk = recycled.try_recv().unwrap_or_default();
        chunk.resize(CHUNK, 0);
        let mut filled = 0;
        while filled < CHUNK {
            match tar.read(&mut chunk[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.send(Err(io::Error::new(e.kind(), e.to_string())));
                    return Err(e.into());
                }
            }
        }
        if filled == 0 {
            break;
        }
        chunk.truncate(filled);
        if tx.send(Ok(chunk)).is_err() {
            // The extractor stopped on an error of its own, which is what gets reported.
            return Err(StreamError::ExtractionStopped);
        }
    }
    let (diff_id, size) = tar.finish()?;
    let (compressed_digest, compressed_size) = compressed.into_inner().finish()?;
    Ok(StreamDigests {
        compressed: compressed_digest,
        compressed_size,
        diff_id,
        size,
    })
}

/// The extraction side of the channel.
pub(crate) struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    back: mpsc::SyncSender<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
    done: bool,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    let used = std::mem::replace(&mut self.current, chunk);
                    if used.capacity() > 0 {
                        let _ = self.back.try_send(used);
                    }
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    self.done = true;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl ChannelReader {
    /// Reads what the tar parser left (end-of-archive padding) so the decoder can finish.
    pub(crate) fn drain(&mut self) -> io::Result<()> {
        io::copy(self, &mut io::sink()).map(|_| ())
    }
}
