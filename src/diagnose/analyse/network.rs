//! The live matrix (every kube-netprobe pod's peer probes, read from its /metrics) and the
//! API-server probes: which node cannot reach or be reached, blamed by votes.

use super::*;

// ---------------------------------------------------------------------------------------------
// Live matrix (kube-netprobe's peer probes, read from every pod's /metrics)

/// Completed probes below which a target's failure is not judged: the target is "too fresh".
/// A kube-netprobe pod that was just replaced, or a peer whose address just changed, starts its
/// series from zero, and its first probe or two may fail while the new pod comes up. Three
/// completed probes are 30 s of peer probes and 45 s of DNS and API-server probes at the
/// default intervals (10 s, 15 s): a fault that outlives them is a fault. Successes count from
/// the first probe (a success is never a start-up artefact), and a target without any series
/// (the daemon exports a target's series with its first result) is not known at all.
pub const MIN_PROBES: f64 = 3.0;

/// Completed probes of one target: the sum of the counter `family`'s samples (one per result or
/// rcode) whose labels include every pair of `labels`; 0 when the daemon has none yet.
pub(super) fn completed(samples: &[Sample], family: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|x| x.name == family && labels.iter().all(|(k, v)| x.label(k) == *v))
        .map(|x| x.value)
        .filter(|v| v.is_finite())
        .sum()
}

/// Every readable kube-netprobe scrape: (node, its samples).
pub(super) fn readable_scrapes(s: &Snapshot) -> Vec<(&str, Vec<Sample>)> {
    s.probe_scrapes
        .iter()
        .filter_map(|x| Some((x.node.as_str(), scrape::parse(x.text.as_deref()?))))
        .collect()
}

/// One probe result: `source` node probing `target` node over `protocol`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cell {
    pub source: String,
    pub target: String,
    pub protocol: String,
    pub up: bool,
    /// Probes `source` has completed of `target` over `protocol` since it first saw the
    /// target's current address (`netprobe_peer_requests_total`, every result); a failing cell
    /// with fewer than [`MIN_PROBES`] is too fresh to judge.
    pub probes: u64,
}

