//! The probe load a config asks for, stated before the daemon runs it: runs per second by
//! prober and the CPU they cost, against what the daemon's async runtime can do in one interval
//! (its worker threads' time). Past [`LOAD_WARNING_RATIO`] of it, runs start to queue behind
//! each other and then to overrun; `check-config` warns, and the running daemon exports what its
//! workers actually spend (`netprobe_runtime_busy_seconds_total`) for the same warning as an
//! alert.

use super::{Config, DnsServer, PeerDiscovery};

/// Worker threads of the daemon's async runtime: every probe's work that is not blocking I/O
/// (the storage probe's own threads) runs on them.
pub const RUNTIME_WORKERS: usize = 2;

/// Share of the workers' time from which the load is reported as too much: queueing delay grows
/// fast past it, and probe timings start to include it.
pub const LOAD_WARNING_RATIO: f64 = 0.8;

/// CPU of one DNS lookup inside the daemon (docs/benchmarks.md: 191 µs, rounded up).
pub const DNS_RUN_CPU: f64 = 200e-6;

/// CPU of one peer or API-server run: an upper bound from the daemon on a kubelet at the chart's
/// defaults (docs/benchmarks.md: 2.0 to 2.2 ms of CPU per second for about 1.75 runs per second,
/// with its watches and scrapes counted in), so about 1.2 ms per run.
pub const NETWORK_RUN_CPU: f64 = 1.2e-3;

/// CPU of a storage run per MiB written and read back (docs/benchmarks.md: 17 to 18 ms for a
/// 16 MiB probe with its 16 sync writes), rounded up.
pub const STORAGE_CPU_PER_MIB: f64 = 1.2e-3;

const MIB: f64 = (1u64 << 20) as f64;
/// One write of the storage probe's latency pass (the probe's own constant; config sits below it).
const SYNC_WRITE_BYTES: f64 = 4096.0;

/// The load one config asks for: runs per second of each prober and their CPU.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeLoad {
    /// `(prober, runs per second, CPU seconds per second)`, for dns, peer, apiserver, storage.
    pub probers: Vec<(&'static str, f64, f64)>,
    /// Whether the peer count is assumed ([`super::memory::ASSUMED_NODES`] for `neighbours: 0`
    /// with Kubernetes discovery) rather than known from the config.
    pub assumed_nodes: bool,
}

impl ProbeLoad {
    pub fn runs_per_second(&self) -> f64 {
        self.probers.iter().map(|(_, runs, _)| runs).sum()
    }

    pub fn cpu_per_second(&self) -> f64 {
        self.probers.iter().map(|(_, _, cpu)| cpu).sum()
    }

    /// The share of the runtime's worker time the load takes.
    pub fn ratio(&self) -> f64 {
        self.cpu_per_second() / RUNTIME_WORKERS as f64
    }

    pub fn over(&self) -> bool {
        self.ratio() > LOAD_WARNING_RATIO
    }

    /// One line for people: `probe load: 2.1 runs/s (dns 0.8, ...), about 2.5 ms of CPU per
    /// second, 0.1 % of the 2 runtime workers`.
    pub fn describe(&self) -> String {
        format!(
            "probe load: {:.1} runs/s ({}){}, about {:.1} ms of CPU per second, {:.1} % of the {RUNTIME_WORKERS} runtime workers",
            self.runs_per_second(),
            self.probers
                .iter()
                .map(|(p, runs, _)| format!("{p} {runs:.1}"))
                .collect::<Vec<_>>()
                .join(", "),
            if self.assumed_nodes {
                format!(" (peers: {} nodes assumed)", super::memory::ASSUMED_NODES)
            } else {
                String::new()
            },
            self.cpu_per_second() * 1e3,
            self.ratio() * 100.0
        )
    }

    /// The warning, when the load is more than the workers can do in an interval.
    pub fn warning(&self) -> Option<String> {
        self.over().then(|| {
            let (prober, _, _) = self
                .probers
                .iter()
                .copied()
                .max_by(|a, b| a.2.total_cmp(&b.2))
                .unwrap_or(("dns", 0.0, 0.0));
            format!(
                "the targets ask for {:.0} % of what the daemon's {RUNTIME_WORKERS} runtime workers can run, over {:.0} %: runs will queue and overrun. Most of it is {prober}: lengthen its interval or probe fewer targets",
                self.ratio() * 100.0,
                LOAD_WARNING_RATIO * 100.0
            )
        })
    }
}

