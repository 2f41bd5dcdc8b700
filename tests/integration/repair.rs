//! `kube-netprobe repair` against a real kube-apiserver, as the chart's repair ServiceAccount with
//! exactly the chart's repair RBAC (rendered by helm, bound to that identity through
//! impersonation): dry-run changes nothing and records what it would do, `--apply` evicts the
//! one failing CoreDNS replica (Eviction API) and deletes the kube-proxy pod of the one node
//! whose Service path fails, a second process reads the first one's Events back and does not
//! act again, every replica failing or a node unread is refused with the reason, a
//! PodDisruptionBudget blocks the eviction, and the long-running controller counts all of it in
//! `/metrics`.
//!
//! The kube-netprobe pods' `/metrics` come from files (`--probe-metrics NODE=FILE`): the
//! fixture runs no kubelet, so the API server's pod proxy has nothing to reach. Pods acted on are
//! seen Terminating (deletionTimestamp set), as with a real kubelet before it finishes them. The
//! real cluster's suite (tests/integration/cluster) proves the same with real pods.

use std::io::BufRead;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::apiserver::Apiserver;
use crate::kube::{node, ready_pod};
use crate::util::{Metrics, bin, http_get, poll_every};

const NAMESPACE: &str = "kube-netprobe";
const NAME: &str = "kubernetes.default.svc.cluster.local";
const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

struct Fixture {
    api: Apiserver,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

/// A cluster of three Ready nodes, two CoreDNS replicas (coredns-a on node-a, coredns-b on
/// node-b), a kube-proxy pod per node, and the chart's repair RBAC.
fn fixture() -> Fixture {
    let api = Apiserver::start();
    api.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{ name: {NAMESPACE} }}\n"
    ));
    let rbac = crate::chart::render(&[
        "--set",
        "repair.enabled=true",
        "--show-only",
        "templates/repair-rbac.yaml",
    ]);
    api.apply(&rbac);
    for (i, n) in NODES.iter().enumerate() {
        node(&api, n);
        ready_pod(
            &api,
            "kube-system",
            &format!("kube-proxy-{n}"),
            "{ k8s-app: kube-proxy }",
            n,
            Ipv4Addr::new(198, 18, 0, 10 + i as u8),
        );
    }
    for (pod, n, ip) in [("coredns-a", "node-a", 21), ("coredns-b", "node-b", 22)] {
        ready_pod(
            &api,
            "kube-system",
            pod,
            "{ k8s-app: kube-dns }",
            n,
            Ipv4Addr::new(198, 18, 1, ip),
        );
    }
    // The kube-dns Service and its Endpoints: both replicas serve (the evidence that the
    // Service path, not CoreDNS, fails on a node).
    api.apply(
        "apiVersion: v1\nkind: Service\nmetadata: { name: kube-dns, namespace: kube-system }\n\
         spec:\n  selector: { k8s-app: kube-dns }\n  ports: [{ name: dns, port: 53, protocol: UDP }]\n\
         ---\napiVersion: v1\nkind: Endpoints\nmetadata: { name: kube-dns, namespace: kube-system }\n\
         subsets:\n  - addresses: [{ ip: 198.18.1.21 }, { ip: 198.18.1.22 }]\n    \
         ports: [{ name: dns, port: 53, protocol: UDP }]\n",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    // The admin, impersonating the chart's repair ServiceAccount: RBAC judges that identity.
    let admin = std::fs::read_to_string(api.kubeconfig_admin()).expect("admin kubeconfig");
    let impersonating = admin.replacen(
        "  user:\n",
        &format!(
            "  user:\n    as: system:serviceaccount:{NAMESPACE}:kube-netprobe-repair\n    \
             as-groups: [system:serviceaccounts, \"system:serviceaccounts:{NAMESPACE}\", system:authenticated]\n"
        ),
        1,
    );
    assert_ne!(admin, impersonating, "no user section in {admin}");
    let kubeconfig = dir.path().join("repair.kubeconfig");
    std::fs::write(&kubeconfig, impersonating).unwrap();
    Fixture {
        api,
        dir,
        kubeconfig,
    }
}

