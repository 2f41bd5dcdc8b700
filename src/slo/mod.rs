//! `kube-netprobe slo-report`: attainment, error budget and burn rate of the four SLOs of
//! docs/slo.md, read from the raw counters through the Prometheus HTTP API.
//!
//! The SLO table ([`SLOS`]) and the arithmetic ([`Sli`]) are the contract of docs/slo.md in code;
//! `prometheus` does the one HTTP call it needs; `render` writes text, markdown and JSON.

pub mod prometheus;
pub mod render;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use futures_util::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::exit;
use prometheus::{Auth, Client};

/// One series selector: a metric name and the matchers docs/slo.md puts on it.
#[derive(Debug, Clone, Copy)]
pub struct Series {
    pub metric: &'static str,
    pub matchers: &'static str,
}

/// How an SLO counts its bad events.
#[derive(Debug, Clone, Copy)]
pub enum BadEvents {
    /// The events of this series are bad.
    Matching(Series),
    /// Every event is bad except those of this series (the good ones).
    AllBut(Series),
}

/// One SLO of docs/slo.md.
#[derive(Debug, Clone, Copy)]
pub struct SloDef {
    /// The `slo` label value and the name on the command line.
    pub name: &'static str,
    pub all: Series,
    pub bad: BadEvents,
    pub objective: f64,
}

/// The SLOs, in the order docs/slo.md lists them and reports print them.
pub const SLOS: &[SloDef] = &[
    SloDef {
        name: "dns-availability",
        all: Series {
            metric: "netprobe_dns_lookups_total",
            matchers: "",
        },
        bad: BadEvents::Matching(Series {
            metric: "netprobe_dns_lookups_total",
            matchers: r#"rcode=~"SERVFAIL|REFUSED|TIMEOUT|NETWORK_ERROR""#,
        }),
        objective: 0.999,
    },
    SloDef {
        name: "dns-latency",
        all: Series {
            metric: "netprobe_dns_lookups_total",
            matchers: "",
        },
        bad: BadEvents::AllBut(Series {
            metric: "netprobe_dns_lookup_duration_seconds_bucket",
            matchers: r#"le="0.1""#,
        }),
        objective: 0.99,
    },
    SloDef {
        name: "pod-network",
        all: Series {
            metric: "netprobe_peer_requests_total",
            matchers: "",
        },
        bad: BadEvents::Matching(Series {
            metric: "netprobe_peer_requests_total",
            matchers: r#"result!="success""#,
        }),
        objective: 0.999,
    },
    SloDef {
        name: "storage-availability",
        all: Series {
            metric: "netprobe_storage_probes_total",
            matchers: r#"result!="insufficient_space""#,
        },
        bad: BadEvents::Matching(Series {
            metric: "netprobe_storage_probes_total",
            matchers: r#"result!~"success|insufficient_space""#,
        }),
        objective: 0.99,
    },
];

/// The windows the current burn rate is reported over.
pub const BURN_WINDOWS: [(&str, u64); 2] = [("1h", 3600), ("6h", 6 * 3600)];

fn slo_names() -> String {
    SLOS.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
}

impl Series {
    /// The PromQL selector, with the user's extra matchers appended.
    pub fn selector(&self, extra: &Selector) -> String {
        self.selector_with(self.matchers, extra)
    }

    /// As [`Series::selector`], with `own` in place of the table's matchers.
    pub fn selector_with(&self, own: &str, extra: &Selector) -> String {
        let matchers: Vec<&str> = std::iter::once(own)
            .chain(extra.0.iter().map(String::as_str))
            .filter(|m| !m.is_empty())
            .collect();
        format!("{}{{{}}}", self.metric, matchers.join(","))
    }
}

/// `sum(increase(<selector>[<seconds>s]))`: events in the window, summed over every series.
pub fn increase(selector: &str, seconds: u64) -> String {
    format!("sum(increase({selector}[{seconds}s]))")
}

/// The default `--dns-latency-threshold`: docs/slo.md's `le="0.1"`.
pub const DNS_LATENCY_THRESHOLD: f64 = 0.1;

