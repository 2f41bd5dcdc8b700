//! The calls repair makes: find the pod an action is for, evict or delete it (with the UID it
//! judged as a precondition, so a replacement created meanwhile is never touched), record
//! Events, and read its own Events back as history after a restart.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams, Preconditions};

use super::rails::{Entry, EntryKind, PodRef, Reason};
use crate::diagnose::analyse::{Candidate, RepairAction};

/// `source.component` and `reportingComponent` of repair's Events; also the field selector
/// its history is read back with.
pub const COMPONENT: &str = "kube-netprobe-repair";
const ANNOTATION_ACTION: &str = "repair.kube-netprobe.io/action";
const ANNOTATION_SUBJECT: &str = "repair.kube-netprobe.io/subject";
const ANNOTATION_KIND: &str = "repair.kube-netprobe.io/kind";

/// The pod as an Event's object.
pub fn pod_ref(pod: &Pod) -> PodRef {
    PodRef {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone(),
    }
}

fn api_error(call: &str, e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{call}: {} ({})", s.message, s.code),
        other => format!("{call}: {other}"),
    }
}

/// The pod `c` acts on, as it is now: `Ok(None)` when there is none (no kube-proxy pod on the
/// node, the pod gone or already terminating), `Err` when the API did not answer.
pub async fn resolve(
    client: &kube::Client,
    c: &Candidate,
    kube_proxy_selector: &str,
    timeout: Duration,
) -> Result<Option<Pod>, String> {
    let api = Api::<Pod>::namespaced(client.clone(), &c.namespace);
    let found = match (&c.pod, c.action) {
        (Some(name), _) => {
            let call = format!("get pod {}/{name}", c.namespace);
            tokio::time::timeout(timeout, api.get_opt(name))
                .await
                .map_err(|_| format!("{call}: timed out"))?
                .map_err(|e| api_error(&call, &e))?
        }
        (None, _) => {
            let call = format!(
                "list pods -n {} -l {kube_proxy_selector} --field-selector spec.nodeName={}",
                c.namespace, c.node
            );
            let lp = ListParams::default()
                .labels(kube_proxy_selector)
                .fields(&format!("spec.nodeName={}", c.node));
            tokio::time::timeout(timeout, api.list(&lp))
                .await
                .map_err(|_| format!("{call}: timed out"))?
                .map_err(|e| api_error(&call, &e))?
                .items
                .into_iter()
                .find(|p| p.metadata.deletion_timestamp.is_none())
        }
    };
    Ok(found.filter(|p| p.metadata.deletion_timestamp.is_none()))
}

/// What the API said to an action.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Done,
    /// A PodDisruptionBudget does not allow the eviction now (429).
    Blocked(String),
    Failed(String),
}

/// Evicts (CoreDNS) or deletes (kube-proxy, a stuck kube-netprobe pod) `pod`, only if it is
/// still the pod judged (UID precondition).
pub async fn take(
    client: &kube::Client,
    action: RepairAction,
    pod: &Pod,
    timeout: Duration,
) -> Outcome {
    let target = pod_ref(pod);
    let preconditions = Preconditions {
        uid: target.uid.clone(),
        resource_version: None,
    };
    let result = match action {
        RepairAction::evict_coredns => {
            // kube's `Api::evict` spells deleteOptions `delete_options`, which the API server
            // ignores, and so would drop the UID precondition: the body is written here. No
            // apiVersion: the server reads it as the eviction version it serves (policy/v1beta1
            // on 1.20, policy/v1 from 1.22).
            let body = serde_json::json!({
                "metadata": { "name": target.name, "namespace": target.namespace },
                "deleteOptions": { "preconditions": { "uid": target.uid } },
            });
            let request = http::Request::post(format!(
                "/api/v1/namespaces/{}/pods/{}/eviction",
                target.namespace, target.name
            ))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&body).unwrap_or_default());
            match request {
                Ok(request) => {
                    tokio::time::timeout(timeout, client.request::<serde_json::Value>(request))
                        .await
                        .map(|r| r.map(|_| ()))
                }
                Err(e) => return Outcome::Failed(format!("building the eviction request: {e}")),
            }
        }
        RepairAction::restart_kube_proxy | RepairAction::delete_stuck_netprobe => {
            let api = Api::<Pod>::namespaced(client.clone(), &target.namespace);
            let dp = DeleteParams {
                preconditions: Some(preconditions),
                ..DeleteParams::default()
            };
            tokio::time::timeout(timeout, api.delete(&target.name, &dp))
                .await
                .map(|r| r.map(|_| ()))
        }
    };
    let call = match action {
        RepairAction::evict_coredns => format!("evict pod {target}"),
        _ => format!("delete pod {target}"),
    };
    match result {
        Err(_) => Outcome::Failed(format!("{call}: timed out after {timeout:?}")),
        Ok(Ok(())) => Outcome::Done,
        Ok(Err(kube::Error::Api(s))) if s.code == 429 => {
            Outcome::Blocked(format!("{call}: {}", s.message))
        }
        Ok(Err(e)) => Outcome::Failed(api_error(&call, &e)),
    }
}

