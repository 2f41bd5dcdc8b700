//! The reading: pure functions from a collected [`Snapshot`] to [`Finding`]s, one function per
//! finding family, so each is unit-tested on hand-made objects without I/O. A finding is only
//! raised on evidence; an object that could not be read raises nothing here (the collection gap
//! is its own finding, `collect.partial`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;

use crate::discovery::kube::pod_ips;

use super::collect::{DNS_NAMESPACE, DNS_SERVICE, Snapshot};
use super::scrape::{self, Sample};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::Warning => "warning",
            Self::Info => "info",
        }
    }
}

/// One thing found wrong, with why and what to do. `id` is stable (the catalogue in
/// docs/diagnose.md); `title` names the objects.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub id: &'static str,
    pub severity: Severity,
    pub title: String,
    pub evidence: Vec<String>,
    pub cause: String,
    pub next_step: String,
}

impl Finding {
    fn new(id: &'static str, severity: Severity, title: impl Into<String>) -> Self {
        Finding {
            id,
            severity,
            title: title.into(),
            evidence: Vec::new(),
            cause: String::new(),
            next_step: String::new(),
        }
    }
    fn evidence(mut self, lines: impl IntoIterator<Item = String>) -> Self {
        self.evidence.extend(lines);
        self
    }
    fn cause(mut self, cause: impl Into<String>) -> Self {
        self.cause = cause.into();
        self
    }
    fn next(mut self, next: impl Into<String>) -> Self {
        self.next_step = next.into();
        self
    }
}

/// Every finding, most severe first; within a severity, in the order below (nodes and the
/// network before DNS, DNS before what depends on it), so the first line is the likeliest cause.
pub fn analyse(s: &Snapshot) -> Vec<Finding> {
    let matrix = Matrix::from_snapshot(s);
    let mut findings = Vec::new();
    findings.extend(nodes(s));
    findings.extend(live_matrix(&matrix));
    findings.extend(apiserver_probes(s));
    findings.extend(coredns_pods(s));
    findings.extend(coredns_logs(s));
    findings.extend(corefile(s));
    findings.extend(kube_dns_service(s));
    findings.extend(dns_probes(s));
    findings.extend(network_policies(s));
    findings.extend(coredns_ingress(s));
    findings.extend(namespace_services(s));
    findings.extend(csi_registration(s));
    findings.extend(storage_classes(s));
    findings.extend(pvcs(s));
    findings.extend(pvs(s));
    findings.extend(volume_attachments(s));
    findings.extend(storage_probes(s));
    findings.extend(storage_test(s));
    findings.extend(collection(s));
    // Stable: keeps the family order within a severity.
    findings.sort_by_key(|f| f.severity);
    findings
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn name(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.name.clone().unwrap_or_default()
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_node(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("?")
}

fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).sum())
        .unwrap_or(0)
}

/// What the containers say: waiting reasons and the last termination.
fn container_story(pod: &Pod) -> Vec<String> {
    let mut out = Vec::new();
    for c in pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
    {
        if let Some(w) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            out.push(format!(
                "container {} waiting: {}{}",
                c.name,
                w.reason.as_deref().unwrap_or("?"),
                w.message
                    .as_deref()
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default()
            ));
        }
        if let Some(t) = c.last_state.as_ref().and_then(|s| s.terminated.as_ref()) {
            out.push(format!(
                "container {} last terminated: {} (exit code {})",
                c.name,
                t.reason.as_deref().unwrap_or("?"),
                t.exit_code
            ));
        }
    }
    out
}

/// Whether a pod's restarts are current: a container waits to restart (CrashLoopBackOff), or
/// last terminated within the hour (or at an unknown time). Old restarts are history.
fn restarting_now(pod: &Pod) -> bool {
    let now = k8s_openapi::jiff::Timestamp::now();
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .any(|c| {
            let waiting = c.state.as_ref().is_some_and(|s| s.waiting.is_some());
            let recent = c
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .is_some_and(|t| {
                    t.finished_at
                        .as_ref()
                        .is_none_or(|f| now.duration_since(f.0).as_secs() < 3600)
                });
            waiting || recent
        })
}

fn last_termination_reasons(pod: &Pod) -> Vec<String> {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.last_state.as_ref()?.terminated.as_ref()?.reason.clone())
        .collect()
}

fn events_of<'a>(events: &'a [Event], kind: &str, ns: &str, name: &str) -> Vec<&'a Event> {
    let mut out: Vec<&Event> = events
        .iter()
        .filter(|e| {
            e.involved_object.kind.as_deref() == Some(kind)
                && e.involved_object.name.as_deref() == Some(name)
                && e.involved_object.namespace.as_deref().unwrap_or(ns) == ns
        })
        .collect();
    out.sort_by_key(|e| event_time(e));
    out
}

fn event_time(e: &Event) -> Option<k8s_openapi::jiff::Timestamp> {
    e.last_timestamp
        .as_ref()
        .map(|t| t.0)
        .or_else(|| e.event_time.as_ref().map(|t| t.0))
        .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

fn event_line(e: &Event) -> String {
    format!(
        "event {} {}: {}{}",
        e.type_.as_deref().unwrap_or("Normal"),
        e.reason.as_deref().unwrap_or("?"),
        e.message.as_deref().unwrap_or("").trim(),
        match e.count {
            Some(n) if n > 1 => format!(" (x{n})"),
            _ => String::new(),
        }
    )
}

/// Whether `selector` selects an object with `labels` (an empty selector selects everything).
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or(&[]);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    by_labels && by_expressions
}

fn labels_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> BTreeMap<String, String> {
    meta.labels.clone().unwrap_or_default()
}

