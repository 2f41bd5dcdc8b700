//! `kube-netprobe slo-report` against a real Prometheus whose TSDB was backfilled with known
//! counters (`promtool tsdb create-blocks-from openmetrics`), so every figure the report prints
//! is known exactly; plus the ways it cannot run (refused, silent, HTTP and query errors) and
//! its usage errors.
//!
//! # Why the expected figures are exact
//!
//! `increase(x[W])` at time `T` takes the first and last sample inside `[T-W, T]` and
//! extrapolates their difference towards the window's edges when they sit away from them. Here
//! every series has its samples at the same instants, on the hour: every counter is 0 at the
//! window start `S` (2026-01-01T00:00:00Z), then sampled daily, and hourly over the last six
//! hours up to `T = S + 720h` (2026-01-31T00:00:00Z) and one hour beyond. So for the 30d, 6h and
//! 1h windows the first and last samples sit exactly on the window's edges: Prometheus 2.x
//! selects `[T-W, T]` closed (Debian bookworm ships 2.42), the distance to each edge is 0, the
//! extrapolation factor is `W / W = 1`, and `increase()` is the plain difference of two
//! integers, exact in floating point; the sums of integers are exact too, and the derived
//! ratios are compared after slo-report's rounding to 12 decimal places. (Prometheus 3 selects
//! `(T-W, T]`, which drops the sample at `T-W` and would extrapolate; these expectations are
//! for 2.x.)
//!
//! The designed per-hour increments (`h` = 1..=720 inside the window; `h` = 721..=744 after
//! it, to prove the window ends at `--end` and to fill January for `--month 2026-01`) give,
//! with `--selector '{cluster="prod"}'`:
//!
//! | SLO | all / bad over 30d | attainment | budget left | burn 1h | burn 6h |
//! | --- | --- | --- | --- | --- | --- |
//! | dns-availability (99.9 %) | 180000 / 90 | 0.9995 | 0.5 (21m36s) | 1/250 → 4 | 3/1500 → 2 |
//! | dns-latency (99 %) | 180000 / 810 | 0.9955 | 0.55 (3h57m36s) | 2/250 → 0.8 | 6/1500 → 0.4 |
//! | pod-network (99.9 %) | 72000 / 180 | 0.9975 | -1.5 (-1h4m48s) | 3/100 → 30 | 6/600 → 10 |
//! | storage-availability (99 %) | 86400 / 108 | 0.99875 | 0.875 (6h18m) | 0 | 0 |
//!
//! pod-network's budget is exhausted (exit 1); with `--objective pod-network=0.99` it has
//! 0.75 left (5h24m), burn 3 and 1, and the exit is 0.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{Checks, bin, capture, is_root, poll};

/// Window start: 2026-01-01T00:00:00Z.
const S: u64 = 1_767_225_600;
/// `--end`: 2026-01-31T00:00:00Z, 720 hours later.
const END: &str = "2026-01-31T00:00:00Z";
const HOURS_IN_WINDOW: u32 = 720;
/// The data runs to 2026-02-01T00:00:00Z.
const HOURS_IN_JANUARY: u32 = 744;

/// Basic-auth credentials the test Prometheus demands (web config), so that every run also
/// proves the credentials reach it. The hash is bcrypt (cost 4) of `PASSWORD`.
const USER: &str = "netprobe";
const PASSWORD: &str = "slo-report-test";
const PASSWORD_BCRYPT: &str = "$2b$04$RK3qXbvFOrgkrwEZd5AHyOg8Kwb2Qjpj4sRDo7WjhF9QTxMNAWW/2";

// ---------------------------------------------------------------------------------------------
// The backfilled data

/// One counter series: its labels and its increment in each hour `h` (1..=744).
struct Counter {
    labels: String,
    inc: fn(u32) -> u64,
}

fn between(h: u32, from: u32, to: u32, n: u64) -> u64 {
    if (from..=to).contains(&h) { n } else { 0 }
}

// DNS: two servers; a answers everything (SERVFAIL is an answer), some of b's lookups time out.
fn servfail_a(h: u32) -> u64 {
    match h {
        1..=30 => 2,
        716 | 720 => 1,
        721 => 50,
        _ => 0,
    }
}
fn timeout_b(h: u32) -> u64 {
    between(h, 101, 127, 1) + between(h, 718, 718, 1)
}
/// a's lookups slower than 100 ms: one an hour, none in hours 717 and 718, two in hour 720.
fn slow_a(h: u32) -> u64 {
    match h {
        717 | 718 | 721 => 0,
        720 => 2,
        _ => 1,
    }
}
fn slow_b(h: u32) -> u64 {
    between(h, 200, 262, 1)
}
fn answered_a(_: u32) -> u64 {
    125
}
fn answered_b(h: u32) -> u64 {
    125 - timeout_b(h)
}
// Pod network: node-2 checks node-1 (resets late in the window), node-1 checks node-2
// (timeouts mid-window).
fn reset_node1(h: u32) -> u64 {
    match h {
        716 => 2,
        718 => 1,
        720 => 3,
        _ => 0,
    }
}
fn timeout_node2(h: u32) -> u64 {
    between(h, 300, 357, 3)
}
// Storage: eio on both nodes at different times; node-2 also skips 5 probes an hour for
// insufficient space, which count neither way.
fn eio_node1(h: u32) -> u64 {
    between(h, 400, 423, 3)
}
fn eio_node2(h: u32) -> u64 {
    between(h, 500, 511, 3)
}

