use super::*;

fn node_with(name: &str, pod_cidrs: &[&str], cpu: &str) -> k8s_openapi::api::core::v1::Node {
    obj(json!({"metadata": {"name": name},
        "spec": {"podCIDR": pod_cidrs.first(), "podCIDRs": pod_cidrs},
        "status": {"capacity": {"cpu": cpu}, "conditions": [
            {"type": "Ready", "status": "True", "reason": "KubeletReady"}]}}))
}

#[test]
fn the_replica_ratio_is_cluster_proportional_autoscalers_linear_default() {
    assert_eq!(coredns_replicas_wanted(1, 4), 1);
    assert_eq!(coredns_replicas_wanted(2, 8), 2);
    assert_eq!(coredns_replicas_wanted(16, 64), 2);
    assert_eq!(coredns_replicas_wanted(17, 68), 2);
    assert_eq!(coredns_replicas_wanted(33, 132), 3);
    // Big nodes: the cores ask for more than the nodes.
    assert_eq!(coredns_replicas_wanted(20, 20 * 64), 5);
    assert_eq!(coredns_replicas_wanted(0, 0), 0);
}

#[test]
fn pod_ips_near_and_at_the_pod_cidr_size_are_found_per_node() {
    let mut s = healthy();
    // Nodes of their own: the CSI registrations of the healthy cluster's are not read here.
    s.csi_nodes = None;
    s.nodes = Some(vec![
        // /28: 13 addresses. 13 pods: none left.
        node_with("node-a", &["10.244.1.0/28"], "4"),
        // /27: 29 addresses. 27 pods: 93 %.
        node_with("node-b", &["10.244.2.0/27"], "4"),
        // 26 of 29: 90 % is the threshold, 89.7 % is below it.
        node_with("node-c", &["10.244.3.0/27"], "4"),
        // Dual stack: the IPv4 /28 runs out first, whatever the IPv6 range.
        node_with("node-d", &["10.244.4.0/28", "fd00:10:244:4::/64"], "4"),
        // No podCIDR (a CNI with its own IPAM): nothing to say.
        node_with("node-e", &[], "4"),
    ]);
    s.pods_needing_ip = Some(BTreeMap::from([
        ("node-a".into(), 13),
        ("node-b".into(), 27),
        ("node-c".into(), 26),
        ("node-d".into(), 12),
        ("node-e".into(), 500),
    ]));
    let f = analyse(&s);
    assert_eq!(
        ids(&f),
        ["network.pod-ips-exhausted", "network.pod-ips-exhausted"]
    );
    assert_eq!(f[0].severity, Severity::Critical);
    assert_eq!(f[0].title, "1 node no pod IP left: node-a");
    assert_eq!(
        f[0].evidence,
        ["node node-a: 13 pods need a pod IP, podCIDR 10.244.1.0/28 gives 13 (100 %)"]
    );
    assert_eq!(f[1].severity, Severity::Warning);
    assert_eq!(f[1].title, "2 nodes nearly out of pod IPs: node-b, node-d");
    assert_eq!(
        f[1].evidence,
        [
            "node node-b: 27 pods need a pod IP, podCIDR 10.244.2.0/27 gives 29 (93 %)",
            "node node-d: 12 pods need a pod IP, podCIDR 10.244.4.0/28 gives 13 (92 %)",
        ]
    );
    // The pods could not be listed: no finding (the gap is collect.partial's).
    s.pods_needing_ip = None;
    assert!(ids(&analyse(&s)).is_empty());
}

#[test]
fn coredns_below_the_ratio_is_found_with_the_arithmetic() {
    let mut s = healthy();
    s.csi_nodes = None;
    let nodes: Vec<_> = (0..40)
        .map(|i| node_with(&format!("node-{i}"), &[], "8"))
        .collect();
    s.nodes = Some(nodes);
    // 40 nodes, 320 cores: max(ceil(40/16), ceil(320/256)) = 3; two replicas exist.
    let f = analyse(&s);
    assert_eq!(ids(&f), ["dns.coredns-underprovisioned"]);
    assert_eq!(
        f[0].title,
        "2 CoreDNS replicas for 40 nodes: the common ratio asks for 3"
    );
    assert!(
        f[0].evidence[2].contains("max(ceil(40 / 16), ceil(320 / 256)), at least 2"),
        "{:?}",
        f[0].evidence
    );
    assert!(
        f[0].next_step.contains("--replicas=3"),
        "{}",
        f[0].next_step
    );
    // A third replica, even one not ready yet: enough replicas (its readiness is
    // dns.coredns-not-ready's finding).
    s.coredns_pods
        .as_mut()
        .unwrap()
        .push(coredns_pod("coredns-ccc", false, 0, None));
    assert_eq!(ids(&analyse(&s)), ["dns.coredns-not-ready"]);
    // Millicores round up per node: 40 x 6.5 cores = 280 cores, still 3.
    s.nodes = Some(
        (0..40)
            .map(|i| node_with(&format!("node-{i}"), &[], "6500m"))
            .collect(),
    );
    s.coredns_pods.as_mut().unwrap().pop();
    let f = analyse(&s);
    assert_eq!(ids(&f), ["dns.coredns-underprovisioned"]);
    assert!(
        f[0].evidence[1].contains("280 CPU cores"),
        "{:?}",
        f[0].evidence
    );
}

#[test]
fn probed_volumes_below_a_fifth_free_in_space_or_inodes_are_found() {
    let mut s = healthy();
    let scrape = |node: &str, text: &str| ProbeScrape {
        pod: format!("netprobe-{node}"),
        node: node.into(),
        text: Some(metrics(&[], text)),
        error: None,
    };
    s.probe_scrapes = vec![
        scrape(
            "node-a",
            "netprobe_storage_volume_free_bytes{volume=\"scratch\"} 1048576\n\
             netprobe_storage_volume_size_bytes{volume=\"scratch\"} 10485760\n\
             netprobe_storage_volume_free_inodes{volume=\"scratch\"} 900\n\
             netprobe_storage_volume_inodes{volume=\"scratch\"} 1000\n",
        ),
        scrape(
            "node-b",
            "netprobe_storage_volume_free_bytes{volume=\"scratch\"} 5242880\n\
             netprobe_storage_volume_size_bytes{volume=\"scratch\"} 10485760\n\
             netprobe_storage_volume_free_inodes{volume=\"scratch\"} 10\n\
             netprobe_storage_volume_inodes{volume=\"scratch\"} 1000\n\
             netprobe_storage_volume_free_bytes{volume=\"btrfs\"} 5242880\n\
             netprobe_storage_volume_size_bytes{volume=\"btrfs\"} 10485760\n\
             netprobe_storage_volume_free_inodes{volume=\"btrfs\"} 0\n\
             netprobe_storage_volume_inodes{volume=\"btrfs\"} 0\n",
        ),
    ];
    let f = analyse(&s);
    assert_eq!(ids(&f), ["storage.volume-nearly-full"]);
    assert_eq!(
        f[0].title,
        "2 probed volumes nearly full: scratch on node-a, scratch on node-b"
    );
    assert_eq!(
        f[0].evidence,
        [
            "node node-a volume scratch: 1MiB of 10MiB free (10.0 %)",
            "node node-b volume scratch: 10 of 1000 inodes free (1.0 %)",
        ]
    );
}
