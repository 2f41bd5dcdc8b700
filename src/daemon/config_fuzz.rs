//! Property tests of the config parser, on documents made of the real keys with values at and
//! past every bound, and of the same documents with a byte spoiled: parsing never panics; what
//! is accepted prints (as check-config prints it) into a file that is accepted as the same
//! config, stays under the memory ceiling, and builds and reloads in the daemon without a panic.

use std::fmt::Write;
use std::sync::Arc;

use proptest::prelude::*;

use super::Probes;
use crate::config::{Config, MAX_INTERVAL, MEMORY_CEILING, PeerDiscovery};
use crate::metrics::Metrics;
use crate::scheduler::Scheduler;

const DURATIONS: &[&str] = &[
    "0s",
    "1ns",
    "99ms",
    "100ms",
    "2s",
    "15s",
    "1m 30s",
    "23h 59m",
    "1day",
    "25h",
    "584000000000y",
    "15",
    "-1s",
    "",
    "1e3s",
];
const SIZES: &[&str] = &[
    "0",
    "1",
    "4096",
    "4097",
    "64KiB",
    "1MiB",
    "1048577",
    "16MiB",
    "64MiB",
    "65MiB",
    "1GiB",
    "2GiB",
    "1TiB",
    "2TiB",
    "18446744073709551615",
    "99999999999TiB",
    "lots",
    "-1",
];
const COUNTS: &[&str] = &[
    "0", "1", "16", "64", "1000", "1001", "10000", "10001", "-1", "x",
];

fn pick(pool: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
    prop::sample::select(pool)
}

/// Mostly what a careful user writes, sometimes anything from the pools: a document with every
/// value drawn at random would almost never be accepted, and acceptance is what the daemon must
/// then survive.
fn mostly<T: std::fmt::Debug + Clone + 'static>(
    valid: impl Strategy<Value = T> + 'static,
    any: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<T> {
    prop_oneof![6 => valid, 1 => any].boxed()
}

fn timing() -> impl Strategy<Value = String> {
    mostly(
        pick(&[
            "15s/2s",
            "100ms/1ns",
            "1day/23h 59m 59s",
            "2s/1s",
            "1m 30s/30s",
            "10s/9s 999ms",
        ])
        .prop_map(|pair| pair.split_once('/').unwrap()),
        (pick(DURATIONS), pick(DURATIONS)),
    )
    .prop_map(|(i, t)| format!("  interval: \"{i}\"\n  timeout: \"{t}\"\n"))
}

fn list(items: &[String]) -> String {
    format!("[{}]", items.join(", "))
}

fn quoted(items: Vec<&str>) -> Vec<String> {
    items.into_iter().map(|s| format!("\"{s}\"")).collect()
}

fn dns() -> impl Strategy<Value = String> {
    const SERVERS: &[&str] = &["system", "nameservers", "127.0.0.9:53", "[::1]:53"];
    const QUERIES: &[&str] = &[
        "{ name: a.example }",
        "{ name: b.example., type: AAAA }",
        "{ name: c.example, type: TXT, expect: NXDOMAIN }",
        "{ name: d.example, type: srv }",
    ];
    (
        timing(),
        mostly(
            prop::sample::subsequence(SERVERS, 0..=SERVERS.len()),
            prop::collection::vec(pick(&["system", "127.0.0.9:53", "x:53"]), 0..4),
        ),
        mostly(
            prop::sample::subsequence(QUERIES, 1..=QUERIES.len()),
            prop::collection::vec(
                pick(&[
                    "{ name: \"bad name\" }",
                    "{ name: a.example }",
                    "{ name: e.example, type: AXFR }",
                    "{ name: f.example, expect: NXDOMAN }",
                ]),
                0..3,
            ),
        ),
        prop::option::weighted(0.1, 60usize..70),
        pick(&["", "  resolv_conf: /nonexistent/resolv.conf\n"]),
    )
        .prop_map(|(timing, servers, queries, many, resolv)| {
            let mut queries: Vec<String> = queries.into_iter().map(str::to_owned).collect();
            // Sometimes a list at or past its cap.
            if let Some(many) = many {
                queries = (0..many)
                    .map(|i| format!("{{ name: q{i}.example }}"))
                    .collect();
            }
            format!(
                "dns:\n{timing}{resolv}  servers: {}\n  queries: {}\n",
                list(&quoted(servers)),
                list(&queries)
            )
        })
}

fn peers() -> impl Strategy<Value = String> {
    const PROTOCOLS: &[&str] = &["http", "tcp", "bulk", "icmp"];
    (
        timing(),
        mostly(pick(&["0", "1", "3", "10", "1000"]), pick(COUNTS)),
        mostly(pick(&["1", "4096", "64KiB", "1MiB"]), pick(SIZES)),
        mostly(
            prop::sample::subsequence(PROTOCOLS, 0..=PROTOCOLS.len()),
            prop::collection::vec(pick(&["http", "udp", "tcp"]), 0..4),
        ),
        prop_oneof![
            Just("none".to_owned()),
            (0usize..6, any::<bool>()).prop_map(|(n, unique)| {
                let peers: Vec<String> = (0..n)
                    .map(|i| {
                        let node = if unique { i } else { i % 2 };
                        format!("\"n{node}=127.0.0.9:{}\"", 9000 + i)
                    })
                    .collect();
                format!("{{ static: {} }}", list(&peers))
            }),
        ],
    )
        .prop_map(|(timing, neighbours, bulk, protocols, discovery)| {
            format!(
                "peers:\n{timing}  neighbours: {neighbours}\n  bulk_bytes: \"{bulk}\"\n  protocols: {}\n  discovery: {discovery}\n",
                list(&quoted(protocols))
            )
        })
}

