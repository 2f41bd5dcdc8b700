//! Peers from the Kubernetes API: a watch (not a poll) on the DaemonSet's pods and on the nodes.
//!
//! Only what probing needs is decoded and kept (a pod's node, IPs, readiness, whether it is
//! terminating; a node's schedulability and readiness: the slim types of `objects`), so memory
//! stays small on big clusters. A pod is a peer
//! when it is ready, not terminating, and its node is not cordoned: a drain must not page anyone.
//!
//! A NotReady node keeps its peer. When a node loses its network, the node lifecycle controller
//! marks it NotReady after its grace period (40 s by default) and sets its pods' `Ready` to
//! False; dropping the peer then would take the node's series away before any alert's `for:`
//! ends, and the node at fault would never be named. So on a node that is not Ready, a pod
//! whose containers were last reported ready (`ContainersReady`, which only the kubelet writes)
//! stays a peer and keeps failing its checks; a pod that never became ready does not join. The
//! real-cluster end-to-end test (tests/e2e) cuts a node's network and checks the alert.
//!
//! When the API server is unreachable the last known peers stay, the watch retries with backoff
//! and every failure is counted.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;

use crate::config::KubernetesDiscovery;
use crate::discovery::Peer;
use crate::discovery::objects::{SlimNode, SlimPod};
use crate::discovery::store::Store;
use crate::logging::{Health, Transition};
use crate::metrics::PeerMetrics;

/// Objects per list page. kube reads a page's whole body into memory (twice, briefly) before
/// decoding it, and glibc keeps much of such large freed buffers in the heap: with real-sized
/// nodes (16 KB of JSON each) and pods (10 KB), pages of 100 peaked at 25.7 MiB for 5,000 of
/// each and pages of 50 at 22.5 MiB (scripts/bench-discovery), for twice the requests.
const LIST_PAGE_SIZE: u32 = 50;

/// What a pod contributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub node: String,
    pub ips: Vec<IpAddr>,
    pub ready: bool,
    /// `ContainersReady`: the kubelet's last word, kept when the node controller marks the
    /// pod not ready because its node stopped reporting.
    pub containers_ready: bool,
    pub terminating: bool,
}

/// What a node contributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeInfo {
    pub schedulable: bool,
    pub ready: bool,
}

/// A pod's IPs: every family of `status.podIPs`, else `status.podIP` (older API servers).
pub fn pod_ips(pod: &Pod) -> Vec<IpAddr> {
    let status = pod.status.as_ref();
    let mut ips: Vec<IpAddr> = status
        .and_then(|s| s.pod_ips.as_ref())
        .map(|ips| ips.iter().filter_map(|ip| ip.ip.parse().ok()).collect())
        .unwrap_or_default();
    if ips.is_empty()
        && let Some(ip) = status
            .and_then(|s| s.pod_ip.as_ref())
            .and_then(|ip| ip.parse().ok())
    {
        ips.push(ip);
    }
    ips
}

pub fn pod_info(pod: &SlimPod) -> Option<(String, PodInfo)> {
    let name = pod.metadata.name.clone()?;
    let node = pod.node_name.clone()?;
    Some((
        name,
        PodInfo {
            node,
            ips: pod.ips.clone(),
            ready: pod.ready,
            containers_ready: pod.containers_ready,
            terminating: pod.terminating(),
        },
    ))
}

pub fn node_info(node: &SlimNode) -> Option<(String, NodeInfo)> {
    let name = node.metadata.name.clone()?;
    Some((
        name,
        NodeInfo {
            schedulable: !node.unschedulable,
            ready: node.ready,
        },
    ))
}

/// The cluster as the watches have shown it so far.
#[derive(Debug, Default)]
pub struct ClusterView {
    pods: Store<PodInfo>,
    nodes: Store<NodeInfo>,
}

