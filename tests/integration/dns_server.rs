//! A real DNS server embedded in the tests: UDP and TCP on one loopback port, with answers
//! programmed per name and the faults a probe must tell apart (rcodes, dropped and delayed
//! answers, truncation that forces TCP, answers an application cannot use, the conntrack race).
//! It counts what it receives, so a test can prove how many messages a lookup sent and over
//! which transport.
//!
//! It runs on its own thread with its own single-threaded tokio runtime, because the tests that
//! use it are plain `#[test]` functions driving a child process.

// Shared by every suite; not every suite uses every helper.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{
    Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener as StdTcpListener, UdpSocket as StdUdpSocket,
};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::oneshot;

/// TTL of every answer record.
pub const ANSWER_TTL: u32 = 30;

/// How long [`Behaviour::ConntrackRace`] holds its A answers: the window in which an AAAA from
/// the same socket is lost.
pub const RACE_HOLD: Duration = Duration::from_millis(100);

/// The longest CNAME chain the server follows in its own data (a loop there stops here).
const CHASE_LIMIT: usize = 8;

/// How the server treats queries for one name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// NOERROR with one A record (for qtype A; other qtypes get NOERROR without data).
    Answer(Ipv4Addr),
    /// A dual-stack name: one A record for qtype A, one AAAA record for qtype AAAA (other
    /// qtypes get NOERROR without data).
    DualStack(Ipv4Addr, Ipv6Addr),
    /// NOERROR without answers.
    NoData,
    NxDomain,
    ServFail,
    Refused,
    /// Never answer, over UDP or TCP.
    Drop,
    /// Behave as the inner behaviour after the delay; other queries are not held up.
    Delay(Duration, Box<Behaviour>),
    /// Over UDP: NOERROR, TC bit set, no answers. Over TCP: the full answer, as `Answer`.
    Truncate(Ipv4Addr),
    /// Drops the 1st, 3rd, 5th, ... query for the name and type and answers the others as the
    /// inner behaviour: a lossy path on which the first packet of each exchange is lost, so
    /// every lookup needs the resolver's retry after its timeout.
    DropOdd(Box<Behaviour>),
    /// NOERROR with only a TXT record for the name (any qtype): records, none an address.
    Txt,
    /// NOERROR with an A record owned by another name (for qtype A; other qtypes get NOERROR
    /// without data): what a misdirected or buggy server sends.
    AnswerFor(String, Ipv4Addr),
    /// NOERROR with a CNAME to the given name, followed through the server's own data as a
    /// recursive resolver does: the target's CNAME and A records join the answer; a target
    /// without any (unset, NXDOMAIN, ...) leaves the CNAME dangling.
    Cname(String),
    /// The Linux conntrack insert race on UDP, for the inner behaviour: over UDP, an A query
    /// is answered after [`RACE_HOLD`], and an AAAA query that arrives from the address and
    /// port of an A query not answered yet is dropped (two packets of one socket in flight
    /// together: the second one loses). An AAAA sent after the A answer, or from another
    /// socket, is answered.
    ConntrackRace(Box<Behaviour>),
}

