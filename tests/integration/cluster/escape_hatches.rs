//! The chart as a platform team installs it, on the real kubelets: every escape hatch of
//! `helm/kube-netprobe/ci/escape-hatches-values.yaml` at once (a mirror registry and its pull
//! secret, a namespace of its own, labels, security contexts changed key by key with a Localhost
//! seccomp profile, extra env, args and volumes, OnDelete updates, the ServiceMonitor and
//! PrometheusRule in another namespace with alerts turned off and relabelled). The render, the
//! schema and a server-side dry-run of the same file are in chart.rs; here the pods must run
//! with it, probe each other and show each hatch where a user would look for it.
//!
//! What the values file assumes a platform already has is made first, as that platform would:
//! the namespaces, the `corp-ca` ConfigMap, prometheus-operator's kinds, the image under the
//! mirror's name on every node (tagged in each node's containerd: nothing can be pulled here)
//! and the seccomp profile in each kubelet's profile directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use super::helm::helm;
use super::{Cluster, EVERY, WAIT, pods_by_node, repo, scrape};
use crate::util::poll_every;

const RELEASE: &str = "escape";
/// The values file's `namespaceOverride`, and where it puts the ServiceMonitor and the rules.
const NAMESPACE: &str = "netprobe-system";
const MONITORING: &str = "monitoring";
/// The values file's `global.imageRegistry` in front of the chart's repository path.
const MIRROR_IMAGE: &str = "registry.example.com:5000/kube-netprobe/kube-netprobe";
/// A profile that allows what the daemon does and refuses what it never needs, so a profile
/// that is not applied at all would go unnoticed only if the daemon also never needed these.
const SECCOMP_PROFILE: &str = r#"{
  "defaultAction": "SCMP_ACT_ALLOW",
  "syscalls": [
    { "names": ["ptrace", "kexec_load", "init_module", "finit_module", "delete_module",
                "mount", "umount2", "pivot_root", "swapon", "swapoff", "reboot"],
      "action": "SCMP_ACT_ERRNO" }
  ]
}"#;

fn values_file() -> PathBuf {
    repo().join("helm/kube-netprobe/ci/escape-hatches-values.yaml")
}

fn values() -> Value {
    serde_saphyr::from_str(&std::fs::read_to_string(values_file()).expect("values file"))
        .expect("the escape-hatch values parse")
}

/// Removes the release and everything made for it, also when a check fails, so that the next
/// test and `scripts/cluster down` find the cluster as the main suite left it.
struct Installed<'a> {
    cluster: &'a Cluster,
    node_dirs: Vec<PathBuf>,
}

impl Drop for Installed<'_> {
    fn drop(&mut self) {
        let _ = Command::new(helm())
            .args(["uninstall", RELEASE, "--namespace", NAMESPACE, "--wait"])
            .arg(format!("--kubeconfig={}", self.cluster.kubeconfig()))
            .args(["--timeout", "120s"])
            .stdin(Stdio::null())
            .output();
        let _ = self.cluster.kubectl_in(
            &[
                "delete",
                "namespace",
                NAMESPACE,
                MONITORING,
                "--ignore-not-found",
                "--wait=true",
                "--timeout=120s",
            ],
            None,
        );
        let _ = self.cluster.kubectl_in(
            &[
                "delete",
                "crd",
                "servicemonitors.monitoring.coreos.com",
                "prometheusrules.monitoring.coreos.com",
                "--ignore-not-found",
            ],
            None,
        );
        for dir in &self.node_dirs {
            let _ = std::fs::remove_file(dir.join("kubelet/seccomp/profiles/kube-netprobe.json"));
        }
    }
}

