//! The pod-to-pod families and peer discovery's own.

use super::*;

/// Request buckets for peers and the API server, in seconds: a healthy pod network answers in
/// well under a millisecond, a congested one in tens, a broken one at the timeout (2 s by
/// default, and a probe that runs into it is a failure, not a latency: +Inf holds the rest).
pub const NETWORK_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

pub const PEER_UP: FamilyDoc = FamilyDoc {
    name: "netprobe_peer_probe_success",
    kind: "gauge",
    labels: &["target_node", "protocol", "family"],
    help: "1 if the last probe of the peer on this node over this protocol and IP family succeeded, else 0. Absent until the first probe ends",
};
pub const PEER_REQUESTS: FamilyDoc = FamilyDoc {
    name: "netprobe_peer_requests_total",
    kind: "counter",
    labels: &["target_node", "protocol", "family", "result"],
    help: "Peer probes by result: success, timeout, refused, reset, unreachable, http_error, short_body, permission_denied, error",
};
pub const PEER_DURATION: FamilyDoc = FamilyDoc {
    name: "netprobe_peer_request_duration_seconds",
    kind: "histogram",
    labels: &["protocol", "family", "phase"],
    help: "Time of successful peer probes, from the start of the probe, per node, protocol and IP family: phase total (http, bulk, icmp) or connect (tcp). With metrics.detail per_target, per peer (label target_node added) and every phase: connect, first_byte (first response byte), total",
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
    help: "Failed list or watch calls of the Kubernetes discovery, by source (pods and nodes for peers, coredns for dns.discover_coredns, pod_ips for the pod_ips section's watches of this node and its pods) and reason: forbidden (HTTP 403: the service account lacks an RBAC rule) or error (anything else); the last known targets are kept meanwhile",
};
pub const DISCOVERY_PEERS: FamilyDoc = FamilyDoc {
    name: "netprobe_discovery_peers",
    kind: "gauge",
    labels: &[],
    help: "Peers the discovery currently knows as probe-able (ready, not terminating, on a schedulable and ready node), this node included",
};
pub const APISERVER_UP: FamilyDoc = FamilyDoc {
    name: "netprobe_apiserver_probe_success",
    kind: "gauge",
    labels: &["path", "family"],
    help: "1 if the last API-server probe over this path and IP family succeeded, else 0: direct (the Service IP from the environment) or dns (the Service name through the pod's resolver). Absent until the first probe ends",
};
pub const APISERVER_REQUESTS: FamilyDoc = FamilyDoc {
    name: "netprobe_apiserver_requests_total",
    kind: "counter",
    labels: &["path", "family", "result"],
    help: "API-server probes by result: success, timeout, refused, reset, unreachable, dns_error, tls_error, http_error, error",
};
pub const APISERVER_DURATION: FamilyDoc = FamilyDoc {
    name: "netprobe_apiserver_request_duration_seconds",
    kind: "histogram",
    labels: &["path", "family", "phase"],
    help: "Time of successful API-server probes, from the start of the probe: phase total; with metrics.detail per_target, every phase: dns, connect, tls, first_byte, total",
};

pub(super) fn network_histogram() -> Histogram {
    Histogram::new(NETWORK_BUCKETS.iter().copied())
}

crate::observation::label_values! {
    /// The `protocol` label of the peer families.
    pub enum PeerProtocolLabel {
        http,
        tcp,
        bulk,
        icmp,
    }
}

crate::observation::label_values! {
    /// The `result` of a peer probe.
    pub enum PeerResult {
        success,
        timeout,
        refused,
        reset,
        unreachable,
        http_error,
        short_body,
        permission_denied,
        error,
    }
}

