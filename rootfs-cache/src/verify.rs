//! [`Store::verify`]: every entry of the store checked, nothing changed.
//!
//! The steps run in an order where each knows what the earlier ones found in use: image records,
//! refs, live runs and containers say which layers and blobs are used; layers and blobs are
//! then checked and reported orphaned when nothing uses them; tmp/ garbage last.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::containers::ContainerEntry;
use crate::holds::{HOLD_FILE, HoldRecord, RUN_LOCK};
use crate::records::{ImageRecord, LayerRecord};
use crate::scan::{
    STALE_TMP, TmpOwner, add_image, classify_tmp, entry_name, lock_is_held, older_than, pid_alive,
    read_dir_entries, walk_refs,
};
use crate::store::{io_err, read_json};
use crate::{Digest, Store, StoreError};

/// A problem [`Store::verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The entry.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

/// What [`Store::verify`] found; nothing is changed by verifying.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    /// Entries that are damaged or inconsistent.
    pub corrupt: Vec<Finding>,
    /// Entries nothing uses (gc would remove them).
    pub orphaned: Vec<Finding>,
}

impl VerifyReport {
    /// True when nothing is corrupt or orphaned.
    pub fn is_clean(&self) -> bool {
        self.corrupt.is_empty() && self.orphaned.is_empty()
    }
}

/// The findings so far and what the entries seen so far use.
#[derive(Debug, Default)]
struct Verification {
    report: VerifyReport,
    /// Manifest digests of the image records present.
    images: HashSet<Digest>,
    used_layers: HashSet<Digest>,
    used_blobs: HashSet<Digest>,
}

impl Verification {
    fn corrupt(&mut self, path: PathBuf, reason: impl Into<String>) {
        self.report.corrupt.push(Finding {
            path,
            reason: reason.into(),
        });
    }

    fn orphan(&mut self, path: PathBuf, reason: &str) {
        self.report.orphaned.push(Finding {
            path,
            reason: reason.to_owned(),
        });
    }

    fn finish(mut self) -> VerifyReport {
        self.report.corrupt.sort_by(|a, b| a.path.cmp(&b.path));
        self.report.orphaned.sort_by(|a, b| a.path.cmp(&b.path));
        self.report
    }
}

impl Store {
    /// Checks every entry of the store and reports what is corrupt or orphaned; changes nothing.
    pub fn verify(&self) -> Result<VerifyReport, StoreError> {
        // Exclusive: no run registers and no gc removes while the store is being looked at.
        let _gc = self.gc_lock(true)?;
        let mut v = Verification::default();
        self.verify_images(&mut v)?;
        self.verify_refs(&mut v)?;
        self.verify_runs(&mut v)?;
        self.verify_containers(&mut v)?;
        self.verify_layers(&mut v)?;
        self.verify_blobs(&mut v)?;
        self.find_tmp_garbage(&mut v)?;
        Ok(v.finish())
    }

    /// Image records: named by their manifest, parse, and everything they use is present.
    fn verify_images(&self, v: &mut Verification) -> Result<(), StoreError> {
        for entry in read_dir_entries(&self.root().join("images/sha256"))? {
            let path = entry.path();
            let name = entry_name(&entry);
            let Some(file_digest) = name.strip_suffix(".json").and_then(Digest::from_hex) else {
                v.corrupt(path, "not an image record name");
                continue;
            };
            let record = match read_json::<ImageRecord>(&path) {
                Ok(Some(record)) => record,
                Ok(None) => continue,
                Err(err) => {
                    v.corrupt(path, format!("image record does not parse: {err}"));
                    continue;
                }
            };
            v.images.insert(file_digest);
            v.used_blobs.insert(file_digest);
            add_image(&record, &mut v.used_layers, &mut v.used_blobs);
            self.check_image(v, &path, file_digest, &record);
        }
        Ok(())
    }

    fn check_image(
        &self,
        v: &mut Verification,
        path: &Path,
        file_digest: Digest,
        record: &ImageRecord,
    ) {
        if record.manifest != file_digest {
            v.corrupt(
                path.to_owned(),
                format!("record is for manifest {}", record.manifest),
            );
        }
        for layer in &record.layers {
            if !self.layer_base(&layer.diff_id).is_dir() {
                v.corrupt(
                    path.to_owned(),
                    format!("layer {} is missing", layer.diff_id),
                );
            }
        }
        if !self.blob_path(&record.config).is_file() {
            v.corrupt(
                path.to_owned(),
                format!("config blob {} is missing", record.config),
            );
        }
    }

    /// Refs: parse and point at an image record that is present.
    fn verify_refs(&self, v: &mut Verification) -> Result<(), StoreError> {
        let refs_dir = self.root().join("refs");
        let mut refs = Vec::new();
        let mut bad = Vec::new();
        walk_refs(&refs_dir, &refs_dir, &mut refs, Some(&mut bad))?;
        v.report.corrupt.append(&mut bad);
        for r in refs {
            v.used_blobs.insert(r.record.manifest);
            v.used_blobs.extend(r.record.index);
            if !v.images.contains(&r.record.manifest) {
                v.corrupt(
                    r.path,
                    format!("points at missing image {}", r.record.manifest),
                );
            }
        }
        Ok(())
    }

