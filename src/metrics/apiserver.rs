//! The API-server probe families, per path.

use super::*;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct PathLabels {
    path: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct PathResultLabels {
    path: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct PathPhaseLabels {
    path: &'static str,
    phase: &'static str,
}

/// The API-server families.
#[derive(Debug, Clone)]
pub struct ApiserverMetrics {
    detail: Detail,
    up: Family<PathLabels, Gauge>,
    requests: Family<PathResultLabels, Counter>,
    duration: HistogramFamily<PathPhaseLabels>,
}

impl ApiserverMetrics {
    pub(super) fn register(registry: &mut Registry, detail: Detail) -> Self {
        let this = Self {
            detail,
            up: Family::default(),
            requests: Family::default(),
            duration: Family::new_with_constructor(network_histogram),
        };
        register(registry, &APISERVER_UP, this.up.clone());
        register(registry, &APISERVER_REQUESTS, this.requests.clone());
        register_with_unit(
            registry,
            &APISERVER_DURATION,
            Unit::Seconds,
            this.duration.clone(),
        );
        this
    }

    /// Creates a path's success counter at 0. `up` appears with the first result: a 0 before
    /// any probe would read as a failing path on every start and rollout.
    pub fn add_path(&self, path: &'static str) {
        let _ = self.requests.get_or_create(&PathResultLabels {
            path,
            result: "success",
        });
    }

    /// Removes every series of a path that is no longer probed.
    pub fn remove_path(&self, path: &'static str) {
        self.up.remove(&PathLabels { path });
        for result in crate::observation::apiserver::RESULTS {
            self.requests.remove(&PathResultLabels { path, result });
        }
        for phase in ["dns", "connect", "tls", "first_byte", "total"] {
            self.duration.remove(&PathPhaseLabels { path, phase });
        }
    }

    pub fn record(&self, path: &'static str, result: &'static str, phases: &[(&'static str, f64)]) {
        self.requests
            .get_or_create(&PathResultLabels { path, result })
            .inc();
        // Per node, dns, connect, tls and first_byte would make five histograms of each path.
        for (phase, seconds) in self.detail.kept_phases(phases) {
            self.duration
                .get_or_create(&PathPhaseLabels { path, phase })
                .observe(*seconds);
        }
        self.up
            .get_or_create(&PathLabels { path })
            .set(i64::from(result == "success"));
    }
}
