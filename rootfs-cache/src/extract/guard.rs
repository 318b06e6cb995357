//! A reader between the layer's tar stream and the `tar` crate that bounds what the crate reads
//! whole into memory: GNU long names (`L`) and long link names (`K`), and PAX extended headers
//! (`x`, `g`). The crate reads such an entry's content into one buffer as large as the header's
//! size field says; here the header is seen first and the read fails when that size is over the
//! bound, so a hostile header costs nothing.
//!
//! The guard follows the archive's layout exactly as `tar` 0.4 does (the crate's own header and
//! PAX parsers give each entry's size: the header's size field, or a preceding PAX `size`
//! record; GNU sparse extension blocks come between a header and its data), so it knows where
//! every header is. Content passes straight through to the caller's buffer; only header blocks
//! (512 bytes each) and PAX header content (bounded) are copied.

use std::io::{self, Read};

/// Bytes of a GNU long name or long link name: PATH_MAX and its terminating NUL.
pub const MAX_LONG_NAME: u64 = 4096 + 1;
/// Bytes of one PAX extended header's content (`x` or `g`).
pub const MAX_PAX_HEADER: u64 = 1 << 20;

const BLOCK: u64 = 512;

/// A header whose content would go over a bound; the `tar` crate returns it as the I/O error,
/// and extraction turns it into [`super::ExtractError::Limit`].
#[derive(Debug)]
pub struct HeaderTooLarge {
    /// The header's own name field (`././@LongLink`, `PaxHeaders.0/name`, ...).
    pub path: String,
    /// What was bounded.
    pub what: &'static str,
    /// The bound.
    pub limit: u64,
}

impl std::fmt::Display for HeaderTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "entry {:?}: over the limit of {} {}",
            self.path, self.limit, self.what
        )
    }
}

impl std::error::Error for HeaderTooLarge {}

/// What the next bytes from `inner` are.
enum Region {
    /// A header block.
    Header,
    /// A GNU sparse extension block, then more of them or `data` bytes of content.
    SparseExt { data: u64 },
    /// Entry content and padding: `left` bytes up to the next header; the first `capture`
    /// bytes are also kept (a PAX header's records, for the next entry's size).
    Data { left: u64, capture: u64 },
    /// The layout could not be followed (the `tar` crate fails on the same header).
    Lost,
}

/// The bounding reader; see the module doc.
pub struct HeaderGuard<R> {
    inner: R,
    region: Region,
    /// A block read from `inner`, `block[at..end]` not given out yet.
    block: [u8; 512],
    at: usize,
    end: usize,
    /// Records of a PAX `x` header that apply to the next entry (a PAX `size` record).
    pax: Option<Vec<u8>>,
    /// PAX content being captured (for the next entry), if any.
    captured: Option<Vec<u8>>,
}

