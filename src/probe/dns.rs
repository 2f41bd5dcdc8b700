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
use crate::metrics::{DnsLabels, DnsMetrics};
pub use crate::observation::dns::{
    DnsObservation, FAMILY_LABELS, FamilyQuery, MAX_CNAME_CHAIN, Outcome, RCODE_LABELS,
};
use crate::probe::{Health, Transition};
use crate::resolv_conf::{PairMode, ResolvConf};
use crate::scheduler::{RunFuture, Target, later};

/// What an application asking for `name` and `qtype` makes of `response`: the rules of a stub
/// resolver (glibc's getanswer_r), which keeps only records of the type owned by the name or
/// by the names its CNAME chain leads to, within the answer section.
pub fn judge(name: &Name, qtype: RecordType, response: &DnsResponse) -> Outcome {
    let rcode = response.metadata.response_code;
    let answers = &response.answers;
    if rcode != ResponseCode::NoError {
        return Outcome::Response {
            rcode,
            answers: answers.len(),
        };
    }
    let count = answers.len();
    if answers.is_empty() {
        return Outcome::NoData { answers: 0 };
    }
    match chain_end(name, qtype, answers) {
        None => Outcome::WrongAnswer { answers: count },
        Some(owner) if owns(owner, qtype, answers) => Outcome::Response {
            rcode,
            answers: count,
        },
        Some(_) if answers.iter().any(|r| r.record_type() == qtype) => {
            Outcome::WrongAnswer { answers: count }
        }
        Some(_) => Outcome::NoData { answers: count },
    }
}

/// Where the CNAME chain from `name` ends within `answers`: the first name on it that has
/// records of `qtype` or no CNAME (`name` itself when there is no chain); `None` when the chain
/// loops or is longer than [`MAX_CNAME_CHAIN`]. A CNAME query is answered by the CNAME itself.
fn chain_end<'a>(name: &'a Name, qtype: RecordType, answers: &'a [Record]) -> Option<&'a Name> {
    let mut owner = name;
    for _ in 0..=MAX_CNAME_CHAIN {
        if qtype == RecordType::CNAME || owns(owner, qtype, answers) {
            return Some(owner);
        }
        match cname_target(owner, answers) {
            Some(target) => owner = target,
            None => return Some(owner),
        }
    }
    None
}

/// Whether `answers` hold a record of `qtype` owned by `owner` (case-insensitive, as DNS is).
fn owns(owner: &Name, qtype: RecordType, answers: &[Record]) -> bool {
    answers
        .iter()
        .any(|r| r.record_type() == qtype && r.name.eq_ignore_root(owner))
}

fn cname_target<'a>(owner: &Name, answers: &'a [Record]) -> Option<&'a Name> {
    answers.iter().find_map(|r| match &r.data {
        RData::CNAME(cname) if r.name.eq_ignore_root(owner) => Some(&cname.0),
        _ => None,
    })
}

/// The addresses an application gets from an A or AAAA answer: the records at the end of the
/// name's CNAME chain.
fn addresses(name: &Name, qtype: RecordType, response: &DnsResponse) -> Vec<IpAddr> {
    let answers = &response.answers;
    let owner = match chain_end(name, qtype, answers) {
        Some(owner) if response.metadata.response_code == ResponseCode::NoError => owner,
        _ => return Vec::new(),
    };
    answers
        .iter()
        .filter(|r| r.name.eq_ignore_root(owner))
        .filter_map(|r| match &r.data {
            RData::A(a) if qtype == RecordType::A => Some(IpAddr::V4(a.0)),
            RData::AAAA(aaaa) if qtype == RecordType::AAAA => Some(IpAddr::V6(aaaa.0)),
            _ => None,
        })
        .collect()
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
    let start = Instant::now();
    let question = [Question { name, qtype }];
    let ask = Ask {
        server,
        options,
        wait: deadline.saturating_duration_since(start),
        deadline,
    };
    let requests = encode(&question, options);
    let tried = Try::run(
        &ask,
        &question,
        &requests,
        &mut None,
        &mut PairMode::Parallel,
    )
    .await;
    let outcome = first(tried.outcomes(&question));
    DnsObservation {
        duration: tried.answered_at.filter(|_| outcome.rcode().is_some()),
        outcome,
        udp_queries: tried.udp,
        tcp_queries: tried.tcp,
    }
}

/// One question a try asks: the name and type of one query.
#[derive(Debug, Clone, Copy)]
struct Question<'a> {
    name: &'a Name,
    qtype: RecordType,
}

impl Question<'_> {
    /// The `family` label of this question's queries, for A and AAAA.
    fn family(&self) -> Option<&'static str> {
        match self.qtype {
            RecordType::A => Some("ipv4"),
            RecordType::AAAA => Some("ipv6"),
            _ => None,
        }
    }
}

/// What libc's getaddrinfo asks for a lookup of `qtype`: A and AAAA for type A (AF_UNSPEC), the
/// type alone otherwise (res_query).
fn questions(name: &Name, qtype: RecordType) -> Vec<Question<'_>> {
    let mut out = vec![Question { name, qtype }];
    if qtype == RecordType::A {
        out.push(Question {
            name,
            qtype: RecordType::AAAA,
        });
    }
    out
}

/// One encoded query.
struct Request {
    request: DnsRequest,
    bytes: Vec<u8>,
}

fn request(name: &Name, qtype: RecordType, options: QueryOptions) -> DnsRequest {
    let mut request_options = DnsRequestOptions::default();
    request_options.use_edns = options.edns;
    request_options.recursion_desired = true;
    DnsRequest::from_query(Query::query(name.clone(), qtype), request_options)
}

