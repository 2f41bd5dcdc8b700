//! Pods and Nodes as peer discovery decodes them: only the fields it keeps.
//!
//! k8s-openapi's `Pod` and `Node` decode every field of an object, `managedFields` included,
//! which on a real cluster is several kilobytes of small strings and maps per object; a list of
//! 5,000 of them is megabytes of allocations that are freed at once but leave the allocator's
//! heap fragmented (RSS stays up). These types read the same JSON and skip everything else
//! without allocating: a pod's node, IPs, `Ready` and `ContainersReady` conditions and deletion
//! timestamp; a node's `unschedulable` and `Ready` condition; and of the metadata only what the
//! watcher needs (name, namespace, resourceVersion).
//!
//! Decoding is lenient where the full types would not matter: an address that does not parse is
//! left out (one bad pod must not fail a whole list page and with it discovery), a condition of
//! another type or status is ignored.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope};
use kube::core::ObjectMeta;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// A pod, as much of it as discovery keeps.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(from = "PodWire")]
pub struct SlimPod {
    /// Only `name`, `namespace`, `resourceVersion` and `deletionTimestamp` are filled in.
    pub metadata: ObjectMeta,
    /// `spec.nodeName`: unset until the pod is scheduled.
    pub node_name: Option<String>,
    /// Every family of `status.podIPs`, else `status.podIP` (older API servers).
    pub ips: Vec<IpAddr>,
    /// The `Ready` condition is `True`.
    pub ready: bool,
    /// The `ContainersReady` condition is `True`.
    pub containers_ready: bool,
}

impl SlimPod {
    /// Whether the pod is on its way out (`deletionTimestamp` set).
    pub fn terminating(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }
}

/// A node, as much of it as discovery keeps.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(from = "NodeWire")]
pub struct SlimNode {
    /// Only `name`, `resourceVersion` and `deletionTimestamp` are filled in.
    pub metadata: ObjectMeta,
    /// `spec.unschedulable`: cordoned.
    pub unschedulable: bool,
    /// The `Ready` condition is `True`.
    pub ready: bool,
}

