//! `kube-netprobe diagnose` run on the cluster, through the real pod proxy and kubelet.

use std::process::{Command, Stdio};

use serde_json::Value;

use crate::util::bin;

use super::{Cluster, log};

pub(super) struct Report {
    pub(super) code: i32,
    pub(super) json: Value,
    pub(super) stdout: String,
}

impl Report {
    /// Findings as `severity id: title`.
    pub(super) fn findings(&self) -> Vec<String> {
        self.json["findings"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| {
                format!(
                    "{} {}: {}",
                    f["severity"].as_str().unwrap_or_default(),
                    f["id"].as_str().unwrap_or_default(),
                    f["title"].as_str().unwrap_or_default()
                )
            })
            .collect()
    }

    pub(super) fn has(&self, id: &str, title_contains: &str) -> bool {
        self.json["findings"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|f| {
                f["id"] == id
                    && f["title"]
                        .as_str()
                        .is_some_and(|t| t.contains(title_contains))
            })
    }

    /// Critical findings whose title names one of `nodes`.
    pub(super) fn critical_naming(&self, nodes: &[&String]) -> Vec<String> {
        self.findings()
            .into_iter()
            .filter(|f| f.starts_with("critical") && nodes.iter().any(|n| f.contains(n.as_str())))
            .collect()
    }
}

pub(super) fn diagnose(cluster: &Cluster, extra: &[&str]) -> Report {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("report");
    let out = Command::new(bin())
        .arg("diagnose")
        .arg(format!("--kubeconfig={}", cluster.kubeconfig()))
        .args([
            "--namespace",
            "default",
            "--format",
            "json",
            "--timeout",
            "10s",
        ])
        .arg("--out")
        .arg(&out_dir)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run diagnose");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let text = std::fs::read_to_string(out_dir.join("report.json")).unwrap_or_else(|e| {
        panic!(
            "diagnose wrote no report.json ({e}); exit {:?}\n{stdout}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let json: Value = serde_json::from_str(&text).expect("report.json parses");
    let report = Report {
        code: out.status.code().unwrap_or(-1),
        json,
        stdout,
    };
    log(format!(
        "diagnose exit {}:\n    {}",
        report.code,
        report.findings().join("\n    ")
    ));
    report
}
