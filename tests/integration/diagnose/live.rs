//! The live matrix read from real daemons through the API server's pod proxy.

use std::time::Duration;

use crate::apiserver::Apiserver;
use crate::util::Checks;

use super::seed::{app_namespace, base, healthy_coredns, ready_node};
use super::{diagnose, expect, fixture};

/// The live matrix through the API server's pod proxy: three simulated nodes (network
/// namespaces on 198.18.0.0/15, reachable from the root namespace where the apiserver runs),
/// each running the real daemon; Pods in the apiserver whose podIP is the node's address.
#[test]
#[ignore = "needs root: a kube-apiserver of its own (apt-get, /var/cache)"]
fn diagnose_reads_the_live_matrix_through_the_pod_proxy() {
    let cluster = crate::netns::Cluster::new(3);
    let api = Apiserver::start();
    let out = tempfile::tempdir().expect("tempdir");
    let names: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|n| n.name().to_owned())
        .collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let peers: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|n| format!("\"{}={}:9753\"", n.name(), n.ip()))
        .collect();
    let mut daemons: Vec<crate::netns::NetnsDaemon> = cluster
        .nodes()
        .iter()
        .map(|n| {
            n.run_daemon(&format!(
                "listen: 0.0.0.0:9753\nnode_name: {}\ndns: {{ servers: [] }}\napiserver: {{ enabled: false }}\n\
                 peers:\n  interval: 500ms\n  timeout: 400ms\n  neighbours: 2\n  protocols: [http, tcp, bulk]\n  bulk_bytes: 64KiB\n  \
                 discovery:\n    static: [{}]\n",
                n.name(),
                peers.join(", ")
            ))
        })
        .collect();

    api.apply(&base(&name_refs));
    for n in &names {
        ready_node(&api, n, false);
    }
    healthy_coredns(&api);
    api.patch_status(
        "persistentvolumeclaims",
        "shop",
        "data",
        r#"{"status":{"phase":"Bound"}}"#,
    );
    app_namespace(&api, "healthy", "");
    api.apply("apiVersion: v1\nkind: Namespace\nmetadata: { name: kube-netprobe }\n");
    for node in cluster.nodes() {
        let pod = format!("netprobe-{}", node.index());
        api.apply(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {pod}\n  namespace: kube-netprobe\n  \
             labels: {{ app.kubernetes.io/name: kube-netprobe }}\nspec:\n  nodeName: {}\n  \
             containers: [{{ name: netprobe, image: kube-netprobe:test, ports: [{{ name: metrics, containerPort: 9753 }}] }}]\n",
            node.name()
        ));
        api.patch_status(
            "pods",
            "kube-netprobe",
            &pod,
            &format!(
                r#"{{"status":{{"phase":"Running","podIP":"{ip}","podIPs":[{{"ip":"{ip}"}}],"conditions":[{{"type":"Ready","status":"True"}}]}}}}"#,
                ip = node.ip()
            ),
        );
    }
    // [http, tcp, bulk] of one peer.
    let peer_up = |m: &crate::util::Metrics, target: &str| {
        ["http", "tcp", "bulk"].map(|p| {
            m.get(
                "netprobe_peer_probe_success",
                &[("target_node", target), ("protocol", p), ("family", "ipv4")],
            )
        })
    };
    // Waits until every daemon but the victim's sees the victim as `victim_state` and the
    // other peers up.
    let wait_all = |daemons: &mut [crate::netns::NetnsDaemon],
                    victim: Option<usize>,
                    victim_state: [f64; 3]| {
        for (i, d) in daemons.iter_mut().enumerate() {
            if Some(i) == victim {
                continue;
            }
            d.wait_until("peers as expected", Duration::from_secs(20), |m| {
                let wrong: Vec<String> = names
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .filter(|(j, n)| {
                        let want = if Some(*j) == victim {
                            victim_state
                        } else {
                            [1.0; 3]
                        };
                        peer_up(m, n) != want.map(Some)
                    })
                    .map(|(_, n)| format!("{n}: {:?}", peer_up(m, n)))
                    .collect();
                if wrong.is_empty() {
                    Ok(())
                } else {
                    Err(wrong.join(", "))
                }
            });
        }
    };
    let logs = fixture("coredns-healthy.log");
    let args = [
        "-n",
        "healthy",
        "--coredns-logs",
        logs.to_str().unwrap(),
        "--netprobe-namespace",
        "kube-netprobe",
    ];
    let mut checks = Checks::default();

    wait_all(&mut daemons, None, [1.0; 3]);
    let r = diagnose("live-healthy", api.kubeconfig_admin(), out.path(), &args);
    expect(&mut checks, &r, 0, &[]);
    let cells = r
        .report
        .as_ref()
        .and_then(|r| r["matrix"]["cells"].as_array().cloned())
        .unwrap_or_default();
    checks.that(
        cells.len() == 18 && cells.iter().all(|c| c["up"] == true),
        format!(
            "want 18 cells up (3 nodes x 2 peers x http, tcp, bulk): {cells:?}\n{}",
            r.context()
        ),
    );

    let victim = 1;
    cluster.black_hole(victim);
    wait_all(&mut daemons, Some(victim), [0.0; 3]);
    let r = diagnose("live-black-hole", api.kubeconfig_admin(), out.path(), &args);
    expect(&mut checks, &r, 2, &["network.node-isolated"]);
    r.leads_with(&mut checks, "CRITICAL", "network.node-isolated");
    checks.that(
        r.stdout
            .lines()
            .next()
            .is_some_and(|l| l.contains(&format!("Node {} is cut off", names[victim]))),
        format!("the victim is not named:\n{}", r.context()),
    );

    // An MTU black hole on one node: small requests pass, bulk transfers stall.
    cluster.heal(victim);
    wait_all(&mut daemons, None, [1.0; 3]);
    cluster.shrink_mtu(victim, 1000);
    wait_all(&mut daemons, Some(victim), [1.0, 1.0, 0.0]);
    let r = diagnose("live-mtu", api.kubeconfig_admin(), out.path(), &args);
    expect(&mut checks, &r, 2, &["network.mtu-blackhole"]);
    r.leads_with(&mut checks, "CRITICAL", "network.mtu-blackhole");
    checks.that(
        r.stdout
            .lines()
            .next()
            .is_some_and(|l| l.contains(&format!("all to or from {}", names[victim]))),
        format!("the MTU victim is not named:\n{}", r.context()),
    );
    checks.finish("live matrix through the pod proxy");
}
