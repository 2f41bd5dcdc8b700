//! The DNS families: lookups by server, name and type, their outcome, duration and messages.

use hickory_proto::rr::RecordType;

use super::*;

/// Lookup-duration buckets, in seconds: a step of about 2.5x from 1 ms (an answer from a CoreDNS
/// pod on the node or next to it) to 1 s, and split around 5 s so that a lookup rescued by libc's
/// 5 s retry (the conntrack insert race on UDP) lands in (5, 5.5] and stands apart from ordinary
/// slowness in (1, 4.5]. 0.1 is the dns-latency SLO's default threshold. Nothing above 5.5: a
/// lookup waits at most `dns.interval`, and +Inf tells those apart well enough.
pub const DNS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 4.5, 5.0, 5.5,
];

/// `family` is the IP family the queries travel over: the server's address's (a dual-stack
/// CoreDNS pod is asked over each), for `system` that of resolv.conf's first nameserver.
pub(super) const DNS_LABELS: &[&str] = &["server", "name", "qtype", "family"];

/// The `qtype` label: the record types a query may ask for.
#[allow(clippy::upper_case_acronyms)]
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelValue)]
pub enum Qtype {
    A,
    AAAA,
    CNAME,
    MX,
    NS,
    PTR,
    SOA,
    SRV,
    TXT,
    CAA,
}

impl Qtype {
    /// The label of a record type; `None` for one queries may not ask for (the config's
    /// `QUERY_TYPES` are exactly these).
    pub fn of(record_type: RecordType) -> Option<Self> {
        use RecordType as R;
        Some(match record_type {
            R::A => Self::A,
            R::AAAA => Self::AAAA,
            R::CNAME => Self::CNAME,
            R::MX => Self::MX,
            R::NS => Self::NS,
            R::PTR => Self::PTR,
            R::SOA => Self::SOA,
            R::SRV => Self::SRV,
            R::TXT => Self::TXT,
            R::CAA => Self::CAA,
            _ => return None,
        })
    }
}

/// The `protocol` label of `netprobe_dns_queries_total`: what a message went over.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum DnsTransport {
    udp,
    tcp,
}

/// Labels that identify one DNS target: (server, query name, record type, and the IP family
/// the queries travel over).
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct DnsLabels {
    pub server: String,
    pub name: String,
    pub qtype: Qtype,
    pub family: IpFamily,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct DnsRcodeLabels {
    #[prometheus(flatten)]
    target: DnsLabels,
    rcode: Rcode,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct DnsProtocolLabels {
    #[prometheus(flatten)]
    target: DnsLabels,
    protocol: DnsTransport,
}

/// The A or AAAA query of a `system` lookup: `family` is the query's, so the target's own
/// (transport) family is left out.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct DnsFamilyLabels {
    server: String,
    name: String,
    qtype: Qtype,
    family: IpFamily,
    rcode: Rcode,
}

/// The duration histogram's labels: per server and family, or per target at per_target.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct DnsServerLabels {
    server: String,
    family: IpFamily,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(super) enum DnsDurationLabels {
    PerNode(DnsServerLabels),
    PerTarget(DnsLabels),
}

impl EncodeLabelSet for DnsDurationLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        match self {
            Self::PerNode(labels) => labels.encode(encoder),
            Self::PerTarget(labels) => labels.encode(encoder),
        }
    }
}

impl DnsLabels {
    pub(super) fn with_family(&self, family: IpFamily, rcode: Rcode) -> DnsFamilyLabels {
        DnsFamilyLabels {
            server: self.server.clone(),
            name: self.name.clone(),
            qtype: self.qtype,
            family,
            rcode,
        }
    }

    pub(super) fn with_rcode(&self, rcode: Rcode) -> DnsRcodeLabels {
        DnsRcodeLabels {
            target: self.clone(),
            rcode,
        }
    }

    pub(super) fn with_protocol(&self, protocol: DnsTransport) -> DnsProtocolLabels {
        DnsProtocolLabels {
            target: self.clone(),
            protocol,
        }
    }
}