fn apiserver() -> impl Strategy<Value = String> {
    (
        timing(),
        any::<bool>(),
        mostly(pick(&["/readyz", "/livez"]), pick(&["readyz", ""])),
    )
        .prop_map(|(timing, enabled, path)| {
            format!(
                "apiserver:\n{timing}  enabled: {enabled}\n  url_path: \"{path}\"\n  direct: 127.0.0.9:1\n  dns_name: localhost\n"
            )
        })
}

fn storage() -> impl Strategy<Value = String> {
    // (size, block_size): multiples, or not.
    const BLOCKS: &[&str] = &[
        "4096/4096",
        "16MiB/1MiB",
        "64MiB/64MiB",
        "1GiB/64MiB",
        "8192/4096",
    ];
    (
        timing(),
        mostly(pick(&["0", "64MiB", "1TiB"]), pick(SIZES)),
        mostly(pick(&["0", "16", "10000"]), pick(COUNTS)),
        prop::collection::vec(
            (
                mostly(
                    pick(BLOCKS).prop_map(|b| b.split_once('/').unwrap()),
                    (pick(SIZES), pick(SIZES)),
                ),
                mostly(Just("abs"), pick(&["rel", "bad name"])),
                any::<bool>(),
            ),
            0..5,
        ),
    )
        .prop_map(|(timing, reserve, sync_writes, volumes)| {
            let mut out = format!(
                "storage:\n{timing}  reserve: \"{reserve}\"\n  sync_writes: {sync_writes}\n  volumes:\n"
            );
            for (i, ((size, block), path, direct)) in volumes.into_iter().enumerate() {
                let (name, path) = match path {
                    "abs" => (format!("v{i}"), format!("{VOLUMES}/v{i}")),
                    "rel" => (format!("v{i}"), "relative/dir".to_owned()),
                    _ => ("bad name".to_owned(), format!("{VOLUMES}/x")),
                };
                let _ = writeln!(
                    out,
                    "    - {{ name: \"{name}\", path: \"{path}\", size: \"{size}\", block_size: \"{block}\", direct_io: {direct} }}"
                );
            }
            out
        })
}

/// Where the volumes are: nowhere, so that the start-up cleanup the daemon runs on them touches
/// nothing (the probes themselves never run here).
const VOLUMES: &str = "/nonexistent/kube-netprobe-fuzz";

/// A document of real keys, each section present or not, possibly with one byte spoiled.
fn document() -> impl Strategy<Value = String> {
    (
        prop::option::of(dns()),
        prop::option::weighted(0.95, peers()),
        prop::option::of(apiserver()),
        prop::option::of(storage()),
        prop::option::weighted(0.1, Just(true)),
        prop::option::weighted(0.1, (any::<usize>(), any::<u8>())),
    )
        .prop_map(|(dns, peers, apiserver, storage, csi, spoil)| {
            let csi = csi.unwrap_or(false);
            let mut doc = String::from("node_name: node-a\nlisten: 127.0.0.1:0\n");
            for section in [dns, peers, apiserver, storage].into_iter().flatten() {
                doc.push_str(&section);
            }
            let _ = writeln!(doc, "csi:\n  enabled: {csi}");
            if let Some((at, byte)) = spoil {
                let mut bytes = doc.into_bytes();
                let at = at % bytes.len();
                bytes[at] = byte;
                doc = String::from_utf8_lossy(&bytes).into_owned();
            }
            doc
        })
}

/// Whether building `config` in the daemon stays on this machine: no Kubernetes watch (the
/// test's environment may hold a real cluster's kubeconfig).
fn local(config: &Config) -> bool {
    !matches!(config.peers.discovery, PeerDiscovery::Kubernetes(_))
        && !config.csi.is_enabled()
        && config.dns.discover_coredns.is_none()
}

/// Starts `first` and reloads `second` into it, on a runtime whose tasks never get to run: the
/// daemon's building of targets, not the probes themselves.
fn build(first: &Config, second: Option<&Config>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let metrics = Arc::new(Metrics::new());
        let scheduler = Arc::new(Scheduler::new(metrics.probes.clone()));
        let mut probes = Probes::start(first, scheduler.clone(), metrics.clone());
        if let Some(second) = second {
            probes.apply(second);
        }
        drop(probes);
        scheduler.shutdown();
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn what_check_config_accepts_the_daemon_runs(first in document(), second in document()) {
        let mut accepted = Vec::new();
        for text in [&first, &second] {
            let Ok(config) = Config::parse(text, "fuzz.yaml") else { continue };
            let printed = config.to_yaml();
            let again = Config::parse(&printed, "printed.yaml");
            prop_assert!(again.is_ok(), "{text}\nprinted as\n{printed}\nrefused: {:?}", again.err());
            prop_assert_eq!(again.unwrap(), config.clone());
            prop_assert!(config.memory_estimate().total() <= MEMORY_CEILING);
            for interval in [config.dns.interval, config.peers.interval, config.apiserver.interval, config.storage.interval] {
                prop_assert!(interval.get() <= MAX_INTERVAL);
            }
            if local(&config) {
                accepted.push(config);
            }
        }
        match accepted.as_slice() {
            [] => {}
            [only] => build(only, None),
            [first, second, ..] => build(first, Some(second)),
        }
    }
}
