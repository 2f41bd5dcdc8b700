//! kube-proxy on the test cluster runs as on kubeadm clusters, one DaemonSet pod per node in
//! that node's network namespace, so the fault a repair must fix exists for real: a hung
//! kube-proxy breaks the Service path of its own node only, the DaemonSet does not replace it,
//! and deleting its pod (what a repair does) brings a new one that restores the rules.

use std::net::IpAddr;
use std::process::Command;

use crate::util::poll_every;

use super::{Cluster, EVERY, WAIT, log};

/// The name every DNS pod answers (the cluster's kube-dns stand-in holds it).
const NAME: &str = "kubernetes.default.svc.cluster.local";

/// Asks `server` for [`NAME`] from inside `node`'s network namespace (where that node's pods
/// with hostNetwork and its kube-proxy rules live), one try of 2 s. `Ok` with the answer, or
/// what dig said.
fn resolve_from(node: &str, server: IpAddr) -> Result<String, String> {
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{node}"))
        .args(["--", "dig", "+time=2", "+tries=1", "+short"])
        .arg(format!("@{server}"))
        .args([NAME, "A"])
        .output()
        .map_err(|e| format!("nsenter dig: {e} (dig is in bind9-dnsutils: make deps)"))?;
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && !answer.is_empty() && !answer.starts_with(';') {
        Ok(answer)
    } else {
        Err(format!(
            "{node} → {server}: dig exit {:?}: {answer} {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Heals the hang however the test ends, so the next test finds every node's Services working.
struct Heal<'a>(&'a Cluster, usize);

impl Drop for Heal<'_> {
    fn drop(&mut self) {
        self.0.kube_proxy_start(self.1);
    }
}

#[test]
#[ignore = "needs root and the real cluster: make e2e"]
fn a_hung_kube_proxy_breaks_only_its_nodes_services_until_its_pod_is_replaced() {
    let cluster = Cluster::get();
    assert!(cluster.nodes.len() >= 2, "needs 2 nodes at least");
    let service: IpAddr = cluster.env["DNS_IP"].parse().expect("DNS_IP");
    let (_, dns_pod_ip) = cluster.dns_pods().into_iter().next().expect("a DNS pod");
    let index = 2;
    let node = cluster.nodes[index - 1].clone();

    let pods = cluster.kube_proxy_pods();
    for n in &cluster.nodes {
        let (pod, ready) = pods
            .get(n)
            .unwrap_or_else(|| panic!("no kube-proxy pod on {n}"));
        assert!(*ready, "kube-proxy pod {pod} on {n} not Ready");
        resolve_from(n, service).unwrap_or_else(|e| panic!("Service IP before the fault: {e}"));
    }
    let (hung, _) = pods[&node].clone();

    log(format!("fault: kube-proxy {hung} on {node} hung"));
    let heal = Heal(&cluster, index);
    cluster.kube_proxy_hang(index);
    let broken = resolve_from(&node, service);
    assert!(
        broken.is_err(),
        "{node} still reaches the Service IP {service}: {broken:?}"
    );
    resolve_from(&node, dns_pod_ip)
        .unwrap_or_else(|e| panic!("pod IP from {node} with its kube-proxy hung: {e}"));
    for n in cluster.nodes.iter().filter(|n| **n != node) {
        resolve_from(n, service)
            .unwrap_or_else(|e| panic!("Service IP from {n} with {node}'s kube-proxy hung: {e}"));
    }
    // The DaemonSet keeps the hung pod: nothing but a deletion replaces it.
    assert_eq!(
        cluster.kube_proxy_pods().get(&node).map(|(p, _)| p.clone()),
        Some(hung.clone()),
        "{node}'s hung kube-proxy pod was replaced without being deleted"
    );

    log(format!("delete {hung}"));
    cluster.kubectl(&["-n", "kube-system", "delete", "pod", &hung, "--wait=false"]);
    let answer = poll_every(
        &format!("a new kube-proxy pod on {node} to restore its Service path"),
        WAIT,
        EVERY,
        || {
            match cluster.kube_proxy_pods().get(&node) {
                Some((pod, true)) if *pod != hung => {}
                other => return Err(format!("kube-proxy pod on {node}: {other:?}")),
            }
            resolve_from(&node, service)
        },
    );
    log(format!("{node} resolves through {service} again: {answer}"));
    drop(heal);
}
