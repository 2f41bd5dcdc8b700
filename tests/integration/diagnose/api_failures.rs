//! API servers that cannot be read: unreachable, silent, hanging, answering too much; and an
//! `--out` that cannot be written.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{Checks, bin};

use super::{Run, diagnose, kubeconfig_for};

#[test]
fn diagnose_exits_3_within_the_timeout_when_the_api_server_is_unreachable() {
    let out = tempfile::tempdir().unwrap();
    let mut checks = Checks::default();

    // Connection refused: a port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let refused = kubeconfig_for(out.path(), &format!("https://127.0.0.1:{port}"));
    let r = diagnose("refused", &refused, out.path(), &["--timeout", "3s"]);
    checks.that(
        r.code == Some(3)
            && r.stderr
                .contains("cannot reach the Kubernetes API server at https://127.0.0.1:")
            // Far below a hang, far above a loaded machine's start-up.
            && r.took < Duration::from_secs(30),
        format!(
            "refused: want exit 3 and a clear message, without waiting\n{}",
            r.context()
        ),
    );

    // A server that accepts connections and never answers: the timeout bounds the wait.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = hung.local_addr().unwrap().port();
    let silent = kubeconfig_for(out.path(), &format!("https://127.0.0.1:{port}"));
    let r = diagnose("silent", &silent, out.path(), &["--timeout", "2s"]);
    checks.that(
        r.code == Some(3) && r.stderr.contains("within 2s") && r.took < Duration::from_secs(30),
        format!(
            "silent server: want exit 3 on the 2s timeout, not a hang\n{}",
            r.context()
        ),
    );
    checks.that(
        !r.dir.join("report.json").exists(),
        "a report was written although nothing could be read".to_owned(),
    );
    drop(hung);

    // A usage error is clap's exit 2, before anything is read.
    let r = diagnose("usage", &refused, out.path(), &["--format", "yaml"]);
    checks.eq("usage error exit", r.code, Some(2));
    checks.finish("unreachable API server");
}

/// What a fake API server of the test's own does with every request but `GET /version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FakeApi {
    /// Reads the request and never answers.
    Hang,
    /// Answers 200 with a 200 MB JSON body, as fast as the client takes it.
    Huge,
}

/// A plain-HTTP API server on loopback that answers `/version` and does [`FakeApi`] with the
/// rest; it counts connections and the body bytes it got to send on each.
struct FakeApiServer {
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    sent: std::sync::Arc<std::sync::Mutex<Vec<(String, u64)>>>,
    accept: Option<std::thread::JoinHandle<()>>,
}

const HUGE_BODY: u64 = 200 * 1024 * 1024;

