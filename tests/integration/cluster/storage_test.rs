//! `diagnose --storage-test` on a kubelet: the test PVC binds, the probe runs, nothing is left.

use crate::util::{Checks, poll_every};

use super::diagnosis::diagnose;
use super::{Cluster, EVERY, WAIT};

/// `diagnose --storage-test` on the cluster: the PVC binds to a local PV once the Job's pod is
/// scheduled (WaitForFirstConsumer), the probe runs on a kubelet, its result is in the report,
/// and the PVC and Job are gone afterwards.
#[test]
#[ignore = "needs root and the real cluster (minutes): make e2e"]
fn diagnose_storage_test_completes_on_a_kubelet() {
    let cluster = Cluster::get();
    let image = format!("localhost/kube-netprobe:{}", env!("CARGO_PKG_VERSION"));
    let report = diagnose(
        &cluster,
        &[
            "--storage-test",
            "--storage-test-image",
            &image,
            "--storage-test-timeout",
            "120s",
        ],
    );
    let test = &report.json["storage_test"];
    let mut checks = Checks::default();
    checks.eq(
        "storage_test.status",
        test["status"].as_str(),
        Some("succeeded"),
    );
    checks.eq(
        "storage_test.probe.result",
        test["probe"]["result"].as_str(),
        Some("success"),
    );
    checks.eq(
        "storage_test.pvc_phase",
        test["pvc_phase"].as_str(),
        Some("Bound"),
    );
    checks.eq(
        "storage_test.cleanup_errors",
        test["cleanup_errors"].as_array().map(Vec::len),
        Some(0),
    );
    checks.that(
        !report
            .findings()
            .iter()
            .any(|f| f.contains("storage.test-")),
        format!("storage test findings: {:?}", report.findings()),
    );
    let ns = test["namespace"].as_str().unwrap_or("default").to_string();
    poll_every("the test PVC and Job to be gone", WAIT, EVERY, || {
        let pvcs = cluster.kubectl(&[
            "-n",
            &ns,
            "get",
            "pvc,job",
            "-l",
            "app.kubernetes.io/name=kube-netprobe-storage-test",
            "-o",
            "name",
        ]);
        if pvcs.trim().is_empty() {
            Ok(())
        } else {
            Err(pvcs)
        }
    });
    checks.finish("diagnose --storage-test on the cluster");
}