fn list_some(items: &[String], max: usize) -> String {
    if items.len() <= max {
        items.join(", ")
    } else {
        format!("{} and {} more", items[..max].join(", "), items.len() - max)
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

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

// ---------------------------------------------------------------------------------------------
// Live matrix (kube-netprobe's peer probes, read from every pod's /metrics)

/// One probe result: `source` node probing `target` node over `protocol`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cell {
    pub source: String,
    pub target: String,
    pub protocol: String,
    pub up: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Matrix {
    pub nodes: Vec<String>,
    pub protocols: Vec<String>,
    pub cells: Vec<Cell>,
    /// Nodes whose kube-netprobe pod's /metrics could not be read.
    pub unread: Vec<String>,
}

impl Matrix {
    pub fn from_snapshot(s: &Snapshot) -> Matrix {
        let mut matrix = Matrix::default();
        let mut cells: BTreeMap<(String, String, String), bool> = BTreeMap::new();
        for scrape in &s.probe_scrapes {
            let Some(text) = &scrape.text else {
                matrix.unread.push(scrape.node.clone());
                continue;
            };
            for sample in scrape::parse(text)
                .into_iter()
                .filter(|x| x.name == "netprobe_peer_up")
            {
                let key = (
                    scrape.node.clone(),
                    sample.label("target_node").to_owned(),
                    sample.label("protocol").to_owned(),
                );
                // Several IP families: the pair is up only if every family is.
                let up = sample.value >= 1.0;
                cells.entry(key).and_modify(|u| *u &= up).or_insert(up);
            }
        }
        let mut nodes = BTreeSet::new();
        let mut protocols = BTreeSet::new();
        for ((source, target, protocol), up) in cells {
            nodes.insert(source.clone());
            nodes.insert(target.clone());
            protocols.insert(protocol.clone());
            matrix.cells.push(Cell {
                source,
                target,
                protocol,
                up,
            });
        }
        matrix.nodes = nodes.into_iter().collect();
        matrix.protocols = protocols.into_iter().collect();
        matrix
    }
}

pub fn live_matrix(m: &Matrix) -> Vec<Finding> {
    // Per (source, target): connectivity (every protocol but bulk) and bulk.
    let mut basic: BTreeMap<(&str, &str), bool> = BTreeMap::new();
    let mut bulk: BTreeMap<(&str, &str), bool> = BTreeMap::new();
    for c in &m.cells {
        let key = (c.source.as_str(), c.target.as_str());
        let map = if c.protocol == "bulk" {
            &mut bulk
        } else {
            &mut basic
        };
        map.entry(key).and_modify(|u| *u &= c.up).or_insert(c.up);
    }
    let failing: BTreeSet<(&str, &str)> = basic
        .iter()
        .filter(|(_, up)| !**up)
        .map(|(k, _)| *k)
        .collect();
    let pair = |(s, t): &(&str, &str)| format!("{s} -> {t}");
    let mut out = Vec::new();
    let mut explained: BTreeSet<(&str, &str)> = BTreeSet::new();
    for node in &m.nodes {
        let node = node.as_str();
        let inbound: Vec<_> = basic.iter().filter(|((_, t), _)| *t == node).collect();
        let outbound: Vec<_> = basic.iter().filter(|((s, _), _)| *s == node).collect();
        let others: Vec<_> = basic
            .iter()
            .filter(|((s, t), _)| *s != node && *t != node)
            .collect();
        // Only blame one node when the rest of the mesh mostly works.
        let others_ok = others.iter().filter(|(_, up)| **up).count();
        if others.is_empty() || (others_ok as f64) < 0.75 * others.len() as f64 {
            continue;
        }
        let in_dead = inbound.len() >= 2 && inbound.iter().all(|(_, up)| !**up);
        let out_dead = outbound.len() >= 2 && outbound.iter().all(|(_, up)| !**up);
        let evidence: Vec<String> = inbound
            .iter()
            .chain(outbound.iter())
            .filter(|(_, up)| !**up)
            .map(|(k, _)| format!("{} failing", pair(k)))
            .chain([format!(
                "{others_ok} of {} pairs not involving {node} are up",
                others.len()
            )])
            .collect();
        let (id, title, cause, next) = match (in_dead, out_dead) {
            (true, true) => (
                "network.node-isolated",
                format!("Node {node} is cut off: it reaches no peer and no peer reaches it"),
                "Pod networking on this one node is down (CNI agent, routes, host firewall, or \
                 the node's uplink) while the rest of the mesh works.",
                format!(
                    "Check the CNI agent pod and its logs on {node}, the node's routes \
                     (`ip route`) and host firewall (`iptables-save`)."
                ),
            ),
            (true, false) => (
                "network.node-unreachable",
                format!("Node {node} is unreachable: no peer reaches it, it reaches them"),
                "Traffic into pods on this node is dropped: a host firewall or security group \
                 blocking ingress, or the overlay's return path (encapsulation port) on this \
                 node.",
                format!(
                    "On {node}: inbound rules (`iptables-save`, cloud security group for the \
                     overlay port, e.g. VXLAN UDP 4789/8472), CNI agent logs."
                ),
            ),
            (false, true) => (
                "network.node-egress-broken",
                format!("Node {node} reaches no peer, though peers reach it"),
                "Egress from pods on this node is broken: an egress firewall rule, a stale \
                 route, or the CNI's outbound encapsulation on this node.",
                format!(
                    "On {node}: `ip route`, egress rules (`iptables-save`), CNI agent logs; \
                     restart the CNI agent pod on that node if its routes are stale."
                ),
            ),
            (false, false) => continue,
        };
        for (k, up) in inbound.iter().chain(outbound.iter()) {
            if !**up {
                explained.insert(**k);
            }
        }
        out.push(
            Finding::new(id, Severity::Critical, title)
                .evidence(evidence)
                .cause(cause)
                .next(next),
        );
    }
    let rest: Vec<(&str, &str)> = failing.difference(&explained).copied().collect();
    if !rest.is_empty() {
        let total = basic.len();
        let lines: Vec<String> = rest
            .iter()
            .map(|k| format!("{} failing", pair(k)))
            .collect();
        if rest.len() >= 3 && rest.len() * 10 >= total * 3 {
            out.push(
                Finding::new(
                    "network.many-pairs-failing",
                    Severity::Critical,
                    format!(
                        "Pod-to-pod connectivity broken across the cluster: {} of {total} node pairs failing",
                        rest.len()
                    ),
                )
                .evidence(lines)
                .cause(
                    "Failures spread over many nodes point at the CNI or overlay itself (its \
                     datastore, a broken upgrade, an encapsulation port blocked between nodes), \
                     not at one node.",
                )
                .next(
                    "Check the CNI's pods and logs in kube-system (all nodes), recent changes to \
                     firewall rules between nodes, and the overlay port (VXLAN UDP 4789/8472, \
                     Geneve 6081, IP-in-IP protocol 4).",
                ),
            );
        } else {
            out.push(
                Finding::new(
                    "network.pairs-failing",
                    Severity::Warning,
                    format!(
                        "{} failing: {}",
                        plural(rest.len(), "node pair", "node pairs"),
                        list_some(&rest.iter().map(pair).collect::<Vec<_>>(), 4)
                    ),
                )
                .evidence(lines)
                .cause(
                    "Individual paths fail while most of the mesh works: a firewall rule \
                     between two nodes, or a route missing on one side.",
                )
                .next(
                    "Compare routes and firewall rules of the nodes named; see the \
                     kube-netprobe peer dashboard for when it started.",
                ),
            );
        }
    }
    // Bulk fails where small requests pass: the MTU black hole.
    let bulk_only: Vec<(&str, &str)> = bulk
        .iter()
        .filter(|(k, up)| !**up && basic.get(*k) == Some(&true))
        .map(|(k, _)| *k)
        .collect();
    if !bulk_only.is_empty() {
        let critical = bulk_only.len() >= 2 && bulk_only.len() * 4 >= bulk.len();
        // One node on every failing path (and more than one path): that node's link.
        let common: Option<&str> = m
            .nodes
            .iter()
            .map(String::as_str)
            .find(|n| bulk_only.iter().all(|(s, t)| s == n || t == n))
            .filter(|_| bulk_only.len() >= 2);
        out.push(
            Finding::new(
                "network.mtu-blackhole",
                if critical {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
                format!(
                    "Large transfers fail while small requests pass on {}{}: MTU black hole",
                    plural(bulk_only.len(), "node pair", "node pairs"),
                    common
                        .map(|n| format!(", all to or from {n}"))
                        .unwrap_or_default()
                ),
            )
            .evidence(
                bulk_only
                    .iter()
                    .map(|k| format!("{}: http/tcp up, bulk down", pair(k))),
            )
            .cause(
                "Full-size packets are dropped on the path: the pod interface MTU is larger than \
                 the overlay allows (encapsulation overhead), and ICMP \"fragmentation needed\" \
                 does not come back.",
            )
            .next(
                "Compare the pod MTU (`ip link` in a pod) with the node MTU minus the overlay \
                 overhead (VXLAN 50 bytes, Geneve/WireGuard more); set the CNI's MTU to fit.",
            ),
        );
    }
    out
}

/// The kube-netprobe pods' API-server probes: `direct` (the Service IP) and `dns` (its name).
pub fn apiserver_probes(s: &Snapshot) -> Vec<Finding> {
    let mut reporting = 0;
    let mut direct_down = Vec::new();
    let mut dns_only_down = Vec::new();
    for scrape in &s.probe_scrapes {
        let Some(text) = &scrape.text else { continue };
        let samples = scrape::parse(text);
        let up = |path: &str| {
            samples
                .iter()
                .find(|x| x.name == "netprobe_apiserver_up" && x.label("path") == path)
                .map(|x| x.value >= 1.0)
        };
        let (direct, dns) = (up("direct"), up("dns"));
        if direct.is_none() && dns.is_none() {
            continue;
        }
        reporting += 1;
        if direct == Some(false) {
            direct_down.push(scrape.node.clone());
        } else if dns == Some(false) {
            dns_only_down.push(scrape.node.clone());
        }
    }
    let mut out = Vec::new();
    if !direct_down.is_empty() {
        let most = direct_down.len() * 2 >= reporting;
        out.push(
            Finding::new(
                "network.apiserver-unreachable",
                if most { Severity::Critical } else { Severity::Warning },
                format!(
                    "Pods cannot reach the API server's Service IP from {} of {reporting} nodes: {}",
                    direct_down.len(),
                    list_some(&direct_down, 4)
                ),
            )
            .evidence(direct_down.iter().map(|n| format!("node {n}: netprobe_apiserver_up{{path=\"direct\"}} = 0")))
            .cause(if most {
                "The `kubernetes` Service (KUBERNETES_SERVICE_HOST) is not forwarded to the API server from most nodes: kube-proxy, or the API server's endpoints; operators and CoreDNS's kubernetes plugin fail with it."
            } else {
                "The Service path to the API server fails on these nodes only: kube-proxy or the pod network on them."
            })
            .next("`kubectl get endpoints kubernetes`; kube-proxy logs on the nodes named; the netprobe_apiserver_requests_total{result} series say how it fails."),
        );
    }
    if !dns_only_down.is_empty() {
        out.push(
            Finding::new(
                "network.apiserver-dns-failing",
                Severity::Warning,
                format!(
                    "The API server is reachable by IP but not by name from {}: {}",
                    plural(dns_only_down.len(), "node", "nodes"),
                    list_some(&dns_only_down, 4)
                ),
            )
            .evidence(dns_only_down.iter().map(|n| format!("node {n}: path direct up, path dns down")))
            .cause("Resolving kubernetes.default.svc from pods fails there: a DNS problem (see the DNS findings), not an API-server one.")
            .next("Follow the DNS findings; `kubectl exec` into a pod on that node and resolve kubernetes.default.svc."),
        );
    }
    out
}

// ---------------------------------------------------------------------------------------------
// DNS

fn coredns_ips(s: &Snapshot) -> Vec<IpAddr> {
    s.coredns_pods.iter().flatten().flat_map(pod_ips).collect()
}

/// Nodes not Ready or with NetworkUnavailable: what runs there is a symptom, not a cause.
fn sick_nodes(s: &Snapshot) -> BTreeSet<String> {
    s.nodes
        .iter()
        .flatten()
        .filter(|n| {
            let c = n.status.as_ref().and_then(|s| s.conditions.as_ref());
            let ready =
                c.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            let no_net = c.is_some_and(|c| {
                c.iter()
                    .any(|c| c.type_ == "NetworkUnavailable" && c.status == "True")
            });
            !ready || no_net
        })
        .map(|n| name(&n.metadata))
        .collect()
}

pub fn coredns_pods(s: &Snapshot) -> Vec<Finding> {
    let Some(all) = &s.coredns_pods else {
        return Vec::new();
    };
    // Replicas only: evicted or finished pods (phase Failed/Succeeded) and pods on their way
    // out of a rollout are history, not unready replicas.
    let pods: Vec<&Pod> = all
        .iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Failed" | "Succeeded")
                )
        })
        .collect();
    let events = s.coredns_events.as_deref().unwrap_or(&[]);
    if pods.is_empty() {
        return vec![
            Finding::new(
                "dns.coredns-missing",
                Severity::Critical,
                format!(
                    "No running CoreDNS pods in {DNS_NAMESPACE} (label k8s-app=kube-dns){}",
                    if all.is_empty() {
                        String::new()
                    } else {
                        format!(", {} evicted, finished or terminating", all.len())
                    }
                ),
            )
            .cause(
                "The CoreDNS Deployment is scaled to zero, deleted, or its pods cannot be created.",
            )
            .next(format!(
                "`kubectl -n {DNS_NAMESPACE} get deploy,rs -l k8s-app=kube-dns` and the \
                 ReplicaSet's events."
            )),
        ];
    }
    let mut out = Vec::new();
    let not_ready: Vec<&Pod> = pods.iter().copied().filter(|p| !pod_ready(p)).collect();
    let pod_events = |p: &Pod| -> Vec<String> {
        events_of(events, "Pod", DNS_NAMESPACE, &name(&p.metadata))
            .into_iter()
            .filter(|e| e.type_.as_deref() == Some("Warning"))
            .rev()
            .take(3)
            .map(event_line)
            .collect()
    };
    let log_loop = s
        .coredns_logs
        .iter()
        .flatten()
        .any(|(_, t)| t.contains("plugin/loop"));
    if !not_ready.is_empty() {
        let ready = pods.len() - not_ready.len();
        let mut evidence = Vec::new();
        for p in &not_ready {
            let phase = p
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_else(|| "?".into());
            evidence.push(format!(
                "pod {} on node {}: phase {phase}, not Ready, {} restarts",
                name(&p.metadata),
                pod_node(p),
                restarts(p)
            ));
            evidence.extend(container_story(p).into_iter().map(|l| format!("  {l}")));
            evidence.extend(pod_events(p).into_iter().map(|l| format!("  {l}")));
        }
        let reasons: Vec<String> = not_ready
            .iter()
            .flat_map(|p| last_termination_reasons(p))
            .collect();
        let sick = sick_nodes(s);
        let on_sick: BTreeSet<&str> = not_ready
            .iter()
            .map(|p| pod_node(p))
            .filter(|n| sick.contains(*n))
            .collect();
        let cause = if on_sick.len()
            == not_ready
                .iter()
                .map(|p| pod_node(p))
                .collect::<BTreeSet<_>>()
                .len()
        {
            format!(
                "Their node(s) {} are not Ready or have no pod network (see the node findings \
                 above): fix the nodes first.",
                on_sick.iter().copied().collect::<Vec<_>>().join(", ")
            )
        } else if log_loop {
            "CoreDNS exits on its loop check: it forwards queries back to itself (see \
             dns.log-loop)."
                .to_owned()
        } else if reasons.iter().any(|r| r == "OOMKilled") {
            "CoreDNS is OOM-killed: its memory limit is too small for the cluster's query load \
             and cache."
                .to_owned()
        } else {
            "CoreDNS's readiness check (:8181/ready) fails or the process crashes: usually \
             plugin/kubernetes cannot list from the API server, or the Corefile does not load."
                .to_owned()
        };
        let first = name(&not_ready[0].metadata);
        out.push(
            Finding::new(
                "dns.coredns-not-ready",
                if ready == 0 {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
                format!("CoreDNS: {ready} of {} pods ready", pods.len()),
            )
            .evidence(evidence)
            .cause(cause)
            .next(format!(
                "`kubectl -n {DNS_NAMESPACE} logs {first} --previous` and `kubectl -n \
                 {DNS_NAMESPACE} describe pod {first}`."
            )),
        );
    }
    let restarting: Vec<&Pod> = pods
        .iter()
        .copied()
        .filter(|p| restarts(p) >= 3 && restarting_now(p))
        .collect();
    if !restarting.is_empty() {
        let mut evidence = Vec::new();
        let mut reasons = BTreeSet::new();
        for p in &restarting {
            evidence.push(format!(
                "pod {} on node {}: {} restarts",
                name(&p.metadata),
                pod_node(p),
                restarts(p)
            ));
            evidence.extend(container_story(p).into_iter().map(|l| format!("  {l}")));
            reasons.extend(last_termination_reasons(p));
        }
        let reasons: Vec<String> = reasons.into_iter().collect();
        let first = name(&restarting[0].metadata);
        out.push(
            Finding::new(
                "dns.coredns-restarting",
                Severity::Warning,
                format!(
                    "CoreDNS restarting: {}{}",
                    list_some(
                        &restarting
                            .iter()
                            .map(|p| format!("{} ({} restarts)", name(&p.metadata), restarts(p)))
                            .collect::<Vec<_>>(),
                        3
                    ),
                    if reasons.is_empty() {
                        String::new()
                    } else {
                        format!(", last terminated: {}", reasons.join(", "))
                    }
                ),
            )
            .evidence(evidence)
            .cause(if reasons.iter().any(|r| r == "OOMKilled") {
                "Killed for exceeding its memory limit (OOMKilled)."
            } else if log_loop {
                "Exits on the loop check (see dns.log-loop)."
            } else {
                "The container exits or fails its liveness probe (:8080/health) repeatedly."
            })
            .next(format!(
                "`kubectl -n {DNS_NAMESPACE} logs {first} --previous`; raise the memory limit \
                 if OOMKilled."
            )),
        );
    }
    out
}

/// Log patterns: (id, severity, what it means, what to do, needle).
const LOG_PATTERNS: &[(&str, Severity, &str, &str, &str, &str)] = &[
    (
        "dns.log-loop",
        Severity::Critical,
        "CoreDNS detected a forwarding loop (plugin/loop)",
        "CoreDNS forwards to itself: typically `forward . /etc/resolv.conf` while the node's \
         resolv.conf points at a local stub (127.0.0.53, systemd-resolved), which hands the query \
         back to CoreDNS. CoreDNS exits and crash-loops.",
        "Forward to real upstream servers (`forward . 10.0.0.2`), or set the kubelet's \
         --resolv-conf to /run/systemd/resolve/resolv.conf; then `kubectl -n kube-system \
         rollout restart deploy/coredns`.",
        "plugin/loop",
    ),
    (
        "dns.log-upstream-timeout",
        Severity::Warning,
        "CoreDNS times out talking to its upstream servers (i/o timeout)",
        "The upstream DNS servers in the Corefile's `forward` do not answer CoreDNS: an egress \
         firewall or NetworkPolicy on the CoreDNS pods, the upstream down, or its rate limit.",
        "From a CoreDNS node, query the upstream named in the lines (`dig @UPSTREAM example.com`); \
         check egress rules for UDP/TCP 53 from the CoreDNS pods.",
        "i/o timeout",
    ),
    (
        "dns.log-servfail",
        Severity::Warning,
        "CoreDNS answers SERVFAIL",
        "CoreDNS could not get an answer for these names: upstream failures, DNSSEC validation \
         errors, or a stub domain whose servers fail.",
        "Look at which names and which upstream in the lines; `dig @UPSTREAM NAME` from a node.",
        "SERVFAIL",
    ),
    (
        "dns.log-no-such-host",
        Severity::Warning,
        "CoreDNS logs `no such host`",
        "A name CoreDNS itself needs (an upstream or stub server given by name, or the API \
         server) does not resolve.",
        "Give upstreams by IP address in the Corefile; check the names in the lines.",
        "no such host",
    ),
];

pub fn coredns_logs(s: &Snapshot) -> Vec<Finding> {
    let Some(logs) = &s.coredns_logs else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (id, severity, title, cause, next, needle) in LOG_PATTERNS {
        let mut lines = Vec::new();
        let mut count = 0;
        for (pod, text) in logs {
            for line in text.lines().filter(|l| l.contains(needle)) {
                count += 1;
                if lines.len() < 5 {
                    lines.push(format!("{pod}: {}", line.trim()));
                }
            }
        }
        if count == 0 {
            continue;
        }
        let mut evidence = vec![format!(
            "{} in the last {} lines per pod",
            plural(count, "matching line", "matching lines"),
            super::collect::LOG_TAIL_LINES
        )];
        evidence.extend(lines);
        out.push(
            Finding::new(
                id,
                *severity,
                format!("{title}: {}", plural(count, "line", "lines")),
            )
            .evidence(evidence)
            .cause(*cause)
            .next(*next),
        );
    }
    out
}

/// `forward` targets per server block (`forward FROM TO... {`).
fn corefile_forwards(corefile: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in corefile.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace();
        if matches!(words.next(), Some("forward" | "proxy")) {
            let _from = words.next();
            out.extend(
                words
                    .take_while(|w| *w != "{")
                    .map(|w| w.trim_end_matches('{').to_owned()),
            );
        }
    }
    out
}

fn host_of(target: &str) -> &str {
    let t = target
        .trim_start_matches("dns://")
        .trim_start_matches("tls://");
    if let Some(rest) = t.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    if t.matches(':').count() == 1 {
        return t.split(':').next().unwrap_or(t);
    }
    t
}

