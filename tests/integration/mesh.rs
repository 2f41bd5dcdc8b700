//! The pod-to-pod mesh on real network namespaces: four simulated nodes on a bridge, each
//! running the real binary with a static peer list, and faults on one node's network. The test
//! reads only `/metrics`, as a user's alerts would.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::netns::{Cluster, NetnsDaemon};
use crate::util::Metrics;

const WAIT: Duration = Duration::from_secs(20);
const NEIGHBOURS: usize = 2;
const PROTOCOLS: [&str; 4] = ["http", "tcp", "bulk", "icmp"];

fn config(cluster: &Cluster, me: usize) -> String {
    format!(
        "listen: 0.0.0.0:9753\nnode_name: {}\ndns: {{ servers: [] }}\napiserver: {{ enabled: false }}\n\
         peers:\n  interval: 500ms\n  timeout: 400ms\n  neighbours: {NEIGHBOURS}\n  \
         protocols: [http, tcp, bulk, icmp]\n  bulk_bytes: 64KiB\n  discovery:\n    static: [{}]\n",
        cluster.node(me).name(),
        cluster.static_peers()
    )
}

/// The mesh as every daemon sees it: for each node, its probe targets (their counters exist
/// from the start; `netprobe_peer_probe_success` only once a probe has ended).
fn targets(daemons: &[NetnsDaemon]) -> BTreeMap<usize, BTreeSet<String>> {
    daemons
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let m = d.scrape();
            (
                i,
                m.label_values("netprobe_peer_requests_total", "target_node")
                    .into_iter()
                    .collect(),
            )
        })
        .collect()
}

fn up(m: &Metrics, target: &str, protocol: &str) -> Option<f64> {
    m.get(
        "netprobe_peer_probe_success",
        &[
            ("target_node", target),
            ("protocol", protocol),
            ("family", "ipv4"),
        ],
    )
}

fn results(m: &Metrics, target: &str, protocol: &str, result: &str) -> f64 {
    m.sum(
        "netprobe_peer_requests_total",
        &[
            ("target_node", target),
            ("protocol", protocol),
            ("result", result),
        ],
    )
}

/// Waits until `daemon` reports `want` for each (target, protocol) in `expect`.
fn wait_up(daemon: &mut NetnsDaemon, expect: &[(&str, &str, f64)], what: &str) -> Metrics {
    daemon
        .wait_until(what, WAIT, |m| {
            let wrong: Vec<String> = expect
                .iter()
                .filter(|(t, p, want)| up(m, t, p) != Some(*want))
                .map(|(t, p, want)| format!("{t}/{p}: {:?} (want {want})", up(m, t, p)))
                .collect();
            if wrong.is_empty() {
                Ok(())
            } else {
                Err(wrong.join(", "))
            }
        })
        .1
}

/// Heals `victim` and waits until each of its checkers sees it up on every protocol again.
fn heal_and_wait(
    cluster: &Cluster,
    daemons: &mut [NetnsDaemon],
    checkers: &[usize],
    victim: usize,
    victim_name: &str,
) {
    cluster.heal(victim);
    for &c in checkers {
        let expect: Vec<_> = PROTOCOLS.iter().map(|p| (victim_name, *p, 1.0)).collect();
        wait_up(
            &mut daemons[c],
            &expect,
            &format!("node-{c} to see {victim_name} recover"),
        );
    }
}

