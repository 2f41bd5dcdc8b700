//! The three ways `slo-report` prints a [`Report`]: an aligned table for a terminal, a markdown
//! table for a monthly report, and JSON (the schema documented in docs/slo.md).

use std::fmt::Write as _;

use super::{Report, SloReport, Status};

/// `99.9%`, `99%`: an objective, without trailing zeros.
fn objective(ratio: f64) -> String {
    let text = format!("{:.4}", ratio * 100.0);
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

/// `x` with `decimals` places while that stays short; from a million on (either sign), three
/// significant digits in scientific notation. Prometheus may send any float, and 1e308 printed
/// with `{:.3}` is 309 digits long.
pub(crate) fn human(x: f64, decimals: usize) -> String {
    if x.is_nan() {
        "NaN".into()
    } else if x.is_infinite() {
        if x > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if x.abs() >= 1e6 {
        format!("{x:.2e}")
    } else {
        format!("{x:.decimals$}")
    }
}

/// `99.950%`: three decimals tell 99.9 % from 99.95 % objectives apart.
fn attainment(slo: &SloReport) -> String {
    slo.attainment
        .map_or_else(|| "no data".into(), |a| format!("{}%", human(a * 100.0, 3)))
}

/// `50.0%`, `-150.0%`.
fn budget(slo: &SloReport) -> String {
    slo.budget_remaining
        .map_or_else(|| "-".into(), |b| format!("{}%", human(b * 100.0, 1)))
}

fn budget_time(slo: &SloReport) -> String {
    slo.budget_remaining_seconds
        .map_or_else(|| "-".into(), short_duration)
}

fn burn(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".into(), |r| human(r, 2))
}

/// An event count: whole as it usually is, one decimal when `increase()` extrapolated.
fn count(n: f64) -> String {
    if n.is_finite() && n.abs() < 1e6 && (n - n.round()).abs() < 1e-6 {
        format!("{}", n.round())
    } else {
        human(n, 1)
    }
}

fn events(slo: &SloReport) -> String {
    match (slo.bad_events, slo.events) {
        (Some(bad), Some(all)) => format!("{} / {}", count(bad), count(all)),
        _ => "-".into(),
    }
}

fn status(slo: &SloReport) -> &'static str {
    match slo.status {
        Status::Ok => "ok",
        Status::Exhausted => "EXHAUSTED",
        Status::NoData => "no data",
    }
}

fn heading(report: &Report) -> String {
    let mut text = format!(
        "SLO report for the {} ending {} (Prometheus {}",
        report.window, report.end, report.prometheus
    );
    if let Some(selector) = &report.selector {
        let _ = write!(text, ", selector {selector}");
    }
    text.push(')');
    text
}

/// A note naming the SLOs whose figures cover only part of the window, if any.
fn coverage_note(report: &Report) -> Option<String> {
    let partial: Vec<&str> = report
        .slos
        .iter()
        .filter(|s| s.window_covered == Some(false))
        .map(|s| s.slo)
        .collect();
    (!partial.is_empty()).then(|| {
        format!(
            "Partial window: Prometheus has no sample at the start of the {} for {}; their \
             figures cover only the part of the window it has (retention shorter than the \
             window, or kube-netprobe deployed since).",
            report.window,
            partial.join(", ")
        )
    })
}

fn summary(report: &Report) -> String {
    let exhausted: Vec<&str> = report
        .slos
        .iter()
        .filter(|s| s.status == Status::Exhausted)
        .map(|s| s.slo)
        .collect();
    if exhausted.is_empty() {
        "Every SLO with data has error budget left.".into()
    } else {
        format!("Error budget exhausted: {}.", exhausted.join(", "))
    }
}

const COLUMNS: [&str; 9] = [
    "SLO",
    "OBJECTIVE",
    "ATTAINMENT",
    "BUDGET LEFT",
    "TIME LEFT",
    "BURN 1H",
    "BURN 6H",
    "BAD / ALL EVENTS",
    "STATUS",
];

fn row(slo: &SloReport) -> [String; 9] {
    [
        slo.slo.to_string(),
        objective(slo.objective),
        attainment(slo),
        budget(slo),
        budget_time(slo),
        burn(slo.burn_rate_1h),
        burn(slo.burn_rate_6h),
        events(slo),
        status(slo).to_string(),
    ]
}

/// An aligned table, then one line naming the exhausted budgets.
pub fn text(report: &Report) -> String {
    let rows: Vec<[String; 9]> = report.slos.iter().map(row).collect();
    let mut widths = COLUMNS.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{cell:<w$}  ");
            }
        }
        out.push('\n');
        out
    };
    let mut out = format!("{}\n\n", heading(report));
    out.push_str(&line(COLUMNS.to_vec()));
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    let _ = writeln!(out, "\n{}", summary(report));
    if let Some(note) = coverage_note(report) {
        let _ = writeln!(out, "{note}");
    }
    out
}

