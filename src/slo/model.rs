//! The SLOs of docs/slo.md in code: the table ([`SLOS`]), the queries that count their events
//! ([`Plan`]), the arithmetic on those counts ([`Sli`]) and the report they make ([`Report`]).
//! No I/O here: `prometheus` runs the queries and `render` writes the report.

use serde::Serialize;

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

pub(super) fn slo_names() -> String {
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

#[cfg(test)]
mod tests {
    use super::super::parse_selector;
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
}
