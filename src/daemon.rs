//! `run`: the long-running exporter.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use std::sync::Mutex;

use tokio::sync::watch;

use crate::config::{Config, DnsServer, PeerDiscovery, PeerProtocol};
use crate::discovery::Peer;
use crate::discovery::coredns::CorednsPod;
use crate::discovery::mesh::Mesh;
use crate::http::AppState;
use crate::metrics::Metrics;
use crate::probe::apiserver::{ApiserverTarget, endpoints};
use crate::probe::dns::{DnsTarget, SystemResolver, Via};
use crate::probe::peer::{PeerSettings, icmp_available};
use crate::probe::storage::StorageTarget;
use crate::scheduler::{Scheduler, TaskId};

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

/// The configured DNS servers with `nameservers` replaced by each nameserver of resolv.conf as
/// read now (a pod's resolv.conf is written once, before the container starts); an address
/// listed both ways is probed once.
fn dns_servers(configured: &[DnsServer], system: &SystemResolver) -> Vec<Via> {
    let mut out: Vec<Via> = Vec::new();
    for server in configured {
        let expanded = match server {
            DnsServer::System => vec![Via::System],
            DnsServer::Addr(addr) => vec![Via::Server(*addr)],
            DnsServer::Nameservers => {
                let conf = system.current();
                tracing::info!(
                    nameservers = ?conf.nameservers,
                    "dns.servers: `nameservers` probes each nameserver of resolv.conf directly"
                );
                conf.nameservers.iter().map(|a| Via::Server(*a)).collect()
            }
        };
        for server in expanded {
            if !out.contains(&server) {
                out.push(server);
            }
        }
    }
    out
}

/// Starts the pod-to-pod probes: checks ICMP once, then follows the configured discovery. The
/// returned mesh must live as long as the probes (for a static list nothing else holds it).
fn start_peers(
    config: &Config,
    scheduler: &Arc<Scheduler>,
    metrics: &Arc<Metrics>,
) -> Option<Arc<Mutex<Mesh>>> {
    let peers = &config.peers;
    if peers.discovery == PeerDiscovery::None {
        tracing::info!("peers.discovery is none: pod-to-pod probing is off");
        return None;
    }
    let mut protocols = peers.protocols.clone();
    if protocols.contains(&PeerProtocol::Icmp) {
        match icmp_available() {
            Ok(()) => metrics.peers.set_icmp_available(true),
            Err(e) => {
                metrics.peers.set_icmp_available(false);
                tracing::warn!(
                    error = %e,
                    "ICMP echo sockets are not allowed here (net.ipv4.ping_group_range does not cover this process's group); icmp peer probes are off"
                );
                protocols.retain(|p| *p != PeerProtocol::Icmp);
            }
        }
    }
    let settings = PeerSettings {
        interval: peers.interval.get(),
        timeout: peers.timeout.get(),
        bulk_bytes: peers.bulk_bytes.0,
    };
    let mesh = Arc::new(Mutex::new(Mesh::new(
        &config.node_name,
        peers.neighbours,
        protocols,
        settings,
        scheduler.clone(),
        metrics.peers.clone(),
    )));
    match &peers.discovery {
        PeerDiscovery::None => unreachable!("handled above"),
        PeerDiscovery::Static(list) => {
            let list: Vec<Peer> = list
                .iter()
                .map(|p| Peer {
                    node: p.node.clone(),
                    addrs: vec![p.addr],
                })
                .collect();
            mesh.lock().expect("mesh lock").apply(&list);
        }
        PeerDiscovery::Kubernetes(kubernetes) => {
            let (tx, mut rx) = watch::channel(Vec::new());
            tokio::spawn(crate::discovery::kube::run(
                kubernetes.clone(),
                peers.port,
                None,
                tx,
                metrics.peers.clone(),
            ));
            let follower = mesh.clone();
            tokio::spawn(async move {
                while rx.changed().await.is_ok() {
                    let peers = rx.borrow_and_update().clone();
                    follower.lock().expect("mesh lock").apply(&peers);
                }
            });
        }
    }
    Some(mesh)
}

