//! Shared fixtures: the real `kube-netprobe` binary as a child process ([`Daemon`]), its
//! OpenMetrics output read with the library's parser ([`Metrics`]), and bounded waits that fail
//! with what they saw.

// Shared by every suite; not every suite uses every helper.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::IpAddr;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kube_netprobe::diagnose::scrape;

/// How long the daemon may take to announce its HTTP listener.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often waits re-check their condition.
const POLL_EVERY: Duration = Duration::from_millis(50);

/// Path of the binary under test: the one cargo built for this test target, or `NETPROBE_BIN`
/// when set (scripts/bench-http-limits runs a suite against the release build that way).
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("NETPROBE_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_kube-netprobe").to_owned())
    })
}

/// Whether this process runs with effective uid 0 (read from /proc, so no libc dependency).
pub fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .is_some_and(|euid| euid == "0")
}

/// Polls `check` until it returns `Ok`, at most `timeout`. `Err` carries what was seen last,
/// which the panic message reports next to `what` (the expectation).
pub fn poll<T>(what: &str, timeout: Duration, check: impl FnMut() -> Result<T, String>) -> T {
    poll_every(what, timeout, POLL_EVERY, check)
}

/// [`poll`], checking every `period` (for checks that cost a process or an API call).
pub fn poll_every<T>(
    what: &str,
    timeout: Duration,
    period: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => std::thread::sleep(period),
        }
    }
}

/// Runs `kubectl` with `kubeconfig`, optionally feeding `stdin`; never panics on exit status.
pub fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kubectl");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("kubectl stdin")
            .write_all(input.as_bytes())
            .expect("write kubectl stdin");
    }
    child.wait_with_output().expect("wait for kubectl")
}

/// Collects failed expectations so a test can report all of them at once.
#[derive(Default)]
pub struct Checks {
    failures: Vec<String>,
}

impl Checks {
    pub fn that(&mut self, ok: bool, failure: impl Into<String>) {
        if !ok {
            self.failures.push(failure.into());
        }
    }

    pub fn eq<T: PartialEq + std::fmt::Debug>(&mut self, what: &str, got: T, want: T) {
        if got != want {
            self.failures
                .push(format!("{what}: got {got:?}, want {want:?}"));
        }
    }

    /// Panics listing every failure, followed by `context`, if there was any.
    pub fn finish(self, context: &str) {
        if !self.failures.is_empty() {
            panic!(
                "{} failed expectation(s):\n  {}\n{context}",
                self.failures.len(),
                self.failures.join("\n  ")
            );
        }
    }
}

/// A loopback port that nothing listens on at the moment it is returned (UDP; bound, then freed).
pub fn closed_udp_port() -> u16 {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind UDP 127.0.0.1:0");
    sock.local_addr().expect("local addr").port()
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// A response read by [`http_get`].
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names in lower case, in order received.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn content_type(&self) -> Option<&str> {
        self.header("content-type")
    }
}

/// The `Accept` header Prometheus sends when it scrapes: OpenMetrics preferred.
pub const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,\
    application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// A plain HTTP/1.1 GET with `Connection: close` and `Accept: */*` (what curl sends); enough
/// for the daemon's few endpoints.
pub fn http_get(addr: SocketAddr, path: &str) -> io::Result<HttpResponse> {
    http_get_accept(addr, path, "*/*")
}

/// As [`http_get`], with the given `Accept` header.
pub fn http_get_accept(addr: SocketAddr, path: &str, accept: &str) -> io::Result<HttpResponse> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_http_response(&raw).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn parse_http_response(raw: &[u8]) -> Result<HttpResponse, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|e| e.to_string())?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    let body = String::from_utf8(body).map_err(|e| e.to_string())?;
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size_text = std::str::from_utf8(&data[..eol]).map_err(|e| e.to_string())?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|e| format!("bad chunk size {size_text:?}: {e}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

// ---------------------------------------------------------------------------------------------
// Daemon

/// The real binary running `run --config <file>`, killed on drop (also when the test panics).
pub struct Daemon {
    child: Child,
    addr: SocketAddr,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    config_path: PathBuf,
    _dir: tempfile::TempDir,
}

pub fn capture(stream: impl Read + Send + 'static, into: Arc<Mutex<String>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let mut text = into.lock().unwrap_or_else(|e| e.into_inner());
            text.push_str(&line);
            text.push('\n');
        }
    })
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI sequence: ESC [ ... final byte in @..~
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) && c != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Finds `addr=<ip:port>` on a log line that also says `listening`.
fn listening_addr(log: &str) -> Option<SocketAddr> {
    log.lines().map(strip_ansi).find_map(|line| {
        if !line.contains("listening") {
            return None;
        }
        // Text format: `addr=127.0.0.1:1234`; JSON format: `"addr":"127.0.0.1:1234"`.
        let rest = match line.find("addr=") {
            Some(i) => &line[i + "addr=".len()..],
            None => &line[line.find("\"addr\":")? + "\"addr\":".len()..],
        };
        let token = rest
            .split(|c: char| c.is_whitespace() || c == ',' || c == '}')
            .next()?;
        token.trim_matches('"').parse().ok()
    })
}

