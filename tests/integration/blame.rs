//! Blame by votes, measured: 8 simulated nodes on network namespaces run the real binary with
//! static peers; a real Prometheus scrapes them (as the chart's ServiceMonitor would, `node`
//! label included) and evaluates `alerts/network.yaml`; a real Alertmanager runs the shipped
//! example configuration with a webhook of the test's own (see `alertmanager.rs`). Random single
//! and double faults of five kinds are injected with iptables and MTU changes:
//!
//! | fault | culprits |
//! | --- | --- |
//! | isolation: every packet from other nodes dropped | the node |
//! | ingress: new connections to the node dropped | the node |
//! | egress: replies to the node's own connections dropped | the node |
//! | MTU black hole at the node's bridge port (1000 bytes, no ICMP) | the node |
//! | a blocked pair: two nodes drop each other's packets, reaching everyone else | both |
//!
//! at `neighbours: 3` and `neighbours: 10` (every node probes the 7 others). The nodes the
//! firing network alerts name (`node`, and `target_node` on per-path alerts) are compared with
//! the culprits: precision and recall over all trials must each be at least 0.95. The seed is
//! printed; `NETPROBE_BLAME_SEED=<seed>` replays a run.
//!
//! For each single fault at `neighbours: 3`, the notifications the Alertmanager sends are
//! counted: at most 3, the first naming a culprit. Rules load with every `for:` shortened to
//! 1s; the Alertmanager's timers are scaled by 1/30 (30 s group_wait to 1 s: one rule
//! evaluation here, as 30 s is one evaluation in a typical Prometheus). Only the network rules
//! load: the DNS, API-server and storage ones have no data here, and the SLO burn rates' windows
//! (5 minutes to 3 days) cannot be shortened like `for:`, so one trial's errors would carry into
//! the next; the real-cluster end to end (cluster/) counts notifications with every rule file.
//!
//! Needs root (namespaces, iptables), Debian's `prometheus` and `prometheus-alertmanager`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::alertmanager::{Alertmanager, Notification};
use crate::netns::{Cluster, NetnsDaemon};
use crate::prometheus::{Prometheus, repo, shorten_for};
use crate::util::poll;

const NODES: usize = 8;
/// Alertmanager's timers over production's (see the module docs).
const AM_SCALE: f64 = 1.0 / 30.0;
/// The group_interval of the shipped route (5m) scaled: a group's later alerts are sent this
/// long after its first notification at the latest.
const GROUP_INTERVAL: Duration = Duration::from_secs(10);
/// Bound on a fault showing in Prometheus, and on a heal clearing.
const WAIT: Duration = Duration::from_secs(60);
const NETWORK_ALERTS: [&str; 5] = [
    "NetworkNodeUnreachable",
    "NetworkNodeEgressFailing",
    "NetworkPairBlocked",
    "NetworkNodeMTUBlackHole",
    "NetworkMTUBlackHole",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Isolation,
    Ingress,
    Egress,
    Mtu,
    Pair,
}

const KINDS: [Kind; 5] = [
    Kind::Isolation,
    Kind::Ingress,
    Kind::Egress,
    Kind::Mtu,
    Kind::Pair,
];

#[derive(Debug, Clone)]
struct Fault {
    kind: Kind,
    /// One node; two for a pair.
    nodes: Vec<usize>,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nodes: Vec<String> = self.nodes.iter().map(|n| format!("node-{n}")).collect();
        write!(f, "{:?}({})", self.kind, nodes.join(","))
    }
}

/// xorshift64*: enough randomness to pick faults, replayable from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Who probes whom: checker index -> target indices, as the daemons report it.
type Mesh = BTreeMap<usize, BTreeSet<usize>>;
/// (checker, target) paths.
type Paths = BTreeSet<(usize, usize)>;

fn config(cluster: &Cluster, me: usize, neighbours: usize) -> String {
    format!(
        "listen: 0.0.0.0:9753\nnode_name: {}\ndns: {{ servers: [] }}\napiserver: {{ enabled: false }}\n\
         peers:\n  interval: 500ms\n  timeout: 400ms\n  neighbours: {neighbours}\n  \
         protocols: [http, bulk]\n  bulk_bytes: 64KiB\n  discovery:\n    static: [{}]\n",
        cluster.node(me).name(),
        cluster.static_peers()
    )
}

fn index_of(name: &str) -> Option<usize> {
    name.strip_prefix("node-")?.parse().ok()
}

fn mesh_of(daemons: &[NetnsDaemon]) -> Mesh {
    daemons
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let targets = d
                .scrape()
                .label_values("netprobe_peer_requests_total", "target_node")
                .into_iter()
                .filter_map(|t| index_of(&t))
                .collect();
            (i, targets)
        })
        .collect()
}

