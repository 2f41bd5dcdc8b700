//! End to end on a real Kubernetes cluster: kubelets running the chart's DaemonSet from the
//! image `scripts/image` builds, Services through kube-proxy (a DaemonSet pod per node, as
//! kubeadm runs it), a Prometheus that finds the pods
//! through the API server (see [`discovery::PodDiscovery`] for why not with `kubernetes_sd_configs`) and
//! evaluates the rules exactly as the chart's PrometheusRule renders them, `diagnose` reading through the real pod proxy and kubelet, and faults made for
//! real: a node's network cut until it goes NotReady, kube-proxy stopped and its rules flushed
//! on one node, one DNS pod refusing. A rollout and a drain must raise nothing.
//! [`escape_hatches`] installs the chart a second time with every escape hatch of its values.
//! [`kube_proxy`] proves the fault a repair must fix: one node's kube-proxy hung (its pod kept,
//! its rules gone) until its pod is deleted.
//!
//! The cluster is `scripts/cluster up 3` (see that script for its layout); `make e2e` builds the
//! image, brings the cluster up, runs these tests with `--ignored --test-threads=1` and tears it
//! down whatever happens. They are ignored in a plain `cargo test`: a cluster takes about a
//! minute to start and needs root.
//!
//! The DNS pods are Debian's dnsmasq (CoreDNS cannot be had here). Asked to fail, dnsmasq answers
//! REFUSED, not SERVFAIL: it passes on an upstream's SERVFAIL but never makes one up itself.
//! Both are failures to the probe and to DNSReplicaFailing alike.

// The fixture: the cluster, the chart on it, the Prometheus that watches it.
mod alerts;
mod diagnosis;
mod discovery;
mod helm;
mod probes;

// The tests.
mod escape_hatches;
mod faults;
mod kube_proxy;
mod repair;
mod storage_test;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::util::{Metrics, http_get, poll_every};

const NAMESPACE: &str = "kube-netprobe";
const RELEASE: &str = "kube-netprobe";
/// Every `*For` parameter of the chart's alerts is its shipped default divided by this (3m
/// becomes 30 s, 5m 50 s), at least [`MIN_FOR`]: long enough that a probe failing once during a
/// rollout does not fire, short enough to keep the test in minutes, and in the shipped order
/// (an alert naming a culprit never waits longer than the symptoms it explains).
const FOR_SCALE: u64 = 6;
const MIN_FOR: u64 = 20;
/// Alertmanager's timers (the shipped example) over production's: rules evaluate every 2 s
/// here, every 30 s in a typical Prometheus, so group_wait (30 s) spans one evaluation in both.
const AM_SCALE: f64 = 1.0 / 15.0;
/// The shipped group_interval (5m) scaled: a group's later alerts are sent at most this long
/// after its first notification.
const GROUP_INTERVAL: Duration = Duration::from_secs(20);
/// But KubeNetprobeDown's (shipped: 10m): a pod being replaced stays a scrape target until the
/// kubelet has finished it, and on these kubelets that took more than 20 s in one rollout.
const DOWN_FOR: (&str, &str) = ("netprobeDownFor", "2m");
/// And the SLO burn-rate alerts' (`sloPageFor` 2m, `sloTicketFor` 15m) stay as shipped: their
/// windows (5 minutes to 3 days) hold only the minutes this Prometheus has run, so a few slow
/// lookups while a pod starts weigh as if they were days of them (seen once: the 3-day
/// DNS-latency ticket fired during a rollout with `for: 20s`).
const KEPT_FOR: &[&str] = &["sloPageFor", "sloTicketFor"];
/// Bound on each wait: DaemonSet ready, probes green (storage runs every 60 s), alerts firing.
const WAIT: Duration = Duration::from_secs(180);
const EVERY: Duration = Duration::from_secs(1);
/// The default queries of the chart.
const QUERIES: [&str; 3] = [
    "kubernetes.default.svc.cluster.local",
    "does-not-exist.invalid",
    "example.com",
];
const PROTOCOLS: [&str; 4] = ["http", "tcp", "bulk", "icmp"];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn log(msg: impl AsRef<str>) {
    eprintln!("[cluster e2e {}] {}", clock(), msg.as_ref());
}

fn clock() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    format!("{:02}:{:02}:{:02}", t / 3600 % 24, t / 60 % 60, t % 60)
}

// ---------------------------------------------------------------------------------------------
// The cluster

/// The cluster `scripts/cluster up` started, read from its env file.
struct Cluster {
    env: BTreeMap<String, String>,
    nodes: Vec<String>,
}

