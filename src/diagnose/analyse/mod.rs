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

use super::collect::{DNS_NAMESPACE, DNS_SELECTOR, DNS_SERVICE, Snapshot};
use super::scrape::{self, Sample};

mod capacity;
mod dns;
mod dns_latency;
mod network;
mod nodes;
mod policy;
mod storage;
#[cfg(test)]
mod tests;

pub use self::capacity::*;
pub use self::dns::*;
pub use self::dns_latency::*;
pub use self::network::*;
pub use self::nodes::*;
pub use self::policy::*;
pub use self::storage::*;

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
    /// The nodes this finding blames (an isolated, unreachable or egress-broken node; the one
    /// node on every MTU black-holed path), so a picture of the matrix can mark their rows and
    /// columns. Empty for findings that blame no node; left out of report.json then.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    /// What `kube-netprobe repair` may do about it: only the actions a runbook prescribes and
    /// Kubernetes undoes by itself. The rails (dry-run, rate limits, refusals) are repair's;
    /// this only says which action the evidence points at. Left out of report.json when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub repairs: Vec<Candidate>,
}

crate::observation::label_values! {
    /// A repair `kube-netprobe repair` may take (the `action` label of its metrics).
    pub enum RepairAction {
        evict_coredns,
        restart_kube_proxy,
        delete_stuck_netprobe,
    }
}

impl Serialize for RepairAction {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One repair the evidence of a finding points at.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    pub action: RepairAction,
    /// The pod acted on: the failing CoreDNS replica, the stuck kube-netprobe pod. `None` for
    /// `restart_kube_proxy`, whose pod is looked up on `node` when the action is taken (the
    /// snapshot does not read kube-proxy's pods).
    pub namespace: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    pub node: String,
    /// What one action at a time is limited to: the CoreDNS replica set (evicting any of its
    /// pods counts), or the node.
    pub subject: String,
    /// How many of the set fail (CoreDNS replicas, nodes) and of how many: when most fail, the
    /// fault is elsewhere and repair refuses.
    pub failing: usize,
    pub of: usize,
    /// How long the evidence has held, when the metrics say (a stuck operation's age).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub for_seconds: Option<f64>,
}

impl Candidate {
    /// What the action would do, in words: `evict pod kube-system/coredns-1`.
    pub fn describe(&self) -> String {
        match (self.action, &self.pod) {
            (RepairAction::evict_coredns, Some(pod)) => {
                format!(
                    "evict CoreDNS pod {}/{pod} (node {})",
                    self.namespace, self.node
                )
            }
            (RepairAction::delete_stuck_netprobe, Some(pod)) => format!(
                "delete kube-netprobe pod {}/{pod} (node {})",
                self.namespace, self.node
            ),
            _ => format!("delete the kube-proxy pod of node {}", self.node),
        }
    }
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
            nodes: Vec::new(),
            repairs: Vec::new(),
        }
    }
    fn repairs(mut self, candidates: impl IntoIterator<Item = Candidate>) -> Self {
        self.repairs.extend(candidates);
        self
    }
    fn blames(mut self, node: impl Into<String>) -> Self {
        self.nodes.push(node.into());
        self
    }
    fn blames_all<S: Into<String>>(mut self, nodes: impl IntoIterator<Item = S>) -> Self {
        self.nodes.extend(nodes.into_iter().map(Into::into));
        self
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
    findings.extend(pod_ip_capacity(s));
    findings.extend(live_matrix(&matrix));
    findings.extend(apiserver_probes(s));
    findings.extend(coredns_pods(s));
    findings.extend(coredns_capacity(s));
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
    findings.extend(storage_stuck(s));
    findings.extend(volume_space(s));
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
    use kube::core::{Selector, SelectorExt};
    // An operator the API would reject (or a malformed requirement) selects nothing.
    Selector::try_from(selector.clone()).is_ok_and(|s| s.matches(labels))
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
