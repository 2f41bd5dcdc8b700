//! Every metric family the daemon exposes: one file per group (dns, peer, apiserver, csi,
//! storage, the daemon's own, and the process and its cgroup), each with its family docs, label sets and recorders; all
//! registered in [`Metrics::new`].
//!
//! The names, types and labels are a contract that alerts, dashboards and users depend on: a
//! renamed label silently empties an alert. [`FAMILIES`] describes them; registration below uses the same
//! entries, and `docs/metrics.md` is generated from them (`make generate`) and checked against a
//! real encode, so the reference cannot drift from the code.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use serde::{Deserialize, Serialize};

pub use crate::observation::IpFamily;
use crate::observation::dns::{DnsObservation, FamilyQuery, Rcode};
use crate::observation::storage::StorageObservation;

mod apiserver;
mod capacity;
mod csi;
mod dns;
mod latest;
mod own;
mod peer;
mod process;
mod reference;
pub mod repair;
mod storage;
#[cfg(test)]
mod tests;

pub use self::apiserver::*;
pub use self::capacity::*;
pub use self::csi::*;
pub use self::dns::*;
pub use self::latest::*;
pub use self::own::*;
pub use self::peer::*;
pub use self::process::*;
pub use self::reference::*;
pub use self::storage::*;

/// Where the latency histograms are kept. Every target keeps its own success gauge and result
/// counters at both levels; the level decides only the histograms, which are most of the cost
/// of a scrape (a histogram is a dozen or more series).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Detail {
    /// One histogram per node and protocol (peers), per DNS server, per API-server path (total
    /// only) and per volume for fsync and sync_write: the cost stays flat in `neighbours`.
    #[default]
    PerNode,
    /// A histogram per target and phase (peer node, DNS name and type, API-server phase,
    /// every storage operation): what a latency matrix per pair of nodes needs.
    PerTarget,
}

impl Detail {
    pub fn label(self) -> &'static str {
        match self {
            Detail::PerNode => "per_node",
            Detail::PerTarget => "per_target",
        }
    }

    /// The phases of one request (in order, the last being the whole request) that get a
    /// histogram at this level: all of them per target, the whole request only per node.
    pub fn kept_phases<T>(self, phases: &[T]) -> &[T] {
        match self {
            Detail::PerTarget => phases,
            Detail::PerNode => phases.last().map(std::slice::from_ref).unwrap_or_default(),
        }
    }
}

crate::observation::label_values! {
    /// The `phase` label of the request histograms (peers and the API server): seconds from the
    /// start of the request to the end of the name lookup, the connect, the TLS handshake, the
    /// first response byte, and the whole request.
    pub enum Phase {
        dns,
        connect,
        tls,
        first_byte,
        total,
    }
}

/// How a network exchange failed, as far as the socket says; each prober's `result` set holds
/// these values and adds its own.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum NetFailure {
    timeout,
    refused,
    reset,
    unreachable,
    permission_denied,
    error,
}

