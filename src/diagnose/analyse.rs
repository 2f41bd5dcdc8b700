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
    findings.extend(dns_latency(s));
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

/// `next` with its first letter in lower case, to follow "On node X: ".
fn lower_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
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

/// Completed probes below which a target's failure is not judged: the target is "too fresh".
/// A kube-netprobe pod that was just replaced, or a peer whose address just changed, starts its
/// series from zero, and its first probe or two may fail while the new pod comes up. Three
/// completed probes are 30 s of peer probes and 45 s of DNS and API-server probes at the
/// default intervals (10 s, 15 s): a fault that outlives them is a fault. Successes count from
/// the first probe (a success is never a start-up artefact), and a target without any series
/// (the daemon exports a target's series with its first result) is not known at all.
pub const MIN_PROBES: f64 = 3.0;

/// Completed probes of one target: the sum of the counter `family`'s samples (one per result or
/// rcode) whose labels include every pair of `labels`; 0 when the daemon has none yet.
fn completed(samples: &[Sample], family: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|x| x.name == family && labels.iter().all(|(k, v)| x.label(k) == *v))
        .map(|x| x.value)
        .filter(|v| v.is_finite())
        .sum()
}

/// Every readable kube-netprobe scrape: (node, its samples).
fn readable_scrapes(s: &Snapshot) -> Vec<(&str, Vec<Sample>)> {
    s.probe_scrapes
        .iter()
        .filter_map(|x| Some((x.node.as_str(), scrape::parse(x.text.as_deref()?))))
        .collect()
}

/// One probe result: `source` node probing `target` node over `protocol`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cell {
    pub source: String,
    pub target: String,
    pub protocol: String,
    pub up: bool,
    /// Probes `source` has completed of `target` over `protocol` since it first saw the
    /// target's current address (`netprobe_peer_requests_total`, every result); a failing cell
    /// with fewer than [`MIN_PROBES`] is too fresh to judge.
    pub probes: u64,
}

