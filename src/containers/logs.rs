//! The container log in docker's json-file shape: one JSON object a line,
//! `{"log":"text\n","stream":"stdout","time":"2026-11-29T05:00:00.123456789Z"}`.
//! The monitor writes it; `logs` reads it (`--tail`, `-t`, `-f`).

use std::io::{BufRead, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{ContainerError, io};

/// Which output a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// The payload's stdout.
    Stdout,
    /// The payload's stderr.
    Stderr,
}

/// One line of a container's log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogLine {
    /// The text, with its newline when it had one.
    pub log: String,
    /// Its stream.
    pub stream: Stream,
    /// When the monitor read it (RFC 3339, nanoseconds, UTC).
    pub time: String,
}

/// What `logs` shows.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    /// `-f`: keep following while the container runs.
    pub follow: bool,
    /// `--tail N`: only the last N lines.
    pub tail: Option<usize>,
}

/// A partial line longer than this is written as it is (docker splits at 16 KiB too).
const MAX_LINE: usize = 16 * 1024;

/// Appends the payload's output to the log, a line at a time.
#[derive(Debug)]
pub(crate) struct LogWriter {
    file: std::fs::File,
    partial: [Vec<u8>; 2],
}

impl LogWriter {
    /// Opens (appends to) the log at `path`.
    pub(crate) fn open(path: &Path) -> Result<Self, ContainerError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io("opening the log", path))?;
        Ok(Self {
            file,
            partial: [Vec::new(), Vec::new()],
        })
    }

    /// Takes a chunk of output; complete lines are written.
    pub(crate) fn write(&mut self, stream: Stream, mut data: &[u8]) {
        let i = stream as usize;
        while let Some(nl) = data.iter().position(|&b| b == b'\n') {
            let mut line = std::mem::take(&mut self.partial[i]);
            line.extend_from_slice(&data[..=nl]);
            self.emit(stream, &line);
            data = &data[nl + 1..];
        }
        self.partial[i].extend_from_slice(data);
        if self.partial[i].len() >= MAX_LINE {
            let line = std::mem::take(&mut self.partial[i]);
            self.emit(stream, &line);
        }
    }

    /// Writes what is left of unfinished lines.
    pub(crate) fn flush(&mut self) {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let line = std::mem::take(&mut self.partial[stream as usize]);
            if !line.is_empty() {
                self.emit(stream, &line);
            }
        }
    }

    fn emit(&mut self, stream: Stream, line: &[u8]) {
        let record = LogLine {
            log: String::from_utf8_lossy(line).into_owned(),
            stream,
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        };
        if let Ok(mut json) = serde_json::to_vec(&record) {
            json.push(b'\n');
            // One write a line: a reader never sees half a record unless the disk is full.
            if let Err(err) = self.file.write_all(&json) {
                tracing::warn!(%err, "writing the container log");
            }
        }
    }
}

fn parse(line: &str) -> Option<LogLine> {
    serde_json::from_str(line).ok()
}

/// Reads the log at `path`, giving each line to `emit`; with `follow`, keeps reading new lines
/// until `running()` is false and the log is read to its end.
pub(crate) fn read_logs(
    path: &PathBuf,
    options: &LogOptions,
    from: u64,
    running: &dyn Fn() -> bool,
    emit: &mut dyn FnMut(&LogLine) -> std::io::Result<()>,
) -> Result<(), ContainerError> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !options.follow => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Not started yet: wait for the monitor to create it.
            loop {
                if let Ok(f) = std::fs::File::open(path) {
                    break f;
                }
                if !running() {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Err(e) => return Err(io("opening the log", path)(e)),
    };
    let mut reader = std::io::BufReader::new(file);
    if from > 0 {
        reader
            .seek(std::io::SeekFrom::Start(from))
            .map_err(io("reading", path))?;
    }
    let broken = |e: std::io::Error| io("writing the log to", Path::new("stdout"))(e);
    if let Some(n) = options.tail {
        let mut last = std::collections::VecDeque::with_capacity(n.min(4096));
        let mut line = String::new();
        while reader.read_line(&mut line).map_err(io("reading", path))? > 0 {
            if !line.ends_with('\n') {
                // A record being written: read again from its start later.
                let back = i64::try_from(line.len()).unwrap_or(0);
                reader.seek_relative(-back).map_err(io("reading", path))?;
                break;
            }
            if let Some(l) = parse(&line) {
                if last.len() == n {
                    last.pop_front();
                }
                if n > 0 {
                    last.push_back(l);
                }
            }
            line.clear();
        }
        for l in &last {
            emit(l).map_err(broken)?;
        }
    }
    let mut line = String::new();
    loop {
        let n = reader.read_line(&mut line).map_err(io("reading", path))?;
        if n > 0 && line.ends_with('\n') {
            if options.tail.is_none() || !line.is_empty() {
                if let Some(l) = parse(&line) {
                    emit(&l).map_err(broken)?;
                }
            }
            line.clear();
            continue;
        }
        // At the end (or inside a record still being written).
        if !options.follow {
            return Ok(());
        }
        let back = i64::try_from(line.len()).unwrap_or(0);
        reader.seek_relative(-back).map_err(io("reading", path))?;
        line.clear();
        if !running() {
            // One more pass for what the monitor wrote before it recorded the exit.
            let mut rest = String::new();
            while reader.read_line(&mut rest).map_err(io("reading", path))? > 0 {
                if let Some(l) = parse(&rest) {
                    emit(&l).map_err(broken)?;
                }
                rest.clear();
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_and_partial_lines_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        let mut w = LogWriter::open(&path).unwrap();
        w.write(Stream::Stdout, b"one\ntw");
        w.write(Stream::Stderr, b"err\n");
        w.write(Stream::Stdout, b"o\nthree");
        w.flush();
        let mut got = Vec::new();
        read_logs(&path, &LogOptions::default(), 0, &|| false, &mut |l| {
            got.push((l.stream, l.log.clone()));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            got,
            vec![
                (Stream::Stdout, "one\n".to_owned()),
                (Stream::Stderr, "err\n".to_owned()),
                (Stream::Stdout, "two\n".to_owned()),
                (Stream::Stdout, "three".to_owned()),
            ]
        );
        let mut tail = Vec::new();
        let opts = LogOptions {
            tail: Some(2),
            ..Default::default()
        };
        read_logs(&path, &opts, 0, &|| false, &mut |l| {
            tail.push(l.log.clone());
            Ok(())
        })
        .unwrap();
        assert_eq!(tail, vec!["two\n", "three"]);
        let line = std::fs::read_to_string(&path).unwrap();
        let first: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
        assert_eq!(first["stream"], "stdout");
        assert!(first["time"].as_str().unwrap().ends_with('Z'));
    }
}
