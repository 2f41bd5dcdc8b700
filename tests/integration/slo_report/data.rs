//! The counters backfilled into the test Prometheus, designed so that every figure the report
//! prints is known exactly.
//!
//! # Why the expected figures are exact
//!
//! `increase(x[W])` at time `T` takes the first and last sample inside `[T-W, T]` and
//! extrapolates their difference towards the window's edges when they sit away from them. Here
//! every series has its samples at the same instants, on the hour: every counter is 0 at the
//! window start `S` (2026-01-01T00:00:00Z), then sampled daily, and hourly over the last six
//! hours up to `T = S + 720h` (2026-01-31T00:00:00Z) and one hour beyond. So for the 30d, 6h and
//! 1h windows the first and last samples sit exactly on the window's edges: Prometheus 2.x
//! selects `[T-W, T]` closed (Debian bookworm ships 2.42), the distance to each edge is 0, the
//! extrapolation factor is `W / W = 1`, and `increase()` is the plain difference of two
//! integers, exact in floating point; the sums of integers are exact too, and the derived
//! ratios are compared after slo-report's rounding to 12 decimal places. (Prometheus 3 selects
//! `(T-W, T]`, which drops the sample at `T-W` and would extrapolate; these expectations are
//! for 2.x.)
//!
//! The designed per-hour increments (`h` = 1..=720 inside the window; `h` = 721..=744 after
//! it, to prove the window ends at `--end` and to fill January for `--month 2026-01`) give,
//! with `--selector '{cluster="prod"}'`:
//!
//! | SLO | all / bad over 30d | attainment | budget left | burn 1h | burn 6h |
//! | --- | --- | --- | --- | --- | --- |
//! | dns-availability (99.9 %) | 180000 / 90 | 0.9995 | 0.5 (21m36s) | 1/250 → 4 | 3/1500 → 2 |
//! | dns-latency (99 %) | 180000 / 810 | 0.9955 | 0.55 (3h57m36s) | 2/250 → 0.8 | 6/1500 → 0.4 |
//! | pod-network (99.9 %) | 72000 / 180 | 0.9975 | -1.5 (-1h4m48s) | 3/100 → 30 | 6/600 → 10 |
//! | storage-availability (99 %) | 86400 / 108 | 0.99875 | 0.875 (6h18m) | 0 | 0 |
//!
//! pod-network's budget is exhausted (exit 1); with `--objective pod-network=0.99` it has
//! 0.75 left (5h24m), burn 3 and 1, and the exit is 0.

use super::{HOURS_IN_JANUARY, HOURS_IN_WINDOW, S};

/// One counter series: its labels and its increment in each hour `h` (1..=744).
struct Counter {
    labels: String,
    inc: fn(u32) -> u64,
}

fn between(h: u32, from: u32, to: u32, n: u64) -> u64 {
    if (from..=to).contains(&h) { n } else { 0 }
}

// DNS: two servers; a answers everything (SERVFAIL is an answer), some of b's lookups time out.
fn servfail_a(h: u32) -> u64 {
    match h {
        1..=30 => 2,
        716 | 720 => 1,
        721 => 50,
        _ => 0,
    }
}
fn timeout_b(h: u32) -> u64 {
    between(h, 101, 127, 1) + between(h, 718, 718, 1)
}
/// a's lookups slower than 100 ms: one an hour, none in hours 717 and 718, two in hour 720.
fn slow_a(h: u32) -> u64 {
    match h {
        717 | 718 | 721 => 0,
        720 => 2,
        _ => 1,
    }
}
fn slow_b(h: u32) -> u64 {
    between(h, 200, 262, 1)
}
fn answered_a(_: u32) -> u64 {
    125
}
fn answered_b(h: u32) -> u64 {
    125 - timeout_b(h)
}
// Pod network: node-2 checks node-1 (resets late in the window), node-1 checks node-2
// (timeouts mid-window).
fn reset_node1(h: u32) -> u64 {
    match h {
        716 => 2,
        718 => 1,
        720 => 3,
        _ => 0,
    }
}
fn timeout_node2(h: u32) -> u64 {
    between(h, 300, 357, 3)
}
// Storage: eio on both nodes at different times; node-2 also skips 5 probes an hour for
// insufficient space, which count neither way.
fn eio_node1(h: u32) -> u64 {
    between(h, 400, 423, 3)
}
fn eio_node2(h: u32) -> u64 {
    between(h, 500, 511, 3)
}

