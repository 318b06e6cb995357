//! Run holds, garbage collection and verification of the store.
//!
//! A run registers what it uses with [`Store::hold_run`] and keeps an exclusive flock on
//! `runs/<id>/lock` while it lives, so a crashed run is recognised by a lock nobody holds.
//! [`Store::gc`] holds `locks/gc` exclusively for its whole duration; registrations take it
//! shared, so gc never decides what is live while a run is registering.
//!
//! Pulls race with gc unless they are protected: a layer committed a moment ago is unreferenced
//! until its image record is written. A pull that wants to be safe registers a hold (for example
//! `pull-<pid>-<n>`) for the diff_ids and manifest it is about to use *before* it checks what is
//! present, and drops it after the image record is written.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::lock::FileLock;
use crate::records::{ImageRecord, LayerRecord, RefRecord, now};
use crate::store::{io_err, list_digests, read_json, remove_tree};
use crate::{Digest, Store, StoreError};

/// Longest accepted run id.
const MAX_RUN_ID: usize = 128;
/// The lock file inside a run directory, held exclusively while the run lives.
const RUN_LOCK: &str = "lock";
/// The record inside a run directory of what the run uses.
const HOLD_FILE: &str = "hold.json";
/// Age after which a `file.<pid>.*` or unrecognised tmp entry is garbage even if its pid lives
/// (pids are reused).
const STALE_TMP: Duration = Duration::from_secs(3600);

/// `runs/<id>/hold.json`: what a run keeps alive.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct HoldRecord {
    id: String,
    pid: u32,
    layers: Vec<Digest>,
    images: Vec<Digest>,
    created_at: u64,
}

/// A registered run; its layers and images survive gc while it lives, and its directory is
/// removed when it is dropped or released.
#[derive(Debug)]
pub struct RunHold {
    store: Store,
    id: String,
    dir: PathBuf,
    lock: Option<FileLock>,
}

impl RunHold {
    /// The run directory (`runs/<id>/`), where the launcher puts upper/, work/ and the bundle.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The run id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Removes the run directory and releases the hold; refuses to remove a directory that
    /// still has mounts under it (it then stays for a later [`Store::sweep_runs`]).
    pub fn release(mut self) -> Result<(), StoreError> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<(), StoreError> {
        // The lock is released when this returns, whatever happens: a directory that could not
        // be removed becomes a dead run for the next sweep.
        let Some(_lock) = self.lock.take() else {
            return Ok(());
        };
        check_no_mounts(&self.dir)?;
        // Move the whole directory out of runs/ in one step, so a sweep sees the run or nothing.
        let grave = self.store.tmp_path(&format!("deleting-run-{}", self.id));
        fs::rename(&self.dir, &grave).map_err(io_err("moving out run directory", &self.dir))?;
        remove_tree(&grave)
    }
}

impl Drop for RunHold {
    fn drop(&mut self) {
        if let Err(err) = self.teardown() {
            tracing::warn!(run = %self.id, %err, "could not remove the run directory");
        }
    }
}

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

/// A ref file and what it says.
#[derive(Debug)]
struct RefEntry {
    path: PathBuf,
    name: String,
    record: RefRecord,
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

    /// Layers and blobs that images, refs and live runs use.
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

fn add_image(record: &ImageRecord, layers: &mut HashSet<Digest>, blobs: &mut HashSet<Digest>) {
    blobs.insert(record.manifest);
    blobs.insert(record.config);
    layers.extend(record.layers.iter().map(|l| l.diff_id));
}

/// Who owns an entry of tmp/.
#[derive(Debug, PartialEq, Eq)]
enum TmpOwner {
    /// `layer-<hex>.*`: the writer holding `locks/layer-<hex>`.
    Layer(Digest),
    /// `<kind>.<pid>.<nanos>.<seq>`: a process; `stale_ok` when age alone makes it garbage.
    Process { pid: i32, stale_ok: bool },
    /// Anything else: garbage once it is old.
    Unknown,
}

fn classify_tmp(name: &str) -> TmpOwner {
    let layer = name
        .strip_prefix("layer-")
        .and_then(|rest| rest.split_once('.'))
        .and_then(|(hex, _)| Digest::from_hex(hex));
    if let Some(digest) = layer {
        return TmpOwner::Layer(digest);
    }
    let mut parts = name.rsplitn(4, '.');
    let (Some(seq), Some(nanos), Some(pid), Some(kind)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return TmpOwner::Unknown;
    };
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match pid.parse::<i32>() {
        Ok(pid) if pid > 0 && numeric(seq) && numeric(nanos) && !kind.is_empty() => {
            TmpOwner::Process {
                pid,
                stale_ok: !kind.starts_with("deleting-"),
            }
        }
        _ => TmpOwner::Unknown,
    }
}

/// Whether process `pid` exists (EPERM means it exists but is someone else's).
fn pid_alive(pid: i32) -> bool {
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(Errno::ESRCH) => false,
        Err(_) => true,
    }
}

