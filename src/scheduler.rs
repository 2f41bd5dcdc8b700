//! Runs every (prober, target) pair on its own interval.
//!
//! Each target gets its own task, so a slow or hung target never delays another. First runs are
//! spread over one interval, and every tick moves by a little jitter (without drifting), so a
//! DaemonSet on 2,000 nodes does not hit CoreDNS in lock step. A run is cut off at its hard
//! deadline; a tick that finds the previous run still going is counted as an overrun and skipped,
//! never queued.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::metrics::ProbeMetrics;

/// The shortest interval of any section.
pub const MIN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);
/// The longest interval of any section: a probe that runs less than daily tells nobody anything
/// in time, and with this bound no deadline or tick the scheduler computes can overflow.
pub const MAX_INTERVAL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// A future a target's run returns.
pub type RunFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// One (prober, target) pair. Running it probes and records the observation.
pub trait Target: Send + Sync + 'static {
    /// The prober kind (`dns`): the `probe` label of overruns.
    fn probe(&self) -> &'static str;
    /// What to call it in logs.
    fn describe(&self) -> String;
    fn interval(&self) -> Duration;
    /// How long one run may take at most. The run gets this deadline and should finish by it;
    /// the scheduler cuts it off shortly after.
    fn deadline(&self) -> Duration;
    /// Probes once, finishing by `deadline`, and records what it saw.
    fn run(self: Arc<Self>, deadline: Instant) -> RunFuture;
    /// Records a run that the scheduler had to cut off.
    fn cut_off(&self);
}

/// `at + d` without the panic of `Instant + Duration` on overflow: a time past what the clock
/// can represent is as good as never, so it becomes a year from `at`. Config durations are
/// bounded far below that; this keeps the arithmetic safe whatever feeds it.
pub fn later(at: Instant, d: Duration) -> Instant {
    at.checked_add(d).unwrap_or_else(|| {
        at.checked_add(Duration::from_secs(365 * 24 * 3600))
            .unwrap_or(at)
    })
}

/// How much later than the prober's own deadline the scheduler cuts a run off: the prober
/// reports its own timeout (with what it knows, like messages sent) unless it is truly stuck.
const CUT_OFF_GRACE: Duration = Duration::from_millis(250);

/// Identifies a scheduled target, to remove it later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TaskId(u64);

/// The set of running targets. Shared: discovery adds and removes targets while it runs.
#[derive(Debug)]
pub struct Scheduler {
    metrics: ProbeMetrics,
    tasks: Mutex<HashMap<TaskId, AbortHandle>>,
    next_id: AtomicU64,
}

impl Scheduler {
    pub fn new(metrics: ProbeMetrics) -> Self {
        Self {
            metrics,
            tasks: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        }
    }

    /// Starts probing a target. Must be called inside the tokio runtime.
    pub fn spawn(&self, target: Arc<dyn Target>) -> TaskId {
        self.metrics.add_probe(target.probe());
        let metrics = self.metrics.clone();
        let start = later(Instant::now(), spread(target.interval()));
        let task = tokio::spawn(drive(target, metrics, start));
        let id = TaskId(self.next_id.fetch_add(1, Ordering::Relaxed));
        self.lock().insert(id, task.abort_handle());
        id
    }

    /// Stops probing a target, cancelling its run in flight.
    pub fn remove(&self, id: TaskId) {
        if let Some(task) = self.lock().remove(&id) {
            task.abort();
        }
    }

