//! The command line: `run` (the default), `check-config`, `diagnose`, `probe storage`, `slo-report`,
//! `completions`, `--version`; and, for `make generate`, the man pages and completion scripts
//! kept in the repository.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::config::Config;
use crate::exit;
use crate::logging::{self, LogFormat};

const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (revision ",
    env!("NETPROBE_REVISION"),
    ")"
);

/// What `--help` and the man page say first: the whole product, not one probe.
const LONG_ABOUT: &str = "\
Runs on every Kubernetes node (a DaemonSet) and measures, all the time, what the node's pods \
depend on; Prometheus scrapes the results from /metrics.

DNS: lookups the way a pod makes them (its resolv.conf, search list and ndots) and against each \
CoreDNS pod, one query at a time, with no cache and no hidden retries.

Pod to pod: reachability and per-phase latency to the kube-netprobe pods of its neighbours \
(HTTP, TCP, a bulk transfer that exposes MTU black holes, ICMP echo).

API server: GET /readyz directly and through kubernetes.default.svc, TLS verified, per phase.

Storage: write, fsync, read back and verify on each configured volume, and whether every CSI \
driver is registered on the node.

For the moment someone is paged: `diagnose` walks from the symptom to the broken part and \
writes a report; `slo-report` reads SLO attainment and error budgets from Prometheus.";

/// Probes DNS, pod-to-pod networking, the API server and storage from every Kubernetes node, for
/// Prometheus.
#[derive(Debug, Parser)]
#[command(
    name = "kube-netprobe",
    version = LONG_VERSION,
    long_about = LONG_ABOUT,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// `run` options, accepted without the word `run`.
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the exporter (the default).
    Run(RunArgs),
    /// Validate a config file and print the effective config (defaults filled in).
    CheckConfig {
        /// The YAML config file.
        file: PathBuf,
    },
    /// SLO attainment, error budget and burn rate, read from Prometheus (docs/slo.md).
    SloReport(crate::slo::ReportArgs),
    /// One-shot troubleshooting report: DNS, NetworkPolicies, nodes, the live matrix, storage.
    #[command(after_help = DIAGNOSE_EXIT_CODES)]
    Diagnose(Box<DiagnoseArgs>),
    /// Opt-in auto-repair, dry-run unless --apply: evict a failing CoreDNS replica, restart a
    /// node's kube-proxy pod, delete a stuck kube-netprobe pod, behind rate limits and refusals
    /// (docs/repair.md).
    #[command(after_help = REPAIR_EXIT_CODES)]
    Repair(Box<RepairArgs>),
    /// Run one probe once and print its result (used by `diagnose --storage-test`).
    #[command(subcommand)]
    Probe(ProbeCommand),
    /// Print the shell completion script for SHELL, e.g. `kube-netprobe completions bash >
    /// /etc/bash_completion.d/kube-netprobe`.
    Completions {
        /// The shell the script is for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

const DIAGNOSE_EXIT_CODES: &str = "Exit codes: 0 healthy, 1 warnings, 2 critical findings, \
3 could not run (API server unreachable or credentials rejected), \
130 interrupted during --storage-test (after cleaning up). A usage error (bad flag) also exits 2, before anything is read. See docs/diagnose.md.";

const REPAIR_EXIT_CODES: &str = "Exit codes (--once): 0 the pass ran (whatever it decided: \
the decisions are printed, recorded as Events and counted in netprobe_repair_actions_total), \
3 the API server could not be read. Without --once it runs until SIGTERM (exit 0). \
A usage error exits 2. See docs/repair.md.";

/// A fraction from 0 to 1.
fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("{s:?} is not a fraction from 0 to 1")),
    }
}

