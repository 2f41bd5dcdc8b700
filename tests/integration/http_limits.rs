//! The HTTP server's limits against hostile clients of the test's own on loopback: slowloris,
//! oversized heads and bodies (chunked too), clients that ask for bulk bodies and never read,
//! and a flood of all of them at once, during which the daemon must stay small, keep probing
//! and keep answering `/metrics`.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::dns_server::{Behaviour, DnsServer};
use crate::util::{Daemon, Metrics, poll};

/// The daemon's documented limits (README, "HTTP server limits").
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
const SEND_DEADLINE: Duration = Duration::from_secs(10);
const MAX_CONNECTIONS: f64 = 256.0;
/// How long after its limit a closed connection may take to be seen closed here.
const SLACK: Duration = Duration::from_secs(5);

fn config(dns: SocketAddr) -> String {
    format!(
        "listen: 127.0.0.1:0\nnode_name: http-node\ndns:\n  interval: 300ms\n  timeout: 200ms\n  \
         servers: [\"{dns}\"]\n  queries:\n    - {{ name: ok.cluster.local }}\n"
    )
}

fn start() -> (DnsServer, Daemon) {
    let dns = DnsServer::start();
    dns.set(
        "ok.cluster.local",
        Behaviour::Answer(Ipv4Addr::new(10, 96, 0, 1)),
    );
    let daemon = Daemon::start(&config(dns.addr()));
    (dns, daemon)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    stream
}

/// Everything the server sends until it closes; `Err` if it resets the connection.
fn read_until_closed(stream: &mut TcpStream) -> Result<Vec<u8>, std::io::Error> {
    let mut out = Vec::new();
    stream.read_to_end(&mut out).map(|_| out)
}

