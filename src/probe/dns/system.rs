//! Server `system`: glibc's getaddrinfo replayed on top of [`super::wire`]: the search list,
//! `ndots`, `attempts` and `timeout` from resolv.conf, and A with AAAA from one socket.

use super::*;

/// Where and how long one try asks.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ask {
    pub(super) server: SocketAddr,
    pub(super) options: QueryOptions,
    /// How long each wait lasts: resolv.conf's `timeout`.
    pub(super) wait: Duration,
    /// The end of the lookup.
    pub(super) deadline: Instant,
}

/// One try of a set of questions against one nameserver: glibc's `send_dg` (or `send_vc` with
/// `use-vc` or after a truncated answer), including its fallbacks after a lost answer.
#[derive(Default)]
pub(super) struct Try {
    pub(super) replies: Vec<Reply>,
    pub(super) udp: u32,
    pub(super) tcp: u32,
    pub(super) families: Vec<FamilyQuery>,
    /// When the last answer of the try came, from the start of the try.
    pub(super) answered_at: Option<Duration>,
}

impl Try {
    /// Asks `questions` (encoded as `requests`, the same messages for every try of a candidate,
    /// as glibc resends the same buffers) as `ask` says, on the nameserver's `socket`. `mode` is
    /// how a pair is sent; it moves to its fallback when a wait ends with one answer missing,
    /// and keeps it for the rest of the lookup, as glibc keeps it in the resolver state.
    pub(super) async fn run(
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
    pub(super) async fn over_tcp(
        &mut self,
        ask: &Ask,
        questions: &[Question<'_>],
        deadline: Instant,
    ) {
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
    pub(super) fn count(&mut self, questions: &[Question<'_>], replies: &[Reply]) {
        for (q, reply) in questions.iter().zip(replies) {
            if let (Some(family), false) = (q.family(), matches!(reply, Reply::Unsent)) {
                let rcode = reply.outcome(q).rcode_label();
                self.families.push(FamilyQuery { family, rcode });
            }
        }
    }

    /// Notes when the try's last answer came, if any did.
    pub(super) fn stamped(mut self, start: Instant) -> Self {
        if self.replies.iter().any(|r| matches!(r, Reply::Answer(_))) {
            self.answered_at = Some(start.elapsed());
        }
        self
    }

    pub(super) fn outcomes(&self, questions: &[Question<'_>]) -> Vec<Outcome> {
        questions
            .iter()
            .zip(&self.replies)
            .map(|(q, reply)| reply.outcome(q))
            .collect()
    }
}

/// The outcome of a lookup's own question, the first one asked.
pub(super) fn first(outcomes: Vec<Outcome>) -> Outcome {
    outcomes.into_iter().next().unwrap_or(Outcome::Timeout)
}

/// What libc's res_search does after one candidate name (glibc's `__res_context_query` with
/// one or two answers, then `__res_context_search`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// An answer has records: the walk ends here, useful or not.
    Found,
    /// NXDOMAIN, NODATA or SERVFAIL: the next candidate is asked.
    WalkOn { nodata: bool, servfail: bool },
    /// No response, or an rcode that ends the walk (REFUSED, ...).
    Stop,
}

pub(super) fn step(outcomes: &[Outcome]) -> Step {
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
pub(super) struct Walk<'c> {
    pub(super) conf: &'c ResolvConf,
    pub(super) options: QueryOptions,
    pub(super) mode: PairMode,
    pub(super) first_server: usize,
    /// One UDP socket per nameserver (by index in resolv.conf), kept for the whole lookup.
    pub(super) sockets: Vec<Option<UdpSocket>>,
    pub(super) start: Instant,
    pub(super) lookup: SystemLookup,
    /// When the last answer came, from the start of the lookup.
    pub(super) last_answer: Option<Duration>,
}

impl<'c> Walk<'c> {
    pub(super) fn new(conf: &'c ResolvConf) -> Self {
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
    pub(super) async fn ask(
        &mut self,
        questions: &[Question<'_>],
        deadline: Instant,
    ) -> Vec<Outcome> {
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

    pub(super) fn absorb(&mut self, tried: Try, questions: &[Question<'_>]) {
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

    pub(super) fn finish(mut self, outcome: Outcome) -> SystemLookup {
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