impl ClusterView {
    /// Applies a pod event; whether what the view holds changed (the peers may have).
    pub fn pod_event(&mut self, event: Event<SlimPod>) -> bool {
        self.pods.apply(event, pod_info)
    }

    /// Applies a node event; whether what the view holds changed (the peers may have).
    pub fn node_event(&mut self, event: Event<SlimNode>) -> bool {
        self.nodes.apply(event, node_info)
    }

    /// Whether the pods have been listed once: before that, "no peers" means "don't know yet".
    pub fn synced(&self) -> bool {
        self.pods.synced()
    }

    /// The probe-able peers, one per node, sorted by node. A node the node watch has not shown
    /// (yet, or ever, when listing nodes is forbidden) does not hide its pod.
    pub fn peers(&self, port: u16) -> Vec<Peer> {
        let mut by_node: HashMap<&str, (&str, &PodInfo)> = HashMap::new();
        for (name, pod) in self.pods.iter() {
            if pod.terminating || pod.ips.is_empty() {
                continue;
            }
            let node = self.nodes.get(&pod.node);
            if node.is_some_and(|n| !n.schedulable) {
                continue;
            }
            let node_not_ready = node.is_some_and(|n| !n.ready);
            if !(pod.ready || node_not_ready && pod.containers_ready) {
                continue;
            }
            // During a rollout two pods may share a node for a moment: keep one, stably.
            let entry = by_node.entry(&pod.node).or_insert((name, pod));
            if name.as_str() < entry.0 {
                *entry = (name, pod);
            }
        }
        let mut peers: Vec<Peer> = by_node
            .into_iter()
            .map(|(node, (_, pod))| Peer {
                node: node.to_owned(),
                addrs: pod
                    .ips
                    .iter()
                    .map(|ip| SocketAddr::new(*ip, port))
                    .collect(),
            })
            .collect();
        peers.sort();
        peers
    }
}

/// Watches pods and nodes until the process ends, publishing the peers on `tx` whenever they
/// change. Never returns an error: failures are counted and retried with backoff.
pub async fn run(
    config: KubernetesDiscovery,
    port: u16,
    client: Option<kube::Client>,
    tx: watch::Sender<Vec<Peer>>,
    metrics: PeerMetrics,
) {
    metrics.add_discovery_source("pods");
    metrics.add_discovery_source("nodes");
    let client = match client {
        Some(client) => client,
        None => connect(|| metrics.discovery_error("pods", "error")).await,
    };
    // Small pages: a list's page is read and decoded whole, so the page size bounds the
    // transient peak of memory on big clusters (kube's default, 500, measured a 36 MiB peak with
    // 5,000 small pods when whole objects were decoded). The slim types keep only what `peers`
    // uses.
    let pods = watcher::watcher(
        Api::<SlimPod>::namespaced(client.clone(), &config.namespace),
        watcher::Config::default()
            .labels(&config.selector)
            .page_size(LIST_PAGE_SIZE),
    )
    .default_backoff();
    let nodes = watcher::watcher(
        Api::<SlimNode>::all(client),
        watcher::Config::default().page_size(LIST_PAGE_SIZE),
    )
    .default_backoff();
    tokio::pin!(pods);
    tokio::pin!(nodes);
    let mut view = ClusterView::default();
    let (pods_health, nodes_health) = (Health::default(), Health::default());
    loop {
        // Peers are worked out again only when the view changed: not for each object of a list
        // (nothing shows before the list ends) nor for a node's status update that leaves its
        // readiness and schedulability as they were, which on a big cluster is most events.
        let changed = tokio::select! {
            Some(event) = pods.next() => match event {
                Ok(event) => {
                    log_transition(&pods_health, "pods", None);
                    view.pod_event(event)
                }
                Err(e) => {
                    metrics.discovery_error("pods", super::error_reason(&e));
                    log_transition(&pods_health, "pods", Some(&e));
                    false
                }
            },
            Some(event) = nodes.next() => match event {
                Ok(event) => {
                    log_transition(&nodes_health, "nodes", None);
                    view.node_event(event)
                }
                Err(e) => {
                    metrics.discovery_error("nodes", super::error_reason(&e));
                    log_transition(&nodes_health, "nodes", Some(&e));
                    false
                }
            },
            else => break,
        };
        if changed && view.synced() {
            let peers = view.peers(port);
            tx.send_if_modified(|current| {
                if *current == peers {
                    false
                } else {
                    *current = peers;
                    true
                }
            });
        }
    }
}

