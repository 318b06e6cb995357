//! What can go wrong with a job container.

use std::path::PathBuf;

use rootfs_cache::StoreError;

/// Errors of the container commands. The words are docker's where docker has them: a script
/// that greps for `No such container` works with skiff too.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// No container has this id, id prefix or name.
    #[error("No such container: {0}")]
    NotFound(String),
    /// An id prefix matches more than one container.
    #[error("Multiple IDs found with provided prefix: {0}")]
    Ambiguous(String),
    /// `--name` is taken.
    #[error(
        "Conflict. The container name \"/{name}\" is already in use by container \"{id}\". You \
         have to remove (or rename) that container to be able to reuse that name."
    )]
    NameInUse {
        /// The name asked for.
        name: String,
        /// The container that has it.
        id: String,
    },
    /// `--name` has characters docker refuses.
    #[error("Invalid container name ({0}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    InvalidName(String),
    /// `exec`, `kill` or `attach` on a container that does not run.
    #[error("container {0} is not running")]
    NotRunning(String),
    /// `rm` without `-f` on a running container.
    #[error(
        "cannot remove container \"/{0}\": container is running: stop the container before \
         removing or force remove"
    )]
    Running(String),
    /// `--network`, `network rm`: no network has this name or id.
    #[error("network {0} not found")]
    NetworkNotFound(String),
    /// `network create` of a name that exists.
    #[error("network with name {0} already exists")]
    NetworkExists(String),
    /// `network create` of a name docker refuses.
    #[error("invalid network name {0:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    InvalidNetworkName(String),
    /// `network rm` of host or none.
    #[error("{0} is a pre-defined network and cannot be removed")]
    PredefinedNetwork(String),
    /// `network rm` of a network that running containers are in.
    #[error("error while removing network: network {name} id {id} has active endpoints")]
    NetworkInUse {
        /// The network's name.
        name: String,
        /// Its id.
        id: String,
    },
    /// `--network-alias` without a named network.
    #[error("network-scoped alias is supported only for containers in user defined networks")]
    AliasWithoutNetwork,
    /// A network's record is not what skiff wrote.
    #[error("{path} is corrupt ({reason}): remove the file")]
    CorruptNetwork {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A file of the container could not be read or written.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A container file is not what skiff wrote.
    #[error("{path} is corrupt ({reason}): remove the container with `skiff rm -f`")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The monitor of a detached container could not start it.
    #[error("{0}")]
    Start(String),
    /// The monitor is not in this process's path: an embedder must serve it.
    #[error(
        "starting the container monitor {program}: {source} (a program that embeds skiff calls \
         skiff::serve_monitor_if_requested() first in main)"
    )]
    Monitor {
        /// The program re-executed.
        program: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

pub(crate) fn io(
    op: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> ContainerError {
    let path = path.to_owned();
    move |source| ContainerError::Io { op, path, source }
}
