//! What one storage probe run saw.

use std::time::Duration;

label_values! {
    /// The `result` of a storage probe.
    pub enum StorageResult {
        success,
        enospc,
        erofs,
        eio,
        permission_denied,
        timeout,
        checksum_mismatch,
        insufficient_space,
        error,
    }
}

label_values! {
    /// An `operation` the duration histogram observes.
    pub enum StorageOperation {
        write,
        fsync,
        read,
        delete,
        sync_write,
    }
}

/// The operations that move bytes (`netprobe_storage_bytes_total`).
pub const BYTE_OPERATIONS: &[StorageOperation] = &[
    StorageOperation::write,
    StorageOperation::read,
    StorageOperation::sync_write,
];

/// The operations with a throughput gauge.
pub const THROUGHPUT_OPERATIONS: &[StorageOperation] =
    &[StorageOperation::write, StorageOperation::read];

/// What one run saw.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageObservation {
    pub result: StorageResult,
    /// Durations of the operations that completed, in order (`sync_write` once per write).
    pub operations: Vec<(StorageOperation, Duration)>,
    /// Bytes moved, per operation of [`BYTE_OPERATIONS`], including those of a failed run.
    pub bytes: Vec<(StorageOperation, u64)>,
    /// Bytes per second of the write and read phases that completed.
    pub throughput: Vec<(StorageOperation, f64)>,
    /// Whether the data went past the page cache with O_DIRECT (`false`: dropped the cache with
    /// fadvise); unknown when the run failed before opening its file.
    pub direct_io: Option<bool>,
    /// What went wrong, for the log.
    pub detail: Option<String>,
    /// The volume's space and inodes as statfs gave them before the run wrote anything; unknown
    /// when the run failed or hung before statfs.
    pub space: Option<VolumeSpace>,
}

/// A volume's space and inodes, from one statfs: what the capacity gauges export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VolumeSpace {
    /// Bytes an unprivileged writer may still use (`f_bavail`: the root reserve left out, as the
    /// probe itself runs unprivileged).
    pub free_bytes: u64,
    /// The filesystem's size (`f_blocks`).
    pub size_bytes: u64,
    /// Inodes an unprivileged writer may still use (`f_favail`).
    pub free_inodes: u64,
    /// Inodes in all (`f_files`); 0 on filesystems without a fixed inode table (btrfs, many
    /// network filesystems), where inodes cannot run out.
    pub inodes: u64,
}

impl StorageObservation {
    pub(crate) fn new() -> Self {
        Self {
            result: StorageResult::success,
            operations: Vec::new(),
            bytes: Vec::new(),
            throughput: Vec::new(),
            direct_io: None,
            detail: None,
            space: None,
        }
    }

    /// A run the watchdog gave up on: its thread is stuck in a call, or (a run that never
    /// started) the previous run's thread still is. `detail` says which.
    pub fn timed_out(detail: impl Into<String>) -> Self {
        Self {
            result: StorageResult::timeout,
            detail: Some(detail.into()),
            ..Self::new()
        }
    }

    pub(crate) fn add_bytes(&mut self, operation: StorageOperation, n: u64) {
        match self.bytes.iter_mut().find(|(op, _)| *op == operation) {
            Some((_, total)) => *total += n,
            None => self.bytes.push((operation, n)),
        }
    }
}
