//! CSI, StorageClasses, claims, volumes and the storage probes.

use super::*;

#[test]
fn csi_driver_missing_on_one_node() {
    let mut s = healthy();
    s.csi_nodes = Some(vec![
        obj(json!({"metadata": {"name": "node-a"}, "spec": {"drivers": [
        {"name": "csi.example.com", "nodeID": "node-a"}]}})),
        obj(json!({"metadata": {"name": "node-b"}, "spec": {"drivers": []}})),
    ]);
    let f = analyse(&s);
    assert_eq!(ids(&f), ["storage.csi-node-missing"]);
    assert_eq!(
        f[0].title,
        "CSI driver csi.example.com is not registered on 1 of 2 nodes: node-b"
    );
}

#[test]
fn default_storage_class_count() {
    let mut s = healthy();
    let class = |n: &str, default: bool| -> k8s_openapi::api::storage::v1::StorageClass {
        obj(
            json!({"metadata": {"name": n, "annotations": {"storageclass.kubernetes.io/is-default-class": default.to_string()}},
            "provisioner": "csi.example.com"}),
        )
    };
    s.storage_classes = Some(vec![class("fast", true), class("slow", true)]);
    let f = analyse(&s);
    assert_eq!(ids(&f), ["storage.multiple-default-classes"]);
    assert!(f[0].title.contains("fast, slow"));
    s.storage_classes = Some(vec![class("fast", false)]);
    assert_eq!(ids(&analyse(&s)), ["storage.no-default-class"]);
    assert_eq!(analyse(&s)[0].severity, Severity::Warning);
    s.storage_classes = Some(vec![]);
    assert_eq!(analyse(&s)[0].severity, Severity::Info);
}

#[test]
fn pvc_pending_with_provisioning_failure() {
    let mut s = healthy();
    s.pvcs = Some(vec![obj(
        json!({"metadata": {"name": "db", "namespace": "shop"},
        "spec": {"storageClassName": "fast"}, "status": {"phase": "Pending"}}),
    )]);
    s.pvc_events = Some(vec![obj(
        json!({"metadata": {"name": "db.1", "namespace": "shop"},
        "involvedObject": {"kind": "PersistentVolumeClaim", "name": "db", "namespace": "shop"},
        "type": "Warning", "reason": "ProvisioningFailed", "count": 4,
        "message": "failed to provision volume with StorageClass \"fast\": rpc error: code = ResourceExhausted desc = quota exceeded"}),
    )]);
    let f = analyse(&s);
    assert_eq!(ids(&f), ["storage.pvc-pending"]);
    assert_eq!(f[0].title, "PVC shop/db Pending: ProvisioningFailed");
    assert!(f[0].cause.contains("quota exceeded"));
    // A missing class is named even without events.
    s.pvc_events = Some(vec![]);
    s.pvcs = Some(vec![obj(
        json!({"metadata": {"name": "db", "namespace": "shop"},
        "spec": {"storageClassName": "gone"}, "status": {"phase": "Pending"}}),
    )]);
    assert_eq!(
        analyse(&s)[0].title,
        "PVC shop/db Pending: StorageClassNotFound"
    );
}

#[test]
fn pv_failed_released_and_attach_errors() {
    let mut s = healthy();
    s.pvs = Some(vec![
        obj(
            json!({"metadata": {"name": "pv-f"}, "spec": {}, "status": {"phase": "Failed", "message": "delete failed"}}),
        ),
        obj(json!({"metadata": {"name": "pv-r"}, "spec": {}, "status": {"phase": "Released"}})),
    ]);
    s.volume_attachments = Some(vec![obj(json!({"metadata": {"name": "csi-123"},
        "spec": {"attacher": "csi.example.com", "nodeName": "node-a", "source": {"persistentVolumeName": "pv-1"}},
        "status": {"attached": false, "attachError": {"message": "volume is attached to another node"}}}))]);
    let f = analyse(&s);
    assert_eq!(
        ids(&f),
        [
            "storage.attach-error",
            "storage.pv-failed",
            "storage.pv-released"
        ]
    );
    assert_eq!(f[2].severity, Severity::Info);
}

#[test]
fn storage_probe_failures_by_result() {
    let mut s = healthy();
    s.probe_scrapes = vec![ProbeScrape {
        pod: "netprobe-a".into(),
        node: "node-a".into(),
        text: Some(metrics(
            &[],
            "netprobe_storage_probe_success{volume=\"scratch\"} 0\n\
            netprobe_storage_probes_total{volume=\"scratch\",result=\"success\"} 10\n\
            netprobe_storage_probes_total{volume=\"scratch\",result=\"erofs\"} 3\n",
        )),
        error: None,
    }];
    let f = analyse(&s);
    assert_eq!(ids(&f), ["storage.probe-failing"]);
    assert_eq!(
        f[0].title,
        "Storage probe failing (erofs) on volume scratch of node node-a"
    );
}

