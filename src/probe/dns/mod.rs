//! The DNS prober: one lookup of one name against one server, measured the way a pod sees it.
//!
//! A resolver library hides what a probe must see (its retries, its cache, its fallbacks:
//! hickory-resolver retries and caches by design), so this sends exactly the messages it decides to send: UDP queries on
//! connected sockets of its own (so ICMP errors surface), and one-shot hickory-net TCP exchanges
//! only when a UDP answer is truncated (or with `use-vc`); every message is counted.
//! hickory-proto encodes and decodes the messages. An explicit server gets one query. Server
//! `system` replays glibc's getaddrinfo on top of that: the search list, `ndots`, `attempts` and
//! `timeout` from resolv.conf, and for type A the A and AAAA queries that getaddrinfo sends
//! together from one socket (`single-request` and `single-request-reopen` honoured), because that
//! pair is what loses a packet in the conntrack race.
//!
//! A lookup succeeds when the application would get something: NOERROR with a record of the
//! queried type for the name, directly or through a CNAME chain in the answer section
//! ([`judge`]). Other NOERROR answers are `NODATA` or `WRONG_ANSWER`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hickory_net::NetError;
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::xfer::{DnsHandle, FirstAnswer};
use hickory_proto::op::{DnsRequest, DnsRequestOptions, DnsResponse, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::config::{DnsConfig, DnsQuery, rcode_name};
use crate::metrics::{DnsLabels, DnsMetrics, IpFamily, Qtype};
pub use crate::observation::dns::{DnsObservation, FamilyQuery, MAX_CNAME_CHAIN, Outcome, Rcode};
use crate::probe::{Health, Transition};
use crate::resolv_conf::{PairMode, ResolvConf};
use crate::scheduler::{RunFuture, Target, later};

mod system;
mod wire;

pub use self::system::*;
pub use self::wire::*;

/// Where a target's lookups go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The pod's resolver configuration, walked as libc walks it.
    System,
    /// One server, asked directly.
    Server(SocketAddr),
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Via::System => f.write_str("system"),
            Via::Server(addr) => write!(f, "{addr}"),
        }
    }
}

/// One (server, query) pair: probes it and records what it saw.
#[derive(Debug)]
pub struct DnsTarget {
    server: Via,
    query: DnsQuery,
    labels: DnsLabels,
    interval: Duration,
    timeout: Duration,
    system: Arc<SystemResolver>,
    metrics: DnsMetrics,
    health: Health,
}

impl DnsTarget {
    pub fn new(
        server: Via,
        query: DnsQuery,
        dns: &DnsConfig,
        system: Arc<SystemResolver>,
        metrics: DnsMetrics,
    ) -> Self {
        Self::labelled(server, server.to_string(), query, dns, system, metrics)
    }

    /// A lookup against one CoreDNS pod (`pod`, at `addr`), asked directly:
    /// `server="coredns/<pod>"`.
    pub fn coredns_pod(
        pod: &str,
        addr: SocketAddr,
        query: DnsQuery,
        dns: &DnsConfig,
        system: Arc<SystemResolver>,
        metrics: DnsMetrics,
    ) -> Self {
        let label = format!("coredns/{pod}");
        Self::labelled(Via::Server(addr), label, query, dns, system, metrics)
    }

    fn labelled(
        server: Via,
        server_label: String,
        query: DnsQuery,
        dns: &DnsConfig,
        system: Arc<SystemResolver>,
        metrics: DnsMetrics,
    ) -> Self {
        // The family the queries travel over: the server's; for `system`, that of the first
        // nameserver in resolv.conf, which libc asks first (127.0.0.1 when there is none).
        let family = match server {
            Via::Server(addr) => IpFamily::of(addr.ip()),
            Via::System => system
                .current()
                .nameservers
                .first()
                .map_or(IpFamily::ipv4, |ns| IpFamily::of(ns.ip())),
        };
        let labels = DnsLabels {
            server: server_label,
            name: query.name.as_str().to_owned(),
            qtype: Qtype::of(query.qtype.0)
                .expect("the config admits only the record types Qtype names"),
            family,
        };
        metrics.add_target(&labels);
        if server == Via::System && query.qtype.0 == RecordType::A {
            metrics.add_family_target(&labels);
        }
        Self {
            server,
            query,
            labels,
            interval: dns.interval.get(),
            timeout: dns.timeout.get(),
            system,
            metrics,
            health: Health::default(),
        }
    }

