//! Synthetic layers for benchmarks: many small files plus a few large ones, deterministic; and
//! incompressible bytes ([`noise`]).

use crate::entry::Entry;

/// Shape of a synthetic layer.
#[derive(Debug, Clone, Copy)]
pub struct LayerShape {
    /// Seed: layers with different seeds have different content (and digests).
    pub seed: u64,
    /// Number of small files (1–8 KiB, text-like), spread over directories of 100.
    pub small_files: usize,
    /// Number of large files.
    pub large_files: usize,
    /// Size of each large file in bytes.
    pub large_size: usize,
}

impl Default for LayerShape {
    /// 30,000 small files and four 16 MiB files: roughly a language runtime's layer.
    fn default() -> Self {
        Self {
            seed: 1,
            small_files: 30_000,
            large_files: 4,
            large_size: 16 << 20,
        }
    }
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `len` incompressible bytes, the same for the same seed.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = XorShift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next().to_le_bytes());
    }
    out.truncate(len);
    out
}

const WORDS: [&str; 16] = [
    "import", "return", "function", "value", "const", "module", "export", "class", "string",
    "number", "self", "if", "else", "for", "while", "def",
];

/// The entries of a synthetic layer.
pub fn entries(shape: LayerShape) -> Vec<Entry> {
    let mut rng = XorShift(shape.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut out = vec![
        Entry::dir("usr/"),
        Entry::dir("usr/lib/"),
        Entry::dir("usr/share/"),
    ];
    for i in 0..shape.small_files {
        if i % 100 == 0 {
            out.push(Entry::dir(format!(
                "usr/lib/pkg{}-{:04}/",
                shape.seed,
                i / 100
            )));
        }
        let len = 1024 + (rng.next() % 7168) as usize;
        let mut body = String::with_capacity(len + 16);
        while body.len() < len {
            body.push_str(WORDS[(rng.next() % 16) as usize]);
            body.push(if rng.next() % 8 == 0 { '\n' } else { ' ' });
        }
        out.push(Entry::file(
            format!("usr/lib/pkg{}-{:04}/f{i:05}.py", shape.seed, i / 100),
            body,
        ));
    }
    for i in 0..shape.large_files {
        // Low-entropy bytes: compresses about 2:1, like binaries.
        let body: Vec<u8> = (0..shape.large_size)
            .map(|_| (rng.next() % 16) as u8 * 17)
            .collect();
        out.push(Entry::file(format!("usr/share/blob{}-{i}.bin", shape.seed), body).mode(0o755));
    }
    out
}
