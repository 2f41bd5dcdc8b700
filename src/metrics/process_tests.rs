//! The process and cgroup families as a scrape shows them, read from the fixture trees of
//! tests/fixtures (proc/ and cgroup/; the v2 layouts cannot be made real on this cgroup v1
//! machine) and from this process.

use std::path::Path;

use super::*;
use crate::process::ProcRoot;

fn fixtures(cgroup_case: &str) -> ProcessSources {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    ProcessSources {
        proc: ProcRoot::at(&base.join("proc"), "4242"),
        fs_root: base.join("cgroup").join(cgroup_case),
    }
}

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

#[test]
fn process_families_have_their_standard_names_types_and_values() {
    let text =
        Metrics::with_sources(Detail::default(), fixtures("v1-container")).encode_openmetrics();
    for (name, kind) in [
        ("process_cpu_seconds", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_virtual_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
        ("process_max_fds", "gauge"),
        ("process_start_time_seconds", "gauge"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "{name}: {text}"
        );
    }
    let ticks = procfs::ticks_per_second() as f64;
    assert_eq!(
        value(&text, "process_cpu_seconds_total"),
        Some(400.0 / ticks)
    );
    assert_eq!(
        value(&text, "process_resident_memory_bytes"),
        Some((5120 * procfs::page_size()) as f64)
    );
    assert_eq!(
        value(&text, "process_virtual_memory_bytes"),
        Some(104_857_600.0)
    );
    assert_eq!(value(&text, "process_open_fds"), Some(7.0));
    assert_eq!(value(&text, "process_max_fds"), Some(4321.0));
    assert_eq!(
        value(&text, "process_start_time_seconds"),
        Some(1_796_600_000.0 + 123_456.0 / ticks)
    );
    // The classic text format names the counter with its suffix, as Prometheus's own does.
    let classic =
        Metrics::with_sources(Detail::default(), fixtures("v1-container")).encode_prometheus_text();
    assert!(
        classic.contains("# TYPE process_cpu_seconds_total counter\n"),
        "{classic}"
    );
}

#[test]
fn cgroup_throttling_is_exposed_for_v1_and_v2() {
    for (case, periods, throttled, seconds, quota) in [
        ("v1-container", 1200.0, 300.0, 4.5, Some(0.05)),
        ("v2-host-path", 4000.0, 1000.0, 2.5, Some(0.025)),
        ("v2-namespace-unlimited", 0.0, 0.0, 0.0, None),
    ] {
        let text = Metrics::with_sources(Detail::default(), fixtures(case)).encode_openmetrics();
        assert_eq!(
            value(&text, "netprobe_cgroup_cpu_available"),
            Some(1.0),
            "{case}"
        );
        assert_eq!(
            value(&text, "netprobe_cgroup_cpu_periods_total"),
            Some(periods),
            "{case}"
        );
        assert_eq!(
            value(&text, "netprobe_cgroup_cpu_throttled_periods_total"),
            Some(throttled),
            "{case}"
        );
        assert_eq!(
            value(&text, "netprobe_cgroup_cpu_throttled_seconds_total"),
            Some(seconds),
            "{case}"
        );
        assert_eq!(
            value(&text, "netprobe_cgroup_cpu_quota_seconds"),
            quota,
            "{case}"
        );
        // The period comes with a quota only.
        assert_eq!(
            value(&text, "netprobe_cgroup_cpu_period_seconds"),
            quota.map(|_| 0.1),
            "{case}"
        );
    }
}

#[test]
fn without_a_visible_cpu_controller_only_the_availability_gauge_remains() {
    for case in ["none", "v2-no-cpu-controller", "v1-outside-mount"] {
        let text = Metrics::with_sources(Detail::default(), fixtures(case)).encode_openmetrics();
        assert_eq!(
            value(&text, "netprobe_cgroup_cpu_available"),
            Some(0.0),
            "{case}"
        );
        let others: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("netprobe_cgroup_cpu_") && !l.contains("_available"))
            .collect();
        assert!(others.is_empty(), "{case}: {others:?}");
        // The process's own figures do not depend on the cgroup.
        assert_eq!(value(&text, "process_open_fds"), Some(7.0), "{case}");
    }
}

#[test]
fn an_unreadable_process_leaves_the_rest_of_the_scrape_intact() {
    let mut sources = fixtures("v1-container");
    sources.proc = ProcRoot::at(Path::new("/nonexistent"), "self");
    let text = Metrics::with_sources(Detail::default(), sources).encode_openmetrics();
    assert!(!text.contains("\nprocess_"), "{text}");
    assert_eq!(value(&text, "netprobe_cgroup_cpu_available"), Some(1.0));
    assert!(text.contains("netprobe_build_info{"), "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[test]
fn this_process_counts_its_own_cpu_time() {
    let metrics = Metrics::new();
    let cpu = |m: &Metrics| value(&m.encode_openmetrics(), "process_cpu_seconds_total").unwrap();
    let before = cpu(&metrics);
    // Spin until the kernel has charged this thread at least two more clock ticks.
    let tick = 1.0 / procfs::ticks_per_second() as f64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut spins = 0u64;
    while cpu(&metrics) < before + 2.0 * tick {
        for i in 0..100_000u64 {
            spins = std::hint::black_box(spins.wrapping_add(i));
        }
        assert!(
            std::time::Instant::now() < deadline,
            "CPU time stayed at {before}"
        );
    }
}
