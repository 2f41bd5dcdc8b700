//! Capacity: what runs out before something breaks. The space and inodes of each probed volume,
//! and the pod IPs of this node against its podCIDR.

use super::*;
use crate::observation::storage::VolumeSpace;

pub const VOLUME_FREE_BYTES: FamilyDoc = FamilyDoc {
    name: "netprobe_storage_volume_free_bytes",
    kind: "gauge",
    labels: &["volume"],
    help: "Bytes an unprivileged writer may still use on the volume (statfs f_bavail), as the last storage probe that reached statfs saw it; the series stays at its last value while the volume hangs. Absent until then",
};
pub const VOLUME_SIZE_BYTES: FamilyDoc = FamilyDoc {
    name: "netprobe_storage_volume_size_bytes",
    kind: "gauge",
    labels: &["volume"],
    help: "Size of the filesystem holding the volume (statfs f_blocks), from the same statfs as netprobe_storage_volume_free_bytes",
};
pub const VOLUME_FREE_INODES: FamilyDoc = FamilyDoc {
    name: "netprobe_storage_volume_free_inodes",
    kind: "gauge",
    labels: &["volume"],
    help: "Inodes an unprivileged writer may still use on the volume (statfs f_favail), from the same statfs as netprobe_storage_volume_free_bytes",
};
pub const VOLUME_INODES: FamilyDoc = FamilyDoc {
    name: "netprobe_storage_volume_inodes",
    kind: "gauge",
    labels: &["volume"],
    help: "Inodes of the filesystem holding the volume (statfs f_files); 0 where the filesystem has no fixed inode table (btrfs, many network filesystems) and inodes cannot run out",
};
pub const NODE_POD_IPS_IN_USE: FamilyDoc = FamilyDoc {
    name: "netprobe_node_pod_ips_in_use",
    kind: "gauge",
    labels: &["family"],
    help: "Pods on this node that hold or wait for an IP of the family from the node's podCIDR: not hostNetwork, not Succeeded or Failed (a pending pod counts: it needs an address to start). Present when pod_ips is on and the node has a podCIDR of the family",
};
pub const NODE_POD_IP_CAPACITY: FamilyDoc = FamilyDoc {
    name: "netprobe_node_pod_ip_capacity",
    kind: "gauge",
    labels: &["family"],
    help: "Addresses the host-local IPAM can hand to pods from this node's podCIDR of the family (spec.podCIDRs): the range less the network address, the gateway (the first address) and, for IPv4, the broadcast address",
};

pub const RUNTIME_BUSY: FamilyDoc = FamilyDoc {
    name: "netprobe_runtime_busy_seconds_total",
    kind: "counter",
    labels: &[],
    help: "Time the async runtime's worker threads spent working (probes, discovery, /metrics), summed over the workers and refreshed every second; its rate over netprobe_runtime_workers is the share of what the daemon can run that its targets take (check-config estimates it from the config)",
};
pub const RUNTIME_WORKERS_FAMILY: FamilyDoc = FamilyDoc {
    name: "netprobe_runtime_workers",
    kind: "gauge",
    labels: &[],
    help: "Worker threads of the async runtime (every probe's work but the storage probes' blocking I/O runs on them)",
};

/// The async runtime's own load: what one interval can run, and how much of it is used.
#[derive(Debug, Clone, Default)]
pub struct RuntimeMetrics {
    busy: Counter<f64, std::sync::atomic::AtomicU64>,
    workers: Gauge,
    /// The busy time last published, to add only what is new (the runtime's figure is a total).
    published: Arc<Mutex<f64>>,
}

impl RuntimeMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let this = Self::default();
        register_with_unit(registry, &RUNTIME_BUSY, Unit::Seconds, this.busy.clone());
        register(registry, &RUNTIME_WORKERS_FAMILY, this.workers.clone());
        this
    }

    /// Publishes the runtime's workers and their busy time so far (a total that only grows).
    pub fn set(&self, workers: usize, busy_seconds: f64) {
        self.workers.set(i64::try_from(workers).unwrap_or(i64::MAX));
        let mut published = self.published.lock().expect("runtime metrics lock");
        if busy_seconds > *published {
            self.busy.inc_by(busy_seconds - *published);
            *published = busy_seconds;
        }
    }
}

/// The families of [`VolumeSpace`], per volume.
#[derive(Debug, Clone, Default)]
pub struct VolumeSpaceMetrics {
    free_bytes: Family<VolumeLabels, Gauge>,
    size_bytes: Family<VolumeLabels, Gauge>,
    free_inodes: Family<VolumeLabels, Gauge>,
    inodes: Family<VolumeLabels, Gauge>,
}

fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl VolumeSpaceMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let this = Self::default();
        register_with_unit(
            registry,
            &VOLUME_FREE_BYTES,
            Unit::Bytes,
            this.free_bytes.clone(),
        );
        register_with_unit(
            registry,
            &VOLUME_SIZE_BYTES,
            Unit::Bytes,
            this.size_bytes.clone(),
        );
        register(registry, &VOLUME_FREE_INODES, this.free_inodes.clone());
        register(registry, &VOLUME_INODES, this.inodes.clone());
        this
    }

    pub fn record(&self, volume: &str, space: &VolumeSpace) {
        let labels = StorageMetrics::volume(volume);
        self.free_bytes
            .get_or_create(&labels)
            .set(gauge_value(space.free_bytes));
        self.size_bytes
            .get_or_create(&labels)
            .set(gauge_value(space.size_bytes));
        self.free_inodes
            .get_or_create(&labels)
            .set(gauge_value(space.free_inodes));
        self.inodes
            .get_or_create(&labels)
            .set(gauge_value(space.inodes));
    }

    pub fn remove_volume(&self, volume: &str) {
        let labels = StorageMetrics::volume(volume);
        for family in [
            &self.free_bytes,
            &self.size_bytes,
            &self.free_inodes,
            &self.inodes,
        ] {
            family.remove(&labels);
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct FamilyLabels {
    family: &'static str,
}

/// This node's pod IPs against its podCIDRs, one pair of series per IP family of the podCIDRs.
#[derive(Debug, Clone, Default)]
pub struct NodePodIpMetrics {
    in_use: Family<FamilyLabels, Gauge>,
    capacity: Family<FamilyLabels, Gauge>,
}

impl NodePodIpMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let this = Self::default();
        register(registry, &NODE_POD_IPS_IN_USE, this.in_use.clone());
        register(registry, &NODE_POD_IP_CAPACITY, this.capacity.clone());
        this
    }

    /// Publishes `(family, in use, capacity)` for each family the node has a podCIDR of; the
    /// families not listed lose their series (a node without a podCIDR has none: nothing to
    /// run out of, or nothing known).
    pub fn set(&self, families: &[(&'static str, u64, u64)]) {
        for family in ["ipv4", "ipv6"] {
            let labels = FamilyLabels { family };
            match families.iter().find(|(f, _, _)| *f == family) {
                Some((_, in_use, capacity)) => {
                    self.in_use.get_or_create(&labels).set(gauge_value(*in_use));
                    self.capacity
                        .get_or_create(&labels)
                        .set(gauge_value(*capacity));
                }
                None => {
                    self.in_use.remove(&labels);
                    self.capacity.remove(&labels);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observation::storage::StorageResult;

    fn sample(text: &str, series: &str) -> Option<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map(str::to_owned)
    }

    #[test]
    fn a_run_that_reached_statfs_sets_the_space_gauges_and_removal_takes_them() {
        let m = Metrics::new();
        m.storage.add_volume("data");
        let before = m.encode_openmetrics();
        assert_eq!(
            sample(
                &before,
                r#"netprobe_storage_volume_free_bytes{volume="data"}"#
            ),
            None,
            "no value before the first statfs"
        );
        let mut obs = StorageObservation::new();
        obs.result = StorageResult::insufficient_space;
        obs.space = Some(VolumeSpace {
            free_bytes: 3 << 20,
            size_bytes: 4 << 20,
            free_inodes: 1021,
            inodes: 1024,
        });
        m.storage.record("data", &obs);
        let text = m.encode_openmetrics();
        for (series, want) in [
            (
                r#"netprobe_storage_volume_free_bytes{volume="data"}"#,
                "3145728",
            ),
            (
                r#"netprobe_storage_volume_size_bytes{volume="data"}"#,
                "4194304",
            ),
            (
                r#"netprobe_storage_volume_free_inodes{volume="data"}"#,
                "1021",
            ),
            (r#"netprobe_storage_volume_inodes{volume="data"}"#, "1024"),
        ] {
            assert_eq!(sample(&text, series).as_deref(), Some(want), "{series}");
        }
        // A run that hung before statfs leaves the last values.
        m.storage
            .record("data", &StorageObservation::timed_out("stuck in open"));
        let text = m.encode_openmetrics();
        assert_eq!(
            sample(
                &text,
                r#"netprobe_storage_volume_free_bytes{volume="data"}"#
            )
            .as_deref(),
            Some("3145728")
        );
        m.storage.remove_volume("data");
        let text = m.encode_openmetrics();
        assert!(!text.contains(r#"{volume="data"}"#), "{text}");
    }

    #[test]
    fn node_pod_ips_follow_the_families_of_the_podcidrs() {
        let m = Metrics::new();
        m.node_pod_ips
            .set(&[("ipv4", 12, 253), ("ipv6", 12, 65533)]);
        let text = m.encode_openmetrics();
        assert_eq!(
            sample(&text, r#"netprobe_node_pod_ips_in_use{family="ipv6"}"#).as_deref(),
            Some("12")
        );
        assert_eq!(
            sample(&text, r#"netprobe_node_pod_ip_capacity{family="ipv4"}"#).as_deref(),
            Some("253")
        );
        m.node_pod_ips.set(&[("ipv4", 13, 253)]);
        let text = m.encode_openmetrics();
        assert!(!text.contains(r#"family="ipv6""#), "{text}");
        m.node_pod_ips.set(&[]);
        let text = m.encode_openmetrics();
        assert!(!text.contains("family="), "{text}");
    }
}