impl FakeApiServer {
    fn start(mode: FakeApi) -> Self {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let sent = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (stop2, connections2, sent2) = (stop.clone(), connections.clone(), sent.clone());
        let accept = std::thread::spawn(move || {
            let mut handlers = Vec::new();
            while !stop2.load(Ordering::Relaxed) {
                let stream = match listener.accept() {
                    Ok((stream, _)) => stream,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    Err(e) => panic!("accept: {e}"),
                };
                connections2.fetch_add(1, Ordering::Relaxed);
                let (stop, sent) = (stop2.clone(), sent2.clone());
                handlers.push(std::thread::spawn(move || {
                    let mut stream = stream;
                    stream.set_nonblocking(false).expect("blocking");
                    stream
                        .set_read_timeout(Some(Duration::from_millis(100)))
                        .expect("read timeout");
                    let chunk = [b'x'; 64 * 1024];
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    // Requests one after another on the connection, until the client goes.
                    while !stop.load(Ordering::Relaxed) {
                        let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
                            match stream.read(&mut buf) {
                                Ok(0) => return,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        std::io::ErrorKind::WouldBlock
                                            | std::io::ErrorKind::TimedOut
                                    ) => {}
                                Err(_) => return,
                            }
                            continue;
                        };
                        let request = String::from_utf8_lossy(&head[..end]).into_owned();
                        head.drain(..end + 4);
                        let path = request.split(' ').nth(1).unwrap_or("").to_owned();
                        if path.starts_with("/version") {
                            let body = r#"{"major":"1","minor":"20","gitVersion":"v1.20.0"}"#;
                            let _ = write!(
                                stream,
                                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            continue;
                        }
                        match mode {
                            FakeApi::Hang => {
                                while !stop.load(Ordering::Relaxed) {
                                    std::thread::sleep(Duration::from_millis(10));
                                }
                                return;
                            }
                            FakeApi::Huge => {
                                let _ = write!(
                                    stream,
                                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {HUGE_BODY}\r\n\r\n{{\"items\":\""
                                );
                                let mut n = 0u64;
                                while n < HUGE_BODY && !stop.load(Ordering::Relaxed) {
                                    match stream.write(&chunk) {
                                        Ok(w) => n += w as u64,
                                        Err(_) => break,
                                    }
                                }
                                sent.lock().expect("sent").push((path, n));
                                return;
                            }
                        }
                    }
                }));
            }
            for h in handlers {
                let _ = h.join();
            }
        });
        Self {
            addr,
            stop,
            connections,
            sent,
            accept: Some(accept),
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// `diagnose` as [`diagnose`] does, but waiting at most `limit` for it (then killed, and the
/// test fails), and watching its peak RSS (VmHWM, KiB) while it runs.
fn diagnose_within(
    what: &str,
    kubeconfig: &Path,
    out: &Path,
    args: &[&str],
    limit: Duration,
) -> (Run, u64) {
    let dir = out.join(what);
    let started = Instant::now();
    let mut child = Command::new(bin())
        .arg("diagnose")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--out")
        .arg(&dir)
        .args(args)
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kube-netprobe diagnose");
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = r.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
    let status_path = format!("/proc/{}/status", child.id());
    let mut hwm = 0u64;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if let Some(kib) = std::fs::read_to_string(&status_path).ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        }) {
            hwm = hwm.max(kib);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: diagnose {args:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let report = std::fs::read_to_string(dir.join("report.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let run = Run {
        what: what.to_owned(),
        code: status.code(),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
        took: started.elapsed(),
        report,
        dir,
    };
    (run, hwm)
}

fn read_errors(run: &Run) -> Vec<(String, String, String)> {
    run.report
        .as_ref()
        .and_then(|r| r["collection"]["errors"].as_array())
        .map(|errors| {
            errors
                .iter()
                .map(|e| {
                    let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
                    (s("call"), s("reason"), s("message"))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn diagnose_timeout_bounds_the_whole_run_when_every_read_hangs() {
    let server = FakeApiServer::start(FakeApi::Hang);
    let out = tempfile::tempdir().unwrap();
    let kubeconfig = kubeconfig_for(out.path(), &format!("http://{}", server.addr));
    // Several reads in a row each waited the whole --timeout before it bounded the run: 21 s
    // for 3 s. The wait here allows the timeout and generous start-up, far below that.
    let (r, _) = diagnose_within(
        "hang",
        &kubeconfig,
        out.path(),
        &["--timeout", "2s"],
        Duration::from_secs(10),
    );
    let mut checks = Checks::default();
    checks.eq("exit code (a partial report)", r.code, Some(1));
    let errors = read_errors(&r);
    checks.that(
        errors.len() >= 10,
        format!(
            "every read should have failed:\n{errors:#?}\n{}",
            r.context()
        ),
    );
    for (call, reason, message) in &errors {
        checks.that(
            reason == "timeout"
                && message == "no answer before --timeout (2s) ran out (it bounds the whole run)",
            format!("{call}: {reason}: {message}"),
        );
    }
    checks.that(
        r.stdout
            .contains("timeout (no answer before --timeout (2s) ran out"),
        format!("stdout does not say why:\n{}", r.context()),
    );
    checks.finish("hanging API server");
}

#[test]
fn diagnose_caps_api_responses_and_names_the_read() {
    let server = FakeApiServer::start(FakeApi::Huge);
    let out = tempfile::tempdir().unwrap();
    let kubeconfig = kubeconfig_for(out.path(), &format!("http://{}", server.addr));
    let (r, hwm_kib) = diagnose_within(
        "huge",
        &kubeconfig,
        out.path(),
        &["--timeout", "60s", "--max-response-size", "1MiB"],
        Duration::from_secs(90),
    );
    let mut checks = Checks::default();
    checks.eq("exit code (a partial report)", r.code, Some(1));
    let errors = read_errors(&r);
    // Each read stops at the cap, or earlier once the answers read together hold 4 times it.
    let one = "the answer is larger than --max-response-size (1MiB); not read further";
    let together = "the answers being read at once passed 4 x --max-response-size (4MiB) in \
                    all; this one was not read further";
    let nodes = errors.iter().find(|(call, _, _)| call == "list nodes");
    checks.that(
        nodes.is_some_and(|(_, reason, message)| {
            reason == "too_large" && (message == one || message == together)
        }),
        format!("list nodes: {nodes:?}\n{}", r.context()),
    );
    checks.that(
        errors.len() >= 10
            && errors
                .iter()
                .all(|(_, reason, m)| reason == "too_large" && (m == one || m == together))
            && errors.iter().any(|(_, _, m)| m == one),
        format!("{errors:#?}"),
    );
    let markdown = std::fs::read_to_string(r.dir.join("report.md")).unwrap_or_default();
    checks.that(
        markdown.contains("list nodes") && r.stdout.contains("too_large (the answer"),
        format!("the reads are not named:\n{markdown}\n{}", r.context()),
    );
    drop(out);
    let sent = server.sent.lock().expect("sent").clone();
    // The client stops reading at the cap: what the server got to send is the cap plus what
    // the kernel's socket buffers held, far from the 200 MB offered.
    let most = sent.iter().map(|(_, n)| *n).max().unwrap_or(0);
    checks.that(
        !sent.is_empty() && most < 32 * 1024 * 1024,
        format!("bytes sent per read: {sent:?}"),
    );
    checks.that(
        hwm_kib < 256 * 1024,
        format!("diagnose's RSS reached {hwm_kib} KiB"),
    );
    checks.finish("huge API responses");
}

#[test]
fn diagnose_exits_3_before_any_read_when_out_cannot_be_written() {
    let server = FakeApiServer::start(FakeApi::Hang);
    let out = tempfile::tempdir().unwrap();
    let kubeconfig = kubeconfig_for(out.path(), &format!("http://{}", server.addr));
    // Root may write anywhere; a path through a regular file cannot be a directory for anyone.
    let blocker = out.path().join("blocker");
    std::fs::write(&blocker, "a file, not a directory\n").unwrap();
    let (r, _) = diagnose_within(
        "blocker/report",
        &kubeconfig,
        out.path(),
        &["--timeout", "2s"],
        Duration::from_secs(10),
    );
    let mut checks = Checks::default();
    checks.eq("exit code", r.code, Some(3));
    let dir = out.path().join("blocker/report");
    checks.that(
        r.stderr.contains(&format!(
            "error: --out {}: cannot write the report there:",
            dir.display()
        )),
        r.context(),
    );
    checks.eq("connections to the API server", server.connections(), 0);
    checks.eq("stdout", r.stdout.as_str(), "");
    checks.finish("unwritable --out");
}