/// One family as users see it in `/metrics`.
#[derive(Debug, Clone, Copy)]
pub struct FamilyDoc {
    /// The sample name stem, as exposed (counters get `_total` appended on the wire).
    pub name: &'static str,
    pub kind: &'static str,
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

pub const BUILD_INFO: FamilyDoc = FamilyDoc {
    name: "netprobe_build_info",
    kind: "gauge",
    labels: &["version", "revision"],
    help: "Always 1; the labels say which build of kube-netprobe is running",
};
pub const PROBE_OVERRUNS: FamilyDoc = FamilyDoc {
    name: "netprobe_probe_overruns_total",
    kind: "counter",
    labels: &["probe"],
    help: "Scheduled probe runs skipped because the previous run of the same target was still going",
};
pub const HTTP_CONNECTIONS: FamilyDoc = FamilyDoc {
    name: "netprobe_http_connections",
    kind: "gauge",
    labels: &[],
    help: "Connections the HTTP server (/metrics, /healthz, /readyz, /ping, the status page at /) holds open now; at most 256",
};
pub const HTTP_CONNECTIONS_CLOSED: FamilyDoc = FamilyDoc {
    name: "netprobe_http_connections_closed_total",
    kind: "counter",
    labels: &["reason"],
    help: "Connections the HTTP server closed because of a limit: header_timeout (no complete request head within 10 s of connecting or of the previous response), head_too_large (answered 431), evicted (closed at the connection cap to admit a new one, having waited longest on its client), refused (at the cap with every connection busy for 1 s) or send_deadline (a /ping?bytes= body not taken within 10 s). Each reason appears with its first close",
};
pub const DNS_DURATION: FamilyDoc = FamilyDoc {
    name: "netprobe_dns_lookup_duration_seconds",
    kind: "histogram",
    labels: &["server", "family"],
    help: "Time from the first query of a lookup to its final response, for lookups that got a response (any rcode); search-list walks, retries and TCP fallback included, and for server=system lookups of qtype A the AAAA answer too (getaddrinfo waits for both). One histogram per server and IP family over all its names; with metrics.detail per_target, one per (server, name, qtype, family), labels name and qtype added. Absent until the server's first lookup ends",
};
pub const DNS_LOOKUPS: FamilyDoc = FamilyDoc {
    name: "netprobe_dns_lookups_total",
    kind: "counter",
    labels: &["server", "name", "qtype", "family", "rcode"],
    help: "Lookups by final response code (NXDOMAIN, SERVFAIL, REFUSED, ...; NOERROR only when the answer holds a record of the queried type for the name, directly or through a CNAME chain), NODATA (NOERROR without such a record: empty, other types only, or a CNAME chain ending without one), WRONG_ANSWER (NOERROR with records of the type only for other names, or a CNAME loop), or TIMEOUT / NETWORK_ERROR when no response came",
};
pub const DNS_SUCCESS: FamilyDoc = FamilyDoc {
    name: "netprobe_dns_probe_success",
    kind: "gauge",
    labels: DNS_LABELS,
    help: "1 if the last lookup met its expectation (rcode NOERROR in netprobe_dns_lookups_total: a record of the queried type for the name; or the configured expect rcode), else 0. Absent until the target's first lookup ends",
};
pub const DNS_QUERIES: FamilyDoc = FamilyDoc {
    name: "netprobe_dns_queries_total",
    kind: "counter",
    labels: &["server", "name", "qtype", "family", "protocol"],
    help: "DNS messages sent, by protocol (udp, tcp); tcp counts fallbacks after truncated answers and use-vc, and appears with the first one. Divided by lookups, this is the search-list amplification",
};
pub const DNS_LOOKUP_QUERIES: FamilyDoc = FamilyDoc {
    name: "netprobe_dns_lookup_queries",
    kind: "gauge",
    labels: DNS_LABELS,
    help: "Messages the last lookup sent: 1 for a direct query; for server=system, what ndots, the search list and (for qtype A) the AAAA query beside the A cost one lookup. Absent until the target's first lookup ends",
};
pub const DNS_FAMILY_QUERIES: FamilyDoc = FamilyDoc {
    name: "netprobe_dns_family_queries_total",
    kind: "counter",
    labels: &["server", "name", "qtype", "family", "rcode"],
    help: "For server=system lookups of qtype A, which ask A and AAAA together as getaddrinfo does: each query by family (ipv4: the A query, ipv6: the AAAA) and what came back for it, rcode as in netprobe_dns_lookups_total (TIMEOUT: no answer before its wait ended). AAAA queries timing out while the A queries beside them are answered are the conntrack race",
};

/// Every family, in the order of docs/metrics.md.
pub const FAMILIES: &[FamilyDoc] = &[
    BUILD_INFO,
    PROBE_OVERRUNS,
    CONFIG_RELOAD_SUCCESS,
    CONFIG_RELOADS,
    CONFIG_LAST_SUCCESS,
    MEMORY_ESTIMATE,
    HTTP_CONNECTIONS,
    HTTP_CONNECTIONS_CLOSED,
    DNS_DURATION,
    DNS_LOOKUPS,
    DNS_SUCCESS,
    DNS_QUERIES,
    DNS_LOOKUP_QUERIES,
    DNS_FAMILY_QUERIES,
    PEER_UP,
    PEER_REQUESTS,
    PEER_DURATION,
    PEER_TARGETS,
    PEER_CHECKERS,
    ICMP_AVAILABLE,
    DISCOVERY_ERRORS,
    DISCOVERY_PEERS,
    APISERVER_UP,
    APISERVER_REQUESTS,
    APISERVER_DURATION,
    CSI_REGISTERED,
    CSI_WATCH_ERRORS,
    STORAGE_SUCCESS,
    STORAGE_PROBES,
    STORAGE_DURATION,
    STORAGE_BYTES,
    STORAGE_THROUGHPUT,
    STORAGE_STUCK,
    STORAGE_DIRECT_IO,
    PROCESS_CPU,
    PROCESS_RESIDENT,
    PROCESS_VIRTUAL,
    PROCESS_OPEN_FDS,
    PROCESS_MAX_FDS,
    PROCESS_START,
    CGROUP_CPU_AVAILABLE,
    CGROUP_CPU_PERIODS,
    CGROUP_CPU_THROTTLED_PERIODS,
    CGROUP_CPU_THROTTLED,
    CGROUP_CPU_QUOTA,
    CGROUP_CPU_PERIOD,
    VOLUME_FREE_BYTES,
    VOLUME_SIZE_BYTES,
    VOLUME_FREE_INODES,
    VOLUME_INODES,
    NODE_POD_IPS_IN_USE,
    NODE_POD_IP_CAPACITY,
    RUNTIME_BUSY,
    RUNTIME_WORKERS_FAMILY,
];

/// The name `Registry::register` wants: the client appends `_total` and the unit itself.
fn stem(doc: &FamilyDoc, unit: Option<&Unit>) -> &'static str {
    let mut name = doc.name;
    if doc.kind == "counter" {
        name = name
            .strip_suffix("_total")
            .expect("counter names end in _total");
    }
    if let Some(unit) = unit {
        name = name
            .strip_suffix(unit.as_str())
            .and_then(|n| n.strip_suffix('_'))
            .expect("the unit is the name's suffix");
    }
    name
}

