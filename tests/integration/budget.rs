//! The series budget: one scrape of a healthy node with the chart's default config (the
//! `config:` of helm/kube-netprobe/values.yaml and its one storage volume), 10 peers, the
//! kube-dns Service and 2 CoreDNS pods, must stay within a fixed number of sample lines at each
//! `metrics.detail` level; a change that makes every node cost more fails here.
//!
//! Everything runs in a network namespace of the test's own (gone with its last process): the
//! chart's ports as they are (9753 for the daemon, 53 for the DNS servers), ICMP echo allowed
//! for the test's group there as the chart allows it in the pod, a real kube-apiserver for the
//! API-server probes, the CoreDNS pods and the CSI watch, and the daemon probing itself under
//! 10 node names through static discovery (each name is a target of its own, as a peer is).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::apiserver::Apiserver;
use crate::dns_server::{Behaviour, DnsServer};
use crate::util::{Daemon, Metrics, bin, http_get_accept};

/// Sample lines allowed in one scrape, per `metrics.detail` level.
const BUDGETS: &[(&str, usize)] = &[("per_node", 400), ("per_target", 1_800)];
const PEERS: usize = 10;
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const WAIT: Duration = Duration::from_secs(60);

#[test]
#[ignore = "needs root to create a network namespace and bind port 53 in it"]
fn a_healthy_node_with_the_chart_defaults_stays_within_its_series_budget() {
    in_own_namespace(|| {
        let Some(fixtures) = Fixtures::start() else {
            return;
        };
        let mut report = Vec::new();
        for (detail, budget) in BUDGETS {
            let daemon = fixtures.healthy_daemon(bin(), detail, PEERS);
            // Counted in what Prometheus reads: the OpenMetrics exposition.
            let body = daemon.get_accept("/metrics", OPENMETRICS).body;
            let lines = sample_lines(&body);
            report.push(format!(
                "{detail}: {lines} sample lines, {} bytes (budget {budget})\n{}",
                body.len(),
                per_family(&body)
            ));
            assert!(
                lines <= *budget,
                "metrics.detail {detail}: {lines} sample lines in one scrape, over the budget \
                 of {budget}; per family:\n{}",
                per_family(&body)
            );
        }
        eprintln!("{}", report.join("\n"));
    });
}

/// The figures of docs/benchmarks.md (`scripts/bench-series` runs this): for k = 5, 10 and 20
/// healthy peers at each detail level, the sample lines and bytes of one scrape, the time of a
/// scrape (200 in a row, HTTP on loopback included: an upper bound of the encode), and the
/// daemon's RSS. `NETPROBE_BENCH_BIN` names the binary to measure (the release build);
/// without it, the test build's. Prints, asserts nothing about the figures.
#[test]
#[ignore = "a benchmark: scripts/bench-series"]
fn series_scrape_size_and_rss_at_5_10_and_20_peers() {
    let binary = std::env::var("NETPROBE_BENCH_BIN").unwrap_or_else(|_| bin().to_owned());
    in_own_namespace(move || {
        let Some(fixtures) = Fixtures::start() else {
            return;
        };
        // After a newline: libtest has just printed the test's name on this line.
        println!(
            "\n{:<11} {:>3} {:>7} {:>9} {:>13} {:>13} {:>9} {:>9}",
            "detail", "k", "lines", "bytes", "scrape p50", "scrape p99", "VmRSS", "VmHWM"
        );
        for (detail, _) in BUDGETS {
            for peers in [5, 10, 20] {
                let daemon = fixtures.healthy_daemon(&binary, detail, peers);
                let body = daemon.get_accept("/metrics", OPENMETRICS).body;
                let mut took: Vec<Duration> = (0..200)
                    .map(|_| {
                        let start = Instant::now();
                        let response = http_get_accept(daemon.addr(), "/metrics", OPENMETRICS)
                            .expect("GET /metrics");
                        assert_eq!(response.status, 200);
                        start.elapsed()
                    })
                    .collect();
                took.sort();
                let status =
                    std::fs::read_to_string(format!("/proc/{}/status", daemon.pid())).unwrap();
                let kib = |key: &str| -> f64 {
                    status
                        .lines()
                        .find_map(|l| l.strip_prefix(key))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                        .unwrap_or(f64::NAN)
                };
                println!(
                    "{detail:<11} {peers:>3} {:>7} {:>9} {:>10.2} ms {:>10.2} ms {:>5.1} MiB {:>5.1} MiB",
                    sample_lines(&body),
                    body.len(),
                    took[took.len() / 2].as_secs_f64() * 1e3,
                    took[took.len() * 99 / 100].as_secs_f64() * 1e3,
                    kib("VmRSS:") / 1024.0,
                    kib("VmHWM:") / 1024.0,
                );
            }
        }
    });
}

