//! What Prometheus and the Alertmanager say while a fault is in place: alerts firing, naming
//! the culprit and no one else, and at most a few notifications.

use std::time::{Duration, Instant};

use crate::alertmanager::Alertmanager;
use crate::prometheus::{Active, Prometheus, rules_state};
use crate::util::{Checks, poll_every};

use super::discovery::{PodDiscovery, prometheus_config, prometheus_token};
use super::helm::chart_rules;
use super::{AM_SCALE, Cluster, EVERY, GROUP_INTERVAL, WAIT, log};

/// A Prometheus evaluating the chart's rules over every kube-netprobe pod of the cluster, and
/// the Alertmanager it sends to: started, and every pod scraped, by [`Watch::start`].
pub(super) struct Watch {
    pub(super) prom: Prometheus,
    pub(super) am: Alertmanager,
    _discovery: PodDiscovery,
    _dir: tempfile::TempDir,
}

impl Watch {
    pub(super) fn start(cluster: &Cluster) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = prometheus_token(cluster, dir.path());
        let discovery = PodDiscovery::start(cluster, &token);
        let am = Alertmanager::start(AM_SCALE);
        let prom = Prometheus::start(
            &(prometheus_config(&discovery) + &am.prometheus_alerting()),
            &[("kube-netprobe.yaml".to_string(), chart_rules())],
        );
        poll_every(
            "Prometheus to discover and scrape every pod",
            WAIT,
            EVERY,
            || {
                let up = prom.query("up{job=\"kube-netprobe\"} == 1")?;
                let nodes: Vec<&str> = up
                    .iter()
                    .filter_map(|s| s["metric"]["node"].as_str())
                    .collect();
                if nodes.len() == cluster.nodes.len() {
                    Ok(())
                } else {
                    Err(format!("targets up on {nodes:?}"))
                }
            },
        );
        Watch {
            prom,
            am,
            _discovery: discovery,
            _dir: dir,
        }
    }
}

/// Alerts in state `firing`.
fn firing(prom: &Prometheus) -> Vec<Active> {
    match rules_state(prom) {
        Ok((active, _, _)) => active.into_iter().filter(|a| a.state == "firing").collect(),
        Err(e) => panic!("reading /api/v1/rules: {e}"),
    }
}

fn describe(alerts: &[Active]) -> String {
    if alerts.is_empty() {
        return "(none)".into();
    }
    alerts.iter().map(|a| format!("\n    {a}")).collect()
}

/// Waits until an alert named `name` fires with all of `labels`; returns every firing alert.
pub(super) fn wait_firing(prom: &Prometheus, name: &str, labels: &[(&str, &str)]) -> Vec<Active> {
    poll_every(
        &format!("{name} {labels:?} to fire"),
        WAIT,
        Duration::from_secs(2),
        || {
            let now = firing(prom);
            if now
                .iter()
                .any(|a| a.name == name && labels.iter().all(|(k, v)| a.label(k) == *v))
            {
                Ok(now)
            } else {
                Err(describe(&now))
            }
        },
    )
}

/// Waits until no alert named `name` with all of `labels` is firing or pending.
pub(super) fn wait_resolved(prom: &Prometheus, name: &str, labels: &[(&str, &str)]) {
    poll_every(
        &format!("{name} {labels:?} to resolve"),
        WAIT,
        Duration::from_secs(2),
        || {
            let active = match rules_state(prom) {
                Ok((active, _, _)) => active,
                Err(e) => return Err(e),
            };
            let still: Vec<Active> = active
                .into_iter()
                .filter(|a| a.name == name && labels.iter().all(|(k, v)| a.label(k) == *v))
                .collect();
            if still.is_empty() {
                Ok(())
            } else {
                Err(describe(&still))
            }
        },
    );
}

/// Waits until nothing fires after a fault is healed, but what still looks back at it: the SLO
/// burn-rate alerts (windows of 5 minutes to 3 days: the budget spent stays spent) and the
/// [`WINDOWED`] alerts naming a culprit of this or an earlier scenario (DNSLookupsAtFiveSeconds
/// keeps counting the lookups that took 5 s during the fault for 15 minutes).
pub(super) fn wait_quiet(prom: &Prometheus, after: &str, earlier: &[String], culprit: &str) {
    let mut culprits: Vec<&str> = earlier.iter().map(String::as_str).collect();
    culprits.push(culprit);
    poll_every(
        &format!("every alert to resolve after {after}"),
        WAIT,
        Duration::from_secs(2),
        || {
            let now: Vec<Active> = firing(prom)
                .into_iter()
                .filter(|a| {
                    let tail = WINDOWED.contains(&a.name.as_str()) && names(a, &culprits);
                    !(a.slo || tail)
                })
                .collect();
            if now.is_empty() {
                Ok(())
            } else {
                Err(describe(&now))
            }
        },
    );
}

