//! Debian's Prometheus serving the backfilled TSDB, with basic auth (and TLS when asked).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::util::{capture, poll};

use super::{PASSWORD_BCRYPT, USER};

/// Whether `tool version_arg` runs and succeeds.
pub(super) fn have(tool: &str, version_arg: &str) -> bool {
    Command::new(tool)
        .arg(version_arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Fails, naming what to install, unless prometheus and promtool are here.
pub(super) fn require_prometheus() {
    assert!(
        have("prometheus", "--version") && have("promtool", "--version"),
        "prometheus/promtool missing: `make deps` (scripts/install-test-deps) installs them \
         (Debian package `prometheus`)"
    );
}

/// Debian's Prometheus on 127.0.0.1 serving a backfilled TSDB; killed, and its directory
/// removed, on drop, also when the test panics.
pub(super) struct Prometheus {
    child: Child,
    pub(super) addr: SocketAddr,
    log: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Backfills `openmetrics` into a fresh TSDB and serves it, demanding basic auth.
    pub(super) fn backfilled(openmetrics: &str) -> Self {
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
    pub(super) fn spawn(dir: tempfile::TempDir, web_yaml: &str) -> Self {
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

    pub(super) fn url(&self) -> String {
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