/// One of repair's actions.
fn parse_action(a: &str) -> Result<crate::diagnose::analyse::RepairAction, String> {
    use crate::diagnose::analyse::RepairAction;
    RepairAction::ALL
        .iter()
        .copied()
        .find(|x| x.as_str() == a.trim())
        .ok_or_else(|| {
            format!(
                "unknown action {a:?}; the actions are {}",
                RepairAction::ALL
                    .iter()
                    .map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// How diagnose and repair read the cluster: the API server, and the kube-netprobe pods' /metrics.
#[derive(Debug, Clone, Args)]
struct ClusterArgs {
    /// Kubeconfig file [default: in-cluster config, $KUBECONFIG or ~/.kube/config].
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Largest API response read (a list of every node of a big cluster is tens of MiB); a
    /// larger one is reported as a read that failed.
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    max_response_size: u64,
    /// NODE=FILE: /metrics text of the kube-netprobe pod on NODE, instead of the pod proxy
    /// (repair reads the file again every pass).
    #[arg(long, value_name = "NODE=FILE", value_parser = crate::diagnose::parse_node_file)]
    probe_metrics: Vec<(String, PathBuf)>,
    /// Label selector of the kube-netprobe DaemonSet's pods.
    #[arg(long, default_value = "app.kubernetes.io/name=kube-netprobe")]
    netprobe_selector: String,
    /// Namespace of the kube-netprobe pods [default: every namespace].
    #[arg(long)]
    netprobe_namespace: Option<String>,
    /// Port of the kube-netprobe pods' /metrics when no container port is named metrics or http.
    #[arg(long, default_value_t = 9753)]
    netprobe_port: u16,
}

#[derive(Debug, Clone, Args)]
struct RepairArgs {
    /// Take the actions. Without it repair only prints and records what it would do.
    #[arg(long)]
    apply: bool,
    /// One pass, then exit (no /metrics server).
    #[arg(long)]
    once: bool,
    /// Time between passes.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    interval: std::time::Duration,
    /// Address of /metrics and /healthz (not with --once).
    #[arg(long, default_value = "0.0.0.0:9754")]
    listen: std::net::SocketAddr,
    /// Bound on each pass's reads, and on each call of an action.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: std::time::Duration,
    /// The actions repair may take, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "evict_coredns,restart_kube_proxy,delete_stuck_netprobe",
        value_parser = parse_action
    )]
    actions: Vec<crate::diagnose::analyse::RepairAction>,
    /// Label selector of the kube-proxy pods (in kube-system).
    #[arg(long, default_value = "k8s-app=kube-proxy")]
    kube_proxy_selector: String,
    /// At most one action per subject (the CoreDNS replica set, a node) within this window.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    target_window: std::time::Duration,
    /// At most --max-actions actions in all within this window.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    global_window: std::time::Duration,
    /// Actions allowed per --global-window.
    #[arg(long, default_value_t = 1)]
    max_actions: u32,
    /// Refuse when more than this fraction of the set (CoreDNS replicas, nodes) fails: then the
    /// fault is elsewhere.
    #[arg(long, default_value = "0.5", value_parser = parse_fraction)]
    max_failing_fraction: f64,
    /// How long after an action its effect is judged (the finding gone, or not helping).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    verify_after: std::time::Duration,
    /// How long a finding must hold, pass after pass, before repair decides on it (a finding
    /// of one moment is not acted on). Not with --once, which judges its one pass.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    evidence_for: std::time::Duration,
    /// How long a kube-netprobe pod's storage operation must have been stuck before the pod is
    /// deleted.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    stuck_limit: std::time::Duration,
    #[command(flatten)]
    cluster: ClusterArgs,
}

#[derive(Debug, Clone, Args)]
struct DiagnoseArgs {
    /// Namespace whose NetworkPolicies and Services are checked [default: the kubeconfig
    /// context's namespace, else `default`].
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    /// Output directory for report.md, report.json, report.html and the raw evidence
    /// [default: ./network-diagnostics-<UTC timestamp>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// What goes to stdout (the files are always written).
    #[arg(long, value_enum, default_value = "text")]
    format: crate::diagnose::Format,
    /// Collect and write the evidence only, without analysis.
    #[arg(long)]
    collect_only: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Bound on the whole run (connection check and every read), --storage-test aside.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: std::time::Duration,
    /// Analyse these CoreDNS log files instead of reading the pods' logs through the API.
    #[arg(long, value_name = "FILE")]
    coredns_logs: Vec<PathBuf>,
    /// Also create a small PVC and a Job running `kube-netprobe probe storage` on it once in
    /// --namespace, report its figures, and delete both (also on Ctrl-C).
    #[arg(long)]
    storage_test: bool,
    /// StorageClass of the test PVC [default: the cluster's default class].
    #[arg(long, requires = "storage_test")]
    storage_class: Option<String>,
    /// Image of the test Job (one that contains kube-netprobe).
    #[arg(long, default_value = concat!("ghcr.io/kube-netprobe/kube-netprobe:", env!("CARGO_PKG_VERSION")), requires = "storage_test")]
    storage_test_image: String,
    /// How long the storage test may take before it is reported as stuck and cleaned up.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration, requires = "storage_test")]
    storage_test_timeout: std::time::Duration,
}

#[derive(Debug, Subcommand)]
enum ProbeCommand {
    /// Write, fsync, read back and verify a file in DIR once; print the result as one JSON
    /// line; exit 0 on success, 1 on failure (what `diagnose --storage-test`'s Job runs).
    Storage {
        /// A directory on the volume to test.
        dir: PathBuf,
        /// Bytes written and read back.
        #[arg(long, default_value = "16MiB", value_parser = parse_size)]
        size: u64,
        /// Bound on the whole run.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
}

/// A duration from 0s to a day, like every interval in the config.
fn parse_check_interval(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d > crate::config::MAX_INTERVAL {
        return Err(format!("{s} is too long, the maximum is 1day"));
    }
    Ok(d)
}

fn parse_size(s: &str) -> Result<u64, String> {
    crate::config::ByteSize::parse(s).map(|b| b.0)
}

#[derive(Debug, Clone, Args)]
struct RunArgs {
    /// YAML config file; without it the built-in defaults apply.
    #[arg(long, short = 'c', env = "NETPROBE_CONFIG")]
    config: Option<PathBuf>,
    /// Listen address, overriding `listen` in the config.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// How often the config file is read to see whether it changed (a Kubernetes ConfigMap
    /// volume swaps its files in place); a change is applied as SIGHUP applies it. 0s: only on
    /// SIGHUP.
    #[arg(
        long,
        default_value = "10s",
        value_parser = parse_check_interval,
        env = "NETPROBE_CONFIG_CHECK_INTERVAL"
    )]
    config_check_interval: std::time::Duration,
    /// Log line format.
    #[arg(long, value_enum, default_value = "text", env = "NETPROBE_LOG_FORMAT")]
    log_format: LogFormat,
    /// Log filter in RUST_LOG syntax.
    #[arg(
        long,
        env = "RUST_LOG",
        default_value = "info,hickory_net=error,hickory_proto=error,kube_runtime=error"
    )]
    log_level: String,
}

