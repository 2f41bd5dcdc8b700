use super::*;
use crate::diagnose::analyse::Severity;

const NOW: i64 = 1_800_000_000;

fn evict(pod: &str, failing: usize, of: usize) -> Candidate {
    Candidate {
        action: RepairAction::evict_coredns,
        namespace: "kube-system".into(),
        pod: Some(pod.into()),
        node: "node-a".into(),
        subject: "kube-system/k8s-app=kube-dns".into(),
        failing,
        of,
        for_seconds: None,
    }
}

fn kube_proxy(node: &str, failing: usize, of: usize) -> Candidate {
    Candidate {
        action: RepairAction::restart_kube_proxy,
        namespace: "kube-system".into(),
        pod: None,
        node: node.into(),
        subject: format!("node/{node}"),
        failing,
        of,
        for_seconds: None,
    }
}

fn finding(id: &'static str, repairs: Vec<Candidate>) -> Finding {
    Finding {
        id,
        severity: Severity::Warning,
        title: format!("{id} title"),
        evidence: Vec::new(),
        cause: String::new(),
        next_step: String::new(),
        nodes: Vec::new(),
        repairs,
    }
}

fn acted(c: &Candidate, ago: i64, dry_run: bool) -> Entry {
    Entry {
        action: c.action,
        subject: c.subject.clone(),
        at: NOW - ago,
        kind: EntryKind::Acted {
            dry_run,
            verified: dry_run,
        },
        object: None,
    }
}

fn reasons(d: &[Decision]) -> Vec<Option<Reason>> {
    d.iter()
        .map(|d| match &d.verdict {
            Verdict::Act => None,
            Verdict::Refuse { reason, .. } => Some(*reason),
        })
        .collect()
}

fn why(d: &Decision) -> &str {
    match &d.verdict {
        Verdict::Act => "",
        Verdict::Refuse { why, .. } => why,
    }
}

#[test]
fn one_failing_replica_of_two_is_evicted() {
    let f = [finding(
        "dns.replica-failing",
        vec![evict("coredns-b", 1, 2)],
    )];
    let d = decide(
        &f,
        &Evidence::default(),
        &History::default(),
        &Rails::default(),
        None,
        NOW,
    );
    assert_eq!(reasons(&d), [None]);
    assert_eq!(d[0].finding, "dns.replica-failing");
    assert_eq!(d[0].candidate.pod.as_deref(), Some("coredns-b"));
}

#[test]
fn every_replica_failing_is_refused_and_the_refusal_says_why() {
    let f = [finding(
        "dns.resolution-failing",
        vec![evict("coredns-a", 2, 2), evict("coredns-b", 2, 2)],
    )];
    let d = decide(
        &f,
        &Evidence::default(),
        &History::default(),
        &Rails::default(),
        None,
        NOW,
    );
    assert_eq!(
        reasons(&d),
        [
            Some(Reason::too_many_failing),
            Some(Reason::too_many_failing)
        ]
    );
    assert!(
        why(&d[0])
            .starts_with("2 of 2 CoreDNS replicas fail, more than 50 %: the fault is elsewhere"),
        "{}",
        why(&d[0])
    );
}

#[test]
fn the_fraction_is_a_setting_and_an_empty_set_is_refused() {
    let f = [finding("x.y", vec![kube_proxy("n1", 1, 3)])];
    let strict = Rails {
        max_failing_fraction: 0.2,
        ..Rails::default()
    };
    let d = decide(
        &f,
        &Evidence::default(),
        &History::default(),
        &strict,
        None,
        NOW,
    );
    assert_eq!(reasons(&d), [Some(Reason::too_many_failing)]);
    assert!(
        why(&d[0]).starts_with("1 of 3 nodes fail, more than 20 %"),
        "{}",
        why(&d[0])
    );
    let empty = [finding("x.y", vec![kube_proxy("n1", 0, 0)])];
    let d = decide(
        &empty,
        &Evidence::default(),
        &History::default(),
        &Rails::default(),
        None,
        NOW,
    );
    assert_eq!(reasons(&d), [Some(Reason::too_many_failing)]);
}

#[test]
fn partial_evidence_and_an_unreliable_api_refuse_everything() {
    let f = [finding(
        "dns.replica-failing",
        vec![evict("coredns-b", 1, 2)],
    )];
    let gaps = Evidence {
        api_errors: Vec::new(),
        gaps: vec!["kube-netprobe pod p on node-c: /metrics unread (timeout)".into()],
    };
    let d = decide(&f, &gaps, &History::default(), &Rails::default(), None, NOW);
    assert_eq!(reasons(&d), [Some(Reason::partial_evidence)]);
    assert!(
        why(&d[0]).contains("node-c: /metrics unread"),
        "{}",
        why(&d[0])
    );
    let api = Evidence {
        api_errors: vec!["list nodes: timeout".into()],
        gaps: vec!["x".into()],
    };
    let d = decide(&f, &api, &History::default(), &Rails::default(), None, NOW);
    assert_eq!(reasons(&d), [Some(Reason::api_unreliable)]);
}

