//! Config reloads and signals through the real binary: SIGHUP applies a valid file and keeps the
//! counters of the targets that stay, an invalid one is counted and changes nothing, a
//! ConfigMap-style `..data` symlink swap is picked up without a signal, and SIGTERM is a clean
//! exit from the moment the handlers are installed, config loading included.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::dns_server::{Behaviour, DnsServer};
use crate::util::{Daemon, Metrics, bin};

const WAIT: Duration = Duration::from_secs(15);
const IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

/// Only loopback: the explicit server, no peers, no API server, no cluster.
fn config(server: SocketAddr, names: &[&str]) -> String {
    let queries: String = names
        .iter()
        .map(|n| format!("    - {{ name: {n} }}\n"))
        .collect();
    format!(
        "node_name: node-a\ndns:\n  interval: 200ms\n  timeout: 100ms\n  servers: [\"{server}\"]\n  queries:\n{queries}\
         peers:\n  discovery: none\napiserver:\n  enabled: false\ncsi:\n  enabled: false\n"
    )
}

fn lookups(m: &Metrics, name: &str) -> Option<f64> {
    m.get(
        "netprobe_dns_lookups_total",
        &[("name", name), ("rcode", "NOERROR")],
    )
}

fn reloads(m: &Metrics, result: &str) -> f64 {
    m.get("netprobe_config_reloads_total", &[("result", result)])
        .unwrap_or(-1.0)
}

fn server() -> DnsServer {
    let server = DnsServer::start();
    for name in [
        "stays.cluster.local",
        "goes.cluster.local",
        "comes.cluster.local",
    ] {
        server.set(name, Behaviour::Answer(IP));
    }
    server
}

/// Waits until `name` has at least `n` successful lookups; returns the count seen.
fn wait_lookups(daemon: &mut Daemon, name: &str, n: f64) -> f64 {
    daemon
        .wait_until(&format!("{n} lookups of {name}"), WAIT, |m| {
            match lookups(m, name) {
                Some(v) if v >= n => Ok(v),
                other => Err(format!("{other:?}")),
            }
        })
        .0
}

