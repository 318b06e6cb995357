//! Garbage collection: dead runs and tmp/ garbage swept, unused layers and blobs removed, then
//! the least recently used images evicted down to a size budget.
//!
//! [`Store::gc`] holds `locks/gc` exclusively for its whole duration, so no run or container
//! registers (see [`crate::holds`] and [`Store::create_container_dir`]) while it decides what
//! is live. What containers hold is live whether or not any process runs; container
//! directories are never removed by gc.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::io;
use std::path::PathBuf;

use serde::Serialize;

use crate::holds::HoldRecord;
use crate::lock::FileLock;
use crate::records::ImageRecord;
use crate::scan::{
    RefEntry, STALE_TMP, TmpOwner, add_image, classify_tmp, disk_usage, entry_name, file_size,
    older_than, pid_alive, read_dir_entries, walk_refs,
};
use crate::store::{io_err, list_digests, read_json, remove_tree};
use crate::{Digest, Store, StoreError};

/// What [`Store::gc`] may do.
#[derive(Debug, Clone, Default)]
pub struct GcOptions {
    /// Keep evicting the least recently used images until the store fits in this many bytes.
    pub budget_bytes: Option<u64>,
    /// Decide and report, but change nothing.
    pub dry_run: bool,
}

/// An entry gc left in place, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Kept {
    /// The entry.
    pub path: PathBuf,
    /// Why it was kept.
    pub reason: String,
}

/// What [`Store::gc`] removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    /// Whether this was a dry run (nothing was changed).
    pub dry_run: bool,
    /// Layers removed (diff_ids).
    pub removed_layers: Vec<Digest>,
    /// Blobs removed.
    pub removed_blobs: Vec<Digest>,
    /// Image records removed to fit the budget (manifest digests).
    pub removed_images: Vec<Digest>,
    /// Refs removed with their images, as `registry/repository:tag`.
    pub removed_refs: Vec<String>,
    /// Dead runs swept (ids).
    pub removed_runs: Vec<String>,
    /// Garbage removed from tmp/ (entry names).
    pub removed_tmp: Vec<String>,
    /// Disk usage freed, in bytes.
    pub bytes_freed: u64,
    /// Disk usage of layers, blobs and image records afterwards, in bytes.
    pub bytes_after: u64,
    /// Whether the store is still over the budget (everything left is used or busy).
    pub over_budget: bool,
    /// Entries that would have gone but were busy or held.
    pub kept_busy: Vec<Kept>,
}

/// An image record file and what it says.
#[derive(Debug)]
struct ImageEntry {
    path: PathBuf,
    record: ImageRecord,
    size: u64,
}

/// gc's view of the store, updated as it removes things (also in a dry run).
#[derive(Debug, Default)]
struct State {
    images: BTreeMap<Digest, ImageEntry>,
    refs: Vec<RefEntry>,
    layers: BTreeMap<Digest, u64>,
    blobs: BTreeMap<Digest, u64>,
    busy_layers: BTreeSet<Digest>,
}

impl State {
    fn size(&self) -> u64 {
        self.layers.values().sum::<u64>()
            + self.blobs.values().sum::<u64>()
            + self.images.values().map(|i| i.size).sum::<u64>()
    }

    /// Layers and blobs that images, refs, live runs and containers use.
    fn live(&self, holds: &[HoldRecord]) -> (HashSet<Digest>, HashSet<Digest>) {
        let mut layers = HashSet::new();
        let mut blobs = HashSet::new();
        for (file_digest, image) in &self.images {
            blobs.insert(*file_digest);
            add_image(&image.record, &mut layers, &mut blobs);
        }
        for r in &self.refs {
            blobs.insert(r.record.manifest);
            blobs.extend(r.record.index);
        }
        for hold in holds {
            layers.extend(hold.layers.iter().copied());
            blobs.extend(hold.images.iter().copied());
        }
        (layers, blobs)
    }
}