fn log_transition(health: &Health, source: &str, error: Option<&watcher::Error>) {
    match (health.update(error.is_none()), error) {
        (Transition::StartedFailing { .. }, Some(e)) => super::log_failing(
            source,
            e,
            "peer discovery keeps the last known peers and retries with backoff",
        ),
        (Transition::Recovered { .. }, _) => tracing::info!(source, "peer discovery recovered"),
        _ => {}
    }
}

/// A client from the in-cluster config or `KUBECONFIG`, retried with backoff until one can be
/// built (outside a cluster with no kubeconfig, that is never: the daemon keeps its other probes).
/// `on_error` counts each failure.
pub async fn connect(mut on_error: impl FnMut()) -> kube::Client {
    let mut delay = Duration::from_secs(1);
    let mut logged = false;
    loop {
        match kube::Client::try_default().await {
            Ok(client) => return client,
            Err(e) => {
                on_error();
                if !logged {
                    tracing::warn!(
                        error = %e,
                        "cannot reach the Kubernetes API for peer discovery (no in-cluster config or KUBECONFIG?); retrying"
                    );
                    logged = true;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(300));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    fn pod(name: &str, node: &str, ip: &str, ready: bool) -> SlimPod {
        pod_with(name, node, ip, ready, ready)
    }

    fn pod_with(name: &str, node: &str, ip: &str, ready: bool, containers_ready: bool) -> SlimPod {
        serde_json::from_value(pod_json(name, node, ip, ready, containers_ready)).unwrap()
    }

    /// A pod as the API server sends it.
    fn pod_json(
        name: &str,
        node: &str,
        ip: &str,
        ready: bool,
        containers_ready: bool,
    ) -> serde_json::Value {
        let word = |b: bool| if b { "True" } else { "False" };
        serde_json::json!({
            "metadata": { "name": name, "namespace": "kube-netprobe" },
            "spec": { "nodeName": node, "containers": [] },
            "status": {
                "podIP": ip,
                "podIPs": [{ "ip": ip }],
                "conditions": [
                    { "type": "Ready", "status": word(ready) },
                    { "type": "ContainersReady", "status": word(containers_ready) }
                ]
            }
        })
    }

    fn node(name: &str, unschedulable: bool, ready: bool) -> SlimNode {
        serde_json::from_value(node_json(name, unschedulable, ready)).unwrap()
    }

    fn node_json(name: &str, unschedulable: bool, ready: bool) -> serde_json::Value {
        serde_json::json!({
            "metadata": { "name": name },
            "spec": { "unschedulable": unschedulable },
            "status": { "conditions": [{ "type": "Ready", "status": if ready { "True" } else { "False" } }] }
        })
    }

    fn nodes_of(view: &ClusterView) -> Vec<String> {
        view.peers(9753).into_iter().map(|p| p.node).collect()
    }

    #[test]
    fn only_ready_pods_on_healthy_nodes_are_peers() {
        let mut view = ClusterView::default();
        view.pod_event(Event::Init);
        view.pod_event(Event::InitApply(pod("p-a", "a", "10.0.0.1", true)));
        view.pod_event(Event::InitApply(pod("p-b", "b", "10.0.0.2", true)));
        view.pod_event(Event::InitApply(pod("p-c", "c", "10.0.0.3", false)));
        view.pod_event(Event::InitApply(pod("p-d", "d", "10.0.0.4", true)));
        assert!(!view.synced());
        view.pod_event(Event::InitDone);
        assert!(view.synced());
        assert_eq!(nodes_of(&view), ["a", "b", "d"]);

        view.node_event(Event::Apply(node("b", true, true)));
        view.node_event(Event::Apply(node("d", false, false)));
        view.node_event(Event::Apply(node("a", false, true)));
        assert_eq!(
            nodes_of(&view),
            ["a", "d"],
            "cordoned b is left out; NotReady d keeps its ready pod"
        );
        // The node lifecycle controller marks d's pod not ready; its containers were ready.
        view.pod_event(Event::Apply(pod_with("p-d", "d", "10.0.0.4", false, true)));
        assert_eq!(nodes_of(&view), ["a", "d"], "d's pod stays a peer");
        // On a Ready node, a pod that is not ready is not a peer, whatever its containers say.
        view.node_event(Event::Apply(node("d", false, true)));
        assert_eq!(nodes_of(&view), ["a"]);
        // A pod that never became ready on a NotReady node does not join.
        view.node_event(Event::Apply(node("c", false, false)));
        assert_eq!(nodes_of(&view), ["a"], "c's pod never had ready containers");
        view.pod_event(Event::Delete(pod("p-d", "d", "10.0.0.4", true)));

        let mut terminating = pod("p-a", "a", "10.0.0.1", true);
        terminating.metadata.deletion_timestamp =
            Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        view.pod_event(Event::Apply(terminating));
        assert!(nodes_of(&view).is_empty());
        view.node_event(Event::Apply(node("b", false, true)));
        view.pod_event(Event::Delete(pod("p-b", "b", "10.0.0.2", true)));
        assert!(nodes_of(&view).is_empty());
    }

    #[test]
    fn a_relist_replaces_what_was_known() {
        let mut view = ClusterView::default();
        view.pod_event(Event::Init);
        view.pod_event(Event::InitApply(pod("p-a", "a", "10.0.0.1", true)));
        view.pod_event(Event::InitDone);
        view.pod_event(Event::Init);
        view.pod_event(Event::InitApply(pod("p-b", "b", "10.0.0.2", true)));
        // Until the relist completes, the old view stands.
        assert_eq!(nodes_of(&view), ["a"]);
        view.pod_event(Event::InitDone);
        assert_eq!(nodes_of(&view), ["b"]);
        let peer = &view.peers(9753)[0];
        assert_eq!(peer.addrs, ["10.0.0.2:9753".parse().unwrap()]);
    }

    /// The watch loop against a scripted API server (`tower_test`): it must LIST pods and nodes,
    /// then WATCH them, and publish the peers that are probe-able. A request that never comes
    /// fails the test by its deadline.
    mod mock_api {
        use std::time::Duration;

        use http::{Request, Response, StatusCode};
        use kube::client::Body;

        use super::*;
        use crate::metrics::Metrics;

        fn list(kind: &str, items: serde_json::Value) -> String {
            serde_json::json!({
                "apiVersion": "v1", "kind": kind,
                "metadata": { "resourceVersion": "10" },
                "items": items
            })
            .to_string()
        }

        fn config() -> KubernetesDiscovery {
            KubernetesDiscovery {
                namespace: "kube-netprobe".into(),
                selector: "app.kubernetes.io/name=kube-netprobe".into(),
            }
        }

        /// Serves LISTs from `respond`, holds WATCH requests open, and returns the URIs seen.
        fn serve(
            mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
            respond: impl Fn(&str) -> (StatusCode, String) + Send + 'static,
        ) -> tokio::sync::mpsc::UnboundedReceiver<String> {
            let (seen_tx, seen_rx) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(async move {
                let mut open_watches = Vec::new();
                while let Some((request, send)) = handle.next_request().await {
                    let uri = request.uri().to_string();
                    let _ = seen_tx.send(uri.clone());
                    if uri.contains("watch=true") {
                        open_watches.push(send);
                        continue;
                    }
                    let (status, body) = respond(&uri);
                    send.send_response(
                        Response::builder()
                            .status(status)
                            .body(Body::from(body.into_bytes()))
                            .unwrap(),
                    );
                }
            });
            seen_rx
        }

        #[tokio::test]
        async fn lists_then_watches_and_publishes_probeable_peers() {
            let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
            let client = kube::Client::new(service, "default");
            let mut seen = serve(handle, |uri| {
                let body = if uri.starts_with("/api/v1/namespaces/kube-netprobe/pods?") {
                    assert!(
                        uri.contains("labelSelector=app.kubernetes.io%2Fname%3Dkube-netprobe"),
                        "{uri}"
                    );
                    list(
                        "PodList",
                        serde_json::json!([
                            pod_json("p-a", "a", "10.0.0.1", true, true),
                            pod_json("p-b", "b", "10.0.0.2", true, true),
                            pod_json("p-c", "c", "10.0.0.3", false, false),
                        ]),
                    )
                } else if uri.starts_with("/api/v1/nodes?") {
                    list(
                        "NodeList",
                        serde_json::json!([
                            node_json("a", false, true),
                            node_json("b", true, true),
                        ]),
                    )
                } else {
                    panic!("unexpected request {uri}");
                };
                (StatusCode::OK, body)
            });
            let (tx, mut rx) = watch::channel(Vec::new());
            let metrics = Metrics::new();
            tokio::spawn(run(config(), 9753, Some(client), tx, metrics.peers.clone()));

            // Both lists must have been served before the view is right: b is cordoned.
            let peers = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    rx.changed().await.unwrap();
                    let peers = rx.borrow_and_update().clone();
                    if peers.iter().map(|p| p.node.as_str()).collect::<Vec<_>>() == ["a"] {
                        return peers;
                    }
                }
            })
            .await
            .expect("the peers were never published as [a]");
            assert_eq!(peers[0].addrs, ["10.0.0.1:9753".parse().unwrap()]);

            let mut uris = Vec::new();
            while let Ok(uri) = seen.try_recv() {
                uris.push(uri);
            }
            assert!(
                uris.iter()
                    .any(|u| u.starts_with("/api/v1/nodes?") && !u.contains("watch=true")),
                "{uris:?}"
            );
            let watches = uris.iter().filter(|u| u.contains("watch=true")).count();
            tokio::time::timeout(Duration::from_secs(10), async {
                let mut watches = watches;
                while watches < 2 {
                    if seen.recv().await.unwrap().contains("watch=true") {
                        watches += 1;
                    }
                }
            })
            .await
            .expect("pods and nodes were listed but never watched");
        }

        #[tokio::test]
        async fn api_errors_are_counted_and_publish_nothing() {
            let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
            let client = kube::Client::new(service, "default");
            let _seen = serve(handle, |_| {
                let status = serde_json::json!({
                    "kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "message": "etcdserver: request timed out", "reason": "InternalError", "code": 500
                });
                (StatusCode::INTERNAL_SERVER_ERROR, status.to_string())
            });
            let (tx, rx) = watch::channel(Vec::new());
            let metrics = Metrics::new();
            tokio::spawn(run(config(), 9753, Some(client), tx, metrics.peers.clone()));
            let counted = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    let text = metrics.encode_openmetrics();
                    let pods_errors = text
                        .lines()
                        .find_map(|l| {
                            l.strip_prefix(
                                "netprobe_discovery_errors_total{source=\"pods\",reason=\"error\"} ",
                            )
                        })
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0);
                    if pods_errors >= 1 {
                        return pods_errors;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await
            .expect("no discovery error was counted");
            assert!(counted >= 1);
            assert!(rx.borrow().is_empty());
        }
    }
}
