//! Named networks through the [`Engine`]: create, list, remove and prune. They share the host's
//! network (skiff has no bridge): a network is a name its members find each other by.

use std::collections::BTreeMap;

use super::{Engine, EngineError};
use crate::containers::{self, ContainerError, NetworkRecord};

/// One network, as `network ls` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NetworkSummary {
    /// 64 hex digits.
    pub id: String,
    /// Its name.
    pub name: String,
    /// `host` for created networks and the host network, `null` for none.
    pub driver: String,
    /// Created (ns since the epoch; 0 for the predefined ones).
    pub created: i64,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// The names of the containers created in it.
    pub containers: Vec<String>,
}

impl Engine {
    /// Creates the network `name` (labels as `--label`); returns its id.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), skiff::EngineError> {
    /// let engine = skiff::Engine::new(skiff::EngineOptions::default())?;
    /// let id = engine.create_network("job_net", &Default::default())?;
    /// assert_eq!(id.len(), 64);
    /// # Ok(()) }
    /// ```
    pub fn create_network(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<String, EngineError> {
        let _lock = self.containers_lock()?;
        Ok(containers::create_network(&self.root, name, labels.clone())?.id)
    }

    /// Every network: the predefined `host` and `none`, then the created ones.
    pub fn list_networks(&self) -> Result<Vec<NetworkSummary>, EngineError> {
        let store = self.store()?;
        let records: Vec<_> = containers::all(&store)?
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        Ok(containers::all_networks(&self.root)?
            .into_iter()
            .map(|n| NetworkSummary {
                containers: records
                    .iter()
                    .filter(|r| r.networks.contains_key(&n.name))
                    .map(|r| r.name.clone())
                    .collect(),
                id: n.id,
                name: n.name,
                driver: n.driver,
                created: n.created,
                labels: n.labels,
            })
            .collect())
    }

    /// Removes the network `name` (or id); refused while a member runs, as docker refuses a
    /// network with active endpoints. Stopped members lose it.
    pub fn remove_network(&self, name: &str) -> Result<(), EngineError> {
        let _lock = self.containers_lock()?;
        let network = containers::find_network(&self.root, name)?;
        self.remove_network_locked(&network)
    }

    fn remove_network_locked(&self, network: &NetworkRecord) -> Result<(), EngineError> {
        if network.is_predefined() {
            return Err(ContainerError::PredefinedNetwork(network.name.clone()).into());
        }
        let store = self.store()?;
        for (dir, record) in containers::all(&store)? {
            if record.networks.contains_key(&network.name) && super::containers::is_running(&dir) {
                return Err(ContainerError::NetworkInUse {
                    name: network.name.clone(),
                    id: network.id.clone(),
                }
                .into());
            }
        }
        containers::remove_network(&self.root, network)?;
        Ok(())
    }

    /// Removes the created networks that no running container is in and that have every label
    /// of `labels` (`KEY` or `KEY=VALUE`, as `--filter label=`); returns their names.
    pub fn prune_networks(&self, labels: &[String]) -> Result<Vec<String>, EngineError> {
        let _lock = self.containers_lock()?;
        let mut removed = Vec::new();
        for network in containers::all_networks(&self.root)? {
            let matches = labels.iter().all(|l| match l.split_once('=') {
                Some((k, v)) => network.labels.get(k).is_some_and(|have| have == v),
                None => network.labels.contains_key(l),
            });
            if network.is_predefined() || !matches {
                continue;
            }
            match self.remove_network_locked(&network) {
                Ok(()) => removed.push(network.name),
                Err(EngineError::Container(ContainerError::NetworkInUse { .. })) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }

    /// `--add-host` entries (`NAME:127.0.0.1`) for a container that joins the network `name`
    /// without a record of its own (a foreground `run --network NAME`): the members' names
    /// and aliases, plus `aliases` of its own. `host` and `none` have none.
    pub fn network_hosts(
        &self,
        name: &str,
        aliases: &[String],
    ) -> Result<Vec<String>, EngineError> {
        if matches!(name, "host" | "none") {
            if !aliases.is_empty() {
                return Err(ContainerError::AliasWithoutNetwork.into());
            }
            return Ok(Vec::new());
        }
        let network = containers::find_network(&self.root, name)?;
        let store = self.store()?;
        let records: Vec<_> = containers::all(&store)?
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        let me = BTreeMap::from([(network.name, aliases.to_vec())]);
        let mut hosts: Vec<String> = containers::peer_hosts("", &me, &records)
            .into_iter()
            .map(|(n, ip)| format!("{n}:{ip}"))
            .collect();
        hosts.extend(aliases.iter().map(|a| format!("{a}:127.0.0.1")));
        Ok(hosts)
    }
}
