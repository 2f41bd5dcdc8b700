//! The memory a config costs, stated before the daemon runs it.
//!
//! The daemon's memory has a fixed part and parts that grow with the config: the targets it
//! schedules (each with its series, and their share of a `/metrics` encode) and the storage
//! probes' buffers. Every count and size in the config is capped, so every accepted config has an
//! upper bound; a config whose bound passes [`MEMORY_CEILING`] is refused, naming the storage
//! volume that takes it over (the only part large enough to). `check-config` prints the bound
//! and the daemon exports it (`netprobe_memory_estimate_bytes`), so a container limit can be set
//! from it.

use super::{Config, DnsServer, PeerDiscovery, StorageVolume};

const MIB: u64 = 1 << 20;
const KIB: u64 = 1 << 10;

/// No accepted config is estimated above this.
pub const MEMORY_CEILING: u64 = 512 * MIB;

/// What does not grow with the config: the process and its libraries, the async runtime, TLS,
/// the HTTP server at its connection limits, and the Kubernetes watches of a cluster of up to
/// 5,000 nodes (measured at a 22.5 MiB peak with 5,000 real-shaped pods and 5,000 nodes,
/// docs/benchmarks.md; the rest is margin).
pub const BASE: u64 = 40 * MIB;

/// One scheduled (prober, target) pair: its task and state, its series (a histogram is 17
/// buckets of every phase) and their text in a `/metrics` encode, which is built whole and then
/// converted for text clients. Measured per-target costs are a few KiB; this leaves room.
pub const PER_TARGET: u64 = 32 * KIB;

/// A storage probe's two threads (the probe's own, and the one that fills or checksums the next
/// block meanwhile): the stack pages they touch, and the 4 KiB buffer of the sync-write pass.
pub const PER_VOLUME_THREADS: u64 = 256 * KIB;

/// glibc reads at most three `nameserver` lines: what `dns.servers: [nameservers]` expands to.
const RESOLV_CONF_MAX_NAMESERVERS: u64 = 3;

/// CoreDNS pods assumed behind `dns.discover_coredns` (clusters run 2 to a handful).
pub const ASSUMED_COREDNS_PODS: u64 = 10;

/// Nodes assumed when `peers.neighbours: 0` (every other node) meets Kubernetes discovery: the
/// config cannot know the cluster's size. Each node beyond adds `PER_TARGET` per protocol and
/// IP family.
pub const ASSUMED_NODES: u64 = 1000;

/// Peer probes run per IP family of the peer's pod; dual-stack pods have two.
const FAMILIES: u64 = 2;

/// An upper bound on the daemon's memory for one config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// Scheduled (prober, target) pairs, at most.
    pub targets: u64,
    /// Storage buffers and threads, in bytes.
    pub storage: u64,
}

impl MemoryEstimate {
    /// The bound, in bytes.
    pub fn total(&self) -> u64 {
        BASE.saturating_add(self.targets.saturating_mul(PER_TARGET))
            .saturating_add(self.storage)
    }

    /// One line for people: the bound and what it is made of.
    pub fn describe(&self) -> String {
        format!("peak memory estimate: {}", self.summary())
    }

    /// The bound and its parts: `45.8 MiB (40.0 MiB base, ...)`.
    pub fn summary(&self) -> String {
        format!(
            "{} ({} base, {} targets x {} KiB, {} storage buffers)",
            mib(self.total()),
            mib(BASE),
            self.targets,
            PER_TARGET / KIB,
            mib(self.storage)
        )
    }
}

/// `12.3 MiB`.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB as f64)
}

/// What one storage volume holds while it is probed: the write and the read-back each keep two
/// blocks in flight (one in the system call, the next being filled or checksummed).
pub fn volume_bytes(volume: &StorageVolume) -> u64 {
    volume
        .block_size
        .0
        .saturating_mul(2)
        .saturating_add(PER_VOLUME_THREADS)
}

impl Config {
    /// An upper bound on the memory the daemon uses running this config (see the module doc for
    /// what it assumes about the cluster).
    pub fn memory_estimate(&self) -> MemoryEstimate {
        let dns = &self.dns;
        let servers: u64 = dns
            .servers
            .iter()
            .map(|s| match s {
                DnsServer::Nameservers => RESOLV_CONF_MAX_NAMESERVERS,
                DnsServer::System | DnsServer::Addr(_) => 1,
            })
            .sum();
        let coredns = if dns.discover_coredns.is_some() {
            ASSUMED_COREDNS_PODS
        } else {
            0
        };
        let queries = dns.queries.len() as u64;
        let dns_targets = (servers + coredns) * queries;

        let peers = &self.peers;
        let neighbours = peers.neighbours as u64;
        let nodes = match &peers.discovery {
            PeerDiscovery::None => 0,
            PeerDiscovery::Static(list) if neighbours == 0 => list.len() as u64,
            PeerDiscovery::Static(list) => neighbours.min(list.len() as u64),
            PeerDiscovery::Kubernetes(_) if neighbours == 0 => ASSUMED_NODES,
            PeerDiscovery::Kubernetes(_) => neighbours,
        };
        let peer_targets = nodes * peers.protocols.len() as u64 * FAMILIES;

        // Counted whenever it may run: whether it does depends on the environment.
        let apiserver = if self.apiserver.enabled == Some(false) {
            0
        } else {
            2
        };
        let volumes = self.storage.volumes.len() as u64;
        MemoryEstimate {
            targets: dns_targets + peer_targets + apiserver + volumes,
            storage: self.storage.volumes.iter().map(volume_bytes).sum(),
        }
    }

