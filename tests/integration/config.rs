//! Config files through the real binary: `check-config` and `run` on valid and invalid files,
//! asserting the exact message a user reads and the exit code.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_kube-netprobe");

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config")
}

fn netprobe(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("NODE_NAME")
        .env_remove("NETPROBE_CONFIG")
        .env_remove("POD_NAMESPACE")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .output()
        .expect("the binary runs")
}

/// Every invalid fixture and the exact error it must produce (after `error: <path>`).
const INVALID: &[(&str, &str)] = &[
    (
        "invalid-coredns-discovery.yaml",
        ": dns.discover_coredns.selector: must not be empty",
    ),
    (
        "invalid-duplicate-query.yaml",
        ": dns.queries[1]: `a.example A` is listed twice",
    ),
    (
        "invalid-duration-unit.yaml",
        ":2:13: dns.interval: `15` is not a duration (time unit needed, for example 15sec or 15ms); write it like `500ms`, `15s` or `2m`",
    ),
    (
        "invalid-expect.yaml",
        ":3:47: dns.queries[0].expect: unknown response code `NXDOMAN`, expected one of NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED, YXDOMAIN, YXRRSET, NXRRSET, NOTAUTH, NOTZONE, BADVERS",
    ),
    (
        "invalid-interval-too-long.yaml",
        ": dns.interval: 584000000000years is too long, the maximum is 1day",
    ),
    (
        "invalid-listen.yaml",
        ":1:9: listen: `9753`: invalid socket address syntax",
    ),
    (
        "invalid-memory-ceiling.yaml",
        ": storage.volumes[3].block_size: 64MiB takes the peak memory estimate to 555.8 MiB (40.0 MiB base, 88 targets x 32 KiB, 513.0 MiB storage buffers), over the ceiling of 512.0 MiB: use smaller blocks or fewer volumes (each volume holds 2 blocks while it is probed)",
    ),
    (
        "invalid-missing-name.yaml",
        ":3:9: dns.queries[0]: missing field `name`",
    ),
    (
        "invalid-query-name.yaml",
        ":3:13: dns.queries[0].name: `bad name!` is not a valid DNS name: it contains ` `",
    ),
    (
        "invalid-record-type.yaml",
        ":3:59: dns.queries[0].type: unknown record type `AXFRX`, expected one of A, AAAA, CNAME, MX, NS, PTR, SOA, SRV, TXT, CAA",
    ),
    (
        "invalid-server.yaml",
        ":4:7: dns.servers[1]: `kube-dns.kube-system:53` is not a DNS server: expected `system`, `nameservers` or an IP address with a port, like `10.96.0.10:53` or `[fd00::a]:53`",
    ),
    (
        "invalid-timeout-not-below-interval.yaml",
        ": dns.timeout: 5s must be shorter than dns.interval (5s), so that a probe ends before the next one starts",
    ),
    (
        "invalid-too-many-servers.yaml",
        ": dns.servers: has 17 entries, at most 16 are allowed",
    ),
    (
        "invalid-unknown-key.yaml",
        ":3:3: dns.intervl: unknown field `intervl`, expected one of interval, timeout, servers, resolv_conf, discover_coredns, queries",
    ),
    (
        "invalid-unknown-section.yaml",
        ":1:1: peer: unknown field `peer`, expected one of listen, node_name, dns, peers, apiserver, csi, pod_ips, storage, metrics",
    ),
    (
        "invalid-unset-env.yaml",
        ":1:12: node_name: environment variable NETPROBE_TEST_UNSET_VARIABLE is not set (write `${NETPROBE_TEST_UNSET_VARIABLE:-fallback}` for a default)",
    ),
    (
        "invalid-yaml-syntax.yaml",
        ":4:4: dns: while parsing a block mapping, did not find expected key",
    ),
];

fn expected_message(file: &str, rest: &str) -> String {
    format!("error: {}{rest}\n", fixtures().join(file).display())
}

#[test]
fn every_invalid_fixture_has_an_expected_message() {
    let mut on_disk: Vec<String> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("invalid-"))
        .collect();
    on_disk.sort();
    let listed: Vec<String> = INVALID.iter().map(|(f, _)| f.to_string()).collect();
    assert_eq!(on_disk, listed);
}