fn status_line(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn closed(metrics: &Metrics, reason: &str) -> f64 {
    metrics
        .get(
            "netprobe_http_connections_closed_total",
            &[("reason", reason)],
        )
        .unwrap_or(0.0)
}

#[test]
fn oversized_heads_get_431_and_chunked_bodies_413() {
    let (_dns, mut daemon) = start();

    let mut big_head = connect(daemon.addr());
    let padding = "x".repeat(100_000);
    // The server answers before taking all of it; a write error after that is expected.
    let _ = write!(
        big_head,
        "GET /ping HTTP/1.1\r\nHost: t\r\nX-Padding: {padding}\r\n\r\n"
    );
    let answer = read_until_closed(&mut big_head).unwrap_or_default();
    assert!(
        status_line(&answer).starts_with("HTTP/1.1 431"),
        "a 100 KB request head: {:?}",
        status_line(&answer)
    );

    let mut chunked = connect(daemon.addr());
    let chunk = "y".repeat(1024);
    let mut request =
        String::from("GET /ping HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    for _ in 0..10 {
        request.push_str(&format!("400\r\n{chunk}\r\n"));
    }
    request.push_str("0\r\n\r\n");
    let _ = chunked.write_all(request.as_bytes());
    let answer = read_until_closed(&mut chunked).unwrap_or_default();
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("HTTP/1.1 413"),
        "a 10 KiB chunked body: {text}"
    );
    assert!(
        text.contains("request body larger than 4096 bytes"),
        "{text}"
    );

    // A small chunked body is fine.
    let mut small = connect(daemon.addr());
    let _ = small.write_all(
        b"GET /ping HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          5\r\nhello\r\n0\r\n\r\n",
    );
    let answer = read_until_closed(&mut small).unwrap_or_default();
    assert!(
        status_line(&answer).starts_with("HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );

    daemon.wait_for(
        "netprobe_http_connections_closed_total",
        &[("reason", "head_too_large")],
        "1",
        Duration::from_secs(5),
        |v| v == 1.0,
    );
}

#[test]
fn slow_heads_idle_and_kept_alive_clients_are_closed_and_slow_bodies_get_408() {
    let (_dns, daemon) = start();
    let mut idle = connect(daemon.addr());
    // A keep-alive client that made one request and then went quiet.
    let mut kept = connect(daemon.addr());
    write!(kept, "GET /ping HTTP/1.1\r\nHost: t\r\n\r\n").expect("send request");
    // A client whose head is complete but whose body stops after its first chunk.
    let mut slow_body = connect(daemon.addr());
    write!(
        slow_body,
        "GET /ping HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
    )
    .expect("send request");
    let mut slow = connect(daemon.addr());
    slow.set_nonblocking(true).expect("nonblocking");
    let head = b"GET /ping HTTP/1.1\r\nHost: t\r\nX-Slow: ";
    let mut sent = 0;
    // One byte of an endless header every 200 ms, until the server closes the connection.
    let outcome = poll(
        "the server to close a slowloris connection",
        HEADER_READ_TIMEOUT + SLACK,
        || {
            let byte = head.get(sent).copied().unwrap_or(b'a');
            match slow.write(&[byte]) {
                Ok(_) => sent += 1,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Ok(format!("write failed: {e}")),
            }
            let mut buf = [0u8; 512];
            match slow.read(&mut buf) {
                Ok(0) => Ok("closed".to_owned()),
                Ok(n) => Ok(format!("answered {:?}", String::from_utf8_lossy(&buf[..n]))),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(150));
                    Err(format!("{sent} bytes sent, still open"))
                }
                Err(e) => Ok(format!("read failed: {e}")),
            }
        },
    );
    assert!(
        outcome == "closed" || outcome.contains("reset"),
        "a slowloris client after {sent} bytes: {outcome}"
    );
    // The idle connection went the same way: a read ends (EOF) instead of blocking.
    let rest = read_until_closed(&mut idle).expect("idle connection closed, not reset");
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    // The keep-alive one got its answer, then was closed the same way.
    let answer = read_until_closed(&mut kept).expect("keep-alive connection closed, not reset");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("\r\n\r\nhttp-node\n"),
        "{answer:?}"
    );

    // The slow body met the request timeout: a 408, as README says.
    let answer = read_until_closed(&mut slow_body).unwrap_or_default();
    assert!(
        status_line(&answer).starts_with("HTTP/1.1 408"),
        "a stalled request body: {:?}",
        String::from_utf8_lossy(&answer)
    );

    let metrics = daemon.scrape();
    assert!(
        closed(&metrics, "header_timeout") >= 3.0,
        "header_timeout closes: {}",
        closed(&metrics, "header_timeout")
    );
}

