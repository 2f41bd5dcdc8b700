//! Keeps this node's peer probes in step with what discovery sees: picks the neighbours on the
//! hash ring, starts probes for newcomers and retires the probes (and every series) of peers
//! that left.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::PeerProtocol;
use crate::discovery::Peer;
use crate::discovery::ring::{expected_checkers, neighbours};
use crate::metrics::PeerMetrics;
use crate::probe::peer::{PeerSettings, PeerTarget, family};
use crate::scheduler::{Scheduler, TaskId};

/// The probes of one peer node.
#[derive(Debug)]
struct NodeProbes {
    addrs: Vec<SocketAddr>,
    targets: Vec<(TaskId, Arc<PeerTarget>)>,
}

/// This node's view of the mesh.
#[derive(Debug)]
pub struct Mesh {
    me: String,
    neighbours: usize,
    protocols: Vec<PeerProtocol>,
    settings: PeerSettings,
    scheduler: Arc<Scheduler>,
    metrics: PeerMetrics,
    active: BTreeMap<String, NodeProbes>,
    /// What discovery said last: a mesh that replaces this one (config reload) starts from it.
    last: Vec<Peer>,
}

impl Mesh {
    pub fn new(
        me: &str,
        neighbours: usize,
        protocols: Vec<PeerProtocol>,
        settings: PeerSettings,
        scheduler: Arc<Scheduler>,
        metrics: PeerMetrics,
    ) -> Self {
        Self {
            me: me.to_owned(),
            neighbours,
            protocols,
            settings,
            scheduler,
            metrics,
            active: BTreeMap::new(),
            last: Vec::new(),
        }
    }

    /// The peers discovery reported last.
    pub fn last_peers(&self) -> &[Peer] {
        &self.last
    }

    /// Stops this mesh's probes in favour of `next` (built from a reloaded config and already
    /// given [`Mesh::last_peers`]): series of probes that `next` runs too are kept, so their
    /// counters go on; the rest are removed.
    pub fn hand_over(&mut self, next: Option<&Mesh>) {
        for (node, probes) in std::mem::take(&mut self.active) {
            let kept = next
                .and_then(|n| n.active.get(&node))
                .filter(|n| n.addrs == probes.addrs);
            let Some(kept) = kept else {
                self.retire(probes);
                continue;
            };
            let still: BTreeSet<(&str, &str)> =
                kept.targets.iter().map(|(_, t)| t.series()).collect();
            let protocols: BTreeSet<&str> = still.iter().map(|(p, _)| *p).collect();
            for (id, target) in &probes.targets {
                self.scheduler.remove(*id);
                let (protocol, family) = target.series();
                if !still.contains(&(protocol, family)) {
                    // The node's counters are shared by its families: only when the protocol
                    // is gone altogether.
                    target.retire(!protocols.contains(protocol));
                }
            }
        }
    }

    /// The peer nodes probed now.
    pub fn targets(&self) -> Vec<&str> {
        self.active.keys().map(String::as_str).collect()
    }

    /// Brings the probes in line with the latest discovered peers (this node may be among them).
    pub fn apply(&mut self, peers: &[Peer]) {
        self.last = peers.to_vec();
        let by_node: BTreeMap<&str, &Peer> = peers.iter().map(|p| (p.node.as_str(), p)).collect();
        let mut ring: BTreeSet<&str> = by_node.keys().copied().collect();
        ring.insert(&self.me);
        let chosen: BTreeSet<&str> = neighbours(&self.me, ring.iter().copied(), self.neighbours)
            .into_iter()
            .collect();

        let leaving: Vec<String> = self
            .active
            .iter()
            .filter(|(node, probes)| {
                !chosen.contains(node.as_str())
                    || by_node.get(node.as_str()).map(|p| &p.addrs) != Some(&probes.addrs)
            })
            .map(|(node, _)| node.clone())
            .collect();
        for node in &leaving {
            if let Some(probes) = self.active.remove(node) {
                self.retire(probes);
            }
        }
        let mut added = Vec::new();
        for node in &chosen {
            if self.active.contains_key(*node) {
                continue;
            }
            let Some(peer) = by_node.get(node) else {
                continue;
            };
            self.active.insert((*node).to_owned(), self.start(peer));
            added.push(*node);
        }
        let removed: Vec<&String> = leaving
            .iter()
            .filter(|n| !self.active.contains_key(n.as_str()))
            .collect();
        if !added.is_empty() || !removed.is_empty() {
            tracing::info!(
                added = ?added, removed = ?removed, probing = self.active.len(),
                "peer set changed"
            );
        }
        self.metrics.set_targets(
            self.active.len(),
            &self.me,
            expected_checkers(ring.len(), self.neighbours),
        );
        self.metrics.set_discovered(peers.len());
    }

    fn start(&self, peer: &Peer) -> NodeProbes {
        // One address per family: the first the pod lists.
        let mut per_family: BTreeMap<&str, SocketAddr> = BTreeMap::new();
        for addr in &peer.addrs {
            per_family.entry(family(addr.ip())).or_insert(*addr);
        }
        let mut targets = Vec::new();
        for protocol in &self.protocols {
            for addr in per_family.values() {
                let target = Arc::new(PeerTarget::new(
                    &peer.node,
                    *protocol,
                    *addr,
                    &self.settings,
                    self.metrics.clone(),
                ));
                let id = self.scheduler.spawn(target.clone());
                targets.push((id, target));
            }
        }
        NodeProbes {
            addrs: peer.addrs.clone(),
            targets,
        }
    }

