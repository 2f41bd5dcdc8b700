//! `kube-netprobe diagnose`: the troubleshooting walk of the seed runbook (DNS, NetworkPolicies,
//! CoreDNS, logs, CSI and volumes) as one command that reads the cluster through the API
//! ([`collect`]), says what is wrong ([`analyse`], pure functions over the snapshot) and writes
//! the report ([`report`], and [`html`] for report.html). Exit codes: 0 healthy, 1 warnings, 2 critical, 3 could not run.

pub mod analyse;
pub mod collect;
pub mod html;
pub mod report;
pub mod scrape;
pub mod storage_test;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::time::Duration;

use collect::{CollectOptions, ProbeScrape};

use crate::exit;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Markdown,
    Json,
}

/// What the command line asked for.
#[derive(Debug, Clone)]
pub struct Options {
    /// `None`: the kubeconfig context's namespace (kube falls back to `default`).
    pub namespace: Option<String>,
    pub out: Option<PathBuf>,
    pub format: Format,
    pub collect_only: bool,
    pub kubeconfig: Option<PathBuf>,
    /// Bounds the whole run but `--storage-test` (which has its own).
    pub timeout: Duration,
    /// Largest API response read, in bytes.
    pub max_response: u64,
    pub coredns_logs: Vec<PathBuf>,
    /// `NODE=FILE`: /metrics text of the kube-netprobe pod on NODE, instead of the pod proxy.
    pub probe_metrics: Vec<(String, PathBuf)>,
    pub netprobe_selector: String,
    pub netprobe_namespace: Option<String>,
    pub netprobe_port: u16,
    pub storage_test: Option<StorageTest>,
}

/// `--storage-test` and its settings.
#[derive(Debug, Clone)]
pub struct StorageTest {
    /// `None`: the cluster's default class.
    pub storage_class: Option<String>,
    pub image: String,
    pub timeout: Duration,
}

/// `NODE=FILE`.
pub fn parse_node_file(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((node, file)) if !node.is_empty() && !file.is_empty() => {
            Ok((node.to_owned(), PathBuf::from(file)))
        }
        _ => Err(format!("expected NODE=FILE, got {s:?}")),
    }
}

fn timestamp() -> (String, String) {
    let now = k8s_openapi::jiff::Timestamp::now();
    (
        now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        now.strftime("%Y%m%d-%H%M%S").to_string(),
    )
}

/// Runs diagnose; the returned code is the process's exit code.
pub fn run(opts: Options) -> u8 {
    exit::block_on(run_async(opts))
}

/// Creates `dir` if needed and proves a file can be written in it; says whether it created it.
fn check_writable(dir: &std::path::Path) -> std::io::Result<bool> {
    let created = !dir.exists();
    std::fs::create_dir_all(dir)?;
    let probe = dir.join(".kube-netprobe-write-test");
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(&probe)?;
    Ok(created)
}

