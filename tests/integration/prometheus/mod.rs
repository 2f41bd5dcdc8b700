//! A real Prometheus (Debian's `prometheus`) on loopback, evaluating the rules of `alerts/`:
//! the fixture (also used by the `alertmanager`, `blame` and `cluster` suites) and the suites
//! that read only its HTTP API.

// What the dashboards must show in `alerts_and_dashboards`.
mod dashboards;

// The suites.
mod alerts_and_dashboards;
mod coredns_replica;
mod storage_stuck;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::util::{LoggedServer, http_get};

use self::dashboards::substitute;

/// The node the dashboards are looked at for ($node), with every fault.
const NODE: &str = "e2e-node";
const POD: &str = "kube-netprobe-e2e";
/// A second node whose only fault is the dead DNS server for one name: the dashboards' numbers
/// for $node must not include it, and its alert must carry its own node.
const NODE_B: &str = "e2e-node-b";
const POD_B: &str = "kube-netprobe-e2e-b";
const NAMESPACE: &str = "kube-netprobe";
const JOB: &str = "kube-netprobe";
/// Every `for:` of the rule files becomes this.
const SHORT_FOR: &str = "1s";
/// Bound on Prometheus's start, the first scrape, and the alerts reaching `firing`.
const WAIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Prometheus fixture

/// Debian's `prometheus` on 127.0.0.1 with a temporary TSDB, killed (and its directory removed)
/// on drop, also when the test panics.
pub struct Prometheus {
    // Field order is drop order: the process, then its directory.
    server: LoggedServer,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

/// A loopback TCP port that nothing listens on at the moment it is returned.
pub fn free_tcp_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind TCP 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

impl Prometheus {
    /// Where the binary is, if installed.
    pub fn binary() -> Option<PathBuf> {
        ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
    }

    /// Starts Prometheus with `config` (YAML; rule files are given as `rules/<name>` and
    /// written from `rules`) and waits until it is ready.
    pub fn start(config: &str, rules: &[(String, String)]) -> Self {
        let binary = Self::binary().expect("prometheus binary");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("rules")).expect("mkdir rules");
        for (name, text) in rules {
            std::fs::write(dir.path().join("rules").join(name), text).expect("write rules");
        }
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
        let mut command = Command::new(&binary);
        command
            .current_dir(dir.path())
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"));
        Self {
            server: LoggedServer::start("prometheus", command, addr, WAIT),
            addr,
            _dir: dir,
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.server.log_tail(lines)
    }

    /// GET an API path; `Ok(data)` when Prometheus says `"status": "success"`, else the error
    /// it gave (or the transport error).
    pub fn api(&self, path_and_query: &str) -> Result<Value, String> {
        let resp = http_get(self.addr, path_and_query)
            .map_err(|e| format!("GET {path_and_query}: {e}"))?;
        let body: Value = serde_json::from_str(&resp.body).map_err(|e| {
            format!(
                "GET {path_and_query}: status {}: {e}: {}",
                resp.status, resp.body
            )
        })?;
        if body["status"] == "success" {
            Ok(body["data"].clone())
        } else {
            Err(format!(
                "status {}: {}: {}",
                resp.status, body["errorType"], body["error"]
            ))
        }
    }

