//! The daemon's own: config loads and reloads, its memory estimate, its HTTP connections.

use super::*;

pub const CONFIG_RELOAD_SUCCESS: FamilyDoc = FamilyDoc {
    name: "netprobe_config_reload_success",
    kind: "gauge",
    labels: &[],
    help: "1 if the last load of the config file (at start, on SIGHUP, or after its content changed) succeeded, 0 if it failed and the previous config keeps running",
};
pub const CONFIG_RELOADS: FamilyDoc = FamilyDoc {
    name: "netprobe_config_reloads_total",
    kind: "counter",
    labels: &["result"],
    help: "Reloads of the config file, on SIGHUP or after its content changed, by result: success, or failure (unreadable or invalid; logged with the reason, and the previous config keeps running)",
};
pub const CONFIG_LAST_SUCCESS: FamilyDoc = FamilyDoc {
    name: "netprobe_config_last_reload_success_timestamp_seconds",
    kind: "gauge",
    labels: &[],
    help: "Unix time of the last successful load of the config (the start included)",
};
pub const MEMORY_ESTIMATE: FamilyDoc = FamilyDoc {
    name: "netprobe_memory_estimate_bytes",
    kind: "gauge",
    labels: &[],
    help: "Upper bound of this process's memory for the running config, as check-config prints it (base, targets, storage buffers); a container memory limit below it risks an OOM kill",
};

crate::observation::label_values! {
    /// The `result` of a config reload.
    pub enum ReloadResult {
        success,
        failure,
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ResultLabels {
    result: ReloadResult,
}

/// The config file's loads and what the running config costs.
#[derive(Debug, Clone)]
pub struct ConfigMetrics {
    reload_success: Gauge,
    reloads: Family<ResultLabels, Counter>,
    last_success: Gauge<f64, std::sync::atomic::AtomicU64>,
    memory_estimate: Gauge,
}

impl ConfigMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let this = Self {
            reload_success: Gauge::default(),
            reloads: Family::default(),
            last_success: Gauge::default(),
            memory_estimate: Gauge::default(),
        };
        for &result in ReloadResult::ALL {
            let _ = this.reloads.get_or_create(&ResultLabels { result });
        }
        register(
            registry,
            &CONFIG_RELOAD_SUCCESS,
            this.reload_success.clone(),
        );
        register(registry, &CONFIG_RELOADS, this.reloads.clone());
        register_with_unit(
            registry,
            &CONFIG_LAST_SUCCESS,
            Unit::Seconds,
            this.last_success.clone(),
        );
        register_with_unit(
            registry,
            &MEMORY_ESTIMATE,
            Unit::Bytes,
            this.memory_estimate.clone(),
        );
        this
    }

    /// A config is running: the one loaded at start, or a reload that succeeded (`reload`).
    pub fn loaded(&self, estimate_bytes: u64, reload: bool) {
        self.reload_success.set(1);
        if reload {
            self.reloads
                .get_or_create(&ResultLabels {
                    result: ReloadResult::success,
                })
                .inc();
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.last_success.set(now);
        self.memory_estimate
            .set(i64::try_from(estimate_bytes).unwrap_or(i64::MAX));
    }

    /// A reload failed; the previous config keeps running.
    pub fn reload_failed(&self) {
        self.reload_success.set(0);
        self.reloads
            .get_or_create(&ResultLabels {
                result: ReloadResult::failure,
            })
            .inc();
    }
}

crate::observation::label_values! {
    /// Why the HTTP server closed a connection itself (the `reason` label).
    pub enum CloseReason {
        header_timeout,
        head_too_large,
        evicted,
        refused,
        send_deadline,
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct CloseReasonLabels {
    reason: CloseReason,
}

/// The HTTP server's own connections.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    connections: Gauge,
    closed: Family<CloseReasonLabels, Counter>,
}

impl HttpMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let this = Self {
            connections: Gauge::default(),
            closed: Family::default(),
        };
        register(registry, &HTTP_CONNECTIONS, this.connections.clone());
        register(registry, &HTTP_CONNECTIONS_CLOSED, this.closed.clone());
        // Each reason appears with its first close: no alert reads these (they say why a client
        // was cut off), and five zeros on every healthy node are series for nothing.
        this
    }

    pub fn set_connections(&self, open: usize) {
        self.connections
            .set(i64::try_from(open).unwrap_or(i64::MAX));
    }

    pub fn closed(&self, reason: CloseReason) {
        self.closed
            .get_or_create(&CloseReasonLabels { reason })
            .inc();
    }
}