#[test]
fn check_config_rejects_invalid_files_with_the_culprit_named() {
    for (file, rest) in INVALID {
        let path = fixtures().join(file);
        let out = netprobe(&["check-config", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{file}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            expected_message(file, rest),
            "{file}"
        );
        assert!(out.stdout.is_empty(), "{file}: nothing on stdout");
    }
}

#[test]
fn run_with_a_bad_config_exits_2_before_binding_its_port() {
    // Hold a port: if `run` got as far as binding it, it would fail with exit 3 instead.
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = held.local_addr().unwrap().to_string();
    for (file, rest) in INVALID {
        let path = fixtures().join(file);
        let out = netprobe(&[
            "run",
            "--config",
            path.to_str().unwrap(),
            "--listen",
            &listen,
        ]);
        assert_eq!(out.status.code(), Some(2), "{file}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            expected_message(file, rest),
            "{file}"
        );
    }
}

#[test]
fn a_port_in_use_is_exit_3_and_says_so() {
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = held.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.yaml");
    std::fs::write(&config, "node_name: n\ndns:\n  servers: []\n").unwrap();
    let out = netprobe(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--listen",
        &listen,
    ]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "error: cannot listen on {listen}: Address already in use"
        )),
        "{stderr}"
    );
}

#[test]
fn a_missing_file_is_named() {
    let out = netprobe(&["check-config", "/nonexistent/netprobe.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: /nonexistent/netprobe.yaml: cannot read the config file: No such file or directory (os error 2)\n"
    );
}

#[test]
fn check_config_prints_the_effective_config() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/config.yaml");
    let out = Command::new(BIN)
        .args(["check-config", example.to_str().unwrap()])
        .env("NODE_NAME", "node-7")
        .env_remove("POD_NAMESPACE")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "listen: 0.0.0.0:9753
node_name: node-7
dns:
  interval: 15s
  timeout: 2s
  servers:
  - system
  - nameservers
  - 10.96.0.10:53
  resolv_conf: /etc/resolv.conf
  discover_coredns:
    namespace: kube-system
    selector: k8s-app=kube-dns
    port: 53
  queries:
  - name: kubernetes.default.svc.cluster.local
    type: A
  - name: does-not-exist.invalid
    type: A
    expect: NXDOMAIN
peers:
  interval: 10s
  timeout: 2s
  neighbours: 10
  protocols:
  - http
  - tcp
  - bulk
  - icmp
  port: 9753
  bulk_bytes: 64KiB
  discovery:
    kubernetes:
      namespace: kube-netprobe
      selector: app.kubernetes.io/name=kube-netprobe
apiserver:
  interval: 15s
  timeout: 2s
  url_path: /readyz
  dns_name: kubernetes.default.svc
  dns_port: 443
  ca_file: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt
  token_file: /var/run/secrets/kubernetes.io/serviceaccount/token
csi:
  ignore_drivers: []
pod_ips: {}
storage:
  interval: 1m
  timeout: 30s
  reserve: 64MiB
  sync_writes: 16
  volumes:
  - name: scratch
    path: /var/lib/kube-netprobe/scratch
    size: 16MiB
    block_size: 1MiB
    direct_io: true
metrics:
  detail: per_node
# probe load: 6.2 runs/s (dns 2.0, peer 4.0, apiserver 0.1, storage 0.0), about 5.7 ms of CPU per second, 0.3 % of the 2 runtime workers
# peak memory estimate: 45.8 MiB (40.0 MiB base, 113 targets x 32 KiB, 2.2 MiB storage buffers)
"
    );
}