fn register<M: prometheus_client::registry::Metric>(
    registry: &mut Registry,
    doc: &FamilyDoc,
    metric: M,
) {
    registry.register(stem(doc, None), doc.help, metric);
}

fn register_with_unit<M: prometheus_client::registry::Metric>(
    registry: &mut Registry,
    doc: &FamilyDoc,
    unit: Unit,
    metric: M,
) {
    registry.register_with_unit(stem(doc, Some(&unit)), doc.help, unit, metric);
}

/// `netprobe_build_info`, in the daemon's registry and in `repair`'s.
pub fn register_build_info(registry: &mut Registry) {
    let build_info = Family::<BuildLabels, Gauge>::default();
    build_info
        .get_or_create(&BuildLabels {
            version: VERSION,
            revision: REVISION,
        })
        .set(1);
    register(registry, &BUILD_INFO, build_info);
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    revision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeLabels {
    probe: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// How many targets share each per-node histogram, so that it goes with the last of them.
#[derive(Debug, Clone)]
struct Sharers<K>(Arc<Mutex<HashMap<K, usize>>>);

impl<K> Default for Sharers<K> {
    fn default() -> Self {
        Self(Arc::default())
    }
}

impl<K: Clone + Hash + Eq> Sharers<K> {
    fn add(&self, key: &K) {
        *self
            .0
            .lock()
            .expect("sharers lock")
            .entry(key.clone())
            .or_default() += 1;
    }

    /// One sharer fewer; true when it was the last.
    fn remove(&self, key: &K) -> bool {
        let mut map = self.0.lock().expect("sharers lock");
        match map.get_mut(key) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                map.remove(key);
                true
            }
            None => false,
        }
    }
}

/// Families about the daemon itself.
#[derive(Debug, Clone)]
pub struct ProbeMetrics {
    overruns: Family<ProbeLabels, Counter>,
}

impl ProbeMetrics {
    /// Counts a run that was skipped because the previous one had not finished.
    pub fn overrun(&self, probe: &'static str) {
        self.overruns.get_or_create(&ProbeLabels { probe }).inc();
    }

