//! The storage prober: a continuous, safe and measured version of the runbook's
//! `dd if=/dev/zero of=/test bs=1M count=100; sync; dd if=/test of=/dev/null`.
//!
//! Each run, on a blocking thread: check free space, write `size` bytes of pseudo-random data (so
//! compression and dedup do not flatter the figures) in `block_size` chunks, fsync, read it back
//! past the page cache (O_DIRECT, or `posix_fadvise(DONTNEED)` where the filesystem refuses
//! O_DIRECT), compare checksums, delete; then `sync_writes` × (4 KiB write + fdatasync), the
//! latency that breaks etcd and databases on a bad volume.
//!
//! Memory: a volume holds two `block_size` buffers while it is probed, in the write phase and
//! then in the read-back (one block in the system call, the next being filled or checksummed),
//! plus 4 KiB for the sync pass; the config's memory estimate counts exactly that.
//!
//! The volume is never harmed: everything happens in `<path>/.kube-netprobe/`, opened without
//! following symlinks and removed (files and directory) after every run and at start-up.
//!
//! A hung volume (dead NFS server, frozen filesystem, wedged CSI driver) blocks its thread in the
//! kernel, where it cannot be cancelled, and it may do so in any call: a frozen filesystem in
//! mkdir or at the entry of write, a dead NFS server in open, statfs or the flush of close. So
//! every call a probe thread makes on the volume goes through one [`OpClock`] (opening the path,
//! listing and removing `.kube-netprobe/`, statfs, mkdir, open, write, fsync, read, close,
//! unlink; the start-up cleanup's too), and a watchdog task beside the thread publishes how long
//! the call in flight has been running (`netprobe_storage_stuck_seconds`) for as long as the
//! thread lives. A run whose thread is not done at `storage.timeout` counts as `timeout` and
//! ends; the thread goes on alone. Each volume has one thread at most (a one-permit semaphore the
//! thread holds until it returns): a later run waits, within its own timeout, for the previous
//! thread to end, and counts as `timeout` when it does not, without starting another. A hung
//! volume therefore reads as one `timeout` per interval and a stuck gauge that keeps growing, and
//! the async runtime (DNS, peers, `/metrics`, other volumes) never waits for it.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::num::NonZeroU64;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::task::JoinError;
use tokio::time::Instant;

use crate::config::{StorageConfig, StorageVolume};
use crate::metrics::StorageMetrics;
pub use crate::observation::storage::{
    BYTE_OPERATIONS, StorageObservation, StorageOperation, StorageResult, THROUGHPUT_OPERATIONS,
    VolumeSpace,
};
use crate::probe::{Health, Transition};
use crate::scheduler::{RunFuture, Target, later};

mod run;

pub use self::run::*;

/// The only directory the probe writes in, under each volume's path.
pub const PROBE_DIR: &str = ".kube-netprobe";
const DATA_FILE: &str = "probe.data";
const SYNC_FILE: &str = "sync.data";
/// One write of the latency pass: the page size, what a WAL append costs at least.
pub const SYNC_WRITE_BYTES: usize = 4096;
/// Buffer alignment for O_DIRECT.
const ALIGN: usize = 4096;

/// How often the stuck gauge is refreshed while a probe thread is alive.
const STUCK_REFRESH: Duration = Duration::from_millis(500);
/// The thread checks the deadline between operations and reports its own `timeout` (with the
/// timings it has, after cleaning up); the watchdog steps in this much later, for a thread stuck
/// inside one call.
const WATCHDOG_GRACE: Duration = Duration::from_millis(500);

// ---------------------------------------------------------------------------------------------
// Pure parts

/// The `result` for a failed system call, from its errno.
pub fn errno_result(error: &io::Error) -> StorageResult {
    let Some(raw) = error.raw_os_error() else {
        return match error.kind() {
            io::ErrorKind::PermissionDenied => StorageResult::permission_denied,
            io::ErrorKind::TimedOut => StorageResult::timeout,
            _ => StorageResult::error,
        };
    };
    match Errno::from_raw_os_error(raw) {
        Errno::NOSPC | Errno::DQUOT => StorageResult::enospc,
        Errno::ROFS => StorageResult::erofs,
        Errno::IO => StorageResult::eio,
        Errno::ACCESS | Errno::PERM => StorageResult::permission_denied,
        Errno::TIMEDOUT => StorageResult::timeout,
        _ => StorageResult::error,
    }
}

/// Whether a run may write: `size` bytes plus the reserve must be free.
pub fn enough_space(free: u64, size: u64, reserve: u64) -> bool {
    free >= size.saturating_add(reserve)
}

/// What one volume probe is asked to do.
#[derive(Debug, Clone)]
pub struct ProbeSpec {
    pub path: PathBuf,
    pub size: u64,
    pub block_size: usize,
    pub direct_io: bool,
    pub reserve: u64,
    pub sync_writes: u32,
}

impl ProbeSpec {
    pub fn new(volume: &StorageVolume, storage: &StorageConfig) -> Self {
        Self {
            path: volume.path.clone(),
            size: volume.size.0,
            block_size: usize::try_from(volume.block_size.0).expect("validated: at most 64MiB"),
            direct_io: volume.direct_io,
            reserve: storage.reserve.0,
            sync_writes: storage.sync_writes,
        }
    }
}

