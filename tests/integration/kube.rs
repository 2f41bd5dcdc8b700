//! Against a real kube-apiserver (with etcd): peer discovery from the DaemonSet's pods, the
//! departure of peers (pod deleted, node cordoned), an API-server outage, the API-server probe
//! over its direct and DNS paths, and CSI node registration. The daemon authenticates as the netprobe service
//! account with only the RBAC below: the rights the code needs and no more.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use crate::apiserver::Apiserver;
use crate::dns_server::{Behaviour, DnsServer};
use crate::util::{Checks, Daemon, Metrics, bin};

const WAIT: Duration = Duration::from_secs(30);
const NAMESPACE: &str = "kube-netprobe";

/// What the daemon's service account may do with the default config: watch its DaemonSet's
/// pods, the CoreDNS pods in kube-system (`dns.discover_coredns`), the nodes, the CSI drivers
/// and the CSINodes. [`POD_IPS_RBAC`] adds what the opt-in `pod_ips` needs.
pub const RBAC: &str = r#"
apiVersion: v1
kind: Namespace
metadata: { name: kube-netprobe }
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: { name: kube-netprobe, namespace: kube-netprobe }
rules:
  - apiGroups: [""]
    resources: [pods]
    verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: { name: kube-netprobe, namespace: kube-netprobe }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: Role, name: kube-netprobe }
subjects:
  - { kind: ServiceAccount, name: kube-netprobe, namespace: kube-netprobe }
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: { name: kube-netprobe-coredns, namespace: kube-system }
rules:
  - apiGroups: [""]
    resources: [pods]
    verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: { name: kube-netprobe-coredns, namespace: kube-system }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: Role, name: kube-netprobe-coredns }
subjects:
  - { kind: ServiceAccount, name: kube-netprobe, namespace: kube-netprobe }
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: kube-netprobe }
rules:
  - apiGroups: [""]
    resources: [nodes]
    verbs: [get, list, watch]
  - apiGroups: [storage.k8s.io]
    resources: [csidrivers, csinodes]
    verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: { name: kube-netprobe }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: kube-netprobe }
subjects:
  - { kind: ServiceAccount, name: kube-netprobe, namespace: kube-netprobe }
"#;

/// What `pod_ips: { enabled: true }` adds to [`RBAC`]: the pods on its own node in every
/// namespace (by field selector; capacity.rs proves the daemon needs the rule). A rule of its
/// own, as the chart renders it, so that turning the feature off drops it.
pub const POD_IPS_RBAC: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: kube-netprobe-pod-ips }
rules:
  - apiGroups: [""]
    resources: [pods]
    verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: { name: kube-netprobe-pod-ips }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: kube-netprobe-pod-ips }
subjects:
  - { kind: ServiceAccount, name: kube-netprobe, namespace: kube-netprobe }
"#;

/// A Ready node.
pub fn node(api: &Apiserver, name: &str) {
    api.apply(&format!(
        "apiVersion: v1\nkind: Node\nmetadata: {{ name: {name} }}\n"
    ));
    api.patch_status(
        "nodes",
        "",
        name,
        r#"{"status":{"conditions":[{"type":"Ready","status":"True","reason":"KubeletReady","message":"ok"}]}}"#,
    );
}

fn pod(api: &Apiserver, name: &str, node: &str, ip: Ipv4Addr) {
    ready_pod(
        api,
        NAMESPACE,
        name,
        "{ app.kubernetes.io/name: kube-netprobe }",
        node,
        ip,
    );
}

/// A Running, Ready pod in `namespace` with `labels` (a YAML flow map) on `node`, at `ip`.
pub fn ready_pod(
    api: &Apiserver,
    namespace: &str,
    name: &str,
    labels: &str,
    node: &str,
    ip: Ipv4Addr,
) {
    api.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  \
         labels: {labels}\nspec:\n  nodeName: {node}\n  \
         containers: [{{ name: netprobe, image: kube-netprobe:test }}]\n"
    ));
    api.patch_status(
        "pods",
        namespace,
        name,
        &format!(
            r#"{{"status":{{"phase":"Running","podIP":"{ip}","podIPs":[{{"ip":"{ip}"}}],"conditions":[{{"type":"Ready","status":"True"}}]}}}}"#
        ),
    );
}

