//! The healthy cluster every scenario starts from (nodes, CoreDNS, a storage class, an app
//! namespace), the status patches that break it, and `/metrics` lines of the daemons.

use crate::apiserver::Apiserver;

/// The healthy cluster every scenario starts from, with `nodes` (CoreDNS runs on the first two).
pub(crate) fn base(nodes: &[&str]) -> String {
    let mut yaml = String::new();
    for n in nodes {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: Node\nmetadata: {{ name: {n} }}\n---\n\
             apiVersion: storage.k8s.io/v1\nkind: CSINode\nmetadata: {{ name: {n} }}\n\
             spec: {{ drivers: [{{ name: csi.example.com, nodeID: {n} }}] }}\n"
        ));
    }
    yaml.push_str("---\n");
    yaml.push_str(
        &BASE_OBJECTS
            .replace("nodeName: node-a", &format!("nodeName: {}", nodes[0]))
            .replace("nodeName: node-b", &format!("nodeName: {}", nodes[1])),
    );
    yaml
}

const BASE_OBJECTS: &str = r#"apiVersion: v1
kind: Pod
metadata: { name: coredns-1, namespace: kube-system, labels: { k8s-app: kube-dns } }
spec: { nodeName: node-a, containers: [{ name: coredns, image: coredns:1.11 }] }
---
apiVersion: v1
kind: Pod
metadata: { name: coredns-2, namespace: kube-system, labels: { k8s-app: kube-dns } }
spec: { nodeName: node-b, containers: [{ name: coredns, image: coredns:1.11 }] }
---
apiVersion: v1
kind: Service
metadata: { name: kube-dns, namespace: kube-system }
spec:
  clusterIP: 10.96.0.10
  selector: { k8s-app: kube-dns }
  ports: [{ name: dns, port: 53, protocol: UDP }, { name: dns-tcp, port: 53, protocol: TCP }]
---
apiVersion: v1
kind: Endpoints
metadata: { name: kube-dns, namespace: kube-system }
subsets:
- addresses: [{ ip: 10.244.0.11 }, { ip: 10.244.1.12 }]
  ports: [{ name: dns, port: 53, protocol: UDP }, { name: dns-tcp, port: 53, protocol: TCP }]
---
apiVersion: v1
kind: ConfigMap
metadata: { name: coredns, namespace: kube-system }
data:
  Corefile: |
    .:53 {
        errors
        health
        ready
        kubernetes cluster.local in-addr.arpa ip6.arpa
        forward . /etc/resolv.conf
        cache 30
        loop
    }
---
apiVersion: storage.k8s.io/v1
kind: CSIDriver
metadata: { name: csi.example.com }
spec: { attachRequired: false }
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: { name: fast, annotations: { storageclass.kubernetes.io/is-default-class: "true" } }
provisioner: csi.example.com
---
apiVersion: v1
kind: Namespace
metadata: { name: shop }
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: { name: data, namespace: shop }
spec:
  storageClassName: fast
  accessModes: [ReadWriteOnce]
  resources: { requests: { storage: 1Gi } }
"#;

/// `/metrics` lines of one peer probed `probes` times, the last time `up` or not.
pub(super) fn peer_lines(target: &str, protocol: &str, up: bool, probes: u64) -> String {
    format!(
        "netprobe_peer_probe_success{{target_node=\"{target}\",protocol=\"{protocol}\",family=\"ipv4\"}} {}\n\
         netprobe_peer_requests_total{{target_node=\"{target}\",protocol=\"{protocol}\",family=\"ipv4\",result=\"{}\"}} {probes}\n",
        u8::from(up),
        if up { "success" } else { "timeout" }
    )
}

/// `/metrics` lines of one DNS target after 40 lookups, the last one `ok` or not.
pub(super) fn dns_lines(server: &str, name: &str, ok: bool) -> String {
    format!(
        "netprobe_dns_probe_success{{server=\"{server}\",name=\"{name}\",qtype=\"A\"}} {}\n\
         netprobe_dns_lookups_total{{server=\"{server}\",name=\"{name}\",qtype=\"A\",rcode=\"{}\"}} 40\n",
        u8::from(ok),
        if ok { "NOERROR" } else { "SERVFAIL" }
    )
}

