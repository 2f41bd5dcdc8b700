//! Storage probes against the real binary and real filesystems: a full tmpfs (the guard, and a
//! disk that fills mid-run), a read-only bind mount, a directory a non-root daemon may not write,
//! a loop-device ext4 image measured against fio, and a FUSE filesystem of our own that corrupts
//! reads or hangs writes. Every test needs root (mounts); each has its own volume and daemon.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::dns_server::{Behaviour, DnsServer};
use crate::skip_unless_root;
use crate::util::{Checks, Daemon, Metrics};
use crate::volume::{self, Fault, FaultyFs, FillOnProbe};

const PROBES: &str = "netprobe_storage_probes_total";
const SUCCESS: &str = "netprobe_storage_probe_success";
const DURATION: &str = "netprobe_storage_operation_duration_seconds";
const BYTES: &str = "netprobe_storage_bytes_total";
const THROUGHPUT: &str = "netprobe_storage_throughput_bytes_per_second";
const STUCK: &str = "netprobe_storage_stuck_seconds";
const DIRECT_IO: &str = "netprobe_storage_direct_io";
const OVERRUNS: &str = "netprobe_probe_overruns_total";

/// Bound on every wait for the daemon to reach a state.
const WAIT: Duration = Duration::from_secs(20);
const VOLUME: &str = "vol";

/// A daemon config that probes one volume (named `vol`) and nothing else.
/// `storage` holds extra keys of the section (one per line, indented by two), `volume` extra
/// keys of the volume (`, size: 1MiB`); the timing is 1s / 800ms unless `storage` sets it.
fn config(path: &Path, storage: &str, volume: &str) -> String {
    let timing = if storage.contains("interval:") {
        ""
    } else {
        "  interval: 1s\n  timeout: 800ms\n"
    };
    format!(
        "listen: 127.0.0.1:0\nnode_name: test-node\ndns:\n  servers: []\npeers:\n  discovery: none\n\
         storage:\n{timing}{storage}  volumes:\n    \
         - {{ name: {VOLUME}, path: {path:?}{volume} }}\n"
    )
}

fn result(r: &str) -> [(&str, &str); 2] {
    [("volume", VOLUME), ("result", r)]
}

fn op(o: &str) -> [(&str, &str); 2] {
    [("volume", VOLUME), ("operation", o)]
}

/// Waits until `result` was counted at least `n` times, and returns that scrape.
fn wait_for_result(daemon: &mut Daemon, r: &str, n: f64) -> Metrics {
    daemon
        .wait_until(&format!("{n} storage probes with result {r}"), WAIT, |m| {
            let got = m.get_exact(PROBES, &result(r)).unwrap_or(0.0);
            if got >= n {
                Ok(())
            } else {
                let all: Vec<String> = m
                    .series(PROBES, &[("volume", VOLUME)])
                    .iter()
                    .filter(|s| s.value > 0.0)
                    .map(|s| format!("{}={}", s.labels["result"], s.value))
                    .collect();
                Err(format!("results so far: [{}]", all.join(", ")))
            }
        })
        .1
}

/// Asserts the volume holds exactly `expected` (no probe directory, no probe file).
fn assert_left(root: &Path, expected: &[&str]) {
    let mut names: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lost+found")
        .collect();
    names.sort();
    assert_eq!(names, expected, "what the probe left in {}", root.display());
}

#[test]
fn a_small_tmpfs_is_skipped_by_the_space_guard() {
    skip_unless_root!("mount a tmpfs");
    let fs = volume::tmpfs(4 << 20);
    let mut daemon = Daemon::start(&config(fs.path(), "", ", size: 16MiB"));
    let m = wait_for_result(&mut daemon, "insufficient_space", 2.0);
    let mut checks = Checks::default();
    checks.eq(
        "probe_success",
        m.get_exact(SUCCESS, &[("volume", VOLUME)]),
        Some(0.0),
    );
    checks.eq("bytes written", m.get_exact(BYTES, &op("write")), Some(0.0));
    checks.eq(
        "write observations",
        m.get_exact(&format!("{DURATION}_count"), &op("write")),
        Some(0.0),
    );
    // Every result exists from the start, at 0.
    checks.eq(
        "enospc series",
        m.get_exact(PROBES, &result("enospc")),
        Some(0.0),
    );
    checks.finish(&daemon.output_tail(20));
    assert_left(fs.path(), &[]);
}

