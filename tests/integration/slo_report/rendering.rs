//! What slo-report prints of what the server sends: huge values for humans, control bytes
//! escaped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::util::{bin, poll};

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
