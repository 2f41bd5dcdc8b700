//! `kube-netprobe slo-report`: attainment, error budget and burn rate of the four SLOs of
//! docs/slo.md, read from the raw counters through the Prometheus HTTP API.
//!
//! Here: the command line (its value parsers, each naming the bad value) and the run. `model`
//! holds the SLO table ([`SLOS`]) and the arithmetic ([`Sli`]), the contract of docs/slo.md in
//! code; `prometheus` does the one HTTP call it needs; `render` writes text, markdown and JSON.

mod model;
pub mod prometheus;
pub mod render;

pub use model::*;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use futures_util::{StreamExt, TryStreamExt};
use jiff::ToSpan as _;

use crate::exit;
use prometheus::{Auth, Client};

/// Parses `--dns-latency-threshold`: seconds, one of the DNS histogram's bucket bounds.
pub fn parse_latency_threshold(text: &str) -> Result<f64, String> {
    let seconds: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !crate::metrics::DNS_BUCKETS.contains(&seconds) {
        let bounds: Vec<String> = crate::metrics::DNS_BUCKETS
            .iter()
            .map(f64::to_string)
            .collect();
        return Err(format!(
            "{text} s is not a bound of the DNS lookup-duration histogram; pick one of {}",
            bounds.join(", ")
        ));
    }
    Ok(seconds)
}

/// Parses `{a="b", c=~"d|e"}` (braces optional) into its matchers. PromQL string quoting with
/// `"`, `'` or backticks; the label name and operator are checked here so that a typo is a usage
/// error naming the matcher, not a Prometheus parse error.
pub fn parse_selector(text: &str) -> Result<Selector, String> {
    let trimmed = text.trim();
    let inner = match trimmed.strip_prefix('{') {
        Some(rest) => rest
            .strip_suffix('}')
            .ok_or_else(|| format!("`{text}`: missing the closing `}}`"))?,
        None => trimmed,
    };
    let mut matchers = Vec::new();
    let mut rest = inner.trim_start();
    while !rest.is_empty() {
        let name_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let name = &rest[..name_len];
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(format!("`{text}`: expected a label name at `{rest}`"));
        }
        if name == "__name__" {
            return Err(format!(
                "`{text}`: __name__ cannot be selected; the report picks the metrics"
            ));
        }
        rest = rest[name_len..].trim_start();
        let op = ["=~", "!~", "!=", "="]
            .into_iter()
            .find(|op| rest.starts_with(op))
            .ok_or_else(|| {
                format!("`{text}`: expected =, !=, =~ or !~ after `{name}`, found `{rest}`")
            })?;
        rest = rest[op.len()..].trim_start();
        let quote = rest
            .chars()
            .next()
            .filter(|c| matches!(c, '"' | '\'' | '`'))
            .ok_or_else(|| format!("`{text}`: the value of `{name}` must be quoted"))?;
        let mut end = None;
        let mut escaped = false;
        for (i, c) in rest.char_indices().skip(1) {
            match c {
                '\\' if quote != '`' && !escaped => escaped = true,
                c if c == quote && !escaped => {
                    end = Some(i);
                    break;
                }
                _ => escaped = false,
            }
        }
        let end = end.ok_or_else(|| format!("`{text}`: unterminated value for `{name}`"))?;
        matchers.push(format!("{name}{op}{}", &rest[..=end]));
        rest = rest[end + 1..].trim_start();
        match rest.strip_prefix(',') {
            Some(after) => rest = after.trim_start(),
            None if rest.is_empty() => {}
            None => return Err(format!("`{text}`: expected `,` or the end at `{rest}`")),
        }
    }
    Ok(Selector(matchers))
}