#[test]
fn a_bulk_client_that_never_reads_is_reset_at_the_send_deadline() {
    let (_dns, mut daemon) = start();
    let mut reader = connect(daemon.addr());
    write!(
        reader,
        "GET /ping?bytes=1048576 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let body = read_until_closed(&mut reader).expect("read the bulk body");
    let split = body
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("head");
    let head = String::from_utf8_lossy(&body[..split]).to_ascii_lowercase();
    assert!(head.contains("content-length: 1048576"), "{head}");
    let payload = &body[split + 4..];
    assert_eq!(payload.len(), 1_048_576);
    assert!(
        payload
            .iter()
            .enumerate()
            .all(|(i, b)| *b == b'a' + (i % 26) as u8),
        "the bulk body is a..z repeated"
    );

    let mut stalled = connect(daemon.addr());
    // The smallest receive buffer, so the body cannot all fit in the kernel's queues.
    socket2::SockRef::from(&stalled)
        .set_recv_buffer_size(4096)
        .expect("SO_RCVBUF");
    write!(
        stalled,
        "GET /ping?bytes=1048576 HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    .expect("send request");
    daemon.wait_until(
        "the stalled client closed for its send deadline",
        SEND_DEADLINE + SLACK,
        |m| {
            let reasons = ["send_deadline", "header_timeout", "evicted"]
                .map(|r| format!("{r}={}", closed(m, r)));
            if closed(m, "send_deadline") == 1.0 {
                Ok(())
            } else {
                Err(reasons.join(" "))
            }
        },
    );
    // What the kernel had queued arrives, then the reset.
    stalled
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    let end = loop {
        match stalled.read(&mut buf) {
            Ok(0) => break "EOF".to_owned(),
            Ok(n) => got += n,
            Err(e) => break e.kind().to_string(),
        }
    };
    assert!(
        got < 1_048_576,
        "the stalled client got {got} bytes ({end}): the whole body, so it never stalled"
    );
    assert_eq!(
        end,
        ErrorKind::ConnectionReset.to_string(),
        "after {got} bytes"
    );
}

// ---------------------------------------------------------------------------------------------
// The flood

const IDLE: usize = 10_000;
const SLOW_HEAD: usize = 300;
const SLOWLORIS: usize = 500;
const BULK: usize = 300;
/// The daemon's own memory at its peak: VmHWM less the executable's code pages (RssFile). Code
/// pages are not what a flood can grow, and they differ by build: this test runs the debug
/// binary, whose 45 MiB of code leaves 25 to 32 MiB resident depending on how much of the file
/// the page cache holds and the kernel maps on each fault, where the release binary keeps about
/// 9 MiB. 30 MiB here plus the release binary's 9 MiB of code stays inside the 40 MiB base of
/// the memory estimate (`netprobe_memory_estimate_bytes`).
const OWN_PEAK_LIMIT_KIB: u64 = 30 * 1024;
/// From the last client connected until none of them is still open.
const ALL_CLOSED_WITHIN: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Idle,
    SlowHead,
    Slowloris,
    Bulk,
}

/// Raises this process's soft limit on open files to `want` (the hard one too, as root), so the
/// clients fit; the daemon inherits it.
fn raise_nofile(want: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft >= want {
        return;
    }
    let hard = hard.max(want);
    setrlimit(Resource::RLIMIT_NOFILE, want, hard)
        .unwrap_or_else(|e| panic!("cannot raise RLIMIT_NOFILE from {soft} to {want}: {e}"));
}

/// `Max open files` (soft) of a process.
fn nofile_of(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX)
}

/// A `/proc/PID/status` field in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Local ports of this machine's IPv4 TCP sockets connected to `server` that are still
/// ESTABLISHED (state 01): the clients the server has not closed. A client the server closed
/// is in CLOSE_WAIT, or gone after a reset.
fn established_to(server: SocketAddr) -> Vec<u16> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let remote = format!("0100007F:{:04X}", server.port());
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() > 3 && f[2] == remote && f[3] == "01")
                .then(|| f[1].rsplit(':').next())
                .flatten()
                .and_then(|port| u16::from_str_radix(port, 16).ok())
        })
        .collect()
}

