//! CoreDNS pods, logs, Corefile, the kube-dns Service and the DNS probes.

use super::*;

#[test]
fn coredns_not_ready_and_oom_restarting() {
    let mut s = healthy();
    s.coredns_pods = Some(vec![
        coredns_pod("coredns-a", false, 7, Some("OOMKilled")),
        coredns_pod("coredns-bb", false, 5, Some("OOMKilled")),
    ]);
    s.kube_dns_endpoints = Some(Some(obj(json!({"metadata": {"name": "kube-dns"},
        "subsets": [{"notReadyAddresses": [{"ip": "10.244.0.19"}]}]}))));
    let f = analyse(&s);
    assert_eq!(
        ids(&f),
        [
            "dns.coredns-not-ready",
            "dns.service-no-endpoints",
            "dns.coredns-restarting"
        ]
    );
    assert_eq!(f[0].severity, Severity::Critical);
    assert_eq!(f[0].title, "CoreDNS: 0 of 2 pods ready");
    assert!(f[0].cause.contains("OOM"), "{}", f[0].cause);
    assert!(
        f[1].cause.contains("No CoreDNS pod is ready"),
        "{}",
        f[1].cause
    );
    assert!(f[2].title.contains("OOMKilled"), "{}", f[2].title);
}

#[test]
fn coredns_on_a_broken_node_points_at_the_node() {
    let mut s = healthy();
    s.nodes = Some(vec![
        node("node-a", "True", true),
        node("node-b", "True", false),
    ]);
    s.coredns_pods = Some(vec![
        coredns_pod("coredns-a", false, 0, None),
        coredns_pod("coredns-bb", true, 0, None),
    ]);
    let f = analyse(&s);
    assert_eq!(
        ids(&f),
        ["network.node-network-unavailable", "dns.coredns-not-ready"]
    );
    assert!(f[1].cause.contains("node-a"), "{}", f[1].cause);
}

#[test]
fn evicted_and_terminating_coredns_pods_are_not_replicas() {
    let mut s = healthy();
    let mut evicted = coredns_pod("coredns-old", false, 0, None);
    evicted.status.as_mut().unwrap().phase = Some("Failed".into());
    let mut leaving = coredns_pod("coredns-leaving", false, 0, None);
    leaving.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
    );
    s.coredns_pods
        .as_mut()
        .unwrap()
        .extend([evicted.clone(), leaving]);
    assert_eq!(analyse(&s), vec![]);
    s.coredns_pods = Some(vec![evicted]);
    let f = coredns_pods(&s);
    assert_eq!(ids(&f), ["dns.coredns-missing"]);
}

#[test]
fn old_restarts_are_history() {
    let mut s = healthy();
    let mut pod = coredns_pod("coredns-a", true, 9, None);
    let status = pod.status.as_mut().unwrap();
    status.container_statuses.as_mut().unwrap()[0].last_state = Some(obj(json!({
        "terminated": {"reason": "Error", "exitCode": 1, "finishedAt": "2020-01-01T00:00:00Z"}})));
    s.coredns_pods = Some(vec![pod, coredns_pod("coredns-bb", true, 0, None)]);
    assert_eq!(analyse(&s), vec![]);
}

#[test]
fn one_of_two_coredns_not_ready_is_a_warning() {
    let mut s = healthy();
    s.coredns_pods = Some(vec![
        coredns_pod("coredns-a", true, 0, None),
        coredns_pod("coredns-bb", false, 0, None),
    ]);
    let f = analyse(&s);
    assert_eq!(ids(&f), ["dns.coredns-not-ready"]);
    assert_eq!(f[0].severity, Severity::Warning);
}

#[test]
fn kube_dns_service_missing() {
    let mut s = healthy();
    s.kube_dns_service = Some(None);
    s.kube_dns_endpoints = Some(None);
    let f = analyse(&s);
    assert_eq!(ids(&f), ["dns.service-missing"]);
    assert_eq!(f[0].severity, Severity::Critical);
}

#[test]
fn kube_dns_without_endpoints_names_the_selector_mismatch() {
    let mut s = healthy();
    s.kube_dns_endpoints = Some(Some(obj(json!({"metadata": {"name": "kube-dns"}}))));
    s.kube_dns_service = Some(Some(obj(json!({"metadata": {"name": "kube-dns"},
        "spec": {"clusterIP": "10.96.0.10", "selector": {"k8s-app": "coredns"}}}))));
    let f = analyse(&s);
    assert_eq!(ids(&f), ["dns.service-no-endpoints"]);
    assert!(f[0].cause.contains("matches none"), "{}", f[0].cause);
}