fn probed(mesh: &Mesh, a: usize, b: usize) -> bool {
    mesh[&a].contains(&b) || mesh[&b].contains(&a)
}

/// Random faults on distinct nodes: `count` of them, kinds at random; a pair only between nodes
/// that probe each other in at least one direction (a pair nobody probes cannot be seen).
fn pick(rng: &mut Rng, mesh: &Mesh, kinds: &[Kind]) -> Vec<Fault> {
    loop {
        let mut used = BTreeSet::new();
        let mut faults = Vec::new();
        for &kind in kinds {
            let free: Vec<usize> = (0..NODES).filter(|n| !used.contains(n)).collect();
            let a = free[rng.below(free.len())];
            let nodes = if kind == Kind::Pair {
                let partners: Vec<usize> = free
                    .iter()
                    .copied()
                    .filter(|&b| b != a && probed(mesh, a, b))
                    .collect();
                if partners.is_empty() {
                    break;
                }
                vec![a, partners[rng.below(partners.len())]]
            } else {
                vec![a]
            };
            used.extend(nodes.iter().copied());
            faults.push(Fault { kind, nodes });
        }
        if faults.len() == kinds.len() {
            return faults;
        }
    }
}

fn apply(cluster: &Cluster, fault: &Fault) {
    let n = fault.nodes[0];
    match fault.kind {
        Kind::Isolation => cluster.black_hole(n),
        Kind::Ingress => cluster.drop_ingress(n),
        Kind::Egress => cluster.drop_egress(n),
        Kind::Mtu => cluster.shrink_mtu(n, 1000),
        Kind::Pair => cluster.block_pair(n, fault.nodes[1]),
    }
}

/// The paths the faults break, over http and (where http passes) bulk.
fn broken_paths(mesh: &Mesh, faults: &[Fault]) -> (Paths, Paths) {
    let paths: Vec<(usize, usize)> = mesh
        .iter()
        .flat_map(|(&c, ts)| ts.iter().map(move |&t| (c, t)))
        .collect();
    let mut http = BTreeSet::new();
    let mut bulk = BTreeSet::new();
    for f in faults {
        let n = f.nodes[0];
        for &(c, t) in &paths {
            let hit = match f.kind {
                Kind::Isolation => c == n || t == n,
                Kind::Ingress => t == n,
                Kind::Egress => c == n,
                Kind::Pair => (c, t) == (n, f.nodes[1]) || (t, c) == (n, f.nodes[1]),
                Kind::Mtu => false,
            };
            if hit {
                http.insert((c, t));
            }
            if f.kind == Kind::Mtu && (c == n || t == n) {
                bulk.insert((c, t));
            }
        }
    }
    bulk.retain(|p| !http.contains(p));
    (http, bulk)
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

/// The failing paths Prometheus sees now, for one protocol.
fn failing_paths(prom: &Prometheus, protocol: &str) -> Result<Paths, String> {
    let r = prom.query(&format!("netprobe_network:path_failed:{protocol} == 1"))?;
    Ok(r.iter()
        .filter_map(|s| {
            let c = index_of(s["metric"]["node"].as_str()?)?;
            let t = index_of(s["metric"]["target_node"].as_str()?)?;
            Some((c, t))
        })
        .collect())
}

/// Network alerts pending or firing now: (alertname, state, labels).
fn network_alerts(prom: &Prometheus) -> Result<Vec<(String, String, Value)>, String> {
    let r = prom.query("ALERTS")?;
    Ok(r.iter()
        .filter_map(|s| {
            let m = &s["metric"];
            let name = m["alertname"].as_str()?;
            NETWORK_ALERTS.contains(&name).then(|| {
                (
                    name.to_string(),
                    m["alertstate"].as_str().unwrap_or_default().to_string(),
                    m.clone(),
                )
            })
        })
        .collect())
}

/// The nodes the firing network alerts name.
fn named(alerts: &[(String, String, Value)]) -> BTreeSet<usize> {
    alerts
        .iter()
        .filter(|(_, state, _)| state == "firing")
        .flat_map(|(_, _, m)| {
            ["node", "target_node"]
                .into_iter()
                .filter_map(|k| index_of(m[k].as_str()?))
        })
        .collect()
}

fn culprits(faults: &[Fault]) -> BTreeSet<usize> {
    faults
        .iter()
        .flat_map(|f| f.nodes.iter().copied())
        .collect()
}

fn names_a_culprit(n: &Notification, culprits: &BTreeSet<usize>) -> bool {
    n.alerts.iter().any(|a| {
        ["node", "target_node"]
            .iter()
            .any(|k| index_of(a.label(k)).is_some_and(|i| culprits.contains(&i)))
    })
}

#[derive(Default)]
struct Score {
    true_positives: usize,
    false_positives: usize,
    false_negatives: usize,
    lines: Vec<String>,
}

impl Score {
    fn precision(&self) -> f64 {
        let named = self.true_positives + self.false_positives;
        if named == 0 {
            1.0
        } else {
            self.true_positives as f64 / named as f64
        }
    }
    fn recall(&self) -> f64 {
        let culprits = self.true_positives + self.false_negatives;
        if culprits == 0 {
            1.0
        } else {
            self.true_positives as f64 / culprits as f64
        }
    }
}

struct Bench<'a> {
    cluster: &'a Cluster,
    prom: &'a Prometheus,
    am: &'a Alertmanager,
}

