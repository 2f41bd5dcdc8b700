//! DNS probes against the real binary and a real DNS server: the fault matrix (answers an
//! application cannot use included), the `system` resolver's search-list walk and its A and
//! AAAA pair (the conntrack race, `single-request` and `single-request-reopen`), no success
//! series before the first lookup, unreachable servers, SIGTERM with a probe in flight,
//! promtool's lint, and the HTTP endpoints. Each test has its own server and daemon, so they run
//! in parallel.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::Duration;

use hickory_proto::rr::RecordType;

use crate::dns_server::{Behaviour, DnsServer, Transport};
use crate::util::{Checks, Daemon, Metrics, PROMETHEUS_ACCEPT, Sample, closed_udp_port, poll};

const LOOKUPS: &str = "netprobe_dns_lookups_total";
const SUCCESS: &str = "netprobe_dns_probe_success";
const DURATION: &str = "netprobe_dns_lookup_duration_seconds";
const QUERIES: &str = "netprobe_dns_queries_total";
const LOOKUP_QUERIES: &str = "netprobe_dns_lookup_queries";
const FAMILY_QUERIES: &str = "netprobe_dns_family_queries_total";

const OPENMETRICS_FORMAT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Bound on every wait for the daemon to reach a state.
const WAIT: Duration = Duration::from_secs(15);
const IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);

/// One configured query: name and optional `expect`.
type Q<'a> = (&'a str, Option<&'a str>);

fn config(servers: &[&str], interval: &str, timeout: &str, queries: &[Q<'_>]) -> String {
    let servers: Vec<String> = servers.iter().map(|s| format!("{s:?}")).collect();
    // per_target: these tests read each (server, name)'s own lookup-duration histogram.
    let mut yaml = format!(
        "listen: 127.0.0.1:0\nnode_name: test-node\nmetrics: {{ detail: per_target }}\n\
         dns:\n  interval: {interval}\n  \
         timeout: {timeout}\n  servers: [{}]\n  queries:\n",
        servers.join(", ")
    );
    for (name, expect) in queries {
        match expect {
            Some(rcode) => yaml.push_str(&format!(
                "    - {{ name: {name}, type: A, expect: {rcode} }}\n"
            )),
            None => yaml.push_str(&format!("    - {{ name: {name}, type: A }}\n")),
        }
    }
    yaml
}

/// The labels identifying one (server, name) probe with qtype A.
fn probe<'a>(server: &'a str, name: &'a str) -> [(&'a str, &'a str); 3] {
    [("server", server), ("name", name), ("qtype", "A")]
}

/// `probe` labels plus one more.
fn with<'a>(base: [(&'a str, &'a str); 3], extra: (&'a str, &'a str)) -> [(&'a str, &'a str); 4] {
    [base[0], base[1], base[2], extra]
}

/// Every lookup of the target `labels` ended with `rcode`, and its success gauge reads `success`.
fn check_outcome(
    checks: &mut Checks,
    m: &Metrics,
    labels: [(&str, &str); 3],
    rcode: &str,
    success: f64,
) {
    let name = labels[1].1;
    let all = m.sum(LOOKUPS, &labels);
    checks.eq(
        &format!("{name}: lookups with rcode {rcode} (= all {all} lookups)"),
        m.get_exact(LOOKUPS, &with(labels, ("rcode", rcode))),
        Some(all),
    );
    checks.eq(
        &format!("{name}: probe_success"),
        m.get_exact(SUCCESS, &labels),
        Some(success),
    );
}

/// Waits until every (server, name) pair has completed at least `n` lookups.
fn wait_for_lookups(daemon: &mut Daemon, pairs: &[(&str, &str)], n: f64) -> Metrics {
    let what = format!("at least {n} lookups for each of {pairs:?}");
    daemon
        .wait_until(&what, WAIT, |m| {
            let behind: Vec<String> = pairs
                .iter()
                .map(|&(server, name)| (server, name, m.sum(LOOKUPS, &probe(server, name))))
                .filter(|&(_, _, done)| done < n)
                .map(|(server, name, done)| format!("{server} {name}: {done}"))
                .collect();
            if behind.is_empty() {
                Ok(())
            } else {
                Err(behind.join("; "))
            }
        })
        .1
}