/// The log analyser on fixture log files (the test apiserver has no kubelet, so logs never
/// come through the API there).
#[test]
fn coredns_log_patterns_from_fixture_files() {
    let cases = [
        (
            "coredns-loop.log",
            include_str!("../../../../tests/fixtures/diagnose/coredns-loop.log"),
            vec!["dns.log-loop"],
        ),
        (
            "coredns-upstream-timeout.log",
            include_str!("../../../../tests/fixtures/diagnose/coredns-upstream-timeout.log"),
            vec!["dns.log-upstream-timeout"],
        ),
        (
            "coredns-servfail.log",
            include_str!("../../../../tests/fixtures/diagnose/coredns-servfail.log"),
            vec!["dns.log-servfail"],
        ),
        (
            "coredns-healthy.log",
            include_str!("../../../../tests/fixtures/diagnose/coredns-healthy.log"),
            vec![],
        ),
    ];
    for (file, text, want) in cases {
        let mut s = healthy();
        s.coredns_logs = Some(BTreeMap::from([(file.to_owned(), text.to_owned())]));
        let f = coredns_logs(&s);
        assert_eq!(ids(&f), want, "{file}");
    }
    let mut s = healthy();
    s.coredns_logs = Some(BTreeMap::from([(
        "x".into(),
        include_str!("../../../../tests/fixtures/diagnose/coredns-upstream-timeout.log").into(),
    )]));
    let f = coredns_logs(&s);
    assert_eq!(
        f[0].title,
        "CoreDNS times out talking to its upstream servers (i/o timeout): 3 lines"
    );
    assert!(f[0].evidence.iter().any(|e| e.contains("->10.0.0.2:53")));
}

#[test]
fn corefile_without_forward_or_forwarding_to_itself() {
    let mut s = healthy();
    s.corefile = Some(Some(
        ".:53 {\n    kubernetes cluster.local\n    cache 30\n}\n".into(),
    ));
    assert_eq!(ids(&corefile(&s)), ["dns.corefile-no-forward"]);
    for target in [
        "127.0.0.1",
        "10.96.0.10:53",
        "[::1]:53",
        "8.8.8.8 127.0.0.53",
    ] {
        s.corefile = Some(Some(format!(
            ".:53 {{\n    forward . {target} {{\n    }}\n}}\n"
        )));
        let f = corefile(&s);
        assert_eq!(ids(&f), ["dns.corefile-forward-loop"], "{target}");
        assert_eq!(f[0].severity, Severity::Critical);
    }
    s.corefile = Some(Some(".:53 {\n    forward . 8.8.8.8 1.1.1.1\n}\n".into()));
    assert_eq!(corefile(&s), vec![]);
    s.corefile = Some(None);
    assert_eq!(corefile(&s)[0].severity, Severity::Info);
}

/// DNS probe results, each after 10 lookups (the last one's rcode as `ok` says).
fn dns_scrape(node: &str, rows: &[(&str, &str, bool)]) -> ProbeScrape {
    let rows: Vec<_> = rows.iter().map(|(s, n, ok)| (*s, *n, *ok, 10)).collect();
    dns_scrape_probed(node, &rows)
}

fn dns_scrape_probed(node: &str, rows: &[(&str, &str, bool, u64)]) -> ProbeScrape {
    let rows: Vec<_> = rows
        .iter()
        .map(|(s, n, ok, l)| (*s, *n, "ipv4", *ok, *l))
        .collect();
    dns_scrape_families(node, &rows)
}

/// As [`dns_scrape_probed`], each row over the IP family it names.
fn dns_scrape_families(node: &str, rows: &[(&str, &str, &str, bool, u64)]) -> ProbeScrape {
    let mut extra = String::from("# TYPE netprobe_dns_probe_success gauge\n");
    for (server, name, family, ok, lookups) in rows {
        extra.push_str(&format!(
            "netprobe_dns_probe_success{{server=\"{server}\",name=\"{name}\",qtype=\"A\",family=\"{family}\"}} {}\n\
             netprobe_dns_lookups_total{{server=\"{server}\",name=\"{name}\",qtype=\"A\",family=\"{family}\",rcode=\"{}\"}} {lookups}\n",
            u8::from(*ok),
            if *ok { "NOERROR" } else { "SERVFAIL" }
        ));
    }
    ProbeScrape {
        pod: format!("netprobe-{node}"),
        node: node.into(),
        text: Some(metrics(&[], &extra)),
        error: None,
    }
}

