//! The ways slo-report cannot run: Prometheus refused or silent, and usage errors (exit 2).

use std::net::TcpListener;
use std::time::Duration;

use super::slo_report;

#[test]
fn an_unreachable_prometheus_is_exit_3_with_the_url() {
    // Nothing listens on a port just freed.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let run = slo_report(&["--prometheus", &url, "--timeout", "5s"]);
    assert_eq!(run.code, Some(3), "{run}");
    assert!(
        run.stderr.contains(&format!(
            "cannot reach Prometheus at {url}: Connection refused"
        )),
        "{run}"
    );
    assert!(run.stdout.is_empty(), "{run}");
}

#[test]
fn a_silent_prometheus_is_exit_3_within_the_timeout() {
    // Accepts connections (the kernel does) and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let run = slo_report(&["--prometheus", &url, "--timeout", "2s"]);
    assert_eq!(run.code, Some(3), "{run}");
    assert!(
        run.stderr.contains(&format!(
            "Prometheus at {url} did not answer within --timeout 2s"
        )),
        "{run}"
    );
    // The timeout ended it, not the harness's own limit; far above a loaded machine's start-up.
    assert!(run.took < Duration::from_secs(30), "{run}");
    drop(listener);
}

#[test]
fn usage_errors_are_exit_2_and_name_the_culprit() {
    let url = "http://127.0.0.1:9";
    for (args, says) in [
        (
            vec!["--objective", "dns-availability=1.5"],
            "objective 1.5 for dns-availability must be a ratio between 0 and 1",
        ),
        (
            vec!["--objective", "dns=0.99"],
            "unknown SLO `dns`; the SLOs are dns-availability, dns-latency, pod-network, storage-availability",
        ),
        (vec!["--window", "a month"], "`a month` is not a duration"),
        (
            vec!["--end", "yesterday"],
            "`yesterday` is neither Unix seconds nor an RFC 3339 time",
        ),
        (
            vec!["--selector", "{cluster=prod}"],
            "the value of `cluster` must be quoted",
        ),
        (vec!["--format", "html"], "--format"),
        (
            vec!["--dns-latency-threshold", "0.2"],
            "0.2 s is not a bound of the DNS lookup-duration histogram",
        ),
        (
            vec!["--bearer-token-file", "/nonexistent/token"],
            "cannot read the bearer token file /nonexistent/token",
        ),
    ] {
        let mut all = vec!["--prometheus", url];
        all.extend(args.iter().copied());
        let run = slo_report(&all);
        assert_eq!(run.code, Some(2), "{args:?}: {run}");
        assert!(
            run.stderr.contains(says),
            "{args:?}: want {says:?} in\n{run}"
        );
    }
    let run = slo_report(&["--prometheus", "prometheus:9090"]);
    assert_eq!(run.code, Some(2), "{run}");
    assert!(run.stderr.contains("has no scheme"), "{run}");
}
