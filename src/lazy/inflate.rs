//! Inflating a gzip layer from its start or from a checkpoint: the random access that lets a
//! lazy run read one file of a layer with a Range request of the compressed blob.
//!
//! A checkpoint sits at a deflate block boundary: the offset of the next compressed byte, the
//! bits of the previous byte the next block still needs, and the 32 KiB of output before it
//! (what back-references may reach). miniz_oxide stops at block boundaries and resumes from
//! one; the gzip framing (headers, trailers, further members) is handled here.

use std::io::{self, Read};

use miniz_oxide::inflate::TINFLStatus;
use miniz_oxide::inflate::core::{
    BlockBoundaryState, DecompressorOxide, decompress, inflate_flags,
};
use serde::{Deserialize, Serialize};

/// The history deflate back-references can reach.
pub(crate) const WINDOW: usize = 32 << 10;
/// The output ring: a power of two, at least the window.
const RING: usize = 128 << 10;
/// Compressed bytes read at a time.
const INPUT_CHUNK: usize = 64 << 10;

/// A place in a gzip blob where inflation can start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    /// Offset in the compressed blob of the next byte to read.
    pub(crate) input: u64,
    /// Offset in the uncompressed stream of the next byte produced.
    pub(crate) output: u64,
    /// Bits (0..=7) of the byte before `input` the next block starts with…
    pub(crate) bits: u8,
    /// …and their value, in the low bits.
    pub(crate) bit_buf: u8,
    /// The 32 KiB (or all, if less) of output before `output`: base64 in the table itself
    /// (format 1, and in memory while a table is built)…
    #[serde(with = "base64_bytes", default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) window: Vec<u8>,
    /// …or raw deflate at these bytes (start, length) of the layer's windows blob (format 2),
    /// fetched with the chunk it starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) window_at: Option<(u64, u64)>,
}

/// Where the inflater is in the gzip framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before a member's header (`first`: the blob must have one).
    Header {
        first: bool,
    },
    Deflate,
    End,
}

/// A gzip stream inflated from its start or from a [`Checkpoint`], optionally recording
/// checkpoints every `span` bytes of output as it goes.
pub(crate) struct Inflater<R> {
    src: R,
    input: Vec<u8>,
    in_start: usize,
    in_end: usize,
    src_done: bool,
    /// Blob offset of `input[in_start]`.
    in_pos: u64,
    state: Box<DecompressorOxide>,
    ring: Vec<u8>,
    /// Uncompressed offset of the next byte inflated.
    out_total: u64,
    /// Ring positions produced but not yet read.
    ready: (usize, usize),
    phase: Phase,
    record: Option<Recording>,
}

struct Recording {
    span: u64,
    last: u64,
    points: Vec<Checkpoint>,
}

impl<R> std::fmt::Debug for Inflater<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater")
            .field("in_pos", &self.in_pos)
            .field("out_total", &self.out_total)
            .finish_non_exhaustive()
    }
}

impl<R: Read> Inflater<R> {
    /// Inflates a whole gzip blob, `src` from its first byte.
    pub(crate) fn new(src: R) -> Self {
        Self {
            src,
            input: vec![0; INPUT_CHUNK],
            in_start: 0,
            in_end: 0,
            src_done: false,
            in_pos: 0,
            state: Box::default(),
            ring: vec![0; RING],
            out_total: 0,
            ready: (0, 0),
            phase: Phase::Header { first: true },
            record: None,
        }
    }

    /// Inflates from `point`, `src` giving the blob's bytes from `point.input` on.
    pub(crate) fn resume(src: R, point: &Checkpoint) -> io::Result<Self> {
        if point.bits > 7 || point.window.len() > WINDOW {
            return Err(invalid("a checkpoint is malformed"));
        }
        let mut me = Self::new(src);
        me.in_pos = point.input;
        me.out_total = point.output;
        *me.state = DecompressorOxide::from_block_boundary_state(&BlockBoundaryState {
            num_bits: point.bits,
            bit_buf: point.bit_buf,
            ..Default::default()
        });
        // The history sits just before the ring position of `output`.
        let at = ring_pos(point.output);
        for (i, b) in point.window.iter().rev().enumerate() {
            me.ring[(at + RING - 1 - i) % RING] = *b;
        }
        me.phase = Phase::Deflate;
        Ok(me)
    }

    /// Records a checkpoint at the first block boundary after every `span` bytes of output.
    pub(crate) fn recording(mut self, span: u64) -> Self {
        self.record = Some(Recording {
            span,
            last: 0,
            points: Vec::new(),
        });
        self
    }

