//! The seeded-fault runs of `diagnose` as a table: what each breaks on the healthy cluster (and
//! how it is healed after the run), how `diagnose` is run, and what it must say. The runs share
//! one API server and go in the table's order; a namespace-scoped fault lives in a namespace of
//! its own and stays, a cluster-wide one is healed before the next run.

use std::path::Path;
use std::time::Duration;

use crate::apiserver::Apiserver;
use crate::util::{Checks, poll};

use super::Run;
use super::seed::{
    app_namespace, base, coredns_status, dns_histogram, dns_lines, healthy_coredns, peer_lines,
    ready_node,
};

/// Who `diagnose` runs as.
#[derive(Clone, Copy)]
pub(super) enum Identity {
    /// Cluster admin: reads everything.
    Admin,
    /// The `kube-netprobe` ServiceAccount, with what the ClusterRoles granted so far allow.
    Netprobe,
    /// The ServiceAccount's kubeconfig with a token the API server rejects.
    RejectedToken,
}

/// Text a run must show (or must not).
pub(super) enum Says {
    /// stdout starts with it.
    Starts(&'static str),
    /// stdout contains it.
    Stdout(&'static str),
    /// stdout does not contain it.
    NotStdout(&'static str),
    /// The first line of stdout (the leading finding) contains it.
    FirstLine(&'static str),
    /// The first line of stdout does not contain it.
    NotFirstLine(&'static str),
    /// stderr contains it.
    Stderr(&'static str),
    /// `report.md` in `--out` contains it.
    ReportMd(&'static str),
}

/// One run of `diagnose -n NAMESPACE [--coredns-logs FIXTURE] FLAGS [--probe-metrics NODE=FILE]...`.
pub(super) struct Scenario {
    pub(super) name: &'static str,
    /// Breaks the healthy cluster before the run.
    pub(super) make: fn(&Apiserver),
    /// Undoes `make` after the run, so that the next one starts from the healthy cluster.
    pub(super) heal: fn(&Apiserver),
    pub(super) namespace: &'static str,
    /// Whether the run gets the healthy CoreDNS log fixture (the API server has no kubelet to
    /// read logs through).
    pub(super) coredns_logs: bool,
    pub(super) flags: &'static [&'static str],
    /// Each node's `/metrics` text, given with `--probe-metrics` (none: no flag).
    pub(super) metrics: fn() -> Vec<(&'static str, String)>,
    pub(super) who: Identity,
    pub(super) exit: i32,
    /// Every finding id in report.json, no more and no fewer.
    pub(super) findings: &'static [&'static str],
    /// The severity stdout leads with, for the first of `findings`, followed by its cause and
    /// next step.
    pub(super) leads: Option<&'static str>,
    pub(super) says: &'static [Says],
    /// Checks of this run's own: evidence files, report.json fields, the cluster afterwards.
    pub(super) also: fn(&mut Checks, &Run, &Apiserver),
}

/// A run on the healthy cluster, in namespace `healthy`, as admin: exit 0, nothing found.
const HEALTHY: Scenario = Scenario {
    name: "",
    make: |_| {},
    heal: |_| {},
    namespace: "healthy",
    coredns_logs: true,
    flags: &[],
    metrics: Vec::new,
    who: Identity::Admin,
    exit: 0,
    findings: &[],
    leads: None,
    says: &[],
    also: |_, _, _| {},
};

pub(super) const SCENARIOS: &[Scenario] = &[
    // What a healthy cluster gives: exit 0, no findings, the evidence of the seed script's
    // commands; the same report as JSON or Markdown; evidence only.
    Scenario {
        name: "healthy",
        says: &[
            Says::Starts("OK no problems found"),
            Says::NotStdout("\x1b"),
        ],
        also: healthy_evidence,
        ..HEALTHY
    },
    Scenario {
        name: "healthy-json",
        flags: &["--format", "json"],
        also: json_on_stdout,
        ..HEALTHY
    },
    Scenario {
        name: "healthy-markdown",
        flags: &["--format", "markdown"],
        says: &[Says::Starts("# Network diagnostics: healthy")],
        ..HEALTHY
    },
    Scenario {
        name: "collect-only",
        namespace: "deny-later",
        flags: &["--collect-only"],
        also: collected_only,
        ..HEALTHY
    },
    // Logs through the API need a kubelet, which the fixture lacks: a gap, not a fault.
    Scenario {
        name: "no-kubelet-logs",
        coredns_logs: false,
        exit: 1,
        findings: &["collect.partial"],
        says: &[Says::Stdout(
            "failed: `logs -n kube-system coredns-1 --tail=50`",
        )],
        ..HEALTHY
    },
    // NetworkPolicies, namespace-scoped.
    Scenario {
        name: "default-deny-egress",
        make: |api| app_namespace(api, "deny", &deny_egress("deny")),
        namespace: "deny",
        exit: 2,
        findings: &["netpol.dns-egress-blocked"],
        leads: Some("CRITICAL"),
        says: &[Says::FirstLine("default-deny-egress")],
        ..HEALTHY
    },
    Scenario {
        name: "policy-allows-dns",
        make: |api| {
            app_namespace(
                api,
                "allow",
                &format!("{}{ALLOW_DNS}", deny_egress("allow")),
            )
        },
        namespace: "allow",
        ..HEALTHY
    },
    Scenario {
        name: "policy-selects-no-pods",
        make: |api| app_namespace(api, "typo", SELECTS_NO_PODS),
        namespace: "typo",
        exit: 1,
        findings: &["netpol.selects-no-pods"],
        leads: Some("WARNING"),
        ..HEALTHY
    },
    // Cluster-wide faults, each healed after its run.
    Scenario {
        name: "coredns-ingress-restricted",
        make: |api| api.apply(DNS_FROM_PLATFORM_ONLY),
        heal: |api| {
            api.kubectl(&[
                "delete",
                "networkpolicy",
                "dns-from-platform",
                "-n",
                "kube-system",
            ]);
        },
        exit: 2,
        findings: &["netpol.dns-ingress-blocked"],
        leads: Some("CRITICAL"),
        ..HEALTHY
    },
    // The Endpoints are seeded by hand (no controller-manager), so they still list the pods.
    Scenario {
        name: "coredns-not-ready",
        make: |api| {
            coredns_status(api, "coredns-1", "10.244.0.11", false, 7);
            coredns_status(api, "coredns-2", "10.244.1.12", false, 5);
            api.apply(COREDNS_UNHEALTHY_EVENT);
        },
        heal: healthy_coredns,
        exit: 2,
        findings: &["dns.coredns-not-ready", "dns.coredns-restarting"],
        leads: Some("CRITICAL"),
        says: &[
            Says::Stdout("Readiness probe failed"),
            Says::Stdout("OOMKilled"),
        ],
        ..HEALTHY
    },
    Scenario {
        name: "kube-dns-no-endpoints",
        make: |api| {
            api.apply(
                "apiVersion: v1\nkind: Endpoints\nmetadata: { name: kube-dns, namespace: kube-system }\nsubsets: []\n",
            )
        },
        heal: reseed,
        exit: 2,
        findings: &["dns.service-no-endpoints"],
        leads: Some("CRITICAL"),
        ..HEALTHY
    },
    Scenario {
        name: "two-default-classes",
        make: |api| api.apply(SECOND_DEFAULT_CLASS),
        heal: |api| {
            api.kubectl(&["delete", "storageclass", "slow"]);
        },
        exit: 1,
        findings: &["storage.multiple-default-classes"],
        leads: Some("WARNING"),
        ..HEALTHY
    },
    Scenario {
        name: "pvc-pending",
        make: |api| api.apply(PVC_PROVISIONING_FAILED),
        heal: |api| api.force_delete("pvc", "shop", "db"),
        exit: 2,
        findings: &["storage.pvc-pending"],
        leads: Some("CRITICAL"),
        says: &[
            Says::Stdout("PVC shop/db Pending: ProvisioningFailed"),
            Says::Stdout("quota exceeded"),
        ],
        ..HEALTHY
    },
    Scenario {
        name: "csi-missing-on-node",
        make: |api| {
            api.apply(
                "apiVersion: storage.k8s.io/v1\nkind: CSINode\nmetadata: { name: node-b }\nspec: { drivers: [] }\n",
            )
        },
        heal: reseed,
        exit: 1,
        findings: &["storage.csi-node-missing"],
        says: &[Says::FirstLine(
            "csi.example.com is not registered on 1 of 2 nodes: node-b",
        )],
        ..HEALTHY
    },
    Scenario {
        name: "node-network-unavailable",
        make: |api| ready_node(api, "node-b", true),
        heal: |api| ready_node(api, "node-b", false),
        exit: 2,
        findings: &["network.node-network-unavailable"],
        leads: Some("CRITICAL"),
        says: &[Says::FirstLine("node-b"), Says::NotFirstLine("node-a")],
        ..HEALTHY
    },
    // Probe results from the kube-netprobe pods, captured /metrics (no daemons behind the pod
    // proxy here).
    Scenario {
        name: "matrix-isolated-node",
        metrics: || mesh(30, true),
        exit: 2,
        findings: &["network.node-isolated"],
        leads: Some("CRITICAL"),
        says: &[Says::ReportMd("| node-c | **DOWN** | **DOWN** |")],
        ..HEALTHY
    },
    Scenario {
        name: "dns-service-path-and-erofs",
        metrics: service_path_broken_and_volume_read_only,
        exit: 2,
        findings: &["dns.service-path-broken", "storage.probe-failing"],
        leads: Some("CRITICAL"),
        says: &[Says::Stdout(
            "Storage probe failing (erofs) on volume scratch of node node-b",
        )],
        ..HEALTHY
    },
    // node-c's kube-netprobe pod was just replaced: its own probes and its peers' probes of its
    // new address failed once, while the pod came up. Not judged: no critical finding, an info
    // that says so.
    Scenario {
        name: "matrix-fresh-pod",
        metrics: || mesh(1, true),
        findings: &["network.peers-too-fresh"],
        ..HEALTHY
    },
    // node-c's own /metrics not read (no file for it), its peers long failing to reach it: a
    // warning that makes no claim about what node-c reaches.
    Scenario {
        name: "matrix-unread-node",
        metrics: || mesh(30, false),
        exit: 1,
        findings: &["network.node-unreachable"],
        says: &[Says::FirstLine(
            "Node node-c is unreachable: no peer reaches it; its own view could not be read",
        )],
        ..HEALTHY
    },
    Scenario {
        name: "dns-upstream-failing",
        metrics: external_names_fail,
        exit: 2,
        findings: &["dns.upstream-failing"],
        leads: Some("CRITICAL"),
        says: &[
            Says::FirstLine("CoreDNS's upstream (/etc/resolv.conf) fails"),
            Says::FirstLine("example.com"),
        ],
        ..HEALTHY
    },
    Scenario {
        name: "dns-lookups-at-five-seconds",
        metrics: five_seconds_from_node_b,
        exit: 1,
        findings: &["dns.lookups-at-five-seconds"],
        leads: Some("WARNING"),
        says: &[Says::FirstLine("DNS lookups from node node-b take 5 s")],
        ..HEALTHY
    },
    // Back to healthy after all the heals.
    Scenario {
        name: "healthy-again",
        ..HEALTHY
    },
    // --storage-test: no provisioner and no kubelet here, so the test PVC stays Pending; what
    // is checked is the finding, and that the PVC and Job existed and are gone afterwards.
    Scenario {
        name: "storage-test-pending",
        flags: &["--storage-test", "--storage-test-timeout", "2s"],
        exit: 2,
        findings: &["storage.test-pvc-pending"],
        leads: Some("CRITICAL"),
        also: storage_test_timed_out_and_cleaned_up,
        ..HEALTHY
    },
    // An identity that may read some things only: a partial report naming the missing rules.
    Scenario {
        name: "rbac-limited",
        make: grant_partial_rbac,
        who: Identity::Netprobe,
        exit: 1,
        findings: &["collect.partial"],
        leads: Some("WARNING"),
        says: &[Says::Stdout(
            "Missing RBAC (partial report): list csidrivers",
        )],
        also: names_the_missing_rules,
        ..HEALTHY
    },
    // The ClusterRole docs/diagnose.md gives for a full report is enough for one.
    Scenario {
        name: "documented-rbac",
        make: grant_documented_rbac,
        who: Identity::Netprobe,
        ..HEALTHY
    },
    // Rejected credentials: exit 3 with a clear message, no report.
    Scenario {
        name: "bad-token",
        who: Identity::RejectedToken,
        exit: 3,
        says: &[Says::Stderr("rejected the credentials (401 Unauthorized)")],
        ..HEALTHY
    },
];

/// Checks `r` against what `says` says.
pub(super) fn check_says(checks: &mut Checks, r: &Run, says: &Says) {
    let first = r.stdout.lines().next().unwrap_or_default();
    let (ok, what) = match says {
        Says::Starts(t) => (
            r.stdout.starts_with(t),
            format!("stdout does not start with {t:?}"),
        ),
        Says::Stdout(t) => (r.stdout.contains(t), format!("stdout lacks {t:?}")),
        Says::NotStdout(t) => (!r.stdout.contains(t), format!("stdout has {t:?}")),
        Says::FirstLine(t) => (first.contains(t), format!("the first line lacks {t:?}")),
        Says::NotFirstLine(t) => (!first.contains(t), format!("the first line has {t:?}")),
        Says::Stderr(t) => (r.stderr.contains(t), format!("stderr lacks {t:?}")),
        Says::ReportMd(t) => (
            std::fs::read_to_string(r.dir.join("report.md")).is_ok_and(|md| md.contains(t)),
            format!("report.md in {} lacks {t:?}", r.dir.display()),
        ),
    };
    checks.that(ok, format!("{what}\n{}", r.context()));
}

/// The kubeconfig for `who`, written into `dir` when it is made up here.
pub(super) fn kubeconfig(api: &Apiserver, who: Identity, dir: &Path) -> std::path::PathBuf {
    match who {
        Identity::Admin => api.kubeconfig_admin().to_owned(),
        Identity::Netprobe => api.kubeconfig_netprobe().to_owned(),
        Identity::RejectedToken => {
            let bad = dir.join("bad-token.kubeconfig");
            std::fs::write(
                &bad,
                std::fs::read_to_string(api.kubeconfig_netprobe())
                    .unwrap()
                    .replace(api.netprobe_token(), "not-a-valid-token"),
            )
            .unwrap();
            bad
        }
    }
}

/// The storage test's PVCs and Jobs in namespace `healthy`, as `kind/name` lines.
pub(super) fn storage_test_leftovers(api: &Apiserver) -> String {
    let o = api.kubectl(&[
        "get",
        "pvc,jobs",
        "-n",
        "healthy",
        "-l",
        "app.kubernetes.io/name=kube-netprobe-storage-test",
        "-o",
        "name",
    ]);
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

// ---------------------------------------------------------------------------------------------
// Checks of one run's own

fn healthy_evidence(checks: &mut Checks, r: &Run, _: &Apiserver) {
    for file in [
        "report.md",
        "report.json",
        "coredns-logs.txt",
        "coredns-pods.yaml",
        "networkpolicies.yaml",
        "storage.yaml",
        "nodes.yaml",
        "kube-dns.yaml",
        "Corefile",
    ] {
        checks.that(
            r.dir.join(file).is_file(),
            format!("{file} missing in {}", r.dir.display()),
        );
    }
    if let Some(report) = &r.report {
        checks.eq("schema_version", report["schema_version"].as_u64(), Some(1));
        checks.eq("status", report["status"].as_str(), Some("healthy"));
    }
}

/// `--format json` prints the report on stdout.
fn json_on_stdout(checks: &mut Checks, r: &Run, _: &Apiserver) {
    let parsed: Option<serde_json::Value> = serde_json::from_str(&r.stdout).ok();
    checks.that(
        parsed.is_some_and(|p| p["exit_code"] == 0 && p["findings"] == serde_json::json!([])),
        format!("--format json stdout:\n{}", r.context()),
    );
}

/// `--collect-only` writes the evidence and judges nothing.
fn collected_only(checks: &mut Checks, r: &Run, _: &Apiserver) {
    checks.that(
        r.report
            .as_ref()
            .is_some_and(|j| j["status"] == "collected")
            && r.dir.join("storage.yaml").is_file(),
        format!("--collect-only:\n{}", r.context()),
    );
}

fn storage_test_timed_out_and_cleaned_up(checks: &mut Checks, r: &Run, api: &Apiserver) {
    let test_pvc = r
        .report
        .as_ref()
        .and_then(|r| r["storage_test"]["pvc"].as_str().map(str::to_owned))
        .unwrap_or_default();
    checks.that(
        test_pvc.starts_with("netprobe-storage-test-")
            && r.stdout.contains(&format!(
                "Storage test (healthy/{test_pvc} on the default class): timeout"
            )),
        format!("storage test outcome missing:\n{}", r.context()),
    );
    checks.eq(
        "storage test leftovers",
        storage_test_leftovers(api),
        String::new(),
    );
}

fn names_the_missing_rules(checks: &mut Checks, r: &Run, _: &Apiserver) {
    let missing: Vec<String> = r
        .report
        .as_ref()
        .and_then(|r| r["collection"]["missing_rbac"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    for rule in [
        "list networkpolicies.networking.k8s.io (cluster-wide)",
        "list csidrivers.storage.k8s.io (cluster-wide)",
        "list csinodes.storage.k8s.io (cluster-wide)",
        "list storageclasses.storage.k8s.io (cluster-wide)",
        "list persistentvolumes (cluster-wide)",
        "list volumeattachments.storage.k8s.io (cluster-wide)",
    ] {
        checks.that(
            missing.iter().any(|m| m == rule),
            format!("missing_rbac lacks {rule:?}: {missing:?}"),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Faults

fn reseed(api: &Apiserver) {
    api.apply(&base(&["node-a", "node-b"]));
}

fn deny_egress(ns: &str) -> String {
    format!(
        r#"---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{ name: default-deny-egress, namespace: {ns} }}
spec: {{ podSelector: {{}}, policyTypes: [Egress] }}
"#
    )
}

const ALLOW_DNS: &str = r#"---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: allow-dns, namespace: allow }
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector: { matchLabels: { kubernetes.io/metadata.name: kube-system } }
      podSelector: { matchLabels: { k8s-app: kube-dns } }
    ports: [{ protocol: UDP, port: 53 }, { protocol: TCP, port: 53 }]
"#;

const SELECTS_NO_PODS: &str = r#"---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: web-ingress, namespace: typo }
spec: { podSelector: { matchLabels: { app: wbe } }, policyTypes: [Ingress], ingress: [{}] }
"#;

const DNS_FROM_PLATFORM_ONLY: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: dns-from-platform, namespace: kube-system }
spec:
  podSelector: { matchLabels: { k8s-app: kube-dns } }
  policyTypes: [Ingress]
  ingress:
  - from: [{ namespaceSelector: { matchLabels: { team: platform } } }]
    ports: [{ protocol: UDP, port: 53 }, { protocol: TCP, port: 53 }]
"#;

const COREDNS_UNHEALTHY_EVENT: &str = r#"
apiVersion: v1
kind: Event
metadata: { name: coredns-1.unhealthy, namespace: kube-system }
involvedObject: { kind: Pod, name: coredns-1, namespace: kube-system }
type: Warning
reason: Unhealthy
message: "Readiness probe failed: HTTP probe failed with statuscode: 503"
count: 12
"#;

const SECOND_DEFAULT_CLASS: &str = r#"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: { name: slow, annotations: { storageclass.kubernetes.io/is-default-class: "true" } }
provisioner: csi.example.com
"#;

const PVC_PROVISIONING_FAILED: &str = r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: { name: db, namespace: shop }
spec:
  storageClassName: fast
  accessModes: [ReadWriteOnce]
  resources: { requests: { storage: 10Gi } }
---
apiVersion: v1
kind: Event
metadata: { name: db.provisioning, namespace: shop }
involvedObject: { kind: PersistentVolumeClaim, name: db, namespace: shop }
type: Warning
reason: ProvisioningFailed
message: 'failed to provision volume with StorageClass "fast": rpc error: code = ResourceExhausted desc = quota exceeded'
count: 3
"#;

fn grant_partial_rbac(api: &Apiserver) {
    api.apply(
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: diagnose-partial }
rules:
- apiGroups: [""]
  resources: [pods, services, endpoints, nodes, configmaps, events, namespaces, persistentvolumeclaims]
  verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: { name: diagnose-partial }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: diagnose-partial }
subjects:
- { kind: ServiceAccount, name: kube-netprobe, namespace: kube-netprobe }
"#,
    );
    poll("the RBAC grant to apply", Duration::from_secs(10), || {
        let o = api.kubectl_netprobe(&["get", "nodes", "-o", "name"]);
        if o.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&o.stderr).into_owned())
        }
    });
}

/// Binds the ClusterRole of docs/diagnose.md's "RBAC for a full report" to the ServiceAccount.
fn grant_documented_rbac(api: &Apiserver) {
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/diagnose.md"))
            .expect("docs/diagnose.md");
    let rbac_section = docs
        .split("## RBAC for a full report")
        .nth(1)
        .expect("RBAC section in docs/diagnose.md");
    let cluster_role = rbac_section
        .split("```yaml\n")
        .nth(1)
        .and_then(|y| y.split("```").next())
        .and_then(|y| y.split("---\n").next())
        .expect("a ClusterRole in the RBAC section");
    api.apply(&format!(
        "{cluster_role}---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\n\
         metadata: {{ name: diagnose-documented }}\n\
         roleRef: {{ apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: kube-netprobe-diagnose }}\n\
         subjects:\n- {{ kind: ServiceAccount, name: kube-netprobe, namespace: kube-netprobe }}\n"
    ));
    poll(
        "the documented RBAC to apply",
        Duration::from_secs(10),
        || {
            let o =
                api.kubectl_netprobe(&["get", "csidrivers,networkpolicies", "-A", "-o", "name"]);
            if o.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&o.stderr).into_owned())
            }
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Captured /metrics of the kube-netprobe pods

const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
const CLUSTER_NAME: &str = "kubernetes.default.svc.cluster.local";

/// The peer matrix of node-a, node-b and node-c (http and tcp): node-a and node-b reach each
/// other (30 probes), every probe to or from node-c failed `probes_to_c` times. Without
/// `with_c`, node-c's own /metrics are not given.
fn mesh(probes_to_c: u64, with_c: bool) -> Vec<(&'static str, String)> {
    NODES
        .iter()
        .filter(|src| with_c || **src != "node-c")
        .map(|src| {
            let mut text = String::new();
            for dst in NODES.iter().filter(|d| *d != src) {
                for protocol in ["http", "tcp"] {
                    text.push_str(&if *src == "node-c" || *dst == "node-c" {
                        peer_lines(dst, protocol, false, probes_to_c)
                    } else {
                        peer_lines(dst, protocol, true, 30)
                    });
                }
            }
            (*src, text)
        })
        .collect()
}

/// Every CoreDNS pod answers directly but the Service path fails (kube-proxy), and node-b's
/// volume is read-only.
fn service_path_broken_and_volume_read_only() -> Vec<(&'static str, String)> {
    ["node-a", "node-b"]
        .into_iter()
        .map(|node| {
            let mut text = String::new();
            for (server, ok) in [
                ("system", false),
                ("coredns/coredns-1", true),
                ("coredns/coredns-2", true),
            ] {
                text.push_str(&dns_lines(server, CLUSTER_NAME, ok));
            }
            if node == "node-b" {
                text.push_str(
                    "netprobe_storage_probe_success{volume=\"scratch\"} 0\n\
                     netprobe_storage_probes_total{volume=\"scratch\",result=\"success\"} 40\n\
                     netprobe_storage_probes_total{volume=\"scratch\",result=\"erofs\"} 5\n",
                );
            }
            (node, text)
        })
        .collect()
}

/// Names outside the cluster: the cluster name resolves through every server, the external one
/// through none: CoreDNS's upstream, not CoreDNS.
fn external_names_fail() -> Vec<(&'static str, String)> {
    let mut text = String::new();
    for server in ["system", "coredns/coredns-1", "coredns/coredns-2"] {
        text.push_str(&dns_lines(server, CLUSTER_NAME, true));
        text.push_str(&dns_lines(server, "example.com", false));
    }
    vec![("node-a", text.clone()), ("node-b", text)]
}

/// Every lookup from node-b through the Service takes 5 s (first packet lost, libc's retry
/// answered); node-a's are quick.
fn five_seconds_from_node_b() -> Vec<(&'static str, String)> {
    let latency = |seconds: f64| -> String {
        let mut text = dns_lines("system", CLUSTER_NAME, true);
        text.push_str(&dns_histogram("system", CLUSTER_NAME, seconds, 120));
        text.push_str(&dns_lines("coredns/coredns-1", CLUSTER_NAME, true));
        text.push_str(&dns_histogram(
            "coredns/coredns-1",
            CLUSTER_NAME,
            0.001,
            120,
        ));
        text
    };
    vec![("node-a", latency(0.002)), ("node-b", latency(5.004))]
}
