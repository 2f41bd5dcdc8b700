//! Capacity gauges against the real binary: the space and inodes of a real small filesystem as
//! it fills past the storage probe's own space guard, and this node's pod IPs against its
//! podCIDR from a real kube-apiserver, read with only the RBAC the chart grants.

use std::path::Path;
use std::time::Duration;

use crate::apiserver::Apiserver;
use crate::util::{Checks, Daemon, Metrics};
use crate::volume;

/// Bound on every wait for the daemon to reach a state.
const WAIT: Duration = Duration::from_secs(20);
const VOLUME: &str = "vol";

const FREE: &str = "netprobe_storage_volume_free_bytes";
const SIZE: &str = "netprobe_storage_volume_size_bytes";
const FREE_INODES: &str = "netprobe_storage_volume_free_inodes";
const INODES: &str = "netprobe_storage_volume_inodes";
const PROBES: &str = "netprobe_storage_probes_total";

/// What statfs says of `path` right now: (available bytes, size, available inodes, inodes).
fn statfs(path: &Path) -> (f64, f64, f64, f64) {
    let st = rustix::fs::statvfs(path).expect("statvfs");
    (
        (st.f_bavail * st.f_frsize) as f64,
        (st.f_blocks * st.f_frsize) as f64,
        st.f_favail as f64,
        st.f_files as f64,
    )
}

fn gauges(m: &Metrics) -> Option<(f64, f64, f64, f64)> {
    let v = [("volume", VOLUME)];
    Some((
        m.get_exact(FREE, &v)?,
        m.get_exact(SIZE, &v)?,
        m.get_exact(FREE_INODES, &v)?,
        m.get_exact(INODES, &v)?,
    ))
}

/// Waits until the four gauges equal what statfs says of the volume (the volume is not being
/// written meanwhile except by the probe, which removes its files before it ends), and the
/// probes counted with `result` reach `n`.
fn wait_for_statfs(daemon: &mut Daemon, path: &Path, result: &str, n: f64) -> (f64, f64, f64, f64) {
    let what = format!("the space gauges to match statfs and {n} probes with result {result}");
    daemon
        .wait_until(&what, WAIT, |m| {
            let got = gauges(m).ok_or("no space gauges yet")?;
            let want = statfs(path);
            let counted = m
                .get_exact(PROBES, &[("volume", VOLUME), ("result", result)])
                .unwrap_or(0.0);
            if got == want && counted >= n {
                Ok(got)
            } else {
                Err(format!(
                    "gauges {got:?}, statfs {want:?}, {result} counted {counted}"
                ))
            }
        })
        .0
}

#[test]
#[ignore = "needs root to mount a tmpfs"]
fn the_space_gauges_follow_a_filling_tmpfs_past_the_space_guard() {
    const MIB: u64 = 1 << 20;
    let fs = volume::tmpfs_with_inodes(8 * MIB, 64);
    let config = format!(
        "listen: 127.0.0.1:0\nnode_name: test-node\ndns:\n  servers: []\npeers:\n  discovery: none\n\
         storage:\n  interval: 1s\n  timeout: 800ms\n  reserve: 2MiB\n  sync_writes: 0\n  volumes:\n    \
         - {{ name: {VOLUME}, path: {:?}, size: 1MiB, block_size: 256KiB, direct_io: false }}\n",
        fs.path()
    );
    let mut daemon = Daemon::start(&config);
    let mut checks = Checks::default();

    // Empty: the whole tmpfs, and every inode but the root directory's.
    let (free, size, free_inodes, inodes) = wait_for_statfs(&mut daemon, fs.path(), "success", 1.0);
    checks.eq("size", size, (8 * MIB) as f64);
    checks.eq("inodes", inodes, 64.0);
    checks.eq("free inodes when empty", free_inodes, 63.0);
    checks.eq("free bytes when empty", free, (8 * MIB) as f64);

    // Filled to 4 MiB free and 40 inodes used: still above the guard (1 MiB + 2 MiB reserve).
    std::fs::write(fs.path().join("big"), vec![7u8; 4 * MIB as usize]).unwrap();
    for i in 0..39 {
        std::fs::write(fs.path().join(format!("small-{i}")), b"").unwrap();
    }
    let successes = daemon
        .scrape()
        .get_exact(PROBES, &[("volume", VOLUME), ("result", "success")])
        .unwrap_or(0.0);
    let (free, _, free_inodes, _) =
        wait_for_statfs(&mut daemon, fs.path(), "success", successes + 1.0);
    checks.eq("free bytes at half", free, (4 * MIB) as f64);
    checks.eq("free inodes at 40 used", free_inodes, 23.0);

    // Past the guard: 2.5 MiB free is less than the 1 MiB run plus the 2 MiB reserve. The probe
    // stops writing, and the gauges still say why.
    std::fs::write(fs.path().join("more"), vec![7u8; 3 * MIB as usize / 2]).unwrap();
    let (free, _, free_inodes, _) =
        wait_for_statfs(&mut daemon, fs.path(), "insufficient_space", 1.0);
    checks.eq("free bytes past the guard", free, (5 * MIB / 2) as f64);
    checks.eq("free inodes past the guard", free_inodes, 22.0);
    checks.finish(&daemon.output_tail(20));
}