/// The `le` matcher of the DNS latency threshold. Whole seconds are matched both as `1` and as
/// `1.0`: the exporter writes `1.0`, and Prometheus 3 rewrites bucket bounds to `1`.
pub fn le_matcher(threshold: f64) -> String {
    if threshold.fract() == 0.0 {
        format!(r#"le=~"{threshold}|{threshold}\\.0""#)
    } else {
        format!(r#"le="{threshold}""#)
    }
}

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

/// Events counted over one window: all of them and the bad ones.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sli {
    pub all: f64,
    pub bad: f64,
}

impl Sli {
    /// Builds the SLI from the two query results. `None` (no data) when no series matched or
    /// nothing was counted: an SLO that measured nothing has no attainment, not 100 %.
    /// `second` is the bad events ([`BadEvents::Matching`]) or the good ones
    /// ([`BadEvents::AllBut`]).
    ///
    /// No bad series at all counts 0 bad: they appear only when something fails. No good
    /// series at all (the latency histogram) is no data, not "every lookup slow": the histogram
    /// exists as soon as one lookup got an answer, so its absence next to counted lookups means
    /// Prometheus does not keep it (a relabeling rule that drops `_bucket` series, say), and
    /// reporting 0 % attainment from that would be a wrong number.
    ///
    /// Bad events are clamped to `0..=all`: `increase()` extrapolates each series on its own,
    /// so "all minus good" can come out a hair below zero.
    pub fn from_query(bad: BadEvents, all: Option<f64>, second: Option<f64>) -> Option<Self> {
        let all = all.filter(|a| a.is_finite() && *a > 0.0)?;
        let second = match bad {
            BadEvents::Matching(_) => second.unwrap_or(0.0),
            BadEvents::AllBut(_) => second?,
        };
        if !second.is_finite() {
            return None;
        }
        let bad = match bad {
            BadEvents::Matching(_) => second,
            BadEvents::AllBut(_) => all - second,
        };
        Some(Self {
            all,
            bad: bad.clamp(0.0, all),
        })
    }

    /// `bad / all`.
    pub fn error_ratio(&self) -> f64 {
        self.bad / self.all
    }

    /// `1 - bad / all`.
    pub fn attainment(&self) -> f64 {
        1.0 - self.error_ratio()
    }

    /// `(bad / all) / (1 - objective)`.
    pub fn burn_rate(&self, objective: f64) -> f64 {
        self.error_ratio() / (1.0 - objective)
    }

    /// `1 - (bad / all) / (1 - objective)`; negative when overspent.
    pub fn budget_remaining(&self, objective: f64) -> f64 {
        1.0 - self.burn_rate(objective)
    }
}

/// Extra label matchers (`--selector`), each kept as written: `cluster="prod"`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selector(pub Vec<String>);

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{{{}}}", self.0.join(","))
    }
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
    // humantime reads UTC (`Z`) only; a numeric offset is applied here.
    let (base, offset_secs) = match text
        .len()
        .checked_sub(6)
        .filter(|&i| text.is_char_boundary(i))
        .map(|i| text.split_at(i))
    {
        Some((base, offset))
            if base.contains('T')
                && (offset.starts_with('+') || offset.starts_with('-'))
                && offset.as_bytes()[3] == b':' =>
        {
            let hours: i64 = offset[1..3].parse().map_err(|_| bad("offset".into()))?;
            let minutes: i64 = offset[4..].parse().map_err(|_| bad("offset".into()))?;
            let sign = if offset.starts_with('-') { -1 } else { 1 };
            (format!("{base}Z"), sign * (hours * 3600 + minutes * 60))
        }
        _ => (text.to_string(), 0),
    };
    let utc = humantime::parse_rfc3339(&base).map_err(|e| bad(e.to_string()))?;
    // 12:00+01:00 is 11:00Z.
    let shifted = if offset_secs >= 0 {
        utc.checked_sub(Duration::from_secs(offset_secs.unsigned_abs()))
    } else {
        utc.checked_add(Duration::from_secs(offset_secs.unsigned_abs()))
    };
    shifted.ok_or_else(|| bad("out of range".into()))
}