    /// Runs: dead ones are orphans; live ones have a hold record, whose layers and images
    /// count as used.
    fn verify_runs(&self, v: &mut Verification) -> Result<(), StoreError> {
        for entry in read_dir_entries(&self.root().join("runs"))? {
            let dir = entry.path();
            if !entry.file_type().map_err(io_err("listing", &dir))?.is_dir() {
                v.orphan(dir, "not a run directory");
                continue;
            }
            let lock_path = dir.join(RUN_LOCK);
            if !lock_is_held(&lock_path).map_err(io_err("checking lock", &lock_path))? {
                v.orphan(dir, "dead run (nobody holds its lock)");
                continue;
            }
            let hold_path = dir.join(HOLD_FILE);
            match read_json::<HoldRecord>(&hold_path) {
                Ok(Some(hold)) => {
                    v.used_layers.extend(hold.layers);
                    v.used_blobs.extend(hold.images);
                }
                // Released right now: its directory was moved out whole.
                Ok(None) if !dir.exists() => {}
                Ok(None) => v.corrupt(hold_path, "live run without hold.json"),
                Err(err) => v.corrupt(hold_path, format!("does not parse: {err}")),
            }
        }
        Ok(())
    }

    /// Containers: each has a hold record, whose layers and images count as used and must be
    /// in the store (a container is made from a pulled image, unlike a pull's hold, which
    /// names layers before they are committed). An entry that is not a container directory,
    /// or one without hold.json (a creation that did not finish), is garbage; gc leaves
    /// container directories alone.
    fn verify_containers(&self, v: &mut Verification) -> Result<(), StoreError> {
        for entry in self.container_entries()? {
            let (dir, hold_path) = match entry {
                ContainerEntry::Container { dir, hold } => (dir, hold),
                ContainerEntry::NoHold(dir) => {
                    v.orphan(dir, "container directory without hold.json");
                    continue;
                }
                ContainerEntry::Other(path) => {
                    v.orphan(path, "not a container directory");
                    continue;
                }
            };
            let hold = match read_json::<HoldRecord>(&hold_path) {
                Ok(Some(hold)) => hold,
                // Removed right now: its directory was moved out whole.
                Ok(None) if !dir.exists() => continue,
                Ok(None) => {
                    v.corrupt(hold_path, "container without hold.json");
                    continue;
                }
                Err(err) => {
                    v.corrupt(hold_path, format!("does not parse: {err}"));
                    continue;
                }
            };
            for layer in &hold.layers {
                if !self.layer_base(layer).is_dir() {
                    v.corrupt(hold_path.clone(), format!("layer {layer} is missing"));
                }
            }
            for image in &hold.images {
                if !self.image_path(image).is_file() {
                    v.corrupt(hold_path.clone(), format!("image {image} is missing"));
                }
            }
            v.used_layers.extend(hold.layers);
            v.used_blobs.extend(hold.images);
        }
        Ok(())
    }

    /// Layers: named by a diff_id, with a matching layer.json and an fs/ directory; orphaned
    /// when no image, run or container uses them.
    fn verify_layers(&self, v: &mut Verification) -> Result<(), StoreError> {
        for entry in read_dir_entries(&self.root().join("layers/sha256"))? {
            let path = entry.path();
            let Some(diff_id) = Digest::from_hex(&entry_name(&entry)) else {
                v.corrupt(path, "not a layer digest");
                continue;
            };
            match read_json::<LayerRecord>(&path.join("layer.json")) {
                Ok(Some(record)) if record.diff_id != diff_id => {
                    v.corrupt(
                        path.clone(),
                        format!("layer.json is for {}", record.diff_id),
                    );
                }
                Ok(Some(_)) => {}
                Ok(None) => v.corrupt(path.clone(), "no layer.json"),
                Err(err) => v.corrupt(path.clone(), format!("unreadable layer.json: {err}")),
            }
            if !path.join("fs").is_dir() {
                v.corrupt(path.clone(), "no fs/ directory");
            }
            if !v.used_layers.contains(&diff_id) {
                v.orphan(path, "no image, run or container uses this layer");
            }
        }
        Ok(())
    }

    /// Blobs: their content hashes to their name; orphaned when nothing uses them.
    fn verify_blobs(&self, v: &mut Verification) -> Result<(), StoreError> {
        for entry in read_dir_entries(&self.root().join("blobs/sha256"))? {
            let path = entry.path();
            let Some(digest) = Digest::from_hex(&entry_name(&entry)) else {
                v.corrupt(path, "not a blob digest");
                continue;
            };
            match hash_file(&path) {
                Ok(actual) if actual != digest => {
                    v.corrupt(path.clone(), format!("content hashes to {actual}"));
                }
                Ok(_) => {}
                Err(e) => v.corrupt(path.clone(), format!("unreadable: {e}")),
            }
            if !v.used_blobs.contains(&digest) {
                v.orphan(path, "no image, ref, run or container uses this blob");
            }
        }
        Ok(())
    }

    /// tmp/: staging whose writer is gone (by its lock, its pid or its age).
    fn find_tmp_garbage(&self, v: &mut Verification) -> Result<(), StoreError> {
        for entry in read_dir_entries(&self.root().join("tmp"))? {
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).map_err(io_err("inspecting", &path))?;
            let garbage = match classify_tmp(&entry_name(&entry)) {
                TmpOwner::Layer(diff_id) => {
                    let lock_path = self.lock_path("layer", &diff_id);
                    !lock_is_held(&lock_path).map_err(io_err("checking lock", &lock_path))?
                }
                TmpOwner::Process { pid, stale_ok } => {
                    !pid_alive(pid) || (stale_ok && older_than(&meta, STALE_TMP))
                }
                TmpOwner::Unknown => older_than(&meta, STALE_TMP),
            };
            if garbage {
                v.orphan(path, "staging left by a dead writer");
            }
        }
        Ok(())
    }
}

fn hash_file(path: &Path) -> io::Result<Digest> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher)?;
    Ok(Digest::from_sha256(hasher))
}
