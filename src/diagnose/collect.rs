//! Collection: every read the report needs, through the Kubernetes API (no kubectl), each with
//! its own timeout and its own error. A forbidden or failing read leaves its field `None` and
//! records a [`ReadError`] naming the RBAC rule that would allow it; it never stops the others.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Event, Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod,
    Service,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::storage::v1::{CSIDriver, CSINode, StorageClass, VolumeAttachment};
use kube::api::{ListParams, LogParams};
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Where CoreDNS lives and how it is labelled (the kubeadm and most distributions' defaults).
pub const DNS_NAMESPACE: &str = "kube-system";
pub const DNS_SELECTOR: &str = "k8s-app=kube-dns";
pub const DNS_SERVICE: &str = "kube-dns";
pub const COREFILE_CONFIGMAP: &str = "coredns";
/// Log lines read per CoreDNS pod (the seed script's `--tail=50`).
pub const LOG_TAIL_LINES: i64 = 50;

/// What to collect and from where.
#[derive(Debug, Clone)]
pub struct CollectOptions {
    /// The namespace whose NetworkPolicies and Services are checked.
    pub namespace: String,
    /// Label selector of the kube-netprobe DaemonSet's pods.
    pub netprobe_selector: String,
    /// Namespace of the kube-netprobe pods; `None` looks in every namespace.
    pub netprobe_namespace: Option<String>,
    /// Port of the pods' `/metrics` when no container port is named `metrics` or `http`.
    pub netprobe_port: u16,
    /// `--timeout`, for messages.
    pub timeout: Duration,
    /// When `--timeout`, counted from the start of the run, runs out: every read ends by then.
    pub deadline: tokio::time::Instant,
    /// Skip reading CoreDNS logs through the API (they were given as a file).
    pub skip_logs: bool,
    /// Skip the kube-netprobe pods' /metrics (given as files).
    pub skip_metrics: bool,
    /// Read only what `repair`'s findings need (the CoreDNS pods, the Corefile, the kube-dns
    /// Service and Endpoints, the nodes, the kube-netprobe pods and their /metrics), so that its
    /// RBAC stays that small. The other fields stay `None` and raise nothing.
    pub repair_only: bool,
}

/// A read that failed, and what would let it succeed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadError {
    /// What was being read, e.g. `coredns-pods`.
    pub step: String,
    /// The API call, e.g. `list pods -n kube-system -l k8s-app=kube-dns`.
    pub call: String,
    /// `forbidden`, `unauthorized`, `not_found`, `timeout`, `too_large`, `unreachable` or
    /// `error`.
    pub reason: &'static str,
    pub message: String,
    /// The RBAC rule that allows the call, named when the call was forbidden.
    pub missing_rbac: Option<String>,
}

/// One kube-netprobe pod's `/metrics`, read through the API server's pod proxy (or from a file).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProbeScrape {
    pub pod: String,
    pub node: String,
    /// The OpenMetrics text; `None` when it could not be read (see `error`).
    pub text: Option<String>,
    pub error: Option<String>,
}