#[test]
fn dns_one_replica_failing() {
    let name = "kubernetes.default.svc.cluster.local";
    let mut s = healthy();
    s.probe_scrapes = ["node-a", "node-b", "node-c"]
        .iter()
        .map(|n| {
            dns_scrape(
                n,
                &[
                    ("system", name, true),
                    ("coredns/coredns-a", name, true),
                    ("coredns/coredns-bb", name, false),
                ],
            )
        })
        .collect();
    let f = analyse(&s);
    assert_eq!(ids(&f), ["dns.replica-failing"]);
    assert!(f[0].title.contains("coredns-bb"));
}

/// Dual-stack CoreDNS pods, asked over both families: one failing over IPv6 only is the failing
/// replica, and each node counts once however many families it asks over.
#[test]
fn dns_replica_failing_over_one_family_of_two() {
    let name = "kubernetes.default.svc.cluster.local";
    let mut s = healthy();
    s.probe_scrapes = ["node-a", "node-b", "node-c"]
        .iter()
        .map(|n| {
            dns_scrape_families(
                n,
                &[
                    ("system", name, "ipv4", true, 10),
                    ("coredns/coredns-a", name, "ipv4", true, 10),
                    ("coredns/coredns-a", name, "ipv6", true, 10),
                    ("coredns/coredns-bb", name, "ipv4", true, 10),
                    ("coredns/coredns-bb", name, "ipv6", false, 10),
                ],
            )
        })
        .collect();
    let f = analyse(&s);
    assert_eq!(ids(&f), ["dns.replica-failing"], "{f:#?}");
    assert!(f[0].title.contains("coredns-bb"), "{}", f[0].title);
    assert!(!f[0].title.contains("coredns-a"), "{}", f[0].title);
}

#[test]
fn dns_direct_ok_but_service_failing_is_kube_proxy() {
    let name = "kubernetes.default.svc.cluster.local";
    let mut s = healthy();
    s.probe_scrapes = ["node-a", "node-b"]
        .iter()
        .map(|n| {
            dns_scrape(
                n,
                &[
                    ("system", name, false),
                    ("coredns/coredns-a", name, true),
                    ("coredns/coredns-bb", name, true),
                ],
            )
        })
        .collect();
    let f = analyse(&s);
    assert_eq!(ids(&f), ["dns.service-path-broken"]);
    assert!(f[0].cause.contains("kube-proxy"));
    // Failing everywhere, external name only: upstream.
    s.probe_scrapes = ["node-a", "node-b"]
        .iter()
        .map(|n| {
            dns_scrape(
                n,
                &[
                    ("system", "example.com", false),
                    ("coredns/coredns-a", "example.com", false),
                ],
            )
        })
        .collect();
    let f = analyse(&s);
    assert_eq!(ids(&f), ["dns.resolution-failing"]);
    assert!(f[0].cause.contains("upstream"));
}

#[test]
fn fresh_dns_and_apiserver_failures_are_not_judged() {
    let name = "kubernetes.default.svc.cluster.local";
    let mut s = healthy();
    // A CoreDNS pod that just appeared fails its first lookup from every node.
    s.probe_scrapes = ["node-a", "node-b", "node-c"]
        .iter()
        .map(|n| {
            dns_scrape_probed(
                n,
                &[
                    ("system", name, true, 40),
                    ("coredns/coredns-a", name, true, 40),
                    ("coredns/coredns-new", name, false, 1),
                ],
            )
        })
        .collect();
    assert_eq!(analyse(&s), vec![]);
    // A new kube-netprobe pod whose API-server paths have not finished a probe yet.
    s.probe_scrapes = vec![ProbeScrape {
        pod: "netprobe-a".into(),
        node: "node-a".into(),
        text: Some(metrics(
            &[],
            "netprobe_apiserver_probe_success{path=\"direct\"} 0\nnetprobe_apiserver_probe_success{path=\"dns\"} 0\n\
             netprobe_apiserver_requests_total{path=\"direct\",result=\"success\"} 0\n",
        )),
        error: None,
    }];
    assert_eq!(analyse(&s), vec![]);
}

fn dns_everywhere(rows: &[(&str, &str, bool)]) -> Vec<ProbeScrape> {
    ["node-a", "node-b", "node-c"]
        .iter()
        .map(|n| dns_scrape(n, rows))
        .collect()
}