impl Cell {
    /// Whether the analysis counts this cell: up, or down after enough probes.
    pub fn judged(&self) -> bool {
        self.up || self.probes as f64 >= MIN_PROBES
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Matrix {
    pub nodes: Vec<String>,
    pub protocols: Vec<String>,
    pub cells: Vec<Cell>,
    /// Nodes whose kube-netprobe pod's /metrics could not be read (and no other pod's of that
    /// node could: during a rollout the old, terminating pod is not read, the new one is).
    pub unread: Vec<String>,
    /// Why, per node in `unread`.
    #[serde(skip)]
    pub unread_reasons: BTreeMap<String, String>,
    /// Nodes whose /metrics were read.
    #[serde(skip)]
    pub read: BTreeSet<String>,
}

impl Matrix {
    pub fn from_snapshot(s: &Snapshot) -> Matrix {
        let mut matrix = Matrix::default();
        // (source, target, protocol) -> (up, probes)
        let mut cells: BTreeMap<(String, String, String), (bool, u64)> = BTreeMap::new();
        let mut failed: BTreeMap<String, String> = BTreeMap::new();
        for scrape in &s.probe_scrapes {
            let Some(text) = &scrape.text else {
                failed.insert(
                    scrape.node.clone(),
                    scrape.error.clone().unwrap_or_else(|| "not read".into()),
                );
                continue;
            };
            matrix.read.insert(scrape.node.clone());
            let samples = scrape::parse(text);
            for sample in samples
                .iter()
                .filter(|x| x.name == "netprobe_peer_probe_success")
            {
                let (target, protocol) = (sample.label("target_node"), sample.label("protocol"));
                let probes = completed(
                    &samples,
                    "netprobe_peer_requests_total",
                    &[("target_node", target), ("protocol", protocol)],
                ) as u64;
                let key = (scrape.node.clone(), target.to_owned(), protocol.to_owned());
                // Several IP families: the pair is up only if every family is. The counters
                // are shared by the families.
                let up = sample.value >= 1.0;
                cells
                    .entry(key)
                    .and_modify(|(u, p)| {
                        *u &= up;
                        *p = (*p).max(probes);
                    })
                    .or_insert((up, probes));
            }
        }
        for (node, reason) in failed {
            if !matrix.read.contains(&node) {
                matrix.unread.push(node.clone());
                matrix.unread_reasons.insert(node, reason);
            }
        }
        let mut nodes = BTreeSet::new();
        let mut protocols = BTreeSet::new();
        for ((source, target, protocol), (up, probes)) in cells {
            nodes.insert(source.clone());
            nodes.insert(target.clone());
            protocols.insert(protocol.clone());
            matrix.cells.push(Cell {
                source,
                target,
                protocol,
                up,
                probes,
            });
        }
        matrix.nodes = nodes.into_iter().collect();
        matrix.protocols = protocols.into_iter().collect();
        matrix
    }

    /// What is known of `node`'s own view when its outbound probes cannot be judged.
    pub(super) fn own_view_unknown(&self, node: &str, outbound: usize) -> (&'static str, String) {
        if let Some(reason) = self.unread_reasons.get(node) {
            (
                "its own view could not be read",
                format!(
                    "node {node}: its kube-netprobe pod's /metrics could not be read: {reason}"
                ),
            )
        } else if !self.read.contains(node) {
            (
                "its own view could not be read",
                format!("node {node}: no kube-netprobe pod's /metrics were read for it"),
            )
        } else if outbound == 0 {
            (
                "its own view has no judged peer probes",
                format!(
                    "node {node}: its own peer probes are missing or all too fresh (fewer than \
                     {MIN_PROBES} probes each)"
                ),
            )
        } else {
            (
                "its own view is too fresh to judge",
                format!(
                    "node {node}: only {outbound} of its own peer probes can be judged (at least \
                     2 needed, each with {MIN_PROBES} probes or a success)"
                ),
            )
        }
    }
}

pub fn live_matrix(m: &Matrix) -> Vec<Finding> {
    // Per (source, target): connectivity (every protocol but bulk) and bulk, judged cells only.
    let mut basic: BTreeMap<(&str, &str), bool> = BTreeMap::new();
    let mut bulk: BTreeMap<(&str, &str), bool> = BTreeMap::new();
    for c in m.cells.iter().filter(|c| c.judged()) {
        let key = (c.source.as_str(), c.target.as_str());
        let map = if c.protocol == "bulk" {
            &mut bulk
        } else {
            &mut basic
        };
        map.entry(key).and_modify(|u| *u &= c.up).or_insert(c.up);
    }
    let failing: BTreeSet<(&str, &str)> = basic
        .iter()
        .filter(|(_, up)| !**up)
        .map(|(k, _)| *k)
        .collect();
    let pair = |(s, t): &(&str, &str)| format!("{s} -> {t}");
    let mut out = Vec::new();
    let mut explained: BTreeSet<(&str, &str)> = BTreeSet::new();
    let mut blamed_nodes: Vec<Finding> = Vec::new();
    // Blame by votes, the rule of alerts/network.yaml: a failed path counts against its target
    // only when its checker fails at most half of its other paths, and against its checker only
    // when the target's other checkers fail at most half of their paths to it. A node is blamed
    // one way when more than half of that way's valid votes fail. So a healthy node whose
    // probes include two broken nodes is not blamed, however few peers it has.
    let share_failing = |paths: &mut dyn Iterator<Item = bool>| -> Option<f64> {
        let (mut n, mut failed) = (0usize, 0usize);
        for up in paths {
            n += 1;
            failed += usize::from(!up);
        }
        (n > 0).then(|| failed as f64 / n as f64)
    };
    let checker_sound = |checker: &str, target: &str| {
        share_failing(
            &mut basic
                .iter()
                .filter(|((s, t), _)| *s == checker && *t != target)
                .map(|(_, up)| *up),
        )
        .is_none_or(|f| f <= 0.5)
    };
    let target_answers_others = |checker: &str, target: &str| {
        share_failing(
            &mut basic
                .iter()
                .filter(|((s, t), _)| *t == target && *s != checker)
                .map(|(_, up)| *up),
        )
        .is_none_or(|f| f <= 0.5)
    };
    for node in &m.nodes {
        let node = node.as_str();
        let inbound: Vec<_> = basic.iter().filter(|((_, t), _)| *t == node).collect();
        let outbound: Vec<_> = basic.iter().filter(|((s, _), _)| *s == node).collect();
        // Votes each way: (valid, failing among them).
        let in_votes: Vec<bool> = inbound
            .iter()
            .filter(|((c, _), _)| checker_sound(c, node))
            .map(|(_, up)| **up)
            .collect();
        let out_votes: Vec<bool> = outbound
            .iter()
            .filter(|((_, t), _)| target_answers_others(node, t))
            .map(|(_, up)| **up)
            .collect();
        let blamed = |votes: &[bool]| {
            let failing = votes.iter().filter(|up| !**up).count();
            !votes.is_empty() && failing * 2 > votes.len()
        };
        // Each way, at least 2 judged pairs before anything is said about that way.
        let in_known = inbound.len() >= 2;
        let out_known = outbound.len() >= 2;
        let in_dead = in_known && blamed(&in_votes);
        let out_dead = out_known && blamed(&out_votes);
        if !in_dead && !out_dead {
            continue;
        }
        let votes_line = |way: &str, votes: &[bool], all: usize| {
            format!(
                "{way}: {} of the {} valid votes fail ({} of {all} paths judged; a vote is \
                 valid when the other end works with the rest of the mesh)",
                votes.iter().filter(|up| !**up).count(),
                votes.len(),
                all
            )
        };
        let mut evidence: Vec<String> = inbound
            .iter()
            .chain(outbound.iter())
            .filter(|(_, up)| !**up)
            .map(|(k, _)| format!("{} failing", pair(k)))
            .chain([
                votes_line(&format!("into {node}"), &in_votes, inbound.len()),
                votes_line(&format!("out of {node}"), &out_votes, outbound.len()),
            ])
            .collect();
        // "no peer reaches it" when every judged path in fails, else how many.
        let in_failing = inbound.iter().filter(|(_, up)| !**up).count();
        let reaches_it = if in_failing == inbound.len() {
            "no peer reaches it".to_owned()
        } else {
            format!(
                "{in_failing} of the {} peers probing it cannot reach it",
                inbound.len()
            )
        };
        let out_reached = outbound.iter().filter(|(_, up)| **up).count();
        let (id, severity, title, cause, next) = if in_dead && out_dead {
            (
                "network.node-isolated",
                Severity::Critical,
                if out_reached == 0 {
                    format!("Node {node} is cut off: it reaches no peer and {reaches_it}")
                } else {
                    format!(
                        "Node {node} is cut off: it reaches {out_reached} of the {} peers it \
                         probes and {reaches_it}",
                        outbound.len()
                    )
                },
                "Pod networking on this one node is down (CNI agent, routes, host firewall, or \
                 the node's uplink) while the rest of the mesh works."
                    .to_owned(),
                format!(
                    "Check the CNI agent pod and its logs on {node}, the node's routes \
                     (`ip route`) and host firewall (`iptables-save`)."
                ),
            )
        } else if in_dead && out_known {
            (
                "network.node-unreachable",
                Severity::Critical,
                if out_reached == outbound.len() {
                    format!("Node {node} is unreachable: {reaches_it}, it reaches them")
                } else {
                    format!(
                        "Node {node} is unreachable: {reaches_it}, it reaches {out_reached} of \
                         the {} it probes",
                        outbound.len()
                    )
                },
                "Traffic into pods on this node is dropped: a host firewall or security group \
                 blocking ingress, or the overlay's return path (encapsulation port) on this \
                 node."
                    .to_owned(),
                format!(
                    "On {node}: inbound rules (`iptables-save`, cloud security group for the \
                     overlay port, e.g. VXLAN UDP 4789/8472), CNI agent logs."
                ),
            )
        } else if in_dead {
            // Nobody reaches it, and what it reaches is not known: no claim, and no page.
            let (phrase, line) = m.own_view_unknown(node, outbound.len());
            evidence.push(line);
            (
                "network.node-unreachable",
                Severity::Warning,
                format!("Node {node} is unreachable: {reaches_it}; {phrase}"),
                "Every peer's probes of the kube-netprobe pod on this node fail. Without its \
                 own view it cannot be told whether only traffic into the node is dropped \
                 (host firewall, overlay port) or the node is cut off altogether; when its \
                 /metrics could not be read through the API server either, a node that lost \
                 its network (see whether it is NotReady) or a kube-netprobe pod that is not \
                 serving (crash-looping, not running) are the likeliest."
                    .to_owned(),
                format!(
                    "`kubectl get node {node}` (Ready?) and `kubectl get pods -A -o wide \
                     --field-selector spec.nodeName={node}` (the kube-netprobe and CNI agent \
                     pods there, their restarts and logs); then, on {node}, inbound rules \
                     (`iptables-save`) and routes (`ip route`)."
                ),
            )
        } else if out_dead && in_known {
            (
                "network.node-egress-broken",
                Severity::Critical,
                if out_reached == 0 {
                    format!("Node {node} reaches no peer, though peers reach it")
                } else {
                    format!(
                        "Node {node} reaches only {out_reached} of the {} peers it probes, though \
                         the others reach them",
                        outbound.len()
                    )
                },
                "Egress from pods on this node is broken: an egress firewall rule, a stale \
                 route, or the CNI's outbound encapsulation on this node."
                    .to_owned(),
                format!(
                    "On {node}: `ip route`, egress rules (`iptables-save`), CNI agent logs; \
                     restart the CNI agent pod on that node if its routes are stale."
                ),
            )
        } else if out_dead {
            evidence.push(format!(
                "node {node}: only {} of the peers' probes of it can be judged (at least 2 \
                 needed, each with {MIN_PROBES} probes or a success)",
                inbound.len()
            ));
            (
                "network.node-egress-broken",
                Severity::Warning,
                format!(
                    "Node {node} fails to reach {} of the {} peers it probes; whether peers reach \
                     it is not known yet",
                    outbound.len() - out_reached,
                    outbound.len()
                ),
                "Every probe from this node to its peers fails. The peers' probes of it are too \
                 fresh or missing, so it cannot be told whether only its egress is broken or \
                 the node is cut off."
                    .to_owned(),
                format!(
                    "On {node}: `ip route`, egress rules (`iptables-save`), CNI agent logs; run \
                     diagnose again in a minute for the peers' side."
                ),
            )
        } else {
            continue;
        };
        let ways = [(in_dead, &inbound), (out_dead, &outbound)];
        for (k, up) in ways
            .iter()
            .filter(|(dead, _)| *dead)
            .flat_map(|(_, w)| w.iter())
        {
            if !**up {
                explained.insert(**k);
            }
        }
        blamed_nodes.push(
            Finding::new(id, severity, title)
                .evidence(evidence)
                .cause(cause)
                .next(next)
                .blames(node),
        );
    }
    // Votes blaming more than a third of the nodes (and more than one) describe a mesh broken
    // as a whole, not nodes: said once, below, as failing pairs.
    if blamed_nodes.len() > 1 && blamed_nodes.len() * 3 > m.nodes.len() {
        explained.clear();
    } else {
        out.append(&mut blamed_nodes);
    }
    let rest: Vec<(&str, &str)> = failing.difference(&explained).copied().collect();
    if !rest.is_empty() {
        let total = basic.len();
        let lines: Vec<String> = rest
            .iter()
            .map(|k| format!("{} failing", pair(k)))
            .collect();
        if rest.len() >= 3 && rest.len() * 10 >= total * 3 {
            out.push(
                Finding::new(
                    "network.many-pairs-failing",
                    Severity::Critical,
                    format!(
                        "Pod-to-pod connectivity broken across the cluster: {} of {total} node pairs failing",
                        rest.len()
                    ),
                )
                .evidence(lines)
                .cause(
                    "Failures spread over many nodes point at the CNI or overlay itself (its \
                     datastore, a broken upgrade, an encapsulation port blocked between nodes), \
                     not at one node.",
                )
                .next(
                    "Check the CNI's pods and logs in kube-system (all nodes), recent changes to \
                     firewall rules between nodes, and the overlay port (VXLAN UDP 4789/8472, \
                     Geneve 6081, IP-in-IP protocol 4).",
                ),
            );
        } else {
            out.push(
                Finding::new(
                    "network.pairs-failing",
                    Severity::Warning,
                    format!(
                        "{} failing: {}",
                        plural(rest.len(), "node pair", "node pairs"),
                        list_some(&rest.iter().map(pair).collect::<Vec<_>>(), 4)
                    ),
                )
                .evidence(lines)
                .cause(
                    "Individual paths fail while most of the mesh works: a firewall rule \
                     between two nodes, or a route missing on one side.",
                )
                .next(
                    "Compare routes and firewall rules of the nodes named; see the \
                     kube-netprobe peer dashboard for when it started.",
                ),
            );
        }
    }
    // Bulk fails where small requests pass: the MTU black hole.
    let bulk_only: Vec<(&str, &str)> = bulk
        .iter()
        .filter(|(k, up)| !**up && basic.get(*k) == Some(&true))
        .map(|(k, _)| *k)
        .collect();
    if !bulk_only.is_empty() {
        let critical = bulk_only.len() >= 2 && bulk_only.len() * 4 >= bulk.len();
        // One node on every failing path (and more than one path): that node's link.
        let common: Option<&str> = m
            .nodes
            .iter()
            .map(String::as_str)
            .find(|n| bulk_only.iter().all(|(s, t)| s == n || t == n))
            .filter(|_| bulk_only.len() >= 2);
        out.push(
            Finding::new(
                "network.mtu-blackhole",
                if critical {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
                format!(
                    "Large transfers fail while small requests pass on {}{}: MTU black hole",
                    plural(bulk_only.len(), "node pair", "node pairs"),
                    common
                        .map(|n| format!(", all to or from {n}"))
                        .unwrap_or_default()
                ),
            )
            .evidence(
                bulk_only
                    .iter()
                    .map(|k| format!("{}: http/tcp up, bulk down", pair(k))),
            )
            .cause(
                "Full-size packets are dropped on the path: the pod interface MTU is larger than \
                 the overlay allows (encapsulation overhead), and ICMP \"fragmentation needed\" \
                 does not come back.",
            )
            .next(
                "Compare the pod MTU (`ip link` in a pod) with the node MTU minus the overlay \
                 overhead (VXLAN 50 bytes, Geneve/WireGuard more); set the CNI's MTU to fit.",
            )
            .blames_all(common),
        );
    }
    // Failures too fresh to judge: said, so that an empty report during a rollout is not read
    // as "all clear", but never more than info.
    let fresh: Vec<&Cell> = m.cells.iter().filter(|c| !c.judged()).collect();
    if !fresh.is_empty() {
        let pairs: BTreeSet<(&str, &str)> = fresh
            .iter()
            .map(|c| (c.source.as_str(), c.target.as_str()))
            .collect();
        let common: Option<&str> = m
            .nodes
            .iter()
            .map(String::as_str)
            .find(|n| pairs.iter().all(|(s, t)| s == n || t == n))
            .filter(|_| pairs.len() >= 2);
        let title = match common {
            Some(n) => format!(
                "Not judged yet: {} to or from node {n} failing after fewer than {MIN_PROBES} probes",
                plural(pairs.len(), "node pair", "node pairs")
            ),
            None => format!(
                "Not judged yet: {} failing after fewer than {MIN_PROBES} probes: {}",
                plural(pairs.len(), "node pair", "node pairs"),
                list_some(&pairs.iter().map(pair).collect::<Vec<_>>(), 4)
            ),
        };
        out.push(
            Finding::new("network.peers-too-fresh", Severity::Info, title)
                .evidence(fresh.iter().map(|c| {
                    format!(
                        "{} -> {} {}: down after {}",
                        c.source,
                        c.target,
                        c.protocol,
                        plural(c.probes as usize, "probe", "probes")
                    )
                }))
                .cause(
                    "A kube-netprobe pod started or was replaced moments ago (or a peer's \
                     address changed): its series start from zero and the first probes may \
                     fail while the new pod comes up, so these failures are not counted.",
                )
                .next(
                    "Run diagnose again in a minute (3 probe intervals: 30 s at the default \
                     peers.interval of 10 s); failures that remain are then judged.",
                ),
        );
    }
    out
}

/// The kube-netprobe pods' API-server probes: `direct` (the Service IP) and `dns` (its name).
pub fn apiserver_probes(s: &Snapshot) -> Vec<Finding> {
    let mut reporting = 0;
    let mut direct_down = Vec::new();
    let mut dns_only_down = Vec::new();
    for scrape in &s.probe_scrapes {
        let Some(text) = &scrape.text else { continue };
        let samples = scrape::parse(text);
        // A path not yet probed, or down after fewer than MIN_PROBES probes, is not known.
        let up = |path: &str| {
            samples
                .iter()
                .find(|x| x.name == "netprobe_apiserver_probe_success" && x.label("path") == path)
                .map(|x| x.value >= 1.0)
                .filter(|up| {
                    *up || completed(
                        &samples,
                        "netprobe_apiserver_requests_total",
                        &[("path", path)],
                    ) >= MIN_PROBES
                })
        };
        let (direct, dns) = (up("direct"), up("dns"));
        if direct.is_none() && dns.is_none() {
            continue;
        }
        reporting += 1;
        if direct == Some(false) {
            direct_down.push(scrape.node.clone());
        } else if dns == Some(false) {
            dns_only_down.push(scrape.node.clone());
        }
    }
    let mut out = Vec::new();
    if !direct_down.is_empty() {
        let most = direct_down.len() * 2 >= reporting;
        out.push(
            Finding::new(
                "network.apiserver-unreachable",
                if most { Severity::Critical } else { Severity::Warning },
                format!(
                    "Pods cannot reach the API server's Service IP from {} of {reporting} nodes: {}",
                    direct_down.len(),
                    list_some(&direct_down, 4)
                ),
            )
            .evidence(direct_down.iter().map(|n| format!("node {n}: netprobe_apiserver_probe_success{{path=\"direct\"}} = 0")))
            .cause(if most {
                "The `kubernetes` Service (KUBERNETES_SERVICE_HOST) is not forwarded to the API server from most nodes: kube-proxy, or the API server's endpoints; operators and CoreDNS's kubernetes plugin fail with it."
            } else {
                "The Service path to the API server fails on these nodes only: kube-proxy or the pod network on them."
            })
            .next("`kubectl get endpoints kubernetes`; kube-proxy logs on the nodes named; the netprobe_apiserver_requests_total{result} series say how it fails."),
        );
    }
    if !dns_only_down.is_empty() {
        out.push(
            Finding::new(
                "network.apiserver-dns-failing",
                Severity::Warning,
                format!(
                    "The API server is reachable by IP but not by name from {}: {}",
                    plural(dns_only_down.len(), "node", "nodes"),
                    list_some(&dns_only_down, 4)
                ),
            )
            .evidence(dns_only_down.iter().map(|n| format!("node {n}: path direct up, path dns down")))
            .cause("Resolving kubernetes.default.svc from pods fails there: a DNS problem (see the DNS findings), not an API-server one.")
            .next("Follow the DNS findings; `kubectl exec` into a pod on that node and resolve kubernetes.default.svc."),
        );
    }
    out
}
