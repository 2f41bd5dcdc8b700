//! The CoreDNS pods to probe one by one (`dns.discover_coredns`), from a watch on their namespace
//! and label selector. Through the kube-dns Service a query lands on one replica at random, so a
//! single broken replica shows up only as an occasional failure; probing every pod directly names
//! it (`server="coredns/<pod>"`).
//!
//! A pod is probed when it has an IP and is not terminating, ready or not: a replica that is up
//! but failing its readiness check is exactly what the per-pod probes are for, and the alert on
//! them waits long enough (`for`) to ride out a rollout.

use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::Event;

use crate::discovery::store::Store;

/// One CoreDNS pod to ask directly.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CorednsPod {
    pub name: String,
    pub addr: SocketAddr,
}

/// A pod's IP, when it has one and is not on its way out.
fn pod_ip(pod: &Pod) -> Option<(String, IpAddr)> {
    let name = pod.metadata.name.clone()?;
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let ip = pod.status.as_ref()?.pod_ip.as_ref()?.parse().ok()?;
    Some((name, ip))
}

/// The pods the watch (`daemon::coredns`) has shown so far.
#[derive(Debug, Default)]
pub struct CorednsView {
    pods: Store<IpAddr>,
}

impl CorednsView {
    pub fn event(&mut self, event: Event<Pod>) {
        self.pods.apply(event, pod_ip);
    }

    pub fn synced(&self) -> bool {
        self.pods.synced()
    }

    /// Every probe-able pod, sorted by name.
    pub fn pods(&self, port: u16) -> Vec<CorednsPod> {
        self.pods
            .iter()
            .map(|(name, ip)| CorednsPod {
                name: name.clone(),
                addr: SocketAddr::new(*ip, port),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::PodStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    use super::*;

    fn pod(name: &str, ip: Option<&str>, terminating: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                deletion_timestamp: terminating
                    .then(|| Time("2026-11-26T00:00:00Z".parse().expect("a timestamp"))),
                ..ObjectMeta::default()
            },
            status: Some(PodStatus {
                pod_ip: ip.map(Into::into),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    fn names(view: &CorednsView) -> Vec<String> {
        view.pods(53)
            .into_iter()
            .map(|p| p.addr.to_string() + " " + &p.name)
            .collect()
    }

    #[test]
    fn pods_with_an_ip_and_not_terminating_are_probed() {
        let mut view = CorednsView::default();
        view.event(Event::Init);
        view.event(Event::InitApply(pod(
            "coredns-b",
            Some("198.18.0.12"),
            false,
        )));
        view.event(Event::InitApply(pod(
            "coredns-a",
            Some("198.18.0.11"),
            false,
        )));
        view.event(Event::InitApply(pod("coredns-pending", None, false)));
        assert!(
            !view.synced(),
            "nothing is published before the list completes"
        );
        view.event(Event::InitDone);
        assert!(view.synced());
        assert_eq!(
            names(&view),
            ["198.18.0.11:53 coredns-a", "198.18.0.12:53 coredns-b"]
        );

        // Terminating: dropped at once, before the pod object is gone.
        view.event(Event::Apply(pod("coredns-a", Some("198.18.0.11"), true)));
        // A new replica gets its IP.
        view.event(Event::Apply(pod(
            "coredns-pending",
            Some("198.18.0.13"),
            false,
        )));
        view.event(Event::Delete(pod("coredns-b", Some("198.18.0.12"), false)));
        assert_eq!(names(&view), ["198.18.0.13:53 coredns-pending"]);
    }

    #[test]
    fn a_relist_forgets_pods_deleted_while_away() {
        let mut view = CorednsView::default();
        view.event(Event::Init);
        view.event(Event::InitApply(pod("old", Some("198.18.0.11"), false)));
        view.event(Event::InitDone);
        view.event(Event::Init);
        view.event(Event::InitApply(pod("new", Some("198.18.0.12"), false)));
        assert_eq!(
            names(&view),
            ["198.18.0.11:53 old"],
            "the old set stays until the relist ends"
        );
        view.event(Event::InitDone);
        assert_eq!(names(&view), ["198.18.0.12:53 new"]);
    }
}
