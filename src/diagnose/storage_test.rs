//! `diagnose --storage-test`: a small PVC on a StorageClass and a Job that runs the storage probe
//! once on it (`kube-netprobe probe storage /data`), its figures read from the pod's log. The PVC
//! and the Job are always deleted: on success, failure, timeout, and on Ctrl-C or SIGTERM.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams, LogParams, PostParams};
use serde::Serialize;

use crate::probe::storage::StorageOperation;

/// Label on everything the test creates, so a leftover is easy to find.
pub const LABEL: &str = "app.kubernetes.io/name";
pub const LABEL_VALUE: &str = "kube-netprobe-storage-test";

#[derive(Debug, Clone)]
pub struct Request {
    pub namespace: String,
    pub name: String,
    /// `None`: the cluster's default class.
    pub storage_class: Option<String>,
    pub image: String,
    pub timeout: Duration,
    pub call_timeout: Duration,
}

/// What happened, for the analysis and report.json (`storage_test`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Outcome {
    pub namespace: String,
    pub pvc: String,
    pub job: String,
    pub storage_class: Option<String>,
    /// `succeeded`, `failed`, `timeout`, `interrupted` or `not_created`.
    pub status: String,
    pub pvc_phase: Option<String>,
    pub seconds: f64,
    /// The probe's JSON line (result, throughput, operations), when the Job's log had it.
    pub probe: Option<serde_json::Value>,
    pub detail: Option<String>,
    /// Events of the test PVC, newest last.
    pub pvc_events: Vec<String>,
    /// Objects that could not be deleted (empty when cleanup worked).
    pub cleanup_errors: Vec<String>,
}

fn pvc_object(r: &Request) -> PersistentVolumeClaim {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": r.name, "namespace": r.namespace, "labels": {LABEL: LABEL_VALUE}},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": r.storage_class,
            "resources": {"requests": {"storage": "256Mi"}}
        }
    }))
    .expect("a valid PVC")
}

fn job_object(r: &Request) -> Job {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": r.name, "namespace": r.namespace, "labels": {LABEL: LABEL_VALUE}},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": r.timeout.as_secs().max(1),
            "ttlSecondsAfterFinished": 300,
            "template": {
                "metadata": {"labels": {LABEL: LABEL_VALUE}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{
                        "name": "probe",
                        "image": r.image,
                        "args": ["probe", "storage", "/data"],
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"},
                                      "limits": {"memory": "128Mi"}}
                    }],
                    "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": r.name}}]
                }
            }
        }
    }))
    .expect("a valid Job")
}

/// Resolves on Ctrl-C or SIGTERM.
async fn interrupted() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs the test and cleans up. Creation errors come back as `Err` with the RBAC rule to name.
pub async fn run(client: &kube::Client, r: &Request) -> Outcome {
    let started = Instant::now();
    let pvcs = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &r.namespace);
    let jobs = Api::<Job>::namespaced(client.clone(), &r.namespace);
    let mut outcome = Outcome {
        namespace: r.namespace.clone(),
        pvc: r.name.clone(),
        job: r.name.clone(),
        storage_class: r.storage_class.clone(),
        ..Outcome::default()
    };

    let created_pvc = tokio::time::timeout(
        r.call_timeout,
        pvcs.create(&PostParams::default(), &pvc_object(r)),
    )
    .await;
    let mut created = Vec::new();
    match created_pvc {
        Ok(Ok(_)) => created.push("pvc"),
        Ok(Err(e)) => {
            outcome.status = "not_created".into();
            outcome.detail = Some(format!(
                "create persistentvolumeclaims ({}) failed: {e}",
                r.namespace
            ));
        }
        Err(_) => {
            outcome.status = "not_created".into();
            outcome.detail = Some("creating the PVC timed out".into());
        }
    }
    if !created.is_empty() {
        match tokio::time::timeout(
            r.call_timeout,
            jobs.create(&PostParams::default(), &job_object(r)),
        )
        .await
        {
            Ok(Ok(_)) => created.push("job"),
            Ok(Err(e)) => {
                outcome.status = "not_created".into();
                outcome.detail = Some(format!("create jobs.batch ({}) failed: {e}", r.namespace));
            }
            Err(_) => {
                outcome.status = "not_created".into();
                outcome.detail = Some("creating the Job timed out".into());
            }
        }
    }
    if created.len() == 2 {
        let wait = wait_for_job(&jobs, &pvcs, r, &mut outcome);
        tokio::select! {
            status = wait => outcome.status = status.to_owned(),
            () = interrupted() => {
                outcome.status = "interrupted".into();
                eprintln!("\ninterrupted: deleting the storage test's Job and PVC {}/{} ...", r.namespace, r.name);
            }
        }
        if outcome.status == "succeeded" || outcome.status == "failed" {
            outcome.probe = read_probe_line(client, r).await;
        }
        if let Ok(Ok(pvc)) = tokio::time::timeout(r.call_timeout, pvcs.get(&r.name)).await {
            outcome.pvc_phase = pvc.status.and_then(|s| s.phase);
        }
        let events = Api::<Event>::namespaced(client.clone(), &r.namespace);
        let lp = ListParams::default().fields(&format!(
            "involvedObject.kind=PersistentVolumeClaim,involvedObject.name={}",
            r.name
        ));
        if let Ok(Ok(list)) = tokio::time::timeout(r.call_timeout, events.list(&lp)).await {
            outcome.pvc_events = list
                .items
                .iter()
                .map(|e| {
                    format!(
                        "event {} {}: {}",
                        e.type_.as_deref().unwrap_or("Normal"),
                        e.reason.as_deref().unwrap_or("?"),
                        e.message.as_deref().unwrap_or("").trim()
                    )
                })
                .collect();
        }
    }
    // Cleanup, whatever happened above; a second Ctrl-C is not waited for.
    if created.contains(&"job") {
        match tokio::time::timeout(
            r.call_timeout,
            jobs.delete(&r.name, &DeleteParams::background()),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => outcome
                .cleanup_errors
                .push(format!("job {}/{}: {e}", r.namespace, r.name)),
            Err(_) => outcome
                .cleanup_errors
                .push(format!("job {}/{}: delete timed out", r.namespace, r.name)),
        }
    }
    if created.contains(&"pvc") {
        match tokio::time::timeout(
            r.call_timeout,
            pvcs.delete(&r.name, &DeleteParams::default()),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => outcome
                .cleanup_errors
                .push(format!("pvc {}/{}: {e}", r.namespace, r.name)),
            Err(_) => outcome
                .cleanup_errors
                .push(format!("pvc {}/{}: delete timed out", r.namespace, r.name)),
        }
    }
    outcome.seconds = (started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    outcome
}