/// `ctr` against node `dir`'s containerd, in the namespace the kubelet uses.
fn ctr(dir: &Path, args: &[&str]) {
    let out = Command::new("ctr")
        .arg("--address")
        .arg(dir.join("containerd/containerd.sock"))
        .args(["-n", "k8s.io"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ctr");
    assert!(
        out.status.success(),
        "ctr {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What the platform provides before the install.
fn prepare(cluster: &Cluster, node_dirs: &[PathBuf]) {
    let version = env!("CARGO_PKG_VERSION");
    for dir in node_dirs {
        ctr(
            dir,
            &[
                "images",
                "tag",
                "--force",
                &format!("localhost/kube-netprobe:{version}"),
                &format!("{MIRROR_IMAGE}:{version}"),
            ],
        );
        let profiles = dir.join("kubelet/seccomp/profiles");
        std::fs::create_dir_all(&profiles).expect("the kubelet's seccomp profile directory");
        std::fs::write(profiles.join("kube-netprobe.json"), SECCOMP_PROFILE)
            .expect("write the seccomp profile");
    }
    cluster.apply(crate::chart::OPERATOR_KINDS);
    let mut platform = String::new();
    for ns in [NAMESPACE, MONITORING] {
        platform.push_str(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{ name: {ns} }}\n---\n\
             apiVersion: v1\nkind: ConfigMap\nmetadata: {{ name: corp-ca, namespace: {ns} }}\n\
             data: {{ ca.crt: \"the platform's CA bundle\" }}\n---\n"
        ));
    }
    cluster.apply(&platform);
    // The CRDs must be served before helm creates their objects.
    poll_every("the operator kinds are served", WAIT, EVERY, || {
        let out = cluster.kubectl_in(&["get", "servicemonitors,prometheusrules", "-A"], None);
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    });
}

fn install(cluster: &Cluster) {
    let out = Command::new(helm())
        .args(["upgrade", "--install", RELEASE])
        .arg(repo().join("helm/kube-netprobe"))
        .arg(format!("--kubeconfig={}", cluster.kubeconfig()))
        .arg("--values")
        .arg(values_file())
        .stdin(Stdio::null())
        .output()
        .expect("run helm");
    assert!(
        out.status.success(),
        "helm upgrade --install with the escape-hatch values: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The release's pods, once one runs Ready on every node: node → pod.
fn ready_pods(cluster: &Cluster) -> BTreeMap<String, Value> {
    poll_every(
        "the escape-hatch DaemonSet Ready on every node",
        WAIT,
        EVERY,
        || {
            let list = cluster.json(&[
                "-n",
                NAMESPACE,
                "get",
                "pods",
                "-l",
                &format!("app.kubernetes.io/instance={RELEASE}"),
            ]);
            let pods: BTreeMap<String, Value> = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .filter_map(|p| Some((p["spec"]["nodeName"].as_str()?.to_string(), p.clone())))
                .collect();
            let ready = |p: &Value| {
                p["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            };
            if pods.len() == cluster.nodes.len() && pods.values().all(ready) {
                Ok(pods)
            } else {
                // The waiting reason (CreateContainerError: seccomp profile …) says why.
                let states: Vec<String> = pods
                    .values()
                    .map(|p| {
                        format!(
                            "{}: {}",
                            p["metadata"]["name"], p["status"]["containerStatuses"][0]["state"]
                        )
                    })
                    .collect();
                Err(format!(
                    "{} of {} pods: {states:?}",
                    pods.len(),
                    cluster.nodes.len()
                ))
            }
        },
    )
}

#[test]
#[ignore = "needs the real cluster (scripts/e2e brings it up)"]
fn chart_with_every_escape_hatch_runs_on_kubelets() {
    let cluster = Cluster::get();
    let cluster_dir = PathBuf::from(&cluster.env["CLUSTER_DIR"]);
    let node_dirs: Vec<PathBuf> = (1..=cluster.nodes.len())
        .map(|i| cluster_dir.join(format!("nodes/n{i}")))
        .collect();
    let _installed = Installed {
        cluster: &cluster,
        node_dirs: node_dirs.clone(),
    };
    let values = values();
    prepare(&cluster, &node_dirs);
    install(&cluster);
    let pods = ready_pods(&cluster);

    let ds = cluster.json(&[
        "-n",
        NAMESPACE,
        "get",
        "daemonset",
        "-l",
        &format!("app.kubernetes.io/instance={RELEASE}"),
    ]);
    let ds = &ds["items"][0];
    assert_eq!(ds["spec"]["updateStrategy"]["type"], "OnDelete");
    for (key, value) in values["commonLabels"].as_object().expect("commonLabels") {
        assert_eq!(
            &ds["metadata"]["labels"][key], value,
            "DaemonSet label {key}"
        );
    }

    for (node, pod) in &pods {
        let meta = &pod["metadata"];
        let spec = &pod["spec"];
        let container = &spec["containers"][0];
        // podLabels win over commonLabels on the pods.
        assert_eq!(
            meta["labels"]["team"], "sre",
            "{node}: podLabels over commonLabels"
        );
        assert_eq!(
            meta["labels"]["example.com/cost-center"], "platform",
            "{node}"
        );
        for (key, value) in values["podAnnotations"]
            .as_object()
            .expect("podAnnotations")
        {
            assert_eq!(&meta["annotations"][key], value, "{node}: annotation {key}");
        }
        assert_eq!(spec["imagePullSecrets"][0]["name"], "mirror-pull", "{node}");
        assert_eq!(
            container["image"],
            format!("{MIRROR_IMAGE}:{}", env!("CARGO_PKG_VERSION")),
            "{node}: the image through global.imageRegistry"
        );
        let args: Vec<&str> = container["args"]
            .as_array()
            .expect("args")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for extra in values["extraArgs"].as_array().expect("extraArgs") {
            assert!(
                args.contains(&extra.as_str().unwrap()),
                "{node}: {extra} in {args:?}"
            );
        }
        let env = container["env"].as_array().expect("env");
        for name in ["RUST_BACKTRACE", "HOST_IP"] {
            assert!(env.iter().any(|e| e["name"] == name), "{node}: env {name}");
        }
        assert!(
            container["volumeMounts"]
                .as_array()
                .expect("mounts")
                .iter()
                .any(|m| m["name"] == "corp-ca" && m["mountPath"] == "/etc/ssl/corp"),
            "{node}: the extra volume mounted"
        );
        let security = &container["securityContext"];
        assert_eq!(security["seccompProfile"]["type"], "Localhost", "{node}");
        assert!(
            security.get("privileged").is_none(),
            "{node}: null drops privileged"
        );
        // The hardened defaults the file did not change stay.
        assert_eq!(security["readOnlyRootFilesystem"], true, "{node}");
        assert_eq!(security["capabilities"]["drop"][0], "ALL", "{node}");
        assert_eq!(
            spec["securityContext"]["fsGroupChangePolicy"],
            "OnRootMismatch"
        );
        assert_eq!(spec["securityContext"]["supplementalGroups"][0], 4000);

        // --log-format=json from extraArgs: every line the daemon logged is a JSON object.
        let name = meta["name"].as_str().expect("pod name");
        let logs = cluster.kubectl(&["-n", NAMESPACE, "logs", name]);
        assert!(!logs.trim().is_empty(), "{node}: no logs");
        for line in logs.lines().filter(|l| !l.trim().is_empty()) {
            let entry: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{node}: a log line that is not JSON ({e}): {line}"));
            assert!(entry["message"].is_string(), "{node}: {line}");
        }
    }

    // The pods probe each other (their own mesh, found through the release's own labels) and
    // the DNS, all green, under the profile and contexts the file set.
    let ips = pods_by_node(&cluster.json(&[
        "-n",
        NAMESPACE,
        "get",
        "pods",
        "-l",
        &format!("app.kubernetes.io/instance={RELEASE}"),
    ]));
    for (node, (pod, ip)) in &ips {
        poll_every(
            &format!("{pod} on {node}: every peer and the DNS green"),
            WAIT,
            EVERY,
            || {
                let m = scrape(*ip)?;
                let peers: Vec<_> =
                    m.series("netprobe_peer_probe_success", &[("protocol", "http")]);
                let others = ips.keys().filter(|n| *n != node).count();
                let up = peers.iter().filter(|s| s.value == 1.0).count();
                let dns = m.series("netprobe_dns_probe_success", &[("server", "system")]);
                let dns_ok = !dns.is_empty() && dns.iter().all(|s| s.value == 1.0);
                if up == others && peers.len() == others && dns_ok {
                    Ok(())
                } else {
                    Err(format!(
                        "{up} of {others} peers up over http ({} series), system DNS {:?}",
                        peers.len(),
                        dns.iter().map(|s| s.value).collect::<Vec<_>>()
                    ))
                }
            },
        );
    }

    // The ServiceMonitor and the rules where the file put them, as it shaped them.
    let monitor = cluster.json(&["-n", MONITORING, "get", "servicemonitors"]);
    let monitor = &monitor["items"][0];
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["scheme"], "https");
    let relabelled: Vec<&Value> = endpoint["relabelings"]
        .as_array()
        .expect("relabelings")
        .iter()
        .map(|r| &r["targetLabel"])
        .collect();
    // The chart's own `node` relabelling (the alerts name nodes by it) stays beside the user's.
    assert_eq!(
        relabelled,
        ["node", "cluster"],
        "the ServiceMonitor's relabelings"
    );
    assert_eq!(endpoint["metricRelabelings"][0]["action"], "drop");
    assert_eq!(
        monitor["spec"]["namespaceSelector"]["matchNames"][0], NAMESPACE,
        "the monitor looks in the release's namespace"
    );
    let rules = cluster.json(&["-n", MONITORING, "get", "prometheusrules"]);
    let alerts: Vec<&Value> = rules["items"][0]["spec"]["groups"]
        .as_array()
        .expect("rule groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .filter(|r| r.get("alert").is_some())
        .collect();
    assert!(!alerts.is_empty(), "the PrometheusRule holds alerts");
    for disabled in values["prometheusRule"]["disabled"]
        .as_object()
        .expect("disabled")
        .keys()
    {
        assert!(
            alerts.iter().all(|a| a["alert"] != disabled.as_str()),
            "{disabled} is disabled but in the PrometheusRule"
        );
    }
    for alert in &alerts {
        assert_eq!(
            alert["labels"]["team"], "platform",
            "{}: additionalRuleLabels",
            alert["alert"]
        );
    }
    let dns_probe = alerts
        .iter()
        .find(|a| a["alert"] == "DNSProbeFailing")
        .expect("DNSProbeFailing");
    assert_eq!(dns_probe["labels"]["pager"], "dns-oncall");
}