fn counters() -> Vec<(&'static str, Vec<Counter>)> {
    let dns = |instance: &str, server: &str, rcode: &str| {
        format!(
            r#"cluster="prod",instance="{instance}",job="kube-netprobe",server="{server}",name="kubernetes.default.svc.cluster.local",qtype="A",rcode="{rcode}""#
        )
    };
    let peer = |instance: &str, target: &str, result: &str| {
        format!(
            r#"cluster="prod",instance="{instance}",job="kube-netprobe",target_node="{target}",protocol="http",result="{result}""#
        )
    };
    let storage = |cluster: &str, instance: &str, result: &str| {
        format!(
            r#"cluster="{cluster}",instance="{instance}",job="kube-netprobe",volume="scratch",result="{result}""#
        )
    };
    let c = |labels: String, inc: fn(u32) -> u64| Counter { labels, inc };
    vec![
        (
            "netprobe_dns_lookups",
            vec![
                c(dns("node-1:9753", "coredns/coredns-a", "NOERROR"), |h| {
                    115 - servfail_a(h)
                }),
                c(dns("node-1:9753", "coredns/coredns-a", "NXDOMAIN"), |_| 10),
                c(
                    dns("node-1:9753", "coredns/coredns-a", "SERVFAIL"),
                    servfail_a,
                ),
                c(dns("node-2:9753", "coredns/coredns-b", "NOERROR"), |h| {
                    125 - timeout_b(h)
                }),
                c(
                    dns("node-2:9753", "coredns/coredns-b", "TIMEOUT"),
                    timeout_b,
                ),
            ],
        ),
        (
            "netprobe_peer_requests",
            vec![
                c(peer("node-2:9753", "node-1", "success"), |h| {
                    50 - reset_node1(h)
                }),
                c(peer("node-2:9753", "node-1", "reset"), reset_node1),
                c(peer("node-1:9753", "node-2", "success"), |h| {
                    50 - timeout_node2(h)
                }),
                c(peer("node-1:9753", "node-2", "timeout"), timeout_node2),
            ],
        ),
        (
            "netprobe_storage_probes",
            vec![
                c(storage("prod", "node-1:9753", "success"), |h| {
                    60 - eio_node1(h)
                }),
                c(storage("prod", "node-1:9753", "eio"), eio_node1),
                c(storage("prod", "node-2:9753", "success"), |h| {
                    60 - eio_node2(h)
                }),
                c(storage("prod", "node-2:9753", "eio"), eio_node2),
                c(storage("prod", "node-2:9753", "insufficient_space"), |_| 5),
                // Another cluster, for --selector: spotless, and only storage.
                c(storage("dev", "dev-1:9753", "success"), |_| 60),
            ],
        ),
    ]
}

/// The DNS lookup-duration histogram of each server: `(instance, server, answered, slow)`.
type Histogram = (&'static str, &'static str, fn(u32) -> u64, fn(u32) -> u64);
const HISTOGRAMS: [Histogram; 2] = [
    ("node-1:9753", "coredns/coredns-a", answered_a, slow_a),
    ("node-2:9753", "coredns/coredns-b", answered_b, slow_b),
];

/// Whether the file has a sample at hour `h`: daily, then hourly from `T - 6h` on. Only the
/// samples at the edges of the 30d, 6h and 1h windows decide the figures; leaving out the
/// hours between cuts the 2-hour blocks promtool writes from 361 to about 35, and the backfill
/// from about 30 s to a few.
fn sampled(h: u32) -> bool {
    h.is_multiple_of(24) || h >= HOURS_IN_WINDOW - 6
}

/// The whole OpenMetrics file: samples from `S` (every counter 0) to `S + 744h` (see
/// [`sampled`]), counters accumulating their hourly increments in between.
fn openmetrics() -> String {
    let hours = 0..=HOURS_IN_JANUARY;
    let ts = |h: u32| S + u64::from(h) * 3600;
    let mut out = String::new();
    for (family, series) in counters() {
        out.push_str(&format!("# TYPE {family} counter\n"));
        for counter in series {
            let mut value = 0;
            for h in hours.clone() {
                if h > 0 {
                    value += (counter.inc)(h);
                }
                if !sampled(h) {
                    continue;
                }
                out.push_str(&format!(
                    "{family}_total{{{}}} {value} {}\n",
                    counter.labels,
                    ts(h)
                ));
            }
        }
    }
    let family = "netprobe_dns_lookup_duration_seconds";
    out.push_str(&format!(
        "# TYPE {family} histogram\n# UNIT {family} seconds\n"
    ));
    for (instance, server, answered, slow) in HISTOGRAMS {
        let labels = format!(
            r#"cluster="prod",instance="{instance}",job="kube-netprobe",server="{server}",name="kubernetes.default.svc.cluster.local",qtype="A""#
        );
        let (mut count, mut fast) = (0, 0);
        for h in hours.clone() {
            if h > 0 {
                count += answered(h);
                fast += answered(h) - slow(h);
            }
            if !sampled(h) {
                continue;
            }
            // 20 an hour answered in under 25 ms fewer than under 100 ms: le="0.025" must not
            // be mistaken for the SLO's bucket.
            let faster = fast.saturating_sub(20 * u64::from(h));
            let t = ts(h);
            out.push_str(&format!(
                "{family}_bucket{{{labels},le=\"0.025\"}} {faster} {t}\n\
                 {family}_bucket{{{labels},le=\"0.1\"}} {fast} {t}\n\
                 {family}_bucket{{{labels},le=\"+Inf\"}} {count} {t}\n\
                 {family}_count{{{labels}}} {count} {t}\n\
                 {family}_sum{{{labels}}} {}.{:03} {t}\n",
                count / 50,
                (count % 50) * 20
            ));
        }
    }
    out.push_str("# EOF\n");
    out
}

