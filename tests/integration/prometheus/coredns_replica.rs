//! CoreDNS pods found through a real kube-apiserver, one of them failing: the replica alert
//! names it, and the DNS dashboard shows both.

use std::process::Command;

use crate::dns_server::Behaviour;
use crate::util::{Checks, Daemon, poll};

use super::dashboards::{DashboardQuery, QueryKind, dashboard_queries};
use super::{NODE, POD, Prometheus, WAIT, list, prometheus_config, rule_files, rules_state};

/// CoreDNS discovery end to end: the daemon finds two CoreDNS pods through a real kube-apiserver,
/// and one of them answers SERVFAIL. Prometheus, with the rules of alerts/, fires
/// DNSReplicaFailing for that pod and only that pod, DNSProbeFailing stays silent (per-pod
/// failures are the replica alert's), and the DNS dashboard's per-CoreDNS-pod panels show both
/// pods.
#[test]
#[ignore = "needs root: a kube-apiserver of its own (apt-get, /var/cache)"]
fn coredns_replica_failing_names_the_broken_pod() {
    assert!(
        Prometheus::binary().is_some(),
        "prometheus is not installed: `make deps` (scripts/install-test-deps) installs it"
    );
    let api = crate::apiserver::Apiserver::start();
    api.apply(crate::kube::RBAC);
    const NAME: &str = "kubernetes.default.svc.cluster.local";
    let (healthy, broken) = crate::kube::two_dns_servers();
    healthy.set(NAME, Behaviour::Answer([198, 18, 0, 1].into()));
    broken.set(NAME, Behaviour::ServFail);
    let port = healthy.addr().port();
    crate::kube::coredns_pod(&api, "coredns-a", "kube-dns", Some([127, 0, 0, 1].into()));
    crate::kube::coredns_pod(&api, "coredns-b", "kube-dns", Some([127, 0, 0, 2].into()));
    let config = format!(
        "listen: 127.0.0.1:0\nnode_name: {NODE}\npeers: {{ discovery: none }}\n\
         apiserver: {{ enabled: false }}\n\
         dns:\n  interval: 1s\n  timeout: 500ms\n  servers: []\n  \
         discover_coredns: {{ namespace: kube-system, selector: k8s-app=kube-dns, port: {port} }}\n  \
         queries: [{{ name: {NAME}, type: A }}]\n"
    );
    let mut program = Command::new(crate::util::bin());
    program.env("KUBECONFIG", api.kubeconfig_netprobe());
    let daemon = Daemon::start_in(program, &config, &[], [127, 0, 0, 1].into());
    let prom = Prometheus::start(
        &prometheus_config(&[(daemon.addr(), NODE, POD)]),
        &rule_files(),
    );

    let active = poll("DNSReplicaFailing firing for coredns-b", WAIT, || {
        let (active, _, _) = rules_state(&prom)?;
        let firing = active.iter().any(|a| {
            a.name == "DNSReplicaFailing"
                && a.state == "firing"
                && a.label("server") == "coredns/coredns-b"
        });
        if firing {
            Ok(active)
        } else {
            Err(format!("active: {}", list(&active)))
        }
    });
    let mut checks = Checks::default();
    for a in &active {
        let wrong = match a.name.as_str() {
            "DNSReplicaFailing" => a.label("server") != "coredns/coredns-b",
            "DNSProbeFailing" => true,
            _ => false,
        };
        checks.that(!wrong, format!("unexpected alert: {a}"));
    }
    let replica = active
        .iter()
        .find(|a| a.name == "DNSReplicaFailing")
        .expect("found above");
    // About the pod, from every node: no node, instance or name label is left.
    let mut keys: Vec<&str> = replica.labels.keys().map(String::as_str).collect();
    keys.sort_unstable();
    checks.eq(
        "the alert's labels",
        keys,
        vec!["alertname", "job", "namespace", "server", "severity"],
    );
    checks.eq("its severity", replica.label("severity"), "warning");

    // The DNS dashboard's per-CoreDNS-pod panels: both pods, each with data.
    let panels: Vec<DashboardQuery> = dashboard_queries()
        .into_iter()
        .filter(|q| q.uid == "kube-netprobe-dns" && q.panel.contains("CoreDNS pod"))
        .collect();
    checks.that(
        !panels.is_empty(),
        "the DNS dashboard has per-CoreDNS-pod panels",
    );
    for q in &panels {
        let QueryKind::Panel { expr, .. } = &q.kind else {
            continue;
        };
        match prom.query(expr) {
            Ok(result) => {
                let servers: Vec<&str> = result
                    .iter()
                    .filter_map(|r| r["metric"]["server"].as_str())
                    .collect();
                checks.that(
                    ["coredns/coredns-a", "coredns/coredns-b"]
                        .iter()
                        .all(|s| servers.contains(s)),
                    format!(
                        "{} / {}: servers {servers:?}, want both pods",
                        q.uid, q.panel
                    ),
                );
            }
            Err(e) => checks.that(false, format!("{} / {}: {e}", q.uid, q.panel)),
        }
    }
    checks.finish(&prom.log_tail(20));
}
