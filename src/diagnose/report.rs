//! Rendering: the report as JSON (the stable schema in docs/diagnose-report.schema.json),
//! Markdown and terminal text, and the raw evidence files written next to them (HTML is
//! [`super::html`]).

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::analyse::{Finding, Matrix, Severity};
use super::collect::{ReadError, Snapshot};

/// Bumped on any incompatible change to report.json; additions keep it.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub critical: usize,
    pub warning: usize,
    pub info: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Collection {
    /// Reads that failed, with the reason and, when forbidden, the RBAC rule that would allow them.
    pub errors: Vec<ReadError>,
    /// The distinct RBAC rules missing (`verb resource.group (scope)`).
    pub missing_rbac: Vec<String>,
    /// Evidence files written in the output directory.
    pub files: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema_version: u32,
    pub tool_version: &'static str,
    pub generated_at: String,
    pub server: String,
    pub namespace: String,
    /// `healthy`, `warning`, `critical`, or `collected` with --collect-only.
    pub status: &'static str,
    pub exit_code: u8,
    pub summary: Summary,
    pub findings: Vec<Finding>,
    pub collection: Collection,
    pub matrix: Matrix,
    /// `--storage-test`'s outcome; absent without the flag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_test: Option<super::storage_test::Outcome>,
}

/// Exit code of diagnose: 0 healthy (info findings at most), 1 warnings, 2 critical.
pub fn exit_code(findings: &[Finding]) -> u8 {
    match findings.iter().map(|f| f.severity).min() {
        Some(Severity::Critical) => crate::exit::CRITICAL,
        Some(Severity::Warning) => crate::exit::FINDINGS,
        _ => crate::exit::OK,
    }
}

impl Report {
    pub fn new(
        snapshot: &Snapshot,
        findings: Vec<Finding>,
        matrix: Matrix,
        generated_at: String,
        collect_only: bool,
    ) -> Report {
        let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
        let summary = Summary {
            critical: count(Severity::Critical),
            warning: count(Severity::Warning),
            info: count(Severity::Info),
        };
        let exit_code = exit_code(&findings);
        let status = if collect_only {
            "collected"
        } else {
            match exit_code {
                2 => "critical",
                1 => "warning",
                _ => "healthy",
            }
        };
        let mut missing_rbac: Vec<String> = snapshot
            .errors
            .iter()
            .filter_map(|e| e.missing_rbac.clone())
            .collect();
        missing_rbac.sort();
        missing_rbac.dedup();
        Report {
            schema_version: SCHEMA_VERSION,
            tool_version: env!("CARGO_PKG_VERSION"),
            generated_at,
            server: snapshot.server.clone(),
            namespace: snapshot.namespace.clone(),
            status,
            exit_code,
            summary,
            findings,
            collection: Collection {
                errors: snapshot.errors.clone(),
                missing_rbac,
                files: Vec::new(),
            },
            matrix,
            storage_test: snapshot.storage_test.clone(),
        }
    }
}

/// One line on the storage test's figures.
pub(super) fn storage_test_line(t: &super::storage_test::Outcome) -> String {
    let mib = |key: &str| {
        t.probe
            .as_ref()
            .and_then(|p| p["throughput_bytes_per_second"][key].as_f64())
            .map(|v| format!("{key} {:.1} MiB/s", v / 1048576.0))
    };
    let figures: Vec<String> = ["write", "read"].iter().filter_map(|k| mib(k)).collect();
    format!(
        "Storage test ({}/{} on {}): {} in {:.1}s{}",
        t.namespace,
        t.pvc,
        t.storage_class.as_deref().unwrap_or("the default class"),
        t.status,
        t.seconds,
        if figures.is_empty() {
            String::new()
        } else {
            format!(", {}", figures.join(", "))
        }
    )
}

/// What `kube-netprobe repair` would do, and how many of the set fail.
fn repair_line(r: &super::analyse::Candidate) -> String {
    format!(
        "`kube-netprobe repair` may {} ({} of {} failing; dry-run unless --apply, docs/repair.md)",
        r.describe(),
        r.failing,
        r.of
    )
}

fn severity_word(s: Severity, colour: bool) -> String {
    let (word, code) = match s {
        Severity::Critical => ("CRITICAL", "1;31"),
        Severity::Warning => ("WARNING", "1;33"),
        Severity::Info => ("INFO", "1;36"),
    };
    if colour {
        format!("\x1b[{code}m{word}\x1b[0m")
    } else {
        word.to_owned()
    }
}