// ---------------------------------------------------------------------------------------------
// Prometheus

/// Whether `tool version_arg` runs and succeeds.
fn have(tool: &str, version_arg: &str) -> bool {
    Command::new(tool)
        .arg(version_arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether prometheus and promtool are here; skips (not root) or fails (root: CI installs them
/// with scripts/install-test-deps) when not.
fn prometheus_available() -> bool {
    if have("prometheus", "--version") && have("promtool", "--version") {
        return true;
    }
    if is_root() {
        panic!("prometheus/promtool missing; install them with scripts/install-test-deps");
    }
    eprintln!(
        "SKIPPED {}: prometheus/promtool not installed (Debian package `prometheus`) and not root",
        module_path!()
    );
    false
}

/// Debian's Prometheus on 127.0.0.1 serving a backfilled TSDB; killed, and its directory
/// removed, on drop, also when the test panics.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Backfills `openmetrics` into a fresh TSDB and serves it, demanding basic auth.
    fn backfilled(openmetrics: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let input = dir.path().join("data.om");
        std::fs::write(&input, openmetrics).expect("write OpenMetrics");
        let tsdb = dir.path().join("tsdb");
        let out = Command::new("promtool")
            .args(["tsdb", "create-blocks-from", "openmetrics", "--quiet"])
            .arg(&input)
            .arg(&tsdb)
            .output()
            .expect("run promtool");
        assert!(
            out.status.success(),
            "promtool tsdb create-blocks-from openmetrics failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let web = format!("basic_auth_users:\n  {USER}: '{PASSWORD_BCRYPT}'\n");
        let mut prometheus = Self::spawn(dir, &web);
        let addr = prometheus.addr;
        poll("Prometheus /-/ready", Duration::from_secs(60), || {
            if let Ok(Some(status)) = prometheus.child.try_wait() {
                panic!("prometheus exited ({status}):\n{}", prometheus.log_tail());
            }
            match get(addr, "/-/ready", true) {
                Ok((200, _)) => Ok(()),
                Ok((status, body)) => Err(format!("{status} {body}")),
                Err(e) => Err(e.to_string()),
            }
        });
        prometheus
    }

    /// Starts Prometheus on a free loopback port with `dir/tsdb` (created if missing) and the
    /// web config `web_yaml` (auth, TLS); does not wait for it.
    fn spawn(dir: tempfile::TempDir, web_yaml: &str) -> Self {
        let tsdb = dir.path().join("tsdb");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, "global:\n  evaluation_interval: 1m\n").expect("write config");
        let web = dir.path().join("web.yml");
        std::fs::write(&web, web_yaml).expect("write web config");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--web.config.file={}", web.display()))
            .arg(format!("--storage.tsdb.path={}", tsdb.display()))
            // Time retention counts back from the newest block, not from now; the default 15d
            // would delete half of the 30-day window at start-up.
            .arg("--storage.tsdb.retention.time=400d")
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start prometheus");
        let log = Arc::new(Mutex::new(String::new()));
        capture(child.stderr.take().expect("stderr"), log.clone());
        Self {
            child,
            addr,
            log,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- prometheus log (last 30 lines) ---\n{}",
                self.log_tail()
            );
        }
    }
}

/// A GET with the test's basic-auth credentials (or none); status and body.
fn get(addr: SocketAddr, path: &str, auth: bool) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    // base64("netprobe:slo-report-test")
    let auth = if auth {
        "Authorization: Basic bmV0cHJvYmU6c2xvLXJlcG9ydC10ZXN0\r\n"
    } else {
        ""
    };
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

// ---------------------------------------------------------------------------------------------
// Running the binary

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?} after {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.code, self.took, self.stdout, self.stderr
        )
    }
}

/// Runs `kube-netprobe slo-report args` to completion (at most 60 s).
fn slo_report<A: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[A]) -> Run {
    let start = Instant::now();
    let mut child = Command::new(bin())
        .arg("slo-report")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kube-netprobe slo-report");
    let stdout = Arc::new(Mutex::new(String::new()));
    let stderr = Arc::new(Mutex::new(String::new()));
    let readers = [
        capture(child.stdout.take().expect("stdout"), stdout.clone()),
        capture(child.stderr.take().expect("stderr"), stderr.clone()),
    ];
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("slo-report {args:?} still running after 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = start.elapsed();
    for reader in readers {
        let _ = reader.join();
    }
    let text = |s: Arc<Mutex<String>>| s.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Run {
        code: status.code(),
        stdout: text(stdout),
        stderr: text(stderr),
        took,
    }
}

fn password_file(dir: &Path) -> PathBuf {
    let path = dir.join("password");
    std::fs::write(&path, format!("{PASSWORD}\n")).expect("write password file");
    path
}

/// Field `key` of the SLO named `slo` in a JSON report.
fn field<'a>(report: &'a Value, slo: &str, key: &str) -> &'a Value {
    let entry = report["slos"]
        .as_array()
        .and_then(|slos| slos.iter().find(|s| s["slo"] == slo))
        .unwrap_or_else(|| panic!("no SLO {slo} in {report}"));
    &entry[key]
}

