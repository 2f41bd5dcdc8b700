//! The storage probe families, per volume.

use super::*;
use crate::observation::storage::{BYTE_OPERATIONS, StorageOperation, StorageResult};

/// Storage operation buckets, in seconds: a healthy SSD fsyncs in about a millisecond and writes
/// 16 MiB in tens of them; a degraded disk or network volume takes 100 ms and more per fsync
/// (StorageFsyncLatencyHigh pages above 0.5), and a hung one runs into the timeout.
pub const STORAGE_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

/// The storage operations timed in a histogram at `metrics.detail: per_node`: the latencies
/// that databases wait for. Write and read show as throughput, and delete is rarely of interest.
pub const PER_NODE_STORAGE_OPERATIONS: &[StorageOperation] =
    &[StorageOperation::fsync, StorageOperation::sync_write];

pub const STORAGE_SUCCESS: FamilyDoc = FamilyDoc {
    name: "netprobe_storage_probe_success",
    kind: "gauge",
    labels: &["volume"],
    help: "1 if the last probe of the volume wrote, synced, read back and verified its data and deleted it, else 0. Absent until the first probe ends",
};
pub const STORAGE_PROBES: FamilyDoc = FamilyDoc {
    name: "netprobe_storage_probes_total",
    kind: "counter",
    labels: &["volume", "result"],
    help: "Storage probes by result: success, enospc, erofs, eio, permission_denied, timeout, checksum_mismatch, insufficient_space (skipped: less than size plus reserve free), error",
};
pub const STORAGE_DURATION: FamilyDoc = FamilyDoc {
    name: "netprobe_storage_operation_duration_seconds",
    kind: "histogram",
    labels: &["volume", "operation"],
    help: "Time of each operation that completed: fsync and sync_write (one 4 KiB write plus fdatasync, once per write of the latency pass); with metrics.detail per_target also write and read (all blocks of a run) and delete",
};
pub const STORAGE_BYTES: FamilyDoc = FamilyDoc {
    name: "netprobe_storage_bytes_total",
    kind: "counter",
    labels: &["volume", "operation"],
    help: "Bytes written (write, sync_write) and read back (read) by the storage probes",
};
pub const STORAGE_THROUGHPUT: FamilyDoc = FamilyDoc {
    name: "netprobe_storage_throughput_bytes_per_second",
    kind: "gauge",
    labels: &["volume", "operation"],
    help: "Throughput of the last completed write and read phase: bytes over the time spent in write or read calls",
};
pub const STORAGE_STUCK: FamilyDoc = FamilyDoc {
    name: "netprobe_storage_stuck_seconds",
    kind: "gauge",
    labels: &["volume"],
    help: "How long the storage operation in flight on the volume has been running (refreshed every 0.5 s), 0 when none is; grows without bound on a hung volume",
};
pub const STORAGE_DIRECT_IO: FamilyDoc = FamilyDoc {
    name: "netprobe_storage_direct_io",
    kind: "gauge",
    labels: &["volume"],
    help: "1 if the last probe read past the page cache with O_DIRECT, 0 if it dropped the cache with posix_fadvise(DONTNEED) instead (direct_io off, or the filesystem refuses O_DIRECT)",
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct VolumeLabels {
    volume: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct VolumeResultLabels {
    volume: String,
    result: StorageResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct VolumeOperationLabels {
    volume: String,
    operation: StorageOperation,
}

pub(super) type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

pub(super) fn storage_histogram() -> Histogram {
    Histogram::new(STORAGE_BUCKETS.iter().copied())
}

/// The storage families.
#[derive(Debug, Clone)]
pub struct StorageMetrics {
    detail: Detail,
    success: Family<VolumeLabels, Gauge>,
    probes: Family<VolumeResultLabels, Counter>,
    duration: HistogramFamily<VolumeOperationLabels>,
    bytes: Family<VolumeOperationLabels, Counter>,
    throughput: Family<VolumeOperationLabels, FloatGauge>,
    stuck: Family<VolumeLabels, FloatGauge>,
    direct_io: Family<VolumeLabels, Gauge>,
    latest: Table<String, LastStorage>,
    space: VolumeSpaceMetrics,
}

impl StorageMetrics {
    pub(super) fn register(registry: &mut Registry, detail: Detail) -> Self {
        let this = Self {
            detail,
            success: Family::default(),
            probes: Family::default(),
            duration: Family::new_with_constructor(storage_histogram),
            bytes: Family::default(),
            throughput: Family::default(),
            stuck: Family::default(),
            direct_io: Family::default(),
            latest: Table::default(),
            space: VolumeSpaceMetrics::default(),
        };
        register(registry, &STORAGE_SUCCESS, this.success.clone());
        register(registry, &STORAGE_PROBES, this.probes.clone());
        register_with_unit(
            registry,
            &STORAGE_DURATION,
            Unit::Seconds,
            this.duration.clone(),
        );
        register(registry, &STORAGE_BYTES, this.bytes.clone());
        register(registry, &STORAGE_THROUGHPUT, this.throughput.clone());
        register_with_unit(registry, &STORAGE_STUCK, Unit::Seconds, this.stuck.clone());
        register(registry, &STORAGE_DIRECT_IO, this.direct_io.clone());
        Self {
            space: VolumeSpaceMetrics::register(registry),
            ..this
        }
    }

    pub(super) fn volume(volume: &str) -> VolumeLabels {
        VolumeLabels {
            volume: volume.to_owned(),
        }
    }

    pub(super) fn operation(volume: &str, operation: StorageOperation) -> VolumeOperationLabels {
        VolumeOperationLabels {
            volume: volume.to_owned(),
            operation,
        }
    }

    /// Creates a volume's counters at 0 (every result, and bytes per operation), so that error
    /// ratios and `rate()` see the first failure, and its stuck gauge at 0 (nothing in flight).
    /// Success and the operation timings appear with the first result: a 0 before any probe
    /// would read as a failing volume on every start and rollout.
    pub fn add_volume(&self, volume: &str) {
        let _ = self.stuck.get_or_create(&Self::volume(volume));
        self.latest.set(&volume.to_owned(), LastStorage::default());
        for &result in StorageResult::ALL {
            let _ = self.probes.get_or_create(&VolumeResultLabels {
                volume: volume.to_owned(),
                result,
            });
        }
        for &operation in BYTE_OPERATIONS {
            let _ = self
                .bytes
                .get_or_create(&Self::operation(volume, operation));
        }
    }

    /// Removes every series of a volume.
    pub fn remove_volume(&self, volume: &str) {
        for family in [&self.success, &self.direct_io] {
            family.remove(&Self::volume(volume));
        }
        self.stuck.remove(&Self::volume(volume));
        self.latest.remove(&volume.to_owned());
        self.space.remove_volume(volume);
        for &result in StorageResult::ALL {
            self.probes.remove(&VolumeResultLabels {
                volume: volume.to_owned(),
                result,
            });
        }
        for &operation in StorageOperation::ALL {
            let labels = Self::operation(volume, operation);
            self.duration.remove(&labels);
            self.bytes.remove(&labels);
            self.throughput.remove(&labels);
        }
    }

    /// Records one run: its result, and what it measured.
    pub fn record(&self, volume: &str, obs: &StorageObservation) {
        self.probes
            .get_or_create(&VolumeResultLabels {
                volume: volume.to_owned(),
                result: obs.result,
            })
            .inc();
        self.success
            .get_or_create(&Self::volume(volume))
            .set(i64::from(obs.result == StorageResult::success));
        // The throughput and stuck gauges keep their values across a run that did not set them.
        self.latest.update(&volume.to_owned(), |v| {
            v.last = Some(Last::now(
                obs.result.as_str(),
                obs.result == StorageResult::success,
                None,
            ));
        });
        self.record_operations(volume, obs);
    }

    /// Every volume and its last probe.
    pub fn latest(&self) -> Vec<(String, LastStorage)> {
        self.latest
            .snapshot()
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or_default()))
            .collect()
    }

    /// Records the timings, bytes, throughput and read mode of a run, without its result (for a
    /// run whose timeout was already counted).
    pub fn record_operations(&self, volume: &str, obs: &StorageObservation) {
        for &(operation, took) in &obs.operations {
            if self.detail == Detail::PerNode && !PER_NODE_STORAGE_OPERATIONS.contains(&operation) {
                continue;
            }
            self.duration
                .get_or_create(&Self::operation(volume, operation))
                .observe(took.as_secs_f64());
        }
        for &(operation, n) in &obs.bytes {
            self.bytes
                .get_or_create(&Self::operation(volume, operation))
                .inc_by(n);
        }
        for &(operation, rate) in &obs.throughput {
            self.throughput
                .get_or_create(&Self::operation(volume, operation))
                .set(rate);
            let operation = operation.as_str();
            self.latest.update(&volume.to_owned(), |v| {
                match v.throughput.iter_mut().find(|(op, _)| *op == operation) {
                    Some((_, r)) => *r = rate,
                    None => v.throughput.push((operation, rate)),
                }
            });
        }
        if let Some(direct) = obs.direct_io {
            self.direct_io
                .get_or_create(&Self::volume(volume))
                .set(i64::from(direct));
        }
        if let Some(space) = &obs.space {
            self.space.record(volume, space);
        }
    }

    /// How long the operation in flight has been running, 0 when none is.
    pub fn set_stuck(&self, volume: &str, seconds: f64) {
        self.stuck.get_or_create(&Self::volume(volume)).set(seconds);
        self.latest
            .update(&volume.to_owned(), |v| v.stuck_seconds = seconds);
    }
}
