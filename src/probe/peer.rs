//! The peer prober: how this node reaches the kube-netprobe pod on another node.
//!
//! Four ways, each its own target so one hanging never delays another: `http` (`GET /ping` on a
//! fresh connection, phases connect / first_byte / total), `tcp` (a connect), `bulk`
//! (`GET /ping?bytes=N`, which needs full-size packets: it stalls where an overlay's MTU
//! black-holes them while `http` passes) and `icmp` (echo through an unprivileged datagram
//! socket, when `net.ipv4.ping_group_range` allows it).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::config::PeerProtocol;
use crate::metrics::{
    IpFamily, NetFailure, PeerKey, PeerMetrics, PeerProtocolLabel, PeerResult, Phase,
};
use crate::probe::http_client::{self, io_result};
use crate::probe::{Health, Transition};
use crate::scheduler::{RunFuture, Target};

/// Every `phase` a peer probe records.
pub const PHASES: &[Phase] = &[Phase::connect, Phase::first_byte, Phase::total];

/// What one probe saw: a result, and phase timings (seconds from the start) when it succeeded.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerObservation {
    pub result: PeerResult,
    pub phases: Vec<(Phase, f64)>,
    /// What went wrong, for the log.
    pub detail: Option<String>,
}

impl PeerObservation {
    fn failed(result: impl Into<PeerResult>, detail: impl ToString) -> Self {
        Self {
            result: result.into(),
            phases: Vec::new(),
            detail: Some(detail.to_string()),
        }
    }

    fn timeout() -> Self {
        Self::failed(NetFailure::timeout, "no answer before the deadline")
    }
}

/// The `protocol` label of a way of probing.
pub fn protocol_label(protocol: PeerProtocol) -> PeerProtocolLabel {
    match protocol {
        PeerProtocol::Http => PeerProtocolLabel::http,
        PeerProtocol::Tcp => PeerProtocolLabel::tcp,
        PeerProtocol::Bulk => PeerProtocolLabel::bulk,
        PeerProtocol::Icmp => PeerProtocolLabel::icmp,
    }
}

async fn connect(
    addr: SocketAddr,
    deadline: Instant,
) -> Result<(TcpStream, Instant), PeerObservation> {
    match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
        Err(_) => Err(PeerObservation::timeout()),
        Ok(Err(e)) => Err(PeerObservation::failed(io_result(&e), e)),
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok((stream, Instant::now()))
        }
    }
}

/// A TCP connect.
pub async fn probe_tcp(addr: SocketAddr, deadline: Instant) -> PeerObservation {
    let start = Instant::now();
    match connect(addr, deadline).await {
        Ok((_stream, connected)) => PeerObservation {
            result: PeerResult::success,
            phases: vec![(Phase::connect, (connected - start).as_secs_f64())],
            detail: None,
        },
        Err(failed) => failed,
    }
}

/// `GET path` on a fresh connection; with `expect_bytes`, the body must be that long.
pub async fn probe_http(
    addr: SocketAddr,
    path: &str,
    expect_bytes: Option<u64>,
    deadline: Instant,
) -> PeerObservation {
    let start = Instant::now();
    let (stream, connected) = match connect(addr, deadline).await {
        Ok(ok) => ok,
        Err(failed) => return failed,
    };
    let host = addr.to_string();
    let response = match tokio::time::timeout_at(
        deadline,
        http_client::get(stream, &host, path, None),
    )
    .await
    {
        Err(_) => return PeerObservation::timeout(),
        Ok(Err(failure)) => return PeerObservation::failed(failure.result(), failure),
        Ok(Ok(response)) => response,
    };
    if response.status != hyper::StatusCode::OK {
        return PeerObservation::failed(
            PeerResult::http_error,
            format!("HTTP {}", response.status),
        );
    }
    if let Some(expected) = expect_bytes
        && response.body_len != expected
    {
        return PeerObservation::failed(
            PeerResult::short_body,
            format!("{} of {expected} bytes", response.body_len),
        );
    }
    PeerObservation {
        result: PeerResult::success,
        phases: vec![
            (Phase::connect, (connected - start).as_secs_f64()),
            (
                Phase::first_byte,
                (response.first_byte - start).as_secs_f64(),
            ),
            (Phase::total, (response.done - start).as_secs_f64()),
        ],
        detail: None,
    }
}

