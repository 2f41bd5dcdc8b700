//! `run`: the long-running exporter.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::http::{AppState, router};
use crate::metrics::Metrics;
use crate::probe::dns::{DnsTarget, SystemResolver};
use crate::scheduler::Scheduler;

/// How long in-flight HTTP requests get to finish after SIGTERM before the process exits anyway;
/// the kubelet's default grace period is 30 s, the daemon promises 5.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);

/// Why the daemon could not run (exit code 3).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot install the signal handler: {0}")]
    Signal(#[source] std::io::Error),
    #[error("HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// Runs until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<(), RunError> {
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(RunError::Signal)?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| RunError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(RunError::Serve)?;

    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let state = AppState {
        metrics: metrics.clone(),
        node_name: config.node_name.as_str().into(),
        ready: ready.clone(),
    };
    tracing::info!(%addr, node = %config.node_name, version = crate::metrics::VERSION, "listening");

    let mut scheduler = Scheduler::new(metrics.probes.clone());
    let system = Arc::new(SystemResolver::new(&config.dns.resolv_conf));
    for server in &config.dns.servers {
        for query in &config.dns.queries {
            scheduler.spawn(Arc::new(DnsTarget::new(
                *server,
                query.clone(),
                &config.dns,
                system.clone(),
                metrics.dns.clone(),
            )));
        }
    }
    if config.dns.servers.is_empty() {
        tracing::info!("dns.servers is empty: DNS probing is off");
    }
    tracing::info!(targets = scheduler.len(), "probes scheduled");
    ready.store(true, Ordering::Release);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut server_stop = stop_rx.clone();
    let server = tokio::spawn(
        axum::serve(listener, router(state))
            .with_graceful_shutdown(async move {
                let _ = server_stop.wait_for(|stop| *stop).await;
            })
            .into_future(),
    );

    tokio::select! {
        _ = sigterm.recv() => tracing::info!("SIGTERM received, stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, stopping"),
    }
    ready.store(false, Ordering::Release);
    let _ = stop_tx.send(true);
    scheduler.shutdown().await;
    match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => return Err(RunError::Serve(e)),
        Ok(Err(join)) => tracing::warn!(error = %join, "HTTP server task ended abnormally"),
        Err(_) => tracing::warn!("HTTP connections still open after the grace period; exiting"),
    }
    tracing::info!("stopped");
    Ok(())
}
