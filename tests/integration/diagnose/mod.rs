//! `kube-netprobe diagnose` against a real kube-apiserver (with etcd), one seeded cluster per
//! fault class docs/diagnose.md lists. One apiserver serves every scenario: namespace-scoped faults live in
//! their own namespaces; a cluster-wide fault is applied, diagnosed and reverted before the
//! next, so every run starts from the same healthy cluster and must name its fault and no other
//! (the finding ids are compared whole). Also: an RBAC-limited identity (partial report naming
//! the missing rules), rejected credentials and unreachable API servers (exit 3 within the
//! timeout), and every report.json checked against docs/diagnose-report.schema.json.
//!
//! The fixture has no kubelet, so CoreDNS logs never come through the API here: the runs pass
//! fixture log files with `--coredns-logs` (one run checks that the unreadable logs are reported
//! as a gap, not as a fault). The live matrix likewise comes from captured `/metrics` text given
//! with `--probe-metrics NODE=FILE`, not from running daemons behind the pod proxy.

// The healthy cluster the runs start from, the faults and what diagnose must say of each.
mod scenarios;
pub(crate) mod seed;

// The suites.
mod api_failures;
mod capacity;
mod faults;
mod live;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{Checks, bin};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/diagnose")
        .join(name)
}

fn schema() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/diagnose-report.schema.json")
}

/// One finished `diagnose` run.
struct Run {
    what: String,
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
    report: Option<serde_json::Value>,
    dir: PathBuf,
}

impl Run {
    fn ids(&self) -> Vec<String> {
        self.report
            .as_ref()
            .and_then(|r| r["findings"].as_array())
            .map(|f| {
                f.iter()
                    .map(|f| f["id"].as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn context(&self) -> String {
        format!(
            "{}: exit {:?} after {:?}\nstdout:\n{}\nstderr:\n{}",
            self.what, self.code, self.took, self.stdout, self.stderr
        )
    }

    /// The first line names `id`, the next two give the cause and the next step.
    fn leads_with(&self, checks: &mut Checks, severity: &str, id: &str) {
        let lines: Vec<&str> = self.stdout.lines().collect();
        checks.that(
            lines.first().is_some_and(|l| {
                l.starts_with(&format!("{severity} ")) && l.ends_with(&format!("[{id}]"))
            }) && lines.get(1).is_some_and(|l| l.starts_with("  cause: "))
                && lines.get(2).is_some_and(|l| l.starts_with("  next:  ")),
            format!(
                "stdout does not lead with {severity} [{id}], cause, next:\n{}",
                self.context()
            ),
        );
    }
}

fn diagnose(what: &str, kubeconfig: &Path, out: &Path, args: &[&str]) -> Run {
    let dir = out.join(what);
    let started = Instant::now();
    let output = Command::new(bin())
        .arg("diagnose")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--out")
        .arg(&dir)
        .args(args)
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("run kube-netprobe diagnose");
    let report = std::fs::read_to_string(dir.join("report.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    Run {
        what: what.to_owned(),
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        took: started.elapsed(),
        report,
        dir,
    }
}

/// Checks exit code and the exact set of finding ids (so absent faults are not named).
fn expect(checks: &mut Checks, run: &Run, code: i32, ids: &[&str]) {
    checks.that(
        run.code == Some(code),
        format!("want exit {code}\n{}", run.context()),
    );
    let mut got = run.ids();
    got.sort();
    let mut want: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    want.sort();
    checks.that(
        got == want,
        format!("finding ids: got {got:?}, want {want:?}\n{}", run.context()),
    );
}

/// Validates every report.json under `root` with Python's jsonschema (a dev tool, not a Rust
/// dependency: the `jsonschema` crate and its tree would cost more build time than this test).
fn validate_reports(checks: &mut Checks, reports: &[PathBuf]) {
    let probe = Command::new("python3")
        .args(["-c", "import jsonschema"])
        .output();
    assert!(
        probe.is_ok_and(|o| o.status.success()),
        "python3 with jsonschema missing: `make deps` (scripts/install-test-deps) installs \
         python3-jsonschema"
    );
    let script = "import json, sys, jsonschema\n\
        schema = json.load(open(sys.argv[1]))\n\
        jsonschema.Draft202012Validator.check_schema(schema)\n\
        bad = 0\n\
        for path in sys.argv[2:]:\n\
        \x20   errors = list(jsonschema.Draft202012Validator(schema).iter_errors(json.load(open(path))))\n\
        \x20   for e in errors: print(path, list(e.absolute_path), e.message); bad += 1\n\
        sys.exit(1 if bad else 0)\n";
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(schema())
        .args(reports)
        .output()
        .expect("run python3");
    checks.that(
        out.status.success(),
        format!(
            "report.json does not validate against the schema:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    );
}

fn kubeconfig_for(dir: &Path, server: &str) -> PathBuf {
    let path = dir.join(format!(
        "kubeconfig-{}",
        server.replace(['/', ':', '.'], "_")
    ));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{ server: \"{server}\", insecure-skip-tls-verify: true }}\n\
             users:\n- name: u\n  user: {{ token: abc }}\ncontexts:\n- name: x\n  context: {{ cluster: c, user: u }}\ncurrent-context: x\n"
        ),
    )
    .unwrap();
    path
}
