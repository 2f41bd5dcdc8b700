//! DNS: the CoreDNS pods, their logs and Corefile, the kube-dns Service, and what the
//! kube-netprobe pods' lookups say.

use super::*;

// ---------------------------------------------------------------------------------------------
// DNS

pub(super) fn coredns_ips(s: &Snapshot) -> Vec<IpAddr> {
    s.coredns_pods.iter().flatten().flat_map(pod_ips).collect()
}

/// Nodes not Ready or with NetworkUnavailable: what runs there is a symptom, not a cause.
pub(super) fn sick_nodes(s: &Snapshot) -> BTreeSet<String> {
    s.nodes
        .iter()
        .flatten()
        .filter(|n| {
            let c = n.status.as_ref().and_then(|s| s.conditions.as_ref());
            let ready =
                c.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            let no_net = c.is_some_and(|c| {
                c.iter()
                    .any(|c| c.type_ == "NetworkUnavailable" && c.status == "True")
            });
            !ready || no_net
        })
        .map(|n| name(&n.metadata))
        .collect()
}

pub fn coredns_pods(s: &Snapshot) -> Vec<Finding> {
    let Some(all) = &s.coredns_pods else {
        return Vec::new();
    };
    // Replicas only: evicted or finished pods (phase Failed/Succeeded) and pods on their way
    // out of a rollout are history, not unready replicas.
    let pods: Vec<&Pod> = all
        .iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Failed" | "Succeeded")
                )
        })
        .collect();
    let events = s.coredns_events.as_deref().unwrap_or(&[]);
    if pods.is_empty() {
        return vec![
            Finding::new(
                "dns.coredns-missing",
                Severity::Critical,
                format!(
                    "No running CoreDNS pods in {DNS_NAMESPACE} (label k8s-app=kube-dns){}",
                    if all.is_empty() {
                        String::new()
                    } else {
                        format!(", {} evicted, finished or terminating", all.len())
                    }
                ),
            )
            .cause(
                "The CoreDNS Deployment is scaled to zero, deleted, or its pods cannot be created.",
            )
            .next(format!(
                "`kubectl -n {DNS_NAMESPACE} get deploy,rs -l k8s-app=kube-dns` and the \
                 ReplicaSet's events."
            )),
        ];
    }
    let mut out = Vec::new();
    let not_ready: Vec<&Pod> = pods.iter().copied().filter(|p| !pod_ready(p)).collect();
    let pod_events = |p: &Pod| -> Vec<String> {
        events_of(events, "Pod", DNS_NAMESPACE, &name(&p.metadata))
            .into_iter()
            .filter(|e| e.type_.as_deref() == Some("Warning"))
            .rev()
            .take(3)
            .map(event_line)
            .collect()
    };
    let log_loop = s
        .coredns_logs
        .iter()
        .flatten()
        .any(|(_, t)| t.contains("plugin/loop"));
    if !not_ready.is_empty() {
        let ready = pods.len() - not_ready.len();
        let mut evidence = Vec::new();
        for p in &not_ready {
            let phase = p
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_else(|| "?".into());
            evidence.push(format!(
                "pod {} on node {}: phase {phase}, not Ready, {} restarts",
                name(&p.metadata),
                pod_node(p),
                restarts(p)
            ));
            evidence.extend(container_story(p).into_iter().map(|l| format!("  {l}")));
            evidence.extend(pod_events(p).into_iter().map(|l| format!("  {l}")));
        }
        let reasons: Vec<String> = not_ready
            .iter()
            .flat_map(|p| last_termination_reasons(p))
            .collect();
        let sick = sick_nodes(s);
        let on_sick: BTreeSet<&str> = not_ready
            .iter()
            .map(|p| pod_node(p))
            .filter(|n| sick.contains(*n))
            .collect();
        let cause = if on_sick.len()
            == not_ready
                .iter()
                .map(|p| pod_node(p))
                .collect::<BTreeSet<_>>()
                .len()
        {
            format!(
                "Their node(s) {} are not Ready or have no pod network (see the node findings \
                 above): fix the nodes first.",
                on_sick.iter().copied().collect::<Vec<_>>().join(", ")
            )
        } else if log_loop {
            "CoreDNS exits on its loop check: it forwards queries back to itself (see \
             dns.log-loop)."
                .to_owned()
        } else if reasons.iter().any(|r| r == "OOMKilled") {
            "CoreDNS is OOM-killed: its memory limit is too small for the cluster's query load \
             and cache."
                .to_owned()
        } else {
            "CoreDNS's readiness check (:8181/ready) fails or the process crashes: usually \
             plugin/kubernetes cannot list from the API server, or the Corefile does not load."
                .to_owned()
        };
        let first = name(&not_ready[0].metadata);
        out.push(
            Finding::new(
                "dns.coredns-not-ready",
                if ready == 0 {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
                format!("CoreDNS: {ready} of {} pods ready", pods.len()),
            )
            .evidence(evidence)
            .cause(cause)
            .next(format!(
                "`kubectl -n {DNS_NAMESPACE} logs {first} --previous` and `kubectl -n \
                 {DNS_NAMESPACE} describe pod {first}`."
            )),
        );
    }
    let restarting: Vec<&Pod> = pods
        .iter()
        .copied()
        .filter(|p| restarts(p) >= 3 && restarting_now(p))
        .collect();
    if !restarting.is_empty() {
        let mut evidence = Vec::new();
        let mut reasons = BTreeSet::new();
        for p in &restarting {
            evidence.push(format!(
                "pod {} on node {}: {} restarts",
                name(&p.metadata),
                pod_node(p),
                restarts(p)
            ));
            evidence.extend(container_story(p).into_iter().map(|l| format!("  {l}")));
            reasons.extend(last_termination_reasons(p));
        }
        let reasons: Vec<String> = reasons.into_iter().collect();
        let first = name(&restarting[0].metadata);
        out.push(
            Finding::new(
                "dns.coredns-restarting",
                Severity::Warning,
                format!(
                    "CoreDNS restarting: {}{}",
                    list_some(
                        &restarting
                            .iter()
                            .map(|p| format!("{} ({} restarts)", name(&p.metadata), restarts(p)))
                            .collect::<Vec<_>>(),
                        3
                    ),
                    if reasons.is_empty() {
                        String::new()
                    } else {
                        format!(", last terminated: {}", reasons.join(", "))
                    }
                ),
            )
            .evidence(evidence)
            .cause(if reasons.iter().any(|r| r == "OOMKilled") {
                "Killed for exceeding its memory limit (OOMKilled)."
            } else if log_loop {
                "Exits on the loop check (see dns.log-loop)."
            } else {
                "The container exits or fails its liveness probe (:8080/health) repeatedly."
            })
            .next(format!(
                "`kubectl -n {DNS_NAMESPACE} logs {first} --previous`; raise the memory limit \
                 if OOMKilled."
            )),
        );
    }
    out
}

