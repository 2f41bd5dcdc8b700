//! One query on the wire: the messages (hickory-proto), UDP on a connected socket of its own,
//! TCP after a truncated answer, and what an application makes of the answer ([`judge`]).

use super::*;

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
pub(super) fn chain_end<'a>(
    name: &'a Name,
    qtype: RecordType,
    answers: &'a [Record],
) -> Option<&'a Name> {
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
pub(super) fn owns(owner: &Name, qtype: RecordType, answers: &[Record]) -> bool {
    answers
        .iter()
        .any(|r| r.record_type() == qtype && r.name.eq_ignore_root(owner))
}

pub(super) fn cname_target<'a>(owner: &Name, answers: &'a [Record]) -> Option<&'a Name> {
    answers.iter().find_map(|r| match &r.data {
        RData::CNAME(cname) if r.name.eq_ignore_root(owner) => Some(&cname.0),
        _ => None,
    })
}

/// The addresses an application gets from an A or AAAA answer: the records at the end of the
/// name's CNAME chain.
pub(super) fn addresses(name: &Name, qtype: RecordType, response: &DnsResponse) -> Vec<IpAddr> {
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
pub(super) struct Question<'a> {
    pub(super) name: &'a Name,
    pub(super) qtype: RecordType,
}

impl Question<'_> {
    /// The `family` label of this question's queries, for A and AAAA.
    pub(super) fn family(&self) -> Option<IpFamily> {
        match self.qtype {
            RecordType::A => Some(IpFamily::ipv4),
            RecordType::AAAA => Some(IpFamily::ipv6),
            _ => None,
        }
    }
}

/// What libc's getaddrinfo asks for a lookup of `qtype`: A and AAAA for type A (AF_UNSPEC), the
/// type alone otherwise (res_query).
pub(super) fn questions(name: &Name, qtype: RecordType) -> Vec<Question<'_>> {
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
pub(super) struct Request {
    pub(super) request: DnsRequest,
    pub(super) bytes: Vec<u8>,
}

pub(super) fn request(name: &Name, qtype: RecordType, options: QueryOptions) -> DnsRequest {
    let mut request_options = DnsRequestOptions::default();
    request_options.use_edns = options.edns;
    request_options.recursion_desired = true;
    DnsRequest::from_query(Query::query(name.clone(), qtype), request_options)
}

/// The questions as UDP messages, with distinct IDs so that the answers can be told apart.
pub(super) fn encode(
    questions: &[Question<'_>],
    options: QueryOptions,
) -> Result<Vec<Request>, String> {
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
pub(super) enum Reply {
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
    pub(super) fn keeps(&self) -> bool {
        matches!(self, Reply::Answer(r) if !matches!(
            r.metadata.response_code,
            ResponseCode::ServFail | ResponseCode::NotImp | ResponseCode::Refused
        ))
    }

    pub(super) fn outcome(&self, q: &Question<'_>) -> Outcome {
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
pub(super) struct Wait {
    pub(super) replies: Vec<Reply>,
    pub(super) udp: u32,
    pub(super) truncated: bool,
}

impl Wait {
    /// Sends `requests` to `server` on `socket`, the nameserver's socket for this lookup (opened
    /// when there is none, closed when it fails, as glibc keeps one per nameserver in the
    /// resolver state), and waits for their answers until `deadline`.
    pub(super) async fn run(
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
    pub(super) async fn receive(
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
    pub(super) fn failed(mut self, socket: &mut Option<UdpSocket>, e: &std::io::Error) -> Self {
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
    pub(super) fn lost_one_of_two(&self) -> bool {
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
pub(super) fn file_datagram(datagram: &[u8], requests: &[Request], replies: &mut [Reply]) -> bool {
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
pub(super) fn waiting_for(
    datagram: &[u8],
    requests: &[Request],
    replies: &[Reply],
) -> Option<usize> {
    let id = u16::from_be_bytes(*datagram.first_chunk::<2>()?);
    requests.iter().zip(replies).position(|(request, reply)| {
        request.request.metadata.id == id && matches!(reply, Reply::Lost)
    })
}

/// A UDP socket connected to `server`. hickory-net's UDP stream uses an unconnected socket, on
/// which the kernel's "port unreachable" never arrives, so a server that is gone would look like
/// a slow one (TIMEOUT after the whole deadline) instead of a refused one (NETWORK_ERROR at once).
/// Connected, the kernel also drops datagrams from any other source.
pub(super) async fn connected_udp(server: SocketAddr) -> std::io::Result<UdpSocket> {
    let local: SocketAddr = if server.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(server).await?;
    Ok(socket)
}

pub(super) async fn tcp(
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
pub(super) async fn tcp_reply(
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