/// What a run does on its thread: [`probe_volume`] with the volume's spec, or a stand-in in the
/// unit tests of the watchdog.
type ProbeFn = dyn Fn(&OpClock, std::time::Instant, u64) -> StorageObservation + Send + Sync;

/// One volume: probes it and records what it saw.
pub struct StorageTarget {
    volume: String,
    path: PathBuf,
    probe: Arc<ProbeFn>,
    interval: Duration,
    timeout: Duration,
    metrics: StorageMetrics,
    /// The call in flight on the volume's probe thread.
    clock: Arc<OpClock>,
    /// One permit, held by the volume's probe thread (a run's, or the start-up cleanup's) until
    /// the thread returns, however long it hangs: there is never a second thread on a volume.
    thread: Arc<Semaphore>,
    runs: AtomicU64,
    health: Health,
}

impl std::fmt::Debug for StorageTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageTarget")
            .field("volume", &self.volume)
            .field("path", &self.path)
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .field("in_flight", &self.clock.in_flight())
            .finish_non_exhaustive()
    }
}

impl StorageTarget {
    pub fn new(volume: &StorageVolume, storage: &StorageConfig, metrics: StorageMetrics) -> Self {
        let spec = ProbeSpec::new(volume, storage);
        let path = spec.path.clone();
        Self::with_probe(
            &volume.name,
            path,
            storage.interval.get(),
            storage.timeout.get(),
            metrics,
            Arc::new(move |clock, deadline, seed| probe_volume(&spec, clock, deadline, seed)),
        )
    }

    fn with_probe(
        volume: &str,
        path: PathBuf,
        interval: Duration,
        timeout: Duration,
        metrics: StorageMetrics,
        probe: Arc<ProbeFn>,
    ) -> Self {
        metrics.add_volume(volume);
        Self {
            volume: volume.to_owned(),
            path,
            probe,
            interval,
            timeout,
            metrics,
            clock: Arc::default(),
            thread: Arc::new(Semaphore::new(1)),
            runs: AtomicU64::new(0),
            health: Health::default(),
        }
    }

    /// Takes over the probe thread of the target this one replaces (same volume, new settings,
    /// after a config reload): a thread still blocked on the volume keeps the volume's one
    /// permit, so the new target waits for it instead of starting a second, and the stuck gauge
    /// keeps following it.
    pub fn succeed(mut self, previous: &StorageTarget) -> Self {
        self.thread = previous.thread.clone();
        self.clock = previous.clock.clone();
        self
    }

    /// Removes what a crashed predecessor left, on the volume's one thread (a hung volume hangs
    /// it, the stuck gauge shows it, and the first runs wait for it and count as `timeout`).
    /// Call it before the target is scheduled.
    pub fn remove_leftovers(&self) {
        let Ok(permit) = self.thread.clone().try_acquire_owned() else {
            tracing::debug!(volume = %self.volume, "a probe thread already runs; no start-up cleanup");
            return;
        };
        let (path, volume) = (self.path.clone(), self.volume.clone());
        let work = {
            let path = path.clone();
            move |clock: &OpClock| remove_leftovers(&path, clock)
        };
        // Nobody waits for the result (the receiver is dropped at once): it goes to the log.
        drop(self.start_thread(permit, work, move |joined| match joined {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(
                %volume, dir = %path.join(PROBE_DIR).display(), entries = n,
                "removed leftovers of an earlier run"
            ),
            Ok(Err(e)) => tracing::debug!(%volume, error = %e, "no leftovers removed"),
            Err(e) => tracing::warn!(%volume, error = %e, "the start-up cleanup failed"),
        }));
    }