impl<R: Read> HeaderGuard<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            region: Region::Header,
            block: [0; 512],
            at: 0,
            end: 0,
            pax: None,
            captured: None,
        }
    }

    /// Reads a whole block from `inner` into `self.block` (short only at the end of the
    /// stream, which `tar` reports); whether it is whole.
    fn fill(&mut self) -> io::Result<bool> {
        let mut n = 0;
        while n < self.block.len() {
            match self.inner.read(&mut self.block[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.at = 0;
        self.end = n;
        Ok(n == self.block.len())
    }

    /// What comes after the header block in `self.block`, as `tar` will read it; an error if
    /// the header's content is over a bound.
    fn inspect(&mut self) -> io::Result<Region> {
        // PAX records captured from the previous entry's content now apply.
        if let Some(records) = self.captured.take() {
            self.pax = Some(records);
        }
        if self.block.iter().all(|&b| b == 0) {
            // `tar` stops at a zero block (zeros are not ignored); read on as headers.
            self.pax = None;
            return Ok(Region::Header);
        }
        let header = tar::Header::from_byte_slice(&self.block);
        let kind = header.entry_type();
        let Ok(mut size) = header.entry_size() else {
            // `tar` fails on this header too.
            return Ok(Region::Lost);
        };
        let long = kind.is_gnu_longname() || kind.is_gnu_longlink();
        let pax = kind.is_pax_local_extensions() || kind.is_pax_global_extensions();
        let bound = if long {
            Some((MAX_LONG_NAME, "bytes in a GNU long name or link name"))
        } else if pax {
            Some((MAX_PAX_HEADER, "bytes in a PAX extended header"))
        } else {
            None
        };
        if let Some((limit, what)) = bound
            && size > limit
        {
            let name = header.path_bytes();
            let path = if !name.is_empty() {
                String::from_utf8_lossy(&name).into_owned()
            } else if long {
                "(unnamed GNU long name)".to_owned()
            } else {
                "(unnamed PAX extended header)".to_owned()
            };
            return Err(io::Error::other(HeaderTooLarge { path, what, limit }));
        }
        let recognized = header.as_gnu().is_some() || header.as_ustar().is_some();
        // A PAX `size` record overrides the size field of the next entry that is not itself an
        // extension header, as `tar` does.
        if !(long || pax)
            && let Some(pax_size) = self.pax.as_deref().and_then(pax_size)
        {
            size = pax_size;
        }
        let mut capture = 0;
        if recognized && kind.is_pax_local_extensions() {
            // `tar` keeps these records for the next entry (or fails on a second `x`).
            self.captured = Some(Vec::with_capacity(usize::try_from(size).unwrap_or(0)));
            capture = size;
        } else if !(recognized && long) {
            // This is the entry the pending records describe (or `tar` fails).
            self.pax = None;
        }
        let Some(padded) = size.checked_add(BLOCK - 1).map(|s| s & !(BLOCK - 1)) else {
            return Ok(Region::Lost);
        };
        if kind.is_gnu_sparse() && header.as_gnu().is_some_and(|g| g.is_extended()) {
            return Ok(Region::SparseExt { data: padded });
        }
        Ok(data(padded, capture))
    }
}

fn data(left: u64, capture: u64) -> Region {
    if left == 0 {
        Region::Header
    } else {
        Region::Data { left, capture }
    }
}

/// The value of the first `size` record, as `tar`'s `pax_extensions_value` reads it.
fn pax_size(records: &[u8]) -> Option<u64> {
    for ext in tar::PaxExtensions::new(records) {
        let ext = ext.ok()?;
        if ext.key() != Ok("size") {
            continue;
        }
        return ext.value().ok()?.parse::<u64>().ok();
    }
    None
}

impl<R: Read> Read for HeaderGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.at == self.end {
            match self.region {
                Region::Lost => return self.inner.read(buf),
                Region::Header => {
                    self.region = if self.fill()? {
                        self.inspect()?
                    } else {
                        Region::Lost
                    };
                }
                Region::SparseExt { data: left } => {
                    self.region = if !self.fill()? {
                        Region::Lost
                    } else if self.block[504] == 1 {
                        // `isextended` of a `GnuExtSparseHeader`: another block follows.
                        Region::SparseExt { data: left }
                    } else {
                        data(left, 0)
                    };
                }
                Region::Data {
                    ref mut left,
                    ref mut capture,
                } => {
                    let want = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    let n = self.inner.read(&mut buf[..want])?;
                    if n == 0 {
                        // Truncated: `tar` reports it.
                        self.region = Region::Lost;
                        return Ok(0);
                    }
                    let kept = usize::try_from(*capture).unwrap_or(usize::MAX).min(n);
                    if kept > 0
                        && let Some(records) = &mut self.captured
                    {
                        records.extend_from_slice(&buf[..kept]);
                        *capture -= kept as u64;
                    }
                    *left -= n as u64;
                    if *left == 0 {
                        self.region = Region::Header;
                    }
                    return Ok(n);
                }
            }
        }
        let n = buf.len().min(self.end - self.at);
        buf[..n].copy_from_slice(&self.block[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
