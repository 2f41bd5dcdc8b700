//! docs/metrics.md, generated from the family docs so it cannot drift from the code.

use super::*;

/// docs/metrics.md, generated from [`FAMILIES`].
pub fn reference_markdown() -> String {
    let mut out = String::from(
        "# Metrics reference\n\n\
         Generated from `src/metrics.rs` by `make generate`; a test fails when this file is stale\n\
         or when a family here is missing from a real `/metrics` encode.\n\n\
         All families carry the prefix `netprobe_`, use base units (seconds, bytes) and take label\n\
         values from closed sets. `/metrics` serves OpenMetrics to clients that ask for it\n\
         (Prometheus does) and the classic text format otherwise.\n\n\
         | family | type | labels | meaning |\n| --- | --- | --- | --- |\n",
    );
    for doc in FAMILIES {
        let labels = doc
            .labels
            .iter()
            .map(|l| format!("`{l}`"))
            .collect::<Vec<_>>()
            .join(", ");
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            doc.name, doc.kind, labels, doc.help
        ));
    }
    out.push_str(&format!(
        "\nDNS lookup-duration buckets (seconds): {}.\n\n\
         Label values: `rcode` is one of {}; `family` is `ipv4` (the A query) or `ipv6` (the \
         AAAA query); `protocol` is `udp` or `tcp`; `probe` is `dns`.\n",
        DNS_BUCKETS
            .iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        RCODE_LABELS
            .iter()
            .map(|r| format!("`{r}`"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    out.push_str(&format!(
        "\nStorage operation-duration buckets (seconds): {}. Storage `result` is one of {}; \
         `operation` is one of {} (bytes: {}; throughput: `write`, `read`).\n",
        STORAGE_BUCKETS
            .iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        backticked(crate::observation::storage::RESULTS),
        backticked(crate::observation::storage::OPERATIONS),
        backticked(crate::observation::storage::BYTE_OPERATIONS),
    ));
    out.push_str(&format!(
        "\nPeer and API-server request buckets (seconds): {}.\n",
        NETWORK_BUCKETS
            .iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    ));
    out.push_str(SERIES_PER_NODE);
    out
}

/// The cost of each detail level, as `tests/integration/budget.rs` measures it (and fails above
/// its budget) and `scripts/bench-series` prints it for several k.
pub(super) const SERIES_PER_NODE: &str = "
## Series per node

What a node costs Prometheus is set by `metrics.detail` (default `per_node`; `per_target` on
request, read at start). Sample lines of one scrape of a healthy node with the chart's default
config: 4 DNS servers (`system`, the kube-dns Service and 2 CoreDNS pods) × 3 names, k peers
over http, tcp, bulk and icmp on one IP family, 2 API-server paths, one volume. Measured by
`tests/integration/budget.rs`, which fails above the budget, and `scripts/bench-series`
(docs/benchmarks.md):

| `metrics.detail` | latency histograms | per node at k=10 | per 1,000 nodes at k=10 | each peer more | budget at k=10 |
| --- | --- | --- | --- | --- | --- |
| `per_node` | per peer protocol (the whole probe), per DNS server, per API-server path (total), fsync and sync_write per volume | 381 | 381,000 | 8 | 400 |
| `per_target` | per peer, protocol and phase; per DNS server, name and type; per API-server path and phase; every storage operation | 1,636 | 1,636,000 | 112 | 1,800 |

Both levels keep every target's own success gauge and result counters
(`netprobe_peer_probe_success`, `netprobe_peer_requests_total`, `netprobe_dns_probe_success`,
`netprobe_dns_lookups_total`, ...), so every alert and SLO rule works at either. Only two
panels of the Network dashboard need `per_target`: the latency matrix and p99 by target node.
A peer costs 2 series per protocol at `per_node` (`up` and the success counter), and 13 more per
protocol and phase at `per_target` (a histogram of 10 buckets).
";

pub(super) fn backticked(items: &[&str]) -> String {
    items
        .iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
