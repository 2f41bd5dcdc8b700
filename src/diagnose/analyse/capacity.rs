//! Capacity: what runs out before something breaks. Pod IPs per node against its podCIDR,
//! CoreDNS replicas against the cluster's size, and the space of the probed volumes.

use k8s_openapi::api::core::v1::Node;

use crate::discovery::node_pods::{cidr_capacity, pod_cidrs};

use super::*;

/// Share of a node's pod addresses in use from which `network.pod-ips-exhausted` warns; at all
/// of them it is critical. The NetworkPodIPsExhausted alert warns from the same share.
pub const POD_IPS_WARNING_RATIO: f64 = 0.9;

/// The replica ratio of cluster-proportional-autoscaler's linear mode as the Kubernetes DNS
/// add-on ships it (`kube-dns-autoscaler`): one replica per 16 nodes or per 256 cores, whichever
/// asks for more, and at least 2 once there is more than one node (`preventSinglePointFailure`).
pub const NODES_PER_REPLICA: u64 = 16;
pub const CORES_PER_REPLICA: u64 = 256;

/// Share of a volume's space (or inodes) free below which `storage.volume-nearly-full` warns:
/// the StorageVolumeFillingUp alert's critical level (which also needs a trend, that one scrape
/// cannot show).
pub const VOLUME_FREE_RATIO: f64 = 0.2;

/// CoreDNS replicas the ratio asks for, for `nodes` nodes with `cores` CPU cores in all.
pub fn coredns_replicas_wanted(nodes: u64, cores: u64) -> u64 {
    let linear = nodes
        .div_ceil(NODES_PER_REPLICA)
        .max(cores.div_ceil(CORES_PER_REPLICA));
    if nodes > 1 { linear.max(2) } else { linear }
}

/// A node's CPU capacity in whole cores, rounded up (`status.capacity.cpu`: `4`, `3500m`).
fn node_cores(node: &Node) -> u64 {
    let Some(q) = node
        .status
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("cpu"))
    else {
        return 0;
    };
    let text = q.0.trim();
    match text.strip_suffix('m') {
        Some(milli) => milli.parse::<u64>().map_or(0, |m| m.div_ceil(1000)),
        None => text.parse::<f64>().map_or(0, |c| c.max(0.0).ceil() as u64),
    }
}

/// Nodes whose pods that need an IP take (nearly) every address host-local can give out of
/// their podCIDR.
pub fn pod_ip_capacity(s: &Snapshot) -> Vec<Finding> {
    let (Some(nodes), Some(counts)) = (&s.nodes, &s.pods_needing_ip) else {
        return Vec::new();
    };
    let mut full = Vec::new();
    let mut nearly = Vec::new();
    for node in nodes {
        let n = name(&node.metadata);
        let in_use = counts.get(&n).copied().unwrap_or(0);
        // The family with the fewest addresses is the one that runs out first.
        let tightest = pod_cidrs(node)
            .into_iter()
            .filter_map(|cidr| cidr_capacity(&cidr).map(|(_, capacity)| (cidr, capacity)))
            .min_by_key(|(_, capacity)| *capacity);
        let Some((cidr, capacity)) = tightest else {
            continue;
        };
        let line = format!(
            "node {n}: {in_use} pods need a pod IP, podCIDR {cidr} gives {capacity} ({:.0} %)",
            100.0 * in_use as f64 / capacity.max(1) as f64
        );
        if in_use >= capacity {
            full.push((n, line));
        } else if in_use as f64 >= POD_IPS_WARNING_RATIO * capacity as f64 {
            nearly.push((n, line));
        }
    }
    let mut out = Vec::new();
    for (severity, nodes, what) in [
        (Severity::Critical, full, "no pod IP left"),
        (Severity::Warning, nearly, "nearly out of pod IPs"),
    ] {
        if nodes.is_empty() {
            continue;
        }
        let names: Vec<String> = nodes.iter().map(|(n, _)| n.clone()).collect();
        out.push(
            Finding::new(
                "network.pod-ips-exhausted",
                severity,
                format!(
                    "{} {what}: {}",
                    plural(names.len(), "node", "nodes"),
                    list_some(&names, 5)
                ),
            )
            .evidence(nodes.into_iter().map(|(_, line)| line))
            .cause(
                "The CNI's host-local IPAM gives each pod on a node an address of the node's \
                 podCIDR (less the network, gateway and broadcast addresses). When they are all \
                 taken, a new pod there stays in ContainerCreating with \"failed to allocate for \
                 range 0: no IP addresses available in range set\"; addresses leaked by pods \
                 killed without a CNI DEL (a crashed runtime, a node reboot) make it come sooner.",
            )
            .next(format!(
                "Keep the kubelet's --max-pods on {} below the podCIDR's size, or give nodes \
                 larger podCIDRs (kube-controller-manager --node-cidr-mask-size); for leaks, \
                 compare the reservations in /var/lib/cni/networks/<network>/ on the node with \
                 its running pods.",
                names[0]
            )),
        );
    }
    out
}