pub(super) fn dns_histogram() -> Histogram {
    Histogram::new(DNS_BUCKETS.iter().copied())
}

/// Response codes whose series exist from a target's start, so that `rate()` and error ratios
/// see the first failure instead of a series appearing from nowhere: the two that come alone
/// (a lost packet, an upstream that fails once). The rest of [`Rcode::ALL`] appear when first
/// seen (the expected answer with the first lookup), so that a healthy target costs 3 counters
/// here, not 17: at 12 targets a node, every precreated code is 12 series.
pub(super) const PRECREATED_RCODES: &[Rcode] = &[Rcode::SERVFAIL, Rcode::TIMEOUT];

/// The DNS families.
#[derive(Debug, Clone)]
pub struct DnsMetrics {
    detail: Detail,
    duration: HistogramFamily<DnsDurationLabels>,
    duration_sharers: Sharers<DnsDurationLabels>,
    lookups: Family<DnsRcodeLabels, Counter>,
    success: Family<DnsLabels, Gauge>,
    queries: Family<DnsProtocolLabels, Counter>,
    lookup_queries: Family<DnsLabels, Gauge>,
    family_queries: Family<DnsFamilyLabels, Counter>,
    latest: Table<DnsLabels, Last>,
}

impl DnsMetrics {
    pub(super) fn register(registry: &mut Registry, detail: Detail) -> Self {
        let this = Self {
            detail,
            duration: Family::new_with_constructor(dns_histogram),
            duration_sharers: Sharers::default(),
            lookups: Family::default(),
            success: Family::default(),
            queries: Family::default(),
            lookup_queries: Family::default(),
            family_queries: Family::default(),
            latest: Table::default(),
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
    pub(super) fn duration_labels(&self, target: &DnsLabels) -> DnsDurationLabels {
        match self.detail {
            Detail::PerNode => DnsDurationLabels::PerNode(DnsServerLabels {
                server: target.server.clone(),
                family: target.family,
            }),
            Detail::PerTarget => DnsDurationLabels::PerTarget(target.clone()),
        }
    }

    /// Creates a target's failure counters at zero. Its success, latency and last-lookup series
    /// appear with its first result: a 0 before any lookup would read as a failure (and page) on
    /// every start and rollout.
    pub fn add_target(&self, target: &DnsLabels) {
        for rcode in PRECREATED_RCODES {
            let _ = self.lookups.get_or_create(&target.with_rcode(*rcode));
        }
        self.duration_sharers.add(&self.duration_labels(target));
        self.latest.add(target);
    }

    /// Creates the per-family TIMEOUT counters of a target whose lookups ask A and AAAA (server
    /// `system`, qtype A), so that `rate()` sees the first lost answer; the other values appear
    /// when first seen.
    pub fn add_family_target(&self, target: &DnsLabels) {
        for &family in IpFamily::ALL {
            let _ = self
                .family_queries
                .get_or_create(&target.with_family(family, Rcode::TIMEOUT));
        }
    }

    /// Removes every series of a target that went away.
    pub fn remove_target(&self, target: &DnsLabels) {
        let duration = self.duration_labels(target);
        if self.duration_sharers.remove(&duration) {
            self.duration.remove(&duration);
        }
        self.success.remove(target);
        self.latest.remove(target);
        self.lookup_queries.remove(target);
        for &rcode in Rcode::ALL {
            self.lookups.remove(&target.with_rcode(rcode));
        }
        for protocol in [DnsTransport::udp, DnsTransport::tcp] {
            self.queries.remove(&target.with_protocol(protocol));
        }
        for &family in IpFamily::ALL {
            for &rcode in Rcode::ALL {
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
            (DnsTransport::udp, observation.udp_queries),
            (DnsTransport::tcp, observation.tcp_queries),
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
        self.latest.set(
            target,
            Last::now(
                observation.outcome.rcode_label().as_str(),
                success,
                observation.duration.map(|d| d.as_secs_f64()),
            ),
        );
    }

    /// Every DNS target and its last lookup.
    pub fn latest(&self) -> Vec<(DnsLabels, Option<Last>)> {
        self.latest.snapshot()
    }
}