pub fn corefile(s: &Snapshot) -> Vec<Finding> {
    let Some(corefile) = &s.corefile else {
        return Vec::new();
    };
    let Some(text) = corefile else {
        return vec![
            Finding::new(
                "dns.corefile-not-found",
                Severity::Info,
                format!("No Corefile in ConfigMap {DNS_NAMESPACE}/coredns"),
            )
            .cause("This cluster's DNS is configured elsewhere (another ConfigMap name or a different DNS server); the Corefile checks were skipped.")
            .next("Nothing, unless CoreDNS is expected to read kube-system/coredns."),
        ];
    };
    let forwards = corefile_forwards(text);
    if forwards.is_empty() {
        return vec![
            Finding::new(
                "dns.corefile-no-forward",
                Severity::Warning,
                "The Corefile has no `forward`: names outside the cluster do not resolve",
            )
            .evidence(text.lines().map(|l| format!("Corefile: {l}")).take(20))
            .cause("Without `forward`, CoreDNS answers only for the cluster domain; every external name gets SERVFAIL or NXDOMAIN.")
            .next("Add `forward . /etc/resolv.conf` (or the upstream servers' IPs) to the `.:53` server block."),
        ];
    }
    let own: Vec<IpAddr> = coredns_ips(s)
        .into_iter()
        .chain(
            s.kube_dns_service
                .iter()
                .flatten()
                .filter_map(|svc| svc.spec.as_ref()?.cluster_ip.as_ref()?.parse().ok()),
        )
        .collect();
    let to_self: Vec<&String> = forwards
        .iter()
        .filter(|t| {
            let host = host_of(t);
            host == "localhost"
                || host
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback() || own.contains(&ip))
        })
        .collect();
    if to_self.is_empty() {
        return Vec::new();
    }
    vec![
        Finding::new(
            "dns.corefile-forward-loop",
            Severity::Critical,
            format!(
                "The Corefile forwards to CoreDNS itself: {}",
                to_self
                    .iter()
                    .map(|t| t.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .evidence(
            text.lines()
                .filter(|l| l.trim_start().starts_with("forward"))
                .map(|l| format!("Corefile: {}", l.trim())),
        )
        .cause("Queries for external names come back to CoreDNS (loopback, the kube-dns Service IP or a CoreDNS pod): they loop until they time out, and plugin/loop makes CoreDNS exit.")
        .next("Point `forward` at the real upstream resolvers (by IP) or `/etc/resolv.conf` of a node that does not use a local stub; `kubectl -n kube-system edit configmap coredns`."),
    ]
}

pub fn kube_dns_service(s: &Snapshot) -> Vec<Finding> {
    let Some(service) = &s.kube_dns_service else {
        return Vec::new();
    };
    let Some(service) = service else {
        return vec![
            Finding::new(
                "dns.service-missing",
                Severity::Critical,
                format!("The {DNS_SERVICE} Service does not exist in {DNS_NAMESPACE}"),
            )
            .cause("Pods' resolv.conf points at the kube-dns Service IP; without the Service nothing answers there.")
            .next("Recreate the kube-dns Service with the cluster's DNS IP (the kubelet's --cluster-dns), selector k8s-app=kube-dns."),
        ];
    };
    let Some(endpoints) = &s.kube_dns_endpoints else {
        return Vec::new();
    };
    let (ready, not_ready) = endpoints
        .iter()
        .flat_map(|e| e.subsets.iter().flatten())
        .fold((0, 0), |(r, n), subset| {
            (
                r + subset.addresses.as_ref().map_or(0, Vec::len),
                n + subset.not_ready_addresses.as_ref().map_or(0, Vec::len),
            )
        });
    if ready > 0 {
        return Vec::new();
    }
    let selector: BTreeMap<String, String> = service
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default();
    let pods = s.coredns_pods.as_deref();
    let matching = pods.map(|pods| {
        pods.iter()
            .filter(|p| {
                let labels = labels_of(&p.metadata);
                !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
            })
            .collect::<Vec<_>>()
    });
    let cause = match (&matching, pods) {
        (Some(m), Some(all)) if m.is_empty() && !all.is_empty() => format!(
            "The Service's selector {selector:?} matches none of the CoreDNS pods: the selector or the pods' labels were changed."
        ),
        (Some(m), _) if !m.is_empty() && m.iter().all(|p| !pod_ready(p)) => {
            "No CoreDNS pod is ready (see dns.coredns-not-ready), so the Service has nothing to send queries to.".to_owned()
        }
        (Some(m), _) if m.iter().any(|p| pod_ready(p)) => {
            "Ready CoreDNS pods match the selector but are not in the Endpoints: the endpoints controller (kube-controller-manager) is not running or lagging.".to_owned()
        }
        _ => "No ready CoreDNS pod backs the Service.".to_owned(),
    };
    vec![
        Finding::new(
            "dns.service-no-endpoints",
            Severity::Critical,
            format!("The {DNS_SERVICE} Service has no ready endpoints: every pod's DNS lookup fails"),
        )
        .evidence([
            format!("Endpoints {DNS_NAMESPACE}/{DNS_SERVICE}: {ready} ready, {not_ready} not ready addresses"),
            format!("Service selector: {selector:?}"),
        ])
        .cause(cause)
        .next(format!(
            "Make CoreDNS ready (findings above), then `kubectl -n {DNS_NAMESPACE} get endpoints {DNS_SERVICE}` should list its pods."
        )),
    ]
}

/// DNS probe results by server: direct to each CoreDNS pod (`coredns/<pod>`) versus through the
/// Service (`system`, the pod's resolv.conf).
pub fn dns_probes(s: &Snapshot) -> Vec<Finding> {
    // (server, name) -> (failing nodes, nodes reporting)
    let mut by: BTreeMap<(String, String), (Vec<String>, usize)> = BTreeMap::new();
    for scrape in &s.probe_scrapes {
        let Some(text) = &scrape.text else { continue };
        for x in scrape::parse(text)
            .iter()
            .filter(|x| x.name == "netprobe_dns_probe_success")
        {
            let entry = by
                .entry((x.label("server").to_owned(), x.label("name").to_owned()))
                .or_default();
            entry.1 += 1;
            if x.value < 1.0 {
                entry.0.push(scrape.node.clone());
            }
        }
    }
    let failing = |v: &(Vec<String>, usize)| v.1 > 0 && v.0.len() * 2 >= v.1;
    let passing = |v: &(Vec<String>, usize)| v.1 > 0 && v.0.len() * 2 < v.1;
    let names: BTreeSet<&String> = by.keys().map(|(_, n)| n).collect();
    let mut out = Vec::new();
    let endpoints_empty = s.kube_dns_endpoints.as_ref().is_some_and(|e| {
        e.as_ref().is_none_or(|e| {
            e.subsets
                .iter()
                .flatten()
                .all(|s| s.addresses.as_ref().is_none_or(Vec::is_empty))
        })
    });
    let mut replica_failing: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut service_path: Vec<String> = Vec::new();
    let mut everywhere: Vec<String> = Vec::new();
    for name in names {
        let direct: Vec<(&String, &(Vec<String>, usize))> = by
            .iter()
            .filter(|((srv, n), _)| n == name && srv.starts_with("coredns/"))
            .map(|((srv, _), v)| (srv, v))
            .collect();
        let system = by.get(&("system".to_owned(), name.clone()));
        let direct_ok = direct.iter().filter(|(_, v)| passing(v)).count();
        let direct_bad: Vec<_> = direct.iter().filter(|(_, v)| failing(v)).collect();
        if direct_ok > 0 {
            for (srv, v) in &direct_bad {
                replica_failing.entry(srv.to_string()).or_default().push(format!(
                    "{srv} fails {name} from {} of {} nodes while {direct_ok} other CoreDNS pod(s) answer",
                    v.0.len(),
                    v.1
                ));
            }
        }
        if let Some(sys) = system
            && failing(sys)
        {
            if direct_ok > 0 && direct_bad.is_empty() {
                if !endpoints_empty {
                    service_path.push(format!(
                        "{name}: fails through the Service on {} of {} nodes ({}), every CoreDNS pod answers it directly",
                        sys.0.len(),
                        sys.1,
                        list_some(&sys.0, 4)
                    ));
                }
            } else if direct_ok == 0 {
                everywhere.push(name.clone());
            }
        }
    }
    for (srv, evidence) in replica_failing {
        let pod = srv.trim_start_matches("coredns/");
        out.push(
            Finding::new(
                "dns.replica-failing",
                Severity::Warning,
                format!("CoreDNS pod {pod} fails DNS probes while the other replicas answer"),
            )
            .evidence(evidence)
            .cause("One replica is broken (stuck, overloaded, or its node's network): a share of every client's lookups fails or retries.")
            .next(format!(
                "`kubectl -n {DNS_NAMESPACE} logs {pod}`; if nothing explains it, `kubectl -n {DNS_NAMESPACE} delete pod {pod}` and watch whether the new one answers."
            )),
        );
    }
    if !service_path.is_empty() {
        out.push(
            Finding::new(
                "dns.service-path-broken",
                Severity::Critical,
                "DNS works direct to the CoreDNS pods but fails through the kube-dns Service",
            )
            .evidence(service_path)
            .cause("CoreDNS is fine; the Service's virtual IP is not forwarded to it: kube-proxy (iptables/IPVS rules) is down, stale or misconfigured on these nodes.")
            .next("Check kube-proxy on the failing nodes (`kubectl -n kube-system get pods -l k8s-app=kube-proxy -o wide`, its logs; `iptables-save | grep kube-dns`)."),
        );
    }
    if !everywhere.is_empty() {
        let external: Vec<&String> = everywhere
            .iter()
            .filter(|n| !n.trim_end_matches('.').ends_with(".cluster.local") && !n.contains(".svc"))
            .collect();
        let cause = if external.len() == everywhere.len() {
            "Only names outside the cluster fail, on every CoreDNS pod: CoreDNS cannot reach or get answers from its upstream servers."
        } else {
            "Cluster names fail on every CoreDNS pod: CoreDNS itself is failing (plugin/kubernetes cannot read from the API server, or the pods are overloaded)."
        };
        out.push(
            Finding::new(
                "dns.resolution-failing",
                Severity::Critical,
                format!("DNS lookups fail from most nodes, through every server: {}", list_some(&everywhere, 4)),
            )
            .cause(cause)
            .next(format!("`kubectl -n {DNS_NAMESPACE} logs -l k8s-app=kube-dns --tail=50`; check the Corefile's forward targets.")),
        );
    }
    out
}

// ---------------------------------------------------------------------------------------------
// NetworkPolicy

fn policy_has_egress(p: &NetworkPolicy) -> bool {
    let Some(spec) = &p.spec else { return false };
    match &spec.policy_types {
        Some(types) => types.iter().any(|t| t == "Egress"),
        None => spec.egress.is_some(),
    }
}

fn port_allows(ports: Option<&Vec<NetworkPolicyPort>>, protocol: &str) -> bool {
    let Some(ports) = ports.filter(|p| !p.is_empty()) else {
        return true;
    };
    ports.iter().any(|p| {
        p.protocol.as_deref().unwrap_or("TCP") == protocol
            && match &p.port {
                None => true,
                Some(IntOrString::Int(n)) => {
                    *n == 53 || p.end_port.is_some_and(|end| *n <= 53 && 53 <= end)
                }
                // CoreDNS names its ports dns (UDP) and dns-tcp (TCP).
                Some(IntOrString::String(name)) => {
                    (protocol == "UDP" && name == "dns") || (protocol == "TCP" && name == "dns-tcp")
                }
            }
    })
}

fn cidr_contains(cidr: &str, ip: IpAddr) -> bool {
    let Some((net, len)) = cidr.split_once('/') else {
        return false;
    };
    let (Ok(net), Ok(len)) = (net.parse::<IpAddr>(), len.parse::<u32>()) else {
        return false;
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) if len <= 32 => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) if len <= 128 => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

/// What the checks know of CoreDNS: its pods' labels and IPs, and kube-system's labels.
struct DnsTarget {
    pod_labels: Vec<BTreeMap<String, String>>,
    ips: Vec<IpAddr>,
    ns_labels: BTreeMap<String, String>,
}

impl DnsTarget {
    fn of(s: &Snapshot) -> DnsTarget {
        let mut pod_labels: Vec<_> = s
            .coredns_pods
            .iter()
            .flatten()
            .map(|p| labels_of(&p.metadata))
            .collect();
        if pod_labels.is_empty() {
            pod_labels.push(BTreeMap::from([("k8s-app".into(), "kube-dns".into())]));
        }
        let mut ns_labels: BTreeMap<String, String> = s
            .dns_namespace
            .iter()
            .flatten()
            .flat_map(|n| labels_of(&n.metadata))
            .collect();
        // Set by the API server from 1.21 on; older clusters select kube-system by it too
        // once someone labels it, so treat it as present.
        ns_labels.insert("kubernetes.io/metadata.name".into(), DNS_NAMESPACE.into());
        DnsTarget {
            pod_labels,
            ips: coredns_ips(s),
            ns_labels,
        }
    }

    fn peer_allows(&self, policy_ns: &str, peer: &NetworkPolicyPeer) -> bool {
        if let Some(block) = &peer.ip_block {
            let covers = |ip: &IpAddr| {
                cidr_contains(&block.cidr, *ip)
                    && !block.except.iter().flatten().any(|e| cidr_contains(e, *ip))
            };
            return if self.ips.is_empty() {
                block.cidr == "0.0.0.0/0" || block.cidr == "::/0"
            } else {
                self.ips.iter().all(covers)
            };
        }
        let ns_ok = match &peer.namespace_selector {
            Some(sel) => selects(sel, &self.ns_labels),
            None => policy_ns == DNS_NAMESPACE,
        };
        let pods_ok = match &peer.pod_selector {
            Some(sel) => self.pod_labels.iter().any(|l| selects(sel, l)),
            None => true,
        };
        ns_ok && pods_ok
    }

    /// Whether the egress policies `policies` (all selecting one pod) let it reach CoreDNS on
    /// `protocol` port 53.
    fn allowed(&self, policies: &[&NetworkPolicy], protocol: &str) -> bool {
        policies.iter().any(|p| {
            let ns = p.metadata.namespace.as_deref().unwrap_or("");
            p.spec
                .iter()
                .flat_map(|s| s.egress.iter().flatten())
                .any(|rule| {
                    port_allows(rule.ports.as_ref(), protocol)
                        && match rule.to.as_ref().filter(|t| !t.is_empty()) {
                            None => true,
                            Some(peers) => peers.iter().any(|peer| self.peer_allows(ns, peer)),
                        }
                })
        })
    }
}

pub fn network_policies(s: &Snapshot) -> Vec<Finding> {
    let (Some(policies), Some(pods)) = (&s.network_policies, &s.namespace_pods) else {
        return Vec::new();
    };
    let ns = s.namespace.as_str();
    let policies: Vec<&NetworkPolicy> = policies
        .iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns))
        .collect();
    let pods: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let selected_by = |p: &NetworkPolicy, pod: &Pod| {
        // No podSelector (or an empty one) selects every pod of the namespace.
        p.spec.as_ref().is_some_and(|s| {
            s.pod_selector
                .as_ref()
                .is_none_or(|sel| selects(sel, &labels_of(&pod.metadata)))
        })
    };
    let dns = DnsTarget::of(s);
    let mut out = Vec::new();
    // pod -> (udp ok, tcp ok, egress policies)
    let mut blocked: BTreeMap<(bool, bool), (Vec<String>, BTreeSet<String>)> = BTreeMap::new();
    for pod in &pods {
        let egress: Vec<&NetworkPolicy> = policies
            .iter()
            .copied()
            .filter(|p| policy_has_egress(p) && selected_by(p, pod))
            .collect();
        if egress.is_empty() {
            continue;
        }
        let udp = dns.allowed(&egress, "UDP");
        let tcp = dns.allowed(&egress, "TCP");
        if udp && tcp {
            continue;
        }
        let entry = blocked.entry((udp, tcp)).or_default();
        entry.0.push(name(&pod.metadata));
        entry.1.extend(egress.iter().map(|p| name(&p.metadata)));
    }
    let fix = "Add an egress rule to the policy: `- to: [{namespaceSelector: {matchLabels: \
               {kubernetes.io/metadata.name: kube-system}}, podSelector: {matchLabels: {k8s-app: \
               kube-dns}}}]` with `ports: [{protocol: UDP, port: 53}, {protocol: TCP, port: 53}]` \
               (on clusters before 1.21, label kube-system first).";
    for ((udp, tcp), (pod_names, policy_names)) in blocked {
        let policy_names: Vec<String> = policy_names.into_iter().collect();
        let evidence = vec![
            format!(
                "egress policies selecting them: {}",
                policy_names.join(", ")
            ),
            format!("pods: {}", list_some(&pod_names, 8)),
            format!(
                "to kube-dns pods in {DNS_NAMESPACE}: UDP 53 {}, TCP 53 {}",
                if udp { "allowed" } else { "blocked" },
                if tcp { "allowed" } else { "blocked" }
            ),
        ];
        let finding = if !udp {
            Finding::new(
                "netpol.dns-egress-blocked",
                Severity::Critical,
                format!(
                    "NetworkPolicy {} blocks DNS for {} in namespace {ns}",
                    policy_names.join(", "),
                    plural(pod_names.len(), "pod", "pods")
                ),
            )
            .cause(format!(
                "The pods are selected for Egress and no rule allows UDP{} port 53 to the \
                 kube-dns pods: a default-deny-egress policy without a DNS exception. Every \
                 name lookup from these pods times out.",
                if tcp { "" } else { " or TCP" }
            ))
        } else {
            Finding::new(
                "netpol.dns-tcp-blocked",
                Severity::Warning,
                format!(
                    "NetworkPolicy {} allows DNS over UDP but not TCP for {} in namespace {ns}",
                    policy_names.join(", "),
                    plural(pod_names.len(), "pod", "pods")
                ),
            )
            .cause(
                "Answers larger than 512 bytes are truncated and retried over TCP port 53, \
                 which is blocked: large records and some clients fail intermittently.",
            )
        };
        out.push(finding.evidence(evidence).next(fix));
    }
    if !pods.is_empty() {
        let unused: Vec<String> = policies
            .iter()
            .filter(|p| !pods.iter().any(|pod| selected_by(p, pod)))
            .map(|p| name(&p.metadata))
            .collect();
        if !unused.is_empty() {
            out.push(
                Finding::new(
                    "netpol.selects-no-pods",
                    Severity::Warning,
                    format!(
                        "NetworkPolicy {} in namespace {ns} selects no pods",
                        unused.join(", ")
                    ),
                )
                .evidence(unused.iter().map(|n| {
                    let p = policies.iter().find(|p| &name(&p.metadata) == n);
                    let sel = p.and_then(|p| p.spec.as_ref()).map(|s| &s.pod_selector);
                    format!(
                        "{n}: podSelector {}",
                        sel.map(|s| serde_json::to_string(s).unwrap_or_default())
                            .unwrap_or_default()
                    )
                }))
                .evidence([format!("{} in the namespace", plural(pods.len(), "pod", "pods"))])
                .cause("The podSelector matches no pod's labels (a typo, or labels changed): the protection it was written for is not in force.")
                .next("Compare the podSelector with `kubectl -n NS get pods --show-labels`; fix the selector or delete the policy."),
            );
        }
    }
    out
}

