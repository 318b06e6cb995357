//! A container's record (what it was created with) and state (how it runs), as files in its
//! directory, written atomically.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rootfs_cache::Digest;
use serde::{Deserialize, Serialize};

use super::error::{ContainerError, io};
use crate::launch::RunOptions;

/// The record file (docker's name for it).
pub(crate) const RECORD: &str = "config.v2.json";
/// The state file.
const STATE: &str = "state.json";
/// Held for a state change (read, modify, write).
const LOCK: &str = "lock";

/// What a container was created with; written once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    /// 64 hex digits.
    pub id: String,
    /// Unique name (without docker's leading `/`).
    pub name: String,
    /// When it was created (nanoseconds since the epoch).
    pub created: i64,
    /// The image as the user named it.
    pub image: String,
    /// The image's config digest (docker's image id).
    pub image_id: Digest,
    /// The image's manifest digest.
    pub manifest: Digest,
    /// The layers' diff_ids, lowest first.
    pub layers: Vec<Digest>,
    /// `--label`s.
    pub labels: BTreeMap<String, String>,
    /// The run options (command, env, mounts, limits...).
    pub options: RunOptions,
    /// `--rm`: removed once it exits.
    pub auto_remove: bool,
    /// The resolved command: path and arguments (docker's Path and Args).
    pub argv: Vec<String>,
    /// The resolved environment (docker's Config.Env).
    pub env: Vec<String>,
    /// The working directory (docker's Config.WorkingDir; empty: the image's or /).
    pub working_dir: String,
    /// The image's Entrypoint and Cmd as the container uses them (for inspect).
    pub entrypoint: Vec<String>,
    /// The command part.
    pub cmd: Vec<String>,
    /// `--network` names (beyond host/none) the container belongs to, with its aliases.
    #[serde(default)]
    pub networks: BTreeMap<String, Vec<String>>,
}

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Created, never started.
    #[default]
    Created,
    /// Its payload runs.
    Running,
    /// It ran and stopped.
    Exited,
    /// Being removed.
    Removing,
}

impl Status {
    /// docker's word (`.State.Status`, `ps --filter status=`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Running => "running",
            Self::Exited => "exited",
            Self::Removing => "removing",
        }
    }
}

/// How a container runs; rewritten on each change.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct State {
    /// The recorded status (readers check it against the processes: see `Liveness`).
    pub status: Status,
    /// The payload's (container init's) pid in the host's pid namespace, while it runs.
    pub pid: i32,
    /// Its start time in clock ticks (guards against pid reuse).
    pub pid_start: u64,
    /// The monitor's pid.
    pub monitor_pid: i32,
    /// When it last started (ns since the epoch; 0 never).
    pub started_at: i64,
    /// When it last stopped (ns since the epoch; 0 never).
    pub finished_at: i64,
    /// The last exit code.
    pub exit_code: i32,
    /// Why the last start failed, or how the payload was lost.
    pub error: String,
    /// Killed for running out of memory.
    pub oom_killed: bool,
    /// The monitor mounted cgroup2 over /sys/fs/cgroup for libcontainer's v2 manager (an exec
    /// must do the same to join the container's cgroup).
    pub unified_cgroup: bool,
    /// How often it was started.
    pub restart_count: u32,
}

/// A container's directory in the store.
#[derive(Debug, Clone)]
pub(crate) struct ContainerDir {
    path: PathBuf,
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ContainerError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io("writing", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("renaming into place", path))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ContainerError> {
    let bytes = std::fs::read(path).map_err(io("reading", path))?;
    serde_json::from_slice(&bytes).map_err(|e| ContainerError::Corrupt {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

impl ContainerDir {
    /// The directory `path` (`containers/<id>`).
    pub(crate) fn new(path: PathBuf) -> Self {
        Self { path }
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Whether it still exists (a `--rm` container goes away on its own).
    pub(crate) fn exists(&self) -> bool {
        self.path.join(RECORD).exists()
    }

    /// The record.
    pub(crate) fn record(&self) -> Result<Record, ContainerError> {
        read_json(&self.path.join(RECORD))
    }

    /// Writes the record (at create).
    pub(crate) fn write_record(&self, record: &Record) -> Result<(), ContainerError> {
        let json = serde_json::to_vec_pretty(record).map_err(|e| ContainerError::Corrupt {
            path: self.path.join(RECORD),
            reason: e.to_string(),
        })?;
        write_atomic(&self.path.join(RECORD), &json)
    }

    /// The state (Created when none was written yet).
    pub(crate) fn state(&self) -> Result<State, ContainerError> {
        let path = self.path.join(STATE);
        if !path.exists() {
            return Ok(State::default());
        }
        read_json(&path)
    }

    /// Changes the state under the container's lock.
    pub(crate) fn update<R>(
        &self,
        change: impl FnOnce(&mut State) -> R,
    ) -> Result<R, ContainerError> {
        let lock_path = self.path.join(LOCK);
        let _lock = rootfs_cache::lock::FileLock::exclusive(&lock_path)
            .map_err(io("locking", &lock_path))?;
        let mut state = self.state()?;
        let out = change(&mut state);
        let json = serde_json::to_vec_pretty(&state).map_err(|e| ContainerError::Corrupt {
            path: self.path.join(STATE),
            reason: e.to_string(),
        })?;
        write_atomic(&self.path.join(STATE), &json)?;
        Ok(out)
    }

    /// The log file (docker's json-file name).
    pub(crate) fn log_path(&self, id: &str) -> PathBuf {
        self.path.join(format!("{id}-json.log"))
    }
}

/// Now, in nanoseconds since the epoch.
pub(crate) fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
}