impl kube::Resource for SlimPod {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "Pod".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "pods".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl kube::Resource for SlimNode {
    type DynamicType = ();
    type Scope = ClusterResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "Node".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "nodes".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

// What is read off the wire; any other field is skipped by serde without being kept.

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct MetaWire {
    name: Option<String>,
    namespace: Option<String>,
    resource_version: Option<String>,
    deletion_timestamp: Option<Time>,
}

impl From<MetaWire> for ObjectMeta {
    fn from(m: MetaWire) -> Self {
        ObjectMeta {
            name: m.name,
            namespace: m.namespace,
            resource_version: m.resource_version,
            deletion_timestamp: m.deletion_timestamp,
            ..ObjectMeta::default()
        }
    }
}

#[derive(Deserialize)]
struct PodWire {
    metadata: Option<MetaWire>,
    spec: Option<PodSpecWire>,
    status: Option<PodStatusWire>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodSpecWire {
    node_name: Option<String>,
}

#[derive(Deserialize)]
struct PodStatusWire {
    #[serde(rename = "podIP")]
    pod_ip: Option<Ip>,
    #[serde(rename = "podIPs")]
    pod_ips: Option<Vec<PodIpWire>>,
    conditions: Option<Vec<ConditionWire>>,
}

#[derive(Deserialize)]
struct PodIpWire {
    ip: Option<Ip>,
}

impl From<PodWire> for SlimPod {
    fn from(pod: PodWire) -> Self {
        let status = pod.status;
        let mut ips: Vec<IpAddr> = status
            .as_ref()
            .and_then(|s| s.pod_ips.as_ref())
            .map(|ips| {
                ips.iter()
                    .filter_map(|ip| ip.ip.and_then(|ip| ip.0))
                    .collect()
            })
            .unwrap_or_default();
        if ips.is_empty()
            && let Some(ip) = status.as_ref().and_then(|s| s.pod_ip).and_then(|ip| ip.0)
        {
            ips.push(ip);
        }
        let conditions = status.and_then(|s| s.conditions).unwrap_or_default();
        SlimPod {
            metadata: pod.metadata.map(Into::into).unwrap_or_default(),
            node_name: pod.spec.and_then(|s| s.node_name),
            ips,
            ready: is_true(&conditions, ConditionType::Ready),
            containers_ready: is_true(&conditions, ConditionType::ContainersReady),
        }
    }
}

#[derive(Deserialize)]
struct NodeWire {
    metadata: Option<MetaWire>,
    spec: Option<NodeSpecWire>,
    status: Option<NodeStatusWire>,
}

#[derive(Deserialize)]
struct NodeSpecWire {
    unschedulable: Option<bool>,
}

#[derive(Deserialize)]
struct NodeStatusWire {
    conditions: Option<Vec<ConditionWire>>,
}

impl From<NodeWire> for SlimNode {
    fn from(node: NodeWire) -> Self {
        let conditions = node.status.and_then(|s| s.conditions).unwrap_or_default();
        SlimNode {
            metadata: node.metadata.map(Into::into).unwrap_or_default(),
            unschedulable: node.spec.and_then(|s| s.unschedulable).unwrap_or(false),
            ready: is_true(&conditions, ConditionType::Ready),
        }
    }
}

/// One entry of `status.conditions`: its type and status read as names, without allocating.
#[derive(Deserialize)]
struct ConditionWire {
    #[serde(rename = "type")]
    kind: ConditionType,
    status: ConditionStatus,
}

#[derive(Deserialize, PartialEq, Eq, Clone, Copy)]
enum ConditionType {
    Ready,
    ContainersReady,
    #[serde(other)]
    Other,
}

#[derive(Deserialize, PartialEq, Eq)]
enum ConditionStatus {
    True,
    #[serde(other)]
    Other,
}

fn is_true(conditions: &[ConditionWire], kind: ConditionType) -> bool {
    conditions
        .iter()
        .any(|c| c.kind == kind && c.status == ConditionStatus::True)
}

/// An IP address as the API server writes it, or `None` when it does not parse (left out, not an
/// error). Parsed from the borrowed text: no string is allocated.
#[derive(Clone, Copy)]
struct Ip(Option<IpAddr>);

impl<'de> Deserialize<'de> for Ip {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IpVisitor;
        impl Visitor<'_> for IpVisitor {
            type Value = Ip;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an IP address")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Ip, E> {
                Ok(Ip(text.parse().ok()))
            }
        }
        deserializer.deserialize_str(IpVisitor)
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Node, Pod};
    use kube::Resource;

    use super::*;