/// A markdown table to paste into a monthly report.
pub fn markdown(report: &Report) -> String {
    let mut out = format!(
        "### SLO report: {} ending {}\n\nPrometheus `{}`",
        report.window, report.end, report.prometheus
    );
    if let Some(selector) = &report.selector {
        let _ = write!(out, ", selector `{selector}`");
    }
    out.push_str(".\n\n");
    out.push_str(
        "| SLO | Objective | Attainment | Error budget left | Burn rate 1h | Burn rate 6h | Bad / all events | Status |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n",
    );
    for slo in &report.slos {
        let left = match slo.budget_remaining {
            Some(_) => format!("{} ({})", budget(slo), budget_time(slo)),
            None => "-".into(),
        };
        let status = match slo.status {
            Status::Exhausted => "**exhausted**",
            _ => status(slo),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            slo.slo,
            objective(slo.objective),
            attainment(slo),
            left,
            burn(slo.burn_rate_1h),
            burn(slo.burn_rate_6h),
            events(slo),
            status
        );
    }
    let _ = writeln!(out, "\n{}", summary(report));
    if let Some(note) = coverage_note(report) {
        let _ = writeln!(out, "\n{note}");
    }
    out
}

/// The report as pretty JSON, one trailing newline.
pub fn json(report: &Report) -> String {
    let mut out = serde_json::to_string_pretty(report).expect("a report serialises");
    out.push('\n');
    out
}

