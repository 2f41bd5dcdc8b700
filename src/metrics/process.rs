//! The prober's own health, read at each scrape: the standard `process_*` families (the names
//! and types every Prometheus client library exports, so existing dashboards work) and the
//! cgroup's CPU throttling, which tells when the prober's latencies include its own wait for CPU.
//!
//! A collector of our own rather than a crate: the ready-made collectors for prometheus-client
//! are built against older versions of it (0.23), and their start time is when the collector
//! was registered rather than the process's.

use std::path::PathBuf;
use std::sync::Mutex;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::*;
use crate::process::ProcRoot;
use crate::process::cgroup::{self, CpuBandwidth, CpuCgroup};

pub const PROCESS_CPU: FamilyDoc = FamilyDoc {
    name: "process_cpu_seconds_total",
    kind: "counter",
    labels: &[],
    help: "Total user and system CPU time spent in seconds (/proc/self/stat)",
};
pub const PROCESS_RESIDENT: FamilyDoc = FamilyDoc {
    name: "process_resident_memory_bytes",
    kind: "gauge",
    labels: &[],
    help: "Resident memory size in bytes (/proc/self/stat)",
};
pub const PROCESS_VIRTUAL: FamilyDoc = FamilyDoc {
    name: "process_virtual_memory_bytes",
    kind: "gauge",
    labels: &[],
    help: "Virtual memory size in bytes (/proc/self/stat)",
};
pub const PROCESS_OPEN_FDS: FamilyDoc = FamilyDoc {
    name: "process_open_fds",
    kind: "gauge",
    labels: &[],
    help: "Number of open file descriptors (/proc/self/fd)",
};
pub const PROCESS_MAX_FDS: FamilyDoc = FamilyDoc {
    name: "process_max_fds",
    kind: "gauge",
    labels: &[],
    help: "Maximum number of open file descriptors: the soft RLIMIT_NOFILE (/proc/self/limits); absent when unlimited",
};
pub const PROCESS_START: FamilyDoc = FamilyDoc {
    name: "process_start_time_seconds",
    kind: "gauge",
    labels: &[],
    help: "Start time of the process since unix epoch in seconds (/proc/self/stat and the boot time)",
};
pub const CGROUP_CPU_AVAILABLE: FamilyDoc = FamilyDoc {
    name: "netprobe_cgroup_cpu_available",
    kind: "gauge",
    labels: &[],
    help: "1 if this process's cgroup CPU controller was found (the cgroup v1 cpu hierarchy, or cgroup v2 with the cpu controller enabled; through /proc/self/cgroup and /proc/self/mountinfo) and read at this scrape; 0 if none is visible or it could not be read (logged with the reason), and the other netprobe_cgroup_cpu_* families are then absent",
};
pub const CGROUP_CPU_PERIODS: FamilyDoc = FamilyDoc {
    name: "netprobe_cgroup_cpu_periods_total",
    kind: "counter",
    labels: &[],
    help: "CPU bandwidth periods that elapsed while this process's cgroup had work to run (nr_periods of cpu.stat); they advance only under a CPU limit",
};
pub const CGROUP_CPU_THROTTLED_PERIODS: FamilyDoc = FamilyDoc {
    name: "netprobe_cgroup_cpu_throttled_periods_total",
    kind: "counter",
    labels: &[],
    help: "Periods in which the cgroup used up its CPU quota and was stopped until the next period (nr_throttled of cpu.stat). Its rate over that of netprobe_cgroup_cpu_periods_total is the share of periods in which a probe may have been kept waiting and counted the wait as latency",
};
pub const CGROUP_CPU_THROTTLED: FamilyDoc = FamilyDoc {
    name: "netprobe_cgroup_cpu_throttled_seconds_total",
    kind: "counter",
    labels: &[],
    help: "Time the cgroup's threads spent throttled, added up over threads (throttled_time of cgroup v1 cpu.stat, throttled_usec of v2)",
};
pub const CGROUP_CPU_QUOTA: FamilyDoc = FamilyDoc {
    name: "netprobe_cgroup_cpu_quota_seconds",
    kind: "gauge",
    labels: &[],
    help: "CPU time the cgroup may use per period (cpu.cfs_quota_us of cgroup v1, the first field of cpu.max of v2); over netprobe_cgroup_cpu_period_seconds, the CPU limit in cores. Absent when the cgroup has no CPU limit",
};
pub const CGROUP_CPU_PERIOD: FamilyDoc = FamilyDoc {
    name: "netprobe_cgroup_cpu_period_seconds",
    kind: "gauge",
    labels: &[],
    help: "Length of the CPU bandwidth period, in which the cgroup may use netprobe_cgroup_cpu_quota_seconds (cpu.cfs_period_us of cgroup v1, the second field of cpu.max of v2). Absent when the cgroup has no CPU limit",
};

/// Where the collector reads: this process (`/proc/self`, and the cgroup from "/") in
/// production, fixture trees in tests.
#[derive(Debug, Clone)]
pub struct ProcessSources {
    pub proc: ProcRoot,
    /// The root the cgroup is found from: its `proc/self/cgroup` and `proc/self/mountinfo`,
    /// and the mount points these name.
    pub fs_root: PathBuf,
}

