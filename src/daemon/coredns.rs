//! Follows the CoreDNS pods of `dns.discover_coredns`: watches their namespace and label
//! selector, turns what it sees into pods to probe (`discovery::coredns`), publishes them to the
//! DNS probes, and counts the watch's failures in `netprobe_discovery_errors_total`.

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use tokio::sync::watch;

use crate::config::CorednsDiscovery;
use crate::discovery;
use crate::discovery::coredns::{CorednsPod, CorednsView};
use crate::metrics::PeerMetrics;
use crate::probe::{Health, Transition};

/// The `source` label of this watch's errors in `netprobe_discovery_errors_total`.
pub const SOURCE: &str = "coredns";

/// Watches the CoreDNS pods until the process ends, publishing them on `tx` whenever they change.
/// Never returns an error: failures are counted (`source="coredns"`) and retried with backoff, and
/// the last known pods stay probed meanwhile.
pub async fn run(
    config: CorednsDiscovery,
    client: kube::Client,
    tx: watch::Sender<Vec<CorednsPod>>,
    metrics: PeerMetrics,
) {
    let pods = watcher::watcher(
        Api::<Pod>::namespaced(client, &config.namespace),
        watcher::Config::default().labels(&config.selector),
    )
    .default_backoff();
    tokio::pin!(pods);
    let mut view = CorednsView::default();
    let health = Health::default();
    let mut warned_empty = false;
    while let Some(event) = pods.next().await {
        match event {
            Ok(event) => {
                if matches!(health.update(true), Transition::Recovered { .. }) {
                    tracing::info!(source = SOURCE, "CoreDNS discovery recovered");
                }
                view.event(event);
            }
            Err(e) => {
                metrics.discovery_error(SOURCE, discovery::error_reason(&e));
                if matches!(health.update(false), Transition::StartedFailing { .. }) {
                    discovery::log_failing(
                        &format!("pods in {} ({})", config.namespace, config.selector),
                        &e,
                        "CoreDNS discovery keeps probing the last known CoreDNS pods and retries with backoff",
                    );
                }
            }
        }
        if view.synced() {
            let pods = view.pods(config.port);
            // A selector that matches nothing would otherwise look like a quiet success.
            if pods.is_empty() != warned_empty {
                warned_empty = pods.is_empty();
                if warned_empty {
                    tracing::warn!(
                        namespace = %config.namespace, selector = %config.selector,
                        "dns.discover_coredns: no pod with an IP matches the selector in the namespace; no CoreDNS pod is probed directly"
                    );
                }
            }
            tx.send_if_modified(|current| {
                if *current == pods {
                    false
                } else {
                    *current = pods;
                    true
                }
            });
        }
    }
}
