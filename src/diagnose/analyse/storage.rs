//! Storage: CSI registration, StorageClasses, claims, volumes, attachments, and the
//! kube-netprobe pods' storage probes.

use super::*;

// ---------------------------------------------------------------------------------------------
// Storage

pub fn csi_registration(s: &Snapshot) -> Vec<Finding> {
    let (Some(drivers), Some(csinodes)) = (&s.csi_drivers, &s.csi_nodes) else {
        return Vec::new();
    };
    let node_names: BTreeSet<String> = match &s.nodes {
        Some(nodes) => nodes.iter().map(|n| name(&n.metadata)).collect(),
        None => csinodes.iter().map(|n| name(&n.metadata)).collect(),
    };
    if node_names.is_empty() {
        return Vec::new();
    }
    let registered: BTreeMap<String, BTreeSet<String>> = csinodes
        .iter()
        .map(|n| {
            (
                name(&n.metadata),
                n.spec.drivers.iter().map(|d| d.name.clone()).collect(),
            )
        })
        .collect();
    let mut out = Vec::new();
    for driver in drivers {
        let d = name(&driver.metadata);
        let missing: Vec<String> = node_names
            .iter()
            .filter(|n| !registered.get(*n).is_some_and(|ds| ds.contains(&d)))
            .cloned()
            .collect();
        if missing.is_empty() {
            continue;
        }
        let everywhere = missing.len() == node_names.len();
        out.push(
            Finding::new(
                "storage.csi-node-missing",
                Severity::Warning,
                if everywhere {
                    format!("CSI driver {d} is registered on no node")
                } else {
                    format!(
                        "CSI driver {d} is not registered on {} of {} nodes: {}",
                        missing.len(),
                        node_names.len(),
                        list_some(&missing, 4)
                    )
                },
            )
            .evidence(missing.iter().map(|n| {
                format!(
                    "CSINode {n}: {}",
                    match registered.get(n) {
                        None => "no CSINode object".to_owned(),
                        Some(ds) if ds.is_empty() => "no drivers".to_owned(),
                        Some(ds) => format!(
                            "drivers {}",
                            ds.iter().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    }
                )
            }))
            .cause(format!(
                "The driver's node plugin (its DaemonSet pod with node-driver-registrar) is not \
                 running or not registered with the kubelet there; pods with {d} volumes \
                 scheduled on {} stay ContainerCreating.",
                if everywhere {
                    "any node"
                } else {
                    "those nodes"
                }
            ))
            .next(format!(
                "Find the driver's node DaemonSet (`kubectl get ds -A | grep -i csi`) and its pod \
                 on {}: logs of node-driver-registrar and the driver container.",
                missing[0]
            )),
        );
    }
    out
}

pub(super) fn is_default_class(sc: &k8s_openapi::api::storage::v1::StorageClass) -> bool {
    sc.metadata.annotations.as_ref().is_some_and(|a| {
        a.get("storageclass.kubernetes.io/is-default-class")
            .or_else(|| a.get("storageclass.beta.kubernetes.io/is-default-class"))
            .is_some_and(|v| v == "true")
    })
}

pub fn storage_classes(s: &Snapshot) -> Vec<Finding> {
    let Some(classes) = &s.storage_classes else {
        return Vec::new();
    };
    let defaults: Vec<String> = classes
        .iter()
        .filter(|c| is_default_class(c))
        .map(|c| name(&c.metadata))
        .collect();
    match defaults.len() {
        1 => Vec::new(),
        0 => vec![
            Finding::new(
                "storage.no-default-class",
                // A cluster without any class has no dynamic provisioning at all: worth
                // knowing, not a fault by itself.
                if classes.is_empty() {
                    Severity::Info
                } else {
                    Severity::Warning
                },
                format!("No default StorageClass ({} StorageClasses)", classes.len()),
            )
            .evidence(classes.iter().map(|c| format!("StorageClass {} ({})", name(&c.metadata), c.provisioner)))
            .cause("PVCs without storageClassName stay Pending forever: nothing provisions them.")
            .next("Mark one class default: `kubectl annotate storageclass NAME storageclass.kubernetes.io/is-default-class=true`."),
        ],
        _ => vec![
            Finding::new(
                "storage.multiple-default-classes",
                Severity::Warning,
                format!("{} StorageClasses are marked default: {}", defaults.len(), defaults.join(", ")),
            )
            .evidence(defaults.iter().map(|d| format!("StorageClass {d}: is-default-class=true")))
            .cause("PVCs without storageClassName are rejected (before Kubernetes 1.26) or land on whichever default is newest: volumes end up on the wrong backend.")
            .next("Keep one: `kubectl annotate storageclass NAME storageclass.kubernetes.io/is-default-class=false --overwrite` on the others."),
        ],
    }
}

pub fn pvcs(s: &Snapshot) -> Vec<Finding> {
    let Some(pvcs) = &s.pvcs else {
        return Vec::new();
    };
    let events = s.pvc_events.as_deref().unwrap_or(&[]);
    let classes = s.storage_classes.as_deref();
    let default_class = classes.map(|cs| cs.iter().any(is_default_class));
    let now = k8s_openapi::jiff::Timestamp::now();
    // reason -> (pvc names, evidence, cause)
    let mut groups: BTreeMap<String, (Vec<String>, Vec<String>, String)> = BTreeMap::new();
    let mut waiting: Vec<(String, String)> = Vec::new();
    for pvc in pvcs {
        let phase = pvc.status.as_ref().and_then(|s| s.phase.as_deref());
        if !matches!(phase, None | Some("Pending")) {
            continue;
        }
        let ns = pvc.metadata.namespace.clone().unwrap_or_default();
        let n = name(&pvc.metadata);
        let q = format!("{ns}/{n}");
        let class = pvc.spec.as_ref().and_then(|s| s.storage_class_name.clone());
        let evs = events_of(events, "PersistentVolumeClaim", &ns, &n);
        let warning = evs
            .iter()
            .rev()
            .find(|e| e.type_.as_deref() == Some("Warning"));
        let class_obj = class
            .as_ref()
            .and_then(|c| classes?.iter().find(|sc| &name(&sc.metadata) == c));
        let (reason, cause) = if let Some(e) = warning {
            (
                e.reason.clone().unwrap_or_else(|| "Warning".into()),
                format!(
                    "The provisioner reports: {}",
                    e.message.as_deref().unwrap_or("").trim()
                ),
            )
        } else if let (Some(c), Some(_)) = (&class, classes) {
            if class_obj.is_none() && !c.is_empty() {
                (
                    "StorageClassNotFound".into(),
                    format!("StorageClass {c} does not exist, so nothing provisions the claim."),
                )
            } else {
                let wait = class_obj.is_some_and(|sc| {
                    sc.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer")
                });
                let age = pvc
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| now.duration_since(t.0).as_secs())
                    .unwrap_or(0);
                if !wait
                    && age >= 300
                    && pvc
                        .spec
                        .as_ref()
                        .and_then(|s| s.volume_name.as_ref())
                        .is_none()
                {
                    waiting.push((
                        q.clone(),
                        class_obj
                            .map(|sc| sc.provisioner.clone())
                            .unwrap_or_default(),
                    ));
                }
                continue;
            }
        } else if class.is_none() && default_class == Some(false) {
            (
                "NoDefaultStorageClass".into(),
                "The claim names no StorageClass and none is default.".into(),
            )
        } else {
            continue;
        };
        let entry = groups
            .entry(reason)
            .or_insert_with(|| (Vec::new(), Vec::new(), cause.clone()));
        entry.0.push(q.clone());
        entry.1.push(format!(
            "PVC {q} Pending (class {})",
            class.as_deref().unwrap_or("<default>")
        ));
        entry.1.extend(
            evs.iter()
                .rev()
                .take(3)
                .map(|e| format!("  {}", event_line(e))),
        );
    }
    let mut out = Vec::new();
    for (reason, (names, evidence, cause)) in groups {
        out.push(
            Finding::new(
                "storage.pvc-pending",
                Severity::Critical,
                if names.len() == 1 {
                    format!("PVC {} Pending: {reason}", names[0])
                } else {
                    format!("{} PVCs Pending: {reason}", names.len())
                },
            )
            .evidence(evidence)
            .cause(cause)
            .next(format!(
                "`kubectl -n {} describe pvc {}`; check the provisioner's controller logs (the \
                 CSI driver's external-provisioner) and the StorageClass parameters.",
                names[0].split('/').next().unwrap_or(""),
                names[0].split('/').nth(1).unwrap_or("")
            )),
        );
    }
    if !waiting.is_empty() {
        out.push(
            Finding::new(
                "storage.pvc-pending",
                Severity::Warning,
                format!(
                    "{} Pending for over 5 minutes without an error event",
                    plural(waiting.len(), "PVC", "PVCs")
                ),
            )
            .evidence(waiting.iter().map(|(q, p)| format!("PVC {q}: provisioner {p}")))
            .cause("Nothing has acted on the claims: the provisioner's controller is not running.")
            .next("Check the CSI controller Deployment (external-provisioner sidecar) for the class's provisioner."),
        );
    }
    out
}

