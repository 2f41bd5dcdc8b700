//! The safety rails: which of the repairs the findings point at may be taken now. Pure functions
//! over the findings, what the pass knows about its own evidence, and the history of earlier
//! actions, so every rail is unit-tested without a cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::diagnose::analyse::{Candidate, Finding, RepairAction};

/// How long an action reported as not helping is not taken again on the same subject.
pub const NOT_HELPING_HOLD: Duration = Duration::from_secs(24 * 3600);

crate::observation::label_values! {
    /// Why repair did not take an action the evidence points at (the `reason` label).
    pub enum Reason {
        /// A read of the pass failed, or a node's kube-netprobe pod could not be read.
        partial_evidence,
        /// More than `--max-failing-fraction` of the set fails: the fault is elsewhere.
        too_many_failing,
        /// The API server failed or timed out during the pass.
        api_unreliable,
        /// The same subject was acted on within `--target-window`.
        target_window,
        /// `--max-actions` were taken within `--global-window`.
        global_limit,
        /// The same action on the same subject did not help before.
        not_helping,
        /// The object to act on does not exist (no kube-proxy pod on the node, the pod gone).
        no_target,
    }
}

/// The rails' settings (`repair`'s flags).
#[derive(Debug, Clone)]
pub struct Rails {
    pub actions: BTreeSet<RepairAction>,
    pub target_window: Duration,
    pub global_window: Duration,
    pub max_actions: u32,
    pub max_failing_fraction: f64,
    pub verify_after: Duration,
    pub stuck_limit: Duration,
    /// How long a candidate must have been seen, pass after pass, before it is decided: a
    /// finding from one moment (a lookup through the Service that landed on a replica just
    /// starting to fail, before the probe straight to that replica ran) is not acted on.
    pub evidence_for: Duration,
}

impl Default for Rails {
    fn default() -> Self {
        Rails {
            actions: RepairAction::ALL.iter().copied().collect(),
            target_window: Duration::from_secs(3600),
            global_window: Duration::from_secs(600),
            max_actions: 1,
            max_failing_fraction: 0.5,
            verify_after: Duration::from_secs(300),
            stuck_limit: Duration::from_secs(600),
            evidence_for: Duration::from_secs(120),
        }
    }
}

/// What a pass knows about how far its own evidence can be trusted.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    /// Reads that failed on the API server's side (timeouts, 5xx, unreachable).
    pub api_errors: Vec<String>,
    /// Everything else missing: a forbidden read, a kube-netprobe pod whose /metrics could not
    /// be read, a Ready node without a kube-netprobe pod.
    pub gaps: Vec<String>,
}

/// The object an Event is about (always a pod: the one acted on, or the kube-netprobe pod that
/// saw the failure when there is nothing to act on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
}

impl std::fmt::Display for PodRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What was done, or decided, earlier: the memory the rails judge by.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub action: RepairAction,
    pub subject: String,
    /// Unix seconds.
    pub at: i64,
    pub kind: EntryKind,
    /// The pod it was about (where its verification is recorded).
    pub object: Option<PodRef>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EntryKind {
    /// Taken (or, in dry-run, printed as taken): counts against the windows either way, so a
    /// dry run shows what `--apply` would do over time.
    Acted {
        dry_run: bool,
        verified: bool,
    },
    /// Attempted and refused by the API (a PodDisruptionBudget, an error): counts against the
    /// subject's window, so it is not retried every pass.
    Failed,
    Refused(Reason),
    Resolved,
    NotHelping,
}

#[derive(Debug, Clone, Default)]
pub struct History {
    pub entries: Vec<Entry>,
}

/// What the rails say about one candidate.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Act,
    Refuse { reason: Reason, why: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub finding: &'static str,
    pub title: String,
    pub candidate: Candidate,
    pub verdict: Verdict,
}

fn within(at: i64, now: i64, window: Duration) -> bool {
    now.saturating_sub(at) < window.as_secs() as i64
}