#[test]
fn one_action_per_subject_per_window_dry_runs_included() {
    let c = evict("coredns-b", 1, 2);
    let f = [finding("dns.replica-failing", vec![c.clone()])];
    let rails = Rails::default();
    for dry_run in [true, false] {
        let h = History {
            entries: vec![acted(&c, 3599, dry_run)],
        };
        let d = decide(&f, &Evidence::default(), &h, &rails, None, NOW);
        assert_eq!(
            reasons(&d),
            [Some(Reason::target_window)],
            "dry_run {dry_run}"
        );
        let h = History {
            entries: vec![acted(&c, 3600, dry_run)],
        };
        let d = decide(&f, &Evidence::default(), &h, &rails, None, NOW);
        assert_eq!(
            reasons(&d),
            [None],
            "dry_run {dry_run}: the window has passed"
        );
    }
    // Another replica of the same set is the same subject.
    let h = History {
        entries: vec![acted(&evict("coredns-a", 1, 2), 60, false)],
    };
    let d = decide(&f, &Evidence::default(), &h, &rails, None, NOW);
    assert_eq!(reasons(&d), [Some(Reason::target_window)]);
}

#[test]
fn a_failed_attempt_counts_against_the_window_but_not_the_global_limit() {
    let c = kube_proxy("n1", 1, 4);
    let h = History {
        entries: vec![Entry {
            kind: EntryKind::Failed,
            ..acted(&c, 60, false)
        }],
    };
    let f = [finding("x.y", vec![c, kube_proxy("n2", 1, 4)])];
    let d = decide(&f, &Evidence::default(), &h, &Rails::default(), None, NOW);
    assert_eq!(reasons(&d), [Some(Reason::target_window), None]);
}

#[test]
fn the_global_limit_counts_this_pass_and_earlier_ones() {
    let f = [finding(
        "x.y",
        vec![kube_proxy("n1", 2, 6), kube_proxy("n2", 2, 6)],
    )];
    let d = decide(
        &f,
        &Evidence::default(),
        &History::default(),
        &Rails::default(),
        None,
        NOW,
    );
    assert_eq!(reasons(&d), [None, Some(Reason::global_limit)]);
    let two = Rails {
        max_actions: 2,
        ..Rails::default()
    };
    let d = decide(
        &f,
        &Evidence::default(),
        &History::default(),
        &two,
        None,
        NOW,
    );
    assert_eq!(reasons(&d), [None, None]);
    // One taken on another subject 9 minutes ago fills the default 10-minute window.
    let h = History {
        entries: vec![acted(&evict("coredns-a", 1, 2), 540, false)],
    };
    let d = decide(&f, &Evidence::default(), &h, &Rails::default(), None, NOW);
    assert_eq!(
        reasons(&d),
        [Some(Reason::global_limit), Some(Reason::global_limit)]
    );
    let h = History {
        entries: vec![acted(&evict("coredns-a", 1, 2), 600, false)],
    };
    let d = decide(&f, &Evidence::default(), &h, &Rails::default(), None, NOW);
    assert_eq!(reasons(&d), [None, Some(Reason::global_limit)]);
}

#[test]
fn an_action_that_did_not_help_is_not_repeated_for_a_day() {
    let c = evict("coredns-c", 1, 2);
    let f = [finding("dns.replica-failing", vec![c.clone()])];
    let not_helping = |ago| Entry {
        kind: EntryKind::NotHelping,
        ..acted(&c, ago, false)
    };
    let rails = Rails {
        target_window: Duration::from_secs(60),
        ..Rails::default()
    };
    let h = History {
        entries: vec![not_helping(23 * 3600)],
    };
    let d = decide(&f, &Evidence::default(), &h, &rails, None, NOW);
    assert_eq!(reasons(&d), [Some(Reason::not_helping)]);
    assert!(why(&d[0]).contains("did not help"), "{}", why(&d[0]));
    let h = History {
        entries: vec![not_helping(24 * 3600)],
    };
    assert_eq!(
        reasons(&decide(&f, &Evidence::default(), &h, &rails, None, NOW)),
        [None]
    );
}

