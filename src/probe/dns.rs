//! The DNS prober: one lookup of one name against one server, measured the way a pod sees it.
//!
//! A resolver library hides what a probe must see (its retries, its cache, its fallbacks; see
//! stack-notes.md), so this sends exactly the messages it decides to send: one UDP query on a
//! connected socket of its own (so ICMP errors surface), and a one-shot hickory-net TCP exchange
//! only when the UDP answer is truncated; every message is counted. hickory-proto encodes and
//! decodes the messages. Server `system` replays libc's
//! algorithm on top of that: the search list, `ndots`, `attempts` and `timeout` from resolv.conf.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hickory_net::NetError;
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::xfer::{DnsHandle, FirstAnswer};
use hickory_proto::op::{DnsRequest, DnsRequestOptions, DnsResponse, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::time::Instant;

use crate::config::{DnsConfig, DnsQuery, rcode_name};
use crate::discovery::coredns::CorednsPod;
use crate::metrics::{DnsLabels, DnsMetrics};
use crate::probe::{Health, Transition};
use crate::resolv_conf::ResolvConf;
use crate::scheduler::{RunFuture, Target};

/// How a lookup ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A response came, with this code and this many answer records.
    Response { rcode: ResponseCode, answers: usize },
    /// No response before the deadline.
    Timeout,
    /// The query could not be sent or the exchange broke (refused, unreachable, garbled).
    NetworkError(String),
}

/// Every value the `rcode` label can take.
pub const RCODE_LABELS: &[&str] = &[
    "NOERROR",
    "FORMERR",
    "SERVFAIL",
    "NXDOMAIN",
    "NOTIMP",
    "REFUSED",
    "YXDOMAIN",
    "YXRRSET",
    "NXRRSET",
    "NOTAUTH",
    "NOTZONE",
    "BADVERS",
    "OTHER",
    "TIMEOUT",
    "NETWORK_ERROR",
];

impl Outcome {
    /// The `rcode` label: the response code's DNS name, or TIMEOUT / NETWORK_ERROR.
    pub fn rcode_label(&self) -> &'static str {
        match self {
            Outcome::Response { rcode, .. } => rcode_name(*rcode),
            Outcome::Timeout => "TIMEOUT",
            Outcome::NetworkError(_) => "NETWORK_ERROR",
        }
    }

    /// Whether this outcome meets the expectation: the `expect` rcode, or by default NOERROR with
    /// at least one answer.
    pub fn meets(&self, expect: Option<ResponseCode>) -> bool {
        match (self, expect) {
            (Outcome::Response { rcode, .. }, Some(expected)) => *rcode == expected,
            (Outcome::Response { rcode, answers }, None) => {
                *rcode == ResponseCode::NoError && *answers > 0
            }
            _ => false,
        }
    }

    /// A short description for logs.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Response { rcode, answers } => {
                format!("{} with {answers} answer(s)", rcode_name(*rcode))
            }
            Outcome::Timeout => "no response before the deadline".into(),
            Outcome::NetworkError(e) => format!("network error: {e}"),
        }
    }
}

/// What one lookup saw.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsObservation {
    pub outcome: Outcome,
    /// From the first message sent to the final response; `None` when no response came.
    pub duration: Option<Duration>,
    pub udp_queries: u32,
    pub tcp_queries: u32,
}

/// Transport choices for one query.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueryOptions {
    /// Add an EDNS0 OPT record (libc does only with `options edns0`).
    pub edns: bool,
    /// Skip UDP and ask over TCP (`options use-vc`).
    pub tcp_only: bool,
}

/// Sends one query for `name` to `server` and waits for its answer until `deadline`: one UDP
/// message, then one TCP exchange if the UDP answer came back truncated.
pub async fn query(
    server: SocketAddr,
    name: &Name,
    qtype: RecordType,
    options: QueryOptions,
    deadline: Instant,
) -> DnsObservation {
    query_with_response(server, name, qtype, options, deadline)
        .await
        .0
}