#[test]
fn storage_probe_titles_name_node_and_volume() {
    let scrape = |node: &str, volume: &str, result: &str| ProbeScrape {
        pod: format!("netprobe-{node}"),
        node: node.into(),
        text: Some(metrics(
            &[],
            &format!(
                "netprobe_storage_probe_success{{volume=\"{volume}\"}} 0\n\
                 netprobe_storage_probes_total{{volume=\"{volume}\",result=\"success\"}} 4\n\
                 netprobe_storage_probes_total{{volume=\"{volume}\",result=\"{result}\"}} 2\n"
            ),
        )),
        error: None,
    };
    let mut s = healthy();
    s.probe_scrapes = vec![
        scrape("node-a", "scratch", "enospc"),
        scrape("node-b", "scratch", "enospc"),
        scrape("node-b", "data", "eio"),
    ];
    let f = storage_probes(&s);
    let titles: Vec<&str> = f.iter().map(|f| f.title.as_str()).collect();
    assert_eq!(
        titles,
        [
            "Storage probe failing (eio) on volume data of node node-b",
            "Storage probe failing (enospc) on volume scratch of 2 nodes: node-a, node-b",
        ]
    );
    assert!(
        f[0].next_step.starts_with("On node node-b: check"),
        "{}",
        f[0].next_step
    );
    // A volume not probed yet (the series exist, no run has finished): nothing.
    s.probe_scrapes = vec![ProbeScrape {
        pod: "netprobe-a".into(),
        node: "node-a".into(),
        text: Some(metrics(
            &[],
            "netprobe_storage_probe_success{volume=\"scratch\"} 0\n\
             netprobe_storage_probes_total{volume=\"scratch\",result=\"success\"} 0\n",
        )),
        error: None,
    }];
    assert_eq!(storage_probes(&s), vec![]);
}

#[test]
fn storage_test_outcomes() {
    use crate::diagnose::storage_test::Outcome;
    let mut s = healthy();
    let base = Outcome {
        namespace: "shop".into(),
        pvc: "t".into(),
        job: "t".into(),
        storage_class: Some("fast".into()),
        seconds: 30.0,
        ..Outcome::default()
    };
    let case = |o: Outcome| {
        let mut s = healthy();
        s.storage_test = Some(o);
        ids(&analyse(&s))
    };
    assert_eq!(
        case(Outcome {
            status: "succeeded".into(),
            probe: Some(json!({"result": "success"})),
            ..base.clone()
        }),
        Vec::<&str>::new()
    );
    assert_eq!(
        case(Outcome {
            status: "failed".into(),
            probe: Some(json!({"result": "eio"})),
            ..base.clone()
        }),
        ["storage.test-failed"]
    );
    assert_eq!(
        case(Outcome {
            status: "timeout".into(),
            pvc_phase: Some("Pending".into()),
            ..base.clone()
        }),
        ["storage.test-pvc-pending"]
    );
    assert_eq!(
        case(Outcome {
            status: "timeout".into(),
            pvc_phase: Some("Bound".into()),
            cleanup_errors: vec!["pvc x".into()],
            ..base.clone()
        }),
        ["storage.test-timeout", "storage.test-cleanup-failed"]
    );
    assert_eq!(
        case(Outcome {
            status: "not_created".into(),
            detail: Some("create jobs.batch (shop) failed: forbidden".into()),
            ..base.clone()
        }),
        ["storage.test-not-run"]
    );
    s.storage_test = None;
    assert_eq!(analyse(&s), vec![]);
}

#[test]
fn a_stuck_volume_names_the_node_and_the_pod_to_delete() {
    let mut s = healthy();
    let mut pod = app_pod(
        "kube-netprobe-x1",
        json!({"app.kubernetes.io/name": "kube-netprobe"}),
    );
    pod.metadata.namespace = Some("monitoring".into());
    s.netprobe_pods = Some(vec![pod]);
    let stuck = |node: &str, pod: &str, secs: f64| ProbeScrape {
        pod: pod.into(),
        node: node.into(),
        text: Some(metrics(
            &[],
            &format!(
                "# TYPE netprobe_storage_stuck_seconds gauge\n\
                 netprobe_storage_stuck_seconds{{volume=\"scratch\"}} {secs}\n"
            ),
        )),
        error: None,
    };
    s.probe_scrapes = vec![
        stuck("node-a", "kube-netprobe-x1", 900.0),
        stuck("node-b", "kube-netprobe-x2", 59.0),
        stuck("node-c", "kube-netprobe-x3", 0.0),
    ];
    let f = analyse(&s);
    assert_eq!(ids(&f), ["storage.probe-stuck"], "{f:#?}");
    assert_eq!(
        f[0].title,
        "Storage probe stuck on volume scratch of node node-a for 15 min"
    );
    assert_eq!(f[0].nodes, ["node-a"]);
    let r = &f[0].repairs;
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].action, RepairAction::delete_stuck_netprobe);
    assert_eq!(
        (
            r[0].namespace.as_str(),
            r[0].pod.as_deref(),
            r[0].failing,
            r[0].of
        ),
        ("monitoring", Some("kube-netprobe-x1"), 1, 3)
    );
    assert_eq!(r[0].for_seconds, Some(900.0));
}