pub fn pvs(s: &Snapshot) -> Vec<Finding> {
    let Some(pvs) = &s.pvs else {
        return Vec::new();
    };
    let phase_of = |pv: &k8s_openapi::api::core::v1::PersistentVolume| {
        pv.status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default()
    };
    let line = |pv: &k8s_openapi::api::core::v1::PersistentVolume| {
        let status = pv.status.as_ref();
        format!(
            "PV {} {}: {} (claim {}, reclaim {})",
            name(&pv.metadata),
            phase_of(pv),
            status
                .and_then(|s| s.message.clone().or_else(|| s.reason.clone()))
                .unwrap_or_default(),
            pv.spec
                .as_ref()
                .and_then(|s| s.claim_ref.as_ref())
                .map(|c| format!(
                    "{}/{}",
                    c.namespace.as_deref().unwrap_or(""),
                    c.name.as_deref().unwrap_or("")
                ))
                .unwrap_or_else(|| "-".into()),
            pv.spec
                .as_ref()
                .and_then(|s| s.persistent_volume_reclaim_policy.clone())
                .unwrap_or_default()
        )
    };
    let failed: Vec<_> = pvs.iter().filter(|p| phase_of(p) == "Failed").collect();
    let released: Vec<_> = pvs.iter().filter(|p| phase_of(p) == "Released").collect();
    let mut out = Vec::new();
    if !failed.is_empty() {
        out.push(
            Finding::new(
                "storage.pv-failed",
                Severity::Warning,
                format!("{} Failed", plural(failed.len(), "PersistentVolume", "PersistentVolumes")),
            )
            .evidence(failed.iter().map(|p| line(p)))
            .cause("Automatic reclamation (delete or recycle) of the volume failed; the backend volume may still exist and cost money.")
            .next("Read the PV's status message; delete the backend volume by hand if needed, then `kubectl delete pv NAME`."),
        );
    }
    if !released.is_empty() {
        out.push(
            Finding::new(
                "storage.pv-released",
                Severity::Info,
                format!("{} Released (claim deleted, data retained)", plural(released.len(), "PersistentVolume", "PersistentVolumes")),
            )
            .evidence(released.iter().map(|p| line(p)))
            .cause("The claim was deleted and the reclaim policy is Retain: the volume is not reused until someone clears its claimRef.")
            .next("Back up or delete the data, then delete the PV, or remove spec.claimRef to make it Available again."),
        );
    }
    out
}