impl Behaviour {
    /// This behaviour, after `delay`.
    pub fn delayed(self, delay: Duration) -> Self {
        Behaviour::Delay(delay, Box::new(self))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

/// One query as the server received it, in arrival order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// Query name, lower case, without the trailing dot.
    pub name: String,
    pub qtype: RecordType,
    pub transport: Transport,
}

#[derive(Default)]
struct State {
    behaviours: HashMap<String, Behaviour>,
    fallback: Option<Behaviour>,
    received: Vec<Received>,
    /// Sources of [`Behaviour::ConntrackRace`] A queries whose answer is not sent yet.
    unanswered_a: HashSet<SocketAddr>,
}

/// A reply to send: after `delay`, these bytes; then `sent_a_to` is no longer waiting for an A
/// answer ([`Behaviour::ConntrackRace`]).
struct Outgoing {
    delay: Duration,
    bytes: Vec<u8>,
    sent_a_to: Option<SocketAddr>,
}

pub struct DnsServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Lower case, no trailing dot: the form names are stored and compared in.
fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl DnsServer {
    /// Starts a server on 127.0.0.1 with UDP and TCP on the same OS-chosen port.
    pub fn start() -> Self {
        let mut last_err = None;
        // The UDP port the OS picks may be taken for TCP by someone else; try a few.
        for _ in 0..20 {
            let udp = StdUdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
                .unwrap_or_else(|e| panic!("dns server: bind UDP 127.0.0.1:0: {e}"));
            let addr = udp.local_addr().expect("dns server: UDP local addr");
            match StdTcpListener::bind(addr) {
                Ok(tcp) => return Self::spawn(udp, tcp),
                Err(e) => last_err = Some(e),
            }
        }
        panic!("dns server: could not bind TCP on the UDP port 20 times; last error: {last_err:?}");
    }

    /// Starts a server on a fixed address (e.g. port 53 on a 127.x.y.z address, which needs root).
    pub fn start_on(addr: SocketAddr) -> io::Result<Self> {
        let udp = StdUdpSocket::bind(addr)?;
        let tcp = StdTcpListener::bind(addr)?;
        Ok(Self::spawn(udp, tcp))
    }

    fn spawn(udp: StdUdpSocket, tcp: StdTcpListener) -> Self {
        let addr = udp.local_addr().expect("dns server: local addr");
        udp.set_nonblocking(true)
            .expect("dns server: nonblocking UDP");
        tcp.set_nonblocking(true)
            .expect("dns server: nonblocking TCP");
        let state = Arc::new(Mutex::new(State::default()));
        let (stop_tx, stop_rx) = oneshot::channel();
        let thread_state = state.clone();
        let thread = std::thread::Builder::new()
            .name(format!("dns-server-{addr}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("dns server: tokio runtime");
                rt.block_on(async move {
                    let udp = Arc::new(
                        tokio::net::UdpSocket::from_std(udp).expect("dns server: tokio UDP"),
                    );
                    let tcp =
                        tokio::net::TcpListener::from_std(tcp).expect("dns server: tokio TCP");
                    tokio::select! {
                        _ = stop_rx => {}
                        _ = serve_udp(udp, thread_state.clone()) => {}
                        _ = serve_tcp(tcp, thread_state) => {}
                    }
                });
                // Dropping the runtime cancels delayed answers and open TCP connections.
            })
            .expect("dns server: spawn thread");
        Self {
            addr,
            state,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the behaviour for one exact name (case-insensitive, trailing dot optional).
    pub fn set(&self, name: &str, behaviour: Behaviour) {
        self.state().behaviours.insert(normalize(name), behaviour);
    }

    /// Sets the behaviour for every name without its own; `None` restores the default
    /// (NXDOMAIN under `cluster.local`, REFUSED elsewhere).
    pub fn set_fallback(&self, behaviour: Option<Behaviour>) {
        self.state().fallback = behaviour;
    }

    /// Queries received for `name` (any qtype) over `transport`.
    pub fn queries(&self, name: &str, transport: Transport) -> usize {
        let name = normalize(name);
        self.state()
            .received
            .iter()
            .filter(|r| r.name == name && r.transport == transport)
            .count()
    }

    /// Queries received for `name` over either transport.
    pub fn queries_for(&self, name: &str) -> usize {
        let name = normalize(name);
        self.state()
            .received
            .iter()
            .filter(|r| r.name == name)
            .count()
    }

    /// All queries received, over either transport.
    pub fn total_queries(&self) -> usize {
        self.state().received.len()
    }

    /// Every query received so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.state().received.clone()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Decides the reply to one raw query from `peer`: `None` means stay silent.
fn reply(
    state: &Mutex<State>,
    raw: &[u8],
    transport: Transport,
    peer: SocketAddr,
) -> Option<Outgoing> {
    let now = |bytes: Vec<u8>| Outgoing {
        delay: Duration::ZERO,
        bytes,
        sent_a_to: None,
    };
    let request = match Message::from_vec(raw) {
        Ok(m) if m.metadata.message_type == MessageType::Query => m,
        Ok(_) => return None,
        Err(_) if raw.len() >= 2 => {
            let id = u16::from_be_bytes([raw[0], raw[1]]);
            let msg = Message::error_msg(id, OpCode::Query, ResponseCode::FormErr);
            return Some(now(msg.to_vec().ok()?));
        }
        Err(_) => return None,
    };
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.queries = request.queries.clone();
    let Some(query) = request.queries.first() else {
        response.metadata.response_code = ResponseCode::FormErr;
        return Some(now(response.to_vec().ok()?));
    };
    let name = normalize(&query.name().to_ascii());
    let (behaviour, ordinal) = {
        let mut state = lock(state);
        state.received.push(Received {
            name: name.clone(),
            qtype: query.query_type(),
            transport,
        });
        let ordinal = state
            .received
            .iter()
            .filter(|r| r.name == name && r.qtype == query.query_type())
            .count();
        let behaviour = state
            .behaviours
            .get(&name)
            .or(state.fallback.as_ref())
            .cloned();
        (behaviour, ordinal)
    };
    let mut behaviour = behaviour.unwrap_or_else(|| {
        if name == "cluster.local" || name.ends_with(".cluster.local") {
            Behaviour::NxDomain
        } else {
            Behaviour::Refused
        }
    });
    let mut out = now(Vec::new());
    if let Behaviour::ConntrackRace(inner) = behaviour {
        behaviour = *inner;
        if transport == Transport::Udp && !race(state, query.query_type(), peer, &mut out) {
            return None;
        }
    }
    if let Behaviour::DropOdd(inner) = behaviour {
        if ordinal % 2 == 1 {
            return None;
        }
        behaviour = *inner;
    }
    while let Behaviour::Delay(d, inner) = behaviour {
        out.delay += d;
        behaviour = *inner;
    }
    response.metadata.authoritative = true;
    if !fill(state, &mut response, query, behaviour, transport) {
        return None;
    }
    out.bytes = response.to_vec().expect("dns server: encode response");
    Some(out)
}

/// The conntrack race for one UDP query: holds an A answer, and says whether to answer at all
/// (not an AAAA beside an A from the same socket that is still unanswered).
fn race(state: &Mutex<State>, qtype: RecordType, peer: SocketAddr, out: &mut Outgoing) -> bool {
    let mut state = lock(state);
    match qtype {
        RecordType::A => {
            state.unanswered_a.insert(peer);
            out.delay += RACE_HOLD;
            out.sent_a_to = Some(peer);
            true
        }
        RecordType::AAAA => !state.unanswered_a.contains(&peer),
        _ => true,
    }
}

/// Writes `behaviour`'s answer to `query` into `response`; `false` means stay silent.
fn fill(
    state: &Mutex<State>,
    response: &mut Message,
    query: &Query,
    behaviour: Behaviour,
    transport: Transport,
) -> bool {
    let (qname, qtype) = (query.name(), query.query_type());
    let record = |owner: &Name, data: RData| Record::from_rdata(owner.clone(), ANSWER_TTL, data);
    let a = |response: &mut Message, owner: &Name, ip: Ipv4Addr| {
        if qtype == RecordType::A {
            response.add_answer(record(owner, RData::A(A(ip))));
        }
    };
    match behaviour {
        Behaviour::Answer(ip) => a(response, qname, ip),
        Behaviour::DualStack(v4, v6) => {
            a(response, qname, v4);
            if qtype == RecordType::AAAA {
                response.add_answer(record(qname, RData::AAAA(AAAA(v6))));
            }
        }
        Behaviour::Truncate(ip) => match transport {
            Transport::Udp => response.metadata.truncation = true,
            Transport::Tcp => a(response, qname, ip),
        },
        Behaviour::NoData => {}
        Behaviour::NxDomain => response.metadata.response_code = ResponseCode::NXDomain,
        Behaviour::ServFail => response.metadata.response_code = ResponseCode::ServFail,
        Behaviour::Refused => {
            response.metadata.authoritative = false;
            response.metadata.response_code = ResponseCode::Refused;
        }
        Behaviour::Drop => return false,
        Behaviour::Txt => {
            let txt = TXT::new(vec!["not an address".into()]);
            response.add_answer(record(qname, RData::TXT(txt)));
        }
        Behaviour::AnswerFor(other, ip) => {
            let owner = Name::from_ascii(format!("{}.", normalize(&other)))
                .expect("dns server: AnswerFor takes a valid name");
            a(response, &owner, ip);
        }
        Behaviour::Cname(target) => chase(state, response, qname, qtype, &target),
        Behaviour::Delay(..) | Behaviour::DropOdd(..) | Behaviour::ConntrackRace(..) => {
            unreachable!("wrappers are unwrapped before their inner behaviour")
        }
    }
    true
}

/// The CNAME from `owner` to `target`, and the chain from there through the server's own data.
fn chase(
    state: &Mutex<State>,
    response: &mut Message,
    owner: &Name,
    qtype: RecordType,
    target: &str,
) {
    let mut owner = owner.clone();
    let mut target = normalize(target);
    for _ in 0..CHASE_LIMIT {
        let to =
            Name::from_ascii(format!("{target}.")).expect("dns server: Cname takes a valid name");
        response.add_answer(Record::from_rdata(
            owner,
            ANSWER_TTL,
            RData::CNAME(CNAME(to.clone())),
        ));
        let next = lock(state).behaviours.get(&target).cloned();
        match next {
            Some(Behaviour::Cname(next)) => (owner, target) = (to, normalize(&next)),
            Some(Behaviour::Answer(ip)) if qtype == RecordType::A => {
                response.add_answer(Record::from_rdata(to, ANSWER_TTL, RData::A(A(ip))));
                return;
            }
            // Dangling: the chain ends at a name with nothing of the type.
            _ => return,
        }
    }
}

async fn serve_udp(socket: Arc<tokio::net::UdpSocket>, state: Arc<Mutex<State>>) {
    let mut buf = vec![0u8; 65535];
    loop {
        let (len, peer) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            // ICMP errors from earlier replies surface here on Linux; they concern one peer only.
            Err(_) => continue,
        };
        let Some(out) = reply(&state, &buf[..len], Transport::Udp, peer) else {
            continue;
        };
        if out.delay.is_zero() {
            let _ = socket.send_to(&out.bytes, peer).await;
        } else {
            let (socket, state) = (socket.clone(), state.clone());
            tokio::spawn(async move {
                tokio::time::sleep(out.delay).await;
                let _ = socket.send_to(&out.bytes, peer).await;
                // Before this task yields, so no query from `peer` is read in between.
                if let Some(peer) = out.sent_a_to {
                    lock(&state).unanswered_a.remove(&peer);
                }
            });
        }
    }
}

async fn serve_tcp(listener: tokio::net::TcpListener, state: Arc<Mutex<State>>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let (mut read, write) = stream.into_split();
            let write = Arc::new(tokio::sync::Mutex::new(write));
            loop {
                let Ok(len) = read.read_u16().await else {
                    return;
                };
                let mut msg = vec![0u8; usize::from(len)];
                if read.read_exact(&mut msg).await.is_err() {
                    return;
                }
                let Some(out) = reply(&state, &msg, Transport::Tcp, peer) else {
                    continue;
                };
                let write = write.clone();
                // Answer each message on its own task so a delayed one does not hold up the next.
                tokio::spawn(async move {
                    if !out.delay.is_zero() {
                        tokio::time::sleep(out.delay).await;
                    }
                    let _ = send_framed(&write, &out.bytes).await;
                });
            }
        });
    }
}

