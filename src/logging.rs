//! Log setup: text or JSON lines on stderr, filtered like `RUST_LOG`; and the damping that gives
//! a target one line when its state changes rather than one per probe.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing_subscriber::EnvFilter;

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber. `filter` uses `RUST_LOG` syntax (`info`,
/// `kube_netprobe=debug,hickory_net=warn`).
pub fn init(format: LogFormat, filter: &str) -> Result<(), String> {
    let filter = EnvFilter::try_new(filter).map_err(|e| format!("--log-level `{filter}`: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| e.to_string())
}

/// Lines a target may log about its state in a burst.
pub const LOG_BURST: u32 = 3;
/// After a burst, a target earns one more line per this interval: a target flapping at its
/// threshold logs at most [`LOG_BURST`] lines at first and then 3 a minute, each carrying the
/// count of changes left out since the previous one.
pub const LOG_REFILL: Duration = Duration::from_secs(20);

/// Remembers whether a target is failing, so the log gets one line when that changes rather
/// than one line per probe, and damps the lines of a target that keeps changing.
#[derive(Debug)]
pub struct Health {
    state: Mutex<HealthState>,
}

#[derive(Debug)]
struct HealthState {
    failing: Option<bool>,
    /// Whether the last line logged said failing (`false` before any: healthy is assumed).
    logged_failing: bool,
    /// Changes since the last line that no line has told.
    untold: u64,
    /// Lines that may be logged now, at most [`LOG_BURST`].
    budget: u32,
    /// When `budget` last grew (or the target was created).
    refilled_at: Option<Instant>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            state: Mutex::new(HealthState {
                failing: None,
                logged_failing: false,
                untold: 0,
                budget: LOG_BURST,
                refilled_at: None,
            }),
        }
    }
}

/// What to log after the latest result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing: no change, or a change damped (it is counted for the next line).
    Unchanged,
    /// It fails now (it was fine, unknown, or it flapped since the last line said so).
    StartedFailing {
        /// Changes since the previous line that were not logged.
        suppressed: u64,
    },
    /// It works now, after failing (or after flapping since the last line said so).
    Recovered {
        /// Changes since the previous line that were not logged.
        suppressed: u64,
    },
}

impl Health {
    /// Records a result and says what, if anything, to log.
    pub fn update(&self, ok: bool) -> Transition {
        self.update_at(ok, Instant::now())
    }

    /// [`Health::update`] at a given time.
    pub fn update_at(&self, ok: bool, now: Instant) -> Transition {
        // A poisoned lock only means a panic elsewhere; the state is still whole.
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let refilled_at = *s.refilled_at.get_or_insert(now);
        let earned = now.saturating_duration_since(refilled_at).as_secs() / LOG_REFILL.as_secs();
        if earned > 0 {
            let earned = u32::try_from(earned).unwrap_or(u32::MAX);
            s.budget = s.budget.saturating_add(earned).min(LOG_BURST);
            s.refilled_at = Some(refilled_at + LOG_REFILL * earned);
        }
        // The first result counts as a change only when it fails: healthy is assumed.
        let was_failing = s.failing.unwrap_or(false);
        let failing = !ok;
        s.failing = Some(failing);
        if failing != was_failing {
            s.untold += 1;
        }
        if s.untold == 0 || s.budget == 0 {
            return Transition::Unchanged;
        }
        s.budget -= 1;
        // A line that changes what the log says tells one change itself; one that repeats it
        // (the target flapped back) tells none.
        let suppressed = if failing != s.logged_failing {
            s.untold - 1
        } else {
            s.untold
        };
        s.untold = 0;
        s.logged_failing = failing;
        if failing {
            Transition::StartedFailing { suppressed }
        } else {
            Transition::Recovered { suppressed }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changes_are_news() {
        let h = Health::default();
        assert_eq!(h.update(true), Transition::Unchanged);
        assert_eq!(
            h.update(false),
            Transition::StartedFailing { suppressed: 0 }
        );
        assert_eq!(h.update(false), Transition::Unchanged);
        assert_eq!(h.update(true), Transition::Recovered { suppressed: 0 });
        let fresh = Health::default();
        assert_eq!(
            fresh.update(false),
            Transition::StartedFailing { suppressed: 0 }
        );
    }

    #[test]
    fn a_flapping_target_logs_a_burst_then_one_line_per_refill_with_the_count() {
        let h = Health::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // A change every probe (every 500 ms) for two minutes: 240 changes.
        let mut lines = Vec::new();
        for i in 0..240u64 {
            let ok = i % 2 == 1;
            match h.update_at(ok, at(i * 500)) {
                Transition::Unchanged => {}
                line => lines.push((i * 500, line)),
            }
        }
        // The burst, then one line per refill: at 20 s, 40 s, ..., 100 s (and not 120 s yet).
        assert_eq!(lines.len(), LOG_BURST as usize + 5, "{lines:#?}");
        assert_eq!(lines[0], (0, Transition::StartedFailing { suppressed: 0 }));
        assert_eq!(lines[1], (500, Transition::Recovered { suppressed: 0 }));
        assert_eq!(
            lines[2],
            (1000, Transition::StartedFailing { suppressed: 0 })
        );
        // At 20 s (the 41st result, a failure) the log said failing already; 38 changes since.
        assert_eq!(
            lines[3],
            (20_000, Transition::StartedFailing { suppressed: 38 })
        );
        // Every change is told: by a line of its own or in a line's count.
        let told: u64 = lines
            .iter()
            .map(|(_, l)| match l {
                Transition::StartedFailing { suppressed }
                | Transition::Recovered { suppressed } => *suppressed,
                Transition::Unchanged => 0,
            })
            .sum::<u64>();
        // The burst's lines changed what the log said; the later ones, all at a failure, repeat it.
        let own_lines = 3;
        let last_line_ms = lines.last().map(|(ms, _)| *ms).unwrap_or_default();
        assert_eq!(told + own_lines, last_line_ms / 500 + 1);
    }

    #[test]
    fn a_target_that_settles_after_flapping_says_so_with_the_count() {
        let h = Health::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(matches!(
            h.update_at(false, at(0)),
            Transition::StartedFailing { .. }
        ));
        assert!(matches!(
            h.update_at(true, at(1)),
            Transition::Recovered { .. }
        ));
        assert!(matches!(
            h.update_at(false, at(2)),
            Transition::StartedFailing { .. }
        ));
        // Damped: recovers, fails, recovers, and stays up.
        for (s, ok) in [(3, true), (4, false), (5, true), (6, true), (19, true)] {
            assert_eq!(h.update_at(ok, at(s)), Transition::Unchanged, "at {s} s");
        }
        // The first probe after the refill tells where it ended up, and what was left out.
        assert_eq!(
            h.update_at(true, at(20)),
            Transition::Recovered { suppressed: 2 }
        );
        assert_eq!(h.update_at(true, at(21)), Transition::Unchanged);
    }

    #[test]
    fn a_flap_back_to_what_the_log_says_is_still_told() {
        let h = Health::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        for s in 0..3 {
            let _ = h.update_at(s % 2 == 1, at(s));
        }
        // The log says failing (3 lines); it recovers and fails again, both damped.
        assert_eq!(h.update_at(true, at(3)), Transition::Unchanged);
        assert_eq!(h.update_at(false, at(4)), Transition::Unchanged);
        assert_eq!(
            h.update_at(false, at(20)),
            Transition::StartedFailing { suppressed: 2 }
        );
    }
}