    /// How many targets are scheduled.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Stops every target, cancelling runs in flight.
    pub fn shutdown(&self) {
        for (_, task) in self.lock().drain() {
            task.abort();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, AbortHandle>> {
        self.tasks.lock().expect("scheduler lock")
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A random first start within one interval (within a day: what the config allows at most; a
/// float product near `Duration::MAX` could round past it and panic).
fn spread(interval: Duration) -> Duration {
    interval.min(MAX_INTERVAL).mul_f64(rand::random::<f64>())
}

/// Up to ±5 % of the interval (at most ±1 s) around each tick.
fn jitter(interval: Duration) -> Duration {
    interval
        .min(MAX_INTERVAL)
        .mul_f64(0.05)
        .min(Duration::from_secs(1))
}

/// The longest a run may take and still be over before the next tick, jitter and the cut-off
/// grace included (two ticks can be as close as `interval - 2 * jitter`). A prober whose own
/// bound is "as long as there is time" (the libc-like DNS lookup) uses this as its deadline;
/// the interval itself would overlap the next run whenever the jitter brings it forward.
pub fn run_budget(interval: Duration) -> Duration {
    interval
        .saturating_sub(
            jitter(interval)
                .saturating_mul(2)
                .saturating_add(CUT_OFF_GRACE),
        )
        .max(interval / 2)
}

/// Aborts the run in flight when the driving task ends (shutdown or target removal).
struct RunInFlight(AbortHandle);

impl Drop for RunInFlight {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn drive(target: Arc<dyn Target>, metrics: ProbeMetrics, start: Instant) {
    let interval = target.interval();
    let max_jitter = jitter(interval);
    let mut tick = start;
    let mut in_flight: Option<(RunInFlight, tokio::task::JoinHandle<()>)> = None;
    loop {
        let offset = max_jitter.mul_f64(rand::random::<f64>());
        let at = if rand::random::<bool>() {
            later(tick, offset)
        } else {
            tick.checked_sub(offset).unwrap_or(tick)
        };
        tokio::time::sleep_until(at).await;
        tick = later(tick, interval);

        if let Some((_, handle)) = &in_flight
            && !handle.is_finished()
        {
            metrics.overrun(target.probe());
            tracing::debug!(target = %target.describe(), "previous run still going; skipped");
            continue;
        }
        let deadline = later(Instant::now(), target.deadline());
        let run = target.clone().run(deadline);
        let watched = target.clone();
        let handle = tokio::spawn(async move {
            if tokio::time::timeout_at(later(deadline, CUT_OFF_GRACE), run)
                .await
                .is_err()
            {
                tracing::debug!(target = %watched.describe(), "run cut off at its deadline");
                watched.cut_off();
            }
        });
        in_flight = Some((RunInFlight(handle.abort_handle()), handle));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::metrics::Metrics;

    /// A target whose runs take `run_for`, recording when each started and whether it was cut.
    struct Fake {
        interval: Duration,
        deadline: Duration,
        run_for: Duration,
        starts: Mutex<Vec<Instant>>,
        cut: AtomicUsize,
    }

    impl Target for Fake {
        fn probe(&self) -> &'static str {
            "fake"
        }
        fn describe(&self) -> String {
            "fake".into()
        }
        fn interval(&self) -> Duration {
            self.interval
        }
        fn deadline(&self) -> Duration {
            self.deadline
        }
        fn run(self: Arc<Self>, _deadline: Instant) -> RunFuture {
            Box::pin(async move {
                self.starts.lock().unwrap().push(Instant::now());
                tokio::time::sleep(self.run_for).await;
            })
        }
        fn cut_off(&self) {
            self.cut.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn fake(interval_ms: u64, deadline_ms: u64, run_ms: u64) -> Arc<Fake> {
        Arc::new(Fake {
            interval: Duration::from_millis(interval_ms),
            deadline: Duration::from_millis(deadline_ms),
            run_for: Duration::from_millis(run_ms),
            starts: Mutex::new(Vec::new()),
            cut: AtomicUsize::new(0),
        })
    }

    fn overruns(metrics: &Metrics) -> String {
        metrics
            .encode_openmetrics()
            .lines()
            .find(|l| l.starts_with("netprobe_probe_overruns_total{probe=\"fake\"}"))
            .unwrap_or_default()
            .to_owned()
    }

    /// Time is paused: the runtime advances the clock only when every task waits, so these
    /// tests are exact and take no wall time.
    #[tokio::test(start_paused = true)]
    async fn runs_every_interval_within_jitter() {
        let metrics = Metrics::new();
        let target = fake(1000, 500, 10);
        let scheduler = Scheduler::new(metrics.probes.clone());
        scheduler.spawn(target.clone());
        tokio::time::sleep(Duration::from_millis(10_500)).await;
        let starts = target.starts.lock().unwrap().clone();
        assert!((9..=11).contains(&starts.len()), "{} runs", starts.len());
        for pair in starts.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap >= Duration::from_millis(900) && gap <= Duration::from_millis(1100),
                "gap {gap:?}"
            );
        }
        assert_eq!(target.cut.load(Ordering::SeqCst), 0);
        assert_eq!(
            overruns(&metrics),
            "netprobe_probe_overruns_total{probe=\"fake\"} 0"
        );
        scheduler.shutdown();
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_run_is_cut_off_and_never_overlaps() {
        let metrics = Metrics::new();
        // Runs hang far past their deadline: each is cut at 300 ms + grace.
        let hung = fake(1000, 300, 3_600_000);
        let healthy = fake(1000, 300, 5);
        let scheduler = Scheduler::new(metrics.probes.clone());
        scheduler.spawn(hung.clone());
        scheduler.spawn(healthy.clone());
        tokio::time::sleep(Duration::from_millis(5_500)).await;
        let hung_runs = hung.starts.lock().unwrap().len();
        assert!((4..=6).contains(&hung_runs), "{hung_runs}");
        // Every run but possibly the one still inside its deadline was cut off, so none
        // overlapped the next tick.
        let cut = hung.cut.load(Ordering::SeqCst);
        assert!(
            cut + 1 >= hung_runs && cut <= hung_runs,
            "{cut} cut of {hung_runs}"
        );
        let overruns = metrics.encode_openmetrics();
        assert!(
            overruns.contains("netprobe_probe_overruns_total{probe=\"fake\"} 0"),
            "{overruns}"
        );
        // The healthy target kept its own pace beside the hung one.
        let healthy_runs = healthy.starts.lock().unwrap().len();
        assert!((4..=6).contains(&healthy_runs), "{healthy_runs}");
        assert_eq!(healthy.cut.load(Ordering::SeqCst), 0);
        scheduler.shutdown();
    }

    #[tokio::test(start_paused = true)]
    async fn runs_that_use_their_whole_budget_never_overrun() {
        let metrics = Metrics::new();
        // Every run takes its whole budget (a DNS lookup through resolv.conf whose servers do
        // not answer), at intervals with 5 % jitter: ticks come early as often as late.
        let budget = run_budget(Duration::from_millis(2000));
        assert!(budget < Duration::from_millis(2000 - 2 * 100));
        let full = fake(2000, budget.as_millis() as u64, 60_000);
        let scheduler = Scheduler::new(metrics.probes.clone());
        scheduler.spawn(full.clone());
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(full.starts.lock().unwrap().len() >= 28);
        assert_eq!(
            overruns(&metrics),
            "netprobe_probe_overruns_total{probe=\"fake\"} 0"
        );
        scheduler.shutdown();
    }

    #[tokio::test(start_paused = true)]
    async fn an_overrun_is_counted_not_queued() {
        let metrics = Metrics::new();
        // A deadline longer than the interval (a prober that cannot be cancelled behaves so).
        let slow = fake(1000, 2500, 2400);
        let scheduler = Scheduler::new(metrics.probes.clone());
        scheduler.spawn(slow.clone());
        tokio::time::sleep(Duration::from_millis(10_500)).await;
        let runs = slow.starts.lock().unwrap().len();
        let text = overruns(&metrics);
        let skipped: usize = text.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(runs <= 4, "{runs} runs");
        assert!(skipped >= 5, "{text}");
        scheduler.shutdown();
    }
}

#[cfg(test)]
mod bounds_tests {
    use super::*;

    #[test]
    fn time_arithmetic_saturates_instead_of_panicking() {
        let now = Instant::now();
        assert!(later(now, Duration::MAX) > now);
        assert_eq!(
            later(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
        assert!(spread(Duration::MAX) <= MAX_INTERVAL);
        assert_eq!(jitter(Duration::MAX), Duration::from_secs(1));
        assert!(run_budget(Duration::MAX) > Duration::ZERO);
    }
}

#[cfg(test)]
mod removal_tests {
    use super::*;
    use crate::metrics::Metrics;

    struct Counting(std::sync::atomic::AtomicUsize);

    impl Target for Counting {
        fn probe(&self) -> &'static str {
            "counting"
        }
        fn describe(&self) -> String {
            "counting".into()
        }
        fn interval(&self) -> Duration {
            Duration::from_millis(100)
        }
        fn deadline(&self) -> Duration {
            Duration::from_millis(50)
        }
        fn run(self: Arc<Self>, _deadline: Instant) -> RunFuture {
            Box::pin(async move {
                self.0.fetch_add(1, Ordering::SeqCst);
            })
        }
        fn cut_off(&self) {}
    }

    #[tokio::test(start_paused = true)]
    async fn a_removed_target_stops_running() {
        let metrics = Metrics::new();
        let scheduler = Scheduler::new(metrics.probes.clone());
        let kept = Arc::new(Counting(Default::default()));
        let removed = Arc::new(Counting(Default::default()));
        scheduler.spawn(kept.clone());
        let id = scheduler.spawn(removed.clone());
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        scheduler.remove(id);
        assert_eq!(scheduler.len(), 1);
        let at_removal = removed.0.load(Ordering::SeqCst);
        let kept_then = kept.0.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        assert_eq!(removed.0.load(Ordering::SeqCst), at_removal);
        assert!(kept.0.load(Ordering::SeqCst) >= kept_then + 8);
    }
}