/// The terminal summary: findings first (the first line names the likeliest cause), then one
/// line of totals and what could not be read.
pub fn text(report: &Report, colour: bool, out_dir: Option<&Path>) -> String {
    let mut t = String::new();
    if report.status == "collected" {
        let _ = writeln!(t, "Collected (no analysis: --collect-only).");
    } else if report.findings.is_empty() {
        let (ok, reset) = if colour {
            ("\x1b[1;32m", "\x1b[0m")
        } else {
            ("", "")
        };
        let _ = writeln!(
            t,
            "{ok}OK{reset} no problems found: CoreDNS, kube-dns, NetworkPolicies in {}, nodes, \
             storage{}",
            report.namespace,
            if report.matrix.nodes.is_empty() {
                String::new()
            } else {
                format!(", live matrix of {} nodes", report.matrix.nodes.len())
            }
        );
    }
    for f in &report.findings {
        let _ = writeln!(
            t,
            "{} {} [{}]",
            severity_word(f.severity, colour),
            f.title,
            f.id
        );
        if !f.cause.is_empty() {
            let _ = writeln!(t, "  cause: {}", f.cause);
        }
        if !f.next_step.is_empty() {
            let _ = writeln!(t, "  next:  {}", f.next_step);
        }
        for r in &f.repairs {
            let _ = writeln!(t, "  repair: {}", repair_line(r));
        }
        for e in f.evidence.iter().take(8) {
            let _ = writeln!(t, "    - {e}");
        }
        if f.evidence.len() > 8 {
            let _ = writeln!(t, "    - ... {} more in report.md", f.evidence.len() - 8);
        }
    }
    let _ = writeln!(
        t,
        "\nkube-netprobe diagnose: {} critical, {} warning, {} info; namespace {}; API {}",
        report.summary.critical,
        report.summary.warning,
        report.summary.info,
        report.namespace,
        report.server
    );
    if let Some(st) = &report.storage_test {
        let _ = writeln!(t, "{}", storage_test_line(st));
    }
    if !report.collection.missing_rbac.is_empty() {
        let _ = writeln!(
            t,
            "Missing RBAC (partial report): {}",
            report.collection.missing_rbac.join("; ")
        );
    }
    if let Some(dir) = out_dir {
        let _ = writeln!(t, "Report and evidence: {}", dir.display());
    }
    t
}

pub fn markdown(report: &Report) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "# Network diagnostics: {}\n", report.status);
    let _ = writeln!(
        t,
        "- generated: {}\n- API server: {}\n- namespace: {}\n- findings: {} critical, {} warning, {} info\n",
        report.generated_at,
        report.server,
        report.namespace,
        report.summary.critical,
        report.summary.warning,
        report.summary.info
    );
    if report.findings.is_empty() && report.status != "collected" {
        let _ = writeln!(t, "No problems found.\n");
    }
    for f in &report.findings {
        let _ = writeln!(
            t,
            "## {} {} (`{}`)\n",
            f.severity.as_str().to_uppercase(),
            f.title,
            f.id
        );
        let _ = writeln!(t, "**Likely cause:** {}\n", f.cause);
        let _ = writeln!(t, "**Next step:** {}\n", f.next_step);
        for r in &f.repairs {
            let _ = writeln!(t, "**Repair:** {}\n", repair_line(r));
        }
        if !f.evidence.is_empty() {
            let _ = writeln!(t, "Evidence:\n\n```");
            for e in &f.evidence {
                let _ = writeln!(t, "{e}");
            }
            let _ = writeln!(t, "```\n");
        }
    }
    if !report.matrix.nodes.is_empty() {
        let _ = writeln!(t, "## Live matrix (kube-netprobe peer probes)\n");
        let dual_stack = report.matrix.families.len() > 1;
        for (protocol, family) in report
            .matrix
            .protocols
            .iter()
            .flat_map(|p| report.matrix.families.iter().map(move |f| (p, f)))
        {
            if dual_stack {
                let _ = writeln!(
                    t,
                    "Protocol `{protocol}` over {family} (row probes column):\n"
                );
            } else {
                let _ = writeln!(t, "Protocol `{protocol}` (row probes column):\n");
            }
            let _ = write!(t, "| from \\ to |");
            for n in &report.matrix.nodes {
                let _ = write!(t, " {n} |");
            }
            let _ = write!(t, "\n| --- |");
            for _ in &report.matrix.nodes {
                let _ = write!(t, " --- |");
            }
            t.push('\n');
            for src in &report.matrix.nodes {
                let _ = write!(t, "| {src} |");
                for dst in &report.matrix.nodes {
                    let cell = report.matrix.cells.iter().find(|c| {
                        &c.source == src
                            && &c.target == dst
                            && &c.protocol == protocol
                            && &c.family == family
                    });
                    let _ = write!(
                        t,
                        " {} |",
                        match cell {
                            Some(c) if c.up => "up",
                            // Too fresh to judge (fewer than MIN_PROBES probes): not counted.
                            Some(c) if !c.judged() => "down (new)",
                            Some(_) => "**DOWN**",
                            None => "",
                        }
                    );
                }
                t.push('\n');
            }
            t.push('\n');
        }
        if !report.matrix.unread.is_empty() {
            let _ = writeln!(
                t,
                "Not read (pod /metrics unreachable): {}\n",
                report.matrix.unread.join(", ")
            );
        }
    }
    if let Some(st) = &report.storage_test {
        let _ = writeln!(t, "## Storage test\n\n{}\n", storage_test_line(st));
        if let Some(p) = &st.probe {
            let _ = writeln!(t, "```json\n{p}\n```\n");
        }
    }
    if !report.collection.errors.is_empty() {
        let _ = writeln!(t, "## Could not read\n");
        for e in &report.collection.errors {
            let _ = writeln!(
                t,
                "- `{}`: {} ({}){}",
                e.call,
                e.reason,
                e.message,
                e.missing_rbac
                    .as_ref()
                    .map(|r| format!("; needs RBAC `{r}`"))
                    .unwrap_or_default()
            );
        }
        t.push('\n');
    }
    t
}