async fn run_async(opts: Options) -> u8 {
    let deadline = tokio::time::Instant::now() + opts.timeout;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tty = std::io::stderr().is_terminal();
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();

    // Offline inputs first: a missing file is the user's error, said before any network wait.
    let mut offline_logs = BTreeMap::new();
    for path in &opts.coredns_logs {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                offline_logs.insert(path.display().to_string(), text);
            }
            Err(e) => {
                eprintln!("error: --coredns-logs {}: {e}", path.display());
                return exit::CANNOT_RUN;
            }
        }
    }
    let mut offline_metrics = Vec::new();
    for (node, path) in &opts.probe_metrics {
        match std::fs::read_to_string(path) {
            Ok(text) => offline_metrics.push(ProbeScrape {
                pod: format!("file:{}", path.display()),
                node: node.clone(),
                text: Some(text),
                error: None,
            }),
            Err(e) => {
                eprintln!("error: --probe-metrics {node}={}: {e}", path.display());
                return exit::CANNOT_RUN;
            }
        }
    }

    // Before any read: a run whose report cannot be written is one nobody can use.
    let dir = opts
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("network-diagnostics-{}", timestamp().1)));
    let created_dir = match check_writable(&dir) {
        Ok(created) => created,
        Err(e) => {
            eprintln!(
                "error: --out {}: cannot write the report there: {e}",
                dir.display()
            );
            eprintln!(
                "diagnose could not run: nothing was read (exit {}).",
                exit::CANNOT_RUN
            );
            return exit::CANNOT_RUN;
        }
    };

    if tty {
        eprint!("connecting to the API server ...");
    }
    let connected = collect::connect(
        opts.kubeconfig.as_deref(),
        opts.timeout,
        deadline,
        opts.max_response,
    )
    .await;
    let (client, server) = match connected {
        Ok(c) => c,
        Err(e) => {
            if created_dir {
                // Only removes it while empty: nothing was written.
                let _ = std::fs::remove_dir(&dir);
            }
            if tty {
                eprintln!();
            }
            eprintln!("error: {e}");
            eprintln!(
                "diagnose could not run: nothing was collected (exit {}).",
                exit::CANNOT_RUN
            );
            return exit::CANNOT_RUN;
        }
    };
    let namespace = opts
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let target = CollectOptions {
        namespace: namespace.clone(),
        netprobe_selector: opts.netprobe_selector.clone(),
        netprobe_namespace: opts.netprobe_namespace.clone(),
        netprobe_port: opts.netprobe_port,
        timeout: opts.timeout,
        deadline,
        skip_logs: !offline_logs.is_empty(),
        skip_metrics: !offline_metrics.is_empty(),
        repair_only: false,
    };
    // One per `done` call in collect::collect.
    const STEPS: usize = 11;
    let done = std::sync::atomic::AtomicUsize::new(0);
    let progress = |step: &str| {
        let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if tty {
            eprint!("\r\x1b[Kcollecting [{n}/{STEPS}] {step}");
        }
    };
    let mut snapshot = collect::collect(&client, server, &target, &progress).await;
    if tty {
        eprint!("\r\x1b[K");
    }
    if !offline_logs.is_empty() {
        snapshot.coredns_logs = Some(offline_logs);
    }
    if !offline_metrics.is_empty() {
        snapshot.probe_scrapes = offline_metrics;
    }

    let (generated_at, stamp) = timestamp();
    if let Some(test) = &opts.storage_test {
        let request = storage_test::Request {
            namespace: namespace.clone(),
            name: format!("netprobe-storage-test-{stamp}"),
            storage_class: test.storage_class.clone(),
            image: test.image.clone(),
            timeout: test.timeout,
            call_timeout: opts.timeout,
        };
        if tty {
            eprint!(
                "\r\x1b[Kstorage test: PVC and Job {}/{} (up to {:?}) ...",
                request.namespace, request.name, request.timeout
            );
        }
        let outcome = storage_test::run(&client, &request).await;
        if tty {
            eprint!("\r\x1b[K");
        }
        if outcome.status == "interrupted" {
            eprintln!(
                "interrupted: storage test cleaned up{}",
                if outcome.cleanup_errors.is_empty() {
                    String::new()
                } else {
                    format!(" except {}", outcome.cleanup_errors.join("; "))
                }
            );
            return exit::INTERRUPTED;
        }
        snapshot.storage_test = Some(outcome);
    }
    let (findings, matrix) = if opts.collect_only {
        (Vec::new(), analyse::Matrix::default())
    } else {
        (
            analyse::analyse(&snapshot),
            analyse::Matrix::from_snapshot(&snapshot),
        )
    };
    let mut rep = report::Report::new(&snapshot, findings, matrix, generated_at, opts.collect_only);
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| report::write_evidence(&dir, &snapshot))
        .and_then(|mut files| {
            files.push("report.md".into());
            files.push("report.json".into());
            files.push("report.html".into());
            rep.collection.files = files;
            std::fs::write(dir.join("report.md"), report::markdown(&rep))?;
            std::fs::write(dir.join("report.html"), html::html(&rep))?;
            let json = serde_json::to_string_pretty(&rep).map_err(std::io::Error::other)?;
            std::fs::write(dir.join("report.json"), json + "\n")
        });
    if let Err(e) = &written {
        eprintln!("error: cannot write the report to {}: {e}", dir.display());
    }
    let out = match opts.format {
        Format::Text => report::text(&rep, colour, written.is_ok().then_some(dir.as_path())),
        Format::Markdown => report::markdown(&rep),
        Format::Json => serde_json::to_string_pretty(&rep).unwrap_or_default() + "\n",
    };
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
    rep.exit_code
}