#[test]
fn a_disk_that_fills_mid_run_is_enospc_and_nothing_is_left() {
    skip_unless_root!("mount a tmpfs and watch it with fanotify");
    let fs = volume::tmpfs(8 << 20);
    let fill = FillOnProbe::start(fs.path(), ".kube-netprobe");
    // With no reserve the guard lets a 4 MiB probe through on 8 MiB; then the disk fills.
    let mut daemon = Daemon::start(&config(
        fs.path(),
        "  reserve: 0\n",
        ", size: 4MiB, block_size: 1MiB",
    ));
    let m = wait_for_result(&mut daemon, "enospc", 1.0);
    assert!(fill.filled(), "the filler never ran");
    assert_eq!(m.get_exact(SUCCESS, &[("volume", VOLUME)]), Some(0.0));
    // The disk stays full: the next runs are skipped by the guard, and never leave a file.
    wait_for_result(&mut daemon, "insufficient_space", 1.0);
    drop(daemon);
    assert_left(fs.path(), &["filler"]);
}

#[test]
fn a_read_only_mount_is_erofs() {
    skip_unless_root!("bind-mount a directory read-only");
    let ro = volume::read_only_bind();
    let mut daemon = Daemon::start(&config(ro.mount.path(), "  reserve: 0\n", ", size: 1MiB"));
    let m = wait_for_result(&mut daemon, "erofs", 2.0);
    assert_eq!(m.get_exact(SUCCESS, &[("volume", VOLUME)]), Some(0.0));
    assert_left(ro.mount.path(), &[]);
}

