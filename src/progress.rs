//! What the engine tells its caller while it works. The library prints nothing itself: a
//! caller that wants docker's output (the CLI) implements [`Progress`] and prints.

use crate::Digest;

/// A message for the user, in docker's words ([`std::fmt::Display`] gives the text).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notice {
    /// `run` did not find the image in the store and pulls it.
    ImageNotFoundLocally {
        /// The image as the user would write it.
        image: String,
    },
    /// A pull starts.
    Pulling {
        /// The image as the user would write it.
        image: String,
    },
    /// `run --lazy` pulls the image whole first, for `reason`.
    LazyFallback {
        /// The image as the user would write it.
        image: String,
        /// Why it cannot start lazily.
        reason: String,
    },
}

impl std::fmt::Display for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ImageNotFoundLocally { image } => {
                write!(f, "Unable to find image '{image}' locally")
            }
            Self::Pulling { image } => write!(f, "Pulling {image}"),
            Self::LazyFallback { image, reason } => {
                write!(
                    f,
                    "{image} cannot start lazily ({reason}): pulling it whole"
                )
            }
        }
    }
}

/// What happens to one layer during a pull.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LayerEvent {
    /// The layer is known, `size` compressed bytes; nothing started yet.
    Waiting {
        /// Compressed size.
        size: u64,
    },
    /// Its download started.
    Downloading,
    /// `bytes` more compressed bytes arrived.
    Advanced {
        /// Bytes since the last event.
        bytes: u64,
    },
    /// It was already in the store.
    AlreadyExists,
    /// It was downloaded, verified and committed.
    Complete,
}

impl LayerEvent {
    /// docker's word for this phase ("Downloading", "Already exists", "Pull complete").
    pub fn status(&self) -> &'static str {
        match self {
            Self::Waiting { .. } => "Waiting",
            Self::Downloading | Self::Advanced { .. } => "Downloading",
            Self::AlreadyExists => "Already exists",
            Self::Complete => "Pull complete",
        }
    }
}

/// Receives the engine's notices and pull progress; every method defaults to doing nothing.
/// Called from the engine's I/O threads, so it must be `Send + Sync`.
///
/// ```
/// use skiff::{LayerEvent, Notice, Progress};
///
/// struct Log;
/// impl Progress for Log {
///     fn notice(&self, notice: &Notice) {
///         eprintln!("{notice}");
///     }
///     fn layer(&self, layer: &skiff::Digest, event: LayerEvent) {
///         if !matches!(event, LayerEvent::Advanced { .. }) {
///             eprintln!("{}: {}", layer.short(), event.status());
///         }
///     }
/// }
/// ```
pub trait Progress: Send + Sync {
    /// A message for the user.
    fn notice(&self, notice: &Notice) {
        let _ = notice;
    }
    /// A layer's progress.
    fn layer(&self, layer: &Digest, event: LayerEvent) {
        let _ = (layer, event);
    }
}

/// Progress that goes nowhere (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Progress for Silent {}
