//! Pull progress: per-layer bars like docker's on a terminal, plain lines otherwise, nothing
//! with `-q`.

use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::Digest;

/// How pull progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// Bars on a terminal, lines otherwise.
    Auto,
    /// Always plain lines on stderr.
    Lines,
    /// Nothing.
    Quiet,
}

/// Progress display for one pull.
#[derive(Debug, Clone)]
pub struct Progress {
    bars: Option<MultiProgress>,
    lines: bool,
}

/// Progress of one layer.
#[derive(Debug, Clone)]
pub struct LayerProgress {
    bar: Option<ProgressBar>,
    lines: bool,
    short: String,
}

impl Progress {
    /// A display for the given mode.
    pub fn new(mode: ProgressMode) -> Self {
        match mode {
            ProgressMode::Quiet => Self {
                bars: None,
                lines: false,
            },
            ProgressMode::Lines => Self {
                bars: None,
                lines: true,
            },
            ProgressMode::Auto if std::io::stderr().is_terminal() => Self {
                bars: Some(MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
                lines: false,
            },
            ProgressMode::Auto => Self {
                bars: None,
                lines: true,
            },
        }
    }

    /// A message line (shown in every mode but quiet).
    pub fn message(&self, msg: &str) {
        match &self.bars {
            Some(bars) => {
                let _ = bars.println(msg);
            }
            None if self.lines => eprintln!("{msg}"),
            None => {}
        }
    }

    /// Starts tracking a layer of `size` bytes.
    pub fn layer(&self, digest: &Digest, size: u64) -> LayerProgress {
        let short = digest.short();
        let bar = self.bars.as_ref().map(|bars| {
            let bar = bars.add(ProgressBar::new(size));
            bar.set_style(
                ProgressStyle::with_template("{prefix}: {msg:16} [{bar:30}] {bytes}/{total_bytes}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_prefix(short.clone());
            bar.set_message("Waiting");
            bar
        });
        LayerProgress {
            bar,
            lines: self.lines,
            short,
        }
    }
}

impl LayerProgress {
    /// Bytes arrived.
    pub fn advance(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    /// A phase change: "Downloading", "Already exists", "Pull complete".
    pub fn status(&self, status: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(status.to_owned()),
            None if self.lines => eprintln!("{}: {status}", self.short),
            None => {}
        }
    }

    /// The layer is done.
    pub fn finish(&self, status: &str) {
        match &self.bar {
            Some(bar) => bar.finish_with_message(status.to_owned()),
            None if self.lines => eprintln!("{}: {status}", self.short),
            None => {}
        }
    }
}