/// `(slo, key, value)` expectations on a JSON report; `None` means null.
fn expect_json(checks: &mut Checks, report: &Value, want: &[(&str, &str, Option<f64>)]) {
    for (slo, key, value) in want {
        let got = field(report, slo, key);
        checks.eq(&format!("{slo}.{key}"), got.as_f64(), *value);
        if value.is_none() {
            checks.that(got.is_null(), format!("{slo}.{key}: {got}, want null"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn reports_the_figures_the_backfilled_data_implies() {
    if !prometheus_available() {
        return;
    }
    let prometheus = Prometheus::backfilled(&openmetrics());
    let url = prometheus.url();
    let secrets = tempfile::tempdir().expect("tempdir");
    let password = password_file(secrets.path());
    let password = password.to_str().expect("utf-8 path");
    let base_without_end = |extra: &[&str]| -> Vec<String> {
        let args = [
            "--prometheus",
            url.as_str(),
            "--basic-auth-user",
            USER,
            "--basic-auth-password-file",
            password,
        ];
        args.iter().chain(extra).map(|a| a.to_string()).collect()
    };
    let base = |extra: &[&str]| base_without_end(&[&["--end", END][..], extra].concat());
    let prod = ["--selector", r#"{cluster="prod"}"#];

    // JSON: every figure of the module comment.
    let json = ["--format", "json", "--window", "30d"];
    let run = slo_report(&base(&[&prod[..], &json[..]].concat()));
    let mut checks = Checks::default();
    checks.eq("exit code (pod-network exhausted)", run.code, Some(1));
    let report: Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{run}"));
    checks.eq("schema_version", report["schema_version"].as_u64(), Some(1));
    checks.eq(
        "end_unix",
        report["end_unix"].as_f64(),
        Some(1_769_817_600.0),
    );
    checks.eq("end", report["end"].as_str(), Some(END));
    checks.eq("window", report["window"].as_str(), Some("30d"));
    checks.eq(
        "window_seconds",
        report["window_seconds"].as_u64(),
        Some(2_592_000),
    );
    checks.eq(
        "selector",
        report["selector"].as_str(),
        Some(r#"{cluster="prod"}"#),
    );
    checks.eq(
        "budget_exhausted",
        report["budget_exhausted"].as_bool(),
        Some(true),
    );
    checks.eq(
        "dns_latency_threshold_seconds",
        report["dns_latency_threshold_seconds"].as_f64(),
        Some(0.1),
    );
    let names: Vec<&str> = report["slos"]
        .as_array()
        .map(|s| s.iter().filter_map(|s| s["slo"].as_str()).collect())
        .unwrap_or_default();
    checks.eq(
        "SLO order",
        names,
        vec![
            "dns-availability",
            "dns-latency",
            "pod-network",
            "storage-availability",
        ],
    );
    #[rustfmt::skip]
    expect_json(&mut checks, &report, &[
        ("dns-availability", "objective", Some(0.999)),
        ("dns-availability", "events", Some(180_000.0)),
        ("dns-availability", "bad_events", Some(90.0)),
        ("dns-availability", "attainment", Some(0.9995)),
        ("dns-availability", "error_budget", Some(0.001)),
        ("dns-availability", "budget_remaining", Some(0.5)),
        ("dns-availability", "budget_remaining_seconds", Some(1296.0)),
        ("dns-availability", "burn_rate_1h", Some(4.0)),
        ("dns-availability", "burn_rate_6h", Some(2.0)),
        ("dns-latency", "objective", Some(0.99)),
        ("dns-latency", "events", Some(180_000.0)),
        ("dns-latency", "bad_events", Some(810.0)),
        ("dns-latency", "attainment", Some(0.9955)),
        ("dns-latency", "budget_remaining", Some(0.55)),
        ("dns-latency", "budget_remaining_seconds", Some(14_256.0)),
        ("dns-latency", "burn_rate_1h", Some(0.8)),
        ("dns-latency", "burn_rate_6h", Some(0.4)),
        ("pod-network", "events", Some(72_000.0)),
        ("pod-network", "bad_events", Some(180.0)),
        ("pod-network", "attainment", Some(0.9975)),
        ("pod-network", "budget_remaining", Some(-1.5)),
        ("pod-network", "budget_remaining_seconds", Some(-3888.0)),
        ("pod-network", "burn_rate_1h", Some(30.0)),
        ("pod-network", "burn_rate_6h", Some(10.0)),
        ("storage-availability", "objective", Some(0.99)),
        ("storage-availability", "events", Some(86_400.0)),
        ("storage-availability", "bad_events", Some(108.0)),
        ("storage-availability", "attainment", Some(0.99875)),
        ("storage-availability", "budget_remaining", Some(0.875)),
        ("storage-availability", "budget_remaining_seconds", Some(22_680.0)),
        ("storage-availability", "burn_rate_1h", Some(0.0)),
        ("storage-availability", "burn_rate_6h", Some(0.0)),
    ]);
    for (slo, status) in [
        ("dns-availability", "ok"),
        ("dns-latency", "ok"),
        ("pod-network", "exhausted"),
        ("storage-availability", "ok"),
    ] {
        checks.eq(
            &format!("{slo}.status"),
            field(&report, slo, "status").as_str(),
            Some(status),
        );
        checks.eq(
            &format!("{slo}.window_covered"),
            field(&report, slo, "window_covered").as_bool(),
            Some(true),
        );
    }
    checks.finish(&run.to_string());

    // A 31-day window starts a day before the data: the report says the window is only partly
    // covered. The figures do not change: every counter's first sample is 0, so increase()
    // does not extrapolate towards the earlier start (Prometheus caps that at the counter's
    // zero).
    let run = slo_report(&base(
        &[&prod[..], &["--window", "31d", "--format", "json"]].concat(),
    ));
    let report: Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{run}"));
    let mut checks = Checks::default();
    #[rustfmt::skip]
    expect_json(&mut checks, &report, &[
        ("dns-availability", "events", Some(180_000.0)),
        ("dns-availability", "bad_events", Some(90.0)),
        ("pod-network", "bad_events", Some(180.0)),
        ("storage-availability", "events", Some(86_400.0)),
    ]);
    for slo in [
        "dns-availability",
        "dns-latency",
        "pod-network",
        "storage-availability",
    ] {
        checks.eq(
            &format!("{slo}.window_covered"),
            field(&report, slo, "window_covered").as_bool(),
            Some(false),
        );
    }
    checks.finish(&run.to_string());
    let run = slo_report(&base(&[&prod[..], &["--window", "31d"]].concat()));
    assert!(
        run.stdout.contains(
            "Partial window: Prometheus has no sample at the start of the 31d for dns-availability, dns-latency, pod-network, storage-availability;"
        ),
        "{run}"
    );

    // Text, over the default window (30d): the table a human reads.
    let run = slo_report(&base(&prod));
    let want = format!(
        "\
SLO report for the 30d ending {END} (Prometheus {url}, selector {{cluster=\"prod\"}})

SLO                   OBJECTIVE  ATTAINMENT  BUDGET LEFT  TIME LEFT  BURN 1H  BURN 6H  BAD / ALL EVENTS  STATUS
dns-availability      99.9%      99.950%     50.0%        21m36s     4.00     2.00     90 / 180000       ok
dns-latency           99%        99.550%     55.0%        3h57m36s   0.80     0.40     810 / 180000      ok
pod-network           99.9%      99.750%     -150.0%      -1h4m48s   30.00    10.00    180 / 72000       EXHAUSTED
storage-availability  99%        99.875%     87.5%        6h18m      0.00     0.00     108 / 86400       ok

Error budget exhausted: pod-network.
"
    );
    assert_eq!(run.stdout, want, "{run}");
    assert_eq!(run.code, Some(1), "{run}");

    // Markdown, with pod-network's objective loosened to 99 %: every budget left, exit 0.
    let loose = ["--format", "markdown", "--objective", "pod-network=0.99"];
    let run = slo_report(&base(&[&prod[..], &loose[..]].concat()));
    let want = format!(
        "\
### SLO report: 30d ending {END}

Prometheus `{url}`, selector `{{cluster=\"prod\"}}`.

| SLO | Objective | Attainment | Error budget left | Burn rate 1h | Burn rate 6h | Bad / all events | Status |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |
| dns-availability | 99.9% | 99.950% | 50.0% (21m36s) | 4.00 | 2.00 | 90 / 180000 | ok |
| dns-latency | 99% | 99.550% | 55.0% (3h57m36s) | 0.80 | 0.40 | 810 / 180000 | ok |
| pod-network | 99% | 99.750% | 75.0% (5h24m) | 3.00 | 1.00 | 180 / 72000 | ok |
| storage-availability | 99% | 99.875% | 87.5% (6h18m) | 0.00 | 0.00 | 108 / 86400 | ok |

Every SLO with data has error budget left.
"
    );
    assert_eq!(run.stdout, want, "{run}");
    assert_eq!(run.code, Some(0), "{run}");

    // Another cluster has only storage data: the others are "no data" (not 100 %) and do not
    // fail the exit code.
    let run = slo_report(&base(&[
        "--selector",
        r#"{cluster="dev"}"#,
        "--format",
        "json",
    ]));
    let mut checks = Checks::default();
    checks.eq("exit code", run.code, Some(0));
    let report: Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{run}"));
    for slo in ["dns-availability", "dns-latency", "pod-network"] {
        checks.eq(
            &format!("{slo}.status"),
            field(&report, slo, "status").as_str(),
            Some("no_data"),
        );
    }
    #[rustfmt::skip]
    expect_json(&mut checks, &report, &[
        ("dns-availability", "attainment", None),
        ("dns-availability", "budget_remaining", None),
        ("dns-availability", "events", None),
        ("pod-network", "burn_rate_1h", None),
        ("pod-network", "window_covered", None),
        ("storage-availability", "events", Some(43_200.0)),
        ("storage-availability", "bad_events", Some(0.0)),
        ("storage-availability", "attainment", Some(1.0)),
        ("storage-availability", "budget_remaining", Some(1.0)),
    ]);
    checks.finish(&run.to_string());

    // Without a selector both clusters count. A 25 ms latency threshold reads the le="0.025"
    // buckets, 20 an hour per server below le="0.1": 810 + 2 * 20 * 720 = 29610 bad.
    let run = slo_report(&base(&[
        "--format",
        "json",
        "--dns-latency-threshold",
        "0.025",
    ]));
    let report: Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{run}"));
    let mut checks = Checks::default();
    #[rustfmt::skip]
    expect_json(&mut checks, &report, &[
        ("storage-availability", "events", Some(129_600.0)),
        ("storage-availability", "bad_events", Some(108.0)),
        ("dns-latency", "events", Some(180_000.0)),
        ("dns-latency", "bad_events", Some(29_610.0)),
    ]);
    checks.eq("selector", report["selector"].is_null(), true);
    checks.eq(
        "dns_latency_threshold_seconds",
        report["dns_latency_threshold_seconds"].as_f64(),
        Some(0.025),
    );
    checks.finish(&run.to_string());

    // January by name: 744 hours ending 2026-02-01T00:00:00Z, where the data has a sample.
    // DNS: 250 lookups an hour; the 50 SERVFAILs of hour 721 join the 90 bad; a's one slow
    // lookup an hour in hours 722..=744 joins the 810 slow ones.
    let run = slo_report(&base_without_end(
        &[&prod[..], &["--month", "2026-01", "--format", "json"]].concat(),
    ));
    let report: Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{run}"));
    let mut checks = Checks::default();
    checks.eq("window", report["window"].as_str(), Some("31d"));
    checks.eq("end", report["end"].as_str(), Some("2026-02-01T00:00:00Z"));
    #[rustfmt::skip]
    expect_json(&mut checks, &report, &[
        ("dns-availability", "events", Some(186_000.0)),
        ("dns-availability", "bad_events", Some(140.0)),
        ("dns-availability", "burn_rate_1h", Some(0.0)),
        ("dns-latency", "bad_events", Some(833.0)),
        ("pod-network", "events", Some(74_400.0)),
        ("pod-network", "bad_events", Some(180.0)),
        ("storage-availability", "events", Some(89_280.0)),
        ("storage-availability", "bad_events", Some(108.0)),
    ]);
    checks.eq(
        "dns-availability.window_covered",
        field(&report, "dns-availability", "window_covered").as_bool(),
        Some(true),
    );
    checks.finish(&run.to_string());
    let run = slo_report(&base(&["--month", "2026-01"]));
    assert_eq!(run.code, Some(2), "{run}");
    assert!(run.stderr.contains("cannot be used with"), "{run}");

    // A Prometheus that keeps the lookups but not the le="0.1" bucket (a selector stands in
    // for the relabeling rule): dns-latency is no data, not 0 %.
    let run = slo_report(&base(&[
        "--selector",
        r#"{cluster="prod",le!="0.1"}"#,
        "--format",
        "json",
    ]));
    let report: Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{run}"));
    let mut checks = Checks::default();
    checks.eq(
        "dns-latency.status",
        field(&report, "dns-latency", "status").as_str(),
        Some("no_data"),
    );
    #[rustfmt::skip]
    expect_json(&mut checks, &report, &[
        ("dns-latency", "attainment", None),
        ("dns-availability", "attainment", Some(0.9995)),
    ]);
    checks.finish(&run.to_string());

    // A window before the data: no data anywhere, exit 0, and the text says so.
    let run = slo_report(&[
        "--prometheus",
        &url,
        "--end",
        "2025-12-01T00:00:00Z",
        "--basic-auth-user",
        USER,
        "--basic-auth-password-file",
        password,
    ]);
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(run.stdout.matches("no data").count(), 8, "{run}");
    assert!(
        run.stderr
            .contains("warning: no SLO has data in the 30d ending 2025-12-01T00:00:00Z"),
        "{run}"
    );

    // Prometheus's own error, with its message and the URL: an invalid regular expression.
    let run = slo_report(&base(&["--selector", r#"{cluster=~"("}"#]));
    assert_eq!(run.code, Some(3), "{run}");
    assert!(
        run.stderr
            .contains(&format!("Prometheus at {url} rejected"))
            && run.stderr.contains("bad_data")
            && run.stderr.contains("missing closing )"),
        "{run}"
    );
    assert!(run.stdout.is_empty(), "{run}");

    // No credentials: Prometheus's 401 is reported as such.
    let run = slo_report(&["--prometheus", &url, "--end", END]);
    assert_eq!(run.code, Some(3), "{run}");
    assert!(
        run.stderr
            .contains(&format!("Prometheus at {url} answered HTTP 401")),
        "{run}"
    );

    // A wrong path prefix: HTTP 404 from Prometheus's router.
    let wrong = format!("{url}/not-prometheus");
    let run = slo_report(&[
        "--prometheus",
        &wrong,
        "--end",
        END,
        "--basic-auth-user",
        USER,
        "--basic-auth-password-file",
        password,
    ]);
    assert_eq!(run.code, Some(3), "{run}");
    assert!(
        run.stderr
            .contains(&format!("Prometheus at {wrong} answered HTTP 404")),
        "{run}"
    );
}

#[test]
fn an_unreachable_prometheus_is_exit_3_with_the_url() {
    // Nothing listens on a port just freed.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let run = slo_report(&["--prometheus", &url, "--timeout", "5s"]);
    assert_eq!(run.code, Some(3), "{run}");
    assert!(
        run.stderr.contains(&format!(
            "cannot reach Prometheus at {url}: Connection refused"
        )),
        "{run}"
    );
    assert!(run.stdout.is_empty(), "{run}");
}

#[test]
fn a_silent_prometheus_is_exit_3_within_the_timeout() {
    // Accepts connections (the kernel does) and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let run = slo_report(&["--prometheus", &url, "--timeout", "2s"]);
    assert_eq!(run.code, Some(3), "{run}");
    assert!(
        run.stderr.contains(&format!(
            "Prometheus at {url} did not answer within --timeout 2s"
        )),
        "{run}"
    );
    assert!(run.took < Duration::from_secs(6), "{run}");
    drop(listener);
}

#[test]
fn usage_errors_are_exit_2_and_name_the_culprit() {
    let url = "http://127.0.0.1:9";
    for (args, says) in [
        (
            vec!["--objective", "dns-availability=1.5"],
            "objective 1.5 for dns-availability must be a ratio between 0 and 1",
        ),
        (
            vec!["--objective", "dns=0.99"],
            "unknown SLO `dns`; the SLOs are dns-availability, dns-latency, pod-network, storage-availability",
        ),
        (vec!["--window", "a month"], "`a month` is not a duration"),
        (
            vec!["--end", "yesterday"],
            "`yesterday` is neither Unix seconds nor an RFC 3339 time",
        ),
        (
            vec!["--selector", "{cluster=prod}"],
            "the value of `cluster` must be quoted",
        ),
        (vec!["--format", "html"], "--format"),
        (
            vec!["--dns-latency-threshold", "0.2"],
            "0.2 s is not a bound of the DNS lookup-duration histogram",
        ),
        (
            vec!["--bearer-token-file", "/nonexistent/token"],
            "cannot read the bearer token file /nonexistent/token",
        ),
    ] {
        let mut all = vec!["--prometheus", url];
        all.extend(args.iter().copied());
        let run = slo_report(&all);
        assert_eq!(run.code, Some(2), "{args:?}: {run}");
        assert!(
            run.stderr.contains(says),
            "{args:?}: want {says:?} in\n{run}"
        );
    }
    let run = slo_report(&["--prometheus", "prometheus:9090"]);
    assert_eq!(run.code, Some(2), "{run}");
    assert!(run.stderr.contains("has no scheme"), "{run}");
}

/// Runs `openssl` with `args` in `dir`; panics with its output when it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn https_is_verified_against_the_ca_file() {
    if !prometheus_available() {
        return;
    }
    if !have("openssl", "version") && !is_root() {
        eprintln!("SKIPPED {}: openssl not installed", module_path!());
        return;
    }
    // A CA and a serving certificate for 127.0.0.1 signed by it (webpki refuses a CA
    // certificate as the server's own).
    let dir = tempfile::tempdir().expect("tempdir");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        dir.path(),
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=slo-report test CA",
            ],
        ]
        .concat(),
    );
    openssl(
        dir.path(),
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.path().join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write extensions");
    openssl(
        dir.path(),
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
    let ca = dir.path().join("ca.pem");
    let ca = ca.to_str().expect("utf-8 path").to_string();
    let web = format!(
        "tls_server_config:\n  cert_file: {0}/server.pem\n  key_file: {0}/server.key\n",
        dir.path().display()
    );
    // An empty TSDB: every SLO is "no data", and the exit is 0.
    let prometheus = Prometheus::spawn(dir, &web);
    let url = format!("https://{}", prometheus.addr);
    let args = [
        "--prometheus",
        &url,
        "--ca-file",
        &ca,
        "--format",
        "json",
        "--timeout",
        "5s",
    ];
    // Until Prometheus is ready, its 503 (or a refused connection) is exit 3.
    let run = poll(
        "slo-report over https to succeed",
        Duration::from_secs(60),
        || {
            let run = slo_report(&args);
            if run.code == Some(0) {
                Ok(run)
            } else {
                Err(run.to_string())
            }
        },
    );
    let report: Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{run}"));
    for slo in [
        "dns-availability",
        "dns-latency",
        "pod-network",
        "storage-availability",
    ] {
        assert_eq!(field(&report, slo, "status"), "no_data", "{run}");
    }
    // The system bundle does not know the test CA.
    let run = slo_report(&["--prometheus", &url, "--timeout", "5s"]);
    assert_eq!(run.code, Some(3), "{run}");
    assert!(
        run.stderr
            .contains(&format!("TLS handshake with Prometheus at {url} failed"))
            && run.stderr.contains("UnknownIssuer"),
        "{run}"
    );
}

/// What goes over the wire, read by a loopback listener (Prometheus 2.42 cannot check bearer
/// tokens): the token, the path prefix, the PromQL, `time=` and `timeout=`, one request per
/// distinct query.
#[test]
fn sends_the_bearer_token_path_prefix_and_time() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    // 4 SLOs x (window, 1h, 6h) x (all, bad or good), less the 3 DNS denominators that
    // dns-availability and dns-latency share, plus 3 coverage checks at the window's start
    // (DNS, peer and storage counters).
    const QUERIES: usize = 24;
    let server = std::thread::spawn(move || {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        let mut heads = Vec::new();
        for stream in listener.incoming().take(QUERIES) {
            let mut stream = stream.expect("accept");
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).expect("read") == 1 {
                head.push(byte[0]);
            }
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .expect("write");
            heads.push(String::from_utf8_lossy(&head).into_owned());
        }
        heads
    });
    let secrets = tempfile::tempdir().expect("tempdir");
    let token = secrets.path().join("token");
    std::fs::write(&token, "s3cret-token\n").expect("write token");
    let url = format!("http://{addr}/prometheus/");
    let run = slo_report(&[
        "--prometheus",
        &url,
        "--bearer-token-file",
        token.to_str().expect("utf-8 path"),
        "--end",
        "1769817600",
        "--window",
        "7d",
        "--timeout",
        "7s",
    ]);
    assert_eq!(run.code, Some(0), "{run}");
    let heads = server.join().expect("listener thread");
    assert_eq!(heads.len(), QUERIES);
    // The queries run a few at a time, so in no fixed order. The coverage check is evaluated
    // at the window's start.
    let start = "GET /prometheus/api/v1/query?query=count%28netprobe_peer_requests_total%7B%7D%29&time=1769212800.000&timeout=7s HTTP/1.1\r\n";
    assert!(
        heads.iter().any(|h| h.starts_with(start)),
        "no {start:?} in {heads:#?}"
    );
    let first = "GET /prometheus/api/v1/query?query=sum%28increase%28netprobe_dns_lookups_total%7B%7D%5B604800s%5D%29%29&time=1769817600.000&timeout=7s HTTP/1.1\r\n";
    assert!(
        heads.iter().any(|h| h.starts_with(first)),
        "no {first:?} in {heads:#?}"
    );
    for head in &heads {
        assert!(
            head.to_ascii_lowercase()
                .contains("\r\nauthorization: bearer s3cret-token\r\n"),
            "{head}"
        );
    }
}

/// A Prometheus of the test's own that gives every request the same `status` and `body`, until
/// dropped; it counts the requests.
struct CannedPrometheus {
    addr: SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
    served: Option<std::thread::JoinHandle<usize>>,
}

impl CannedPrometheus {
    fn start(status: &str, body: Vec<u8>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let status = status.to_owned();
        let served = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let mut served = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let mut stream = match listener.accept() {
                        Ok((stream, _)) => stream,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5));
                            continue;
                        }
                        Err(e) => panic!("accept: {e}"),
                    };
                    stream.set_nonblocking(false).expect("blocking");
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                        head.push(byte[0]);
                    }
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(&body);
                    served += 1;
                }
                served
            }
        });
        Self {
            addr,
            stop,
            served: Some(served),
        }
    }

    /// Stops serving; how many requests it answered.
    fn finish(mut self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.served
            .take()
            .map(|t| t.join().expect("server thread"))
            .unwrap_or(0)
    }
}

