//! docs/metrics.md, generated from the family docs so it cannot drift from the code.

use super::*;
use crate::observation::storage::{BYTE_OPERATIONS, StorageOperation, StorageResult};

/// docs/metrics.md, generated from [`FAMILIES`].
pub fn reference_markdown() -> String {
    let mut out = String::from(
        "# Metrics reference\n\n\
         Generated from `src/metrics/` by `make generate`; a test fails when this file is stale\n\
         or when a family here is missing from a real `/metrics` encode.\n\n\
         All families but the standard `process_*` ones (named as every Prometheus client library\n\
         names them) carry the prefix `netprobe_`, use base units (seconds, bytes) and take label\n\
         values from closed sets. `/metrics` serves OpenMetrics to clients that ask for it\n\
         (Prometheus does) and the classic text format otherwise.\n\n\
         Naming: `netprobe_<subsystem>_...`, subsystem one of dns, peer, apiserver, storage, csi,\n\
         discovery, http, config (the prober's own). Every gauge that says whether the last probe\n\
         of a target succeeded ends in `_probe_success` (1 or 0), as blackbox_exporter's\n\
         `probe_success` does: `up` is Prometheus's own word for a scrape target. Gauges of a\n\
         state rather than a probe are named for the state (`netprobe_icmp_available`,\n\
         `netprobe_csi_node_driver_registered`). Counters end in `_total`, durations in\n\
         `_seconds`, sizes in `_bytes`. `netprobe_peer_probe_success` and\n\
         `netprobe_apiserver_probe_success` were `netprobe_peer_probe_success` and `netprobe_apiserver_probe_success`\n\
         before 0.1.0's naming scheme; `diagnose` reads either.\n\n\
         | family | type | labels | meaning |\n| --- | --- | --- | --- |\n",
    );
    out.push_str(&table_rows(FAMILIES));
    out.push_str(&format!(
        "\nDNS lookup-duration buckets (seconds): {}.\n\n\
         Label values: `rcode` is one of {}; `family` is `ipv4` or `ipv6`: on \
         `netprobe_dns_family_queries_total` the A or the AAAA query, elsewhere the IP family the \
         probe went over; `protocol` is `udp` or `tcp`; `probe` is `dns`.\n",
        DNS_BUCKETS
            .iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        Rcode::ALL
            .iter()
            .map(|r| format!("`{}`", r.as_str()))
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
        backticked(&label_names(StorageResult::ALL)),
        backticked(&label_names(StorageOperation::ALL)),
        backticked(&label_names(BYTE_OPERATIONS)),
    ));
    out.push_str(&format!(
        "\nPeer and API-server request buckets (seconds): {}.\n",
        NETWORK_BUCKETS
            .iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    ));
    out.push_str(OWN_HEALTH);
    out.push_str(SERIES_PER_NODE);
    out.push_str(
        "\n## `kube-netprobe repair`\n\n\
         Served by the opt-in repair controller (docs/repair.md) on its own `/metrics` \
         (port 9754), not by the DaemonSet's pods. Every series of an enabled action exists \
         from the start at 0. `action` is one of `evict_coredns`, `restart_kube_proxy`, \
         `delete_stuck_netprobe`.\n\n\
         | family | type | labels | meaning |\n| --- | --- | --- | --- |\n",
    );
    out.push_str(&table_rows(repair::FAMILIES));
    out
}

/// One markdown table row per family.
fn table_rows(families: &[FamilyDoc]) -> String {
    families
        .iter()
        .map(|doc| {
            let labels = doc
                .labels
                .iter()
                .map(|l| format!("`{l}`"))
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                "| `{}` | {} | {} | {} |\n",
                doc.name, doc.kind, labels, doc.help
            )
        })
        .collect()
}

/// Where the process and cgroup families come from and when they are absent.
const OWN_HEALTH: &str = "
## The prober's own health

`process_*` and `netprobe_cgroup_cpu_*` are read at each scrape from `/proc/self` and from the
process's cgroup, found through `/proc/self/cgroup` and `/proc/self/mountinfo`: the cgroup v1
`cpu` hierarchy (`cpu.stat`, `cpu.cfs_quota_us`, `cpu.cfs_period_us`), or cgroup v2 where the
`cpu` controller is enabled (`cpu.stat`, `cpu.max`); v1 wins on hybrid machines. When no CPU
controller is visible (or its files cannot be read), `netprobe_cgroup_cpu_available` is 0, the
other `netprobe_cgroup_cpu_*` families are absent and the log says why once. Without a CPU
limit, the quota and the period are absent and the period counters stay at 0. The counters are the
process's own cgroup's (the container's, in a pod); a limit set only on a parent cgroup (the pod)
is not read. A throttled prober counts its wait for CPU in the latencies it measures:
KubeNetprobeCPUThrottled fires on it, and the latency panels of the dashboards show it.
";

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
| `per_node` | per peer protocol (the whole probe), per DNS server, per API-server path (total), fsync and sync_write per volume | 397 | 397,000 | 8 | 400 |
| `per_target` | per peer, protocol and phase; per DNS server, name and type; per API-server path and phase; every storage operation | 1,652 | 1,652,000 | 112 | 1,800 |

Both levels keep every target's own success gauge and result counters
(`netprobe_peer_probe_success`, `netprobe_peer_requests_total`, `netprobe_dns_probe_success`,
`netprobe_dns_lookups_total`, ...), so every alert and SLO rule works at either. Only two
panels of the Network dashboard need `per_target`: the latency matrix and p99 by target node.
The process and cgroup families are 10 of those lines (the six `process_*`, and
`netprobe_cgroup_cpu_available` with the three cgroup counters); a CPU limit adds its quota and
period (12). A peer costs 2 series per protocol at `per_node` (`up` and the success counter),
and 13 more per protocol and phase at `per_target` (a histogram of 10 buckets).
";

/// The label values of a closed set, as `/metrics` writes them.
fn label_names<T: Copy + std::fmt::Display>(values: &[T]) -> Vec<String> {
    values.iter().map(T::to_string).collect()
}

pub(super) fn backticked<S: AsRef<str>>(items: &[S]) -> String {
    items
        .iter()
        .map(|i| format!("`{}`", i.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}
