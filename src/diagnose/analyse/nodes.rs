//! Nodes: NotReady, network unavailable, pressure, as the API reports them.

use super::*;

// ---------------------------------------------------------------------------------------------
// Nodes

pub fn nodes(s: &Snapshot) -> Vec<Finding> {
    let Some(nodes) = &s.nodes else {
        return Vec::new();
    };
    let mut not_ready = Vec::new();
    let mut no_network = Vec::new();
    for node in nodes {
        let n = name(&node.metadata);
        let conditions = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let ready = conditions.iter().find(|c| c.type_ == "Ready");
        match ready {
            Some(c) if c.status == "True" => {}
            Some(c) => not_ready.push((
                n.clone(),
                format!(
                    "node {n}: Ready={} ({}: {})",
                    c.status,
                    c.reason.as_deref().unwrap_or("?"),
                    c.message.as_deref().unwrap_or("")
                ),
            )),
            None => not_ready.push((
                n.clone(),
                format!("node {n}: no Ready condition (kubelet never reported)"),
            )),
        }
        if let Some(c) = conditions
            .iter()
            .find(|c| c.type_ == "NetworkUnavailable" && c.status == "True")
        {
            no_network.push((
                n.clone(),
                format!(
                    "node {n}: NetworkUnavailable=True ({}: {})",
                    c.reason.as_deref().unwrap_or("?"),
                    c.message.as_deref().unwrap_or("")
                ),
            ));
        }
    }
    let mut out = Vec::new();
    if !no_network.is_empty() {
        let names: Vec<String> = no_network.iter().map(|(n, _)| n.clone()).collect();
        out.push(
            Finding::new(
                "network.node-network-unavailable",
                Severity::Critical,
                format!(
                    "{} NetworkUnavailable: {}",
                    plural(
                        names.len(),
                        "node has its network",
                        "nodes have their network"
                    ),
                    list_some(&names, 5)
                ),
            )
            .evidence(no_network.into_iter().map(|(_, e)| e))
            .cause(
                "The CNI plugin has not set up pod networking (routes) on these nodes: its agent \
                 pod there is down, crash-looping or cannot reach its datastore. Pods on them \
                 cannot reach pods elsewhere.",
            )
            .next(format!(
                "Check the CNI agent on {}: `kubectl -n kube-system get pods -o wide \
                 --field-selector spec.nodeName={}` (calico-node, cilium, kube-flannel, ...), \
                 then its logs.",
                names[0], names[0]
            )),
        );
    }
    if !not_ready.is_empty() {
        let names: Vec<String> = not_ready.iter().map(|(n, _)| n.clone()).collect();
        out.push(
            Finding::new(
                "network.node-not-ready",
                Severity::Critical,
                format!(
                    "{} not Ready: {}",
                    plural(names.len(), "node", "nodes"),
                    list_some(&names, 5)
                ),
            )
            .evidence(not_ready.into_iter().map(|(_, e)| e))
            .cause(
                "The kubelet stopped posting status: node down, kubelet or container runtime \
                 failed, or the node lost its network path to the API server.",
            )
            .next(
                "`kubectl describe node NODE` (conditions, last heartbeat); on the node: \
                 `systemctl status kubelet`, `journalctl -u kubelet`.",
            ),
        );
    }
    out
}