/// Parses `--objective SLO=RATIO`: a known SLO and a ratio strictly between 0 and 1.
pub fn parse_objective(text: &str) -> Result<(&'static str, f64), String> {
    let (name, ratio) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}`: write it as SLO=RATIO, e.g. dns-availability=0.999"))?;
    let slo = SLOS
        .iter()
        .find(|s| s.name == name.trim())
        .ok_or_else(|| format!("unknown SLO `{name}`; the SLOs are {}", slo_names()))?;
    let objective: f64 = ratio
        .trim()
        .parse()
        .map_err(|_| format!("objective `{ratio}` for {name} is not a number"))?;
    if !(objective > 0.0 && objective < 1.0) {
        return Err(format!(
            "objective {ratio} for {name} must be a ratio between 0 and 1 (exclusive), e.g. 0.999"
        ));
    }
    Ok((slo.name, objective))
}

/// Parses `--window`: a whole number of seconds, at least one minute.
pub fn parse_window(text: &str) -> Result<Duration, String> {
    let window = humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration ({e}); write it like 30d or 7d"))?;
    if window.subsec_nanos() != 0 || window < Duration::from_secs(60) {
        return Err(format!(
            "window `{text}` must be at least 1m and whole seconds"
        ));
    }
    Ok(window)
}

/// Parses `--end`: Unix seconds (`1769817600`, fractions allowed) or RFC 3339 (`2026-01-31T00:00:00Z`,
/// `2026-01-31T01:00:00+01:00`).
pub fn parse_end(text: &str) -> Result<SystemTime, String> {
    let text = text.trim();
    if !text.is_empty() && text.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return text
            .parse()
            .ok()
            .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
            .and_then(|d| UNIX_EPOCH.checked_add(d))
            .ok_or_else(|| format!("`{text}` is not a Unix time"));
    }
    let bad = |why: String| {
        format!(
            "`{text}` is neither Unix seconds nor an RFC 3339 time like 2026-01-31T00:00:00Z ({why})"
        )
    };
    // jiff reads RFC 3339 (and the ISO 8601 forms around it), `Z` or a numeric offset; a time
    // without an offset is refused rather than guessed to be UTC or local.
    let time: jiff::Timestamp = text.parse().map_err(|e: jiff::Error| bad(e.to_string()))?;
    // The queries take Unix seconds, which start at 1970.
    if time < jiff::Timestamp::UNIX_EPOCH {
        return Err(bad("before 1970-01-01T00:00:00Z".into()));
    }
    Ok(SystemTime::from(time))
}

/// Parses `--month YYYY-MM`: the month's start and the next month's start, both 00:00 UTC.
pub fn parse_month(text: &str) -> Result<(SystemTime, SystemTime), String> {
    let bad = || format!("`{text}` is not a month like 2026-01");
    let (year, month) = text.trim().split_once('-').ok_or_else(bad)?;
    let year: i16 = year.parse().map_err(|_| bad())?;
    let month: i8 = month.parse().map_err(|_| bad())?;
    if !(1970..=9998).contains(&year) || !(1..=12).contains(&month) {
        return Err(bad());
    }
    let utc_midnight = |date: jiff::civil::Date| {
        jiff::tz::TimeZone::UTC
            .to_timestamp(date.to_datetime(jiff::civil::Time::midnight()))
            .map(SystemTime::from)
            .map_err(|_| bad())
    };
    let first = jiff::civil::Date::new(year, month, 1).map_err(|_| bad())?;
    let next = first.checked_add(1.month()).map_err(|_| bad())?;
    Ok((utc_midnight(first)?, utc_midnight(next)?))
}

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// An aligned table for a terminal.
    Text,
    /// A markdown table for a monthly report.
    Markdown,
    /// The schema documented in docs/slo.md, section "slo-report".
    Json,
}

/// `kube-netprobe slo-report`.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// Prometheus base URL, with any path prefix (http:// or https://).
    #[arg(long, value_name = "URL", value_parser = prometheus::check_url_arg)]
    prometheus: String,
    /// The reporting window ending at --end.
    #[arg(long, default_value = "30d", value_parser = parse_window)]
    window: Duration,
    /// End of the window: RFC 3339 (2026-01-31T00:00:00Z) or Unix seconds; default now.
    #[arg(long, value_name = "TIME", value_parser = parse_end)]
    end: Option<SystemTime>,
    /// A calendar month in UTC (2026-01), instead of --window and --end.
    #[arg(long, value_name = "YYYY-MM", value_parser = parse_month, conflicts_with_all = ["window", "end"])]
    month: Option<(SystemTime, SystemTime)>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Override an SLO's objective, e.g. dns-availability=0.9995 (repeatable).
    #[arg(long = "objective", value_name = "SLO=RATIO", value_parser = parse_objective)]
    objectives: Vec<(&'static str, f64)>,
    /// Extra label matchers applied to every series, e.g. '{cluster="prod"}'.
    #[arg(long, value_parser = parse_selector)]
    selector: Option<Selector>,
    /// DNS lookups slower than this many seconds are bad for dns-latency; a bound of the DNS
    /// histogram, the same as the chart's sloDNSLatencySeconds.
    #[arg(long, value_name = "SECONDS", default_value_t = DNS_LATENCY_THRESHOLD, value_parser = parse_latency_threshold)]
    dns_latency_threshold: f64,
    /// Limit for the whole report (every query).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// File holding a bearer token sent to Prometheus.
    #[arg(long, value_name = "FILE", conflicts_with = "basic_auth_user")]
    bearer_token_file: Option<PathBuf>,
    /// User for HTTP basic auth (with --basic-auth-password-file).
    #[arg(long, value_name = "USER", requires = "basic_auth_password_file")]
    basic_auth_user: Option<String>,
    /// File holding the basic-auth password.
    #[arg(long, value_name = "FILE", requires = "basic_auth_user")]
    basic_auth_password_file: Option<PathBuf>,
    /// PEM CA bundle for an https:// Prometheus; default the system bundle.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
}
/// Queries in flight at once: enough to overlap the slow 30-day ones, well under Prometheus's
/// default `--query.max-concurrency` of 20.
const CONCURRENT_QUERIES: usize = 6;
/// Runs every query and builds the report.
pub async fn collect(
    client: &Client,
    objectives: &[(&'static str, f64)],
    selector: &Selector,
    latency_threshold: f64,
    window: Duration,
    end: SystemTime,
) -> Result<Report, prometheus::Error> {
    let end_unix = end
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let window_seconds = window.as_secs();
    let plan = Plan::new(selector, latency_threshold, window_seconds);
    let values: Vec<Option<f64>> = futures_util::stream::iter(&plan.queries)
        .map(|(query, before_end)| client.query(query, end_unix - *before_end as f64))
        .buffered(CONCURRENT_QUERIES)
        .try_collect()
        .await?;
    let mut slos = Vec::new();
    for ((slo, windows), coverage) in SLOS.iter().zip(&plan.slis).zip(&plan.coverage) {
        let objective = objectives
            .iter()
            .rev()
            .find(|(name, _)| *name == slo.name)
            .map_or(slo.objective, |(_, o)| *o);
        let [over_window, burn_1h, burn_6h] =
            windows.map(|(all, second)| Sli::from_query(slo.bad, values[all], values[second]));
        let mut report = SloReport::new(
            slo.name,
            objective,
            window_seconds,
            over_window,
            [burn_1h, burn_6h],
        );
        if report.status != Status::NoData {
            report.window_covered = Some(values[*coverage].is_some_and(|n| n > 0.0));
        }
        slos.push(report);
    }
    // Whole seconds without a fraction, else milliseconds (truncated).
    let end_text = match jiff::Timestamp::try_from(end) {
        Ok(end) if end_unix.fract() == 0.0 => format!("{end:.0}"),
        Ok(end) => format!("{end:.3}"),
        Err(_) => format!("{end_unix}"),
    };
    Ok(Report {
        schema_version: 1,
        prometheus: client.url().to_string(),
        end: end_text,
        end_unix,
        window: render::short_duration(window_seconds as f64),
        window_seconds,
        selector: (!selector.0.is_empty()).then(|| selector.to_string()),
        dns_latency_threshold_seconds: latency_threshold,
        budget_exhausted: slos.iter().any(|s| s.status == Status::Exhausted),
        slos,
    })
}

fn read_secret(path: &std::path::Path, what: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the {what} file {}: {e}", path.display()))?;
    let secret = text.trim().to_string();
    if secret.is_empty() {
        return Err(format!("the {what} file {} is empty", path.display()));
    }
    Ok(secret)
}

/// The `slo-report` command; returns its exit code (see [`crate::exit`]): 0 every budget left,
/// 1 some budget exhausted, 2 usage error, 3 could not run.
pub fn main(args: ReportArgs) -> ExitCode {
    let auth = match (
        &args.bearer_token_file,
        &args.basic_auth_user,
        &args.basic_auth_password_file,
    ) {
        (Some(file), _, _) => read_secret(file, "bearer token").map(Auth::Bearer),
        (None, Some(user), Some(file)) => {
            read_secret(file, "basic-auth password").map(|password| Auth::Basic {
                user: user.clone(),
                password,
            })
        }
        _ => Ok(Auth::None),
    };
    let client = auth
        .and_then(|auth| Client::new(&args.prometheus, auth, args.ca_file.as_deref()))
        .map(|client| client.with_query_timeout(args.timeout));
    let client = match client {
        Ok(client) => client,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::CANNOT_RUN);
        }
    };
    let (window, end) = match args.month {
        Some((start, end)) => (end.duration_since(start).unwrap_or_default(), end),
        None => (args.window, args.end.unwrap_or_else(SystemTime::now)),
    };
    let selector = args.selector.clone().unwrap_or_default();
    let report = runtime.block_on(async {
        tokio::time::timeout(
            args.timeout,
            collect(
                &client,
                &args.objectives,
                &selector,
                args.dns_latency_threshold,
                window,
                end,
            ),
        )
        .await
    });
    let report = match report {
        Ok(Ok(report)) => report,
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(exit::CANNOT_RUN);
        }
        Err(_) => {
            eprintln!(
                "error: Prometheus at {} did not answer within --timeout {}",
                args.prometheus,
                humantime::format_duration(args.timeout)
            );
            return ExitCode::from(exit::CANNOT_RUN);
        }
    };
    let text = match args.format {
        Format::Text => render::text(&report),
        Format::Markdown => render::markdown(&report),
        Format::Json => render::json(&report),
    };
    print!("{text}");
    if report.slos.iter().all(|s| s.status == Status::NoData) {
        // Still exit 0 (no data is not a spent budget), but a report of nothing is more often
        // a wrong --selector, --end or Prometheus than a cluster without kube-netprobe.
        eprintln!(
            "warning: no SLO has data in the {} ending {}; check --prometheus, --selector and --end",
            report.window, report.end
        );
    }
    if report.budget_exhausted {
        ExitCode::from(exit::FINDINGS)
    } else {
        ExitCode::from(exit::OK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_selectors() {
        assert_eq!(parse_selector("{}").unwrap(), Selector(vec![]));
        assert_eq!(
            parse_selector(r#" { cluster = "prod" , job=~'kube-.*', ns!~`a\d` } "#).unwrap(),
            Selector(vec![
                r#"cluster="prod""#.into(),
                "job=~'kube-.*'".into(),
                r"ns!~`a\d`".into()
            ])
        );
        assert_eq!(
            parse_selector(r#"a="x\"}, b" "#).unwrap(),
            Selector(vec![r#"a="x\"}, b""#.into()])
        );
        for (bad, says) in [
            (r#"{cluster="prod""#, "closing"),
            (r#"{cluster=prod}"#, "quoted"),
            (r#"{cluster=="x"}"#, "quoted"),
            (r#"{cluster:"x"}"#, "expected =, !=, =~ or !~"),
            (r#"{1a="x"}"#, "label name"),
            (r#"{a="x" b="y"}"#, "expected `,`"),
            (r#"{a="x}"#, "unterminated"),
            (r#"{__name__="x"}"#, "__name__"),
        ] {
            let err = parse_selector(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn parses_objectives() {
        assert_eq!(
            parse_objective("pod-network=0.99").unwrap(),
            ("pod-network", 0.99)
        );
        let err = parse_objective("dns-availability=1.5").unwrap_err();
        assert!(
            err.contains("1.5") && err.contains("dns-availability"),
            "{err}"
        );
        let err = parse_objective("dns=0.9").unwrap_err();
        assert!(
            err.contains("unknown SLO `dns`") && err.contains("dns-latency"),
            "{err}"
        );
        for bad in [
            "dns-latency=1",
            "dns-latency=0",
            "dns-latency=99.9%",
            "dns-latency",
        ] {
            assert!(parse_objective(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_end_times() {
        let t = |s: &str| {
            parse_end(s)
                .unwrap()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs_f64()
        };
        assert_eq!(t("1769817600"), 1769817600.0);
        assert_eq!(t("1769817600.5"), 1769817600.5);
        assert_eq!(t("2026-01-31T00:00:00Z"), 1769817600.0);
        assert_eq!(t("2026-01-31T01:30:00+01:30"), 1769817600.0);
        assert_eq!(t("2026-01-30T22:00:00-02:00"), 1769817600.0);
        assert_eq!(t("2026-01-31T00:00:00.250Z"), 1769817600.25);
        for bad in [
            "yesterday",
            "2026-01-31",
            "2026-01-31T00:00:00+1:00",
            "",
            "1.2.3",
            "99999999999999999999999999",
        ] {
            assert!(parse_end(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn latency_thresholds_are_histogram_bounds() {
        assert_eq!(parse_latency_threshold("0.25"), Ok(0.25));
        assert_eq!(parse_latency_threshold("1"), Ok(1.0));
        let err = parse_latency_threshold("0.2").unwrap_err();
        assert!(err.contains("0.1, 0.25"), "{err}");
        assert!(parse_latency_threshold("100ms").is_err());
    }

    #[test]
    fn parses_months() {
        let days = |text: &str| {
            let (start, end) = parse_month(text).unwrap();
            (
                start.duration_since(UNIX_EPOCH).unwrap().as_secs(),
                end.duration_since(start).unwrap().as_secs() / 86400,
            )
        };
        assert_eq!(days("2026-01"), (1_767_225_600, 31));
        assert_eq!(days("2026-02").1, 28);
        assert_eq!(days("2028-02").1, 29);
        assert_eq!(days("2026-12"), (1_796_083_200, 31));
        for bad in ["2026", "2026-13", "2026-00", "26-01x", "January"] {
            assert!(parse_month(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_windows() {
        assert_eq!(parse_window("30d").unwrap(), Duration::from_secs(2592000));
        assert_eq!(parse_window("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_window("0s").is_err());
        assert!(parse_window("90s500ms").is_err());
        assert!(parse_window("thirty days").is_err());
    }
}
