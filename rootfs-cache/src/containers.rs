//! Persistent container directories: `containers/<id>/`, for containers that outlive the
//! process that created them (docker-style create, start, stop, rm).
//!
//! A container holds its layers and images against gc the way a live run does (a
//! `hold.json` of the same shape), but without a lock held by a live process: the hold lasts
//! until [`Store::remove_container_dir`]. gc never removes a container directory.
//!
//! A container exists when its directory has a `hold.json`. Creation takes `locks/gc` shared
//! and writes `hold.json` atomically, so gc (which holds that lock exclusively) never sees a
//! container whose hold is not yet on disk. Removal moves the directory into tmp/ in one
//! rename before deleting it, so a reader sees the whole container or nothing.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::holds::{HOLD_FILE, HoldRecord, check_id, check_unmounted};
use crate::records::now;
use crate::store::{io_err, read_json, remove_tree};
use crate::{Digest, Store, StoreError};

/// The store's directory of containers, relative to its root.
pub(crate) const CONTAINERS: &str = "containers";

/// The entries of `dir`, sorted by name; none when `dir` does not exist.
fn entries_if_any(dir: &Path) -> Result<Vec<fs::DirEntry>, StoreError> {
    let listing = match fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("listing", dir)(e)),
    };
    let mut out = Vec::new();
    for entry in listing {
        out.push(entry.map_err(io_err("listing", dir))?);
    }
    out.sort_by_key(|e| e.file_name());
    Ok(out)
}

/// One entry of `containers/`, as gc and verify see it.
#[derive(Debug)]
pub(crate) enum ContainerEntry {
    /// A directory with a hold record (not yet parsed: gc and verify treat a bad one
    /// differently).
    Container { dir: PathBuf, hold: PathBuf },
    /// A directory without `hold.json`: a creation that did not finish.
    NoHold(PathBuf),
    /// Not a directory (or a name that cannot be a container id).
    Other(PathBuf),
}

impl Store {
    fn containers_root(&self) -> PathBuf {
        self.root().join(CONTAINERS)
    }

    /// Every entry of `containers/` (none when it does not exist yet), sorted by name.
    pub(crate) fn container_entries(&self) -> Result<Vec<ContainerEntry>, StoreError> {
        let mut out = Vec::new();
        for entry in entries_if_any(&self.containers_root())? {
            let path = entry.path();
            let is_dir = entry
                .file_type()
                .map_err(io_err("listing", &path))?
                .is_dir();
            let named_like_an_id = entry
                .file_name()
                .to_str()
                .is_some_and(|name| check_id("container id", name).is_ok());
            if !is_dir || !named_like_an_id {
                out.push(ContainerEntry::Other(path));
                continue;
            }
            let hold = path.join(HOLD_FILE);
            match fs::symlink_metadata(&hold) {
                Ok(meta) if meta.is_file() => {
                    out.push(ContainerEntry::Container { dir: path, hold })
                }
                Ok(_) => out.push(ContainerEntry::NoHold(path)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    out.push(ContainerEntry::NoHold(path));
                }
                Err(e) => return Err(io_err("inspecting", &hold)(e)),
            }
        }
        Ok(out)
    }

    /// The holds of every container, for gc (which holds the gc lock). A hold record that
    /// does not parse is [`StoreError::Corrupt`]: gc stops rather than guess what it keeps.
    pub(crate) fn container_holds(&self) -> Result<Vec<HoldRecord>, StoreError> {
        let mut holds = Vec::new();
        for entry in self.container_entries()? {
            if let ContainerEntry::Container { hold, .. } = entry {
                // None: removed right now (its directory was moved out whole).
                if let Some(record) = read_json::<HoldRecord>(&hold)? {
                    holds.push(record);
                }
            }
        }
        Ok(holds)
    }