/// Log patterns: (id, severity, what it means, what to do, needle).
pub(super) const LOG_PATTERNS: &[(&str, Severity, &str, &str, &str, &str)] = &[
    (
        "dns.log-loop",
        Severity::Critical,
        "CoreDNS detected a forwarding loop (plugin/loop)",
        "CoreDNS forwards to itself: typically `forward . /etc/resolv.conf` while the node's \
         resolv.conf points at a local stub (127.0.0.53, systemd-resolved), which hands the query \
         back to CoreDNS. CoreDNS exits and crash-loops.",
        "Forward to real upstream servers (`forward . 10.0.0.2`), or set the kubelet's \
         --resolv-conf to /run/systemd/resolve/resolv.conf; then `kubectl -n kube-system \
         rollout restart deploy/coredns`.",
        "plugin/loop",
    ),
    (
        "dns.log-upstream-timeout",
        Severity::Warning,
        "CoreDNS times out talking to its upstream servers (i/o timeout)",
        "The upstream DNS servers in the Corefile's `forward` do not answer CoreDNS: an egress \
         firewall or NetworkPolicy on the CoreDNS pods, the upstream down, or its rate limit.",
        "From a CoreDNS node, query the upstream named in the lines (`dig @UPSTREAM example.com`); \
         check egress rules for UDP/TCP 53 from the CoreDNS pods.",
        "i/o timeout",
    ),
    (
        "dns.log-servfail",
        Severity::Warning,
        "CoreDNS answers SERVFAIL",
        "CoreDNS could not get an answer for these names: upstream failures, DNSSEC validation \
         errors, or a stub domain whose servers fail.",
        "Look at which names and which upstream in the lines; `dig @UPSTREAM NAME` from a node.",
        "SERVFAIL",
    ),
    (
        "dns.log-no-such-host",
        Severity::Warning,
        "CoreDNS logs `no such host`",
        "A name CoreDNS itself needs (an upstream or stub server given by name, or the API \
         server) does not resolve.",
        "Give upstreams by IP address in the Corefile; check the names in the lines.",
        "no such host",
    ),
];

