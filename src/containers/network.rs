//! Named networks on host networking: `network create/rm/prune/ls`. skiff has no bridge; a
//! named network is a record (`networks/<name>.json` in the store) and a membership: the
//! containers created with `--network NAME` see each other's names and `--network-alias`es in
//! /etc/hosts, pointing to 127.0.0.1, since they share the host's network.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{ContainerError, io};
use super::record::Record;

/// Networks that exist without being created (docker's predefined ones, as skiff has them).
pub(crate) const PREDEFINED: [(&str, &str); 2] = [("host", "host"), ("none", "null")];

/// A named network.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct NetworkRecord {
    /// 64 hex digits.
    pub id: String,
    /// Its unique name.
    pub name: String,
    /// Created (ns since the epoch).
    pub created: i64,
    /// `--label`s.
    pub labels: BTreeMap<String, String>,
    /// The driver docker would show (`host` for created networks: they share the host's).
    pub driver: String,
}

impl NetworkRecord {
    /// A predefined network's record (a stable id derived from its name).
    fn predefined(name: &str, driver: &str) -> Self {
        use sha2::Digest as _;
        let id = sha2::Sha256::digest(format!("skiff network {name}").as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Self {
            id,
            name: name.to_owned(),
            created: 0,
            labels: BTreeMap::new(),
            driver: driver.to_owned(),
        }
    }

    /// Whether it is one of the predefined networks.
    pub fn is_predefined(&self) -> bool {
        PREDEFINED.iter().any(|(n, _)| *n == self.name)
    }
}

/// The networks' folder in the store root.
fn folder(root: &Path) -> PathBuf {
    root.join("networks")
}

fn file(root: &Path, name: &str) -> PathBuf {
    folder(root).join(format!("{name}.json"))
}

/// Every network: the predefined ones, then the created ones by name.
pub(crate) fn all_networks(root: &Path) -> Result<Vec<NetworkRecord>, ContainerError> {
    let mut out: Vec<NetworkRecord> = PREDEFINED
        .iter()
        .map(|(n, d)| NetworkRecord::predefined(n, d))
        .collect();
    let dir = folder(root);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io("reading", &dir)(e)),
    };
    let mut created = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io("reading", &dir))?;
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(io("reading", &path))?;
        let record: NetworkRecord =
            serde_json::from_slice(&bytes).map_err(|e| ContainerError::CorruptNetwork {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        created.push(record);
    }
    created.sort_by(|a, b| a.name.cmp(&b.name));
    out.extend(created);
    Ok(out)
}

/// The network named `name`, or whose id starts with it (docker takes both).
pub(crate) fn find_network(root: &Path, name: &str) -> Result<NetworkRecord, ContainerError> {
    let all = all_networks(root)?;
    if let Some(n) = all.iter().find(|n| n.name == name || n.id == name) {
        return Ok(n.clone());
    }
    let mut by_prefix = all
        .iter()
        .filter(|n| !name.is_empty() && n.id.starts_with(name));
    match (by_prefix.next(), by_prefix.next()) {
        (Some(n), None) => Ok(n.clone()),
        _ => Err(ContainerError::NetworkNotFound(name.to_owned())),
    }
}

/// Creates the network `name`; the caller holds the containers' lock.
pub(crate) fn create_network(
    root: &Path,
    name: &str,
    labels: BTreeMap<String, String>,
) -> Result<NetworkRecord, ContainerError> {
    if !valid_name(name) {
        return Err(ContainerError::InvalidNetworkName(name.to_owned()));
    }
    if all_networks(root)?.iter().any(|n| n.name == name) {
        return Err(ContainerError::NetworkExists(name.to_owned()));
    }
    let record = NetworkRecord {
        id: super::new_id()?,
        name: name.to_owned(),
        created: super::now_ns(),
        labels,
        driver: "host".into(),
    };
    let dir = folder(root);
    std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
    let path = file(root, name);
    let tmp = dir.join(format!(".{name}.json.tmp"));
    let bytes = serde_json::to_vec_pretty(&record).map_err(|e| ContainerError::CorruptNetwork {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    std::fs::write(&tmp, bytes).map_err(io("writing", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(io("renaming", &tmp))?;
    Ok(record)
}

/// Removes a created network's record; the caller has checked it has no running member.
pub(crate) fn remove_network(root: &Path, network: &NetworkRecord) -> Result<(), ContainerError> {
    if network.is_predefined() {
        return Err(ContainerError::PredefinedNetwork(network.name.clone()));
    }
    let path = file(root, &network.name);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("removing", &path)(e)),
        _ => Ok(()),
    }
}

/// docker's rule for network names: letters, digits, `_`, `.`, `-`, starting with a letter or
/// digit (it is also a file name here).
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() <= 255
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// /etc/hosts lines for a container in `networks`: every other member's name and aliases, at
/// 127.0.0.1 (members share the host's network), as `(name, ip)` pairs for `--add-host`.
pub(crate) fn peer_hosts(
    me: &str,
    networks: &BTreeMap<String, Vec<String>>,
    records: &[Record],
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for record in records {
        for (net, aliases) in &record.networks {
            if !networks.contains_key(net) {
                continue;
            }
            let mut names = Vec::new();
            if record.id != me {
                names.push(record.name.clone());
            }
            names.extend(aliases.iter().cloned());
            for name in names {
                let line = (name, "127.0.0.1".to_owned());
                if !out.contains(&line) {
                    out.push(line);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_docker_takes_them() {
        assert!(valid_name("github_network_0a1b"));
        assert!(valid_name("a.b-c"));
        for bad in ["", "-x", "a/b", "../x", "a b", ".hidden"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn create_find_remove() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let labels = BTreeMap::from([("k".to_owned(), String::new())]);
        let net = create_network(root, "n1", labels).unwrap();
        assert_eq!(net.id.len(), 64);
        assert!(matches!(
            create_network(root, "n1", BTreeMap::new()),
            Err(ContainerError::NetworkExists(_))
        ));
        assert!(matches!(
            create_network(root, "host", BTreeMap::new()),
            Err(ContainerError::NetworkExists(_))
        ));
        assert_eq!(find_network(root, "n1").unwrap().id, net.id);
        assert_eq!(find_network(root, &net.id[..12]).unwrap().name, "n1");
        let names: Vec<_> = all_networks(root)
            .unwrap()
            .into_iter()
            .map(|n| n.name)
            .collect();
        assert_eq!(names, ["host", "none", "n1"]);
        let host = find_network(root, "host").unwrap();
        assert!(matches!(
            remove_network(root, &host),
            Err(ContainerError::PredefinedNetwork(_))
        ));
        remove_network(root, &net).unwrap();
        assert!(matches!(
            find_network(root, "n1"),
            Err(ContainerError::NetworkNotFound(_))
        ));
    }
}
