//! Green: every pod's probes succeed, and the DaemonSet is rolled out.

use std::time::Duration;

use crate::util::poll_every;

use super::{Cluster, EVERY, NAMESPACE, PROTOCOLS, QUERIES, RELEASE, WAIT, scrape};

/// What every pod must see on a healthy cluster, as failures (empty: green).
pub(super) fn green_failures(cluster: &Cluster) -> Vec<String> {
    let pods = cluster.netprobe_pods();
    let mut failures = Vec::new();
    if pods.len() != cluster.nodes.len() {
        failures.push(format!("kube-netprobe pods on {:?}", pods.keys()));
    }
    let dns_pods = cluster.dns_pods();
    let service = format!("{}:53", cluster.env["DNS_IP"]);
    for (node, (pod, ip)) in &pods {
        let m = match scrape(*ip) {
            Ok(m) => m,
            Err(e) => {
                failures.push(format!("{node}: {e}"));
                continue;
            }
        };
        let mut expect = |name: &str, labels: &[(&str, &str)]| match m.get(name, labels) {
            Some(1.0) => {}
            other => failures.push(format!(
                "{node} ({pod}): {} = {other:?}, want 1",
                crate::util::selector(name, labels)
            )),
        };
        for q in QUERIES {
            expect(
                "netprobe_dns_probe_success",
                &[("server", "system"), ("name", q)],
            );
            expect(
                "netprobe_dns_probe_success",
                &[("server", &service), ("name", q)],
            );
            for (dns, _) in &dns_pods {
                expect(
                    "netprobe_dns_probe_success",
                    &[("server", &format!("coredns/{dns}")), ("name", q)],
                );
            }
        }
        for other in cluster.nodes.iter().filter(|n| *n != node) {
            for p in PROTOCOLS {
                expect(
                    "netprobe_peer_probe_success",
                    &[("target_node", other), ("protocol", p)],
                );
            }
        }
        expect("netprobe_apiserver_probe_success", &[("path", "direct")]);
        expect("netprobe_apiserver_probe_success", &[("path", "dns")]);
        expect("netprobe_storage_probe_success", &[("volume", "scratch")]);
        expect("netprobe_icmp_available", &[]);
    }
    failures
}

pub(super) fn wait_green(cluster: &Cluster, after: &str) {
    poll_every(
        &format!("every probe on every node to succeed ({after})"),
        WAIT,
        Duration::from_secs(3),
        || {
            let failures = green_failures(cluster);
            if failures.is_empty() {
                Ok(())
            } else {
                Err(failures.join("\n    "))
            }
        },
    );
}

pub(super) fn wait_daemonset(cluster: &Cluster) {
    poll_every(
        "the DaemonSet rolled out and Ready on every node",
        WAIT,
        EVERY,
        || {
            let ds = cluster.json(&["-n", NAMESPACE, "get", "daemonset", RELEASE]);
            let s = &ds["status"];
            let want = cluster.nodes.len() as u64;
            let ok = s["desiredNumberScheduled"] == want
                && s["numberReady"] == want
                && s["updatedNumberScheduled"] == want
                && s["numberAvailable"] == want
                && s["observedGeneration"] == ds["metadata"]["generation"];
            if ok { Ok(()) } else { Err(s.to_string()) }
        },
    );
}