impl Daemon {
    /// Writes `config_yaml` to a temp file and starts `kube-netprobe run --config <file>`.
    pub fn start(config_yaml: &str) -> Self {
        Self::start_with(config_yaml, &[])
    }

    /// As [`Daemon::start`], with extra arguments after `run --config <file>`.
    pub fn start_with(config_yaml: &str, extra_args: &[&str]) -> Self {
        Self::start_in(
            Command::new(bin()),
            config_yaml,
            extra_args,
            IpAddr::from([127, 0, 0, 1]),
        )
    }

    /// Starts `program run --config <file> extra_args`, where `program` is the binary or a
    /// wrapper that execs it (`ip netns exec NS kube-netprobe`), with any environment the test
    /// set on it. A daemon that announces `0.0.0.0` is reached at `unspecified_as`.
    pub fn start_in(
        mut program: Command,
        config_yaml: &str,
        extra_args: &[&str],
        unspecified_as: IpAddr,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("config.yaml");
        std::fs::write(&config_path, config_yaml).expect("write config");
        // Never let a test daemon find a real cluster: no in-cluster environment, and a
        // kubeconfig path that does not exist unless the test gives its own.
        let own_kubeconfig = program
            .get_envs()
            .any(|(k, v)| k == "KUBECONFIG" && v.is_some());
        if !own_kubeconfig {
            program.env("KUBECONFIG", dir.path().join("no-kubeconfig"));
        }
        let shown = format!("{program:?}");
        program.arg("run");
        // A `--config` of the test's own (a ConfigMap-like layout) replaces the harness's file.
        if !extra_args.contains(&"--config") {
            program.arg("--config").arg(&config_path);
        }
        let mut child = program
            .args(extra_args)
            .env("RUST_LOG", "info")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBERNETES_SERVICE_PORT")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {shown}: {e}"));
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            capture(child.stdout.take().expect("stdout"), stdout.clone()),
            capture(child.stderr.take().expect("stderr"), stderr.clone()),
        ];
        let mut daemon = Self {
            child,
            // Replaced below once the daemon says where it listens.
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stdout,
            stderr,
            readers,
            config_path,
            _dir: dir,
        };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        daemon.addr = loop {
            let logs = format!("{}{}", daemon.stderr_text(), daemon.stdout_text());
            if let Some(addr) = listening_addr(&logs) {
                break if addr.ip().is_unspecified() {
                    SocketAddr::new(unspecified_as, addr.port())
                } else {
                    addr
                };
            }
            if let Ok(Some(status)) = daemon.child.try_wait() {
                daemon.join_readers();
                panic!(
                    "daemon exited ({status}) before announcing its listener\nconfig:\n{config_yaml}\n{}",
                    daemon.output_tail(40)
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "daemon did not log a `listening ... addr=<ip:port>` line within \
                     {STARTUP_TIMEOUT:?}\n{}",
                    daemon.output_tail(40)
                );
            }
            std::thread::sleep(POLL_EVERY);
        };
        daemon
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Everything the daemon wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Everything the daemon wrote to stdout so far.
    pub fn stdout_text(&self) -> String {
        self.stdout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The last `lines` lines of stderr and stdout, labelled, for failure messages.
    pub fn output_tail(&self, lines: usize) -> String {
        let tail = |text: String| {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        };
        let mut out = format!(
            "--- daemon stderr (last {lines} lines) ---\n{}",
            tail(self.stderr_text())
        );
        let stdout = self.stdout_text();
        if !stdout.trim().is_empty() {
            let _ = write!(
                out,
                "\n--- daemon stdout (last {lines} lines) ---\n{}",
                tail(stdout)
            );
        }
        out
    }

    /// Whether the process is still running (reaps it if it exited).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn panic_if_exited(&mut self, context: &str) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "daemon exited ({status}) {context}\n{}",
                self.output_tail(40)
            );
        }
    }

    /// GET `path` from the daemon (`Accept: */*`); panics (with the daemon's output) if the
    /// request fails.
    pub fn get(&self, path: &str) -> HttpResponse {
        self.get_accept(path, "*/*")
    }

    /// As [`Daemon::get`], with the given `Accept` header.
    pub fn get_accept(&self, path: &str, accept: &str) -> HttpResponse {
        http_get_accept(self.addr, path, accept).unwrap_or_else(|e| {
            panic!(
                "GET http://{}{path} failed: {e}\n{}",
                self.addr,
                self.output_tail(40)
            )
        })
    }

    /// GET /metrics as Prometheus does (OpenMetrics) and parse it; panics on a non-200 status
    /// or unparsable text.
    pub fn scrape(&self) -> Metrics {
        let resp = self.get_accept("/metrics", PROMETHEUS_ACCEPT);
        assert_eq!(
            resp.status,
            200,
            "GET /metrics: status {}\n{}\n{}",
            resp.status,
            resp.body,
            self.output_tail(40)
        );
        Metrics::parse(&resp.body)
            .unwrap_or_else(|e| panic!("cannot parse /metrics: {e}\n--- body ---\n{}", resp.body))
    }

    /// Scrapes until `check` returns `Ok`, at most `timeout`. `what` names the expectation, and
    /// `check`'s `Err` describes what it saw; both end up in the panic message together with
    /// the tail of the daemon's output. Returns the value and the scrape that satisfied it.
    pub fn wait_until<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Metrics) -> Result<T, String>,
    ) -> (T, Metrics) {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("(no scrape yet)");
        loop {
            self.panic_if_exited(&format!("while waiting for {what}; last seen: {last}"));
            match http_get_accept(self.addr, "/metrics", PROMETHEUS_ACCEPT) {
                Ok(resp) if resp.status == 200 => match Metrics::parse(&resp.body) {
                    Ok(metrics) => match check(&metrics) {
                        Ok(v) => return (v, metrics),
                        Err(seen) => last = seen,
                    },
                    Err(e) => last = format!("unparsable /metrics: {e}"),
                },
                Ok(resp) => last = format!("/metrics status {}", resp.status),
                Err(e) => last = format!("GET /metrics: {e}"),
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}; last seen: {last}\n{}",
                    self.output_tail(40)
                );
            }
            std::thread::sleep(POLL_EVERY);
        }
    }

    /// Waits until the sum of the series `name` matching `labels` (see [`Metrics::sum`])
    /// satisfies `pred`; at least one series must match. Returns the satisfying scrape.
    pub fn wait_for(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        expectation: &str,
        timeout: Duration,
        pred: impl Fn(f64) -> bool,
    ) -> Metrics {
        let what = format!("{} to be {expectation}", selector(name, labels));
        self.wait_until(&what, timeout, |m| {
            let series = m.series(name, labels);
            if series.is_empty() {
                return Err("no such series".into());
            }
            let value: f64 = series.iter().map(|s| s.value).sum();
            if pred(value) {
                Ok(())
            } else {
                Err(format!("{value}"))
            }
        })
        .1
    }

    /// Sends `signal` (a `kill` name such as `TERM` or `INT`) to the daemon.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {} failed", self.pid());
    }

    /// Sends SIGTERM and waits (at most 15 s) for the exit; returns the status and how long the
    /// exit took after the signal.
    pub fn terminate(&mut self) -> (ExitStatus, Duration) {
        self.stop_with("TERM")
    }

    /// Sends `signal` (`TERM`, `INT`) and waits (at most 15 s) for the exit; returns the status
    /// and how long the exit took after the signal.
    pub fn stop_with(&mut self, signal: &str) -> (ExitStatus, Duration) {
        let limit = Duration::from_secs(15);
        let sent = Instant::now();
        self.signal(signal);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for daemon") {
                let took = sent.elapsed();
                self.join_readers();
                return (status, took);
            }
            if sent.elapsed() >= limit {
                panic!(
                    "daemon still running {limit:?} after SIG{signal}\n{}",
                    self.output_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn join_readers(&mut self) {
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.join_readers();
        if std::thread::panicking() {
            eprintln!("{}", self.output_tail(60));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Metrics

/// One sample line of an exposition, as the library's own reader (`diagnose` reads the pods'
/// `/metrics` with it) parses it: the tests and the product share one parser.
pub use kube_netprobe::diagnose::scrape::Sample;

fn matches(sample: &Sample, name: &str, labels: &[(&str, &str)]) -> bool {
    sample.name == name
        && labels
            .iter()
            .all(|(k, v)| sample.labels.get(*k).is_some_and(|have| have == v))
}

/// A parsed OpenMetrics (or 0.0.4 text) exposition: samples only, `#` lines are skipped, and a
/// line that is not a sample is an error (the daemon's output must parse whole).
#[derive(Debug, Clone)]
pub struct Metrics {
    pub samples: Vec<Sample>,
    pub text: String,
}

/// `name{k="v",...}`, for messages.
pub fn selector(name: &str, labels: &[(&str, &str)]) -> String {
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{name}{{{}}}", labels.join(","))
}

impl Metrics {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut samples = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            samples.push(
                scrape::parse_line(line)
                    .ok_or_else(|| format!("line {}: not a sample line: {line:?}", i + 1))?,
            );
        }
        Ok(Self {
            samples,
            text: text.to_string(),
        })
    }

    /// Every series named `name` whose labels include all of `labels`.
    pub fn series(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| matches(s, name, labels))
            .collect()
    }

    /// The value of the one series named `name` whose labels include all of `labels`; `None`
    /// if none does. Panics if several do (use [`Metrics::sum`] or name more labels).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        match self.series(name, labels).as_slice() {
            [] => None,
            [one] => Some(one.value),
            many => panic!(
                "{} matches {} series; name more labels: {many:?}",
                selector(name, labels),
                many.len()
            ),
        }
    }

    /// The value of the series whose label set is exactly `labels`.
    pub fn get_exact(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.series(name, labels)
            .into_iter()
            .find(|s| s.labels.len() == labels.len())
            .map(|s| s.value)
    }

    /// Sum over every series named `name` whose labels include all of `labels` (0 if none).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.series(name, labels).iter().map(|s| s.value).sum()
    }

    /// The histogram bucket of `family` (without `_bucket`) whose `le` is `le` as a number, so
    /// that `1`, `1.0` and `1e0` all match.
    pub fn bucket(&self, family: &str, labels: &[(&str, &str)], le: f64) -> Option<f64> {
        let mut found = self
            .series(&format!("{family}_bucket"), labels)
            .into_iter()
            .filter(|s| s.labels.get("le").and_then(|v| scrape::parse_value(v)) == Some(le));
        let first = found.next()?;
        assert!(
            found.next().is_none(),
            "{} le={le} matches several series",
            selector(family, labels)
        );
        Some(first.value)
    }

    /// The values a label takes across the series named `name`, sorted and deduplicated.
    pub fn label_values(&self, name: &str, label: &str) -> Vec<String> {
        let mut values: Vec<String> = self
            .samples
            .iter()
            .filter(|s| s.name == name)
            .filter_map(|s| s.labels.get(label).cloned())
            .collect();
        values.sort();
        values.dedup();
        values
    }
}

