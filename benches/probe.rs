//! Benchmarks behind docs/benchmarks.md (issue 2, "Performance"):
//!
//! - `metrics_encode_1000_targets/*`: one `/metrics` encode, OpenMetrics and the classic text
//!   format, with 1,000 DNS targets (10 servers x 100 names), each with a few lookups recorded.
//! - `own_health/*`: what each scrape adds to read the prober's own health: `/proc/self`
//!   (`process_*`), the cgroup's CPU files once it is known, and finding it again
//!   (/proc/self/cgroup and mountinfo) as a scrape does when none is visible.
//! - `dns_probe_loopback/query`: wall time of one `probe::dns::query` against a UDP responder on
//!   127.0.0.1 that runs in this process.
//! - "cpu per probe": not a criterion figure. 5,000 probes in a row on a current-thread tokio
//!   runtime, with the process's CPU time (utime + stime, /proc/self/stat) read before and after,
//!   minus the responder thread's own CPU time (/proc/self/task/TID/stat), divided by the count.
//!   The kernel's nanosecond accounting (/proc/.../schedstat) of both threads is printed beside
//!   it, since utime + stime only counts whole clock ticks.
//!
//! Run: `cargo bench --bench probe`. Under `cargo test --all-targets` (criterion's test mode)
//! every routine runs once and the CPU figure uses 50 probes, so the suite stays fast.
//! No figure here is asserted; the bench only checks that each probe really got its answer.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use criterion::Criterion;
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use kube_netprobe::metrics::{DnsLabels, Metrics};
use kube_netprobe::probe::dns::{DnsObservation, Outcome, QueryOptions, query};
use kube_netprobe::process::{ProcRoot, cgroup};

/// Probes in the CPU-time measurement (`NETPROBE_BENCH_CPU_PROBES` overrides).
const CPU_PROBES: u64 = 5_000;
const SERVERS: usize = 10;
const NAMES: usize = 100;

// ---------------------------------------------------------------------------------------------
// /metrics encode

fn observation(rcode: ResponseCode, answers: usize, micros: u64) -> DnsObservation {
    DnsObservation {
        outcome: Outcome::Response { rcode, answers },
        duration: Some(Duration::from_micros(micros)),
        udp_queries: 1,
        tcp_queries: 0,
    }
}

/// 1,000 targets, each with four lookups recorded: three answers of different speeds and one
/// timeout, so several histogram buckets and two rcode counters are non-zero.
fn populated_metrics() -> Metrics {
    let metrics = Metrics::new();
    metrics.probes.add_probe("dns");
    for s in 0..SERVERS {
        for n in 0..NAMES {
            let target = DnsLabels {
                server: format!("10.96.{s}.10:53"),
                name: format!("svc-{n}.namespace-{}.svc.cluster.local", n % 7),
                qtype: "A".to_owned(),
            };
            metrics.dns.add_target(&target);
            for micros in [400, 1_700, 23_000] {
                let ok = observation(ResponseCode::NoError, 1, micros + (n as u64) * 10);
                metrics.dns.record(&target, &ok, true);
            }
            let timeout = DnsObservation {
                outcome: Outcome::Timeout,
                duration: None,
                udp_queries: 1,
                tcp_queries: 0,
            };
            metrics.dns.record(&target, &timeout, false);
        }
    }
    metrics
}

fn sample_lines(text: &str) -> usize {
    text.lines().filter(|l| !l.starts_with('#')).count()
}

