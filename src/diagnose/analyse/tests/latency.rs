//! DNS latency from the lookup-duration histograms.

use super::*;

/// A lookup-duration histogram for (server, name): `lookups` of (seconds, how many).
fn histogram(server: &str, name: &str, lookups: &[(f64, u64)]) -> String {
    let labels = format!("server=\"{server}\",name=\"{name}\",qtype=\"A\"");
    let mut t = String::new();
    for le in crate::metrics::DNS_BUCKETS
        .iter()
        .copied()
        .chain([f64::INFINITY])
    {
        let n: u64 = lookups
            .iter()
            .filter(|(s, _)| *s <= le)
            .map(|(_, n)| n)
            .sum();
        let le = if le.is_infinite() {
            "+Inf".to_owned()
        } else {
            format!("{le:?}")
        };
        t.push_str(&format!(
            "netprobe_dns_lookup_duration_seconds_bucket{{{labels},le=\"{le}\"}} {n}\n"
        ));
    }
    let count: u64 = lookups.iter().map(|(_, n)| n).sum();
    let sum: f64 = lookups.iter().map(|(s, n)| s * *n as f64).sum();
    t.push_str(&format!(
        "netprobe_dns_lookup_duration_seconds_sum{{{labels}}} {sum}\n\
         netprobe_dns_lookup_duration_seconds_count{{{labels}}} {count}\n\
         netprobe_dns_lookups_total{{{labels},rcode=\"NOERROR\"}} {count}\n"
    ));
    t
}

/// Four nodes; `system(node)` and `direct(node, pod)` give each one's lookups.
fn latency_scrapes(
    system: impl Fn(&str) -> Vec<(f64, u64)>,
    direct: impl Fn(&str, &str) -> Vec<(f64, u64)>,
) -> Vec<ProbeScrape> {
    let name = "kubernetes.default.svc.cluster.local";
    NODES
        .iter()
        .map(|node| {
            let mut extra = histogram("system", name, &system(node));
            for pod in ["coredns-a", "coredns-bb"] {
                extra.push_str(&histogram(
                    &format!("coredns/{pod}"),
                    name,
                    &direct(node, pod),
                ));
            }
            ProbeScrape {
                pod: format!("netprobe-{node}"),
                node: node.to_string(),
                text: Some(metrics(&[], &extra)),
                error: None,
            }
        })
        .collect()
}

fn fast(_: &str) -> Vec<(f64, u64)> {
    vec![(0.002, 95), (0.004, 5)]
}

fn fast_direct(_: &str, _: &str) -> Vec<(f64, u64)> {
    vec![(0.001, 100)]
}

#[test]
fn histogram_quantiles_as_prometheus_estimates_them() {
    let text = histogram("system", "x", &[(0.002, 50), (0.2, 49), (5.2, 1)]);
    let mut h = Histogram::default();
    for x in scrape::parse(&text) {
        if x.name.ends_with("_bucket") {
            let le = if x.label("le") == "+Inf" {
                f64::INFINITY
            } else {
                x.label("le").parse().unwrap()
            };
            h.add_bucket(le, x.value);
        } else if x.name.ends_with("_count") {
            h.count = x.value;
        } else if x.name.ends_with("_sum") {
            h.sum = x.value;
        }
    }
    // Half at 2 ms: the median is the top of the (1 ms, 2.5 ms] bucket's share.
    assert!(
        (h.quantile(0.5).unwrap() - 0.0025).abs() < 1e-9,
        "{:?}",
        h.quantile(0.5)
    );
    // The 99th of 100 lookups is in (0.1, 0.25].
    let p99 = h.quantile(0.99).unwrap();
    assert!(p99 > 0.1 && p99 <= 0.25, "{p99}");
    assert_eq!(h.between(4.5, 5.5), Some(1.0));
    assert!((h.mean().unwrap() - (0.1 + 9.8 + 5.2) / 100.0).abs() < 1e-9);
}

#[test]
fn healthy_latency_raises_nothing() {
    let mut s = healthy();
    s.probe_scrapes = latency_scrapes(fast, fast_direct);
    assert_eq!(analyse(&s), vec![]);
}

