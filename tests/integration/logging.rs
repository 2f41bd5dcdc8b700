//! What the daemon writes to its log: one line when a target starts or stops failing (not one
//! per probe), in text or JSON.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::dns_server::{Behaviour, DnsServer};
use crate::util::Daemon;

const WAIT: Duration = Duration::from_secs(15);
const IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);

fn config(server: &str, extra: &str) -> String {
    format!(
        "listen: 127.0.0.1:0\nnode_name: log-node\ndns:\n  interval: 300ms\n  timeout: 200ms\n  \
         servers: [\"{server}\"]\n  queries:\n    - {{ name: flap.cluster.local }}\n    \
         - {{ name: ok.cluster.local }}\n{extra}"
    )
}

fn lines_with(text: &str, needles: &[&str]) -> usize {
    text.lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .count()
}

fn lookups(daemon: &mut Daemon, name: &str, at_least: f64) {
    daemon.wait_for(
        "netprobe_dns_lookups_total",
        &[("name", name)],
        &format!("at least {at_least} lookups of {name}"),
        WAIT,
        |v| v >= at_least,
    );
}

#[test]
fn one_line_per_state_change_not_per_probe() {
    let server = DnsServer::start();
    server.set("flap.cluster.local", Behaviour::ServFail);
    server.set("ok.cluster.local", Behaviour::Answer(IP));
    let mut daemon = Daemon::start(&config(&server.addr().to_string(), ""));

    lookups(&mut daemon, "flap.cluster.local", 5.0);
    let log = daemon.stderr_text();
    let failing = [
        "DNS lookup failing",
        "name=flap.cluster.local",
        "outcome=SERVFAIL",
    ];
    assert_eq!(lines_with(&log, &failing), 1, "{log}");
    assert_eq!(lines_with(&log, &["ok.cluster.local"]), 0, "{log}");

    server.set("flap.cluster.local", Behaviour::Answer(IP));
    daemon.wait_for(
        "netprobe_dns_probe_success",
        &[("name", "flap.cluster.local")],
        "flap.cluster.local to recover",
        WAIT,
        |v| v == 1.0,
    );
    let after = daemon.scrape().sum(
        "netprobe_dns_lookups_total",
        &[("name", "flap.cluster.local")],
    );
    lookups(&mut daemon, "flap.cluster.local", after + 3.0);
    let log = daemon.stderr_text();
    assert_eq!(lines_with(&log, &failing), 1, "{log}");
    let recovered = ["DNS lookup recovered", "name=flap.cluster.local"];
    assert_eq!(lines_with(&log, &recovered), 1, "{log}");
}

#[test]
fn json_lines_carry_the_fields() {
    let server = DnsServer::start();
    server.set("flap.cluster.local", Behaviour::NxDomain);
    server.set("ok.cluster.local", Behaviour::Answer(IP));
    let mut daemon = Daemon::start_with(
        &config(&server.addr().to_string(), ""),
        &["--log-format", "json"],
    );
    lookups(&mut daemon, "flap.cluster.local", 2.0);
    let log = daemon.stderr_text();
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let listening = events
        .iter()
        .find(|e| e["message"] == "listening")
        .unwrap_or_else(|| panic!("no listening event in {log}"));
    assert_eq!(listening["level"], "INFO");
    assert_eq!(listening["addr"], daemon.addr().to_string());
    assert_eq!(listening["node"], "log-node");
    let failing: Vec<_> = events
        .iter()
        .filter(|e| e["message"] == "DNS lookup failing")
        .collect();
    assert_eq!(failing.len(), 1, "{log}");
    assert_eq!(failing[0]["level"], "WARN");
    assert_eq!(failing[0]["name"], "flap.cluster.local");
    assert_eq!(failing[0]["server"], server.addr().to_string());
    assert_eq!(failing[0]["outcome"], "NXDOMAIN with 0 answer(s)");
}

/// The damping of `src/probe/mod.rs`: lines a target may log in a burst, and one more per
/// refill interval after it.
const LOG_BURST: u64 = 3;
const LOG_REFILL: Duration = Duration::from_secs(20);

/// `suppressed=N` on a log line.
fn suppressed(line: &str) -> Option<u64> {
    let rest = &line[line.find("suppressed=")? + "suppressed=".len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[test]
fn a_flapping_target_logs_a_burst_then_lines_with_the_count_left_out() {
    let server = DnsServer::start();
    // Every other lookup times out: the target flips between failing and fine on every probe.
    server.set(
        "flap.cluster.local",
        Behaviour::DropOdd(Box::new(Behaviour::Answer(IP))),
    );
    server.set("ok.cluster.local", Behaviour::Answer(IP));
    let started = std::time::Instant::now();
    let mut daemon = Daemon::start(&config(&server.addr().to_string(), ""));

    lookups(&mut daemon, "flap.cluster.local", 30.0);
    let metrics = daemon.scrape();
    let log = daemon.stderr_text();
    let elapsed = started.elapsed();
    let flap = &[("name", "flap.cluster.local")];
    let timeouts = metrics.sum(
        "netprobe_dns_lookups_total",
        &[("name", "flap.cluster.local"), ("rcode", "TIMEOUT")],
    );
    let answered = metrics.sum(
        "netprobe_dns_lookups_total",
        &[("name", "flap.cluster.local"), ("rcode", "NOERROR")],
    );
    assert!(
        timeouts >= 10.0 && answered >= 10.0,
        "the target did not flap: {timeouts} timeouts, {answered} answers ({flap:?})"
    );
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("name=flap.cluster.local"))
        .filter(|l| l.contains("DNS lookup failing") || l.contains("DNS lookup recovered"))
        .collect();
    // The bound for however long this took: the burst and one line per refill interval.
    let allowed = LOG_BURST + elapsed.as_secs() / LOG_REFILL.as_secs();
    assert!(
        lines.len() as u64 <= allowed,
        "{} lines in {elapsed:?} for about {} changes; at most {allowed} allowed:\n{}",
        lines.len(),
        timeouts + answered,
        lines.join("\n")
    );
    assert!(
        lines.iter().all(|l| suppressed(l).is_some()),
        "every line carries the count:\n{}",
        lines.join("\n")
    );

    // The first line after the burst tells how many changes it left out.
    let counted = crate::util::poll(
        "a line about flap.cluster.local with suppressed=N, N > 0",
        LOG_REFILL + WAIT,
        || {
            let log = daemon.stderr_text();
            log.lines()
                .filter(|l| l.contains("name=flap.cluster.local"))
                .find_map(|l| suppressed(l).filter(|n| *n > 0))
                .ok_or_else(|| format!("none yet:\n{log}"))
        },
    );
    assert!(counted >= 10, "only {counted} changes left out");
    assert_eq!(
        lines_with(&daemon.stderr_text(), &["ok.cluster.local"]),
        0,
        "the steady target logs nothing"
    );
}