/// Runs `body` on a thread of its own in a new network namespace: loopback only, which goes
/// away with the last process in it. The test's other threads keep the machine's namespace.
fn in_own_namespace(body: impl FnOnce() + Send + 'static) {
    let outcome = std::thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        // ICMP echo sockets for root's group, as the chart's pod sysctl allows them for its own.
        sh("ip link set lo up && echo '0 0' > /proc/sys/net/ipv4/ping_group_range");
        body();
    })
    .join();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

fn sh(script: &str) {
    let out = Command::new("sh")
        .args(["-c", script])
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn values() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/helm/kube-netprobe/values.yaml"
    );
    serde_saphyr::from_str(&std::fs::read_to_string(path).expect("read values.yaml"))
        .expect("values.yaml parses")
}

fn sample_lines(body: &str) -> usize {
    body.lines().filter(|l| !l.starts_with('#')).count()
}

/// What a node of the chart sees, inside the namespace: a kube-apiserver (the API-server
/// probes, the CoreDNS pods, the CSI watch), the pod's resolver and the kube-dns Service on
/// 127.0.0.1:53, and the two CoreDNS pods on 127.0.0.2:53 and 127.0.0.3:53.
struct Fixtures {
    _servers: Vec<DnsServer>,
    dir: tempfile::TempDir,
    resolv_conf: PathBuf,
    token_file: PathBuf,
    // Dropped last: the daemons that use it are gone by then.
    api: Apiserver,
}

impl Fixtures {
    fn start() -> Option<Self> {
        let api = Apiserver::start();
        api.apply(crate::kube::RBAC);
        crate::kube::node(&api, "node-00");
        let servers = [1, 2, 3]
            .iter()
            .map(|i| {
                let dns = DnsServer::start_on(SocketAddr::from(([127, 0, 0, *i], 53)))
                    .expect("bind port 53 in the test's namespace");
                dns.set_fallback(Some(Behaviour::NxDomain));
                dns.set(
                    "kubernetes.default.svc.cluster.local",
                    Behaviour::Answer(Ipv4Addr::LOCALHOST),
                );
                dns.set(
                    "example.com",
                    Behaviour::Answer(Ipv4Addr::new(198, 18, 0, 1)),
                );
                dns
            })
            .collect();
        crate::kube::coredns_pod(&api, "coredns-a", "kube-dns", Some([127, 0, 0, 2].into()));
        crate::kube::coredns_pod(&api, "coredns-b", "kube-dns", Some([127, 0, 0, 3].into()));
        let dir = tempfile::tempdir().expect("tempdir");
        let resolv_conf = dir.path().join("resolv.conf");
        std::fs::write(
            &resolv_conf,
            "nameserver 127.0.0.1\nsearch kube-netprobe.svc.cluster.local svc.cluster.local \
             cluster.local\noptions ndots:5\n",
        )
        .expect("write resolv.conf");
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, api.netprobe_token()).expect("write token");
        Some(Self {
            _servers: servers,
            dir,
            resolv_conf,
            token_file,
            api,
        })
    }

    /// The chart's config, with what its templates and the pod supply (listen, node_name,
    /// peers.port and discovery, the volumes' paths) set for this namespace, and intervals
    /// shortened so that every probe has a result within seconds: intervals change how often
    /// series are updated, never how many there are.
    fn config(&self, detail: &str, peers: usize, volumes: &std::path::Path) -> Value {
        let values = values();
        let mut config = values["config"].clone();
        config["listen"] = json!("0.0.0.0:9753");
        config["node_name"] = json!("node-00");
        config["metrics"] = json!({ "detail": detail });
        let dns = &mut config["dns"];
        dns["interval"] = json!("1s");
        dns["timeout"] = json!("500ms");
        dns["resolv_conf"] = json!(self.resolv_conf);
        let p = &mut config["peers"];
        p["interval"] = json!("1s");
        p["timeout"] = json!("500ms");
        p["port"] = json!(9753);
        // k is the number of neighbours each node probes (the chart's default is 10).
        p["neighbours"] = json!(peers);
        p["discovery"] = json!({
            "static": (1..=peers)
                .map(|i| format!("node-{i:02}=127.0.0.1:9753"))
                .collect::<Vec<_>>()
        });
        let a = &mut config["apiserver"];
        a["interval"] = json!("1s");
        a["timeout"] = json!("500ms");
        a["direct"] = json!(format!("127.0.0.1:{}", self.api.port()));
        a["dns_port"] = json!(self.api.port());
        a["ca_file"] = json!(self.api.ca_file());
        a["token_file"] = json!(self.token_file);
        let storage = &mut config["storage"];
        storage["interval"] = json!("3s");
        storage["timeout"] = json!("2s");
        let chart_volumes = values["storage"]["volumes"].as_array().expect("volumes");
        storage["volumes"] = chart_volumes
            .iter()
            .map(|v| {
                let name = v["name"].as_str().expect("a volume's name");
                let path = volumes.join(name);
                std::fs::create_dir_all(&path).expect("volume dir");
                json!({
                    "name": name,
                    "path": path,
                    "size": v["size"],
                    "block_size": v["blockSize"],
                    "direct_io": v["directIO"],
                })
            })
            .collect();
        config
    }

    /// The daemon (`binary`) with `peers` peers, once every one of its probes has succeeded.
    fn healthy_daemon(&self, binary: &str, detail: &str, peers: usize) -> Daemon {
        // Removed with the fixtures: a daemon's last run may still be cleaning up when the
        // next daemon starts.
        let volumes = self.dir.path().join(format!("volumes-{detail}-{peers}"));
        let config = self.config(detail, peers, &volumes);
        let mut program = Command::new(binary);
        program.env("KUBECONFIG", self.api.kubeconfig_netprobe());
        // JSON is YAML.
        let text = serde_json::to_string_pretty(&config).expect("config as JSON");
        let mut daemon = Daemon::start_in(program, &text, &[], Ipv4Addr::LOCALHOST.into());
        daemon.wait_until("every probe to succeed", WAIT, |m| {
            every_probe_succeeded(m, &config, peers)
        });
        daemon
    }
}

