//! A real `kube-apiserver` (1.20.2, built from Debian's `kubernetes` source package) with its own
//! `etcd`, both on 127.0.0.1, started by `scripts/kube-apiserver` in a tempdir and stopped on drop
//! (also when the test panics; if the test process is killed, the script's watchdog stops them).
//!
//! What it is: token auth and RBAC on, no scheduler, controllers or kubelet. Tests create Nodes and
//! Pods themselves and write their status through the status subresource ([`Apiserver::patch_status`]).
//! Two users: `admin` (group `system:masters`, used by the kubectl helpers) and
//! `system:serviceaccount:kube-netprobe:kube-netprobe` (groups `system:serviceaccounts`,
//! `system:serviceaccounts:kube-netprobe`, `system:authenticated`; no grants until a test applies a
//! ClusterRole/Binding), the identity the daemon uses through [`Apiserver::kubeconfig_netprobe`].
//!
//! Gotchas: a Pod with `spec.nodeName` only becomes terminating on a normal delete (nobody finishes
//! it): [`Apiserver::delete`] leaves it so, [`Apiserver::force_delete`] removes it. Namespaces never
//! finish deleting. EndpointSlice is only `discovery.k8s.io/v1beta1` in 1.20.

// Shared by suites; not every suite uses every helper.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kube-apiserver")
}

/// Builds (or finds in the cache) the kube-apiserver binary, once per test process.
fn build() -> &'static Result<PathBuf, String> {
    static BUILD: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILD.get_or_init(|| {
        let started = Instant::now();
        // stderr is inherited so a cold build (minutes) shows its progress.
        let out = Command::new(script())
            .arg("build")
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("running {}: {e}", script().display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} build failed: {}",
                script().display(),
                out.status
            ));
        }
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let took = started.elapsed();
        if took.as_secs() >= 5 {
            eprintln!("kube-apiserver built in {took:.0?}: {}", path.display());
        }
        Ok(path)
    })
}

