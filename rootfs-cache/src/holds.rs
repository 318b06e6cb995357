//! Run and pull holds, and the detection of dead runs.
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

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::gc::{GcReport, Kept};
use crate::lock::FileLock;
use crate::mounts::mount_points_under;
use crate::records::now;
use crate::scan::{disk_usage, entry_name, read_dir_entries};
use crate::store::{io_err, read_json, remove_tree};
use crate::{Digest, Store, StoreError};

/// Longest accepted run id.
const MAX_RUN_ID: usize = 128;
/// The lock file inside a run directory, held exclusively while the run lives.
pub(crate) const RUN_LOCK: &str = "lock";
/// The record inside a run directory of what the run uses.
pub(crate) const HOLD_FILE: &str = "hold.json";

/// `runs/<id>/hold.json`: what a run keeps alive.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct HoldRecord {
    pub(crate) id: String,
    pub(crate) pid: u32,
    /// The start time of `pid` (clock ticks after boot, /proc/<pid>/stat field 22): tells the
    /// owner from a later process that reuses its pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) pid_start: Option<u64>,
    pub(crate) layers: Vec<Digest>,
    pub(crate) images: Vec<Digest>,
    pub(crate) created_at: u64,
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

/// Refuses to delete a run directory that something is mounted on or under: removing it
/// would delete through the mount (a bind-mounted host directory, say).
/// A mount table that cannot be read is a refusal too.
fn check_no_mounts(dir: &Path) -> Result<(), StoreError> {
    check_unmounted(dir, "removing run directory (unmount first)")
}

/// [`check_no_mounts`] for any directory of the store; `op` names what is refused.
pub(crate) fn check_unmounted(dir: &Path, op: &'static str) -> Result<(), StoreError> {
    let mounts = mount_points_under(dir).map_err(io_err("reading the mount table for", dir))?;
    match mounts.into_iter().next() {
        None => Ok(()),
        Some(mount) => Err(StoreError::Io {
            op,
            path: mount,
            source: io::Error::new(io::ErrorKind::ResourceBusy, "still mounted"),
        }),
    }
}

fn check_run_id(id: &str) -> Result<(), StoreError> {
    check_id("run id", id)
}

/// The rules for run and container ids (they name a directory of the store): 1 to 128 ASCII
/// letters, digits, `_`, `.` and `-`, not starting with `.`.
pub(crate) fn check_id(what: &'static str, id: &str) -> Result<(), StoreError> {
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
            what,
            value: id.to_owned(),
        })
    }
}

impl Store {
    fn gc_lock_path(&self) -> PathBuf {
        self.root().join("locks/gc")
    }

    fn run_dir(&self, id: &str) -> PathBuf {
        self.root().join("runs").join(id)
    }

    pub(crate) fn gc_lock(&self, exclusive: bool) -> Result<FileLock, StoreError> {
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
            pid_start: start_time(std::process::id()),
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

    /// Runs whose lock is still held although the process that registered them is gone: a
    /// child it forked holds the lock file open (a container init that never reached its
    /// payload's exec keeps every descriptor). Whoever sweeps them must end those processes
    /// first; then their lock is free and [`Store::sweep_runs`] removes them.
    pub fn orphaned_runs(&self) -> Vec<PathBuf> {
        let Ok(entries) = read_dir_entries(&self.root().join("runs")) else {
            return Vec::new();
        };
        entries
            .into_iter()
            .map(|e| e.path())
            .filter(|dir| {
                let Ok(Some(hold)) = read_json::<HoldRecord>(&dir.join(HOLD_FILE)) else {
                    return false;
                };
                if owner_alive(&hold) {
                    return false;
                }
                // Held by someone else than the (gone) owner?
                matches!(FileLock::try_exclusive(&dir.join(RUN_LOCK)), Ok(None))
            })
            .collect()
    }

    /// With the gc lock held: sweeps dead runs, returns the holds of live ones.
    pub(crate) fn sweep_runs_locked(
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
}

/// Whether the process that registered `hold` still exists (an old record without a start
/// time counts as alive while its pid does).
pub(crate) fn owner_alive(hold: &HoldRecord) -> bool {
    match (start_time(hold.pid), hold.pid_start) {
        (None, _) => false,
        (Some(now), Some(then)) => now == then,
        (Some(_), None) => true,
    }
}

/// Field 22 of /proc/<pid>/stat: when the process started, in clock ticks after boot.
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_checked() {
        for ok in ["a", "run-1.x_Y", &"a".repeat(128)] {
            assert!(check_run_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".a", "a/b", "..", "a b", &"a".repeat(129), "é"] {
            assert!(check_run_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_owner_is_alive_only_with_its_own_start_time() {
        let me = std::process::id();
        let record = |pid, pid_start| HoldRecord {
            id: "r".into(),
            pid,
            pid_start,
            layers: Vec::new(),
            images: Vec::new(),
            created_at: 0,
        };
        let started = start_time(me).expect("this process has a start time");
        assert!(owner_alive(&record(me, Some(started))));
        assert!(owner_alive(&record(me, None)));
        // The same pid, started at another time: a reused pid.
        assert!(!owner_alive(&record(me, Some(started + 1))));
        // No such process (pids stop well below u32::MAX).
        assert!(!owner_alive(&record(u32::MAX, Some(started))));
    }
}
