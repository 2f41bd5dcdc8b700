//! A frozen volume: StorageIOStuck names it, and the Alertmanager example sends one
//! notification.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::util::{Daemon, poll};
use crate::volume;

use super::{NODE, POD, Prometheus, WAIT, list, prometheus_config, repo, rules_state, shorten_for};

/// A volume whose filesystem is frozen (`fsfreeze` on a loop-device ext4) hangs every storage
/// run: StorageIOStuck names it, and the shipped Alertmanager example (see `alertmanager.rs`)
/// sends one notification naming the volume; the timed-out runs' StorageProbeFailing is held
/// back as a symptom. The rules are alerts/storage.yaml with `for:` shortened and the stuck
/// threshold (60 s, shipped) lowered to 0.5 s, below the probe's 1 s timeout, keeping the
/// shipped order: an operation hangs past the threshold before its run is counted as a
/// timeout. Alertmanager's timers are scaled by 1/30 (one rule evaluation for group_wait).
#[test]
#[ignore = "needs root to freeze a loop-device filesystem"]
fn a_frozen_volume_sends_one_notification_naming_it() {
    let ext4 = volume::loop_ext4(64);
    let daemon = Daemon::start(&format!(
        "listen: 127.0.0.1:0\nnode_name: {NODE}\ndns:\n  servers: []\npeers:\n  discovery: none\n\
         apiserver: {{ enabled: false }}\n\
         storage:\n  interval: 2s\n  timeout: 1s\n  reserve: 0\n  volumes:\n    \
         - {{ name: data, path: {:?}, size: 1MiB, block_size: 256KiB }}\n",
        ext4.mount.path()
    ));
    let am = crate::alertmanager::Alertmanager::start(1.0 / 30.0);
    let storage = std::fs::read_to_string(repo().join("alerts/storage.yaml"))
        .expect("read alerts/storage.yaml");
    let stuck = "netprobe_storage_stuck_seconds > 60";
    assert!(storage.contains(stuck), "alerts/storage.yaml: no `{stuck}`");
    let rules = shorten_for(&storage).replace(stuck, "netprobe_storage_stuck_seconds > 0.5");
    let prom = Prometheus::start(
        &(prometheus_config(&[(daemon.addr(), NODE, POD)]) + &am.prometheus_alerting()),
        &[("storage.yaml".into(), rules)],
    );
    poll(
        "the volume's first successful run in Prometheus",
        WAIT,
        || {
            let r = prom.query("netprobe_storage_probe_success{volume=\"data\"} == 1")?;
            if r.is_empty() {
                Err("not yet".into())
            } else {
                Ok(())
            }
        },
    );
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    // After the daemon: thawed before the daemon is killed, also when this test fails.
    let _frozen = ext4.freeze();
    poll("StorageIOStuck to fire for the volume", WAIT, || {
        let (active, _, _) = rules_state(&prom)?;
        if active
            .iter()
            .any(|a| a.name == "StorageIOStuck" && a.state == "firing")
        {
            Ok(())
        } else {
            Err(list(&active))
        }
    });
    // Later alerts of a group go out one group_interval (5m / 30) after its first notification.
    std::thread::sleep(Duration::from_secs(12));
    let sent = am.firing_since(since);
    let shown: Vec<String> = sent.iter().map(ToString::to_string).collect();
    eprintln!(
        "pages: a frozen volume: {} notification(s)\n    {}",
        sent.len(),
        shown.join("\n    ")
    );
    assert!(
        (1..=3).contains(&sent.len())
            && sent[0]
                .alerts
                .iter()
                .any(|a| a.label("volume") == "data" && a.label("node") == NODE),
        "a frozen volume: want 1 to 3 notifications, the first naming volume data on {NODE}; got:\n    {}",
        shown.join("\n    ")
    );
}
