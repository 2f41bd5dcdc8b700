//! How slo-report reaches Prometheus: HTTPS verified against a CA file, a bearer token, a
//! path prefix.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::util::poll;

use super::server::{Prometheus, have, require_prometheus};
use super::{field, slo_report};

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
    require_prometheus();
    assert!(
        have("openssl", "version"),
        "openssl missing: `make deps` (scripts/install-test-deps) installs it"
    );
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