impl ProcessSources {
    pub fn system() -> Self {
        Self {
            proc: ProcRoot::system(),
            fs_root: PathBuf::from("/"),
        }
    }
}

/// What the last scrape found of the cgroup, so that the log says when it changes rather than
/// at every scrape.
#[derive(Debug, Default)]
struct CgroupState {
    cgroup: Option<CpuCgroup>,
    /// The last failure logged, of the process figures and of the cgroup.
    process_error: Option<String>,
    cgroup_error: Option<String>,
}

#[derive(Debug)]
pub(super) struct ProcessCollector {
    sources: ProcessSources,
    state: Mutex<CgroupState>,
}

impl ProcessCollector {
    pub(super) fn new(sources: ProcessSources) -> Self {
        Self {
            sources,
            state: Mutex::default(),
        }
    }

    /// The cgroup's figures now: from the cgroup found before, or found again (a failed read
    /// may mean the process moved).
    fn bandwidth(&self, state: &mut CgroupState) -> Result<CpuBandwidth, cgroup::CgroupError> {
        if let Some(known) = &state.cgroup {
            if let Ok(bandwidth) = known.read() {
                return Ok(bandwidth);
            }
            state.cgroup = None;
        }
        let root = &self.sources.fs_root;
        let found = cgroup::find(&root.join("proc/self"), root)?;
        let bandwidth = found.read()?;
        tracing::info!(
            version = found.version.label(),
            dir = %found.dir.display(),
            quota_seconds = ?bandwidth.quota_seconds,
            period_seconds = bandwidth.period_seconds,
            "reading CPU throttling from this process's cgroup"
        );
        state.cgroup = Some(found);
        Ok(bandwidth)
    }
}

/// `Some(message)` the first time a failure is seen (or when it changes), `None` after.
fn changed(last: &mut Option<String>, now: Option<String>) -> Option<String> {
    if *last == now {
        return None;
    }
    *last = now.clone();
    now
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match self.sources.proc.read_process() {
            Ok(p) => {
                state.process_error = None;
                counter(
                    &mut encoder,
                    &PROCESS_CPU,
                    Some(Unit::Seconds),
                    p.cpu_seconds,
                )?;
                gauge(
                    &mut encoder,
                    &PROCESS_RESIDENT,
                    Some(Unit::Bytes),
                    p.resident_bytes,
                )?;
                gauge(
                    &mut encoder,
                    &PROCESS_VIRTUAL,
                    Some(Unit::Bytes),
                    p.virtual_bytes,
                )?;
                gauge(&mut encoder, &PROCESS_OPEN_FDS, None, p.open_fds)?;
                if let Some(max) = p.max_fds {
                    gauge(&mut encoder, &PROCESS_MAX_FDS, None, max)?;
                }
                gauge(
                    &mut encoder,
                    &PROCESS_START,
                    Some(Unit::Seconds),
                    p.start_time_seconds,
                )?;
            }
            Err(e) => {
                if let Some(m) = changed(&mut state.process_error, Some(chain(&e))) {
                    tracing::warn!(error = %m, "process_* metrics unavailable");
                }
            }
        }
        let bandwidth = self.bandwidth(&mut state);
        let error = bandwidth.as_ref().err().map(|e| chain(e));
        if let Some(m) = changed(&mut state.cgroup_error, error) {
            tracing::warn!(
                error = %m,
                "no CPU throttling metrics: the prober cannot tell when it is starved of CPU"
            );
        }
        gauge(
            &mut encoder,
            &CGROUP_CPU_AVAILABLE,
            None,
            i64::from(bandwidth.is_ok()),
        )?;
        if let Ok(b) = bandwidth {
            counter(&mut encoder, &CGROUP_CPU_PERIODS, None, b.periods)?;
            counter(
                &mut encoder,
                &CGROUP_CPU_THROTTLED_PERIODS,
                None,
                b.throttled_periods,
            )?;
            counter(
                &mut encoder,
                &CGROUP_CPU_THROTTLED,
                Some(Unit::Seconds),
                b.throttled_seconds,
            )?;
            // The period matters only under a quota: without one, both stay out of the scrape,
            // which every node pays for.
            if let Some(quota) = b.quota_seconds {
                gauge(&mut encoder, &CGROUP_CPU_QUOTA, Some(Unit::Seconds), quota)?;
                gauge(
                    &mut encoder,
                    &CGROUP_CPU_PERIOD,
                    Some(Unit::Seconds),
                    b.period_seconds,
                )?;
            }
        }
        Ok(())
    }
}

fn counter<N: prometheus_client::encoding::EncodeCounterValue>(
    encoder: &mut DescriptorEncoder,
    doc: &FamilyDoc,
    unit: Option<Unit>,
    value: N,
) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    let name = stem(doc, unit.as_ref());
    metric.encode(encoder.encode_descriptor(name, doc.help, unit.as_ref(), MetricType::Counter)?)
}

fn gauge<N: prometheus_client::encoding::EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    doc: &FamilyDoc,
    unit: Option<Unit>,
    value: N,
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    let name = stem(doc, unit.as_ref());
    metric.encode(encoder.encode_descriptor(name, doc.help, unit.as_ref(), MetricType::Gauge)?)
}

/// An error and its causes on one line, for the log.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
#[path = "process_tests.rs"]
mod tests;
