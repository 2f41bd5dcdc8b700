//! The chart on kubelets: green, then each fault named (by the alerts and by `diagnose`), and
//! a rollout and a drain silent.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::alertmanager::Alertmanager;
use crate::prometheus::Prometheus;
use crate::util::Checks;

use super::alerts::{
    Fault, Watch, nothing_fires, only_culprits_named, pages, unix_now, wait_firing, wait_quiet,
};
use super::diagnosis::diagnose;
use super::helm::helm_upgrade;
use super::probes::{green_failures, wait_daemonset, wait_green};
use super::{Cluster, log, scrape};

/// Install, green, Prometheus, then each scenario in turn on the same cluster and Prometheus
/// (its history is part of what the alerts read).
#[test]
#[ignore = "needs root and the real cluster (minutes): make e2e"]
fn chart_on_kubelets_green_then_faults_named_and_churn_silent() {
    let cluster = Cluster::get();
    assert_eq!(cluster.nodes.len(), 3, "the scenarios below assume 3 nodes");
    let started = Instant::now();

    log("helm install with the chart's defaults (image: the local one)");
    helm_upgrade(&cluster, &[]);
    wait_daemonset(&cluster);
    wait_green(&cluster, "after install");
    log("every probe green on every node");

    let watch = Watch::start(&cluster);
    let (prom, am) = (&watch.prom, &watch.am);
    // Rules need a few evaluations over the fresh series.
    nothing_fires(prom, "a healthy cluster", Duration::from_secs(30), || true);
    log("Prometheus scrapes every pod; no alert fires");
    let report = diagnose(&cluster, &[]);
    assert!(
        report.code <= 1
            && report
                .critical_naming(&cluster.nodes.iter().collect::<Vec<_>>())
                .is_empty(),
        "diagnose on a healthy cluster: exit {}\n{}",
        report.code,
        report.stdout
    );

    let churn_since = unix_now();
    rollout_raises_nothing(&cluster, prom);
    drain_raises_nothing(&cluster, prom);
    let churn = am.firing_since(churn_since);
    assert!(
        churn.is_empty(),
        "a rollout and a drain sent notifications:\n{}",
        churn
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
    log("the rollout and the drain sent no notification");
    let mut culprits = vec![dns_pod_refusing_is_named(&cluster, prom, am)];
    culprits.push(kube_proxy_down_is_named(&cluster, prom, am, &culprits));
    isolated_node_is_named(&cluster, prom, am, &culprits);
    log(format!("all scenarios in {:.0?}", started.elapsed()));
}

/// `helm upgrade` with a changed config rolls every pod; nothing fires.
fn rollout_raises_nothing(cluster: &Cluster, prom: &Prometheus) {
    log("rollout: helm upgrade with a changed config");
    let before = cluster.netprobe_pods();
    helm_upgrade(cluster, &["--set", "config.dns.interval=10s"]);
    let mut rolled = false;
    nothing_fires(prom, "a DaemonSet rollout", Duration::from_secs(40), || {
        if !rolled {
            let now = cluster.netprobe_pods();
            rolled = now.len() == cluster.nodes.len()
                && now
                    .iter()
                    .all(|(node, (pod, _))| before.get(node).is_none_or(|(b, _)| b != pod));
            return false;
        }
        green_failures(cluster).is_empty()
    });
    wait_daemonset(cluster);
    log("rollout done, green, nothing fired");
}

/// A node cordoned and drained leaves the others' peer lists; nothing fires; uncordoned, it
/// comes back.
fn drain_raises_nothing(cluster: &Cluster, prom: &Prometheus) {
    let node = cluster.nodes[2].clone();
    log(format!("drain {node}"));
    cluster.kubectl(&[
        "drain",
        &node,
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=120s",
    ]);
    let others: Vec<IpAddr> = cluster
        .netprobe_pods()
        .iter()
        .filter(|(n, _)| **n != node)
        .map(|(_, (_, ip))| *ip)
        .collect();
    let mut left = false;
    nothing_fires(prom, "a drain", Duration::from_secs(30), || {
        left = others.iter().all(|ip| {
            // The requests counter exists from the moment a peer is a target until it goes.
            scrape(*ip).is_ok_and(|m| {
                m.series("netprobe_peer_requests_total", &[("target_node", &node)])
                    .is_empty()
            })
        });
        left
    });
    assert!(left, "{node} still probed by its peers after the drain");
    cluster.kubectl(&["uncordon", &node]);
    wait_green(cluster, "after uncordon");
    log(format!("{node} drained and back; nothing fired"));
}

/// One DNS pod answers REFUSED: DNSReplicaFailing names that pod, and so does diagnose.
/// Returns the culprit as alerts name it (`coredns/<pod>`).
fn dns_pod_refusing_is_named(cluster: &Cluster, prom: &Prometheus, am: &Alertmanager) -> String {
    let (pod, _) = cluster.dns_pods().into_iter().next().expect("a DNS pod");
    log(format!("fault: {pod} refuses"));
    let exec = |word: &str| {
        cluster.kubectl(&["-n", "kube-system", "exec", &pod, "--", "fault", word]);
    };
    let fault = Fault::new(|| exec("refuse"), || exec("heal"));
    let server = format!("coredns/{pod}");
    let alerts = wait_firing(prom, "DNSReplicaFailing", &[("server", &server)]);
    let mut checks = Checks::default();
    for a in fault.raised(&alerts) {
        checks.that(
            a.name != "DNSReplicaFailing" || a.label("server") == server,
            format!("a healthy DNS pod named: {a}"),
        );
    }
    let report = diagnose(cluster, &[]);
    checks.that(
        report.has("dns.replica-failing", &pod),
        format!("diagnose names {pod}:\n{}", report.findings().join("\n")),
    );
    pages(&mut checks, am, &fault, &[&server]);
    checks.finish("a DNS pod refusing");
    drop(fault);
    wait_quiet(prom, "the DNS pod healed", &[], &server);
    log(format!("{pod}: named by the alert and diagnose, healed"));
    server
}

/// kube-proxy stopped and its rules flushed on one node: Services (kube-dns, kubernetes) fail
/// from that node only, while the DNS pods answer it directly. Returns the culprit node.
fn kube_proxy_down_is_named(
    cluster: &Cluster,
    prom: &Prometheus,
    am: &Alertmanager,
    earlier: &[String],
) -> String {
    let node = cluster.nodes[1].clone();
    let index = cluster.index(&node);
    log(format!("fault: kube-proxy stopped on {node}"));
    let fault = Fault::new(
        || cluster.script(&["kube-proxy", &index, "stop"]),
        || cluster.script(&["kube-proxy", &index, "start"]),
    );
    // One alert names the cause: Service IPs fail on the node while the DNS pods answer it
    // by pod IP. (Its DNS and API-server alerts fire too; the Alertmanager holds them back.)
    let alerts = wait_firing(prom, "NetworkServiceFailing", &[("node", &node)]);
    let mut checks = Checks::default();
    only_culprits_named(&mut checks, &fault, &alerts, &[&node], earlier);
    let report = diagnose(cluster, &[]);
    checks.that(
        report
            .findings()
            .iter()
            .any(|f| !f.starts_with("info") && f.contains(&node)),
        format!("diagnose names {node}:\n{}", report.findings().join("\n")),
    );
    let healthy: Vec<&String> = cluster.nodes.iter().filter(|n| **n != node).collect();
    checks.eq(
        "critical diagnose findings naming a healthy node",
        report.critical_naming(&healthy),
        Vec::<String>::new(),
    );
    pages(&mut checks, am, &fault, &[&node]);
    checks.finish("kube-proxy down on one node");
    drop(fault);
    wait_green(cluster, "kube-proxy restarted");
    wait_quiet(prom, "kube-proxy restarted", earlier, &node);
    log(format!("{node}: named by the alerts and diagnose, healed"));
    node
}

/// A node's network cut: it goes NotReady, and its peers keep probing its pod, so
/// NetworkNodeUnreachable names it after the API marks it NotReady too.
fn isolated_node_is_named(
    cluster: &Cluster,
    prom: &Prometheus,
    am: &Alertmanager,
    earlier: &[String],
) {
    let node = cluster.nodes[2].clone();
    let index = cluster.index(&node);
    log(format!("fault: {node}'s network cut"));
    let fault = Fault::new(
        || cluster.script(&["cut", &index]),
        || cluster.script(&["heal", &index]),
    );
    let cut_at = Instant::now();
    cluster.wait_node_ready(&node, false);
    log(format!("{node} NotReady after {:.0?}", cut_at.elapsed()));
    let not_ready_at = Instant::now();
    let alerts = wait_firing(prom, "NetworkNodeUnreachable", &[("target_node", &node)]);
    // Still firing, from series still there, well after NotReady (the old behaviour dropped
    // the node's peer at NotReady, and its series with it).
    std::thread::sleep(Duration::from_secs(30).saturating_sub(not_ready_at.elapsed()));
    let alerts_later = wait_firing(prom, "NetworkNodeUnreachable", &[("target_node", &node)]);
    let mut checks = Checks::default();
    only_culprits_named(&mut checks, &fault, &alerts, &[&node], earlier);
    only_culprits_named(&mut checks, &fault, &alerts_later, &[&node], earlier);
    let report = diagnose(cluster, &[]);
    checks.that(
        report.has("network.node-not-ready", &node),
        format!(
            "diagnose names {node} NotReady:\n{}",
            report.findings().join("\n")
        ),
    );
    let healthy: Vec<&String> = cluster.nodes.iter().filter(|n| **n != node).collect();
    checks.eq(
        "critical diagnose findings naming a healthy node",
        report.critical_naming(&healthy),
        Vec::<String>::new(),
    );
    pages(&mut checks, am, &fault, &[&node]);
    checks.finish("a node's network cut");
    drop(fault);
    cluster.wait_node_ready(&node, true);
    wait_green(cluster, "the node's network restored");
    wait_quiet(prom, "the node's network restored", earlier, &node);
    log(format!("{node}: named by the alert and diagnose, healed"));
}
