//! How far the layers being unpacked have got: a reader in the same process (lazy start) takes
//! a file from a layer's staging directory as soon as its tar entry is written there, rather
//! than when the whole layer is committed. Nothing in a staging directory is verified yet (the
//! layer's digests are checked at its end): such a reader checks each file it takes against a
//! digest of its own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::{ConfinedRoot, Digest};

/// The layers a store's writers are unpacking, by diff_id; shared between the writers and the
/// readers that want their files early. Writers report to it once the store was given it
/// ([`crate::Store::reporting_unpacking_to`]).
#[derive(Debug, Default)]
pub struct Unpacking {
    layers: Mutex<HashMap<Digest, Arc<Unpacked>>>,
}

/// One layer being unpacked: its staging directory and how far into its tar the entries are
/// all written.
#[derive(Debug)]
pub struct Unpacked {
    root: ConfinedRoot,
    written: AtomicU64,
}

impl Unpacking {
    /// The layer `diff_id` while it is being unpacked (`None` before it starts, once it is
    /// committed and after it failed).
    pub fn layer(&self, diff_id: &Digest) -> Option<Arc<Unpacked>> {
        self.layers.lock().ok()?.get(diff_id).cloned()
    }

    pub(crate) fn begin(&self, diff_id: Digest, root: ConfinedRoot) -> Option<Arc<Unpacked>> {
        let layer = Arc::new(Unpacked {
            root,
            written: AtomicU64::new(0),
        });
        self.layers.lock().ok()?.insert(diff_id, layer.clone());
        Some(layer)
    }

    pub(crate) fn end(&self, diff_id: &Digest) {
        if let Ok(mut layers) = self.layers.lock() {
            layers.remove(diff_id);
        }
    }
}

impl Unpacked {
    /// Bytes of the uncompressed tar before which every entry is written in full: a file whose
    /// content ends there or before is in [`Self::root`] (unless a later entry replaced it).
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// The staging directory (it stays open when the layer is committed or removed).
    pub fn root(&self) -> &ConfinedRoot {
        &self.root
    }

    pub(crate) fn advance(&self, to: u64) {
        self.written.store(to, Ordering::Release);
    }
}