/// Fewer CoreDNS replicas than the common ratio asks for the cluster's nodes and cores.
pub fn coredns_capacity(s: &Snapshot) -> Vec<Finding> {
    let (Some(nodes), Some(pods)) = (&s.nodes, &s.coredns_pods) else {
        return Vec::new();
    };
    // Replicas that exist: readiness is dns.coredns-not-ready's, and none at all is
    // dns.coredns-missing's.
    let replicas: Vec<&Pod> = pods
        .iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Failed" | "Succeeded")
                )
        })
        .collect();
    if replicas.is_empty() {
        return Vec::new();
    }
    let node_count = nodes.len() as u64;
    let cores: u64 = nodes.iter().map(node_cores).sum();
    let wanted = coredns_replicas_wanted(node_count, cores);
    let have = replicas.len() as u64;
    if have >= wanted {
        return Vec::new();
    }
    let ready = replicas.iter().filter(|p| pod_ready(p)).count();
    vec![
        Finding::new(
            "dns.coredns-underprovisioned",
            Severity::Warning,
            format!(
                "{have} CoreDNS {} for {node_count} nodes: the common ratio asks for {wanted}",
                if have == 1 { "replica" } else { "replicas" }
            ),
        )
        .evidence([
            format!(
                "{have} CoreDNS pods in {DNS_NAMESPACE} (label k8s-app=kube-dns), {ready} Ready"
            ),
            format!("{node_count} nodes with {cores} CPU cores in all"),
            format!(
                "wanted: max(ceil({node_count} / {NODES_PER_REPLICA}), ceil({cores} / \
                 {CORES_PER_REPLICA})){} = {wanted} (cluster-proportional-autoscaler's linear \
                 defaults for the DNS add-on)",
                if node_count > 1 {
                    ", at least 2 with more than one node"
                } else {
                    ""
                }
            ),
        ])
        .cause(
            "Every pod's lookups go to these replicas, and the load grows with the nodes and \
             what runs on them. Too few replicas run hot: lookups queue, answers slow down and \
             time out under bursts (a rollout, a node failure that reschedules many pods), and \
             with a single replica its restart or its node's failure takes DNS away from the \
             whole cluster.",
        )
        .next(format!(
            "Scale CoreDNS to at least {wanted} (`kubectl -n {DNS_NAMESPACE} scale deployment \
             coredns --replicas={wanted}`), or run the DNS autoscaler (cluster-proportional-\
             autoscaler, linear: nodesPerReplica {NODES_PER_REPLICA}, coresPerReplica \
             {CORES_PER_REPLICA}, preventSinglePointFailure) so it follows the cluster; \
             NodeLocal DNSCache takes most of the load off them."
        )),
    ]
}

/// Probed volumes with less than [`VOLUME_FREE_RATIO`] of their space or inodes free, from the
/// kube-netprobe pods' own statfs.
pub fn volume_space(s: &Snapshot) -> Vec<Finding> {
    let mut lines = Vec::new();
    let mut where_ = Vec::new();
    for (node, samples) in readable_scrapes(s) {
        let value = |name: &str, volume: &str| {
            samples
                .iter()
                .find(|x| x.name == name && x.label("volume") == volume)
                .map(|x| x.value)
        };
        for free in samples
            .iter()
            .filter(|x| x.name == "netprobe_storage_volume_free_bytes")
        {
            let volume = free.label("volume");
            let mut short = Vec::new();
            if let Some(size) = value("netprobe_storage_volume_size_bytes", volume)
                && size > 0.0
                && free.value / size < VOLUME_FREE_RATIO
            {
                short.push(format!(
                    "{} of {} free ({:.1} %)",
                    crate::config::ByteSize(free.value as u64),
                    crate::config::ByteSize(size as u64),
                    100.0 * free.value / size
                ));
            }
            if let (Some(free_inodes), Some(inodes)) = (
                value("netprobe_storage_volume_free_inodes", volume),
                value("netprobe_storage_volume_inodes", volume),
            ) && inodes > 0.0
                && free_inodes / inodes < VOLUME_FREE_RATIO
            {
                short.push(format!(
                    "{free_inodes} of {inodes} inodes free ({:.1} %)",
                    100.0 * free_inodes / inodes
                ));
            }
            if !short.is_empty() {
                lines.push(format!("node {node} volume {volume}: {}", short.join(", ")));
                where_.push(format!("{volume} on {node}"));
            }
        }
    }
    if lines.is_empty() {
        return Vec::new();
    }
    vec![
        Finding::new(
            "storage.volume-nearly-full",
            Severity::Warning,
            format!(
                "{} nearly full: {}",
                plural(where_.len(), "probed volume", "probed volumes"),
                list_some(&where_, 4)
            ),
        )
        .evidence(lines)
        .cause(
            "Writes to a full volume fail with ENOSPC (for inodes too, while df still shows \
             space); on the node's own disk the kubelet starts evicting pods below 10 % \
             available. Below the probe's size plus storage.reserve the storage probe stops \
             writing there, so the volume is no longer measured either.",
        )
        .next(
            "On the node: `df -h PATH; df -i PATH`, then what grows (`du -xsh PATH/* | sort -h`, \
             `crictl images`, container logs); free space or grow the volume. The \
             StorageVolumeFillingUp alert says how fast it fills.",
        ),
    ]
}