/// Polls the Job until it finishes or the test's timeout passes.
async fn wait_for_job(
    jobs: &Api<Job>,
    pvcs: &Api<PersistentVolumeClaim>,
    r: &Request,
    outcome: &mut Outcome,
) -> &'static str {
    let deadline = crate::scheduler::later(tokio::time::Instant::now(), r.timeout).into_std();
    loop {
        if let Ok(Ok(job)) = tokio::time::timeout(r.call_timeout, jobs.get(&r.name)).await {
            let status = job.status.unwrap_or_default();
            if status.succeeded.unwrap_or(0) > 0 {
                return "succeeded";
            }
            if status.failed.unwrap_or(0) > 0 {
                return "failed";
            }
        }
        if let Ok(Ok(pvc)) = tokio::time::timeout(r.call_timeout, pvcs.get(&r.name)).await {
            outcome.pvc_phase = pvc.status.and_then(|s| s.phase);
        }
        if Instant::now() >= deadline {
            return "timeout";
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The last JSON line of the Job's pod log (what `kube-netprobe probe storage` prints).
async fn read_probe_line(client: &kube::Client, r: &Request) -> Option<serde_json::Value> {
    let pods = Api::<Pod>::namespaced(client.clone(), &r.namespace);
    let lp = ListParams::default().labels(&format!("job-name={}", r.name));
    let list = tokio::time::timeout(r.call_timeout, pods.list(&lp))
        .await
        .ok()?
        .ok()?;
    let pod = list.items.first()?.metadata.name.clone()?;
    let log = tokio::time::timeout(r.call_timeout, pods.logs(&pod, &LogParams::default()))
        .await
        .ok()?
        .ok()?;
    log.lines()
        .rev()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).ok())
}

/// `kube-netprobe probe storage PATH`: one run of the storage probe, printed as one JSON line.
/// Returns whether it succeeded.
pub fn probe_once(path: &std::path::Path, size: u64, timeout: Duration) -> bool {
    let spec = crate::probe::storage::ProbeSpec {
        path: path.to_owned(),
        size,
        block_size: 1 << 20,
        direct_io: true,
        reserve: 0,
        sync_writes: 16,
    };
    let clock = crate::probe::storage::OpClock::default();
    let obs = crate::probe::storage::probe_volume(
        &spec,
        &clock,
        crate::scheduler::later(tokio::time::Instant::now(), timeout).into_std(),
        0x5eed,
    );
    let map = |v: &[(StorageOperation, f64)]| -> BTreeMap<&'static str, f64> {
        v.iter().map(|(op, x)| (op.as_str(), *x)).collect()
    };
    let line = serde_json::json!({
        "result": obs.result.as_str(),
        "throughput_bytes_per_second": map(&obs.throughput),
        "operations_seconds": obs.operations.iter().fold(BTreeMap::new(), |mut m: BTreeMap<&str, f64>, (op, d)| {
            *m.entry(op.as_str()).or_default() += d.as_secs_f64();
            m
        }),
        "bytes": obs.bytes.iter().map(|(op, n)| (op.as_str(), *n)).collect::<BTreeMap<_, _>>(),
        "direct_io": obs.direct_io,
        "detail": obs.detail,
    });
    println!("{line}");
    obs.result == crate::probe::storage::StorageResult::success
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_labelled_and_bounded() {
        let r = Request {
            namespace: "shop".into(),
            name: "netprobe-storage-test-x".into(),
            storage_class: Some("fast".into()),
            image: "kube-netprobe:test".into(),
            timeout: Duration::from_secs(90),
            call_timeout: Duration::from_secs(5),
        };
        let pvc = serde_json::to_value(pvc_object(&r)).unwrap();
        assert_eq!(pvc["spec"]["storageClassName"], "fast");
        assert_eq!(pvc["metadata"]["labels"][LABEL], LABEL_VALUE);
        let job = serde_json::to_value(job_object(&r)).unwrap();
        assert_eq!(job["spec"]["activeDeadlineSeconds"], 90);
        assert_eq!(job["spec"]["backoffLimit"], 0);
        assert_eq!(
            job["spec"]["template"]["spec"]["containers"][0]["args"],
            serde_json::json!(["probe", "storage", "/data"])
        );
        assert_eq!(
            job["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
            r.name
        );
    }

    #[test]
    fn probe_once_on_a_temp_dir_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        assert!(probe_once(dir.path(), 1 << 20, Duration::from_secs(10)));
    }
}
