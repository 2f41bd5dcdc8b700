//! DNS latency: the lookup-duration histograms of the kube-netprobe pods (5-second lookups,
//! a node or server much slower than the others).

use super::*;

// ---------------------------------------------------------------------------------------------
// DNS latency (the lookup-duration histograms of the kube-netprobe pods)

/// Answered lookups a (node, server) needs before its latency is compared: about two minutes of
/// one server at the chart's 15 s interval and three names. Fewer say little about a p99.
pub const MIN_LOOKUPS: f64 = 20.0;
/// Share of lookups answered in (4.5, 5.5] s from which a (node, server) shows the 5 s
/// signature, and the least number of such lookups. A healthy node has none (each needs a lost
/// packet and libc's 5 s retry). Half the DNSLookupsAtFiveSeconds alert's 2 %: diagnose reads
/// counts since the pod started, which dilute a recent fault, not a 15-minute rate.
pub const FIVE_SECOND_SHARE: f64 = 0.01;
pub const FIVE_SECOND_MIN: f64 = 5.0;
/// "Much slower than the others": at least this many times the median of the others' p99 (or
/// mean), and above the floor below. The buckets grow by about 2x from 0.1 s to 1 s, so 4x is
/// clear of interpolation noise between two neighbouring buckets.
pub const SLOW_RATIO: f64 = 4.0;
/// Floors: a p99 under half a second or a mean under 100 ms is not worth a page at 3 a.m., however
/// it compares (DNSLatencyHigh fires at a p99 of 1 s).
pub const SLOW_P99: f64 = 0.5;
pub const SLOW_MEAN: f64 = 0.1;

/// A lookup-duration histogram: cumulative buckets, count and sum.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Histogram {
    /// (upper bound, cumulative count), in order of the bound; +Inf last.
    pub(super) buckets: Vec<(f64, f64)>,
    pub(super) count: f64,
    pub(super) sum: f64,
}

impl Histogram {
    pub(super) fn add_bucket(&mut self, le: f64, n: f64) {
        match self.buckets.iter_mut().find(|b| b.0 == le) {
            Some(b) => b.1 += n,
            None => {
                self.buckets.push((le, n));
                self.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            }
        }
    }

    pub(super) fn merge(&mut self, other: &Histogram) {
        for (le, n) in &other.buckets {
            self.add_bucket(*le, *n);
        }
        self.count += other.count;
        self.sum += other.sum;
    }

    pub(super) fn cumulative(&self, le: f64) -> Option<f64> {
        self.buckets.iter().find(|b| b.0 == le).map(|b| b.1)
    }

    /// Lookups answered in (lo, hi], when both are bucket bounds.
    pub(super) fn between(&self, lo: f64, hi: f64) -> Option<f64> {
        Some(self.cumulative(hi)? - self.cumulative(lo)?)
    }

    pub(super) fn mean(&self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum / self.count)
    }

    /// The q-quantile as Prometheus's histogram_quantile estimates it: linear within the bucket
    /// it falls in; in the +Inf bucket, the largest finite bound.
    pub(super) fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.buckets.last()?.1;
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let mut lower = (0.0, 0.0);
        for &(le, cum) in &self.buckets {
            if cum >= rank {
                if le.is_infinite() {
                    return Some(lower.0);
                }
                let in_bucket = cum - lower.1;
                let fraction = if in_bucket > 0.0 {
                    (rank - lower.1) / in_bucket
                } else {
                    1.0
                };
                return Some(lower.0 + (le - lower.0) * fraction);
            }
            lower = (le, cum);
        }
        Some(lower.0)
    }
}

/// Per node, per server: the lookup-duration histogram over every name and type, and the
/// lookups by rcode.
#[derive(Debug, Default)]
pub(super) struct DnsLatency {
    histograms: BTreeMap<String, BTreeMap<String, Histogram>>,
    /// node -> server -> (TIMEOUT lookups, all lookups)
    timeouts: BTreeMap<String, BTreeMap<String, (f64, f64)>>,
    /// node -> family (ipv4: the A query, ipv6: the AAAA beside it) -> (TIMEOUT, all), for the
    /// `system` lookups that ask both together as getaddrinfo does.
    families: BTreeMap<String, BTreeMap<String, (f64, f64)>>,
}