impl Bench<'_> {
    /// Waits until Prometheus sees every path of `mesh` and none failing, and no network alert
    /// is pending or firing.
    fn wait_healthy(&self, mesh: &Mesh, what: &str) {
        let paths: usize = mesh.values().map(BTreeSet::len).sum();
        poll(what, WAIT, || {
            let ok = self
                .prom
                .query("netprobe_network:path_failed:http == 0")?
                .len();
            let failing = failing_paths(self.prom, "http")?;
            let bulk = failing_paths(self.prom, "bulk")?;
            let alerts = network_alerts(self.prom)?;
            if ok == paths && failing.is_empty() && bulk.is_empty() && alerts.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{ok} of {paths} paths up; failing http {failing:?}, bulk {bulk:?}; alerts {:?}",
                    alerts
                        .iter()
                        .map(|(n, s, m)| format!("{n}[{s}]{m}"))
                        .collect::<Vec<_>>()
                ))
            }
        });
    }

    /// One trial: injects `faults`, waits until Prometheus sees every path they break and the
    /// alerts settle, scores the nodes named, and (when `count_pages`) counts the
    /// notifications. Heals and waits for health again.
    fn trial(
        &self,
        mesh: &Mesh,
        faults: &[Fault],
        count_pages: bool,
        score: &mut Score,
    ) -> Option<Vec<Notification>> {
        let started = now();
        let (http, bulk) = broken_paths(mesh, faults);
        for f in faults {
            apply(self.cluster, f);
        }
        let description: Vec<String> = faults.iter().map(Fault::to_string).collect();
        let description = description.join(" + ");
        poll(
            &format!("{description}: Prometheus to see the broken paths"),
            WAIT,
            || {
                let seen_http = failing_paths(self.prom, "http")?;
                let seen_bulk = failing_paths(self.prom, "bulk")?;
                let missing_http: Vec<_> = http.difference(&seen_http).collect();
                let missing_bulk: Vec<_> = bulk.difference(&seen_bulk).collect();
                if missing_http.is_empty() && missing_bulk.is_empty() {
                    Ok(())
                } else {
                    Err(format!(
                        "not yet failing: http {missing_http:?}, bulk {missing_bulk:?}"
                    ))
                }
            },
        );
        // Every `for:` is 1 s and rules evaluate every second: three rounds settle them. Then
        // the named set must hold still for three polls a second apart.
        let settle = Instant::now() + Duration::from_secs(3);
        let mut last: Option<BTreeSet<usize>> = None;
        let mut same = 0;
        let deadline = Instant::now() + WAIT;
        let names = loop {
            let alerts = network_alerts(self.prom).unwrap_or_default();
            let pending = alerts.iter().any(|(_, s, _)| s == "pending");
            let current = named(&alerts);
            if Instant::now() >= settle && !pending && last.as_ref() == Some(&current) {
                same += 1;
            } else {
                same = 0;
            }
            last = Some(current.clone());
            if same >= 2 || Instant::now() >= deadline {
                break current;
            }
            std::thread::sleep(Duration::from_secs(1));
        };
        let truth = culprits(faults);
        let tp = names.intersection(&truth).count();
        let fp = names.difference(&truth).count();
        let fn_ = truth.difference(&names).count();
        score.true_positives += tp;
        score.false_positives += fp;
        score.false_negatives += fn_;
        let line = format!(
            "{description}: named {:?}, culprits {:?}{}",
            names
                .iter()
                .map(|n| format!("node-{n}"))
                .collect::<Vec<_>>(),
            truth
                .iter()
                .map(|n| format!("node-{n}"))
                .collect::<Vec<_>>(),
            if fp + fn_ > 0 { "  <-- wrong" } else { "" }
        );
        eprintln!("blame: {line}");
        score.lines.push(line);

        let pages = count_pages.then(|| {
            // Later alerts of a group go out one group_interval after its first notification
            // at the latest; new groups one group_wait after they start.
            std::thread::sleep(GROUP_INTERVAL + Duration::from_secs(2));
            self.am.firing_since(started)
        });
        for f in faults {
            for &n in &f.nodes {
                self.cluster.heal(n);
            }
        }
        self.wait_healthy(
            mesh,
            &format!("{description} healed: every path up, no alert"),
        );
        pages
    }
}