fn older_than(meta: &fs::Metadata, age: Duration) -> bool {
    meta.modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .is_some_and(|d| d > age)
}

/// Whether someone holds a flock on `path`, without creating it (a missing file is not held).
fn lock_is_held(path: &Path) -> io::Result<bool> {
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        // Dropping the lock releases it at once: this only looked.
        Ok(_lock) => Ok(false),
        Err((_, Errno::EWOULDBLOCK)) => Ok(true),
        Err((_, e)) => Err(e.into()),
    }
}

/// Disk usage of a tree (st_blocks * 512), not following symlinks, hard links counted once.
/// Parts that cannot be read (a rootless mode-0 directory) count as nothing.
fn disk_usage(path: &Path) -> u64 {
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack = vec![path.to_owned()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&p) else {
            continue;
        };
        if !meta.is_dir() && meta.nlink() > 1 && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        total += meta.blocks() * 512;
        if meta.is_dir() {
            if let Ok(entries) = fs::read_dir(&p) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        }
    }
    total
}

/// Mount points at or under `dir`, from /proc/self/mountinfo.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(dir) = fs::canonicalize(dir) else {
        return Vec::new();
    };
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|p| p.starts_with(&dir))
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape_mountinfo(s: &str) -> PathBuf {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|oct| bytes[i] == b'\\' && oct.iter().all(|b| (b'0'..=b'7').contains(b)));
        if let Some(oct) = octal {
            out.push(
                oct.iter()
                    .fold(0u8, |acc, b| acc.wrapping_mul(8).wrapping_add(b - b'0')),
            );
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    PathBuf::from(OsString::from_vec(out))
}

/// Refuses to delete a run directory that something is mounted on or under: removing it
/// would delete through the mount (a bind-mounted host directory, say).
fn check_no_mounts(dir: &Path) -> Result<(), StoreError> {
    match mounts_under(dir).into_iter().next() {
        None => Ok(()),
        Some(mount) => Err(StoreError::Io {
            op: "removing run directory (unmount first)",
            path: mount,
            source: io::Error::new(io::ErrorKind::ResourceBusy, "still mounted"),
        }),
    }
}

fn check_run_id(id: &str) -> Result<(), StoreError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_RUN_ID
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidName {
            what: "run id",
            value: id.to_owned(),
        })
    }
}

fn file_size(path: &Path) -> u64 {
    fs::symlink_metadata(path)
        .map(|m| m.blocks() * 512)
        .unwrap_or(0)
}

fn entry_name(entry: &fs::DirEntry) -> String {
    entry.file_name().to_string_lossy().into_owned()
}

fn read_dir_entries(dir: &Path) -> Result<Vec<fs::DirEntry>, StoreError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("listing", dir))? {
        out.push(entry.map_err(io_err("listing", dir))?);
    }
    out.sort_by_key(|e| e.file_name());
    Ok(out)
}

/// Every ref file under `dir`, parsed; a ref that does not parse goes to `bad` (or is an error
/// when `bad` is `None`).
fn walk_refs(
    base: &Path,
    dir: &Path,
    out: &mut Vec<RefEntry>,
    mut bad: Option<&mut Vec<Finding>>,
) -> Result<(), StoreError> {
    for entry in read_dir_entries(dir)? {
        let path = entry.path();
        let is_dir = entry
            .file_type()
            .map_err(io_err("listing", &path))?
            .is_dir();
        if is_dir {
            walk_refs(base, &path, out, bad.as_deref_mut())?;
            continue;
        }
        let record = match (read_json::<RefRecord>(&path), bad.as_deref_mut()) {
            (Ok(Some(record)), _) => record,
            (Ok(None), _) => continue,
            (Err(StoreError::Corrupt { reason, .. }), Some(bad)) => {
                bad.push(Finding {
                    path,
                    reason: format!("ref does not parse: {reason}"),
                });
                continue;
            }
            (Err(err), _) => return Err(err),
        };
        let rel = path.strip_prefix(base).unwrap_or(&path);
        let tag = rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let repo = rel
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push(RefEntry {
            name: format!("{repo}:{tag}"),
            path,
            record,
        });
    }
    Ok(())
}