impl DnsLatency {
    pub(super) fn of(s: &Snapshot) -> DnsLatency {
        let mut d = DnsLatency::default();
        for (node, samples) in readable_scrapes(s) {
            let per_server = d.histograms.entry(node.to_owned()).or_default();
            for x in &samples {
                let Some(part) = x.name.strip_prefix("netprobe_dns_lookup_duration_seconds_")
                else {
                    if x.name == "netprobe_dns_family_queries_total"
                        && x.label("server") == "system"
                        && x.value.is_finite()
                    {
                        let t = d
                            .families
                            .entry(node.to_owned())
                            .or_default()
                            .entry(x.label("family").to_owned())
                            .or_default();
                        t.1 += x.value;
                        if x.label("rcode") == "TIMEOUT" {
                            t.0 += x.value;
                        }
                    }
                    if x.name == "netprobe_dns_lookups_total" && x.value.is_finite() {
                        let t = d
                            .timeouts
                            .entry(node.to_owned())
                            .or_default()
                            .entry(x.label("server").to_owned())
                            .or_default();
                        t.1 += x.value;
                        if x.label("rcode") == "TIMEOUT" {
                            t.0 += x.value;
                        }
                    }
                    continue;
                };
                if !x.value.is_finite() {
                    continue;
                }
                let h = per_server.entry(x.label("server").to_owned()).or_default();
                match part {
                    "bucket" => {
                        let le = match x.label("le") {
                            "+Inf" | "Inf" => f64::INFINITY,
                            le => match le.parse() {
                                Ok(le) => le,
                                Err(_) => continue,
                            },
                        };
                        h.add_bucket(le, x.value);
                    }
                    "count" => h.count += x.value,
                    "sum" => h.sum += x.value,
                    _ => {}
                }
            }
        }
        d
    }
}

pub(super) fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

pub(super) fn seconds(v: f64) -> String {
    if v >= 1.0 {
        format!("{v:.1} s")
    } else if v >= 0.001 {
        format!("{:.0} ms", v * 1000.0)
    } else {
        format!("{:.2} ms", v * 1000.0)
    }
}

pub(super) fn percent(v: f64) -> String {
    if v >= 0.1 {
        format!("{:.0} %", v * 100.0)
    } else {
        format!("{:.1} %", v * 100.0)
    }
}

/// How one (node, server) or server compares with the others: `Some(line)` when much slower.
pub(super) fn much_slower(
    what: &str,
    h: &Histogram,
    others: &[&Histogram],
) -> Option<(f64, String)> {
    let (p99, mean) = (h.quantile(0.99)?, h.mean()?);
    let med_p99 = median(others.iter().filter_map(|o| o.quantile(0.99)).collect())?;
    let med_mean = median(others.iter().filter_map(|o| o.mean()).collect())?;
    let by_p99 = p99 >= SLOW_P99 && p99 >= SLOW_RATIO * med_p99;
    let by_mean = mean >= SLOW_MEAN && mean >= SLOW_RATIO * med_mean;
    if !(by_p99 || by_mean) {
        return None;
    }
    let ratio = if by_p99 {
        p99 / med_p99.max(1e-6)
    } else {
        mean / med_mean.max(1e-6)
    };
    Some((
        ratio,
        format!(
            "{what}: p99 {}, mean {} over {:.0} lookups; the others' median: p99 {}, mean {}",
            seconds(p99),
            seconds(mean),
            h.count,
            seconds(med_p99),
            seconds(med_mean)
        ),
    ))
}