/// Everything read; `None` means "could not read" (the reason is in `errors`).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub namespace: String,
    pub server: String,
    pub coredns_pods: Option<Vec<Pod>>,
    /// Events of pods in kube-system (filtered to the CoreDNS pods by the analysers).
    pub coredns_events: Option<Vec<Event>>,
    /// Last log lines per CoreDNS pod (or one entry per `--coredns-logs` file).
    pub coredns_logs: Option<BTreeMap<String, String>>,
    /// `Some(None)`: read, and the ConfigMap (or its `Corefile` key) does not exist.
    pub corefile: Option<Option<String>>,
    pub kube_dns_service: Option<Option<Service>>,
    pub kube_dns_endpoints: Option<Option<Endpoints>>,
    pub dns_namespace: Option<Option<Namespace>>,
    pub network_policies: Option<Vec<NetworkPolicy>>,
    /// The `--namespace` Namespace object (its labels, for namespaceSelectors).
    pub namespace_object: Option<Option<Namespace>>,
    pub namespace_pods: Option<Vec<Pod>>,
    pub namespace_services: Option<Vec<Service>>,
    pub namespace_endpoints: Option<Vec<Endpoints>>,
    pub nodes: Option<Vec<Node>>,
    /// Per node, its pods that hold or need a pod-network IP (not hostNetwork, not finished),
    /// counted page by page from a list of every scheduled pod (only the counts are kept).
    pub pods_needing_ip: Option<BTreeMap<String, u64>>,
    pub csi_drivers: Option<Vec<CSIDriver>>,
    pub csi_nodes: Option<Vec<CSINode>>,
    pub storage_classes: Option<Vec<StorageClass>>,
    pub pvs: Option<Vec<PersistentVolume>>,
    pub pvcs: Option<Vec<PersistentVolumeClaim>>,
    pub pvc_events: Option<Vec<Event>>,
    pub volume_attachments: Option<Vec<VolumeAttachment>>,
    pub netprobe_pods: Option<Vec<Pod>>,
    pub probe_scrapes: Vec<ProbeScrape>,
    /// `--storage-test`: what the test PVC and Job did.
    pub storage_test: Option<super::storage_test::Outcome>,
    pub errors: Vec<ReadError>,
}

/// Why the API server could not be used at all (exit 3).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("no usable Kubernetes client configuration: {0}")]
    Config(String),
    #[error("cannot reach the Kubernetes API server at {server} within {timeout:?}: {message}")]
    Unreachable {
        server: String,
        timeout: Duration,
        message: String,
    },
    #[error(
        "the Kubernetes API server at {server} rejected the credentials (401 Unauthorized): {message}"
    )]
    Unauthorized { server: String, message: String },
}