#[test]
fn disabled_actions_and_young_stuck_operations_are_not_decided() {
    let stuck = |secs: f64| Candidate {
        action: RepairAction::delete_stuck_netprobe,
        namespace: "kube-netprobe".into(),
        pod: Some("kube-netprobe-x".into()),
        node: "n1".into(),
        subject: "node/n1".into(),
        failing: 1,
        of: 3,
        for_seconds: Some(secs),
    };
    let f = [finding("storage.probe-stuck", vec![stuck(599.0)])];
    assert!(
        decide(
            &f,
            &Evidence::default(),
            &History::default(),
            &Rails::default(),
            None,
            NOW
        )
        .is_empty()
    );
    let f = [finding("storage.probe-stuck", vec![stuck(600.0)])];
    let d = decide(
        &f,
        &Evidence::default(),
        &History::default(),
        &Rails::default(),
        None,
        NOW,
    );
    assert_eq!(reasons(&d), [None]);
    let only_dns = Rails {
        actions: [RepairAction::evict_coredns].into_iter().collect(),
        ..Rails::default()
    };
    assert!(
        decide(
            &f,
            &Evidence::default(),
            &History::default(),
            &only_dns,
            None,
            NOW
        )
        .is_empty()
    );
}

#[test]
fn a_node_named_by_two_findings_is_decided_once() {
    let f = [
        finding("dns.service-path-broken", vec![kube_proxy("n1", 1, 3)]),
        finding("dns.node-service-path-broken", vec![kube_proxy("n1", 1, 3)]),
    ];
    let d = decide(
        &f,
        &Evidence::default(),
        &History::default(),
        &Rails::default(),
        None,
        NOW,
    );
    assert_eq!(reasons(&d), [None]);
}

#[test]
fn verification_finds_due_actions_and_records_the_outcome() {
    let c = evict("coredns-b", 1, 2);
    let mut h = History {
        entries: vec![acted(&c, 299, false), acted(&c, 400, true)],
    };
    let after = Duration::from_secs(300);
    assert!(
        h.due(NOW, after).is_empty(),
        "not yet, and dry runs are never verified"
    );
    h.entries[0].at = NOW - 300;
    assert_eq!(h.due(NOW, after), [0]);
    let still = [finding(
        "dns.replica-failing",
        vec![evict("coredns-x", 1, 2)],
    )];
    assert!(still_failing(&still, c.action, &c.subject));
    assert!(!still_failing(&[], c.action, &c.subject));
    h.verified(0, false, NOW);
    assert!(h.due(NOW, after).is_empty());
    assert_eq!(
        h.entries.last().map(|e| &e.kind),
        Some(&EntryKind::NotHelping)
    );
}

#[test]
fn refusals_are_recorded_once_per_window_and_old_entries_pruned() {
    let c = evict("coredns-a", 2, 2);
    let refused = Entry {
        kind: EntryKind::Refused(Reason::too_many_failing),
        ..acted(&c, 100, false)
    };
    let mut h = History {
        entries: vec![refused.clone()],
    };
    let w = Duration::from_secs(3600);
    assert!(h.refused_recently(c.action, &c.subject, Reason::too_many_failing, NOW, w));
    assert!(!h.refused_recently(c.action, &c.subject, Reason::partial_evidence, NOW, w));
    assert!(!h.refused_recently(
        c.action,
        &c.subject,
        Reason::too_many_failing,
        NOW + 3600,
        w
    ));
    h.entries.push(acted(&c, 100, false));
    h.prune(NOW + 2 * 24 * 3600, &Rails::default());
    assert_eq!(
        h.entries.len(),
        1,
        "an unverified action is kept: {:?}",
        h.entries
    );
}

#[test]
fn a_candidate_is_decided_once_it_has_held_for_evidence_for() {
    let c = kube_proxy("n1", 1, 3);
    let f = [finding("dns.node-service-path-broken", vec![c.clone()])];
    let mut seen = BTreeMap::new();
    let rails = Rails::default();
    track(&mut seen, &f, NOW - 119);
    let d = decide(
        &f,
        &Evidence::default(),
        &History::default(),
        &rails,
        Some(&seen),
        NOW,
    );
    assert!(d.is_empty(), "seen for 119 s: {d:?}");
    track(&mut seen, &f, NOW - 60);
    assert_eq!(seen[&key(&c)], NOW - 119, "kept while it stays");
    let d = decide(
        &f,
        &Evidence::default(),
        &History::default(),
        &rails,
        Some(&seen),
        NOW + 1,
    );
    assert_eq!(reasons(&d), [None], "held for 120 s");
    // Gone for one pass: the count starts again.
    track(&mut seen, &[], NOW + 2);
    track(&mut seen, &f, NOW + 3);
    let d = decide(
        &f,
        &Evidence::default(),
        &History::default(),
        &rails,
        Some(&seen),
        NOW + 4,
    );
    assert!(d.is_empty(), "{d:?}");
    // One pass alone (--once): decided at once.
    let d = decide(
        &f,
        &Evidence::default(),
        &History::default(),
        &rails,
        None,
        NOW,
    );
    assert_eq!(reasons(&d), [None]);
}
