//! The families of `kube-netprobe repair`'s own /metrics (served by the repair controller, not
//! by the DaemonSet's pods): documented here with the others, registered by `crate::repair`.

use super::FamilyDoc;

pub const ACTIONS: FamilyDoc = FamilyDoc {
    name: "netprobe_repair_actions_total",
    kind: "counter",
    labels: &["action", "result"],
    help: "Repairs by result: dry_run (printed and recorded, not taken: repair runs without --apply), done (taken), failed (the API refused or failed the call), blocked (a PodDisruptionBudget refused the eviction), refused (a rail refused it; the reason is in netprobe_repair_refusals_total), resolved (verified --verify-after later: the finding is gone), not_helping (verified: the finding is still there; the action is not repeated on that subject for 24 h)",
};
pub const REFUSALS: FamilyDoc = FamilyDoc {
    name: "netprobe_repair_refusals_total",
    kind: "counter",
    labels: &["action", "reason"],
    help: "Repairs the evidence pointed at and a rail refused, counted every pass that refuses (the Event and log line come once per subject and reason per --target-window): partial_evidence, too_many_failing, api_unreliable, target_window, global_limit, not_helping, no_target",
};
pub const PASSES: FamilyDoc = FamilyDoc {
    name: "netprobe_repair_passes_total",
    kind: "counter",
    labels: &["result"],
    help: "Passes over the cluster: ok, or failed (the API server could not be reached: nothing was decided)",
};
pub const APPLY: FamilyDoc = FamilyDoc {
    name: "netprobe_repair_apply",
    kind: "gauge",
    labels: &[],
    help: "1 when repair takes actions (--apply), 0 in dry-run",
};

/// The repair controller's families, in the order of docs/metrics.md.
pub const FAMILIES: &[FamilyDoc] = &[ACTIONS, REFUSALS, PASSES, APPLY];