    /// Refuses a config whose estimate passes the ceiling, naming the volume that takes it over.
    pub(super) fn check_memory(&self) -> Result<(), (String, String)> {
        let estimate = self.memory_estimate();
        if estimate.total() <= MEMORY_CEILING {
            return Ok(());
        }
        let mut running = MemoryEstimate {
            storage: 0,
            ..estimate
        };
        for (i, volume) in self.storage.volumes.iter().enumerate() {
            running.storage += volume_bytes(volume);
            if running.total() > MEMORY_CEILING {
                return Err((
                    format!("storage.volumes[{i}].block_size"),
                    format!(
                        "{} takes the peak memory estimate to {}, over the ceiling of {}: use smaller blocks or fewer volumes (each volume holds 2 blocks while it is probed)",
                        volume.block_size,
                        estimate.summary(),
                        mib(MEMORY_CEILING)
                    ),
                ));
            }
        }
        // Not reachable with the caps on every count; said plainly should they ever change.
        Err((
            String::new(),
            format!(
                "the peak memory estimate, {}, is over the ceiling of {}",
                estimate.summary(),
                mib(MEMORY_CEILING)
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, "c.yaml").map_err(|e| e.to_string())
    }

    #[test]
    fn the_estimate_counts_targets_and_both_buffers_of_each_volume() {
        let c = parse(
            "dns:\n  servers: [system, nameservers, \"198.18.0.1:53\"]\n  queries: [{name: a.example}, {name: b.example}]\n\
             peers:\n  neighbours: 3\n  protocols: [http, tcp]\n  discovery:\n    static: [\"a=198.18.0.2:9753\", \"b=198.18.0.3:9753\"]\n\
             apiserver: {enabled: false}\n\
             storage:\n  volumes:\n    - {name: v, path: /v, size: 8MiB, block_size: 4MiB}\n",
        )
        .unwrap();
        let e = c.memory_estimate();
        // DNS: (1 + 3 + 1) servers x 2 queries; peers: 2 nodes x 2 protocols x 2 families; 1 volume.
        assert_eq!(e.targets, 10 + 8 + 1);
        assert_eq!(e.storage, 8 * MIB + PER_VOLUME_THREADS);
        assert_eq!(
            e.total(),
            BASE + 19 * PER_TARGET + 8 * MIB + PER_VOLUME_THREADS
        );
        assert_eq!(
            e.describe(),
            "peak memory estimate: 48.8 MiB (40.0 MiB base, 19 targets x 32 KiB, 8.2 MiB storage buffers)"
        );
    }

    #[test]
    fn the_defaults_are_far_below_the_ceiling() {
        let e = parse("").unwrap().memory_estimate();
        // 2 queries x system, 10 neighbours x 4 protocols x 2 families, 2 API-server paths.
        assert_eq!(e.targets, 2 + 80 + 2);
        assert!(e.total() < 48 * MIB, "{}", e.describe());
    }

    #[test]
    fn volumes_past_the_ceiling_are_refused_naming_the_one_that_tips_it() {
        let volume = |i: usize| {
            format!("    - {{name: v{i}, path: /v{i}, size: 64MiB, block_size: 64MiB}}\n")
        };
        let three: String = (0..3).map(volume).collect();
        assert!(parse(&format!("storage:\n  volumes:\n{three}")).is_ok());
        let four: String = (0..4).map(volume).collect();
        let err = parse(&format!("storage:\n  volumes:\n{four}")).unwrap_err();
        assert!(
            err.starts_with(
                "c.yaml: storage.volumes[3].block_size: 64MiB takes the peak memory estimate to 555.8 MiB (40.0 MiB base, 88 targets x 32 KiB, 513.0 MiB storage buffers), over"
            ),
            "{err}"
        );
        assert!(err.ends_with("over the ceiling of 512.0 MiB: use smaller blocks or fewer volumes (each volume holds 2 blocks while it is probed)"), "{err}");
    }
}