/// Parses the command line and runs it; the process exits with the returned code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { file }) => check_config(&file),
        Some(Command::Run(args)) => run(args),
        Some(Command::SloReport(args)) => crate::slo::main(args),
        Some(Command::Diagnose(args)) => diagnose(*args),
        Some(Command::Repair(args)) => repair(*args),
        Some(Command::Probe(ProbeCommand::Storage { dir, size, timeout })) => ExitCode::from(
            if crate::diagnose::storage_test::probe_once(&dir, size, timeout) {
                exit::OK
            } else {
                exit::FINDINGS
            },
        ),
        Some(Command::Completions { shell }) => {
            let mut out = Vec::new();
            completions(shell, &mut out);
            match std::io::Write::write_all(&mut std::io::stdout(), &out) {
                Ok(()) => ExitCode::from(exit::OK),
                Err(e) => {
                    eprintln!("error: writing the completion script: {e}");
                    ExitCode::from(exit::CANNOT_RUN)
                }
            }
        }
        None => run(cli.run),
    }
}

/// The completion script of `shell`, as `kube-netprobe completions <shell>` prints it.
pub fn completions(shell: clap_complete::Shell, out: &mut Vec<u8>) {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "kube-netprobe", &mut script);
    if shell == clap_complete::Shell::Bash {
        // clap_complete's bash generator spells a subcommand's state two ways when the binary's
        // name holds a hyphen: the loop over the words sets `kube__netprobe__subcmd__diagnose`,
        // the case arm that completes it matches `kube__subcmd__netprobe__subcmd__diagnose`, so
        // nothing after a subcommand would complete. The arms are spelt the loop's way; once the
        // generator agrees with itself, this replaces nothing.
        let text =
            String::from_utf8_lossy(&script).replace("kube__subcmd__netprobe", "kube__netprobe");
        script = text.into_bytes();
    }
    out.extend_from_slice(&script);
}

