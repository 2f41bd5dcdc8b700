//! Unit tests of the findings, on hand-made objects and /metrics texts.

use serde_json::json;

use super::super::collect::{ProbeScrape, ReadError};
use super::*;

mod capacity;
mod dns;
mod latency;
mod network;
mod policy;
mod storage;

// --- fresh and partial data ----------------------------------------------------------

// --- names outside the cluster -------------------------------------------------------

// --- DNS latency -----------------------------------------------------------------------

fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("valid object")
}

fn coredns_pod(name: &str, ready: bool, restarts: i32, last: Option<&str>) -> Pod {
    let mut cs = json!({"name": "coredns", "ready": ready, "restartCount": restarts,
        "image": "coredns", "imageID": "", "state": {"running": {}}});
    if let Some(reason) = last {
        cs["lastState"] = json!({"terminated": {"reason": reason, "exitCode": 137}});
        cs["state"] = json!({"waiting": {"reason": "CrashLoopBackOff"}});
    }
    obj(json!({
        "metadata": {"name": name, "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
        "spec": {"nodeName": "node-a", "containers": [{"name": "coredns"}]},
        "status": {"phase": "Running", "podIP": format!("10.244.0.{}", 10 + name.len()),
            "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}],
            "containerStatuses": [cs]}
    }))
}

fn app_pod(name: &str, labels: serde_json::Value) -> Pod {
    obj(
        json!({"metadata": {"name": name, "namespace": "shop", "labels": labels},
        "spec": {"nodeName": "node-a", "containers": [{"name": "app"}]},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
    )
}

fn node(name: &str, ready: &str, network_unavailable: bool) -> k8s_openapi::api::core::v1::Node {
    obj(
        json!({"metadata": {"name": name}, "status": {"conditions": [
        {"type": "Ready", "status": ready, "reason": "KubeletReady"},
        {"type": "NetworkUnavailable", "status": if network_unavailable {"True"} else {"False"},
         "reason": "NoRouteCreated"}]}}),
    )
}

/// A small healthy cluster: two ready CoreDNS pods behind kube-dns, a Corefile that
/// forwards upstream, two ready nodes with the CSI driver, one default class, a bound PVC.
fn healthy() -> Snapshot {
    Snapshot {
        namespace: "shop".into(),
        server: "https://127.0.0.1:6443".into(),
        coredns_pods: Some(vec![
            coredns_pod("coredns-a", true, 0, None),
            coredns_pod("coredns-bb", true, 0, None),
        ]),
        coredns_events: Some(vec![]),
        coredns_logs: Some(BTreeMap::from([(
            "coredns-a".into(),
            include_str!("../../../../tests/fixtures/diagnose/coredns-healthy.log").into(),
        )])),
        corefile: Some(Some(
            ".:53 {\n    errors\n    kubernetes cluster.local in-addr.arpa ip6.arpa\n    forward . /etc/resolv.conf {\n       max_concurrent 1000\n    }\n    cache 30\n    loop\n}\n".into(),
        )),
        kube_dns_service: Some(Some(obj(json!({"metadata": {"name": "kube-dns", "namespace": "kube-system"},
            "spec": {"clusterIP": "10.96.0.10", "selector": {"k8s-app": "kube-dns"}}})))),
        kube_dns_endpoints: Some(Some(obj(json!({"metadata": {"name": "kube-dns", "namespace": "kube-system"},
            "subsets": [{"addresses": [{"ip": "10.244.0.19"}, {"ip": "10.244.0.20"}],
                "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}]})))),
        dns_namespace: Some(Some(obj(json!({"metadata": {"name": "kube-system"}})))),
        network_policies: Some(vec![]),
        namespace_object: Some(Some(obj(json!({"metadata": {"name": "shop", "labels": {"team": "shop"}}})))),
        namespace_pods: Some(vec![app_pod("web-1", json!({"app": "web"}))]),
        namespace_services: Some(vec![obj(json!({"metadata": {"name": "web", "namespace": "shop"},
            "spec": {"selector": {"app": "web"}}}))]),
        namespace_endpoints: Some(vec![obj(json!({"metadata": {"name": "web", "namespace": "shop"},
            "subsets": [{"addresses": [{"ip": "10.244.1.5"}]}]}))]),
        nodes: Some(vec![node("node-a", "True", false), node("node-b", "True", false)]),
        pods_needing_ip: Some(BTreeMap::new()),
        csi_drivers: Some(vec![obj(json!({"metadata": {"name": "csi.example.com"}, "spec": {}}))]),
        csi_nodes: Some(
            ["node-a", "node-b"]
                .iter()
                .map(|n| obj(json!({"metadata": {"name": n}, "spec": {"drivers": [
                    {"name": "csi.example.com", "nodeID": n}]}})))
                .collect(),
        ),
        storage_classes: Some(vec![obj(json!({"metadata": {"name": "fast", "annotations":
            {"storageclass.kubernetes.io/is-default-class": "true"}}, "provisioner": "csi.example.com"}))]),
        pvs: Some(vec![obj(json!({"metadata": {"name": "pv-1"}, "spec": {}, "status": {"phase": "Bound"}}))]),
        pvcs: Some(vec![obj(json!({"metadata": {"name": "data", "namespace": "shop"},
            "spec": {"storageClassName": "fast"}, "status": {"phase": "Bound"}}))]),
        pvc_events: Some(vec![]),
        volume_attachments: Some(vec![]),
        netprobe_pods: Some(vec![]),
        probe_scrapes: vec![],
        storage_test: None,
        errors: vec![],
    }
}

fn ids(findings: &[Finding]) -> Vec<&'static str> {
    findings.iter().map(|f| f.id).collect()
}

#[test]
fn healthy_cluster_has_no_findings() {
    assert_eq!(analyse(&healthy()), vec![]);
}

/// /metrics text as a kube-netprobe pod serves it (peer, DNS and storage families), each peer
/// probed 10 times.
fn metrics(peers: &[(&str, &str, bool)], extra: &str) -> String {
    let peers: Vec<_> = peers.iter().map(|(t, p, up)| (*t, *p, *up, 10)).collect();
    metrics_probed(&peers, extra)
}

/// As [`metrics`], with the completed probes of each peer: `netprobe_peer_requests_total`
/// (the last one's result as `up` says; none at all for 0).
fn metrics_probed(peers: &[(&str, &str, bool, u64)], extra: &str) -> String {
    let mut t = String::from("# TYPE netprobe_peer_probe_success gauge\n");
    for (target, protocol, up, _) in peers {
        t.push_str(&format!(
            "netprobe_peer_probe_success{{target_node=\"{target}\",protocol=\"{protocol}\",family=\"ipv4\"}} {}\n",
            u8::from(*up)
        ));
    }
    t.push_str("# TYPE netprobe_peer_requests_total counter\n");
    for (target, protocol, up, probes) in peers.iter().filter(|p| p.3 > 0) {
        t.push_str(&format!(
            "netprobe_peer_requests_total{{target_node=\"{target}\",protocol=\"{protocol}\",result=\"{}\"}} {probes}\n",
            if *up { "success" } else { "timeout" }
        ));
    }
    t.push_str(extra);
    t.push_str("# EOF\n");
    t
}

#[test]
fn forbidden_reads_name_the_missing_rule() {
    let mut s = healthy();
    s.network_policies = None;
    s.errors = vec![ReadError {
        step: "networkpolicies".into(),
        call: "list networkpolicies --all-namespaces".into(),
        reason: "forbidden",
        message: "HTTP 403".into(),
        missing_rbac: Some("list networkpolicies.networking.k8s.io (cluster-wide)".into()),
    }];
    let f = analyse(&s);
    assert_eq!(ids(&f), ["collect.partial"]);
    assert!(f[0].evidence.contains(
        &"missing RBAC: list networkpolicies.networking.k8s.io (cluster-wide)".to_owned()
    ));
}

#[test]
fn selectors() {
    let sel: LabelSelector = obj(json!({"matchLabels": {"a": "1"}, "matchExpressions": [
        {"key": "b", "operator": "In", "values": ["x", "y"]}, {"key": "c", "operator": "DoesNotExist"}]}));
    let l = |v: serde_json::Value| -> BTreeMap<String, String> { obj(v) };
    assert!(selects(&sel, &l(json!({"a": "1", "b": "y"}))));
    assert!(!selects(&sel, &l(json!({"a": "1", "b": "z"}))));
    assert!(!selects(&sel, &l(json!({"a": "1", "b": "x", "c": ""}))));
    assert!(cidr_contains("10.0.0.0/8", "10.1.2.3".parse().unwrap()));
    assert!(!cidr_contains("10.0.0.0/8", "11.1.2.3".parse().unwrap()));
    assert!(cidr_contains("::/0", "fd00::1".parse().unwrap()));
}

/// The nodes of the hand-made meshes.
const NODES: [&str; 4] = ["node-a", "node-b", "node-c", "node-d"];
