//! Every metric family the daemon exposes, registered in one place.
//!
//! The names, types and labels are a contract that alerts, dashboards and users depend on: a
//! renamed label silently empties an alert. [`FAMILIES`] describes them; registration below uses the same
//! entries, and `docs/metrics.md` is generated from them (`make generate`) and checked against a
//! real encode, so the reference cannot drift from the code.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::config::Detail;
use crate::observation::dns::{DnsObservation, FAMILY_LABELS, FamilyQuery, RCODE_LABELS};
use crate::observation::storage::StorageObservation;

/// Lookup-duration buckets, in seconds: a step of about 2.5x from 1 ms (an answer from a CoreDNS
/// pod on the node or next to it) to 1 s, and split around 5 s so that a lookup rescued by libc's
/// 5 s retry (the conntrack insert race on UDP) lands in (5, 5.5] and stands apart from ordinary
/// slowness in (1, 4.5]. 0.1 is the dns-latency SLO's default threshold. Nothing above 5.5: a
/// lookup waits at most `dns.interval`, and +Inf tells those apart well enough.
pub const DNS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 4.5, 5.0, 5.5,
];

/// One family as users see it in `/metrics`.
#[derive(Debug, Clone, Copy)]
pub struct FamilyDoc {
    /// The sample name stem, as exposed (counters get `_total` appended on the wire).
    pub name: &'static str,
    pub kind: &'static str,
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

const DNS_LABELS: &[&str] = &["server", "name", "qtype"];

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
    help: "Connections the HTTP server (/metrics, /healthz, /readyz, /ping) holds open now; at most 256",
};
pub const HTTP_CONNECTIONS_CLOSED: FamilyDoc = FamilyDoc {
    name: "netprobe_http_connections_closed_total",
    kind: "counter",
    labels: &["reason"],
    help: "Connections the HTTP server closed because of a limit: header_timeout (no complete request head within 10 s of connecting or of the previous response), head_too_large (answered 431), evicted (closed at the connection cap to admit a new one, having waited longest on its client), refused (at the cap with every connection busy for 1 s) or send_deadline (a /ping?bytes= body not taken within 10 s)",
};
pub const DNS_DURATION: FamilyDoc = FamilyDoc {
    name: "netprobe_dns_lookup_duration_seconds",
    kind: "histogram",
    labels: &["server"],
    help: "Time from the first query of a lookup to its final response, for lookups that got a response (any rcode); search-list walks, retries and TCP fallback included, and for server=system lookups of qtype A the AAAA answer too (getaddrinfo waits for both). One histogram per server over all its names; with metrics.detail per_target, one per (server, name, qtype), labels name and qtype added. Absent until the server's first lookup ends",
};
pub const DNS_LOOKUPS: FamilyDoc = FamilyDoc {
    name: "netprobe_dns_lookups_total",
    kind: "counter",
    labels: &["server", "name", "qtype", "rcode"],
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
    labels: &["server", "name", "qtype", "protocol"],
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

/// Request buckets for peers and the API server, in seconds: a healthy pod network answers in
/// well under a millisecond, a congested one in tens, a broken one at the timeout (2 s by
/// default, and a probe that runs into it is a failure, not a latency: +Inf holds the rest).
pub const NETWORK_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

pub const PEER_UP: FamilyDoc = FamilyDoc {
    name: "netprobe_peer_up",
    kind: "gauge",
    labels: &["target_node", "protocol", "family"],
    help: "1 if the last probe of the peer on this node over this protocol and IP family succeeded, else 0. Absent until the first probe ends",
};
pub const PEER_REQUESTS: FamilyDoc = FamilyDoc {
    name: "netprobe_peer_requests_total",
    kind: "counter",
    labels: &["target_node", "protocol", "result"],
    help: "Peer probes by result: success, timeout, refused, reset, unreachable, http_error, short_body, permission_denied, error",
};
pub const PEER_DURATION: FamilyDoc = FamilyDoc {
    name: "netprobe_peer_request_duration_seconds",
    kind: "histogram",
    labels: &["protocol", "phase"],
    help: "Time of successful peer probes, from the start of the probe, per node and protocol: phase total (http, bulk, icmp) or connect (tcp). With metrics.detail per_target, per peer (label target_node added) and every phase: connect, first_byte (first response byte), total",
};
pub const PEER_TARGETS: FamilyDoc = FamilyDoc {
    name: "netprobe_peer_targets",
    kind: "gauge",
    labels: &[],
    help: "Peers (nodes) this node probes now: its neighbours on the hash ring",
};
pub const PEER_CHECKERS: FamilyDoc = FamilyDoc {
    name: "netprobe_peer_checkers_expected",
    kind: "gauge",
    labels: &["target_node"],
    help: "How many nodes should be probing this node (target_node is this node), from the ring size and peers.neighbours; divide the failing checkers by it",
};
pub const ICMP_AVAILABLE: FamilyDoc = FamilyDoc {
    name: "netprobe_icmp_available",
    kind: "gauge",
    labels: &["family"],
    help: "Present when icmp peer probes are configured: 1 if unprivileged ICMP echo sockets work here (net.ipv4.ping_group_range covers this process), else 0 and icmp probes are skipped",
};
pub const DISCOVERY_ERRORS: FamilyDoc = FamilyDoc {
    name: "netprobe_discovery_errors_total",
    kind: "counter",
    labels: &["source", "reason"],
    help: "Failed list or watch calls of the Kubernetes discovery, by source (pods and nodes for peers, coredns for dns.discover_coredns) and reason: forbidden (HTTP 403: the service account lacks an RBAC rule) or error (anything else); the last known targets are kept meanwhile",
};
pub const DISCOVERY_PEERS: FamilyDoc = FamilyDoc {
    name: "netprobe_discovery_peers",
    kind: "gauge",
    labels: &[],
    help: "Peers the discovery currently knows as probe-able (ready, not terminating, on a schedulable and ready node), this node included",
};
pub const APISERVER_UP: FamilyDoc = FamilyDoc {
    name: "netprobe_apiserver_up",
    kind: "gauge",
    labels: &["path"],
    help: "1 if the last API-server probe over this path succeeded, else 0: direct (the Service IP from the environment) or dns (the Service name through the pod's resolver). Absent until the first probe ends",
};
pub const APISERVER_REQUESTS: FamilyDoc = FamilyDoc {
    name: "netprobe_apiserver_requests_total",
    kind: "counter",
    labels: &["path", "result"],
    help: "API-server probes by result: success, timeout, refused, reset, unreachable, dns_error, tls_error, http_error, error",
};
pub const APISERVER_DURATION: FamilyDoc = FamilyDoc {
    name: "netprobe_apiserver_request_duration_seconds",
    kind: "histogram",
    labels: &["path", "phase"],
    help: "Time of successful API-server probes, from the start of the probe: phase total; with metrics.detail per_target, every phase: dns, connect, tls, first_byte, total",
};

pub const CSI_REGISTERED: FamilyDoc = FamilyDoc {
    name: "netprobe_csi_node_driver_registered",
    kind: "gauge",
    labels: &["driver"],
    help: "For each CSIDriver in the cluster, 1 if this node's CSINode lists it (its node plugin registered with the kubelet), else 0",
};
pub const CSI_WATCH_ERRORS: FamilyDoc = FamilyDoc {
    name: "netprobe_csi_watch_errors_total",
    kind: "counter",
    labels: &["reason"],
    help: "Failed list or watch calls for CSIDrivers and this node's CSINode, by reason: forbidden (HTTP 403: the service account lacks an RBAC rule) or error (anything else); the last known state is kept meanwhile",
};

/// Storage operation buckets, in seconds: a healthy SSD fsyncs in about a millisecond and writes
/// 16 MiB in tens of them; a degraded disk or network volume takes 100 ms and more per fsync
/// (StorageFsyncLatencyHigh pages above 0.5), and a hung one runs into the timeout.
pub const STORAGE_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

/// The storage operations timed in a histogram at `metrics.detail: per_node`: the latencies
/// that databases wait for. Write and read show as throughput, and delete is rarely of interest.
pub const PER_NODE_STORAGE_OPERATIONS: &[&str] = &["fsync", "sync_write"];

pub const STORAGE_SUCCESS: FamilyDoc = FamilyDoc {
    name: "netprobe_storage_probe_success",
    kind: "gauge",
    labels: &["volume"],
    help: "1 if the last probe of the volume wrote, synced, read back and verified its data and deleted it, else 0. Absent until the first probe ends",
};
pub const STORAGE_PROBES: FamilyDoc = FamilyDoc {
    name: "netprobe_storage_probes_total",
    kind: "counter",
    labels: &["volume", "result"],
    help: "Storage probes by result: success, enospc, erofs, eio, permission_denied, timeout, checksum_mismatch, insufficient_space (skipped: less than size plus reserve free), error",
};
pub const STORAGE_DURATION: FamilyDoc = FamilyDoc {
    name: "netprobe_storage_operation_duration_seconds",
    kind: "histogram",
    labels: &["volume", "operation"],
    help: "Time of each operation that completed: fsync and sync_write (one 4 KiB write plus fdatasync, once per write of the latency pass); with metrics.detail per_target also write and read (all blocks of a run) and delete",
};
pub const STORAGE_BYTES: FamilyDoc = FamilyDoc {
    name: "netprobe_storage_bytes_total",
    kind: "counter",
    labels: &["volume", "operation"],
    help: "Bytes written (write, sync_write) and read back (read) by the storage probes",
};
pub const STORAGE_THROUGHPUT: FamilyDoc = FamilyDoc {
    name: "netprobe_storage_throughput_bytes_per_second",
    kind: "gauge",
    labels: &["volume", "operation"],
    help: "Throughput of the last completed write and read phase: bytes over the time spent in write or read calls",
};
pub const STORAGE_STUCK: FamilyDoc = FamilyDoc {
    name: "netprobe_storage_stuck_seconds",
    kind: "gauge",
    labels: &["volume"],
    help: "How long the storage operation in flight on the volume has been running (refreshed every 0.5 s), 0 when none is; grows without bound on a hung volume",
};
pub const STORAGE_DIRECT_IO: FamilyDoc = FamilyDoc {
    name: "netprobe_storage_direct_io",
    kind: "gauge",
    labels: &["volume"],
    help: "1 if the last probe read past the page cache with O_DIRECT, 0 if it dropped the cache with posix_fadvise(DONTNEED) instead (direct_io off, or the filesystem refuses O_DIRECT)",
};

pub const CONFIG_RELOAD_SUCCESS: FamilyDoc = FamilyDoc {
    name: "netprobe_config_reload_success",
    kind: "gauge",
    labels: &[],
    help: "1 if the last load of the config file (at start, on SIGHUP, or after its content changed) succeeded, 0 if it failed and the previous config keeps running",
};
pub const CONFIG_RELOADS: FamilyDoc = FamilyDoc {
    name: "netprobe_config_reloads_total",
    kind: "counter",
    labels: &["result"],
    help: "Reloads of the config file, on SIGHUP or after its content changed, by result: success, or failure (unreadable or invalid; logged with the reason, and the previous config keeps running)",
};
pub const CONFIG_LAST_SUCCESS: FamilyDoc = FamilyDoc {
    name: "netprobe_config_last_reload_success_timestamp_seconds",
    kind: "gauge",
    labels: &[],
    help: "Unix time of the last successful load of the config (the start included)",
};
pub const MEMORY_ESTIMATE: FamilyDoc = FamilyDoc {
    name: "netprobe_memory_estimate_bytes",
    kind: "gauge",
    labels: &[],
    help: "Upper bound of this process's memory for the running config, as check-config prints it (base, targets, storage buffers); a container memory limit below it risks an OOM kill",
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    revision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeLabels {
    probe: &'static str,
}

/// Labels that identify one DNS target: (server, query name, record type).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DnsLabels {
    pub server: String,
    pub name: String,
    pub qtype: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DnsRcodeLabels {
    server: String,
    name: String,
    qtype: String,
    rcode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DnsProtocolLabels {
    server: String,
    name: String,
    qtype: String,
    protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DnsFamilyLabels {
    server: String,
    name: String,
    qtype: String,
    family: &'static str,
    rcode: &'static str,
}

impl DnsLabels {
    fn with_family(&self, family: &'static str, rcode: &'static str) -> DnsFamilyLabels {
        DnsFamilyLabels {
            server: self.server.clone(),
            name: self.name.clone(),
            qtype: self.qtype.clone(),
            family,
            rcode,
        }
    }

    fn with_rcode(&self, rcode: &'static str) -> DnsRcodeLabels {
        DnsRcodeLabels {
            server: self.server.clone(),
            name: self.name.clone(),
            qtype: self.qtype.clone(),
            rcode,
        }
    }

    fn with_protocol(&self, protocol: &'static str) -> DnsProtocolLabels {
        DnsProtocolLabels {
            server: self.server.clone(),
            name: self.name.clone(),
            qtype: self.qtype.clone(),
            protocol,
        }
    }
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Labels whose set depends on `metrics.detail`: the histograms that are kept per node by
/// default and per target on request share one family, with or without the target's labels.
type DetailLabels = Vec<(&'static str, String)>;

/// How many targets share each per-node histogram, so that it goes with the last of them.
#[derive(Debug, Clone, Default)]
struct Sharers(Arc<Mutex<HashMap<DetailLabels, usize>>>);

impl Sharers {
    fn add(&self, key: &DetailLabels) {
        *self
            .0
            .lock()
            .expect("sharers lock")
            .entry(key.clone())
            .or_default() += 1;
    }

    /// One sharer fewer; true when it was the last.
    fn remove(&self, key: &DetailLabels) -> bool {
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

fn dns_histogram() -> Histogram {
    Histogram::new(DNS_BUCKETS.iter().copied())
}

/// Response codes whose series exist from a target's start, so that `rate()` and error ratios
/// see the first failure instead of a series appearing from nowhere: the two that come alone
/// (a lost packet, an upstream that fails once). The rest of [`RCODE_LABELS`] appear when first
/// seen (the expected answer with the first lookup), so that a healthy target costs 3 counters
/// here, not 17: at 12 targets a node, every precreated code is 12 series.
const PRECREATED_RCODES: &[&str] = &["SERVFAIL", "TIMEOUT"];

/// The DNS families.
#[derive(Debug, Clone)]
pub struct DnsMetrics {
    detail: Detail,
    duration: HistogramFamily<DetailLabels>,
    duration_sharers: Sharers,
    lookups: Family<DnsRcodeLabels, Counter>,
    success: Family<DnsLabels, Gauge>,
    queries: Family<DnsProtocolLabels, Counter>,
    lookup_queries: Family<DnsLabels, Gauge>,
    family_queries: Family<DnsFamilyLabels, Counter>,
}

impl DnsMetrics {
    fn register(registry: &mut Registry, detail: Detail) -> Self {
        let this = Self {
            detail,
            duration: Family::new_with_constructor(dns_histogram),
            duration_sharers: Sharers::default(),
            lookups: Family::default(),
            success: Family::default(),
            queries: Family::default(),
            lookup_queries: Family::default(),
            family_queries: Family::default(),
        };
        register_with_unit(
            registry,
            &DNS_DURATION,
            Unit::Seconds,
            this.duration.clone(),
        );
        register(registry, &DNS_LOOKUPS, this.lookups.clone());
        register(registry, &DNS_SUCCESS, this.success.clone());
        register(registry, &DNS_QUERIES, this.queries.clone());
        register(registry, &DNS_LOOKUP_QUERIES, this.lookup_queries.clone());
        register(registry, &DNS_FAMILY_QUERIES, this.family_queries.clone());
        this
    }

    /// The duration histogram a target records into: its server's, or its own (per_target).
    fn duration_labels(&self, target: &DnsLabels) -> DetailLabels {
        let mut labels = vec![("server", target.server.clone())];
        if self.detail == Detail::PerTarget {
            labels.push(("name", target.name.clone()));
            labels.push(("qtype", target.qtype.clone()));
        }
        labels
    }

    /// Creates a target's failure counters at zero. Its success, latency and last-lookup series
    /// appear with its first result: a 0 before any lookup would read as a failure (and page) on
    /// every start and rollout.
    pub fn add_target(&self, target: &DnsLabels) {
        for rcode in PRECREATED_RCODES {
            let _ = self.lookups.get_or_create(&target.with_rcode(rcode));
        }
        self.duration_sharers.add(&self.duration_labels(target));
    }

    /// Creates the per-family TIMEOUT counters of a target whose lookups ask A and AAAA (server
    /// `system`, qtype A), so that `rate()` sees the first lost answer; the other values appear
    /// when first seen.
    pub fn add_family_target(&self, target: &DnsLabels) {
        for family in FAMILY_LABELS {
            let _ = self
                .family_queries
                .get_or_create(&target.with_family(family, "TIMEOUT"));
        }
    }

    /// Removes every series of a target that went away.
    pub fn remove_target(&self, target: &DnsLabels) {
        let duration = self.duration_labels(target);
        if self.duration_sharers.remove(&duration) {
            self.duration.remove(&duration);
        }
        self.success.remove(target);
        self.lookup_queries.remove(target);
        for rcode in RCODE_LABELS {
            self.lookups.remove(&target.with_rcode(rcode));
        }
        for protocol in ["udp", "tcp"] {
            self.queries.remove(&target.with_protocol(protocol));
        }
        for family in FAMILY_LABELS {
            for rcode in RCODE_LABELS {
                self.family_queries
                    .remove(&target.with_family(family, rcode));
            }
        }
    }

    /// Counts what each A and AAAA query of a lookup got.
    pub fn record_family_queries(&self, target: &DnsLabels, queries: &[FamilyQuery]) {
        for query in queries {
            self.family_queries
                .get_or_create(&target.with_family(query.family, query.rcode))
                .inc();
        }
    }

    /// Records one lookup; `success` is the observation judged against the query's expectation.
    pub fn record(&self, target: &DnsLabels, observation: &DnsObservation, success: bool) {
        {
            // Created with the first result, answered or not, so that a target that never gets
            // an answer shows a `_count` of 0 rather than no histogram at all.
            let histogram = self.duration.get_or_create(&self.duration_labels(target));
            if let Some(took) = observation.duration {
                histogram.observe(took.as_secs_f64());
            }
        }
        self.lookups
            .get_or_create(&target.with_rcode(observation.outcome.rcode_label()))
            .inc();
        self.success.get_or_create(target).set(i64::from(success));
        for (protocol, sent) in [
            ("udp", observation.udp_queries),
            ("tcp", observation.tcp_queries),
        ] {
            if sent > 0 {
                self.queries
                    .get_or_create(&target.with_protocol(protocol))
                    .inc_by(u64::from(sent));
            }
        }
        self.lookup_queries
            .get_or_create(target)
            .set(i64::from(observation.udp_queries + observation.tcp_queries));
    }
}

fn network_histogram() -> Histogram {
    Histogram::new(NETWORK_BUCKETS.iter().copied())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerUpLabels {
    target_node: String,
    protocol: &'static str,
    family: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerResultLabels {
    target_node: String,
    protocol: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetNodeLabels {
    target_node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FamilyLabels {
    family: &'static str,
}

/// The `reason` label values of the Kubernetes list/watch error counters.
const ERROR_REASONS: [&str; 2] = ["forbidden", "error"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceReasonLabels {
    source: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// One peer probe target: the peer's node, the protocol and the IP family.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct PeerKey {
    pub target_node: String,
    pub protocol: &'static str,
    pub family: &'static str,
}

/// The pod-to-pod families and the discovery's own.
#[derive(Debug, Clone)]
pub struct PeerMetrics {
    detail: Detail,
    up: Family<PeerUpLabels, Gauge>,
    requests: Family<PeerResultLabels, Counter>,
    duration: HistogramFamily<DetailLabels>,
    duration_sharers: Sharers,
    targets: Gauge,
    checkers: Family<TargetNodeLabels, Gauge>,
    icmp_available: Family<FamilyLabels, Gauge>,
    discovery_errors: Family<SourceReasonLabels, Counter>,
    discovery_peers: Gauge,
}

impl PeerMetrics {
    fn register(registry: &mut Registry, detail: Detail) -> Self {
        let this = Self {
            detail,
            up: Family::default(),
            requests: Family::default(),
            duration: Family::new_with_constructor(network_histogram),
            duration_sharers: Sharers::default(),
            targets: Gauge::default(),
            checkers: Family::default(),
            icmp_available: Family::default(),
            discovery_errors: Family::default(),
            discovery_peers: Gauge::default(),
        };
        register(registry, &PEER_UP, this.up.clone());
        register(registry, &PEER_REQUESTS, this.requests.clone());
        register_with_unit(
            registry,
            &PEER_DURATION,
            Unit::Seconds,
            this.duration.clone(),
        );
        register(registry, &PEER_TARGETS, this.targets.clone());
        register(registry, &PEER_CHECKERS, this.checkers.clone());
        register(registry, &ICMP_AVAILABLE, this.icmp_available.clone());
        register(registry, &DISCOVERY_ERRORS, this.discovery_errors.clone());
        register(registry, &DISCOVERY_PEERS, this.discovery_peers.clone());
        this
    }

    fn up_labels(key: &PeerKey) -> PeerUpLabels {
        PeerUpLabels {
            target_node: key.target_node.clone(),
            protocol: key.protocol,
            family: key.family,
        }
    }

    fn result_labels(key: &PeerKey, result: &'static str) -> PeerResultLabels {
        PeerResultLabels {
            target_node: key.target_node.clone(),
            protocol: key.protocol,
            result,
        }
    }

    /// The histogram a phase of a target records into: per peer at per_target; per protocol
    /// at per_node, where the target's node is left out.
    fn phase_labels(&self, key: &PeerKey, phase: &'static str) -> DetailLabels {
        let mut labels = Vec::with_capacity(3);
        if self.detail == Detail::PerTarget {
            labels.push(("target_node", key.target_node.clone()));
        }
        labels.push(("protocol", key.protocol.to_owned()));
        labels.push(("phase", phase.to_owned()));
        labels
    }

    /// Creates a target's success counter at 0. `up` appears with the first result: a 0 before
    /// any probe would read as an unreachable peer on every start and rollout.
    pub fn add_target(&self, key: &PeerKey) {
        let _ = self
            .requests
            .get_or_create(&Self::result_labels(key, "success"));
        if self.detail == Detail::PerNode {
            // The protocol's histogram is shared by every peer probed over it.
            self.duration_sharers.add(&self.phase_labels(key, ""));
        }
    }

    /// Records one probe: `result` from the closed set, phase timings when it succeeded (in
    /// order; the last is the whole probe: total, or connect for tcp).
    pub fn record(&self, key: &PeerKey, result: &'static str, phases: &[(&'static str, f64)]) {
        self.requests
            .get_or_create(&Self::result_labels(key, result))
            .inc();
        let phases = match self.detail {
            Detail::PerTarget => phases,
            // Per node, the whole probe only: one histogram per protocol, where the phases
            // would multiply it by three for http and bulk.
            Detail::PerNode => phases.last().map(std::slice::from_ref).unwrap_or_default(),
        };
        for (phase, seconds) in phases {
            self.duration
                .get_or_create(&self.phase_labels(key, phase))
                .observe(*seconds);
        }
        self.up
            .get_or_create(&Self::up_labels(key))
            .set(i64::from(result == "success"));
    }

    /// Removes every series of a target. `results` and `phases` are the closed sets its prober
    /// can produce. Counters and histograms are shared by the IP families of a node; the caller
    /// removes them once the node's last family goes (`shared`).
    pub fn remove_target(
        &self,
        key: &PeerKey,
        results: &[&'static str],
        phases: &[&'static str],
        shared: bool,
    ) {
        self.up.remove(&Self::up_labels(key));
        if shared {
            for result in results {
                self.requests.remove(&Self::result_labels(key, result));
            }
        }
        match self.detail {
            Detail::PerTarget if shared => {
                for phase in phases {
                    self.duration.remove(&self.phase_labels(key, phase));
                }
            }
            Detail::PerTarget => {}
            Detail::PerNode => {
                if self.duration_sharers.remove(&self.phase_labels(key, "")) {
                    for phase in phases {
                        self.duration.remove(&self.phase_labels(key, phase));
                    }
                }
            }
        }
    }

    pub fn set_targets(&self, peers: usize, me: &str, expected_checkers: usize) {
        self.targets.set(peers as i64);
        self.checkers.clear();
        self.checkers
            .get_or_create(&TargetNodeLabels {
                target_node: me.to_owned(),
            })
            .set(expected_checkers as i64);
    }

    /// Records the result of the ICMP socket check (made only when icmp probes are configured).
    pub fn set_icmp_available(&self, available: bool) {
        self.icmp_available
            .get_or_create(&FamilyLabels { family: "ipv4" })
            .set(i64::from(available));
    }

    /// Counts a failed call; `reason` is `forbidden` or `error` (`discovery::error_reason`).
    pub fn discovery_error(&self, source: &'static str, reason: &'static str) {
        self.discovery_errors
            .get_or_create(&SourceReasonLabels { source, reason })
            .inc();
    }

    /// Makes a discovery source's error counters visible at 0.
    pub fn add_discovery_source(&self, source: &'static str) {
        for reason in ERROR_REASONS {
            let _ = self
                .discovery_errors
                .get_or_create(&SourceReasonLabels { source, reason });
        }
    }

    pub fn set_discovered(&self, peers: usize) {
        self.discovery_peers.set(peers as i64);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabels {
    path: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathResultLabels {
    path: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathPhaseLabels {
    path: &'static str,
    phase: &'static str,
}

/// The API-server families.
#[derive(Debug, Clone)]
pub struct ApiserverMetrics {
    detail: Detail,
    up: Family<PathLabels, Gauge>,
    requests: Family<PathResultLabels, Counter>,
    duration: HistogramFamily<PathPhaseLabels>,
}

impl ApiserverMetrics {
    fn register(registry: &mut Registry, detail: Detail) -> Self {
        let this = Self {
            detail,
            up: Family::default(),
            requests: Family::default(),
            duration: Family::new_with_constructor(network_histogram),
        };
        register(registry, &APISERVER_UP, this.up.clone());
        register(registry, &APISERVER_REQUESTS, this.requests.clone());
        register_with_unit(
            registry,
            &APISERVER_DURATION,
            Unit::Seconds,
            this.duration.clone(),
        );
        this
    }

    /// Creates a path's success counter at 0. `up` appears with the first result: a 0 before
    /// any probe would read as a failing path on every start and rollout.
    pub fn add_path(&self, path: &'static str) {
        let _ = self.requests.get_or_create(&PathResultLabels {
            path,
            result: "success",
        });
    }

    /// Removes every series of a path that is no longer probed.
    pub fn remove_path(&self, path: &'static str) {
        self.up.remove(&PathLabels { path });
        for result in crate::observation::apiserver::RESULTS {
            self.requests.remove(&PathResultLabels { path, result });
        }
        for phase in ["dns", "connect", "tls", "first_byte", "total"] {
            self.duration.remove(&PathPhaseLabels { path, phase });
        }
    }

    pub fn record(&self, path: &'static str, result: &'static str, phases: &[(&'static str, f64)]) {
        self.requests
            .get_or_create(&PathResultLabels { path, result })
            .inc();
        let phases = match self.detail {
            Detail::PerTarget => phases,
            // Per node, the whole request only (the last phase): dns, connect, tls and
            // first_byte would make five histograms of each path.
            Detail::PerNode => phases.last().map(std::slice::from_ref).unwrap_or_default(),
        };
        for (phase, seconds) in phases {
            self.duration
                .get_or_create(&PathPhaseLabels { path, phase })
                .observe(*seconds);
        }
        self.up
            .get_or_create(&PathLabels { path })
            .set(i64::from(result == "success"));
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DriverLabels {
    driver: String,
}

/// CSI node registration.
#[derive(Debug, Clone)]
pub struct CsiMetrics {
    registered: Family<DriverLabels, Gauge>,
    errors: Family<ReasonLabels, Counter>,
}

impl CsiMetrics {
    fn register(registry: &mut Registry) -> Self {
        let this = Self {
            registered: Family::default(),
            errors: Family::default(),
        };
        register(registry, &CSI_REGISTERED, this.registered.clone());
        register(registry, &CSI_WATCH_ERRORS, this.errors.clone());
        for reason in ERROR_REASONS {
            let _ = this.errors.get_or_create(&ReasonLabels { reason });
        }
        this
    }

    /// Replaces the registration gauges: drivers no longer in the cluster lose their series.
    pub fn set(&self, status: &std::collections::BTreeMap<String, bool>) {
        self.registered.clear();
        for (driver, registered) in status {
            self.registered
                .get_or_create(&DriverLabels {
                    driver: driver.clone(),
                })
                .set(i64::from(*registered));
        }
    }

    /// Counts a failed call; `reason` is `forbidden` or `error` (`discovery::error_reason`).
    pub fn watch_error(&self, reason: &'static str) {
        self.errors.get_or_create(&ReasonLabels { reason }).inc();
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VolumeLabels {
    volume: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VolumeResultLabels {
    volume: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VolumeOperationLabels {
    volume: String,
    operation: &'static str,
}

type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

fn storage_histogram() -> Histogram {
    Histogram::new(STORAGE_BUCKETS.iter().copied())
}

/// The storage families.
#[derive(Debug, Clone)]
pub struct StorageMetrics {
    detail: Detail,
    success: Family<VolumeLabels, Gauge>,
    probes: Family<VolumeResultLabels, Counter>,
    duration: HistogramFamily<VolumeOperationLabels>,
    bytes: Family<VolumeOperationLabels, Counter>,
    throughput: Family<VolumeOperationLabels, FloatGauge>,
    stuck: Family<VolumeLabels, FloatGauge>,
    direct_io: Family<VolumeLabels, Gauge>,
}

impl StorageMetrics {
    fn register(registry: &mut Registry, detail: Detail) -> Self {
        let this = Self {
            detail,
            success: Family::default(),
            probes: Family::default(),
            duration: Family::new_with_constructor(storage_histogram),
            bytes: Family::default(),
            throughput: Family::default(),
            stuck: Family::default(),
            direct_io: Family::default(),
        };
        register(registry, &STORAGE_SUCCESS, this.success.clone());
        register(registry, &STORAGE_PROBES, this.probes.clone());
        register_with_unit(
            registry,
            &STORAGE_DURATION,
            Unit::Seconds,
            this.duration.clone(),
        );
        register(registry, &STORAGE_BYTES, this.bytes.clone());
        register(registry, &STORAGE_THROUGHPUT, this.throughput.clone());
        register_with_unit(registry, &STORAGE_STUCK, Unit::Seconds, this.stuck.clone());
        register(registry, &STORAGE_DIRECT_IO, this.direct_io.clone());
        this
    }

    fn volume(volume: &str) -> VolumeLabels {
        VolumeLabels {
            volume: volume.to_owned(),
        }
    }

    fn operation(volume: &str, operation: &'static str) -> VolumeOperationLabels {
        VolumeOperationLabels {
            volume: volume.to_owned(),
            operation,
        }
    }

    /// Creates a volume's counters at 0 (every result, and bytes per operation), so that error
    /// ratios and `rate()` see the first failure, and its stuck gauge at 0 (nothing in flight).
    /// Success and the operation timings appear with the first result: a 0 before any probe
    /// would read as a failing volume on every start and rollout.
    pub fn add_volume(&self, volume: &str) {
        use crate::observation::storage::{BYTE_OPERATIONS, RESULTS};
        let _ = self.stuck.get_or_create(&Self::volume(volume));
        for result in RESULTS {
            let _ = self.probes.get_or_create(&VolumeResultLabels {
                volume: volume.to_owned(),
                result,
            });
        }
        for operation in BYTE_OPERATIONS {
            let _ = self
                .bytes
                .get_or_create(&Self::operation(volume, operation));
        }
    }

    /// Removes every series of a volume.
    pub fn remove_volume(&self, volume: &str) {
        use crate::observation::storage::{OPERATIONS, RESULTS};
        for family in [&self.success, &self.direct_io] {
            family.remove(&Self::volume(volume));
        }
        self.stuck.remove(&Self::volume(volume));
        for result in RESULTS {
            self.probes.remove(&VolumeResultLabels {
                volume: volume.to_owned(),
                result,
            });
        }
        for operation in OPERATIONS {
            let labels = Self::operation(volume, operation);
            self.duration.remove(&labels);
            self.bytes.remove(&labels);
            self.throughput.remove(&labels);
        }
    }

    /// Records one run: its result, and what it measured.
    pub fn record(&self, volume: &str, obs: &StorageObservation) {
        self.probes
            .get_or_create(&VolumeResultLabels {
                volume: volume.to_owned(),
                result: obs.result,
            })
            .inc();
        self.success
            .get_or_create(&Self::volume(volume))
            .set(i64::from(obs.result == "success"));
        self.record_operations(volume, obs);
    }

    /// Records the timings, bytes, throughput and read mode of a run, without its result (for a
    /// run whose timeout was already counted).
    pub fn record_operations(&self, volume: &str, obs: &StorageObservation) {
        for (operation, took) in &obs.operations {
            if self.detail == Detail::PerNode && !PER_NODE_STORAGE_OPERATIONS.contains(operation) {
                continue;
            }
            self.duration
                .get_or_create(&Self::operation(volume, operation))
                .observe(took.as_secs_f64());
        }
        for (operation, n) in &obs.bytes {
            self.bytes
                .get_or_create(&Self::operation(volume, operation))
                .inc_by(*n);
        }
        for (operation, rate) in &obs.throughput {
            self.throughput
                .get_or_create(&Self::operation(volume, operation))
                .set(*rate);
        }
        if let Some(direct) = obs.direct_io {
            self.direct_io
                .get_or_create(&Self::volume(volume))
                .set(i64::from(direct));
        }
    }

    /// How long the operation in flight has been running, 0 when none is.
    pub fn set_stuck(&self, volume: &str, seconds: f64) {
        self.stuck.get_or_create(&Self::volume(volume)).set(seconds);
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// The config file's loads and what the running config costs.
#[derive(Debug, Clone)]
pub struct ConfigMetrics {
    reload_success: Gauge,
    reloads: Family<ResultLabels, Counter>,
    last_success: Gauge<f64, std::sync::atomic::AtomicU64>,
    memory_estimate: Gauge,
}

impl ConfigMetrics {
    fn register(registry: &mut Registry) -> Self {
        let this = Self {
            reload_success: Gauge::default(),
            reloads: Family::default(),
            last_success: Gauge::default(),
            memory_estimate: Gauge::default(),
        };
        for result in ["success", "failure"] {
            let _ = this.reloads.get_or_create(&ResultLabels { result });
        }
        register(
            registry,
            &CONFIG_RELOAD_SUCCESS,
            this.reload_success.clone(),
        );
        register(registry, &CONFIG_RELOADS, this.reloads.clone());
        register_with_unit(
            registry,
            &CONFIG_LAST_SUCCESS,
            Unit::Seconds,
            this.last_success.clone(),
        );
        register_with_unit(
            registry,
            &MEMORY_ESTIMATE,
            Unit::Bytes,
            this.memory_estimate.clone(),
        );
        this
    }

    /// A config is running: the one loaded at start, or a reload that succeeded (`reload`).
    pub fn loaded(&self, estimate_bytes: u64, reload: bool) {
        self.reload_success.set(1);
        if reload {
            self.reloads
                .get_or_create(&ResultLabels { result: "success" })
                .inc();
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.last_success.set(now);
        self.memory_estimate
            .set(i64::try_from(estimate_bytes).unwrap_or(i64::MAX));
    }

    /// A reload failed; the previous config keeps running.
    pub fn reload_failed(&self) {
        self.reload_success.set(0);
        self.reloads
            .get_or_create(&ResultLabels { result: "failure" })
            .inc();
    }
}

/// Why the HTTP server closed a connection itself (the `reason` label's closed set).
pub const HTTP_CLOSE_REASONS: &[&str] = &[
    "header_timeout",
    "head_too_large",
    "evicted",
    "refused",
    "send_deadline",
];

/// The HTTP server's own connections.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    connections: Gauge,
    closed: Family<ReasonLabels, Counter>,
}

impl HttpMetrics {
    fn register(registry: &mut Registry) -> Self {
        let this = Self {
            connections: Gauge::default(),
            closed: Family::default(),
        };
        register(registry, &HTTP_CONNECTIONS, this.connections.clone());
        register(registry, &HTTP_CONNECTIONS_CLOSED, this.closed.clone());
        for &reason in HTTP_CLOSE_REASONS {
            let _ = this.closed.get_or_create(&ReasonLabels { reason });
        }
        this
    }

    pub fn set_connections(&self, open: usize) {
        self.connections
            .set(i64::try_from(open).unwrap_or(i64::MAX));
    }

    /// `reason` is one of [`HTTP_CLOSE_REASONS`].
    pub fn closed(&self, reason: &'static str) {
        debug_assert!(HTTP_CLOSE_REASONS.contains(&reason), "{reason}");
        self.closed.get_or_create(&ReasonLabels { reason }).inc();
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

    pub fn with_detail(detail: Detail) -> Self {
        let mut registry = Registry::default();
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: VERSION,
                revision: REVISION,
            })
            .set(1);
        register(&mut registry, &BUILD_INFO, build_info);
        let overruns = Family::default();
        register(&mut registry, &PROBE_OVERRUNS, overruns.clone());
        let config = ConfigMetrics::register(&mut registry);
        let http = HttpMetrics::register(&mut registry);
        let dns = DnsMetrics::register(&mut registry, detail);
        let peers = PeerMetrics::register(&mut registry, detail);
        let apiserver = ApiserverMetrics::register(&mut registry, detail);
        let csi = CsiMetrics::register(&mut registry);
        let storage = StorageMetrics::register(&mut registry, detail);
        Self {
            registry,
            config,
            dns,
            peers,
            apiserver,
            csi,
            storage,
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
fn openmetrics_to_prometheus_text(openmetrics: &str) -> String {
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

/// docs/metrics.md, generated from [`FAMILIES`].
pub fn reference_markdown() -> String {
    let mut out = String::from(
        "# Metrics reference\n\n\
         Generated from `src/metrics.rs` by `make generate`; a test fails when this file is stale\n\
         or when a family here is missing from a real `/metrics` encode.\n\n\
         All families carry the prefix `netprobe_`, use base units (seconds, bytes) and take label\n\
         values from closed sets. `/metrics` serves OpenMetrics to clients that ask for it\n\
         (Prometheus does) and the classic text format otherwise.\n\n\
         | family | type | labels | meaning |\n| --- | --- | --- | --- |\n",
    );
    for doc in FAMILIES {
        let labels = doc
            .labels
            .iter()
            .map(|l| format!("`{l}`"))
            .collect::<Vec<_>>()
            .join(", ");
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            doc.name, doc.kind, labels, doc.help
        ));
    }
    out.push_str(&format!(
        "\nDNS lookup-duration buckets (seconds): {}.\n\n\
         Label values: `rcode` is one of {}; `family` is `ipv4` (the A query) or `ipv6` (the \
         AAAA query); `protocol` is `udp` or `tcp`; `probe` is `dns`.\n",
        DNS_BUCKETS
            .iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        RCODE_LABELS
            .iter()
            .map(|r| format!("`{r}`"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    out.push_str(&format!(
        "\nStorage operation-duration buckets (seconds): {}. Storage `result` is one of {}; \
         `operation` is one of {} (bytes: {}; throughput: `write`, `read`).\n",
        STORAGE_BUCKETS
            .iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        backticked(crate::observation::storage::RESULTS),
        backticked(crate::observation::storage::OPERATIONS),
        backticked(crate::observation::storage::BYTE_OPERATIONS),
    ));
    out.push_str(&format!(
        "\nPeer and API-server request buckets (seconds): {}.\n",
        NETWORK_BUCKETS
            .iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    ));
    out.push_str(SERIES_PER_NODE);
    out
}

/// The cost of each detail level, as `tests/integration/budget.rs` measures it (and fails above
/// its budget) and `scripts/bench-series` prints it for several k.
const SERIES_PER_NODE: &str = "
## Series per node

What a node costs Prometheus is set by `metrics.detail` (default `per_node`; `per_target` on
request, read at start). Sample lines of one scrape of a healthy node with the chart's default
config: 4 DNS servers (`system`, the kube-dns Service and 2 CoreDNS pods) × 3 names, k peers
over http, tcp, bulk and icmp on one IP family, 2 API-server paths, one volume. Measured by
`tests/integration/budget.rs`, which fails above the budget, and `scripts/bench-series`
(docs/benchmarks.md):

| `metrics.detail` | latency histograms | per node at k=10 | per 1,000 nodes at k=10 | each peer more | budget at k=10 |
| --- | --- | --- | --- | --- | --- |
| `per_node` | per peer protocol (the whole probe), per DNS server, per API-server path (total), fsync and sync_write per volume | 381 | 381,000 | 8 | 400 |
| `per_target` | per peer, protocol and phase; per DNS server, name and type; per API-server path and phase; every storage operation | 1,636 | 1,636,000 | 112 | 1,800 |

Both levels keep every target's own success gauge and result counters
(`netprobe_peer_up`, `netprobe_peer_requests_total`, `netprobe_dns_probe_success`,
`netprobe_dns_lookups_total`, ...), so every alert and SLO rule works at either. Only two
panels of the Network dashboard need `per_target`: the latency matrix and p99 by target node.
A peer costs 2 series per protocol at `per_node` (`up` and the success counter), and 13 more per
protocol and phase at `per_target` (a histogram of 10 buckets).
";

fn backticked(items: &[&str]) -> String {
    items
        .iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Shared handle the probers and the HTTP server hold.
pub type SharedMetrics = Arc<Metrics>;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hickory_proto::op::ResponseCode;

    use super::*;
    use crate::observation::dns::Outcome;

    fn target() -> DnsLabels {
        DnsLabels {
            server: "10.96.0.10:53".into(),
            name: "kubernetes.default.svc.cluster.local".into(),
            qtype: "A".into(),
        }
    }

    fn observation(
        outcome: Outcome,
        duration_ms: Option<u64>,
        udp: u32,
        tcp: u32,
    ) -> DnsObservation {
        DnsObservation {
            outcome,
            duration: duration_ms.map(Duration::from_millis),
            udp_queries: udp,
            tcp_queries: tcp,
        }
    }

    fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
    }

    const T: &str = r#"name="kubernetes.default.svc.cluster.local",qtype="A""#;

    #[test]
    fn recording_a_lookup_sets_every_dns_family() {
        let m = Metrics::new();
        let t = target();
        m.dns.add_target(&t);
        let labels = format!(r#"server="10.96.0.10:53",{T}"#);
        let before = m.encode_openmetrics();
        assert_eq!(
            sample(
                &before,
                &format!(r#"netprobe_dns_lookups_total{{{labels},rcode="SERVFAIL"}}"#)
            ),
            Some("0")
        );
        // The expected answer's counter comes with the first lookup.
        assert_eq!(
            sample(
                &before,
                &format!(r#"netprobe_dns_lookups_total{{{labels},rcode="NOERROR"}}"#)
            ),
            None
        );
        for family in [
            "netprobe_dns_probe_success{",
            "netprobe_dns_lookup_queries{",
            "netprobe_dns_lookup_duration_seconds_count{",
        ] {
            assert!(
                !before.contains(family),
                "{family} before any lookup: {before}"
            );
        }
        let ok = observation(
            Outcome::Response {
                rcode: ResponseCode::NoError,
                answers: 1,
            },
            Some(3),
            1,
            1,
        );
        m.dns.record(&t, &ok, true);
        let text = m.encode_openmetrics();
        assert_eq!(
            sample(
                &text,
                &format!(r#"netprobe_dns_lookups_total{{{labels},rcode="NOERROR"}}"#)
            ),
            Some("1")
        );
        assert_eq!(
            sample(
                &text,
                &format!(r#"netprobe_dns_lookups_total{{{labels},rcode="SERVFAIL"}}"#)
            ),
            Some("0")
        );
        assert_eq!(
            sample(&text, &format!("netprobe_dns_probe_success{{{labels}}}")),
            Some("1")
        );
        assert_eq!(
            sample(
                &text,
                &format!(r#"netprobe_dns_queries_total{{{labels},protocol="tcp"}}"#)
            ),
            Some("1")
        );
        assert_eq!(
            sample(&text, &format!("netprobe_dns_lookup_queries{{{labels}}}")),
            Some("2")
        );
        // One histogram per server by default.
        let server = r#"server="10.96.0.10:53""#;
        assert_eq!(
            sample(
                &text,
                &format!(r#"netprobe_dns_lookup_duration_seconds_bucket{{le="0.0025",{server}}}"#)
            ),
            Some("0")
        );
        assert_eq!(
            sample(
                &text,
                &format!(r#"netprobe_dns_lookup_duration_seconds_bucket{{le="0.005",{server}}}"#)
            ),
            Some("1")
        );
    }

    #[test]
    fn a_timeout_counts_but_is_not_a_latency() {
        let m = Metrics::new();
        let t = target();
        m.dns.add_target(&t);
        m.dns
            .record(&t, &observation(Outcome::Timeout, None, 1, 0), false);
        let text = m.encode_openmetrics();
        let labels = format!(r#"server="10.96.0.10:53",{T}"#);
        assert_eq!(
            sample(
                &text,
                &format!(r#"netprobe_dns_lookups_total{{{labels},rcode="TIMEOUT"}}"#)
            ),
            Some("1")
        );
        assert_eq!(
            sample(
                &text,
                r#"netprobe_dns_lookup_duration_seconds_count{server="10.96.0.10:53"}"#
            ),
            Some("0")
        );
        assert_eq!(
            sample(&text, &format!("netprobe_dns_probe_success{{{labels}}}")),
            Some("0")
        );
    }

    /// Per node, the peers of a protocol share one histogram of the whole probe, which goes
    /// with the last of them; per target, each peer has its own, phase by phase.
    #[test]
    fn peer_histograms_follow_the_detail_level() {
        let key = |node: &str| PeerKey {
            target_node: node.into(),
            protocol: "http",
            family: "ipv4",
        };
        let phases = [
            ("connect", 0.0002),
            ("first_byte", 0.0004),
            ("total", 0.0006),
        ];
        let count = |text: &str, labels: &str| {
            sample(
                text,
                &format!("netprobe_peer_request_duration_seconds_count{{{labels}}}"),
            )
            .map(str::to_owned)
        };

        let m = Metrics::with_detail(Detail::PerNode);
        for node in ["node-b", "node-c"] {
            m.peers.add_target(&key(node));
            m.peers.record(&key(node), "success", &phases);
        }
        let text = m.encode_openmetrics();
        assert_eq!(
            count(&text, r#"protocol="http",phase="total""#).as_deref(),
            Some("2")
        );
        assert!(!text.contains(r#"phase="connect""#), "{text}");
        assert!(!text.contains("netprobe_peer_request_duration_seconds_count{target_node"));
        m.peers
            .remove_target(&key("node-b"), &["success"], &["total"], true);
        let text = m.encode_openmetrics();
        assert_eq!(
            count(&text, r#"protocol="http",phase="total""#).as_deref(),
            Some("2"),
            "node-c still shares it"
        );
        m.peers
            .remove_target(&key("node-c"), &["success"], &["total"], true);
        let text = m.encode_openmetrics();
        assert!(
            !text.contains("netprobe_peer_request_duration_seconds_count"),
            "{text}"
        );

        let m = Metrics::with_detail(Detail::PerTarget);
        m.peers.add_target(&key("node-b"));
        m.peers.record(&key("node-b"), "success", &phases);
        let text = m.encode_openmetrics();
        for phase in ["connect", "first_byte", "total"] {
            let labels = format!(r#"target_node="node-b",protocol="http",phase="{phase}""#);
            assert_eq!(count(&text, &labels).as_deref(), Some("1"), "{text}");
        }
    }

    /// Per node, a server's names share its histogram; per target, each (name, qtype) has one.
    #[test]
    fn dns_histograms_follow_the_detail_level() {
        let other = DnsLabels {
            name: "example.com".into(),
            ..target()
        };
        let ok = observation(
            Outcome::Response {
                rcode: ResponseCode::NoError,
                answers: 1,
            },
            Some(2),
            1,
            0,
        );
        let m = Metrics::with_detail(Detail::PerNode);
        for t in [target(), other.clone()] {
            m.dns.add_target(&t);
            m.dns.record(&t, &ok, true);
        }
        let series = r#"netprobe_dns_lookup_duration_seconds_count{server="10.96.0.10:53"}"#;
        assert_eq!(sample(&m.encode_openmetrics(), series), Some("2"));
        m.dns.remove_target(&target());
        assert_eq!(sample(&m.encode_openmetrics(), series), Some("2"));
        m.dns.remove_target(&other);
        assert_eq!(sample(&m.encode_openmetrics(), series), None);

        let m = Metrics::with_detail(Detail::PerTarget);
        m.dns.add_target(&target());
        m.dns.record(&target(), &ok, true);
        let series =
            format!(r#"netprobe_dns_lookup_duration_seconds_count{{server="10.96.0.10:53",{T}}}"#);
        assert_eq!(sample(&m.encode_openmetrics(), &series), Some("1"));
    }

    #[test]
    fn removing_a_target_removes_all_its_series() {
        let m = Metrics::new();
        let t = target();
        m.dns.add_target(&t);
        m.dns.add_family_target(&t);
        m.dns.record(
            &t,
            &observation(Outcome::NetworkError("refused".into()), None, 1, 0),
            false,
        );
        m.dns.record(
            &t,
            &observation(Outcome::WrongAnswer { answers: 1 }, Some(1), 1, 0),
            false,
        );
        m.dns.record_family_queries(
            &t,
            &[FamilyQuery {
                family: "ipv6",
                rcode: "NODATA",
            }],
        );
        m.dns.remove_target(&t);
        let text = m.encode_openmetrics();
        assert!(!text.contains("10.96.0.10:53"), "{text}");
    }

    #[test]
    fn unusable_answers_count_under_their_own_rcode() {
        let m = Metrics::new();
        let t = target();
        m.dns.add_target(&t);
        let labels = format!(r#"server="10.96.0.10:53",{T}"#);
        for outcome in [
            Outcome::NoData { answers: 1 },
            Outcome::WrongAnswer { answers: 1 },
        ] {
            let label = outcome.rcode_label();
            m.dns
                .record(&t, &observation(outcome, Some(1), 1, 0), false);
            let text = m.encode_openmetrics();
            let series = format!(r#"netprobe_dns_lookups_total{{{labels},rcode="{label}"}}"#);
            assert_eq!(sample(&text, &series), Some("1"), "{text}");
        }
        let text = m.encode_openmetrics();
        let noerror = format!(r#"netprobe_dns_lookups_total{{{labels},rcode="NOERROR"}}"#);
        assert_eq!(sample(&text, &noerror), None);
    }

    #[test]
    fn a_and_aaaa_queries_count_by_family() {
        let m = Metrics::new();
        let t = DnsLabels {
            server: "system".into(),
            ..target()
        };
        m.dns.add_target(&t);
        m.dns.add_family_target(&t);
        let series = |text: &str, family: &str, rcode: &str| {
            let name = format!(
                r#"netprobe_dns_family_queries_total{{server="system",{T},family="{family}",rcode="{rcode}"}}"#
            );
            sample(text, &name).map(str::to_owned)
        };
        // The lost-answer counters exist from the start, so `rate()` sees the first loss.
        let text = m.encode_openmetrics();
        assert_eq!(series(&text, "ipv4", "TIMEOUT").as_deref(), Some("0"));
        assert_eq!(series(&text, "ipv6", "TIMEOUT").as_deref(), Some("0"));
        assert_eq!(series(&text, "ipv6", "NODATA"), None);
        let query = |family, rcode| FamilyQuery { family, rcode };
        m.dns.record_family_queries(
            &t,
            &[
                query("ipv4", "NOERROR"),
                query("ipv6", "TIMEOUT"),
                query("ipv4", "NOERROR"),
                query("ipv6", "NODATA"),
            ],
        );
        let text = m.encode_openmetrics();
        assert_eq!(series(&text, "ipv4", "NOERROR").as_deref(), Some("2"));
        assert_eq!(series(&text, "ipv6", "TIMEOUT").as_deref(), Some("1"));
        assert_eq!(series(&text, "ipv6", "NODATA").as_deref(), Some("1"));
        assert_eq!(series(&text, "ipv4", "TIMEOUT").as_deref(), Some("0"));
    }

    /// Success and latency series of every prober appear with the target's first result, not
    /// at 0 when the target is added (a 0 reads as a failure, and pages, on every start).
    #[test]
    fn success_series_appear_with_the_first_result() {
        let m = Metrics::new();
        let peer = PeerKey {
            target_node: "node-b".into(),
            protocol: "http",
            family: "ipv4",
        };
        m.peers.add_target(&peer);
        m.apiserver.add_path("direct");
        m.storage.add_volume("scratch");
        let text = m.encode_openmetrics();
        for absent in [
            "netprobe_peer_up{",
            "netprobe_apiserver_up{",
            "netprobe_storage_probe_success{",
            "netprobe_storage_operation_duration_seconds_count{",
        ] {
            assert!(!text.contains(absent), "{absent} before any probe: {text}");
        }
        // The counters are there at 0, so that rate() sees the first failure.
        for zero in [
            r#"netprobe_peer_requests_total{target_node="node-b",protocol="http",result="success"}"#,
            r#"netprobe_apiserver_requests_total{path="direct",result="success"}"#,
            r#"netprobe_storage_probes_total{volume="scratch",result="timeout"}"#,
            r#"netprobe_storage_stuck_seconds{volume="scratch"}"#,
        ] {
            let value = sample(&text, zero).and_then(|v| v.parse::<f64>().ok());
            assert_eq!(value, Some(0.0), "{zero}: {text}");
        }
        m.peers.record(&peer, "timeout", &[]);
        m.apiserver.record("direct", "success", &[("total", 0.002)]);
        m.storage.record(
            "scratch",
            &StorageObservation {
                result: "timeout",
                operations: vec![
                    ("write", Duration::from_millis(5)),
                    ("fsync", Duration::from_millis(1)),
                ],
                bytes: vec![],
                throughput: vec![],
                direct_io: None,
                detail: None,
            },
        );
        let text = m.encode_openmetrics();
        for (series, value) in [
            (
                r#"netprobe_peer_up{target_node="node-b",protocol="http",family="ipv4"}"#,
                "0",
            ),
            (r#"netprobe_apiserver_up{path="direct"}"#, "1"),
            (r#"netprobe_storage_probe_success{volume="scratch"}"#, "0"),
            (
                r#"netprobe_storage_operation_duration_seconds_count{volume="scratch",operation="fsync"}"#,
                "1",
            ),
        ] {
            assert_eq!(sample(&text, series), Some(value), "{series}: {text}");
        }
        // Write and read show as throughput; their timings are kept per_target only.
        let write = r#"netprobe_storage_operation_duration_seconds_count{volume="scratch",operation="write"}"#;
        assert_eq!(sample(&text, write), None, "{text}");
    }

    #[test]
    fn classic_text_names_counters_with_total() {
        let m = Metrics::new();
        m.probes.add_probe("dns");
        let text = m.encode_prometheus_text();
        assert!(
            text.contains("# TYPE netprobe_probe_overruns_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP netprobe_probe_overruns_total Scheduled"),
            "{text}"
        );
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
    }

    /// docs/metrics.md is what `reference_markdown` generates (`make generate` rewrites it), and
    /// every family it lists appears in a real encode with the documented type.
    #[test]
    fn metrics_reference_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md");
        let generated = reference_markdown();
        if std::env::var_os("NETPROBE_REGENERATE").is_some() {
            std::fs::write(path, &generated).unwrap();
        }
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            on_disk == generated,
            "docs/metrics.md is stale: run `make generate`"
        );

        let m = Metrics::new();
        m.probes.add_probe("dns");
        m.dns.add_target(&target());
        m.dns.add_family_target(&target());
        let ok = observation(
            Outcome::Response {
                rcode: ResponseCode::NoError,
                answers: 1,
            },
            Some(1),
            1,
            0,
        );
        m.dns.record(&target(), &ok, true);
        let peer = PeerKey {
            target_node: "node-b".into(),
            protocol: "http",
            family: "ipv4",
        };
        m.peers.add_target(&peer);
        m.peers.record(&peer, "success", &[("total", 0.001)]);
        m.peers.set_targets(1, "node-a", 1);
        m.peers.add_discovery_source("pods");
        m.peers.set_icmp_available(true);
        m.apiserver.add_path("direct");
        m.apiserver.record("direct", "success", &[("total", 0.002)]);
        m.csi
            .set(&[("ebs.csi.aws.com".to_owned(), true)].into_iter().collect());
        m.storage.add_volume("scratch");
        m.storage.record(
            "scratch",
            &StorageObservation {
                result: "success",
                operations: vec![("fsync", Duration::from_millis(1))],
                bytes: vec![("write", 4096)],
                throughput: vec![("write", 1e9)],
                direct_io: Some(true),
                detail: None,
            },
        );
        let text = m.encode_prometheus_text();
        for doc in FAMILIES {
            let type_line = format!("# TYPE {} {}\n", doc.name, doc.kind);
            assert!(text.contains(&type_line), "{type_line:?} not in {text}");
        }
        let exposed = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
        assert_eq!(
            exposed,
            FAMILIES.len(),
            "a family is missing from FAMILIES: {text}"
        );
    }
}