#[test]
#[ignore = "needs root: network namespaces"]
fn four_nodes_name_the_one_at_fault() {
    let cluster = Cluster::new(4);
    for node in cluster.nodes() {
        // Unprivileged ICMP sockets for every group, as a pod's securityContext sysctl would.
        let out = node.exec(
            &["sysctl", "-w", "net.ipv4.ping_group_range=0 2147483647"],
            Duration::from_secs(5),
        );
        assert!(out.status.success(), "{out:?}");
    }
    let mut daemons: Vec<NetnsDaemon> = (0..cluster.len())
        .map(|i| cluster.node(i).run_daemon(&config(&cluster, i)))
        .collect();
    let names: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|n| n.name().to_owned())
        .collect();

    // Everyone up, over every protocol, towards exactly `NEIGHBOURS` peers; and every node has
    // exactly `NEIGHBOURS` checkers, as each daemon's netprobe_peer_checkers_expected says.
    let mesh = targets(&daemons);
    for (i, daemon) in daemons.iter_mut().enumerate() {
        assert_eq!(mesh[&i].len(), NEIGHBOURS, "node-{i} probes {:?}", mesh[&i]);
        let expect: Vec<(&str, &str, f64)> = mesh[&i]
            .iter()
            .flat_map(|t| PROTOCOLS.iter().map(move |p| (t.as_str(), *p, 1.0)))
            .collect();
        let m = wait_up(daemon, &expect, &format!("node-{i}: every peer up"));
        assert_eq!(m.get("netprobe_icmp_available", &[]), Some(1.0));
        assert_eq!(
            m.get(
                "netprobe_peer_checkers_expected",
                &[("target_node", names[i].as_str())]
            ),
            Some(NEIGHBOURS as f64)
        );
    }
    let checkers = |node: usize| -> Vec<usize> {
        mesh.iter()
            .filter(|(_, t)| t.contains(&names[node]))
            .map(|(i, _)| *i)
            .collect()
    };
    for i in 0..cluster.len() {
        assert_eq!(checkers(i).len(), NEIGHBOURS, "checkers of node-{i}");
    }

    let victim = 1;
    let victim_name = names[victim].as_str();
    let bystanders = |daemons: &mut [NetnsDaemon]| {
        // Nobody else changes: every other pair stays up. (The victim's own probes fail too:
        // their answers are dropped on the way back in; that is its checkers' business.)
        for (i, daemon) in daemons.iter_mut().enumerate() {
            if i == victim {
                continue;
            }
            let expect: Vec<(&str, &str, f64)> = mesh[&i]
                .iter()
                .filter(|t| t.as_str() != victim_name)
                .flat_map(|t| PROTOCOLS.iter().map(move |p| (t.as_str(), *p, 1.0)))
                .collect();
            let m = daemon.scrape();
            for (t, p, want) in expect {
                assert_eq!(up(&m, t, p), Some(want), "node-{i} -> {t}/{p} changed");
            }
        }
    };

    // A black hole: every checker sees timeouts on every protocol.
    cluster.black_hole(victim);
    for &c in &checkers(victim) {
        let expect: Vec<_> = PROTOCOLS.iter().map(|p| (victim_name, *p, 0.0)).collect();
        let m = wait_up(
            &mut daemons[c],
            &expect,
            &format!("node-{c} to see {victim_name} down"),
        );
        for p in ["http", "tcp", "bulk"] {
            assert!(
                results(&m, victim_name, p, "timeout") >= 1.0,
                "node-{c}: {p} timeouts"
            );
        }
    }
    bystanders(&mut daemons);

    heal_and_wait(
        &cluster,
        &mut daemons,
        &checkers(victim),
        victim,
        victim_name,
    );

    // TCP resets: refused at once, not a timeout.
    cluster.reset(victim);
    for &c in &checkers(victim) {
        let expect = [(victim_name, "http", 0.0), (victim_name, "tcp", 0.0)];
        let before = daemons[c].scrape();
        let m = daemons[c]
            .wait_until(
                &format!("node-{c} to see {victim_name} refuse"),
                WAIT,
                |m| {
                    let refused = results(m, victim_name, "tcp", "refused")
                        - results(&before, victim_name, "tcp", "refused");
                    let down = expect.iter().all(|(t, p, want)| up(m, t, p) == Some(*want));
                    if refused >= 1.0 && down {
                        Ok(())
                    } else {
                        Err(format!(
                            "refused +{refused}, up {:?}",
                            up(m, victim_name, "tcp")
                        ))
                    }
                },
            )
            .1;
        assert!(results(&m, victim_name, "http", "refused") >= 1.0);
    }
    bystanders(&mut daemons);
    cluster.heal(victim);

    // An MTU black hole: small exchanges pass, full-size packets vanish.
    cluster.shrink_mtu(victim, 1000);
    for &c in &checkers(victim) {
        let expect = [
            (victim_name, "bulk", 0.0),
            (victim_name, "http", 1.0),
            (victim_name, "tcp", 1.0),
            (victim_name, "icmp", 1.0),
        ];
        let m = wait_up(
            &mut daemons[c],
            &expect,
            &format!("node-{c}: bulk to {victim_name} fails, ping passes"),
        );
        assert!(results(&m, victim_name, "bulk", "timeout") >= 1.0);
    }
    bystanders(&mut daemons);

    heal_and_wait(
        &cluster,
        &mut daemons,
        &checkers(victim),
        victim,
        victim_name,
    );
}
