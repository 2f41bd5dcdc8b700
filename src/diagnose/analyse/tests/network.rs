//! Nodes, the live matrix and the API-server probes.

use super::*;

#[test]
fn nodes_network_unavailable_and_not_ready() {
    let mut s = healthy();
    s.nodes = Some(vec![
        node("node-a", "True", true),
        node("node-b", "Unknown", false),
    ]);
    s.csi_nodes = Some(vec![]);
    s.csi_drivers = Some(vec![]);
    let f = analyse(&s);
    assert_eq!(
        ids(&f),
        ["network.node-network-unavailable", "network.node-not-ready"]
    );
    assert!(f[0].title.contains("node-a") && !f[0].title.contains("node-b"));
    assert!(f[1].evidence[0].starts_with("node node-b: Ready=Unknown"));
}

/// Full mesh over http, tcp and bulk; `fail(source, target, protocol)` says what is down.
fn mesh(nodes: &[&str], fail: impl Fn(&str, &str, &str) -> bool) -> Vec<ProbeScrape> {
    nodes
        .iter()
        .map(|src| {
            let peers: Vec<(&str, &str, bool)> = nodes
                .iter()
                .filter(|t| *t != src)
                .flat_map(|t| ["http", "tcp", "bulk"].map(|p| (*t, p, !fail(src, t, p))))
                .collect();
            ProbeScrape {
                pod: format!("netprobe-{src}"),
                node: src.to_string(),
                text: Some(metrics(&peers, "")),
                error: None,
            }
        })
        .collect()
}

fn matrix_ids(scrapes: Vec<ProbeScrape>) -> Vec<Finding> {
    let s = Snapshot {
        probe_scrapes: scrapes,
        ..Snapshot::default()
    };
    live_matrix(&Matrix::from_snapshot(&s))
}

#[test]
fn matrix_healthy() {
    assert_eq!(matrix_ids(mesh(&NODES, |_, _, _| false)), vec![]);
}

#[test]
fn matrix_isolated_node() {
    let f = matrix_ids(mesh(&NODES, |s, t, _| s == "node-c" || t == "node-c"));
    assert_eq!(ids(&f), ["network.node-isolated"]);
    assert!(f[0].title.contains("node-c"));
}

#[test]
fn matrix_node_nobody_reaches() {
    let f = matrix_ids(mesh(&NODES, |_, t, _| t == "node-b"));
    assert_eq!(ids(&f), ["network.node-unreachable"]);
    assert!(f[0].title.contains("node-b"));
}

#[test]
fn matrix_node_with_broken_egress() {
    let f = matrix_ids(mesh(&NODES, |s, _, _| s == "node-d"));
    assert_eq!(ids(&f), ["network.node-egress-broken"]);
    assert!(f[0].title.contains("node-d"));
}

#[test]
fn matrix_many_pairs_failing() {
    let f = matrix_ids(mesh(&NODES, |s, t, _| s > t));
    assert_eq!(ids(&f), ["network.many-pairs-failing"]);
    let f = matrix_ids(mesh(&NODES, |_, _, _| true));
    assert_eq!(ids(&f), ["network.many-pairs-failing"]);
}

#[test]
fn matrix_one_pair_failing_is_a_warning() {
    let f = matrix_ids(mesh(&NODES, |s, t, _| s == "node-a" && t == "node-b"));
    assert_eq!(ids(&f), ["network.pairs-failing"]);
    assert_eq!(f[0].severity, Severity::Warning);
}

/// A ring where node i probes the next `k` nodes, over http only.
fn ring(n: usize, k: usize, fail: impl Fn(usize, usize) -> bool) -> Vec<ProbeScrape> {
    (0..n)
        .map(|src| {
            let names: Vec<String> = (1..=k).map(|d| format!("n{}", (src + d) % n)).collect();
            let peers: Vec<(&str, &str, bool)> = names
                .iter()
                .enumerate()
                .map(|(d, t)| (t.as_str(), "http", !fail(src, (src + d + 1) % n)))
                .collect();
            ProbeScrape {
                pod: format!("netprobe-n{src}"),
                node: format!("n{src}"),
                text: Some(metrics(&peers, "")),
                error: None,
            }
        })
        .collect()
}

