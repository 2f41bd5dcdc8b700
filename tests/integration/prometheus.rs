//! End to end through a real Prometheus: Debian's `prometheus` scrapes the real binary (as the
//! chart's ServiceMonitor would, with its `node`, `namespace`, `pod` and `job` target labels)
//! and evaluates the rules of `alerts/*.yaml`, while the binary probes DNS servers, peers and
//! volumes with injected faults. The test reads only Prometheus's HTTP API.
//!
//! | fault | alert that must fire |
//! | --- | --- |
//! | server `good` answers SERVFAIL for one name, server `dead` drops every query (timeouts) | one DNSProbeFailing for the node (two names fail), without a name |
//! | peer `peer-refused`: nothing listens | NetworkNodeUnreachable for that target_node (its one checker reaches its other peer) |
//! | volume `readonly`: a read-only bind mount (root only) | StorageProbeFailing, result erofs |
//! | a second node, `e2e-node-b`, looks up one name through `dead` | DNSProbeFailing with its node and that name (not DNSFailingClusterWide: `good` answers it on the first node) |
//! | (second test) CoreDNS pod `coredns-b`, found through a real kube-apiserver, SERVFAILs | DNSReplicaFailing for that pod only |
//!
//! Healthy counterparts run alongside (`good` answering `ok.cluster.local`, `peer-ok` = the
//! daemon itself under another name, a tmpfs volume `scratch`): no alert may be pending or
//! firing other than the ones above, except burn-rate alerts on the SLO rules (the faults do
//! burn the DNS budget; alerts/slo.yaml has its own tests) and [`LOAD_SENSITIVE`].
//!
//! The first node keeps per-target histograms (`metrics.detail: per_target`, for the Network
//! dashboard's per-peer latency panels), the second the default (`per_node`): every query
//! reads both shapes at once.
//!
//! Then every query of every dashboard in `dashboards/` (panels and variables, with variables
//! substituted: see [`VARIABLES`]) runs through /api/v1/query (instant panels) or
//! /api/v1/query_range (graphs): none may fail, every panel not in [`MAY_BE_EMPTY`] must return
//! data, and the panels of [`VALUES`] must show the numbers the faults imply.
//!
//! Rule files are loaded with every `for:` shortened to 1s by a text substitution (see
//! [`shorten_for`]); range windows such as `[5m]` or `[30m]` stay as written: with 1 s scrapes
//! they hold every sample since the start, which is all the rules need. About 12 s here.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::dns_server::{Behaviour, DnsServer};
use crate::util::{Checks, Daemon, LoggedServer, http_get, is_root, poll};
use crate::volume;

/// The node the dashboards are looked at for ($node), with every fault.
const NODE: &str = "e2e-node";
const POD: &str = "kube-netprobe-e2e";
/// A second node whose only fault is the dead DNS server for one name: the dashboards' numbers
/// for $node must not include it, and its alert must carry its own node.
const NODE_B: &str = "e2e-node-b";
const POD_B: &str = "kube-netprobe-e2e-b";
const NAMESPACE: &str = "kube-netprobe";
const JOB: &str = "kube-netprobe";
/// Every `for:` of the rule files becomes this.
const SHORT_FOR: &str = "1s";
/// Bound on Prometheus's start, the first scrape, and the alerts reaching `firing`.
const WAIT: Duration = Duration::from_secs(60);

/// The one alert that may go pending or fire on a healthy target here, and on which volume:
/// StorageThroughputCollapse compares a volume's last throughput with its own average, and on a
/// shared CI machine one descheduled 1 MiB read of the tmpfs is several times slower than the
/// others; with `for: 1s` that is enough. Its boundaries are tested by promtool
/// (alerts/tests/storage_test.yaml); here it is tolerated on `scratch` only, and reported.
const LOAD_SENSITIVE: (&str, &str) = ("StorageThroughputCollapse", "scratch");

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
const MAY_BE_EMPTY: &[(&str, &str, &str)] = &[
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
];