/// Parses `--month YYYY-MM`: the month's start and the next month's start, both 00:00 UTC.
pub fn parse_month(text: &str) -> Result<(SystemTime, SystemTime), String> {
    let bad = || format!("`{text}` is not a month like 2026-01");
    let (year, month) = text.trim().split_once('-').ok_or_else(bad)?;
    let year: u32 = year.parse().map_err(|_| bad())?;
    let month: u32 = month.parse().map_err(|_| bad())?;
    if !(1970..=9998).contains(&year) || !(1..=12).contains(&month) {
        return Err(bad());
    }
    let (next_year, next_month) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    let first = |y: u32, m: u32| {
        humantime::parse_rfc3339(&format!("{y:04}-{m:02}-01T00:00:00Z")).map_err(|_| bad())
    };
    Ok((first(year, month)?, first(next_year, next_month)?))
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

/// The report of one SLO; its fields are the JSON schema (docs/slo.md, "slo-report").
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SloReport {
    pub slo: &'static str,
    pub objective: f64,
    pub status: Status,
    pub events: Option<f64>,
    pub bad_events: Option<f64>,
    pub attainment: Option<f64>,
    pub error_budget: f64,
    pub budget_remaining: Option<f64>,
    pub budget_remaining_seconds: Option<f64>,
    pub burn_rate_1h: Option<f64>,
    pub burn_rate_6h: Option<f64>,
    /// Whether Prometheus has a sample of the SLO's counters at the window's start; `false`:
    /// the figures cover only part of the window. `None` without data.
    pub window_covered: Option<bool>,
}

/// Whether an SLO has budget left.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Exhausted,
    NoData,
}

/// The whole report; its fields are the JSON schema (docs/slo.md, "slo-report").
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema_version: u32,
    pub prometheus: String,
    pub end: String,
    pub end_unix: f64,
    pub window: String,
    pub window_seconds: u64,
    pub selector: Option<String>,
    pub dns_latency_threshold_seconds: f64,
    pub budget_exhausted: bool,
    pub slos: Vec<SloReport>,
}

impl SloReport {
    /// The report of an SLO from its SLI over the window and over each burn-rate window.
    pub fn new(
        slo: &'static str,
        objective: f64,
        window_seconds: u64,
        window: Option<Sli>,
        burn: [Option<Sli>; 2],
    ) -> Self {
        // Rounded before the status is decided: a budget spent exactly (1 bad in 1000 against
        // 99.9 %) computes as 8.9e-16 left, and must read as exhausted.
        let remaining = window.map(|w| round(w.budget_remaining(objective), 12));
        let status = match remaining {
            None => Status::NoData,
            Some(r) if r <= 0.0 => Status::Exhausted,
            Some(_) => Status::Ok,
        };
        Self {
            slo,
            objective,
            status,
            events: window.map(|w| w.all),
            bad_events: window.map(|w| w.bad),
            attainment: window.map(|w| round(w.attainment(), 12)),
            error_budget: round(1.0 - objective, 12),
            budget_remaining: remaining,
            budget_remaining_seconds: remaining
                .map(|r| round(r * (1.0 - objective) * window_seconds as f64, 3)),
            burn_rate_1h: burn[0].map(|s| round(s.burn_rate(objective), 12)),
            burn_rate_6h: burn[1].map(|s| round(s.burn_rate(objective), 12)),
            window_covered: None,
        }
    }
}

/// `x` rounded to `decimals` decimal places. Derived figures are rounded to 12 places so that
/// floating point noise (`1 - 0.99` is 0.010000000000000009) does not reach the report; no SLO
/// figure means anything at that precision.
fn round(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    // `+ 0.0` turns -0.0 into 0.0, which prints without a sign.
    let rounded = (x * scale).round() / scale + 0.0;
    if rounded.is_finite() { rounded } else { x }
}

