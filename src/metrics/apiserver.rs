//! The API-server probe families, per path and IP family.

use super::*;

crate::observation::label_values! {
    /// The `path` label: how the probe reached the API server.
    pub enum ApiserverPath {
        /// The Service IP from the environment.
        direct,
        /// The Service name, through the pod's resolver.
        dns,
    }
}

crate::observation::label_values! {
    /// The `result` of an API-server probe.
    pub enum ApiserverResult {
        success,
        timeout,
        refused,
        reset,
        unreachable,
        dns_error,
        tls_error,
        http_error,
        permission_denied,
        error,
    }
}

impl From<NetFailure> for ApiserverResult {
    fn from(failure: NetFailure) -> Self {
        match failure {
            NetFailure::timeout => Self::timeout,
            NetFailure::refused => Self::refused,
            NetFailure::reset => Self::reset,
            NetFailure::unreachable => Self::unreachable,
            NetFailure::permission_denied => Self::permission_denied,
            NetFailure::error => Self::error,
        }
    }
}

/// One API-server target: a path over an IP family.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ApiserverKey {
    pub path: ApiserverPath,
    pub family: IpFamily,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ApiserverResultLabels {
    #[prometheus(flatten)]
    key: ApiserverKey,
    result: ApiserverResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ApiserverPhaseLabels {
    #[prometheus(flatten)]
    key: ApiserverKey,
    phase: Phase,
}

/// The API-server families.
#[derive(Debug, Clone)]
pub struct ApiserverMetrics {
    detail: Detail,
    up: Family<ApiserverKey, Gauge>,
    requests: Family<ApiserverResultLabels, Counter>,
    duration: HistogramFamily<ApiserverPhaseLabels>,
    latest: Table<ApiserverKey, Last>,
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

    /// Creates a target's success counter at 0. `up` appears with the first result: a 0 before
    /// any probe would read as a failing path on every start and rollout.
    pub fn add_target(&self, key: ApiserverKey) {
        let _ = self.requests.get_or_create(&ApiserverResultLabels {
            key,
            result: ApiserverResult::success,
        });
        self.latest.add(&key);
    }

    /// Removes every series of a target that is no longer probed.
    pub fn remove_target(&self, key: ApiserverKey) {
        self.up.remove(&key);
        self.latest.remove(&key);
        for &result in ApiserverResult::ALL {
            self.requests.remove(&ApiserverResultLabels { key, result });
        }
        for phase in [
            Phase::dns,
            Phase::connect,
            Phase::tls,
            Phase::first_byte,
            Phase::total,
        ] {
            self.duration.remove(&ApiserverPhaseLabels { key, phase });
        }
    }

    pub fn record(&self, key: ApiserverKey, result: ApiserverResult, phases: &[(Phase, f64)]) {
        self.requests
            .get_or_create(&ApiserverResultLabels { key, result })
            .inc();
        // Per node, dns, connect, tls and first_byte would make five histograms of each path.
        for (phase, seconds) in self.detail.kept_phases(phases) {
            self.duration
                .get_or_create(&ApiserverPhaseLabels { key, phase: *phase })
                .observe(*seconds);
        }
        self.up
            .get_or_create(&key)
            .set(i64::from(result == ApiserverResult::success));
        self.latest.set(
            &key,
            Last::now(
                result.as_str(),
                result == ApiserverResult::success,
                phases.last().map(|(_, s)| *s),
            ),
        );
    }

    /// Every target (path and family) and its last result.
    pub fn latest(&self) -> Vec<(ApiserverKey, Option<Last>)> {
        self.latest.snapshot()
    }
}