/// Whether `peer` of an Ingress rule of a policy in `policy_ns` matches a client pod.
fn peer_selects_client(
    policy_ns: &str,
    peer: &NetworkPolicyPeer,
    client_ns: &str,
    client_ns_labels: &BTreeMap<String, String>,
    client: &Pod,
) -> bool {
    if let Some(block) = &peer.ip_block {
        let ips = pod_ips(client);
        return !ips.is_empty()
            && ips.iter().all(|ip| {
                cidr_contains(&block.cidr, *ip)
                    && !block.except.iter().flatten().any(|e| cidr_contains(e, *ip))
            });
    }
    let ns_ok = match &peer.namespace_selector {
        Some(sel) => selects(sel, client_ns_labels),
        None => policy_ns == client_ns,
    };
    let pod_ok = match &peer.pod_selector {
        Some(sel) => selects(sel, &labels_of(&client.metadata)),
        None => true,
    };
    ns_ok && pod_ok
}

/// Ingress policies in kube-system that select the CoreDNS pods and do not let the
/// namespace's pods query them: DNS breaks for that namespace (or for everyone).
pub fn coredns_ingress(s: &Snapshot) -> Vec<Finding> {
    let (Some(policies), Some(coredns), Some(clients)) =
        (&s.network_policies, &s.coredns_pods, &s.namespace_pods)
    else {
        return Vec::new();
    };
    let ns = s.namespace.as_str();
    let mut ns_labels: BTreeMap<String, String> = s
        .namespace_object
        .iter()
        .flatten()
        .flat_map(|n| labels_of(&n.metadata))
        .collect();
    ns_labels.insert("kubernetes.io/metadata.name".into(), ns.to_owned());
    let ingress: Vec<&NetworkPolicy> = policies
        .iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(DNS_NAMESPACE))
        .filter(|p| {
            p.spec
                .as_ref()
                .is_some_and(|spec| match &spec.policy_types {
                    Some(types) => types.iter().any(|t| t == "Ingress"),
                    None => true,
                })
        })
        .collect();
    let clients: Vec<&Pod> = clients
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    if ingress.is_empty() || clients.is_empty() {
        return Vec::new();
    }
    // (udp, tcp) -> (CoreDNS pods, policies) that refuse at least one client pod.
    let mut refused: BTreeMap<(bool, bool), (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
    let mut coredns_count = 0;
    for dns_pod in coredns
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        coredns_count += 1;
        let labels = labels_of(&dns_pod.metadata);
        let selecting: Vec<&NetworkPolicy> = ingress
            .iter()
            .copied()
            .filter(|p| {
                p.spec.as_ref().is_some_and(|spec| {
                    spec.pod_selector
                        .as_ref()
                        .is_none_or(|sel| selects(sel, &labels))
                })
            })
            .collect();
        if selecting.is_empty() {
            continue;
        }
        let allows = |client: &Pod, protocol: &str| {
            selecting.iter().any(|p| {
                p.spec
                    .iter()
                    .flat_map(|s| s.ingress.iter().flatten())
                    .any(|rule| {
                        port_allows(rule.ports.as_ref(), protocol)
                            && match rule.from.as_ref().filter(|f| !f.is_empty()) {
                                None => true,
                                Some(peers) => peers.iter().any(|peer| {
                                    peer_selects_client(DNS_NAMESPACE, peer, ns, &ns_labels, client)
                                }),
                            }
                    })
            })
        };
        for client in &clients {
            let (udp, tcp) = (allows(client, "UDP"), allows(client, "TCP"));
            if udp && tcp {
                continue;
            }
            let entry = refused.entry((udp, tcp)).or_default();
            entry.0.insert(name(&dns_pod.metadata));
            entry.1.extend(selecting.iter().map(|p| name(&p.metadata)));
        }
    }
    let mut out = Vec::new();
    for ((udp, _tcp), (dns_pods, policy_names)) in refused {
        let policy_names: Vec<String> = policy_names.into_iter().collect();
        let dns_pods: Vec<String> = dns_pods.into_iter().collect();
        let all = dns_pods.len() == coredns_count;
        let severity = if !udp && all {
            Severity::Critical
        } else {
            Severity::Warning
        };
        out.push(
            Finding::new(
                "netpol.dns-ingress-blocked",
                severity,
                format!(
                    "NetworkPolicy {} in {DNS_NAMESPACE} keeps pods of namespace {ns} from querying {} CoreDNS over {}",
                    policy_names.join(", "),
                    if all { "every" } else { "some" },
                    if udp { "TCP" } else { "UDP" }
                ),
            )
            .evidence([
                format!("ingress policies selecting CoreDNS: {}", policy_names.join(", ")),
                format!("CoreDNS pods refusing: {} of {coredns_count}: {}", dns_pods.len(), list_some(&dns_pods, 4)),
                format!("client namespace {ns} labels: {ns_labels:?}"),
            ])
            .cause("An ingress policy on the CoreDNS pods allows port 53 only from some sources, and this namespace's pods are not among them: their lookups time out (or retry on the replicas that still answer).")
            .next(format!(
                "Allow UDP and TCP 53 from every namespace in the policy: `ingress: [{{from: [{{namespaceSelector: {{}}}}], ports: [{{protocol: UDP, port: 53}}, {{protocol: TCP, port: 53}}]}}]` (kubectl -n {DNS_NAMESPACE} edit networkpolicy {}).",
                policy_names[0]
            )),
        );
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Services in the namespace

pub fn namespace_services(s: &Snapshot) -> Vec<Finding> {
    let (Some(services), Some(endpoints)) = (&s.namespace_services, &s.namespace_endpoints) else {
        return Vec::new();
    };
    let pods = s.namespace_pods.as_deref();
    let mut evidence = Vec::new();
    let mut names = Vec::new();
    for svc in services {
        let n = name(&svc.metadata);
        let Some(spec) = &svc.spec else { continue };
        let selector = spec.selector.clone().unwrap_or_default();
        if selector.is_empty() || spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        if s.namespace == DNS_NAMESPACE && n == DNS_SERVICE {
            continue; // dns.service-no-endpoints covers it
        }
        let ready = endpoints
            .iter()
            .filter(|e| name(&e.metadata) == n)
            .flat_map(|e| e.subsets.iter().flatten())
            .map(|s| s.addresses.as_ref().map_or(0, Vec::len))
            .sum::<usize>();
        if ready > 0 {
            continue;
        }
        let why = match pods {
            Some(pods) => {
                let matching: Vec<&Pod> = pods
                    .iter()
                    .filter(|p| {
                        let l = labels_of(&p.metadata);
                        selector.iter().all(|(k, v)| l.get(k) == Some(v))
                    })
                    .collect();
                if matching.is_empty() {
                    format!("no pod matches selector {selector:?}")
                } else {
                    format!(
                        "{} match, {} ready",
                        plural(matching.len(), "pod", "pods"),
                        matching.iter().filter(|p| pod_ready(p)).count()
                    )
                }
            }
            None => format!("selector {selector:?}"),
        };
        evidence.push(format!("service {n}: 0 ready endpoints ({why})"));
        names.push(n);
    }
    if names.is_empty() {
        return Vec::new();
    }
    vec![
        Finding::new(
            "service.no-ready-endpoints",
            Severity::Warning,
            format!(
                "{} in namespace {} without ready endpoints: {}",
                plural(names.len(), "Service", "Services"),
                s.namespace,
                list_some(&names, 4)
            ),
        )
        .evidence(evidence)
        .cause("Connections to these Services are refused or time out: no pod matches the selector, or none of the matching pods is ready.")
        .next("`kubectl -n NS describe service NAME` and `kubectl -n NS get pods -l SELECTOR`; fix the selector or the pods' readiness."),
    ]
}

// ---------------------------------------------------------------------------------------------
// Storage

pub fn csi_registration(s: &Snapshot) -> Vec<Finding> {
    let (Some(drivers), Some(csinodes)) = (&s.csi_drivers, &s.csi_nodes) else {
        return Vec::new();
    };
    let node_names: BTreeSet<String> = match &s.nodes {
        Some(nodes) => nodes.iter().map(|n| name(&n.metadata)).collect(),
        None => csinodes.iter().map(|n| name(&n.metadata)).collect(),
    };
    if node_names.is_empty() {
        return Vec::new();
    }
    let registered: BTreeMap<String, BTreeSet<String>> = csinodes
        .iter()
        .map(|n| {
            (
                name(&n.metadata),
                n.spec.drivers.iter().map(|d| d.name.clone()).collect(),
            )
        })
        .collect();
    let mut out = Vec::new();
    for driver in drivers {
        let d = name(&driver.metadata);
        let missing: Vec<String> = node_names
            .iter()
            .filter(|n| !registered.get(*n).is_some_and(|ds| ds.contains(&d)))
            .cloned()
            .collect();
        if missing.is_empty() {
            continue;
        }
        let everywhere = missing.len() == node_names.len();
        out.push(
            Finding::new(
                "storage.csi-node-missing",
                Severity::Warning,
                if everywhere {
                    format!("CSI driver {d} is registered on no node")
                } else {
                    format!(
                        "CSI driver {d} is not registered on {} of {} nodes: {}",
                        missing.len(),
                        node_names.len(),
                        list_some(&missing, 4)
                    )
                },
            )
            .evidence(missing.iter().map(|n| {
                format!(
                    "CSINode {n}: {}",
                    match registered.get(n) {
                        None => "no CSINode object".to_owned(),
                        Some(ds) if ds.is_empty() => "no drivers".to_owned(),
                        Some(ds) => format!(
                            "drivers {}",
                            ds.iter().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    }
                )
            }))
            .cause(format!(
                "The driver's node plugin (its DaemonSet pod with node-driver-registrar) is not \
                 running or not registered with the kubelet there; pods with {d} volumes \
                 scheduled on {} stay ContainerCreating.",
                if everywhere {
                    "any node"
                } else {
                    "those nodes"
                }
            ))
            .next(format!(
                "Find the driver's node DaemonSet (`kubectl get ds -A | grep -i csi`) and its pod \
                 on {}: logs of node-driver-registrar and the driver container.",
                missing[0]
            )),
        );
    }
    out
}

fn is_default_class(sc: &k8s_openapi::api::storage::v1::StorageClass) -> bool {
    sc.metadata.annotations.as_ref().is_some_and(|a| {
        a.get("storageclass.kubernetes.io/is-default-class")
            .or_else(|| a.get("storageclass.beta.kubernetes.io/is-default-class"))
            .is_some_and(|v| v == "true")
    })
}

pub fn storage_classes(s: &Snapshot) -> Vec<Finding> {
    let Some(classes) = &s.storage_classes else {
        return Vec::new();
    };
    let defaults: Vec<String> = classes
        .iter()
        .filter(|c| is_default_class(c))
        .map(|c| name(&c.metadata))
        .collect();
    match defaults.len() {
        1 => Vec::new(),
        0 => vec![
            Finding::new(
                "storage.no-default-class",
                // A cluster without any class has no dynamic provisioning at all: worth
                // knowing, not a fault by itself.
                if classes.is_empty() {
                    Severity::Info
                } else {
                    Severity::Warning
                },
                format!("No default StorageClass ({} StorageClasses)", classes.len()),
            )
            .evidence(classes.iter().map(|c| format!("StorageClass {} ({})", name(&c.metadata), c.provisioner)))
            .cause("PVCs without storageClassName stay Pending forever: nothing provisions them.")
            .next("Mark one class default: `kubectl annotate storageclass NAME storageclass.kubernetes.io/is-default-class=true`."),
        ],
        _ => vec![
            Finding::new(
                "storage.multiple-default-classes",
                Severity::Warning,
                format!("{} StorageClasses are marked default: {}", defaults.len(), defaults.join(", ")),
            )
            .evidence(defaults.iter().map(|d| format!("StorageClass {d}: is-default-class=true")))
            .cause("PVCs without storageClassName are rejected (before Kubernetes 1.26) or land on whichever default is newest: volumes end up on the wrong backend.")
            .next("Keep one: `kubectl annotate storageclass NAME storageclass.kubernetes.io/is-default-class=false --overwrite` on the others."),
        ],
    }
}

pub fn pvcs(s: &Snapshot) -> Vec<Finding> {
    let Some(pvcs) = &s.pvcs else {
        return Vec::new();
    };
    let events = s.pvc_events.as_deref().unwrap_or(&[]);
    let classes = s.storage_classes.as_deref();
    let default_class = classes.map(|cs| cs.iter().any(is_default_class));
    let now = k8s_openapi::jiff::Timestamp::now();
    // reason -> (pvc names, evidence, cause)
    let mut groups: BTreeMap<String, (Vec<String>, Vec<String>, String)> = BTreeMap::new();
    let mut waiting: Vec<(String, String)> = Vec::new();
    for pvc in pvcs {
        let phase = pvc.status.as_ref().and_then(|s| s.phase.as_deref());
        if !matches!(phase, None | Some("Pending")) {
            continue;
        }
        let ns = pvc.metadata.namespace.clone().unwrap_or_default();
        let n = name(&pvc.metadata);
        let q = format!("{ns}/{n}");
        let class = pvc.spec.as_ref().and_then(|s| s.storage_class_name.clone());
        let evs = events_of(events, "PersistentVolumeClaim", &ns, &n);
        let warning = evs
            .iter()
            .rev()
            .find(|e| e.type_.as_deref() == Some("Warning"));
        let class_obj = class
            .as_ref()
            .and_then(|c| classes?.iter().find(|sc| &name(&sc.metadata) == c));
        let (reason, cause) = if let Some(e) = warning {
            (
                e.reason.clone().unwrap_or_else(|| "Warning".into()),
                format!(
                    "The provisioner reports: {}",
                    e.message.as_deref().unwrap_or("").trim()
                ),
            )
        } else if let (Some(c), Some(_)) = (&class, classes) {
            if class_obj.is_none() && !c.is_empty() {
                (
                    "StorageClassNotFound".into(),
                    format!("StorageClass {c} does not exist, so nothing provisions the claim."),
                )
            } else {
                let wait = class_obj.is_some_and(|sc| {
                    sc.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer")
                });
                let age = pvc
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| now.duration_since(t.0).as_secs())
                    .unwrap_or(0);
                if !wait
                    && age >= 300
                    && pvc
                        .spec
                        .as_ref()
                        .and_then(|s| s.volume_name.as_ref())
                        .is_none()
                {
                    waiting.push((
                        q.clone(),
                        class_obj
                            .map(|sc| sc.provisioner.clone())
                            .unwrap_or_default(),
                    ));
                }
                continue;
            }
        } else if class.is_none() && default_class == Some(false) {
            (
                "NoDefaultStorageClass".into(),
                "The claim names no StorageClass and none is default.".into(),
            )
        } else {
            continue;
        };
        let entry = groups
            .entry(reason)
            .or_insert_with(|| (Vec::new(), Vec::new(), cause.clone()));
        entry.0.push(q.clone());
        entry.1.push(format!(
            "PVC {q} Pending (class {})",
            class.as_deref().unwrap_or("<default>")
        ));
        entry.1.extend(
            evs.iter()
                .rev()
                .take(3)
                .map(|e| format!("  {}", event_line(e))),
        );
    }
    let mut out = Vec::new();
    for (reason, (names, evidence, cause)) in groups {
        out.push(
            Finding::new(
                "storage.pvc-pending",
                Severity::Critical,
                if names.len() == 1 {
                    format!("PVC {} Pending: {reason}", names[0])
                } else {
                    format!("{} PVCs Pending: {reason}", names.len())
                },
            )
            .evidence(evidence)
            .cause(cause)
            .next(format!(
                "`kubectl -n {} describe pvc {}`; check the provisioner's controller logs (the \
                 CSI driver's external-provisioner) and the StorageClass parameters.",
                names[0].split('/').next().unwrap_or(""),
                names[0].split('/').nth(1).unwrap_or("")
            )),
        );
    }
    if !waiting.is_empty() {
        out.push(
            Finding::new(
                "storage.pvc-pending",
                Severity::Warning,
                format!(
                    "{} Pending for over 5 minutes without an error event",
                    plural(waiting.len(), "PVC", "PVCs")
                ),
            )
            .evidence(waiting.iter().map(|(q, p)| format!("PVC {q}: provisioner {p}")))
            .cause("Nothing has acted on the claims: the provisioner's controller is not running.")
            .next("Check the CSI controller Deployment (external-provisioner sidecar) for the class's provisioner."),
        );
    }
    out
}

pub fn pvs(s: &Snapshot) -> Vec<Finding> {
    let Some(pvs) = &s.pvs else {
        return Vec::new();
    };
    let phase_of = |pv: &k8s_openapi::api::core::v1::PersistentVolume| {
        pv.status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default()
    };
    let line = |pv: &k8s_openapi::api::core::v1::PersistentVolume| {
        let status = pv.status.as_ref();
        format!(
            "PV {} {}: {} (claim {}, reclaim {})",
            name(&pv.metadata),
            phase_of(pv),
            status
                .and_then(|s| s.message.clone().or_else(|| s.reason.clone()))
                .unwrap_or_default(),
            pv.spec
                .as_ref()
                .and_then(|s| s.claim_ref.as_ref())
                .map(|c| format!(
                    "{}/{}",
                    c.namespace.as_deref().unwrap_or(""),
                    c.name.as_deref().unwrap_or("")
                ))
                .unwrap_or_else(|| "-".into()),
            pv.spec
                .as_ref()
                .and_then(|s| s.persistent_volume_reclaim_policy.clone())
                .unwrap_or_default()
        )
    };
    let failed: Vec<_> = pvs.iter().filter(|p| phase_of(p) == "Failed").collect();
    let released: Vec<_> = pvs.iter().filter(|p| phase_of(p) == "Released").collect();
    let mut out = Vec::new();
    if !failed.is_empty() {
        out.push(
            Finding::new(
                "storage.pv-failed",
                Severity::Warning,
                format!("{} Failed", plural(failed.len(), "PersistentVolume", "PersistentVolumes")),
            )
            .evidence(failed.iter().map(|p| line(p)))
            .cause("Automatic reclamation (delete or recycle) of the volume failed; the backend volume may still exist and cost money.")
            .next("Read the PV's status message; delete the backend volume by hand if needed, then `kubectl delete pv NAME`."),
        );
    }
    if !released.is_empty() {
        out.push(
            Finding::new(
                "storage.pv-released",
                Severity::Info,
                format!("{} Released (claim deleted, data retained)", plural(released.len(), "PersistentVolume", "PersistentVolumes")),
            )
            .evidence(released.iter().map(|p| line(p)))
            .cause("The claim was deleted and the reclaim policy is Retain: the volume is not reused until someone clears its claimRef.")
            .next("Back up or delete the data, then delete the PV, or remove spec.claimRef to make it Available again."),
        );
    }
    out
}

pub fn volume_attachments(s: &Snapshot) -> Vec<Finding> {
    let Some(vas) = &s.volume_attachments else {
        return Vec::new();
    };
    let mut attach = Vec::new();
    let mut detach = Vec::new();
    for va in vas {
        let pv = va
            .spec
            .source
            .persistent_volume_name
            .clone()
            .unwrap_or_default();
        let status = va.status.as_ref();
        if let Some(e) = status.and_then(|s| s.attach_error.as_ref()) {
            attach.push(format!(
                "VolumeAttachment {} (PV {pv}, node {}, driver {}): {}",
                name(&va.metadata),
                va.spec.node_name,
                va.spec.attacher,
                e.message.as_deref().unwrap_or("")
            ));
        }
        if let Some(e) = status.and_then(|s| s.detach_error.as_ref()) {
            detach.push(format!(
                "VolumeAttachment {} (PV {pv}, node {}): {}",
                name(&va.metadata),
                va.spec.node_name,
                e.message.as_deref().unwrap_or("")
            ));
        }
    }
    let mut out = Vec::new();
    if !attach.is_empty() {
        out.push(
            Finding::new(
                "storage.attach-error",
                Severity::Critical,
                format!("{} failing to attach", plural(attach.len(), "volume", "volumes")),
            )
            .evidence(attach)
            .cause("The CSI controller cannot attach the volume to the node (backend error, volume still attached elsewhere, or node limit reached); the pods using it stay ContainerCreating.")
            .next("Read the error; check the CSI controller's external-attacher logs and whether the volume is still attached to another node in the backend."),
        );
    }
    if !detach.is_empty() {
        out.push(
            Finding::new(
                "storage.detach-error",
                Severity::Warning,
                format!("{} failing to detach", plural(detach.len(), "volume", "volumes")),
            )
            .evidence(detach)
            .cause("The volume cannot be detached from its old node: the next pod using it elsewhere cannot attach it (Multi-Attach error).")
            .next("Check the CSI controller's external-attacher logs; if the node is gone, detach in the backend and delete the VolumeAttachment."),
        );
    }
    out
}

/// What each storage probe result means.
fn storage_result_meaning(result: &str) -> (&'static str, &'static str) {
    match result {
        "enospc" => (
            "The volume is full (ENOSPC).",
            "Free space or grow the volume (`kubectl edit pvc` if the class allows expansion).",
        ),
        "erofs" => (
            "The filesystem is read-only (EROFS): usually remounted read-only after I/O errors in the backend.",
            "Check the node's kernel log (`dmesg`) for I/O errors; the volume may need fsck and a remount.",
        ),
        "eio" => (
            "The device returns I/O errors (EIO): failing disk or storage backend.",
            "Check `dmesg` on the node and the storage backend's health.",
        ),
        "timeout" => (
            "Storage operations hang past the probe's timeout: the backend or the path to it is stalled.",
            "Check the storage backend and the network to it (iSCSI/NFS/Ceph sessions) from that node.",
        ),
        "checksum_mismatch" => (
            "Data read back differs from what was written: silent corruption.",
            "Take the volume out of service and check the backend; do not trust data on it.",
        ),
        "permission_denied" => (
            "The probe may not write to the volume: ownership, fsGroup or SELinux labels.",
            "Check the volume's ownership and the pod's securityContext.",
        ),
        "insufficient_space" => (
            "Too little free space to run the probe.",
            "Free space on the volume or lower the probe size.",
        ),
        _ => (
            "The storage probe fails.",
            "Read the kube-netprobe logs on those nodes.",
        ),
    }
}

pub fn storage_probes(s: &Snapshot) -> Vec<Finding> {
    // result -> lines
    let mut by_result: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for scrape in &s.probe_scrapes {
        let Some(text) = &scrape.text else { continue };
        let samples: Vec<Sample> = scrape::parse(text);
        for failing in samples
            .iter()
            .filter(|x| x.name == "netprobe_storage_probe_success" && x.value < 1.0)
        {
            let volume = failing.label("volume");
            let results: Vec<(&str, f64)> = samples
                .iter()
                .filter(|x| {
                    x.name == "netprobe_storage_probes_total"
                        && x.label("volume") == volume
                        && x.label("result") != "success"
                        && x.value > 0.0
                })
                .map(|x| (x.label("result"), x.value))
                .collect();
            let dominant = results
                .iter()
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(r, _)| r.to_string())
                .unwrap_or_else(|| "error".into());
            by_result.entry(dominant).or_default().push(format!(
                "node {} volume {volume}: failing; results so far: {}",
                scrape.node,
                results
                    .iter()
                    .map(|(r, n)| format!("{r}={n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    by_result
        .into_iter()
        .map(|(result, lines)| {
            let (cause, next) = storage_result_meaning(&result);
            Finding::new(
                "storage.probe-failing",
                if result == "insufficient_space" {
                    Severity::Warning
                } else {
                    Severity::Critical
                },
                format!(
                    "Storage probe failing ({result}) on {}",
                    plural(lines.len(), "volume", "volumes")
                ),
            )
            .evidence(lines)
            .cause(cause)
            .next(next)
        })
        .collect()
}

/// `--storage-test`: the PVC and Job diagnose created.
pub fn storage_test(s: &Snapshot) -> Vec<Finding> {
    let Some(t) = &s.storage_test else {
        return Vec::new();
    };
    let class = t.storage_class.as_deref().unwrap_or("<default>");
    let what = format!(
        "PVC and Job {}/{} on StorageClass {class}",
        t.namespace, t.pvc
    );
    let mut out = Vec::new();
    let result = t
        .probe
        .as_ref()
        .and_then(|p| p["result"].as_str())
        .map(str::to_owned);
    match (t.status.as_str(), result.as_deref()) {
        ("succeeded", Some("success")) => {}
        ("not_created", _) => out.push(
            Finding::new(
                "storage.test-not-run",
                Severity::Warning,
                "The storage test could not be started",
            )
            .evidence([t.detail.clone().unwrap_or_default()])
            .cause("Creating the test PVC or Job failed (often RBAC: create persistentvolumeclaims and jobs.batch in the namespace).")
            .next("Grant the create rights for the namespace, or run without --storage-test."),
        ),
        (_, Some(r)) if r != "success" => {
            let (cause, next) = storage_result_meaning(r);
            out.push(
                Finding::new(
                    "storage.test-failed",
                    Severity::Critical,
                    format!("Storage test on StorageClass {class} failed: {r}"),
                )
                .evidence([what.clone()])
                .evidence(t.probe.iter().map(|p| format!("probe: {p}")))
                .cause(cause)
                .next(next),
            );
        }
        ("failed", _) | ("succeeded", _) => out.push(
            Finding::new(
                "storage.test-failed",
                Severity::Warning,
                format!("Storage test Job on StorageClass {class} ended without a probe result"),
            )
            .evidence([what.clone(), format!("Job status: {}", t.status)])
            .cause("The probe container failed before printing its result: the image could not run, or the volume mount failed.")
            .next(format!("Run again and `kubectl -n {} describe pod -l job-name={}` before it is cleaned up, or use --collect-only with a longer --storage-test-timeout.", t.namespace, t.job)),
        ),
        ("timeout", _) if matches!(t.pvc_phase.as_deref(), None | Some("Pending")) => out.push(
            Finding::new(
                "storage.test-pvc-pending",
                Severity::Critical,
                format!(
                    "Storage test PVC on StorageClass {class} stayed Pending for {:.0}s: dynamic provisioning does not work",
                    t.seconds
                ),
            )
            .evidence([what.clone()])
            .evidence(t.pvc_events.iter().cloned())
            .cause("Nothing provisioned a volume for a new claim: the class's provisioner (CSI controller / external-provisioner) is not running or fails (see the events, if any).")
            .next("Check the provisioner's controller Deployment and logs for the class; `kubectl get storageclass` for its provisioner name."),
        ),
        ("timeout", _) => out.push(
            Finding::new(
                "storage.test-timeout",
                Severity::Warning,
                format!("Storage test Job on StorageClass {class} did not finish within {:.0}s", t.seconds),
            )
            .evidence([what.clone(), format!("PVC phase: {}", t.pvc_phase.as_deref().unwrap_or("?"))])
            .cause("The volume was provisioned but the probe pod did not run to completion: not scheduled, image not pulled, or the volume not attached or mounted.")
            .next("Run again with a longer --storage-test-timeout and watch `kubectl get pods -l job-name=...` and its events."),
        ),
        _ => {}
    }
    if !t.cleanup_errors.is_empty() {
        out.push(
            Finding::new(
                "storage.test-cleanup-failed",
                Severity::Warning,
                "The storage test's objects could not all be deleted",
            )
            .evidence(t.cleanup_errors.iter().cloned())
            .cause("A delete call failed or timed out.")
            .next(format!(
                "`kubectl -n {} delete job,pvc -l app.kubernetes.io/name=kube-netprobe-storage-test`",
                t.namespace
            )),
        );
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Collection gaps

pub fn collection(s: &Snapshot) -> Vec<Finding> {
    if s.errors.is_empty() {
        return Vec::new();
    }
    let rules: BTreeSet<&String> = s
        .errors
        .iter()
        .filter_map(|e| e.missing_rbac.as_ref())
        .collect();
    let mut evidence: Vec<String> = rules.iter().map(|r| format!("missing RBAC: {r}")).collect();
    evidence.extend(
        s.errors
            .iter()
            .map(|e| format!("failed: `{}`: {} ({})", e.call, e.reason, e.message)),
    );
    vec![Finding::new(
        "collect.partial",
        Severity::Warning,
        format!(
            "Partial report: {} failed{}",
            plural(s.errors.len(), "API read", "API reads"),
            if rules.is_empty() {
                String::new()
            } else {
                format!(" ({} missing)", plural(rules.len(), "RBAC rule", "RBAC rules"))
            }
        ),
    )
    .evidence(evidence)
    .cause(if rules.is_empty() {
        "The API server failed or timed out on these reads (logs need a reachable kubelet; /metrics needs the pod reachable from the API server)."
    } else {
        "The identity running diagnose lacks read access to some objects; the checks that need them were skipped, so absent findings there prove nothing."
    })
    .next(if rules.is_empty() {
        "Retry with a longer --timeout; for logs, pass them with --coredns-logs FILE."
    } else {
        "Grant the rules listed (the ClusterRole in docs/diagnose.md) or run with a kubeconfig that has them."
    })]
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::collect::{ProbeScrape, ReadError};
    use super::*;

    fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).expect("valid object")
    }

    fn coredns_pod(name: &str, ready: bool, restarts: i32, last: Option<&str>) -> Pod {
        let mut cs = json!({"name": "coredns", "ready": ready, "restartCount": restarts,
            "image": "coredns", "imageID": "", "state": {"running": {}}});
        if let Some(reason) = last {
            cs["lastState"] = json!({"terminated": {"reason": reason, "exitCode": 137}});
            cs["state"] = json!({"waiting": {"reason": "CrashLoopBackOff"}});
        }
        obj(json!({
            "metadata": {"name": name, "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
            "spec": {"nodeName": "node-a", "containers": [{"name": "coredns"}]},
            "status": {"phase": "Running", "podIP": format!("10.244.0.{}", 10 + name.len()),
                "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}],
                "containerStatuses": [cs]}
        }))
    }

    fn app_pod(name: &str, labels: serde_json::Value) -> Pod {
        obj(
            json!({"metadata": {"name": name, "namespace": "shop", "labels": labels},
            "spec": {"nodeName": "node-a", "containers": [{"name": "app"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
        )
    }

    fn node(
        name: &str,
        ready: &str,
        network_unavailable: bool,
    ) -> k8s_openapi::api::core::v1::Node {
        obj(
            json!({"metadata": {"name": name}, "status": {"conditions": [
            {"type": "Ready", "status": ready, "reason": "KubeletReady"},
            {"type": "NetworkUnavailable", "status": if network_unavailable {"True"} else {"False"},
             "reason": "NoRouteCreated"}]}}),
        )
    }

    /// A small healthy cluster: two ready CoreDNS pods behind kube-dns, a Corefile that
    /// forwards upstream, two ready nodes with the CSI driver, one default class, a bound PVC.
    fn healthy() -> Snapshot {
        Snapshot {
            namespace: "shop".into(),
            server: "https://127.0.0.1:6443".into(),
            coredns_pods: Some(vec![
                coredns_pod("coredns-a", true, 0, None),
                coredns_pod("coredns-bb", true, 0, None),
            ]),
            coredns_events: Some(vec![]),
            coredns_logs: Some(BTreeMap::from([(
                "coredns-a".into(),
                include_str!("../../tests/fixtures/diagnose/coredns-healthy.log").into(),
            )])),
            corefile: Some(Some(
                ".:53 {\n    errors\n    kubernetes cluster.local in-addr.arpa ip6.arpa\n    forward . /etc/resolv.conf {\n       max_concurrent 1000\n    }\n    cache 30\n    loop\n}\n".into(),
            )),
            kube_dns_service: Some(Some(obj(json!({"metadata": {"name": "kube-dns", "namespace": "kube-system"},
                "spec": {"clusterIP": "10.96.0.10", "selector": {"k8s-app": "kube-dns"}}})))),
            kube_dns_endpoints: Some(Some(obj(json!({"metadata": {"name": "kube-dns", "namespace": "kube-system"},
                "subsets": [{"addresses": [{"ip": "10.244.0.19"}, {"ip": "10.244.0.20"}],
                    "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}]})))),
            dns_namespace: Some(Some(obj(json!({"metadata": {"name": "kube-system"}})))),
            network_policies: Some(vec![]),
            namespace_object: Some(Some(obj(json!({"metadata": {"name": "shop", "labels": {"team": "shop"}}})))),
            namespace_pods: Some(vec![app_pod("web-1", json!({"app": "web"}))]),
            namespace_services: Some(vec![obj(json!({"metadata": {"name": "web", "namespace": "shop"},
                "spec": {"selector": {"app": "web"}}}))]),
            namespace_endpoints: Some(vec![obj(json!({"metadata": {"name": "web", "namespace": "shop"},
                "subsets": [{"addresses": [{"ip": "10.244.1.5"}]}]}))]),
            nodes: Some(vec![node("node-a", "True", false), node("node-b", "True", false)]),
            csi_drivers: Some(vec![obj(json!({"metadata": {"name": "csi.example.com"}, "spec": {}}))]),
            csi_nodes: Some(
                ["node-a", "node-b"]
                    .iter()
                    .map(|n| obj(json!({"metadata": {"name": n}, "spec": {"drivers": [
                        {"name": "csi.example.com", "nodeID": n}]}})))
                    .collect(),
            ),
            storage_classes: Some(vec![obj(json!({"metadata": {"name": "fast", "annotations":
                {"storageclass.kubernetes.io/is-default-class": "true"}}, "provisioner": "csi.example.com"}))]),
            pvs: Some(vec![obj(json!({"metadata": {"name": "pv-1"}, "spec": {}, "status": {"phase": "Bound"}}))]),
            pvcs: Some(vec![obj(json!({"metadata": {"name": "data", "namespace": "shop"},
                "spec": {"storageClassName": "fast"}, "status": {"phase": "Bound"}}))]),
            pvc_events: Some(vec![]),
            volume_attachments: Some(vec![]),
            netprobe_pods: Some(vec![]),
            probe_scrapes: vec![],
            storage_test: None,
            errors: vec![],
        }
    }

    fn ids(findings: &[Finding]) -> Vec<&'static str> {
        findings.iter().map(|f| f.id).collect()
    }

    #[test]
    fn healthy_cluster_has_no_findings() {
        assert_eq!(analyse(&healthy()), vec![]);
    }

    #[test]
    fn coredns_not_ready_and_oom_restarting() {
        let mut s = healthy();
        s.coredns_pods = Some(vec![
            coredns_pod("coredns-a", false, 7, Some("OOMKilled")),
            coredns_pod("coredns-bb", false, 5, Some("OOMKilled")),
        ]);
        s.kube_dns_endpoints = Some(Some(obj(json!({"metadata": {"name": "kube-dns"},
            "subsets": [{"notReadyAddresses": [{"ip": "10.244.0.19"}]}]}))));
        let f = analyse(&s);
        assert_eq!(
            ids(&f),
            [
                "dns.coredns-not-ready",
                "dns.service-no-endpoints",
                "dns.coredns-restarting"
            ]
        );
        assert_eq!(f[0].severity, Severity::Critical);
        assert_eq!(f[0].title, "CoreDNS: 0 of 2 pods ready");
        assert!(f[0].cause.contains("OOM"), "{}", f[0].cause);
        assert!(
            f[1].cause.contains("No CoreDNS pod is ready"),
            "{}",
            f[1].cause
        );
        assert!(f[2].title.contains("OOMKilled"), "{}", f[2].title);
    }

    #[test]
    fn coredns_on_a_broken_node_points_at_the_node() {
        let mut s = healthy();
        s.nodes = Some(vec![
            node("node-a", "True", true),
            node("node-b", "True", false),
        ]);
        s.coredns_pods = Some(vec![
            coredns_pod("coredns-a", false, 0, None),
            coredns_pod("coredns-bb", true, 0, None),
        ]);
        let f = analyse(&s);
        assert_eq!(
            ids(&f),
            ["network.node-network-unavailable", "dns.coredns-not-ready"]
        );
        assert!(f[1].cause.contains("node-a"), "{}", f[1].cause);
    }

    #[test]
    fn evicted_and_terminating_coredns_pods_are_not_replicas() {
        let mut s = healthy();
        let mut evicted = coredns_pod("coredns-old", false, 0, None);
        evicted.status.as_mut().unwrap().phase = Some("Failed".into());
        let mut leaving = coredns_pod("coredns-leaving", false, 0, None);
        leaving.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        s.coredns_pods
            .as_mut()
            .unwrap()
            .extend([evicted.clone(), leaving]);
        assert_eq!(analyse(&s), vec![]);
        s.coredns_pods = Some(vec![evicted]);
        let f = coredns_pods(&s);
        assert_eq!(ids(&f), ["dns.coredns-missing"]);
    }

    #[test]
    fn old_restarts_are_history() {
        let mut s = healthy();
        let mut pod = coredns_pod("coredns-a", true, 9, None);
        let status = pod.status.as_mut().unwrap();
        status.container_statuses.as_mut().unwrap()[0].last_state = Some(obj(json!({
            "terminated": {"reason": "Error", "exitCode": 1, "finishedAt": "2020-01-01T00:00:00Z"}})));
        s.coredns_pods = Some(vec![pod, coredns_pod("coredns-bb", true, 0, None)]);
        assert_eq!(analyse(&s), vec![]);
    }

    #[test]
    fn one_of_two_coredns_not_ready_is_a_warning() {
        let mut s = healthy();
        s.coredns_pods = Some(vec![
            coredns_pod("coredns-a", true, 0, None),
            coredns_pod("coredns-bb", false, 0, None),
        ]);
        let f = analyse(&s);
        assert_eq!(ids(&f), ["dns.coredns-not-ready"]);
        assert_eq!(f[0].severity, Severity::Warning);
    }

    #[test]
    fn kube_dns_service_missing() {
        let mut s = healthy();
        s.kube_dns_service = Some(None);
        s.kube_dns_endpoints = Some(None);
        let f = analyse(&s);
        assert_eq!(ids(&f), ["dns.service-missing"]);
        assert_eq!(f[0].severity, Severity::Critical);
    }

    #[test]
    fn kube_dns_without_endpoints_names_the_selector_mismatch() {
        let mut s = healthy();
        s.kube_dns_endpoints = Some(Some(obj(json!({"metadata": {"name": "kube-dns"}}))));
        s.kube_dns_service = Some(Some(obj(json!({"metadata": {"name": "kube-dns"},
            "spec": {"clusterIP": "10.96.0.10", "selector": {"k8s-app": "coredns"}}}))));
        let f = analyse(&s);
        assert_eq!(ids(&f), ["dns.service-no-endpoints"]);
        assert!(f[0].cause.contains("matches none"), "{}", f[0].cause);
    }

    /// The log analyser on fixture log files (the test apiserver has no kubelet, so logs never
    /// come through the API there).
    #[test]
    fn coredns_log_patterns_from_fixture_files() {
        let cases = [
            (
                "coredns-loop.log",
                include_str!("../../tests/fixtures/diagnose/coredns-loop.log"),
                vec!["dns.log-loop"],
            ),
            (
                "coredns-upstream-timeout.log",
                include_str!("../../tests/fixtures/diagnose/coredns-upstream-timeout.log"),
                vec!["dns.log-upstream-timeout"],
            ),
            (
                "coredns-servfail.log",
                include_str!("../../tests/fixtures/diagnose/coredns-servfail.log"),
                vec!["dns.log-servfail"],
            ),
            (
                "coredns-healthy.log",
                include_str!("../../tests/fixtures/diagnose/coredns-healthy.log"),
                vec![],
            ),
        ];
        for (file, text, want) in cases {
            let mut s = healthy();
            s.coredns_logs = Some(BTreeMap::from([(file.to_owned(), text.to_owned())]));
            let f = coredns_logs(&s);
            assert_eq!(ids(&f), want, "{file}");
        }
        let mut s = healthy();
        s.coredns_logs = Some(BTreeMap::from([(
            "x".into(),
            include_str!("../../tests/fixtures/diagnose/coredns-upstream-timeout.log").into(),
        )]));
        let f = coredns_logs(&s);
        assert_eq!(
            f[0].title,
            "CoreDNS times out talking to its upstream servers (i/o timeout): 3 lines"
        );
        assert!(f[0].evidence.iter().any(|e| e.contains("->10.0.0.2:53")));
    }

    #[test]
    fn corefile_without_forward_or_forwarding_to_itself() {
        let mut s = healthy();
        s.corefile = Some(Some(
            ".:53 {\n    kubernetes cluster.local\n    cache 30\n}\n".into(),
        ));
        assert_eq!(ids(&corefile(&s)), ["dns.corefile-no-forward"]);
        for target in [
            "127.0.0.1",
            "10.96.0.10:53",
            "[::1]:53",
            "8.8.8.8 127.0.0.53",
        ] {
            s.corefile = Some(Some(format!(
                ".:53 {{\n    forward . {target} {{\n    }}\n}}\n"
            )));
            let f = corefile(&s);
            assert_eq!(ids(&f), ["dns.corefile-forward-loop"], "{target}");
            assert_eq!(f[0].severity, Severity::Critical);
        }
        s.corefile = Some(Some(".:53 {\n    forward . 8.8.8.8 1.1.1.1\n}\n".into()));
        assert_eq!(corefile(&s), vec![]);
        s.corefile = Some(None);
        assert_eq!(corefile(&s)[0].severity, Severity::Info);
    }

    fn policy(name: &str, spec: serde_json::Value) -> NetworkPolicy {
        obj(json!({"metadata": {"name": name, "namespace": "shop"}, "spec": spec}))
    }

    #[test]
    fn default_deny_egress_blocks_dns() {
        let mut s = healthy();
        s.network_policies = Some(vec![policy(
            "default-deny-egress",
            json!({"podSelector": {}, "policyTypes": ["Egress"]}),
        )]);
        let f = analyse(&s);
        assert_eq!(ids(&f), ["netpol.dns-egress-blocked"]);
        assert_eq!(f[0].severity, Severity::Critical);
        assert!(f[0].title.contains("default-deny-egress"), "{}", f[0].title);
        assert!(
            f[0].evidence
                .iter()
                .any(|e| e.contains("UDP 53 blocked, TCP 53 blocked"))
        );
    }

    #[test]
    fn policies_that_allow_dns_raise_nothing() {
        let deny = policy(
            "deny",
            json!({"podSelector": {}, "policyTypes": ["Egress"]}),
        );
        let allows = [
            json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]}),
            json!({"podSelector": {"matchLabels": {"app": "web"}}, "egress": [{
                "ports": [{"protocol": "UDP", "port": "dns"}, {"protocol": "TCP", "port": "dns-tcp"}]}]}),
            json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": "10.244.0.0/16"}}]}]}),
            json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}),
        ];
        for allow in allows {
            let mut s = healthy();
            s.network_policies = Some(vec![deny.clone(), policy("allow-dns", allow.clone())]);
            assert_eq!(network_policies(&s), vec![], "{allow}");
        }
    }

    #[test]
    fn udp_only_or_wrong_namespace_or_excepted_block() {
        let mut s = healthy();
        s.network_policies = Some(vec![policy(
            "udp-only",
            json!({"podSelector": {}, "policyTypes": ["Egress"],
            "egress": [{"ports": [{"protocol": "UDP", "port": 53}]}]}),
        )]);
        let f = network_policies(&s);
        assert_eq!(ids(&f), ["netpol.dns-tcp-blocked"]);
        assert_eq!(f[0].severity, Severity::Warning);
        // A podSelector alone means the policy's own namespace, not kube-system.
        s.network_policies = Some(vec![policy(
            "same-ns",
            json!({"podSelector": {}, "policyTypes": ["Egress"],
            "egress": [{"to": [{"podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]}]}),
        )]);
        assert_eq!(ids(&network_policies(&s)), ["netpol.dns-egress-blocked"]);
        // Port 53 without a protocol is TCP only.
        s.network_policies = Some(vec![policy(
            "tcp-default",
            json!({"podSelector": {}, "policyTypes": ["Egress"],
            "egress": [{"ports": [{"port": 53}]}]}),
        )]);
        assert_eq!(ids(&network_policies(&s)), ["netpol.dns-egress-blocked"]);
        s.network_policies = Some(vec![policy(
            "except",
            json!({"podSelector": {}, "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.244.0.0/16"]}}]}]}),
        )]);
        assert_eq!(ids(&network_policies(&s)), ["netpol.dns-egress-blocked"]);
        // Ingress-only policies never touch DNS.
        s.network_policies = Some(vec![policy(
            "ingress",
            json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
        )]);
        assert_eq!(network_policies(&s), vec![]);
    }

    #[test]
    fn ingress_policy_on_coredns() {
        let kube_system = |name: &str, spec: serde_json::Value| -> NetworkPolicy {
            obj(json!({"metadata": {"name": name, "namespace": "kube-system"}, "spec": spec}))
        };
        let mut s = healthy();
        // Only namespaces labelled team=platform may query CoreDNS.
        s.network_policies = Some(vec![kube_system(
            "dns-from-platform",
            json!({
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}, "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "platform"}}}],
                         "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]}),
        )]);
        let f = analyse(&s);
        assert_eq!(ids(&f), ["netpol.dns-ingress-blocked"]);
        assert_eq!(f[0].severity, Severity::Critical);
        assert!(f[0].title.contains("dns-from-platform"), "{}", f[0].title);
        // From every namespace: fine.
        s.network_policies = Some(vec![kube_system(
            "dns-from-all",
            json!({
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}, "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"namespaceSelector": {}}],
                         "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]}),
        )]);
        assert_eq!(analyse(&s), vec![]);
        // Selecting by this namespace's label: fine.
        s.network_policies = Some(vec![kube_system(
            "dns-from-shop",
            json!({
            "podSelector": {}, "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "shop"}}}]}]}),
        )]);
        assert_eq!(analyse(&s), vec![]);
    }

    #[test]
    fn policy_selecting_no_pods() {
        let mut s = healthy();
        s.network_policies = Some(vec![policy(
            "typo",
            json!({"podSelector": {"matchLabels": {"app": "wbe"}},
            "policyTypes": ["Ingress"]}),
        )]);
        let f = analyse(&s);
        assert_eq!(ids(&f), ["netpol.selects-no-pods"]);
        assert!(f[0].title.contains("typo"));
    }

    #[test]
    fn service_without_ready_endpoints() {
        let mut s = healthy();
        s.namespace_endpoints = Some(vec![]);
        let f = analyse(&s);
        assert_eq!(ids(&f), ["service.no-ready-endpoints"]);
        assert!(
            f[0].evidence[0].contains("1 pod match, 1 ready"),
            "{:?}",
            f[0].evidence
        );
    }

    #[test]
    fn nodes_network_unavailable_and_not_ready() {
        let mut s = healthy();
        s.nodes = Some(vec![
            node("node-a", "True", true),
            node("node-b", "Unknown", false),
        ]);
        s.csi_nodes = Some(vec![]);
        s.csi_drivers = Some(vec![]);
        let f = analyse(&s);
        assert_eq!(
            ids(&f),
            ["network.node-network-unavailable", "network.node-not-ready"]
        );
        assert!(f[0].title.contains("node-a") && !f[0].title.contains("node-b"));
        assert!(f[1].evidence[0].starts_with("node node-b: Ready=Unknown"));
    }

    /// /metrics text as a kube-netprobe pod serves it (peer, DNS and storage families).
    fn metrics(peers: &[(&str, &str, bool)], extra: &str) -> String {
        let mut t = String::from("# TYPE netprobe_peer_up gauge\n");
        for (target, protocol, up) in peers {
            t.push_str(&format!(
                "netprobe_peer_up{{target_node=\"{target}\",protocol=\"{protocol}\",family=\"ipv4\"}} {}\n",
                u8::from(*up)
            ));
        }
        t.push_str(extra);
        t.push_str("# EOF\n");
        t
    }

    /// Full mesh over http, tcp and bulk; `fail(source, target, protocol)` says what is down.
    fn mesh(nodes: &[&str], fail: impl Fn(&str, &str, &str) -> bool) -> Vec<ProbeScrape> {
        nodes
            .iter()
            .map(|src| {
                let peers: Vec<(&str, &str, bool)> = nodes
                    .iter()
                    .filter(|t| *t != src)
                    .flat_map(|t| ["http", "tcp", "bulk"].map(|p| (*t, p, !fail(src, t, p))))
                    .collect();
                ProbeScrape {
                    pod: format!("netprobe-{src}"),
                    node: src.to_string(),
                    text: Some(metrics(&peers, "")),
                    error: None,
                }
            })
            .collect()
    }

    const NODES: [&str; 4] = ["node-a", "node-b", "node-c", "node-d"];

    fn matrix_ids(scrapes: Vec<ProbeScrape>) -> Vec<Finding> {
        let s = Snapshot {
            probe_scrapes: scrapes,
            ..Snapshot::default()
        };
        live_matrix(&Matrix::from_snapshot(&s))
    }

    #[test]
    fn matrix_healthy() {
        assert_eq!(matrix_ids(mesh(&NODES, |_, _, _| false)), vec![]);
    }

    #[test]
    fn matrix_isolated_node() {
        let f = matrix_ids(mesh(&NODES, |s, t, _| s == "node-c" || t == "node-c"));
        assert_eq!(ids(&f), ["network.node-isolated"]);
        assert!(f[0].title.contains("node-c"));
    }

    #[test]
    fn matrix_node_nobody_reaches() {
        let f = matrix_ids(mesh(&NODES, |_, t, _| t == "node-b"));
        assert_eq!(ids(&f), ["network.node-unreachable"]);
        assert!(f[0].title.contains("node-b"));
    }

    #[test]
    fn matrix_node_with_broken_egress() {
        let f = matrix_ids(mesh(&NODES, |s, _, _| s == "node-d"));
        assert_eq!(ids(&f), ["network.node-egress-broken"]);
        assert!(f[0].title.contains("node-d"));
    }

    #[test]
    fn matrix_many_pairs_failing() {
        let f = matrix_ids(mesh(&NODES, |s, t, _| s > t));
        assert_eq!(ids(&f), ["network.many-pairs-failing"]);
        let f = matrix_ids(mesh(&NODES, |_, _, _| true));
        assert_eq!(ids(&f), ["network.many-pairs-failing"]);
    }

    #[test]
    fn matrix_one_pair_failing_is_a_warning() {
        let f = matrix_ids(mesh(&NODES, |s, t, _| s == "node-a" && t == "node-b"));
        assert_eq!(ids(&f), ["network.pairs-failing"]);
        assert_eq!(f[0].severity, Severity::Warning);
    }

    #[test]
    fn matrix_bulk_only_is_mtu() {
        let f = matrix_ids(mesh(&NODES, |s, _, p| p == "bulk" && s != "node-a"));
        assert_eq!(ids(&f), ["network.mtu-blackhole"]);
        assert_eq!(f[0].severity, Severity::Critical);
        assert!(!f[0].title.contains("all to or from"), "{}", f[0].title);
        let f = matrix_ids(mesh(&NODES, |s, t, p| {
            p == "bulk" && (s == "node-c" || t == "node-c")
        }));
        assert!(
            f[0].title
                .ends_with("on 6 node pairs, all to or from node-c: MTU black hole"),
            "{}",
            f[0].title
        );
    }

    #[test]
    fn apiserver_probes_direct_versus_dns() {
        let scrape = |node: &str, direct: u8, dns: u8| ProbeScrape {
            pod: format!("netprobe-{node}"),
            node: node.into(),
            text: Some(metrics(
                &[],
                &format!(
                    "netprobe_apiserver_up{{path=\"direct\"}} {direct}\nnetprobe_apiserver_up{{path=\"dns\"}} {dns}\n"
                ),
            )),
            error: None,
        };
        let mut s = healthy();
        s.probe_scrapes = vec![scrape("node-a", 1, 1), scrape("node-b", 1, 1)];
        assert_eq!(analyse(&s), vec![]);
        s.probe_scrapes = vec![
            scrape("node-a", 0, 0),
            scrape("node-b", 1, 1),
            scrape("node-c", 1, 0),
        ];
        let f = apiserver_probes(&s);
        assert_eq!(
            ids(&f),
            [
                "network.apiserver-unreachable",
                "network.apiserver-dns-failing"
            ]
        );
        assert_eq!(f[0].severity, Severity::Warning);
        assert!(
            f[0].title.contains("1 of 3 nodes: node-a"),
            "{}",
            f[0].title
        );
        assert!(f[1].title.contains("node-c"));
    }

    fn dns_scrape(node: &str, rows: &[(&str, &str, bool)]) -> ProbeScrape {
        let mut extra = String::from("# TYPE netprobe_dns_probe_success gauge\n");
        for (server, name, ok) in rows {
            extra.push_str(&format!(
                "netprobe_dns_probe_success{{server=\"{server}\",name=\"{name}\",qtype=\"A\"}} {}\n",
                u8::from(*ok)
            ));
        }
        ProbeScrape {
            pod: format!("netprobe-{node}"),
            node: node.into(),
            text: Some(metrics(&[], &extra)),
            error: None,
        }
    }

    #[test]
    fn dns_one_replica_failing() {
        let name = "kubernetes.default.svc.cluster.local";
        let mut s = healthy();
        s.probe_scrapes = ["node-a", "node-b", "node-c"]
            .iter()
            .map(|n| {
                dns_scrape(
                    n,
                    &[
                        ("system", name, true),
                        ("coredns/coredns-a", name, true),
                        ("coredns/coredns-bb", name, false),
                    ],
                )
            })
            .collect();
        let f = analyse(&s);
        assert_eq!(ids(&f), ["dns.replica-failing"]);
        assert!(f[0].title.contains("coredns-bb"));
    }

    #[test]
    fn dns_direct_ok_but_service_failing_is_kube_proxy() {
        let name = "kubernetes.default.svc.cluster.local";
        let mut s = healthy();
        s.probe_scrapes = ["node-a", "node-b"]
            .iter()
            .map(|n| {
                dns_scrape(
                    n,
                    &[
                        ("system", name, false),
                        ("coredns/coredns-a", name, true),
                        ("coredns/coredns-bb", name, true),
                    ],
                )
            })
            .collect();
        let f = analyse(&s);
        assert_eq!(ids(&f), ["dns.service-path-broken"]);
        assert!(f[0].cause.contains("kube-proxy"));
        // Failing everywhere, external name only: upstream.
        s.probe_scrapes = ["node-a", "node-b"]
            .iter()
            .map(|n| {
                dns_scrape(
                    n,
                    &[
                        ("system", "example.com", false),
                        ("coredns/coredns-a", "example.com", false),
                    ],
                )
            })
            .collect();
        let f = analyse(&s);
        assert_eq!(ids(&f), ["dns.resolution-failing"]);
        assert!(f[0].cause.contains("upstream"));
    }

    #[test]
    fn csi_driver_missing_on_one_node() {
        let mut s = healthy();
        s.csi_nodes = Some(vec![
            obj(json!({"metadata": {"name": "node-a"}, "spec": {"drivers": [
            {"name": "csi.example.com", "nodeID": "node-a"}]}})),
            obj(json!({"metadata": {"name": "node-b"}, "spec": {"drivers": []}})),
        ]);
        let f = analyse(&s);
        assert_eq!(ids(&f), ["storage.csi-node-missing"]);
        assert_eq!(
            f[0].title,
            "CSI driver csi.example.com is not registered on 1 of 2 nodes: node-b"
        );
    }

    #[test]
    fn default_storage_class_count() {
        let mut s = healthy();
        let class = |n: &str, default: bool| -> k8s_openapi::api::storage::v1::StorageClass {
            obj(
                json!({"metadata": {"name": n, "annotations": {"storageclass.kubernetes.io/is-default-class": default.to_string()}},
                "provisioner": "csi.example.com"}),
            )
        };
        s.storage_classes = Some(vec![class("fast", true), class("slow", true)]);
        let f = analyse(&s);
        assert_eq!(ids(&f), ["storage.multiple-default-classes"]);
        assert!(f[0].title.contains("fast, slow"));
        s.storage_classes = Some(vec![class("fast", false)]);
        assert_eq!(ids(&analyse(&s)), ["storage.no-default-class"]);
        assert_eq!(analyse(&s)[0].severity, Severity::Warning);
        s.storage_classes = Some(vec![]);
        assert_eq!(analyse(&s)[0].severity, Severity::Info);
    }

    #[test]
    fn pvc_pending_with_provisioning_failure() {
        let mut s = healthy();
        s.pvcs = Some(vec![obj(
            json!({"metadata": {"name": "db", "namespace": "shop"},
            "spec": {"storageClassName": "fast"}, "status": {"phase": "Pending"}}),
        )]);
        s.pvc_events = Some(vec![obj(
            json!({"metadata": {"name": "db.1", "namespace": "shop"},
            "involvedObject": {"kind": "PersistentVolumeClaim", "name": "db", "namespace": "shop"},
            "type": "Warning", "reason": "ProvisioningFailed", "count": 4,
            "message": "failed to provision volume with StorageClass \"fast\": rpc error: code = ResourceExhausted desc = quota exceeded"}),
        )]);
        let f = analyse(&s);
        assert_eq!(ids(&f), ["storage.pvc-pending"]);
        assert_eq!(f[0].title, "PVC shop/db Pending: ProvisioningFailed");
        assert!(f[0].cause.contains("quota exceeded"));
        // A missing class is named even without events.
        s.pvc_events = Some(vec![]);
        s.pvcs = Some(vec![obj(
            json!({"metadata": {"name": "db", "namespace": "shop"},
            "spec": {"storageClassName": "gone"}, "status": {"phase": "Pending"}}),
        )]);
        assert_eq!(
            analyse(&s)[0].title,
            "PVC shop/db Pending: StorageClassNotFound"
        );
    }

    #[test]
    fn pv_failed_released_and_attach_errors() {
        let mut s = healthy();
        s.pvs = Some(vec![
            obj(
                json!({"metadata": {"name": "pv-f"}, "spec": {}, "status": {"phase": "Failed", "message": "delete failed"}}),
            ),
            obj(json!({"metadata": {"name": "pv-r"}, "spec": {}, "status": {"phase": "Released"}})),
        ]);
        s.volume_attachments = Some(vec![obj(json!({"metadata": {"name": "csi-123"},
            "spec": {"attacher": "csi.example.com", "nodeName": "node-a", "source": {"persistentVolumeName": "pv-1"}},
            "status": {"attached": false, "attachError": {"message": "volume is attached to another node"}}}))]);
        let f = analyse(&s);
        assert_eq!(
            ids(&f),
            [
                "storage.attach-error",
                "storage.pv-failed",
                "storage.pv-released"
            ]
        );
        assert_eq!(f[2].severity, Severity::Info);
    }

    #[test]
    fn storage_probe_failures_by_result() {
        let mut s = healthy();
        s.probe_scrapes = vec![ProbeScrape {
            pod: "netprobe-a".into(),
            node: "node-a".into(),
            text: Some(metrics(
                &[],
                "netprobe_storage_probe_success{volume=\"scratch\"} 0\n\
                netprobe_storage_probes_total{volume=\"scratch\",result=\"success\"} 10\n\
                netprobe_storage_probes_total{volume=\"scratch\",result=\"erofs\"} 3\n",
            )),
            error: None,
        }];
        let f = analyse(&s);
        assert_eq!(ids(&f), ["storage.probe-failing"]);
        assert_eq!(f[0].title, "Storage probe failing (erofs) on 1 volume");
    }

    #[test]
    fn storage_test_outcomes() {
        use super::super::storage_test::Outcome;
        let mut s = healthy();
        let base = Outcome {
            namespace: "shop".into(),
            pvc: "t".into(),
            job: "t".into(),
            storage_class: Some("fast".into()),
            seconds: 30.0,
            ..Outcome::default()
        };
        let case = |o: Outcome| {
            let mut s = healthy();
            s.storage_test = Some(o);
            ids(&analyse(&s))
        };
        assert_eq!(
            case(Outcome {
                status: "succeeded".into(),
                probe: Some(json!({"result": "success"})),
                ..base.clone()
            }),
            Vec::<&str>::new()
        );
        assert_eq!(
            case(Outcome {
                status: "failed".into(),
                probe: Some(json!({"result": "eio"})),
                ..base.clone()
            }),
            ["storage.test-failed"]
        );
        assert_eq!(
            case(Outcome {
                status: "timeout".into(),
                pvc_phase: Some("Pending".into()),
                ..base.clone()
            }),
            ["storage.test-pvc-pending"]
        );
        assert_eq!(
            case(Outcome {
                status: "timeout".into(),
                pvc_phase: Some("Bound".into()),
                cleanup_errors: vec!["pvc x".into()],
                ..base.clone()
            }),
            ["storage.test-timeout", "storage.test-cleanup-failed"]
        );
        assert_eq!(
            case(Outcome {
                status: "not_created".into(),
                detail: Some("create jobs.batch (shop) failed: forbidden".into()),
                ..base.clone()
            }),
            ["storage.test-not-run"]
        );
        s.storage_test = None;
        assert_eq!(analyse(&s), vec![]);
    }

    #[test]
    fn forbidden_reads_name_the_missing_rule() {
        let mut s = healthy();
        s.network_policies = None;
        s.errors = vec![ReadError {
            step: "networkpolicies".into(),
            call: "list networkpolicies --all-namespaces".into(),
            reason: "forbidden",
            message: "HTTP 403".into(),
            missing_rbac: Some("list networkpolicies.networking.k8s.io (cluster-wide)".into()),
        }];
        let f = analyse(&s);
        assert_eq!(ids(&f), ["collect.partial"]);
        assert!(f[0].evidence.contains(
            &"missing RBAC: list networkpolicies.networking.k8s.io (cluster-wide)".to_owned()
        ));
    }

    #[test]
    fn selectors() {
        let sel: LabelSelector = obj(json!({"matchLabels": {"a": "1"}, "matchExpressions": [
            {"key": "b", "operator": "In", "values": ["x", "y"]}, {"key": "c", "operator": "DoesNotExist"}]}));
        let l = |v: serde_json::Value| -> BTreeMap<String, String> { obj(v) };
        assert!(selects(&sel, &l(json!({"a": "1", "b": "y"}))));
        assert!(!selects(&sel, &l(json!({"a": "1", "b": "z"}))));
        assert!(!selects(&sel, &l(json!({"a": "1", "b": "x", "c": ""}))));
        assert!(cidr_contains("10.0.0.0/8", "10.1.2.3".parse().unwrap()));
        assert!(!cidr_contains("10.0.0.0/8", "11.1.2.3".parse().unwrap()));
        assert!(cidr_contains("::/0", "fd00::1".parse().unwrap()));
    }
}