    /// The checkpoints recorded so far.
    pub(crate) fn checkpoints(&self) -> &[Checkpoint] {
        self.record.as_ref().map_or(&[], |r| &r.points)
    }

    /// Compressed bytes consumed so far (the blob offset of the next unread byte).
    pub(crate) fn compressed_pos(&self) -> u64 {
        self.in_pos
    }

    /// Makes at least `n` (≤ INPUT_CHUNK) compressed bytes available unless the source ends;
    /// returns how many are.
    fn fill(&mut self, n: usize) -> io::Result<usize> {
        if self.in_end - self.in_start >= n || self.src_done {
            return Ok(self.in_end - self.in_start);
        }
        self.input.copy_within(self.in_start..self.in_end, 0);
        self.in_end -= self.in_start;
        self.in_start = 0;
        while self.in_end < n.max(1) && !self.src_done {
            match self.src.read(&mut self.input[self.in_end..]) {
                Ok(0) => self.src_done = true,
                Ok(k) => self.in_end += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self.in_end - self.in_start)
    }

    fn consume(&mut self, n: usize) {
        self.in_start += n;
        self.in_pos += n as u64;
    }

    fn byte(&mut self) -> io::Result<u8> {
        if self.fill(1)? == 0 {
            return Err(truncated());
        }
        let b = self.input[self.in_start];
        self.consume(1);
        Ok(b)
    }

    fn skip(&mut self, mut n: usize) -> io::Result<()> {
        while n > 0 {
            let have = self.fill(n.min(INPUT_CHUNK))?;
            if have == 0 {
                return Err(truncated());
            }
            let k = have.min(n);
            self.consume(k);
            n -= k;
        }
        Ok(())
    }

    /// Reads a member's header (RFC 1952); at a later member, the end of the blob is the end.
    fn header(&mut self, first: bool) -> io::Result<()> {
        if !first && self.fill(1)? == 0 {
            self.phase = Phase::End;
            return Ok(());
        }
        let mut fixed = [0u8; 10];
        for b in &mut fixed {
            *b = self.byte()?;
        }
        if fixed[0] != 0x1f || fixed[1] != 0x8b {
            return Err(invalid("not a gzip stream"));
        }
        if fixed[2] != 8 {
            return Err(invalid("gzip compression method is not deflate"));
        }
        let flags = fixed[3];
        if flags & 0x04 != 0 {
            let len = u16::from_le_bytes([self.byte()?, self.byte()?]);
            self.skip(usize::from(len))?;
        }
        for flag in [0x08, 0x10] {
            if flags & flag != 0 {
                while self.byte()? != 0 {}
            }
        }
        if flags & 0x02 != 0 {
            self.skip(2)?;
        }
        *self.state = DecompressorOxide::new();
        self.phase = Phase::Deflate;
        Ok(())
    }

    /// Inflates until some output is ready or the stream ends.
    fn step(&mut self) -> io::Result<()> {
        loop {
            match self.phase {
                Phase::End => return Ok(()),
                Phase::Header { first } => self.header(first)?,
                Phase::Deflate => {
                    self.fill(INPUT_CHUNK)?;
                    let mut flags = inflate_flags::TINFL_FLAG_STOP_ON_BLOCK_BOUNDARY;
                    if !self.src_done {
                        flags |= inflate_flags::TINFL_FLAG_HAS_MORE_INPUT;
                    }
                    let at = ring_pos(self.out_total);
                    let (status, used, made) = decompress(
                        &mut self.state,
                        &self.input[self.in_start..self.in_end],
                        &mut self.ring,
                        at,
                        flags,
                    );
                    self.consume(used);
                    self.out_total += made as u64;
                    self.ready = (at, at + made);
                    match status {
                        TINFLStatus::Done => {
                            // The trailer (CRC-32, size): the diff_id covers the content.
                            self.skip(8)?;
                            self.phase = Phase::Header { first: false };
                        }
                        TINFLStatus::BlockBoundary => self.checkpoint(),
                        TINFLStatus::HasMoreOutput => {}
                        TINFLStatus::NeedsMoreInput if !self.src_done => {}
                        // What was made is good; the failure comes with the next read (a
                        // range that ends where the reader needs no more is no failure).
                        _ if made > 0 => {}
                        TINFLStatus::NeedsMoreInput | TINFLStatus::FailedCannotMakeProgress => {
                            return Err(truncated());
                        }
                        _ => return Err(invalid("the deflate stream is corrupt")),
                    }
                    if made > 0 {
                        return Ok(());
                    }
                }
            }
        }
    }

    fn checkpoint(&mut self) {
        let Some(rec) = &mut self.record else {
            return;
        };
        if self.out_total < rec.last + rec.span {
            return;
        }
        let Some(st) = self.state.block_boundary_state() else {
            return;
        };
        let len = usize::try_from(self.out_total.min(WINDOW as u64)).unwrap_or(WINDOW);
        let end = ring_pos(self.out_total);
        let window = (0..len)
            .map(|i| self.ring[(end + RING - len + i) % RING])
            .collect();
        rec.last = self.out_total;
        rec.points.push(Checkpoint {
            input: self.in_pos,
            output: self.out_total,
            bits: st.num_bits,
            bit_buf: st.bit_buf,
            window,
            window_at: None,
        });
    }
}

impl<R: Read> Read for Inflater<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.ready.0 == self.ready.1 {
            self.step()?;
        }
        let (a, b) = self.ready;
        let n = (b - a).min(buf.len());
        buf[..n].copy_from_slice(&self.ring[a..a + n]);
        self.ready.0 += n;
        Ok(n)
    }
}