impl Store {
    fn gc_lock_path(&self) -> PathBuf {
        self.root().join("locks/gc")
    }

    fn run_dir(&self, id: &str) -> PathBuf {
        self.root().join("runs").join(id)
    }

    fn gc_lock(&self, exclusive: bool) -> Result<FileLock, StoreError> {
        let path = self.gc_lock_path();
        let lock = if exclusive {
            FileLock::exclusive(&path)
        } else {
            FileLock::shared(&path)
        };
        lock.map_err(io_err("locking", &path))
    }

    /// Registers a run using these layers (diff_ids) and images (manifest digests): they
    /// survive gc until the returned hold is dropped or the process dies.
    pub fn hold_run(
        &self,
        run_id: &str,
        layers: &[Digest],
        images: &[Digest],
    ) -> Result<RunHold, StoreError> {
        check_run_id(run_id)?;
        // Shared: runs register concurrently, but never while gc decides what is live.
        let _registering = self.gc_lock(false)?;
        let dir = self.run_dir(run_id);
        fs::create_dir(&dir).map_err(io_err("creating run directory", &dir))?;
        let lock_path = dir.join(RUN_LOCK);
        // Blocking: the directory is new and ours; only a verify may look at the lock briefly.
        let lock = match FileLock::exclusive(&lock_path) {
            Ok(lock) => lock,
            Err(e) => {
                let _ = remove_tree(&dir);
                return Err(io_err("locking", &lock_path)(e));
            }
        };
        // From here on, dropping `hold` removes the directory again.
        let hold = RunHold {
            store: self.clone(),
            id: run_id.to_owned(),
            dir,
            lock: Some(lock),
        };
        let record = HoldRecord {
            id: run_id.to_owned(),
            pid: std::process::id(),
            layers: layers.to_vec(),
            images: images.to_vec(),
            created_at: now(),
        };
        let json = serde_json::to_vec_pretty(&record).map_err(|e| StoreError::Corrupt {
            path: hold.dir.join(HOLD_FILE),
            reason: e.to_string(),
        })?;
        self.write_atomic(&hold.dir.join(HOLD_FILE), &json)?;
        Ok(hold)
    }

    /// Removes the directories of runs whose lock nobody holds (crashed runs); returns their ids.
    pub fn sweep_runs(&self) -> Result<Vec<String>, StoreError> {
        let _gc = self.gc_lock(true)?;
        let mut report = GcReport::default();
        self.sweep_runs_locked(false, &mut report)?;
        Ok(report.removed_runs)
    }

