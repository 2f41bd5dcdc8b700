//! Pod IPs on this node against its podCIDR: how close the node is to having no address left
//! for a new pod (which then stays in `ContainerCreating` with "failed to allocate for range").
//!
//! Two watches, both narrowed by a field selector to this node: the Node object itself
//! (`metadata.name`) for `spec.podCIDRs`, and the pods scheduled here (`spec.nodeName`), of
//! which only whether each needs a pod-network IP is kept. The pods are watched in every
//! namespace, which RBAC can only grant cluster-wide (list and watch on pods); the field selector
//! keeps what the API server sends to this node's pods, as the kubelet's own watch does.
//!
//! The capacity is what the host-local IPAM (the one most CNI plugins delegate to, and the one
//! that reads the node's podCIDR) hands out of a range by default: every address but the
//! network address, the gateway (the first address) and, for IPv4, the broadcast address: 253
//! in a /24. CNI plugins with their own IPAM (Calico's blocks, the clouds' VPC-native IPs) do not
//! use the podCIDR, and nodes there have none or an unused one: the series then say nothing
//! useful, and `pod_ips.enabled: false` turns them off.

use std::collections::BTreeMap;
use std::net::IpAddr;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

use crate::probe::{Health, Transition};

/// Objects per list page: this node's pods, a few hundred at most.
const LIST_PAGE_SIZE: u32 = 100;

/// Whether a pod holds (or, pending, needs) an address from its node's podCIDR: it is not on
/// the host's network, and not finished (a Succeeded or Failed pod's sandbox is gone and its
/// address released). A pod that is pending counts: it needs an address to start, and on a
/// full node it is the one that cannot get one.
pub fn pod_needs_ip(pod: &Pod) -> bool {
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    let finished = matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    !host_network && !finished
}

/// `ipv4` or `ipv6`, the `family` label.
pub fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "ipv4" } else { "ipv6" }
}

/// The family of a CIDR and how many pod addresses host-local hands out of it by default; `None`
/// for text that is not a CIDR.
pub fn cidr_capacity(cidr: &str) -> Option<(&'static str, u64)> {
    let (addr, prefix) = cidr.trim().split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    let prefix: u32 = prefix.parse().ok()?;
    let (bits, reserved) = match addr {
        // Network, gateway, broadcast.
        IpAddr::V4(_) => (32, 3),
        // Network (the subnet-router anycast address) and gateway; IPv6 has no broadcast.
        IpAddr::V6(_) => (128, 2),
    };
    if prefix > bits {
        return None;
    }
    let host_bits = bits - prefix;
    let size = if host_bits >= 64 {
        u64::MAX
    } else {
        1u64 << host_bits
    };
    Some((family(addr), size.saturating_sub(reserved)))
}

/// A node's podCIDRs: `spec.podCIDRs`, else `spec.podCIDR` (older API servers).
pub fn pod_cidrs(node: &Node) -> Vec<String> {
    let Some(spec) = node.spec.as_ref() else {
        return Vec::new();
    };
    match &spec.pod_cidrs {
        Some(cidrs) if !cidrs.is_empty() => cidrs.clone(),
        _ => spec.pod_cidr.iter().cloned().collect(),
    }
}