fn bench_encode(c: &mut Criterion) {
    let metrics = populated_metrics();
    let openmetrics = metrics.encode_openmetrics();
    let classic = metrics.encode_prometheus_text();
    eprintln!(
        "metrics encode: {} DNS targets; OpenMetrics {} sample lines, {} bytes; \
         Prometheus text {} sample lines, {} bytes",
        SERVERS * NAMES,
        sample_lines(&openmetrics),
        openmetrics.len(),
        sample_lines(&classic),
        classic.len(),
    );
    let mut group = c.benchmark_group("metrics_encode_1000_targets");
    group.bench_function("openmetrics", |b| {
        b.iter(|| black_box(metrics.encode_openmetrics()))
    });
    group.bench_function("prometheus_text", |b| {
        b.iter(|| black_box(metrics.encode_prometheus_text()))
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// A UDP responder on loopback: NOERROR with one A record for every query.

struct Responder {
    addr: SocketAddr,
    /// The responder thread's id, for /proc/self/task/TID.
    tid: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Responder {
    fn start() -> Self {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the responder");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("set the responder's read timeout");
        let addr = socket.local_addr().expect("responder address");
        let stop = Arc::new(AtomicBool::new(false));
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let stop_flag = stop.clone();
        let thread = std::thread::spawn(move || {
            // "/proc/thread-self" links to "PID/task/TID".
            let link = std::fs::read_link("/proc/thread-self").unwrap_or_default();
            let tid = link
                .file_name()
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default();
            let _ = tid_tx.send(tid);
            let mut buf = [0u8; 4096];
            while !stop_flag.load(Ordering::Relaxed) {
                let Ok((len, peer)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(reply) = answer(&buf[..len]) {
                    let _ = socket.send_to(&reply, peer);
                }
            }
        });
        let tid = tid_rx.recv().expect("the responder reports its thread id");
        Self {
            addr,
            tid,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn answer(raw: &[u8]) -> Option<Vec<u8>> {
    let request = Message::from_vec(raw).ok()?;
    if request.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut response = Message::response(request.metadata.id, OpCode::Query);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.metadata.authoritative = true;
    response.queries = request.queries.clone();
    if let Some(q) = request.queries.first()
        && q.query_type() == RecordType::A
    {
        response.add_answer(Record::from_rdata(
            q.name().clone(),
            30,
            RData::A(A(Ipv4Addr::new(198, 18, 0, 10))),
        ));
    }
    response.to_vec().ok()
}

// ---------------------------------------------------------------------------------------------
// Probes

fn probe_name() -> Name {
    Name::from_ascii("kubernetes.default.svc.cluster.local.").expect("valid name")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// `n` probes in a row; panics unless every one got the responder's answer.
async fn probe_n(server: SocketAddr, name: &Name, n: u64) {
    for _ in 0..n {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        let obs = query(
            server,
            name,
            RecordType::A,
            QueryOptions::default(),
            deadline,
        )
        .await;
        assert_eq!(
            obs.outcome,
            Outcome::Response {
                rcode: ResponseCode::NoError,
                answers: 1
            },
            "the loopback responder must answer every probe"
        );
        black_box(obs);
    }
}

fn bench_probe(c: &mut Criterion, responder: &Responder) {
    let rt = runtime();
    let name = probe_name();
    let mut group = c.benchmark_group("dns_probe_loopback");
    group.bench_function("query", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = std::time::Instant::now();
                probe_n(responder.addr, &name, iters).await;
                start.elapsed()
            })
        })
    });
    group.finish();
}

/// CPU time of one task (thread) or of the whole process: utime + stime in clock ticks from
/// `stat`, and the scheduler's run time in nanoseconds from `schedstat` (threads only).
#[derive(Clone, Copy, Debug, Default)]
struct Cpu {
    ticks: u64,
    nanos: Option<u64>,
}

fn read_cpu(dir: &str) -> Cpu {
    let stat = std::fs::read_to_string(format!("{dir}/stat")).expect("read stat");
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = &stat[stat.rfind(')').expect("stat has a command name") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| -> u64 { fields[n - 3].parse().expect("numeric stat field") };
    let nanos = std::fs::read_to_string(format!("{dir}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok());
    Cpu {
        ticks: field(14) + field(15),
        nanos,
    }
}

fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

fn cpu_per_probe(responder: &Responder, probes: u64) {
    let rt = runtime();
    let name = probe_name();
    // Warm up: the runtime's first timer and socket set-up are not a probe's cost.
    rt.block_on(probe_n(responder.addr, &name, 50));

    let responder_dir = format!("/proc/self/task/{}", responder.tid);
    let process_before = read_cpu("/proc/self");
    let prober_before = read_cpu("/proc/thread-self");
    let responder_before = read_cpu(&responder_dir);
    let wall = std::time::Instant::now();
    rt.block_on(probe_n(responder.addr, &name, probes));
    let wall = wall.elapsed();
    let process_after = read_cpu("/proc/self");
    let prober_after = read_cpu("/proc/thread-self");
    let responder_after = read_cpu(&responder_dir);

    let tick_us = 1e6 / clock_ticks_per_second() as f64;
    let per_probe_us = |ticks: u64| ticks as f64 * tick_us / probes as f64;
    let process_ticks = process_after.ticks - process_before.ticks;
    let responder_ticks = responder_after.ticks - responder_before.ticks;
    let prober_ticks = process_ticks.saturating_sub(responder_ticks);
    eprintln!(
        "cpu per probe: {:.1} µs (utime+stime over {probes} sequential probes on a current-thread \
         runtime: process {:.1} µs/probe minus the in-process responder's {:.1} µs/probe; \
         {process_ticks} ticks of {tick_us:.0} µs in total; wall {:.1} µs/probe)",
        per_probe_us(prober_ticks),
        per_probe_us(process_ticks),
        per_probe_us(responder_ticks),
        wall.as_secs_f64() * 1e6 / probes as f64,
    );
    if let (Some(pa), Some(pb), Some(ra), Some(rb)) = (
        prober_after.nanos,
        prober_before.nanos,
        responder_after.nanos,
        responder_before.nanos,
    ) {
        eprintln!(
            "cpu per probe (schedstat, ns resolution): probing thread {:.1} µs, responder thread \
             {:.1} µs",
            (pa - pb) as f64 / 1e3 / probes as f64,
            (ra - rb) as f64 / 1e3 / probes as f64,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The prober's own health, per scrape

fn bench_own_health(c: &mut Criterion) {
    let proc_root = ProcRoot::system();
    let mut group = c.benchmark_group("own_health");
    group.bench_function("read_process", |b| {
        b.iter(|| black_box(proc_root.read_process().expect("read /proc/self")))
    });
    let proc_self = std::path::Path::new("/proc/self");
    let root = std::path::Path::new("/");
    group.bench_function("find_cgroup", |b| {
        b.iter(|| black_box(cgroup::find(proc_self, root).ok()))
    });
    if let Ok(found) = cgroup::find(proc_self, root) {
        group.bench_function("read_cgroup", |b| {
            b.iter(|| black_box(found.read().expect("read the cgroup's CPU files")))
        });
    }
    group.finish();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    // As criterion decides: `cargo bench` passes --bench; `cargo test --benches` does not.
    let benchmarking = has("--bench") && !has("--test");
    let listing = has("--list");

    let mut c = Criterion::default().configure_from_args();
    bench_encode(&mut c);
    bench_own_health(&mut c);
    let responder = Responder::start();
    bench_probe(&mut c, &responder);
    if !listing {
        let probes = if benchmarking {
            std::env::var("NETPROBE_BENCH_CPU_PROBES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(CPU_PROBES)
        } else {
            50
        };
        cpu_per_probe(&responder, probes);
    }
    drop(responder);
    c.final_summary();
}