/// The command line as clap builds it (what completions and man pages are made from).
pub fn command() -> clap::Command {
    Cli::command()
}

fn diagnose(a: DiagnoseArgs) -> ExitCode {
    ExitCode::from(crate::diagnose::run(crate::diagnose::Options {
        namespace: a.namespace,
        out: a.out,
        format: a.format,
        collect_only: a.collect_only,
        kubeconfig: a.cluster.kubeconfig,
        timeout: a.timeout,
        max_response: a.cluster.max_response_size,
        coredns_logs: a.coredns_logs,
        probe_metrics: a.cluster.probe_metrics,
        netprobe_selector: a.cluster.netprobe_selector,
        netprobe_namespace: a.cluster.netprobe_namespace,
        netprobe_port: a.cluster.netprobe_port,
        storage_test: a.storage_test.then_some(crate::diagnose::StorageTest {
            storage_class: a.storage_class,
            image: a.storage_test_image,
            timeout: a.storage_test_timeout,
        }),
    }))
}

fn repair(a: RepairArgs) -> ExitCode {
    ExitCode::from(crate::repair::run(crate::repair::Options {
        apply: a.apply,
        once: a.once,
        interval: a.interval,
        listen: a.listen,
        kubeconfig: a.cluster.kubeconfig,
        timeout: a.timeout,
        max_response: a.cluster.max_response_size,
        netprobe_selector: a.cluster.netprobe_selector,
        netprobe_namespace: a.cluster.netprobe_namespace,
        netprobe_port: a.cluster.netprobe_port,
        kube_proxy_selector: a.kube_proxy_selector,
        probe_metrics: a.cluster.probe_metrics,
        rails: crate::repair::rails::Rails {
            actions: a.actions.into_iter().collect(),
            target_window: a.target_window,
            global_window: a.global_window,
            max_actions: a.max_actions,
            max_failing_fraction: a.max_failing_fraction,
            verify_after: a.verify_after,
            stuck_limit: a.stuck_limit,
            evidence_for: a.evidence_for,
        },
    }))
}

fn check_config(file: &std::path::Path) -> ExitCode {
    match Config::load(file) {
        Ok(config) => {
            // YAML comments, so that the output stays a config file `run` accepts.
            // The memory estimate stays the last line, where scripts read it.
            let load = config.probe_load();
            println!("{}# {}", config.to_yaml(), load.describe());
            // Still a config the daemon runs: a warning, not an error.
            if let Some(warning) = load.warning() {
                println!("# warning: {warning}");
                eprintln!("warning: {warning}");
            }
            println!("# {}", config.memory_estimate().describe());
            ExitCode::from(exit::OK)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(exit::USAGE)
        }
    }
}

