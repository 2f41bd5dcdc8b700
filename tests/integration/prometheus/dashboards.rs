//! Every query of every dashboard in `dashboards/`, with Grafana's variables substituted, and
//! what its panels must show while `alerts_and_dashboards`' faults are in place.

use std::path::PathBuf;

use serde_json::Value;

use super::{NODE, repo};

/// Substitutions for Grafana's variables when a dashboard query is run here. `node` is the
/// test's node (the ServiceMonitor's label must reach every series); the others are "All".
const VARIABLES: &[(&str, &str)] = &[
    ("$__rate_interval", "1m"),
    ("$__interval", "5s"),
    ("$__range", "5m"),
    ("$cluster", ".*"),
    ("$node", NODE),
    ("$server", ".*"),
    ("$protocol", ".*"),
    ("$volume", ".*"),
];

/// Panels (dashboard uid, title) that may return nothing in this test, and why. Every other
/// panel is core: its queries must return data. Panels whose query uses an SLO recording rule
/// (`netprobe_slo:`) may also be empty while no such rule is in `alerts/` (alerts/slo.yaml is
/// written on another branch); once the rules are there, those panels are core too.
pub(super) const MAY_BE_EMPTY: &[(&str, &str, &str)] = &[
    (
        "kube-netprobe-overview",
        "Failing API-server paths",
        "no API server here: the probe is off",
    ),
    (
        "kube-netprobe-dns",
        "Success ratio per CoreDNS pod",
        "no CoreDNS pods in this test (coredns_replica_failing_names_the_broken_pod checks these panels)",
    ),
    (
        "kube-netprobe-dns",
        "p99 latency per CoreDNS pod",
        "no CoreDNS pods in this test",
    ),
    (
        "kube-netprobe-dns",
        "Error ratio per CoreDNS pod",
        "no CoreDNS pods in this test",
    ),
    (
        "kube-netprobe-dns",
        "Lookups per second per CoreDNS pod",
        "no CoreDNS pods in this test",
    ),
    (
        "kube-netprobe-network",
        "MTU black hole suspects (bulk fails, http passes)",
        "no MTU fault here (the mesh suite has one)",
    ),
    (
        "kube-netprobe-network",
        "API server reachable now",
        "no API server here",
    ),
    (
        "kube-netprobe-network",
        "API server latency p99 by phase",
        "no API server here",
    ),
    (
        "kube-netprobe-network",
        "API server failed probes by result",
        "no API server here",
    ),
    (
        "kube-netprobe-storage",
        "CSI driver registered (rows: node, columns: driver)",
        "CSI watch needs an API server",
    ),
    (
        "kube-netprobe-self",
        "Discovery errors per minute",
        "static peers: no discovery calls to fail",
    ),
    (
        "kube-netprobe-self",
        "ICMP available",
        "icmp peer probes not configured",
    ),
    (
        "kube-netprobe-self",
        "CPU used and limit (cores)",
        "no CPU limit here: the limit series is absent (cgroup.rs reads a real limit)",
    ),
    (
        "kube-netprobe-dns",
        "p99 latency, now and a day before",
        "no lookups a day old in a test minutes long",
    ),
    (
        "kube-netprobe-network",
        "Pod IPs in use per node",
        "no API server here: pod_ips is off",
    ),
];

/// Storage panels (and other panels on netprobe_storage_* series), empty when the test cannot
/// mount volumes (not root).
pub(super) const STORAGE_DASHBOARD: &str = "kube-netprobe-storage";