/// A port free (for TCP) on every one of `ips`.
pub fn free_port(ips: &[Ipv4Addr]) -> u16 {
    for _ in 0..50 {
        let port = std::net::TcpListener::bind((ips[0], 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if ips
            .iter()
            .all(|ip| std::net::TcpListener::bind((*ip, port)).is_ok())
        {
            return port;
        }
    }
    panic!("no port free on all of {ips:?}");
}

/// A peer that only serves /ping.
fn peer_daemon(name: &str, ip: Ipv4Addr, port: u16) -> Daemon {
    Daemon::start(&format!(
        "listen: {ip}:{port}\nnode_name: {name}\ndns: {{ servers: [] }}\n\
         peers: {{ discovery: none }}\napiserver: {{ enabled: false }}\n"
    ))
}

fn series_of(m: &Metrics, node: &str) -> usize {
    m.series("netprobe_peer_probe_success", &[("target_node", node)])
        .len()
        + m.series("netprobe_peer_requests_total", &[("target_node", node)])
            .len()
        + m.series(
            "netprobe_peer_request_duration_seconds_count",
            &[("target_node", node)],
        )
        .len()
}

#[test]
#[ignore = "needs root to bind port 53 on a loopback address for the pod resolver"]
fn discovery_and_apiserver_probes_against_a_real_apiserver() {
    let mut api = Apiserver::start();
    api.apply(RBAC);
    for name in ["node-a", "node-b", "node-c"] {
        node(&api, name);
    }
    let (ip_a, ip_b, ip_c) = (
        Ipv4Addr::new(127, 0, 0, 1),
        Ipv4Addr::new(127, 0, 0, 2),
        Ipv4Addr::new(127, 0, 0, 3),
    );
    let port = free_port(&[ip_a, ip_b, ip_c]);
    let _peer_b = peer_daemon("node-b", ip_b, port);
    let _peer_c = peer_daemon("node-c", ip_c, port);
    pod(&api, "netprobe-a", "node-a", ip_a);
    pod(&api, "netprobe-b", "node-b", ip_b);
    pod(&api, "netprobe-c", "node-c", ip_c);

    // The pod's resolver: a DNS server on port 53 that knows the API server's Service name.
    let dns_ip =
        Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 54, 0, 1)) + std::process::id() % 60_000);
    let dns = DnsServer::start_on(SocketAddr::from((dns_ip, 53))).expect("bind port 53");
    dns.set(
        "kubernetes.default.svc.cluster.local",
        Behaviour::Answer(ip_a),
    );
    let dir = tempfile::tempdir().unwrap();
    let resolv_conf = dir.path().join("resolv.conf");
    std::fs::write(
        &resolv_conf,
        format!(
            "nameserver {dns_ip}\nsearch {NAMESPACE}.svc.cluster.local svc.cluster.local cluster.local\n\
             options ndots:5 timeout:1 attempts:1\n"
        ),
    )
    .unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, api.netprobe_token()).unwrap();

    // per_target: the API-server phases and each peer's histograms are checked below.
    let config = format!(
        "listen: 127.0.0.1:0\nnode_name: node-a\nmetrics: {{ detail: per_target }}\n\
         dns:\n  servers: []\n  resolv_conf: {resolv}\n\
         peers:\n  interval: 500ms\n  timeout: 400ms\n  neighbours: 0\n  protocols: [http, tcp]\n  \
         port: {port}\n  discovery:\n    kubernetes: {{ namespace: {NAMESPACE}, selector: app.kubernetes.io/name=kube-netprobe }}\n\
         apiserver:\n  enabled: true\n  interval: 500ms\n  timeout: 400ms\n  direct: 127.0.0.1:{api_port}\n  \
         dns_port: {api_port}\n  ca_file: {ca}\n  token_file: {token}\n",
        resolv = resolv_conf.display(),
        api_port = api.port(),
        ca = api.ca_file().display(),
        token = token_file.display(),
    );
    let mut program = Command::new(bin());
    program.env("KUBECONFIG", api.kubeconfig_netprobe());
    let mut daemon = Daemon::start_in(program, &config, &[], Ipv4Addr::LOCALHOST.into());

    // Discovered, probed, both API-server paths up.
    let up = |m: &Metrics, node: &str| {
        m.get(
            "netprobe_peer_probe_success",
            &[
                ("target_node", node),
                ("protocol", "http"),
                ("family", "ipv4"),
            ],
        )
    };
    daemon.wait_until(
        "node-b and node-c probed and up, both API paths up",
        WAIT,
        |m| {
            let seen = (
                up(m, "node-b"),
                up(m, "node-c"),
                m.get("netprobe_apiserver_probe_success", &[("path", "direct")]),
                m.get("netprobe_apiserver_probe_success", &[("path", "dns")]),
            );
            if seen == (Some(1.0), Some(1.0), Some(1.0), Some(1.0)) {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        },
    );
    let m = daemon.scrape();
    assert_eq!(m.get("netprobe_discovery_peers", &[]), Some(3.0));
    assert_eq!(m.get("netprobe_peer_targets", &[]), Some(2.0));
    assert_eq!(
        m.get(
            "netprobe_peer_checkers_expected",
            &[("target_node", "node-a")]
        ),
        Some(2.0)
    );
    assert_eq!(series_of(&m, "node-a"), 0, "a node never probes itself");
    for phase in ["dns", "connect", "tls", "first_byte", "total"] {
        let count = m.sum(
            "netprobe_apiserver_request_duration_seconds_count",
            &[("path", "dns"), ("phase", phase)],
        );
        assert!(count >= 1.0, "dns path phase {phase}: {count}");
    }
    assert_eq!(
        m.sum(
            "netprobe_apiserver_request_duration_seconds_count",
            &[("path", "direct"), ("phase", "dns")]
        ),
        0.0,
        "the direct path has no dns phase"
    );

    // A reload that changes the peers section: the new mesh starts from the peers the old
    // watch knew, so node-b's http counter goes on; the dropped protocol's series go; the new
    // watch follows the deletion and the cordon below.
    let http_ok = |m: &Metrics| {
        m.get(
            "netprobe_peer_requests_total",
            &[
                ("target_node", "node-b"),
                ("protocol", "http"),
                ("result", "success"),
            ],
        )
        .unwrap_or(-1.0)
    };
    let before = http_ok(&m);
    std::fs::write(
        daemon.config_path(),
        config.replace(
            "interval: 500ms\n  timeout: 400ms\n  neighbours: 0\n  protocols: [http, tcp]",
            "interval: 600ms\n  timeout: 400ms\n  neighbours: 0\n  protocols: [http]",
        ),
    )
    .unwrap();
    daemon.signal("HUP");
    let m = daemon.wait_for(
        "netprobe_config_reloads_total",
        &[("result", "success")],
        "1",
        WAIT,
        |v| v == 1.0,
    );
    assert!(
        http_ok(&m) >= before,
        "node-b http: {before} before the reload, {} after",
        http_ok(&m)
    );
    assert!(
        m.series("netprobe_peer_requests_total", &[("protocol", "tcp")])
            .is_empty(),
        "the tcp probes' series went with the protocol: {}",
        m.text
    );
    daemon.wait_until("node-b's http counter to go on", WAIT, |m| {
        let now = http_ok(m);
        if now > before {
            Ok(())
        } else {
            Err(format!("{now}"))
        }
    });

    // A pod deleted: every series of its node goes at once.
    api.force_delete("pod", NAMESPACE, "netprobe-c");
    daemon.wait_until("node-c's series to go", WAIT, |m| {
        match series_of(m, "node-c") {
            0 => Ok(()),
            n => Err(format!("{n} series left")),
        }
    });

    // A node cordoned (drained): its pod is no longer probed, and nobody is paged about it.
    api.kubectl(&["cordon", "node-b"]);
    daemon.wait_until("node-b's series to go", WAIT, |m| {
        match series_of(m, "node-b") {
            0 => Ok(()),
            n => Err(format!("{n} series left")),
        }
    });
    api.kubectl(&["uncordon", "node-b"]);
    daemon.wait_for(
        "netprobe_peer_probe_success",
        &[("target_node", "node-b"), ("protocol", "http")],
        "node-b probed again after uncordon",
        WAIT,
        |v| v == 1.0,
    );

    // "direct works, DNS fails" reads as such.
    dns.set("kubernetes.default.svc.cluster.local", Behaviour::ServFail);
    daemon.wait_until("the dns path down, direct up", WAIT, |m| {
        let seen = (
            m.get("netprobe_apiserver_probe_success", &[("path", "dns")]),
            m.get("netprobe_apiserver_probe_success", &[("path", "direct")]),
        );
        if seen == (Some(0.0), Some(1.0)) {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    });
    assert!(
        daemon.scrape().sum(
            "netprobe_apiserver_requests_total",
            &[("path", "dns"), ("result", "dns_error")]
        ) >= 1.0
    );
    dns.set(
        "kubernetes.default.svc.cluster.local",
        Behaviour::Answer(ip_a),
    );

    // The API server goes away: discovery errors are counted, the last known peers are still
    // probed, both API paths report it; then everything recovers.
    let before = daemon.scrape();
    let errors = |m: &Metrics| m.sum("netprobe_discovery_errors_total", &[]);
    let b_probes = |m: &Metrics| {
        m.sum(
            "netprobe_peer_requests_total",
            &[("target_node", "node-b"), ("result", "success")],
        )
    };
    api.stop_apiserver();
    daemon.wait_until("discovery errors and API paths down", WAIT, |m| {
        let seen = (
            errors(m) > errors(&before),
            m.get("netprobe_apiserver_probe_success", &[("path", "direct")]),
            b_probes(m) > b_probes(&before) + 2.0,
        );
        if seen == (true, Some(0.0), true) {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    });
    let m = daemon.scrape();
    assert!(
        m.sum(
            "netprobe_apiserver_requests_total",
            &[("path", "direct"), ("result", "refused")]
        ) >= 1.0
    );
    assert_eq!(
        up(&m, "node-b"),
        Some(1.0),
        "the last known peer is still probed"
    );
    api.start_apiserver();
    daemon.wait_for(
        "netprobe_apiserver_probe_success",
        &[("path", "direct")],
        "the direct path back up",
        WAIT,
        |v| v == 1.0,
    );
    // And the watch resumed: a new pod is found.
    pod(&api, "netprobe-c2", "node-c", ip_c);
    daemon.wait_for(
        "netprobe_peer_probe_success",
        &[("target_node", "node-c"), ("protocol", "http")],
        "node-c probed again through the resumed watch",
        WAIT,
        |v| v == 1.0,
    );
}

/// Waits until `read` gives, for each (key, value) of `want`, that value (None: no series).
fn wait_for_values(
    daemon: &mut Daemon,
    want: &[(&str, Option<f64>)],
    what: &str,
    read: impl Fn(&Metrics, &str) -> Option<f64>,
) {
    daemon.wait_until(what, WAIT, |m| {
        let seen: Vec<_> = want.iter().map(|(key, _)| read(m, key)).collect();
        let expected: Vec<_> = want.iter().map(|(_, v)| *v).collect();
        if seen == expected {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    });
}

fn csinode(api: &Apiserver, node: &str, drivers: &[&str]) {
    let drivers: String = drivers
        .iter()
        .map(|d| format!("    - {{ name: {d}, nodeID: {node} }}\n"))
        .collect();
    let drivers = if drivers.is_empty() {
        "    []\n".to_owned()
    } else {
        drivers
    };
    api.apply(&format!(
        "apiVersion: storage.k8s.io/v1\nkind: CSINode\nmetadata: {{ name: {node} }}\nspec:\n  drivers:\n{drivers}"
    ));
}

fn csidriver(api: &Apiserver, name: &str) {
    api.apply(&format!(
        "apiVersion: storage.k8s.io/v1\nkind: CSIDriver\nmetadata: {{ name: {name} }}\nspec: {{ attachRequired: true }}\n"
    ));
}

#[test]
#[ignore = "needs root: a kube-apiserver of its own (apt-get, /var/cache)"]
fn csi_registration_follows_the_nodes_csinode() {
    let api = Apiserver::start();
    api.apply(RBAC);
    node(&api, "node-a");
    node(&api, "node-b");
    csidriver(&api, "ebs.csi.aws.com");
    csidriver(&api, "efs.csi.aws.com");
    csidriver(&api, "ignored.example.com");
    csinode(&api, "node-a", &["ebs.csi.aws.com"]);
    // Another node's registrations must not count for this one.
    csinode(&api, "node-b", &["efs.csi.aws.com"]);

    let config = "listen: 127.0.0.1:0\nnode_name: node-a\ndns: { servers: [] }\n\
                  peers: { discovery: none }\napiserver: { enabled: false }\n\
                  csi: { enabled: true, ignore_drivers: [ignored.example.com] }\n";
    let mut program = Command::new(bin());
    program.env("KUBECONFIG", api.kubeconfig_netprobe());
    let mut daemon = Daemon::start_in(program, config, &[], Ipv4Addr::LOCALHOST.into());
    let registered = |m: &Metrics, driver: &str| {
        m.get("netprobe_csi_node_driver_registered", &[("driver", driver)])
    };
    let wait = |daemon: &mut Daemon, want: &[(&str, Option<f64>)], what: &str| {
        wait_for_values(daemon, want, what, registered)
    };
    wait(
        &mut daemon,
        &[
            ("ebs.csi.aws.com", Some(1.0)),
            ("efs.csi.aws.com", Some(0.0)),
            ("ignored.example.com", None),
        ],
        "ebs registered, efs not, the ignored driver absent",
    );

    // The node plugin goes away: the gauge drops.
    csinode(&api, "node-a", &[]);
    wait(
        &mut daemon,
        &[("ebs.csi.aws.com", Some(0.0))],
        "ebs unregistered",
    );
    csinode(&api, "node-a", &["ebs.csi.aws.com", "efs.csi.aws.com"]);
    wait(
        &mut daemon,
        &[
            ("ebs.csi.aws.com", Some(1.0)),
            ("efs.csi.aws.com", Some(1.0)),
        ],
        "both registered",
    );
    // A driver removed from the cluster takes its series with it.
    api.kubectl(&["delete", "csidriver", "efs.csi.aws.com"]);
    wait(
        &mut daemon,
        &[("efs.csi.aws.com", None)],
        "efs's series gone",
    );
    assert_eq!(
        daemon.scrape().sum("netprobe_csi_watch_errors_total", &[]),
        0.0
    );
}

/// A pod in kube-system, labelled as CoreDNS unless `label` is empty, with `ip` when given.
pub fn coredns_pod(api: &Apiserver, name: &str, label: &str, ip: Option<Ipv4Addr>) {
    api.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: kube-system\n  \
         labels: {{ k8s-app: '{label}' }}\nspec:\n  nodeName: node-a\n  \
         containers: [{{ name: coredns, image: coredns:test }}]\n"
    ));
    if let Some(ip) = ip {
        api.patch_status(
            "pods",
            "kube-system",
            name,
            &format!(
                r#"{{"status":{{"phase":"Running","podIP":"{ip}","podIPs":[{{"ip":"{ip}"}}]}}}}"#
            ),
        );
    }
}

/// Two DNS servers on 127.0.0.1 and 127.0.0.2 with the same port, as CoreDNS pods have.
pub fn two_dns_servers() -> (DnsServer, DnsServer) {
    for _ in 0..20 {
        let a = DnsServer::start();
        if let Ok(b) = DnsServer::start_on(SocketAddr::from(([127, 0, 0, 2], a.addr().port()))) {
            return (a, b);
        }
    }
    panic!("no port free for UDP and TCP on both 127.0.0.1 and 127.0.0.2");
}

#[test]
#[ignore = "needs root: a kube-apiserver of its own (apt-get, /var/cache)"]
fn coredns_pods_are_probed_one_by_one() {
    let api = Apiserver::start();
    api.apply(RBAC);
    const NAME: &str = "kubernetes.default.svc.cluster.local";
    let (healthy, broken) = two_dns_servers();
    healthy.set(NAME, Behaviour::Answer(Ipv4Addr::new(198, 18, 0, 1)));
    broken.set(NAME, Behaviour::ServFail);
    let port = healthy.addr().port();
    coredns_pod(
        &api,
        "coredns-a",
        "kube-dns",
        Some(Ipv4Addr::new(127, 0, 0, 1)),
    );
    coredns_pod(
        &api,
        "coredns-b",
        "kube-dns",
        Some(Ipv4Addr::new(127, 0, 0, 2)),
    );
    // Not scheduled yet (no IP), and not CoreDNS (another label): neither is probed.
    coredns_pod(&api, "coredns-c", "kube-dns", None);
    coredns_pod(
        &api,
        "metrics-server",
        "metrics-server",
        Some(Ipv4Addr::new(127, 0, 0, 1)),
    );

    let config = format!(
        "listen: 127.0.0.1:0\nnode_name: node-a\npeers: {{ discovery: none }}\n\
         apiserver: {{ enabled: false }}\n\
         dns:\n  interval: 1s\n  timeout: 500ms\n  servers: []\n  \
         discover_coredns: {{ namespace: kube-system, selector: k8s-app=kube-dns, port: {port} }}\n  \
         queries: [{{ name: {NAME}, type: A }}]\n"
    );
    let mut program = Command::new(bin());
    program.env("KUBECONFIG", api.kubeconfig_netprobe());
    let mut daemon = Daemon::start_in(program, &config, &[], Ipv4Addr::LOCALHOST.into());
    // A target's success gauge starts at 0 before its first lookup: a failing pod counts as
    // seen failing only once a SERVFAIL lookup has been recorded for it.
    let success = |m: &Metrics, pod: &str| {
        let server = format!("coredns/{pod}");
        let value = m.get(
            "netprobe_dns_probe_success",
            &[("server", &server), ("name", NAME)],
        )?;
        let servfails = m.get(
            "netprobe_dns_lookups_total",
            &[("server", &server), ("rcode", "SERVFAIL")],
        );
        if value == 0.0 && servfails.unwrap_or(0.0) < 1.0 {
            return Some(f64::NAN);
        }
        Some(value)
    };
    let wait = |daemon: &mut Daemon, want: &[(&str, Option<f64>)], what: &str| {
        wait_for_values(daemon, want, what, success)
    };
    wait(
        &mut daemon,
        &[
            ("coredns-a", Some(1.0)),
            ("coredns-b", Some(0.0)),
            ("coredns-c", None),
            ("metrics-server", None),
        ],
        "coredns-a answering, coredns-b failing, the pod without an IP and the other app absent",
    );
    let m = daemon.scrape();
    let mut checks = Checks::default();
    checks.that(
        m.get(
            "netprobe_dns_lookups_total",
            &[("server", "coredns/coredns-b"), ("rcode", "SERVFAIL")],
        )
        .is_some_and(|n| n >= 1.0),
        "coredns-b's lookups are counted as SERVFAIL",
    );
    checks.eq(
        "CoreDNS discovery errors",
        ["forbidden", "error"].map(|reason| {
            m.get(
                "netprobe_discovery_errors_total",
                &[("source", "coredns"), ("reason", reason)],
            )
        }),
        [Some(0.0), Some(0.0)],
    );
    checks.that(
        healthy.queries_for(NAME) >= 1 && broken.queries_for(NAME) >= 1,
        "each pod's server was asked directly",
    );
    checks.finish(&m.text);

    // A reload that changes the dns section restarts the CoreDNS watch: the pods it knew keep
    // being probed, with their counters, and the new watch follows the changes below.
    let answered = |m: &Metrics| {
        m.get(
            "netprobe_dns_lookups_total",
            &[("server", "coredns/coredns-a"), ("rcode", "NOERROR")],
        )
        .unwrap_or(-1.0)
    };
    let before = answered(&daemon.scrape());
    std::fs::write(
        daemon.config_path(),
        config.replace("interval: 1s", "interval: 800ms"),
    )
    .unwrap();
    daemon.signal("HUP");
    let m = daemon.wait_for(
        "netprobe_config_reloads_total",
        &[("result", "success")],
        "1",
        WAIT,
        |v| v == 1.0,
    );
    assert!(
        answered(&m) >= before,
        "coredns-a's counter went from {before} to {} across the reload",
        answered(&m)
    );
    let m = daemon
        .wait_until("coredns-a to go on counting", WAIT, |m| {
            let now = answered(m);
            if now > before {
                Ok(())
            } else {
                Err(format!("{now}, {before} before the reload"))
            }
        })
        .1;
    assert_eq!(
        m.get("netprobe_config_reloads_total", &[("result", "failure")]),
        Some(0.0)
    );

    // The broken replica is deleted and the pending one gets an IP: the targets follow, and the
    // deleted pod's series go with it.
    api.force_delete("pod", "kube-system", "coredns-b");
    api.patch_status(
        "pods",
        "kube-system",
        "coredns-c",
        r#"{"status":{"phase":"Running","podIP":"127.0.0.2","podIPs":[{"ip":"127.0.0.2"}]}}"#,
    );
    wait(
        &mut daemon,
        &[
            ("coredns-a", Some(1.0)),
            ("coredns-b", None),
            ("coredns-c", Some(0.0)),
        ],
        "coredns-b gone, coredns-c probed",
    );
    let m = daemon.scrape();
    assert!(
        m.series(
            "netprobe_dns_lookups_total",
            &[("server", "coredns/coredns-b")]
        )
        .is_empty(),
        "every series of the deleted pod goes: {}",
        m.text
    );

    // No CoreDNS pod left: no per-pod series, and the log says so rather than staying quiet.
    api.force_delete("pod", "kube-system", "coredns-a");
    api.force_delete("pod", "kube-system", "coredns-c");
    wait(
        &mut daemon,
        &[("coredns-a", None), ("coredns-c", None)],
        "every CoreDNS pod gone",
    );
    crate::util::poll("the no-CoreDNS-pod warning", WAIT, || {
        let log = daemon.stderr_text();
        if log.contains("no CoreDNS pod is probed directly") {
            Ok(())
        } else {
            Err(daemon.output_tail(5))
        }
    });
}
