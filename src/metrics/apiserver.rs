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
    latest: Table<&'static str, Last>,
}

impl ApiserverMetrics {
    pub(super) fn register(registry: &mut Registry, detail: Detail) -> Self {
        let this = Self {
            detail,
            up: Family::default(),
            requests: Family::default(),
            duration: Family::new_with_constructor(network_histogram),
            latest: Table::default(),
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
        self.latest.add(&path);
    }

    /// Removes every series of a path that is no longer probed.
    pub fn remove_path(&self, path: &'static str) {
        self.up.remove(&PathLabels { path });
        self.latest.remove(&path);
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
        self.latest.set(
            &path,
            Last {
                result,
                ok: result == "success",
                seconds: phases.last().map(|(_, s)| *s),
                at: std::time::Instant::now(),
            },
        );
    }

    /// Every path and its last result.
    pub fn latest(&self) -> Vec<(&'static str, Option<Last>)> {
        self.latest.snapshot()
    }
}