pub fn coredns_logs(s: &Snapshot) -> Vec<Finding> {
    let Some(logs) = &s.coredns_logs else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (id, severity, title, cause, next, needle) in LOG_PATTERNS {
        let mut lines = Vec::new();
        let mut count = 0;
        for (pod, text) in logs {
            for line in text.lines().filter(|l| l.contains(needle)) {
                count += 1;
                if lines.len() < 5 {
                    lines.push(format!("{pod}: {}", line.trim()));
                }
            }
        }
        if count == 0 {
            continue;
        }
        let mut evidence = vec![format!(
            "{} in the last {} lines per pod",
            plural(count, "matching line", "matching lines"),
            super::super::collect::LOG_TAIL_LINES
        )];
        evidence.extend(lines);
        out.push(
            Finding::new(
                id,
                *severity,
                format!("{title}: {}", plural(count, "line", "lines")),
            )
            .evidence(evidence)
            .cause(*cause)
            .next(*next),
        );
    }
    out
}

/// `forward` targets per server block (`forward FROM TO... {`).
pub(super) fn corefile_forwards(corefile: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in corefile.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace();
        if matches!(words.next(), Some("forward" | "proxy")) {
            let _from = words.next();
            out.extend(
                words
                    .take_while(|w| *w != "{")
                    .map(|w| w.trim_end_matches('{').to_owned()),
            );
        }
    }
    out
}

pub(super) fn host_of(target: &str) -> &str {
    let t = target
        .trim_start_matches("dns://")
        .trim_start_matches("tls://");
    if let Some(rest) = t.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    if t.matches(':').count() == 1 {
        return t.split(':').next().unwrap_or(t);
    }
    t
}

