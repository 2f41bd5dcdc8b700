//! The status page at `/`: this node's view in plain HTML, for a person with a port-forward and
//! a browser. Its peers per protocol, its DNS targets, API-server paths and volumes, each with
//! its last result, latency and age, read from the table the metric recorders keep beside the
//! series ([`crate::metrics::Last`]), so the page and `/metrics` say the same. It shows what the
//! metric labels already show (node names, DNS servers as configured, query names, volume
//! names), never a volume path, a peer's address or anything else from the config file. No script, no style sheet or
//! font from elsewhere (its Content-Security-Policy forbids any fetch), a few KiB.

use std::fmt::Write as _;
use std::time::Instant;

use crate::html::{CSP, DOWN, PENDING, UP, escape};
use crate::metrics::{Last, LastStorage, Metrics, PeerKey, REVISION, VERSION};

/// What the page shows, taken from the metrics at one moment.
#[derive(Debug, Clone)]
pub struct Status {
    pub node: String,
    pub ready: bool,
    pub peers: Vec<(PeerKey, Option<Last>)>,
    pub dns: Vec<(crate::metrics::DnsLabels, Option<Last>)>,
    pub apiserver: Vec<(&'static str, Option<Last>)>,
    pub storage: Vec<(String, LastStorage)>,
    /// The moment ages are counted to.
    pub now: Instant,
    pub version: &'static str,
    pub revision: &'static str,
}

impl Status {
    pub fn read(metrics: &Metrics, node: &str, ready: bool) -> Self {
        Self {
            node: node.to_owned(),
            ready,
            peers: metrics.peers.latest(),
            dns: metrics.dns.latest(),
            apiserver: metrics.apiserver.latest(),
            storage: metrics.storage.latest(),
            now: Instant::now(),
            version: VERSION,
            revision: REVISION,
        }
    }
}

const STYLE: &str = "\
body{font:14px/1.4 system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;\
margin:16px 20px;color:#1b1b1b;background:#fff}\
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:18px 0 6px}\
p.meta{color:#555;margin:0 0 8px}\
table{border-collapse:collapse;margin:0 0 8px}\
th,td{text-align:left;padding:3px 12px 3px 0;border-bottom:1px solid #e4e4e4;white-space:nowrap}\
th{font-weight:600;color:#444}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.r{display:inline-block;min-width:64px;padding:0 6px;border-radius:3px;color:#fff;font-weight:600}\
";

fn age(now: Instant, at: Instant) -> String {
    let s = now.saturating_duration_since(at).as_secs();
    match s {
        0..120 => format!("{s} s ago"),
        120..7200 => format!("{} min ago", s / 60),
        _ => format!("{} h ago", s / 3600),
    }
}

fn millis(seconds: Option<f64>) -> String {
    match seconds {
        Some(s) if s < 0.01 => format!("{:.2} ms", s * 1000.0),
        Some(s) => format!("{:.1} ms", s * 1000.0),
        None => String::new(),
    }
}

/// The result cell: the word on its colour, so it reads without colour too.
fn result(last: Option<&Last>) -> String {
    match last {
        Some(l) => format!(
            "<span class=\"r\" style=\"background:{}\">{}</span>",
            if l.ok { UP } else { DOWN },
            escape(l.result)
        ),
        None => format!("<span class=\"r\" style=\"background:{PENDING}\">pending</span>"),
    }
}

/// One row: the target's cells, then result, latency and age.
fn row(t: &mut String, now: Instant, cells: &[&str], last: Option<&Last>) {
    t.push_str("<tr>");
    for c in cells {
        let _ = write!(t, "<td>{}</td>", escape(c));
    }
    let _ = writeln!(
        t,
        "<td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
        result(last),
        millis(last.and_then(|l| l.seconds)),
        last.map(|l| age(now, l.at)).unwrap_or_default()
    );
}

fn head(t: &mut String, columns: &[&str]) {
    t.push_str("<table>\n<tr>");
    for c in columns {
        let _ = write!(t, "<th>{c}</th>");
    }
    t.push_str("</tr>\n");
}

/// The whole page.
pub fn render(s: &Status) -> String {
    let mut t = String::with_capacity(8 * 1024);
    let _ = write!(
        t,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>kube-netprobe on {node}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>kube-netprobe on {node}</h1>\n<p class=\"meta\">{} · version {} ({}) · \
         the last result of each probe, as in <a href=\"metrics\">/metrics</a></p>\n",
        if s.ready { "ready" } else { "starting" },
        escape(s.version),
        escape(s.revision),
        node = escape(&s.node),
    );

    // Peers, one table per protocol.
    let mut protocols: Vec<&str> = s.peers.iter().map(|(k, _)| k.protocol).collect();
    protocols.sort_unstable();
    protocols.dedup();
    let up = |p: &str| {
        let of: Vec<_> = s.peers.iter().filter(|(k, _)| k.protocol == p).collect();
        let ok = of
            .iter()
            .filter(|(_, l)| l.as_ref().is_some_and(|l| l.ok))
            .count();
        (ok, of.len())
    };
    let _ = writeln!(
        t,
        "<h2>Peers</h2>\n<p>{}</p>",
        if protocols.is_empty() {
            "No peers probed (peer probes off, or no other node discovered yet).".to_owned()
        } else {
            protocols
                .iter()
                .map(|p| {
                    let (ok, n) = up(p);
                    format!("{p}: {ok} of {n} up")
                })
                .collect::<Vec<_>>()
                .join(" · ")
        }
    );
    for p in &protocols {
        let _ = writeln!(t, "<h3>{}</h3>", escape(p));
        head(
            &mut t,
            &["peer node", "family", "result", "latency", "last probe"],
        );
        for (k, last) in s.peers.iter().filter(|(k, _)| k.protocol == *p) {
            row(&mut t, s.now, &[&k.target_node, k.family], last.as_ref());
        }
        t.push_str("</table>\n");
    }

    t.push_str("<h2>DNS</h2>\n");
    if s.dns.is_empty() {
        t.push_str("<p>No DNS targets.</p>\n");
    } else {
        head(
            &mut t,
            &["server", "name", "type", "result", "latency", "last lookup"],
        );
        for (k, last) in &s.dns {
            row(
                &mut t,
                s.now,
                &[&k.server, &k.name, &k.qtype],
                last.as_ref(),
            );
        }
        t.push_str("</table>\n");
    }

    if !s.apiserver.is_empty() {
        t.push_str("<h2>API server</h2>\n");
        head(&mut t, &["path", "result", "latency", "last probe"]);
        for (path, last) in &s.apiserver {
            row(&mut t, s.now, &[path], last.as_ref());
        }
        t.push_str("</table>\n");
    }

    t.push_str("<h2>Storage</h2>\n");
    if s.storage.is_empty() {
        t.push_str("<p>No volumes.</p>\n");
    } else {
        head(
            &mut t,
            &[
                "volume",
                "result",
                "write",
                "read",
                "in flight",
                "last probe",
            ],
        );
        for (volume, v) in &s.storage {
            let rate = |op: &str| {
                v.throughput
                    .iter()
                    .find(|(o, _)| *o == op)
                    .map(|(_, r)| format!("{:.1} MiB/s", r / 1_048_576.0))
                    .unwrap_or_default()
            };
            let stuck = if v.stuck_seconds > 0.0 {
                format!("{:.0} s", v.stuck_seconds)
            } else {
                String::new()
            };
            let _ = writeln!(
                t,
                "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{stuck}</td><td class=\"n\">{}</td></tr>",
                escape(volume),
                result(v.last.as_ref()),
                rate("write"),
                rate("read"),
                v.last
                    .as_ref()
                    .map(|l| age(s.now, l.at))
                    .unwrap_or_default(),
            );
        }
        t.push_str("</table>\n");
    }
    t.push_str("</body>\n</html>\n");
    t
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::{Request, StatusCode, header};
    use tower::ServiceExt;

    use super::*;
    use crate::metrics::DnsLabels;
    use crate::observation::dns::{DnsObservation, Outcome};
    use crate::observation::storage::{StorageObservation, StorageOperation, StorageResult};

    fn peer(node: &str, protocol: &'static str) -> PeerKey {
        PeerKey {
            target_node: node.to_owned(),
            protocol,
            family: "ipv4",
        }
    }

    fn dns(server: &str, name: &str) -> DnsLabels {
        DnsLabels {
            server: server.to_owned(),
            name: name.to_owned(),
            qtype: "A".to_owned(),
        }
    }

    fn lookup(ms: u64) -> DnsObservation {
        DnsObservation {
            outcome: Outcome::Response {
                rcode: hickory_proto::op::ResponseCode::NoError,
                answers: 1,
            },
            duration: Some(Duration::from_millis(ms)),
            udp_queries: 1,
            tcp_queries: 0,
        }
    }

    /// The README's example: node-a probes four peers over http, tcp and bulk; bulk to node-d
    /// times out (an MTU black hole on that path), node-e's tcp probe has not run yet.
    pub(crate) fn example_metrics() -> Metrics {
        let m = Metrics::new();
        for (i, node) in ["node-b", "node-c", "node-d", "node-e"].iter().enumerate() {
            for protocol in ["http", "tcp", "bulk"] {
                let key = peer(node, protocol);
                m.peers.add_target(&key);
                let ms = 0.4 + 0.1 * i as f64;
                match (*node, protocol) {
                    ("node-d", "bulk") => m.peers.record(&key, "timeout", &[]),
                    ("node-e", "tcp") => {}
                    (_, "bulk") => m.peers.record(&key, "success", &[("total", ms * 9e-3)]),
                    _ => m.peers.record(&key, "success", &[("total", ms * 1e-3)]),
                }
            }
        }
        for (server, ms) in [("system", 3), ("coredns/coredns-5d78c9869d-x7k2p", 1)] {
            let key = dns(server, "kubernetes.default.svc.cluster.local");
            m.dns.add_target(&key);
            m.dns.record(&key, &lookup(ms), true);
        }
        let external = dns("system", "example.com");
        m.dns.add_target(&external);
        let servfail = DnsObservation {
            outcome: Outcome::Response {
                rcode: hickory_proto::op::ResponseCode::ServFail,
                answers: 0,
            },
            ..lookup(48)
        };
        m.dns.record(&external, &servfail, false);
        for path in ["direct", "dns"] {
            m.apiserver.add_path(path);
            m.apiserver.record(path, "success", &[("total", 0.0041)]);
        }
        m.storage.add_volume("scratch");
        m.storage.record(
            "scratch",
            &StorageObservation {
                result: StorageResult::success,
                throughput: vec![
                    (StorageOperation::write, 312.4 * 1_048_576.0),
                    (StorageOperation::read, 1_210.0 * 1_048_576.0),
                ],
                direct_io: Some(true),
                ..StorageObservation::timed_out("")
            },
        );
        m
    }

    /// [`example_metrics`] as the page shows it, every result 4 s old.
    pub(crate) fn example() -> Status {
        let m = example_metrics();
        let mut s = Status::read(&m, "node-a", true);
        s.now += Duration::from_millis(4_500);
        // Fixed, so that the README's picture of it changes only when the page does.
        (s.version, s.revision) = ("0.1.0", "0000000");
        s
    }

    async fn get(metrics: Metrics, node: &str, uri: &str) -> (StatusCode, http::HeaderMap, String) {
        let state = crate::http::AppState {
            metrics: std::sync::Arc::new(metrics),
            node_name: node.into(),
            ready: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
        };
        let response = crate::http::router(state)
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        (
            parts.status,
            parts.headers,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn the_page_shows_each_target_as_the_metrics_recorded_it() {
        let (status, headers, page) = get(example_metrics(), "node-a", "/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(headers[header::CONTENT_SECURITY_POLICY], CSP);
        assert!(page.contains("<p>bulk: 3 of 4 up · http: 4 of 4 up · tcp: 3 of 4 up</p>"));
        // node-d's bulk row: its timeout, no latency; node-e's tcp: not probed yet.
        assert!(page.contains(&format!(
            "<tr><td>node-d</td><td>ipv4</td><td><span class=\"r\" style=\"background:{DOWN}\">timeout</span></td><td class=\"n\"></td>"
        )));
        assert!(page.contains(&format!(
            "<tr><td>node-e</td><td>ipv4</td><td><span class=\"r\" style=\"background:{PENDING}\">pending</span></td><td class=\"n\"></td><td class=\"n\"></td></tr>"
        )));
        assert!(page.contains(&format!(
            "<tr><td>node-b</td><td>ipv4</td><td><span class=\"r\" style=\"background:{UP}\">success</span></td><td class=\"n\">0.40 ms</td>"
        )));
        assert!(page.contains(&format!(
            "<td>example.com</td><td>A</td><td><span class=\"r\" style=\"background:{DOWN}\">SERVFAIL</span></td><td class=\"n\">48.0 ms</td>"
        )));
        assert!(page.contains("<td class=\"n\">312.4 MiB/s</td><td class=\"n\">1210.0 MiB/s</td>"));
        assert!(page.len() < 16 << 10, "{} bytes", page.len());
        let (_, _, same) = get(example_metrics(), "node-a", "/status").await;
        assert_eq!(same.lines().count(), page.lines().count());
    }

    #[tokio::test]
    async fn a_target_removed_from_the_metrics_leaves_the_page() {
        let m = example_metrics();
        let key = peer("node-d", "bulk");
        m.peers
            .remove_target(&key, &["success", "timeout"], &["total"], true);
        m.storage.remove_volume("scratch");
        let metrics = m.encode_openmetrics();
        let (_, _, page) = get(m, "node-a", "/").await;
        assert!(!metrics.contains("target_node=\"node-d\",protocol=\"bulk\""));
        assert!(page.contains("<p>bulk: 3 of 3 up ·"));
        assert!(!page.contains("timeout"));
        assert!(page.contains("<p>No volumes.</p>"));
    }

    #[tokio::test]
    async fn names_from_the_cluster_are_text_not_markup() {
        let m = Metrics::new();
        let evil = "n\"><script>alert(1)</script>";
        let key = peer(evil, "http");
        m.peers.add_target(&key);
        m.peers.record(&key, "success", &[("total", 0.001)]);
        let target = dns("</td><img src=//198.18.0.9/x>", "<b>");
        m.dns.add_target(&target);
        m.dns.record(&target, &lookup(1), true);
        let (_, _, page) = get(m, "<i>node</i>", "/").await;
        for bad in ["<script", "<img", "<b>", "<i>node"] {
            assert!(!page.contains(bad), "{bad} in the page");
        }
        assert!(page.contains("n&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("<title>kube-netprobe on &lt;i&gt;node&lt;/i&gt;</title>"));
    }
}