impl Cell {
    /// Whether the analysis counts this cell: up, or down after enough probes.
    pub fn judged(&self) -> bool {
        self.up || self.probes as f64 >= MIN_PROBES
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Matrix {
    pub nodes: Vec<String>,
    pub protocols: Vec<String>,
    pub cells: Vec<Cell>,
    /// Nodes whose kube-netprobe pod's /metrics could not be read (and no other pod's of that
    /// node could: during a rollout the old, terminating pod is not read, the new one is).
    pub unread: Vec<String>,
    /// Why, per node in `unread`.
    #[serde(skip)]
    pub unread_reasons: BTreeMap<String, String>,
    /// Nodes whose /metrics were read.
    #[serde(skip)]
    pub read: BTreeSet<String>,
}

impl Matrix {
    pub fn from_snapshot(s: &Snapshot) -> Matrix {
        let mut matrix = Matrix::default();
        // (source, target, protocol) -> (up, probes)
        let mut cells: BTreeMap<(String, String, String), (bool, u64)> = BTreeMap::new();
        let mut failed: BTreeMap<String, String> = BTreeMap::new();
        for scrape in &s.probe_scrapes {
            let Some(text) = &scrape.text else {
                failed.insert(
                    scrape.node.clone(),
                    scrape.error.clone().unwrap_or_else(|| "not read".into()),
                );
                continue;
            };
            matrix.read.insert(scrape.node.clone());
            let samples = scrape::parse(text);
            for sample in samples.iter().filter(|x| x.name == "netprobe_peer_up") {
                let (target, protocol) = (sample.label("target_node"), sample.label("protocol"));
                let probes = completed(
                    &samples,
                    "netprobe_peer_requests_total",
                    &[("target_node", target), ("protocol", protocol)],
                ) as u64;
                let key = (scrape.node.clone(), target.to_owned(), protocol.to_owned());
                // Several IP families: the pair is up only if every family is. The counters
                // are shared by the families.
                let up = sample.value >= 1.0;
                cells
                    .entry(key)
                    .and_modify(|(u, p)| {
                        *u &= up;
                        *p = (*p).max(probes);
                    })
                    .or_insert((up, probes));
            }
        }
        for (node, reason) in failed {
            if !matrix.read.contains(&node) {
                matrix.unread.push(node.clone());
                matrix.unread_reasons.insert(node, reason);
            }
        }
        let mut nodes = BTreeSet::new();
        let mut protocols = BTreeSet::new();
        for ((source, target, protocol), (up, probes)) in cells {
            nodes.insert(source.clone());
            nodes.insert(target.clone());
            protocols.insert(protocol.clone());
            matrix.cells.push(Cell {
                source,
                target,
                protocol,
                up,
                probes,
            });
        }
        matrix.nodes = nodes.into_iter().collect();
        matrix.protocols = protocols.into_iter().collect();
        matrix
    }

    /// What is known of `node`'s own view when its outbound probes cannot be judged.
    fn own_view_unknown(&self, node: &str, outbound: usize) -> (&'static str, String) {
        if let Some(reason) = self.unread_reasons.get(node) {
            (
                "its own view could not be read",
                format!(
                    "node {node}: its kube-netprobe pod's /metrics could not be read: {reason}"
                ),
            )
        } else if !self.read.contains(node) {
            (
                "its own view could not be read",
                format!("node {node}: no kube-netprobe pod's /metrics were read for it"),
            )
        } else if outbound == 0 {
            (
                "its own view has no judged peer probes",
                format!(
                    "node {node}: its own peer probes are missing or all too fresh (fewer than \
                     {MIN_PROBES} probes each)"
                ),
            )
        } else {
            (
                "its own view is too fresh to judge",
                format!(
                    "node {node}: only {outbound} of its own peer probes can be judged (at least \
                     2 needed, each with {MIN_PROBES} probes or a success)"
                ),
            )
        }
    }
}

pub fn live_matrix(m: &Matrix) -> Vec<Finding> {
    // Per (source, target): connectivity (every protocol but bulk) and bulk, judged cells only.
    let mut basic: BTreeMap<(&str, &str), bool> = BTreeMap::new();
    let mut bulk: BTreeMap<(&str, &str), bool> = BTreeMap::new();
    for c in m.cells.iter().filter(|c| c.judged()) {
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
    let mut blamed_nodes: Vec<Finding> = Vec::new();
    // Blame by votes, the rule of alerts/network.yaml: a failed path counts against its target
    // only when its checker fails at most half of its other paths, and against its checker only
    // when the target's other checkers fail at most half of their paths to it. A node is blamed
    // one way when more than half of that way's valid votes fail. So a healthy node whose
    // probes include two broken nodes is not blamed, however few peers it has.
    let share_failing = |paths: &mut dyn Iterator<Item = bool>| -> Option<f64> {
        let (mut n, mut failed) = (0usize, 0usize);
        for up in paths {
            n += 1;
            failed += usize::from(!up);
        }
        (n > 0).then(|| failed as f64 / n as f64)
    };
    let checker_sound = |checker: &str, target: &str| {
        share_failing(
            &mut basic
                .iter()
                .filter(|((s, t), _)| *s == checker && *t != target)
                .map(|(_, up)| *up),
        )
        .is_none_or(|f| f <= 0.5)
    };
    let target_answers_others = |checker: &str, target: &str| {
        share_failing(
            &mut basic
                .iter()
                .filter(|((s, t), _)| *t == target && *s != checker)
                .map(|(_, up)| *up),
        )
        .is_none_or(|f| f <= 0.5)
    };
    for node in &m.nodes {
        let node = node.as_str();
        let inbound: Vec<_> = basic.iter().filter(|((_, t), _)| *t == node).collect();
        let outbound: Vec<_> = basic.iter().filter(|((s, _), _)| *s == node).collect();
        // Votes each way: (valid, failing among them).
        let in_votes: Vec<bool> = inbound
            .iter()
            .filter(|((c, _), _)| checker_sound(c, node))
            .map(|(_, up)| **up)
            .collect();
        let out_votes: Vec<bool> = outbound
            .iter()
            .filter(|((_, t), _)| target_answers_others(node, t))
            .map(|(_, up)| **up)
            .collect();
        let blamed = |votes: &[bool]| {
            let failing = votes.iter().filter(|up| !**up).count();
            !votes.is_empty() && failing * 2 > votes.len()
        };
        // Each way, at least 2 judged pairs before anything is said about that way.
        let in_known = inbound.len() >= 2;
        let out_known = outbound.len() >= 2;
        let in_dead = in_known && blamed(&in_votes);
        let out_dead = out_known && blamed(&out_votes);
        if !in_dead && !out_dead {
            continue;
        }
        let votes_line = |way: &str, votes: &[bool], all: usize| {
            format!(
                "{way}: {} of the {} valid votes fail ({} of {all} paths judged; a vote is \
                 valid when the other end works with the rest of the mesh)",
                votes.iter().filter(|up| !**up).count(),
                votes.len(),
                all
            )
        };
        let mut evidence: Vec<String> = inbound
            .iter()
            .chain(outbound.iter())
            .filter(|(_, up)| !**up)
            .map(|(k, _)| format!("{} failing", pair(k)))
            .chain([
                votes_line(&format!("into {node}"), &in_votes, inbound.len()),
                votes_line(&format!("out of {node}"), &out_votes, outbound.len()),
            ])
            .collect();
        // "no peer reaches it" when every judged path in fails, else how many.
        let in_failing = inbound.iter().filter(|(_, up)| !**up).count();
        let reaches_it = if in_failing == inbound.len() {
            "no peer reaches it".to_owned()
        } else {
            format!(
                "{in_failing} of the {} peers probing it cannot reach it",
                inbound.len()
            )
        };
        let out_reached = outbound.iter().filter(|(_, up)| **up).count();
        let (id, severity, title, cause, next) = if in_dead && out_dead {
            (
                "network.node-isolated",
                Severity::Critical,
                if out_reached == 0 {
                    format!("Node {node} is cut off: it reaches no peer and {reaches_it}")
                } else {
                    format!(
                        "Node {node} is cut off: it reaches {out_reached} of the {} peers it \
                         probes and {reaches_it}",
                        outbound.len()
                    )
                },
                "Pod networking on this one node is down (CNI agent, routes, host firewall, or \
                 the node's uplink) while the rest of the mesh works."
                    .to_owned(),
                format!(
                    "Check the CNI agent pod and its logs on {node}, the node's routes \
                     (`ip route`) and host firewall (`iptables-save`)."
                ),
            )
        } else if in_dead && out_known {
            (
                "network.node-unreachable",
                Severity::Critical,
                if out_reached == outbound.len() {
                    format!("Node {node} is unreachable: {reaches_it}, it reaches them")
                } else {
                    format!(
                        "Node {node} is unreachable: {reaches_it}, it reaches {out_reached} of \
                         the {} it probes",
                        outbound.len()
                    )
                },
                "Traffic into pods on this node is dropped: a host firewall or security group \
                 blocking ingress, or the overlay's return path (encapsulation port) on this \
                 node."
                    .to_owned(),
                format!(
                    "On {node}: inbound rules (`iptables-save`, cloud security group for the \
                     overlay port, e.g. VXLAN UDP 4789/8472), CNI agent logs."
                ),
            )
        } else if in_dead {
            // Nobody reaches it, and what it reaches is not known: no claim, and no page.
            let (phrase, line) = m.own_view_unknown(node, outbound.len());
            evidence.push(line);
            (
                "network.node-unreachable",
                Severity::Warning,
                format!("Node {node} is unreachable: {reaches_it}; {phrase}"),
                "Every peer's probes of the kube-netprobe pod on this node fail. Without its \
                 own view it cannot be told whether only traffic into the node is dropped \
                 (host firewall, overlay port) or the node is cut off altogether; when its \
                 /metrics could not be read through the API server either, a node that lost \
                 its network (see whether it is NotReady) or a kube-netprobe pod that is not \
                 serving (crash-looping, not running) are the likeliest."
                    .to_owned(),
                format!(
                    "`kubectl get node {node}` (Ready?) and `kubectl get pods -A -o wide \
                     --field-selector spec.nodeName={node}` (the kube-netprobe and CNI agent \
                     pods there, their restarts and logs); then, on {node}, inbound rules \
                     (`iptables-save`) and routes (`ip route`)."
                ),
            )
        } else if out_dead && in_known {
            (
                "network.node-egress-broken",
                Severity::Critical,
                if out_reached == 0 {
                    format!("Node {node} reaches no peer, though peers reach it")
                } else {
                    format!(
                        "Node {node} reaches only {out_reached} of the {} peers it probes, though \
                         the others reach them",
                        outbound.len()
                    )
                },
                "Egress from pods on this node is broken: an egress firewall rule, a stale \
                 route, or the CNI's outbound encapsulation on this node."
                    .to_owned(),
                format!(
                    "On {node}: `ip route`, egress rules (`iptables-save`), CNI agent logs; \
                     restart the CNI agent pod on that node if its routes are stale."
                ),
            )
        } else if out_dead {
            evidence.push(format!(
                "node {node}: only {} of the peers' probes of it can be judged (at least 2 \
                 needed, each with {MIN_PROBES} probes or a success)",
                inbound.len()
            ));
            (
                "network.node-egress-broken",
                Severity::Warning,
                format!(
                    "Node {node} fails to reach {} of the {} peers it probes; whether peers reach \
                     it is not known yet",
                    outbound.len() - out_reached,
                    outbound.len()
                ),
                "Every probe from this node to its peers fails. The peers' probes of it are too \
                 fresh or missing, so it cannot be told whether only its egress is broken or \
                 the node is cut off."
                    .to_owned(),
                format!(
                    "On {node}: `ip route`, egress rules (`iptables-save`), CNI agent logs; run \
                     diagnose again in a minute for the peers' side."
                ),
            )
        } else {
            continue;
        };
        let ways = [(in_dead, &inbound), (out_dead, &outbound)];
        for (k, up) in ways
            .iter()
            .filter(|(dead, _)| *dead)
            .flat_map(|(_, w)| w.iter())
        {
            if !**up {
                explained.insert(**k);
            }
        }
        blamed_nodes.push(
            Finding::new(id, severity, title)
                .evidence(evidence)
                .cause(cause)
                .next(next),
        );
    }
    // Votes blaming more than a third of the nodes (and more than one) describe a mesh broken
    // as a whole, not nodes: said once, below, as failing pairs.
    if blamed_nodes.len() > 1 && blamed_nodes.len() * 3 > m.nodes.len() {
        explained.clear();
    } else {
        out.append(&mut blamed_nodes);
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
    // Failures too fresh to judge: said, so that an empty report during a rollout is not read
    // as "all clear", but never more than info.
    let fresh: Vec<&Cell> = m.cells.iter().filter(|c| !c.judged()).collect();
    if !fresh.is_empty() {
        let pairs: BTreeSet<(&str, &str)> = fresh
            .iter()
            .map(|c| (c.source.as_str(), c.target.as_str()))
            .collect();
        let common: Option<&str> = m
            .nodes
            .iter()
            .map(String::as_str)
            .find(|n| pairs.iter().all(|(s, t)| s == n || t == n))
            .filter(|_| pairs.len() >= 2);
        let title = match common {
            Some(n) => format!(
                "Not judged yet: {} to or from node {n} failing after fewer than {MIN_PROBES} probes",
                plural(pairs.len(), "node pair", "node pairs")
            ),
            None => format!(
                "Not judged yet: {} failing after fewer than {MIN_PROBES} probes: {}",
                plural(pairs.len(), "node pair", "node pairs"),
                list_some(&pairs.iter().map(pair).collect::<Vec<_>>(), 4)
            ),
        };
        out.push(
            Finding::new("network.peers-too-fresh", Severity::Info, title)
                .evidence(fresh.iter().map(|c| {
                    format!(
                        "{} -> {} {}: down after {}",
                        c.source,
                        c.target,
                        c.protocol,
                        plural(c.probes as usize, "probe", "probes")
                    )
                }))
                .cause(
                    "A kube-netprobe pod started or was replaced moments ago (or a peer's \
                     address changed): its series start from zero and the first probes may \
                     fail while the new pod comes up, so these failures are not counted.",
                )
                .next(
                    "Run diagnose again in a minute (3 probe intervals: 30 s at the default \
                     peers.interval of 10 s); failures that remain are then judged.",
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
        // A path not yet probed, or down after fewer than MIN_PROBES probes, is not known.
        let up = |path: &str| {
            samples
                .iter()
                .find(|x| x.name == "netprobe_apiserver_up" && x.label("path") == path)
                .map(|x| x.value >= 1.0)
                .filter(|up| {
                    *up || completed(
                        &samples,
                        "netprobe_apiserver_requests_total",
                        &[("path", path)],
                    ) >= MIN_PROBES
                })
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

/// The cluster's DNS zones, from the Corefile's `kubernetes` plugin line (`cluster.local` when
/// the Corefile was not read or names none): CoreDNS answers names in them itself; every other
/// name goes to the upstream servers of its `forward`.
fn cluster_zones(s: &Snapshot) -> Vec<String> {
    let mut zones = Vec::new();
    if let Some(Some(text)) = &s.corefile {
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            let mut words = line.split_whitespace();
            if words.next() == Some("kubernetes") {
                zones.extend(
                    words
                        .take_while(|w| *w != "{")
                        .map(|w| w.trim_end_matches('.').to_ascii_lowercase()),
                );
            }
        }
    }
    if zones.is_empty() {
        zones.push("cluster.local".into());
    }
    zones
}

/// Whether CoreDNS answers `name` from the cluster's own data (a Service or pod name), rather
/// than forwarding it upstream.
fn is_cluster_name(name: &str, zones: &[String]) -> bool {
    let n = name.trim_end_matches('.').to_ascii_lowercase();
    n.ends_with(".svc")
        || n.contains(".svc.")
        || zones
            .iter()
            .any(|z| n == *z || n.ends_with(&format!(".{z}")))
}

/// DNS probe results by server: direct to each CoreDNS pod (`coredns/<pod>`) versus through the
/// Service (`system`, the pod's resolv.conf), and names of the cluster versus names outside it.
pub fn dns_probes(s: &Snapshot) -> Vec<Finding> {
    // (server, name) -> (failing nodes, nodes reporting)
    let mut by: BTreeMap<(String, String), (Vec<String>, usize)> = BTreeMap::new();
    // name -> rcode -> lookups through `system` since the pods started, every node together.
    let mut rcodes: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for (node, samples) in readable_scrapes(s) {
        for x in samples
            .iter()
            .filter(|x| x.name == "netprobe_dns_probe_success")
        {
            let (server, name, qtype) = (x.label("server"), x.label("name"), x.label("qtype"));
            let ok = x.value >= 1.0;
            // Failing after fewer than MIN_PROBES lookups: not known yet.
            if !ok
                && completed(
                    &samples,
                    "netprobe_dns_lookups_total",
                    &[("server", server), ("name", name), ("qtype", qtype)],
                ) < MIN_PROBES
            {
                continue;
            }
            let entry = by.entry((server.to_owned(), name.to_owned())).or_default();
            entry.1 += 1;
            if !ok {
                entry.0.push(node.to_owned());
            }
        }
        for x in samples.iter().filter(|x| {
            x.name == "netprobe_dns_lookups_total" && x.label("server") == "system" && x.value > 0.0
        }) {
            *rcodes
                .entry(x.label("name").to_owned())
                .or_default()
                .entry(x.label("rcode").to_owned())
                .or_default() += x.value;
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
    // Names that resolve through the Service from most nodes, or direct from a CoreDNS pod.
    let mut resolving: Vec<String> = Vec::new();
    for name in names {
        let direct: Vec<(&String, &(Vec<String>, usize))> = by
            .iter()
            .filter(|((srv, n), _)| n == name && srv.starts_with("coredns/"))
            .map(|((srv, _), v)| (srv, v))
            .collect();
        let system = by.get(&("system".to_owned(), name.clone()));
        let direct_ok = direct.iter().filter(|(_, v)| passing(v)).count();
        let direct_bad: Vec<_> = direct.iter().filter(|(_, v)| failing(v)).collect();
        if direct_ok > 0 || system.is_some_and(passing) {
            resolving.push(name.clone());
        }
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
    if everywhere.is_empty() {
        return out;
    }
    // Cluster names fail too: CoreDNS itself. Only names outside the cluster fail while cluster
    // names resolve: what CoreDNS forwards to (its upstream).
    let zones = cluster_zones(s);
    let (cluster_failing, external_failing): (Vec<String>, Vec<String>) = everywhere
        .iter()
        .cloned()
        .partition(|n| is_cluster_name(n, &zones));
    let cluster_resolving: Vec<&String> = resolving
        .iter()
        .filter(|n| is_cluster_name(n, &zones))
        .collect();
    let evidence_of = |name: &String| -> Vec<String> {
        let mut lines: Vec<String> = by
            .iter()
            .filter(|((_, n), _)| n == name)
            .map(|((srv, _), v)| {
                format!(
                    "{name} through {srv}: fails from {} of {} nodes",
                    v.0.len(),
                    v.1
                )
            })
            .collect();
        if let Some(codes) = rcodes.get(name) {
            lines.push(format!(
                "{name} through system, lookups since the kube-netprobe pods started: {}",
                codes
                    .iter()
                    .map(|(rcode, n)| format!("{rcode} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        lines
    };
    let forwards: Option<Vec<String>> = match &s.corefile {
        Some(Some(text)) => Some(corefile_forwards(text)),
        _ => None,
    };
    if !cluster_failing.is_empty() {
        let mut evidence: Vec<String> = everywhere.iter().flat_map(evidence_of).collect();
        evidence.push(format!(
            "cluster zones (the Corefile's kubernetes plugin): {}",
            zones.join(", ")
        ));
        out.push(
            Finding::new(
                "dns.resolution-failing",
                Severity::Critical,
                format!(
                    "CoreDNS fails cluster names from most nodes, through every server: {}",
                    list_some(&cluster_failing, 4)
                ),
            )
            .evidence(evidence)
            .cause(format!(
                "Names CoreDNS answers from the cluster's own data fail through the Service and \
                 direct to every CoreDNS pod: CoreDNS itself is failing (plugin/kubernetes cannot \
                 read from the API server, the pods are overloaded or crash-looping, or the \
                 Corefile does not load), not its upstream.{}",
                if external_failing.is_empty() {
                    ""
                } else {
                    " Names outside the cluster fail with them, as they do when CoreDNS itself \
                     fails."
                }
            ))
            .next(format!(
                "`kubectl -n {DNS_NAMESPACE} logs -l k8s-app=kube-dns --tail=50` (plugin/kubernetes \
                 errors: `Failed to list`, forbidden, API server unreachable) and `kubectl -n \
                 {DNS_NAMESPACE} get pods -l k8s-app=kube-dns -o wide`; the CoreDNS findings above."
            )),
        );
    } else if !cluster_resolving.is_empty() {
        let upstream = match &forwards {
            Some(f) if f.is_empty() => "none: the Corefile has no forward".to_owned(),
            Some(f) => f.join(", "),
            None => "the Corefile's forward".to_owned(),
        };
        let mut evidence: Vec<String> = external_failing.iter().flat_map(evidence_of).collect();
        evidence.extend(
            cluster_resolving
                .iter()
                .map(|n| format!("{n} (a cluster name) resolves through the same servers")),
        );
        if let Some(Some(text)) = &s.corefile {
            evidence.extend(
                text.lines()
                    .filter(|l| {
                        let l = l.trim_start();
                        l.starts_with("forward") || l.starts_with("proxy")
                    })
                    .map(|l| format!("Corefile: {}", l.trim())),
            );
        }
        let cause = if forwards.as_ref().is_some_and(Vec::is_empty) {
            "The Corefile has no `forward` (see dns.corefile-no-forward): CoreDNS answers its \
             cluster zone and nothing else, so every name outside the cluster fails."
                .to_owned()
        } else {
            "CoreDNS answers the names it serves itself, but gets no answer for the others from \
             the upstream servers of its `forward`: they are down or unreachable from the CoreDNS \
             pods (an egress firewall or NetworkPolicy, no route out of the cluster), refuse \
             CoreDNS, or `forward . /etc/resolv.conf` hands the names to a node resolver that \
             fails. An upstream or forwarding problem, not CoreDNS itself."
                .to_owned()
        };
        out.push(
            Finding::new(
                "dns.upstream-failing",
                Severity::Critical,
                format!(
                    "CoreDNS's upstream ({upstream}) fails: names outside the cluster fail from \
                     most nodes while cluster names resolve: {}",
                    list_some(&external_failing, 4)
                ),
            )
            .evidence(evidence)
            .cause(cause)
            .next(format!(
                "Read the Corefile's `forward` (`kubectl -n {DNS_NAMESPACE} get configmap coredns \
                 -o yaml`); from the node of a CoreDNS pod, ask the upstream directly (`dig \
                 @UPSTREAM {}`); check egress to UDP and TCP 53 from the CoreDNS pods, and the \
                 dns.log-upstream-timeout lines. An offline cluster without an upstream: change \
                 or drop the external name in the chart's `config.dns.queries`.",
                external_failing[0].trim_end_matches('.')
            )),
        );
    } else {
        out.push(
            Finding::new(
                "dns.resolution-failing",
                Severity::Critical,
                format!(
                    "DNS lookups fail from most nodes, through every server: {}",
                    list_some(&everywhere, 4)
                ),
            )
            .evidence(everywhere.iter().flat_map(evidence_of))
            .cause(
                "Only names outside the cluster are probed, and they fail on every CoreDNS pod: \
                 most likely CoreDNS cannot get answers from its upstream servers, but with no \
                 cluster name to compare, CoreDNS itself is not ruled out.",
            )
            .next(format!(
                "`kubectl -n {DNS_NAMESPACE} logs -l k8s-app=kube-dns --tail=50`; check the \
                 Corefile's forward targets; add a cluster name \
                 (kubernetes.default.svc.cluster.local) to `dns.queries` to tell the two apart."
            )),
        );
    }
    out
}

// ---------------------------------------------------------------------------------------------
// DNS latency (the lookup-duration histograms of the kube-netprobe pods)

/// Answered lookups a (node, server) needs before its latency is compared: about two minutes of
/// one server at the chart's 15 s interval and three names. Fewer say little about a p99.
pub const MIN_LOOKUPS: f64 = 20.0;
/// Share of lookups answered in (4.5, 5.5] s from which a (node, server) shows the 5 s
/// signature, and the least number of such lookups. A healthy node has none (each needs a lost
/// packet and libc's 5 s retry). Half the DNSLookupsAtFiveSeconds alert's 2 %: diagnose reads
/// counts since the pod started, which dilute a recent fault, not a 15-minute rate.
pub const FIVE_SECOND_SHARE: f64 = 0.01;
pub const FIVE_SECOND_MIN: f64 = 5.0;
/// "Much slower than the others": at least this many times the median of the others' p99 (or
/// mean), and above the floor below. The buckets grow by about 2x from 0.1 s to 1 s, so 4x is
/// clear of interpolation noise between two neighbouring buckets.
pub const SLOW_RATIO: f64 = 4.0;
/// Floors: a p99 under half a second or a mean under 100 ms is not worth a page at 3 a.m., however
/// it compares (DNSLatencyHigh fires at a p99 of 1 s).
pub const SLOW_P99: f64 = 0.5;
pub const SLOW_MEAN: f64 = 0.1;

/// A lookup-duration histogram: cumulative buckets, count and sum.
#[derive(Debug, Clone, Default, PartialEq)]
struct Histogram {
    /// (upper bound, cumulative count), in order of the bound; +Inf last.
    buckets: Vec<(f64, f64)>,
    count: f64,
    sum: f64,
}

impl Histogram {
    fn add_bucket(&mut self, le: f64, n: f64) {
        match self.buckets.iter_mut().find(|b| b.0 == le) {
            Some(b) => b.1 += n,
            None => {
                self.buckets.push((le, n));
                self.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            }
        }
    }

    fn merge(&mut self, other: &Histogram) {
        for (le, n) in &other.buckets {
            self.add_bucket(*le, *n);
        }
        self.count += other.count;
        self.sum += other.sum;
    }

    fn cumulative(&self, le: f64) -> Option<f64> {
        self.buckets.iter().find(|b| b.0 == le).map(|b| b.1)
    }

    /// Lookups answered in (lo, hi], when both are bucket bounds.
    fn between(&self, lo: f64, hi: f64) -> Option<f64> {
        Some(self.cumulative(hi)? - self.cumulative(lo)?)
    }

    fn mean(&self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum / self.count)
    }

    /// The q-quantile as Prometheus's histogram_quantile estimates it: linear within the bucket
    /// it falls in; in the +Inf bucket, the largest finite bound.
    fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.buckets.last()?.1;
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let mut lower = (0.0, 0.0);
        for &(le, cum) in &self.buckets {
            if cum >= rank {
                if le.is_infinite() {
                    return Some(lower.0);
                }
                let in_bucket = cum - lower.1;
                let fraction = if in_bucket > 0.0 {
                    (rank - lower.1) / in_bucket
                } else {
                    1.0
                };
                return Some(lower.0 + (le - lower.0) * fraction);
            }
            lower = (le, cum);
        }
        Some(lower.0)
    }
}

/// Per node, per server: the lookup-duration histogram over every name and type, and the
/// lookups by rcode.
#[derive(Debug, Default)]
struct DnsLatency {
    histograms: BTreeMap<String, BTreeMap<String, Histogram>>,
    /// node -> server -> (TIMEOUT lookups, all lookups)
    timeouts: BTreeMap<String, BTreeMap<String, (f64, f64)>>,
    /// node -> family (ipv4: the A query, ipv6: the AAAA beside it) -> (TIMEOUT, all), for the
    /// `system` lookups that ask both together as getaddrinfo does.
    families: BTreeMap<String, BTreeMap<String, (f64, f64)>>,
}

impl DnsLatency {
    fn of(s: &Snapshot) -> DnsLatency {
        let mut d = DnsLatency::default();
        for (node, samples) in readable_scrapes(s) {
            let per_server = d.histograms.entry(node.to_owned()).or_default();
            for x in &samples {
                let Some(part) = x.name.strip_prefix("netprobe_dns_lookup_duration_seconds_")
                else {
                    if x.name == "netprobe_dns_family_queries_total"
                        && x.label("server") == "system"
                        && x.value.is_finite()
                    {
                        let t = d
                            .families
                            .entry(node.to_owned())
                            .or_default()
                            .entry(x.label("family").to_owned())
                            .or_default();
                        t.1 += x.value;
                        if x.label("rcode") == "TIMEOUT" {
                            t.0 += x.value;
                        }
                    }
                    if x.name == "netprobe_dns_lookups_total" && x.value.is_finite() {
                        let t = d
                            .timeouts
                            .entry(node.to_owned())
                            .or_default()
                            .entry(x.label("server").to_owned())
                            .or_default();
                        t.1 += x.value;
                        if x.label("rcode") == "TIMEOUT" {
                            t.0 += x.value;
                        }
                    }
                    continue;
                };
                if !x.value.is_finite() {
                    continue;
                }
                let h = per_server.entry(x.label("server").to_owned()).or_default();
                match part {
                    "bucket" => {
                        let le = match x.label("le") {
                            "+Inf" | "Inf" => f64::INFINITY,
                            le => match le.parse() {
                                Ok(le) => le,
                                Err(_) => continue,
                            },
                        };
                        h.add_bucket(le, x.value);
                    }
                    "count" => h.count += x.value,
                    "sum" => h.sum += x.value,
                    _ => {}
                }
            }
        }
        d
    }
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

fn seconds(v: f64) -> String {
    if v >= 1.0 {
        format!("{v:.1} s")
    } else if v >= 0.001 {
        format!("{:.0} ms", v * 1000.0)
    } else {
        format!("{:.2} ms", v * 1000.0)
    }
}

fn percent(v: f64) -> String {
    if v >= 0.1 {
        format!("{:.0} %", v * 100.0)
    } else {
        format!("{:.1} %", v * 100.0)
    }
}

/// How one (node, server) or server compares with the others: `Some(line)` when much slower.
fn much_slower(what: &str, h: &Histogram, others: &[&Histogram]) -> Option<(f64, String)> {
    let (p99, mean) = (h.quantile(0.99)?, h.mean()?);
    let med_p99 = median(others.iter().filter_map(|o| o.quantile(0.99)).collect())?;
    let med_mean = median(others.iter().filter_map(|o| o.mean()).collect())?;
    let by_p99 = p99 >= SLOW_P99 && p99 >= SLOW_RATIO * med_p99;
    let by_mean = mean >= SLOW_MEAN && mean >= SLOW_RATIO * med_mean;
    if !(by_p99 || by_mean) {
        return None;
    }
    let ratio = if by_p99 {
        p99 / med_p99.max(1e-6)
    } else {
        mean / med_mean.max(1e-6)
    };
    Some((
        ratio,
        format!(
            "{what}: p99 {}, mean {} over {:.0} lookups; the others' median: p99 {}, mean {}",
            seconds(p99),
            seconds(mean),
            h.count,
            seconds(med_p99),
            seconds(med_mean)
        ),
    ))
}

/// Lookups at 5 s (the lost-first-packet signature), a node much slower than the others, a
/// server much slower than the others: from the histograms as they stand (since each
/// kube-netprobe pod started).
pub fn dns_latency(s: &Snapshot) -> Vec<Finding> {
    let d = DnsLatency::of(s);
    let reporting = d
        .histograms
        .values()
        .filter(|per| per.values().any(|h| h.count >= MIN_LOOKUPS))
        .count();
    let mut out = Vec::new();

    // 1. Lookups at 5 s, per node.
    // node -> [(server, lookups at 5 s, answered lookups)]
    let mut at_five: BTreeMap<&str, Vec<(&str, f64, f64)>> = BTreeMap::new();
    for (node, per) in &d.histograms {
        for (server, h) in per {
            if h.count < MIN_LOOKUPS {
                continue;
            }
            let Some(n) = h.between(4.5, 5.5) else {
                continue;
            };
            if n >= FIVE_SECOND_MIN && n >= FIVE_SECOND_SHARE * h.count {
                at_five
                    .entry(node.as_str())
                    .or_default()
                    .push((server.as_str(), n, h.count));
            }
        }
    }
    if !at_five.is_empty() {
        let nodes: Vec<String> = at_five.keys().map(|n| n.to_string()).collect();
        let mut evidence = Vec::new();
        // Direct queries (no libc retry: a lost packet is a TIMEOUT) from the same nodes.
        let mut direct_lost = Vec::new();
        let mut direct_clean = 0;
        // One family's queries lost while the other's, sent beside them, are answered.
        let mut one_family_lost = Vec::new();
        for (node, rows) in &at_five {
            let shares: BTreeMap<&str, f64> = d
                .families
                .get(*node)
                .into_iter()
                .flatten()
                .filter(|(_, (_, all))| *all >= MIN_LOOKUPS)
                .map(|(family, (timeouts, all))| (family.as_str(), timeouts / all))
                .collect();
            for (family, share) in &shares {
                evidence.push(format!(
                    "node {node}, server system: {} of the {} queries timed out",
                    percent(*share),
                    if *family == "ipv6" { "AAAA" } else { "A" }
                ));
            }
            if let (Some(v4), Some(v6)) = (shares.get("ipv4"), shares.get("ipv6")) {
                let (lost, kept) = if v6 >= v4 { (v6, v4) } else { (v4, v6) };
                if *lost >= FIVE_SECOND_SHARE && *kept * 2.0 < *lost {
                    one_family_lost.push(node.to_string());
                }
            }
            for (server, n, count) in rows {
                evidence.push(format!(
                    "node {node}, server {server}: {} of {count:.0} answered lookups took 4.5-5.5 s ({})",
                    *n as u64,
                    percent(n / count)
                ));
            }
            for (server, (timeouts, all)) in d.timeouts.get(*node).into_iter().flatten() {
                if server == "system" || *all < MIN_LOOKUPS {
                    continue;
                }
                let share = timeouts / all;
                evidence.push(format!(
                    "node {node}, server {server} (one query, no retry): {} of {all:.0} lookups timed out",
                    percent(share)
                ));
                if share >= FIVE_SECOND_SHARE {
                    direct_lost.push(format!("{node} to {server}"));
                } else {
                    direct_clean += 1;
                }
            }
        }
        let mut cause = String::from(
            "The first query of these lookups got no answer and the resolver retried after its 5 s \
             timeout (resolv.conf `options timeout`): a packet lost between the pod and CoreDNS. ",
        );
        if !one_family_lost.is_empty() {
            cause.push_str(&format!(
                "On {} the queries of one family (A or AAAA) time out while the other's, sent \
                 beside them from the same socket, are answered: the conntrack race itself (both \
                 packets DNAT'ed to the kube-dns Service at once, one conntrack insert loses and \
                 its packet is dropped). ",
                list_some(&one_family_lost, 3)
            ));
        }
        if !direct_lost.is_empty() {
            cause.push_str(&format!(
                "Single queries sent straight to the DNS servers time out too ({}): packets are \
                 lost on the node's path to CoreDNS (a saturated or faulty link, the conntrack \
                 table full), not only in the Service's DNAT.",
                list_some(&direct_lost, 3)
            ));
        } else if !one_family_lost.is_empty() {
            if direct_clean > 0 {
                cause.push_str(
                    "Single queries sent straight to the DNS servers from the same nodes are \
                     answered.",
                );
            }
        } else if direct_clean > 0 {
            cause.push_str(
                "Single queries sent straight to the DNS servers from the same nodes are \
                 answered: the loss is in the lookups libc makes through the kube-dns Service, \
                 the signature of the conntrack race (A and AAAA sent in parallel from one \
                 socket, both DNAT'ed at once, one conntrack insert loses and its packet is \
                 dropped), or the conntrack table full on the node.",
            );
        } else {
            cause.push_str(
                "Classic cause: the conntrack race (A and AAAA sent in parallel from one socket \
                 to the Service IP, one conntrack insert loses and its packet is dropped), or the \
                 conntrack table full on the node.",
            );
        }
        if at_five.len() >= 2 && at_five.len() * 2 > reporting {
            cause.push_str(
                " It shows on most nodes at once: look at what they share (kernel version, a \
                 CoreDNS replica dropping queries) before any one node.",
            );
        }
        let title = if nodes.len() == 1 {
            let (server, n, count) = at_five.values().next().expect("one node")[0];
            format!(
                "DNS lookups from node {} take 5 s (first packet lost, retried): {} of lookups through {server}",
                nodes[0],
                percent(n / count)
            )
        } else {
            format!(
                "DNS lookups take 5 s (first packet lost, retried) from {}: {}",
                plural(nodes.len(), "node", "nodes"),
                list_some(&nodes, 4)
            )
        };
        out.push(
            Finding::new("dns.lookups-at-five-seconds", Severity::Warning, title)
                .evidence(evidence)
                .cause(cause)
                .next(format!(
                    "On {}: `conntrack -S` (insert_failed growing: the race) and `dmesg | grep \
                     conntrack` (table full). Fix: NodeLocal DNSCache (queries to a link-local \
                     address, not tracked), or `options single-request-reopen` in the pods' \
                     dnsConfig, a kernel with the conntrack race fixes, a larger nf_conntrack_max. \
                     Runbook: DNSLookupsAtFiveSeconds (docs/runbooks.md).",
                    nodes[0]
                )),
        );
    }
    let at_five_pairs: BTreeSet<(&str, &str)> = at_five
        .iter()
        .flat_map(|(node, rows)| rows.iter().map(move |(server, _, _)| (*node, *server)))
        .collect();

    // 2. A node much slower than the others, per server (the 5 s ones are explained above).
    let servers: BTreeSet<&str> = d
        .histograms
        .values()
        .flat_map(|per| per.keys().map(String::as_str))
        .collect();
    // node -> [(ratio, server, line)]
    let mut slow_nodes: BTreeMap<&str, Vec<(f64, &str, String)>> = BTreeMap::new();
    for server in &servers {
        let rows: Vec<(&str, &Histogram)> = d
            .histograms
            .iter()
            .filter_map(|(node, per)| Some((node.as_str(), per.get(*server)?)))
            .filter(|(node, h)| {
                h.count >= MIN_LOOKUPS && !at_five_pairs.contains(&(*node, *server))
            })
            .collect();
        if rows.len() < 2 {
            continue;
        }
        for (node, h) in &rows {
            let others: Vec<&Histogram> = rows
                .iter()
                .filter(|(n, _)| n != node)
                .map(|(_, h)| *h)
                .collect();
            if let Some((ratio, line)) =
                much_slower(&format!("node {node}, server {server}"), h, &others)
            {
                slow_nodes
                    .entry(node)
                    .or_default()
                    .push((ratio, server, line));
            }
        }
    }
    for (node, mut rows) in slow_nodes {
        rows.sort_by(|a, b| b.0.total_cmp(&a.0));
        let only_system = rows.iter().all(|(_, server, _)| *server == "system");
        let direct_fast = only_system
            && d.histograms[node]
                .iter()
                .any(|(server, h)| server != "system" && h.count >= MIN_LOOKUPS);
        let worst = rows[0].1;
        let h = &d.histograms[node][worst];
        out.push(
            Finding::new(
                "dns.node-slow",
                Severity::Warning,
                format!(
                    "DNS lookups from node {node} are much slower than from the other nodes: p99 {} through {worst}",
                    seconds(h.quantile(0.99).unwrap_or_default())
                ),
            )
            .evidence(rows.into_iter().map(|(_, _, line)| line))
            .cause(if direct_fast {
                "Only lookups through the pod's resolver (`system`) are slow on this node, while \
                 single queries straight to the DNS servers from it are not: its resolv.conf (a \
                 dead first nameserver, a longer search list, a different ndots) or the path \
                 through the kube-dns Service on this node (kube-proxy, conntrack)."
            } else {
                "Lookups from this node are slow while the other nodes get quick answers from \
                 the same servers: the node's network path (packet loss, a saturated NIC or CPU) \
                 or its conntrack table near full."
            })
            .next(format!(
                "On {node}: `dmesg | grep conntrack`, the node's CPU and network saturation \
                 (`kubectl top node {node}`), `cat /etc/resolv.conf` in a pod there. Runbook: \
                 DNSLatencyHigh (docs/runbooks.md)."
            )),
        );
    }

    // 3. A server much slower than the others: the direct servers (one query each, no search
    // list, no retry) across every node; `system` is a different kind of lookup.
    let mut per_server: BTreeMap<&str, Histogram> = BTreeMap::new();
    for per in d.histograms.values() {
        for (server, h) in per.iter().filter(|(s, _)| *s != "system") {
            per_server.entry(server.as_str()).or_default().merge(h);
        }
    }
    per_server.retain(|_, h| h.count >= MIN_LOOKUPS);
    for (server, h) in &per_server {
        let others: Vec<&Histogram> = per_server
            .iter()
            .filter(|(s, _)| s != &server)
            .map(|(_, h)| h)
            .collect();
        if others.is_empty() {
            continue;
        }
        let Some((_, line)) = much_slower(&format!("server {server}, every node"), h, &others)
        else {
            continue;
        };
        let p99 = seconds(h.quantile(0.99).unwrap_or_default());
        let (title, cause, next) = match server.strip_prefix("coredns/") {
            Some(pod) => (
                format!(
                    "CoreDNS pod {pod} answers much more slowly than the other DNS servers: p99 {p99}"
                ),
                "One replica is slow for every node: it is CPU-throttled or overloaded, its node \
                 is busy, or its own upstream connections are slow. A share of every client's \
                 lookups waits for it."
                    .to_owned(),
                format!(
                    "`kubectl -n {DNS_NAMESPACE} top pod {pod}` (CPU at its limit?), its node, \
                     `kubectl -n {DNS_NAMESPACE} logs {pod}`; if nothing explains it, delete \
                     it. Runbook: DNSLatencyHigh (docs/runbooks.md)."
                ),
            ),
            None => (
                format!(
                    "DNS server {server} answers much more slowly than the other DNS servers: p99 {p99}"
                ),
                "Every node waits longer for this server than for the others: the server is \
                 overloaded, or the path to it is (through the kube-dns Service: kube-proxy and \
                 conntrack; outside the cluster: the route there)."
                    .to_owned(),
                format!(
                    "Compare with `dig @{} kubernetes.default.svc.cluster.local` from a node; \
                     if it is the kube-dns Service IP, look at the CoreDNS replicas behind it. \
                     Runbook: DNSLatencyHigh (docs/runbooks.md).",
                    host_of(server)
                ),
            ),
        };
        out.push(
            Finding::new("dns.server-slow", Severity::Warning, title)
                .evidence([line])
                .cause(cause)
                .next(next),
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
    // (result, volume) -> (nodes, evidence lines)
    let mut by: BTreeMap<(String, String), (Vec<String>, Vec<String>)> = BTreeMap::new();
    for (node, samples) in readable_scrapes(s) {
        for failing in samples
            .iter()
            .filter(|x| x.name == "netprobe_storage_probe_success" && x.value < 1.0)
        {
            let volume = failing.label("volume");
            // Storage failures are not start-up artefacts (a full or read-only volume is so
            // from the first run), and runs are a minute apart: judged from the first result,
            // but not before it.
            if completed(
                &samples,
                "netprobe_storage_probes_total",
                &[("volume", volume)],
            ) < 1.0
            {
                continue;
            }
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
            let entry = by.entry((dominant, volume.to_owned())).or_default();
            entry.0.push(node.to_owned());
            entry.1.push(format!(
                "node {node} volume {volume}: failing; results so far: {}",
                results
                    .iter()
                    .map(|(r, n)| format!("{r}={n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    by.into_iter()
        .map(|((result, volume), (nodes, lines))| {
            let (cause, next) = storage_result_meaning(&result);
            Finding::new(
                "storage.probe-failing",
                if result == "insufficient_space" {
                    Severity::Warning
                } else {
                    Severity::Critical
                },
                if nodes.len() == 1 {
                    format!(
                        "Storage probe failing ({result}) on volume {volume} of node {}",
                        nodes[0]
                    )
                } else {
                    format!(
                        "Storage probe failing ({result}) on volume {volume} of {}: {}",
                        plural(nodes.len(), "node", "nodes"),
                        list_some(&nodes, 4)
                    )
                },
            )
            .evidence(lines)
            .cause(cause)
            .next(format!("On node {}: {}", nodes[0], lower_first(next)))
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

    /// /metrics text as a kube-netprobe pod serves it (peer, DNS and storage families), each peer
    /// probed 10 times.
    fn metrics(peers: &[(&str, &str, bool)], extra: &str) -> String {
        let peers: Vec<_> = peers.iter().map(|(t, p, up)| (*t, *p, *up, 10)).collect();
        metrics_probed(&peers, extra)
    }

    /// As [`metrics`], with the completed probes of each peer: `netprobe_peer_requests_total`
    /// (the last one's result as `up` says; none at all for 0).
    fn metrics_probed(peers: &[(&str, &str, bool, u64)], extra: &str) -> String {
        let mut t = String::from("# TYPE netprobe_peer_up gauge\n");
        for (target, protocol, up, _) in peers {
            t.push_str(&format!(
                "netprobe_peer_up{{target_node=\"{target}\",protocol=\"{protocol}\",family=\"ipv4\"}} {}\n",
                u8::from(*up)
            ));
        }
        t.push_str("# TYPE netprobe_peer_requests_total counter\n");
        for (target, protocol, up, probes) in peers.iter().filter(|p| p.3 > 0) {
            t.push_str(&format!(
                "netprobe_peer_requests_total{{target_node=\"{target}\",protocol=\"{protocol}\",result=\"{}\"}} {probes}\n",
                if *up { "success" } else { "timeout" }
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

    /// A ring where node i probes the next `k` nodes, over http only.
    fn ring(n: usize, k: usize, fail: impl Fn(usize, usize) -> bool) -> Vec<ProbeScrape> {
        (0..n)
            .map(|src| {
                let names: Vec<String> = (1..=k).map(|d| format!("n{}", (src + d) % n)).collect();
                let peers: Vec<(&str, &str, bool)> = names
                    .iter()
                    .enumerate()
                    .map(|(d, t)| (t.as_str(), "http", !fail(src, (src + d + 1) % n)))
                    .collect();
                ProbeScrape {
                    pod: format!("netprobe-n{src}"),
                    node: format!("n{src}"),
                    text: Some(metrics(&peers, "")),
                    error: None,
                }
            })
            .collect()
    }

    #[test]
    fn matrix_votes_name_two_isolated_nodes_and_no_bystander() {
        // 8 nodes probing 3 neighbours each; n2 and n3 cut off. n0 and n1 probe both (2 of their
        // 3 paths fail), n4 is probed only by n1, n2 and n3: none of them may be named.
        let f = matrix_ids(ring(8, 3, |s, t| {
            [2, 3].contains(&s) || [2, 3].contains(&t)
        }));
        assert_eq!(
            ids(&f),
            ["network.node-isolated", "network.node-isolated"],
            "{f:#?}"
        );
        assert!(f[0].title.contains("Node n2 "), "{}", f[0].title);
        assert!(f[1].title.contains("Node n3 "), "{}", f[1].title);
        // On 5 nodes the two are more than a third of the cluster: the mesh is broken as a
        // whole, said once.
        let f = matrix_ids(ring(5, 3, |s, t| {
            [2, 3].contains(&s) || [2, 3].contains(&t)
        }));
        assert_eq!(ids(&f), ["network.many-pairs-failing"], "{f:#?}");
    }

    #[test]
    fn matrix_blocked_pair_names_both_nodes_and_blames_neither() {
        let f = matrix_ids(ring(8, 3, |s, t| (s, t) == (1, 3)));
        assert_eq!(ids(&f), ["network.pairs-failing"], "{f:#?}");
        assert!(f[0].title.contains("n1 -> n3"), "{}", f[0].title);
        let f = matrix_ids(mesh(&NODES, |s, t, _| {
            (s, t) == ("node-a", "node-b") || (s, t) == ("node-b", "node-a")
        }));
        assert_eq!(ids(&f), ["network.pairs-failing"], "{f:#?}");
        assert!(
            f[0].title.contains("node-a -> node-b") && f[0].title.contains("node-b -> node-a"),
            "{}",
            f[0].title
        );
    }

    #[test]
    fn matrix_votes_egress_beside_ingress() {
        // n5 cannot reach anyone; n1 cannot be reached. n5 probes n1 (its failure there is
        // explained twice): each is named for its own way only.
        let f = matrix_ids(ring(8, 3, |s, t| s == 5 || t == 1));
        let mut got = ids(&f);
        got.sort();
        assert_eq!(
            got,
            ["network.node-egress-broken", "network.node-unreachable"],
            "{f:#?}"
        );
        assert!(
            f.iter()
                .any(|x| x.id == "network.node-egress-broken" && x.title.contains("Node n5 "))
        );
        assert!(
            f.iter()
                .any(|x| x.id == "network.node-unreachable" && x.title.contains("Node n1 "))
        );
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
                    "netprobe_apiserver_up{{path=\"direct\"}} {direct}\nnetprobe_apiserver_up{{path=\"dns\"}} {dns}\n\
                     netprobe_apiserver_requests_total{{path=\"direct\",result=\"success\"}} 10\n\
                     netprobe_apiserver_requests_total{{path=\"dns\",result=\"timeout\"}} 10\n"
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

    /// DNS probe results, each after 10 lookups (the last one's rcode as `ok` says).
    fn dns_scrape(node: &str, rows: &[(&str, &str, bool)]) -> ProbeScrape {
        let rows: Vec<_> = rows.iter().map(|(s, n, ok)| (*s, *n, *ok, 10)).collect();
        dns_scrape_probed(node, &rows)
    }

    fn dns_scrape_probed(node: &str, rows: &[(&str, &str, bool, u64)]) -> ProbeScrape {
        let mut extra = String::from("# TYPE netprobe_dns_probe_success gauge\n");
        for (server, name, ok, lookups) in rows {
            extra.push_str(&format!(
                "netprobe_dns_probe_success{{server=\"{server}\",name=\"{name}\",qtype=\"A\"}} {}\n\
                 netprobe_dns_lookups_total{{server=\"{server}\",name=\"{name}\",qtype=\"A\",rcode=\"{}\"}} {lookups}\n",
                u8::from(*ok),
                if *ok { "NOERROR" } else { "SERVFAIL" }
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
        assert_eq!(
            f[0].title,
            "Storage probe failing (erofs) on volume scratch of node node-a"
        );
    }

    #[test]
    fn storage_probe_titles_name_node_and_volume() {
        let scrape = |node: &str, volume: &str, result: &str| ProbeScrape {
            pod: format!("netprobe-{node}"),
            node: node.into(),
            text: Some(metrics(
                &[],
                &format!(
                    "netprobe_storage_probe_success{{volume=\"{volume}\"}} 0\n\
                     netprobe_storage_probes_total{{volume=\"{volume}\",result=\"success\"}} 4\n\
                     netprobe_storage_probes_total{{volume=\"{volume}\",result=\"{result}\"}} 2\n"
                ),
            )),
            error: None,
        };
        let mut s = healthy();
        s.probe_scrapes = vec![
            scrape("node-a", "scratch", "enospc"),
            scrape("node-b", "scratch", "enospc"),
            scrape("node-b", "data", "eio"),
        ];
        let f = storage_probes(&s);
        let titles: Vec<&str> = f.iter().map(|f| f.title.as_str()).collect();
        assert_eq!(
            titles,
            [
                "Storage probe failing (eio) on volume data of node node-b",
                "Storage probe failing (enospc) on volume scratch of 2 nodes: node-a, node-b",
            ]
        );
        assert!(
            f[0].next_step.starts_with("On node node-b: check"),
            "{}",
            f[0].next_step
        );
        // A volume not probed yet (the series exist, no run has finished): nothing.
        s.probe_scrapes = vec![ProbeScrape {
            pod: "netprobe-a".into(),
            node: "node-a".into(),
            text: Some(metrics(
                &[],
                "netprobe_storage_probe_success{volume=\"scratch\"} 0\n\
                 netprobe_storage_probes_total{volume=\"scratch\",result=\"success\"} 0\n",
            )),
            error: None,
        }];
        assert_eq!(storage_probes(&s), vec![]);
    }

    // --- fresh and partial data ----------------------------------------------------------

    /// A 4-node mesh over http and tcp where node-c's kube-netprobe pod was just replaced:
    /// its own probes and its peers' probes of its new address have 0 or 1 results, all
    /// failing (the new pod was not serving yet), while the rest is healthy.
    fn replaced_pod_mesh(own_series: bool) -> Vec<ProbeScrape> {
        NODES
            .iter()
            .map(|src| {
                let mut peers = Vec::new();
                for t in NODES.iter().filter(|t| *t != src) {
                    for p in ["http", "tcp"] {
                        if *src == "node-c" {
                            if own_series {
                                peers.push((*t, p, false, 1));
                            }
                        } else if *t == "node-c" {
                            peers.push((*t, p, false, 1));
                        } else {
                            peers.push((*t, p, true, 40));
                        }
                    }
                }
                ProbeScrape {
                    pod: format!("netprobe-{src}"),
                    node: src.to_string(),
                    text: Some(metrics_probed(&peers, "")),
                    error: None,
                }
            })
            .collect()
    }

    #[test]
    fn fresh_pod_gives_no_critical_finding() {
        for own_series in [true, false] {
            let mut s = healthy();
            s.probe_scrapes = replaced_pod_mesh(own_series);
            let f = analyse(&s);
            assert_eq!(ids(&f), ["network.peers-too-fresh"], "{f:#?}");
            assert_eq!(f[0].severity, Severity::Info);
            assert!(f[0].title.contains("node node-c"), "{}", f[0].title);
            assert_eq!(super::super::report::exit_code(&f), 0);
        }
        // The same failures after 3 probes each are judged: node-c is cut off.
        let mut s = healthy();
        s.probe_scrapes = mesh(&NODES, |s, t, _| s == "node-c" || t == "node-c");
        assert_eq!(ids(&analyse(&s)), ["network.node-isolated"]);
    }

    #[test]
    fn a_success_counts_from_the_first_probe() {
        // node-d is new and reaches everyone at once; everyone reaches it at once: healthy.
        let scrapes: Vec<ProbeScrape> = NODES
            .iter()
            .map(|src| {
                let peers: Vec<_> = NODES
                    .iter()
                    .filter(|t| *t != src)
                    .flat_map(|t| {
                        let n = if *src == "node-d" || *t == "node-d" {
                            1
                        } else {
                            40
                        };
                        ["http", "tcp"].map(|p| (*t, p, true, n))
                    })
                    .collect();
                ProbeScrape {
                    pod: format!("netprobe-{src}"),
                    node: src.to_string(),
                    text: Some(metrics_probed(&peers, "")),
                    error: None,
                }
            })
            .collect();
        assert_eq!(matrix_ids(scrapes), vec![]);
    }

    /// node-c's network cut: its peers' probes of it fail (long since), and its own /metrics
    /// cannot be read through the API server.
    fn cut_node_unread() -> Vec<ProbeScrape> {
        let mut scrapes = mesh(&NODES, |_, t, _| t == "node-c");
        let c = scrapes.iter_mut().find(|x| x.node == "node-c").unwrap();
        c.text = None;
        c.error = Some("timed out".into());
        scrapes
    }

    #[test]
    fn unreadable_node_metrics_make_no_claim_about_what_it_reaches() {
        let mut s = healthy();
        s.probe_scrapes = cut_node_unread();
        let f = analyse(&s);
        assert_eq!(ids(&f), ["network.node-unreachable"], "{f:#?}");
        assert_eq!(f[0].severity, Severity::Warning);
        assert_eq!(
            f[0].title,
            "Node node-c is unreachable: no peer reaches it; its own view could not be read"
        );
        assert!(!f[0].title.contains("reaches them"));
        assert!(!f[0].cause.contains("reaches them"), "{}", f[0].cause);
        assert!(
            f[0].evidence
                .iter()
                .any(|e| e.contains("node-c") && e.contains("could not be read: timed out")),
            "{:?}",
            f[0].evidence
        );
        let m = Matrix::from_snapshot(&s);
        assert_eq!(m.unread, ["node-c"]);
        // With its own view read, and reaching its peers: the critical finding, and the claim.
        s.probe_scrapes = mesh(&NODES, |_, t, _| t == "node-c");
        let f = analyse(&s);
        assert_eq!(ids(&f), ["network.node-unreachable"]);
        assert_eq!(f[0].severity, Severity::Critical);
        assert!(f[0].title.ends_with("no peer reaches it, it reaches them"));
        // Read, but its own probes all too fresh: no claim either.
        let mut scrapes = mesh(&NODES, |_, t, _| t == "node-c");
        let c = scrapes.iter_mut().find(|x| x.node == "node-c").unwrap();
        c.text = Some(metrics_probed(
            &[("node-a", "http", false, 1), ("node-b", "http", true, 1)],
            "",
        ));
        s.probe_scrapes = scrapes;
        let f = analyse(&s);
        assert_eq!(
            ids(&f),
            ["network.node-unreachable", "network.peers-too-fresh"]
        );
        assert_eq!(f[0].severity, Severity::Warning);
        assert!(
            f[0].title.ends_with("its own view is too fresh to judge"),
            "{}",
            f[0].title
        );
    }

    #[test]
    fn a_rollout_leaves_the_node_read() {
        // The old pod is terminating (not read), the new one is read: the node is not unread.
        let mut scrapes = mesh(&NODES, |_, _, _| false);
        scrapes.push(ProbeScrape {
            pod: "netprobe-node-c-old".into(),
            node: "node-c".into(),
            text: None,
            error: Some("pod not running (or terminating)".into()),
        });
        let s = Snapshot {
            probe_scrapes: scrapes,
            ..Snapshot::default()
        };
        let m = Matrix::from_snapshot(&s);
        assert!(m.unread.is_empty(), "{:?}", m.unread);
        assert_eq!(live_matrix(&m), vec![]);
    }

    #[test]
    fn egress_claim_needs_the_peers_view() {
        // node-d reaches nobody; the peers' probes of it are all fresh and failing.
        let scrapes: Vec<ProbeScrape> = NODES
            .iter()
            .map(|src| {
                let peers: Vec<_> = NODES
                    .iter()
                    .filter(|t| *t != src)
                    .flat_map(|t| {
                        let (up, n) = match (*src, *t) {
                            ("node-d", _) => (false, 30),
                            (_, "node-d") => (false, 2),
                            _ => (true, 30),
                        };
                        ["http", "tcp"].map(|p| (*t, p, up, n))
                    })
                    .collect();
                ProbeScrape {
                    pod: format!("netprobe-{src}"),
                    node: src.to_string(),
                    text: Some(metrics_probed(&peers, "")),
                    error: None,
                }
            })
            .collect();
        let f = matrix_ids(scrapes);
        assert_eq!(
            ids(&f),
            ["network.node-egress-broken", "network.peers-too-fresh"]
        );
        assert_eq!(f[0].severity, Severity::Warning);
        assert!(
            !f[0].title.contains("though peers reach it"),
            "{}",
            f[0].title
        );
    }

    #[test]
    fn fresh_dns_and_apiserver_failures_are_not_judged() {
        let name = "kubernetes.default.svc.cluster.local";
        let mut s = healthy();
        // A CoreDNS pod that just appeared fails its first lookup from every node.
        s.probe_scrapes = ["node-a", "node-b", "node-c"]
            .iter()
            .map(|n| {
                dns_scrape_probed(
                    n,
                    &[
                        ("system", name, true, 40),
                        ("coredns/coredns-a", name, true, 40),
                        ("coredns/coredns-new", name, false, 1),
                    ],
                )
            })
            .collect();
        assert_eq!(analyse(&s), vec![]);
        // A new kube-netprobe pod whose API-server paths have not finished a probe yet.
        s.probe_scrapes = vec![ProbeScrape {
            pod: "netprobe-a".into(),
            node: "node-a".into(),
            text: Some(metrics(
                &[],
                "netprobe_apiserver_up{path=\"direct\"} 0\nnetprobe_apiserver_up{path=\"dns\"} 0\n\
                 netprobe_apiserver_requests_total{path=\"direct\",result=\"success\"} 0\n",
            )),
            error: None,
        }];
        assert_eq!(analyse(&s), vec![]);
    }

    // --- names outside the cluster -------------------------------------------------------

    fn dns_everywhere(rows: &[(&str, &str, bool)]) -> Vec<ProbeScrape> {
        ["node-a", "node-b", "node-c"]
            .iter()
            .map(|n| dns_scrape(n, rows))
            .collect()
    }

    #[test]
    fn external_names_failing_while_cluster_names_resolve_is_upstream() {
        let cluster = "kubernetes.default.svc.cluster.local";
        let mut s = healthy();
        s.probe_scrapes = dns_everywhere(&[
            ("system", cluster, true),
            ("coredns/coredns-a", cluster, true),
            ("coredns/coredns-bb", cluster, true),
            ("system", "example.com", false),
            ("coredns/coredns-a", "example.com", false),
            ("coredns/coredns-bb", "example.com", false),
        ]);
        let f = analyse(&s);
        assert_eq!(ids(&f), ["dns.upstream-failing"], "{f:#?}");
        assert_eq!(f[0].severity, Severity::Critical);
        assert_eq!(
            f[0].title,
            "CoreDNS's upstream (/etc/resolv.conf) fails: names outside the cluster fail from \
             most nodes while cluster names resolve: example.com"
        );
        assert!(f[0].cause.contains("upstream"), "{}", f[0].cause);
        assert!(f[0].next_step.contains("dig @UPSTREAM example.com"));
        assert!(
            f[0].evidence
                .iter()
                .any(|e| e == "Corefile: forward . /etc/resolv.conf {"),
            "{:?}",
            f[0].evidence
        );
        assert!(
            f[0].evidence
                .iter()
                .any(|e| e.contains("example.com through system, lookups since")
                    && e.contains("SERVFAIL 30")),
            "{:?}",
            f[0].evidence
        );
        // The same with the Corefile's forward gone: the cause says so.
        s.corefile = Some(Some(".:53 {\n    kubernetes cluster.local\n}\n".into()));
        let f = analyse(&s);
        assert_eq!(ids(&f), ["dns.upstream-failing", "dns.corefile-no-forward"]);
        assert!(
            f[0].title.contains("(none: the Corefile has no forward)"),
            "{}",
            f[0].title
        );
        assert!(f[0].cause.contains("no `forward`"), "{}", f[0].cause);
    }

    #[test]
    fn cluster_names_failing_too_is_coredns_itself() {
        let cluster = "kubernetes.default.svc.cluster.local";
        let mut s = healthy();
        s.probe_scrapes = dns_everywhere(&[
            ("system", cluster, false),
            ("coredns/coredns-a", cluster, false),
            ("system", "example.com", false),
            ("coredns/coredns-a", "example.com", false),
        ]);
        let f = analyse(&s);
        assert_eq!(ids(&f), ["dns.resolution-failing"]);
        assert!(f[0].title.contains(cluster), "{}", f[0].title);
        assert!(f[0].cause.contains("CoreDNS itself"), "{}", f[0].cause);
        assert!(f[0].cause.contains("not its upstream"), "{}", f[0].cause);
        // Cluster zones come from the Corefile: a cluster named corp.internal.
        s.corefile = Some(Some(
            ".:53 {\n    kubernetes corp.internal in-addr.arpa {\n    }\n    forward . 10.0.0.2\n}\n".into(),
        ));
        s.probe_scrapes = dns_everywhere(&[
            ("system", "api.default.corp.internal", true),
            ("system", "example.com", false),
        ]);
        assert_eq!(ids(&analyse(&s)), ["dns.upstream-failing"]);
        assert!(
            analyse(&s)[0]
                .title
                .starts_with("CoreDNS's upstream (10.0.0.2) fails")
        );
    }

    // --- DNS latency -----------------------------------------------------------------------

    /// A lookup-duration histogram for (server, name): `lookups` of (seconds, how many).
    fn histogram(server: &str, name: &str, lookups: &[(f64, u64)]) -> String {
        let labels = format!("server=\"{server}\",name=\"{name}\",qtype=\"A\"");
        let mut t = String::new();
        for le in crate::metrics::DNS_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
        {
            let n: u64 = lookups
                .iter()
                .filter(|(s, _)| *s <= le)
                .map(|(_, n)| n)
                .sum();
            let le = if le.is_infinite() {
                "+Inf".to_owned()
            } else {
                format!("{le:?}")
            };
            t.push_str(&format!(
                "netprobe_dns_lookup_duration_seconds_bucket{{{labels},le=\"{le}\"}} {n}\n"
            ));
        }
        let count: u64 = lookups.iter().map(|(_, n)| n).sum();
        let sum: f64 = lookups.iter().map(|(s, n)| s * *n as f64).sum();
        t.push_str(&format!(
            "netprobe_dns_lookup_duration_seconds_sum{{{labels}}} {sum}\n\
             netprobe_dns_lookup_duration_seconds_count{{{labels}}} {count}\n\
             netprobe_dns_lookups_total{{{labels},rcode=\"NOERROR\"}} {count}\n"
        ));
        t
    }

    /// Four nodes; `system(node)` and `direct(node, pod)` give each one's lookups.
    fn latency_scrapes(
        system: impl Fn(&str) -> Vec<(f64, u64)>,
        direct: impl Fn(&str, &str) -> Vec<(f64, u64)>,
    ) -> Vec<ProbeScrape> {
        let name = "kubernetes.default.svc.cluster.local";
        NODES
            .iter()
            .map(|node| {
                let mut extra = histogram("system", name, &system(node));
                for pod in ["coredns-a", "coredns-bb"] {
                    extra.push_str(&histogram(
                        &format!("coredns/{pod}"),
                        name,
                        &direct(node, pod),
                    ));
                }
                ProbeScrape {
                    pod: format!("netprobe-{node}"),
                    node: node.to_string(),
                    text: Some(metrics(&[], &extra)),
                    error: None,
                }
            })
            .collect()
    }

    fn fast(_: &str) -> Vec<(f64, u64)> {
        vec![(0.002, 95), (0.004, 5)]
    }

    fn fast_direct(_: &str, _: &str) -> Vec<(f64, u64)> {
        vec![(0.001, 100)]
    }

    #[test]
    fn histogram_quantiles_as_prometheus_estimates_them() {
        let text = histogram("system", "x", &[(0.002, 50), (0.2, 49), (5.2, 1)]);
        let mut h = Histogram::default();
        for x in scrape::parse(&text) {
            if x.name.ends_with("_bucket") {
                let le = if x.label("le") == "+Inf" {
                    f64::INFINITY
                } else {
                    x.label("le").parse().unwrap()
                };
                h.add_bucket(le, x.value);
            } else if x.name.ends_with("_count") {
                h.count = x.value;
            } else if x.name.ends_with("_sum") {
                h.sum = x.value;
            }
        }
        // Half at 2 ms: the median is the top of the (1 ms, 2.5 ms] bucket's share.
        assert!(
            (h.quantile(0.5).unwrap() - 0.0025).abs() < 1e-9,
            "{:?}",
            h.quantile(0.5)
        );
        // The 99th of 100 lookups is in (0.1, 0.25].
        let p99 = h.quantile(0.99).unwrap();
        assert!(p99 > 0.1 && p99 <= 0.25, "{p99}");
        assert_eq!(h.between(4.5, 5.5), Some(1.0));
        assert!((h.mean().unwrap() - (0.1 + 9.8 + 5.2) / 100.0).abs() < 1e-9);
    }

    #[test]
    fn healthy_latency_raises_nothing() {
        let mut s = healthy();
        s.probe_scrapes = latency_scrapes(fast, fast_direct);
        assert_eq!(analyse(&s), vec![]);
    }

    #[test]
    fn lookups_at_five_seconds_on_one_node() {
        let mut s = healthy();
        // Every lookup from node-b through the Service: first packet lost, retry answered.
        s.probe_scrapes = latency_scrapes(
            |n| {
                if n == "node-b" {
                    vec![(5.003, 100)]
                } else {
                    fast(n)
                }
            },
            fast_direct,
        );
        let f = analyse(&s);
        assert_eq!(ids(&f), ["dns.lookups-at-five-seconds"], "{f:#?}");
        assert_eq!(f[0].severity, Severity::Warning);
        assert_eq!(
            f[0].title,
            "DNS lookups from node node-b take 5 s (first packet lost, retried): 100 % of lookups through system"
        );
        assert!(f[0].cause.contains("conntrack race"), "{}", f[0].cause);
        assert!(
            f[0].cause
                .contains("straight to the DNS servers from the same nodes are answered")
        );
        assert!(
            f[0].next_step.starts_with("On node-b: `conntrack -S`"),
            "{}",
            f[0].next_step
        );
        // Below the share (1 in 200): nothing; too few lookups: nothing.
        s.probe_scrapes = latency_scrapes(
            |n| {
                if n == "node-b" {
                    vec![(0.002, 199), (5.003, 1)]
                } else {
                    fast(n)
                }
            },
            fast_direct,
        );
        assert_eq!(analyse(&s), vec![]);
        s.probe_scrapes = latency_scrapes(
            |n| {
                if n == "node-b" {
                    vec![(5.003, 10)]
                } else {
                    fast(n)
                }
            },
            fast_direct,
        );
        assert_eq!(analyse(&s), vec![]);
    }

    #[test]
    fn aaaa_lost_beside_answered_a_is_the_race_itself() {
        let mut s = healthy();
        s.probe_scrapes = latency_scrapes(
            |n| {
                if n == "node-b" {
                    vec![(5.003, 100)]
                } else {
                    fast(n)
                }
            },
            fast_direct,
        );
        let b = s
            .probe_scrapes
            .iter_mut()
            .find(|x| x.node == "node-b")
            .unwrap();
        let labels = "server=\"system\",name=\"kubernetes.default.svc.cluster.local\",qtype=\"A\"";
        let text = b.text.take().unwrap().replace(
            "# EOF\n",
            &format!(
                "netprobe_dns_family_queries_total{{{labels},family=\"ipv4\",rcode=\"NOERROR\"}} 100\n\
                 netprobe_dns_family_queries_total{{{labels},family=\"ipv6\",rcode=\"NOERROR\"}} 0\n\
                 netprobe_dns_family_queries_total{{{labels},family=\"ipv6\",rcode=\"TIMEOUT\"}} 100\n# EOF\n"
            ),
        );
        b.text = Some(text);
        let f = analyse(&s);
        assert_eq!(ids(&f), ["dns.lookups-at-five-seconds"]);
        assert!(
            f[0].cause.contains("the conntrack race itself"),
            "{}",
            f[0].cause
        );
        assert!(
            f[0].evidence.contains(
                &"node node-b, server system: 100 % of the AAAA queries timed out".to_owned()
            ),
            "{:?}",
            f[0].evidence
        );
    }

    #[test]
    fn five_seconds_everywhere_points_at_what_nodes_share() {
        let mut s = healthy();
        s.probe_scrapes = latency_scrapes(|_| vec![(0.002, 80), (5.01, 20)], fast_direct);
        let f = analyse(&s);
        assert_eq!(ids(&f), ["dns.lookups-at-five-seconds"]);
        assert!(
            f[0].title
                .ends_with("from 4 nodes: node-a, node-b, node-c, node-d"),
            "{}",
            f[0].title
        );
        assert!(f[0].cause.contains("most nodes at once"), "{}", f[0].cause);
    }

    #[test]
    fn one_node_much_slower_than_the_others() {
        let mut s = healthy();
        s.probe_scrapes = latency_scrapes(
            |n| {
                if n == "node-c" {
                    vec![(0.8, 60), (1.8, 40)]
                } else {
                    fast(n)
                }
            },
            fast_direct,
        );
        let f = analyse(&s);
        assert_eq!(ids(&f), ["dns.node-slow"], "{f:#?}");
        assert!(
            f[0].title.starts_with(
                "DNS lookups from node node-c are much slower than from the other nodes: p99 "
            ),
            "{}",
            f[0].title
        );
        assert!(f[0].title.ends_with("through system"), "{}", f[0].title);
        // Direct queries from node-c are fast: its resolv.conf or the Service path.
        assert!(f[0].cause.contains("resolv.conf"), "{}", f[0].cause);
        // Slow, but not 4 times the others: nothing.
        s.probe_scrapes = latency_scrapes(
            |n| {
                if n == "node-c" {
                    vec![(0.3, 100)]
                } else {
                    vec![(0.2, 100)]
                }
            },
            fast_direct,
        );
        assert_eq!(analyse(&s), vec![]);
    }

    #[test]
    fn one_coredns_pod_much_slower_than_the_others() {
        let mut s = healthy();
        s.probe_scrapes = latency_scrapes(fast, |_, pod| {
            if pod == "coredns-bb" {
                vec![(0.002, 50), (0.9, 50)]
            } else {
                vec![(0.001, 100)]
            }
        });
        let f = analyse(&s);
        assert_eq!(ids(&f), ["dns.server-slow"], "{f:#?}");
        assert!(
            f[0].title
                .starts_with("CoreDNS pod coredns-bb answers much more slowly"),
            "{}",
            f[0].title
        );
        assert!(f[0].next_step.contains("top pod coredns-bb"));
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
