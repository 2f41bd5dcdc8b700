//! `repair`'s own `/metrics`: what it did, refused and verified.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::rails::Reason;
use crate::diagnose::analyse::RepairAction;
use crate::metrics::FamilyDoc;
use crate::metrics::repair::{ACTIONS, APPLY, PASSES, REFUSALS};

crate::observation::label_values! {
    /// The `result` of a repair.
    pub enum ActionResult {
        dry_run,
        done,
        failed,
        blocked,
        refused,
        resolved,
        not_helping,
    }
}

crate::observation::label_values! {
    /// The `result` of a pass.
    pub enum PassResult {
        ok,
        failed,
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: RepairAction,
    result: ActionResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    action: RepairAction,
    reason: Reason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PassLabels {
    result: PassResult,
}

#[derive(Debug)]
pub struct RepairMetrics {
    registry: Registry,
    actions: Family<ActionLabels, Counter>,
    refusals: Family<RefusalLabels, Counter>,
    passes: Family<PassLabels, Counter>,
}

fn stem(doc: &FamilyDoc) -> &'static str {
    doc.name.strip_suffix("_total").unwrap_or(doc.name)
}

impl RepairMetrics {
    /// Every series exists from the start at 0 (for the enabled actions), so that `increase()`
    /// sees the first action.
    pub fn new(apply: bool, actions: &[RepairAction]) -> Self {
        let mut registry = Registry::default();
        let this_actions = Family::<ActionLabels, Counter>::default();
        let refusals = Family::<RefusalLabels, Counter>::default();
        let passes = Family::<PassLabels, Counter>::default();
        let apply_gauge = Gauge::<i64>::default();
        apply_gauge.set(i64::from(apply));
        for &action in actions {
            for &result in ActionResult::ALL {
                let _ = this_actions.get_or_create(&ActionLabels { action, result });
            }
            for &reason in Reason::ALL {
                let _ = refusals.get_or_create(&RefusalLabels { action, reason });
            }
        }
        for &result in PassResult::ALL {
            let _ = passes.get_or_create(&PassLabels { result });
        }
        registry.register(stem(&ACTIONS), ACTIONS.help, this_actions.clone());
        registry.register(stem(&REFUSALS), REFUSALS.help, refusals.clone());
        registry.register(stem(&PASSES), PASSES.help, passes.clone());
        registry.register(stem(&APPLY), APPLY.help, apply_gauge);
        crate::metrics::register_build_info(&mut registry);
        RepairMetrics {
            registry,
            actions: this_actions,
            refusals,
            passes,
        }
    }

    pub fn action(&self, action: RepairAction, result: ActionResult) {
        self.actions
            .get_or_create(&ActionLabels { action, result })
            .inc();
    }

    pub fn refusal(&self, action: RepairAction, reason: Reason) {
        self.action(action, ActionResult::refused);
        self.refusals
            .get_or_create(&RefusalLabels { action, reason })
            .inc();
    }

    pub fn pass(&self, result: PassResult) {
        self.passes.get_or_create(&PassLabels { result }).inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every documented family is in the encode, with its type; every series of an enabled
    /// action exists at 0 before anything happens, so `increase()` sees the first one.
    #[test]
    fn every_documented_family_is_exposed_and_counts() {
        let m = RepairMetrics::new(false, &[RepairAction::evict_coredns]);
        let text = m.encode();
        for doc in crate::metrics::repair::FAMILIES {
            let stem = stem(doc);
            assert!(
                text.contains(&format!("# TYPE {stem} {}", doc.kind)),
                "{} missing:\n{text}",
                doc.name
            );
        }
        assert!(
            text.contains(
                "netprobe_repair_actions_total{action=\"evict_coredns\",result=\"dry_run\"} 0"
            ),
            "{text}"
        );
        assert!(!text.contains("restart_kube_proxy"), "{text}");
        assert!(text.contains("netprobe_repair_apply 0"), "{text}");
        m.refusal(RepairAction::evict_coredns, Reason::too_many_failing);
        m.action(RepairAction::evict_coredns, ActionResult::done);
        let text = m.encode();
        for line in [
            "netprobe_repair_actions_total{action=\"evict_coredns\",result=\"refused\"} 1",
            "netprobe_repair_refusals_total{action=\"evict_coredns\",reason=\"too_many_failing\"} 1",
            "netprobe_repair_actions_total{action=\"evict_coredns\",result=\"done\"} 1",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }
}