impl Store {
    /// With the gc lock held: removes what dead writers left in tmp/.
    fn clear_tmp(&self, dry_run: bool, report: &mut GcReport) -> Result<(), StoreError> {
        for entry in read_dir_entries(&self.root().join("tmp"))? {
            let path = entry.path();
            let name = entry_name(&entry);
            let meta = fs::symlink_metadata(&path).map_err(io_err("inspecting", &path))?;
            let (_lock, busy) = match classify_tmp(&name) {
                TmpOwner::Layer(diff_id) => {
                    let lock_path = self.lock_path("layer", &diff_id);
                    match FileLock::try_exclusive(&lock_path)
                        .map_err(io_err("locking", &lock_path))?
                    {
                        // Held while removing, so no writer starts on it meanwhile.
                        Some(lock) => (Some(lock), None),
                        None => (None, Some(format!("a writer of layer {diff_id} is active"))),
                    }
                }
                TmpOwner::Process { pid, stale_ok } => {
                    if pid_alive(pid) && !(stale_ok && older_than(&meta, STALE_TMP)) {
                        (None, Some(format!("process {pid} is alive")))
                    } else {
                        (None, None)
                    }
                }
                TmpOwner::Unknown => {
                    if older_than(&meta, STALE_TMP) {
                        (None, None)
                    } else {
                        (None, Some("unrecognised and younger than an hour".into()))
                    }
                }
            };
            if let Some(reason) = busy {
                report.kept_busy.push(Kept { path, reason });
                continue;
            }
            let size = disk_usage(&path);
            if !dry_run {
                remove_tree(&path)?;
            }
            report.bytes_freed += size;
            report.removed_tmp.push(name);
        }
        Ok(())
    }

    /// gc's view: image records, refs, and the sizes of layers and blobs.
    fn gc_state(&self) -> Result<State, StoreError> {
        let mut state = State::default();
        for digest in list_digests(&self.root().join("images/sha256"), ".json")? {
            let path = self.image_path(&digest);
            if let Some(record) = read_json::<ImageRecord>(&path)? {
                let size = file_size(&path);
                state
                    .images
                    .insert(digest, ImageEntry { path, record, size });
            }
        }
        let refs = self.root().join("refs");
        walk_refs(&refs, &refs, &mut state.refs, None)?;
        for diff_id in self.layers()? {
            state
                .layers
                .insert(diff_id, disk_usage(&self.layer_base(&diff_id)));
        }
        for digest in self.blobs()? {
            state
                .blobs
                .insert(digest, file_size(&self.blob_path(&digest)));
        }
        Ok(state)
    }