/// Watches the alerts for `span` while `during` runs (it is called every 2 s and returns true
/// once its work is done); fails if any alert fires.
pub(super) fn nothing_fires(
    prom: &Prometheus,
    what: &str,
    span: Duration,
    mut during: impl FnMut() -> bool,
) {
    let end = Instant::now() + span;
    let mut done = false;
    while Instant::now() < end || !done {
        let now = firing(prom);
        assert!(now.is_empty(), "{what} raised alerts:{}", describe(&now));
        if !done {
            done = during();
        }
        assert!(
            Instant::now() < end + WAIT,
            "{what} did not finish within {WAIT:?}"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// A fault in place: undone when dropped, also when a check panics, so the next scenario (and
/// the next test) starts from a healthy cluster.
pub(super) struct Fault<'a> {
    heal: Box<dyn FnMut() + 'a>,
    /// When the fault was made (Unix seconds): alerts active since before are another
    /// incident's.
    since: f64,
}

impl<'a> Fault<'a> {
    pub(super) fn new(make: impl FnOnce(), heal: impl FnMut() + 'a) -> Self {
        let since = unix_now();
        make();
        Self {
            heal: Box::new(heal),
            since,
        }
    }

    /// Alerts this fault raised: firing, and gone pending after it was made.
    pub(super) fn raised(&self, alerts: &[Active]) -> Vec<Active> {
        alerts
            .iter()
            .filter(|a| a.active_at >= self.since - 1.0)
            .cloned()
            .collect()
    }
}

impl Drop for Fault<'_> {
    fn drop(&mut self) {
        (self.heal)();
    }
}

/// Checks (into `checks`) the notifications the Alertmanager sent for `fault`: at least one,
/// at most 3, the first naming one of `culprits` (in `node`, `target_node` or `server`). Waits
/// for the first, then one scaled group_interval more, so that the alerts joining a group
/// later are counted too.
pub(super) fn pages(checks: &mut Checks, am: &Alertmanager, fault: &Fault, culprits: &[&str]) {
    let first = poll_every("the Alertmanager's first notification", WAIT, EVERY, || {
        am.firing_since(fault.since)
            .first()
            .map(|n| n.received)
            .ok_or_else(|| "none yet".to_string())
    });
    let until = first + GROUP_INTERVAL.as_secs_f64() + 4.0;
    std::thread::sleep(Duration::from_secs_f64((until - unix_now()).max(0.0)));
    let sent = am.firing_since(fault.since);
    let shown: Vec<String> = sent.iter().map(ToString::to_string).collect();
    log(format!(
        "{} notification(s):\n    {}",
        sent.len(),
        shown.join("\n    ")
    ));
    checks.that(
        (1..=3).contains(&sent.len()),
        format!(
            "{} notifications, want 1 to 3:\n    {}",
            sent.len(),
            shown.join("\n    ")
        ),
    );
    if let Some(n) = sent.first() {
        checks.that(
            n.alerts.iter().any(|a| {
                ["node", "target_node", "server"]
                    .iter()
                    .any(|k| culprits.contains(&a.label(k)))
            }),
            format!("the first notification names none of {culprits:?}: {n}"),
        );
    }
}

pub(super) fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

/// Whether an alert names one of `culprits` in its `node`, `target_node` or `server` label.
fn names(a: &Active, culprits: &[&str]) -> bool {
    [a.label("node"), a.label("target_node"), a.label("server")]
        .iter()
        .any(|n| culprits.contains(n))
}

/// Alerts over a window of 10 to 15 minutes: they go pending when enough of the window holds
/// a fault, which can be after the next fault was made, and keep naming the earlier culprit.
const WINDOWED: &[&str] = &[
    "DNSLatencyHigh",
    "DNSLookupsAtFiveSeconds",
    "KubeNetprobeProbeOverruns",
];

/// Fails (into `checks`) for every non-SLO alert `fault` raised that names none of `culprits`,
/// except windowed alerts still naming an `earlier` scenario's culprit.
pub(super) fn only_culprits_named(
    checks: &mut Checks,
    fault: &Fault,
    alerts: &[Active],
    culprits: &[&str],
    earlier: &[String],
) {
    let earlier: Vec<&str> = earlier.iter().map(String::as_str).collect();
    for a in fault.raised(alerts) {
        let tail = WINDOWED.contains(&a.name.as_str()) && names(&a, &earlier);
        checks.that(
            a.slo || tail || names(&a, culprits),
            format!("an alert naming none of {culprits:?}: {a}"),
        );
    }
}