async fn send_framed(write: &tokio::sync::Mutex<OwnedWriteHalf>, bytes: &[u8]) -> io::Result<()> {
    let len = u16::try_from(bytes.len()).map_err(io::Error::other)?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(bytes);
    write.lock().await.write_all(&framed).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpStream, UdpSocket};
    use std::process::Command;
    use std::time::Instant;

    fn query_bytes(id: u16, name: &str, qtype: RecordType) -> Vec<u8> {
        let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
        msg.metadata.recursion_desired = true;
        msg.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        msg.to_vec().unwrap()
    }

    /// One query over UDP; `None` when nothing arrives within `wait`.
    fn udp_query(
        addr: SocketAddr,
        name: &str,
        qtype: RecordType,
        wait: Duration,
    ) -> Option<Message> {
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        sock.set_read_timeout(Some(wait)).unwrap();
        sock.send_to(&query_bytes(4242, name, qtype), addr).unwrap();
        let mut buf = [0u8; 4096];
        match sock.recv_from(&mut buf) {
            Ok((len, _)) => {
                let msg = Message::from_vec(&buf[..len]).unwrap();
                assert_eq!(msg.metadata.id, 4242);
                Some(msg)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("udp query {name}: {e}"),
        }
    }

    /// One query over TCP; `None` when nothing arrives within `wait`.
    fn tcp_query(
        addr: SocketAddr,
        name: &str,
        qtype: RecordType,
        wait: Duration,
    ) -> Option<Message> {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(wait)).unwrap();
        let q = query_bytes(4343, name, qtype);
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        stream.write_all(&framed).unwrap();
        let mut len = [0u8; 2];
        match stream.read_exact(&mut len) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return None;
            }
            Err(e) => panic!("tcp query {name}: {e}"),
        }
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut msg).unwrap();
        let msg = Message::from_vec(&msg).unwrap();
        assert_eq!(msg.metadata.id, 4343);
        Some(msg)
    }

    const WAIT: Duration = Duration::from_secs(5);
    const IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);

    fn a_records(msg: &Message) -> Vec<Ipv4Addr> {
        msg.answers
            .iter()
            .filter_map(|r| match r.data {
                RData::A(A(ip)) => Some(ip),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn behaviours_over_udp_and_tcp() {
        let server = DnsServer::start();
        server.set("ok.cluster.local", Behaviour::Answer(IP));
        server.set("nodata.cluster.local.", Behaviour::NoData);
        server.set("NX.cluster.local", Behaviour::NxDomain);
        server.set("servfail.cluster.local", Behaviour::ServFail);
        server.set("refused.cluster.local", Behaviour::Refused);
        server.set("tc.cluster.local", Behaviour::Truncate(IP));
        let cases: &[(&str, ResponseCode, usize)] = &[
            ("ok.cluster.local", ResponseCode::NoError, 1),
            ("OK.Cluster.Local.", ResponseCode::NoError, 1),
            ("nodata.cluster.local", ResponseCode::NoError, 0),
            ("nx.cluster.local", ResponseCode::NXDomain, 0),
            ("servfail.cluster.local", ResponseCode::ServFail, 0),
            ("refused.cluster.local", ResponseCode::Refused, 0),
            ("unset.cluster.local", ResponseCode::NXDomain, 0),
            ("example.org", ResponseCode::Refused, 0),
        ];
        for &(name, rcode, answers) in cases {
            for (transport, msg) in [
                (
                    Transport::Udp,
                    udp_query(server.addr(), name, RecordType::A, WAIT),
                ),
                (
                    Transport::Tcp,
                    tcp_query(server.addr(), name, RecordType::A, WAIT),
                ),
            ] {
                let msg = msg.unwrap_or_else(|| panic!("{name} over {transport:?}: no answer"));
                assert_eq!(
                    msg.metadata.response_code, rcode,
                    "{name} over {transport:?}"
                );
                assert_eq!(msg.answers.len(), answers, "{name} over {transport:?}");
                assert!(!msg.metadata.truncation, "{name} over {transport:?}");
                assert_eq!(msg.queries.len(), 1);
            }
        }
        let ok = udp_query(server.addr(), "ok.cluster.local", RecordType::A, WAIT).unwrap();
        assert_eq!(a_records(&ok), [IP]);
        assert_eq!(ok.answers[0].ttl, ANSWER_TTL);
        let aaaa = udp_query(server.addr(), "ok.cluster.local", RecordType::AAAA, WAIT).unwrap();
        assert_eq!(aaaa.metadata.response_code, ResponseCode::NoError);
        assert!(aaaa.answers.is_empty());

        let tc = udp_query(server.addr(), "tc.cluster.local", RecordType::A, WAIT).unwrap();
        assert!(tc.metadata.truncation);
        assert!(tc.answers.is_empty());
        assert_eq!(tc.metadata.response_code, ResponseCode::NoError);
        let full = tcp_query(server.addr(), "tc.cluster.local", RecordType::A, WAIT).unwrap();
        assert!(!full.metadata.truncation);
        assert_eq!(a_records(&full), [IP]);

        // ok: 2 (loop, both spellings) + 1 + 1 AAAA over UDP, 2 over TCP.
        assert_eq!(server.queries("ok.cluster.local", Transport::Udp), 4);
        assert_eq!(server.queries("OK.cluster.local.", Transport::Tcp), 2);
        assert_eq!(server.queries("tc.cluster.local", Transport::Udp), 1);
        assert_eq!(server.queries("tc.cluster.local", Transport::Tcp), 1);
        assert_eq!(server.queries_for("nx.cluster.local"), 2);
        assert_eq!(server.total_queries(), 2 * cases.len() + 4);
        let first = &server.received()[0];
        assert_eq!(
            (first.name.as_str(), first.qtype, first.transport),
            ("ok.cluster.local", RecordType::A, Transport::Udp)
        );
    }

    #[test]
    fn drop_never_answers_and_delay_does_not_block_others() {
        let server = DnsServer::start();
        server.set("drop.cluster.local", Behaviour::Drop);
        server.set("ok.cluster.local", Behaviour::Answer(IP));
        let delay = Duration::from_millis(400);
        server.set("slow.cluster.local", Behaviour::Answer(IP).delayed(delay));

        // A bounded look for silence: nothing may arrive within the window.
        let quiet = Duration::from_millis(300);
        assert!(udp_query(server.addr(), "drop.cluster.local", RecordType::A, quiet).is_none());
        assert!(tcp_query(server.addr(), "drop.cluster.local", RecordType::A, quiet).is_none());
        assert_eq!(server.queries("drop.cluster.local", Transport::Udp), 1);
        assert_eq!(server.queries("drop.cluster.local", Transport::Tcp), 1);

        for transport in [Transport::Udp, Transport::Tcp] {
            let addr = server.addr();
            let started = Instant::now();
            let slow = std::thread::spawn(move || {
                let msg = match transport {
                    Transport::Udp => udp_query(addr, "slow.cluster.local", RecordType::A, WAIT),
                    Transport::Tcp => tcp_query(addr, "slow.cluster.local", RecordType::A, WAIT),
                };
                (msg, started.elapsed())
            });
            // Wait (bounded) until the slow query is in, then prove a fast one is not held up.
            let deadline = Instant::now() + WAIT;
            while server.queries("slow.cluster.local", transport) == 0 {
                assert!(Instant::now() < deadline, "slow query never arrived");
                std::thread::sleep(Duration::from_millis(5));
            }
            let fast_started = Instant::now();
            let fast = match transport {
                Transport::Udp => udp_query(addr, "ok.cluster.local", RecordType::A, WAIT),
                Transport::Tcp => tcp_query(addr, "ok.cluster.local", RecordType::A, WAIT),
            };
            assert!(fast.is_some());
            assert!(
                fast_started.elapsed() < delay,
                "a fast query over {transport:?} waited behind a delayed one: {:?}",
                fast_started.elapsed()
            );
            let (msg, took) = slow.join().unwrap();
            assert_eq!(a_records(&msg.expect("delayed answer")), [IP]);
            assert!(
                took >= delay,
                "delayed answer came after {took:?}, want >= {delay:?}"
            );
        }
    }

    /// (type, owner, data) of every answer record, for comparing whole answer sections.
    fn records(msg: &Message) -> Vec<(RecordType, String, String)> {
        msg.answers
            .iter()
            .map(|r| (r.record_type(), r.name.to_ascii(), r.data.to_string()))
            .collect()
    }

    fn rr(qtype: RecordType, owner: &str, data: &str) -> (RecordType, String, String) {
        (qtype, owner.to_owned(), data.to_owned())
    }

    #[test]
    fn answers_an_application_cannot_use() {
        let server = DnsServer::start();
        server.set("txt.cluster.local", Behaviour::Txt);
        server.set(
            "other.cluster.local",
            Behaviour::AnswerFor("elsewhere.cluster.local".into(), IP),
        );
        server.set(
            "dangling.cluster.local",
            Behaviour::Cname("gone.cluster.local".into()),
        );
        server.set(
            "chain.cluster.local",
            Behaviour::Cname("middle.cluster.local".into()),
        );
        server.set(
            "middle.cluster.local",
            Behaviour::Cname("end.cluster.local".into()),
        );
        server.set("end.cluster.local", Behaviour::Answer(IP));
        server.set(
            "loop-a.cluster.local",
            Behaviour::Cname("loop-b.cluster.local".into()),
        );
        server.set(
            "loop-b.cluster.local",
            Behaviour::Cname("loop-a.cluster.local".into()),
        );
        let ask = |name: &str, qtype| {
            let msg = udp_query(server.addr(), name, qtype, WAIT).expect(name);
            assert_eq!(msg.metadata.response_code, ResponseCode::NoError, "{name}");
            records(&msg)
        };
        use RecordType::{A as TA, AAAA as TAAAA, CNAME as TC, TXT as TT};
        assert_eq!(
            ask("txt.cluster.local", TA),
            [rr(TT, "txt.cluster.local.", "not an address")]
        );
        assert_eq!(
            ask("other.cluster.local", TA),
            [rr(TA, "elsewhere.cluster.local.", "10.96.0.1")]
        );
        assert_eq!(ask("other.cluster.local", TAAAA), []);
        assert_eq!(
            ask("dangling.cluster.local", TA),
            [rr(TC, "dangling.cluster.local.", "gone.cluster.local.")]
        );
        let chain = ask("chain.cluster.local", TA);
        assert_eq!(
            chain,
            [
                rr(TC, "chain.cluster.local.", "middle.cluster.local."),
                rr(TC, "middle.cluster.local.", "end.cluster.local."),
                rr(TA, "end.cluster.local.", "10.96.0.1"),
            ]
        );
        // For AAAA the chain ends without a record: NODATA at its end.
        assert_eq!(ask("chain.cluster.local", TAAAA), chain[..2]);
        // A loop in the server's own data stops after CHASE_LIMIT links.
        assert_eq!(ask("loop-a.cluster.local", TA).len(), CHASE_LIMIT);
    }

    /// Sends an A and an AAAA query for `name` from `sock` back to back, as glibc's sendmmsg
    /// does, and returns the answers that arrive within `wait`, by type.
    fn send_pair(
        sock: &UdpSocket,
        addr: SocketAddr,
        name: &str,
        wait: Duration,
    ) -> Vec<RecordType> {
        sock.send_to(&query_bytes(1, name, RecordType::A), addr)
            .unwrap();
        sock.send_to(&query_bytes(2, name, RecordType::AAAA), addr)
            .unwrap();
        receive(sock, wait)
    }

    /// The types of the answers `sock` receives until `wait` passes without one.
    fn receive(sock: &UdpSocket, wait: Duration) -> Vec<RecordType> {
        sock.set_read_timeout(Some(wait)).unwrap();
        let mut buf = [0u8; 4096];
        let mut types = Vec::new();
        while let Ok(len) = sock.recv(&mut buf) {
            let msg = Message::from_vec(&buf[..len]).unwrap();
            types.push(msg.queries[0].query_type());
        }
        types
    }

    #[test]
    fn the_conntrack_race_loses_the_aaaa_sent_beside_an_unanswered_a() {
        let server = DnsServer::start();
        let name = "race.cluster.local";
        server.set(
            name,
            Behaviour::ConntrackRace(Box::new(Behaviour::Answer(IP))),
        );
        // Bounded looks for silence: the A answer comes after RACE_HOLD, the AAAA never.
        let quiet = RACE_HOLD + Duration::from_millis(400);
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        sock.connect(server.addr()).unwrap();
        assert_eq!(
            send_pair(&sock, server.addr(), name, quiet),
            [RecordType::A]
        );
        // The AAAA again on the same socket, the A answered by now: answered.
        sock.send(&query_bytes(3, name, RecordType::AAAA)).unwrap();
        assert_eq!(receive(&sock, quiet), [RecordType::AAAA]);
        // The AAAA from another socket while the A is held: answered.
        let other = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        sock.send(&query_bytes(4, name, RecordType::A)).unwrap();
        other
            .send_to(&query_bytes(5, name, RecordType::AAAA), server.addr())
            .unwrap();
        assert_eq!(receive(&other, quiet), [RecordType::AAAA]);
        assert_eq!(receive(&sock, quiet), [RecordType::A]);
        // Over TCP there is no race.
        let msg = tcp_query(server.addr(), name, RecordType::AAAA, WAIT);
        assert!(msg.is_some());
    }

    #[test]
    fn fallback_applies_to_every_unset_name() {
        let server = DnsServer::start();
        server.set("ok.cluster.local", Behaviour::Answer(IP));
        server.set_fallback(Some(Behaviour::ServFail));
        let msg = udp_query(server.addr(), "whatever.example", RecordType::A, WAIT).unwrap();
        assert_eq!(msg.metadata.response_code, ResponseCode::ServFail);
        let msg = udp_query(server.addr(), "ok.cluster.local", RecordType::A, WAIT).unwrap();
        assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
        server.set_fallback(None);
        let msg = udp_query(server.addr(), "whatever.example", RecordType::A, WAIT).unwrap();
        assert_eq!(msg.metadata.response_code, ResponseCode::Refused);
    }

    #[test]
    fn drop_releases_the_port() {
        let server = DnsServer::start();
        let addr = server.addr();
        drop(server);
        UdpSocket::bind(addr).expect("UDP port still bound after drop");
        std::net::TcpListener::bind(addr).expect("TCP port still bound after drop");
    }

    fn dig(server: &DnsServer, name: &str, extra: &[&str]) -> String {
        let dig = "/usr/bin/dig";
        assert!(
            std::path::Path::new(dig).exists(),
            "{dig} is missing: install Debian's bind9-dnsutils (CI installs it)"
        );
        let out = Command::new(dig)
            .arg(format!("@{}", server.addr().ip()))
            .args(["-p", &server.addr().port().to_string(), name, "A"])
            .args(["+tries=1", "+time=2"])
            .args(extra)
            .output()
            .expect("run dig");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// dig is an independent client: if it agrees with the hand-built queries, the wire format
    /// is right.
    #[test]
    fn dig_agrees() {
        let server = DnsServer::start();
        server.set("ok.cluster.local", Behaviour::Answer(IP));
        server.set("tc.cluster.local", Behaviour::Truncate(IP));

        let out = dig(&server, "ok.cluster.local", &[]);
        assert!(out.contains("status: NOERROR"), "{out}");
        assert!(
            out.contains("ok.cluster.local.\t30\tIN\tA\t10.96.0.1"),
            "{out}"
        );
        let out = dig(&server, "ok.cluster.local", &["+tcp"]);
        assert!(
            out.contains("status: NOERROR") && out.contains("10.96.0.1"),
            "{out}"
        );
        assert_eq!(server.queries("ok.cluster.local", Transport::Tcp), 1);

        let out = dig(&server, "missing.cluster.local", &[]);
        assert!(out.contains("status: NXDOMAIN"), "{out}");

        // dig retries a truncated UDP answer over TCP by itself, like a resolver should.
        let out = dig(&server, "tc.cluster.local", &[]);
        assert!(
            out.contains("status: NOERROR") && out.contains("10.96.0.1"),
            "{out}"
        );
        assert_eq!(server.queries("tc.cluster.local", Transport::Udp), 1);
        assert_eq!(server.queries("tc.cluster.local", Transport::Tcp), 1);
        let out = dig(&server, "tc.cluster.local", &["+ignore"]);
        assert!(out.contains(" tc"), "flags should include tc: {out}");
        assert!(out.contains("ANSWER: 0"), "{out}");
    }
}