fn icmp_socket(ip: IpAddr) -> io::Result<tokio::net::UdpSocket> {
    let (domain, protocol) = match ip {
        IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4),
        IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6),
    };
    // An ICMP datagram ("ping") socket: no privilege needed where ping_group_range allows.
    let socket = Socket::new(domain, Type::DGRAM, Some(protocol))?;
    socket.set_nonblocking(true)?;
    // tokio's UdpSocket is a thin wrapper over any datagram socket's send/recv.
    tokio::net::UdpSocket::from_std(socket.into())
}

/// Whether unprivileged ICMP echo sockets work here.
pub fn icmp_available() -> Result<(), io::Error> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::ICMPV4))?;
    drop(socket);
    Ok(())
}

/// One ICMP echo, timed with our own clock (the kernel fills in the identifier and checksum).
pub async fn probe_icmp(ip: IpAddr, sequence: u16, deadline: Instant) -> PeerObservation {
    let start = Instant::now();
    let socket = match icmp_socket(ip) {
        Ok(socket) => socket,
        Err(e) => return PeerObservation::failed(io_result(&e), e),
    };
    if let Err(e) = socket.connect(SocketAddr::new(ip, 0)).await {
        return PeerObservation::failed(io_result(&e), e);
    }
    let (request_type, reply_type) = match ip {
        IpAddr::V4(_) => (8u8, 0u8),
        IpAddr::V6(_) => (128u8, 129u8),
    };
    let payload = *b"kube-netprobe-echo";
    let mut packet = vec![request_type, 0, 0, 0, 0, 0];
    packet.extend_from_slice(&sequence.to_be_bytes());
    packet.extend_from_slice(&payload);
    let exchange = async {
        socket.send(&packet).await?;
        let mut buf = [0u8; 512];
        loop {
            let len = socket.recv(&mut buf).await?;
            let reply = &buf[..len];
            if len >= 8
                && reply[0] == reply_type
                && reply[6..8] == sequence.to_be_bytes()
                && reply[8..] == payload
            {
                return Ok::<Instant, io::Error>(Instant::now());
            }
        }
    };
    match tokio::time::timeout_at(deadline, exchange).await {
        Err(_) => PeerObservation::timeout(),
        Ok(Err(e)) => PeerObservation::failed(io_result(&e), e),
        Ok(Ok(answered)) => PeerObservation {
            result: PeerResult::success,
            phases: vec![(Phase::total, (answered - start).as_secs_f64())],
            detail: None,
        },
    }
}

/// One (peer node, protocol, IP family): probes it and records what it saw.
#[derive(Debug)]
pub struct PeerTarget {
    key: PeerKey,
    protocol: PeerProtocol,
    addr: SocketAddr,
    interval: Duration,
    timeout: Duration,
    bulk_bytes: u64,
    metrics: PeerMetrics,
    health: Health,
    sequence: AtomicU16,
    /// Set when the peer leaves; a run that finishes afterwards records nothing, so its series
    /// cannot reappear after they were removed.
    retired: Mutex<bool>,
}

/// How a node's targets are probed; the same for every peer.
#[derive(Debug, Clone)]
pub struct PeerSettings {
    pub interval: Duration,
    pub timeout: Duration,
    pub bulk_bytes: u64,
}

impl PeerTarget {
    pub fn new(
        node: &str,
        protocol: PeerProtocol,
        addr: SocketAddr,
        settings: &PeerSettings,
        metrics: PeerMetrics,
    ) -> Self {
        let key = PeerKey {
            target_node: node.to_owned(),
            protocol: protocol_label(protocol),
            family: IpFamily::of(addr.ip()),
        };
        metrics.add_target(&key);
        Self {
            key,
            protocol,
            addr,
            interval: settings.interval,
            timeout: settings.timeout,
            bulk_bytes: settings.bulk_bytes,
            metrics,
            health: Health::default(),
            sequence: AtomicU16::new(rand::random()),
            retired: Mutex::new(false),
        }
    }

