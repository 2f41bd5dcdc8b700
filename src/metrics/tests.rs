//! The families as encoded: labels, appearance with the first observation, the reference.

use std::time::Duration;

use hickory_proto::op::ResponseCode;

use super::*;
use crate::observation::dns::Outcome;
use crate::observation::storage::{StorageOperation, StorageResult};

fn target() -> DnsLabels {
    DnsLabels {
        server: "10.96.0.10:53".into(),
        name: "kubernetes.default.svc.cluster.local".into(),
        qtype: "A".into(),
    }
}

fn observation(outcome: Outcome, duration_ms: Option<u64>, udp: u32, tcp: u32) -> DnsObservation {
    DnsObservation {
        outcome,
        duration: duration_ms.map(Duration::from_millis),
        udp_queries: udp,
        tcp_queries: tcp,
    }
}

fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
}

const T: &str = r#"name="kubernetes.default.svc.cluster.local",qtype="A""#;

#[test]
fn recording_a_lookup_sets_every_dns_family() {
    let m = Metrics::new();
    let t = target();
    m.dns.add_target(&t);
    let labels = format!(r#"server="10.96.0.10:53",{T}"#);
    let before = m.encode_openmetrics();
    assert_eq!(
        sample(
            &before,
            &format!(r#"netprobe_dns_lookups_total{{{labels},rcode="SERVFAIL"}}"#)
        ),
        Some("0")
    );
    // The expected answer's counter comes with the first lookup.
    assert_eq!(
        sample(
            &before,
            &format!(r#"netprobe_dns_lookups_total{{{labels},rcode="NOERROR"}}"#)
        ),
        None
    );
    for family in [
        "netprobe_dns_probe_success{",
        "netprobe_dns_lookup_queries{",
        "netprobe_dns_lookup_duration_seconds_count{",
    ] {
        assert!(
            !before.contains(family),
            "{family} before any lookup: {before}"
        );
    }
    let ok = observation(
        Outcome::Response {
            rcode: ResponseCode::NoError,
            answers: 1,
        },
        Some(3),
        1,
        1,
    );
    m.dns.record(&t, &ok, true);
    let text = m.encode_openmetrics();
    assert_eq!(
        sample(
            &text,
            &format!(r#"netprobe_dns_lookups_total{{{labels},rcode="NOERROR"}}"#)
        ),
        Some("1")
    );
    assert_eq!(
        sample(
            &text,
            &format!(r#"netprobe_dns_lookups_total{{{labels},rcode="SERVFAIL"}}"#)
        ),
        Some("0")
    );
    assert_eq!(
        sample(&text, &format!("netprobe_dns_probe_success{{{labels}}}")),
        Some("1")
    );
    assert_eq!(
        sample(
            &text,
            &format!(r#"netprobe_dns_queries_total{{{labels},protocol="tcp"}}"#)
        ),
        Some("1")
    );
    assert_eq!(
        sample(&text, &format!("netprobe_dns_lookup_queries{{{labels}}}")),
        Some("2")
    );
    // One histogram per server by default.
    let server = r#"server="10.96.0.10:53""#;
    assert_eq!(
        sample(
            &text,
            &format!(r#"netprobe_dns_lookup_duration_seconds_bucket{{le="0.0025",{server}}}"#)
        ),
        Some("0")
    );
    assert_eq!(
        sample(
            &text,
            &format!(r#"netprobe_dns_lookup_duration_seconds_bucket{{le="0.005",{server}}}"#)
        ),
        Some("1")
    );
}

#[test]
fn a_timeout_counts_but_is_not_a_latency() {
    let m = Metrics::new();
    let t = target();
    m.dns.add_target(&t);
    m.dns
        .record(&t, &observation(Outcome::Timeout, None, 1, 0), false);
    let text = m.encode_openmetrics();
    let labels = format!(r#"server="10.96.0.10:53",{T}"#);
    assert_eq!(
        sample(
            &text,
            &format!(r#"netprobe_dns_lookups_total{{{labels},rcode="TIMEOUT"}}"#)
        ),
        Some("1")
    );
    assert_eq!(
        sample(
            &text,
            r#"netprobe_dns_lookup_duration_seconds_count{server="10.96.0.10:53"}"#
        ),
        Some("0")
    );
    assert_eq!(
        sample(&text, &format!("netprobe_dns_probe_success{{{labels}}}")),
        Some("0")
    );
}

/// Per node, the peers of a protocol share one histogram of the whole probe, which goes
/// with the last of them; per target, each peer has its own, phase by phase.
#[test]
fn peer_histograms_follow_the_detail_level() {
    let key = |node: &str| PeerKey {
        target_node: node.into(),
        protocol: "http",
        family: "ipv4",
    };
    let phases = [
        ("connect", 0.0002),
        ("first_byte", 0.0004),
        ("total", 0.0006),
    ];
    let count = |text: &str, labels: &str| {
        sample(
            text,
            &format!("netprobe_peer_request_duration_seconds_count{{{labels}}}"),
        )
        .map(str::to_owned)
    };

    let m = Metrics::with_detail(Detail::PerNode);
    for node in ["node-b", "node-c"] {
        m.peers.add_target(&key(node));
        m.peers.record(&key(node), "success", &phases);
    }
    let text = m.encode_openmetrics();
    assert_eq!(
        count(&text, r#"protocol="http",phase="total""#).as_deref(),
        Some("2")
    );
    assert!(!text.contains(r#"phase="connect""#), "{text}");
    assert!(!text.contains("netprobe_peer_request_duration_seconds_count{target_node"));
    m.peers
        .remove_target(&key("node-b"), &["success"], &["total"], true);
    let text = m.encode_openmetrics();
    assert_eq!(
        count(&text, r#"protocol="http",phase="total""#).as_deref(),
        Some("2"),
        "node-c still shares it"
    );
    m.peers
        .remove_target(&key("node-c"), &["success"], &["total"], true);
    let text = m.encode_openmetrics();
    assert!(
        !text.contains("netprobe_peer_request_duration_seconds_count"),
        "{text}"
    );

    let m = Metrics::with_detail(Detail::PerTarget);
    m.peers.add_target(&key("node-b"));
    m.peers.record(&key("node-b"), "success", &phases);
    let text = m.encode_openmetrics();
    for phase in ["connect", "first_byte", "total"] {
        let labels = format!(r#"target_node="node-b",protocol="http",phase="{phase}""#);
        assert_eq!(count(&text, &labels).as_deref(), Some("1"), "{text}");
    }
}

/// Per node, a server's names share its histogram; per target, each (name, qtype) has one.
#[test]
fn dns_histograms_follow_the_detail_level() {
    let other = DnsLabels {
        name: "example.com".into(),
        ..target()
    };
    let ok = observation(
        Outcome::Response {
            rcode: ResponseCode::NoError,
            answers: 1,
        },
        Some(2),
        1,
        0,
    );
    let m = Metrics::with_detail(Detail::PerNode);
    for t in [target(), other.clone()] {
        m.dns.add_target(&t);
        m.dns.record(&t, &ok, true);
    }
    let series = r#"netprobe_dns_lookup_duration_seconds_count{server="10.96.0.10:53"}"#;
    assert_eq!(sample(&m.encode_openmetrics(), series), Some("2"));
    m.dns.remove_target(&target());
    assert_eq!(sample(&m.encode_openmetrics(), series), Some("2"));
    m.dns.remove_target(&other);
    assert_eq!(sample(&m.encode_openmetrics(), series), None);

    let m = Metrics::with_detail(Detail::PerTarget);
    m.dns.add_target(&target());
    m.dns.record(&target(), &ok, true);
    let series =
        format!(r#"netprobe_dns_lookup_duration_seconds_count{{server="10.96.0.10:53",{T}}}"#);
    assert_eq!(sample(&m.encode_openmetrics(), &series), Some("1"));
}

#[test]
fn removing_a_target_removes_all_its_series() {
    let m = Metrics::new();
    let t = target();
    m.dns.add_target(&t);
    m.dns.add_family_target(&t);
    m.dns.record(
        &t,
        &observation(Outcome::NetworkError("refused".into()), None, 1, 0),
        false,
    );
    m.dns.record(
        &t,
        &observation(Outcome::WrongAnswer { answers: 1 }, Some(1), 1, 0),
        false,
    );
    m.dns.record_family_queries(
        &t,
        &[FamilyQuery {
            family: "ipv6",
            rcode: "NODATA",
        }],
    );
    m.dns.remove_target(&t);
    let text = m.encode_openmetrics();
    assert!(!text.contains("10.96.0.10:53"), "{text}");
}

#[test]
fn unusable_answers_count_under_their_own_rcode() {
    let m = Metrics::new();
    let t = target();
    m.dns.add_target(&t);
    let labels = format!(r#"server="10.96.0.10:53",{T}"#);
    for outcome in [
        Outcome::NoData { answers: 1 },
        Outcome::WrongAnswer { answers: 1 },
    ] {
        let label = outcome.rcode_label();
        m.dns
            .record(&t, &observation(outcome, Some(1), 1, 0), false);
        let text = m.encode_openmetrics();
        let series = format!(r#"netprobe_dns_lookups_total{{{labels},rcode="{label}"}}"#);
        assert_eq!(sample(&text, &series), Some("1"), "{text}");
    }
    let text = m.encode_openmetrics();
    let noerror = format!(r#"netprobe_dns_lookups_total{{{labels},rcode="NOERROR"}}"#);
    assert_eq!(sample(&text, &noerror), None);
}

#[test]
fn a_and_aaaa_queries_count_by_family() {
    let m = Metrics::new();
    let t = DnsLabels {
        server: "system".into(),
        ..target()
    };
    m.dns.add_target(&t);
    m.dns.add_family_target(&t);
    let series = |text: &str, family: &str, rcode: &str| {
        let name = format!(
            r#"netprobe_dns_family_queries_total{{server="system",{T},family="{family}",rcode="{rcode}"}}"#
        );
        sample(text, &name).map(str::to_owned)
    };
    // The lost-answer counters exist from the start, so `rate()` sees the first loss.
    let text = m.encode_openmetrics();
    assert_eq!(series(&text, "ipv4", "TIMEOUT").as_deref(), Some("0"));
    assert_eq!(series(&text, "ipv6", "TIMEOUT").as_deref(), Some("0"));
    assert_eq!(series(&text, "ipv6", "NODATA"), None);
    let query = |family, rcode| FamilyQuery { family, rcode };
    m.dns.record_family_queries(
        &t,
        &[
            query("ipv4", "NOERROR"),
            query("ipv6", "TIMEOUT"),
            query("ipv4", "NOERROR"),
            query("ipv6", "NODATA"),
        ],
    );
    let text = m.encode_openmetrics();
    assert_eq!(series(&text, "ipv4", "NOERROR").as_deref(), Some("2"));
    assert_eq!(series(&text, "ipv6", "TIMEOUT").as_deref(), Some("1"));
    assert_eq!(series(&text, "ipv6", "NODATA").as_deref(), Some("1"));
    assert_eq!(series(&text, "ipv4", "TIMEOUT").as_deref(), Some("0"));
}

/// Success and latency series of every prober appear with the target's first result, not
/// at 0 when the target is added (a 0 reads as a failure, and pages, on every start).
#[test]
fn success_series_appear_with_the_first_result() {
    let m = Metrics::new();
    let peer = PeerKey {
        target_node: "node-b".into(),
        protocol: "http",
        family: "ipv4",
    };
    m.peers.add_target(&peer);
    m.apiserver.add_path("direct");
    m.storage.add_volume("scratch");
    let text = m.encode_openmetrics();
    for absent in [
        "netprobe_peer_probe_success{",
        "netprobe_apiserver_probe_success{",
        "netprobe_storage_probe_success{",
        "netprobe_storage_operation_duration_seconds_count{",
    ] {
        assert!(!text.contains(absent), "{absent} before any probe: {text}");
    }
    // The counters are there at 0, so that rate() sees the first failure.
    for zero in [
        r#"netprobe_peer_requests_total{target_node="node-b",protocol="http",result="success"}"#,
        r#"netprobe_apiserver_requests_total{path="direct",result="success"}"#,
        r#"netprobe_storage_probes_total{volume="scratch",result="timeout"}"#,
        r#"netprobe_storage_stuck_seconds{volume="scratch"}"#,
    ] {
        let value = sample(&text, zero).and_then(|v| v.parse::<f64>().ok());
        assert_eq!(value, Some(0.0), "{zero}: {text}");
    }
    m.peers.record(&peer, "timeout", &[]);
    m.apiserver.record("direct", "success", &[("total", 0.002)]);
    m.storage.record(
        "scratch",
        &StorageObservation {
            result: StorageResult::timeout,
            operations: vec![
                (StorageOperation::write, Duration::from_millis(5)),
                (StorageOperation::fsync, Duration::from_millis(1)),
            ],
            bytes: vec![],
            throughput: vec![],
            direct_io: None,
            detail: None,
            space: None,
        },
    );
    let text = m.encode_openmetrics();
    for (series, value) in [
        (
            r#"netprobe_peer_probe_success{target_node="node-b",protocol="http",family="ipv4"}"#,
            "0",
        ),
        (r#"netprobe_apiserver_probe_success{path="direct"}"#, "1"),
        (r#"netprobe_storage_probe_success{volume="scratch"}"#, "0"),
        (
            r#"netprobe_storage_operation_duration_seconds_count{volume="scratch",operation="fsync"}"#,
            "1",
        ),
    ] {
        assert_eq!(sample(&text, series), Some(value), "{series}: {text}");
    }
    // Write and read show as throughput; their timings are kept per_target only.
    let write =
        r#"netprobe_storage_operation_duration_seconds_count{volume="scratch",operation="write"}"#;
    assert_eq!(sample(&text, write), None, "{text}");
}

#[test]
fn classic_text_names_counters_with_total() {
    let m = Metrics::new();
    m.probes.add_probe("dns");
    let text = m.encode_prometheus_text();
    assert!(
        text.contains("# TYPE netprobe_probe_overruns_total counter\n"),
        "{text}"
    );
    assert!(
        text.contains("# HELP netprobe_probe_overruns_total Scheduled"),
        "{text}"
    );
    assert!(
        !text.contains("# EOF") && !text.contains("# UNIT"),
        "{text}"
    );
}

/// docs/metrics.md is what `reference_markdown` generates (`make generate` rewrites it), and
/// every family it lists appears in a real encode with the documented type.
#[test]
fn metrics_reference_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md");
    let generated = reference_markdown();
    if std::env::var_os("NETPROBE_REGENERATE").is_some() {
        std::fs::write(path, &generated).unwrap();
    }
    let on_disk = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "docs/metrics.md is stale: run `make generate`"
    );

    // The process and its cgroup from fixtures: a v1 cgroup with a CPU limit shows every family.
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let m = Metrics::with_sources(
        Detail::default(),
        ProcessSources {
            proc: crate::process::ProcRoot::at(&fixtures.join("proc"), "4242"),
            fs_root: fixtures.join("cgroup/v1-container"),
        },
    );
    m.probes.add_probe("dns");
    m.dns.add_target(&target());
    m.dns.add_family_target(&target());
    let ok = observation(
        Outcome::Response {
            rcode: ResponseCode::NoError,
            answers: 1,
        },
        Some(1),
        1,
        0,
    );
    m.dns.record(&target(), &ok, true);
    let peer = PeerKey {
        target_node: "node-b".into(),
        protocol: "http",
        family: "ipv4",
    };
    m.peers.add_target(&peer);
    m.peers.record(&peer, "success", &[("total", 0.001)]);
    m.peers.set_targets(1, "node-a", 1);
    m.peers.add_discovery_source("pods");
    m.peers.set_icmp_available(true);
    m.apiserver.add_path("direct");
    m.apiserver.record("direct", "success", &[("total", 0.002)]);
    m.csi
        .set(&[("ebs.csi.aws.com".to_owned(), true)].into_iter().collect());
    m.storage.add_volume("scratch");
    m.storage.record(
        "scratch",
        &StorageObservation {
            result: StorageResult::success,
            operations: vec![(StorageOperation::fsync, Duration::from_millis(1))],
            bytes: vec![(StorageOperation::write, 4096)],
            throughput: vec![(StorageOperation::write, 1e9)],
            direct_io: Some(true),
            detail: None,
            space: Some(crate::observation::storage::VolumeSpace {
                free_bytes: 1 << 30,
                size_bytes: 4 << 30,
                free_inodes: 1000,
                inodes: 4000,
            }),
        },
    );
    m.node_pod_ips.set(&[("ipv4", 3, 253)]);
    m.runtime.set(2, 0.5);
    m.http.closed(CloseReason::header_timeout);
    let text = m.encode_prometheus_text();
    for doc in FAMILIES {
        let type_line = format!("# TYPE {} {}\n", doc.name, doc.kind);
        assert!(text.contains(&type_line), "{type_line:?} not in {text}");
    }
    let exposed = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
    assert_eq!(
        exposed,
        FAMILIES.len(),
        "a family is missing from FAMILIES: {text}"
    );
}

/// The classic format differs from OpenMetrics only in its comment lines: every sample, and
/// with it every `le` bound as written (`le="1.0"`, not `le="1"`), is the same bytes in both.
#[test]
fn classic_text_samples_are_the_openmetrics_samples() {
    let m = Metrics::new();
    m.dns.add_target(&target());
    let ok = observation(
        Outcome::Response {
            rcode: ResponseCode::NoError,
            answers: 1,
        },
        Some(12),
        1,
        0,
    );
    m.dns.record(&target(), &ok, true);
    m.storage.add_volume("scratch");
    m.storage.record(
        "scratch",
        &StorageObservation {
            result: StorageResult::success,
            operations: vec![(StorageOperation::fsync, Duration::from_millis(1))],
            bytes: vec![(StorageOperation::write, 4096)],
            throughput: vec![(StorageOperation::write, 1e9)],
            direct_io: Some(true),
            detail: None,
            space: None,
        },
    );
    // process_* are read from /proc at each encode (memory and open fds move between the two):
    // their names and labels must match, their values cannot.
    let samples = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| match l.rsplit_once(' ') {
                Some((series, _)) if l.starts_with("process_") => format!("{series} <live>"),
                _ => l.to_owned(),
            })
            .collect()
    };
    let classic = m.encode_prometheus_text();
    assert_eq!(samples(&classic), samples(&m.encode_openmetrics()));
    assert!(
        classic.contains(
            r#"netprobe_dns_lookup_duration_seconds_bucket{le="1.0",server="10.96.0.10:53"} 1"#
        ),
        "{classic}"
    );
}