    /// Runs `work` on the volume's probe thread (`permit` is the volume's one permit; the thread
    /// keeps it until it returns) and watches it from the runtime: the stuck gauge follows the
    /// clock while the thread lives and drops to 0 when it ends. The result goes to the returned
    /// receiver, or to `late` when the receiver is gone or closed (the run already counted a
    /// timeout).
    fn start_thread<T: Send + 'static>(
        &self,
        permit: OwnedSemaphorePermit,
        work: impl FnOnce(&OpClock) -> T + Send + 'static,
        late: impl FnOnce(Result<T, JoinError>) + Send + 'static,
    ) -> oneshot::Receiver<Result<T, JoinError>> {
        let (tx, rx) = oneshot::channel();
        let clock = self.clock.clone();
        let mut job = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work(&clock)
        });
        let (clock, metrics, volume) = (
            self.clock.clone(),
            self.metrics.clone(),
            self.volume.clone(),
        );
        tokio::spawn(async move {
            let mut refresh = tokio::time::interval(STUCK_REFRESH);
            let joined = loop {
                tokio::select! {
                    joined = &mut job => break joined,
                    _ = refresh.tick() => {
                        metrics.set_stuck(&volume, clock.stuck_for().as_secs_f64());
                    }
                }
            };
            metrics.set_stuck(&volume, 0.0);
            if let Err(unclaimed) = tx.send(joined) {
                late(unclaimed);
            }
        });
        rx
    }

    fn seed(&self) -> u64 {
        let run = self.runs.fetch_add(1, Ordering::Relaxed);
        rand::random::<u64>() ^ run
    }

    async fn run_once(&self) {
        let deadline = later(Instant::now(), self.timeout);
        let watchdog = later(deadline, WATCHDOG_GRACE);
        // The volume's previous thread may still be in the kernel (or the start-up cleanup still
        // going): wait for it within this run's own time, and never start a second one.
        let permit =
            match tokio::time::timeout_at(watchdog, self.thread.clone().acquire_owned()).await {
                Ok(permit) => permit.expect("the semaphore is never closed"),
                Err(_) => return self.previous_still_blocked(),
            };
        if Instant::now() >= deadline {
            // It ended, but too late to probe within this run's timeout.
            drop(permit);
            return self.time_out(StorageObservation::timed_out(
                "the previous probe thread of the volume ended only at this run's timeout",
            ));
        }
        let (probe, seed) = (self.probe.clone(), self.seed());
        let thread_deadline = deadline.into_std();
        let (metrics, volume) = (self.metrics.clone(), self.volume.clone());
        let mut result = self.start_thread(
            permit,
            move |clock| probe(clock, thread_deadline, seed),
            move |joined| match joined {
                Ok(obs) => {
                    // Its timeout is counted; what it measured on the way still happened.
                    metrics.record_operations(&volume, &obs);
                    tracing::info!(
                        %volume, result = obs.result.as_str(),
                        "a stuck probe finished after its timeout"
                    );
                }
                Err(e) => tracing::warn!(
                    %volume, error = %e,
                    "a stuck probe thread failed after its timeout"
                ),
            },
        );
        let joined = match tokio::time::timeout_at(watchdog, &mut result).await {
            Ok(joined) => joined,
            Err(_) => {
                // From here on the thread's result goes to `late`, unless it was sent just now.
                result.close();
                match result.try_recv() {
                    Ok(joined) => Ok(joined),
                    Err(_) => {
                        let detail = self.clock.in_flight().map_or_else(
                            || "the run went past storage.timeout".to_owned(),
                            |op| op.describe(),
                        );
                        return self.time_out(StorageObservation::timed_out(detail));
                    }
                }
            }
        };
        let obs = match joined {
            Ok(Ok(obs)) => obs,
            Ok(Err(e)) => StorageObservation {
                result: StorageResult::error,
                detail: Some(format!("the probe thread failed: {e}")),
                ..StorageObservation::new()
            },
            Err(_) => StorageObservation {
                result: StorageResult::error,
                detail: Some("the probe thread's watchdog stopped".to_owned()),
                ..StorageObservation::new()
            },
        };
        self.record(&obs);
    }

    /// A run that could not start: the previous thread is still blocked at its own timeout.
    fn previous_still_blocked(&self) {
        let detail = match self.clock.in_flight() {
            Some(op) => format!(
                "the previous probe thread of the volume is still {}; not starting another",
                op.describe()
            ),
            None => {
                "the previous probe thread of the volume is still running; not starting another"
                    .to_owned()
            }
        };
        tracing::debug!(volume = %self.volume, %detail, "storage run skipped");
        self.time_out(StorageObservation::timed_out(detail));
    }

    /// Counts a timeout, with the stuck gauge refreshed first so that a scrape that sees the
    /// count sees how long the call has been hanging.
    fn time_out(&self, obs: StorageObservation) {
        self.metrics
            .set_stuck(&self.volume, self.clock.stuck_for().as_secs_f64());
        self.record(&obs);
    }

    fn record(&self, obs: &StorageObservation) {
        self.metrics.record(&self.volume, obs);
        let ok = obs.result == StorageResult::success;
        match self.health.update(ok) {
            Transition::StartedFailing { suppressed } => tracing::warn!(
                volume = %self.volume, path = %self.path.display(), result = obs.result.as_str(),
                detail = obs.detail.as_deref().unwrap_or(""), suppressed,
                "storage probe failing"
            ),
            Transition::Recovered { suppressed } => {
                tracing::info!(volume = %self.volume, suppressed, "storage probe recovered")
            }
            Transition::Unchanged => {}
        }
    }
}

impl Target for StorageTarget {
    fn probe(&self) -> &'static str {
        "storage"
    }

    fn describe(&self) -> String {
        format!("storage {} ({})", self.volume, self.path.display())
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    fn deadline(&self) -> Duration {
        // A run waits at most this long, for the previous thread and then for its own.
        self.timeout.saturating_add(WATCHDOG_GRACE)
    }

    fn run(self: Arc<Self>, _deadline: Instant) -> RunFuture {
        Box::pin(async move { self.run_once().await })
    }

    fn cut_off(&self) {
        // Only when the runtime was too busy to run the watchdog on time; the thread, if any,
        // goes on and its result goes to the log.
        self.time_out(StorageObservation::timed_out(
            "the run was cut off by the scheduler",
        ));
    }
}

#[cfg(test)]
mod tests;
