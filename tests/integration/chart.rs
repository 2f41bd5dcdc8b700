//! The Helm chart against a real kube-apiserver: every rendered manifest passes
//! `kubectl apply --dry-run=server`, and the chart's ServiceAccount and RBAC are exactly what the
//! real daemon needs: with them, peer discovery and the CSI watch work with no 403; with one rule
//! removed, the daemon says which rule is missing (metric and log) and keeps probing; and the
//! pod's security context (UID, no capabilities, the ping_group_range sysctl) is all the daemon
//! needs, ICMP included; the repair controller's RBAC allows its calls and nothing more.
//!
//! `helm` comes from scripts/install-test-deps (cached under /var/cache/kube-netprobe); the
//! static checks of the chart (lint, schemas, promtool, restricted fields) are in
//! scripts/check-chart.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::apiserver::Apiserver;
use crate::util::{Daemon, Metrics, bin, poll};

const WAIT: Duration = Duration::from_secs(30);
/// The fixture's `netprobe` identity is `system:serviceaccount:kube-netprobe:kube-netprobe`: a
/// release named kube-netprobe in namespace kube-netprobe makes a ServiceAccount of that name.
const RELEASE: &str = "kube-netprobe";
const NAMESPACE: &str = "kube-netprobe";

fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("helm/kube-netprobe")
}

fn helm_path() -> PathBuf {
    std::env::var_os("HELM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/kube-netprobe/helm-layer-2.2.2/helm"))
}

fn helm() -> PathBuf {
    let path = helm_path();
    assert!(
        path.exists(),
        "{} missing: `make deps` (scripts/install-test-deps) installs helm",
        path.display()
    );
    path
}

fn render_result(args: &[&str]) -> std::process::Output {
    Command::new(helm())
        .args(["template", RELEASE])
        .arg(chart())
        .args(["--namespace", NAMESPACE])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run helm")
}

/// `helm template` of the chart with `args`; panics with helm's message on failure.
pub(crate) fn render(args: &[&str]) -> String {
    let out = render_result(args);
    assert!(
        out.status.success(),
        "helm template {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 manifests")
}

fn documents(yaml: &str) -> usize {
    yaml.lines().filter(|l| l.starts_with("kind: ")).count()
}

/// ServiceMonitor and PrometheusRule kinds for the dry-run. No package in the registries this
/// project reaches ships prometheus-operator's CRD YAML, so these accept any spec: the dry-run
/// checks their group, version, kind and metadata, and scripts/check-chart checks their fields
/// against the operator's schemas (npm @kubernetes-models/prometheus-operator).
pub(crate) const OPERATOR_KINDS: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: { name: servicemonitors.monitoring.coreos.com }
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: { kind: ServiceMonitor, listKind: ServiceMonitorList, plural: servicemonitors, singular: servicemonitor }
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec: { type: object, x-kubernetes-preserve-unknown-fields: true }
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: { name: prometheusrules.monitoring.coreos.com }
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: { kind: PrometheusRule, listKind: PrometheusRuleList, plural: prometheusrules, singular: prometheusrule }
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec: { type: object, x-kubernetes-preserve-unknown-fields: true }
"#;

fn dry_run(api: &Apiserver, manifests: &str) -> std::process::Output {
    api.kubectl_with(
        api.kubeconfig_admin(),
        &["apply", "--dry-run=server", "-f", "-"],
        Some(manifests),
    )
}