/// The DNS part of one node's kube-netprobe `/metrics`: (server, ok) for the chart's cluster
/// name, 10 lookups each.
fn dns_metrics(rows: &[(&str, bool)]) -> String {
    let mut out = String::from(
        "# TYPE netprobe_dns_probe_success gauge\n# TYPE netprobe_dns_lookups counter\n",
    );
    for (server, ok) in rows {
        out.push_str(&format!(
            "netprobe_dns_probe_success{{server=\"{server}\",name=\"{NAME}\",qtype=\"A\",family=\"ipv4\"}} {}\n\
             netprobe_dns_lookups_total{{server=\"{server}\",name=\"{NAME}\",qtype=\"A\",family=\"ipv4\",rcode=\"{}\"}} 10\n",
            u8::from(*ok),
            if *ok { "NOERROR" } else { "REFUSED" }
        ));
    }
    out + "# EOF\n"
}

impl Fixture {
    /// Writes each node's metrics file; returns the `--probe-metrics` arguments.
    fn metrics(&self, per_node: &[(&str, String)]) -> Vec<String> {
        per_node
            .iter()
            .flat_map(|(n, text)| {
                let path = self.dir.path().join(format!("{n}.txt"));
                std::fs::write(&path, text).unwrap();
                [
                    "--probe-metrics".to_owned(),
                    format!("{n}={}", path.display()),
                ]
            })
            .collect()
    }