    /// With the gc lock held: sweeps dead runs, returns the holds of live ones.
    fn sweep_runs_locked(
        &self,
        dry_run: bool,
        report: &mut GcReport,
    ) -> Result<Vec<HoldRecord>, StoreError> {
        let mut live = Vec::new();
        for entry in read_dir_entries(&self.root().join("runs"))? {
            let dir = entry.path();
            let is_dir = entry.file_type().map_err(io_err("listing", &dir))?.is_dir();
            if !is_dir {
                continue;
            }
            let id = entry_name(&entry);
            let lock_path = dir.join(RUN_LOCK);
            let Some(_lock) =
                FileLock::try_exclusive(&lock_path).map_err(io_err("locking", &lock_path))?
            else {
                let hold_path = dir.join(HOLD_FILE);
                match read_json::<HoldRecord>(&hold_path)? {
                    Some(hold) => live.push(hold),
                    // Released right now: its directory was moved out whole.
                    None if !dir.exists() => {}
                    None => {
                        return Err(StoreError::Corrupt {
                            path: hold_path,
                            reason: "a live run has no hold record".into(),
                        });
                    }
                }
                continue;
            };
            if let Err(err) = check_no_mounts(&dir) {
                report.kept_busy.push(Kept {
                    path: dir,
                    reason: format!("dead run, but {err}"),
                });
                continue;
            }
            let size = disk_usage(&dir);
            if !dry_run {
                tracing::info!(run = %id, "sweeping a crashed run");
                remove_tree(&dir)?;
            }
            report.bytes_freed += size;
            report.removed_runs.push(id);
        }
        Ok(live)
    }

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
    /// An image record, ref or live run's hold.json that does not parse stops gc with
    /// [`StoreError::Corrupt`] rather than guessing what it keeps alive (see [`Store::verify`]).
    pub fn gc(&self, options: &GcOptions) -> Result<GcReport, StoreError> {
        let _gc = self.gc_lock(true)?;
        let dry_run = options.dry_run;
        let mut report = GcReport {
            dry_run,
            ..GcReport::default()
        };
        let holds = self.sweep_runs_locked(dry_run, &mut report)?;
        self.clear_tmp(dry_run, &mut report)?;
        let mut state = self.gc_state()?;
        self.collect_unused(&mut state, &holds, dry_run, &mut report)?;
        if let Some(budget) = options.budget_bytes {
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
                self.evict_image(&mut state, &manifest, dry_run, &mut report)?;
                self.collect_unused(&mut state, &holds, dry_run, &mut report)?;
            }
            report.over_budget = state.size() > budget;
            if report.over_budget {
                for (d, image) in &state.images {
                    if is_held(d, image) {
                        report.kept_busy.push(Kept {
                            path: image.path.clone(),
                            reason: "held by a live run".into(),
                        });
                    }
                }
            }
        }
        report.bytes_after = state.size();
        Ok(report)
    }

    /// Checks every entry of the store and reports what is corrupt or orphaned; changes nothing.
    pub fn verify(&self) -> Result<VerifyReport, StoreError> {
        // Exclusive: no run registers and no gc removes while the store is being looked at.
        let _gc = self.gc_lock(true)?;
        let mut report = VerifyReport::default();
        let mut used_layers = HashSet::new();
        let mut used_blobs = HashSet::new();
        let corrupt = |report: &mut VerifyReport, path: PathBuf, reason: String| {
            report.corrupt.push(Finding { path, reason });
        };
        let orphan = |report: &mut VerifyReport, path: PathBuf, reason: &str| {
            report.orphaned.push(Finding {
                path,
                reason: reason.to_owned(),
            });
        };

        // Image records.
        let mut images = HashSet::new();
        for entry in read_dir_entries(&self.root().join("images/sha256"))? {
            let path = entry.path();
            let name = entry_name(&entry);
            let Some(file_digest) = name.strip_suffix(".json").and_then(Digest::from_hex) else {
                corrupt(&mut report, path, "not an image record name".into());
                continue;
            };
            let record = match read_json::<ImageRecord>(&path) {
                Ok(Some(record)) => record,
                Ok(None) => continue,
                Err(err) => {
                    corrupt(
                        &mut report,
                        path,
                        format!("image record does not parse: {err}"),
                    );
                    continue;
                }
            };
            images.insert(file_digest);
            used_blobs.insert(file_digest);
            add_image(&record, &mut used_layers, &mut used_blobs);
            if record.manifest != file_digest {
                corrupt(
                    &mut report,
                    path.clone(),
                    format!("record is for manifest {}", record.manifest),
                );
            }
            for layer in &record.layers {
                if !self.layer_base(&layer.diff_id).is_dir() {
                    corrupt(
                        &mut report,
                        path.clone(),
                        format!("layer {} is missing", layer.diff_id),
                    );
                }
            }
            if !self.blob_path(&record.config).is_file() {
                corrupt(
                    &mut report,
                    path.clone(),
                    format!("config blob {} is missing", record.config),
                );
            }
        }

        // Refs.
        let refs_dir = self.root().join("refs");
        let mut refs = Vec::new();
        let mut bad = Vec::new();
        walk_refs(&refs_dir, &refs_dir, &mut refs, Some(&mut bad))?;
        report.corrupt.append(&mut bad);
        for r in refs {
            used_blobs.insert(r.record.manifest);
            used_blobs.extend(r.record.index);
            if !images.contains(&r.record.manifest) {
                corrupt(
                    &mut report,
                    r.path,
                    format!("points at missing image {}", r.record.manifest),
                );
            }
        }

        // Runs.
        for entry in read_dir_entries(&self.root().join("runs"))? {
            let dir = entry.path();
            if !entry.file_type().map_err(io_err("listing", &dir))?.is_dir() {
                orphan(&mut report, dir, "not a run directory");
                continue;
            }
            let lock_path = dir.join(RUN_LOCK);
            if !lock_is_held(&lock_path).map_err(io_err("checking lock", &lock_path))? {
                orphan(&mut report, dir, "dead run (nobody holds its lock)");
                continue;
            }
            let hold_path = dir.join(HOLD_FILE);
            match read_json::<HoldRecord>(&hold_path) {
                Ok(Some(hold)) => {
                    used_layers.extend(hold.layers);
                    used_blobs.extend(hold.images);
                }
                Ok(None) if !dir.exists() => {}
                Ok(None) => corrupt(&mut report, hold_path, "live run without hold.json".into()),
                Err(err) => corrupt(&mut report, hold_path, format!("does not parse: {err}")),
            }
        }

        // Layers.
        for entry in read_dir_entries(&self.root().join("layers/sha256"))? {
            let path = entry.path();
            let Some(diff_id) = Digest::from_hex(&entry_name(&entry)) else {
                corrupt(&mut report, path, "not a layer digest".into());
                continue;
            };
            let record_path = path.join("layer.json");
            match read_json::<LayerRecord>(&record_path) {
                Ok(Some(record)) if record.diff_id != diff_id => corrupt(
                    &mut report,
                    path.clone(),
                    format!("layer.json is for {}", record.diff_id),
                ),
                Ok(Some(_)) => {}
                Ok(None) => corrupt(&mut report, path.clone(), "no layer.json".into()),
                Err(err) => corrupt(
                    &mut report,
                    path.clone(),
                    format!("unreadable layer.json: {err}"),
                ),
            }
            if !path.join("fs").is_dir() {
                corrupt(&mut report, path.clone(), "no fs/ directory".into());
            }
            if !used_layers.contains(&diff_id) {
                orphan(&mut report, path, "no image or run uses this layer");
            }
        }

        // Blobs.
        for entry in read_dir_entries(&self.root().join("blobs/sha256"))? {
            let path = entry.path();
            let Some(digest) = Digest::from_hex(&entry_name(&entry)) else {
                corrupt(&mut report, path, "not a blob digest".into());
                continue;
            };
            match hash_file(&path) {
                Ok(actual) if actual != digest => {
                    corrupt(
                        &mut report,
                        path.clone(),
                        format!("content hashes to {actual}"),
                    );
                }
                Ok(_) => {}
                Err(e) => corrupt(&mut report, path.clone(), format!("unreadable: {e}")),
            }
            if !used_blobs.contains(&digest) {
                orphan(&mut report, path, "no image, ref or run uses this blob");
            }
        }

        // tmp/ garbage.
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
                orphan(&mut report, path, "staging left by a dead writer");
            }
        }

        report.corrupt.sort_by(|a, b| a.path.cmp(&b.path));
        report.orphaned.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(report)
    }
}