#[test]
#[ignore = "needs root: a kube-apiserver of its own (apt-get, /var/cache)"]
fn every_rendered_manifest_passes_a_server_side_dry_run() {
    let api = Apiserver::start();
    api.apply(OPERATOR_KINDS);
    poll("the monitoring.coreos.com kinds to be served", WAIT, || {
        let out = api.kubectl_with(
            api.kubeconfig_admin(),
            &["get", "servicemonitors,prometheusrules", "-A"],
            None,
        );
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    });

    // As helm renders for this server's version (1.20).
    let version = ["--kube-version", "1.20.2"];
    let values_dir = chart().join("ci");
    let mut renders = vec![(
        "defaults".to_owned(),
        render(
            &[
                &version[..],
                &["--api-versions", "monitoring.coreos.com/v1"],
            ]
            .concat(),
        ),
    )];
    let mut files: Vec<_> = std::fs::read_dir(&values_dir)
        .expect("helm/kube-netprobe/ci")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.to_string_lossy().ends_with("-values.yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "values files in {}", values_dir.display());
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let path = file.to_str().expect("utf-8 path").to_owned();
        if std::fs::read_to_string(&file)
            .unwrap()
            .contains("type: ephemeral")
        {
            // Generic ephemeral volumes are alpha (off) in 1.20: the chart refuses them there
            // with a clear message; the rest of the file is dry-run with an emptyDir instead.
            let out = render_result(&[&version[..], &["-f", &path]].concat());
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success() && stderr.contains("needs Kubernetes 1.21 or later"),
                "{name} on 1.20: {stderr}"
            );
            let emptydir = r#"storage.volumes=[{"name":"scratch","type":"emptyDir"}]"#;
            let args = [&version[..], &["-f", &path, "--set-json", emptydir]].concat();
            renders.push((format!("{name} (emptyDir for 1.20)"), render(&args)));
        } else {
            renders.push((name, render(&[&version[..], &["-f", &path]].concat())));
        }
    }
    // Every namespace the renders put objects in (namespaceOverride, the ServiceMonitor's and
    // the PrometheusRule's namespace, the CoreDNS Role's), as the user would have them.
    let mut namespaces = std::collections::BTreeSet::new();
    for (_, manifests) in &renders {
        let docs: Vec<serde_json::Value> =
            serde_saphyr::from_multiple(manifests).expect("rendered YAML");
        namespaces.extend(
            docs.iter()
                .filter_map(|d| d["metadata"]["namespace"].as_str().map(str::to_owned)),
        );
    }
    // The escape hatches and the OpenShift path (no UID or GID at all) are among them.
    assert!(namespaces.contains("netprobe-system"), "{namespaces:?}");
    assert!(
        renders
            .iter()
            .any(|(name, _)| name == "openshift-values.yaml"),
        "no OpenShift render"
    );
    for ns in &namespaces {
        api.apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{ name: {ns} }}\n"
        ));
    }
    for (name, manifests) in &renders {
        let out = dry_run(&api, manifests);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: kubectl apply --dry-run=server failed:\n{}{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        let accepted = stdout
            .lines()
            .filter(|l| l.ends_with("(server dry run)"))
            .count();
        assert_eq!(
            accepted,
            documents(manifests),
            "{name}: every object accepted:\n{stdout}"
        );
    }

    // The dry-run does validate: a DaemonSet the API rejects is rejected here.
    let defaults = &renders[0].1;
    let broken = defaults.replace("maxUnavailable: 10%", "maxUnavailable: 0");
    assert_ne!(&broken, defaults);
    let out = dry_run(&api, &broken);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("maxUnavailable"),
        "a DaemonSet with maxUnavailable 0 passed the dry-run: {out:?}"
    );
}

/// A pod of this release (the chart's selector labels) on `node`, ready at `ip`.
fn pod(api: &Apiserver, name: &str, node: &str, ip: Ipv4Addr) {
    let labels = format!(
        "{{ app.kubernetes.io/name: kube-netprobe, app.kubernetes.io/instance: {RELEASE} }}"
    );
    crate::kube::ready_pod(api, NAMESPACE, name, &labels, node, ip);
}

/// The daemon's config file as the chart renders it for these test values, listening on
/// loopback instead of every address (the peer listens on 127.0.0.2 with the same port).
fn chart_config(port: u16) -> String {
    let port_arg = format!("metricsPort={port}");
    let manifest = render(&[
        "--show-only",
        "templates/configmap.yaml",
        "--set",
        &port_arg,
        "--set-json",
        "config.dns.servers=[]",
        "--set",
        "config.apiserver.enabled=false",
        "--set",
        "config.peers.interval=500ms",
        "--set",
        "config.peers.timeout=400ms",
        "--set-json",
        r#"config.peers.protocols=["http","tcp"]"#,
        "--set-json",
        "storage.volumes=[]",
    ]);
    let doc: serde_json::Value = serde_saphyr::from_str(&manifest).expect("ConfigMap YAML");
    let config = doc["data"]["config.yaml"]
        .as_str()
        .expect("data.config.yaml")
        .to_owned();
    let everywhere = format!("listen: '[::]:{port}'");
    assert!(config.contains(&everywhere), "{config}");
    config.replace(&everywhere, &format!("listen: 127.0.0.1:{port}"))
}