#[test]
fn matrix_votes_name_two_isolated_nodes_and_no_bystander() {
    // 8 nodes probing 3 neighbours each; n2 and n3 cut off. n0 and n1 probe both (2 of their
    // 3 paths fail), n4 is probed only by n1, n2 and n3: none of them may be named.
    let f = matrix_ids(ring(8, 3, |s, t| {
        [2, 3].contains(&s) || [2, 3].contains(&t)
    }));
    assert_eq!(
        ids(&f),
        ["network.node-isolated", "network.node-isolated"],
        "{f:#?}"
    );
    assert!(f[0].title.contains("Node n2 "), "{}", f[0].title);
    assert!(f[1].title.contains("Node n3 "), "{}", f[1].title);
    // On 5 nodes the two are more than a third of the cluster: the mesh is broken as a
    // whole, said once.
    let f = matrix_ids(ring(5, 3, |s, t| {
        [2, 3].contains(&s) || [2, 3].contains(&t)
    }));
    assert_eq!(ids(&f), ["network.many-pairs-failing"], "{f:#?}");
}

#[test]
fn matrix_blocked_pair_names_both_nodes_and_blames_neither() {
    let f = matrix_ids(ring(8, 3, |s, t| (s, t) == (1, 3)));
    assert_eq!(ids(&f), ["network.pairs-failing"], "{f:#?}");
    assert!(f[0].title.contains("n1 -> n3"), "{}", f[0].title);
    let f = matrix_ids(mesh(&NODES, |s, t, _| {
        (s, t) == ("node-a", "node-b") || (s, t) == ("node-b", "node-a")
    }));
    assert_eq!(ids(&f), ["network.pairs-failing"], "{f:#?}");
    assert!(
        f[0].title.contains("node-a -> node-b") && f[0].title.contains("node-b -> node-a"),
        "{}",
        f[0].title
    );
}

#[test]
fn matrix_votes_egress_beside_ingress() {
    // n5 cannot reach anyone; n1 cannot be reached. n5 probes n1 (its failure there is
    // explained twice): each is named for its own way only.
    let f = matrix_ids(ring(8, 3, |s, t| s == 5 || t == 1));
    let mut got = ids(&f);
    got.sort();
    assert_eq!(
        got,
        ["network.node-egress-broken", "network.node-unreachable"],
        "{f:#?}"
    );
    assert!(
        f.iter()
            .any(|x| x.id == "network.node-egress-broken" && x.title.contains("Node n5 "))
    );
    assert!(
        f.iter()
            .any(|x| x.id == "network.node-unreachable" && x.title.contains("Node n1 "))
    );
}

#[test]
fn matrix_bulk_only_is_mtu() {
    let f = matrix_ids(mesh(&NODES, |s, _, p| p == "bulk" && s != "node-a"));
    assert_eq!(ids(&f), ["network.mtu-blackhole"]);
    assert_eq!(f[0].severity, Severity::Critical);
    assert!(!f[0].title.contains("all to or from"), "{}", f[0].title);
    let f = matrix_ids(mesh(&NODES, |s, t, p| {
        p == "bulk" && (s == "node-c" || t == "node-c")
    }));
    assert!(
        f[0].title
            .ends_with("on 6 node pairs, all to or from node-c: MTU black hole"),
        "{}",
        f[0].title
    );
}