impl Config {
    /// The load this config asks for (see the module doc for what it assumes about the cluster).
    pub fn probe_load(&self) -> ProbeLoad {
        let per_second = |targets: f64, interval: std::time::Duration| {
            targets / interval.as_secs_f64().max(f64::MIN_POSITIVE)
        };
        let dns = &self.dns;
        let servers: u64 = dns
            .servers
            .iter()
            .map(|s| match s {
                DnsServer::Nameservers => 3,
                DnsServer::System | DnsServer::Addr(_) => 1,
            })
            .sum::<u64>()
            + if dns.discover_coredns.is_some() {
                super::memory::ASSUMED_COREDNS_PODS
            } else {
                0
            };
        let dns_runs = per_second(
            (servers * dns.queries.len() as u64) as f64,
            dns.interval.get(),
        );

        let peers = &self.peers;
        let neighbours = peers.neighbours as u64;
        let (nodes, assumed_nodes) = match &peers.discovery {
            PeerDiscovery::None => (0, false),
            PeerDiscovery::Static(list) if neighbours == 0 => (list.len() as u64, false),
            PeerDiscovery::Static(list) => (neighbours.min(list.len() as u64), false),
            PeerDiscovery::Kubernetes(_) if neighbours == 0 => (super::memory::ASSUMED_NODES, true),
            PeerDiscovery::Kubernetes(_) => (neighbours, false),
        };
        // One run per protocol and IP family of each peer; single-stack clusters have one.
        let peer_runs = per_second(
            (nodes * peers.protocols.len() as u64) as f64,
            peers.interval.get(),
        );

        let apiserver_runs = if self.apiserver.enabled == Some(false) {
            0.0
        } else {
            per_second(2.0, self.apiserver.interval.get())
        };

        let storage = &self.storage;
        let storage_runs = per_second(storage.volumes.len() as f64, storage.interval.get());
        let storage_cpu: f64 = storage
            .volumes
            .iter()
            .map(|v| {
                let mib =
                    v.size.0 as f64 / MIB + f64::from(storage.sync_writes) * SYNC_WRITE_BYTES / MIB;
                per_second(mib * STORAGE_CPU_PER_MIB, storage.interval.get())
            })
            .sum();

        ProbeLoad {
            probers: vec![
                ("dns", dns_runs, dns_runs * DNS_RUN_CPU),
                ("peer", peer_runs, peer_runs * NETWORK_RUN_CPU),
                (
                    "apiserver",
                    apiserver_runs,
                    apiserver_runs * NETWORK_RUN_CPU,
                ),
                ("storage", storage_runs, storage_cpu),
            ],
            assumed_nodes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        Config::parse(text, "c.yaml").expect("valid")
    }

    #[test]
    fn the_load_counts_runs_per_second_and_their_cpu_by_prober() {
        let c = parse(
            "dns:\n  interval: 10s\n  servers: [system, \"198.18.0.1:53\"]\n  queries: [{name: a.example}, {name: b.example}]\n\
             peers:\n  interval: 5s\n  neighbours: 3\n  protocols: [http, tcp]\n  discovery:\n    static: [\"a=198.18.0.2:9753\", \"b=198.18.0.3:9753\"]\n\
             apiserver: {enabled: false}\n\
             storage:\n  interval: 60s\n  sync_writes: 0\n  volumes:\n    - {name: v, path: /v, size: 16MiB}\n",
        );
        let load = c.probe_load();
        // DNS: 2 servers x 2 names / 10 s; peers: 2 nodes x 2 protocols / 5 s; 1 volume / 60 s.
        let runs: Vec<(&str, f64)> = load.probers.iter().map(|(p, r, _)| (*p, *r)).collect();
        assert_eq!(
            runs,
            [
                ("dns", 0.4),
                ("peer", 0.8),
                ("apiserver", 0.0),
                ("storage", 1.0 / 60.0)
            ]
        );
        let cpu = load.cpu_per_second();
        let want = 0.4 * DNS_RUN_CPU + 0.8 * NETWORK_RUN_CPU + 16.0 * STORAGE_CPU_PER_MIB / 60.0;
        assert!((cpu - want).abs() < 1e-12, "{cpu} vs {want}");
        assert!(!load.over());
        assert_eq!(load.warning(), None);
        assert!(
            load.describe().starts_with("probe load: 1.2 runs/s (dns 0.4, peer 0.8, apiserver 0.0, storage 0.0), about 1.4 ms of CPU per second, 0.1 % of the 2 runtime workers"),
            "{}",
            load.describe()
        );
    }

    #[test]
    fn every_node_every_second_is_more_than_the_workers_can_run() {
        let c = parse(
            "peers:\n  interval: 1s\n  timeout: 500ms\n  neighbours: 0\n  protocols: [http, tcp, bulk, icmp]\n",
        );
        let load = c.probe_load();
        assert!(load.assumed_nodes);
        // 1,000 assumed nodes x 4 protocols per second: 4,000 runs of 1.2 ms, 4.8 s of CPU per
        // second for 2 workers.
        assert!(load.over(), "{}", load.describe());
        let warning = load.warning().unwrap();
        assert!(
            warning.starts_with("the targets ask for 24") && warning.contains("Most of it is peer"),
            "{warning}"
        );
        assert!(load.describe().contains("(peers: 1000 nodes assumed)"));
    }
}