/// The questions as UDP messages, with distinct IDs so that the answers can be told apart.
fn encode(questions: &[Question<'_>], options: QueryOptions) -> Result<Vec<Request>, String> {
    let mut out: Vec<Request> = Vec::with_capacity(questions.len());
    for q in questions {
        let mut request = request(q.name, q.qtype, options);
        while out
            .iter()
            .any(|r| r.request.metadata.id == request.metadata.id)
        {
            request.metadata.id = request.metadata.id.wrapping_add(1);
        }
        let bytes = request.to_vec().map_err(|e| e.to_string())?;
        out.push(Request { request, bytes });
    }
    Ok(out)
}

/// What one query of a wait got.
#[derive(Debug)]
enum Reply {
    /// Not sent: the query before it, in sequence, was never answered.
    Unsent,
    /// Sent, and no answer before the end of the wait.
    Lost,
    /// The socket failed, or the answer could not be decoded.
    Failed(String),
    Answer(DnsResponse),
}

impl Reply {
    /// An answer glibc keeps (anything but SERVFAIL, NOTIMP and REFUSED), which makes a wait
    /// that lost the other query worth repeating in the next [`PairMode`].
    fn keeps(&self) -> bool {
        matches!(self, Reply::Answer(r) if !matches!(
            r.metadata.response_code,
            ResponseCode::ServFail | ResponseCode::NotImp | ResponseCode::Refused
        ))
    }

    fn outcome(&self, q: &Question<'_>) -> Outcome {
        match self {
            Reply::Answer(response) => judge(q.name, q.qtype, response),
            Reply::Unsent | Reply::Lost => Outcome::Timeout,
            Reply::Failed(e) => Outcome::NetworkError(e.clone()),
        }
    }
}

/// One wait on UDP (glibc's `send_dg` from its `retry:` label): the queries sent as the mode
/// says, and their answers until every one is in, one is truncated, the socket fails or the
/// deadline passes.
struct Wait {
    replies: Vec<Reply>,
    udp: u32,
    truncated: bool,
}

impl Wait {
    /// Sends `requests` to `server` on `socket`, the nameserver's socket for this lookup (opened
    /// when there is none, closed when it fails, as glibc keeps one per nameserver in the
    /// resolver state), and waits for their answers until `deadline`.
    async fn run(
        server: SocketAddr,
        socket: &mut Option<UdpSocket>,
        requests: &[Request],
        mode: PairMode,
        deadline: Instant,
    ) -> Self {
        let mut wait = Wait {
            replies: requests.iter().map(|_| Reply::Unsent).collect(),
            udp: 0,
            truncated: false,
        };
        for (i, request) in requests.iter().enumerate() {
            // Reopen sends the query after the first from a new socket: a new source port.
            if socket.is_none() || (mode == PairMode::Reopen && i > 0) {
                match connected_udp(server).await {
                    Ok(fresh) => *socket = Some(fresh),
                    Err(e) => return wait.failed(socket, &e),
                }
            }
            let Some(sock) = socket.as_ref() else {
                return wait;
            };
            if let Err(e) = sock.send(&request.bytes).await {
                return wait.failed(socket, &e);
            }
            wait.udp += 1;
            wait.replies[i] = Reply::Lost;
            // In parallel the next query goes out at once; in sequence after this one's answer.
            if mode == PairMode::Parallel && i + 1 < requests.len() {
                continue;
            }
            if let Err(e) = wait.receive(sock, requests, deadline).await {
                return wait.failed(socket, &e);
            }
            if wait.truncated || wait.replies.iter().any(|r| matches!(r, Reply::Lost)) {
                break;
            }
        }
        wait
    }

    /// Reads answers until no query sent is waiting, one is truncated, or `deadline` passes.
    async fn receive(
        &mut self,
        socket: &UdpSocket,
        requests: &[Request],
        deadline: Instant,
    ) -> std::io::Result<()> {
        // Without EDNS an answer is at most 512 bytes; with it, what we advertise (1232).
        let mut buf = vec![0u8; 4096];
        while !self.truncated && self.replies.iter().any(|r| matches!(r, Reply::Lost)) {
            let Ok(read) = tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await else {
                return Ok(());
            };
            self.truncated = file_datagram(&buf[..read?], requests, &mut self.replies);
        }
        Ok(())
    }

    /// The socket failed: every query not answered fails with it, and the socket is closed.
    fn failed(mut self, socket: &mut Option<UdpSocket>, e: &std::io::Error) -> Self {
        *socket = None;
        for reply in &mut self.replies {
            if !matches!(reply, Reply::Answer(_)) {
                *reply = Reply::Failed(e.to_string());
            }
        }
        self
    }

    /// glibc's sign of a path that loses one of two queries sent together: one kept answer in,
    /// the other query never answered.
    fn lost_one_of_two(&self) -> bool {
        self.replies.iter().any(Reply::keeps)
            && self
                .replies
                .iter()
                .any(|r| matches!(r, Reply::Lost | Reply::Unsent))
    }
}

/// Files a datagram that arrived during a wait as the reply to the query still waiting whose ID
/// and question it carries; anything else (a stray or spoofed datagram, a second copy) is
/// ignored and the wait goes on, as libc does. Returns whether the reply is truncated. Whatever
/// the bytes, this decides without panicking (the fuzz tests hold it to that).
fn file_datagram(datagram: &[u8], requests: &[Request], replies: &mut [Reply]) -> bool {
    let Some(i) = waiting_for(datagram, requests, replies) else {
        return false;
    };
    match DnsResponse::from_buffer(datagram.to_vec()) {
        Ok(response) if response.queries != requests[i].request.queries => false,
        Ok(response) => {
            let truncated = response.metadata.truncation;
            replies[i] = Reply::Answer(response);
            truncated
        }
        Err(e) => {
            replies[i] = Reply::Failed(e.to_string());
            false
        }
    }
}

/// The index of the query still waiting whose ID `datagram` carries.
fn waiting_for(datagram: &[u8], requests: &[Request], replies: &[Reply]) -> Option<usize> {
    let id = u16::from_be_bytes(*datagram.first_chunk::<2>()?);
    requests.iter().zip(replies).position(|(request, reply)| {
        request.request.metadata.id == id && matches!(reply, Reply::Lost)
    })
}

/// A UDP socket connected to `server`. hickory-net's UDP stream uses an unconnected socket, on
/// which the kernel's "port unreachable" never arrives, so a server that is gone would look like
/// a slow one (TIMEOUT after the whole deadline) instead of a refused one (NETWORK_ERROR at once).
/// Connected, the kernel also drops datagrams from any other source.
async fn connected_udp(server: SocketAddr) -> std::io::Result<UdpSocket> {
    let local: SocketAddr = if server.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(server).await?;
    Ok(socket)
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

/// Asks one question over TCP by `deadline`.
async fn tcp_reply(
    server: SocketAddr,
    q: &Question<'_>,
    options: QueryOptions,
    deadline: Instant,
) -> Reply {
    let fut = tcp(server, q.name, q.qtype, options, deadline);
    match tokio::time::timeout_at(deadline, fut).await {
        Err(_) | Ok(Err(NetError::Timeout)) => Reply::Lost,
        Ok(Ok(response)) => Reply::Answer(response),
        Ok(Err(e)) => Reply::Failed(e.to_string()),
    }
}

/// Where and how long one try asks.
#[derive(Debug, Clone, Copy)]
struct Ask {
    server: SocketAddr,
    options: QueryOptions,
    /// How long each wait lasts: resolv.conf's `timeout`.
    wait: Duration,
    /// The end of the lookup.
    deadline: Instant,
}

/// One try of a set of questions against one nameserver: glibc's `send_dg` (or `send_vc` with
/// `use-vc` or after a truncated answer), including its fallbacks after a lost answer.
#[derive(Default)]
struct Try {
    replies: Vec<Reply>,
    udp: u32,
    tcp: u32,
    families: Vec<FamilyQuery>,
    /// When the last answer of the try came, from the start of the try.
    answered_at: Option<Duration>,
}

impl Try {
    /// Asks `questions` (encoded as `requests`, the same messages for every try of a candidate,
    /// as glibc resends the same buffers) as `ask` says, on the nameserver's `socket`. `mode` is
    /// how a pair is sent; it moves to its fallback when a wait ends with one answer missing,
    /// and keeps it for the rest of the lookup, as glibc keeps it in the resolver state.
    async fn run(
        ask: &Ask,
        questions: &[Question<'_>],
        requests: &Result<Vec<Request>, String>,
        socket: &mut Option<UdpSocket>,
        mode: &mut PairMode,
    ) -> Self {
        let start = Instant::now();
        let mut tried = Try::default();
        if ask.options.tcp_only {
            let deadline = ask.deadline.min(later(start, ask.wait));
            tried.over_tcp(ask, questions, deadline).await;
            return tried.stamped(start);
        }
        let requests = match requests {
            Ok(requests) => requests,
            Err(e) => {
                tried.replies = questions.iter().map(|_| Reply::Failed(e.clone())).collect();
                return tried;
            }
        };
        loop {
            let wait_deadline = ask.deadline.min(later(Instant::now(), ask.wait));
            let waited = Wait::run(ask.server, socket, requests, *mode, wait_deadline).await;
            tried.udp += waited.udp;
            if waited.truncated {
                // glibc closes the UDP socket and asks everything again over TCP.
                *socket = None;
                tried.over_tcp(ask, questions, wait_deadline).await;
                return tried.stamped(start);
            }
            tried.count(questions, &waited.replies);
            let retry = waited.lost_one_of_two() && Instant::now() < ask.deadline;
            tried.replies = waited.replies;
            match mode.fallback() {
                Some(next) if retry => *mode = next,
                _ => return tried.stamped(start),
            }
        }
    }

    /// Every question over TCP, one exchange each.
    async fn over_tcp(&mut self, ask: &Ask, questions: &[Question<'_>], deadline: Instant) {
        self.replies.clear();
        for q in questions {
            self.tcp += 1;
            let reply = tcp_reply(ask.server, q, ask.options, deadline).await;
            self.replies.push(reply);
        }
        let replies = std::mem::take(&mut self.replies);
        self.count(questions, &replies);
        self.replies = replies;
    }

    /// Adds what each A and AAAA query sent got to the per-family results.
    fn count(&mut self, questions: &[Question<'_>], replies: &[Reply]) {
        for (q, reply) in questions.iter().zip(replies) {
            if let (Some(family), false) = (q.family(), matches!(reply, Reply::Unsent)) {
                let rcode = reply.outcome(q).rcode_label();
                self.families.push(FamilyQuery { family, rcode });
            }
        }
    }

    /// Notes when the try's last answer came, if any did.
    fn stamped(mut self, start: Instant) -> Self {
        if self.replies.iter().any(|r| matches!(r, Reply::Answer(_))) {
            self.answered_at = Some(start.elapsed());
        }
        self
    }

    fn outcomes(&self, questions: &[Question<'_>]) -> Vec<Outcome> {
        questions
            .iter()
            .zip(&self.replies)
            .map(|(q, reply)| reply.outcome(q))
            .collect()
    }
}

/// The outcome of a lookup's own question, the first one asked.
fn first(outcomes: Vec<Outcome>) -> Outcome {
    outcomes.into_iter().next().unwrap_or(Outcome::Timeout)
}

/// What libc's res_search does after one candidate name (glibc's `__res_context_query` with
/// one or two answers, then `__res_context_search`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// An answer has records: the walk ends here, useful or not.
    Found,
    /// NXDOMAIN, NODATA or SERVFAIL: the next candidate is asked.
    WalkOn { nodata: bool, servfail: bool },
    /// No response, or an rcode that ends the walk (REFUSED, ...).
    Stop,
}

fn step(outcomes: &[Outcome]) -> Step {
    if outcomes.iter().any(Outcome::has_records) {
        return Step::Found;
    }
    // The first answer's code decides, unless it is an empty NOERROR: then the other's does.
    let lead = outcomes
        .iter()
        .filter_map(Outcome::rcode)
        .find(|rcode| *rcode != ResponseCode::NoError)
        .or_else(|| outcomes.iter().find_map(Outcome::rcode));
    match lead {
        Some(ResponseCode::NXDomain) => Step::WalkOn {
            nodata: false,
            servfail: false,
        },
        Some(ResponseCode::NoError) => Step::WalkOn {
            nodata: true,
            servfail: false,
        },
        Some(ResponseCode::ServFail) => Step::WalkOn {
            nodata: false,
            servfail: true,
        },
        _ => Step::Stop,
    }
}

/// What a `system` lookup saw.
#[derive(Debug, Clone, PartialEq)]
pub struct SystemLookup {
    /// The lookup as the probe records it: for type A, the A answer (with the time until the
    /// AAAA answer too, which getaddrinfo waits for).
    pub observation: DnsObservation,
    /// Each A and AAAA query sent and what it got (lookups of type A only).
    pub family_queries: Vec<FamilyQuery>,
    /// The addresses an application would get (A, then AAAA), for type A lookups that found some.
    pub addresses: Vec<IpAddr>,
}

/// The state of one search-list walk.
struct Walk<'c> {
    conf: &'c ResolvConf,
    options: QueryOptions,
    mode: PairMode,
    first_server: usize,
    /// One UDP socket per nameserver (by index in resolv.conf), kept for the whole lookup.
    sockets: Vec<Option<UdpSocket>>,
    start: Instant,
    lookup: SystemLookup,
    /// When the last answer came, from the start of the lookup.
    last_answer: Option<Duration>,
}

impl<'c> Walk<'c> {
    fn new(conf: &'c ResolvConf) -> Self {
        Self {
            conf,
            options: QueryOptions {
                edns: conf.edns0,
                tcp_only: conf.use_vc,
            },
            mode: conf.pair_mode(),
            first_server: if conf.rotate {
                rand::random_range(0..conf.nameservers.len())
            } else {
                0
            },
            sockets: conf.nameservers.iter().map(|_| None).collect(),
            start: Instant::now(),
            lookup: SystemLookup {
                observation: DnsObservation {
                    outcome: Outcome::Timeout,
                    duration: None,
                    udp_queries: 0,
                    tcp_queries: 0,
                },
                family_queries: Vec::new(),
                addresses: Vec::new(),
            },
            last_answer: None,
        }
    }

    /// One candidate through res_send: up to `attempts` rounds over the nameservers, each try
    /// waiting `timeout`; a try where every query failed (SERVFAIL, NOTIMP, REFUSED, silence, an
    /// error) moves on to the next nameserver. Returns the last try's outcome per question.
    async fn ask(&mut self, questions: &[Question<'_>], deadline: Instant) -> Vec<Outcome> {
        let conf = self.conf;
        let servers = &conf.nameservers;
        let requests = encode(questions, self.options);
        let mut outcomes = vec![Outcome::Timeout; questions.len()];
        for _attempt in 0..conf.attempts {
            for i in 0..servers.len() {
                if Instant::now() >= deadline {
                    return vec![Outcome::Timeout; questions.len()];
                }
                let index = (self.first_server + i) % servers.len();
                let ask = Ask {
                    server: servers[index],
                    options: self.options,
                    wait: conf.timeout,
                    deadline,
                };
                let socket = &mut self.sockets[index];
                let tried = Try::run(&ask, questions, &requests, socket, &mut self.mode).await;
                outcomes = tried.outcomes(questions);
                self.absorb(tried, questions);
                if !outcomes.iter().all(Outcome::tries_next_server) {
                    return outcomes;
                }
            }
        }
        outcomes
    }

    fn absorb(&mut self, tried: Try, questions: &[Question<'_>]) {
        let observation = &mut self.lookup.observation;
        observation.udp_queries += tried.udp;
        observation.tcp_queries += tried.tcp;
        if tried.answered_at.is_some() {
            self.last_answer = Some(self.start.elapsed());
        }
        if questions.len() > 1 {
            self.lookup.family_queries.extend(tried.families);
        }
        self.lookup.addresses = questions
            .iter()
            .zip(&tried.replies)
            .filter_map(|(q, reply)| match reply {
                Reply::Answer(response) => Some(addresses(q.name, q.qtype, response)),
                _ => None,
            })
            .flatten()
            .collect();
    }

    fn finish(mut self, outcome: Outcome) -> SystemLookup {
        let observation = &mut self.lookup.observation;
        if outcome.rcode().is_some() {
            observation.duration = self.last_answer;
        }
        observation.outcome = outcome;
        self.lookup
    }
}

/// A lookup through the pod's resolver settings, as glibc's getaddrinfo (`res_search` and
/// `res_send`) does it: each candidate name from the search list in turn; for type A an A and an
/// AAAA query together, as [`ResolvConf::pair_mode`] says; for each candidate up to `attempts`
/// rounds over the nameservers, waiting `timeout` for each; SERVFAIL, NOTIMP, REFUSED and
/// silence move on to the next nameserver. An empty NOERROR (NODATA), NXDOMAIN and SERVFAIL move
/// on to the next candidate; an answer with records ends the walk, and is judged as an
/// application would ([`judge`]: for type A, the A answer); anything else (a timeout of every
/// server, REFUSED everywhere, a network error) ends the walk too, reported as NODATA or
/// SERVFAIL if an earlier candidate got one.
pub async fn lookup_system(
    conf: &ResolvConf,
    name: &Name,
    qtype: RecordType,
    deadline: Instant,
) -> SystemLookup {
    let mut walk = Walk::new(conf);
    let (mut got_nodata, mut got_servfail) = (false, false);
    let mut last = Outcome::Timeout;
    for candidate in conf.candidates(name) {
        let questions = questions(&candidate, qtype);
        let outcomes = walk.ask(&questions, deadline).await;
        let step = step(&outcomes);
        // The probe's own type (the A answer of a pair) is what the lookup reports.
        last = first(outcomes);
        match step {
            Step::Found => return walk.finish(last),
            Step::Stop => break,
            Step::WalkOn { nodata, servfail } => {
                got_nodata |= nodata;
                got_servfail |= servfail;
            }
        }
    }
    // As res_search reports it: an earlier NODATA or SERVFAIL outranks the last candidate's.
    let outcome = if got_nodata {
        Outcome::NoData { answers: 0 }
    } else if got_servfail {
        Outcome::Response {
            rcode: ResponseCode::ServFail,
            answers: 0,
        }
    } else {
        last
    };
    walk.finish(outcome)
}

/// Resolves `name` to addresses the way the pod's libc would (getaddrinfo with AF_UNSPEC: A and
/// AAAA), for probes that connect by name. Returns the lookup's observation too, for its timing
/// and failure; the addresses are the A ones first.
pub async fn resolve_system(
    conf: &ResolvConf,
    name: &Name,
    deadline: Instant,
) -> (DnsObservation, Vec<IpAddr>) {
    let lookup = lookup_system(conf, name, RecordType::A, deadline).await;
    (lookup.observation, lookup.addresses)
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
        let labels = DnsLabels {
            server: server_label,
            name: query.name.as_str().to_owned(),
            qtype: query.qtype.0.to_string(),
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
                server = %l.server, name = %l.name, qtype = %l.qtype,
                outcome = %observation.outcome.describe(),
                expected = %self.query.expect.map_or(
                    "NOERROR with a record of the queried type for the name",
                    |e| rcode_name(e.0)
                ),
                suppressed,
                "DNS lookup failing"
            ),
            Transition::Recovered { suppressed } => tracing::info!(
                server = %l.server, name = %l.name, qtype = %l.qtype, suppressed,
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
mod tests {
    use std::collections::HashSet;
    use std::net::Ipv4Addr;

    use hickory_proto::op::{Message, MessageType, OpCode};
    use hickory_proto::rr::rdata::{A, CNAME, TXT};

    use super::*;
    use crate::config::RCODES;

    const Q: &str = "svc.example.";

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn a(owner: &str, last: u8) -> Record {
        Record::from_rdata(name(owner), 30, RData::A(A::new(192, 0, 2, last)))
    }

    fn cname(owner: &str, target: &str) -> Record {
        Record::from_rdata(name(owner), 30, RData::CNAME(CNAME(name(target))))
    }

    fn txt(owner: &str) -> Record {
        Record::from_rdata(name(owner), 30, RData::TXT(TXT::new(vec!["x".into()])))
    }

    fn response(rcode: ResponseCode, answers: Vec<Record>) -> DnsResponse {
        let mut message = Message::new(7, MessageType::Response, OpCode::Query);
        message.metadata.response_code = rcode;
        message.answers = answers;
        DnsResponse::from_message(message).unwrap()
    }

    fn judged(qtype: RecordType, answers: Vec<Record>) -> Outcome {
        judge(&name(Q), qtype, &response(ResponseCode::NoError, answers))
    }

    fn usable(answers: usize) -> Outcome {
        Outcome::Response {
            rcode: ResponseCode::NoError,
            answers,
        }
    }

    #[test]
    fn expectations() {
        let nx = Outcome::Response {
            rcode: ResponseCode::NXDomain,
            answers: 0,
        };
        let nodata = Outcome::NoData { answers: 0 };
        let wrong = Outcome::WrongAnswer { answers: 1 };
        assert!(!nx.meets(None));
        assert!(nx.meets(Some(ResponseCode::NXDomain)));
        assert!(usable(1).meets(None));
        for unusable in [&nodata, &wrong] {
            assert!(!unusable.meets(None), "{unusable:?} is not a resolution");
            // `expect: NOERROR` asks for the rcode only, as before.
            assert!(unusable.meets(Some(ResponseCode::NoError)));
        }
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
        for outcome in [
            Outcome::NoData { answers: 0 },
            Outcome::WrongAnswer { answers: 1 },
            Outcome::Timeout,
            Outcome::NetworkError(String::new()),
        ] {
            assert!(RCODE_LABELS.contains(&outcome.rcode_label()), "{outcome:?}");
        }
    }

    #[test]
    fn only_a_record_of_the_type_for_the_name_is_an_answer() {
        assert_eq!(judged(RecordType::A, vec![a(Q, 1)]), usable(1));
        assert_eq!(judged(RecordType::A, vec![a("SVC.Example.", 1)]), usable(1));
        assert_eq!(
            judged(RecordType::A, vec![]),
            Outcome::NoData { answers: 0 }
        );
        assert_eq!(
            judged(RecordType::A, vec![txt(Q)]),
            Outcome::NoData { answers: 1 }
        );
        assert_eq!(
            judged(RecordType::AAAA, vec![a(Q, 1)]),
            Outcome::NoData { answers: 1 }
        );
        assert_eq!(
            judged(RecordType::A, vec![a("other.example.", 1)]),
            Outcome::WrongAnswer { answers: 1 }
        );
        // A non-NOERROR code is reported as such, whatever the answer section holds.
        let nx = response(ResponseCode::NXDomain, vec![cname(Q, "gone.example.")]);
        assert_eq!(
            judge(&name(Q), RecordType::A, &nx),
            Outcome::Response {
                rcode: ResponseCode::NXDomain,
                answers: 1
            }
        );
    }

    #[test]
    fn cname_chains_are_followed_within_the_answer() {
        let chain = vec![
            cname(Q, "b.example."),
            cname("B.example.", "c.example."),
            a("c.example.", 3),
        ];
        assert_eq!(judged(RecordType::A, chain.clone()), usable(3));
        let resp = response(ResponseCode::NoError, chain);
        assert_eq!(
            addresses(&name(Q), RecordType::A, &resp),
            [IpAddr::from([192, 0, 2, 3])]
        );
        // A CNAME query is answered by the CNAME itself.
        assert_eq!(
            judged(RecordType::CNAME, vec![cname(Q, "b.example.")]),
            usable(1)
        );
        // Dangling: the chain ends at a name without an A (NODATA at the end of the chain).
        assert_eq!(
            judged(RecordType::A, vec![cname(Q, "b.example.")]),
            Outcome::NoData { answers: 1 }
        );
        assert_eq!(
            judged(
                RecordType::A,
                vec![cname(Q, "b.example."), txt("b.example.")]
            ),
            Outcome::NoData { answers: 2 }
        );
        // An A off the chain is not the name's.
        let off = vec![cname(Q, "b.example."), a("c.example.", 3)];
        assert_eq!(
            judged(RecordType::A, off.clone()),
            Outcome::WrongAnswer { answers: 2 }
        );
        let resp = response(ResponseCode::NoError, off);
        assert!(addresses(&name(Q), RecordType::A, &resp).is_empty());
    }

    #[test]
    fn cname_loops_and_overlong_chains_are_wrong_answers() {
        let looped = vec![
            cname(Q, "b.example."),
            cname("b.example.", Q),
            a("c.example.", 3),
        ];
        assert_eq!(
            judged(RecordType::A, looped),
            Outcome::WrongAnswer { answers: 3 }
        );
        let chain = |links: usize| -> Vec<Record> {
            let hop = |i: usize| {
                if i == 0 {
                    Q.to_owned()
                } else {
                    format!("hop{i}.example.")
                }
            };
            let mut records: Vec<Record> =
                (0..links).map(|i| cname(&hop(i), &hop(i + 1))).collect();
            records.push(a(&hop(links), 9));
            records
        };
        assert_eq!(
            judged(RecordType::A, chain(MAX_CNAME_CHAIN)),
            usable(MAX_CNAME_CHAIN + 1)
        );
        assert_eq!(
            judged(RecordType::A, chain(MAX_CNAME_CHAIN + 1)),
            Outcome::WrongAnswer {
                answers: MAX_CNAME_CHAIN + 2
            }
        );
    }

    #[test]
    fn the_search_walk_stops_at_records_and_walks_on_past_empty_answers() {
        let rc = |rcode| Outcome::Response { rcode, answers: 0 };
        let nodata = Outcome::NoData { answers: 0 };
        let walk = |nodata, servfail| Step::WalkOn { nodata, servfail };
        // Records end the walk, useful or not (libc's res_search sees ancount > 0).
        assert_eq!(
            step(&[Outcome::NoData { answers: 1 }, nodata.clone()]),
            Step::Found
        );
        assert_eq!(step(&[rc(ResponseCode::NXDomain), usable(1)]), Step::Found);
        assert_eq!(step(&[nodata.clone(), nodata.clone()]), walk(true, false));
        assert_eq!(
            step(&[rc(ResponseCode::NXDomain), rc(ResponseCode::NXDomain)]),
            walk(false, false)
        );
        // An empty NOERROR beside an NXDOMAIN: the NXDOMAIN decides.
        assert_eq!(
            step(&[nodata.clone(), rc(ResponseCode::NXDomain)]),
            walk(false, false)
        );
        assert_eq!(step(&[rc(ResponseCode::ServFail)]), walk(false, true));
        assert_eq!(step(&[rc(ResponseCode::Refused)]), Step::Stop);
        assert_eq!(step(&[Outcome::Timeout, Outcome::Timeout]), Step::Stop);
    }

    /// A resolver on loopback that answers A after `HOLD` with 192.0.2.1, AAAA at once with no
    /// record, and drops an AAAA that arrives from the address and port of an A it has not
    /// answered yet: the conntrack insert race, which loses the second of two packets one
    /// socket sends together. It logs the type and source port of every query.
    struct RacyResolver {
        addr: SocketAddr,
        log: Arc<Mutex<Vec<(RecordType, u16)>>>,
    }

    const HOLD: Duration = Duration::from_millis(50);

    impl RacyResolver {
        async fn start() -> Self {
            let socket = Arc::new(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap());
            let addr = socket.local_addr().unwrap();
            let log = Arc::new(Mutex::new(Vec::new()));
            tokio::spawn(Self::serve(socket, log.clone()));
            Self { addr, log }
        }

        async fn serve(socket: Arc<UdpSocket>, log: Arc<Mutex<Vec<(RecordType, u16)>>>) {
            let unanswered = Arc::new(Mutex::new(HashSet::<SocketAddr>::new()));
            let mut buf = vec![0u8; 4096];
            while let Ok((len, peer)) = socket.recv_from(&mut buf).await {
                let Ok(query) = Message::from_vec(&buf[..len]) else {
                    continue;
                };
                let Some(q) = query.queries.first().cloned() else {
                    continue;
                };
                log.lock().unwrap().push((q.query_type(), peer.port()));
                let mut reply = Message::response(query.metadata.id, OpCode::Query);
                reply.queries = query.queries.clone();
                if q.query_type() != RecordType::A {
                    if !unanswered.lock().unwrap().contains(&peer) {
                        let _ = socket.send_to(&reply.to_vec().unwrap(), peer).await;
                    }
                    continue;
                }
                reply.add_answer(Record::from_rdata(
                    q.name().clone(),
                    30,
                    RData::A(A::new(192, 0, 2, 1)),
                ));
                unanswered.lock().unwrap().insert(peer);
                let (socket, unanswered) = (socket.clone(), unanswered.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(HOLD).await;
                    let _ = socket.send_to(&reply.to_vec().unwrap(), peer).await;
                    unanswered.lock().unwrap().remove(&peer);
                });
            }
        }

        async fn lookup(&self, options: &str) -> (SystemLookup, Vec<(RecordType, u16)>) {
            let mut conf =
                ResolvConf::parse(format!("options timeout:1 attempts:1 {options}\n").as_bytes());
            conf.nameservers = vec![self.addr];
            let deadline = Instant::now() + Duration::from_secs(10);
            let lookup =
                lookup_system(&conf, &name("race.example."), RecordType::A, deadline).await;
            let log = std::mem::take(&mut *self.log.lock().unwrap());
            (lookup, log)
        }
    }

    fn family(family: &'static str, rcode: &'static str) -> FamilyQuery {
        FamilyQuery { family, rcode }
    }

    #[tokio::test]
    async fn a_lookups_send_a_and_aaaa_together_from_one_socket() {
        let resolver = RacyResolver::start().await;
        let (lookup, log) = resolver.lookup("").await;
        // Both from one port at once: the AAAA is lost, the wait ends after `timeout` with the A
        // in, and glibc asks both again one after the other.
        let ports: HashSet<u16> = log.iter().map(|(_, port)| *port).collect();
        assert_eq!(ports.len(), 1, "{log:?}");
        let types: Vec<RecordType> = log.iter().map(|(t, _)| *t).collect();
        use RecordType::{A as TA, AAAA as TAAAA};
        assert_eq!(types, [TA, TAAAA, TA, TAAAA]);
        let observation = &lookup.observation;
        assert_eq!(observation.outcome, usable(1));
        assert_eq!(observation.udp_queries, 4);
        assert!(
            observation.duration > Some(Duration::from_secs(1)),
            "{observation:?}"
        );
        assert_eq!(
            lookup.family_queries,
            [
                family("ipv4", "NOERROR"),
                family("ipv6", "TIMEOUT"),
                family("ipv4", "NOERROR"),
                family("ipv6", "NODATA"),
            ]
        );
        assert_eq!(lookup.addresses, [IpAddr::from([192, 0, 2, 1])]);
    }

    #[tokio::test]
    async fn single_request_options_keep_the_aaaa_out_of_the_race() {
        let resolver = RacyResolver::start().await;
        for (options, ports) in [("single-request", 1), ("single-request-reopen", 2)] {
            let (lookup, log) = resolver.lookup(options).await;
            let seen: HashSet<u16> = log.iter().map(|(_, port)| *port).collect();
            assert_eq!(seen.len(), ports, "{options}: {log:?}");
            assert_eq!(lookup.observation.outcome, usable(1), "{options}");
            assert_eq!(lookup.observation.udp_queries, 2, "{options}");
            assert!(
                lookup.observation.duration < Some(Duration::from_secs(1)),
                "{options}: {:?}",
                lookup.observation
            );
            assert_eq!(
                lookup.family_queries,
                [family("ipv4", "NOERROR"), family("ipv6", "NODATA")],
                "{options}"
            );
        }
    }

    #[tokio::test]
    async fn other_types_and_explicit_servers_send_one_query() {
        let resolver = RacyResolver::start().await;
        let mut conf = ResolvConf::parse(b"options timeout:1 attempts:1\n");
        conf.nameservers = vec![resolver.addr];
        let deadline = Instant::now() + Duration::from_secs(5);
        let lookup = lookup_system(&conf, &name("race.example."), RecordType::AAAA, deadline).await;
        assert_eq!(lookup.observation.outcome, Outcome::NoData { answers: 0 });
        assert_eq!(lookup.observation.udp_queries, 1);
        assert!(lookup.family_queries.is_empty());
        let direct = query(
            resolver.addr,
            &name("race.example."),
            RecordType::A,
            QueryOptions::default(),
            deadline,
        )
        .await;
        assert_eq!(direct.outcome, usable(1));
        assert_eq!(direct.udp_queries, 1);
        let log = resolver.log.lock().unwrap().clone();
        let types: Vec<RecordType> = log.iter().map(|(t, _)| *t).collect();
        assert_eq!(types, [RecordType::AAAA, RecordType::A]);
    }
}

/// Hostile answers: arbitrary bytes carrying a waiting query's ID, and well-formed answers to it
/// (any rcode, records of any type owned by related names, CNAME chains and loops) cut short,
/// flipped and padded. Filing them and judging what decodes never panics, and every outcome is
/// labelled from the closed set.
#[cfg(test)]
mod fuzz {
    use hickory_proto::op::{Message, OpCode};
    use hickory_proto::rr::rdata::{A, AAAA, CNAME, TXT};
    use proptest::prelude::*;

    use super::*;
    use crate::config::QUERY_TYPES;

    const NAMES: &[&str] = &[
        "svc.example.",
        "a.svc.example.",
        "b.example.",
        "SVC.Example.",
        ".",
    ];

    fn record() -> impl Strategy<Value = Record> {
        (0..NAMES.len(), 0..NAMES.len(), 0u8..4, any::<u32>()).prop_map(|(owner, to, kind, ttl)| {
            let (owner, to) = (
                Name::from_ascii(NAMES[owner]).unwrap(),
                Name::from_ascii(NAMES[to]).unwrap(),
            );
            let data = match kind {
                0 => RData::A(A::new(192, 0, 2, 1)),
                1 => RData::AAAA(AAAA::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
                2 => RData::CNAME(CNAME(to)),
                _ => RData::TXT(TXT::new(vec!["x".into()])),
            };
            Record::from_rdata(owner, ttl, data)
        })
    }

    /// How a datagram is spoiled before it arrives.
    #[derive(Debug, Clone)]
    enum Spoil {
        None,
        Cut(usize),
        Flip(Vec<(usize, u8)>),
        Pad(Vec<u8>),
    }

    fn spoil() -> impl Strategy<Value = Spoil> {
        prop_oneof![
            Just(Spoil::None),
            any::<usize>().prop_map(Spoil::Cut),
            prop::collection::vec((any::<usize>(), any::<u8>()), 1..8).prop_map(Spoil::Flip),
            prop::collection::vec(any::<u8>(), 1..64).prop_map(Spoil::Pad),
        ]
    }

    fn judge_all(name: &Name, qtype: RecordType, replies: &[Reply]) {
        for reply in replies {
            if let Reply::Answer(response) = reply {
                let outcome = judge(name, qtype, response);
                assert!(RCODE_LABELS.contains(&outcome.rcode_label()), "{outcome:?}");
                let _ = addresses(name, qtype, response);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn any_bytes_with_a_waiting_id(
            which in 0..QUERY_TYPES.len(),
            tail in prop::collection::vec(any::<u8>(), 0..600),
        ) {
            let (name, qtype) = (Name::from_ascii("svc.example.").unwrap(), QUERY_TYPES[which]);
            let requests = encode(&questions(&name, qtype), QueryOptions::default()).unwrap();
            for request in &requests {
                let mut replies: Vec<Reply> = requests.iter().map(|_| Reply::Lost).collect();
                let mut datagram = request.request.metadata.id.to_be_bytes().to_vec();
                datagram.extend_from_slice(&tail);
                file_datagram(&datagram, &requests, &mut replies);
                judge_all(&name, qtype, &replies);
            }
        }

        #[test]
        fn well_formed_answers_spoiled(
            which in 0..QUERY_TYPES.len(),
            rcode in 0u16..24,
            truncated in any::<bool>(),
            answers in prop::collection::vec(record(), 0..12),
            spoiled in spoil(),
        ) {
            let (name, qtype) = (Name::from_ascii("svc.example.").unwrap(), QUERY_TYPES[which]);
            let requests = encode(&questions(&name, qtype), QueryOptions::default()).unwrap();
            let request = &requests[0].request;
            let mut message = Message::response(request.metadata.id, OpCode::Query);
            message.queries = request.queries.clone();
            message.metadata.response_code = ResponseCode::from_low(rcode as u8 & 0xf);
            message.metadata.truncation = truncated;
            message.answers = answers;
            let mut datagram = message.to_vec().unwrap();
            let intact = matches!(spoiled, Spoil::None);
            match spoiled {
                Spoil::None => {}
                Spoil::Cut(at) => datagram.truncate(at % (datagram.len() + 1)),
                Spoil::Flip(flips) => {
                    let len = datagram.len();
                    for (at, bits) in flips {
                        datagram[at % len] ^= bits;
                    }
                }
                Spoil::Pad(bytes) => datagram.extend(bytes),
            }
            let mut replies: Vec<Reply> = requests.iter().map(|_| Reply::Lost).collect();
            let said_truncated = file_datagram(&datagram, &requests, &mut replies);
            if intact {
                // The answer to the first query is filed as such, truncation flag and all.
                prop_assert!(matches!(replies[0], Reply::Answer(_)), "{replies:?}");
                prop_assert_eq!(said_truncated, truncated);
            }
            judge_all(&name, qtype, &replies);
        }
    }
}