fn start_daemon(api: &Apiserver, config: &str) -> Daemon {
    let mut program = Command::new(bin());
    // The identity of the chart's ServiceAccount (see RELEASE), and the Downward API's env.
    program
        .env("KUBECONFIG", api.kubeconfig_netprobe())
        .env("NODE_NAME", "node-a")
        .env("POD_NAMESPACE", NAMESPACE);
    Daemon::start_in(program, config, &[], Ipv4Addr::LOCALHOST.into())
}

fn forbidden_errors(m: &Metrics) -> f64 {
    m.sum(
        "netprobe_discovery_errors_total",
        &[("reason", "forbidden")],
    ) + m.sum(
        "netprobe_csi_watch_errors_total",
        &[("reason", "forbidden")],
    )
}

#[test]
#[ignore = "needs root: a kube-apiserver of its own (apt-get, /var/cache)"]
fn the_charts_rbac_is_what_the_daemon_needs_and_a_missing_rule_is_reported() {
    let api = Apiserver::start();
    // The chart's ServiceAccount and RBAC, as helm renders them with the default values.
    let rbac = render(&[
        "--show-only",
        "templates/serviceaccount.yaml",
        "--show-only",
        "templates/rbac.yaml",
    ]);
    assert!(rbac.contains(&format!(
        "kind: ServiceAccount\nmetadata:\n  name: {RELEASE}\n"
    )));
    api.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{ name: {NAMESPACE} }}\n"
    ));
    api.apply(&rbac);
    // The fixture runs no token controller: it authenticates this ServiceAccount's identity
    // (user and groups) with a static token, and RBAC sees exactly what a pod's token gives.
    // Read-only, nothing more.
    for (verb, resource) in [
        ("get", "secrets"),
        ("create", "pods"),
        ("list", "configmaps"),
    ] {
        let out = api.kubectl_netprobe(&["auth", "can-i", verb, resource, "-n", NAMESPACE]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "no",
            "the ServiceAccount may {verb} {resource}"
        );
    }

    crate::kube::node(&api, "node-a");
    crate::kube::node(&api, "node-b");
    let (ip_a, ip_b) = (Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2));
    let port = crate::kube::free_port(&[ip_a, ip_b]);
    pod(&api, "kube-netprobe-a", "node-a", ip_a);
    pod(&api, "kube-netprobe-b", "node-b", ip_b);
    let _peer_b = Daemon::start(&format!(
        "listen: {ip_b}:{port}\nnode_name: node-b\ndns: {{ servers: [] }}\n\
         peers: {{ discovery: none }}\napiserver: {{ enabled: false }}\ncsi: {{ enabled: false }}\n"
    ));
    api.apply(
        "apiVersion: storage.k8s.io/v1\nkind: CSIDriver\nmetadata: { name: ebs.csi.aws.com }\n\
         spec: { attachRequired: true }\n---\n\
         apiVersion: storage.k8s.io/v1\nkind: CSINode\nmetadata: { name: node-a }\nspec:\n  drivers:\n    \
         - { name: ebs.csi.aws.com, nodeID: node-a }\n",
    );
    let config = chart_config(port);

    // With the chart's rules: peers discovered and probed, the driver registered, no 403.
    let working = |m: &Metrics| {
        let seen = (
            m.get(
                "netprobe_peer_probe_success",
                &[("target_node", "node-b"), ("protocol", "http")],
            ),
            m.get(
                "netprobe_csi_node_driver_registered",
                &[("driver", "ebs.csi.aws.com")],
            ),
        );
        if seen == (Some(1.0), Some(1.0)) {
            Ok(())
        } else {
            Err(format!("peer_up node-b, csi registered: {seen:?}"))
        }
    };
    let mut daemon = start_daemon(&api, &config);
    daemon.wait_until("node-b probed and the CSI driver registered", WAIT, working);
    let m = daemon.scrape();
    assert_eq!(m.get("netprobe_discovery_peers", &[]), Some(2.0));
    assert_eq!(m.sum("netprobe_discovery_errors_total", &[]), 0.0);
    assert_eq!(m.sum("netprobe_csi_watch_errors_total", &[]), 0.0);
    // Both reasons exist at 0 from the start, so a rate() over them never starts from nothing.
    assert_eq!(
        m.get(
            "netprobe_discovery_errors_total",
            &[("source", "nodes"), ("reason", "forbidden")]
        ),
        Some(0.0)
    );
    let logs = daemon.output_tail(400);
    assert!(!logs.contains("forbidden"), "{logs}");
    let _ = daemon.terminate();

    // One rule removed (the nodes rule of the ClusterRole): the daemon names it, counts it as
    // forbidden, and goes on probing the peers it knows from the pods and the CSI registration.
    let nodes_rule =
        "  - apiGroups: [\"\"]\n    resources: [nodes]\n    verbs: [get, list, watch]\n";
    assert!(rbac.contains(nodes_rule), "{rbac}");
    api.apply(&rbac.replace(nodes_rule, ""));
    poll("the nodes rule to be gone", WAIT, || {
        let out = api.kubectl_netprobe(&["auth", "can-i", "list", "nodes"]);
        match String::from_utf8_lossy(&out.stdout).trim() {
            "no" => Ok(()),
            other => Err(other.to_owned()),
        }
    });
    let mut daemon = start_daemon(&api, &config);
    daemon.wait_until(
        "a forbidden nodes call counted while node-b is still probed",
        WAIT,
        |m| {
            let forbidden = m.sum(
                "netprobe_discovery_errors_total",
                &[("source", "nodes"), ("reason", "forbidden")],
            );
            if forbidden >= 1.0 {
                working(m)
            } else {
                Err(format!("nodes forbidden: {forbidden}"))
            }
        },
    );
    let m = daemon.scrape();
    // The calls on nodes are refused: peer discovery's, and pod_ips' watch of this node.
    assert_eq!(
        forbidden_errors(&m),
        m.sum(
            "netprobe_discovery_errors_total",
            &[("source", "nodes"), ("reason", "forbidden")]
        ) + m.sum(
            "netprobe_discovery_errors_total",
            &[("source", "pod_ips"), ("reason", "forbidden")]
        ),
        "only the nodes calls are refused"
    );
    assert_eq!(
        m.sum("netprobe_discovery_errors_total", &[("reason", "error")]),
        0.0
    );
    let logs = daemon.output_tail(400);
    assert!(
        logs.contains(
            "forbidden: list nodes: needs an RBAC rule granting get, list and watch on nodes"
        ),
        "the log names the missing rule:\n{logs}"
    );
    assert!(daemon.is_running());
    let _ = daemon.terminate();

    // The CSI rule removed as well: the CSI watch reports its 403 the same way; peers are still
    // probed.
    let csi_rule = "  - apiGroups: [storage.k8s.io]\n    resources: [csidrivers, csinodes]\n    verbs: [get, list, watch]\n";
    assert!(rbac.contains(csi_rule), "{rbac}");
    api.apply(&rbac.replace(nodes_rule, "").replace(csi_rule, ""));
    poll("the CSI rule to be gone", WAIT, || {
        let out = api.kubectl_netprobe(&["auth", "can-i", "list", "csinodes.storage.k8s.io"]);
        match String::from_utf8_lossy(&out.stdout).trim() {
            "no" => Ok(()),
            other => Err(other.to_owned()),
        }
    });
    let mut daemon = start_daemon(&api, &config);
    daemon.wait_until(
        "a forbidden CSI call counted while node-b is still probed",
        WAIT,
        |m| {
            let seen = (
                m.get(
                    "netprobe_csi_watch_errors_total",
                    &[("reason", "forbidden")],
                ),
                m.get(
                    "netprobe_peer_probe_success",
                    &[("target_node", "node-b"), ("protocol", "http")],
                ),
            );
            match seen {
                (Some(f), Some(up)) if f >= 1.0 && up == 1.0 => Ok(()),
                _ => Err(format!("csi forbidden, peer_up node-b: {seen:?}")),
            }
        },
    );
    let m = daemon.scrape();
    assert_eq!(
        m.get("netprobe_csi_watch_errors_total", &[("reason", "error")]),
        Some(0.0)
    );
    assert!(
        m.series("netprobe_csi_node_driver_registered", &[])
            .is_empty(),
        "no registration is claimed while it cannot be known"
    );
    let logs = daemon.output_tail(400);
    assert!(
        logs.contains("forbidden: list csi") && logs.contains("needs an RBAC rule"),
        "the log names the missing CSI rule:\n{logs}"
    );
    assert!(daemon.is_running());
}