/// `30d`, `6h`, `1h30m`, `-1h4m48s`: a duration rounded to whole seconds, in its largest units.
pub fn short_duration(seconds: f64) -> String {
    // Beyond about 30 years days and hours say nothing more than the exponent does.
    if !seconds.is_finite() {
        return render::human(seconds, 0);
    }
    if seconds.abs() >= 1e9 {
        return format!("{}s", render::human(seconds, 0));
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

/// Queries in flight at once: enough to overlap the slow 30-day ones, well under Prometheus's
/// default `--query.max-concurrency` of 20.
const CONCURRENT_QUERIES: usize = 6;

/// The distinct queries a report needs, and which of them make each SLI.
#[derive(Debug)]
pub struct Plan {
    /// Each query once (dns-availability and dns-latency share their denominator), with how
    /// many seconds before `--end` it is evaluated: 0, or the window for the coverage checks.
    pub queries: Vec<(String, u64)>,
    /// Per SLO (in [`SLOS`] order), per window (the report window, 1h, 6h): the indices in
    /// `queries` of all events and of the bad (or, for [`BadEvents::AllBut`], good) events.
    pub slis: Vec<[(usize, usize); 3]>,
    /// Per SLO: the index of `count(<all events>)` at the window's start, which is empty when
    /// Prometheus has no sample there (retention shorter than the window, or kube-netprobe
    /// deployed since): the figures then cover only part of the window.
    pub coverage: Vec<usize>,
}

impl Plan {
    pub fn new(selector: &Selector, latency_threshold: f64, window_seconds: u64) -> Self {
        let le = le_matcher(latency_threshold);
        let mut queries: Vec<(String, u64)> = Vec::new();
        let mut index = |query: String, before_end: u64| {
            let query = (query, before_end);
            match queries.iter().position(|q| *q == query) {
                Some(i) => i,
                None => {
                    queries.push(query);
                    queries.len() - 1
                }
            }
        };
        let windows = [window_seconds, BURN_WINDOWS[0].1, BURN_WINDOWS[1].1];
        let slis = SLOS
            .iter()
            .map(|slo| {
                let second = match slo.bad {
                    BadEvents::Matching(bad) => bad.selector(selector),
                    // The one AllBut series is the latency histogram's bucket at the threshold.
                    BadEvents::AllBut(good) => good.selector_with(&le, selector),
                };
                windows.map(|seconds| {
                    (
                        index(increase(&slo.all.selector(selector), seconds), 0),
                        index(increase(&second, seconds), 0),
                    )
                })
            })
            .collect();
        let coverage = SLOS
            .iter()
            .map(|slo| {
                index(
                    format!("count({})", slo.all.selector(selector)),
                    window_seconds,
                )
            })
            .collect();
        Self {
            queries,
            slis,
            coverage,
        }
    }
}

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
    let end_text = if end_unix.fract() == 0.0 {
        humantime::format_rfc3339_seconds(end).to_string()
    } else {
        humantime::format_rfc3339_millis(end).to_string()
    };
    Ok(Report {
        schema_version: 1,
        prometheus: client.url().to_string(),
        end: end_text,
        end_unix,
        window: short_duration(window_seconds as f64),
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

    fn slo(name: &str) -> &'static SloDef {
        SLOS.iter().find(|s| s.name == name).unwrap()
    }

    #[test]
    fn arithmetic_follows_docs_slo_md() {
        // 90 bad of 180000 against 99.9 %: half the budget spent.
        let sli = Sli {
            all: 180000.0,
            bad: 90.0,
        };
        assert!((sli.attainment() - 0.9995).abs() < 1e-15);
        assert!((sli.burn_rate(0.999) - 0.5).abs() < 1e-12);
        assert!((sli.budget_remaining(0.999) - 0.5).abs() < 1e-12);
        // Overspent: 180 bad of 72000 against 99.9 % is 2.5 budgets.
        let over = Sli {
            all: 72000.0,
            bad: 180.0,
        };
        assert!((over.budget_remaining(0.999) + 1.5).abs() < 1e-12);
        assert!((over.budget_remaining(0.99) - 0.75).abs() < 1e-12);
    }

    #[test]
    fn no_events_is_no_data_not_100_percent() {
        let bad = slo("dns-availability").bad;
        assert_eq!(Sli::from_query(bad, None, None), None);
        assert_eq!(Sli::from_query(bad, Some(0.0), Some(0.0)), None);
        assert_eq!(Sli::from_query(bad, Some(f64::NAN), None), None);
        assert_eq!(Sli::from_query(bad, Some(10.0), Some(f64::NAN)), None);
        // Series exist but no bad one ever did: zero bad events.
        assert_eq!(
            Sli::from_query(bad, Some(10.0), None),
            Some(Sli {
                all: 10.0,
                bad: 0.0
            })
        );
    }

    #[test]
    fn latency_counts_all_but_the_fast_ones() {
        let bad = slo("dns-latency").bad;
        assert_eq!(
            Sli::from_query(bad, Some(100.0), Some(97.0)),
            Some(Sli {
                all: 100.0,
                bad: 3.0
            })
        );
        // No histogram at all: Prometheus does not keep it; no data, not "all slow".
        assert_eq!(Sli::from_query(bad, Some(100.0), None), None);
        // A histogram that counted nothing fast: every lookup slow.
        assert_eq!(
            Sli::from_query(bad, Some(100.0), Some(0.0)),
            Some(Sli {
                all: 100.0,
                bad: 100.0
            })
        );
        // Extrapolation put the fast ones a hair above all: no bad events, not negative ones.
        assert_eq!(
            Sli::from_query(bad, Some(100.0), Some(100.000001)),
            Some(Sli {
                all: 100.0,
                bad: 0.0
            })
        );
    }

    #[test]
    fn report_status_and_budget_time() {
        let window = 30 * 86400;
        let sli = Sli {
            all: 72000.0,
            bad: 180.0,
        };
        let r = SloReport::new("pod-network", 0.999, window, Some(sli), [None, None]);
        assert_eq!(r.status, Status::Exhausted);
        assert!((r.budget_remaining_seconds.unwrap() + 3888.0).abs() < 1e-6);
        assert_eq!(r.burn_rate_1h, None);
        let exactly_spent = Sli {
            all: 1000.0,
            bad: 1.0,
        };
        let r = SloReport::new("x", 0.999, window, Some(exactly_spent), [None, None]);
        // 1 - 0.001 / (1 - 0.999) computes as 8.9e-16: spent all the same.
        assert_eq!(
            (r.status, r.budget_remaining, r.budget_remaining_seconds),
            (Status::Exhausted, Some(0.0), Some(0.0))
        );
        let r = SloReport::new("x", 0.99, window, None, [None, None]);
        assert_eq!(
            (r.status, r.attainment, r.budget_remaining),
            (Status::NoData, None, None)
        );
    }

    #[test]
    fn builds_the_queries_of_docs_slo_md() {
        let none = Selector::default();
        let prod = parse_selector(r#"{cluster="prod"}"#).unwrap();
        let avail = slo("dns-availability");
        assert_eq!(
            increase(&avail.all.selector(&none), 2592000),
            "sum(increase(netprobe_dns_lookups_total{}[2592000s]))"
        );
        let BadEvents::Matching(bad) = avail.bad else {
            panic!()
        };
        assert_eq!(
            increase(&bad.selector(&prod), 3600),
            r#"sum(increase(netprobe_dns_lookups_total{rcode=~"SERVFAIL|REFUSED|TIMEOUT|NETWORK_ERROR",cluster="prod"}[3600s]))"#
        );
        let BadEvents::AllBut(fast) = slo("dns-latency").bad else {
            panic!()
        };
        assert_eq!(
            fast.selector(&prod),
            r#"netprobe_dns_lookup_duration_seconds_bucket{le="0.1",cluster="prod"}"#
        );
        assert_eq!(
            fast.selector_with(&le_matcher(0.25), &none),
            r#"netprobe_dns_lookup_duration_seconds_bucket{le="0.25"}"#
        );
        assert_eq!(le_matcher(DNS_LATENCY_THRESHOLD), fast.matchers);
        assert_eq!(le_matcher(1.0), r#"le=~"1|1\\.0""#);
        assert_eq!(
            slo("storage-availability").all.selector(&none),
            r#"netprobe_storage_probes_total{result!="insufficient_space"}"#
        );
    }

    #[test]
    fn plans_each_distinct_query_once() {
        let plan = Plan::new(&Selector::default(), DNS_LATENCY_THRESHOLD, 2592000);
        // 4 SLOs x 3 windows x 2 terms, less the 3 shared DNS denominators; and the coverage
        // check of the DNS, peer and storage counters.
        assert_eq!(plan.queries.len(), 21 + 3);
        assert_eq!(plan.slis[0][0].0, plan.slis[1][0].0);
        assert_eq!(
            plan.queries[plan.slis[1][2].1],
            (
                r#"sum(increase(netprobe_dns_lookup_duration_seconds_bucket{le="0.1"}[21600s]))"#
                    .to_string(),
                0
            )
        );
        assert_eq!(
            plan.queries[plan.slis[3][1].0].0,
            r#"sum(increase(netprobe_storage_probes_total{result!="insufficient_space"}[3600s]))"#
        );
        assert_eq!(plan.coverage[0], plan.coverage[1]);
        assert_eq!(
            plan.queries[plan.coverage[2]],
            ("count(netprobe_peer_requests_total{})".to_string(), 2592000)
        );
    }

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