    /// Creates the persistent directory of container `id` (`containers/<id>/`), holding these
    /// layers (diff_ids) and images (manifest digests) against gc until
    /// [`Store::remove_container_dir`], whether or not any process runs.
    ///
    /// The id follows the rules of run ids (1 to 128 of `[A-Za-z0-9_.-]`, not starting with
    /// `.`; [`StoreError::InvalidName`] otherwise). A directory that already exists is an
    /// error ([`StoreError::Io`] with `AlreadyExists`) and is left as it is. The hold record
    /// (`hold.json`: id, creating pid, layers, images, created_at) is written atomically
    /// while `locks/gc` is held shared, so gc never sees a half-made container. Returns the
    /// directory; a failure leaves nothing behind.
    pub fn create_container_dir(
        &self,
        id: &str,
        layers: &[Digest],
        images: &[Digest],
    ) -> Result<PathBuf, StoreError> {
        check_id("container id", id)?;
        // Shared: containers and runs register concurrently, never while gc decides.
        let _registering = self.gc_lock(false)?;
        let parent = self.containers_root();
        fs::create_dir_all(&parent).map_err(io_err("creating", &parent))?;
        let dir = self.container_dir(id);
        fs::create_dir(&dir).map_err(io_err("creating container directory", &dir))?;
        // From here on the directory is ours: a failure removes it again.
        let record = HoldRecord {
            id: id.to_owned(),
            pid: std::process::id(),
            // Who created it: a creation whose creator died before the caller's record was
            // written is abandoned (see `abandoned_containers`).
            pid_start: crate::holds::start_time(std::process::id()),
            layers: layers.to_vec(),
            images: images.to_vec(),
            created_at: now(),
        };
        let hold = dir.join(HOLD_FILE);
        let written = serde_json::to_vec_pretty(&record)
            .map_err(|e| StoreError::Corrupt {
                path: hold.clone(),
                reason: e.to_string(),
            })
            .and_then(|json| self.write_atomic(&hold, &json));
        match written {
            Ok(()) => Ok(dir),
            Err(err) => {
                if let Err(cleanup) = remove_tree(&dir) {
                    tracing::warn!(
                        container = %id,
                        %cleanup,
                        "could not remove a half-made container directory"
                    );
                }
                Err(err)
            }
        }
    }

    /// The directory of container `id` (`containers/<id>/`), whether or not it exists. The
    /// id is not checked: use it with ids [`Store::container_ids`] returned or that
    /// [`Store::create_container_dir`] accepted.
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.containers_root().join(id)
    }

    /// The ids of the containers in the store, sorted: the directories of `containers/` that
    /// have a `hold.json`. Anything else there is ignored; no `containers/` means none.
    pub fn container_ids(&self) -> Result<Vec<String>, StoreError> {
        Ok(self
            .container_entries()?
            .into_iter()
            .filter_map(|entry| match entry {
                ContainerEntry::Container { dir, .. } => dir
                    .file_name()
                    .and_then(|name| name.to_str())
                    .map(str::to_owned),
                ContainerEntry::NoHold(_) | ContainerEntry::Other(_) => None,
            })
            .collect())
    }

    /// Containers whose creation never finished, by id: a directory without `hold.json` made
    /// more than a minute ago (its creator was killed between the mkdir and the hold), or one
    /// with a hold but without `record` (the file the caller writes next) whose creating
    /// process is gone. Remove them with [`Store::remove_container_dir`].
    pub fn abandoned_containers(&self, record: &str) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for entry in self.container_entries()? {
            let (dir, abandoned) = match entry {
                ContainerEntry::NoHold(dir) => {
                    let old = fs::symlink_metadata(&dir)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age.as_secs() > 60);
                    (dir, old)
                }
                ContainerEntry::Container { dir, hold } => {
                    let abandoned = !dir.join(record).exists()
                        && read_json::<HoldRecord>(&hold)?
                            .is_some_and(|h| !crate::holds::owner_alive(&h));
                    (dir, abandoned)
                }
                ContainerEntry::Other(_) => continue,
            };
            if abandoned && let Some(id) = dir.file_name().and_then(|n| n.to_str()) {
                out.push(id.to_owned());
            }
        }
        Ok(out)
    }

    /// Removes container `id`'s directory and with it its hold (its layers and images go at a
    /// later gc if nothing else uses them). A container that does not exist is `Ok`.
    ///
    /// Refuses ([`StoreError::Io`] with `ResourceBusy`, naming the mount point) while anything
    /// is mounted on or under the directory, since removing would delete through the mount; a
    /// mount table that cannot be read is a refusal too. Otherwise the directory is moved
    /// into tmp/ in one rename (a reader sees the container or nothing) and removed there.
    pub fn remove_container_dir(&self, id: &str) -> Result<(), StoreError> {
        check_id("container id", id)?;
        let dir = self.container_dir(id);
        let meta = match fs::symlink_metadata(&dir) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("inspecting", &dir)(e)),
        };
        // Only a real directory can have mounts under it (a symlink would be followed).
        if meta.is_dir() {
            check_unmounted(&dir, "removing container directory (unmount first)")?;
        }
        let grave = self.tmp_path(&format!("deleting-container-{id}"));
        match fs::rename(&dir, &grave) {
            Ok(()) => remove_tree(&grave),
            // Removed meanwhile by someone else.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("moving out container directory", &dir)(e)),
        }
    }
}