    /// The labels of this target's series.
    pub fn labels(&self) -> &DnsLabels {
        &self.labels
    }

    /// Removes this target's series (its pod went away).
    pub fn forget(&self) {
        self.metrics.remove_target(&self.labels);
    }

    /// Probes once, finishing by `deadline`: the lookup, and for a `system` lookup of type A
    /// what each of its A and AAAA queries got.
    pub async fn observe(&self, deadline: Instant) -> (DnsObservation, Vec<FamilyQuery>) {
        let qtype = self.query.qtype.0;
        match self.server {
            Via::Server(addr) => {
                let mut name = self.query.name.name().clone();
                name.set_fqdn(true);
                let observation = query(addr, &name, qtype, QueryOptions::default(), deadline);
                (observation.await, Vec::new())
            }
            Via::System => {
                let conf = self.system.current();
                let name = self.query.name.name();
                // As long as libc would keep trying, but never into the next run.
                let waits = match qtype {
                    RecordType::A => conf.pair_mode().waits(),
                    _ => 1,
                };
                let budget = conf.worst_case(conf.candidates(name).len(), waits);
                let deadline = deadline.min(later(Instant::now(), budget));
                let lookup = lookup_system(&conf, name, qtype, deadline).await;
                (lookup.observation, lookup.family_queries)
            }
        }
    }

    fn record(&self, observation: &DnsObservation, family_queries: &[FamilyQuery]) {
        let ok = observation.outcome.meets(self.query.expect.map(|e| e.0));
        self.metrics.record(&self.labels, observation, ok);
        self.metrics
            .record_family_queries(&self.labels, family_queries);
        let l = &self.labels;
        match self.health.update(ok) {
            Transition::StartedFailing { suppressed } => tracing::warn!(
                server = %l.server, name = %l.name, qtype = ?l.qtype,
                outcome = %observation.outcome.describe(),
                expected = %self.query.expect.map_or(
                    "NOERROR with a record of the queried type for the name",
                    |e| rcode_name(e.0)
                ),
                suppressed,
                "DNS lookup failing"
            ),
            Transition::Recovered { suppressed } => tracing::info!(
                server = %l.server, name = %l.name, qtype = ?l.qtype, suppressed,
                "DNS lookup recovered"
            ),
            Transition::Unchanged => {}
        }
    }
}

impl Target for DnsTarget {
    fn probe(&self) -> &'static str {
        "dns"
    }

    fn describe(&self) -> String {
        format!(
            "dns {} {:?} via {}",
            self.labels.name, self.labels.qtype, self.labels.server
        )
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    fn deadline(&self) -> Duration {
        match self.server {
            Via::Server(_) => self.timeout,
            // As long as libc would try (resolv.conf's timeout and attempts, in `observe`), but
            // never into the next run.
            Via::System => crate::scheduler::run_budget(self.interval),
        }
    }

    fn run(self: Arc<Self>, deadline: Instant) -> RunFuture {
        Box::pin(async move {
            let (observation, family_queries) = self.observe(deadline).await;
            self.record(&observation, &family_queries);
        })
    }

    fn cut_off(&self) {
        let timeout = DnsObservation {
            outcome: Outcome::Timeout,
            duration: None,
            udp_queries: 0,
            tcp_queries: 0,
        };
        self.record(&timeout, &[]);
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fuzz;
