//! Pull progress as docker shows it: per-layer bars on a terminal, plain lines otherwise,
//! nothing with `-q`. The library reports events through [`skiff::Progress`]; this prints them.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use skiff::{Digest, LayerEvent, Notice, Progress};

/// How pull progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// Bars on a terminal, lines otherwise.
    Auto,
    /// Nothing but notices such as "Unable to find image … locally".
    Quiet,
}

/// The CLI's display of notices and pull progress.
#[derive(Debug)]
pub struct Display {
    bars: Option<MultiProgress>,
    layers: Mutex<HashMap<Digest, ProgressBar>>,
    quiet: bool,
}

impl Display {
    /// A display for the given mode.
    pub fn new(mode: ProgressMode) -> Self {
        let bars = (mode == ProgressMode::Auto && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Self {
            bars,
            layers: Mutex::new(HashMap::new()),
            quiet: mode == ProgressMode::Quiet,
        }
    }

    fn line(&self, msg: &str) {
        match &self.bars {
            Some(bars) => {
                let _ = bars.println(msg);
            }
            None => eprintln!("{msg}"),
        }
    }

    fn bar(&self, layer: &Digest, size: u64) -> Option<ProgressBar> {
        let bars = self.bars.as_ref()?;
        let bar = bars.add(ProgressBar::new(size));
        bar.set_style(
            ProgressStyle::with_template("{prefix}: {msg:16} [{bar:30}] {bytes}/{total_bytes}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(layer.short());
        bar.set_message("Waiting");
        Some(bar)
    }
}

impl Progress for Display {
    fn notice(&self, notice: &Notice) {
        // docker prints "Unable to find image" even with -q: it explains the wait.
        if !self.quiet || matches!(notice, Notice::ImageNotFoundLocally { .. }) {
            self.line(&notice.to_string());
        }
    }

    fn layer(&self, layer: &Digest, event: LayerEvent) {
        if self.quiet {
            return;
        }
        let Ok(mut layers) = self.layers.lock() else {
            return;
        };
        if let LayerEvent::Waiting { size } = event {
            if let Some(bar) = self.bar(layer, size) {
                layers.insert(*layer, bar);
            }
            return;
        }
        match (layers.get(layer), event) {
            (Some(bar), LayerEvent::Advanced { bytes }) => bar.inc(bytes),
            (Some(bar), LayerEvent::Complete | LayerEvent::AlreadyExists) => {
                bar.finish_with_message(event.status());
            }
            (Some(bar), _) => bar.set_message(event.status()),
            (None, LayerEvent::Advanced { .. }) => {}
            (None, _) => eprintln!("{}: {}", layer.short(), event.status()),
        }
    }
}