#[test]
fn external_names_failing_while_cluster_names_resolve_is_upstream() {
    let cluster = "kubernetes.default.svc.cluster.local";
    let mut s = healthy();
    s.probe_scrapes = dns_everywhere(&[
        ("system", cluster, true),
        ("coredns/coredns-a", cluster, true),
        ("coredns/coredns-bb", cluster, true),
        ("system", "example.com", false),
        ("coredns/coredns-a", "example.com", false),
        ("coredns/coredns-bb", "example.com", false),
    ]);
    let f = analyse(&s);
    assert_eq!(ids(&f), ["dns.upstream-failing"], "{f:#?}");
    assert_eq!(f[0].severity, Severity::Critical);
    assert_eq!(
        f[0].title,
        "CoreDNS's upstream (/etc/resolv.conf) fails: names outside the cluster fail from \
         most nodes while cluster names resolve: example.com"
    );
    assert!(f[0].cause.contains("upstream"), "{}", f[0].cause);
    assert!(f[0].next_step.contains("dig @UPSTREAM example.com"));
    assert!(
        f[0].evidence
            .iter()
            .any(|e| e == "Corefile: forward . /etc/resolv.conf {"),
        "{:?}",
        f[0].evidence
    );
    assert!(
        f[0].evidence
            .iter()
            .any(|e| e.contains("example.com through system, lookups since")
                && e.contains("SERVFAIL 30")),
        "{:?}",
        f[0].evidence
    );
    // The same with the Corefile's forward gone: the cause says so.
    s.corefile = Some(Some(".:53 {\n    kubernetes cluster.local\n}\n".into()));
    let f = analyse(&s);
    assert_eq!(ids(&f), ["dns.upstream-failing", "dns.corefile-no-forward"]);
    assert!(
        f[0].title.contains("(none: the Corefile has no forward)"),
        "{}",
        f[0].title
    );
    assert!(f[0].cause.contains("no `forward`"), "{}", f[0].cause);
}

#[test]
fn cluster_names_failing_too_is_coredns_itself() {
    let cluster = "kubernetes.default.svc.cluster.local";
    let mut s = healthy();
    s.probe_scrapes = dns_everywhere(&[
        ("system", cluster, false),
        ("coredns/coredns-a", cluster, false),
        ("system", "example.com", false),
        ("coredns/coredns-a", "example.com", false),
    ]);
    let f = analyse(&s);
    assert_eq!(ids(&f), ["dns.resolution-failing"]);
    assert!(f[0].title.contains(cluster), "{}", f[0].title);
    assert!(f[0].cause.contains("CoreDNS itself"), "{}", f[0].cause);
    assert!(f[0].cause.contains("not its upstream"), "{}", f[0].cause);
    // Cluster zones come from the Corefile: a cluster named corp.internal.
    s.corefile = Some(Some(
        ".:53 {\n    kubernetes corp.internal in-addr.arpa {\n    }\n    forward . 10.0.0.2\n}\n"
            .into(),
    ));
    s.probe_scrapes = dns_everywhere(&[
        ("system", "api.default.corp.internal", true),
        ("system", "example.com", false),
    ]);
    assert_eq!(ids(&analyse(&s)), ["dns.upstream-failing"]);
    assert!(
        analyse(&s)[0]
            .title
            .starts_with("CoreDNS's upstream (10.0.0.2) fails")
    );
}

#[test]
fn a_failing_replica_is_a_repair_candidate_with_its_set() {
    let name = "kubernetes.default.svc.cluster.local";
    let mut s = healthy();
    s.probe_scrapes = ["node-a", "node-b", "node-c"]
        .iter()
        .map(|n| {
            dns_scrape(
                n,
                &[
                    ("system", name, true),
                    ("coredns/coredns-a", name, true),
                    ("coredns/coredns-bb", name, false),
                ],
            )
        })
        .collect();
    let f = analyse(&s);
    assert_eq!(ids(&f), ["dns.replica-failing"]);
    let r = &f[0].repairs;
    assert_eq!(r.len(), 1, "{r:#?}");
    assert_eq!(r[0].action, RepairAction::evict_coredns);
    assert_eq!(r[0].pod.as_deref(), Some("coredns-bb"));
    assert_eq!((r[0].failing, r[0].of), (1, 2));
    assert_eq!(r[0].subject, "kube-system/k8s-app=kube-dns");
    let md = crate::diagnose::report::markdown(&crate::diagnose::report::Report::new(
        &s,
        f.clone(),
        Matrix::default(),
        "t".into(),
        false,
    ));
    assert!(
        md.contains("**Repair:** `kube-netprobe repair` may evict CoreDNS pod kube-system/coredns-bb (node node-a) (1 of 2 failing;"),
        "{md}"
    );
}