#[test]
fn sighup_applies_a_valid_config_and_keeps_the_counters_of_targets_that_stay() {
    let dns = server();
    let mut daemon = Daemon::start_with(
        &config(dns.addr(), &["stays.cluster.local", "goes.cluster.local"]),
        &["--listen", "127.0.0.1:0", "--config-check-interval", "0s"],
    );
    let before = wait_lookups(&mut daemon, "stays.cluster.local", 3.0);
    wait_lookups(&mut daemon, "goes.cluster.local", 1.0);
    let started = daemon
        .scrape()
        .get("netprobe_config_last_reload_success_timestamp_seconds", &[])
        .expect("the start counts as a load");

    std::fs::write(
        daemon.config_path(),
        config(dns.addr(), &["stays.cluster.local", "comes.cluster.local"]),
    )
    .unwrap();
    daemon.signal("HUP");
    let (_, m) = daemon.wait_until("the reload to be applied", WAIT, |m| {
        match (
            lookups(m, "comes.cluster.local"),
            lookups(m, "goes.cluster.local"),
        ) {
            (Some(n), None) if n >= 1.0 => Ok(()),
            seen => Err(format!("comes, goes: {seen:?}")),
        }
    });
    assert_eq!(reloads(&m, "success"), 1.0);
    assert_eq!(reloads(&m, "failure"), 0.0);
    assert_eq!(m.get("netprobe_config_reload_success", &[]), Some(1.0));
    assert!(
        m.get("netprobe_config_last_reload_success_timestamp_seconds", &[])
            .unwrap()
            >= started
    );
    assert!(
        m.series(
            "netprobe_dns_lookups_total",
            &[("name", "goes.cluster.local")]
        )
        .is_empty(),
        "a target that went takes every series with it"
    );
    // The target that stayed kept counting from where it was, not from 0.
    let after = lookups(&m, "stays.cluster.local").unwrap();
    assert!(
        after >= before,
        "stays: {before} before the reload, {after} after"
    );
    assert!(daemon.is_running());
    let (status, _) = daemon.terminate();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn an_invalid_config_is_counted_logged_and_changes_nothing() {
    let dns = server();
    let mut daemon = Daemon::start_with(
        &config(dns.addr(), &["stays.cluster.local"]),
        &["--listen", "127.0.0.1:0", "--config-check-interval", "0s"],
    );
    wait_lookups(&mut daemon, "stays.cluster.local", 1.0);
    std::fs::write(
        daemon.config_path(),
        "dns:\n  interval: 584000000000y\n  queries: [{ name: comes.cluster.local }]\n",
    )
    .unwrap();
    daemon.signal("HUP");
    let (_, m) = daemon.wait_until("the failed reload to be counted", WAIT, |m| {
        match m.get("netprobe_config_reload_success", &[]) {
            Some(0.0) => Ok(()),
            seen => Err(format!("reload_success {seen:?}")),
        }
    });
    assert_eq!(reloads(&m, "failure"), 1.0);
    assert_eq!(reloads(&m, "success"), 0.0);
    let expected = format!(
        "config reload failed, the previous config keeps running: {}: dns.interval: 584000000000years is too long, the maximum is 1day",
        daemon.config_path().display()
    );
    assert!(
        daemon.stderr_text().contains(&expected) || daemon.stdout_text().contains(&expected),
        "no `{expected}` in\n{}",
        daemon.output_tail(20)
    );
    // The old config goes on: its target keeps counting, the new one never appears.
    let then = lookups(&m, "stays.cluster.local").unwrap();
    wait_lookups(&mut daemon, "stays.cluster.local", then + 2.0);
    assert!(lookups(&daemon.scrape(), "comes.cluster.local").is_none());
    let (status, _) = daemon.terminate();
    assert_eq!(status.code(), Some(0));
}

/// Points `link` at `target` atomically, as the kubelet swaps a ConfigMap volume's `..data`.
fn swap_symlink(link: &Path, target: &str) {
    let tmp = link.with_file_name("..data_tmp");
    std::os::unix::fs::symlink(target, &tmp).unwrap();
    std::fs::rename(&tmp, link).unwrap();
}

#[test]
fn a_configmap_symlink_swap_is_applied_without_a_signal() {
    let dns = server();
    // The layout of a ConfigMap volume: config.yaml -> ..data/config.yaml, ..data -> ..<ts>/.
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("..2026_12_07_a");
    std::fs::create_dir(&first).unwrap();
    std::fs::write(
        first.join("config.yaml"),
        config(dns.addr(), &["stays.cluster.local", "goes.cluster.local"]),
    )
    .unwrap();
    let data = dir.path().join("..data");
    std::os::unix::fs::symlink("..2026_12_07_a", &data).unwrap();
    let mounted = dir.path().join("config.yaml");
    std::os::unix::fs::symlink("..data/config.yaml", &mounted).unwrap();

    let mut daemon = Daemon::start_with(
        "",
        &[
            "--config",
            mounted.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--config-check-interval",
            "100ms",
        ],
    );
    let before = wait_lookups(&mut daemon, "stays.cluster.local", 2.0);
    let second = dir.path().join("..2026_12_07_b");
    std::fs::create_dir(&second).unwrap();
    std::fs::write(
        second.join("config.yaml"),
        config(dns.addr(), &["stays.cluster.local", "comes.cluster.local"]),
    )
    .unwrap();
    swap_symlink(&data, "..2026_12_07_b");
    std::fs::remove_dir_all(&first).unwrap();
    let (_, m) = daemon.wait_until("the swapped file to be applied", WAIT, |m| {
        match (
            lookups(m, "comes.cluster.local"),
            lookups(m, "goes.cluster.local"),
        ) {
            (Some(n), None) if n >= 1.0 => Ok(()),
            seen => Err(format!("comes, goes: {seen:?}")),
        }
    });
    assert_eq!(reloads(&m, "success"), 1.0);
    assert!(lookups(&m, "stays.cluster.local").unwrap() >= before);
    // Unchanged content at later checks is not another reload.
    wait_lookups(&mut daemon, "comes.cluster.local", 3.0);
    assert_eq!(reloads(&daemon.scrape(), "success"), 1.0);
    let (status, _) = daemon.terminate();
    assert_eq!(status.code(), Some(0));
}

/// Whether the process has a handler for `signal` (its bit in `SigCgt` of /proc/PID/status).
fn catches(pid: u32, signal: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (signal - 1)) != 0)
}

const SIGHUP: u32 = 1;
const SIGTERM: u32 = 15;