#[test]
fn a_directory_the_daemon_may_not_write_is_permission_denied() {
    skip_unless_root!("run the daemon as nobody");
    // Root-owned, 0755: nobody can enter but not write.
    let dir = tempfile::tempdir().unwrap();
    Command::new("chmod")
        .args(["0755", dir.path().to_str().unwrap()])
        .status()
        .unwrap();
    let bin_dir = tempfile::tempdir().unwrap();
    let bin = bin_dir.path().join("kube-netprobe");
    std::fs::copy(crate::util::bin(), &bin).unwrap();
    Command::new("chmod")
        .args([
            "0755",
            bin_dir.path().to_str().unwrap(),
            bin.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    // The fixture writes the config into a private directory; open it up, then drop to nobody.
    // Arguments after the script: run --config FILE ...
    let mut wrapper = Command::new("sh");
    wrapper.args([
        "-c",
        r#"chmod 0755 "$(dirname "$3")" && chmod 0644 "$3" && exec setpriv --reuid=nobody --regid=nogroup --clear-groups -- "$0" "$@""#,
        bin.to_str().unwrap(),
    ]);
    let mut daemon = Daemon::start_in(
        wrapper,
        &config(dir.path(), "  reserve: 0\n", ", size: 1MiB"),
        &[],
        std::net::IpAddr::from([127, 0, 0, 1]),
    );
    let m = wait_for_result(&mut daemon, "permission_denied", 2.0);
    assert_eq!(m.get_exact(SUCCESS, &[("volume", VOLUME)]), Some(0.0));
    assert_left(dir.path(), &[]);
}

/// fio's bandwidth in bytes per second for one sequential pass.
fn fio(dir: &Path, rw: &str, size_mib: u64, block: &str) -> f64 {
    let out = Command::new("fio")
        .args([
            "--name=compare",
            &format!("--filename={}", dir.join("fio.data").display()),
            &format!("--size={size_mib}M"),
            &format!("--bs={block}"),
            "--direct=1",
            "--ioengine=psync",
            &format!("--rw={rw}"),
            "--output-format=json",
        ])
        .output()
        .expect("run fio (apt install fio)");
    assert!(
        out.status.success(),
        "fio failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("fio json");
    json["jobs"][0][rw_key(rw)]["bw_bytes"]
        .as_f64()
        .expect("bw_bytes")
}

fn rw_key(rw: &str) -> &str {
    if rw == "write" { "write" } else { "read" }
}

#[test]
fn a_loop_ext4_volume_succeeds_with_direct_io_and_agrees_with_fio() {
    skip_unless_root!("attach a loop device");
    let ext4 = volume::loop_ext4(256);
    let root = ext4.mount.path().to_owned();
    let mut daemon = Daemon::start(&config(
        &root,
        "  interval: 4s\n  timeout: 3s\n  reserve: 16MiB\n  sync_writes: 8\n",
        ", size: 32MiB, block_size: 1MiB, direct_io: true",
    ));
    let m = wait_for_result(&mut daemon, "success", 2.0);
    let mut checks = Checks::default();
    checks.eq(
        "probe_success",
        m.get_exact(SUCCESS, &[("volume", VOLUME)]),
        Some(1.0),
    );
    checks.eq(
        "direct_io",
        m.get_exact(DIRECT_IO, &[("volume", VOLUME)]),
        Some(1.0),
    );
    let runs = m.get_exact(PROBES, &result("success")).unwrap();
    checks.eq(
        "bytes written",
        m.get_exact(BYTES, &op("write")),
        Some(runs * 32.0 * 1048576.0),
    );
    checks.eq(
        "sync writes observed",
        m.get_exact(&format!("{DURATION}_count"), &op("sync_write")),
        Some(runs * 8.0),
    );
    for o in ["write", "fsync", "read", "delete"] {
        checks.eq(
            &format!("{o} observations"),
            m.get_exact(&format!("{DURATION}_count"), &op(o)),
            Some(runs),
        );
    }
    let probe_write = m.get_exact(THROUGHPUT, &op("write")).unwrap_or(0.0);
    let probe_read = m.get_exact(THROUGHPUT, &op("read")).unwrap_or(0.0);
    checks.finish(&daemon.output_tail(20));
    drop(daemon);
    assert_left(&root, &[]);

    let fio_write = fio(&root, "write", 32, "1M");
    let fio_read = fio(&root, "read", 32, "1M");
    std::fs::remove_file(root.join("fio.data")).unwrap();
    let mib = |b: f64| b / 1048576.0;
    eprintln!(
        "loop ext4 on {}, 32 MiB in 1 MiB O_DIRECT blocks: probe write {:.0} MiB/s, fio write \
         {:.0} MiB/s; probe read {:.0} MiB/s, fio read {:.0} MiB/s",
        ext4.device(),
        mib(probe_write),
        mib(fio_write),
        mib(probe_read),
        mib(fio_read)
    );
    for (what, probe, fio) in [
        ("write", probe_write, fio_write),
        ("read", probe_read, fio_read),
    ] {
        let ratio = probe / fio;
        assert!(
            (1.0 / 3.0..=3.0).contains(&ratio),
            "{what}: the probe measured {:.0} MiB/s, fio {:.0} MiB/s (ratio {ratio:.2})",
            mib(probe),
            mib(fio)
        );
    }
}

#[test]
fn corrupted_reads_are_a_checksum_mismatch() {
    skip_unless_root!("mount a FUSE filesystem");
    let fs = FaultyFs::mount(Fault::FlipOnRead);
    let mut daemon = Daemon::start(&config(
        fs.path(),
        "  reserve: 0\n  sync_writes: 2\n",
        ", size: 1MiB, block_size: 256KiB",
    ));
    let m = wait_for_result(&mut daemon, "checksum_mismatch", 2.0);
    let mut checks = Checks::default();
    checks.eq(
        "probe_success",
        m.get_exact(SUCCESS, &[("volume", VOLUME)]),
        Some(0.0),
    );
    checks.eq(
        "successes",
        m.get_exact(PROBES, &result("success")),
        Some(0.0),
    );
    // The data went all the way round before the check failed.
    let read = m.get_exact(BYTES, &op("read")).unwrap_or(0.0);
    checks.that(read >= 2.0 * 1048576.0, format!("read {read} bytes"));
    checks.finish(&daemon.output_tail(20));
    assert_left(fs.path(), &[]);
}

#[test]
fn a_hung_volume_times_out_while_the_daemon_keeps_working() {
    skip_unless_root!("mount a FUSE filesystem");
    let fs = FaultyFs::mount(Fault::HangOnWrite);
    let dns = DnsServer::start();
    dns.set(
        "ok.cluster.local",
        Behaviour::Answer(Ipv4Addr::new(10, 96, 0, 1)),
    );
    let yaml = format!(
        "listen: 127.0.0.1:0\nnode_name: test-node\ndns:\n  interval: 200ms\n  timeout: 150ms\n  \
         servers: [\"{}\"]\n  queries: [{{ name: ok.cluster.local, type: A }}]\n\
         peers:\n  discovery: none\nstorage:\n  interval: 1s\n  timeout: 500ms\n  reserve: 0\n  \
         volumes:\n    - {{ name: {VOLUME}, path: {:?}, size: 1MiB, block_size: 256KiB }}\n",
        dns.addr(),
        fs.path()
    );
    let mut daemon = Daemon::start(&yaml);
    // Declared after the daemon, so dropped before it: a process blocked in a FUSE request that
    // reached the filesystem cannot die (the kernel waits for the answer), so the writes must be
    // let go before the fixture kills and reaps the daemon, also when this test fails.
    let _release = fs.release_on_drop();
    let server = dns.addr().to_string();
    let lookups = [
        ("server", server.as_str()),
        ("name", "ok.cluster.local"),
        ("qtype", "A"),
    ];

    let m = wait_for_result(&mut daemon, "timeout", 1.0);
    assert!(fs.write_blocked(), "the filesystem never saw a write");
    let stuck_then = m.get_exact(STUCK, &[("volume", VOLUME)]).unwrap();
    let dns_then = m.sum("netprobe_dns_lookups_total", &lookups);
    let asked_at = Instant::now();

    // The stuck gauge keeps growing; the later ticks are overruns, not new threads; DNS and
    // /metrics carry on (every scrape here is /metrics answering).
    let (stuck_now, m) = daemon.wait_until("the stuck gauge to grow by 2s", WAIT, |m| {
        let stuck = m.get_exact(STUCK, &[("volume", VOLUME)]).unwrap_or(0.0);
        if stuck >= stuck_then + 2.0 {
            Ok(stuck)
        } else {
            Err(format!("{STUCK} = {stuck} (was {stuck_then})"))
        }
    });
    let mut checks = Checks::default();
    checks.eq(
        "timeouts",
        m.get_exact(PROBES, &result("timeout")),
        Some(1.0),
    );
    checks.eq(
        "probe_success",
        m.get_exact(SUCCESS, &[("volume", VOLUME)]),
        Some(0.0),
    );
    let overruns = m
        .get_exact(OVERRUNS, &[("probe", "storage")])
        .unwrap_or(0.0);
    checks.that(
        overruns >= 1.0,
        format!("storage overruns {overruns}, want >= 1"),
    );
    let dns_now = m.sum("netprobe_dns_lookups_total", &lookups);
    checks.that(
        dns_now >= dns_then + 5.0,
        format!(
            "DNS lookups went from {dns_then} to {dns_now} in {:?} beside the hung volume",
            asked_at.elapsed()
        ),
    );
    checks.eq(
        "DNS success",
        m.get_exact("netprobe_dns_probe_success", &lookups),
        Some(1.0),
    );
    checks.that(stuck_now > 2.0, format!("stuck for {stuck_now}s"));
    checks.finish(&daemon.output_tail(20));

    // Released (the write fails with EIO), the thread finishes and cleans up; the gauge drops.
    fs.release();
    daemon.wait_for(STUCK, &[("volume", VOLUME)], "0", WAIT, |v| v == 0.0);
    daemon.wait_until("the probe directory to be gone", WAIT, |_| {
        let left = fs_names(fs.path());
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    });
}

fn fs_names(root: &Path) -> Vec<String> {
    std::fs::read_dir(root)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}