async fn query_with_response(
    server: SocketAddr,
    name: &Name,
    qtype: RecordType,
    options: QueryOptions,
    deadline: Instant,
) -> (DnsObservation, Option<DnsResponse>) {
    let start = Instant::now();
    let mut observation = DnsObservation {
        outcome: Outcome::Timeout,
        duration: None,
        udp_queries: 0,
        tcp_queries: 0,
    };
    if !options.tcp_only {
        observation.udp_queries = 1;
        match exchange(udp(server, name, qtype, options), deadline).await {
            Ok(response) if !response.metadata.truncation => {
                observation.outcome = response_outcome(&response);
                observation.duration = Some(start.elapsed());
                return (observation, Some(response));
            }
            Ok(_truncated) => {}
            Err(outcome) => {
                observation.outcome = outcome;
                return (observation, None);
            }
        }
    }
    observation.tcp_queries = 1;
    match exchange(tcp(server, name, qtype, options, deadline), deadline).await {
        Ok(response) => {
            observation.outcome = response_outcome(&response);
            observation.duration = Some(start.elapsed());
            (observation, Some(response))
        }
        Err(outcome) => {
            observation.outcome = outcome;
            (observation, None)
        }
    }
}

fn request(name: &Name, qtype: RecordType, options: QueryOptions) -> DnsRequest {
    let mut request_options = DnsRequestOptions::default();
    request_options.use_edns = options.edns;
    request_options.recursion_desired = true;
    DnsRequest::from_query(Query::query(name.clone(), qtype), request_options)
}

/// One UDP exchange on a connected socket. hickory-net's UDP stream uses an unconnected socket,
/// on which the kernel's "port unreachable" never arrives, so a server that is gone would look
/// like a slow one (TIMEOUT after the whole deadline) instead of a refused one (NETWORK_ERROR at
/// once). Connected, the kernel also drops datagrams from any other source.
async fn udp(
    server: SocketAddr,
    name: &Name,
    qtype: RecordType,
    options: QueryOptions,
) -> Result<DnsResponse, NetError> {
    let request = request(name, qtype, options);
    let bytes = request.to_vec()?;
    let local: SocketAddr = if server.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = tokio::net::UdpSocket::bind(local).await?;
    socket.connect(server).await?;
    socket.send(&bytes).await?;
    // Without EDNS an answer is at most 512 bytes; with it, what we advertise (1232).
    let mut buf = vec![0u8; 4096];
    // The caller bounds this loop with the lookup's deadline.
    loop {
        let len = socket.recv(&mut buf).await?;
        let Some(id) = buf[..len]
            .first_chunk::<2>()
            .map(|id| u16::from_be_bytes(*id))
        else {
            continue;
        };
        // Not the answer to this query (a late answer to an earlier one cannot arrive on this
        // fresh socket, but a spoofed or stray one could): keep waiting, as libc does.
        if id != request.metadata.id {
            continue;
        }
        let response = DnsResponse::from_buffer(buf[..len].to_vec())?;
        if response.queries != request.queries {
            continue;
        }
        return Ok(response);
    }
}

async fn tcp(
    server: SocketAddr,
    name: &Name,
    qtype: RecordType,
    options: QueryOptions,
    deadline: Instant,
) -> Result<DnsResponse, NetError> {
    let remaining = deadline.saturating_duration_since(Instant::now());
    // The provider owns the task that drives the connection: it must outlive the exchange, or
    // the answer is lost ("receiver was canceled"). Dropping it afterwards closes the connection.
    let provider = TokioRuntimeProvider::new();
    let exchange =
        TcpClientStream::exchange(server, None, remaining, Some(1), provider.clone()).await?;
    let answer = exchange
        .send(request(name, qtype, options))
        .first_answer()
        .await;
    drop(provider);
    answer
}

/// Runs one exchange under the deadline and sorts its failures into TIMEOUT and NETWORK_ERROR.
async fn exchange(
    fut: impl Future<Output = Result<DnsResponse, NetError>>,
    deadline: Instant,
) -> Result<DnsResponse, Outcome> {
    match tokio::time::timeout_at(deadline, fut).await {
        Err(_elapsed) => Err(Outcome::Timeout),
        Ok(Ok(response)) => Ok(response),
        Ok(Err(NetError::Timeout)) => Err(Outcome::Timeout),
        Ok(Err(e)) => Err(Outcome::NetworkError(e.to_string())),
    }
}

fn response_outcome(response: &DnsResponse) -> Outcome {
    Outcome::Response {
        rcode: response.metadata.response_code,
        answers: response.answers.len(),
    }
}

/// A lookup through the pod's resolver settings, as glibc's `res_search` and `res_send` do it:
/// each candidate name from the search list in turn; for each, up to `attempts` rounds over the
/// nameservers, waiting `timeout` for each; SERVFAIL, NOTIMP, REFUSED and silence move on to the
/// next nameserver. NXDOMAIN, NODATA and SERVFAIL move on to the next candidate; anything else
/// (a timeout of every server, REFUSED everywhere, a network error) ends the walk.
pub async fn lookup_system(
    conf: &ResolvConf,
    name: &Name,
    qtype: RecordType,
    deadline: Instant,
) -> DnsObservation {
    lookup_system_with_response(conf, name, qtype, deadline)
        .await
        .0
}