#[test]
fn a_flood_of_hostile_clients_is_bounded_and_metrics_stay_answerable() {
    let total = IDLE + SLOW_HEAD + SLOWLORIS + BULK;
    raise_nofile(total as u64 + 2048);
    let (_dns, mut daemon) = start();
    let pid = daemon.pid();
    let daemon_nofile = nofile_of(pid);
    assert!(
        daemon_nofile >= 2 * MAX_CONNECTIONS as u64 + 64,
        "the daemon may open only {daemon_nofile} files: too few for its connection cap"
    );
    let before = daemon.scrape();
    let lookups_before = before.sum("netprobe_dns_lookups_total", &[]);
    let baseline_rss = status_kib(pid, "VmRSS:");
    let baseline_anon = status_kib(pid, "RssAnon:");

    // The kinds interleaved, so each gets its share of the slots the daemon keeps.
    let mut order = Vec::with_capacity(total);
    let mut left = [
        (Kind::Idle, IDLE),
        (Kind::SlowHead, SLOW_HEAD),
        (Kind::Slowloris, SLOWLORIS),
        (Kind::Bulk, BULK),
    ];
    while order.len() < total {
        for (kind, n) in &mut left {
            let share = if *kind == Kind::Idle { 30 } else { 1 };
            for _ in 0..share.min(*n) {
                order.push(*kind);
                *n -= 1;
            }
        }
    }

    let slow_head = format!(
        "GET /ping HTTP/1.1\r\nHost: t\r\nX-Padding: {}",
        "p".repeat(12 * 1024)
    );
    let flood_started = Instant::now();
    let mut clients: Vec<(Kind, TcpStream)> = Vec::with_capacity(total);
    let mut scrapes_failed = Vec::new();
    let mut scrapes = 0;
    for (i, kind) in order.into_iter().enumerate() {
        let stream = TcpStream::connect_timeout(&daemon.addr(), Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("client {i} ({kind:?}) cannot connect: {e}"));
        stream.set_nonblocking(true).expect("nonblocking");
        let mut s = &stream;
        // Whatever does not fit the kernel's buffers now is simply not sent: these clients are
        // slow on purpose. A write refused because the server already closed is fine too.
        let _ = match kind {
            Kind::Idle => Ok(0),
            Kind::SlowHead => s.write(slow_head.as_bytes()),
            Kind::Slowloris => s.write(b"GET /metrics HTTP/1.1\r\n"),
            Kind::Bulk => s.write(b"GET /ping?bytes=1048576 HTTP/1.1\r\nHost: t\r\n\r\n"),
        };
        clients.push((kind, stream));
        if i % 1000 == 999 {
            scrapes += 1;
            match crate::util::http_get(daemon.addr(), "/metrics") {
                Ok(r) if r.status == 200 => {}
                other => scrapes_failed.push(format!("after {} clients: {other:?}", i + 1)),
            }
        }
    }
    let connected = Instant::now();
    eprintln!(
        "connect phase: {:.1}s",
        (connected - flood_started).as_secs_f64()
    );
    let ports: BTreeMap<u16, Kind> = clients
        .iter()
        .filter_map(|(k, s)| Some((s.local_addr().ok()?.port(), *k)))
        .collect();

    // Until every client is closed: slowloris clients send a header byte a second, and /metrics
    // is scraped, as Prometheus would, between checks.
    let mut last_tick = Instant::now() - Duration::from_secs(1);
    let mut lookups_during = lookups_before;
    let mut open_last: BTreeMap<Kind, usize> = BTreeMap::new();
    loop {
        if last_tick.elapsed() >= Duration::from_secs(1) {
            last_tick = Instant::now();
            for (kind, stream) in &clients {
                if *kind == Kind::Slowloris {
                    let _ = (&*stream).write(b"X");
                }
            }
        }
        scrapes += 1;
        match crate::util::http_get_accept(
            daemon.addr(),
            "/metrics",
            crate::util::PROMETHEUS_ACCEPT,
        ) {
            Ok(r) if r.status == 200 => {
                if let Ok(m) = Metrics::parse(&r.body) {
                    lookups_during = m.sum("netprobe_dns_lookups_total", &[]);
                    let open = m.get("netprobe_http_connections", &[]).unwrap_or(0.0);
                    assert!(open <= MAX_CONNECTIONS, "{open} connections open");
                }
            }
            other => scrapes_failed.push(format!(
                "{:.1}s after the flood: {other:?}",
                connected.elapsed().as_secs_f64()
            )),
        }
        // The kubelet's probe, as it would come.
        match crate::util::http_get(daemon.addr(), "/healthz") {
            Ok(r) if r.status == 200 => {}
            other => scrapes_failed.push(format!(
                "/healthz {:.1}s after the flood: {other:?}",
                connected.elapsed().as_secs_f64()
            )),
        }
        open_last.clear();
        for port in established_to(daemon.addr()) {
            if let Some(kind) = ports.get(&port) {
                *open_last.entry(*kind).or_default() += 1;
            }
        }
        if open_last.is_empty() || connected.elapsed() >= ALL_CLOSED_WITHIN {
            break;
        }
        assert!(
            daemon.is_running(),
            "daemon died\n{}",
            daemon.output_tail(30)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let took = connected.elapsed();
    let hwm = status_kib(pid, "VmHWM:");
    let code = status_kib(pid, "RssFile:");
    let own_peak = hwm.saturating_sub(code);
    let after = daemon.scrape();
    let reasons: Vec<String> = [
        "header_timeout",
        "head_too_large",
        "evicted",
        "refused",
        "send_deadline",
    ]
    .iter()
    .map(|r| format!("{r}={}", closed(&after, r)))
    .collect();
    eprintln!(
        "flood of {total} clients: all closed {:.1}s after the last connected; daemon VmHWM \
         {hwm} KiB less {code} KiB of code = {own_peak} KiB (VmRSS {baseline_rss} KiB, RssAnon \
         {baseline_anon} KiB before); {scrapes} scrapes, {} failed; closed by the server: {}",
        took.as_secs_f64(),
        scrapes_failed.len(),
        reasons.join(" ")
    );
    assert!(
        open_last.is_empty(),
        "{ALL_CLOSED_WITHIN:?} after the flood, clients still open: {open_last:?}"
    );
    assert!(
        scrapes_failed.is_empty(),
        "/metrics or /healthz failed during the flood: {scrapes_failed:#?}"
    );
    assert!(
        own_peak < OWN_PEAK_LIMIT_KIB,
        "the daemon's own memory peaked at {own_peak} KiB (VmHWM {hwm} KiB less {code} KiB of \
         code), over {OWN_PEAK_LIMIT_KIB} KiB"
    );
    assert!(
        lookups_during > lookups_before,
        "no DNS probe ran during the flood ({lookups_before} lookups before, {lookups_during} at the end)"
    );
    assert!(closed(&after, "evicted") > 0.0, "{reasons:?}");
    assert!(daemon.is_running(), "{}", daemon.output_tail(30));
}

#[test]
fn a_daemon_out_of_file_descriptors_says_so_once_and_serves_again() {
    let dns = DnsServer::start();
    dns.set(
        "ok.cluster.local",
        Behaviour::Answer(Ipv4Addr::new(10, 96, 0, 1)),
    );
    // Room for the daemon's own files and a few connections, far below the cap.
    let mut program = std::process::Command::new("prlimit");
    program.args(["--nofile=48:48", crate::util::bin()]);
    let mut daemon = Daemon::start_in(
        program,
        &config(dns.addr()),
        &[],
        std::net::IpAddr::from([127, 0, 0, 1]),
    );
    assert_eq!(nofile_of(daemon.pid()), 48, "prlimit did not apply");
    let clients: Vec<TcpStream> = (0..60).map(|_| connect(daemon.addr())).collect();
    let warning = "HTTP server cannot accept a connection";
    poll("the daemon to say it cannot accept", SLACK, || {
        let log = daemon.stderr_text();
        log.contains(warning)
            .then_some(())
            .ok_or_else(|| "not yet".to_owned())
    });
    // The kernel holds the rest until descriptors free up: closing the clients frees them.
    drop(clients);
    daemon.wait_until(
        "/metrics to answer again, with the clients' connections gone",
        HEADER_READ_TIMEOUT + SLACK,
        |m| {
            // The scrape's own connection is the one left.
            let open = m.get("netprobe_http_connections", &[]).unwrap_or(0.0);
            if open <= 1.0 {
                Ok(())
            } else {
                Err(format!("{open} connections open"))
            }
        },
    );
    let lines = daemon
        .stderr_text()
        .lines()
        .filter(|l| l.contains(warning))
        .count();
    // Retried every 50 ms; logged once per 10 s.
    assert!(lines <= 2, "{lines} lines of {warning:?}");
    assert!(daemon.is_running());
}