#[test]
fn fault_matrix_over_an_explicit_server() {
    let server = DnsServer::start();
    let delay = Duration::from_millis(300);
    server.set("ok.cluster.local", Behaviour::Answer(IP));
    server.set("nxdomain.cluster.local", Behaviour::NxDomain);
    server.set("expected-nx.cluster.local", Behaviour::NxDomain);
    server.set("servfail.cluster.local", Behaviour::ServFail);
    server.set("refused.cluster.local", Behaviour::Refused);
    server.set("nodata.cluster.local", Behaviour::NoData);
    server.set("dropped.cluster.local", Behaviour::Drop);
    server.set("truncated.cluster.local", Behaviour::Truncate(IP));
    server.set(
        "delayed.cluster.local",
        Behaviour::Answer(IP).delayed(delay),
    );
    unusable_answers(&server);
    // (name, expect, rcode every lookup must get, probe_success)
    let matrix: &[(&str, Option<&str>, &str, f64)] = &[
        ("ok.cluster.local", None, "NOERROR", 1.0),
        ("nxdomain.cluster.local", None, "NXDOMAIN", 0.0),
        (
            "expected-nx.cluster.local",
            Some("NXDOMAIN"),
            "NXDOMAIN",
            1.0,
        ),
        ("servfail.cluster.local", None, "SERVFAIL", 0.0),
        ("refused.cluster.local", None, "REFUSED", 0.0),
        ("nodata.cluster.local", None, "NODATA", 0.0),
        (
            "expected-noerror.cluster.local",
            Some("NOERROR"),
            "NODATA",
            1.0,
        ),
        ("dropped.cluster.local", None, "TIMEOUT", 0.0),
        ("truncated.cluster.local", None, "NOERROR", 1.0),
        ("delayed.cluster.local", None, "NOERROR", 1.0),
        ("txt-only.cluster.local", None, "NODATA", 0.0),
        ("other-owner.cluster.local", None, "WRONG_ANSWER", 0.0),
        ("dangling.cluster.local", None, "NODATA", 0.0),
        ("looping.cluster.local", None, "WRONG_ANSWER", 0.0),
        ("chain.cluster.local", None, "NOERROR", 1.0),
    ];
    let addr = server.addr().to_string();
    let s = addr.as_str();
    let queries: Vec<Q<'_>> = matrix.iter().map(|&(n, e, ..)| (n, e)).collect();
    let mut daemon = Daemon::start(&config(&[s], "1s", "800ms", &queries));

    let pairs: Vec<(&str, &str)> = matrix.iter().map(|&(n, ..)| (s, n)).collect();
    let m = wait_for_lookups(&mut daemon, &pairs, 2.0);

    // Every cell is checked and all mismatches are reported together: one failing fault should
    // not hide the state of the others.
    let mut checks = Checks::default();
    for &(name, _, rcode, success) in matrix {
        let labels = probe(s, name);
        check_outcome(&mut checks, &m, labels, rcode, success);
    }

    // Any response, any rcode, is observed; no response, no observation.
    let count = format!("{DURATION}_count");
    let dropped = probe(s, "dropped.cluster.local");
    checks.eq("dropped: duration _count", m.sum(&count, &dropped), 0.0);
    let servfail = m.sum(&count, &probe(s, "servfail.cluster.local"));
    checks.that(
        servfail >= 1.0,
        format!("servfail: duration _count {servfail}, want >= 1"),
    );

    // The delayed answer lands in the (0.25, 1] bucket.
    let delayed = probe(s, "delayed.cluster.local");
    checks.eq(
        "delayed: le=0.25 bucket",
        m.bucket(DURATION, &delayed, 0.25),
        Some(0.0),
    );
    let in_second = m.bucket(DURATION, &delayed, 1.0);
    checks.that(
        in_second >= Some(1.0),
        format!("delayed: le=1 bucket {in_second:?}, want >= 1"),
    );

    // A truncated UDP answer is retried over TCP, and the daemon says so.
    let truncated = probe(s, "truncated.cluster.local");
    let tcp = m.sum(QUERIES, &with(truncated, ("protocol", "tcp")));
    let udp = m.sum(QUERIES, &with(truncated, ("protocol", "udp")));
    checks.that(
        tcp >= 1.0 && udp >= 1.0,
        format!("truncated: queries_total udp={udp} tcp={tcp}, want both >= 1"),
    );
    let server_tcp = server.queries("truncated.cluster.local", Transport::Tcp);
    checks.that(
        server_tcp >= 1,
        format!("truncated: the server saw {server_tcp} TCP queries, want >= 1"),
    );
    checks.eq(
        "truncated: lookup_queries",
        m.get_exact(LOOKUP_QUERIES, &truncated),
        Some(2.0),
    );
    let ok = probe(s, "ok.cluster.local");
    checks.eq(
        "ok: lookup_queries",
        m.get_exact(LOOKUP_QUERIES, &ok),
        Some(1.0),
    );
    checks.eq(
        "ok: queries_total over tcp",
        m.sum(QUERIES, &with(ok, ("protocol", "tcp"))),
        0.0,
    );

    // Exactly one UDP message per lookup: no hidden retries on failure or timeout, no TCP.
    // Read the daemon first, then the server: the server may have seen one more, in flight.
    for name in ["servfail.cluster.local", "dropped.cluster.local"] {
        let lookups = daemon.scrape().sum(LOOKUPS, &probe(s, name));
        let seen = server.queries(name, Transport::Udp) as f64;
        checks.that(
            lookups <= seen && seen <= lookups + 1.0,
            format!("{name}: the server saw {seen} UDP queries for {lookups} lookups"),
        );
        checks.eq(
            &format!("{name}: TCP queries the server saw"),
            server.queries(name, Transport::Tcp),
            0,
        );
    }
    checks.finish(&format!("fault matrix; last scrape:\n{}", m.text));
}