#[test]
fn apiserver_probes_direct_versus_dns() {
    let scrape = |node: &str, direct: u8, dns: u8| ProbeScrape {
        pod: format!("netprobe-{node}"),
        node: node.into(),
        text: Some(metrics(
            &[],
            &format!(
                "netprobe_apiserver_probe_success{{path=\"direct\"}} {direct}\nnetprobe_apiserver_probe_success{{path=\"dns\"}} {dns}\n\
                 netprobe_apiserver_requests_total{{path=\"direct\",result=\"success\"}} 10\n\
                 netprobe_apiserver_requests_total{{path=\"dns\",result=\"timeout\"}} 10\n"
            ),
        )),
        error: None,
    };
    let mut s = healthy();
    s.probe_scrapes = vec![scrape("node-a", 1, 1), scrape("node-b", 1, 1)];
    assert_eq!(analyse(&s), vec![]);
    s.probe_scrapes = vec![
        scrape("node-a", 0, 0),
        scrape("node-b", 1, 1),
        scrape("node-c", 1, 0),
    ];
    let f = apiserver_probes(&s);
    assert_eq!(
        ids(&f),
        [
            "network.apiserver-unreachable",
            "network.apiserver-dns-failing"
        ]
    );
    assert_eq!(f[0].severity, Severity::Warning);
    assert!(
        f[0].title.contains("1 of 3 nodes: node-a"),
        "{}",
        f[0].title
    );
    assert!(f[1].title.contains("node-c"));
}

/// A 4-node mesh over http and tcp where node-c's kube-netprobe pod was just replaced:
/// its own probes and its peers' probes of its new address have 0 or 1 results, all
/// failing (the new pod was not serving yet), while the rest is healthy.
fn replaced_pod_mesh(own_series: bool) -> Vec<ProbeScrape> {
    NODES
        .iter()
        .map(|src| {
            let mut peers = Vec::new();
            for t in NODES.iter().filter(|t| *t != src) {
                for p in ["http", "tcp"] {
                    if *src == "node-c" {
                        if own_series {
                            peers.push((*t, p, false, 1));
                        }
                    } else if *t == "node-c" {
                        peers.push((*t, p, false, 1));
                    } else {
                        peers.push((*t, p, true, 40));
                    }
                }
            }
            ProbeScrape {
                pod: format!("netprobe-{src}"),
                node: src.to_string(),
                text: Some(metrics_probed(&peers, "")),
                error: None,
            }
        })
        .collect()
}

#[test]
fn fresh_pod_gives_no_critical_finding() {
    for own_series in [true, false] {
        let mut s = healthy();
        s.probe_scrapes = replaced_pod_mesh(own_series);
        let f = analyse(&s);
        assert_eq!(ids(&f), ["network.peers-too-fresh"], "{f:#?}");
        assert_eq!(f[0].severity, Severity::Info);
        assert!(f[0].title.contains("node node-c"), "{}", f[0].title);
        assert_eq!(crate::diagnose::report::exit_code(&f), 0);
    }
    // The same failures after 3 probes each are judged: node-c is cut off.
    let mut s = healthy();
    s.probe_scrapes = mesh(&NODES, |s, t, _| s == "node-c" || t == "node-c");
    assert_eq!(ids(&analyse(&s)), ["network.node-isolated"]);
}

#[test]
fn a_success_counts_from_the_first_probe() {
    // node-d is new and reaches everyone at once; everyone reaches it at once: healthy.
    let scrapes: Vec<ProbeScrape> = NODES
        .iter()
        .map(|src| {
            let peers: Vec<_> = NODES
                .iter()
                .filter(|t| *t != src)
                .flat_map(|t| {
                    let n = if *src == "node-d" || *t == "node-d" {
                        1
                    } else {
                        40
                    };
                    ["http", "tcp"].map(|p| (*t, p, true, n))
                })
                .collect();
            ProbeScrape {
                pod: format!("netprobe-{src}"),
                node: src.to_string(),
                text: Some(metrics_probed(&peers, "")),
                error: None,
            }
        })
        .collect();
    assert_eq!(matrix_ids(scrapes), vec![]);
}

/// node-c's network cut: its peers' probes of it fail (long since), and its own /metrics
/// cannot be read through the API server.
fn cut_node_unread() -> Vec<ProbeScrape> {
    let mut scrapes = mesh(&NODES, |_, t, _| t == "node-c");
    let c = scrapes.iter_mut().find(|x| x.node == "node-c").unwrap();
    c.text = None;
    c.error = Some("timed out".into());
    scrapes
}