pub fn corefile(s: &Snapshot) -> Vec<Finding> {
    let Some(corefile) = &s.corefile else {
        return Vec::new();
    };
    let Some(text) = corefile else {
        return vec![
            Finding::new(
                "dns.corefile-not-found",
                Severity::Info,
                format!("No Corefile in ConfigMap {DNS_NAMESPACE}/coredns"),
            )
            .cause("This cluster's DNS is configured elsewhere (another ConfigMap name or a different DNS server); the Corefile checks were skipped.")
            .next("Nothing, unless CoreDNS is expected to read kube-system/coredns."),
        ];
    };
    let forwards = corefile_forwards(text);
    if forwards.is_empty() {
        return vec![
            Finding::new(
                "dns.corefile-no-forward",
                Severity::Warning,
                "The Corefile has no `forward`: names outside the cluster do not resolve",
            )
            .evidence(text.lines().map(|l| format!("Corefile: {l}")).take(20))
            .cause("Without `forward`, CoreDNS answers only for the cluster domain; every external name gets SERVFAIL or NXDOMAIN.")
            .next("Add `forward . /etc/resolv.conf` (or the upstream servers' IPs) to the `.:53` server block."),
        ];
    }
    let own: Vec<IpAddr> = coredns_ips(s)
        .into_iter()
        .chain(
            s.kube_dns_service
                .iter()
                .flatten()
                .filter_map(|svc| svc.spec.as_ref()?.cluster_ip.as_ref()?.parse().ok()),
        )
        .collect();
    let to_self: Vec<&String> = forwards
        .iter()
        .filter(|t| {
            let host = host_of(t);
            host == "localhost"
                || host
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback() || own.contains(&ip))
        })
        .collect();
    if to_self.is_empty() {
        return Vec::new();
    }
    vec![
        Finding::new(
            "dns.corefile-forward-loop",
            Severity::Critical,
            format!(
                "The Corefile forwards to CoreDNS itself: {}",
                to_self
                    .iter()
                    .map(|t| t.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .evidence(
            text.lines()
                .filter(|l| l.trim_start().starts_with("forward"))
                .map(|l| format!("Corefile: {}", l.trim())),
        )
        .cause("Queries for external names come back to CoreDNS (loopback, the kube-dns Service IP or a CoreDNS pod): they loop until they time out, and plugin/loop makes CoreDNS exit.")
        .next("Point `forward` at the real upstream resolvers (by IP) or `/etc/resolv.conf` of a node that does not use a local stub; `kubectl -n kube-system edit configmap coredns`."),
    ]
}

pub fn kube_dns_service(s: &Snapshot) -> Vec<Finding> {
    let Some(service) = &s.kube_dns_service else {
        return Vec::new();
    };
    let Some(service) = service else {
        return vec![
            Finding::new(
                "dns.service-missing",
                Severity::Critical,
                format!("The {DNS_SERVICE} Service does not exist in {DNS_NAMESPACE}"),
            )
            .cause("Pods' resolv.conf points at the kube-dns Service IP; without the Service nothing answers there.")
            .next("Recreate the kube-dns Service with the cluster's DNS IP (the kubelet's --cluster-dns), selector k8s-app=kube-dns."),
        ];
    };
    let Some(endpoints) = &s.kube_dns_endpoints else {
        return Vec::new();
    };
    let (ready, not_ready) = endpoints
        .iter()
        .flat_map(|e| e.subsets.iter().flatten())
        .fold((0, 0), |(r, n), subset| {
            (
                r + subset.addresses.as_ref().map_or(0, Vec::len),
                n + subset.not_ready_addresses.as_ref().map_or(0, Vec::len),
            )
        });
    if ready > 0 {
        return Vec::new();
    }
    let selector: BTreeMap<String, String> = service
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default();
    let pods = s.coredns_pods.as_deref();
    let matching = pods.map(|pods| {
        pods.iter()
            .filter(|p| {
                let labels = labels_of(&p.metadata);
                !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
            })
            .collect::<Vec<_>>()
    });
    let cause = match (&matching, pods) {
        (Some(m), Some(all)) if m.is_empty() && !all.is_empty() => format!(
            "The Service's selector {selector:?} matches none of the CoreDNS pods: the selector or the pods' labels were changed."
        ),
        (Some(m), _) if !m.is_empty() && m.iter().all(|p| !pod_ready(p)) => {
            "No CoreDNS pod is ready (see dns.coredns-not-ready), so the Service has nothing to send queries to.".to_owned()
        }
        (Some(m), _) if m.iter().any(|p| pod_ready(p)) => {
            "Ready CoreDNS pods match the selector but are not in the Endpoints: the endpoints controller (kube-controller-manager) is not running or lagging.".to_owned()
        }
        _ => "No ready CoreDNS pod backs the Service.".to_owned(),
    };
    vec![
        Finding::new(
            "dns.service-no-endpoints",
            Severity::Critical,
            format!("The {DNS_SERVICE} Service has no ready endpoints: every pod's DNS lookup fails"),
        )
        .evidence([
            format!("Endpoints {DNS_NAMESPACE}/{DNS_SERVICE}: {ready} ready, {not_ready} not ready addresses"),
            format!("Service selector: {selector:?}"),
        ])
        .cause(cause)
        .next(format!(
            "Make CoreDNS ready (findings above), then `kubectl -n {DNS_NAMESPACE} get endpoints {DNS_SERVICE}` should list its pods."
        )),
    ]
}

/// The cluster's DNS zones, from the Corefile's `kubernetes` plugin line (`cluster.local` when
/// the Corefile was not read or names none): CoreDNS answers names in them itself; every other
/// name goes to the upstream servers of its `forward`.
pub(super) fn cluster_zones(s: &Snapshot) -> Vec<String> {
    let mut zones = Vec::new();
    if let Some(Some(text)) = &s.corefile {
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            let mut words = line.split_whitespace();
            if words.next() == Some("kubernetes") {
                zones.extend(
                    words
                        .take_while(|w| *w != "{")
                        .map(|w| w.trim_end_matches('.').to_ascii_lowercase()),
                );
            }
        }
    }
    if zones.is_empty() {
        zones.push("cluster.local".into());
    }
    zones
}

/// Whether CoreDNS answers `name` from the cluster's own data (a Service or pod name), rather
/// than forwarding it upstream.
pub(super) fn is_cluster_name(name: &str, zones: &[String]) -> bool {
    let n = name.trim_end_matches('.').to_ascii_lowercase();
    n.ends_with(".svc")
        || n.contains(".svc.")
        || zones
            .iter()
            .any(|z| n == *z || n.ends_with(&format!(".{z}")))
}

/// DNS probe results by server: direct to each CoreDNS pod (`coredns/<pod>`) versus through the
/// Service (`system`, the pod's resolv.conf), and names of the cluster versus names outside it.
pub fn dns_probes(s: &Snapshot) -> Vec<Finding> {
    // (server, name) -> (failing nodes, nodes reporting)
    let mut by: BTreeMap<(String, String), (Vec<String>, usize)> = BTreeMap::new();
    // name -> rcode -> lookups through `system` since the pods started, every node together.
    let mut rcodes: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    // node -> (server, name) -> ok from that node: what tells one node's Service path apart.
    let mut per_node: BTreeMap<String, BTreeMap<(String, String), bool>> = BTreeMap::new();
    for (node, samples) in readable_scrapes(s) {
        // (server, name) -> ok on this node: every judged qtype and IP family (a dual-stack
        // CoreDNS pod is asked over both) answered; the node counts once.
        let mut here: BTreeMap<(&str, &str), bool> = BTreeMap::new();
        for x in samples
            .iter()
            .filter(|x| x.name == "netprobe_dns_probe_success")
        {
            let (server, name, qtype) = (x.label("server"), x.label("name"), x.label("qtype"));
            let ok = x.value >= 1.0;
            // Failing after fewer than MIN_PROBES lookups: not known yet.
            if !ok
                && completed(
                    &samples,
                    "netprobe_dns_lookups_total",
                    &[
                        ("server", server),
                        ("name", name),
                        ("qtype", qtype),
                        ("family", x.label("family")),
                    ],
                ) < MIN_PROBES
            {
                continue;
            }
            *here.entry((server, name)).or_insert(true) &= ok;
        }
        for ((server, name), ok) in here {
            per_node
                .entry(node.to_owned())
                .or_default()
                .insert((server.to_owned(), name.to_owned()), ok);
            let entry = by.entry((server.to_owned(), name.to_owned())).or_default();
            entry.1 += 1;
            if !ok {
                entry.0.push(node.to_owned());
            }
        }
        for x in samples.iter().filter(|x| {
            x.name == "netprobe_dns_lookups_total" && x.label("server") == "system" && x.value > 0.0
        }) {
            *rcodes
                .entry(x.label("name").to_owned())
                .or_default()
                .entry(x.label("rcode").to_owned())
                .or_default() += x.value;
        }
    }
    let failing = |v: &(Vec<String>, usize)| v.1 > 0 && v.0.len() * 2 >= v.1;
    let passing = |v: &(Vec<String>, usize)| v.1 > 0 && v.0.len() * 2 < v.1;
    let names: BTreeSet<&String> = by.keys().map(|(_, n)| n).collect();
    let mut out = Vec::new();
    let endpoints_empty = s.kube_dns_endpoints.as_ref().is_some_and(|e| {
        e.as_ref().is_none_or(|e| {
            e.subsets
                .iter()
                .flatten()
                .all(|s| s.addresses.as_ref().is_none_or(Vec::is_empty))
        })
    });
    let mut replica_failing: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut service_path: Vec<String> = Vec::new();
    // Nodes on which a name fails through the Service while every CoreDNS pod answers it from
    // that node directly: that node's Service rules (kube-proxy).
    let mut node_service_path: BTreeMap<String, Vec<String>> = BTreeMap::new();
    // Every CoreDNS pod probed directly: the "of how many" of repair's rails.
    let mut direct_servers: BTreeSet<String> = BTreeSet::new();
    let mut everywhere: Vec<String> = Vec::new();
    // Names that resolve through the Service from most nodes, or direct from a CoreDNS pod.
    let mut resolving: Vec<String> = Vec::new();
    for name in names {
        let direct: Vec<(&String, &(Vec<String>, usize))> = by
            .iter()
            .filter(|((srv, n), _)| n == name && srv.starts_with("coredns/"))
            .map(|((srv, _), v)| (srv, v))
            .collect();
        let system = by.get(&("system".to_owned(), name.clone()));
        let direct_ok = direct.iter().filter(|(_, v)| passing(v)).count();
        let direct_bad: Vec<_> = direct.iter().filter(|(_, v)| failing(v)).collect();
        direct_servers.extend(direct.iter().map(|(srv, _)| srv.to_string()));
        // A failing replica explains lookups through the Service failing wherever they landed
        // on it: only with every replica answering is a node's failing Service path its own.
        if direct_ok > 0 && direct_bad.is_empty() && !endpoints_empty {
            let answering: Vec<&String> = direct.iter().map(|(srv, _)| *srv).collect();
            for (node, results) in &per_node {
                let system_fails =
                    results.get(&("system".to_owned(), name.clone())) == Some(&false);
                // Every CoreDNS pod answers this node directly (one that does not: the
                // node's network, or that pod, not the Service rules).
                let direct_from_here = answering
                    .iter()
                    .all(|srv| results.get(&(srv.to_string(), name.clone())) == Some(&true));
                if system_fails && direct_from_here {
                    node_service_path.entry(node.clone()).or_default().push(format!(
                        "on {node}: {name} fails through the Service while {} answer it directly from there",
                        list_some(&answering.iter().map(|s| s.to_string()).collect::<Vec<_>>(), 4)
                    ));
                }
            }
        }
        if direct_ok > 0 || system.is_some_and(passing) {
            resolving.push(name.clone());
        }
        if direct_ok > 0 {
            for (srv, v) in &direct_bad {
                replica_failing.entry(srv.to_string()).or_default().push(format!(
                    "{srv} fails {name} from {} of {} nodes while {direct_ok} other CoreDNS pod(s) answer",
                    v.0.len(),
                    v.1
                ));
            }
        }
        if let Some(sys) = system
            && failing(sys)
        {
            if direct_ok > 0 && direct_bad.is_empty() {
                if !endpoints_empty {
                    service_path.push(format!(
                        "{name}: fails through the Service on {} of {} nodes ({}), every CoreDNS pod answers it directly",
                        sys.0.len(),
                        sys.1,
                        list_some(&sys.0, 4)
                    ));
                }
            } else if direct_ok == 0 {
                everywhere.push(name.clone());
            }
        }
    }
    let replicas = direct_servers.len();
    let failing_replicas = replica_failing.len();
    for (srv, evidence) in replica_failing {
        let pod = srv.trim_start_matches("coredns/");
        out.push(
            Finding::new(
                "dns.replica-failing",
                Severity::Warning,
                format!("CoreDNS pod {pod} fails DNS probes while the other replicas answer"),
            )
            .evidence(evidence)
            .cause("One replica is broken (stuck, overloaded, or its node's network): a share of every client's lookups fails or retries.")
            .next(format!(
                "`kubectl -n {DNS_NAMESPACE} logs {pod}`; if nothing explains it, `kubectl -n {DNS_NAMESPACE} delete pod {pod}` and watch whether the new one answers."
            ))
            .repairs([coredns_candidate(s, pod, failing_replicas, replicas)]),
        );
    }
    let reporting = per_node.len();
    let kube_proxy_candidates = || {
        node_service_path.keys().map(|node| Candidate {
            action: RepairAction::restart_kube_proxy,
            namespace: KUBE_PROXY_NAMESPACE.to_owned(),
            pod: None,
            node: node.clone(),
            subject: format!("node/{node}"),
            failing: node_service_path.len(),
            of: reporting,
            for_seconds: None,
        })
    };
    if !service_path.is_empty() {
        out.push(
            Finding::new(
                "dns.service-path-broken",
                Severity::Critical,
                "DNS works direct to the CoreDNS pods but fails through the kube-dns Service",
            )
            .evidence(service_path)
            .cause("CoreDNS is fine; the Service's virtual IP is not forwarded to it: kube-proxy (iptables/IPVS rules) is down, stale or misconfigured on these nodes.")
            .next("Check kube-proxy on the failing nodes (`kubectl -n kube-system get pods -l k8s-app=kube-proxy -o wide`, its logs; `iptables-save | grep kube-dns`).")
            .repairs(kube_proxy_candidates()),
        );
    } else if !node_service_path.is_empty() {
        let nodes: Vec<String> = node_service_path.keys().cloned().collect();
        out.push(
            Finding::new(
                "dns.node-service-path-broken",
                Severity::Critical,
                format!(
                    "DNS through the kube-dns Service fails on {} while the CoreDNS pods answer {} directly",
                    plural(nodes.len(), "node", "nodes") + ": " + &list_some(&nodes, 4),
                    if nodes.len() == 1 { "it" } else { "them" }
                ),
            )
            .evidence(node_service_path.values().flatten().cloned())
            .cause("CoreDNS answers these nodes by pod IP, and other nodes reach it through the Service: the Service rules on these nodes (kube-proxy's iptables or IPVS rules) are missing or stale, so every Service IP, not only DNS, fails from their pods.")
            .next(format!(
                "`kubectl -n kube-system get pods -l k8s-app=kube-proxy -o wide --field-selector spec.nodeName={}` and its logs; on the node, `iptables-save | grep -c KUBE-SVC`. Deleting that kube-proxy pod (its DaemonSet recreates it) rewrites the rules.",
                nodes[0]
            ))
            .blames_all(nodes.clone())
            .repairs(kube_proxy_candidates()),
        );
    }
    if everywhere.is_empty() {
        return out;
    }
    // Cluster names fail too: CoreDNS itself. Only names outside the cluster fail while cluster
    // names resolve: what CoreDNS forwards to (its upstream).
    let zones = cluster_zones(s);
    let (cluster_failing, external_failing): (Vec<String>, Vec<String>) = everywhere
        .iter()
        .cloned()
        .partition(|n| is_cluster_name(n, &zones));
    let cluster_resolving: Vec<&String> = resolving
        .iter()
        .filter(|n| is_cluster_name(n, &zones))
        .collect();
    let evidence_of = |name: &String| -> Vec<String> {
        let mut lines: Vec<String> = by
            .iter()
            .filter(|((_, n), _)| n == name)
            .map(|((srv, _), v)| {
                format!(
                    "{name} through {srv}: fails from {} of {} nodes",
                    v.0.len(),
                    v.1
                )
            })
            .collect();
        if let Some(codes) = rcodes.get(name) {
            lines.push(format!(
                "{name} through system, lookups since the kube-netprobe pods started: {}",
                codes
                    .iter()
                    .map(|(rcode, n)| format!("{rcode} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        lines
    };
    let forwards: Option<Vec<String>> = match &s.corefile {
        Some(Some(text)) => Some(corefile_forwards(text)),
        _ => None,
    };
    if !cluster_failing.is_empty() {
        let mut evidence: Vec<String> = everywhere.iter().flat_map(evidence_of).collect();
        evidence.push(format!(
            "cluster zones (the Corefile's kubernetes plugin): {}",
            zones.join(", ")
        ));
        out.push(
            Finding::new(
                "dns.resolution-failing",
                Severity::Critical,
                format!(
                    "CoreDNS fails cluster names from most nodes, through every server: {}",
                    list_some(&cluster_failing, 4)
                ),
            )
            .evidence(evidence)
            .cause(format!(
                "Names CoreDNS answers from the cluster's own data fail through the Service and \
                 direct to every CoreDNS pod: CoreDNS itself is failing (plugin/kubernetes cannot \
                 read from the API server, the pods are overloaded or crash-looping, or the \
                 Corefile does not load), not its upstream.{}",
                if external_failing.is_empty() {
                    ""
                } else {
                    " Names outside the cluster fail with them, as they do when CoreDNS itself \
                     fails."
                }
            ))
            .next(format!(
                "`kubectl -n {DNS_NAMESPACE} logs -l k8s-app=kube-dns --tail=50` (plugin/kubernetes \
                 errors: `Failed to list`, forbidden, API server unreachable) and `kubectl -n \
                 {DNS_NAMESPACE} get pods -l k8s-app=kube-dns -o wide`; the CoreDNS findings above."
            ))
            // Evicting one of them is what repair would do for one failing replica; with every
            // replica failing its rails refuse, and the refusal says so.
            .repairs(direct_servers.iter().map(|srv| {
                coredns_candidate(
                    s,
                    srv.trim_start_matches("coredns/"),
                    direct_servers.len(),
                    direct_servers.len(),
                )
            })),
        );
    } else if !cluster_resolving.is_empty() {
        let upstream = match &forwards {
            Some(f) if f.is_empty() => "none: the Corefile has no forward".to_owned(),
            Some(f) => f.join(", "),
            None => "the Corefile's forward".to_owned(),
        };
        let mut evidence: Vec<String> = external_failing.iter().flat_map(evidence_of).collect();
        evidence.extend(
            cluster_resolving
                .iter()
                .map(|n| format!("{n} (a cluster name) resolves through the same servers")),
        );
        if let Some(Some(text)) = &s.corefile {
            evidence.extend(
                text.lines()
                    .filter(|l| {
                        let l = l.trim_start();
                        l.starts_with("forward") || l.starts_with("proxy")
                    })
                    .map(|l| format!("Corefile: {}", l.trim())),
            );
        }
        let cause = if forwards.as_ref().is_some_and(Vec::is_empty) {
            "The Corefile has no `forward` (see dns.corefile-no-forward): CoreDNS answers its \
             cluster zone and nothing else, so every name outside the cluster fails."
                .to_owned()
        } else {
            "CoreDNS answers the names it serves itself, but gets no answer for the others from \
             the upstream servers of its `forward`: they are down or unreachable from the CoreDNS \
             pods (an egress firewall or NetworkPolicy, no route out of the cluster), refuse \
             CoreDNS, or `forward . /etc/resolv.conf` hands the names to a node resolver that \
             fails. An upstream or forwarding problem, not CoreDNS itself."
                .to_owned()
        };
        out.push(
            Finding::new(
                "dns.upstream-failing",
                Severity::Critical,
                format!(
                    "CoreDNS's upstream ({upstream}) fails: names outside the cluster fail from \
                     most nodes while cluster names resolve: {}",
                    list_some(&external_failing, 4)
                ),
            )
            .evidence(evidence)
            .cause(cause)
            .next(format!(
                "Read the Corefile's `forward` (`kubectl -n {DNS_NAMESPACE} get configmap coredns \
                 -o yaml`); from the node of a CoreDNS pod, ask the upstream directly (`dig \
                 @UPSTREAM {}`); check egress to UDP and TCP 53 from the CoreDNS pods, and the \
                 dns.log-upstream-timeout lines. An offline cluster without an upstream: change \
                 or drop the external name in the chart's `config.dns.queries`.",
                external_failing[0].trim_end_matches('.')
            )),
        );
    } else {
        out.push(
            Finding::new(
                "dns.resolution-failing",
                Severity::Critical,
                format!(
                    "DNS lookups fail from most nodes, through every server: {}",
                    list_some(&everywhere, 4)
                ),
            )
            .evidence(everywhere.iter().flat_map(evidence_of))
            .cause(
                "Only names outside the cluster are probed, and they fail on every CoreDNS pod: \
                 most likely CoreDNS cannot get answers from its upstream servers, but with no \
                 cluster name to compare, CoreDNS itself is not ruled out.",
            )
            .next(format!(
                "`kubectl -n {DNS_NAMESPACE} logs -l k8s-app=kube-dns --tail=50`; check the \
                 Corefile's forward targets; add a cluster name \
                 (kubernetes.default.svc.cluster.local) to `dns.queries` to tell the two apart."
            )),
        );
    }
    out
}

/// Where kube-proxy's pods run (kubeadm's and most distributions' DaemonSet).
pub const KUBE_PROXY_NAMESPACE: &str = "kube-system";

/// Evicting CoreDNS pod `pod`, one of `failing` failing replicas of `of`.
fn coredns_candidate(s: &Snapshot, pod: &str, failing: usize, of: usize) -> Candidate {
    let node = s
        .coredns_pods
        .iter()
        .flatten()
        .find(|p| p.metadata.name.as_deref() == Some(pod))
        .map(pod_node)
        .unwrap_or("?");
    Candidate {
        action: RepairAction::evict_coredns,
        namespace: DNS_NAMESPACE.to_owned(),
        pod: Some(pod.to_owned()),
        node: node.to_owned(),
        subject: format!("{DNS_NAMESPACE}/{DNS_SELECTOR}"),
        failing,
        of,
        for_seconds: None,
    }
}