/// `30d`, `6h`, `1h30m`, `-1h4m48s`: a duration rounded to whole seconds, in its largest units.
pub fn short_duration(seconds: f64) -> String {
    // Beyond about 30 years days and hours say nothing more than the exponent does.
    if !seconds.is_finite() {
        return human(seconds, 0);
    }
    if seconds.abs() >= 1e9 {
        return format!("{}s", human(seconds, 0));
    }
    let sign = if seconds < 0.0 { "-" } else { "" };
    let mut left = seconds.abs().round() as u64;
    if left == 0 {
        return "0s".into();
    }
    let mut out = String::from(sign);
    for (unit, size) in [("d", 86400), ("h", 3600), ("m", 60), ("s", 1)] {
        if left >= size {
            out.push_str(&format!("{}{unit}", left / size));
            left %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{Sli, SloReport};
    use super::*;

    fn report() -> Report {
        let window = 30 * 86400;
        let sli = |all: f64, bad: f64| Some(Sli { all, bad });
        let slos = vec![
            SloReport::new(
                "dns-availability",
                0.999,
                window,
                sli(180000.0, 90.0),
                [sli(250.0, 1.0), sli(1500.0, 3.0)],
            ),
            SloReport::new(
                "pod-network",
                0.999,
                window,
                sli(72000.0, 180.0),
                [sli(100.0, 3.0), sli(600.0, 6.0)],
            ),
            SloReport::new("storage-availability", 0.99, window, None, [None, None]),
        ];
        Report {
            schema_version: 1,
            prometheus: "http://127.0.0.1:9090".into(),
            end: "2026-01-31T00:00:00Z".into(),
            end_unix: 1769817600.0,
            window: "30d".into(),
            window_seconds: window,
            selector: Some(r#"{cluster="prod"}"#.into()),
            dns_latency_threshold_seconds: 0.1,
            budget_exhausted: true,
            slos,
        }
    }

    #[test]
    fn text_is_an_aligned_table() {
        let want = "\
SLO report for the 30d ending 2026-01-31T00:00:00Z (Prometheus http://127.0.0.1:9090, selector {cluster=\"prod\"})

SLO                   OBJECTIVE  ATTAINMENT  BUDGET LEFT  TIME LEFT  BURN 1H  BURN 6H  BAD / ALL EVENTS  STATUS
dns-availability      99.9%      99.950%     50.0%        21m36s     4.00     2.00     90 / 180000       ok
pod-network           99.9%      99.750%     -150.0%      -1h4m48s   30.00    10.00    180 / 72000       EXHAUSTED
storage-availability  99%        no data     -            -          -        -        -                 no data

Error budget exhausted: pod-network.
";
        assert_eq!(text(&report()), want);
    }

    #[test]
    fn markdown_is_a_table() {
        let md = markdown(&report());
        assert!(
            md.starts_with("### SLO report: 30d ending 2026-01-31T00:00:00Z\n"),
            "{md}"
        );
        assert!(
            md.contains("| dns-availability | 99.9% | 99.950% | 50.0% (21m36s) | 4.00 | 2.00 | 90 / 180000 | ok |\n"),
            "{md}"
        );
        assert!(
            md.contains("| pod-network | 99.9% | 99.750% | -150.0% (-1h4m48s) | 30.00 | 10.00 | 180 / 72000 | **exhausted** |\n"),
            "{md}"
        );
        assert!(
            md.contains("| storage-availability | 99% | no data | - | - | - | - | no data |\n"),
            "{md}"
        );
    }

    #[test]
    fn json_keeps_no_data_as_null() {
        let v: serde_json::Value = serde_json::from_str(&json(&report())).unwrap();
        assert_eq!(v["schema_version"], 1);
        assert_eq!(v["budget_exhausted"], true);
        assert_eq!(v["slos"][0]["status"], "ok");
        assert_eq!(v["slos"][0]["events"], 180000.0);
        assert_eq!(v["slos"][1]["status"], "exhausted");
        let storage = &v["slos"][2];
        assert_eq!(storage["status"], "no_data");
        assert!(storage["attainment"].is_null() && storage["burn_rate_1h"].is_null());
        assert_eq!(storage["error_budget"].as_f64().unwrap(), 0.01);
        assert_eq!(v["slos"][0]["attainment"].as_f64().unwrap(), 0.9995);
        assert_eq!(v["slos"][1]["budget_remaining"].as_f64().unwrap(), -1.5);
        assert_eq!(
            v["slos"][1]["budget_remaining_seconds"].as_f64().unwrap(),
            -3888.0
        );
    }

    #[test]
    fn partial_windows_are_named() {
        let mut r = report();
        assert_eq!(coverage_note(&r), None);
        r.slos[0].window_covered = Some(true);
        r.slos[1].window_covered = Some(false);
        let note = coverage_note(&r).unwrap();
        assert!(
            note.starts_with(
                "Partial window: Prometheus has no sample at the start of the 30d for pod-network;"
            ),
            "{note}"
        );
        assert!(text(&r).ends_with(&format!("{note}\n")));
        assert!(markdown(&r).ends_with(&format!("\n{note}\n")));
    }

    #[test]
    fn counts_and_objectives() {
        assert_eq!(count(180000.0), "180000");
        assert_eq!(count(12.34), "12.3");
        assert_eq!(count(1e308), "1.00e308");
        assert_eq!(count(-2_500_000.0), "-2.50e6");
        assert_eq!(count(f64::NAN), "NaN");
        assert_eq!(human(-1e308 * 100.0, 3), "-Inf");
        assert_eq!(human(99.95, 3), "99.950");
        assert_eq!(objective(0.999), "99.9%");
        assert_eq!(objective(0.99), "99%");
        assert_eq!(objective(0.9995), "99.95%");
    }

    #[test]
    fn short_durations() {
        assert_eq!(short_duration(2592000.0), "30d");
        assert_eq!(short_duration(1296.0000000002), "21m36s");
        assert_eq!(short_duration(-3888.0), "-1h4m48s");
        assert_eq!(short_duration(22680.0), "6h18m");
        assert_eq!(short_duration(0.2), "0s");
        assert_eq!(short_duration(-1e308), "-1.00e308s");
        assert_eq!(short_duration(f64::INFINITY), "+Inf");
    }
}