/// Probes every CoreDNS pod directly (`dns.discover_coredns`), following a watch on them: a new
/// replica gets its targets, a replica that goes away takes its targets and series with it.
fn start_coredns(
    config: &Config,
    scheduler: &Arc<Scheduler>,
    metrics: &Arc<Metrics>,
    system: &Arc<SystemResolver>,
) {
    let Some(coredns) = config.dns.discover_coredns.clone() else {
        return;
    };
    let (tx, mut rx) = watch::channel(Vec::new());
    let peers = metrics.peers.clone();
    peers.add_discovery_source(crate::discovery::coredns::SOURCE);
    tokio::spawn(async move {
        let client = crate::discovery::kube::connect(|| {
            peers.discovery_error(crate::discovery::coredns::SOURCE, "error")
        })
        .await;
        crate::discovery::coredns::run(coredns, client, tx, peers).await;
    });
    let (scheduler, dns, system) = (scheduler.clone(), config.dns.clone(), system.clone());
    let metrics = metrics.dns.clone();
    tokio::spawn(async move {
        let mut running: HashMap<CorednsPod, Vec<(TaskId, Arc<DnsTarget>)>> = HashMap::new();
        while rx.changed().await.is_ok() {
            let pods: HashSet<CorednsPod> = rx.borrow_and_update().iter().cloned().collect();
            running.retain(|pod, targets| {
                let keep = pods.contains(pod);
                if !keep {
                    for (id, target) in targets.drain(..) {
                        scheduler.remove(id);
                        target.forget();
                    }
                }
                keep
            });
            for pod in pods {
                running.entry(pod).or_insert_with_key(|pod| {
                    dns.queries
                        .iter()
                        .map(|query| {
                            let target = Arc::new(DnsTarget::coredns_pod(
                                pod,
                                query.clone(),
                                &dns,
                                system.clone(),
                                metrics.clone(),
                            ));
                            (scheduler.spawn(target.clone()), target)
                        })
                        .collect()
                });
            }
            tracing::info!(pods = running.len(), "probing CoreDNS pods directly");
        }
    });
}

/// Runs until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<(), RunError> {
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(RunError::Signal)?;
    let listener = crate::http::bind(config.listen).map_err(|source| RunError::Listen {
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

    // kube and the API-server probe both use rustls; one provider for the whole process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let scheduler = Arc::new(Scheduler::new(metrics.probes.clone()));
    let system = Arc::new(SystemResolver::new(&config.dns.resolv_conf));
    for server in dns_servers(&config.dns.servers, &system) {
        for query in &config.dns.queries {
            scheduler.spawn(Arc::new(DnsTarget::new(
                server,
                query.clone(),
                &config.dns,
                system.clone(),
                metrics.dns.clone(),
            )));
        }
    }
    if config.dns.servers.is_empty() && config.dns.discover_coredns.is_none() {
        tracing::info!("dns.servers is empty: DNS probing is off");
    }
    start_coredns(&config, &scheduler, &metrics, &system);
    let _mesh = start_peers(&config, &scheduler, &metrics);
    if config.csi.is_enabled() {
        let (csi, node, ignore) = (
            metrics.csi.clone(),
            config.node_name.clone(),
            config.csi.ignore_drivers.clone(),
        );
        tokio::spawn(async move {
            let client = crate::discovery::kube::connect(|| csi.watch_error("error")).await;
            let errors = csi.clone();
            crate::discovery::csi::run(
                client,
                node,
                ignore,
                |s| csi.set(s),
                |reason| errors.watch_error(reason),
            )
            .await;
        });
    }
    if config.apiserver.is_enabled() {
        for (path, endpoint) in endpoints(&config.apiserver) {
            scheduler.spawn(Arc::new(ApiserverTarget::new(
                path,
                endpoint,
                &config.apiserver,
                system.clone(),
                metrics.apiserver.clone(),
            )));
        }
    } else {
        tracing::info!(
            "not running in a cluster (KUBERNETES_SERVICE_HOST is unset): API-server probes are off"
        );
    }
    for volume in &config.storage.volumes {
        let target = Arc::new(StorageTarget::new(
            volume,
            &config.storage,
            metrics.storage.clone(),
        ));
        target.remove_leftovers();
        scheduler.spawn(target);
    }
    tracing::info!(targets = scheduler.len(), "probes scheduled");
    ready.store(true, Ordering::Release);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut server_stop = stop_rx.clone();
    let server = tokio::spawn(crate::http::serve(listener, state, async move {
        let _ = server_stop.wait_for(|stop| *stop).await;
    }));

    tokio::select! {
        _ = sigterm.recv() => tracing::info!("SIGTERM received, stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, stopping"),
    }
    ready.store(false, Ordering::Release);
    let _ = stop_tx.send(true);
    scheduler.shutdown();
    match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
        Ok(Ok(())) => {}
        Ok(Err(join)) => tracing::warn!(error = %join, "HTTP server task ended abnormally"),
        Err(_) => tracing::warn!("HTTP connections still open after the grace period; exiting"),
    }
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn servers(list: &str, resolv_conf: &Path) -> Vec<String> {
        let configured: Vec<DnsServer> = list
            .split_whitespace()
            .map(|s| s.parse().unwrap())
            .collect();
        dns_servers(&configured, &SystemResolver::new(resolv_conf))
            .iter()
            .map(Via::to_string)
            .collect()
    }

    #[test]
    fn nameservers_expand_to_each_resolv_conf_server_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        std::fs::write(
            &path,
            "search default.svc.cluster.local svc.cluster.local\nnameserver 198.19.0.10\n\
             nameserver 198.19.0.11\noptions ndots:5\n",
        )
        .unwrap();
        assert_eq!(
            servers("system nameservers", &path),
            ["system", "198.19.0.10:53", "198.19.0.11:53"]
        );
        assert_eq!(
            servers("198.19.0.11:53 nameservers", &path),
            ["198.19.0.11:53", "198.19.0.10:53"],
            "an address listed explicitly too is probed once"
        );
    }
}