fn set_word(action: RepairAction) -> &'static str {
    match action {
        RepairAction::evict_coredns => "CoreDNS replicas",
        RepairAction::restart_kube_proxy | RepairAction::delete_stuck_netprobe => "nodes",
    }
}

impl History {
    /// Actions taken or printed as taken (what the global limit counts).
    fn acted(&self) -> impl Iterator<Item = &Entry> {
        self.entries
            .iter()
            .filter(|e| matches!(e.kind, EntryKind::Acted { .. }))
    }

    /// Attempts on a subject (what the target window counts): failed ones too.
    fn attempted(&self) -> impl Iterator<Item = &Entry> {
        self.entries
            .iter()
            .filter(|e| matches!(e.kind, EntryKind::Acted { .. } | EntryKind::Failed))
    }

    /// Whether the same refusal was recorded within `window` (refusals are recorded once per
    /// window, not once per pass).
    pub fn refused_recently(
        &self,
        action: RepairAction,
        subject: &str,
        reason: Reason,
        now: i64,
        window: Duration,
    ) -> bool {
        self.entries.iter().any(|e| {
            e.action == action
                && e.subject == subject
                && e.kind == EntryKind::Refused(reason)
                && within(e.at, now, window)
        })
    }

    /// Actions taken for real at least `after` ago and not yet verified.
    pub fn due(&self, now: i64, after: Duration) -> Vec<usize> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| {
                e.kind
                    == EntryKind::Acted {
                        dry_run: false,
                        verified: false,
                    }
                    && !within(e.at, now, after)
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// Marks action `i` verified and records the outcome.
    pub fn verified(&mut self, i: usize, helped: bool, now: i64) {
        let e = &mut self.entries[i];
        e.kind = EntryKind::Acted {
            dry_run: false,
            verified: true,
        };
        let (action, subject, object) = (e.action, e.subject.clone(), e.object.clone());
        self.entries.push(Entry {
            action,
            subject,
            object,
            at: now,
            kind: if helped {
                EntryKind::Resolved
            } else {
                EntryKind::NotHelping
            },
        });
    }

    /// Forgets what no rail looks at any more.
    pub fn prune(&mut self, now: i64, rails: &Rails) {
        let keep = rails
            .target_window
            .max(rails.global_window)
            .max(NOT_HELPING_HOLD)
            .max(rails.verify_after * 2);
        self.entries.retain(|e| {
            within(e.at, now, keep)
                || e.kind
                    == EntryKind::Acted {
                        dry_run: false,
                        verified: false,
                    }
        });
    }
}

/// The candidates of `findings`, each once (a node can be named by two findings).
pub fn candidates(findings: &[Finding]) -> Vec<(&Finding, &Candidate)> {
    let mut seen = BTreeSet::new();
    findings
        .iter()
        .flat_map(|f| f.repairs.iter().map(move |c| (f, c)))
        .filter(|(_, c)| seen.insert((c.action, c.subject.clone(), c.pod.clone(), c.node.clone())))
        .collect()
}

/// What identifies a candidate from pass to pass.
pub fn key(c: &Candidate) -> String {
    format!(
        "{}|{}|{}|{}",
        c.action,
        c.subject,
        c.pod.as_deref().unwrap_or(""),
        c.node
    )
}

/// When each candidate of `findings` was first seen in an unbroken run of passes: `seen` kept
/// for the ones still there, `now` for new ones, the others forgotten.
pub fn track(seen: &mut BTreeMap<String, i64>, findings: &[Finding], now: i64) {
    let present: BTreeSet<String> = candidates(findings).iter().map(|(_, c)| key(c)).collect();
    seen.retain(|k, _| present.contains(k));
    for k in present {
        seen.entry(k).or_insert(now);
    }
}

/// The rails applied to every candidate of `findings`, in order; an action allowed here counts
/// against the global limit of the ones after it. A candidate seen (in `seen`, from [`track`])
/// for less than `evidence_for` is not decided yet; `None` judges this one pass alone (`--once`).
pub fn decide(
    findings: &[Finding],
    evidence: &Evidence,
    history: &History,
    rails: &Rails,
    seen: Option<&BTreeMap<String, i64>>,
    now: i64,
) -> Vec<Decision> {
    let mut taken_now = 0u32;
    let mut subjects_now: BTreeSet<(RepairAction, String)> = BTreeSet::new();
    let mut out = Vec::new();
    for (finding, c) in candidates(findings) {
        if !rails.actions.contains(&c.action) {
            continue;
        }
        // Not held long enough yet: nothing to decide, nothing to record.
        if let Some(seen) = seen {
            let since = seen.get(&key(c)).copied().unwrap_or(now);
            if now.saturating_sub(since) < rails.evidence_for.as_secs() as i64 {
                continue;
            }
        }
        // Not stuck long enough yet: nothing to decide, nothing to record.
        if c.action == RepairAction::delete_stuck_netprobe
            && c.for_seconds.unwrap_or(0.0) < rails.stuck_limit.as_secs_f64()
        {
            continue;
        }
        let refuse = |reason: Reason, why: String| Verdict::Refuse { reason, why };
        let verdict = if !evidence.api_errors.is_empty() {
            refuse(
                Reason::api_unreliable,
                format!(
                    "the API server failed during this pass ({}): acting on what it said is not safe",
                    evidence.api_errors.join("; ")
                ),
            )
        } else if !evidence.gaps.is_empty() {
            refuse(
                Reason::partial_evidence,
                format!(
                    "the evidence is partial ({}): what is missing might show the fault elsewhere",
                    evidence.gaps.join("; ")
                ),
            )
        } else if c.of == 0 || c.failing as f64 > rails.max_failing_fraction * c.of as f64 {
            refuse(
                Reason::too_many_failing,
                format!(
                    "{} of {} {} fail, more than {:.0} %: the fault is elsewhere (the network, \
                     the configuration, an upstream, or the prober itself), and acting on one of \
                     them would not help",
                    c.failing,
                    c.of,
                    set_word(c.action),
                    rails.max_failing_fraction * 100.0
                ),
            )
        } else if let Some(e) = history.entries.iter().find(|e| {
            e.action == c.action
                && e.subject == c.subject
                && e.kind == EntryKind::NotHelping
                && within(e.at, now, NOT_HELPING_HOLD)
        }) {
            refuse(
                Reason::not_helping,
                format!(
                    "{} on {} did not help {} s ago: not repeated for {} h",
                    c.action,
                    c.subject,
                    now - e.at,
                    NOT_HELPING_HOLD.as_secs() / 3600
                ),
            )
        } else if let Some(e) = history.attempted().find(|e| {
            e.action == c.action && e.subject == c.subject && within(e.at, now, rails.target_window)
        }) {
            refuse(
                Reason::target_window,
                format!(
                    "{} on {} was already taken {} s ago (at most one per {})",
                    c.action,
                    c.subject,
                    now - e.at,
                    humantime::format_duration(rails.target_window)
                ),
            )
        } else if subjects_now.contains(&(c.action, c.subject.clone())) {
            refuse(
                Reason::target_window,
                format!(
                    "{} on {} is already taken in this pass",
                    c.action, c.subject
                ),
            )
        } else if history
            .acted()
            .filter(|e| within(e.at, now, rails.global_window))
            .count() as u32
            + taken_now
            >= rails.max_actions
        {
            refuse(
                Reason::global_limit,
                format!(
                    "{} action(s) already taken within {} (the limit)",
                    rails.max_actions,
                    humantime::format_duration(rails.global_window)
                ),
            )
        } else {
            taken_now += 1;
            subjects_now.insert((c.action, c.subject.clone()));
            Verdict::Act
        };
        out.push(Decision {
            finding: finding.id,
            title: finding.title.clone(),
            candidate: c.clone(),
            verdict,
        });
    }
    out
}

/// Whether the finding an action was taken for is still raised: any candidate of the same
/// action on the same subject.
pub fn still_failing(findings: &[Finding], action: RepairAction, subject: &str) -> bool {
    candidates(findings)
        .iter()
        .any(|(_, c)| c.action == action && c.subject == subject)
}

#[cfg(test)]
mod tests;
