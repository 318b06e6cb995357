//! A reader that hands on what a test sends it, when it sends it: a layer stream held at a
//! chosen byte while the test looks at what the other side has made of it.

use std::io::Read;
use std::sync::mpsc;

/// The reading end (see [`gated`]); it ends when the sender is dropped.
#[derive(Debug)]
pub struct Gated {
    rx: mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
}

/// A sender of byte runs and the reader that returns them in order, blocking until each comes.
pub fn gated() -> (mpsc::Sender<Vec<u8>>, Gated) {
    let (tx, rx) = mpsc::channel();
    let reader = Gated {
        rx,
        chunk: Vec::new(),
        at: 0,
    };
    (tx, reader)
}

impl Read for Gated {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.rx.recv() {
                Ok(chunk) => (self.chunk, self.at) = (chunk, 0),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
