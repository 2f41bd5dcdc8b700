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

/// A pod's IPs (one per family on a dual-stack cluster), when it has one and is not on its way
/// out.
fn pod_ips(pod: &Pod) -> Option<(String, Vec<IpAddr>)> {
    let name = pod.metadata.name.clone()?;
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let ips = crate::discovery::kube::pod_ips(pod);
    if ips.is_empty() {
        return None;
    }
    Some((name, ips))
}

/// The pods the watch (`daemon::coredns`) has shown so far.
#[derive(Debug, Default)]
pub struct CorednsView {
    pods: Store<Vec<IpAddr>>,
}

impl CorednsView {
    pub fn event(&mut self, event: Event<Pod>) {
        self.pods.apply(event, pod_ips);
    }

    pub fn synced(&self) -> bool {
        self.pods.synced()
    }

    /// Every probe-able pod, sorted by name: once per IP family it has (the first address of
    /// each), so a dual-stack pod is asked over both.
    pub fn pods(&self, port: u16) -> Vec<CorednsPod> {
        let mut out = Vec::new();
        for (name, ips) in self.pods.iter() {
            let mut families = Vec::new();
            for ip in ips {
                let family = ip.is_ipv4();
                if !families.contains(&family) {
                    families.push(family);
                    out.push(CorednsPod {
                        name: name.clone(),
                        addr: SocketAddr::new(*ip, port),
                    });
                }
            }
        }
        out
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

    #[test]
    fn a_dual_stack_pod_is_asked_over_each_family() {
        let mut view = CorednsView::default();
        view.event(Event::Init);
        let mut dual = pod("coredns-a", Some("198.18.0.11"), false);
        dual.status.as_mut().expect("status").pod_ips = Some(
            ["198.18.0.11", "fd00::11", "fd00::12"]
                .into_iter()
                .map(|ip| k8s_openapi::api::core::v1::PodIP { ip: ip.into() })
                .collect(),
        );
        view.event(Event::InitApply(dual));
        view.event(Event::InitDone);
        assert_eq!(
            names(&view),
            ["198.18.0.11:53 coredns-a", "[fd00::11]:53 coredns-a"]
        );
    }
}
