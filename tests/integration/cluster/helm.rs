//! The chart installed from this checkout, its PrometheusRule's alerts with shortened `for:`.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::{Cluster, DOWN_FOR, FOR_SCALE, KEPT_FOR, MIN_FOR, NAMESPACE, RELEASE, repo};

pub(super) fn helm() -> PathBuf {
    let path = std::env::var_os("HELM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/kube-netprobe/helm-layer-2.2.2/helm"));
    assert!(
        path.exists(),
        "{} missing: `make deps` installs helm",
        path.display()
    );
    path
}

/// `--set` arguments pointing the chart at the local image (the chart's default otherwise).
fn image_values() -> Vec<String> {
    vec![
        "--set".into(),
        "image.repository=localhost/kube-netprobe".into(),
        "--set".into(),
        format!("image.tag={}", env!("CARGO_PKG_VERSION")),
    ]
}

pub(super) fn helm_upgrade(cluster: &Cluster, extra: &[&str]) {
    let out = Command::new(helm())
        .args(["upgrade", "--install", RELEASE])
        .arg(repo().join("helm/kube-netprobe"))
        .args(["--namespace", NAMESPACE, "--create-namespace"])
        .arg(format!("--kubeconfig={}", cluster.kubeconfig()))
        .args(image_values())
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run helm");
    assert!(
        out.status.success(),
        "helm upgrade --install: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The rules of the chart's PrometheusRule as a Prometheus rule file (its `spec`), with every
/// `*For` parameter scaled by [`FOR_SCALE`] (but [`DOWN_FOR`], and [`KEPT_FOR`] as shipped).
pub(super) fn chart_rules() -> String {
    let values: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(repo().join("helm/kube-netprobe/values.yaml")).expect("values"),
    )
    .expect("values.yaml parses");
    let mut args: Vec<String> = vec![
        "--set".into(),
        "prometheusRule.onlyIfAPIExists=false".into(),
        "--show-only".into(),
        "templates/prometheusrule.yaml".into(),
    ];
    let parameters = values["prometheusRule"]["parameters"]
        .as_object()
        .expect("prometheusRule.parameters");
    for (key, default) in parameters
        .iter()
        .filter(|(k, _)| k.ends_with("For") && !KEPT_FOR.contains(&k.as_str()))
    {
        let value = if key == DOWN_FOR.0 {
            DOWN_FOR.1.to_string()
        } else {
            let default = default.as_str().expect("a *For parameter is a duration");
            format!("{}s", (seconds(default) / FOR_SCALE).max(MIN_FOR))
        };
        args.push("--set".into());
        args.push(format!("prometheusRule.parameters.{key}={value}"));
    }
    let out = Command::new(helm())
        .args(["template", RELEASE])
        .arg(repo().join("helm/kube-netprobe"))
        .args(["--namespace", NAMESPACE])
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .expect("run helm template");
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rule: Value = serde_saphyr::from_str(&String::from_utf8_lossy(&out.stdout))
        .expect("the PrometheusRule parses");
    assert_eq!(rule["kind"], "PrometheusRule");
    serde_json::to_string_pretty(&rule["spec"]).expect("rule file")
}

/// Seconds of a one-unit duration as the chart's values write them (`30s`, `5m`, `1h`).
fn seconds(d: &str) -> u64 {
    let (n, unit) = d.split_at(d.len() - 1);
    let n: u64 = n.parse().unwrap_or_else(|_| panic!("duration {d:?}"));
    match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => panic!("duration {d:?}: unit {unit:?}"),
    }
}