fn yaml<T: Serialize>(value: &T) -> String {
    serde_saphyr::to_string(value).unwrap_or_else(|e| format!("# could not render: {e}\n"))
}

/// Writes the raw evidence (what the seed script's `kubectl get` and `kubectl logs` wrote), and
/// returns the file names.
pub fn write_evidence(dir: &Path, s: &Snapshot) -> std::io::Result<Vec<String>> {
    let mut files = Vec::new();
    let mut put = |file: &str, text: String| -> std::io::Result<()> {
        std::fs::write(dir.join(file), text)?;
        files.push(file.to_owned());
        Ok(())
    };
    if let Some(pods) = &s.coredns_pods {
        put("coredns-pods.yaml", yaml(pods))?;
    }
    if let Some(events) = &s.coredns_events {
        put("coredns-events.yaml", yaml(events))?;
    }
    if let Some(logs) = &s.coredns_logs {
        let mut text = String::new();
        for (pod, log) in logs {
            let _ = writeln!(text, "==> {pod} <==\n{log}");
        }
        put("coredns-logs.txt", text)?;
    }
    if let Some(Some(corefile)) = &s.corefile {
        put("Corefile", corefile.clone())?;
    }
    if s.kube_dns_service.is_some() || s.kube_dns_endpoints.is_some() {
        #[derive(Serialize)]
        struct KubeDns<'a> {
            service: &'a Option<Option<k8s_openapi::api::core::v1::Service>>,
            endpoints: &'a Option<Option<k8s_openapi::api::core::v1::Endpoints>>,
        }
        put(
            "kube-dns.yaml",
            yaml(&KubeDns {
                service: &s.kube_dns_service,
                endpoints: &s.kube_dns_endpoints,
            }),
        )?;
    }
    if let Some(p) = &s.network_policies {
        put("networkpolicies.yaml", yaml(p))?;
    }
    if s.namespace_services.is_some() || s.namespace_pods.is_some() {
        #[derive(Serialize)]
        struct Ns<'a> {
            pods: &'a Option<Vec<k8s_openapi::api::core::v1::Pod>>,
            services: &'a Option<Vec<k8s_openapi::api::core::v1::Service>>,
            endpoints: &'a Option<Vec<k8s_openapi::api::core::v1::Endpoints>>,
        }
        put(
            "namespace.yaml",
            yaml(&Ns {
                pods: &s.namespace_pods,
                services: &s.namespace_services,
                endpoints: &s.namespace_endpoints,
            }),
        )?;
    }
    if let Some(n) = &s.nodes {
        put("nodes.yaml", yaml(n))?;
    }
    #[derive(Serialize)]
    struct Storage<'a> {
        csidrivers: &'a Option<Vec<k8s_openapi::api::storage::v1::CSIDriver>>,
        csinodes: &'a Option<Vec<k8s_openapi::api::storage::v1::CSINode>>,
        storageclasses: &'a Option<Vec<k8s_openapi::api::storage::v1::StorageClass>>,
        persistentvolumes: &'a Option<Vec<k8s_openapi::api::core::v1::PersistentVolume>>,
        persistentvolumeclaims: &'a Option<Vec<k8s_openapi::api::core::v1::PersistentVolumeClaim>>,
        pvc_events: &'a Option<Vec<k8s_openapi::api::core::v1::Event>>,
        volumeattachments: &'a Option<Vec<k8s_openapi::api::storage::v1::VolumeAttachment>>,
    }
    put(
        "storage.yaml",
        yaml(&Storage {
            csidrivers: &s.csi_drivers,
            csinodes: &s.csi_nodes,
            storageclasses: &s.storage_classes,
            persistentvolumes: &s.pvs,
            persistentvolumeclaims: &s.pvcs,
            pvc_events: &s.pvc_events,
            volumeattachments: &s.volume_attachments,
        }),
    )?;
    if !s.probe_scrapes.is_empty() {
        let mut text = String::new();
        for scrape in &s.probe_scrapes {
            let _ = writeln!(text, "# ==> pod {} on node {} <==", scrape.pod, scrape.node);
            match (&scrape.text, &scrape.error) {
                (Some(m), _) => text.push_str(m),
                (None, e) => {
                    let _ = writeln!(text, "# not read: {}", e.as_deref().unwrap_or("?"));
                }
            }
        }
        put("netprobe-metrics.txt", text)?;
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(id: &'static str, severity: Severity) -> Finding {
        Finding {
            id,
            severity,
            title: format!("title of {id}"),
            evidence: (0..10).map(|i| format!("line {i}")).collect(),
            cause: "because".into(),
            next_step: "do this".into(),
            nodes: Vec::new(),
            repairs: Vec::new(),
        }
    }

    fn report(findings: Vec<Finding>) -> Report {
        let snapshot = Snapshot {
            namespace: "shop".into(),
            server: "https://10.0.0.1:6443/".into(),
            ..Snapshot::default()
        };
        Report::new(
            &snapshot,
            findings,
            Matrix::default(),
            "2026-11-26T03:00:00Z".into(),
            false,
        )
    }

    #[test]
    fn exit_code_follows_the_worst_severity() {
        assert_eq!(exit_code(&[]), 0);
        assert_eq!(exit_code(&[finding("a.b", Severity::Info)]), 0);
        assert_eq!(
            exit_code(&[
                finding("a.b", Severity::Info),
                finding("a.c", Severity::Warning)
            ]),
            1
        );
        assert_eq!(
            exit_code(&[
                finding("a.c", Severity::Warning),
                finding("a.d", Severity::Critical)
            ]),
            2
        );
    }

    #[test]
    fn text_leads_with_the_first_finding_its_cause_and_next_step() {
        let r = report(vec![
            finding("dns.x", Severity::Critical),
            finding("storage.y", Severity::Warning),
        ]);
        assert_eq!(r.status, "critical");
        let plain = text(&r, false, None);
        let lines: Vec<&str> = plain.lines().collect();
        assert_eq!(lines[0], "CRITICAL title of dns.x [dns.x]");
        assert_eq!(lines[1], "  cause: because");
        assert_eq!(lines[2], "  next:  do this");
        assert!(plain.contains("    - ... 2 more in report.md"));
        assert!(!plain.contains('\x1b'));
        assert!(text(&r, true, None).starts_with("\x1b[1;31mCRITICAL\x1b[0m title of dns.x"));
        let md = markdown(&r);
        assert!(md.starts_with("# Network diagnostics: critical\n"));
        assert!(md.contains("## CRITICAL title of dns.x (`dns.x`)"));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["schema_version"], 1);
        assert_eq!(json["summary"]["warning"], 1);
        assert!(json.get("storage_test").is_none());
    }

    #[test]
    fn healthy_text_says_ok() {
        let r = report(vec![]);
        assert_eq!(r.status, "healthy");
        assert!(text(&r, false, None).starts_with("OK no problems found"));
    }
}
