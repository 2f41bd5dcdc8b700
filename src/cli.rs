//! The command line: `run` (the default), `check-config`, `slo-report`, `--version`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::logging::{self, LogFormat};

/// Exit codes (design.md, "CLI").
pub mod exit {
    pub const OK: u8 = 0;
    pub const FINDINGS: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const CANNOT_RUN: u8 = 3;
}

const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (revision ",
    env!("NETPROBE_REVISION"),
    ")"
);

/// Continuously probes a Kubernetes node's DNS and exposes the results to Prometheus.
#[derive(Debug, Parser)]
#[command(name = "kube-netprobe", version = LONG_VERSION, args_conflicts_with_subcommands = true)]
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
}

#[derive(Debug, Clone, Args)]
struct RunArgs {
    /// YAML config file; without it the built-in defaults apply.
    #[arg(long, short = 'c', env = "NETPROBE_CONFIG")]
    config: Option<PathBuf>,
    /// Listen address, overriding `listen` in the config.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Log line format.
    #[arg(long, value_enum, default_value = "text", env = "NETPROBE_LOG_FORMAT")]
    log_format: LogFormat,
    /// Log filter in RUST_LOG syntax.
    #[arg(
        long,
        env = "RUST_LOG",
        default_value = "info,hickory_net=error,hickory_proto=error"
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
        None => run(cli.run),
    }
}

fn check_config(file: &std::path::Path) -> ExitCode {
    match Config::load(file) {
        Ok(config) => {
            print!("{}", config.to_yaml());
            ExitCode::from(exit::OK)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(exit::USAGE)
        }
    }
}

fn run(args: RunArgs) -> ExitCode {
    // The config is checked before anything else happens, so a bad one never binds a port.
    let mut config = match &args.config {
        Some(path) => match Config::load(path) {
            Ok(config) => config,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(exit::USAGE);
            }
        },
        None => Config::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Err(e) = logging::init(args.log_format, &args.log_level) {
        eprintln!("error: {e}");
        return ExitCode::from(exit::USAGE);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::CANNOT_RUN);
        }
    };
    let result = runtime.block_on(crate::daemon::run(config));
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