impl Drop for CannedPrometheus {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.served.take() {
            let _ = t.join();
        }
    }
}

/// `slo-report args` with its output as raw bytes (a terminal gets them as they are), waiting
/// at most 60 s.
fn slo_report_bytes(args: &[&str]) -> (Option<i32>, Vec<u8>, Vec<u8>) {
    let mut child = Command::new(bin())
        .arg("slo-report")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kube-netprobe slo-report");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = r.read_to_end(&mut out);
            out
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
    let status = poll("slo-report to exit", Duration::from_secs(60), || {
        child
            .try_wait()
            .expect("wait")
            .ok_or_else(|| "still running".to_owned())
    });
    (
        status.code(),
        stdout.join().expect("stdout reader"),
        stderr.join().expect("stderr reader"),
    )
}

#[test]
fn huge_values_print_for_humans() {
    let body = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1769817600,"1e308"]}]}}"#;
    let prometheus = CannedPrometheus::start("200 OK", body.to_vec());
    let url = format!("http://{}/", prometheus.addr);
    let (code, stdout, stderr) = slo_report_bytes(&["--prometheus", &url, "--end", "1769817600"]);
    let stdout = String::from_utf8(stdout).expect("UTF-8 report");
    let stderr = String::from_utf8_lossy(&stderr);
    assert!(prometheus.finish() > 0);
    assert!(
        code == Some(0) || code == Some(1),
        "exit {code:?}\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("1.00e308 / 1.00e308"),
        "events not in short form:\n{stdout}"
    );
    let longest = stdout.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 200, "a {longest}-character line:\n{stdout}");
    assert!(
        !stdout.contains("0000000000"),
        "a long run of digits:\n{stdout}"
    );
}

#[test]
fn control_bytes_from_the_server_are_escaped() {
    let prometheus = CannedPrometheus::start(
        "502 Bad Gateway",
        b"upstream\0down \xff\x1b[2J\x07 gone".to_vec(),
    );
    let url = format!("http://{}/", prometheus.addr);
    let (code, stdout, stderr) = slo_report_bytes(&["--prometheus", &url, "--end", "1769817600"]);
    prometheus.finish();
    let shown = String::from_utf8_lossy(&stderr);
    assert_eq!(code, Some(3), "{shown}");
    assert!(
        shown.contains(r"answered HTTP 502")
            && shown.contains(r"upstream\u{0}down \xff\u{1b}[2J\u{7} gone"),
        "the body is not shown escaped:\n{shown}"
    );
    for (name, out) in [("stdout", &stdout), ("stderr", &stderr)] {
        let raw: Vec<u8> = out
            .iter()
            .copied()
            .filter(|b| (*b < 0x20 && *b != b'\n') || *b == 0x7f || *b == 0xff)
            .collect();
        assert!(
            raw.is_empty(),
            "raw control bytes {raw:?} on {name}: {shown}"
        );
    }
}