/// Answers an application cannot use, and one it can through a CNAME chain, each a name of its
/// own: a TXT only, an A for another name, a CNAME to a name without records, a CNAME loop, and
/// a two-link chain to an A. `expected-noerror` answers NOERROR without data.
fn unusable_answers(server: &DnsServer) {
    let cname = |target: &str| Behaviour::Cname(target.into());
    server.set("expected-noerror.cluster.local", Behaviour::NoData);
    server.set("txt-only.cluster.local", Behaviour::Txt);
    server.set(
        "other-owner.cluster.local",
        Behaviour::AnswerFor("someone-else.cluster.local".into(), IP),
    );
    server.set("dangling.cluster.local", cname("gone.cluster.local"));
    server.set("looping.cluster.local", cname("looping-2.cluster.local"));
    server.set("looping-2.cluster.local", cname("looping.cluster.local"));
    server.set("chain.cluster.local", cname("chain-2.cluster.local"));
    server.set("chain-2.cluster.local", cname("chain-end.cluster.local"));
    server.set("chain-end.cluster.local", Behaviour::Answer(IP));
}

/// The address the `system` test binds port 53 on: per process, so parallel runs don't clash.
fn system_resolver_ip() -> Ipv4Addr {
    let pid = std::process::id();
    Ipv4Addr::new(127, 53, ((pid / 250) % 256) as u8, (pid % 250 + 1) as u8)
}

/// Another per-process address for a `system` test of its own (`n` in 1..=3).
fn other_resolver_ip(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(system_resolver_ip()) ^ (n << 14))
}

/// A DNS server on `ip`:53, where a resolv.conf can point (it has no port).
fn port_53_server(ip: Ipv4Addr) -> DnsServer {
    DnsServer::start_on(SocketAddr::from((ip, 53)))
        .unwrap_or_else(|e| panic!("bind {ip}:53 (UDP and TCP): {e}"))
}