/// A server process of a test (Prometheus, Alertmanager): its stdout and stderr captured into
/// one log, killed and reaped on drop (also when the test panics, then with its log's tail
/// printed).
pub struct LoggedServer {
    name: &'static str,
    child: Child,
    log: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl LoggedServer {
    /// Spawns `command` (stdin closed, output captured) and waits until `GET /-/ready` on
    /// `addr` answers 200, at most `timeout`; panics with the log's tail if it exits first or
    /// never becomes ready.
    pub fn start(
        name: &'static str,
        mut command: Command,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} ({command:?}): {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            capture(child.stdout.take().expect("stdout"), log.clone()),
            capture(child.stderr.take().expect("stderr"), log.clone()),
        ];
        let mut server = Self {
            name,
            child,
            log,
            readers,
        };
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "{name} exited ({status}) before it was ready\n{}",
                    server.log_tail(40)
                );
            }
            if http_get(addr, "/-/ready").is_ok_and(|r| r.status == 200) {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "{name} not ready on {addr} within {timeout:?}\n{}",
                server.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let all: Vec<&str> = log.lines().collect();
        format!(
            "--- {} log (last {lines} lines) ---\n{}",
            self.name,
            all[all.len().saturating_sub(lines)..].join("\n")
        )
    }
}

impl Drop for LoggedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail(40));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = r#"# HELP netprobe_dns_lookups DNS lookups.
# TYPE netprobe_dns_lookups counter
netprobe_dns_lookups_total{server="127.0.0.1:53",name="a.cluster.local",qtype="A",rcode="NOERROR"} 3
netprobe_dns_lookups_total{server="127.0.0.1:53",name="a.cluster.local",qtype="A",rcode="TIMEOUT"} 1
netprobe_dns_lookups_total{server="system",name="we\"ird\\x\n",qtype="A",rcode="NOERROR"} 2 1700000000.5
# TYPE h histogram
# UNIT h seconds
h_bucket{name="a",le="0.25"} 0
h_bucket{name="a",le="1.0"} 2
h_bucket{name="a",le="+Inf"} 2
h_count{name="a"} 2
build_info 1
# EOF
"#;

    #[test]
    fn parses_openmetrics() {
        let m = Metrics::parse(EXPOSITION).unwrap();
        assert_eq!(m.samples.len(), 8);
        let lookups = "netprobe_dns_lookups_total";
        assert_eq!(
            m.get(
                lookups,
                &[("name", "a.cluster.local"), ("rcode", "TIMEOUT")]
            ),
            Some(1.0)
        );
        assert_eq!(m.sum(lookups, &[("name", "a.cluster.local")]), 4.0);
        assert_eq!(m.get(lookups, &[("name", "we\"ird\\x\n")]), Some(2.0));
        assert_eq!(m.get(lookups, &[("name", "nope")]), None);
        assert_eq!(m.get_exact("h_count", &[("name", "a")]), Some(2.0));
        assert_eq!(m.get_exact("h_count", &[]), None);
        assert_eq!(m.get("build_info", &[]), Some(1.0));
        assert_eq!(m.bucket("h", &[("name", "a")], 1.0), Some(2.0));
        assert_eq!(m.bucket("h", &[("name", "a")], 0.25), Some(0.0));
        assert_eq!(m.bucket("h", &[("name", "a")], f64::INFINITY), Some(2.0));
        assert_eq!(m.label_values(lookups, "rcode"), ["NOERROR", "TIMEOUT"]);
    }

    #[test]
    #[should_panic(expected = "matches 2 series")]
    fn get_refuses_ambiguous_selectors() {
        Metrics::parse(EXPOSITION)
            .unwrap()
            .get("netprobe_dns_lookups_total", &[("name", "a.cluster.local")]);
    }

    #[test]
    fn rejects_broken_lines() {
        assert!(Metrics::parse("x{a=\"1\" 2\n").is_err());
        assert!(Metrics::parse("x{a=1} 2\n").is_err());
        assert!(Metrics::parse("x{a=\"1\"} two\n").is_err());
    }

    #[test]
    fn finds_the_listening_line() {
        let log = "2026-11-26T12:00:00Z  INFO kube_netprobe::config: loaded\n\
                   2026-11-26T12:00:00Z  INFO kube_netprobe::http: listening addr=127.0.0.1:40123\n";
        assert_eq!(
            listening_addr(log),
            Some("127.0.0.1:40123".parse().unwrap())
        );
        let colored = "\u{1b}[32m INFO\u{1b}[0m \u{1b}[2mkube_netprobe::http\u{1b}[0m: listening \u{1b}[3maddr\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.0.0.1:9";
        assert_eq!(
            listening_addr(colored),
            Some("127.0.0.1:9".parse().unwrap())
        );
        assert_eq!(listening_addr("listening soon\n"), None);
    }

    #[test]
    fn parses_http_responses() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\ncontent-length: 2\r\n\r\nok";
        let r = parse_http_response(plain).unwrap();
        assert_eq!(
            (r.status, r.content_type(), r.body.as_str()),
            (200, Some("text/plain"), "ok")
        );
        let chunked =
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        let r = parse_http_response(chunked).unwrap();
        assert_eq!((r.status, r.body.as_str()), (404, "abcde"));
    }

    #[test]
    fn root_check_reads_proc() {
        // Only a sanity check: the answer must agree with `id -u`.
        let out = Command::new("id").arg("-u").output().expect("id -u");
        let uid = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(is_root(), uid == "0");
    }
}