#[test]
fn defaults_fill_what_a_file_leaves_out() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.yaml");
    std::fs::write(
        &config,
        "node_name: ${NETPROBE_TEST_NODE:-fallback-node}\ndns:\n  interval: 1m\n",
    )
    .unwrap();
    let out = netprobe(&["check-config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("listen: 0.0.0.0:9753\nnode_name: fallback-node\ndns:\n  interval: 1m\n  timeout: 2s\n  servers:\n  - system\n"), "{stdout}");
}

#[test]
fn version_and_usage_errors() {
    let out = netprobe(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(
        version.starts_with(&format!(
            "kube-netprobe {} (revision ",
            env!("CARGO_PKG_VERSION")
        )),
        "{version}"
    );
    let out = netprobe(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    let out = netprobe(&["check-config"]);
    assert_eq!(out.status.code(), Some(2));
}

/// Configs at the edges of what `check-config` accepts: the shortest and longest durations, the
/// largest counts and sizes, everything off, the defaults. Every target is on loopback (the
/// resolv.conf of `system` lookups names 127.0.0.9), so `run` sends nothing anywhere else.
fn accepted_corpus(dir: &Path) -> Vec<(&'static str, String)> {
    let resolv = dir.join("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 127.0.0.9\noptions timeout:1 attempts:1\n",
    )
    .unwrap();
    let volume_dir = dir.join("volume");
    std::fs::create_dir_all(&volume_dir).unwrap();
    let (resolv, volume) = (resolv.display(), volume_dir.display());
    let queries: String = (0..64)
        .map(|i| format!("    - {{ name: q{i}.example, type: TXT }}\n"))
        .collect();
    let servers: String = (1..=16)
        .map(|p| format!("\"127.0.0.9:{p}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let peers: String = (0..5000)
        .map(|i| format!("\"node-{i}=127.0.0.9:{}\"", 1 + i % 60000))
        .collect::<Vec<_>>()
        .join(", ");
    let drivers: String = (0..256)
        .map(|i| format!("d{i}.csi.example"))
        .collect::<Vec<_>>()
        .join(", ");
    let small_volumes: String = (0..16)
        .map(|i| format!("    - {{ name: v{i}, path: {volume}, size: 4096, block_size: 4096 }}\n"))
        .collect();
    vec![
        ("defaults", format!("dns:\n  resolv_conf: {resolv}\n")),
        (
            "shortest",
            format!(
                "dns:\n  interval: 100ms\n  timeout: 1ns\n  resolv_conf: {resolv}\n  servers: [system, nameservers, \"127.0.0.9:53\"]\n\
                 peers:\n  interval: 100ms\n  timeout: 1ns\n  discovery:\n    static: [\"a=127.0.0.9:9\"]\n\
                 apiserver:\n  enabled: true\n  interval: 100ms\n  timeout: 1ns\n  direct: 127.0.0.9:1\n  dns_name: localhost\n\
                 csi:\n  enabled: false\n\
                 storage:\n  interval: 100ms\n  timeout: 1ns\n  reserve: 0\n  sync_writes: 0\n  volumes:\n    - {{ name: v, path: {volume}, size: 4096, block_size: 4096 }}\n"
            ),
        ),
        (
            "longest",
            format!(
                "dns:\n  interval: 1day\n  timeout: 23h 59m 59s 999ms\n  resolv_conf: {resolv}\n\
                 peers:\n  interval: 1day\n  timeout: 23h\n  bulk_bytes: 1MiB\n  discovery:\n    static: [\"a=127.0.0.9:9\"]\n\
                 apiserver:\n  enabled: true\n  interval: 1day\n  timeout: 23h\n  direct: 127.0.0.9:1\n  dns_name: localhost\n\
                 storage:\n  interval: 1day\n  timeout: 23h 59m\n  reserve: 1TiB\n  sync_writes: 10000\n  volumes:\n\
                 \x20   - {{ name: a, path: {volume}, size: 1GiB, block_size: 64MiB }}\n\
                 \x20   - {{ name: b, path: {volume}, size: 1GiB, block_size: 64MiB }}\n\
                 \x20   - {{ name: c, path: {volume}, size: 1GiB, block_size: 64MiB }}\n"
            ),
        ),
        (
            "most",
            format!(
                "dns:\n  interval: 1m\n  timeout: 1s\n  resolv_conf: {resolv}\n  servers: [{servers}]\n  queries:\n{queries}\
                 peers:\n  interval: 1m\n  neighbours: 1000\n  protocols: [tcp]\n  discovery:\n    static: [{peers}]\n\
                 csi:\n  enabled: false\n  ignore_drivers: [{drivers}]\n\
                 storage:\n  interval: 1m\n  reserve: 0\n  volumes:\n{small_volumes}"
            ),
        ),
        (
            "every-node",
            format!("dns:\n  resolv_conf: {resolv}\npeers:\n  neighbours: 0\n"),
        ),
        (
            "all-off",
            "dns:\n  servers: []\npeers:\n  discovery: none\napiserver:\n  enabled: false\ncsi:\n  enabled: false\n"
                .to_owned(),
        ),
    ]
}

#[test]
fn run_serves_metrics_on_every_config_check_config_accepts_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    for (name, yaml) in accepted_corpus(dir.path()) {
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, &yaml).unwrap();
        let out = netprobe(&["check-config", path.to_str().unwrap()]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let estimate = stdout
            .lines()
            .last()
            .and_then(|l| l.strip_prefix("# peak memory estimate: "))
            .unwrap_or_else(|| panic!("{name}: no estimate in\n{stdout}"));
        // `start_with` fails the test if the daemon exits (a panic is exit 101) before it
        // announces its listener.
        let mut daemon = crate::util::Daemon::start_with(&yaml, &["--listen", "127.0.0.1:0"]);
        let metrics = daemon.scrape();
        let bytes = metrics
            .get("netprobe_memory_estimate_bytes", &[])
            .unwrap_or_else(|| panic!("{name}: no estimate in /metrics"));
        let mib: f64 = estimate.split(' ').next().unwrap().parse().unwrap();
        assert!(
            (bytes / f64::from(1 << 20) - mib).abs() < 0.05,
            "{name}: /metrics says {bytes} bytes, check-config {estimate}"
        );
        assert_eq!(
            metrics.get("netprobe_config_reload_success", &[]),
            Some(1.0),
            "{name}"
        );
        assert!(daemon.is_running(), "{name}: exited after serving /metrics");
        let (status, _) = daemon.terminate();
        assert_eq!(status.code(), Some(0), "{name}: {status}");
    }
}

/// `VmHWM` (peak resident set) of a process, in bytes.
fn peak_rss(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    kib * 1024.0
}

/// The largest block a volume may have: the daemon's peak memory over a probe stays under the
/// estimate check-config prints, and is what the probe's doc says it holds (two blocks, both
/// touched once a run has three blocks or more).
#[test]
fn a_storage_probe_with_the_largest_blocks_stays_within_the_estimate() {
    let volume = tempfile::tempdir().unwrap();
    let yaml = format!(
        "node_name: node-a\ndns:\n  servers: []\npeers:\n  discovery: none\napiserver:\n  enabled: false\ncsi:\n  enabled: false\n\
         storage:\n  interval: 10s\n  timeout: 9s\n  reserve: 0\n  sync_writes: 0\n  volumes:\n\
         \x20   - {{ name: big, path: {}, size: 192MiB, block_size: 64MiB, direct_io: false }}\n",
        volume.path().display()
    );
    let mut daemon = crate::util::Daemon::start_with(&yaml, &["--listen", "127.0.0.1:0"]);
    let m = daemon.wait_for(
        "netprobe_storage_probes_total",
        &[("volume", "big"), ("result", "success")],
        "at least 1",
        Duration::from_secs(40),
        |v| v >= 1.0,
    );
    let estimate = m.get("netprobe_memory_estimate_bytes", &[]).unwrap();
    let peak = peak_rss(daemon.pid());
    let block = f64::from(64 << 20);
    assert!(
        peak <= estimate,
        "peak RSS {:.1} MiB over the estimate {:.1} MiB",
        peak / block * 64.0,
        estimate / block * 64.0
    );
    assert!(
        peak >= 2.0 * block,
        "peak RSS {:.1} MiB: the probe holds less than the two blocks its doc says",
        peak / block * 64.0
    );
    eprintln!(
        "64MiB blocks: peak RSS {:.1} MiB, estimate {:.1} MiB",
        peak / block * 64.0,
        estimate / block * 64.0
    );
    let (status, _) = daemon.terminate();
    assert_eq!(status.code(), Some(0));
}