/// The lookup-duration histogram of one DNS target: `lookups` answered after `seconds` each,
/// in the daemon's buckets.
pub(super) fn dns_histogram(server: &str, name: &str, seconds: f64, lookups: u64) -> String {
    let labels = format!("server=\"{server}\",name=\"{name}\",qtype=\"A\"");
    let mut text = String::new();
    for le in kube_netprobe::metrics::DNS_BUCKETS {
        let n = if seconds <= *le { lookups } else { 0 };
        text.push_str(&format!(
            "netprobe_dns_lookup_duration_seconds_bucket{{{labels},le=\"{le:?}\"}} {n}\n"
        ));
    }
    text.push_str(&format!(
        "netprobe_dns_lookup_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {lookups}\n\
         netprobe_dns_lookup_duration_seconds_sum{{{labels}}} {}\n\
         netprobe_dns_lookup_duration_seconds_count{{{labels}}} {lookups}\n",
        seconds * lookups as f64
    ));
    text
}

pub(crate) fn ready_node(api: &Apiserver, name: &str, network_unavailable: bool) {
    api.patch_status(
        "nodes",
        "",
        name,
        &format!(
            r#"{{"status":{{"conditions":[{{"type":"Ready","status":"True","reason":"KubeletReady","message":"ok"}},
            {{"type":"NetworkUnavailable","status":"{}","reason":"RouteCreated","message":"routes"}}]}}}}"#,
            if network_unavailable { "True" } else { "False" }
        ),
    );
}

pub(crate) fn coredns_status(api: &Apiserver, pod: &str, ip: &str, ready: bool, restarts: u32) {
    let (state, last) = if restarts > 0 {
        (
            r#"{"waiting":{"reason":"CrashLoopBackOff","message":"back-off 5m0s restarting failed container"}}"#,
            r#","lastState":{"terminated":{"reason":"OOMKilled","exitCode":137}}"#,
        )
    } else {
        (r#"{"running":{}}"#, "")
    };
    api.patch_status(
        "pods",
        "kube-system",
        pod,
        &format!(
            r#"{{"status":{{"phase":"Running","podIP":"{ip}","podIPs":[{{"ip":"{ip}"}}],
            "conditions":[{{"type":"Ready","status":"{}"}}],
            "containerStatuses":[{{"name":"coredns","ready":{ready},"restartCount":{restarts},"image":"coredns:1.11","imageID":"",
            "state":{state}{last}}}]}}}}"#,
            if ready { "True" } else { "False" }
        ),
    );
}

pub(crate) fn healthy_coredns(api: &Apiserver) {
    coredns_status(api, "coredns-1", "10.244.0.11", true, 0);
    coredns_status(api, "coredns-2", "10.244.1.12", true, 0);
}

/// A namespace with one ready pod behind a Service with endpoints, plus `extra` YAML.
pub(super) fn app_namespace(api: &Apiserver, ns: &str, extra: &str) {
    api.apply(&format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{ name: {ns} }}
---
apiVersion: v1
kind: Pod
metadata: {{ name: web-1, namespace: {ns}, labels: {{ app: web }} }}
spec: {{ nodeName: node-a, containers: [{{ name: web, image: nginx }}] }}
---
apiVersion: v1
kind: Service
metadata: {{ name: web, namespace: {ns} }}
spec: {{ selector: {{ app: web }}, ports: [{{ port: 80 }}] }}
---
apiVersion: v1
kind: Endpoints
metadata: {{ name: web, namespace: {ns} }}
subsets: [{{ addresses: [{{ ip: 10.244.0.30 }}], ports: [{{ port: 80 }}] }}]
{extra}"#
    ));
    api.patch_status(
        "pods",
        ns,
        "web-1",
        r#"{"status":{"phase":"Running","podIP":"10.244.0.30","conditions":[{"type":"Ready","status":"True"}]}}"#,
    );
}