    /// A pod as a real API server returns it, managed fields and all.
    fn full_pod() -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "kube-netprobe-x7k2p", "namespace": "kube-netprobe",
                "uid": "0b0f3c1e-7d0e-4a43-9f0b-2f1f8d3b9a10", "resourceVersion": "48213",
                "creationTimestamp": "2026-11-26T10:00:00Z",
                "deletionTimestamp": "2026-11-26T10:05:00Z",
                "labels": { "app.kubernetes.io/name": "kube-netprobe" },
                "ownerReferences": [{ "apiVersion": "apps/v1", "kind": "DaemonSet",
                    "name": "kube-netprobe", "uid": "1", "controller": true }],
                "managedFields": [{ "manager": "kubelet", "operation": "Update",
                    "apiVersion": "v1", "fieldsType": "FieldsV1",
                    "fieldsV1": { "f:status": { "f:conditions": { "k:{\"type\":\"Ready\"}": {} } } } }]
            },
            "spec": {
                "nodeName": "node-a",
                "containers": [{ "name": "netprobe", "image": "kube-netprobe:1",
                    "ports": [{ "containerPort": 9753, "protocol": "TCP" }] }],
                "tolerations": [{ "operator": "Exists" }]
            },
            "status": {
                "phase": "Running", "podIP": "198.18.0.7",
                "podIPs": [{ "ip": "198.18.0.7" }, { "ip": "fd00::7" }],
                "conditions": [
                    { "type": "Initialized", "status": "True" },
                    { "type": "Ready", "status": "False", "reason": "ContainersNotReady",
                      "lastTransitionTime": "2026-11-26T10:01:00Z" },
                    { "type": "ContainersReady", "status": "True" },
                    { "type": "PodScheduled", "status": "True" }
                ],
                "containerStatuses": [{ "name": "netprobe", "ready": true, "restartCount": 0,
                    "image": "kube-netprobe:1", "imageID": "", "state": { "running": {} } }]
            }
        })
    }

    #[test]
    fn a_pod_keeps_its_node_ips_conditions_and_deletion() {
        let pod: SlimPod = serde_json::from_value(full_pod()).unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("kube-netprobe-x7k2p"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("kube-netprobe"));
        assert_eq!(pod.metadata.resource_version.as_deref(), Some("48213"));
        assert!(pod.terminating());
        assert_eq!(pod.node_name.as_deref(), Some("node-a"));
        assert_eq!(
            pod.ips,
            [
                "198.18.0.7".parse::<IpAddr>().unwrap(),
                "fd00::7".parse().unwrap()
            ]
        );
        assert!(!pod.ready);
        assert!(pod.containers_ready);
        // Nothing else is kept.
        assert!(pod.metadata.labels.is_none() && pod.metadata.managed_fields.is_none());
        assert_eq!(SlimPod::kind(&()), "Pod");
        assert_eq!(
            SlimPod::url_path(&(), Some("kube-netprobe")),
            "/api/v1/namespaces/kube-netprobe/pods"
        );
    }

    #[test]
    fn it_reads_what_k8s_openapi_writes() {
        // The same object through k8s-openapi's own types: nothing the slim type reads is lost
        // or renamed on the way.
        let full: Pod = serde_json::from_value(full_pod()).unwrap();
        let text = serde_json::to_string(&full).unwrap();
        let pod: SlimPod = serde_json::from_str(&text).unwrap();
        assert_eq!(pod, serde_json::from_value(full_pod()).unwrap());

        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "node-a", "resourceVersion": "7" },
            "spec": { "unschedulable": true },
            "status": { "conditions": [{ "type": "Ready", "status": "True" }] }
        }))
        .unwrap();
        let slim: SlimNode = serde_json::from_str(&serde_json::to_string(&node).unwrap()).unwrap();
        assert_eq!(slim.metadata.name.as_deref(), Some("node-a"));
        assert_eq!(slim.metadata.resource_version.as_deref(), Some("7"));
        assert!(slim.unschedulable && slim.ready);
        assert_eq!(SlimNode::url_path(&(), None), "/api/v1/nodes");
    }

    #[test]
    fn an_older_api_server_gives_only_pod_ip() {
        let pod: SlimPod = serde_json::from_str(
            r#"{"metadata":{"name":"p"},"spec":{"nodeName":"n"},
                "status":{"podIP":"198.18.0.9","conditions":[{"type":"Ready","status":"True"}]}}"#,
        )
        .unwrap();
        assert_eq!(pod.ips, ["198.18.0.9".parse::<IpAddr>().unwrap()]);
        assert!(pod.ready && !pod.containers_ready && !pod.terminating());
    }

    #[test]
    fn bad_or_missing_parts_leave_the_field_out_instead_of_failing_the_object() {
        // A pending pod: no node, no status.
        let pending: SlimPod =
            serde_json::from_str(r#"{"metadata":{"name":"p"},"spec":{"nodeName":null}}"#).unwrap();
        assert_eq!(pending.node_name, None);
        assert!(pending.ips.is_empty() && !pending.ready);

        let odd: SlimPod = serde_json::from_str(
            r#"{"metadata":{"name":"p"},"spec":{"nodeName":"n"},
                "status":{"podIPs":[{"ip":"not-an-ip"},{"ip":"198.18.0.3"}],
                          "conditions":[{"type":"Ready","status":"Unknown"},
                                        {"type":"SomethingNew","status":"True"}]}}"#,
        )
        .unwrap();
        assert_eq!(odd.ips, ["198.18.0.3".parse::<IpAddr>().unwrap()]);
        assert!(!odd.ready && !odd.containers_ready);

        let node: SlimNode = serde_json::from_str(
            r#"{"metadata":{"name":"n"},"spec":{"unschedulable":null},"status":null}"#,
        )
        .unwrap();
        assert!(!node.unschedulable && !node.ready);
    }

    #[test]
    fn a_list_page_decodes_as_kube_reads_it() {
        let list: kube::core::ObjectList<SlimPod> = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "PodList",
            "metadata": { "resourceVersion": "99", "continue": "next" },
            "items": [full_pod(), full_pod()]
        }))
        .unwrap();
        assert_eq!(list.items.len(), 2);
        assert_eq!(list.metadata.continue_.as_deref(), Some("next"));
        assert_eq!(list.items[1].node_name.as_deref(), Some("node-a"));
    }
}
