//! A real Alertmanager (Debian's `prometheus-alertmanager`) running the shipped example
//! configuration, `alerts/alertmanager/alertmanager.yaml`, with its routes, grouping and
//! inhibition rules as written, two changes only: every receiver posts to a webhook of the
//! test's own on loopback (never to PagerDuty or a ticket system), and the route timers
//! (group_wait, group_interval, repeat_interval) are scaled by the factor the test scales the
//! rules' `for:` by, so that their order (a culprit's alert arrives before its symptoms are sent)
//! is the one a user gets. The test counts the notifications: one webhook POST is one
//! notification, as a pager or ticket system would receive it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::prometheus::free_tcp_port;
use crate::util::LoggedServer;

/// One notification: a webhook POST from Alertmanager.
#[derive(Debug, Clone)]
pub struct Notification {
    /// Unix seconds when the sink received it.
    pub received: f64,
    /// The receiver of the shipped configuration it was routed to (pager, ticket).
    pub receiver: String,
    /// `firing` when any alert in it fires, else `resolved`.
    pub status: String,
    pub alerts: Vec<NotifiedAlert>,
}

#[derive(Debug, Clone)]
pub struct NotifiedAlert {
    pub status: String,
    pub labels: BTreeMap<String, String>,
}

impl NotifiedAlert {
    pub fn label(&self, k: &str) -> &str {
        self.labels.get(k).map(String::as_str).unwrap_or("")
    }
}

impl std::fmt::Display for Notification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let alerts: Vec<String> = self
            .alerts
            .iter()
            .map(|a| {
                let labels: Vec<String> = a
                    .labels
                    .iter()
                    .filter(|(k, _)| {
                        !matches!(
                            k.as_str(),
                            "alertname" | "job" | "namespace" | "instance" | "pod" | "severity"
                        )
                    })
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                format!(
                    "{}[{}]{{{}}}",
                    a.label("alertname"),
                    a.status,
                    labels.join(",")
                )
            })
            .collect();
        write!(f, "{} {}: {}", self.receiver, self.status, alerts.join(" "))
    }
}

/// The test's webhook: an HTTP/1.1 server on 127.0.0.1 that records every POSTed body and
/// answers 200. Stops (and its threads end) on drop.
struct Sink {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Notification>>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Sink {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the webhook sink");
        let addr = listener.local_addr().expect("sink address");
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (received, stop) = (received.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let received = received.clone();
                    std::thread::spawn(move || serve(conn, &received));
                }
            })
        };
        Self {
            addr,
            received,
            stop,
            acceptor: Some(acceptor),
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}

/// Serves one keep-alive connection: each request's body is parsed as Alertmanager's webhook
/// payload and recorded.
fn serve(conn: TcpStream, received: &Mutex<Vec<Notification>>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(120)));
    let mut writer = match conn.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(conn);
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        let mut first = true;
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" || line == "\n" {
                if first {
                    continue;
                }
                break;
            }
            first = false;
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if let Some(n) = parse_notification(&body) {
            received.lock().unwrap_or_else(|e| e.into_inner()).push(n);
        }
        if writer
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}

fn parse_notification(body: &[u8]) -> Option<Notification> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let labels = |a: &Value| -> BTreeMap<String, String> {
        a["labels"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect()
    };
    Some(Notification {
        received: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()?
            .as_secs_f64(),
        receiver: v["receiver"].as_str().unwrap_or_default().to_string(),
        status: v["status"].as_str().unwrap_or_default().to_string(),
        alerts: v["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| NotifiedAlert {
                status: a["status"].as_str().unwrap_or_default().to_string(),
                labels: labels(a),
            })
            .collect(),
    })
}

/// Alertmanager with the shipped configuration (see the module docs), on a free loopback port
/// with its own storage and no cluster; killed and its directory removed on drop.
pub struct Alertmanager {
    // Field order is drop order: the process, then its webhook and its directory.
    _server: LoggedServer,
    addr: SocketAddr,
    sink: Sink,
    _dir: tempfile::TempDir,
}

/// Parses an Alertmanager/Prometheus duration of one unit (`30s`, `5m`, `1h`, `500ms`).
fn parse_duration(s: &str) -> Duration {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .unwrap_or_else(|_| panic!("duration {s:?} in the shipped Alertmanager configuration"));
    let ms = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => panic!("duration {s:?}: unit {unit:?}"),
    };
    Duration::from_millis(n * ms)
}