/// Builds a client from `kubeconfig` (or in-cluster config / `KUBECONFIG` / `~/.kube/config`)
/// and checks before `deadline` (`timeout` after the run started) that the API server answers
/// and accepts the credentials. Unlike [`crate::discovery::kube::connect`] it never retries: a
/// paged human needs an answer. The client reads no answer beyond `max_response` bytes, nor
/// more than [`IN_FLIGHT_ANSWERS`] times that across the answers it reads at once.
pub async fn connect(
    kubeconfig: Option<&std::path::Path>,
    timeout: Duration,
    deadline: tokio::time::Instant,
    max_response: u64,
) -> Result<(kube::Client, String), ConnectError> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| ConnectError::Config(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| ConnectError::Config(format!("{}: {e}", path.display())))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| ConnectError::Config(e.to_string()))?,
    };
    let mut config = config;
    config.connect_timeout = Some(timeout);
    config.read_timeout = Some(timeout);
    config.write_timeout = Some(timeout);
    // kube retries 429, 503 and 504 with backoff by default: a read would wait out the deadline
    // without saying why, and a PodDisruptionBudget's 429 to repair's eviction is an answer,
    // not a hiccup.
    config.default_retry = false;
    let server = config.cluster_url.to_string();
    // kube reads every answer whole into memory before parsing it; a huge list (or a hostile
    // server) would take all of it, and the reads run together.
    let in_flight = Arc::new(AtomicI64::new(
        i64::try_from(max_response.saturating_mul(IN_FLIGHT_ANSWERS)).unwrap_or(i64::MAX),
    ));
    let client = kube::client::ClientBuilder::try_from(config)
        .map_err(|e| ConnectError::Config(e.to_string()))?
        .with_layer(&tower::util::MapResponseLayer::new(
            move |response: http::Response<Box<kube::client::DynBody>>| {
                response.map(|body| Capped {
                    body,
                    max: max_response,
                    read: 0,
                    in_flight: in_flight.clone(),
                })
            },
        ))
        .build();
    match tokio::time::timeout_at(deadline, client.apiserver_version()).await {
        Err(_) => Err(ConnectError::Unreachable {
            server,
            timeout,
            message: "no answer (timed out)".into(),
        }),
        Ok(Ok(_)) => Ok((client, server)),
        Ok(Err(kube::Error::Api(status))) if status.code == 401 => {
            Err(ConnectError::Unauthorized {
                server,
                message: status.message.clone(),
            })
        }
        // Any other API answer (even 403 on /version) proves the server is there.
        Ok(Err(kube::Error::Api(_))) => Ok((client, server)),
        Ok(Err(e)) => Err(ConnectError::Unreachable {
            server,
            timeout,
            message: error_chain(&e),
        }),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// Records the failures of concurrent reads.
struct Recorder {
    timeout: Duration,
    deadline: tokio::time::Instant,
    errors: Mutex<Vec<ReadError>>,
}

impl Recorder {
    /// Runs one read until the run's deadline; on failure records it and returns `None`.
    /// `rbac` is the rule that allows the call, e.g. `list pods (namespace kube-system)`.
    async fn read<T>(
        &self,
        step: &str,
        call: String,
        rbac: String,
        fut: impl Future<Output = Result<T, kube::Error>>,
    ) -> Option<T> {
        let result = tokio::time::timeout_at(self.deadline, fut).await;
        let (reason, message) = match result {
            Ok(Ok(value)) => return Some(value),
            Err(_) => (
                "timeout",
                format!(
                    "no answer before --timeout ({}) ran out (it bounds the whole run)",
                    humantime::format_duration(self.timeout)
                ),
            ),
            Ok(Err(e)) => classify(&e),
        };
        let missing_rbac = (reason == "forbidden").then_some(rbac);
        self.errors.lock().expect("recorder lock").push(ReadError {
            step: step.to_owned(),
            call,
            reason,
            message,
            missing_rbac,
        });
        None
    }
}

/// Answers at the full `--max-response-size` that may be held at once; beyond that the read
/// that would pass it fails. A 5,000-node list at 60 MiB and the other reads fit; 20 hostile
/// answers at the cap do not.
const IN_FLIGHT_ANSWERS: u64 = 4;

/// Why an answer was not read to its end.
#[derive(Debug, thiserror::Error)]
enum TooLarge {
    #[error("the answer is larger than --max-response-size ({0}); not read further")]
    Answer(crate::config::ByteSize),
    #[error(
        "the answers being read at once passed {IN_FLIGHT_ANSWERS} x --max-response-size ({0}) \
         in all; this one was not read further"
    )]
    InFlight(crate::config::ByteSize),
}

/// A response body read up to `max` bytes, counting what it holds against `in_flight`, the
/// bytes every answer being read may still take (given back when the body is dropped).
struct Capped {
    body: Box<kube::client::DynBody>,
    max: u64,
    read: u64,
    in_flight: Arc<AtomicI64>,
}

impl Drop for Capped {
    fn drop(&mut self) {
        let read = i64::try_from(self.read).unwrap_or(i64::MAX);
        self.in_flight.fetch_add(read, Ordering::AcqRel);
    }
}