/// What an Event says, for [`record`].
pub struct Note<'a> {
    pub action: RepairAction,
    pub subject: &'a str,
    /// `taken`, `dry_run`, `refused/<reason>`, `blocked`, `failed`, `resolved`, `not_helping`.
    pub kind: String,
    pub reason: &'static str,
    pub warning: bool,
    pub message: String,
}

/// Records `note` as a core/v1 Event on `pod`.
pub async fn record(
    client: &kube::Client,
    pod: &PodRef,
    note: Note<'_>,
    timeout: Duration,
) -> Result<(), String> {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    let event = Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}.repair-", pod.name)),
            namespace: Some(pod.namespace.clone()),
            annotations: Some(BTreeMap::from([
                (
                    ANNOTATION_ACTION.to_owned(),
                    note.action.as_str().to_owned(),
                ),
                (ANNOTATION_SUBJECT.to_owned(), note.subject.to_owned()),
                (ANNOTATION_KIND.to_owned(), note.kind.clone()),
            ])),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(pod.namespace.clone()),
            name: Some(pod.name.clone()),
            uid: pod.uid.clone(),
            ..ObjectReference::default()
        },
        reason: Some(note.reason.into()),
        // The API server caps a message at 1 KiB.
        message: Some(note.message.chars().take(1000).collect()),
        type_: Some(if note.warning { "Warning" } else { "Normal" }.into()),
        source: Some(EventSource {
            component: Some(COMPONENT.into()),
            host: None,
        }),
        reporting_component: Some(COMPONENT.into()),
        reporting_instance: Some(host),
        action: Some(note.action.as_str().into()),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        ..Event::default()
    };
    let api = Api::<Event>::namespaced(client.clone(), &pod.namespace);
    let call = format!("create event in namespace {}", pod.namespace);
    tokio::time::timeout(timeout, api.create(&PostParams::default(), &event))
        .await
        .map_err(|_| format!("{call}: timed out"))?
        .map(|_| ())
        .map_err(|e| api_error(&call, &e))
}

/// repair's own Events in `namespaces`, as history: what it did and decided before it last
/// started (the API server keeps Events for an hour by default, longer than the default
/// windows but the not-helping hold).
pub async fn read_history(
    client: &kube::Client,
    namespaces: &[String],
    timeout: Duration,
) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    for ns in namespaces {
        let api = Api::<Event>::namespaced(client.clone(), ns);
        let call = format!("list events -n {ns} --field-selector source={COMPONENT}");
        let events = tokio::time::timeout(
            timeout,
            api.list(&ListParams::default().fields(&format!("source={COMPONENT}"))),
        )
        .await
        .map_err(|_| format!("{call}: timed out"))?
        .map_err(|e| api_error(&call, &e))?;
        out.extend(events.items.iter().filter_map(entry_of));
    }
    out.sort_by_key(|e| e.at);
    // An action followed by its verification is verified.
    let verified: Vec<(RepairAction, String, i64)> = out
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::Resolved | EntryKind::NotHelping))
        .map(|e| (e.action, e.subject.clone(), e.at))
        .collect();
    for e in &mut out {
        if let EntryKind::Acted {
            dry_run: false,
            verified: v,
        } = &mut e.kind
        {
            *v = verified
                .iter()
                .any(|(a, s, at)| *a == e.action && *s == e.subject && *at >= e.at);
        }
    }
    Ok(out)
}

fn entry_of(e: &Event) -> Option<Entry> {
    let a = e.metadata.annotations.as_ref()?;
    let action = *RepairAction::ALL
        .iter()
        .find(|x| Some(x.as_str()) == a.get(ANNOTATION_ACTION).map(String::as_str))?;
    let kind = match a.get(ANNOTATION_KIND)?.as_str() {
        "taken" => EntryKind::Acted {
            dry_run: false,
            verified: false,
        },
        "dry_run" => EntryKind::Acted {
            dry_run: true,
            verified: true,
        },
        "blocked" | "failed" => EntryKind::Failed,
        "resolved" => EntryKind::Resolved,
        "not_helping" => EntryKind::NotHelping,
        other => EntryKind::Refused(
            *Reason::ALL
                .iter()
                .find(|r| other.strip_prefix("refused/") == Some(r.as_str()))?,
        ),
    };
    let at = e
        .last_timestamp
        .as_ref()
        .or(e.first_timestamp.as_ref())
        .map(|t| t.0.as_second())?;
    Some(Entry {
        action,
        subject: a.get(ANNOTATION_SUBJECT)?.clone(),
        at,
        kind,
        object: Some(PodRef {
            namespace: e.involved_object.namespace.clone().unwrap_or_default(),
            name: e.involved_object.name.clone().unwrap_or_default(),
            uid: e.involved_object.uid.clone(),
        }),
    })
}