    /// Runs an instant query now; returns the result vector.
    pub fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let data = self.api(&format!("/api/v1/query?query={}", urlencode(expr)))?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// Runs a range query over the last `range`, at `step`; returns the result matrix.
    pub fn query_range(
        &self,
        expr: &str,
        range: Duration,
        step: Duration,
    ) -> Result<Vec<Value>, String> {
        let end = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        let start = end - range.as_secs_f64();
        let data = self.api(&format!(
            "/api/v1/query_range?query={}&start={start:.3}&end={end:.3}&step={}",
            urlencode(expr),
            step.as_secs_f64()
        ))?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The rule file with every `for: <duration>` line replaced by `for: 1s`, so alerts fire
/// within seconds of their condition; expressions, windows, labels and annotations unchanged.
pub fn shorten_for(text: &str) -> String {
    text.lines()
        .map(|line| {
            let trimmed = line.trim_start();
            if trimmed.starts_with("for:") {
                let indent = &line[..line.len() - trimmed.len()];
                format!("{indent}for: {SHORT_FOR}")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The rule files alerts/*.yaml, `for:` shortened, as (file name, text).
fn rule_files() -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(repo().join("alerts"))
        .expect("read alerts/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .filter_map(|p| {
            let text = std::fs::read_to_string(&p).expect("read rule file");
            // Rule files only (a top-level `groups:`), should alerts/ hold other YAML too.
            text.lines().any(|l| l.starts_with("groups:")).then(|| {
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    shorten_for(&text),
                )
            })
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no rule files in alerts/");
    files
}

// ---------------------------------------------------------------------------------------------
// Alerts

/// One active alert as /api/v1/rules reports it.
#[derive(Debug, Clone)]
pub struct Active {
    pub name: String,
    pub state: String,
    pub labels: serde_json::Map<String, Value>,
    /// The rule's expression uses an SLO recording rule.
    pub slo: bool,
    /// When the alert went pending (Unix seconds).
    pub active_at: f64,
}

impl Active {
    pub fn label(&self, k: &str) -> &str {
        self.labels.get(k).and_then(Value::as_str).unwrap_or("")
    }
}

impl std::fmt::Display for Active {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let labels: Vec<String> = self
            .labels
            .iter()
            .filter(|(k, _)| *k != "alertname")
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect();
        write!(
            f,
            "{} [{}] {{{}}}",
            self.name,
            self.state,
            labels.join(", ")
        )
    }
}

/// Rules as loaded: (alerting rules' active alerts, names of recording rules, last evaluation
/// of the rule groups as Unix seconds, the oldest one).
pub fn rules_state(prom: &Prometheus) -> Result<(Vec<Active>, Vec<String>, f64), String> {
    let data = prom.api("/api/v1/rules")?;
    let mut active = Vec::new();
    let mut records = Vec::new();
    let mut oldest_eval = f64::INFINITY;
    for group in data["groups"].as_array().into_iter().flatten() {
        let last = group["lastEvaluation"].as_str().unwrap_or_default();
        oldest_eval = oldest_eval.min(rfc3339_seconds(last).unwrap_or(0.0));
        for rule in group["rules"].as_array().into_iter().flatten() {
            let name = rule["name"].as_str().unwrap_or_default().to_string();
            if rule["type"] == "recording" {
                records.push(name);
                continue;
            }
            let slo = rule["query"]
                .as_str()
                .unwrap_or_default()
                .contains("netprobe_slo:");
            for alert in rule["alerts"].as_array().into_iter().flatten() {
                let labels = alert["labels"].as_object().cloned().unwrap_or_default();
                active.push(Active {
                    name: name.clone(),
                    state: alert["state"].as_str().unwrap_or_default().to_string(),
                    slo: slo || labels.contains_key("slo"),
                    active_at: rfc3339_seconds(alert["activeAt"].as_str().unwrap_or_default())
                        .unwrap_or(0.0),
                    labels,
                });
            }
        }
    }
    Ok((active, records, oldest_eval))
}

/// Seconds since the epoch of an RFC 3339 UTC timestamp as Prometheus writes it
/// (`2026-11-26T14:00:00.123456789Z`).
fn rfc3339_seconds(s: &str) -> Option<f64> {
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let time = time.trim_end_matches('Z');
    let (hms, _) = time.split_once(['+', '-']).unwrap_or((time, ""));
    let mut t = hms.split(':');
    let (h, min, sec) = (
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
    );
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + h * 3600.0 + min * 60.0 + sec)
}

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "(none)".into();
    }
    items.iter().map(|i| format!("\n    {i}")).collect()
}

/// One scrape job for the daemons, each target with the labels the chart's ServiceMonitor adds.
fn prometheus_config(targets: &[(SocketAddr, &str, &str)]) -> String {
    let mut config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files: [\"rules/*.yaml\"]\n\
         scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n"
    );
    for (addr, node, pod) in targets {
        config.push_str(&format!(
            "      - targets: [\"{addr}\"]\n        \
             labels: {{ node: {node}, namespace: {NAMESPACE}, pod: {pod} }}\n"
        ));
    }
    config
}

#[test]
fn for_durations_are_shortened_and_nothing_else_changes() {
    let rules = "      - alert: X\n        expr: rate(x[5m]) > 0\n        for: 10m\n        \
                 labels:\n          severity: warning\n";
    let want = "      - alert: X\n        expr: rate(x[5m]) > 0\n        for: 1s\n        \
                labels:\n          severity: warning\n";
    assert_eq!(shorten_for(rules), want);
    assert_eq!(
        rfc3339_seconds("2026-11-26T14:00:00.5Z"),
        Some(1_795_701_600.5)
    );
    assert_eq!(urlencode("up{a=\"b c\"}"), "up%7Ba%3D%22b%20c%22%7D");
    assert_eq!(
        substitute("rate(x{node=~\"$node\"}[$__rate_interval]) $__range ${cluster}"),
        format!("rate(x{{node=~\"{NODE}\"}}[1m]) 5m .*")
    );
}