/// Starts `run --config <config>` and waits (bounded) until it catches SIGTERM and SIGHUP.
fn start_until_handlers(config: &Path) -> std::process::Child {
    let child = Command::new(bin())
        .args(["run", "--config", config.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0"])
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while !(catches(child.id(), SIGTERM) && catches(child.id(), SIGHUP)) {
        assert!(
            Instant::now() < deadline,
            "no signal handlers after {WAIT:?}"
        );
        std::thread::yield_now();
    }
    child
}

fn kill(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{signal} {pid}");
}

fn wait_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("still running {WAIT:?} after the signal");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn sigterm_right_after_the_handlers_are_installed_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.yaml");
    std::fs::write(
        &config,
        "dns:\n  servers: []\npeers:\n  discovery: none\napiserver:\n  enabled: false\ncsi:\n  enabled: false\n",
    )
    .unwrap();
    for _ in 0..10 {
        let mut child = start_until_handlers(&config);
        kill(child.id(), "TERM");
        assert_eq!(wait_exit(&mut child).code(), Some(0));
    }
}

#[test]
fn sighup_and_sigterm_while_the_config_still_loads() {
    // A FIFO with no writer: opening it blocks, as a config on a slow volume would.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("config.yaml");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success(), "mkfifo");
    let mut child = start_until_handlers(&fifo);
    kill(child.id(), "HUP");
    assert!(
        child.try_wait().unwrap().is_none() && catches(child.id(), SIGTERM),
        "SIGHUP while loading must not end the process"
    );
    kill(child.id(), "TERM");
    assert_eq!(wait_exit(&mut child).code(), Some(0));
}

#[test]
fn a_reload_that_changes_a_volumes_settings_keeps_its_counters() {
    let volume = tempfile::tempdir().unwrap();
    let storage = |sync_writes: u32| {
        format!(
            "node_name: node-a\ndns:\n  servers: []\npeers:\n  discovery: none\napiserver:\n  enabled: false\ncsi:\n  enabled: false\n\
             storage:\n  interval: 200ms\n  timeout: 150ms\n  reserve: 0\n  sync_writes: {sync_writes}\n  volumes:\n\
             \x20   - {{ name: scratch, path: {}, size: 8192, block_size: 4096, direct_io: false }}\n",
            volume.path().display()
        )
    };
    let mut daemon = Daemon::start_with(
        &storage(1),
        &["--listen", "127.0.0.1:0", "--config-check-interval", "0s"],
    );
    let success = [("volume", "scratch"), ("result", "success")];
    let sync_bytes = [("volume", "scratch"), ("operation", "sync_write")];
    let m = daemon.wait_for(
        "netprobe_storage_probes_total",
        &success,
        "at least 2",
        WAIT,
        |v| v >= 2.0,
    );
    let before = m.get("netprobe_storage_probes_total", &success).unwrap();
    std::fs::write(daemon.config_path(), storage(0)).unwrap();
    daemon.signal("HUP");
    let (_, m) = daemon.wait_until("the reload to be applied", WAIT, |m| {
        if reloads(m, "success") == 1.0 {
            Ok(())
        } else {
            Err(format!("reloads {}", reloads(m, "success")))
        }
    });
    let at_reload = m.get("netprobe_storage_probes_total", &success).unwrap();
    assert!(
        at_reload >= before,
        "{before} before the reload, {at_reload} at it"
    );
    // A run of the replaced target may still finish; one run later the new settings hold.
    let m = daemon.wait_for(
        "netprobe_storage_probes_total",
        &success,
        &format!("above {at_reload}"),
        WAIT,
        |v| v >= at_reload + 1.0,
    );
    let synced = m.get("netprobe_storage_bytes_total", &sync_bytes).unwrap();
    let then = m.get("netprobe_storage_probes_total", &success).unwrap();
    daemon.wait_for(
        "netprobe_storage_probes_total",
        &success,
        &format!("above {}", then + 2.0),
        WAIT,
        |v| v >= then + 3.0,
    );
    assert_eq!(
        daemon
            .scrape()
            .get("netprobe_storage_bytes_total", &sync_bytes),
        Some(synced),
        "runs after the reload made a sync pass although sync_writes is 0 now"
    );
    let (status, _) = daemon.terminate();
    assert_eq!(status.code(), Some(0));
}