fn hash_file(path: &Path) -> io::Result<Digest> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher)?;
    Ok(Digest::from_sha256(hasher))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmp_names_are_classified() {
        let hex = "a".repeat(64);
        let d = Digest::from_hex(&hex);
        assert_eq!(
            d.map(TmpOwner::Layer),
            Some(classify_tmp(&format!("layer-{hex}.12.34.5")))
        );
        assert_eq!(
            classify_tmp("file.42.123.7"),
            TmpOwner::Process {
                pid: 42,
                stale_ok: true
            }
        );
        assert_eq!(
            classify_tmp("deleting-run-a.b.9.1.2"),
            TmpOwner::Process {
                pid: 9,
                stale_ok: false
            }
        );
        assert_eq!(classify_tmp("junk"), TmpOwner::Unknown);
        assert_eq!(classify_tmp("file.x.1.2"), TmpOwner::Unknown);
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mountinfo(r"/a\040b\\c"), PathBuf::from(r"/a b\\c"));
    }

    #[test]
    fn run_ids_are_checked() {
        for ok in ["a", "run-1.x_Y", &"a".repeat(128)] {
            assert!(check_run_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".a", "a/b", "..", "a b", &"a".repeat(129), "é"] {
            assert!(check_run_id(bad).is_err(), "{bad}");
        }
    }
}
