//! A real DNS server embedded in the tests: UDP and TCP on one loopback port, with answers
//! programmed per name and the faults a probe must tell apart (rcodes, dropped and delayed
//! answers, truncation that forces TCP). It counts what it receives, so a test can prove how many
//! messages a lookup sent and over which transport.
//!
//! It runs on its own thread with its own single-threaded tokio runtime, because the tests that
//! use it are plain `#[test]` functions driving a child process.

// Shared by every suite; not every suite uses every helper.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener, UdpSocket as StdUdpSocket};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::oneshot;

/// TTL of every answer record.
pub const ANSWER_TTL: u32 = 30;

/// How the server treats queries for one name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// NOERROR with one A record (for qtype A; other qtypes get NOERROR without data).
    Answer(Ipv4Addr),
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
    /// Drops the 1st, 3rd, 5th, ... query for the name and answers the others as the inner
    /// behaviour: a lossy path on which every lookup needs the resolver's retry (the
    /// conntrack-race pattern, where the first packet of each exchange is lost).
    DropOdd(Box<Behaviour>),
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

/// Decides the reply to one raw query: `None` means stay silent, otherwise the delay and bytes.
fn reply(state: &Mutex<State>, raw: &[u8], transport: Transport) -> Option<(Duration, Vec<u8>)> {
    let request = match Message::from_vec(raw) {
        Ok(m) if m.metadata.message_type == MessageType::Query => m,
        Ok(_) => return None,
        Err(_) if raw.len() >= 2 => {
            let id = u16::from_be_bytes([raw[0], raw[1]]);
            let msg = Message::error_msg(id, OpCode::Query, ResponseCode::FormErr);
            return Some((Duration::ZERO, msg.to_vec().ok()?));
        }
        Err(_) => return None,
    };
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.queries = request.queries.clone();
    let Some(query) = request.queries.first() else {
        response.metadata.response_code = ResponseCode::FormErr;
        return Some((Duration::ZERO, response.to_vec().ok()?));
    };
    let name = normalize(&query.name().to_ascii());
    let (behaviour, ordinal) = {
        let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
        state.received.push(Received {
            name: name.clone(),
            qtype: query.query_type(),
            transport,
        });
        let ordinal = state.received.iter().filter(|r| r.name == name).count();
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
    if let Behaviour::DropOdd(inner) = behaviour {
        if ordinal % 2 == 1 {
            return None;
        }
        behaviour = *inner;
    }
    let mut delay = Duration::ZERO;
    while let Behaviour::Delay(d, inner) = behaviour {
        delay += d;
        behaviour = *inner;
    }
    let answer = |response: &mut Message, ip: Ipv4Addr| {
        if query.query_type() == RecordType::A {
            response.add_answer(Record::from_rdata(
                query.name().clone(),
                ANSWER_TTL,
                RData::A(A(ip)),
            ));
        }
    };
    response.metadata.authoritative = true;
    match behaviour {
        Behaviour::Answer(ip) => answer(&mut response, ip),
        Behaviour::Truncate(ip) => match transport {
            Transport::Udp => response.metadata.truncation = true,
            Transport::Tcp => answer(&mut response, ip),
        },
        Behaviour::NoData => {}
        Behaviour::NxDomain => response.metadata.response_code = ResponseCode::NXDomain,
        Behaviour::ServFail => response.metadata.response_code = ResponseCode::ServFail,
        Behaviour::Refused => {
            response.metadata.authoritative = false;
            response.metadata.response_code = ResponseCode::Refused;
        }
        Behaviour::Drop => return None,
        Behaviour::Delay(..) | Behaviour::DropOdd(..) => {
            unreachable!("wrappers were unwrapped above")
        }
    }
    Some((
        delay,
        response.to_vec().expect("dns server: encode response"),
    ))
}

async fn serve_udp(socket: Arc<tokio::net::UdpSocket>, state: Arc<Mutex<State>>) {
    let mut buf = vec![0u8; 65535];
    loop {
        let (len, peer) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            // ICMP errors from earlier replies surface here on Linux; they concern one peer only.
            Err(_) => continue,
        };
        let Some((delay, bytes)) = reply(&state, &buf[..len], Transport::Udp) else {
            continue;
        };
        if delay.is_zero() {
            let _ = socket.send_to(&bytes, peer).await;
        } else {
            let socket = socket.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = socket.send_to(&bytes, peer).await;
            });
        }
    }
}

async fn serve_tcp(listener: tokio::net::TcpListener, state: Arc<Mutex<State>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
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
                let Some((delay, bytes)) = reply(&state, &msg, Transport::Tcp) else {
                    continue;
                };
                let write = write.clone();
                // Answer each message on its own task so a delayed one does not hold up the next.
                tokio::spawn(async move {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    let _ = send_framed(&write, &bytes).await;
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
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;
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