impl hyper::body::Body for Capped {
    type Data = hyper::body::Bytes;
    type Error = tower::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let frame = match std::pin::Pin::new(&mut self.body).poll_frame(cx) {
            std::task::Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        if let Some(data) = frame.data_ref() {
            let n = data.len() as u64;
            self.read += n;
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            let left = self.in_flight.fetch_sub(n, Ordering::AcqRel) - n;
            if self.read > self.max {
                return std::task::Poll::Ready(Some(Err(Box::new(TooLarge::Answer(
                    crate::config::ByteSize(self.max),
                )))));
            }
            if left < 0 {
                let all = self.max.saturating_mul(IN_FLIGHT_ANSWERS);
                return std::task::Poll::Ready(Some(Err(Box::new(TooLarge::InFlight(
                    crate::config::ByteSize(all),
                )))));
            }
        }
        std::task::Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

fn classify(e: &kube::Error) -> (&'static str, String) {
    let too_large = std::iter::successors(Some(e as &dyn std::error::Error), |e| e.source())
        .find_map(|e| e.downcast_ref::<TooLarge>());
    if let Some(too_large) = too_large {
        return ("too_large", too_large.to_string());
    }
    match e {
        kube::Error::Api(status) => {
            let reason = match status.code {
                401 => "unauthorized",
                403 => "forbidden",
                404 => "not_found",
                _ => "error",
            };
            let message = if status.message.is_empty() {
                format!("HTTP {}", status.code)
            } else {
                format!("HTTP {}: {}", status.code, status.message)
            };
            (reason, message)
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) => ("unreachable", error_chain(e)),
        _ => ("error", error_chain(e)),
    }
}

fn ns_scope(ns: &str) -> String {
    format!("namespace {ns}")
}

/// Where a read goes: one namespace, every namespace, or a cluster-scoped kind.
#[derive(Debug, Clone, Copy)]
enum At<'a> {
    Namespace(&'a str),
    AllNamespaces,
    Cluster,
}

impl At<'_> {
    /// The `-n` or `--all-namespaces` of the kubectl line this read is the same as.
    fn flag(self) -> String {
        match self {
            At::Namespace(ns) => format!(" -n {ns}"),
            At::AllNamespaces => " --all-namespaces".into(),
            At::Cluster => String::new(),
        }
    }

    /// The scope of the RBAC rule that allows the read.
    fn scope(self) -> String {
        match self {
            At::Namespace(ns) => ns_scope(ns),
            At::AllNamespaces | At::Cluster => "cluster-wide".into(),
        }
    }
}

/// The resource as an RBAC rule names it: `pods`, `csidrivers.storage.k8s.io`.
fn rbac_resource<K: Resource<DynamicType = ()>>() -> String {
    let (plural, group) = (K::plural(&()), K::group(&()));
    if group.is_empty() {
        plural.into_owned()
    } else {
        format!("{plural}.{group}")
    }
}

impl Recorder {
    /// Lists `K` through `api` (built for `at`), recorded as the kubectl line it equals
    /// (`list pods -n kube-system -l k8s-app=kube-dns`) with the RBAC rule that allows it.
    async fn list<K>(&self, step: &str, api: Api<K>, at: At<'_>, lp: ListParams) -> Option<Vec<K>>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    {
        let mut call = format!("list {}{}", K::plural(&()), at.flag());
        if let Some(labels) = &lp.label_selector {
            call.push_str(&format!(" -l {labels}"));
        }
        if let Some(fields) = &lp.field_selector {
            call.push_str(&format!(" --field-selector {fields}"));
        }
        let rbac = format!("list {} ({})", rbac_resource::<K>(), at.scope());
        self.read(step, call, rbac, async move {
            api.list(&lp).await.map(|l| l.items)
        })
        .await
    }

    /// Gets `K` `name` through `api` (built for `at`); 404 is an answer (`Some(None)`).
    async fn get<K>(&self, step: &str, api: Api<K>, at: At<'_>, name: &str) -> Option<Option<K>>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    {
        let call = format!("get {} {name}{}", K::kind(&()).to_lowercase(), at.flag());
        let rbac = format!("get {} ({})", rbac_resource::<K>(), at.scope());
        self.read(step, call, rbac, api.get_opt(name)).await
    }
}

/// The pods that may hold a pod IP: scheduled, not finished (hostNetwork is not a field the
/// API server selects on before 1.28: left out while counting).
const POD_IP_FIELDS: &str = "spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed";

/// Pods listed per page while counting: a page is decoded whole, and only counts are kept, so
/// memory stays flat on a cluster of any size.
const POD_IP_PAGE: u32 = 500;

/// Per node, the pods that need a pod IP, from a paged list of every scheduled pod.
async fn count_pods_needing_ip(api: Api<Pod>) -> Result<BTreeMap<String, u64>, kube::Error> {
    let mut counts = BTreeMap::new();
    let mut lp = ListParams::default()
        .fields(POD_IP_FIELDS)
        .limit(POD_IP_PAGE);
    loop {
        let page = api.list(&lp).await?;
        for pod in &page.items {
            if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_ref())
                && crate::discovery::node_pods::pod_needs_ip(pod)
            {
                *counts.entry(node.clone()).or_default() += 1;
            }
        }
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => lp = lp.continue_token(&token),
            _ => return Ok(counts),
        }
    }
}

