//! End to end on a real Kubernetes cluster: kubelets running the chart's DaemonSet from the
//! image `scripts/image` builds, Services through kube-proxy, a Prometheus that finds the pods
//! through the API server (see [`PodDiscovery`] for why not with `kubernetes_sd_configs`) and
//! evaluates the rules exactly as the chart's PrometheusRule renders them, `diagnose` reading through the real pod proxy and kubelet, and faults made for
//! real: a node's network cut until it goes NotReady, kube-proxy stopped and its rules flushed
//! on one node, one DNS pod refusing. A rollout and a drain must raise nothing.
//!
//! The cluster is `scripts/cluster up 3` (see that script for its layout); `make e2e` builds the
//! image, brings the cluster up, runs these tests with `--ignored --test-threads=1` and tears it
//! down whatever happens. They are ignored in a plain `cargo test`: a cluster takes about a
//! minute to start and needs root.
//!
//! The DNS pods are Debian's dnsmasq (CoreDNS cannot be had here). Asked to fail, dnsmasq answers
//! REFUSED, not SERVFAIL: it passes on an upstream's SERVFAIL but never makes one up itself.
//! Both are failures to the probe and to DNSReplicaFailing alike.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::alertmanager::Alertmanager;
use crate::prometheus::{Active, Prometheus, rules_state};
use crate::util::{Checks, Metrics, bin, http_get, poll_every};

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

// ---------------------------------------------------------------------------------------------
// Helm

fn helm() -> PathBuf {
    let path = std::env::var_os("HELM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/kube-netprobe/helm-layer-2.2.2/helm"));
    assert!(
        path.exists(),
        "{} missing: `make deps` installs helm",
        path.display()
    );
    path
}

/// `--set` arguments pointing the chart at the local image (the chart's default otherwise).
fn image_values() -> Vec<String> {
    vec![
        "--set".into(),
        "image.repository=localhost/kube-netprobe".into(),
        "--set".into(),
        format!("image.tag={}", env!("CARGO_PKG_VERSION")),
    ]
}

fn helm_upgrade(cluster: &Cluster, extra: &[&str]) {
    let out = Command::new(helm())
        .args(["upgrade", "--install", RELEASE])
        .arg(repo().join("helm/kube-netprobe"))
        .args(["--namespace", NAMESPACE, "--create-namespace"])
        .arg(format!("--kubeconfig={}", cluster.kubeconfig()))
        .args(image_values())
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run helm");
    assert!(
        out.status.success(),
        "helm upgrade --install: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The rules of the chart's PrometheusRule as a Prometheus rule file (its `spec`), with every
/// `*For` parameter scaled by [`FOR_SCALE`] (but [`DOWN_FOR`], and [`KEPT_FOR`] as shipped).
fn chart_rules() -> String {
    let values: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(repo().join("helm/kube-netprobe/values.yaml")).expect("values"),
    )
    .expect("values.yaml parses");
    let mut args: Vec<String> = vec![
        "--set".into(),
        "prometheusRule.onlyIfAPIExists=false".into(),
        "--show-only".into(),
        "templates/prometheusrule.yaml".into(),
    ];
    let parameters = values["prometheusRule"]["parameters"]
        .as_object()
        .expect("prometheusRule.parameters");
    for (key, default) in parameters
        .iter()
        .filter(|(k, _)| k.ends_with("For") && !KEPT_FOR.contains(&k.as_str()))
    {
        let value = if key == DOWN_FOR.0 {
            DOWN_FOR.1.to_string()
        } else {
            let default = default.as_str().expect("a *For parameter is a duration");
            format!("{}s", (seconds(default) / FOR_SCALE).max(MIN_FOR))
        };
        args.push("--set".into());
        args.push(format!("prometheusRule.parameters.{key}={value}"));
    }
    let out = Command::new(helm())
        .args(["template", RELEASE])
        .arg(repo().join("helm/kube-netprobe"))
        .args(["--namespace", NAMESPACE])
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .expect("run helm template");
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rule: Value = serde_saphyr::from_str(&String::from_utf8_lossy(&out.stdout))
        .expect("the PrometheusRule parses");
    assert_eq!(rule["kind"], "PrometheusRule");
    serde_json::to_string_pretty(&rule["spec"]).expect("rule file")
}

/// Seconds of a one-unit duration as the chart's values write them (`30s`, `5m`, `1h`).
fn seconds(d: &str) -> u64 {
    let (n, unit) = d.split_at(d.len() - 1);
    let n: u64 = n.parse().unwrap_or_else(|_| panic!("duration {d:?}"));
    match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => panic!("duration {d:?}: unit {unit:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Prometheus with Kubernetes service discovery

/// A service account `monitoring/prometheus` allowed to list and watch pods, and its token
/// (what a Prometheus in the cluster would discover with).
fn prometheus_token(cluster: &Cluster, dir: &Path) -> PathBuf {
    cluster.apply(
        r#"
apiVersion: v1
kind: Namespace
metadata: { name: monitoring }
---
apiVersion: v1
kind: ServiceAccount
metadata: { name: prometheus, namespace: monitoring }
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: e2e-prometheus }
rules:
  - apiGroups: [""]
    resources: [pods]
    verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: { name: e2e-prometheus }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: e2e-prometheus }
subjects: [{ kind: ServiceAccount, name: prometheus, namespace: monitoring }]
"#,
    );
    // 1.20: the token controller writes the token into a Secret it names in the account.
    let secret = poll_every(
        "the token secret of monitoring/prometheus",
        WAIT,
        EVERY,
        || {
            let sa = cluster.json(&["-n", "monitoring", "get", "serviceaccount", "prometheus"]);
            sa["secrets"][0]["name"]
                .as_str()
                .map(String::from)
                .ok_or_else(|| "no secret yet".to_string())
        },
    );
    let token = cluster.kubectl(&[
        "-n",
        "monitoring",
        "get",
        "secret",
        &secret,
        "-o",
        "jsonpath={.data.token}",
    ]);
    let out = Command::new("base64")
        .arg("-d")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().expect("stdin").write_all(token.as_bytes())?;
            c.wait_with_output()
        })
        .expect("base64 -d");
    let path = dir.join("token");
    std::fs::write(&path, out.stdout).expect("write token");
    path
}