pub fn volume_attachments(s: &Snapshot) -> Vec<Finding> {
    let Some(vas) = &s.volume_attachments else {
        return Vec::new();
    };
    let mut attach = Vec::new();
    let mut detach = Vec::new();
    for va in vas {
        let pv = va
            .spec
            .source
            .persistent_volume_name
            .clone()
            .unwrap_or_default();
        let status = va.status.as_ref();
        if let Some(e) = status.and_then(|s| s.attach_error.as_ref()) {
            attach.push(format!(
                "VolumeAttachment {} (PV {pv}, node {}, driver {}): {}",
                name(&va.metadata),
                va.spec.node_name,
                va.spec.attacher,
                e.message.as_deref().unwrap_or("")
            ));
        }
        if let Some(e) = status.and_then(|s| s.detach_error.as_ref()) {
            detach.push(format!(
                "VolumeAttachment {} (PV {pv}, node {}): {}",
                name(&va.metadata),
                va.spec.node_name,
                e.message.as_deref().unwrap_or("")
            ));
        }
    }
    let mut out = Vec::new();
    if !attach.is_empty() {
        out.push(
            Finding::new(
                "storage.attach-error",
                Severity::Critical,
                format!("{} failing to attach", plural(attach.len(), "volume", "volumes")),
            )
            .evidence(attach)
            .cause("The CSI controller cannot attach the volume to the node (backend error, volume still attached elsewhere, or node limit reached); the pods using it stay ContainerCreating.")
            .next("Read the error; check the CSI controller's external-attacher logs and whether the volume is still attached to another node in the backend."),
        );
    }
    if !detach.is_empty() {
        out.push(
            Finding::new(
                "storage.detach-error",
                Severity::Warning,
                format!("{} failing to detach", plural(detach.len(), "volume", "volumes")),
            )
            .evidence(detach)
            .cause("The volume cannot be detached from its old node: the next pod using it elsewhere cannot attach it (Multi-Attach error).")
            .next("Check the CSI controller's external-attacher logs; if the node is gone, detach in the backend and delete the VolumeAttachment."),
        );
    }
    out
}