    /// Makes the overrun series of a prober kind visible at 0.
    pub fn add_probe(&self, probe: &'static str) {
        let _ = self.overruns.get_or_create(&ProbeLabels { probe });
    }
}

/// The registry and every family in it.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub config: ConfigMetrics,
    pub dns: DnsMetrics,
    pub peers: PeerMetrics,
    pub apiserver: ApiserverMetrics,
    pub csi: CsiMetrics,
    pub storage: StorageMetrics,
    pub node_pod_ips: NodePodIpMetrics,
    pub runtime: RuntimeMetrics,
    pub probes: ProbeMetrics,
    pub http: HttpMetrics,
}

/// Version and git revision this binary was built from.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const REVISION: &str = env!("NETPROBE_REVISION");

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// The families at the default detail (`per_node`).
    pub fn new() -> Self {
        Self::with_detail(Detail::default())
    }

    /// The families at `detail`, the process's own read from /proc/self and its cgroup.
    pub fn with_detail(detail: Detail) -> Self {
        Self::with_sources(detail, ProcessSources::system())
    }

    /// As [`Metrics::with_detail`], the process and cgroup figures read from `sources`.
    pub fn with_sources(detail: Detail, sources: ProcessSources) -> Self {
        let mut registry = Registry::default();
        register_build_info(&mut registry);
        let overruns = Family::default();
        register(&mut registry, &PROBE_OVERRUNS, overruns.clone());
        let config = ConfigMetrics::register(&mut registry);
        let http = HttpMetrics::register(&mut registry);
        let dns = DnsMetrics::register(&mut registry, detail);
        let peers = PeerMetrics::register(&mut registry, detail);
        let apiserver = ApiserverMetrics::register(&mut registry, detail);
        let csi = CsiMetrics::register(&mut registry);
        let storage = StorageMetrics::register(&mut registry, detail);
        registry.register_collector(Box::new(process::ProcessCollector::new(sources)));
        let node_pod_ips = NodePodIpMetrics::register(&mut registry);
        let runtime = RuntimeMetrics::register(&mut registry);
        Self {
            registry,
            config,
            dns,
            peers,
            apiserver,
            csi,
            storage,
            node_pod_ips,
            runtime,
            probes: ProbeMetrics { overruns },
            http,
        }
    }

    /// OpenMetrics text exposition.
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// Prometheus text format 0.0.4, for clients that do not ask for OpenMetrics (curl, promtool).
    pub fn encode_prometheus_text(&self) -> String {
        openmetrics_to_prometheus_text(&self.encode_openmetrics())
    }
}

/// Media type of [`Metrics::encode_openmetrics`].
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Media type of [`Metrics::encode_prometheus_text`].
pub const PROMETHEUS_TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Rewrites OpenMetrics text into the classic Prometheus format: counters are named with their
/// `_total` suffix in HELP and TYPE (OpenMetrics names the family without it), `unknown` becomes
/// `untyped`, and `# UNIT` and `# EOF` go. Samples are the same bytes.
///
/// prometheus-client 0.26's own 0.0.4 encoder (`encoding::prometheus_text`) is not used: it
/// writes whole-number bucket bounds as `le="1"`, `le="5"`, `le="30"` where the OpenMetrics
/// encoder writes `le="1.0"`. Prometheus 2 keeps `le` as the string it scraped, so a server
/// scraping the classic format (curl, promtool, `scrape_protocols` without OpenMetrics, other
/// TSDBs) would get differently named buckets than one negotiating OpenMetrics, and queries
/// and alert tests written against `le="1.0"` would miss them. Compared on a registry with
/// every family filled, that was its only difference a scraper sees (it also puts `le` first
/// among the labels and the buckets before `_sum` and `_count`).
pub fn openmetrics_to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut pending_help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            pending_help = Some((name, text));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name_out, kind_out) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "unknown" => (name.to_owned(), "untyped"),
                other => (name.to_owned(), other),
            };
            if let Some((_, text)) = pending_help.take().filter(|(n, _)| *n == name) {
                out.push_str(&format!("# HELP {name_out} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name_out} {kind_out}\n"));
            continue;
        }
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Shared handle the probers and the HTTP server hold.
pub type SharedMetrics = Arc<Metrics>;