/// Pod discovery for Prometheus through the real API server.
///
/// Debian's Prometheus is built without `kubernetes_sd_configs` (its Kubernetes client
/// libraries are not packaged; no other Prometheus build is obtainable here), so this stands in
/// for that one piece: an `http_sd_configs` endpoint on loopback that lists the pods with
/// Prometheus's service-account token on every refresh and labels each container port the way
/// Kubernetes SD role `pod` does (`__meta_kubernetes_pod_*`). The relabeling after it, the
/// ServiceMonitor's, runs in Prometheus as it would in a real cluster.
struct PodDiscovery {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PodDiscovery {
    fn start(cluster: &Cluster, token: &Path) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the discovery endpoint");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let stop = Arc::new(AtomicBool::new(false));
        let args = vec![
            format!("--server={}", cluster.env["APISERVER_URL"]),
            format!("--certificate-authority={}", cluster.env["CA_FILE"]),
            format!(
                "--token={}",
                std::fs::read_to_string(token).expect("read token").trim()
            ),
            "--request-timeout=10s".to_string(),
        ];
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => serve_targets(stream, &args),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    Err(e) => panic!("discovery endpoint: {e}"),
                }
            }
        });
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for PodDiscovery {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answers one HTTP request with the target groups of every container port of every pod in
/// [`NAMESPACE`], as Kubernetes SD role `pod` labels them.
fn serve_targets(mut stream: std::net::TcpStream, kubectl_args: &[String]) {
    use std::io::{Read, Write};
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = [0u8; 4096];
    let _ = stream.read(&mut head);
    let listed = Command::new("kubectl")
        .args(kubectl_args)
        .args(["-n", NAMESPACE, "get", "pods", "-o", "json"])
        .stdin(Stdio::null())
        .output();
    let (status, body) = match listed {
        Ok(out) if out.status.success() => {
            let pods: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            ("200 OK", target_groups(&pods).to_string())
        }
        Ok(out) => (
            "500 Internal Server Error",
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ),
        Err(e) => ("500 Internal Server Error", e.to_string()),
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
}

fn target_groups(pods: &Value) -> Value {
    let mut groups = Vec::new();
    for pod in pods["items"].as_array().into_iter().flatten() {
        let (Some(ip), Some(name)) = (
            pod["status"]["podIP"].as_str(),
            pod["metadata"]["name"].as_str(),
        ) else {
            continue;
        };
        let mut base = serde_json::Map::new();
        base.insert("__meta_kubernetes_namespace".into(), NAMESPACE.into());
        base.insert("__meta_kubernetes_pod_name".into(), name.into());
        base.insert("__meta_kubernetes_pod_ip".into(), ip.into());
        base.insert(
            "__meta_kubernetes_pod_node_name".into(),
            pod["spec"]["nodeName"].clone(),
        );
        for (k, v) in pod["metadata"]["labels"].as_object().into_iter().flatten() {
            let key: String = k
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            base.insert(format!("__meta_kubernetes_pod_label_{key}"), v.clone());
        }
        for container in pod["spec"]["containers"].as_array().into_iter().flatten() {
            for port in container["ports"].as_array().into_iter().flatten() {
                let mut labels = base.clone();
                labels.insert(
                    "__meta_kubernetes_pod_container_name".into(),
                    container["name"].clone(),
                );
                labels.insert(
                    "__meta_kubernetes_pod_container_port_name".into(),
                    port["name"].clone(),
                );
                groups.push(serde_json::json!({
                    "targets": [format!("{ip}:{}", port["containerPort"])],
                    "labels": labels,
                }));
            }
        }
    }
    Value::Array(groups)
}

/// Scrape config equivalent to the chart's ServiceMonitor (job = the Service's name; namespace,
/// pod and the `node` label the alerts need) over the pods [`PodDiscovery`] finds.
fn prometheus_config(discovery: &PodDiscovery) -> String {
    format!(
        r#"global:
  scrape_interval: 2s
  scrape_timeout: 2s
  evaluation_interval: 2s
rule_files: ["rules/*.yaml"]
scrape_configs:
  - job_name: kube-netprobe
    http_sd_configs:
      - url: http://{addr}/targets
        refresh_interval: 2s
    relabel_configs:
      - source_labels: [__meta_kubernetes_pod_label_app_kubernetes_io_name, __meta_kubernetes_pod_container_port_name]
        regex: kube-netprobe;metrics
        action: keep
      - source_labels: [__meta_kubernetes_namespace]
        target_label: namespace
      - source_labels: [__meta_kubernetes_pod_name]
        target_label: pod
      - source_labels: [__meta_kubernetes_pod_node_name]
        target_label: node
      - target_label: job
        replacement: {RELEASE}
"#,
        addr = discovery.addr,
    )
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
fn wait_firing(prom: &Prometheus, name: &str, labels: &[(&str, &str)]) -> Vec<Active> {
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

/// Waits until nothing fires after a fault is healed, but what still looks back at it: the SLO
/// burn-rate alerts (windows of 5 minutes to 3 days: the budget spent stays spent) and the
/// [`WINDOWED`] alerts naming a culprit of this or an earlier scenario (DNSLookupsAtFiveSeconds
/// keeps counting the lookups that took 5 s during the fault for 15 minutes).
fn wait_quiet(prom: &Prometheus, after: &str, earlier: &[String], culprit: &str) {
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
fn nothing_fires(prom: &Prometheus, what: &str, span: Duration, mut during: impl FnMut() -> bool) {
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

// ---------------------------------------------------------------------------------------------
// Probes

/// What every pod must see on a healthy cluster, as failures (empty: green).
fn green_failures(cluster: &Cluster) -> Vec<String> {
    let pods = cluster.netprobe_pods();
    let mut failures = Vec::new();
    if pods.len() != cluster.nodes.len() {
        failures.push(format!("kube-netprobe pods on {:?}", pods.keys()));
    }
    let dns_pods = cluster.dns_pods();
    let service = format!("{}:53", cluster.env["DNS_IP"]);
    for (node, (pod, ip)) in &pods {
        let m = match scrape(*ip) {
            Ok(m) => m,
            Err(e) => {
                failures.push(format!("{node}: {e}"));
                continue;
            }
        };
        let mut expect = |name: &str, labels: &[(&str, &str)]| match m.get(name, labels) {
            Some(1.0) => {}
            other => failures.push(format!(
                "{node} ({pod}): {} = {other:?}, want 1",
                crate::util::selector(name, labels)
            )),
        };
        for q in QUERIES {
            expect(
                "netprobe_dns_probe_success",
                &[("server", "system"), ("name", q)],
            );
            expect(
                "netprobe_dns_probe_success",
                &[("server", &service), ("name", q)],
            );
            for (dns, _) in &dns_pods {
                expect(
                    "netprobe_dns_probe_success",
                    &[("server", &format!("coredns/{dns}")), ("name", q)],
                );
            }
        }
        for other in cluster.nodes.iter().filter(|n| *n != node) {
            for p in PROTOCOLS {
                expect(
                    "netprobe_peer_probe_success",
                    &[("target_node", other), ("protocol", p)],
                );
            }
        }
        expect("netprobe_apiserver_probe_success", &[("path", "direct")]);
        expect("netprobe_apiserver_probe_success", &[("path", "dns")]);
        expect("netprobe_storage_probe_success", &[("volume", "scratch")]);
        expect("netprobe_icmp_available", &[]);
    }
    failures
}

fn wait_green(cluster: &Cluster, after: &str) {
    poll_every(
        &format!("every probe on every node to succeed ({after})"),
        WAIT,
        Duration::from_secs(3),
        || {
            let failures = green_failures(cluster);
            if failures.is_empty() {
                Ok(())
            } else {
                Err(failures.join("\n    "))
            }
        },
    );
}

fn wait_daemonset(cluster: &Cluster) {
    poll_every(
        "the DaemonSet rolled out and Ready on every node",
        WAIT,
        EVERY,
        || {
            let ds = cluster.json(&["-n", NAMESPACE, "get", "daemonset", RELEASE]);
            let s = &ds["status"];
            let want = cluster.nodes.len() as u64;
            let ok = s["desiredNumberScheduled"] == want
                && s["numberReady"] == want
                && s["updatedNumberScheduled"] == want
                && s["numberAvailable"] == want
                && s["observedGeneration"] == ds["metadata"]["generation"];
            if ok { Ok(()) } else { Err(s.to_string()) }
        },
    );
}

/// A fault in place: undone when dropped, also when a check panics, so the next scenario (and
/// the next test) starts from a healthy cluster.
struct Fault<'a> {
    heal: Box<dyn FnMut() + 'a>,
    /// When the fault was made (Unix seconds): alerts active since before are another
    /// incident's.
    since: f64,
}

impl<'a> Fault<'a> {
    fn new(make: impl FnOnce(), heal: impl FnMut() + 'a) -> Self {
        let since = unix_now();
        make();
        Self {
            heal: Box::new(heal),
            since,
        }
    }

    /// Alerts this fault raised: firing, and gone pending after it was made.
    fn raised(&self, alerts: &[Active]) -> Vec<Active> {
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
fn pages(checks: &mut Checks, am: &Alertmanager, fault: &Fault, culprits: &[&str]) {
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

fn unix_now() -> f64 {
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
fn only_culprits_named(
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

// ---------------------------------------------------------------------------------------------
// diagnose

struct Report {
    code: i32,
    json: Value,
    stdout: String,
}

impl Report {
    /// Findings as `severity id: title`.
    fn findings(&self) -> Vec<String> {
        self.json["findings"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| {
                format!(
                    "{} {}: {}",
                    f["severity"].as_str().unwrap_or_default(),
                    f["id"].as_str().unwrap_or_default(),
                    f["title"].as_str().unwrap_or_default()
                )
            })
            .collect()
    }

    fn has(&self, id: &str, title_contains: &str) -> bool {
        self.json["findings"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|f| {
                f["id"] == id
                    && f["title"]
                        .as_str()
                        .is_some_and(|t| t.contains(title_contains))
            })
    }

    /// Critical findings whose title names one of `nodes`.
    fn critical_naming(&self, nodes: &[&String]) -> Vec<String> {
        self.findings()
            .into_iter()
            .filter(|f| f.starts_with("critical") && nodes.iter().any(|n| f.contains(n.as_str())))
            .collect()
    }
}

fn diagnose(cluster: &Cluster, extra: &[&str]) -> Report {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("report");
    let out = Command::new(bin())
        .arg("diagnose")
        .arg(format!("--kubeconfig={}", cluster.kubeconfig()))
        .args([
            "--namespace",
            "default",
            "--format",
            "json",
            "--timeout",
            "10s",
        ])
        .arg("--out")
        .arg(&out_dir)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run diagnose");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let text = std::fs::read_to_string(out_dir.join("report.json")).unwrap_or_else(|e| {
        panic!(
            "diagnose wrote no report.json ({e}); exit {:?}\n{stdout}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let json: Value = serde_json::from_str(&text).expect("report.json parses");
    let report = Report {
        code: out.status.code().unwrap_or(-1),
        json,
        stdout,
    };
    log(format!(
        "diagnose exit {}:\n    {}",
        report.code,
        report.findings().join("\n    ")
    ));
    report
}

// ---------------------------------------------------------------------------------------------
// The tests

/// Install, green, Prometheus, then each scenario in turn on the same cluster and Prometheus
/// (its history is part of what the alerts read).
#[test]
#[ignore = "needs root and the real cluster (minutes): make e2e"]
fn chart_on_kubelets_green_then_faults_named_and_churn_silent() {
    let cluster = Cluster::get();
    assert_eq!(cluster.nodes.len(), 3, "the scenarios below assume 3 nodes");
    let started = Instant::now();

    log("helm install with the chart's defaults (image: the local one)");
    helm_upgrade(&cluster, &[]);
    wait_daemonset(&cluster);
    wait_green(&cluster, "after install");
    log("every probe green on every node");

    let dir = tempfile::tempdir().expect("tempdir");
    let token = prometheus_token(&cluster, dir.path());
    let discovery = PodDiscovery::start(&cluster, &token);
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
    // Rules need a few evaluations over the fresh series.
    nothing_fires(&prom, "a healthy cluster", Duration::from_secs(30), || true);
    log("Prometheus scrapes every pod; no alert fires");
    let report = diagnose(&cluster, &[]);
    assert!(
        report.code <= 1
            && report
                .critical_naming(&cluster.nodes.iter().collect::<Vec<_>>())
                .is_empty(),
        "diagnose on a healthy cluster: exit {}\n{}",
        report.code,
        report.stdout
    );

    let churn_since = unix_now();
    rollout_raises_nothing(&cluster, &prom);
    drain_raises_nothing(&cluster, &prom);
    let churn = am.firing_since(churn_since);
    assert!(
        churn.is_empty(),
        "a rollout and a drain sent notifications:\n{}",
        churn
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
    log("the rollout and the drain sent no notification");
    let mut culprits = vec![dns_pod_refusing_is_named(&cluster, &prom, &am)];
    culprits.push(kube_proxy_down_is_named(&cluster, &prom, &am, &culprits));
    isolated_node_is_named(&cluster, &prom, &am, &culprits);
    log(format!("all scenarios in {:.0?}", started.elapsed()));
}

/// `helm upgrade` with a changed config rolls every pod; nothing fires.
fn rollout_raises_nothing(cluster: &Cluster, prom: &Prometheus) {
    log("rollout: helm upgrade with a changed config");
    let before = cluster.netprobe_pods();
    helm_upgrade(cluster, &["--set", "config.dns.interval=10s"]);
    let mut rolled = false;
    nothing_fires(prom, "a DaemonSet rollout", Duration::from_secs(40), || {
        if !rolled {
            let now = cluster.netprobe_pods();
            rolled = now.len() == cluster.nodes.len()
                && now
                    .iter()
                    .all(|(node, (pod, _))| before.get(node).is_none_or(|(b, _)| b != pod));
            return false;
        }
        green_failures(cluster).is_empty()
    });
    wait_daemonset(cluster);
    log("rollout done, green, nothing fired");
}

/// A node cordoned and drained leaves the others' peer lists; nothing fires; uncordoned, it
/// comes back.
fn drain_raises_nothing(cluster: &Cluster, prom: &Prometheus) {
    let node = cluster.nodes[2].clone();
    log(format!("drain {node}"));
    cluster.kubectl(&[
        "drain",
        &node,
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=120s",
    ]);
    let others: Vec<IpAddr> = cluster
        .netprobe_pods()
        .iter()
        .filter(|(n, _)| **n != node)
        .map(|(_, (_, ip))| *ip)
        .collect();
    let mut left = false;
    nothing_fires(prom, "a drain", Duration::from_secs(30), || {
        left = others.iter().all(|ip| {
            // The requests counter exists from the moment a peer is a target until it goes.
            scrape(*ip).is_ok_and(|m| {
                m.series("netprobe_peer_requests_total", &[("target_node", &node)])
                    .is_empty()
            })
        });
        left
    });
    assert!(left, "{node} still probed by its peers after the drain");
    cluster.kubectl(&["uncordon", &node]);
    wait_green(cluster, "after uncordon");
    log(format!("{node} drained and back; nothing fired"));
}

/// One DNS pod answers REFUSED: DNSReplicaFailing names that pod, and so does diagnose.
/// Returns the culprit as alerts name it (`coredns/<pod>`).
fn dns_pod_refusing_is_named(cluster: &Cluster, prom: &Prometheus, am: &Alertmanager) -> String {
    let (pod, _) = cluster.dns_pods().into_iter().next().expect("a DNS pod");
    log(format!("fault: {pod} refuses"));
    let exec = |word: &str| {
        cluster.kubectl(&["-n", "kube-system", "exec", &pod, "--", "fault", word]);
    };
    let fault = Fault::new(|| exec("refuse"), || exec("heal"));
    let server = format!("coredns/{pod}");
    let alerts = wait_firing(prom, "DNSReplicaFailing", &[("server", &server)]);
    let mut checks = Checks::default();
    for a in fault.raised(&alerts) {
        checks.that(
            a.name != "DNSReplicaFailing" || a.label("server") == server,
            format!("a healthy DNS pod named: {a}"),
        );
    }
    let report = diagnose(cluster, &[]);
    checks.that(
        report.has("dns.replica-failing", &pod),
        format!("diagnose names {pod}:\n{}", report.findings().join("\n")),
    );
    pages(&mut checks, am, &fault, &[&server]);
    checks.finish("a DNS pod refusing");
    drop(fault);
    wait_quiet(prom, "the DNS pod healed", &[], &server);
    log(format!("{pod}: named by the alert and diagnose, healed"));
    server
}

/// kube-proxy stopped and its rules flushed on one node: Services (kube-dns, kubernetes) fail
/// from that node only, while the DNS pods answer it directly. Returns the culprit node.
fn kube_proxy_down_is_named(
    cluster: &Cluster,
    prom: &Prometheus,
    am: &Alertmanager,
    earlier: &[String],
) -> String {
    let node = cluster.nodes[1].clone();
    let index = cluster.index(&node);
    log(format!("fault: kube-proxy stopped on {node}"));
    let fault = Fault::new(
        || cluster.script(&["kube-proxy", &index, "stop"]),
        || cluster.script(&["kube-proxy", &index, "start"]),
    );
    // One alert names the cause: Service IPs fail on the node while the DNS pods answer it
    // by pod IP. (Its DNS and API-server alerts fire too; the Alertmanager holds them back.)
    let alerts = wait_firing(prom, "NetworkServiceFailing", &[("node", &node)]);
    let mut checks = Checks::default();
    only_culprits_named(&mut checks, &fault, &alerts, &[&node], earlier);
    let report = diagnose(cluster, &[]);
    checks.that(
        report
            .findings()
            .iter()
            .any(|f| !f.starts_with("info") && f.contains(&node)),
        format!("diagnose names {node}:\n{}", report.findings().join("\n")),
    );
    let healthy: Vec<&String> = cluster.nodes.iter().filter(|n| **n != node).collect();
    checks.eq(
        "critical diagnose findings naming a healthy node",
        report.critical_naming(&healthy),
        Vec::<String>::new(),
    );
    pages(&mut checks, am, &fault, &[&node]);
    checks.finish("kube-proxy down on one node");
    drop(fault);
    wait_green(cluster, "kube-proxy restarted");
    wait_quiet(prom, "kube-proxy restarted", earlier, &node);
    log(format!("{node}: named by the alerts and diagnose, healed"));
    node
}

/// A node's network cut: it goes NotReady, and its peers keep probing its pod, so
/// NetworkNodeUnreachable names it after the API marks it NotReady too.
fn isolated_node_is_named(
    cluster: &Cluster,
    prom: &Prometheus,
    am: &Alertmanager,
    earlier: &[String],
) {
    let node = cluster.nodes[2].clone();
    let index = cluster.index(&node);
    log(format!("fault: {node}'s network cut"));
    let fault = Fault::new(
        || cluster.script(&["cut", &index]),
        || cluster.script(&["heal", &index]),
    );
    let cut_at = Instant::now();
    cluster.wait_node_ready(&node, false);
    log(format!("{node} NotReady after {:.0?}", cut_at.elapsed()));
    let not_ready_at = Instant::now();
    let alerts = wait_firing(prom, "NetworkNodeUnreachable", &[("target_node", &node)]);
    // Still firing, from series still there, well after NotReady (the old behaviour dropped
    // the node's peer at NotReady, and its series with it).
    std::thread::sleep(Duration::from_secs(30).saturating_sub(not_ready_at.elapsed()));
    let alerts_later = wait_firing(prom, "NetworkNodeUnreachable", &[("target_node", &node)]);
    let mut checks = Checks::default();
    only_culprits_named(&mut checks, &fault, &alerts, &[&node], earlier);
    only_culprits_named(&mut checks, &fault, &alerts_later, &[&node], earlier);
    let report = diagnose(cluster, &[]);
    checks.that(
        report.has("network.node-not-ready", &node),
        format!(
            "diagnose names {node} NotReady:\n{}",
            report.findings().join("\n")
        ),
    );
    let healthy: Vec<&String> = cluster.nodes.iter().filter(|n| **n != node).collect();
    checks.eq(
        "critical diagnose findings naming a healthy node",
        report.critical_naming(&healthy),
        Vec::<String>::new(),
    );
    pages(&mut checks, am, &fault, &[&node]);
    checks.finish("a node's network cut");
    drop(fault);
    cluster.wait_node_ready(&node, true);
    wait_green(cluster, "the node's network restored");
    wait_quiet(prom, "the node's network restored", earlier, &node);
    log(format!("{node}: named by the alert and diagnose, healed"));
}

/// `diagnose --storage-test` on the cluster: the PVC binds to a local PV once the Job's pod is
/// scheduled (WaitForFirstConsumer), the probe runs on a kubelet, its result is in the report,
/// and the PVC and Job are gone afterwards.
#[test]
#[ignore = "needs root and the real cluster (minutes): make e2e"]
fn diagnose_storage_test_completes_on_a_kubelet() {
    let cluster = Cluster::get();
    let image = format!("localhost/kube-netprobe:{}", env!("CARGO_PKG_VERSION"));
    let report = diagnose(
        &cluster,
        &[
            "--storage-test",
            "--storage-test-image",
            &image,
            "--storage-test-timeout",
            "120s",
        ],
    );
    let test = &report.json["storage_test"];
    let mut checks = Checks::default();
    checks.eq(
        "storage_test.status",
        test["status"].as_str(),
        Some("succeeded"),
    );
    checks.eq(
        "storage_test.probe.result",
        test["probe"]["result"].as_str(),
        Some("success"),
    );
    checks.eq(
        "storage_test.pvc_phase",
        test["pvc_phase"].as_str(),
        Some("Bound"),
    );
    checks.eq(
        "storage_test.cleanup_errors",
        test["cleanup_errors"].as_array().map(Vec::len),
        Some(0),
    );
    checks.that(
        !report
            .findings()
            .iter()
            .any(|f| f.contains("storage.test-")),
        format!("storage test findings: {:?}", report.findings()),
    );
    let ns = test["namespace"].as_str().unwrap_or("default").to_string();
    poll_every("the test PVC and Job to be gone", WAIT, EVERY, || {
        let pvcs = cluster.kubectl(&[
            "-n",
            &ns,
            "get",
            "pvc,job",
            "-l",
            "app.kubernetes.io/name=kube-netprobe-storage-test",
            "-o",
            "name",
        ]);
        if pvcs.trim().is_empty() {
            Ok(())
        } else {
            Err(pvcs)
        }
    });
    checks.finish("diagnose --storage-test on the cluster");
}