/// What each storage probe result means.
pub(super) fn storage_result_meaning(result: &str) -> (&'static str, &'static str) {
    match result {
        "enospc" => (
            "The volume is full (ENOSPC).",
            "Free space or grow the volume (`kubectl edit pvc` if the class allows expansion).",
        ),
        "erofs" => (
            "The filesystem is read-only (EROFS): usually remounted read-only after I/O errors in the backend.",
            "Check the node's kernel log (`dmesg`) for I/O errors; the volume may need fsck and a remount.",
        ),
        "eio" => (
            "The device returns I/O errors (EIO): failing disk or storage backend.",
            "Check `dmesg` on the node and the storage backend's health.",
        ),
        "timeout" => (
            "Storage operations hang past the probe's timeout: the backend or the path to it is stalled.",
            "Check the storage backend and the network to it (iSCSI/NFS/Ceph sessions) from that node.",
        ),
        "checksum_mismatch" => (
            "Data read back differs from what was written: silent corruption.",
            "Take the volume out of service and check the backend; do not trust data on it.",
        ),
        "permission_denied" => (
            "The probe may not write to the volume: ownership, fsGroup or SELinux labels.",
            "Check the volume's ownership and the pod's securityContext.",
        ),
        "insufficient_space" => (
            "Too little free space to run the probe.",
            "Free space on the volume or lower the probe size.",
        ),
        _ => (
            "The storage probe fails.",
            "Read the kube-netprobe logs on those nodes.",
        ),
    }
}

