//! The exit codes of every command, in one table: `run`, `check-config`, `probe storage`,
//! `diagnose` and `slo-report` share them, and docs/diagnose.md, docs/slo.md and the README
//! list them per command.

/// Success: the daemon stopped cleanly, the config is valid, diagnose found nothing worse than
/// info, every SLO met its objective.
pub const OK: u8 = 0;
/// The command ran and found something: diagnose warnings, an SLO that missed its objective, a
/// failed storage probe.
pub const FINDINGS: u8 = 1;
/// diagnose: a critical finding.
pub const CRITICAL: u8 = 2;
/// A bad flag or an invalid config, before anything runs; clap exits with 2 for bad flags too,
/// so diagnose's 2 means "critical" only once it has read something.
pub const USAGE: u8 = 2;
/// The command could not do its work: the API server or Prometheus unreachable, a port taken,
/// an unwritable output directory.
pub const CANNOT_RUN: u8 = 3;
/// Ctrl-C or SIGTERM during `diagnose --storage-test`, after its cleanup: 128 + SIGINT.
pub const INTERRUPTED: u8 = 130;

/// Runs a one-shot command's future on a small runtime and returns its exit code;
/// [`CANNOT_RUN`] when the runtime cannot start.
pub fn block_on(command: impl std::future::Future<Output = u8>) -> u8 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return CANNOT_RUN;
        }
    };
    let code = runtime.block_on(command);
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    code
}