    fn args(&self, metrics: &[String], extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = ["repair", "--kubeconfig"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(self.kubeconfig.display().to_string());
        args.extend(["--netprobe-namespace".into(), NAMESPACE.into()]);
        args.extend(metrics.iter().cloned());
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// `repair --once ARGS`: (exit code, stdout, stderr).
    fn once(&self, metrics: &[String], extra: &[&str]) -> (i32, String, String) {
        let out = Command::new(bin())
            .args(self.args(metrics, &[&["--once"], extra].concat()))
            .stdin(Stdio::null())
            .output()
            .expect("run repair");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn pod(&self, namespace: &str, name: &str) -> Value {
        self.api.get_json(&["pod", "-n", namespace, name])
    }

    fn terminating(&self, namespace: &str, name: &str) -> bool {
        self.pod(namespace, name)["metadata"]["deletionTimestamp"].is_string()
    }

    /// repair's Events in `namespace`: (reason, object name, message).
    fn events(&self, namespace: &str) -> Vec<(String, String, String)> {
        let list = self.api.get_json(&[
            "events",
            "-n",
            namespace,
            "--field-selector",
            "source=kube-netprobe-repair",
        ]);
        let mut out: Vec<(String, String, String)> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
                (
                    s(&e["reason"]),
                    s(&e["involvedObject"]["name"]),
                    s(&e["message"]),
                )
            })
            .collect();
        out.sort();
        out
    }
}

/// Every node reaches both CoreDNS pods directly and through the Service, but `bad` fails.
fn one_replica_failing(bad: &str) -> Vec<(&'static str, String)> {
    NODES
        .iter()
        .map(|n| {
            (
                *n,
                dns_metrics(&[
                    ("system", true),
                    ("coredns/coredns-a", bad != "coredns-a"),
                    ("coredns/coredns-b", bad != "coredns-b"),
                ]),
            )
        })
        .collect()
}

#[test]
#[ignore = "needs root: a kube-apiserver of its own (apt-get, /var/cache)"]
fn dry_run_changes_nothing_apply_evicts_once_and_a_restart_remembers() {
    let f = fixture();
    let metrics = f.metrics(&one_replica_failing("coredns-b"));

    // Dry-run, the default: says what it would do, records it, changes nothing.
    let (code, out, err) = f.once(&metrics, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("in dry-run (nothing is changed; --apply to act)"),
        "{out}"
    );
    assert!(
        out.contains(
            "dry_run: dry-run: would evict CoreDNS pod kube-system/coredns-b (finding dns.replica-failing: CoreDNS pod coredns-b fails DNS probes while the other replicas answer); run with --apply to act"
        ),
        "{out}"
    );
    assert!(!f.terminating("kube-system", "coredns-b"));
    let events = f.events("kube-system");
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(
        (events[0].0.as_str(), events[0].1.as_str()),
        ("RepairDryRun", "coredns-b")
    );

    // --apply: the dry run does not hold it back; the failing replica is evicted, the other
    // is not touched.
    let (code, out, err) = f.once(&metrics, &["--apply"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains(
            "taken: evict CoreDNS pod kube-system/coredns-b (finding dns.replica-failing:"
        ),
        "{out}"
    );
    assert!(f.terminating("kube-system", "coredns-b"), "not evicted");
    assert!(!f.terminating("kube-system", "coredns-a"));

    // A second process, the evidence unchanged (the replica still fails in the metrics): it
    // reads the first one's Events and refuses within the window. Exactly one action.
    let (code, out, err) = f.once(&metrics, &["--apply"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("history: "), "{out}");
    assert!(
        out.contains("refused (target_window): refused to evict CoreDNS pod kube-system/coredns-b"),
        "{out}"
    );
    let taken: Vec<_> = f
        .events("kube-system")
        .into_iter()
        .filter(|e| e.0 == "RepairTaken")
        .collect();
    assert_eq!(taken.len(), 1, "{taken:#?}");
    assert!(
        taken[0]
            .2
            .starts_with("evict CoreDNS pod kube-system/coredns-b"),
        "{taken:?}"
    );
}

#[test]
#[ignore = "needs root: a kube-apiserver of its own (apt-get, /var/cache)"]
fn refusals_say_why_and_kube_proxy_is_restarted_on_the_one_broken_node() {
    let f = fixture();

    // Every replica fails: the fault is not one replica's.
    let all_failing: Vec<(&str, String)> = NODES
        .iter()
        .map(|n| {
            (
                *n,
                dns_metrics(&[
                    ("system", false),
                    ("coredns/coredns-a", false),
                    ("coredns/coredns-b", false),
                ]),
            )
        })
        .collect();
    let (code, out, err) = f.once(&f.metrics(&all_failing), &["--apply"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("refused (too_many_failing): refused to evict CoreDNS pod kube-system/coredns-a (node node-a): 2 of 2 CoreDNS replicas fail, more than 50 %: the fault is elsewhere"),
        "{out}"
    );
    assert!(!f.terminating("kube-system", "coredns-a"));
    assert!(!f.terminating("kube-system", "coredns-b"));
    let refused = f.events("kube-system");
    assert_eq!(refused.len(), 1, "one refusal per subject: {refused:#?}");
    assert_eq!(refused[0].0, "RepairRefused");
    assert!(
        refused[0].2.contains("2 of 2 CoreDNS replicas fail"),
        "{refused:?}"
    );

    // A fourth node, Ready, whose kube-netprobe metrics are missing: partial evidence.
    node(&f.api, "node-d");
    let (code, out, _) = f.once(&f.metrics(&one_replica_failing("coredns-b")), &["--apply"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("refused (partial_evidence)")
            && out.contains("node node-d: no kube-netprobe pod read"),
        "{out}"
    );
    assert!(!f.terminating("kube-system", "coredns-b"));
    f.api.force_delete("node", "", "node-d");

    // A PodDisruptionBudget that allows no disruption: the eviction is blocked, and said so.
    f.api.apply(
        "apiVersion: policy/v1beta1\nkind: PodDisruptionBudget\nmetadata: { name: coredns, namespace: kube-system }\n\
         spec:\n  minAvailable: 2\n  selector: { matchLabels: { k8s-app: kube-dns } }\n",
    );
    let (code, out, _) = f.once(&f.metrics(&one_replica_failing("coredns-b")), &["--apply"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("blocked: could not evict CoreDNS pod kube-system/coredns-b: a PodDisruptionBudget does not allow it now"),
        "{out}"
    );
    assert!(!f.terminating("kube-system", "coredns-b"));

    // node-b's Service path fails while it reaches both CoreDNS pods directly: its kube-proxy
    // pod, and only that one, is deleted (its DaemonSet would recreate it).
    let service_broken: Vec<(&str, String)> = NODES
        .iter()
        .map(|n| {
            (
                *n,
                dns_metrics(&[
                    ("system", *n != "node-b"),
                    ("coredns/coredns-a", true),
                    ("coredns/coredns-b", true),
                ]),
            )
        })
        .collect();
    let (code, out, err) = f.once(&f.metrics(&service_broken), &["--apply"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("taken: delete kube-proxy pod kube-system/kube-proxy-node-b of node node-b (finding dns.node-service-path-broken:"),
        "{out}"
    );
    assert!(f.terminating("kube-system", "kube-proxy-node-b"));
    for other in ["kube-proxy-node-a", "kube-proxy-node-c"] {
        assert!(!f.terminating("kube-system", other), "{other}");
    }

    // node-c's too, now: no kube-proxy pod there is left to delete (gone), and the global
    // limit (one per 10 minutes) holds anyway.
    f.api
        .force_delete("pod", "kube-system", "kube-proxy-node-c");
    let c_broken: Vec<(&str, String)> = NODES
        .iter()
        .map(|n| {
            (
                *n,
                dns_metrics(&[
                    ("system", *n != "node-c"),
                    ("coredns/coredns-a", true),
                    ("coredns/coredns-b", true),
                ]),
            )
        })
        .collect();
    let (_, out, _) = f.once(&f.metrics(&c_broken), &["--apply"]);
    assert!(out.contains("refused (global_limit)"), "{out}");
    let (_, out, _) = f.once(&f.metrics(&c_broken), &["--apply", "--global-window", "0s"]);
    assert!(
        out.contains("refused (no_target): refused to delete the kube-proxy pod of node node-c: no pod with k8s-app=kube-proxy on node node-c in kube-system"),
        "{out}"
    );
}

/// The controller (no --once): passes every --interval, counts in /metrics, records a refusal
/// once however many passes see it, verifies its action, and stops on SIGTERM with 0.
#[test]
#[ignore = "needs root: a kube-apiserver of its own (apt-get, /var/cache)"]
fn the_controller_counts_records_once_and_verifies() {
    let f = fixture();
    let metrics = f.metrics(&one_replica_failing("coredns-b"));
    let mut child = Command::new(bin())
        .args(f.args(
            &metrics,
            &[
                "--apply",
                "--listen",
                "127.0.0.1:0",
                "--interval",
                "1s",
                "--verify-after",
                "3s",
                "--evidence-for",
                "0s",
            ],
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start repair");
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let addr: SocketAddr = loop {
        line.clear();
        if stderr.read_line(&mut line).unwrap_or(0) == 0 {
            let _ = child.kill();
            panic!("repair exited before listening");
        }
        if let Some(a) = line.trim().strip_prefix("listening on ") {
            break a.parse().expect("address");
        }
    };
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Kill(child);
    let scrape = || -> Result<Metrics, String> {
        let r = http_get(addr, "/metrics").map_err(|e| e.to_string())?;
        Metrics::parse(&r.body)
    };
    let count =
        |m: &Metrics, name: &str, labels: &[(&str, &str)]| m.get(name, labels).unwrap_or(-1.0);
    // Taken in the first pass; the evidence does not change (the file still shows the replica
    // failing), so it is verified as not helping once --verify-after has passed, and the passes
    // after that refuse it as not helping.
    let m = poll_every(
        "the eviction verified as not helping and then refused as such",
        Duration::from_secs(60),
        Duration::from_millis(300),
        || {
            let m = scrape()?;
            let v = count(
                &m,
                "netprobe_repair_refusals_total",
                &[("action", "evict_coredns"), ("reason", "not_helping")],
            );
            // Two: counted again by the next pass, while its Event is written once.
            if v >= 2.0 {
                Ok(m)
            } else {
                Err(format!("not_helping refusals {v}"))
            }
        },
    );
    let action = |result| {
        count(
            &m,
            "netprobe_repair_actions_total",
            &[("action", "evict_coredns"), ("result", result)],
        )
    };
    assert_eq!(action("done"), 1.0);
    assert_eq!(action("dry_run"), 0.0);
    assert_eq!(action("not_helping"), 1.0);
    assert_eq!(action("resolved"), 0.0);
    // Every pass before the verification saw the same candidate within the target window, and
    // every pass after it the same action not helping: counted every pass, recorded once each
    // (the Events below).
    for reason in ["target_window", "not_helping"] {
        let n = count(
            &m,
            "netprobe_repair_refusals_total",
            &[("action", "evict_coredns"), ("reason", reason)],
        );
        assert!(n >= 1.0, "{reason}: {n}");
    }
    assert!(count(&m, "netprobe_repair_passes_total", &[("result", "ok")]) >= 2.0);
    assert_eq!(count(&m, "netprobe_repair_apply", &[]), 1.0);
    let reasons: Vec<String> = f.events("kube-system").into_iter().map(|e| e.0).collect();
    assert_eq!(
        reasons,
        [
            "RepairNotHelping",
            "RepairRefused",
            "RepairRefused",
            "RepairTaken"
        ],
        "one Event each"
    );
    assert!(http_get(addr, "/healthz").is_ok_and(|r| r.status == 200));
    // Within the chart's memory limit for it (repair.resources.limits.memory: 128Mi), with
    // this debug build's code pages counted.
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.0.id())).unwrap();
    let hwm_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    eprintln!("repair controller peak RSS: {hwm_kib} KiB");
    assert!(
        hwm_kib < 128 * 1024,
        "peak RSS {hwm_kib} KiB over the chart's 128Mi limit"
    );
    // SIGTERM: a clean stop.
    let pid = child.0.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let status = poll_every(
        "repair to exit on SIGTERM",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || match child.0.try_wait() {
            Ok(Some(s)) => Ok(s),
            other => Err(format!("{other:?}")),
        },
    );
    assert_eq!(status.code(), Some(0));
}