    pub fn key(&self) -> &PeerKey {
        &self.key
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Probes once, by `deadline`.
    pub async fn observe(&self, deadline: Instant) -> PeerObservation {
        match self.protocol {
            PeerProtocol::Http => probe_http(self.addr, "/ping", None, deadline).await,
            PeerProtocol::Bulk => {
                let path = format!("/ping?bytes={}", self.bulk_bytes);
                probe_http(self.addr, &path, Some(self.bulk_bytes), deadline).await
            }
            PeerProtocol::Tcp => probe_tcp(self.addr, deadline).await,
            PeerProtocol::Icmp => {
                let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
                probe_icmp(self.addr.ip(), sequence, deadline).await
            }
        }
    }

    fn record(&self, observation: &PeerObservation) {
        let retired = self.retired.lock().expect("peer target lock");
        if *retired {
            return;
        }
        self.metrics
            .record(&self.key, observation.result, &observation.phases);
        let k = &self.key;
        let (protocol, family) = (k.protocol.as_str(), k.family.as_str());
        match self
            .health
            .update(observation.result == PeerResult::success)
        {
            Transition::StartedFailing { suppressed } => tracing::warn!(
                target_node = %k.target_node, protocol, family,
                addr = %self.addr, result = observation.result.as_str(),
                detail = observation.detail.as_deref().unwrap_or(""), suppressed,
                "peer probe failing"
            ),
            Transition::Recovered { suppressed } => tracing::info!(
                target_node = %k.target_node, protocol, family,
                suppressed, "peer probe recovered"
            ),
            Transition::Unchanged => {}
        }
    }

    /// Its (protocol, family) labels.
    pub fn series(&self) -> (PeerProtocolLabel, IpFamily) {
        (self.key.protocol, self.key.family)
    }

    /// Stops recording and removes this target's series.
    pub fn retire(&self) {
        let mut retired = self.retired.lock().expect("peer target lock");
        *retired = true;
        self.metrics.remove_target(&self.key, PHASES);
    }
}

impl Target for PeerTarget {
    fn probe(&self) -> &'static str {
        "peer"
    }

    fn describe(&self) -> String {
        format!(
            "peer {} {} {} ({})",
            self.key.target_node,
            self.key.protocol.as_str(),
            self.key.family,
            self.addr
        )
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    fn deadline(&self) -> Duration {
        self.timeout
    }

    fn run(self: Arc<Self>, deadline: Instant) -> RunFuture {
        Box::pin(async move {
            let observation = self.observe(deadline).await;
            self.record(&observation);
        })
    }

    fn cut_off(&self) {
        self.record(&PeerObservation::timeout());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_errors_map_to_the_closed_set() {
        use io::ErrorKind as K;
        for (kind, result) in [
            (K::ConnectionRefused, "refused"),
            (K::ConnectionReset, "reset"),
            (K::HostUnreachable, "unreachable"),
            (K::NetworkUnreachable, "unreachable"),
            (K::TimedOut, "timeout"),
            (K::PermissionDenied, "permission_denied"),
            (K::Other, "error"),
        ] {
            let label = PeerResult::from(io_result(&io::Error::from(kind)));
            assert_eq!(label.as_str(), result, "{kind:?}");
        }
    }

    #[tokio::test]
    async fn tcp_and_http_against_a_local_listener() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = [0u8; 1024];
                    let _ = stream.read(&mut buf).await;
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
                        .await;
                });
            }
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        let tcp = probe_tcp(addr, deadline).await;
        assert_eq!(tcp.result, PeerResult::success);
        let http = probe_http(addr, "/ping", None, deadline).await;
        assert_eq!(http.result, PeerResult::success, "{:?}", http.detail);
        assert_eq!(
            http.phases.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
            PHASES
        );
        let short = probe_http(addr, "/ping?bytes=10", Some(10), deadline).await;
        assert_eq!(short.result, PeerResult::short_body);
    }

    #[tokio::test]
    async fn a_closed_port_is_refused() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        assert_eq!(probe_tcp(port, deadline).await.result, PeerResult::refused);
        assert_eq!(
            probe_http(port, "/ping", None, deadline).await.result,
            PeerResult::refused
        );
    }
}
