//! `kube-netprobe slo-report` against a real Prometheus whose TSDB was backfilled with known
//! counters (`promtool tsdb create-blocks-from openmetrics`), so every figure the report prints
//! is known exactly; plus the ways it cannot run (refused, silent, HTTP and query errors) and
//! its usage errors.

// A real Prometheus serving counters whose every figure is known.
mod data;
mod server;

// The suites.
mod errors;
mod figures;
mod rendering;
mod transport;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{Checks, bin, capture};

/// Window start: 2026-01-01T00:00:00Z.
const S: u64 = 1_767_225_600;
/// `--end`: 2026-01-31T00:00:00Z, 720 hours later.
const END: &str = "2026-01-31T00:00:00Z";
const HOURS_IN_WINDOW: u32 = 720;
/// The data runs to 2026-02-01T00:00:00Z.
const HOURS_IN_JANUARY: u32 = 744;

/// Basic-auth credentials the test Prometheus demands (web config), so that every run also
/// proves the credentials reach it. The hash is bcrypt (cost 4) of `PASSWORD`.
const USER: &str = "netprobe";
const PASSWORD: &str = "slo-report-test";
const PASSWORD_BCRYPT: &str = "$2b$04$RK3qXbvFOrgkrwEZd5AHyOg8Kwb2Qjpj4sRDo7WjhF9QTxMNAWW/2";

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?} after {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.code, self.took, self.stdout, self.stderr
        )
    }
}

/// Runs `kube-netprobe slo-report args` to completion (at most 60 s).
fn slo_report<A: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[A]) -> Run {
    let start = Instant::now();
    let mut child = Command::new(bin())
        .arg("slo-report")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kube-netprobe slo-report");
    let stdout = Arc::new(Mutex::new(String::new()));
    let stderr = Arc::new(Mutex::new(String::new()));
    let readers = [
        capture(child.stdout.take().expect("stdout"), stdout.clone()),
        capture(child.stderr.take().expect("stderr"), stderr.clone()),
    ];
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("slo-report {args:?} still running after 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = start.elapsed();
    for reader in readers {
        let _ = reader.join();
    }
    let text = |s: Arc<Mutex<String>>| s.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Run {
        code: status.code(),
        stdout: text(stdout),
        stderr: text(stderr),
        took,
    }
}

fn password_file(dir: &Path) -> PathBuf {
    let path = dir.join("password");
    std::fs::write(&path, format!("{PASSWORD}\n")).expect("write password file");
    path
}

/// Field `key` of the SLO named `slo` in a JSON report.
fn field<'a>(report: &'a Value, slo: &str, key: &str) -> &'a Value {
    let entry = report["slos"]
        .as_array()
        .and_then(|slos| slos.iter().find(|s| s["slo"] == slo))
        .unwrap_or_else(|| panic!("no SLO {slo} in {report}"));
    &entry[key]
}

/// `(slo, key, value)` expectations on a JSON report; `None` means null.
fn expect_json(checks: &mut Checks, report: &Value, want: &[(&str, &str, Option<f64>)]) {
    for (slo, key, value) in want {
        let got = field(report, slo, key);
        checks.eq(&format!("{slo}.{key}"), got.as_f64(), *value);
        if value.is_none() {
            checks.that(got.is_null(), format!("{slo}.{key}: {got}, want null"));
        }
    }
}