fn counters() -> Vec<(&'static str, Vec<Counter>)> {
    let dns = |instance: &str, server: &str, rcode: &str| {
        format!(
            r#"cluster="prod",instance="{instance}",job="kube-netprobe",server="{server}",name="kubernetes.default.svc.cluster.local",qtype="A",rcode="{rcode}""#
        )
    };
    let peer = |instance: &str, target: &str, result: &str| {
        format!(
            r#"cluster="prod",instance="{instance}",job="kube-netprobe",target_node="{target}",protocol="http",result="{result}""#
        )
    };
    let storage = |cluster: &str, instance: &str, result: &str| {
        format!(
            r#"cluster="{cluster}",instance="{instance}",job="kube-netprobe",volume="scratch",result="{result}""#
        )
    };
    let c = |labels: String, inc: fn(u32) -> u64| Counter { labels, inc };
    vec![
        (
            "netprobe_dns_lookups",
            vec![
                c(dns("node-1:9753", "coredns/coredns-a", "NOERROR"), |h| {
                    115 - servfail_a(h)
                }),
                c(dns("node-1:9753", "coredns/coredns-a", "NXDOMAIN"), |_| 10),
                c(
                    dns("node-1:9753", "coredns/coredns-a", "SERVFAIL"),
                    servfail_a,
                ),
                c(dns("node-2:9753", "coredns/coredns-b", "NOERROR"), |h| {
                    125 - timeout_b(h)
                }),
                c(
                    dns("node-2:9753", "coredns/coredns-b", "TIMEOUT"),
                    timeout_b,
                ),
            ],
        ),
        (
            "netprobe_peer_requests",
            vec![
                c(peer("node-2:9753", "node-1", "success"), |h| {
                    50 - reset_node1(h)
                }),
                c(peer("node-2:9753", "node-1", "reset"), reset_node1),
                c(peer("node-1:9753", "node-2", "success"), |h| {
                    50 - timeout_node2(h)
                }),
                c(peer("node-1:9753", "node-2", "timeout"), timeout_node2),
            ],
        ),
        (
            "netprobe_storage_probes",
            vec![
                c(storage("prod", "node-1:9753", "success"), |h| {
                    60 - eio_node1(h)
                }),
                c(storage("prod", "node-1:9753", "eio"), eio_node1),
                c(storage("prod", "node-2:9753", "success"), |h| {
                    60 - eio_node2(h)
                }),
                c(storage("prod", "node-2:9753", "eio"), eio_node2),
                c(storage("prod", "node-2:9753", "insufficient_space"), |_| 5),
                // Another cluster, for --selector: spotless, and only storage.
                c(storage("dev", "dev-1:9753", "success"), |_| 60),
            ],
        ),
    ]
}

/// The DNS lookup-duration histogram of each server: `(instance, server, answered, slow)`.
type Histogram = (&'static str, &'static str, fn(u32) -> u64, fn(u32) -> u64);
const HISTOGRAMS: [Histogram; 2] = [
    ("node-1:9753", "coredns/coredns-a", answered_a, slow_a),
    ("node-2:9753", "coredns/coredns-b", answered_b, slow_b),
];

/// Whether the file has a sample at hour `h`: daily, then hourly from `T - 6h` on. Only the
/// samples at the edges of the 30d, 6h and 1h windows decide the figures; leaving out the
/// hours between cuts the 2-hour blocks promtool writes from 361 to about 35, and the backfill
/// from about 30 s to a few.
fn sampled(h: u32) -> bool {
    h.is_multiple_of(24) || h >= HOURS_IN_WINDOW - 6
}

/// The whole OpenMetrics file: samples from `S` (every counter 0) to `S + 744h` (see
/// [`sampled`]), counters accumulating their hourly increments in between.
pub(super) fn openmetrics() -> String {
    let hours = 0..=HOURS_IN_JANUARY;
    let ts = |h: u32| S + u64::from(h) * 3600;
    let mut out = String::new();
    for (family, series) in counters() {
        out.push_str(&format!("# TYPE {family} counter\n"));
        for counter in series {
            let mut value = 0;
            for h in hours.clone() {
                if h > 0 {
                    value += (counter.inc)(h);
                }
                if !sampled(h) {
                    continue;
                }
                out.push_str(&format!(
                    "{family}_total{{{}}} {value} {}\n",
                    counter.labels,
                    ts(h)
                ));
            }
        }
    }
    let family = "netprobe_dns_lookup_duration_seconds";
    out.push_str(&format!(
        "# TYPE {family} histogram\n# UNIT {family} seconds\n"
    ));
    for (instance, server, answered, slow) in HISTOGRAMS {
        let labels = format!(
            r#"cluster="prod",instance="{instance}",job="kube-netprobe",server="{server}",name="kubernetes.default.svc.cluster.local",qtype="A""#
        );
        let (mut count, mut fast) = (0, 0);
        for h in hours.clone() {
            if h > 0 {
                count += answered(h);
                fast += answered(h) - slow(h);
            }
            if !sampled(h) {
                continue;
            }
            // 20 an hour answered in under 25 ms fewer than under 100 ms: le="0.025" must not
            // be mistaken for the SLO's bucket.
            let faster = fast.saturating_sub(20 * u64::from(h));
            let t = ts(h);
            out.push_str(&format!(
                "{family}_bucket{{{labels},le=\"0.025\"}} {faster} {t}\n\
                 {family}_bucket{{{labels},le=\"0.1\"}} {fast} {t}\n\
                 {family}_bucket{{{labels},le=\"+Inf\"}} {count} {t}\n\
                 {family}_count{{{labels}}} {count} {t}\n\
                 {family}_sum{{{labels}}} {}.{:03} {t}\n",
                count / 50,
                (count % 50) * 20
            ));
        }
    }
    out.push_str("# EOF\n");
    out
}