    fn retire(&self, probes: NodeProbes) {
        for (id, target) in &probes.targets {
            self.scheduler.remove(*id);
            target.retire(false);
        }
        // Only once no family of the node can record any more: the counters and histograms are
        // shared by its families.
        for (_, target) in &probes.targets {
            target.retire(true);
        }
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for (_, probes) in std::mem::take(&mut self.active) {
            for (id, _) in probes.targets {
                self.scheduler.remove(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metrics::{Metrics, PeerKey};

    fn peer(node: &str, ip: &str) -> Peer {
        Peer {
            node: node.into(),
            addrs: vec![format!("{ip}:9753").parse().unwrap()],
        }
    }

    fn mesh(metrics: &Metrics, scheduler: Arc<Scheduler>, k: usize) -> Mesh {
        Mesh::new(
            "node-0",
            k,
            vec![PeerProtocol::Http, PeerProtocol::Tcp],
            PeerSettings {
                interval: Duration::from_secs(3600),
                timeout: Duration::from_secs(1),
                bulk_bytes: 1024,
            },
            scheduler,
            metrics.peers.clone(),
        )
    }

    #[tokio::test]
    async fn peers_that_leave_take_every_series_with_them() {
        let metrics = Metrics::new();
        let scheduler = Arc::new(Scheduler::new(metrics.probes.clone()));
        let mut mesh = mesh(&metrics, scheduler.clone(), 0);
        let all = [
            peer("node-0", "127.0.0.1"),
            peer("node-1", "127.0.0.2"),
            peer("node-2", "127.0.0.3"),
        ];
        mesh.apply(&all);
        assert_eq!(mesh.targets(), ["node-1", "node-2"]);
        assert_eq!(scheduler.len(), 4);
        let text = metrics.encode_openmetrics();
        // Probed from now on: counters at 0, no `up` until the first probe ends.
        assert!(
            text.contains(
                r#"netprobe_peer_requests_total{target_node="node-2",protocol="tcp",result="success"} 0"#
            ),
            "{text}"
        );
        assert!(!text.contains("netprobe_peer_probe_success{"), "{text}");
        assert!(
            text.contains(r#"netprobe_peer_checkers_expected{target_node="node-0"} 2"#),
            "{text}"
        );
        assert!(text.contains("netprobe_discovery_peers 3"), "{text}");

        mesh.apply(&all[..2]);
        assert_eq!(mesh.targets(), ["node-1"]);
        assert_eq!(scheduler.len(), 2);
        let text = metrics.encode_openmetrics();
        assert!(!text.contains("node-2"), "{text}");
        assert!(text.contains("netprobe_peer_targets 1"), "{text}");
    }

    #[tokio::test]
    async fn a_new_address_restarts_the_probes() {
        let metrics = Metrics::new();
        let scheduler = Arc::new(Scheduler::new(metrics.probes.clone()));
        let mut mesh = mesh(&metrics, scheduler.clone(), 10);
        mesh.apply(&[peer("node-1", "127.0.0.2")]);
        let before: Vec<SocketAddr> = mesh.active["node-1"]
            .targets
            .iter()
            .map(|(_, t)| t.addr())
            .collect();
        mesh.apply(&[peer("node-1", "127.0.0.9")]);
        let after: Vec<SocketAddr> = mesh.active["node-1"]
            .targets
            .iter()
            .map(|(_, t)| t.addr())
            .collect();
        assert_ne!(before, after);
        assert_eq!(scheduler.len(), 2);
    }

    #[tokio::test]
    async fn a_hand_over_keeps_the_series_of_probes_the_next_mesh_runs() {
        let metrics = Metrics::new();
        let scheduler = Arc::new(Scheduler::new(metrics.probes.clone()));
        let mut old = mesh(&metrics, scheduler.clone(), 0);
        old.apply(&[peer("node-1", "127.0.0.2"), peer("node-2", "127.0.0.3")]);
        for node in ["node-1", "node-2"] {
            let key = PeerKey {
                target_node: node.into(),
                protocol: "tcp",
                family: "ipv4",
            };
            metrics.peers.record(&key, "success", &[("connect", 0.001)]);
        }
        // The reloaded config drops http, and only one neighbour is kept.
        let mut next = Mesh::new(
            "node-0",
            1,
            vec![PeerProtocol::Tcp],
            old.settings.clone(),
            scheduler.clone(),
            metrics.peers.clone(),
        );
        next.apply(old.last_peers());
        let kept = next.targets()[0].to_owned();
        old.hand_over(Some(&next));
        drop(old);
        assert_eq!(scheduler.len(), 1, "only the next mesh's probe runs");
        let text = metrics.encode_openmetrics();
        let gone = if kept == "node-1" { "node-2" } else { "node-1" };
        assert!(!text.contains(&format!("\"{gone}\"")), "{text}");
        assert!(!text.contains("protocol=\"http\""), "{text}");
        let counter = format!(
            r#"netprobe_peer_requests_total{{target_node="{kept}",protocol="tcp",result="success"}} "#
        );
        assert!(
            text.contains(&format!("{counter}1\n")),
            "{counter}1 missing:\n{text}"
        );
    }
}