/// `(family, capacity)` for each podCIDR of the node that parses; the first CIDR of a family
/// wins (Kubernetes allows at most one per family).
pub fn node_capacity(node: &Node) -> Vec<(&'static str, u64)> {
    let mut out: Vec<(&'static str, u64)> = Vec::new();
    for cidr in pod_cidrs(node) {
        if let Some((family, capacity)) = cidr_capacity(&cidr)
            && !out.iter().any(|(f, _)| *f == family)
        {
            out.push((family, capacity));
        }
    }
    out
}

/// This node and its pods, as the two watches showed them.
#[derive(Debug, Default)]
pub struct NodePods {
    /// `(family, capacity)` per podCIDR; `None` until the node is seen.
    capacity: Option<Vec<(&'static str, u64)>>,
    capacity_relist: Option<Option<Vec<(&'static str, u64)>>>,
    node_synced: bool,
    /// Whether each pod on the node needs a pod IP, by namespace and name (pod names repeat
    /// across namespaces, so the name-keyed [`crate::discovery::store::Store`] does not fit).
    pods: BTreeMap<(String, String), bool>,
    pods_relist: Option<BTreeMap<(String, String), bool>>,
    pods_synced: bool,
}

fn pod_key(pod: &Pod) -> Option<(String, String)> {
    Some((
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone()?,
    ))
}

impl NodePods {
    pub fn node_event(&mut self, event: Event<Node>) {
        match event {
            Event::Apply(node) => self.capacity = Some(node_capacity(&node)),
            Event::Delete(_) => self.capacity = None,
            Event::Init => self.capacity_relist = Some(None),
            Event::InitApply(node) => self.capacity_relist = Some(Some(node_capacity(&node))),
            Event::InitDone => {
                if let Some(buffer) = self.capacity_relist.take() {
                    self.capacity = buffer;
                }
                self.node_synced = true;
            }
        }
    }

    pub fn pod_event(&mut self, event: Event<Pod>) {
        match event {
            Event::Apply(pod) => {
                if let Some(key) = pod_key(&pod) {
                    self.pods.insert(key, pod_needs_ip(&pod));
                }
            }
            Event::Delete(pod) => {
                if let Some(key) = pod_key(&pod) {
                    self.pods.remove(&key);
                }
            }
            Event::Init => self.pods_relist = Some(BTreeMap::new()),
            Event::InitApply(pod) => {
                if let (Some(buffer), Some(key)) = (&mut self.pods_relist, pod_key(&pod)) {
                    buffer.insert(key, pod_needs_ip(&pod));
                }
            }
            Event::InitDone => {
                if let Some(buffer) = self.pods_relist.take() {
                    self.pods = buffer;
                }
                self.pods_synced = true;
            }
        }
    }

    /// `(family, in use, capacity)` per podCIDR of the node; empty until both watches have
    /// listed once, and for a node without a podCIDR.
    pub fn status(&self) -> Vec<(&'static str, u64, u64)> {
        if !(self.node_synced && self.pods_synced) {
            return Vec::new();
        }
        let in_use = self.pods.values().filter(|needs| **needs).count() as u64;
        self.capacity
            .iter()
            .flatten()
            .map(|(family, capacity)| (*family, in_use, *capacity))
            .collect()
    }
}

/// Watches this node and the pods on it until the process ends, calling `publish` with
/// [`NodePods::status`] whenever it changes and `error` with the reason
/// ([`super::error_reason`]) of each failed call (the log says which watch). The last status
/// stays published while the calls fail.
pub async fn run(
    client: kube::Client,
    node_name: String,
    mut publish: impl FnMut(&[(&'static str, u64, u64)]),
    mut error: impl FnMut(&'static str),
) {
    let nodes = watcher::watcher(
        Api::<Node>::all(client.clone()),
        watcher::Config::default().fields(&format!("metadata.name={node_name}")),
    )
    .default_backoff();
    let pods = watcher::watcher(
        Api::<Pod>::all(client),
        watcher::Config::default()
            .fields(&format!("spec.nodeName={node_name}"))
            .page_size(LIST_PAGE_SIZE),
    )
    .default_backoff();
    tokio::pin!(nodes);
    tokio::pin!(pods);
    let mut state = NodePods::default();
    let mut last: Option<Vec<(&'static str, u64, u64)>> = None;
    let (node_health, pods_health) = (Health::default(), Health::default());
    loop {
        tokio::select! {
            Some(event) = nodes.next() => match event {
                Ok(event) => {
                    recovered(&node_health, "node");
                    state.node_event(event);
                }
                Err(e) => {
                    error(super::error_reason(&e));
                    failing(&node_health, &format!("node {node_name}"), &e);
                }
            },
            Some(event) = pods.next() => match event {
                Ok(event) => {
                    recovered(&pods_health, "pods");
                    state.pod_event(event);
                }
                Err(e) => {
                    error(super::error_reason(&e));
                    failing(&pods_health, &format!("pods on node {node_name}"), &e);
                }
            },
            else => break,
        }
        let status = state.status();
        if (state.node_synced && state.pods_synced) && last.as_ref() != Some(&status) {
            publish(&status);
            last = Some(status);
        }
    }
}

fn recovered(health: &Health, source: &str) {
    if matches!(health.update(true), Transition::Recovered { .. }) {
        tracing::info!(source, "pod IP capacity watch recovered");
    }
}

fn failing(health: &Health, resource: &str, e: &watcher::Error) {
    if matches!(health.update(false), Transition::StartedFailing { .. }) {
        super::log_failing(
            resource,
            e,
            "the pod IP gauges keep their last values and the watch retries with backoff",
        );
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{NodeSpec, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn pod(name: &str, host_network: bool, phase: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                host_network: Some(host_network),
                node_name: Some("node-a".into()),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: phase.map(str::to_owned),
                ..PodStatus::default()
            }),
        }
    }

    fn node(cidr: Option<&str>, cidrs: &[&str]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("node-a".into()),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: cidr.map(str::to_owned),
                pod_cidrs: (!cidrs.is_empty())
                    .then(|| cidrs.iter().map(|c| c.to_string()).collect()),
                ..NodeSpec::default()
            }),
            status: None,
        }
    }

    #[test]
    fn host_local_hands_out_the_range_less_network_gateway_and_broadcast() {
        assert_eq!(cidr_capacity("10.244.1.0/24"), Some(("ipv4", 253)));
        assert_eq!(cidr_capacity("10.244.1.0/26"), Some(("ipv4", 61)));
        assert_eq!(cidr_capacity("10.244.0.0/16"), Some(("ipv4", 65533)));
        assert_eq!(cidr_capacity("10.244.1.0/30"), Some(("ipv4", 1)));
        assert_eq!(cidr_capacity("10.244.1.1/32"), Some(("ipv4", 0)));
        assert_eq!(cidr_capacity("fd00:10:244:1::/120"), Some(("ipv6", 254)));
        assert_eq!(
            cidr_capacity("fd00:10:244:1::/64"),
            Some(("ipv6", u64::MAX - 2))
        );
        assert_eq!(cidr_capacity("fd00::/48"), Some(("ipv6", u64::MAX - 2)));
        for bad in ["10.244.1.0", "10.244.1.0/33", "fd00::/129", "x/24", ""] {
            assert_eq!(cidr_capacity(bad), None, "{bad}");
        }
    }

    #[test]
    fn pod_cidrs_win_over_the_single_pod_cidr_and_one_per_family_counts() {
        let dual = node(
            Some("10.244.1.0/24"),
            &["10.244.1.0/24", "fd00:10:244:1::/120"],
        );
        assert_eq!(node_capacity(&dual), vec![("ipv4", 253), ("ipv6", 254)]);
        let old = node(Some("10.244.2.0/25"), &[]);
        assert_eq!(node_capacity(&old), vec![("ipv4", 125)]);
        assert!(node_capacity(&node(None, &[])).is_empty());
    }

    #[test]
    fn only_pods_on_the_pod_network_that_are_not_finished_need_an_ip() {
        assert!(pod_needs_ip(&pod("web", false, Some("Running"))));
        assert!(pod_needs_ip(&pod("starting", false, Some("Pending"))));
        assert!(pod_needs_ip(&pod("unknown", false, None)));
        assert!(!pod_needs_ip(&pod("kube-proxy", true, Some("Running"))));
        assert!(!pod_needs_ip(&pod("job", false, Some("Succeeded"))));
        assert!(!pod_needs_ip(&pod("crashed", false, Some("Failed"))));
    }

    #[test]
    fn status_waits_for_both_lists_then_counts_and_follows_deletions() {
        let mut state = NodePods::default();
        state.node_event(Event::Init);
        state.node_event(Event::InitApply(node(None, &["10.244.1.0/28"])));
        state.node_event(Event::InitDone);
        assert!(state.status().is_empty(), "pods not listed yet");
        state.pod_event(Event::Init);
        for (name, host, phase) in [
            ("a", false, "Running"),
            ("b", false, "Pending"),
            ("c", true, "Running"),
            ("d", false, "Succeeded"),
        ] {
            state.pod_event(Event::InitApply(pod(name, host, Some(phase))));
        }
        state.pod_event(Event::InitDone);
        assert_eq!(state.status(), vec![("ipv4", 2, 13)]);
        state.pod_event(Event::Apply(pod("b", false, Some("Failed"))));
        state.pod_event(Event::Apply(pod("e", false, Some("Running"))));
        state.pod_event(Event::Delete(pod("a", false, Some("Running"))));
        assert_eq!(state.status(), vec![("ipv4", 1, 13)]);
        // The same name in another namespace is another pod.
        let mut other = pod("e", false, Some("Running"));
        other.metadata.namespace = Some("shop".into());
        state.pod_event(Event::Apply(other.clone()));
        assert_eq!(state.status(), vec![("ipv4", 2, 13)]);
        state.pod_event(Event::Delete(other));
        assert_eq!(state.status(), vec![("ipv4", 1, 13)]);
        // The node loses its podCIDR (or is deleted): nothing to count against.
        state.node_event(Event::Delete(node(None, &[])));
        assert!(state.status().is_empty());
    }
}
