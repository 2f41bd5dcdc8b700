//! The figures slo-report prints for the backfilled data, in text and JSON, and what
//! `--objective`, `--month`, `--selector` and the other flags change in them.

use serde_json::Value;

use crate::util::Checks;

use super::data::openmetrics;
use super::server::{Prometheus, require_prometheus};
use super::{END, USER, expect_json, field, password_file, slo_report};

#[test]
fn reports_the_figures_the_backfilled_data_implies() {
    require_prometheus();
    let prometheus = Prometheus::backfilled(&openmetrics());
    let url = prometheus.url();
    let secrets = tempfile::tempdir().expect("tempdir");
    let password = password_file(secrets.path());
    let password = password.to_str().expect("utf-8 path");
    let base_without_end = |extra: &[&str]| -> Vec<String> {
        let args = [
            "--prometheus",
            url.as_str(),
            "--basic-auth-user",
            USER,
            "--basic-auth-password-file",
            password,
        ];
        args.iter().chain(extra).map(|a| a.to_string()).collect()
    };
    let base = |extra: &[&str]| base_without_end(&[&["--end", END][..], extra].concat());
    let prod = ["--selector", r#"{cluster="prod"}"#];

    // JSON: every figure of the module comment.
    let json = ["--format", "json", "--window", "30d"];
    let run = slo_report(&base(&[&prod[..], &json[..]].concat()));
    let mut checks = Checks::default();
    checks.eq("exit code (pod-network exhausted)", run.code, Some(1));
    let report: Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{run}"));
    checks.eq("schema_version", report["schema_version"].as_u64(), Some(1));
    checks.eq(
        "end_unix",
        report["end_unix"].as_f64(),
        Some(1_769_817_600.0),
    );
    checks.eq("end", report["end"].as_str(), Some(END));
    checks.eq("window", report["window"].as_str(), Some("30d"));
    checks.eq(
        "window_seconds",
        report["window_seconds"].as_u64(),
        Some(2_592_000),
    );
    checks.eq(
        "selector",
        report["selector"].as_str(),
        Some(r#"{cluster="prod"}"#),
    );
    checks.eq(
        "budget_exhausted",
        report["budget_exhausted"].as_bool(),
        Some(true),
    );
    checks.eq(
        "dns_latency_threshold_seconds",
        report["dns_latency_threshold_seconds"].as_f64(),
        Some(0.1),
    );
    let names: Vec<&str> = report["slos"]
        .as_array()
        .map(|s| s.iter().filter_map(|s| s["slo"].as_str()).collect())
        .unwrap_or_default();
    checks.eq(
        "SLO order",
        names,
        vec![
            "dns-availability",
            "dns-latency",
            "pod-network",
            "storage-availability",
        ],
    );
    #[rustfmt::skip]
    expect_json(&mut checks, &report, &[
        ("dns-availability", "objective", Some(0.999)),
        ("dns-availability", "events", Some(180_000.0)),
        ("dns-availability", "bad_events", Some(90.0)),
        ("dns-availability", "attainment", Some(0.9995)),
        ("dns-availability", "error_budget", Some(0.001)),
        ("dns-availability", "budget_remaining", Some(0.5)),
        ("dns-availability", "budget_remaining_seconds", Some(1296.0)),
        ("dns-availability", "burn_rate_1h", Some(4.0)),
        ("dns-availability", "burn_rate_6h", Some(2.0)),
        ("dns-latency", "objective", Some(0.99)),
        ("dns-latency", "events", Some(180_000.0)),
        ("dns-latency", "bad_events", Some(810.0)),
        ("dns-latency", "attainment", Some(0.9955)),
        ("dns-latency", "budget_remaining", Some(0.55)),
        ("dns-latency", "budget_remaining_seconds", Some(14_256.0)),
        ("dns-latency", "burn_rate_1h", Some(0.8)),
        ("dns-latency", "burn_rate_6h", Some(0.4)),
        ("pod-network", "events", Some(72_000.0)),
        ("pod-network", "bad_events", Some(180.0)),
        ("pod-network", "attainment", Some(0.9975)),
        ("pod-network", "budget_remaining", Some(-1.5)),
        ("pod-network", "budget_remaining_seconds", Some(-3888.0)),
        ("pod-network", "burn_rate_1h", Some(30.0)),
        ("pod-network", "burn_rate_6h", Some(10.0)),
        ("storage-availability", "objective", Some(0.99)),
        ("storage-availability", "events", Some(86_400.0)),
        ("storage-availability", "bad_events", Some(108.0)),
        ("storage-availability", "attainment", Some(0.99875)),
        ("storage-availability", "budget_remaining", Some(0.875)),
        ("storage-availability", "budget_remaining_seconds", Some(22_680.0)),
        ("storage-availability", "burn_rate_1h", Some(0.0)),
        ("storage-availability", "burn_rate_6h", Some(0.0)),
    ]);
    for (slo, status) in [
        ("dns-availability", "ok"),
        ("dns-latency", "ok"),
        ("pod-network", "exhausted"),
        ("storage-availability", "ok"),
    ] {
        checks.eq(
            &format!("{slo}.status"),
            field(&report, slo, "status").as_str(),
            Some(status),
        );
        checks.eq(
            &format!("{slo}.window_covered"),
            field(&report, slo, "window_covered").as_bool(),
            Some(true),
        );
    }
    checks.finish(&run.to_string());

    // A 31-day window starts a day before the data: the report says the window is only partly
    // covered. The figures do not change: every counter's first sample is 0, so increase()
    // does not extrapolate towards the earlier start (Prometheus caps that at the counter's
    // zero).
    let run = slo_report(&base(
        &[&prod[..], &["--window", "31d", "--format", "json"]].concat(),
    ));
    let report: Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{run}"));
    let mut checks = Checks::default();
    #[rustfmt::skip]
    expect_json(&mut checks, &report, &[
        ("dns-availability", "events", Some(180_000.0)),
        ("dns-availability", "bad_events", Some(90.0)),
        ("pod-network", "bad_events", Some(180.0)),
        ("storage-availability", "events", Some(86_400.0)),
    ]);
    for slo in [
        "dns-availability",
        "dns-latency",
        "pod-network",
        "storage-availability",
    ] {
        checks.eq(
            &format!("{slo}.window_covered"),
            field(&report, slo, "window_covered").as_bool(),
            Some(false),
        );
    }
    checks.finish(&run.to_string());
    let run = slo_report(&base(&[&prod[..], &["--window", "31d"]].concat()));
    assert!(
        run.stdout.contains(
            "Partial window: Prometheus has no sample at the start of the 31d for dns-availability, dns-latency, pod-network, storage-availability;"
        ),
        "{run}"
    );

    // Text, over the default window (30d): the table a human reads.
    let run = slo_report(&base(&prod));
    let want = format!(
        "\
SLO report for the 30d ending {END} (Prometheus {url}, selector {{cluster=\"prod\"}})

SLO                   OBJECTIVE  ATTAINMENT  BUDGET LEFT  TIME LEFT  BURN 1H  BURN 6H  BAD / ALL EVENTS  STATUS
dns-availability      99.9%      99.950%     50.0%        21m36s     4.00     2.00     90 / 180000       ok
dns-latency           99%        99.550%     55.0%        3h57m36s   0.80     0.40     810 / 180000      ok
pod-network           99.9%      99.750%     -150.0%      -1h4m48s   30.00    10.00    180 / 72000       EXHAUSTED
storage-availability  99%        99.875%     87.5%        6h18m      0.00     0.00     108 / 86400       ok

Error budget exhausted: pod-network.
"
    );
    assert_eq!(run.stdout, want, "{run}");
    assert_eq!(run.code, Some(1), "{run}");

    // Markdown, with pod-network's objective loosened to 99 %: every budget left, exit 0.
    let loose = ["--format", "markdown", "--objective", "pod-network=0.99"];
    let run = slo_report(&base(&[&prod[..], &loose[..]].concat()));
    let want = format!(
        "\
### SLO report: 30d ending {END}

Prometheus `{url}`, selector `{{cluster=\"prod\"}}`.

| SLO | Objective | Attainment | Error budget left | Burn rate 1h | Burn rate 6h | Bad / all events | Status |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |
| dns-availability | 99.9% | 99.950% | 50.0% (21m36s) | 4.00 | 2.00 | 90 / 180000 | ok |
| dns-latency | 99% | 99.550% | 55.0% (3h57m36s) | 0.80 | 0.40 | 810 / 180000 | ok |
| pod-network | 99% | 99.750% | 75.0% (5h24m) | 3.00 | 1.00 | 180 / 72000 | ok |
| storage-availability | 99% | 99.875% | 87.5% (6h18m) | 0.00 | 0.00 | 108 / 86400 | ok |

Every SLO with data has error budget left.
"
    );
    assert_eq!(run.stdout, want, "{run}");
    assert_eq!(run.code, Some(0), "{run}");

    // Another cluster has only storage data: the others are "no data" (not 100 %) and do not
    // fail the exit code.
    let run = slo_report(&base(&[
        "--selector",
        r#"{cluster="dev"}"#,
        "--format",
        "json",
    ]));
    let mut checks = Checks::default();
    checks.eq("exit code", run.code, Some(0));
    let report: Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{run}"));
    for slo in ["dns-availability", "dns-latency", "pod-network"] {
        checks.eq(
            &format!("{slo}.status"),
            field(&report, slo, "status").as_str(),
            Some("no_data"),
        );
    }
    #[rustfmt::skip]
    expect_json(&mut checks, &report, &[
        ("dns-availability", "attainment", None),
        ("dns-availability", "budget_remaining", None),
        ("dns-availability", "events", None),
        ("pod-network", "burn_rate_1h", None),
        ("pod-network", "window_covered", None),
        ("storage-availability", "events", Some(43_200.0)),
        ("storage-availability", "bad_events", Some(0.0)),
        ("storage-availability", "attainment", Some(1.0)),
        ("storage-availability", "budget_remaining", Some(1.0)),
    ]);
    checks.finish(&run.to_string());

    // Without a selector both clusters count. A 25 ms latency threshold reads the le="0.025"
    // buckets, 20 an hour per server below le="0.1": 810 + 2 * 20 * 720 = 29610 bad.
    let run = slo_report(&base(&[
        "--format",
        "json",
        "--dns-latency-threshold",
        "0.025",
    ]));
    let report: Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{run}"));
    let mut checks = Checks::default();
    #[rustfmt::skip]
    expect_json(&mut checks, &report, &[
        ("storage-availability", "events", Some(129_600.0)),
        ("storage-availability", "bad_events", Some(108.0)),
        ("dns-latency", "events", Some(180_000.0)),
        ("dns-latency", "bad_events", Some(29_610.0)),
    ]);
    checks.eq("selector", report["selector"].is_null(), true);
    checks.eq(
        "dns_latency_threshold_seconds",
        report["dns_latency_threshold_seconds"].as_f64(),
        Some(0.025),
    );
    checks.finish(&run.to_string());

    // January by name: 744 hours ending 2026-02-01T00:00:00Z, where the data has a sample.
    // DNS: 250 lookups an hour; the 50 SERVFAILs of hour 721 join the 90 bad; a's one slow
    // lookup an hour in hours 722..=744 joins the 810 slow ones.
    let run = slo_report(&base_without_end(
        &[&prod[..], &["--month", "2026-01", "--format", "json"]].concat(),
    ));
    let report: Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{run}"));
    let mut checks = Checks::default();
    checks.eq("window", report["window"].as_str(), Some("31d"));
    checks.eq("end", report["end"].as_str(), Some("2026-02-01T00:00:00Z"));
    #[rustfmt::skip]
    expect_json(&mut checks, &report, &[
        ("dns-availability", "events", Some(186_000.0)),
        ("dns-availability", "bad_events", Some(140.0)),
        ("dns-availability", "burn_rate_1h", Some(0.0)),
        ("dns-latency", "bad_events", Some(833.0)),
        ("pod-network", "events", Some(74_400.0)),
        ("pod-network", "bad_events", Some(180.0)),
        ("storage-availability", "events", Some(89_280.0)),
        ("storage-availability", "bad_events", Some(108.0)),
    ]);
    checks.eq(
        "dns-availability.window_covered",
        field(&report, "dns-availability", "window_covered").as_bool(),
        Some(true),
    );
    checks.finish(&run.to_string());
    let run = slo_report(&base(&["--month", "2026-01"]));
    assert_eq!(run.code, Some(2), "{run}");
    assert!(run.stderr.contains("cannot be used with"), "{run}");

    // A Prometheus that keeps the lookups but not the le="0.1" bucket (a selector stands in
    // for the relabeling rule): dns-latency is no data, not 0 %.
    let run = slo_report(&base(&[
        "--selector",
        r#"{cluster="prod",le!="0.1"}"#,
        "--format",
        "json",
    ]));
    let report: Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{run}"));
    let mut checks = Checks::default();
    checks.eq(
        "dns-latency.status",
        field(&report, "dns-latency", "status").as_str(),
        Some("no_data"),
    );
    #[rustfmt::skip]
    expect_json(&mut checks, &report, &[
        ("dns-latency", "attainment", None),
        ("dns-availability", "attainment", Some(0.9995)),
    ]);
    checks.finish(&run.to_string());

    // A window before the data: no data anywhere, exit 0, and the text says so.
    let run = slo_report(&[
        "--prometheus",
        &url,
        "--end",
        "2025-12-01T00:00:00Z",
        "--basic-auth-user",
        USER,
        "--basic-auth-password-file",
        password,
    ]);
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(run.stdout.matches("no data").count(), 8, "{run}");
    assert!(
        run.stderr
            .contains("warning: no SLO has data in the 30d ending 2025-12-01T00:00:00Z"),
        "{run}"
    );

    // Prometheus's own error, with its message and the URL: an invalid regular expression.
    let run = slo_report(&base(&["--selector", r#"{cluster=~"("}"#]));
    assert_eq!(run.code, Some(3), "{run}");
    assert!(
        run.stderr
            .contains(&format!("Prometheus at {url} rejected"))
            && run.stderr.contains("bad_data")
            && run.stderr.contains("missing closing )"),
        "{run}"
    );
    assert!(run.stdout.is_empty(), "{run}");

    // No credentials: Prometheus's 401 is reported as such.
    let run = slo_report(&["--prometheus", &url, "--end", END]);
    assert_eq!(run.code, Some(3), "{run}");
    assert!(
        run.stderr
            .contains(&format!("Prometheus at {url} answered HTTP 401")),
        "{run}"
    );

    // A wrong path prefix: HTTP 404 from Prometheus's router.
    let wrong = format!("{url}/not-prometheus");
    let run = slo_report(&[
        "--prometheus",
        &wrong,
        "--end",
        END,
        "--basic-auth-user",
        USER,
        "--basic-auth-password-file",
        password,
    ]);
    assert_eq!(run.code, Some(3), "{run}");
    assert!(
        run.stderr
            .contains(&format!("Prometheus at {wrong} answered HTTP 404")),
        "{run}"
    );
}