/// Resolves `name` to addresses the way the pod's libc would (A records), for probes that
/// connect by name. Returns the lookup's observation too, for its timing and failure.
pub async fn resolve_system(
    conf: &ResolvConf,
    name: &Name,
    deadline: Instant,
) -> (DnsObservation, Vec<IpAddr>) {
    let (observation, response) =
        lookup_system_with_response(conf, name, RecordType::A, deadline).await;
    let addresses = response
        .map(|r| {
            r.answers
                .iter()
                .filter_map(|record| match &record.data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    (observation, addresses)
}

async fn lookup_system_with_response(
    conf: &ResolvConf,
    name: &Name,
    qtype: RecordType,
    deadline: Instant,
) -> (DnsObservation, Option<DnsResponse>) {
    let start = Instant::now();
    let options = QueryOptions {
        edns: conf.edns0,
        tcp_only: conf.use_vc,
    };
    let mut total = DnsObservation {
        outcome: Outcome::Timeout,
        duration: None,
        udp_queries: 0,
        tcp_queries: 0,
    };
    let mut last_response: Option<Duration> = None;
    let (mut got_nodata, mut got_servfail) = (false, false);
    let mut final_response: Option<DnsResponse> = None;
    let first_server = if conf.rotate {
        rand::random_range(0..conf.nameservers.len())
    } else {
        0
    };
    'candidates: for candidate in conf.candidates(name) {
        let mut answer = Outcome::Timeout;
        'tries: for _attempt in 0..conf.attempts {
            for i in 0..conf.nameservers.len() {
                let now = Instant::now();
                if now >= deadline {
                    answer = Outcome::Timeout;
                    break 'tries;
                }
                let server = conf.nameservers[(first_server + i) % conf.nameservers.len()];
                let try_deadline = deadline.min(now + conf.timeout);
                let (one, response) =
                    query_with_response(server, &candidate, qtype, options, try_deadline).await;
                if response.is_some() {
                    final_response = response;
                }
                total.udp_queries += one.udp_queries;
                total.tcp_queries += one.tcp_queries;
                if one.duration.is_some() {
                    last_response = Some(start.elapsed());
                }
                let next_server = matches!(
                    one.outcome,
                    Outcome::Response {
                        rcode: ResponseCode::ServFail
                            | ResponseCode::NotImp
                            | ResponseCode::Refused,
                        ..
                    } | Outcome::Timeout
                        | Outcome::NetworkError(_)
                );
                answer = one.outcome;
                if !next_server {
                    break 'tries;
                }
            }
        }
        match answer {
            Outcome::Response {
                rcode: ResponseCode::NoError,
                answers,
            } if answers > 0 => {
                total.outcome = answer;
                total.duration = last_response;
                return (total, final_response);
            }
            Outcome::Response {
                rcode: ResponseCode::NoError,
                ..
            } => got_nodata = true,
            Outcome::Response {
                rcode: ResponseCode::ServFail,
                ..
            } => got_servfail = true,
            Outcome::Response {
                rcode: ResponseCode::NXDomain,
                ..
            } => {}
            _ => {
                total.outcome = answer;
                break 'candidates;
            }
        }
        total.outcome = answer;
    }
    if got_nodata {
        total.outcome = Outcome::Response {
            rcode: ResponseCode::NoError,
            answers: 0,
        };
    } else if got_servfail {
        total.outcome = Outcome::Response {
            rcode: ResponseCode::ServFail,
            answers: 0,
        };
    }
    if matches!(total.outcome, Outcome::Response { .. }) {
        total.duration = last_response;
    }
    (total, final_response)
}

/// The pod's resolv.conf, re-read when it changes (as glibc does since 2.26).
#[derive(Debug)]
pub struct SystemResolver {
    path: PathBuf,
    cached: Mutex<Option<(Option<SystemTime>, Arc<ResolvConf>)>>,
}

impl SystemResolver {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            cached: Mutex::new(None),
        }
    }

    /// The current settings. A missing or unreadable file means libc's defaults (nameserver
    /// 127.0.0.1), which is what an application in the pod would get too.
    pub fn current(&self) -> Arc<ResolvConf> {
        let mtime = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let mut cached = self.cached.lock().expect("resolv.conf cache lock");
        if let Some((seen, conf)) = cached.as_ref()
            && *seen == mtime
            && mtime.is_some()
        {
            return conf.clone();
        }
        let conf = match ResolvConf::load(&self.path) {
            Ok(conf) => {
                for warning in &conf.warnings {
                    tracing::warn!(file = %self.path.display(), "{warning}");
                }
                conf
            }
            Err(e) => {
                if cached.is_none() || mtime.is_some() {
                    tracing::warn!(
                        file = %self.path.display(),
                        error = %e,
                        "cannot read resolv.conf; using libc's defaults (nameserver 127.0.0.1)"
                    );
                }
                ResolvConf::parse(b"")
            }
        };
        let conf = Arc::new(conf);
        *cached = Some((mtime, conf.clone()));
        conf
    }
}

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

    /// A lookup against one CoreDNS pod, asked directly: `server="coredns/<pod>"`.
    pub fn coredns_pod(
        pod: &CorednsPod,
        query: DnsQuery,
        dns: &DnsConfig,
        system: Arc<SystemResolver>,
        metrics: DnsMetrics,
    ) -> Self {
        let label = format!("coredns/{}", pod.name);
        Self::labelled(Via::Server(pod.addr), label, query, dns, system, metrics)
    }

    fn labelled(
        server: Via,
        server_label: String,
        query: DnsQuery,
        dns: &DnsConfig,
        system: Arc<SystemResolver>,
        metrics: DnsMetrics,
    ) -> Self {
        let labels = DnsLabels {
            server: server_label,
            name: query.name.as_str().to_owned(),
            qtype: query.qtype.0.to_string(),
        };
        metrics.add_target(&labels);
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

    /// Removes this target's series (its pod went away).
    pub fn forget(&self) {
        self.metrics.remove_target(&self.labels);
    }

    /// Probes once, finishing by `deadline`.
    pub async fn observe(&self, deadline: Instant) -> DnsObservation {
        let qtype = self.query.qtype.0;
        match self.server {
            Via::Server(addr) => {
                let mut name = self.query.name.name().clone();
                name.set_fqdn(true);
                query(addr, &name, qtype, QueryOptions::default(), deadline).await
            }
            Via::System => {
                let conf = self.system.current();
                let name = self.query.name.name();
                // As long as libc would keep trying, but never into the next run.
                let budget = conf.worst_case(conf.candidates(name).len());
                let deadline = deadline.min(Instant::now() + budget);
                lookup_system(&conf, name, qtype, deadline).await
            }
        }
    }

    fn record(&self, observation: &DnsObservation) {
        let ok = observation.outcome.meets(self.query.expect.map(|e| e.0));
        self.metrics.record(&self.labels, observation, ok);
        let l = &self.labels;
        match self.health.update(ok) {
            Transition::StartedFailing => tracing::warn!(
                server = %l.server, name = %l.name, qtype = %l.qtype,
                outcome = %observation.outcome.describe(),
                expected = %self.query.expect.map_or("NOERROR with an answer", |e| rcode_name(e.0)),
                "DNS lookup failing"
            ),
            Transition::Recovered => tracing::info!(
                server = %l.server, name = %l.name, qtype = %l.qtype,
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
            "dns {} {} via {}",
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
            let observation = self.observe(deadline).await;
            self.record(&observation);
        })
    }

    fn cut_off(&self) {
        self.record(&DnsObservation {
            outcome: Outcome::Timeout,
            duration: None,
            udp_queries: 0,
            tcp_queries: 0,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RCODES;

    #[test]
    fn expectations() {
        let nx = Outcome::Response {
            rcode: ResponseCode::NXDomain,
            answers: 0,
        };
        let nodata = Outcome::Response {
            rcode: ResponseCode::NoError,
            answers: 0,
        };
        assert!(!nx.meets(None));
        assert!(nx.meets(Some(ResponseCode::NXDomain)));
        assert!(
            !nodata.meets(None),
            "NOERROR without an answer is not a resolution"
        );
        assert!(nodata.meets(Some(ResponseCode::NoError)));
        assert!(!Outcome::Timeout.meets(Some(ResponseCode::NXDomain)));
    }

    #[test]
    fn every_rcode_label_is_in_the_closed_set() {
        for (name, code) in RCODES {
            let label = Outcome::Response {
                rcode: *code,
                answers: 0,
            }
            .rcode_label();
            assert_eq!(label, *name);
            assert!(RCODE_LABELS.contains(&label));
        }
        assert!(RCODE_LABELS.contains(&Outcome::Timeout.rcode_label()));
        assert!(RCODE_LABELS.contains(&Outcome::NetworkError(String::new()).rcode_label()));
    }
}