fn script(args: &[&str]) -> Output {
    Command::new(repo().join("scripts/cluster"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/cluster")
}

impl Cluster {
    fn get() -> Self {
        let out = script(&["env"]);
        assert!(
            out.status.success(),
            "no cluster is up ({}): run these tests with `make e2e`, or `scripts/cluster up 3 \
             --image $(scripts/image | cut -d' ' -f1)` first",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let env: BTreeMap<String, String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let nodes = env["NODES"].split_whitespace().map(String::from).collect();
        Self { env, nodes }
    }

    fn kubeconfig(&self) -> &str {
        &self.env["KUBECONFIG"]
    }

    fn kubectl_in(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut all = vec!["--request-timeout=20s"];
        all.extend_from_slice(args);
        crate::util::kubectl(Path::new(self.kubeconfig()), &all, stdin)
    }

    /// kubectl; panics with its stderr when it fails.
    fn kubectl(&self, args: &[&str]) -> String {
        let out = self.kubectl_in(args, None);
        assert!(
            out.status.success(),
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl(&all)).expect("kubectl JSON")
    }

    fn apply(&self, yaml: &str) {
        let out = self.kubectl_in(&["apply", "-f", "-"], Some(yaml));
        assert!(
            out.status.success(),
            "kubectl apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `scripts/cluster ARGS` (faults); panics when it fails.
    fn script(&self, args: &[&str]) {
        let out = script(args);
        assert!(
            out.status.success(),
            "scripts/cluster {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Index (1-based, as scripts/cluster counts) of a node.
    fn index(&self, node: &str) -> String {
        let i = self.nodes.iter().position(|n| n == node).expect("a node") + 1;
        i.to_string()
    }

    fn node_ready(&self, node: &str) -> bool {
        self.json(&["get", "node", node])["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    }

    /// Waits until the API says `node` is Ready (`true`) or not.
    fn wait_node_ready(&self, node: &str, ready: bool) {
        let want = if ready { "Ready" } else { "NotReady" };
        poll_every(&format!("{node} {want}"), WAIT, EVERY, || {
            if self.node_ready(node) == ready {
                Ok(())
            } else {
                Err(format!("not {want}"))
            }
        });
    }

    /// The kube-netprobe pods: node → (pod name, pod IP).
    fn netprobe_pods(&self) -> BTreeMap<String, (String, IpAddr)> {
        pods_by_node(&self.json(&[
            "-n",
            NAMESPACE,
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/name=kube-netprobe",
        ]))
    }

    /// Hangs the kube-proxy of node `index` (1-based, as scripts/cluster counts) the way a stuck
    /// kube-proxy fails: its process stopped (SIGSTOP) and its Service rules flushed, while its
    /// pod stays (Running, then not Ready) and the DaemonSet sees nothing to replace. Only a new
    /// pod brings the rules back: deleting this one (a repair), or [`Self::kube_proxy_start`].
    fn kube_proxy_hang(&self, index: usize) {
        self.script(&["kube-proxy", &index.to_string(), "hang"]);
    }

    /// Node `index`'s kube-proxy back (a hung pod deleted, a stopped node back in the
    /// DaemonSet); returns once its pod is Ready and its Service rules exist.
    fn kube_proxy_start(&self, index: usize) {
        self.script(&["kube-proxy", &index.to_string(), "start"]);
    }

    /// The kube-proxy pods (DaemonSet kube-system/kube-proxy) not being deleted: node → (pod
    /// name, Ready).
    fn kube_proxy_pods(&self) -> BTreeMap<String, (String, bool)> {
        self.json(&[
            "-n",
            "kube-system",
            "get",
            "pods",
            "-l",
            "k8s-app=kube-proxy",
        ])["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .filter_map(|p| {
                let ready = p["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True");
                Some((
                    p["spec"]["nodeName"].as_str()?.to_string(),
                    (p["metadata"]["name"].as_str()?.to_string(), ready),
                ))
            })
            .collect()
    }

    /// The DNS pods (k8s-app=kube-dns), names sorted.
    fn dns_pods(&self) -> Vec<(String, IpAddr)> {
        let mut pods: Vec<(String, IpAddr)> =
            self.json(&["-n", "kube-system", "get", "pods", "-l", "k8s-app=kube-dns"])["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    Some((
                        p["metadata"]["name"].as_str()?.to_string(),
                        p["status"]["podIP"].as_str()?.parse().ok()?,
                    ))
                })
                .collect();
        pods.sort();
        pods
    }
}

fn pods_by_node(list: &Value) -> BTreeMap<String, (String, IpAddr)> {
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|p| {
            Some((
                p["spec"]["nodeName"].as_str()?.to_string(),
                (
                    p["metadata"]["name"].as_str()?.to_string(),
                    p["status"]["podIP"].as_str()?.parse().ok()?,
                ),
            ))
        })
        .collect()
}

fn scrape(ip: IpAddr) -> Result<Metrics, String> {
    let resp = http_get(SocketAddr::new(ip, 9753), "/metrics").map_err(|e| format!("{ip}: {e}"))?;
    if resp.status != 200 {
        return Err(format!("{ip}: /metrics status {}", resp.status));
    }
    Metrics::parse(&resp.body)
}