const IN_USE: &str = "netprobe_node_pod_ips_in_use";
const CAPACITY: &str = "netprobe_node_pod_ip_capacity";
const ERRORS: &str = "netprobe_discovery_errors_total";

/// A pod on `node`, Running (or `phase`), on the host's network or not. No IP in its status: a
/// pod counts before the CNI gave it one (it needs one to start).
fn pod_on(api: &Apiserver, ns: &str, name: &str, node: &str, host_network: bool, phase: &str) {
    api.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{ name: {name}, namespace: {ns} }}\n\
         spec:\n  nodeName: {node}\n  hostNetwork: {host_network}\n  \
         containers: [{{ name: app, image: app:1 }}]\n"
    ));
    api.patch_status(
        "pods",
        ns,
        name,
        &format!(r#"{{"status":{{"phase":"{phase}"}}}}"#),
    );
}

fn pod_ip_gauges(m: &Metrics) -> Option<(f64, f64)> {
    let f = [("family", "ipv4")];
    Some((m.get_exact(IN_USE, &f)?, m.get_exact(CAPACITY, &f)?))
}

fn wait_for_pod_ips(daemon: &mut Daemon, want: (f64, f64), what: &str) {
    daemon.wait_until(what, WAIT, |m| match pod_ip_gauges(m) {
        Some(got) if got == want => Ok(()),
        got => Err(format!("(in use, capacity) = {got:?}")),
    });
}

fn pod_ips_daemon(api: &Apiserver, node: &str) -> Daemon {
    let config = format!(
        "listen: 127.0.0.1:0\nnode_name: {node}\ndns: {{ servers: [] }}\n\
         peers: {{ discovery: none }}\napiserver: {{ enabled: false }}\ncsi: {{ enabled: false }}\n\
         pod_ips: {{ enabled: true }}\n"
    );
    let mut program = std::process::Command::new(crate::util::bin());
    program.env("KUBECONFIG", api.kubeconfig_netprobe());
    Daemon::start_in(program, &config, &[], std::net::Ipv4Addr::LOCALHOST.into())
}