#[test]
fn unreadable_node_metrics_make_no_claim_about_what_it_reaches() {
    let mut s = healthy();
    s.probe_scrapes = cut_node_unread();
    let f = analyse(&s);
    assert_eq!(ids(&f), ["network.node-unreachable"], "{f:#?}");
    assert_eq!(f[0].severity, Severity::Warning);
    assert_eq!(
        f[0].title,
        "Node node-c is unreachable: no peer reaches it; its own view could not be read"
    );
    assert!(!f[0].title.contains("reaches them"));
    assert!(!f[0].cause.contains("reaches them"), "{}", f[0].cause);
    assert!(
        f[0].evidence
            .iter()
            .any(|e| e.contains("node-c") && e.contains("could not be read: timed out")),
        "{:?}",
        f[0].evidence
    );
    let m = Matrix::from_snapshot(&s);
    assert_eq!(m.unread, ["node-c"]);
    // With its own view read, and reaching its peers: the critical finding, and the claim.
    s.probe_scrapes = mesh(&NODES, |_, t, _| t == "node-c");
    let f = analyse(&s);
    assert_eq!(ids(&f), ["network.node-unreachable"]);
    assert_eq!(f[0].severity, Severity::Critical);
    assert!(f[0].title.ends_with("no peer reaches it, it reaches them"));
    // Read, but its own probes all too fresh: no claim either.
    let mut scrapes = mesh(&NODES, |_, t, _| t == "node-c");
    let c = scrapes.iter_mut().find(|x| x.node == "node-c").unwrap();
    c.text = Some(metrics_probed(
        &[("node-a", "http", false, 1), ("node-b", "http", true, 1)],
        "",
    ));
    s.probe_scrapes = scrapes;
    let f = analyse(&s);
    assert_eq!(
        ids(&f),
        ["network.node-unreachable", "network.peers-too-fresh"]
    );
    assert_eq!(f[0].severity, Severity::Warning);
    assert!(
        f[0].title.ends_with("its own view is too fresh to judge"),
        "{}",
        f[0].title
    );
}

#[test]
fn a_rollout_leaves_the_node_read() {
    // The old pod is terminating (not read), the new one is read: the node is not unread.
    let mut scrapes = mesh(&NODES, |_, _, _| false);
    scrapes.push(ProbeScrape {
        pod: "netprobe-node-c-old".into(),
        node: "node-c".into(),
        text: None,
        error: Some("pod not running (or terminating)".into()),
    });
    let s = Snapshot {
        probe_scrapes: scrapes,
        ..Snapshot::default()
    };
    let m = Matrix::from_snapshot(&s);
    assert!(m.unread.is_empty(), "{:?}", m.unread);
    assert_eq!(live_matrix(&m), vec![]);
}

#[test]
fn egress_claim_needs_the_peers_view() {
    // node-d reaches nobody; the peers' probes of it are all fresh and failing.
    let scrapes: Vec<ProbeScrape> = NODES
        .iter()
        .map(|src| {
            let peers: Vec<_> = NODES
                .iter()
                .filter(|t| *t != src)
                .flat_map(|t| {
                    let (up, n) = match (*src, *t) {
                        ("node-d", _) => (false, 30),
                        (_, "node-d") => (false, 2),
                        _ => (true, 30),
                    };
                    ["http", "tcp"].map(|p| (*t, p, up, n))
                })
                .collect();
            ProbeScrape {
                pod: format!("netprobe-{src}"),
                node: src.to_string(),
                text: Some(metrics_probed(&peers, "")),
                error: None,
            }
        })
        .collect();
    let f = matrix_ids(scrapes);
    assert_eq!(
        ids(&f),
        ["network.node-egress-broken", "network.peers-too-fresh"]
    );
    assert_eq!(f[0].severity, Severity::Warning);
    assert!(
        !f[0].title.contains("though peers reach it"),
        "{}",
        f[0].title
    );
}