#[test]
#[ignore = "needs root: network namespaces"]
fn votes_name_the_faulty_nodes_and_one_incident_sends_few_notifications() {
    assert!(
        Prometheus::binary().is_some() && Alertmanager::binary().is_some(),
        "prometheus and prometheus-alertmanager are needed: `make deps` installs them"
    );
    let cluster = Cluster::new(NODES);
    let seed = std::env::var("NETPROBE_BLAME_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| (now() * 1000.0) as u64 | 1);
    eprintln!("blame: seed {seed} (replay: NETPROBE_BLAME_SEED={seed})");
    let mut rng = Rng(seed);

    let am = Alertmanager::start(AM_SCALE);
    let mut prom_config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files: [\"rules/*.yaml\"]\n{}\
         scrape_configs:\n  - job_name: kube-netprobe\n    static_configs:\n",
        am.prometheus_alerting()
    );
    for node in cluster.nodes() {
        prom_config.push_str(&format!(
            "      - targets: [\"{}:9753\"]\n        labels: {{ node: {}, namespace: kube-netprobe, pod: kube-netprobe-{} }}\n",
            node.ip(),
            node.name(),
            node.name()
        ));
    }
    let network = std::fs::read_to_string(repo().join("alerts/network.yaml"))
        .expect("read alerts/network.yaml");
    let prom = Prometheus::start(
        &prom_config,
        &[("network.yaml".to_string(), shorten_for(&network))],
    );
    let bench = Bench {
        cluster: &cluster,
        prom: &prom,
        am: &am,
    };

    let mut score = Score::default();
    let mut pages: Vec<(String, Vec<Notification>, BTreeSet<usize>)> = Vec::new();
    for neighbours in [3, 10] {
        let daemons: Vec<NetnsDaemon> = (0..NODES)
            .map(|i| cluster.node(i).run_daemon(&config(&cluster, i, neighbours)))
            .collect();
        let mesh = poll(
            &format!("neighbours {neighbours}: every daemon to probe its peers"),
            WAIT,
            || {
                let mesh = mesh_of(&daemons);
                let want = neighbours.min(NODES - 1);
                if mesh.values().all(|t| t.len() == want) {
                    Ok(mesh)
                } else {
                    Err(format!("{mesh:?}, want {want} targets each"))
                }
            },
        );
        let healthy_since = now();
        bench.wait_healthy(&mesh, &format!("neighbours {neighbours}: a healthy mesh"));
        let quiet = am.firing_since(healthy_since);
        assert!(
            quiet.is_empty(),
            "neighbours {neighbours}: notifications while healthy: {}",
            quiet
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );

        // Every kind alone, in random order, then random doubles.
        let mut singles = KINDS.to_vec();
        for i in (1..singles.len()).rev() {
            singles.swap(i, rng.below(i + 1));
        }
        let mut plans: Vec<Vec<Kind>> = singles.into_iter().map(|k| vec![k]).collect();
        for _ in 0..4 {
            plans.push(vec![
                KINDS[rng.below(KINDS.len())],
                KINDS[rng.below(KINDS.len())],
            ]);
        }
        for kinds in plans {
            let faults = pick(&mut rng, &mesh, &kinds);
            let count = neighbours == 3 && faults.len() == 1;
            if let Some(n) = bench.trial(&mesh, &faults, count, &mut score) {
                let description: Vec<String> = faults.iter().map(Fault::to_string).collect();
                pages.push((description.join(" + "), n, culprits(&faults)));
            }
        }
        drop(daemons);
    }

    eprintln!(
        "blame: seed {seed}: precision {:.3}, recall {:.3} ({} named correctly, {} wrongly, {} missed)",
        score.precision(),
        score.recall(),
        score.true_positives,
        score.false_positives,
        score.false_negatives
    );
    let mut failures = Vec::new();
    if score.precision() < 0.95 || score.recall() < 0.95 {
        failures.push(format!(
            "precision {:.3} and recall {:.3} must each be at least 0.95 (seed {seed}):\n  {}",
            score.precision(),
            score.recall(),
            score.lines.join("\n  ")
        ));
    }
    for (fault, notifications, culprits) in &pages {
        let shown: Vec<String> = notifications.iter().map(ToString::to_string).collect();
        eprintln!(
            "pages: {fault}: {} notification(s)\n    {}",
            notifications.len(),
            shown.join("\n    ")
        );
        if notifications.is_empty() || notifications.len() > 3 {
            failures.push(format!(
                "{fault}: {} notifications, want 1 to 3:\n    {}",
                notifications.len(),
                shown.join("\n    ")
            ));
        } else if !names_a_culprit(&notifications[0], culprits) {
            failures.push(format!(
                "{fault}: the first notification names no culprit: {}",
                notifications[0]
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