#[test]
fn lookups_at_five_seconds_on_one_node() {
    let mut s = healthy();
    // Every lookup from node-b through the Service: first packet lost, retry answered.
    s.probe_scrapes = latency_scrapes(
        |n| {
            if n == "node-b" {
                vec![(5.003, 100)]
            } else {
                fast(n)
            }
        },
        fast_direct,
    );
    let f = analyse(&s);
    assert_eq!(ids(&f), ["dns.lookups-at-five-seconds"], "{f:#?}");
    assert_eq!(f[0].severity, Severity::Warning);
    assert_eq!(
        f[0].title,
        "DNS lookups from node node-b take 5 s (first packet lost, retried): 100 % of lookups through system"
    );
    assert!(f[0].cause.contains("conntrack race"), "{}", f[0].cause);
    assert!(
        f[0].cause
            .contains("straight to the DNS servers from the same nodes are answered")
    );
    assert!(
        f[0].next_step.starts_with("On node-b: `conntrack -S`"),
        "{}",
        f[0].next_step
    );
    // Below the share (1 in 200): nothing; too few lookups: nothing.
    s.probe_scrapes = latency_scrapes(
        |n| {
            if n == "node-b" {
                vec![(0.002, 199), (5.003, 1)]
            } else {
                fast(n)
            }
        },
        fast_direct,
    );
    assert_eq!(analyse(&s), vec![]);
    s.probe_scrapes = latency_scrapes(
        |n| {
            if n == "node-b" {
                vec![(5.003, 10)]
            } else {
                fast(n)
            }
        },
        fast_direct,
    );
    assert_eq!(analyse(&s), vec![]);
}

#[test]
fn aaaa_lost_beside_answered_a_is_the_race_itself() {
    let mut s = healthy();
    s.probe_scrapes = latency_scrapes(
        |n| {
            if n == "node-b" {
                vec![(5.003, 100)]
            } else {
                fast(n)
            }
        },
        fast_direct,
    );
    let b = s
        .probe_scrapes
        .iter_mut()
        .find(|x| x.node == "node-b")
        .unwrap();
    let labels = "server=\"system\",name=\"kubernetes.default.svc.cluster.local\",qtype=\"A\"";
    let text = b.text.take().unwrap().replace(
        "# EOF\n",
        &format!(
            "netprobe_dns_family_queries_total{{{labels},family=\"ipv4\",rcode=\"NOERROR\"}} 100\n\
             netprobe_dns_family_queries_total{{{labels},family=\"ipv6\",rcode=\"NOERROR\"}} 0\n\
             netprobe_dns_family_queries_total{{{labels},family=\"ipv6\",rcode=\"TIMEOUT\"}} 100\n# EOF\n"
        ),
    );
    b.text = Some(text);
    let f = analyse(&s);
    assert_eq!(ids(&f), ["dns.lookups-at-five-seconds"]);
    assert!(
        f[0].cause.contains("the conntrack race itself"),
        "{}",
        f[0].cause
    );
    assert!(
        f[0].evidence.contains(
            &"node node-b, server system: 100 % of the AAAA queries timed out".to_owned()
        ),
        "{:?}",
        f[0].evidence
    );
}

#[test]
fn five_seconds_everywhere_points_at_what_nodes_share() {
    let mut s = healthy();
    s.probe_scrapes = latency_scrapes(|_| vec![(0.002, 80), (5.01, 20)], fast_direct);
    let f = analyse(&s);
    assert_eq!(ids(&f), ["dns.lookups-at-five-seconds"]);
    assert!(
        f[0].title
            .ends_with("from 4 nodes: node-a, node-b, node-c, node-d"),
        "{}",
        f[0].title
    );
    assert!(f[0].cause.contains("most nodes at once"), "{}", f[0].cause);
}

#[test]
fn one_node_much_slower_than_the_others() {
    let mut s = healthy();
    s.probe_scrapes = latency_scrapes(
        |n| {
            if n == "node-c" {
                vec![(0.8, 60), (1.8, 40)]
            } else {
                fast(n)
            }
        },
        fast_direct,
    );
    let f = analyse(&s);
    assert_eq!(ids(&f), ["dns.node-slow"], "{f:#?}");
    assert!(
        f[0].title.starts_with(
            "DNS lookups from node node-c are much slower than from the other nodes: p99 "
        ),
        "{}",
        f[0].title
    );
    assert!(f[0].title.ends_with("through system"), "{}", f[0].title);
    // Direct queries from node-c are fast: its resolv.conf or the Service path.
    assert!(f[0].cause.contains("resolv.conf"), "{}", f[0].cause);
    // Slow, but not 4 times the others: nothing.
    s.probe_scrapes = latency_scrapes(
        |n| {
            if n == "node-c" {
                vec![(0.3, 100)]
            } else {
                vec![(0.2, 100)]
            }
        },
        fast_direct,
    );
    assert_eq!(analyse(&s), vec![]);
}

#[test]
fn one_coredns_pod_much_slower_than_the_others() {
    let mut s = healthy();
    s.probe_scrapes = latency_scrapes(fast, |_, pod| {
        if pod == "coredns-bb" {
            vec![(0.002, 50), (0.9, 50)]
        } else {
            vec![(0.001, 100)]
        }
    });
    let f = analyse(&s);
    assert_eq!(ids(&f), ["dns.server-slow"], "{f:#?}");
    assert!(
        f[0].title
            .starts_with("CoreDNS pod coredns-bb answers much more slowly"),
        "{}",
        f[0].title
    );
    assert!(f[0].next_step.contains("top pod coredns-bb"));
}