/// (kind and namespace, apiGroup, resource, verbs) of every rule of the Roles and ClusterRoles in
/// `yaml`.
fn rules(yaml: &str) -> std::collections::BTreeSet<(String, String, String, String)> {
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(yaml).expect("RBAC YAML");
    let mut out = std::collections::BTreeSet::new();
    for doc in docs
        .iter()
        .filter(|d| matches!(d["kind"].as_str(), Some("Role" | "ClusterRole")))
    {
        for rule in doc["rules"].as_array().expect("rules") {
            let mut verbs: Vec<_> = rule["verbs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.to_string())
                .collect();
            verbs.sort();
            for group in rule["apiGroups"].as_array().unwrap() {
                for resource in rule["resources"].as_array().unwrap() {
                    out.insert((
                        format!(
                            "{} {}",
                            doc["kind"].as_str().unwrap(),
                            doc["metadata"]["namespace"].as_str().unwrap_or("")
                        ),
                        group.as_str().unwrap().to_owned(),
                        resource.as_str().unwrap().to_owned(),
                        verbs.join(","),
                    ));
                }
            }
        }
    }
    out
}

/// The kube suite proves its RBAC is the least the daemon needs; the chart's default rules are
/// those, no more and no fewer.
#[test]
#[ignore = "needs helm: `make deps` installs it, as root, under /var/cache/kube-netprobe"]
fn the_charts_default_rules_are_the_ones_the_kube_suite_proved() {
    let chart = render(&["--show-only", "templates/rbac.yaml"]);
    assert_eq!(rules(&chart), rules(crate::kube::RBAC));
    assert_eq!(rules(&chart).len(), 5, "{chart}");
    // The opt-in pod IP count adds exactly its own rule: every pod in every namespace, which
    // is why it is off by default.
    let with_pod_ips = render(&[
        "--show-only",
        "templates/rbac.yaml",
        "--set",
        "config.pod_ips.enabled=true",
    ]);
    let mut proved = rules(crate::kube::RBAC);
    proved.extend(
        rules(crate::kube::POD_IPS_RBAC)
            .into_iter()
            .map(|(_, group, resource, verbs)| ("ClusterRole ".to_owned(), group, resource, verbs)),
    );
    assert_eq!(rules(&with_pod_ips), proved, "{with_pod_ips}");
}

/// The repair controller's identity, as the chart's repair.enabled binds it.
const REPAIR_SA: &str = "system:serviceaccount:kube-netprobe:kube-netprobe-repair";

/// Whether the API server's authorizer lets the repair controller's ServiceAccount do `args`
/// (`kubectl auth can-i ARGS`, asked by the admin impersonating it: RBAC judges the same user
/// name its token carries).
fn repair_can(api: &Apiserver, args: &[&str]) -> bool {
    let mut all = vec!["auth", "can-i"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--as", REPAIR_SA]);
    let out = api.kubectl_with(api.kubeconfig_admin(), &all, None);
    match String::from_utf8_lossy(&out.stdout).trim() {
        "yes" => true,
        "no" => false,
        other => panic!(
            "kubectl {all:?}: {other:?}\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// The repair controller's RBAC (repair.enabled), applied to a real API server: every call
/// `kube-netprobe repair` makes is allowed to its ServiceAccount, and the things it must never
/// do are refused: cordon or change a node, touch a pod or workload outside kube-system and its
/// own namespace, evict its own pods, read a Secret or any ConfigMap but CoreDNS's.
#[test]
#[ignore = "needs root: a kube-apiserver of its own (apt-get, /var/cache)"]
fn the_repair_controllers_rbac_allows_its_calls_and_nothing_more() {
    let api = Apiserver::start();
    let manifests = render(&[
        "--set",
        "repair.enabled=true",
        "--show-only",
        "templates/repair.yaml",
        "--show-only",
        "templates/repair-rbac.yaml",
    ]);
    api.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{ name: {NAMESPACE} }}\n"
    ));
    api.apply(&manifests);
    let ns = ["-n", NAMESPACE];
    let system = ["-n", "kube-system"];
    let allowed: &[&[&str]] = &[
        // CoreDNS and kube-proxy: read, evict a replica, delete a node's kube-proxy pod.
        &["get", "pods"],
        &["list", "pods"],
        &["delete", "pods"],
        &["create", "pods", "--subresource=eviction"],
        &["get", "services/kube-dns"],
        &["get", "endpoints/kube-dns"],
        &["get", "configmaps/coredns"],
        &["create", "events"],
        &["list", "events"],
    ];
    for args in allowed {
        assert!(
            repair_can(&api, &[args, &system[..]].concat()),
            "kube-system: {args:?} refused"
        );
    }
    let allowed_here: &[&[&str]] = &[
        &["get", "pods"],
        &["list", "pods"],
        &["delete", "pods"],
        &["get", "pods", "--subresource=proxy"],
        &["create", "events"],
        &["list", "events"],
    ];
    for args in allowed_here {
        assert!(
            repair_can(&api, &[args, &ns[..]].concat()),
            "{NAMESPACE}: {args:?} refused"
        );
    }
    assert!(repair_can(&api, &["list", "nodes"]), "list nodes refused");

    let refused: &[&[&str]] = &[
        // Never cordon, drain or change a node.
        &["patch", "nodes"],
        &["update", "nodes"],
        &["delete", "nodes"],
        &["get", "nodes", "--subresource=proxy"],
        // Never touch users' pods or workloads.
        &["delete", "pods", "-n", "default"],
        &["list", "pods", "-n", "default"],
        &["create", "pods", "--subresource=eviction", "-n", "default"],
        &["list", "pods", "--all-namespaces"],
        &["delete", "deployments.apps", "-n", "kube-system"],
        &["patch", "daemonsets.apps", "-n", "kube-system"],
        &["create", "pods", "-n", "kube-system"],
        &["patch", "pods", "-n", "kube-system"],
        &["update", "pods", "-n", "kube-system"],
        // Its own pods are deleted (their DaemonSet recreates them), never evicted or created.
        &["create", "pods", "--subresource=eviction", "-n", NAMESPACE],
        &["create", "pods", "-n", NAMESPACE],
        // Only the pods' /metrics of its own namespace go through the proxy.
        &["get", "pods", "--subresource=proxy", "-n", "kube-system"],
        // Only the objects it reads, by name.
        &["get", "secrets", "-n", "kube-system"],
        &["get", "secrets", "-n", NAMESPACE],
        &["get", "configmaps/kube-proxy", "-n", "kube-system"],
        &["list", "configmaps", "-n", "kube-system"],
        &["get", "services/metrics-server", "-n", "kube-system"],
        &["list", "services", "-n", "kube-system"],
        &["delete", "events", "-n", "kube-system"],
        &["create", "events", "-n", "default"],
    ];
    for args in refused {
        assert!(!repair_can(&api, args), "{args:?} allowed");
    }
    // The probers' ServiceAccount gains nothing from it.
    let out = api.kubectl_netprobe(&["auth", "can-i", "delete", "pods", "-n", NAMESPACE]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no");
}

/// `Uid:` (real, effective) and `CapEff:` of a process, from /proc.
fn uid_and_caps(pid: u32) -> (String, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    (field("Uid:"), field("CapEff:"))
}

/// The pod's security context, as the chart renders it, is all the daemon needs: run as the
/// chart's UID/GID with every capability dropped and no privilege escalation, on a read-only
/// root filesystem with the chart's emptyDir volume, in a network namespace given the chart's
/// `net.ipv4.ping_group_range`, the daemon serves, probes its volume, probes its peer over HTTP
/// and sends ICMP echo; without the sysctl, ICMP is reported unavailable (never a
/// capability as the way out) while HTTP probing goes on.
#[test]
#[ignore = "needs root: network namespaces"]
fn the_charts_security_context_is_enough_for_the_daemon_icmp_included() {
    let cluster = crate::netns::Cluster::new(2);
    let ds: serde_json::Value =
        serde_saphyr::from_str(&render(&["--show-only", "templates/daemonset.yaml"]))
            .expect("DaemonSet YAML");
    let pod = &ds["spec"]["template"]["spec"]["securityContext"];
    let (uid, gid) = (
        pod["runAsUser"].as_u64().unwrap(),
        pod["runAsGroup"].as_u64().unwrap(),
    );
    let sysctl = &pod["sysctls"][0];
    assert_eq!(sysctl["name"], "net.ipv4.ping_group_range");
    let range = sysctl["value"].as_str().unwrap().to_owned();
    let container = &ds["spec"]["template"]["spec"]["containers"][0]["securityContext"];
    assert_eq!(container["capabilities"]["drop"][0], "ALL");
    assert_eq!(container["allowPrivilegeEscalation"], false);

    let (me, peer) = (cluster.node(0), cluster.node(1));
    let port = "9753";
    let _peer = peer.run_daemon(&format!(
        "listen: 0.0.0.0:{port}\nnode_name: {}\ndns: {{ servers: [] }}\npeers: {{ discovery: none }}\n\
         apiserver: {{ enabled: false }}\ncsi: {{ enabled: false }}\n",
        peer.name()
    ));
    let static_peers = format!(
        r#"config.peers.discovery={{"static":["{}={}:{port}"]}}"#,
        peer.name(),
        peer.ip()
    );
    let manifest = render(&[
        "--show-only",
        "templates/configmap.yaml",
        "--set-json",
        &static_peers,
        "--set-json",
        "config.dns.servers=[]",
        "--set",
        "config.apiserver.enabled=false",
        "--set",
        "config.csi.enabled=false",
        "--set",
        "config.peers.interval=500ms",
        "--set",
        "config.peers.timeout=400ms",
        "--set-json",
        r#"config.peers.protocols=["http","icmp"]"#,
        "--set",
        "config.storage.interval=2s",
        "--set",
        "config.storage.timeout=1s",
    ]);
    let doc: serde_json::Value = serde_saphyr::from_str(&manifest).expect("ConfigMap YAML");
    let config = doc["data"]["config.yaml"].as_str().unwrap().to_owned();
    assert!(
        config.contains("path: /var/lib/kube-netprobe/scratch"),
        "{config}"
    );

    // The binary where the chart's user can run it.
    let bin_dir = tempfile::tempdir().unwrap();
    let binary = bin_dir.path().join("kube-netprobe");
    std::fs::copy(bin(), &binary).unwrap();
    let status = Command::new("chmod")
        .args([
            "0755",
            bin_dir.path().to_str().unwrap(),
            binary.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let start = || {
        // The fixture writes the config into a private directory: open it up. Then, as the
        // kubelet would: enter the node, a read-only root filesystem (readOnlyRootFilesystem)
        // with a writable, world-writable volume where the chart mounts the emptyDir, and the
        // pod's user with no capabilities at all. Arguments after the script: run --config FILE.
        let mut wrapper = Command::new("sh");
        wrapper
            .args([
                "-c",
                r#"chmod 0755 "$(dirname "$3")" && chmod 0644 "$3" && exec ip netns exec "$NETNS" \
                   unshare --mount --propagation private sh -c '
                     mount -t tmpfs -o size=128m,mode=0755 tmpfs /var/lib &&
                     mkdir -p /var/lib/kube-netprobe/scratch &&
                     chmod 0777 /var/lib/kube-netprobe/scratch &&
                     mount -o remount,bind,ro / &&
                     exec setpriv --reuid="$UID_" --regid="$GID_" --clear-groups --no-new-privs \
                       --inh-caps=-all --bounding-set=-all -- "$0" "$@"' "$0" "$@""#,
                binary.to_str().unwrap(),
            ])
            .env("NETNS", me.netns())
            .env("UID_", uid.to_string())
            .env("GID_", gid.to_string())
            .env("NODE_NAME", me.name());
        Daemon::start_in(wrapper, &config, &[], me.ip().into())
    };
    let icmp = |m: &Metrics| {
        (
            m.get("netprobe_icmp_available", &[("family", "ipv4")]),
            m.get(
                "netprobe_peer_probe_success",
                &[("target_node", peer.name()), ("protocol", "http")],
            ),
            m.get(
                "netprobe_peer_probe_success",
                &[("target_node", peer.name()), ("protocol", "icmp")],
            ),
        )
    };

    // With the chart's sysctl: ICMP works for the pod's group.
    let out = me.exec(
        &[
            "sysctl",
            "-w",
            &format!("net.ipv4.ping_group_range={range}"),
        ],
        Duration::from_secs(5),
    );
    assert!(out.status.success(), "{out:?}");
    let mut daemon = start();
    assert_eq!(
        uid_and_caps(daemon.pid()),
        (format!("{uid} {uid}"), "0000000000000000".to_owned()),
        "the daemon runs as the chart's UID with no effective capability"
    );
    daemon.wait_until(
        "http and icmp to the peer up, ICMP available, the emptyDir volume probed",
        WAIT,
        |m| {
            let storage = m.get("netprobe_storage_probe_success", &[("volume", "scratch")]);
            match (icmp(m), storage) {
                ((Some(1.0), Some(1.0), Some(1.0)), Some(1.0)) => Ok(()),
                seen => Err(format!(
                    "(icmp_available, http up, icmp up), storage success: {seen:?}"
                )),
            }
        },
    );
    let logs = daemon.output_tail(200);
    assert!(!logs.contains("Read-only file system"), "{logs}");
    drop(daemon);

    // Without it (the kernel's default, "1 0"): ICMP is unavailable and said so; HTTP goes on.
    let out = me.exec(
        &["sysctl", "-w", "net.ipv4.ping_group_range=1 0"],
        Duration::from_secs(5),
    );
    assert!(out.status.success(), "{out:?}");
    let mut daemon = start();
    daemon.wait_until(
        "ICMP unavailable, http to the peer up",
        WAIT,
        |m| match icmp(m) {
            (Some(0.0), Some(1.0), _) => Ok(()),
            seen => Err(format!("icmp_available, http up, icmp up: {seen:?}")),
        },
    );
}

/// The config the chart renders with its default values (the ConfigMap's `config.yaml`).
fn default_config(manifests: &str) -> String {
    let mut lines = manifests
        .lines()
        .skip_while(|l| l.trim() != "config.yaml: |")
        .skip(1);
    let first = lines.next().expect("a config.yaml in the ConfigMap");
    let indent = first.len() - first.trim_start().len();
    std::iter::once(first)
        .chain(lines.take_while(|l| l.trim().is_empty() || l.starts_with(&" ".repeat(indent))))
        .map(|l| format!("{}\n", l.get(indent..).unwrap_or("")))
        .collect()
}

/// Mebibytes of a Kubernetes quantity as the chart writes memory (`96Mi`, `1Gi`).
fn quantity_mib(quantity: &str) -> f64 {
    let q = quantity.trim().trim_matches('"');
    if let Some(n) = q.strip_suffix("Mi") {
        n.parse().unwrap()
    } else if let Some(n) = q.strip_suffix("Gi") {
        n.parse::<f64>().unwrap() * 1024.0
    } else {
        panic!("unexpected memory quantity {q}")
    }
}

/// The chart's default memory limit holds the peak memory estimate of the chart's default config
/// (what `check-config` prints) with a quarter to spare.
#[test]
#[ignore = "needs helm: `make deps` installs it, as root, under /var/cache/kube-netprobe"]
fn the_charts_default_memory_limit_covers_its_default_config() {
    let manifests = render(&[]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, default_config(&manifests)).unwrap();
    let out = Command::new(bin())
        .args(["check-config", config.to_str().unwrap()])
        .env("NODE_NAME", "node-a")
        .env("POD_NAMESPACE", NAMESPACE)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let estimate: f64 = stdout
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("# peak memory estimate: "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no estimate in\n{stdout}"));
    let limit = manifests
        .lines()
        .skip_while(|l| l.trim() != "limits:")
        .find_map(|l| l.trim().strip_prefix("memory:"))
        .map(quantity_mib)
        .expect("a memory limit in the DaemonSet");
    assert!(
        estimate * 1.25 <= limit,
        "the chart's default memory limit ({limit} MiB) leaves less than 25 % over the estimate of its default config ({estimate} MiB)"
    );
}