    /// Removes one layer unless a writer holds its lock; false when it is busy.
    fn remove_layer(&self, diff_id: &Digest, dry_run: bool) -> Result<bool, StoreError> {
        let lock_path = self.lock_path("layer", diff_id);
        let Some(_lock) =
            FileLock::try_exclusive(&lock_path).map_err(io_err("locking", &lock_path))?
        else {
            return Ok(false);
        };
        if dry_run {
            return Ok(true);
        }
        let base = self.layer_base(diff_id);
        // One rename takes the layer out of sight whole; the slow removal happens in tmp/.
        let grave = self.tmp_path(&format!("deleting-{}", diff_id.hex()));
        match fs::rename(&base, &grave) {
            Ok(()) => remove_tree(&grave)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("moving out layer", &base)(e)),
        }
        Ok(true)
    }

    /// Removes every layer and blob nothing uses.
    fn collect_unused(
        &self,
        state: &mut State,
        holds: &[HoldRecord],
        dry_run: bool,
        report: &mut GcReport,
    ) -> Result<(), StoreError> {
        let (live_layers, live_blobs) = state.live(holds);
        let unused: Vec<(Digest, u64)> = state
            .layers
            .iter()
            .filter(|(d, _)| !live_layers.contains(d) && !state.busy_layers.contains(d))
            .map(|(d, s)| (*d, *s))
            .collect();
        for (diff_id, size) in unused {
            if self.remove_layer(&diff_id, dry_run)? {
                state.layers.remove(&diff_id);
                report.removed_layers.push(diff_id);
                report.bytes_freed += size;
            } else {
                state.busy_layers.insert(diff_id);
                report.kept_busy.push(Kept {
                    path: self.layer_base(&diff_id),
                    reason: "its lock is held (a writer is active)".into(),
                });
            }
        }
        let unused: Vec<(Digest, u64)> = state
            .blobs
            .iter()
            .filter(|(d, _)| !live_blobs.contains(d))
            .map(|(d, s)| (*d, *s))
            .collect();
        for (digest, size) in unused {
            if !dry_run {
                let path = self.blob_path(&digest);
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err("removing", &path)(e)),
                }
            }
            state.blobs.remove(&digest);
            report.removed_blobs.push(digest);
            report.bytes_freed += size;
        }
        Ok(())
    }

    /// Removes an image record and the refs pointing at it.
    fn evict_image(
        &self,
        state: &mut State,
        manifest: &Digest,
        dry_run: bool,
        report: &mut GcReport,
    ) -> Result<(), StoreError> {
        let Some(image) = state.images.remove(manifest) else {
            return Ok(());
        };
        let (gone, kept): (Vec<RefEntry>, Vec<RefEntry>) =
            std::mem::take(&mut state.refs).into_iter().partition(|r| {
                r.record.manifest == *manifest || r.record.manifest == image.record.manifest
            });
        state.refs = kept;
        for r in gone {
            report.bytes_freed += file_size(&r.path);
            if !dry_run {
                match fs::remove_file(&r.path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err("removing", &r.path)(e)),
                }
            }
            report.removed_refs.push(r.name);
        }
        if !dry_run {
            match fs::remove_file(&image.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("removing", &image.path)(e)),
            }
        }
        report.bytes_freed += image.size;
        report.removed_images.push(*manifest);
        Ok(())
    }

    /// Sweeps dead runs and tmp garbage, removes layers and blobs nothing uses, then evicts the
    /// least recently used images until the store fits `budget_bytes`.
    ///
    /// What containers (`containers/*/hold.json`) hold is never collected nor evicted, and
    /// their directories are never removed.
    ///
    /// An image record, ref, or live run's or container's hold.json that does not parse stops
    /// gc with [`StoreError::Corrupt`] rather than guessing what it keeps alive (see
    /// [`Store::verify`]).
    pub fn gc(&self, options: &GcOptions) -> Result<GcReport, StoreError> {
        let _gc = self.gc_lock(true)?;
        let dry_run = options.dry_run;
        let mut report = GcReport {
            dry_run,
            ..GcReport::default()
        };
        let mut holds = self.sweep_runs_locked(dry_run, &mut report)?;
        holds.extend(self.container_holds()?);
        self.clear_tmp(dry_run, &mut report)?;
        let mut state = self.gc_state()?;
        self.collect_unused(&mut state, &holds, dry_run, &mut report)?;
        if let Some(budget) = options.budget_bytes {
            self.evict_to_budget(&mut state, &holds, budget, dry_run, &mut report)?;
        }
        report.bytes_after = state.size();
        Ok(report)
    }

    /// Evicts the least recently used images no live run or container holds, collecting what
    /// each leaves unused, until the store fits `budget` bytes.
    fn evict_to_budget(
        &self,
        state: &mut State,
        holds: &[HoldRecord],
        budget: u64,
        dry_run: bool,
        report: &mut GcReport,
    ) -> Result<(), StoreError> {
        let held: HashSet<Digest> = holds.iter().flat_map(|h| h.images.clone()).collect();
        let is_held = |d: &Digest, image: &ImageEntry| {
            held.contains(d) || held.contains(&image.record.manifest)
        };
        let mut candidates: Vec<(u64, Digest)> = state
            .images
            .iter()
            .filter(|(d, image)| !is_held(d, image))
            .map(|(d, image)| (image.record.last_used, *d))
            .collect();
        candidates.sort();
        for (_, manifest) in candidates {
            if state.size() <= budget {
                break;
            }
            self.evict_image(state, &manifest, dry_run, report)?;
            self.collect_unused(state, holds, dry_run, report)?;
        }
        report.over_budget = state.size() > budget;
        if report.over_budget {
            for (d, image) in &state.images {
                if is_held(d, image) {
                    report.kept_busy.push(Kept {
                        path: image.path.clone(),
                        reason: "held by a live run or a container".into(),
                    });
                }
            }
        }
        Ok(())
    }
}
