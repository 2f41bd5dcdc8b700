//! One seeded fault at a time on a real kube-apiserver: each run names its fault and no other.
//! The runs are the table in `scenarios`; after them, the two that need a process of their
//! own: on a terminal, and a Ctrl-C while the storage test waits.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::apiserver::Apiserver;
use crate::util::{Checks, bin, poll};

use super::scenarios::{SCENARIOS, check_says, kubeconfig, storage_test_leftovers};
use super::seed::{app_namespace, base, healthy_coredns, ready_node};
use super::{diagnose, expect, fixture, validate_reports};

#[test]
#[ignore = "needs root: a kube-apiserver of its own (apt-get, /var/cache)"]
fn diagnose_names_each_seeded_fault_and_no_other() {
    let api = Apiserver::start();
    let started = Instant::now();
    let out = tempfile::tempdir().expect("tempdir");
    let admin = api.kubeconfig_admin().to_owned();
    let logs = fixture("coredns-healthy.log");
    let logs = logs.to_str().expect("utf-8 path");
    let mut checks = Checks::default();
    let mut reports = Vec::new();

    api.apply(&base(&["node-a", "node-b"]));
    ready_node(&api, "node-a", false);
    ready_node(&api, "node-b", false);
    healthy_coredns(&api);
    api.patch_status(
        "persistentvolumeclaims",
        "shop",
        "data",
        r#"{"status":{"phase":"Bound"}}"#,
    );
    app_namespace(&api, "healthy", "");

    let metrics_dir = out.path().join("metrics");
    std::fs::create_dir_all(&metrics_dir).unwrap();
    for s in SCENARIOS {
        (s.make)(&api);
        let mut args = vec!["-n".to_owned(), s.namespace.to_owned()];
        if s.coredns_logs {
            args.extend(["--coredns-logs".to_owned(), logs.to_owned()]);
        }
        args.extend(s.flags.iter().map(|f| f.to_string()));
        for (node, text) in (s.metrics)() {
            let file = metrics_dir.join(format!("{}-{node}.txt", s.name));
            std::fs::write(&file, format!("{text}# EOF\n")).unwrap();
            args.extend([
                "--probe-metrics".to_owned(),
                format!("{node}={}", file.display()),
            ]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = diagnose(
            s.name,
            &kubeconfig(&api, s.who, out.path()),
            out.path(),
            &args,
        );
        if r.report.is_some() {
            reports.push(r.dir.join("report.json"));
        }
        expect(&mut checks, &r, s.exit, s.findings);
        if let Some(severity) = s.leads {
            r.leads_with(&mut checks, severity, s.findings[0]);
        }
        for says in s.says {
            check_says(&mut checks, &r, says);
        }
        (s.also)(&mut checks, &r, &api);
        (s.heal)(&api);
    }

    // On a terminal (a pty from script(1)): colour on stdout, progress on stderr.
    let tty_out = out.path().join("tty");
    let cmdline = format!(
        "{} diagnose --kubeconfig {} --out {} -n healthy --coredns-logs {logs}",
        bin(),
        admin.display(),
        tty_out.display()
    );
    let o = Command::new("script")
        .args(["-qec", &cmdline, "/dev/null"])
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .output()
        .expect("run script(1) (util-linux) for a terminal");
    let text = String::from_utf8_lossy(&o.stdout);
    checks.that(
        text.contains("\x1b[1;32mOK\x1b[0m no problems found") && text.contains("collecting ["),
        format!("on a tty: no colour or no progress: {text:?}"),
    );

    // Ctrl-C while the test waits: cleaned up, exit 130.
    let mut child = Command::new(bin())
        .arg("diagnose")
        .arg("--kubeconfig")
        .arg(&admin)
        .arg("--out")
        .arg(out.path().join("storage-test-interrupted"))
        .args(["-n", "healthy", "--coredns-logs", logs])
        .args(["--storage-test", "--storage-test-timeout", "60s"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn diagnose");
    let created = poll(
        "the storage test PVC and Job",
        Duration::from_secs(10),
        || {
            let l = storage_test_leftovers(&api);
            if l.contains("persistentvolumeclaim/") && l.contains("job.batch/") {
                Ok(l)
            } else {
                Err(l)
            }
        },
    );
    let interrupted_at = Instant::now();
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let status = poll(
        "diagnose to exit after SIGINT",
        Duration::from_secs(10),
        || {
            child
                .try_wait()
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "running".to_owned())
        },
    );
    let output = child.wait_with_output().expect("diagnose output");
    checks.that(
        status.code() == Some(130)
            && String::from_utf8_lossy(&output.stderr).contains("storage test cleaned up"),
        format!(
            "SIGINT: want exit 130 and the cleanup message, got {status:?} after {:?}: {}",
            interrupted_at.elapsed(),
            String::from_utf8_lossy(&output.stderr)
        ),
    );
    checks.eq(
        "leftovers after SIGINT",
        storage_test_leftovers(&api),
        String::new(),
    );
    checks.that(!created.is_empty(), "nothing was created".to_owned());

    validate_reports(&mut checks, &reports);
    eprintln!(
        "diagnose scenarios: {} runs in {:?}",
        reports.len(),
        started.elapsed()
    );
    checks.finish(&format!("apiserver log tail:\n{}", api.log_tail(10)));
}