/// A daemon whose `system` lookups read `resolv_conf_text`, written to a file in `dir`.
fn system_daemon(
    dir: &std::path::Path,
    resolv_conf_text: &str,
    interval: &str,
    timeout: &str,
    queries: &[Q<'_>],
) -> Daemon {
    let resolv_conf = dir.join("resolv.conf");
    std::fs::write(&resolv_conf, resolv_conf_text).unwrap();
    let mut yaml = config(&["system"], interval, timeout, queries);
    yaml.push_str(&format!("  resolv_conf: {}\n", resolv_conf.display()));
    Daemon::start(&yaml)
}

#[test]
#[ignore = "needs root to bind port 53 on a 127.53.x.y address"]
fn system_resolver_walks_the_search_list() {
    let ip = system_resolver_ip();
    let server = port_53_server(ip);
    server.set(
        "kubernetes.default.svc.cluster.local",
        Behaviour::Answer(IP),
    );
    server.set("does-not-exist.invalid", Behaviour::NxDomain);

    let dir = tempfile::tempdir().unwrap();
    let resolv_conf = dir.path().join("resolv.conf");
    std::fs::write(
        &resolv_conf,
        format!(
            "nameserver {ip}\nsearch default.svc.cluster.local svc.cluster.local cluster.local\n\
             options ndots:5 timeout:1 attempts:1\n"
        ),
    )
    .unwrap();
    let mut yaml = config(
        &["system"],
        "2s",
        "1500ms",
        &[
            ("kubernetes.default", None),
            ("does-not-exist.invalid", Some("NXDOMAIN")),
        ],
    );
    yaml.push_str(&format!("  resolv_conf: {}\n", resolv_conf.display()));
    let mut daemon = Daemon::start(&yaml);

    let kubernetes = probe("system", "kubernetes.default");
    let invalid = probe("system", "does-not-exist.invalid");
    let m = wait_for_lookups(
        &mut daemon,
        &[
            ("system", "kubernetes.default"),
            ("system", "does-not-exist.invalid"),
        ],
        1.0,
    );
    assert_eq!(m.get_exact(SUCCESS, &kubernetes), Some(1.0));
    // Two candidates, each asked A and AAAA as getaddrinfo does.
    assert_eq!(m.get_exact(LOOKUP_QUERIES, &kubernetes), Some(4.0));
    assert_eq!(
        m.get_exact(LOOKUPS, &with(kubernetes, ("rcode", "NOERROR"))),
        Some(m.sum(LOOKUPS, &kubernetes))
    );
    assert_eq!(m.get_exact(SUCCESS, &invalid), Some(1.0));
    assert_eq!(m.get_exact(LOOKUP_QUERIES, &invalid), Some(8.0));
    assert_eq!(
        m.get_exact(LOOKUPS, &with(invalid, ("rcode", "NXDOMAIN"))),
        Some(m.sum(LOOKUPS, &invalid))
    );

    // The candidates, in the order libc asks them (ndots:5: the search list first).
    let asked = |prefix: &str| -> Vec<String> {
        server
            .received()
            .into_iter()
            .filter(|r| r.qtype == RecordType::A && r.name.starts_with(prefix))
            .map(|r| r.name)
            .collect()
    };
    assert_eq!(
        asked("kubernetes.default")[..2],
        [
            "kubernetes.default.default.svc.cluster.local",
            "kubernetes.default.svc.cluster.local",
        ]
    );
    assert_eq!(
        asked("does-not-exist.invalid")[..4],
        [
            "does-not-exist.invalid.default.svc.cluster.local",
            "does-not-exist.invalid.svc.cluster.local",
            "does-not-exist.invalid.cluster.local",
            "does-not-exist.invalid",
        ]
    );
}

#[test]
fn keeps_running_when_every_server_is_unreachable() {
    let blackhole = DnsServer::start();
    blackhole.set_fallback(Some(Behaviour::Drop));
    let closed = format!("127.0.0.1:{}", closed_udp_port());
    let dropping = blackhole.addr().to_string();
    let name = "kubernetes.default.svc.cluster.local";
    let mut daemon = Daemon::start(&config(
        &[&closed, &dropping],
        "1s",
        "500ms",
        &[(name, None)],
    ));

    // Lookups keep coming (the scheduler is alive), whatever their outcome.
    let m = wait_for_lookups(&mut daemon, &[(&closed, name), (&dropping, name)], 3.0);
    let mut checks = Checks::default();
    for (server, rcode) in [(closed.as_str(), "NETWORK_ERROR"), (&dropping, "TIMEOUT")] {
        let labels = probe(server, name);
        checks.eq(
            &format!("{server}: probe_success"),
            m.get_exact(SUCCESS, &labels),
            Some(0.0),
        );
        let all = m.sum(LOOKUPS, &labels);
        checks.eq(
            &format!("{server}: lookups with rcode {rcode} (= all {all} lookups)"),
            m.get_exact(LOOKUPS, &with(labels, ("rcode", rcode))),
            Some(all),
        );
    }
    checks.eq("/healthz status", daemon.get("/healthz").status, 200);
    checks.that(daemon.is_running(), "the daemon exited");
    let lookups: Vec<&Sample> = m.series(LOOKUPS, &[]);
    checks.finish(&format!("unreachable servers; lookups: {lookups:#?}"));
}

#[test]
fn sigterm_with_a_probe_in_flight_exits_zero_without_waiting_for_it() {
    stops_cleanly_with_a_probe_in_flight("TERM");
}

#[test]
fn sigint_with_a_probe_in_flight_exits_zero_without_waiting_for_it() {
    stops_cleanly_with_a_probe_in_flight("INT");
}

fn stops_cleanly_with_a_probe_in_flight(signal: &str) {
    let server = DnsServer::start();
    let name = "slow.cluster.local";
    // The answer comes after a minute and the lookup waits 18 s for it: an exit that waited for
    // the lookup would take that long; one that does not, a moment. (A bound far from both
    // keeps a loaded machine from failing it.)
    server.set(name, Behaviour::Answer(IP).delayed(Duration::from_secs(60)));
    let addr = server.addr().to_string();
    let mut daemon = Daemon::start(&config(&[&addr], "20s", "18s", &[(name, None)]));
    poll(
        "the server to receive the slow query (first runs are spread over one interval)",
        Duration::from_secs(45),
        || match server.queries(name, Transport::Udp) {
            0 => Err("0 queries".into()),
            _ => Ok(()),
        },
    );
    // stop_with gives the exit 15 s, less than waiting for the lookup would take.
    let (status, took) = daemon.stop_with(signal);
    assert!(
        status.success(),
        "exit status after SIG{signal} ({took:?}): {status}\n{}",
        daemon.output_tail(20)
    );
}

#[test]
fn promtool_finds_nothing_to_lint() {
    let promtool = "/usr/bin/promtool";
    assert!(
        std::path::Path::new(promtool).exists(),
        "{promtool} is missing: install Debian's `prometheus` package (CI installs it)"
    );
    let server = DnsServer::start();
    server.set("ok.cluster.local", Behaviour::Answer(IP));
    server.set("dropped.cluster.local", Behaviour::Drop);
    let addr = server.addr().to_string();
    let names = [
        "ok.cluster.local",
        "nx.cluster.local",
        "dropped.cluster.local",
    ];
    let queries: Vec<Q<'_>> = names.iter().map(|&n| (n, None)).collect();
    let mut daemon = Daemon::start(&config(&[&addr], "1s", "500ms", &queries));
    let pairs: Vec<(&str, &str)> = names.iter().map(|&n| (addr.as_str(), n)).collect();
    wait_for_lookups(&mut daemon, &pairs, 1.0);

    // Debian's promtool (2.42) parses only the classic text format: OpenMetrics counters
    // (`# TYPE x counter` with samples `x_total`) read to it as help-less untyped families. So
    // lint the classic exposition the daemon serves to clients that don't ask for OpenMetrics.
    let scrape = daemon.get_accept("/metrics", "text/plain;version=0.0.4");
    assert_eq!(scrape.content_type(), Some(TEXT_FORMAT));
    let body = scrape.body;
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(body.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().expect("wait for promtool");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics: {}\n{report}\n--- scrape ---\n{body}",
        out.status
    );
}

#[test]
fn http_endpoints() {
    let server = DnsServer::start();
    server.set("ok.cluster.local", Behaviour::Answer(IP));
    let addr = server.addr().to_string();
    let daemon = Daemon::start(&config(
        &[&addr],
        "1s",
        "500ms",
        &[("ok.cluster.local", None)],
    ));

    // Prometheus asks for OpenMetrics and gets it; a client that doesn't (curl) gets the
    // classic text format.
    let metrics = daemon.get_accept("/metrics", PROMETHEUS_ACCEPT);
    assert_eq!(metrics.status, 200);
    assert_eq!(metrics.content_type(), Some(OPENMETRICS_FORMAT));
    assert!(metrics.body.ends_with("# EOF\n"), "{}", metrics.body);
    let plain = daemon.get("/metrics");
    assert_eq!(plain.status, 200);
    assert_eq!(plain.content_type(), Some(TEXT_FORMAT));
    assert!(!plain.body.contains("# EOF"), "{}", plain.body);

    let ping = daemon.get("/ping");
    assert_eq!(ping.status, 200);
    assert!(
        ping.body.contains("test-node"),
        "/ping body: {:?}",
        ping.body
    );

    assert_eq!(daemon.get("/healthz").status, 200);
    poll("/readyz to return 200", WAIT, || {
        match daemon.get("/readyz").status {
            200 => Ok(()),
            other => Err(format!("status {other}")),
        }
    });
    assert_eq!(daemon.get("/no-such-path").status, 404);
}

/// A lossy path where the first packet of every exchange is lost: libc waits resolv.conf's
/// `timeout`, asks again and gets the answers, so the lookup succeeds but lands one timeout
/// later: the signature (5 s with the default timeout) that the histogram buckets separate
/// from ordinary slowness. Here timeout:1, so the lookups land in (1, 2.5]. Both queries of the
/// A and AAAA pair are lost, so the whole pair is asked again.
#[test]
#[ignore = "needs root to bind port 53 on a 127.53.x.y address"]
fn system_resolver_retries_after_its_timeout_like_libc() {
    let ip = other_resolver_ip(2);
    let server = port_53_server(ip);
    server.set(
        "lossy.cluster.local",
        Behaviour::DropOdd(Box::new(Behaviour::Answer(IP))),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = system_daemon(
        dir.path(),
        &format!("nameserver {ip}\noptions ndots:1 timeout:1 attempts:2\n"),
        "3s",
        "2s",
        &[("lossy.cluster.local", None)],
    );

    let lossy = probe("system", "lossy.cluster.local");
    let m = wait_for_lookups(&mut daemon, &[("system", "lossy.cluster.local")], 2.0);
    let lookups = m.sum(LOOKUPS, &lossy);
    assert_eq!(m.get_exact(SUCCESS, &lossy), Some(1.0));
    assert_eq!(
        m.get_exact(LOOKUPS, &with(lossy, ("rcode", "NOERROR"))),
        Some(lookups)
    );
    // A and AAAA, lost; A and AAAA again, answered.
    assert_eq!(m.get_exact(LOOKUP_QUERIES, &lossy), Some(4.0));
    // Four messages per lookup. One scrape can fall between a lookup's updates of two
    // families, so allow the lookup being recorded.
    let udp = m
        .get_exact(QUERIES, &with(lossy, ("protocol", "udp")))
        .unwrap();
    assert!(
        udp >= 4.0 * lookups && udp <= 4.0 * (lookups + 1.0),
        "{udp} UDP queries for {lookups} lookups"
    );
    for family in ["ipv4", "ipv6"] {
        let lost = family_queries(&m, "system", "lossy.cluster.local", family, "TIMEOUT");
        assert!(
            lost >= lookups && lost <= lookups + 1.0,
            "{family}: {lost} lost queries for {lookups} lookups"
        );
    }
    let count = m.sum(&format!("{DURATION}_count"), &lossy);
    assert!(count >= 2.0, "{count} observed lookups");
    assert_eq!(
        m.bucket(DURATION, &lossy, 1.0),
        Some(0.0),
        "none faster than the timeout"
    );
    assert_eq!(
        m.bucket(DURATION, &lossy, 2.5),
        Some(count),
        "all within one retry"
    );
}

/// `netprobe_dns_family_queries_total` for one target, family and rcode (0 when absent).
fn family_queries(m: &Metrics, server: &str, name: &str, family: &str, rcode: &str) -> f64 {
    let labels = [
        ("server", server),
        ("name", name),
        ("qtype", "A"),
        ("family", family),
        ("rcode", rcode),
    ];
    m.get_exact(FAMILY_QUERIES, &labels).unwrap_or(0.0)
}

/// Through the pod's resolver, an answer counts as it does for an application: libc stops its
/// search-list walk at the first answer with records (useful or not) and walks on past an empty
/// one, and the final answer must hold an A for the name, directly or through its CNAMEs.
#[test]
#[ignore = "needs root to bind port 53 on a 127.53.x.y address"]
fn system_resolver_judges_answers_as_an_application_does() {
    let ip = other_resolver_ip(1);
    let server = port_53_server(ip);
    unusable_answers(&server);
    server.set("stops.svc.cluster.local", Behaviour::Txt);
    server.set("stops", Behaviour::Answer(IP));
    server.set("walks.svc.cluster.local", Behaviour::NoData);
    server.set("walks", Behaviour::Answer(IP));
    // (name, rcode, probe_success, messages per lookup)
    let matrix: &[(&str, &str, f64, f64)] = &[
        ("txt-only.cluster.local", "NODATA", 0.0, 2.0),
        ("other-owner.cluster.local", "WRONG_ANSWER", 0.0, 2.0),
        ("dangling.cluster.local", "NODATA", 0.0, 2.0),
        ("looping.cluster.local", "WRONG_ANSWER", 0.0, 2.0),
        ("chain.cluster.local", "NOERROR", 1.0, 2.0),
        // `stops.svc.cluster.local` has a TXT: libc goes no further, and finds no address.
        ("stops", "NODATA", 0.0, 2.0),
        // `walks.svc.cluster.local` has nothing: libc asks `walks.` next and finds its A.
        ("walks", "NOERROR", 1.0, 4.0),
    ];
    let dir = tempfile::tempdir().unwrap();
    let queries: Vec<Q<'_>> = matrix.iter().map(|&(n, ..)| (n, None)).collect();
    let mut daemon = system_daemon(
        dir.path(),
        &format!(
            "nameserver {ip}\nsearch svc.cluster.local\noptions ndots:1 timeout:1 attempts:1\n"
        ),
        "1s",
        "500ms",
        &queries,
    );
    let pairs: Vec<(&str, &str)> = matrix.iter().map(|&(n, ..)| ("system", n)).collect();
    let m = wait_for_lookups(&mut daemon, &pairs, 2.0);

    let mut checks = Checks::default();
    for &(name, rcode, success, messages) in matrix {
        let labels = probe("system", name);
        check_outcome(&mut checks, &m, labels, rcode, success);
        checks.eq(
            &format!("{name}: lookup_queries"),
            m.get_exact(LOOKUP_QUERIES, &labels),
            Some(messages),
        );
    }
    // The chain's A query is answered; its AAAA query ends at a name without an AAAA.
    for (family, rcode) in [("ipv4", "NOERROR"), ("ipv6", "NODATA")] {
        let n = family_queries(&m, "system", "chain.cluster.local", family, rcode);
        checks.that(
            n >= 2.0,
            format!("chain: {family} {rcode} queries {n}, want >= 2"),
        );
    }
    checks.finish(&format!("system answers; last scrape:\n{}", m.text));
}

/// glibc's getaddrinfo sends A and AAAA together from one socket; where the conntrack insert
/// race loses the second packet, the AAAA answer never comes, glibc waits its `timeout` (5 s by
/// default), then asks both again one after the other: a 5 s lookup that succeeds.
/// `single-request` (one after the other) and `single-request-reopen` (the second from a new
/// socket) keep the AAAA out of the race. The server drops an AAAA only while an A from the same
/// address and port is unanswered, as the race does.
#[test]
#[ignore = "needs root to bind port 53 on a 127.53.x.y address"]
fn system_a_lookups_send_a_and_aaaa_like_getaddrinfo() {
    let ip = other_resolver_ip(3);
    let server = port_53_server(ip);
    let name = "race.cluster.local";
    server.set(
        name,
        Behaviour::ConntrackRace(Box::new(Behaviour::Answer(IP))),
    );
    let dir = tempfile::tempdir().unwrap();
    let start = |options: &str, interval: &str, timeout: &str| {
        let sub = dir.path().join(format!("options-{options}"));
        std::fs::create_dir(&sub).unwrap();
        // No `timeout`: glibc's default of 5 s.
        let text = format!("nameserver {ip}\noptions ndots:1 attempts:1 {options}\n");
        system_daemon(&sub, &text, interval, timeout, &[(name, None)])
    };
    // The default daemon's lookups take 5 s and more: a longer interval, so they fit.
    let mut daemons = [
        ("default", start("", "8s", "2s")),
        ("single-request", start("single-request", "2s", "1s")),
        (
            "single-request-reopen",
            start("single-request-reopen", "2s", "1s"),
        ),
    ];
    let target = probe("system", name);
    let mut checks = Checks::default();
    let mut scrapes = String::new();
    for (mode, daemon) in &mut daemons {
        let m = daemon
            .wait_until(
                &format!("{mode}: a lookup of {name}"),
                Duration::from_secs(30),
                |m| match m.sum(&format!("{DURATION}_count"), &target) {
                    n if n >= 1.0 => Ok(()),
                    n => Err(format!("{n} answered lookups")),
                },
            )
            .1;
        let lookups = m.sum(LOOKUPS, &target);
        let answered = m.sum(&format!("{DURATION}_count"), &target);
        checks.eq(
            &format!("{mode}: probe_success"),
            m.get_exact(SUCCESS, &target),
            Some(1.0),
        );
        checks.eq(
            &format!("{mode}: lookups with rcode NOERROR (= all {lookups})"),
            m.get_exact(LOOKUPS, &with(target, ("rcode", "NOERROR"))),
            Some(lookups),
        );
        let lost_aaaa = family_queries(&m, "system", name, "ipv6", "TIMEOUT");
        let lost_a = family_queries(&m, "system", name, "ipv4", "TIMEOUT");
        checks.eq(&format!("{mode}: A queries lost"), lost_a, 0.0);
        if *mode == "default" {
            // A and AAAA (lost), then A and AAAA again: four messages, one wait of 5 s.
            checks.eq(
                &format!("{mode}: lookup_queries"),
                m.get_exact(LOOKUP_QUERIES, &target),
                Some(4.0),
            );
            checks.that(
                lost_aaaa >= 1.0,
                format!("{mode}: {lost_aaaa} AAAA queries lost, want >= 1"),
            );
            checks.eq(
                &format!("{mode}: lookups at or under 5 s"),
                m.bucket(DURATION, &target, 5.0),
                Some(0.0),
            );
            checks.eq(
                &format!("{mode}: lookups at or under 5.5 s (= all {answered})"),
                m.bucket(DURATION, &target, 5.5),
                Some(answered),
            );
        } else {
            checks.eq(
                &format!("{mode}: lookup_queries"),
                m.get_exact(LOOKUP_QUERIES, &target),
                Some(2.0),
            );
            checks.eq(&format!("{mode}: AAAA queries lost"), lost_aaaa, 0.0);
            checks.eq(
                &format!("{mode}: lookups at or under 1 s (= all {answered})"),
                m.bucket(DURATION, &target, 1.0),
                Some(answered),
            );
        }
        scrapes.push_str(&format!("--- {mode} ---\n{}\n", m.text));
    }
    checks.finish(&format!(
        "getaddrinfo's A and AAAA pair; last scrapes:\n{scrapes}"
    ));
}

/// A target shows no success, latency or last-lookup series until its first lookup ends: a 0
/// there before any lookup would read as a failure on every start and rollout. Its counters are
/// there at 0 from the start.
#[test]
fn no_success_series_before_the_first_lookup_ends() {
    let server = DnsServer::start();
    let name = "slow.cluster.local";
    server.set(name, Behaviour::Answer(IP).delayed(Duration::from_secs(3)));
    let addr = server.addr().to_string();
    let mut daemon = Daemon::start(&config(&[&addr], "5s", "4s", &[(name, None)]));
    let target = probe(&addr, name);

    // Right after start: the first lookup cannot have ended (its answer takes 3 s).
    let m = daemon.scrape();
    let mut checks = Checks::default();
    // The failure counters are there at 0, so that rate() sees the first failure; the
    // expected answer's comes with it.
    checks.eq(
        "lookups with rcode TIMEOUT",
        m.get_exact(LOOKUPS, &with(target, ("rcode", "TIMEOUT"))),
        Some(0.0),
    );
    checks.eq(
        "lookups with rcode NOERROR",
        m.get_exact(LOOKUPS, &with(target, ("rcode", "NOERROR"))),
        None,
    );
    checks.eq("all lookups", m.sum(LOOKUPS, &target), 0.0);
    for family in [SUCCESS, LOOKUP_QUERIES, &format!("{DURATION}_count")] {
        checks.eq(
            &format!("{family} before the first lookup"),
            m.series(family, &target).len(),
            0,
        );
    }
    checks.finish(&format!("right after start:\n{}", m.text));

    let m = daemon.wait_for(SUCCESS, &target, "1 after the first lookup", WAIT, |v| {
        v == 1.0
    });
    assert_eq!(m.sum(&format!("{DURATION}_count"), &target), 1.0);
    assert_eq!(m.get_exact(LOOKUP_QUERIES, &target), Some(1.0));
}