/// Sample lines per family (histogram series under their family's name), largest first.
fn per_family(body: &str) -> String {
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap_or(line);
        let name = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        *counts.entry(name).or_default() += 1;
    }
    let mut counts: Vec<_> = counts.into_iter().collect();
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    counts
        .iter()
        .map(|(name, n)| format!("  {n:5} {name}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Ok once every configured probe has succeeded: each (peer, protocol), each (server, name)
/// including both CoreDNS pods, both API-server paths and the volume, ICMP included.
fn every_probe_succeeded(m: &Metrics, config: &Value, peers: usize) -> Result<(), String> {
    let mut missing = Vec::new();
    if m.get("netprobe_icmp_available", &[("family", "ipv4")]) != Some(1.0) {
        missing.push("icmp available".to_owned());
    }
    let protocols = config["peers"]["protocols"].as_array().expect("protocols");
    for i in 1..=peers {
        let node = format!("node-{i:02}");
        for protocol in protocols {
            let protocol = protocol.as_str().expect("protocol");
            let labels = [
                ("target_node", node.as_str()),
                ("protocol", protocol),
                ("family", "ipv4"),
            ];
            if m.get("netprobe_peer_probe_success", &labels) != Some(1.0) {
                missing.push(format!("peer {node} {protocol}"));
            }
        }
    }
    let queries = config["dns"]["queries"].as_array().expect("queries");
    for server in [
        "system",
        "127.0.0.1:53",
        "coredns/coredns-a",
        "coredns/coredns-b",
    ] {
        for query in queries {
            let name = query["name"].as_str().expect("name");
            let labels = [("server", server), ("name", name), ("qtype", "A")];
            if m.get("netprobe_dns_probe_success", &labels) != Some(1.0) {
                missing.push(format!("dns {server} {name}"));
            }
        }
    }
    for path in ["direct", "dns"] {
        if m.get("netprobe_apiserver_probe_success", &[("path", path)]) != Some(1.0) {
            missing.push(format!("apiserver {path}"));
        }
    }
    if m.get("netprobe_storage_probe_success", &[("volume", "scratch")]) != Some(1.0) {
        missing.push("storage scratch".to_owned());
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("not yet successful: {}", missing.join(", ")))
    }
}