/// Collects everything; `progress` is told each step's name as it finishes.
pub async fn collect(
    client: &kube::Client,
    server: String,
    target: &CollectOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> Snapshot {
    let rec = Recorder {
        timeout: target.timeout,
        deadline: target.deadline,
        errors: Mutex::new(Vec::new()),
    };
    let ns = target.namespace.as_str();
    let c = client;
    let done = |step: &str| progress(step);

    let coredns = async {
        let pods = rec
            .list(
                "coredns-pods",
                Api::<Pod>::namespaced(c.clone(), DNS_NAMESPACE),
                At::Namespace(DNS_NAMESPACE),
                ListParams::default().labels(DNS_SELECTOR),
            )
            .await;
        done("coredns-pods");
        let logs = match (&pods, target.skip_logs || target.repair_only) {
            (Some(pods), false) => Some(read_logs(c, &rec, pods).await),
            _ => None,
        };
        done("coredns-logs");
        (pods, logs)
    };
    let coredns_events = async {
        if target.repair_only {
            done("coredns-events");
            return None;
        }
        let r = rec
            .list(
                "coredns-events",
                Api::<Event>::namespaced(c.clone(), DNS_NAMESPACE),
                At::Namespace(DNS_NAMESPACE),
                ListParams::default().fields("involvedObject.kind=Pod"),
            )
            .await;
        done("coredns-events");
        r
    };
    let corefile = async {
        let r = rec
            .get(
                "corefile",
                Api::<ConfigMap>::namespaced(c.clone(), DNS_NAMESPACE),
                At::Namespace(DNS_NAMESPACE),
                COREFILE_CONFIGMAP,
            )
            .await
            .map(|cm| cm.and_then(|cm| cm.data.and_then(|mut d| d.remove("Corefile"))));
        done("corefile");
        r
    };
    let dns_service = async {
        let svc = rec
            .get(
                "kube-dns-service",
                Api::<Service>::namespaced(c.clone(), DNS_NAMESPACE),
                At::Namespace(DNS_NAMESPACE),
                DNS_SERVICE,
            )
            .await;
        let eps = rec
            .get(
                "kube-dns-endpoints",
                Api::<Endpoints>::namespaced(c.clone(), DNS_NAMESPACE),
                At::Namespace(DNS_NAMESPACE),
                DNS_SERVICE,
            )
            .await;
        let dns_ns = if target.repair_only {
            None
        } else {
            rec.get(
                "dns-namespace",
                Api::<Namespace>::all(c.clone()),
                At::Cluster,
                DNS_NAMESPACE,
            )
            .await
        };
        done("kube-dns-service");
        (svc, eps, dns_ns)
    };
    let network = async {
        if target.repair_only {
            done("networkpolicies");
            done("namespace-services");
            return (None, None, None, None, None);
        }
        let policies = rec
            .list(
                "networkpolicies",
                Api::<NetworkPolicy>::all(c.clone()),
                At::AllNamespaces,
                ListParams::default(),
            )
            .await;
        done("networkpolicies");
        let ns_object = rec
            .get(
                "namespace",
                Api::<Namespace>::all(c.clone()),
                At::Cluster,
                ns,
            )
            .await;
        let pods = rec
            .list(
                "namespace-pods",
                Api::<Pod>::namespaced(c.clone(), ns),
                At::Namespace(ns),
                ListParams::default(),
            )
            .await;
        let services = rec
            .list(
                "namespace-services",
                Api::<Service>::namespaced(c.clone(), ns),
                At::Namespace(ns),
                ListParams::default(),
            )
            .await;
        let endpoints = rec
            .list(
                "namespace-endpoints",
                Api::<Endpoints>::namespaced(c.clone(), ns),
                At::Namespace(ns),
                ListParams::default(),
            )
            .await;
        done("namespace-services");
        (policies, ns_object, pods, services, endpoints)
    };
    let nodes = async {
        let r = rec
            .list(
                "nodes",
                Api::<Node>::all(c.clone()),
                At::Cluster,
                ListParams::default(),
            )
            .await;
        done("nodes");
        r
    };
    let storage = async {
        if target.repair_only {
            done("csidrivers");
            done("storage");
            return (None, None, None, None, None, None, None);
        }
        let drivers = rec
            .list(
                "csidrivers",
                Api::<CSIDriver>::all(c.clone()),
                At::Cluster,
                ListParams::default(),
            )
            .await;
        let csinodes = rec
            .list(
                "csinodes",
                Api::<CSINode>::all(c.clone()),
                At::Cluster,
                ListParams::default(),
            )
            .await;
        let classes = rec
            .list(
                "storageclasses",
                Api::<StorageClass>::all(c.clone()),
                At::Cluster,
                ListParams::default(),
            )
            .await;
        done("csidrivers");
        let pvs = rec
            .list(
                "persistentvolumes",
                Api::<PersistentVolume>::all(c.clone()),
                At::Cluster,
                ListParams::default(),
            )
            .await;
        let pvcs = rec
            .list(
                "persistentvolumeclaims",
                Api::<PersistentVolumeClaim>::all(c.clone()),
                At::AllNamespaces,
                ListParams::default(),
            )
            .await;
        let pvc_events = rec
            .list(
                "pvc-events",
                Api::<Event>::all(c.clone()),
                At::AllNamespaces,
                ListParams::default().fields("involvedObject.kind=PersistentVolumeClaim"),
            )
            .await;
        let attachments = rec
            .list(
                "volumeattachments",
                Api::<VolumeAttachment>::all(c.clone()),
                At::Cluster,
                ListParams::default(),
            )
            .await;
        done("storage");
        (
            drivers,
            csinodes,
            classes,
            pvs,
            pvcs,
            pvc_events,
            attachments,
        )
    };
    let pod_ips = async {
        if target.repair_only {
            done("pod-ips");
            return None;
        }
        let r = rec
            .read(
                "pod-ips",
                format!("list pods --all-namespaces --field-selector {POD_IP_FIELDS}"),
                "list pods (cluster-wide)".into(),
                count_pods_needing_ip(Api::<Pod>::all(c.clone())),
            )
            .await;
        done("pod-ips");
        r
    };
    let netprobe = async {
        if target.skip_metrics {
            done("netprobe-metrics");
            return (None, Vec::new());
        }
        let (api, at) = match &target.netprobe_namespace {
            Some(n) => (Api::<Pod>::namespaced(c.clone(), n), At::Namespace(n)),
            None => (Api::<Pod>::all(c.clone()), At::AllNamespaces),
        };
        let pods = rec
            .list(
                "netprobe-pods",
                api,
                at,
                ListParams::default().labels(&target.netprobe_selector),
            )
            .await;
        let scrapes = match &pods {
            Some(pods) => scrape_all(c, &rec, pods, target.netprobe_port).await,
            None => Vec::new(),
        };
        done("netprobe-metrics");
        (pods, scrapes)
    };

    let (
        (coredns_pods, coredns_logs),
        coredns_events,
        corefile,
        (kube_dns_service, kube_dns_endpoints, dns_namespace),
        (
            network_policies,
            namespace_object,
            namespace_pods,
            namespace_services,
            namespace_endpoints,
        ),
        nodes,
        (csi_drivers, csi_nodes, storage_classes, pvs, pvcs, pvc_events, volume_attachments),
        (netprobe_pods, probe_scrapes),
        pods_needing_ip,
    ) = tokio::join!(
        coredns,
        coredns_events,
        corefile,
        dns_service,
        network,
        nodes,
        storage,
        netprobe,
        pod_ips
    );
    let mut errors = rec.errors.into_inner().expect("recorder lock");
    errors.sort_by(|a, b| a.step.cmp(&b.step));
    Snapshot {
        namespace: target.namespace.clone(),
        server,
        coredns_pods,
        coredns_events,
        coredns_logs,
        corefile,
        kube_dns_service,
        kube_dns_endpoints,
        dns_namespace,
        network_policies,
        namespace_object,
        namespace_pods,
        namespace_services,
        namespace_endpoints,
        nodes,
        pods_needing_ip,
        csi_drivers,
        csi_nodes,
        storage_classes,
        pvs,
        pvcs,
        pvc_events,
        volume_attachments,
        netprobe_pods,
        probe_scrapes,
        storage_test: None,
        errors,
    }
}

/// The last lines of every CoreDNS pod's log. A pod whose log cannot be read (no kubelet,
/// forbidden) gets no entry and one recorded error; `Some` of an empty map means none could.
async fn read_logs(
    client: &kube::Client,
    rec: &Recorder,
    pods: &[Pod],
) -> BTreeMap<String, String> {
    let api = Api::<Pod>::namespaced(client.clone(), DNS_NAMESPACE);
    let params = LogParams {
        tail_lines: Some(LOG_TAIL_LINES),
        ..LogParams::default()
    };
    let reads = pods
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .map(|name| {
            let (api, params) = (api.clone(), params.clone());
            async move {
                let text = rec
                    .read(
                        "coredns-logs",
                        format!("logs -n {DNS_NAMESPACE} {name} --tail={LOG_TAIL_LINES}"),
                        format!("get pods/log ({})", ns_scope(DNS_NAMESPACE)),
                        api.logs(&name, &params),
                    )
                    .await;
                text.map(|t| (name, t))
            }
        });
    futures_util::future::join_all(reads)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// The port a kube-netprobe pod serves `/metrics` on: a container port named `metrics` or
/// `http`, else `default`.
fn metrics_port(pod: &Pod, default: u16) -> u16 {
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| matches!(p.name.as_deref(), Some("metrics" | "http")))
        .and_then(|p| u16::try_from(p.container_port).ok())
        .unwrap_or(default)
}

async fn scrape_all(
    client: &kube::Client,
    rec: &Recorder,
    pods: &[Pod],
    default_port: u16,
) -> Vec<ProbeScrape> {
    let reads = pods.iter().map(|pod| async move {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        let running = pod.status.as_ref().is_some_and(|s| {
            s.phase.as_deref() == Some("Running")
                && s.pod_ip.as_ref().is_some_and(|ip| !ip.is_empty())
        });
        if !running || pod.metadata.deletion_timestamp.is_some() {
            // Not a read that failed: there is nothing to read. The matrix lists the node as unread.
            return ProbeScrape {
                pod: name,
                node,
                text: None,
                error: Some("pod not running (or terminating)".into()),
            };
        }
        let port = metrics_port(pod, default_port);
        let path = format!("/api/v1/namespaces/{ns}/pods/{name}:{port}/proxy/metrics");
        // The recorder keeps the error for the report; the scrape keeps a copy for the matrix.
        let failure = std::sync::Mutex::new(None::<String>);
        let text = rec
            .read(
                "netprobe-metrics",
                format!("get --raw {path}"),
                format!("get pods/proxy ({})", ns_scope(&ns)),
                async {
                    let request = http::Request::get(&path)
                        .body(Vec::new())
                        .map_err(kube::Error::HttpError)?;
                    client.request_text(request).await.inspect_err(|e| {
                        *failure.lock().expect("lock") = Some(classify(e).1);
                    })
                },
            )
            .await;
        let error = match &text {
            Some(_) => None,
            None => Some(
                failure
                    .into_inner()
                    .expect("lock")
                    .unwrap_or_else(|| "timed out".into()),
            ),
        };
        ProbeScrape {
            pod: name,
            node,
            text,
            error,
        }
    });
    futures_util::future::join_all(reads).await
}
