//! NetworkPolicies and the Services of the namespace.

use super::*;

fn policy(name: &str, spec: serde_json::Value) -> NetworkPolicy {
    obj(json!({"metadata": {"name": name, "namespace": "shop"}, "spec": spec}))
}

#[test]
fn default_deny_egress_blocks_dns() {
    let mut s = healthy();
    s.network_policies = Some(vec![policy(
        "default-deny-egress",
        json!({"podSelector": {}, "policyTypes": ["Egress"]}),
    )]);
    let f = analyse(&s);
    assert_eq!(ids(&f), ["netpol.dns-egress-blocked"]);
    assert_eq!(f[0].severity, Severity::Critical);
    assert!(f[0].title.contains("default-deny-egress"), "{}", f[0].title);
    assert!(
        f[0].evidence
            .iter()
            .any(|e| e.contains("UDP 53 blocked, TCP 53 blocked"))
    );
}

#[test]
fn policies_that_allow_dns_raise_nothing() {
    let deny = policy(
        "deny",
        json!({"podSelector": {}, "policyTypes": ["Egress"]}),
    );
    let allows = [
        json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]}),
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "egress": [{
            "ports": [{"protocol": "UDP", "port": "dns"}, {"protocol": "TCP", "port": "dns-tcp"}]}]}),
        json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": "10.244.0.0/16"}}]}]}),
        json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}),
    ];
    for allow in allows {
        let mut s = healthy();
        s.network_policies = Some(vec![deny.clone(), policy("allow-dns", allow.clone())]);
        assert_eq!(network_policies(&s), vec![], "{allow}");
    }
}

#[test]
fn udp_only_or_wrong_namespace_or_excepted_block() {
    let mut s = healthy();
    s.network_policies = Some(vec![policy(
        "udp-only",
        json!({"podSelector": {}, "policyTypes": ["Egress"],
        "egress": [{"ports": [{"protocol": "UDP", "port": 53}]}]}),
    )]);
    let f = network_policies(&s);
    assert_eq!(ids(&f), ["netpol.dns-tcp-blocked"]);
    assert_eq!(f[0].severity, Severity::Warning);
    // A podSelector alone means the policy's own namespace, not kube-system.
    s.network_policies = Some(vec![policy(
        "same-ns",
        json!({"podSelector": {}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]}]}),
    )]);
    assert_eq!(ids(&network_policies(&s)), ["netpol.dns-egress-blocked"]);
    // Port 53 without a protocol is TCP only.
    s.network_policies = Some(vec![policy(
        "tcp-default",
        json!({"podSelector": {}, "policyTypes": ["Egress"],
        "egress": [{"ports": [{"port": 53}]}]}),
    )]);
    assert_eq!(ids(&network_policies(&s)), ["netpol.dns-egress-blocked"]);
    s.network_policies = Some(vec![policy(
        "except",
        json!({"podSelector": {}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.244.0.0/16"]}}]}]}),
    )]);
    assert_eq!(ids(&network_policies(&s)), ["netpol.dns-egress-blocked"]);
    // Ingress-only policies never touch DNS.
    s.network_policies = Some(vec![policy(
        "ingress",
        json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
    )]);
    assert_eq!(network_policies(&s), vec![]);
}

#[test]
fn ingress_policy_on_coredns() {
    let kube_system = |name: &str, spec: serde_json::Value| -> NetworkPolicy {
        obj(json!({"metadata": {"name": name, "namespace": "kube-system"}, "spec": spec}))
    };
    let mut s = healthy();
    // Only namespaces labelled team=platform may query CoreDNS.
    s.network_policies = Some(vec![kube_system(
        "dns-from-platform",
        json!({
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}, "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "platform"}}}],
                     "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]}),
    )]);
    let f = analyse(&s);
    assert_eq!(ids(&f), ["netpol.dns-ingress-blocked"]);
    assert_eq!(f[0].severity, Severity::Critical);
    assert!(f[0].title.contains("dns-from-platform"), "{}", f[0].title);
    // From every namespace: fine.
    s.network_policies = Some(vec![kube_system(
        "dns-from-all",
        json!({
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}, "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"namespaceSelector": {}}],
                     "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]}),
    )]);
    assert_eq!(analyse(&s), vec![]);
    // Selecting by this namespace's label: fine.
    s.network_policies = Some(vec![kube_system(
        "dns-from-shop",
        json!({
        "podSelector": {}, "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "shop"}}}]}]}),
    )]);
    assert_eq!(analyse(&s), vec![]);
}

#[test]
fn policy_selecting_no_pods() {
    let mut s = healthy();
    s.network_policies = Some(vec![policy(
        "typo",
        json!({"podSelector": {"matchLabels": {"app": "wbe"}},
        "policyTypes": ["Ingress"]}),
    )]);
    let f = analyse(&s);
    assert_eq!(ids(&f), ["netpol.selects-no-pods"]);
    assert!(f[0].title.contains("typo"));
}

#[test]
fn service_without_ready_endpoints() {
    let mut s = healthy();
    s.namespace_endpoints = Some(vec![]);
    let f = analyse(&s);
    assert_eq!(ids(&f), ["service.no-ready-endpoints"]);
    assert!(
        f[0].evidence[0].contains("1 pod match, 1 ready"),
        "{:?}",
        f[0].evidence
    );
}
