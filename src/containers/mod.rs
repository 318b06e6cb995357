//! Job containers' bookkeeping in the store: records, state, names and ids, logs, and whether a
//! container's monitor and payload still live. No libcontainer here: launching a detached
//! container and exec into one are in `launch`.
//!
//! A container is `containers/<id>/` in the store (held against gc by rootfs-cache): its record
//! (`config.v2.json`, written once at create), its state (`state.json`, rewritten under the
//! container's lock), its log (`<id>-json.log`, docker's json-file shape) and, while it runs or
//! stopped, its writable layer (`upper/`) and bundle.

mod error;
mod liveness;
mod logs;
mod lookup;
mod network;
mod record;

pub use error::ContainerError;
pub(crate) use liveness::{Liveness, MonitorLock, pid_start, wait_pid_exit};
pub use logs::{LogLine, LogOptions, Stream};
pub(crate) use logs::{LogWriter, read_logs};
pub(crate) use lookup::{all, check_name, generate_name, new_id, resolve};
pub(crate) use network::{
    NetworkRecord, all_networks, create_network, find_network, peer_hosts, remove_network,
};
pub use record::Status;
pub(crate) use record::{ContainerDir, RECORD, Record, State, now_ns};