fn ring_pos(offset: u64) -> usize {
    (offset % RING as u64) as usize
}

fn truncated() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "the gzip stream ends early")
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// Bytes as base64 in JSON.
mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Varied data: compressible runs and noise, so blocks and back-references vary.
    fn sample(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x % 3 == 0 {
                let run = (x % 200) as usize;
                out.extend(std::iter::repeat_n(b'a' + (x % 26) as u8, run));
            } else {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
        out.truncate(len);
        out
    }

    fn gzip(data: &[u8], level: u32) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn every_checkpoint_resumes_to_the_same_bytes() {
        let data = sample(3 << 20, 7);
        for level in [1, 6, 9] {
            let blob = gzip(&data, level);
            let mut inf = Inflater::new(&blob[..]).recording(256 << 10);
            let mut out = Vec::new();
            inf.read_to_end(&mut out).unwrap();
            assert_eq!(out, data, "level {level}");
            assert_eq!(inf.compressed_pos(), blob.len() as u64);
            let points = inf.checkpoints().to_vec();
            // zlib-rs's fastest level writes few, long blocks: fewer places to resume.
            let least = if level == 1 { 1 } else { 4 };
            assert!(
                points.len() >= least,
                "level {level}: {} points",
                points.len()
            );
            for p in &points {
                let mut resumed = Inflater::resume(&blob[p.input as usize..], p).unwrap();
                let mut rest = Vec::new();
                resumed.read_to_end(&mut rest).unwrap();
                assert_eq!(rest, &data[p.output as usize..], "level {level} at {p:?}");
            }
        }
    }

    #[test]
    fn several_members_and_header_fields_are_read() {
        let a = sample(100_000, 1);
        let b = sample(70_000, 2);
        let mut blob = Vec::new();
        let mut enc = flate2::GzBuilder::new()
            .filename("layer.tar")
            .comment("made by a test")
            .extra(vec![1, 2, 3])
            .write(Vec::new(), flate2::Compression::default());
        enc.write_all(&a).unwrap();
        blob.extend(enc.finish().unwrap());
        blob.extend(gzip(&b, 6));
        let mut out = Vec::new();
        Inflater::new(&blob[..]).read_to_end(&mut out).unwrap();
        assert_eq!(out, [a, b].concat());
    }

    #[test]
    fn damaged_streams_are_errors_not_panics() {
        let blob = gzip(&sample(200_000, 3), 6);
        for cut in [0, 5, 10, blob.len() / 2, blob.len() - 4] {
            let err = Inflater::new(&blob[..cut]).read_to_end(&mut Vec::new());
            assert!(err.is_err(), "cut at {cut}");
        }
        let mut bad = blob.clone();
        bad[0] = 0;
        assert!(
            Inflater::new(&bad[..])
                .read_to_end(&mut Vec::new())
                .is_err()
        );
        let mut flipped = blob.clone();
        for i in (20..flipped.len() - 8).step_by(97) {
            flipped[i] ^= 0x5a;
        }
        // Corrupt deflate data fails or inflates to other bytes; it never panics.
        let _ = Inflater::new(&flipped[..]).read_to_end(&mut Vec::new());
        let point = Checkpoint {
            input: 0,
            output: 0,
            bits: 9,
            bit_buf: 0,
            window: Vec::new(),
            window_at: None,
        };
        assert!(Inflater::resume(&blob[..], &point).is_err());
    }
}
