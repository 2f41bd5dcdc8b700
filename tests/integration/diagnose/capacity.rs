//! `kube-netprobe diagnose` on capacity, against the real kube-apiserver of the diagnose suite:
//! a node whose pods take every address of its podCIDR, a cluster whose cores ask for more
//! CoreDNS replicas than it runs, and a kube-netprobe pod whose volume is nearly full (its
//! `/metrics` given as a file, as the suite does for every live view). Everything else is the
//! healthy cluster of the diagnose suite, so the report must name these faults and no other.

use std::time::Instant;

use super::seed::{app_namespace, base, healthy_coredns, ready_node};
use super::{diagnose, expect, fixture, validate_reports};
use crate::apiserver::Apiserver;
use crate::util::Checks;

/// A pod on `node` in `ns`, Running, on the pod network or the host's.
fn running_pod(api: &Apiserver, ns: &str, name: &str, node: &str, host_network: bool) {
    api.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{ name: {name}, namespace: {ns} }}\n\
         spec:\n  nodeName: {node}\n  hostNetwork: {host_network}\n  \
         containers: [{{ name: app, image: app:1 }}]\n"
    ));
    api.patch_status(
        "pods",
        ns,
        name,
        r#"{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}"#,
    );
}

#[test]
#[ignore = "needs root: a kube-apiserver of its own (apt-get, /var/cache)"]
fn diagnose_names_a_node_out_of_pod_ips_and_too_few_coredns_replicas() {
    let api = Apiserver::start();
    let started = Instant::now();
    let out = tempfile::tempdir().expect("tempdir");
    let admin = api.kubeconfig_admin().to_owned();
    let logs = fixture("coredns-healthy.log");
    let logs = logs.to_str().expect("utf-8 path");
    let mut checks = Checks::default();

    // node-a has a /28 (13 addresses for pods), node-b a /24; both Ready.
    api.apply(
        &base(&["node-a", "node-b"])
            .replace(
                "metadata: { name: node-a }\n",
                "metadata: { name: node-a }\nspec: { podCIDR: 10.244.1.0/28 }\n",
            )
            .replace(
                "metadata: { name: node-b }\n",
                "metadata: { name: node-b }\nspec: { podCIDR: 10.244.2.0/24 }\n",
            ),
    );
    ready_node(&api, "node-a", false);
    ready_node(&api, "node-b", false);
    healthy_coredns(&api);
    api.patch_status(
        "persistentvolumeclaims",
        "shop",
        "data",
        r#"{"status":{"phase":"Bound"}}"#,
    );
    app_namespace(&api, "healthy", "");

    // Healthy first: 2 nodes of 8 cores want 2 replicas, and node-a has room.
    for node in ["node-a", "node-b"] {
        api.patch_status(
            "nodes",
            "",
            node,
            r#"{"status":{"capacity":{"cpu":"8","pods":"110"}}}"#,
        );
    }
    let healthy = diagnose(
        "capacity-healthy",
        &admin,
        out.path(),
        &["-n", "healthy", "--coredns-logs", logs],
    );
    expect(&mut checks, &healthy, 0, &[]);

    // node-a: coredns-1 and healthy/web-1 are there; 11 more pods take the last addresses. A
    // hostNetwork pod and a finished one hold none. And the nodes grow to 300 cores each: 600
    // cores ask for ceil(600 / 256) = 3 replicas, 2 run.
    for i in 0..11 {
        running_pod(&api, "shop", &format!("app-{i}"), "node-a", false);
    }
    running_pod(&api, "kube-system", "kube-proxy-a", "node-a", true);
    running_pod(&api, "shop", "job-done", "node-a", false);
    api.patch_status(
        "pods",
        "shop",
        "job-done",
        r#"{"status":{"phase":"Succeeded"}}"#,
    );
    for node in ["node-a", "node-b"] {
        api.patch_status(
            "nodes",
            "",
            node,
            r#"{"status":{"capacity":{"cpu":"300","pods":"110"}}}"#,
        );
    }
    let r = diagnose(
        "capacity-faults",
        &admin,
        out.path(),
        &["-n", "healthy", "--coredns-logs", logs],
    );
    expect(
        &mut checks,
        &r,
        2,
        &["network.pod-ips-exhausted", "dns.coredns-underprovisioned"],
    );
    r.leads_with(&mut checks, "CRITICAL", "network.pod-ips-exhausted");
    let finding = |id: &str| {
        r.report.as_ref().and_then(|rep| {
            rep["findings"]
                .as_array()?
                .iter()
                .find(|f| f["id"] == id)
                .cloned()
        })
    };
    if let Some(f) = finding("network.pod-ips-exhausted") {
        checks.eq(
            "pod IPs title",
            f["title"].as_str(),
            Some("1 node no pod IP left: node-a"),
        );
        checks.eq(
            "pod IPs evidence",
            f["evidence"][0].as_str(),
            Some("node node-a: 13 pods need a pod IP, podCIDR 10.244.1.0/28 gives 13 (100 %)"),
        );
    } else {
        checks.that(false, format!("no pod IP finding\n{}", r.context()));
    }
    if let Some(f) = finding("dns.coredns-underprovisioned") {
        checks.eq(
            "CoreDNS title",
            f["title"].as_str(),
            Some("2 CoreDNS replicas for 2 nodes: the common ratio asks for 3"),
        );
        checks.eq(
            "CoreDNS cores",
            f["evidence"][1].as_str(),
            Some("2 nodes with 600 CPU cores in all"),
        );
    } else {
        checks.that(false, format!("no CoreDNS finding\n{}", r.context()));
    }

    // The kube-netprobe pod of node-b says its volume has 1 MiB of 10 MiB left (from its own
    // statfs, read here from a file as the pod proxy would give it).
    let metrics = out.path().join("node-b.metrics");
    std::fs::write(
        &metrics,
        "netprobe_storage_volume_free_bytes{volume=\"scratch\"} 1048576\n\
         netprobe_storage_volume_size_bytes{volume=\"scratch\"} 10485760\n\
         netprobe_storage_volume_free_inodes{volume=\"scratch\"} 900\n\
         netprobe_storage_volume_inodes{volume=\"scratch\"} 1000\n",
    )
    .unwrap();
    let probe_metrics = format!("node-b={}", metrics.display());
    let v = diagnose(
        "capacity-volume",
        &admin,
        out.path(),
        &[
            "-n",
            "healthy",
            "--coredns-logs",
            logs,
            "--probe-metrics",
            &probe_metrics,
        ],
    );
    expect(
        &mut checks,
        &v,
        2,
        &[
            "network.pod-ips-exhausted",
            "dns.coredns-underprovisioned",
            "storage.volume-nearly-full",
        ],
    );
    checks.that(
        v.stdout
            .contains("probed volume nearly full: scratch on node-b")
            && v.stdout
                .contains("node node-b volume scratch: 1MiB of 10MiB free (10.0 %)"),
        format!("the volume finding names node-b's scratch\n{}", v.context()),
    );
    validate_reports(
        &mut checks,
        &[
            healthy.dir.join("report.json"),
            r.dir.join("report.json"),
            v.dir.join("report.json"),
        ],
    );
    checks.finish(&format!("diagnose capacity, {:?}", started.elapsed()));
}