/// Storage panels (and other panels on netprobe_storage_* series), empty when the test cannot
/// mount volumes (not root).
const STORAGE_DASHBOARD: &str = "kube-netprobe-storage";

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
const VALUES: &[ValueCheck] = &[
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
const SLO_VALUES: &[ValueCheck] = &[
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
const STORAGE_VALUES: &[ValueCheck] = &[
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

// ---------------------------------------------------------------------------------------------
// Prometheus fixture

/// Debian's `prometheus` on 127.0.0.1 with a temporary TSDB, killed (and its directory removed)
/// on drop, also when the test panics.
pub struct Prometheus {
    // Field order is drop order: the process, then its directory.
    server: LoggedServer,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

/// A loopback TCP port that nothing listens on at the moment it is returned.
pub fn free_tcp_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind TCP 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

impl Prometheus {
    /// Where the binary is, if installed.
    pub fn binary() -> Option<PathBuf> {
        ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
    }

    /// Starts Prometheus with `config` (YAML; rule files are given as `rules/<name>` and
    /// written from `rules`) and waits until it is ready.
    pub fn start(config: &str, rules: &[(String, String)]) -> Self {
        let binary = Self::binary().expect("prometheus binary");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("rules")).expect("mkdir rules");
        for (name, text) in rules {
            std::fs::write(dir.path().join("rules").join(name), text).expect("write rules");
        }
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
        let mut command = Command::new(&binary);
        command
            .current_dir(dir.path())
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"));
        Self {
            server: LoggedServer::start("prometheus", command, addr, WAIT),
            addr,
            _dir: dir,
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.server.log_tail(lines)
    }

    /// GET an API path; `Ok(data)` when Prometheus says `"status": "success"`, else the error
    /// it gave (or the transport error).
    pub fn api(&self, path_and_query: &str) -> Result<Value, String> {
        let resp = http_get(self.addr, path_and_query)
            .map_err(|e| format!("GET {path_and_query}: {e}"))?;
        let body: Value = serde_json::from_str(&resp.body).map_err(|e| {
            format!(
                "GET {path_and_query}: status {}: {e}: {}",
                resp.status, resp.body
            )
        })?;
        if body["status"] == "success" {
            Ok(body["data"].clone())
        } else {
            Err(format!(
                "status {}: {}: {}",
                resp.status, body["errorType"], body["error"]
            ))
        }
    }

    /// Runs an instant query now; returns the result vector.
    pub fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let data = self.api(&format!("/api/v1/query?query={}", urlencode(expr)))?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// Runs a range query over the last `range`, at `step`; returns the result matrix.
    pub fn query_range(
        &self,
        expr: &str,
        range: Duration,
        step: Duration,
    ) -> Result<Vec<Value>, String> {
        let end = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        let start = end - range.as_secs_f64();
        let data = self.api(&format!(
            "/api/v1/query_range?query={}&start={start:.3}&end={end:.3}&step={}",
            urlencode(expr),
            step.as_secs_f64()
        ))?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The rule file with every `for: <duration>` line replaced by `for: 1s`, so alerts fire
/// within seconds of their condition; expressions, windows, labels and annotations unchanged.
pub fn shorten_for(text: &str) -> String {
    text.lines()
        .map(|line| {
            let trimmed = line.trim_start();
            if trimmed.starts_with("for:") {
                let indent = &line[..line.len() - trimmed.len()];
                format!("{indent}for: {SHORT_FOR}")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The rule files alerts/*.yaml, `for:` shortened, as (file name, text).
fn rule_files() -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(repo().join("alerts"))
        .expect("read alerts/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .filter_map(|p| {
            let text = std::fs::read_to_string(&p).expect("read rule file");
            // Rule files only (a top-level `groups:`), should alerts/ hold other YAML too.
            text.lines().any(|l| l.starts_with("groups:")).then(|| {
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    shorten_for(&text),
                )
            })
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no rule files in alerts/");
    files
}

// ---------------------------------------------------------------------------------------------
// Alerts

/// One active alert as /api/v1/rules reports it.
#[derive(Debug, Clone)]
pub struct Active {
    pub name: String,
    pub state: String,
    pub labels: serde_json::Map<String, Value>,
    /// The rule's expression uses an SLO recording rule.
    pub slo: bool,
    /// When the alert went pending (Unix seconds).
    pub active_at: f64,
}

impl Active {
    pub fn label(&self, k: &str) -> &str {
        self.labels.get(k).and_then(Value::as_str).unwrap_or("")
    }
}

impl std::fmt::Display for Active {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let labels: Vec<String> = self
            .labels
            .iter()
            .filter(|(k, _)| *k != "alertname")
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect();
        write!(
            f,
            "{} [{}] {{{}}}",
            self.name,
            self.state,
            labels.join(", ")
        )
    }
}

/// Rules as loaded: (alerting rules' active alerts, names of recording rules, last evaluation
/// of the rule groups as Unix seconds, the oldest one).
pub fn rules_state(prom: &Prometheus) -> Result<(Vec<Active>, Vec<String>, f64), String> {
    let data = prom.api("/api/v1/rules")?;
    let mut active = Vec::new();
    let mut records = Vec::new();
    let mut oldest_eval = f64::INFINITY;
    for group in data["groups"].as_array().into_iter().flatten() {
        let last = group["lastEvaluation"].as_str().unwrap_or_default();
        oldest_eval = oldest_eval.min(rfc3339_seconds(last).unwrap_or(0.0));
        for rule in group["rules"].as_array().into_iter().flatten() {
            let name = rule["name"].as_str().unwrap_or_default().to_string();
            if rule["type"] == "recording" {
                records.push(name);
                continue;
            }
            let slo = rule["query"]
                .as_str()
                .unwrap_or_default()
                .contains("netprobe_slo:");
            for alert in rule["alerts"].as_array().into_iter().flatten() {
                let labels = alert["labels"].as_object().cloned().unwrap_or_default();
                active.push(Active {
                    name: name.clone(),
                    state: alert["state"].as_str().unwrap_or_default().to_string(),
                    slo: slo || labels.contains_key("slo"),
                    active_at: rfc3339_seconds(alert["activeAt"].as_str().unwrap_or_default())
                        .unwrap_or(0.0),
                    labels,
                });
            }
        }
    }
    Ok((active, records, oldest_eval))
}

/// Seconds since the epoch of an RFC 3339 UTC timestamp as Prometheus writes it
/// (`2026-11-26T14:00:00.123456789Z`).
fn rfc3339_seconds(s: &str) -> Option<f64> {
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let time = time.trim_end_matches('Z');
    let (hms, _) = time.split_once(['+', '-']).unwrap_or((time, ""));
    let mut t = hms.split(':');
    let (h, min, sec) = (
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
    );
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + h * 3600.0 + min * 60.0 + sec)
}

/// An alert the faults must fire: its name and labels it must carry (a subset, or the exact
/// set when `exact`).
struct Expected {
    name: &'static str,
    labels: Vec<(&'static str, String)>,
    exact: bool,
}

impl Expected {
    fn matches(&self, a: &Active) -> bool {
        a.name == self.name
            && self.labels.iter().all(|(k, v)| a.label(k) == v)
            && (!self.exact || a.labels.len() == self.labels.len() + 1)
    }
}

impl std::fmt::Display for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let exact = if self.exact { " (exactly)" } else { "" };
        write!(f, "{} {{{}}}{exact}", self.name, labels.join(", "))
    }
}

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "(none)".into();
    }
    items.iter().map(|i| format!("\n    {i}")).collect()
}

// ---------------------------------------------------------------------------------------------
// Dashboards

/// One query of a dashboard: where it is, and the PromQL with variables substituted.
struct DashboardQuery {
    uid: String,
    panel: String,
    /// A panel's query (`instant` or range) or a variable's `label_values(selector, label)`.
    kind: QueryKind,
}

enum QueryKind {
    Panel { expr: String, instant: bool },
    LabelValues { selector: String, label: String },
}

fn substitute(expr: &str) -> String {
    // Longest names first, so a name never eats a prefix of another.
    let mut vars = VARIABLES.to_vec();
    vars.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
    let mut out = expr.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("${{{}}}", &k[1..]), v).replace(k, v);
    }
    out
}

fn dashboard_queries() -> Vec<DashboardQuery> {
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

// ---------------------------------------------------------------------------------------------
// The test

/// One scrape job for the daemons, each target with the labels the chart's ServiceMonitor adds.
fn prometheus_config(targets: &[(SocketAddr, &str, &str)]) -> String {
    let mut config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files: [\"rules/*.yaml\"]\n\
         scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n"
    );
    for (addr, node, pod) in targets {
        config.push_str(&format!(
            "      - targets: [\"{addr}\"]\n        \
             labels: {{ node: {node}, namespace: {NAMESPACE}, pod: {pod} }}\n"
        ));
    }
    config
}

#[test]
fn alerts_fire_and_dashboard_queries_run_against_a_real_prometheus() {
    let started = Instant::now();
    if Prometheus::binary().is_none() {
        if is_root() {
            panic!(
                "prometheus is not installed: `make deps` (scripts/install-test-deps) installs it"
            );
        }
        eprintln!(
            "SKIPPED {}: prometheus is not installed and installing it needs root",
            module_path!()
        );
        return;
    }
    // Volumes need mounts (root): a healthy tmpfs and a read-only bind mount. Without root the
    // storage part is left out and said so.
    let root = is_root();
    if !root {
        eprintln!(
            "NOTE {}: not root: no storage volumes (tmpfs, read-only bind mount)",
            module_path!()
        );
    }

    // DNS: server `good` answers ok.cluster.local and SERVFAILs servfail.cluster.local; server
    // `dead` drops every query (lookups time out).
    let good = DnsServer::start();
    good.set("ok.cluster.local", Behaviour::Answer([10, 96, 0, 1].into()));
    good.set("servfail.cluster.local", Behaviour::ServFail);
    let dead = DnsServer::start();
    dead.set_fallback(Some(Behaviour::Drop));
    let (good_s, dead_s) = (good.addr().to_string(), dead.addr().to_string());

    // Peers: the daemon itself under another name (healthy) and a port nothing listens on.
    let listen = free_tcp_port();
    let refused = free_tcp_port();

    let scratch = root.then(|| volume::tmpfs(8 << 20));
    let readonly = root.then(volume::read_only_bind);
    let mut storage = String::new();
    if let (Some(scratch), Some(readonly)) = (&scratch, &readonly) {
        storage = format!(
            "storage:\n  interval: 1s\n  timeout: 800ms\n  reserve: 0\n  volumes:\n    \
             - {{ name: scratch, path: {:?}, size: 1MiB, block_size: 256KiB }}\n    \
             - {{ name: readonly, path: {:?}, size: 1MiB, block_size: 256KiB }}\n",
            scratch.path(),
            readonly.mount.path()
        );
    }
    let config = format!(
        "listen: 127.0.0.1:{listen}\nnode_name: {NODE}\n\
         dns:\n  interval: 1s\n  timeout: 500ms\n  servers: [\"{good_s}\", \"{dead_s}\"]\n  \
         queries:\n    - {{ name: ok.cluster.local, type: A }}\n    \
         - {{ name: servfail.cluster.local, type: A }}\n\
         peers:\n  interval: 1s\n  timeout: 500ms\n  neighbours: 0\n  protocols: [http, tcp, bulk]\n  \
         bulk_bytes: 64KiB\n  discovery:\n    \
         static: [\"peer-ok=127.0.0.1:{listen}\", \"peer-refused=127.0.0.1:{refused}\"]\n\
         apiserver: {{ enabled: false }}\n{storage}\
         metrics: {{ detail: per_target }}\n"
    );
    let daemon = Daemon::start(&config);
    let target = daemon.addr();
    let daemon_b = Daemon::start(&format!(
        "listen: 127.0.0.1:0\nnode_name: {NODE_B}\n\
         dns:\n  interval: 1s\n  timeout: 500ms\n  servers: [\"{good_s}\", \"{dead_s}\"]\n  \
         queries:\n    - {{ name: ok.cluster.local, type: A }}\n\
         peers:\n  discovery: none\napiserver: {{ enabled: false }}\n"
    ));
    let target_b = daemon_b.addr();
    let prom = Prometheus::start(
        &prometheus_config(&[(target, NODE, POD), (target_b, NODE_B, POD_B)]),
        &rule_files(),
    );
    let context = |prom: &Prometheus| {
        format!(
            "{}\n{}\n{NODE_B}:\n{}",
            prom.log_tail(30),
            daemon.output_tail(30),
            daemon_b.output_tail(10)
        )
    };

    // The first scrape comes a few seconds after start.
    poll(
        "the kube-netprobe target to be up in Prometheus",
        WAIT,
        || {
            let r = prom.query(&format!("up{{job=\"{JOB}\"}} == 1"))?;
            if r.len() < 2 {
                Err(format!("{} of 2 targets up", r.len()))
            } else {
                Ok(())
            }
        },
    );

    let labels_of = |b: bool, extra: &[(&'static str, String)]| {
        let (node, pod, instance) = if b {
            (NODE_B, POD_B, target_b)
        } else {
            (NODE, POD, target)
        };
        let mut l: Vec<(&'static str, String)> = vec![
            ("node", node.into()),
            ("instance", instance.to_string()),
            ("job", JOB.into()),
            ("namespace", NAMESPACE.into()),
            ("pod", pod.into()),
        ];
        l.extend_from_slice(extra);
        l
    };
    let target_labels = |extra: &[(&'static str, String)]| labels_of(false, extra);
    // One DNSProbeFailing per node: NODE fails two names (through `good` and `dead`), so its
    // alert has no name; NODE_B fails one. Not DNSFailingClusterWide: `good` answers
    // ok.cluster.local on NODE, so it fails through every server on one node only.
    let mut expected = vec![
        Expected {
            name: "DNSProbeFailing",
            labels: labels_of(false, &[("severity", "critical".into())]),
            exact: true,
        },
        Expected {
            name: "DNSProbeFailing",
            labels: labels_of(
                true,
                &[
                    ("severity", "critical".into()),
                    ("name", "ok.cluster.local".into()),
                ],
            ),
            exact: true,
        },
        Expected {
            name: "NetworkNodeUnreachable",
            labels: vec![
                ("severity", "critical".into()),
                ("target_node", "peer-refused".into()),
                ("job", JOB.into()),
            ],
            exact: false,
        },
    ];
    if root {
        expected.push(Expected {
            name: "StorageProbeFailing",
            labels: target_labels(&[
                ("severity", "critical".into()),
                ("volume", "readonly".into()),
                ("result", "erofs".into()),
            ]),
            exact: true,
        });
    }

    // 1. The expected alerts fire.
    let fired_at = poll(
        &format!("these alerts to fire: {}", list(&expected)),
        WAIT,
        || {
            let (active, _, _) = rules_state(&prom)?;
            let missing: Vec<&Expected> = expected
                .iter()
                .filter(|e| !active.iter().any(|a| a.state == "firing" && e.matches(a)))
                .collect();
            if missing.is_empty() {
                Ok(SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_secs_f64())
            } else {
                Err(format!(
                    "missing: {}\n  active now: {}\n{}",
                    list(&missing),
                    list(&active),
                    context(&prom)
                ))
            }
        },
    );
    let firing_after = started.elapsed();

    // 2. Nothing else is pending or firing, three evaluation rounds after the last expected
    //    alert fired (every `for:` is 1 s, so anything else would have shown by then). Burn-rate
    //    alerts on the SLO recording rules are left out: the injected faults do burn the DNS
    //    budget, and alerts/slo.yaml is tested by its own author.
    let (active, records) = poll(
        "three more rule evaluations",
        Duration::from_secs(20),
        || {
            let (active, records, oldest_eval) = rules_state(&prom)?;
            if oldest_eval >= fired_at + 3.0 {
                Ok((active, records))
            } else {
                Err(format!(
                    "oldest group evaluation at {oldest_eval}, fired at {fired_at}"
                ))
            }
        },
    );
    let mut checks = Checks::default();
    let (load_sensitive, unexpected): (Vec<&Active>, Vec<&Active>) = active
        .iter()
        .filter(|a| !a.slo && !expected.iter().any(|e| e.matches(a)))
        .partition(|a| a.name == LOAD_SENSITIVE.0 && a.label("volume") == LOAD_SENSITIVE.1);
    if !load_sensitive.is_empty() {
        eprintln!(
            "NOTE {}: tolerated (load-sensitive, see LOAD_SENSITIVE): {}",
            module_path!(),
            list(&load_sensitive)
        );
    }
    checks.that(
        unexpected.is_empty(),
        format!(
            "alerts pending or firing that no fault explains: {}",
            list(&unexpected)
        ),
    );
    let slo_rules = records.iter().any(|r| r.starts_with("netprobe_slo:"));

    // 3. Every dashboard query runs; core panels return data.
    let queries = dashboard_queries();
    let mut ran = 0;
    let mut empty_ok = Vec::new();
    // Results of panel queries, for the value checks: (uid, panel, result).
    let mut panel_results: Vec<(&str, &str, Vec<Value>)> = Vec::new();
    for q in &queries {
        let result = match &q.kind {
            QueryKind::Panel {
                expr,
                instant: true,
            } => prom.query(expr),
            QueryKind::Panel {
                expr,
                instant: false,
            } => prom.query_range(expr, Duration::from_secs(60), Duration::from_secs(5)),
            QueryKind::LabelValues { selector, label } => prom
                .api(&format!(
                    "/api/v1/label/{label}/values?match[]={}",
                    urlencode(selector)
                ))
                .map(|v| v.as_array().cloned().unwrap_or_default()),
        };
        ran += 1;
        let shown = match &q.kind {
            QueryKind::Panel { expr, .. } => expr.clone(),
            QueryKind::LabelValues { selector, label } => {
                format!("label_values({selector}, {label})")
            }
        };
        let where_ = format!("{} / {}: {shown}", q.uid, q.panel);
        let result = match result {
            Ok(r) => r,
            Err(e) => {
                checks.that(false, format!("{where_}: query failed: {e}"));
                continue;
            }
        };
        match &q.kind {
            QueryKind::Panel { .. } => panel_results.push((&q.uid, &q.panel, result.clone())),
            // The node picker offers every node with a target.
            QueryKind::LabelValues { label, .. } if label == "node" => checks.that(
                [NODE, NODE_B].iter().all(|n| result.iter().any(|v| v == n)),
                format!("{where_}: values {result:?}, want {NODE} and {NODE_B}"),
            ),
            QueryKind::LabelValues { .. } => {}
        }
        if !result.is_empty() {
            continue;
        }
        let reason = MAY_BE_EMPTY
            .iter()
            .find(|(uid, title, _)| *uid == q.uid && *title == q.panel)
            .map(|(_, _, why)| why.to_string())
            .or_else(|| {
                (!root && (q.uid == STORAGE_DASHBOARD || shown.contains("netprobe_storage_")))
                    .then(|| "no volumes without root".into())
            })
            .or_else(|| {
                (!slo_rules && shown.contains("netprobe_slo:"))
                    .then(|| "no SLO recording rules in alerts/ yet".into())
            })
            .or_else(|| {
                (q.panel == "variable cluster").then(|| "no cluster label in one cluster".into())
            });
        match reason {
            Some(why) => empty_ok.push(format!("{} / {} ({why})", q.uid, q.panel)),
            None => checks.that(false, format!("{where_}: core panel returned no data")),
        }
    }
    empty_ok.dedup();

    // A stale exception (a panel renamed or gone) would silently weaken the check.
    for (uid, title, _) in MAY_BE_EMPTY {
        checks.that(
            queries.iter().any(|q| q.uid == *uid && q.panel == *title),
            format!("MAY_BE_EMPTY names {uid} / {title}, which no dashboard has"),
        );
    }

    // 4. The numbers the faults fix.
    let storage_values = if root { STORAGE_VALUES } else { &[] };
    let slo_values = if slo_rules { SLO_VALUES } else { &[] };
    for &(uid, title, labels, lo, hi) in VALUES.iter().chain(storage_values).chain(slo_values) {
        let what = format!("{uid} / {title} {labels:?}");
        let Some((_, _, result)) = panel_results
            .iter()
            .find(|(u, t, _)| *u == uid && *t == title)
        else {
            checks.that(false, format!("{what}: no such panel"));
            continue;
        };
        // An instant vector's value, or a range query's last sample.
        let values: Vec<f64> = result
            .iter()
            .filter(|r| labels.iter().all(|(k, v)| r["metric"][*k] == *v))
            .filter_map(|r| {
                let sample = r.get("value").or_else(|| r["values"].as_array()?.last())?;
                sample[1].as_str()?.parse().ok()
            })
            .collect();
        checks.that(
            !values.is_empty() && values.iter().all(|v| (lo..=hi).contains(v)),
            format!("{what}: values {values:?}, want each in [{lo}, {hi}] (and at least one)"),
        );
    }
    eprintln!(
        "prometheus e2e: expected alerts firing after {:.1}s; {ran} dashboard queries run, \
         {} panel values checked; empty and allowed: {}",
        firing_after.as_secs_f64(),
        VALUES.len() + storage_values.len() + slo_values.len(),
        list(&empty_ok)
    );
    checks.finish(&context(&prom));
    eprintln!(
        "prometheus e2e: done in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

/// CoreDNS discovery end to end: the daemon finds two CoreDNS pods through a real kube-apiserver,
/// and one of them answers SERVFAIL. Prometheus, with the rules of alerts/, fires
/// DNSReplicaFailing for that pod and only that pod, DNSProbeFailing stays silent (per-pod
/// failures are the replica alert's), and the DNS dashboard's per-CoreDNS-pod panels show both
/// pods.
#[test]
#[ignore = "needs root: a kube-apiserver of its own (apt-get, /var/cache)"]
fn coredns_replica_failing_names_the_broken_pod() {
    if Prometheus::binary().is_none() {
        assert!(
            !is_root(),
            "prometheus is not installed: `make deps` (scripts/install-test-deps) installs it"
        );
        eprintln!(
            "SKIPPED {}: prometheus is not installed and installing it needs root",
            module_path!()
        );
        return;
    }
    let api = crate::apiserver::Apiserver::start();
    api.apply(crate::kube::RBAC);
    const NAME: &str = "kubernetes.default.svc.cluster.local";
    let (healthy, broken) = crate::kube::two_dns_servers();
    healthy.set(NAME, Behaviour::Answer([198, 18, 0, 1].into()));
    broken.set(NAME, Behaviour::ServFail);
    let port = healthy.addr().port();
    crate::kube::coredns_pod(&api, "coredns-a", "kube-dns", Some([127, 0, 0, 1].into()));
    crate::kube::coredns_pod(&api, "coredns-b", "kube-dns", Some([127, 0, 0, 2].into()));
    let config = format!(
        "listen: 127.0.0.1:0\nnode_name: {NODE}\npeers: {{ discovery: none }}\n\
         apiserver: {{ enabled: false }}\n\
         dns:\n  interval: 1s\n  timeout: 500ms\n  servers: []\n  \
         discover_coredns: {{ namespace: kube-system, selector: k8s-app=kube-dns, port: {port} }}\n  \
         queries: [{{ name: {NAME}, type: A }}]\n"
    );
    let mut program = Command::new(crate::util::bin());
    program.env("KUBECONFIG", api.kubeconfig_netprobe());
    let daemon = Daemon::start_in(program, &config, &[], [127, 0, 0, 1].into());
    let prom = Prometheus::start(
        &prometheus_config(&[(daemon.addr(), NODE, POD)]),
        &rule_files(),
    );

    let active = poll("DNSReplicaFailing firing for coredns-b", WAIT, || {
        let (active, _, _) = rules_state(&prom)?;
        let firing = active.iter().any(|a| {
            a.name == "DNSReplicaFailing"
                && a.state == "firing"
                && a.label("server") == "coredns/coredns-b"
        });
        if firing {
            Ok(active)
        } else {
            Err(format!("active: {}", list(&active)))
        }
    });
    let mut checks = Checks::default();
    for a in &active {
        let wrong = match a.name.as_str() {
            "DNSReplicaFailing" => a.label("server") != "coredns/coredns-b",
            "DNSProbeFailing" => true,
            _ => false,
        };
        checks.that(!wrong, format!("unexpected alert: {a}"));
    }
    let replica = active
        .iter()
        .find(|a| a.name == "DNSReplicaFailing")
        .expect("found above");
    // About the pod, from every node: no node, instance or name label is left.
    let mut keys: Vec<&str> = replica.labels.keys().map(String::as_str).collect();
    keys.sort_unstable();
    checks.eq(
        "the alert's labels",
        keys,
        vec!["alertname", "job", "namespace", "server", "severity"],
    );
    checks.eq("its severity", replica.label("severity"), "warning");

    // The DNS dashboard's per-CoreDNS-pod panels: both pods, each with data.
    let panels: Vec<DashboardQuery> = dashboard_queries()
        .into_iter()
        .filter(|q| q.uid == "kube-netprobe-dns" && q.panel.contains("CoreDNS pod"))
        .collect();
    checks.that(
        !panels.is_empty(),
        "the DNS dashboard has per-CoreDNS-pod panels",
    );
    for q in &panels {
        let QueryKind::Panel { expr, .. } = &q.kind else {
            continue;
        };
        match prom.query(expr) {
            Ok(result) => {
                let servers: Vec<&str> = result
                    .iter()
                    .filter_map(|r| r["metric"]["server"].as_str())
                    .collect();
                checks.that(
                    ["coredns/coredns-a", "coredns/coredns-b"]
                        .iter()
                        .all(|s| servers.contains(s)),
                    format!(
                        "{} / {}: servers {servers:?}, want both pods",
                        q.uid, q.panel
                    ),
                );
            }
            Err(e) => checks.that(false, format!("{} / {}: {e}", q.uid, q.panel)),
        }
    }
    checks.finish(&prom.log_tail(20));
}

#[test]
fn for_durations_are_shortened_and_nothing_else_changes() {
    let rules = "      - alert: X\n        expr: rate(x[5m]) > 0\n        for: 10m\n        \
                 labels:\n          severity: warning\n";
    let want = "      - alert: X\n        expr: rate(x[5m]) > 0\n        for: 1s\n        \
                labels:\n          severity: warning\n";
    assert_eq!(shorten_for(rules), want);
    assert_eq!(
        rfc3339_seconds("2026-11-26T14:00:00.5Z"),
        Some(1_795_701_600.5)
    );
    assert_eq!(urlencode("up{a=\"b c\"}"), "up%7Ba%3D%22b%20c%22%7D");
    assert_eq!(
        substitute("rate(x{node=~\"$node\"}[$__rate_interval]) $__range ${cluster}"),
        format!("rate(x{{node=~\"{NODE}\"}}[1m]) 5m .*")
    );
}

/// A volume whose filesystem is frozen (`fsfreeze` on a loop-device ext4) hangs every storage
/// run: StorageIOStuck names it, and the shipped Alertmanager example (see `alertmanager.rs`)
/// sends one notification naming the volume; the timed-out runs' StorageProbeFailing is held
/// back as a symptom. The rules are alerts/storage.yaml with `for:` shortened and the stuck
/// threshold (60 s, shipped) lowered to 0.5 s, below the probe's 1 s timeout, keeping the
/// shipped order: an operation hangs past the threshold before its run is counted as a
/// timeout. Alertmanager's timers are scaled by 1/30 (one rule evaluation for group_wait).
#[test]
#[ignore = "needs root to freeze a loop-device filesystem"]
fn a_frozen_volume_sends_one_notification_naming_it() {
    let ext4 = volume::loop_ext4(64);
    let daemon = Daemon::start(&format!(
        "listen: 127.0.0.1:0\nnode_name: {NODE}\ndns:\n  servers: []\npeers:\n  discovery: none\n\
         apiserver: {{ enabled: false }}\n\
         storage:\n  interval: 2s\n  timeout: 1s\n  reserve: 0\n  volumes:\n    \
         - {{ name: data, path: {:?}, size: 1MiB, block_size: 256KiB }}\n",
        ext4.mount.path()
    ));
    let am = crate::alertmanager::Alertmanager::start(1.0 / 30.0);
    let storage = std::fs::read_to_string(repo().join("alerts/storage.yaml"))
        .expect("read alerts/storage.yaml");
    let stuck = "netprobe_storage_stuck_seconds > 60";
    assert!(storage.contains(stuck), "alerts/storage.yaml: no `{stuck}`");
    let rules = shorten_for(&storage).replace(stuck, "netprobe_storage_stuck_seconds > 0.5");
    let prom = Prometheus::start(
        &(prometheus_config(&[(daemon.addr(), NODE, POD)]) + &am.prometheus_alerting()),
        &[("storage.yaml".into(), rules)],
    );
    poll(
        "the volume's first successful run in Prometheus",
        WAIT,
        || {
            let r = prom.query("netprobe_storage_probe_success{volume=\"data\"} == 1")?;
            if r.is_empty() {
                Err("not yet".into())
            } else {
                Ok(())
            }
        },
    );
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    // After the daemon: thawed before the daemon is killed, also when this test fails.
    let _frozen = ext4.freeze();
    poll("StorageIOStuck to fire for the volume", WAIT, || {
        let (active, _, _) = rules_state(&prom)?;
        if active
            .iter()
            .any(|a| a.name == "StorageIOStuck" && a.state == "firing")
        {
            Ok(())
        } else {
            Err(list(&active))
        }
    });
    // Later alerts of a group go out one group_interval (5m / 30) after its first notification.
    std::thread::sleep(Duration::from_secs(12));
    let sent = am.firing_since(since);
    let shown: Vec<String> = sent.iter().map(ToString::to_string).collect();
    eprintln!(
        "pages: a frozen volume: {} notification(s)\n    {}",
        sent.len(),
        shown.join("\n    ")
    );
    assert!(
        (1..=3).contains(&sent.len())
            && sent[0]
                .alerts
                .iter()
                .any(|a| a.label("volume") == "data" && a.label("node") == NODE),
        "a frozen volume: want 1 to 3 notifications, the first naming volume data on {NODE}; got:\n    {}",
        shown.join("\n    ")
    );
}