/// Scales the timers of `route` and its children by `scale`, at least 100 ms each.
fn scale_route(route: &mut Value, scale: f64) {
    for key in ["group_wait", "group_interval", "repeat_interval"] {
        if let Some(d) = route.get(key).and_then(Value::as_str) {
            let ms = (parse_duration(d).as_millis() as f64 * scale).max(100.0) as u64;
            route[key] = Value::String(format!("{ms}ms"));
        }
    }
    if let Some(children) = route.get_mut("routes").and_then(Value::as_array_mut) {
        for child in children {
            scale_route(child, scale);
        }
    }
}

impl Alertmanager {
    pub fn binary() -> Option<PathBuf> {
        ["/usr/bin/prometheus-alertmanager", "/usr/bin/alertmanager"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
    }

    /// The shipped configuration as this fixture runs it (see the module docs).
    pub fn config(sink: SocketAddr, scale: f64) -> Value {
        let path = crate::prometheus::repo().join("alerts/alertmanager/alertmanager.yaml");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let mut config: Value = serde_saphyr::from_str(&text)
            .unwrap_or_else(|e| panic!("parse {}: {e}", path.display()));
        for receiver in config["receivers"]
            .as_array_mut()
            .expect("receivers in the shipped configuration")
        {
            let name = receiver["name"]
                .as_str()
                .expect("receiver name")
                .to_string();
            *receiver = serde_json::json!({
                "name": name,
                "webhook_configs": [{
                    "url": format!("http://{sink}/{name}"),
                    "send_resolved": true,
                }],
            });
        }
        scale_route(&mut config["route"], scale);
        config
    }

    /// Starts it with the shipped configuration, timers scaled by `scale`, and waits until it
    /// is ready.
    pub fn start(scale: f64) -> Self {
        let binary = Self::binary().expect("prometheus-alertmanager binary");
        let sink = Sink::start();
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("alertmanager.yml");
        // JSON is YAML: Alertmanager reads it as is.
        let config = Self::config(sink.addr, scale);
        std::fs::write(&config_path, config.to_string()).expect("write alertmanager.yml");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
        let mut command = Command::new(&binary);
        command
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=");
        Self {
            _server: LoggedServer::start("alertmanager", command, addr, Duration::from_secs(30)),
            addr,
            sink,
            _dir: dir,
        }
    }

    /// The `alerting:` section of a Prometheus configuration that sends to this Alertmanager.
    pub fn prometheus_alerting(&self) -> String {
        format!(
            "alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [\"{}\"]\n",
            self.addr
        )
    }

    /// Every notification received so far, in order.
    pub fn notifications(&self) -> Vec<Notification> {
        self.sink
            .received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Notifications with a firing alert, received at or after `since` (Unix seconds): the pages
    /// and tickets of an incident that started then.
    pub fn firing_since(&self, since: f64) -> Vec<Notification> {
        self.notifications()
            .into_iter()
            .filter(|n| n.received >= since && n.status == "firing")
            .collect()
    }
}

impl Drop for Alertmanager {
    /// The notifications received, when the test failed (the server prints its log itself).
    fn drop(&mut self) {
        if std::thread::panicking() {
            for n in self.notifications() {
                eprintln!("notification: {n}");
            }
        }
    }
}

#[test]
fn the_shipped_configuration_scales_its_timers_and_keeps_its_routes() {
    let config = Alertmanager::config("127.0.0.1:9".parse().unwrap(), 0.1);
    // 30s, 5m and 12h at the top; the SLO route's 5m group_wait.
    assert_eq!(config["route"]["group_wait"], "3000ms");
    assert_eq!(config["route"]["group_interval"], "30000ms");
    assert_eq!(config["route"]["repeat_interval"], "4320000ms");
    let routes = config["route"]["routes"].as_array().expect("routes");
    assert!(
        routes.iter().any(|r| r["group_wait"] == "30000ms"),
        "{routes:?}"
    );
    let receivers = config["receivers"].as_array().expect("receivers");
    assert!(receivers.len() >= 2);
    for r in receivers {
        let url = r["webhook_configs"][0]["url"].as_str().expect("url");
        assert!(url.starts_with("http://127.0.0.1:9/"), "{url}");
        assert!(r.get("pagerduty_configs").is_none());
    }
    assert!(
        config["inhibit_rules"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
    );
}