impl From<NetFailure> for PeerResult {
    fn from(failure: NetFailure) -> Self {
        match failure {
            NetFailure::timeout => Self::timeout,
            NetFailure::refused => Self::refused,
            NetFailure::reset => Self::reset,
            NetFailure::unreachable => Self::unreachable,
            NetFailure::permission_denied => Self::permission_denied,
            NetFailure::error => Self::error,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct PeerUpLabels {
    target_node: String,
    protocol: PeerProtocolLabel,
    family: IpFamily,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct PeerResultLabels {
    target_node: String,
    protocol: PeerProtocolLabel,
    family: IpFamily,
    result: PeerResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct PeerProtocolPhase {
    protocol: PeerProtocolLabel,
    family: IpFamily,
    phase: Phase,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct PeerTargetPhase {
    target_node: String,
    #[prometheus(flatten)]
    rest: PeerProtocolPhase,
}

/// The labels of a peer histogram: per node (protocol, family, phase) or, at per_target, the
/// peer's node first.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(super) enum PeerPhaseLabels {
    PerNode(PeerProtocolPhase),
    PerTarget(PeerTargetPhase),
}

impl EncodeLabelSet for PeerPhaseLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        match self {
            Self::PerNode(labels) => labels.encode(encoder),
            Self::PerTarget(labels) => labels.encode(encoder),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct TargetNodeLabels {
    target_node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct FamilyLabels {
    family: IpFamily,
}

/// The `reason` label values of the Kubernetes list/watch error counters.
pub(super) const ERROR_REASONS: [&str; 2] = ["forbidden", "error"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct SourceReasonLabels {
    source: &'static str,
    reason: &'static str,
}

/// One peer probe target: the peer's node, the protocol and the IP family.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct PeerKey {
    pub target_node: String,
    pub protocol: PeerProtocolLabel,
    pub family: IpFamily,
}

/// The pod-to-pod families and the discovery's own.
#[derive(Debug, Clone)]
pub struct PeerMetrics {
    detail: Detail,
    up: Family<PeerUpLabels, Gauge>,
    requests: Family<PeerResultLabels, Counter>,
    duration: HistogramFamily<PeerPhaseLabels>,
    duration_sharers: Sharers<PeerProtocolPhase>,
    targets: Gauge,
    checkers: Family<TargetNodeLabels, Gauge>,
    icmp_available: Family<FamilyLabels, Gauge>,
    discovery_errors: Family<SourceReasonLabels, Counter>,
    discovery_peers: Gauge,
    latest: Table<PeerKey, Last>,
}

impl PeerMetrics {
    pub(super) fn register(registry: &mut Registry, detail: Detail) -> Self {
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
            latest: Table::default(),
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

    fn result_labels(key: &PeerKey, result: PeerResult) -> PeerResultLabels {
        PeerResultLabels {
            target_node: key.target_node.clone(),
            protocol: key.protocol,
            family: key.family,
            result,
        }
    }

    fn shared_labels(key: &PeerKey, phase: Phase) -> PeerProtocolPhase {
        PeerProtocolPhase {
            protocol: key.protocol,
            family: key.family,
            phase,
        }
    }

    /// The histogram a phase of a target records into: per peer at per_target; per protocol
    /// and family at per_node, where the target's node is left out.
    fn phase_labels(&self, key: &PeerKey, phase: Phase) -> PeerPhaseLabels {
        let shared = Self::shared_labels(key, phase);
        match self.detail {
            Detail::PerNode => PeerPhaseLabels::PerNode(shared),
            Detail::PerTarget => PeerPhaseLabels::PerTarget(PeerTargetPhase {
                target_node: key.target_node.clone(),
                rest: shared,
            }),
        }
    }

    /// Creates a target's success counter at 0. `up` appears with the first result: a 0 before
    /// any probe would read as an unreachable peer on every start and rollout.
    pub fn add_target(&self, key: &PeerKey) {
        let _ = self
            .requests
            .get_or_create(&Self::result_labels(key, PeerResult::success));
        self.latest.add(key);
        if self.detail == Detail::PerNode {
            // The protocol's histogram (of this family) is shared by every peer probed over it.
            self.duration_sharers
                .add(&Self::shared_labels(key, Phase::total));
        }
    }

    /// Records one probe: its result, and phase timings when it succeeded (in order; the last is
    /// the whole probe: total, or connect for tcp).
    pub fn record(&self, key: &PeerKey, result: PeerResult, phases: &[(Phase, f64)]) {
        self.requests
            .get_or_create(&Self::result_labels(key, result))
            .inc();
        // Per node, one histogram per protocol and family, where the phases would multiply it
        // by three for http and bulk.
        for (phase, seconds) in self.detail.kept_phases(phases) {
            self.duration
                .get_or_create(&self.phase_labels(key, *phase))
                .observe(*seconds);
        }
        self.up
            .get_or_create(&Self::up_labels(key))
            .set(i64::from(result == PeerResult::success));
        self.latest.set(
            key,
            Last::now(
                result.as_str(),
                result == PeerResult::success,
                phases.last().map(|(_, s)| *s),
            ),
        );
    }

    /// Every peer target and its last result.
    pub fn latest(&self) -> Vec<(PeerKey, Option<Last>)> {
        self.latest.snapshot()
    }

    /// Removes every series of a target; `phases` is the closed set its prober can record.
    /// A per-node histogram goes with the last target sharing it.
    pub fn remove_target(&self, key: &PeerKey, phases: &[Phase]) {
        self.up.remove(&Self::up_labels(key));
        self.latest.remove(key);
        for &result in PeerResult::ALL {
            self.requests.remove(&Self::result_labels(key, result));
        }
        let last = match self.detail {
            Detail::PerTarget => true,
            Detail::PerNode => self
                .duration_sharers
                .remove(&Self::shared_labels(key, Phase::total)),
        };
        if last {
            for phase in phases {
                self.duration.remove(&self.phase_labels(key, *phase));
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
            .get_or_create(&FamilyLabels {
                family: IpFamily::ipv4,
            })
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
