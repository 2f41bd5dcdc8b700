//! Probe timing accuracy (issue 3, "Performance"): a peer that answers after a known delay must
//! be reported within 1 ms of it.
//!
//! A local HTTP server accepts, reads the request, waits exactly `D`, then answers. The peer
//! prober's `first_byte - connect` phase should be `D` plus writing the request and a loopback
//! round trip. Prints the
//! error (reported minus `D`) per delay: median, p99 and max over the probes. No assertion: the
//! figure goes to docs/benchmarks.md. Run: `cargo bench --bench peer_timing`.

use std::net::SocketAddr;
use std::time::Duration;

use kube_netprobe::metrics::{PeerResult, Phase};
use kube_netprobe::probe::peer::probe_http;
use std::io::{Read, Write};
use tokio::time::Instant;

/// Answers every request exactly `delay` after reading it. Plain threads and blocking sleeps:
/// tokio's timer has a 1 ms granularity, which would be the server's error, not the probe's.
fn delayed_server(delay: Duration) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let _ = stream.set_nodelay(true);
                let mut buf = [0u8; 2048];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                std::thread::sleep(delay);
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                );
            });
        }
    });
    addr
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this without it, as a
    // smoke test: keep that quick.
    let full = std::env::args().any(|a| a == "--bench");
    let probes = if full { 200 } else { 3 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!("peer probe timing accuracy: first_byte - connect - injected delay, {probes} probes each");
        for delay_ms in [5u64, 20, 100] {
            let delay = Duration::from_millis(delay_ms);
            let addr = delayed_server(delay);
            let mut errors = Vec::with_capacity(probes);
            for _ in 0..probes {
                let observation =
                    probe_http(addr, "/ping", None, Instant::now() + Duration::from_secs(2)).await;
                assert_eq!(
                    observation.result,
                    PeerResult::success,
                    "{:?}",
                    observation.detail
                );
                let phase = |name: Phase| {
                    observation
                        .phases
                        .iter()
                        .find(|(p, _)| *p == name)
                        .map(|(_, s)| *s)
                        .unwrap()
                };
                let waited = phase(Phase::first_byte) - phase(Phase::connect);
                errors.push((waited - delay.as_secs_f64()) * 1000.0);
            }
            errors.sort_by(f64::total_cmp);
            println!(
                "  delay {delay_ms:>3} ms: error median {:.3} ms, p99 {:.3} ms, max {:.3} ms, min {:.3} ms",
                percentile(&errors, 0.5),
                percentile(&errors, 0.99),
                errors[errors.len() - 1],
                errors[0]
            );
        }
    });
}