fn run(args: RunArgs) -> ExitCode {
    // The signal handlers come first: from here on SIGTERM is a clean stop (exit 0), even while
    // the config is still loading, and SIGHUP never kills the daemon.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(crate::config::RUNTIME_WORKERS)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::CANNOT_RUN);
        }
    };
    let mut signals = match runtime.block_on(async { crate::daemon::Signals::install() }) {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("error: cannot install the signal handlers: {e}");
            return ExitCode::from(exit::CANNOT_RUN);
        }
    };
    if let Err(e) = logging::init(args.log_format, &args.log_level) {
        eprintln!("error: {e}");
        return ExitCode::from(exit::USAGE);
    }
    // The config is checked before anything else happens, so a bad one never binds a port. It
    // loads on a blocking thread, so that a stop signal is answered even while it reads.
    let path = args.config.clone();
    let loading = runtime.spawn_blocking(move || match path {
        Some(path) => Config::read(&path).and_then(|text| {
            Config::parse(&text, &path.display().to_string()).map(|c| (c, Some((path, text))))
        }),
        None => Ok((Config::default(), None)),
    });
    let loaded = runtime.block_on(async {
        tokio::select! {
            name = signals.stop() => Err(name),
            loaded = loading => Ok(loaded),
        }
    });
    let (mut config, file) = match loaded {
        Err(name) => {
            tracing::info!("{name} received while loading the config, stopping");
            // The read may be stuck in the kernel; it must not hold the exit.
            runtime.shutdown_background();
            return ExitCode::from(exit::OK);
        }
        Ok(Err(join)) => {
            eprintln!("error: loading the config failed: {join}");
            return ExitCode::from(exit::CANNOT_RUN);
        }
        Ok(Ok(Err(e))) => {
            eprintln!("error: {e}");
            return ExitCode::from(exit::USAGE);
        }
        Ok(Ok(Ok(loaded))) => loaded,
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    let source = file.map(|(path, text)| crate::daemon::ConfigSource {
        path,
        text,
        listen: args.listen,
        check_every: args.config_check_interval,
    });
    let result = runtime.block_on(crate::daemon::run(config, signals, source));
    // Probes still in flight must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::from(exit::CANNOT_RUN)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use clap_complete::Shell;

    use super::{command, completions};

    /// The completion scripts kept in docs/completions, under the names distributions install
    /// them by; `kube-netprobe completions` prints the others (elvish, powershell) as well.
    const SHELLS: [(Shell, &str); 3] = [
        (Shell::Bash, "kube-netprobe.bash"),
        (Shell::Zsh, "_kube-netprobe"),
        (Shell::Fish, "kube-netprobe.fish"),
    ];
    const DIRS: [&str; 2] = ["docs/man", "docs/completions"];

    /// Every generated file, by path in the repository, with its content.
    fn generated() -> BTreeMap<String, Vec<u8>> {
        let mut files = BTreeMap::new();
        for (shell, name) in SHELLS {
            let mut out = Vec::new();
            completions(shell, &mut out);
            files.insert(format!("docs/completions/{name}"), out);
        }
        // The version without the git revision, or the pages would change with every commit.
        let mut cmd = command()
            .version(env!("CARGO_PKG_VERSION"))
            .long_version(None)
            .disable_help_subcommand(true);
        cmd.build();
        fn pages(cmd: &clap::Command, files: &mut BTreeMap<String, Vec<u8>>) {
            let man = clap_mangen::Man::new(cmd.clone()).manual("kube-netprobe manual");
            let mut out = Vec::new();
            man.render(&mut out).expect("render into memory");
            files.insert(format!("docs/man/{}", man.get_filename()), out);
            for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
                pages(sub, files);
            }
        }
        pages(&cmd, &mut files);
        files
    }

    /// docs/man and docs/completions are what the command line makes; NETPROBE_REGENERATE=1
    /// (`make generate`) rewrites them.
    #[test]
    fn man_pages_and_completion_scripts_are_current() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let files = generated();
        let regenerate = std::env::var_os("NETPROBE_REGENERATE").is_some();
        let mut stale = Vec::new();
        for dir in DIRS {
            // A file no longer made (a subcommand removed or renamed) is stale too.
            for entry in std::fs::read_dir(root.join(dir)).into_iter().flatten() {
                let entry = entry.unwrap();
                let rel = format!("{dir}/{}", entry.file_name().to_string_lossy());
                if !files.contains_key(&rel) {
                    if regenerate {
                        std::fs::remove_file(entry.path()).unwrap();
                    } else {
                        stale.push(rel);
                    }
                }
            }
        }
        for (rel, content) in &files {
            let path = root.join(rel);
            if regenerate {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, content).unwrap();
            }
            if std::fs::read(&path).ok().as_deref() != Some(content.as_slice()) {
                stale.push(rel.clone());
            }
        }
        assert!(
            stale.is_empty(),
            "stale, run `make generate`: {}",
            stale.join(", ")
        );
        assert!(files.contains_key("docs/man/kube-netprobe.1"));
        assert!(files.contains_key("docs/man/kube-netprobe-diagnose.1"));
    }

    #[test]
    fn the_command_line_is_consistent() {
        command().debug_assert();
    }
}