/// Numbers the injected faults fix, read from panels (an instant query's value, a graph's last
/// sample): (dashboard uid, panel title, labels selecting the series, lowest, highest). Every
/// selected series must be in range, and at least one must exist. On [`NODE`] 3 of its 4
/// (server, name) pairs fail, one of its 2 peers refuses (http, tcp and bulk), and (as root) one
/// of its 2 volumes is read-only. With `$node` = [`NODE`], no number may include [`NODE_B`]'s
/// series (a failing DNS pair, a target of its own): a panel that forgets the node filter fails.
type ValueCheck = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    f64,
    f64,
);
pub(super) const VALUES: &[ValueCheck] = &[
    (
        "kube-netprobe-overview",
        "DNS lookups failing",
        &[],
        3.0,
        3.0,
    ),
    ("kube-netprobe-overview", "Peers unreachable", &[], 3.0, 3.0),
    (
        "kube-netprobe-overview",
        "API-server paths failing",
        &[],
        0.0,
        0.0,
    ),
    (
        "kube-netprobe-overview",
        "CSI drivers unregistered",
        &[],
        0.0,
        0.0,
    ),
    (
        "kube-netprobe-overview",
        "kube-netprobe targets down",
        &[],
        0.0,
        0.0,
    ),
    ("kube-netprobe-dns", "Probes failing now", &[], 3.0, 3.0),
    // 3 of the 4 pairs fail every lookup; the pairs run at the same interval.
    ("kube-netprobe-dns", "Error ratio", &[], 0.6, 0.9),
    ("kube-netprobe-dns", "Servers", &[], 2.0, 2.0),
    ("kube-netprobe-dns", "Nodes probing", &[], 1.0, 1.0),
    (
        "kube-netprobe-network",
        "Reachability now",
        &[("target_node", "peer-ok")],
        1.0,
        1.0,
    ),
    (
        "kube-netprobe-network",
        "Reachability now",
        &[("target_node", "peer-refused")],
        0.0,
        0.0,
    ),
    (
        "kube-netprobe-network",
        "Success ratio over the time range",
        &[("target_node", "peer-refused")],
        0.0,
        0.0,
    ),
    (
        "kube-netprobe-network",
        "Success ratio over the time range",
        &[("target_node", "peer-ok")],
        0.9,
        1.0,
    ),
    (
        "kube-netprobe-network",
        "Unreachable peers now",
        &[("target_node", "peer-refused")],
        0.0,
        0.0,
    ),
    // One checker (this node), which reaches its other peer, so its vote counts: 1 of 1 fails.
    // peer-ok has no series: its one checker fails its other path, so it has no vote.
    (
        "kube-netprobe-network",
        "Ingress blame per target node (http)",
        &[("target_node", "peer-refused")],
        1.0,
        1.0,
    ),
    // One of its two peers fails, and no other checker says whether it answers (a single
    // checker's target counts as reached by others): exactly NetworkNodeEgressFailing's
    // boundary (silent).
    (
        "kube-netprobe-network",
        "Egress blame per checker node (http)",
        &[("node", NODE)],
        0.5,
        0.5,
    ),
    ("kube-netprobe-self", "Targets up", &[], 1.0, 1.0),
    ("kube-netprobe-self", "Targets down", &[], 0.0, 0.0),
    ("kube-netprobe-self", "Builds running", &[], 1.0, 1.0),
];
/// As [`VALUES`], once alerts/ has the SLO recording rules of docs/slo.md. The SLOs are
/// cluster-wide: 4 of the 6 DNS pairs of both nodes fail, so the dns-availability error ratio is
/// about 0.67 against a budget of 0.001 (burn rate about 670).
pub(super) const SLO_VALUES: &[ValueCheck] = &[
    (
        "kube-netprobe-overview",
        "SLO attainment (30d)",
        &[("slo", "dns-availability")],
        0.1,
        0.4,
    ),
    (
        "kube-netprobe-overview",
        "Error budget remaining (30d)",
        &[("slo", "dns-availability")],
        -900.0,
        -600.0,
    ),
    (
        "kube-netprobe-overview",
        "Burn rate now (1h)",
        &[("slo", "dns-availability")],
        600.0,
        900.0,
    ),
];
/// As [`VALUES`], when the test could mount the volumes.
pub(super) const STORAGE_VALUES: &[ValueCheck] = &[
    ("kube-netprobe-overview", "Volumes failing", &[], 1.0, 1.0),
    (
        "kube-netprobe-storage",
        "Probe status now",
        &[("volume", "readonly")],
        0.0,
        0.0,
    ),
    (
        "kube-netprobe-storage",
        "Probe status now",
        &[("volume", "scratch")],
        1.0,
        1.0,
    ),
];

/// One query of a dashboard: where it is, and the PromQL with variables substituted.
pub(super) struct DashboardQuery {
    pub(super) uid: String,
    pub(super) panel: String,
    /// A panel's query (`instant` or range) or a variable's `label_values(selector, label)`.
    pub(super) kind: QueryKind,
}

pub(super) enum QueryKind {
    Panel { expr: String, instant: bool },
    LabelValues { selector: String, label: String },
}

pub(super) fn substitute(expr: &str) -> String {
    // Longest names first, so a name never eats a prefix of another.
    let mut vars = VARIABLES.to_vec();
    vars.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
    let mut out = expr.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("${{{}}}", &k[1..]), v).replace(k, v);
    }
    out
}

pub(super) fn dashboard_queries() -> Vec<DashboardQuery> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(repo().join("dashboards"))
        .expect("read dashboards/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no dashboards in dashboards/");
    let mut out = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path).expect("read dashboard");
        let d: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let uid = d["uid"].as_str().unwrap_or_default().to_string();
        for v in d["templating"]["list"].as_array().into_iter().flatten() {
            if v["type"] != "query" {
                continue;
            }
            let q = v["query"]["query"]
                .as_str()
                .or(v["query"].as_str())
                .unwrap_or_default();
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.strip_suffix(')'))
                .unwrap_or_else(|| panic!("{uid}: variable query {q:?} is not label_values(..)"));
            let (selector, label) = inner
                .rsplit_once(',')
                .expect("label_values(selector, label)");
            out.push(DashboardQuery {
                uid: uid.clone(),
                panel: format!("variable {}", v["name"].as_str().unwrap_or_default()),
                kind: QueryKind::LabelValues {
                    selector: substitute(selector.trim()),
                    label: label.trim().to_string(),
                },
            });
        }
        let mut panels: Vec<&Value> = Vec::new();
        for p in d["panels"].as_array().into_iter().flatten() {
            panels.push(p);
            panels.extend(p["panels"].as_array().into_iter().flatten());
        }
        for p in panels {
            for t in p["targets"].as_array().into_iter().flatten() {
                out.push(DashboardQuery {
                    uid: uid.clone(),
                    panel: p["title"].as_str().unwrap_or_default().to_string(),
                    kind: QueryKind::Panel {
                        expr: substitute(t["expr"].as_str().unwrap_or_default()),
                        instant: t["instant"] == true,
                    },
                });
            }
        }
    }
    out
}