pub fn storage_probes(s: &Snapshot) -> Vec<Finding> {
    // (result, volume) -> (nodes, evidence lines)
    let mut by: BTreeMap<(String, String), (Vec<String>, Vec<String>)> = BTreeMap::new();
    for (node, samples) in readable_scrapes(s) {
        for failing in samples
            .iter()
            .filter(|x| x.name == "netprobe_storage_probe_success" && x.value < 1.0)
        {
            let volume = failing.label("volume");
            // Storage failures are not start-up artefacts (a full or read-only volume is so
            // from the first run), and runs are a minute apart: judged from the first result,
            // but not before it.
            if completed(
                &samples,
                "netprobe_storage_probes_total",
                &[("volume", volume)],
            ) < 1.0
            {
                continue;
            }
            let results: Vec<(&str, f64)> = samples
                .iter()
                .filter(|x| {
                    x.name == "netprobe_storage_probes_total"
                        && x.label("volume") == volume
                        && x.label("result") != "success"
                        && x.value > 0.0
                })
                .map(|x| (x.label("result"), x.value))
                .collect();
            let dominant = results
                .iter()
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(r, _)| r.to_string())
                .unwrap_or_else(|| "error".into());
            let entry = by.entry((dominant, volume.to_owned())).or_default();
            entry.0.push(node.to_owned());
            entry.1.push(format!(
                "node {node} volume {volume}: failing; results so far: {}",
                results
                    .iter()
                    .map(|(r, n)| format!("{r}={n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    by.into_iter()
        .map(|((result, volume), (nodes, lines))| {
            let (cause, next) = storage_result_meaning(&result);
            Finding::new(
                "storage.probe-failing",
                if result == "insufficient_space" {
                    Severity::Warning
                } else {
                    Severity::Critical
                },
                if nodes.len() == 1 {
                    format!(
                        "Storage probe failing ({result}) on volume {volume} of node {}",
                        nodes[0]
                    )
                } else {
                    format!(
                        "Storage probe failing ({result}) on volume {volume} of {}: {}",
                        plural(nodes.len(), "node", "nodes"),
                        list_some(&nodes, 4)
                    )
                },
            )
            .evidence(lines)
            .cause(cause)
            .next(format!("On node {}: {}", nodes[0], lower_first(next)))
        })
        .collect()
}

/// `--storage-test`: the PVC and Job diagnose created.
pub fn storage_test(s: &Snapshot) -> Vec<Finding> {
    let Some(t) = &s.storage_test else {
        return Vec::new();
    };
    let class = t.storage_class.as_deref().unwrap_or("<default>");
    let what = format!(
        "PVC and Job {}/{} on StorageClass {class}",
        t.namespace, t.pvc
    );
    let mut out = Vec::new();
    let result = t
        .probe
        .as_ref()
        .and_then(|p| p["result"].as_str())
        .map(str::to_owned);
    match (t.status.as_str(), result.as_deref()) {
        ("succeeded", Some("success")) => {}
        ("not_created", _) => out.push(
            Finding::new(
                "storage.test-not-run",
                Severity::Warning,
                "The storage test could not be started",
            )
            .evidence([t.detail.clone().unwrap_or_default()])
            .cause("Creating the test PVC or Job failed (often RBAC: create persistentvolumeclaims and jobs.batch in the namespace).")
            .next("Grant the create rights for the namespace, or run without --storage-test."),
        ),
        (_, Some(r)) if r != "success" => {
            let (cause, next) = storage_result_meaning(r);
            out.push(
                Finding::new(
                    "storage.test-failed",
                    Severity::Critical,
                    format!("Storage test on StorageClass {class} failed: {r}"),
                )
                .evidence([what.clone()])
                .evidence(t.probe.iter().map(|p| format!("probe: {p}")))
                .cause(cause)
                .next(next),
            );
        }
        ("failed", _) | ("succeeded", _) => out.push(
            Finding::new(
                "storage.test-failed",
                Severity::Warning,
                format!("Storage test Job on StorageClass {class} ended without a probe result"),
            )
            .evidence([what.clone(), format!("Job status: {}", t.status)])
            .cause("The probe container failed before printing its result: the image could not run, or the volume mount failed.")
            .next(format!("Run again and `kubectl -n {} describe pod -l job-name={}` before it is cleaned up, or use --collect-only with a longer --storage-test-timeout.", t.namespace, t.job)),
        ),
        ("timeout", _) if matches!(t.pvc_phase.as_deref(), None | Some("Pending")) => out.push(
            Finding::new(
                "storage.test-pvc-pending",
                Severity::Critical,
                format!(
                    "Storage test PVC on StorageClass {class} stayed Pending for {:.0}s: dynamic provisioning does not work",
                    t.seconds
                ),
            )
            .evidence([what.clone()])
            .evidence(t.pvc_events.iter().cloned())
            .cause("Nothing provisioned a volume for a new claim: the class's provisioner (CSI controller / external-provisioner) is not running or fails (see the events, if any).")
            .next("Check the provisioner's controller Deployment and logs for the class; `kubectl get storageclass` for its provisioner name."),
        ),
        ("timeout", _) => out.push(
            Finding::new(
                "storage.test-timeout",
                Severity::Warning,
                format!("Storage test Job on StorageClass {class} did not finish within {:.0}s", t.seconds),
            )
            .evidence([what.clone(), format!("PVC phase: {}", t.pvc_phase.as_deref().unwrap_or("?"))])
            .cause("The volume was provisioned but the probe pod did not run to completion: not scheduled, image not pulled, or the volume not attached or mounted.")
            .next("Run again with a longer --storage-test-timeout and watch `kubectl get pods -l job-name=...` and its events."),
        ),
        _ => {}
    }
    if !t.cleanup_errors.is_empty() {
        out.push(
            Finding::new(
                "storage.test-cleanup-failed",
                Severity::Warning,
                "The storage test's objects could not all be deleted",
            )
            .evidence(t.cleanup_errors.iter().cloned())
            .cause("A delete call failed or timed out.")
            .next(format!(
                "`kubectl -n {} delete job,pvc -l app.kubernetes.io/name=kube-netprobe-storage-test`",
                t.namespace
            )),
        );
    }
    out
}

/// How long a storage operation may be in flight before it reads as stuck (the StorageIOStuck
/// alert's default).
pub const STUCK_SECONDS: f64 = 60.0;

/// Volumes whose storage operation has been in flight for longer than [`STUCK_SECONDS`]
/// (`netprobe_storage_stuck_seconds`): the volume hangs (a dead NFS server, a frozen
/// filesystem), and the kube-netprobe pod's prober thread with it.
pub fn storage_stuck(s: &Snapshot) -> Vec<Finding> {
    let scrapes: Vec<(&str, &str, Vec<Sample>)> = s
        .probe_scrapes
        .iter()
        .filter_map(|x| {
            Some((
                x.node.as_str(),
                x.pod.as_str(),
                scrape::parse(x.text.as_deref()?),
            ))
        })
        .collect();
    /// A node's kube-netprobe pod and its stuck volumes with their seconds.
    type Stuck<'a> = (&'a str, Vec<(String, f64)>);
    let mut stuck: BTreeMap<&str, Stuck> = BTreeMap::new();
    for (node, pod, samples) in &scrapes {
        for x in samples
            .iter()
            .filter(|x| x.name == "netprobe_storage_stuck_seconds" && x.value >= STUCK_SECONDS)
        {
            stuck
                .entry(node)
                .or_insert((pod, Vec::new()))
                .1
                .push((x.label("volume").to_owned(), x.value));
        }
    }
    let namespace_of = |pod: &str| {
        s.netprobe_pods
            .iter()
            .flatten()
            .find(|p| p.metadata.name.as_deref() == Some(pod))
            .and_then(|p| p.metadata.namespace.clone())
    };
    let nodes = scrapes.len();
    let failing = stuck.len();
    stuck
        .into_iter()
        .map(|(node, (pod, volumes))| {
            let longest = volumes.iter().map(|(_, v)| *v).fold(0.0, f64::max);
            let names: Vec<String> = volumes.iter().map(|(v, _)| v.clone()).collect();
            let finding = Finding::new(
                "storage.probe-stuck",
                Severity::Critical,
                format!(
                    "Storage probe stuck on volume {} of node {node} for {}",
                    list_some(&names, 4),
                    human_seconds(longest)
                ),
            )
            .evidence(volumes.iter().map(|(v, secs)| {
                format!("{pod} on {node}: an operation on volume {v} in flight for {secs:.0} s")
            }))
            .cause("A write, fsync, read or open on the volume has not returned: the filesystem hangs (a frozen filesystem, an NFS or iSCSI server gone, a dead disk). Every pod using that volume hangs the same way; the kube-netprobe pod's prober thread waits in the kernel.")
            .next(format!(
                "On {node}: `dmesg | tail` (hung task, I/O errors, NFS server not responding), `mount | grep` the volume, `fsfreeze -u` if someone froze it. Deleting the kube-netprobe pod frees its prober once the kernel lets go of the process."
            ))
            .blames(node);
            match namespace_of(pod) {
                Some(namespace) => finding.repairs([Candidate {
                    action: RepairAction::delete_stuck_netprobe,
                    namespace,
                    pod: Some(pod.to_owned()),
                    node: node.to_owned(),
                    subject: format!("node/{node}"),
                    failing,
                    of: nodes,
                    for_seconds: Some(longest),
                }]),
                // Read from a file (--probe-metrics): no pod to act on.
                None => finding,
            }
        })
        .collect()
}

/// `95 s`, `12 min`, `3.5 h`.
fn human_seconds(secs: f64) -> String {
    if secs < 120.0 {
        format!("{secs:.0} s")
    } else if secs < 7200.0 {
        format!("{:.0} min", secs / 60.0)
    } else {
        format!("{:.1} h", secs / 3600.0)
    }
}