fn run_script(args: &[&str]) -> Output {
    let out = Command::new(script())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {} {args:?}: {e}", script().display()));
    if !out.status.success() {
        panic!(
            "{} {args:?} failed ({}):\n{}",
            script().display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// A running kube-apiserver + etcd. Stops both on drop.
pub struct Apiserver {
    env: BTreeMap<String, String>,
    // Dropped after `Drop::drop` has stopped the processes that use it.
    dir: tempfile::TempDir,
}

impl Apiserver {
    /// Builds once per process (minutes when the cache is cold), then starts etcd and the
    /// apiserver (a few seconds). Needs root (the build installs packages and caches under
    /// /var/cache): the tests using it are `#[ignore]`d, and run as root with `--ignored`.
    /// Panics when the build or start fails.
    pub fn start() -> Apiserver {
        assert!(
            crate::util::is_root(),
            "the kube-apiserver fixture needs root (apt-get, cache in /var/cache); run the \
             ignored tests as root, or `sudo scripts/kube-apiserver build` first"
        );
        if let Err(e) = build() {
            panic!("kube-apiserver unavailable: {e}");
        }
        let dir = tempfile::Builder::new()
            .prefix("kube-apiserver-")
            .tempdir()
            .expect("tempdir");
        let dir_str = dir.path().to_str().expect("utf-8 tempdir").to_owned();
        let out = Command::new(script())
            .args(["start", &dir_str])
            .env("KUBE_APISERVER_OWNER_PID", std::process::id().to_string())
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/kube-apiserver start");
        if !out.status.success() {
            // Leave nothing behind even if the script's own cleanup missed something.
            let _ = Command::new(script()).args(["stop", &dir_str]).output();
            panic!(
                "scripts/kube-apiserver start failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut api = Apiserver {
            env: BTreeMap::new(),
            dir,
        };
        api.reload_env();
        api
    }

    fn reload_env(&mut self) {
        let text = std::fs::read_to_string(self.dir.path().join("env")).expect("read DIR/env");
        self.env = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
    }

    fn var(&self, key: &str) -> &str {
        self.env
            .get(key)
            .unwrap_or_else(|| panic!("{key} missing from DIR/env"))
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        self.var("APISERVER_URL")
    }

    pub fn port(&self) -> u16 {
        self.var("APISERVER_PORT").parse().expect("APISERVER_PORT")
    }

    /// PEM of the CA that signed the serving cert (which covers 127.0.0.1, 10.96.0.1, localhost,
    /// kubernetes, kubernetes.default, kubernetes.default.svc).
    pub fn ca_file(&self) -> &Path {
        Path::new(self.var("CA_FILE"))
    }

    pub fn admin_token(&self) -> &str {
        self.var("ADMIN_TOKEN")
    }

    pub fn netprobe_token(&self) -> &str {
        self.var("NETPROBE_TOKEN")
    }

    pub fn kubeconfig_admin(&self) -> &Path {
        Path::new(self.var("KUBECONFIG_ADMIN"))
    }

    pub fn kubeconfig_netprobe(&self) -> &Path {
        Path::new(self.var("KUBECONFIG_NETPROBE"))
    }

    pub fn apiserver_pid(&self) -> u32 {
        self.var("APISERVER_PID").parse().expect("APISERVER_PID")
    }

    pub fn etcd_pid(&self) -> u32 {
        self.var("ETCD_PID").parse().expect("ETCD_PID")
    }

    /// The state directory (logs: `apiserver.log`, `etcd.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last `lines` lines of the apiserver's log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text =
            std::fs::read_to_string(self.dir.path().join("apiserver.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Runs `kubectl` with `kubeconfig`, optionally feeding `stdin`; never panics on exit status.
    pub fn kubectl_with(&self, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
        crate::util::kubectl(kubeconfig, args, stdin)
    }

    /// `kubectl ARGS` as admin; panics with stderr on failure.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_checked(args, None)
    }

    fn kubectl_checked(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let out = self.kubectl_with(self.kubeconfig_admin(), args, stdin);
        if !out.status.success() {
            panic!(
                "kubectl {args:?} failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        out
    }

    /// `kubectl ARGS` as the netprobe user; returns whatever happened (e.g. Forbidden).
    pub fn kubectl_netprobe(&self, args: &[&str]) -> Output {
        self.kubectl_with(self.kubeconfig_netprobe(), args, None)
    }

    /// `kubectl get ARGS -o json`, parsed.
    pub fn get_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let out = self.kubectl(&all);
        serde_json::from_slice(&out.stdout).expect("kubectl get -o json output")
    }

    /// `kubectl apply -f -` of one or more YAML documents.
    pub fn apply(&self, yaml: &str) {
        self.kubectl_checked(&["apply", "-f", "-"], Some(yaml));
    }

    /// Merge-patches the status subresource, e.g.
    /// `patch_status("pods", "default", "p1", r#"{"status":{"podIP":"10.0.0.2"}}"#)`.
    /// `namespace` is "" for cluster-scoped kinds (nodes).
    pub fn patch_status(&self, kind_plural: &str, namespace: &str, name: &str, json: &str) {
        let mut args = vec![
            "patch",
            kind_plural,
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            json,
        ];
        if !namespace.is_empty() {
            args.extend_from_slice(&["-n", namespace]);
        }
        self.kubectl(&args);
    }

    /// A normal delete that does not wait: a Pod bound to a node stays, terminating (with
    /// `deletionTimestamp`), as it would until its kubelet confirmed. `namespace` "" when
    /// cluster-scoped.
    pub fn delete(&self, kind: &str, namespace: &str, name: &str) {
        self.delete_with(kind, namespace, name, &[]);
    }

    /// Deletes at once (`--grace-period=0 --force`): the object is gone when this returns.
    pub fn force_delete(&self, kind: &str, namespace: &str, name: &str) {
        self.delete_with(kind, namespace, name, &["--grace-period=0", "--force"]);
    }

    fn delete_with(&self, kind: &str, namespace: &str, name: &str, extra: &[&str]) {
        let mut args = vec!["delete", kind, name, "--wait=false"];
        if !namespace.is_empty() {
            args.extend_from_slice(&["-n", namespace]);
        }
        args.extend_from_slice(extra);
        self.kubectl(&args);
    }

    /// Stops only the apiserver (etcd keeps the data); clients see connection refused until
    /// [`Apiserver::start_apiserver`].
    pub fn stop_apiserver(&self) {
        run_script(&["stop-apiserver", self.dir_str()]);
    }

    /// Starts the apiserver again on the same port with the same etcd, and waits until ready.
    pub fn start_apiserver(&mut self) {
        run_script(&["start-apiserver", self.dir_str()]);
        self.reload_env();
    }

    /// [`Apiserver::stop_apiserver`] then [`Apiserver::start_apiserver`].
    pub fn restart(&mut self) {
        run_script(&["restart", self.dir_str()]);
        self.reload_env();
    }

    fn dir_str(&self) -> &str {
        self.dir.path().to_str().expect("utf-8 tempdir")
    }
}

impl Drop for Apiserver {
    fn drop(&mut self) {
        match Command::new(script())
            .args(["stop", self.dir_str()])
            .stdin(Stdio::null())
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "scripts/kube-apiserver stop failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("scripts/kube-apiserver stop: {e}"),
        }
    }
}

const NODE: &str = r#"
apiVersion: v1
kind: Node
metadata:
  name: selftest-node
  labels: {kubernetes.io/hostname: selftest-node}
"#;

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: selftest-pod
  namespace: default
  labels: {app: kube-netprobe}
spec:
  nodeName: selftest-node
  containers:
  - name: netprobe
    image: kube-netprobe:test
"#;

const CSI: &str = r#"
apiVersion: storage.k8s.io/v1
kind: CSIDriver
metadata:
  name: selftest.csi.example.com
spec:
  attachRequired: false
  podInfoOnMount: true
---
apiVersion: storage.k8s.io/v1
kind: CSINode
metadata:
  name: selftest-node
spec:
  drivers:
  - name: selftest.csi.example.com
    nodeID: selftest-node
    topologyKeys: [topology.kubernetes.io/zone]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: selftest
  namespace: default
spec:
  podSelector: {matchLabels: {app: kube-netprobe}}
  ingress:
  - ports: [{port: 9100, protocol: TCP}]
"#;

#[test]
#[ignore = "needs root: a kube-apiserver of its own (apt-get, /var/cache)"]
fn apiserver_serves_core_storage_and_networking() {
    let mut api = Apiserver::start();
    let mut checks = crate::util::Checks::default();

    api.apply(NODE);
    api.patch_status(
        "nodes",
        "",
        "selftest-node",
        r#"{"status":{"conditions":[{"type":"Ready","status":"True","reason":"KubeletReady",
            "lastHeartbeatTime":"2026-01-01T00:00:00Z","lastTransitionTime":"2026-01-01T00:00:00Z"}],
            "addresses":[{"type":"InternalIP","address":"10.200.0.1"}]}}"#,
    );
    api.apply(POD);
    api.patch_status(
        "pods",
        "default",
        "selftest-pod",
        r#"{"status":{"phase":"Running","podIP":"10.200.0.10",
            "podIPs":[{"ip":"10.200.0.10"},{"ip":"fd00::10"}],
            "conditions":[{"type":"Ready","status":"True"}]}}"#,
    );
    api.apply(CSI);

    let node = api.get_json(&["node", "selftest-node"]);
    checks.eq(
        "node Ready",
        node["status"]["conditions"][0]["status"].as_str(),
        Some("True"),
    );
    let pod = api.get_json(&["pod", "selftest-pod", "-n", "default"]);
    checks.eq(
        "pod nodeName",
        pod["spec"]["nodeName"].as_str(),
        Some("selftest-node"),
    );
    checks.eq(
        "pod phase",
        pod["status"]["phase"].as_str(),
        Some("Running"),
    );
    checks.eq(
        "pod podIP",
        pod["status"]["podIP"].as_str(),
        Some("10.200.0.10"),
    );
    checks.eq(
        "pod podIPs[1]",
        pod["status"]["podIPs"][1]["ip"].as_str(),
        Some("fd00::10"),
    );
    checks.eq(
        "pod Ready",
        pod["status"]["conditions"][0]["status"].as_str(),
        Some("True"),
    );
    let driver = api.get_json(&["csidriver", "selftest.csi.example.com"]);
    checks.eq(
        "csidriver podInfoOnMount",
        driver["spec"]["podInfoOnMount"].as_bool(),
        Some(true),
    );
    let csinode = api.get_json(&["csinode", "selftest-node"]);
    checks.eq(
        "csinode driver",
        csinode["spec"]["drivers"][0]["name"].as_str(),
        Some("selftest.csi.example.com"),
    );
    let netpol = api.get_json(&["networkpolicy", "selftest", "-n", "default"]);
    checks.eq(
        "networkpolicy port",
        netpol["spec"]["ingress"][0]["ports"][0]["port"].as_i64(),
        Some(9100),
    );

    // RBAC is on: the netprobe identity reads pods only once granted.
    let denied = api.kubectl_netprobe(&["get", "pods", "-A"]);
    checks.that(
        !denied.status.success() && String::from_utf8_lossy(&denied.stderr).contains("Forbidden"),
        format!("netprobe user listed pods without a grant: {denied:?}"),
    );
    api.apply(
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: selftest-pod-reader}
rules:
- {apiGroups: [""], resources: [pods, nodes], verbs: [get, list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: selftest-pod-reader}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: selftest-pod-reader}
subjects:
- {kind: ServiceAccount, name: kube-netprobe, namespace: kube-netprobe}
"#,
    );
    // RBAC changes apply through an informer: allow it a moment.
    let allowed = crate::util::poll(
        "netprobe user may list pods",
        std::time::Duration::from_secs(10),
        || {
            let out = api.kubectl_netprobe(&["get", "pods", "-A", "-o", "name"]);
            if out.status.success() {
                Ok(String::from_utf8_lossy(&out.stdout).into_owned())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        },
    );
    checks.that(
        allowed.contains("pod/selftest-pod"),
        format!("netprobe user's pod list lacks selftest-pod: {allowed}"),
    );

    // The data lives in etcd: it survives an apiserver restart on the same port.
    let port = api.port();
    api.restart();
    checks.eq("port after restart", api.port(), port);
    let pod = api.get_json(&["pod", "selftest-pod", "-n", "default"]);
    checks.eq(
        "podIP after restart",
        pod["status"]["podIP"].as_str(),
        Some("10.200.0.10"),
    );

    // A bound pod only turns terminating on a normal delete; force removes it.
    api.delete("pod", "default", "selftest-pod");
    let pod = api.get_json(&["pod", "selftest-pod", "-n", "default"]);
    checks.that(
        pod["metadata"]["deletionTimestamp"].is_string(),
        "deleted pod has no deletionTimestamp",
    );
    api.force_delete("pod", "default", "selftest-pod");
    let left = api.kubectl(&["get", "pods", "-n", "default", "-o", "name"]);
    checks.eq(
        "pods left",
        String::from_utf8_lossy(&left.stdout).trim(),
        "",
    );

    checks.finish(&format!(
        "apiserver self-test; log tail:\n{}",
        api.log_tail(20)
    ));
}
