//! Whether each CSI driver is registered on this node, and the CSI watch's errors.

use super::*;

pub const CSI_REGISTERED: FamilyDoc = FamilyDoc {
    name: "netprobe_csi_node_driver_registered",
    kind: "gauge",
    labels: &["driver"],
    help: "For each CSIDriver in the cluster, 1 if this node's CSINode lists it (its node plugin registered with the kubelet), else 0",
};
pub const CSI_WATCH_ERRORS: FamilyDoc = FamilyDoc {
    name: "netprobe_csi_watch_errors_total",
    kind: "counter",
    labels: &["reason"],
    help: "Failed list or watch calls for CSIDrivers and this node's CSINode, by reason: forbidden (HTTP 403: the service account lacks an RBAC rule) or error (anything else); the last known state is kept meanwhile",
};

crate::observation::label_values! {
    /// Why a list or watch call failed: `forbidden` when the API server refused it (HTTP 403:
    /// the service account lacks an RBAC rule), `error` for anything else (unreachable,
    /// timeouts, 5xx), which retrying may cure.
    pub enum WatchErrorReason {
        forbidden,
        error,
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct WatchErrorLabels {
    reason: WatchErrorReason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct DriverLabels {
    driver: String,
}

/// CSI node registration.
#[derive(Debug, Clone)]
pub struct CsiMetrics {
    registered: Family<DriverLabels, Gauge>,
    errors: Family<WatchErrorLabels, Counter>,
}

impl CsiMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let this = Self {
            registered: Family::default(),
            errors: Family::default(),
        };
        register(registry, &CSI_REGISTERED, this.registered.clone());
        register(registry, &CSI_WATCH_ERRORS, this.errors.clone());
        for &reason in WatchErrorReason::ALL {
            let _ = this.errors.get_or_create(&WatchErrorLabels { reason });
        }
        this
    }

    /// Replaces the registration gauges: drivers no longer in the cluster lose their series.
    pub fn set(&self, status: &std::collections::BTreeMap<String, bool>) {
        self.registered.clear();
        for (driver, registered) in status {
            self.registered
                .get_or_create(&DriverLabels {
                    driver: driver.clone(),
                })
                .set(i64::from(*registered));
        }
    }

    /// Counts a failed call (`discovery::watch_error_reason`).
    pub fn watch_error(&self, reason: WatchErrorReason) {
        self.errors
            .get_or_create(&WatchErrorLabels { reason })
            .inc();
    }
}