/// Lookups at 5 s (the lost-first-packet signature), a node much slower than the others, a
/// server much slower than the others: from the histograms as they stand (since each
/// kube-netprobe pod started).
pub fn dns_latency(s: &Snapshot) -> Vec<Finding> {
    let d = DnsLatency::of(s);
    let reporting = d
        .histograms
        .values()
        .filter(|per| per.values().any(|h| h.count >= MIN_LOOKUPS))
        .count();
    let mut out = Vec::new();

    // 1. Lookups at 5 s, per node.
    // node -> [(server, lookups at 5 s, answered lookups)]
    let mut at_five: BTreeMap<&str, Vec<(&str, f64, f64)>> = BTreeMap::new();
    for (node, per) in &d.histograms {
        for (server, h) in per {
            if h.count < MIN_LOOKUPS {
                continue;
            }
            let Some(n) = h.between(4.5, 5.5) else {
                continue;
            };
            if n >= FIVE_SECOND_MIN && n >= FIVE_SECOND_SHARE * h.count {
                at_five
                    .entry(node.as_str())
                    .or_default()
                    .push((server.as_str(), n, h.count));
            }
        }
    }
    if !at_five.is_empty() {
        let nodes: Vec<String> = at_five.keys().map(|n| n.to_string()).collect();
        let mut evidence = Vec::new();
        // Direct queries (no libc retry: a lost packet is a TIMEOUT) from the same nodes.
        let mut direct_lost = Vec::new();
        let mut direct_clean = 0;
        // One family's queries lost while the other's, sent beside them, are answered.
        let mut one_family_lost = Vec::new();
        for (node, rows) in &at_five {
            let shares: BTreeMap<&str, f64> = d
                .families
                .get(*node)
                .into_iter()
                .flatten()
                .filter(|(_, (_, all))| *all >= MIN_LOOKUPS)
                .map(|(family, (timeouts, all))| (family.as_str(), timeouts / all))
                .collect();
            for (family, share) in &shares {
                evidence.push(format!(
                    "node {node}, server system: {} of the {} queries timed out",
                    percent(*share),
                    if *family == "ipv6" { "AAAA" } else { "A" }
                ));
            }
            if let (Some(v4), Some(v6)) = (shares.get("ipv4"), shares.get("ipv6")) {
                let (lost, kept) = if v6 >= v4 { (v6, v4) } else { (v4, v6) };
                if *lost >= FIVE_SECOND_SHARE && *kept * 2.0 < *lost {
                    one_family_lost.push(node.to_string());
                }
            }
            for (server, n, count) in rows {
                evidence.push(format!(
                    "node {node}, server {server}: {} of {count:.0} answered lookups took 4.5-5.5 s ({})",
                    *n as u64,
                    percent(n / count)
                ));
            }
            for (server, (timeouts, all)) in d.timeouts.get(*node).into_iter().flatten() {
                if server == "system" || *all < MIN_LOOKUPS {
                    continue;
                }
                let share = timeouts / all;
                evidence.push(format!(
                    "node {node}, server {server} (one query, no retry): {} of {all:.0} lookups timed out",
                    percent(share)
                ));
                if share >= FIVE_SECOND_SHARE {
                    direct_lost.push(format!("{node} to {server}"));
                } else {
                    direct_clean += 1;
                }
            }
        }
        let mut cause = String::from(
            "The first query of these lookups got no answer and the resolver retried after its 5 s \
             timeout (resolv.conf `options timeout`): a packet lost between the pod and CoreDNS. ",
        );
        if !one_family_lost.is_empty() {
            cause.push_str(&format!(
                "On {} the queries of one family (A or AAAA) time out while the other's, sent \
                 beside them from the same socket, are answered: the conntrack race itself (both \
                 packets DNAT'ed to the kube-dns Service at once, one conntrack insert loses and \
                 its packet is dropped). ",
                list_some(&one_family_lost, 3)
            ));
        }
        if !direct_lost.is_empty() {
            cause.push_str(&format!(
                "Single queries sent straight to the DNS servers time out too ({}): packets are \
                 lost on the node's path to CoreDNS (a saturated or faulty link, the conntrack \
                 table full), not only in the Service's DNAT.",
                list_some(&direct_lost, 3)
            ));
        } else if !one_family_lost.is_empty() {
            if direct_clean > 0 {
                cause.push_str(
                    "Single queries sent straight to the DNS servers from the same nodes are \
                     answered.",
                );
            }
        } else if direct_clean > 0 {
            cause.push_str(
                "Single queries sent straight to the DNS servers from the same nodes are \
                 answered: the loss is in the lookups libc makes through the kube-dns Service, \
                 the signature of the conntrack race (A and AAAA sent in parallel from one \
                 socket, both DNAT'ed at once, one conntrack insert loses and its packet is \
                 dropped), or the conntrack table full on the node.",
            );
        } else {
            cause.push_str(
                "Classic cause: the conntrack race (A and AAAA sent in parallel from one socket \
                 to the Service IP, one conntrack insert loses and its packet is dropped), or the \
                 conntrack table full on the node.",
            );
        }
        if at_five.len() >= 2 && at_five.len() * 2 > reporting {
            cause.push_str(
                " It shows on most nodes at once: look at what they share (kernel version, a \
                 CoreDNS replica dropping queries) before any one node.",
            );
        }
        let title = if nodes.len() == 1 {
            let (server, n, count) = at_five.values().next().expect("one node")[0];
            format!(
                "DNS lookups from node {} take 5 s (first packet lost, retried): {} of lookups through {server}",
                nodes[0],
                percent(n / count)
            )
        } else {
            format!(
                "DNS lookups take 5 s (first packet lost, retried) from {}: {}",
                plural(nodes.len(), "node", "nodes"),
                list_some(&nodes, 4)
            )
        };
        out.push(
            Finding::new("dns.lookups-at-five-seconds", Severity::Warning, title)
                .evidence(evidence)
                .cause(cause)
                .next(format!(
                    "On {}: `conntrack -S` (insert_failed growing: the race) and `dmesg | grep \
                     conntrack` (table full). Fix: NodeLocal DNSCache (queries to a link-local \
                     address, not tracked), or `options single-request-reopen` in the pods' \
                     dnsConfig, a kernel with the conntrack race fixes, a larger nf_conntrack_max. \
                     Runbook: DNSLookupsAtFiveSeconds (docs/runbooks.md).",
                    nodes[0]
                )),
        );
    }
    let at_five_pairs: BTreeSet<(&str, &str)> = at_five
        .iter()
        .flat_map(|(node, rows)| rows.iter().map(move |(server, _, _)| (*node, *server)))
        .collect();

    // 2. A node much slower than the others, per server (the 5 s ones are explained above).
    let servers: BTreeSet<&str> = d
        .histograms
        .values()
        .flat_map(|per| per.keys().map(String::as_str))
        .collect();
    // node -> [(ratio, server, line)]
    let mut slow_nodes: BTreeMap<&str, Vec<(f64, &str, String)>> = BTreeMap::new();
    for server in &servers {
        let rows: Vec<(&str, &Histogram)> = d
            .histograms
            .iter()
            .filter_map(|(node, per)| Some((node.as_str(), per.get(*server)?)))
            .filter(|(node, h)| {
                h.count >= MIN_LOOKUPS && !at_five_pairs.contains(&(*node, *server))
            })
            .collect();
        if rows.len() < 2 {
            continue;
        }
        for (node, h) in &rows {
            let others: Vec<&Histogram> = rows
                .iter()
                .filter(|(n, _)| n != node)
                .map(|(_, h)| *h)
                .collect();
            if let Some((ratio, line)) =
                much_slower(&format!("node {node}, server {server}"), h, &others)
            {
                slow_nodes
                    .entry(node)
                    .or_default()
                    .push((ratio, server, line));
            }
        }
    }
    for (node, mut rows) in slow_nodes {
        rows.sort_by(|a, b| b.0.total_cmp(&a.0));
        let only_system = rows.iter().all(|(_, server, _)| *server == "system");
        let direct_fast = only_system
            && d.histograms[node]
                .iter()
                .any(|(server, h)| server != "system" && h.count >= MIN_LOOKUPS);
        let worst = rows[0].1;
        let h = &d.histograms[node][worst];
        out.push(
            Finding::new(
                "dns.node-slow",
                Severity::Warning,
                format!(
                    "DNS lookups from node {node} are much slower than from the other nodes: p99 {} through {worst}",
                    seconds(h.quantile(0.99).unwrap_or_default())
                ),
            )
            .evidence(rows.into_iter().map(|(_, _, line)| line))
            .cause(if direct_fast {
                "Only lookups through the pod's resolver (`system`) are slow on this node, while \
                 single queries straight to the DNS servers from it are not: its resolv.conf (a \
                 dead first nameserver, a longer search list, a different ndots) or the path \
                 through the kube-dns Service on this node (kube-proxy, conntrack)."
            } else {
                "Lookups from this node are slow while the other nodes get quick answers from \
                 the same servers: the node's network path (packet loss, a saturated NIC or CPU) \
                 or its conntrack table near full."
            })
            .next(format!(
                "On {node}: `dmesg | grep conntrack`, the node's CPU and network saturation \
                 (`kubectl top node {node}`), `cat /etc/resolv.conf` in a pod there. Runbook: \
                 DNSLatencyHigh (docs/runbooks.md)."
            )),
        );
    }

    // 3. A server much slower than the others: the direct servers (one query each, no search
    // list, no retry) across every node; `system` is a different kind of lookup.
    let mut per_server: BTreeMap<&str, Histogram> = BTreeMap::new();
    for per in d.histograms.values() {
        for (server, h) in per.iter().filter(|(s, _)| *s != "system") {
            per_server.entry(server.as_str()).or_default().merge(h);
        }
    }
    per_server.retain(|_, h| h.count >= MIN_LOOKUPS);
    for (server, h) in &per_server {
        let others: Vec<&Histogram> = per_server
            .iter()
            .filter(|(s, _)| s != &server)
            .map(|(_, h)| h)
            .collect();
        if others.is_empty() {
            continue;
        }
        let Some((_, line)) = much_slower(&format!("server {server}, every node"), h, &others)
        else {
            continue;
        };
        let p99 = seconds(h.quantile(0.99).unwrap_or_default());
        let (title, cause, next) = match server.strip_prefix("coredns/") {
            Some(pod) => (
                format!(
                    "CoreDNS pod {pod} answers much more slowly than the other DNS servers: p99 {p99}"
                ),
                "One replica is slow for every node: it is CPU-throttled or overloaded, its node \
                 is busy, or its own upstream connections are slow. A share of every client's \
                 lookups waits for it."
                    .to_owned(),
                format!(
                    "`kubectl -n {DNS_NAMESPACE} top pod {pod}` (CPU at its limit?), its node, \
                     `kubectl -n {DNS_NAMESPACE} logs {pod}`; if nothing explains it, delete \
                     it. Runbook: DNSLatencyHigh (docs/runbooks.md)."
                ),
            ),
            None => (
                format!(
                    "DNS server {server} answers much more slowly than the other DNS servers: p99 {p99}"
                ),
                "Every node waits longer for this server than for the others: the server is \
                 overloaded, or the path to it is (through the kube-dns Service: kube-proxy and \
                 conntrack; outside the cluster: the route there)."
                    .to_owned(),
                format!(
                    "Compare with `dig @{} kubernetes.default.svc.cluster.local` from a node; \
                     if it is the kube-dns Service IP, look at the CoreDNS replicas behind it. \
                     Runbook: DNSLatencyHigh (docs/runbooks.md).",
                    host_of(server)
                ),
            ),
        };
        out.push(
            Finding::new("dns.server-slow", Severity::Warning, title)
                .evidence([line])
                .cause(cause)
                .next(next),
        );
    }
    out
}