#[test]
fn every_replica_failing_names_each_as_a_candidate_of_a_fully_failing_set() {
    let name = "kubernetes.default.svc.cluster.local";
    let mut s = healthy();
    s.probe_scrapes = ["node-a", "node-b"]
        .iter()
        .map(|n| {
            dns_scrape(
                n,
                &[
                    ("system", name, false),
                    ("coredns/coredns-a", name, false),
                    ("coredns/coredns-bb", name, false),
                ],
            )
        })
        .collect();
    let f = analyse(&s);
    assert_eq!(ids(&f), ["dns.resolution-failing"]);
    let sets: Vec<(usize, usize)> = f[0].repairs.iter().map(|r| (r.failing, r.of)).collect();
    assert_eq!(sets, [(2, 2), (2, 2)]);
}

/// kube-proxy broken on one node of three: through the Service fails there only, while that
/// node reaches both CoreDNS pods directly. Too few nodes for dns.service-path-broken (which
/// needs half), named on its own, with the node to restart kube-proxy on.
#[test]
fn one_nodes_service_path_broken_names_the_node() {
    let name = "kubernetes.default.svc.cluster.local";
    let mut s = healthy();
    s.probe_scrapes = ["node-a", "node-b", "node-c"]
        .iter()
        .map(|n| {
            dns_scrape(
                n,
                &[
                    ("system", name, *n != "node-b"),
                    ("coredns/coredns-a", name, true),
                    ("coredns/coredns-bb", name, true),
                ],
            )
        })
        .collect();
    let f = analyse(&s);
    assert_eq!(ids(&f), ["dns.node-service-path-broken"], "{f:#?}");
    assert_eq!(f[0].severity, Severity::Critical);
    assert_eq!(
        f[0].title,
        "DNS through the kube-dns Service fails on 1 node: node-b while the CoreDNS pods answer it directly"
    );
    assert_eq!(f[0].nodes, ["node-b"]);
    let r = &f[0].repairs;
    assert_eq!(r.len(), 1);
    assert_eq!(
        (r[0].action, r[0].node.as_str(), r[0].failing, r[0].of),
        (RepairAction::restart_kube_proxy, "node-b", 1, 3)
    );
    // The node cannot reach one of the pods directly either: its network, not kube-proxy.
    s.probe_scrapes[1] = dns_scrape(
        "node-b",
        &[
            ("system", name, false),
            ("coredns/coredns-a", name, true),
            ("coredns/coredns-bb", name, false),
        ],
    );
    let f = analyse(&s);
    assert!(
        !ids(&f).contains(&"dns.node-service-path-broken"),
        "{:?}",
        ids(&f)
    );
}

#[test]
fn a_cluster_wide_service_path_failure_names_every_node_as_a_candidate() {
    let name = "kubernetes.default.svc.cluster.local";
    let mut s = healthy();
    s.probe_scrapes = ["node-a", "node-b"]
        .iter()
        .map(|n| {
            dns_scrape(
                n,
                &[
                    ("system", name, false),
                    ("coredns/coredns-a", name, true),
                    ("coredns/coredns-bb", name, true),
                ],
            )
        })
        .collect();
    let f = analyse(&s);
    assert_eq!(ids(&f), ["dns.service-path-broken"]);
    let r: Vec<(&str, usize, usize)> = f[0]
        .repairs
        .iter()
        .map(|r| (r.node.as_str(), r.failing, r.of))
        .collect();
    assert_eq!(r, [("node-a", 2, 2), ("node-b", 2, 2)]);
}

/// One replica refusing makes lookups through the Service fail wherever they land on it: that
/// is the replica's fault, never a node's Service path (kube-proxy is not restarted for it).
#[test]
fn a_failing_replica_is_not_a_nodes_service_path() {
    let name = "kubernetes.default.svc.cluster.local";
    let mut s = healthy();
    s.probe_scrapes = ["node-a", "node-b", "node-c"]
        .iter()
        .map(|n| {
            dns_scrape(
                n,
                &[
                    ("system", name, *n != "node-b"),
                    ("coredns/coredns-a", name, true),
                    ("coredns/coredns-bb", name, false),
                ],
            )
        })
        .collect();
    let f = analyse(&s);
    assert_eq!(ids(&f), ["dns.replica-failing"], "{f:#?}");
}
