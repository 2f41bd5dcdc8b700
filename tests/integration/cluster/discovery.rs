//! A Prometheus outside the cluster that scrapes the DaemonSet's pods, found through the API
//! server as `kubernetes_sd_configs` would find them.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::util::poll_every;

use super::{Cluster, EVERY, NAMESPACE, RELEASE, WAIT};

/// A service account `monitoring/prometheus` allowed to list and watch pods, and its token
/// (what a Prometheus in the cluster would discover with).
pub(super) fn prometheus_token(cluster: &Cluster, dir: &Path) -> PathBuf {
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
pub(super) struct PodDiscovery {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PodDiscovery {
    pub(super) fn start(cluster: &Cluster, token: &Path) -> Self {
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
pub(super) fn prometheus_config(discovery: &PodDiscovery) -> String {
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