/// The daemon of node-a counts node-a's pods that need a pod IP (not hostNetwork, not finished;
/// the same name in two namespaces twice; node-b's pods not at all) against node-a's podCIDR,
/// follows pods that come, finish and go, and does so with exactly the chart's RBAC; without the
/// rule on pods it counts `forbidden` and publishes nothing.
#[test]
#[ignore = "needs root: a kube-apiserver of its own (apt-get, /var/cache)"]
fn pod_ips_of_this_node_are_counted_against_its_pod_cidr_with_the_charts_rbac() {
    let api = Apiserver::start();
    api.apply(crate::kube::RBAC);
    api.apply(crate::kube::POD_IPS_RBAC);
    api.apply(
        "apiVersion: v1\nkind: Node\nmetadata: { name: node-a }\nspec: { podCIDR: 10.244.1.0/28 }\n\
         ---\napiVersion: v1\nkind: Node\nmetadata: { name: node-b }\nspec: { podCIDR: 10.244.2.0/24 }\n\
         ---\napiVersion: v1\nkind: Namespace\nmetadata: { name: shop }\n",
    );
    pod_on(&api, "default", "web", "node-a", false, "Running");
    pod_on(&api, "shop", "web", "node-a", false, "Running");
    pod_on(&api, "shop", "starting", "node-a", false, "Pending");
    pod_on(
        &api,
        "kube-system",
        "kube-proxy-a",
        "node-a",
        true,
        "Running",
    );
    pod_on(&api, "default", "job-done", "node-a", false, "Succeeded");
    pod_on(&api, "default", "crashed", "node-a", false, "Failed");
    pod_on(&api, "default", "elsewhere", "node-b", false, "Running");

    let mut daemon = pod_ips_daemon(&api, "node-a");
    // A /28 is 16 addresses; host-local keeps the network, gateway and broadcast ones.
    wait_for_pod_ips(&mut daemon, (3.0, 13.0), "3 of 13 pod IPs in use on node-a");
    let m = daemon.scrape();
    let mut checks = Checks::default();
    checks.eq(
        "no ipv6 series on a single-stack node",
        m.get_exact(IN_USE, &[("family", "ipv6")]),
        None,
    );
    checks.eq(
        "forbidden calls",
        m.get_exact(ERRORS, &[("source", "pod_ips"), ("reason", "forbidden")]),
        Some(0.0),
    );

    // A pod comes, one finishes, one goes.
    pod_on(&api, "default", "new", "node-a", false, "Running");
    wait_for_pod_ips(&mut daemon, (4.0, 13.0), "a new pod counted");
    api.patch_status("pods", "shop", "web", r#"{"status":{"phase":"Succeeded"}}"#);
    wait_for_pod_ips(&mut daemon, (3.0, 13.0), "a finished pod no longer counted");
    api.force_delete("pods", "default", "web");
    wait_for_pod_ips(&mut daemon, (2.0, 13.0), "a deleted pod no longer counted");
    checks.finish(&daemon.output_tail(20));

    // Turned off by a reload: the series go.
    let config = std::fs::read_to_string(daemon.config_path()).unwrap();
    std::fs::write(
        daemon.config_path(),
        config.replace("pod_ips: { enabled: true }", "pod_ips: { enabled: false }"),
    )
    .unwrap();
    daemon.signal("HUP");
    daemon.wait_until(
        "the pod IP series gone after the reload",
        WAIT,
        |m| match pod_ip_gauges(m) {
            None => Ok(()),
            some => Err(format!("{some:?}")),
        },
    );
    assert_eq!(
        daemon
            .scrape()
            .get_exact("netprobe_config_reloads_total", &[("result", "success")]),
        Some(1.0)
    );
    drop(daemon);

    // Without the ClusterRole's rule on pods, the watch is refused: counted and logged, and no
    // number is made up.
    let pods_rule =
        "rules:\n  - apiGroups: [\"\"]\n    resources: [pods]\n    verbs: [list, watch]\n";
    assert!(crate::kube::POD_IPS_RBAC.contains(pods_rule));
    api.apply(&crate::kube::POD_IPS_RBAC.replace(pods_rule, "rules: []\n"));
    let mut daemon = pod_ips_daemon(&api, "node-a");
    let m = daemon.wait_for(
        ERRORS,
        &[("source", "pod_ips"), ("reason", "forbidden")],
        "above 0",
        WAIT,
        |v| v > 0.0,
    );
    assert_eq!(pod_ip_gauges(&m), None, "no pod IP series without the pods");
    let logs = daemon.stderr_text() + &daemon.stdout_text();
    assert!(
        logs.contains("forbidden") && logs.contains("pods on node node-a"),
        "the log names the refused watch:\n{logs}"
    );
}

/// `check-config` states the probe load a config asks for and warns (exit 0: the daemon runs
/// it) when it is more than the runtime's workers can run; the running daemon exports what its
/// workers actually spend.
#[test]
fn check_config_warns_when_the_targets_exceed_what_the_workers_can_run() {
    let dir = tempfile::tempdir().unwrap();
    let check = |name: &str, yaml: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, yaml).unwrap();
        let out = std::process::Command::new(crate::util::bin())
            .args(["check-config", path.to_str().unwrap()])
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // 1,000 static peers, every one every second over 4 protocols: 4,000 runs a second.
    let peers: Vec<String> = (0..1000)
        .map(|i| format!("\"n{i}=198.18.{}.{}:9753\"", i / 250, i % 250 + 1))
        .collect();
    let heavy = format!(
        "dns: {{ servers: [] }}\napiserver: {{ enabled: false }}\n\
         peers:\n  interval: 1s\n  timeout: 500ms\n  neighbours: 0\n  protocols: [http, tcp, bulk, icmp]\n  \
         discovery:\n    static: [{}]\n",
        peers.join(", ")
    );
    let (code, stdout, stderr) = check("heavy.yaml", &heavy);
    assert_eq!(code, Some(0), "a warning, not an error: {stderr}");
    let load = stdout
        .lines()
        .find(|l| l.starts_with("# probe load: "))
        .unwrap_or_else(|| panic!("no probe load line:\n{stdout}"));
    assert!(
        load.starts_with("# probe load: 4000.0 runs/s (dns 0.0, peer 4000.0, apiserver 0.0, storage 0.0), about 4800.0 ms of CPU per second, 240.0 % of the 2 runtime workers"),
        "{load}"
    );
    let warning = "the targets ask for 240 % of what the daemon's 2 runtime workers can run, over 80 %: runs will queue and overrun. Most of it is peer: lengthen its interval or probe fewer targets";
    assert!(
        stdout.contains(&format!("# warning: {warning}\n")),
        "{stdout}"
    );
    assert!(stderr.contains(&format!("warning: {warning}")), "{stderr}");

    // The same peers every 10 s over one protocol: 100 runs a second, no warning.
    let light = heavy
        .replace("interval: 1s", "interval: 10s")
        .replace("[http, tcp, bulk, icmp]", "[http]");
    let (code, stdout, stderr) = check("light.yaml", &light);
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains("# probe load: 100.0 runs/s") && !stdout.contains("warning"),
        "{stdout}"
    );
    assert!(stderr.is_empty(), "{stderr}");

    // The daemon: its workers, and their busy time growing.
    let mut daemon = Daemon::start(
        "listen: 127.0.0.1:0\ndns: { servers: [] }\npeers: { discovery: none }\n\
         apiserver: { enabled: false }\n",
    );
    let m = daemon.wait_for(
        "netprobe_runtime_busy_seconds_total",
        &[],
        "above 0",
        WAIT,
        |v| v > 0.0,
    );
    assert_eq!(m.get_exact("netprobe_runtime_workers", &[]), Some(2.0));
}
