//! CSI node registration: are the cluster's CSI drivers registered on this node?
//!
//! A CSIDriver object says a driver exists; the node's CSINode object lists the drivers whose
//! node plugin registered with this node's kubelet. A driver missing from it is the classic
//! cause of volumes stuck attaching or mounting on one node while every other node is fine. Both
//! are watched; only the driver names are kept.

use std::collections::{BTreeMap, BTreeSet};

use futures_util::StreamExt;
use k8s_openapi::api::storage::v1::{CSIDriver, CSINode};
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

use crate::logging::{Health, Transition};
use crate::metrics::WatchErrorReason;

/// The cluster's drivers and this node's registrations, as the watches showed them.
#[derive(Debug, Default)]
pub struct Registrations {
    drivers: BTreeSet<String>,
    drivers_relist: Option<BTreeSet<String>>,
    drivers_synced: bool,
    /// `None` until the node's CSINode is seen (it may not exist yet on a new node).
    registered: Option<BTreeSet<String>>,
    registered_relist: Option<Option<BTreeSet<String>>>,
    node_synced: bool,
}

fn node_drivers(node: &CSINode) -> BTreeSet<String> {
    node.spec.drivers.iter().map(|d| d.name.clone()).collect()
}

impl Registrations {
    pub fn driver_event(&mut self, event: Event<CSIDriver>) {
        match event {
            Event::Apply(driver) => {
                if let Some(name) = driver.metadata.name {
                    self.drivers.insert(name);
                }
            }
            Event::Delete(driver) => {
                if let Some(name) = driver.metadata.name {
                    self.drivers.remove(&name);
                }
            }
            Event::Init => self.drivers_relist = Some(BTreeSet::new()),
            Event::InitApply(driver) => {
                if let (Some(buffer), Some(name)) = (&mut self.drivers_relist, driver.metadata.name)
                {
                    buffer.insert(name);
                }
            }
            Event::InitDone => {
                if let Some(buffer) = self.drivers_relist.take() {
                    self.drivers = buffer;
                }
                self.drivers_synced = true;
            }
        }
    }

    /// Events of the watch on this node's CSINode (a field selector on its name).
    pub fn node_event(&mut self, event: Event<CSINode>) {
        match event {
            Event::Apply(node) => self.registered = Some(node_drivers(&node)),
            Event::Delete(_) => self.registered = None,
            Event::Init => self.registered_relist = Some(None),
            Event::InitApply(node) => self.registered_relist = Some(Some(node_drivers(&node))),
            Event::InitDone => {
                if let Some(buffer) = self.registered_relist.take() {
                    self.registered = buffer;
                }
                self.node_synced = true;
            }
        }
    }

    /// For every driver in the cluster, whether this node has it registered; empty until both
    /// watches have listed once (so that nothing reads as unregistered before it is known).
    pub fn status(&self, ignore: &[String]) -> BTreeMap<String, bool> {
        if !(self.drivers_synced && self.node_synced) {
            return BTreeMap::new();
        }
        self.drivers
            .iter()
            .filter(|d| !ignore.contains(d))
            .map(|d| {
                let registered = self.registered.as_ref().is_some_and(|r| r.contains(d));
                (d.clone(), registered)
            })
            .collect()
    }
}

/// Watches the CSIDrivers and this node's CSINode until the process ends, calling `publish`
/// with the registration status whenever it changes, and `error` with the reason
/// ([`super::watch_error_reason`]) of each failed call.
pub async fn run(
    client: kube::Client,
    node_name: String,
    ignore: Vec<String>,
    mut publish: impl FnMut(&BTreeMap<String, bool>),
    mut error: impl FnMut(WatchErrorReason),
) {
    let drivers = watcher::watcher(
        Api::<CSIDriver>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff();
    let nodes = watcher::watcher(
        Api::<CSINode>::all(client),
        watcher::Config::default().fields(&format!("metadata.name={node_name}")),
    )
    .default_backoff();
    tokio::pin!(drivers);
    tokio::pin!(nodes);
    let mut state = Registrations::default();
    let mut last = BTreeMap::new();
    let health = Health::default();
    loop {
        let failed = tokio::select! {
            Some(event) = drivers.next() => match event {
                Ok(event) => { state.driver_event(event); None }
                Err(e) => Some(("csidrivers", e)),
            },
            Some(event) = nodes.next() => match event {
                Ok(event) => { state.node_event(event); None }
                Err(e) => Some(("csinodes", e)),
            },
            else => break,
        };
        match (health.update(failed.is_none()), &failed) {
            (Transition::StartedFailing { .. }, Some((resource, e))) => super::log_failing(
                resource,
                e,
                "the CSI registration watch keeps the last known state",
            ),
            (Transition::Recovered { .. }, _) => tracing::info!("CSI registration watch recovered"),
            _ => {}
        }
        if let Some((_, e)) = &failed {
            error(super::watch_error_reason(e));
            continue;
        }
        let status = state.status(&ignore);
        if status != last {
            for (driver, registered) in &status {
                if last.get(driver) != Some(registered) {
                    if *registered {
                        tracing::info!(driver, node = %node_name, "CSI driver registered on this node");
                    } else {
                        tracing::warn!(driver, node = %node_name, "CSI driver NOT registered on this node");
                    }
                }
            }
            publish(&status);
            last = status;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn driver(name: &str) -> CSIDriver {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": name }, "spec": {}
        }))
        .unwrap()
    }

    fn csinode(drivers: &[&str]) -> CSINode {
        let drivers: Vec<_> = drivers
            .iter()
            .map(|d| serde_json::json!({ "name": d, "nodeID": "node-a" }))
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "node-a" }, "spec": { "drivers": drivers }
        }))
        .unwrap()
    }

    #[test]
    fn unknown_until_both_watches_listed_then_per_driver() {
        let mut state = Registrations::default();
        state.driver_event(Event::Init);
        state.driver_event(Event::InitApply(driver("ebs.csi.aws.com")));
        state.driver_event(Event::InitApply(driver("efs.csi.aws.com")));
        state.driver_event(Event::InitDone);
        assert!(
            state.status(&[]).is_empty(),
            "the node's CSINode is not known yet"
        );
        state.node_event(Event::Init);
        state.node_event(Event::InitApply(csinode(&["ebs.csi.aws.com"])));
        state.node_event(Event::InitDone);
        let status = state.status(&[]);
        assert!(status["ebs.csi.aws.com"]);
        assert!(!status["efs.csi.aws.com"]);
        assert_eq!(state.status(&["efs.csi.aws.com".into()]).len(), 1);

        state.node_event(Event::Apply(csinode(&[])));
        assert!(!state.status(&[])["ebs.csi.aws.com"]);
        state.driver_event(Event::Delete(driver("efs.csi.aws.com")));
        assert_eq!(state.status(&[]).len(), 1);
    }

    #[test]
    fn a_node_without_csinode_has_nothing_registered() {
        let mut state = Registrations::default();
        state.driver_event(Event::Init);
        state.driver_event(Event::InitApply(driver("d")));
        state.driver_event(Event::InitDone);
        state.node_event(Event::Init);
        state.node_event(Event::InitDone);
        assert!(!state.status(&[])["d"]);
    }
}
