//! `run`: the long-running exporter, and its config reloads. The wiring between discovery and
//! the probes lives beside it: `peers` keeps the peer probes in step with the ring, `coredns`
//! follows the CoreDNS pods for the DNS probes.

pub mod coredns;
pub mod peers;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::config::{
    ApiserverConfig, ByteSize, Config, ConfigError, CsiConfig, DnsConfig, DnsQuery, DnsServer,
    HumanDuration, PeerDiscovery, PeerProtocol, PeersConfig, PodIpsConfig, StorageConfig,
    StorageVolume,
};
use crate::discovery::Peer;
use crate::discovery::coredns::CorednsPod;
use crate::http::AppState;
use crate::metrics::{DnsLabels, DnsMetrics, Metrics};
use crate::probe::apiserver::{ApiserverTarget, endpoints};
use crate::probe::dns::{DnsTarget, SystemResolver, Via};
use crate::probe::peer::{PeerSettings, icmp_available};
use crate::probe::storage::StorageTarget;
use crate::scheduler::{Scheduler, TaskId};
use peers::Mesh;

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

/// Background tasks of one section (discovery watches and their followers), aborted when the
/// section is replaced or the daemon stops.
#[derive(Debug, Default)]
struct Tasks(Vec<AbortHandle>);

impl Tasks {
    fn spawn<F>(&mut self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.0.push(tokio::spawn(task).abort_handle());
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// What a DNS target runs with: a target whose settings are unchanged by a reload keeps running.
#[derive(Debug, Clone, PartialEq)]
struct DnsSettings {
    via: Via,
    query: DnsQuery,
    interval: HumanDuration,
    timeout: HumanDuration,
    resolv_conf: PathBuf,
}

impl DnsSettings {
    fn new(via: Via, query: &DnsQuery, dns: &DnsConfig) -> Self {
        Self {
            via,
            query: query.clone(),
            interval: dns.interval,
            timeout: dns.timeout,
            resolv_conf: dns.resolv_conf.clone(),
        }
    }
}

type CorednsTargets = HashMap<CorednsPod, Vec<(TaskId, Arc<DnsTarget>)>>;

/// `dns.discover_coredns` running: the watch, and the targets of each pod it reported.
struct CorednsSection {
    /// The `dns` section it was started from (queries, timings and the discovery itself).
    config: DnsConfig,
    running: Arc<Mutex<CorednsTargets>>,
    _tasks: Tasks,
}

struct PeersSection {
    config: PeersConfig,
    mesh: Arc<Mutex<Mesh>>,
    _tasks: Tasks,
}

struct CsiSection {
    config: CsiConfig,
    _tasks: Tasks,
}

struct PodIpsSection {
    /// Cleared before the series are removed, so that the watch task (whose abort is not
    /// immediate) cannot publish them again: it publishes holding the lock, only while set.
    active: Arc<Mutex<bool>>,
    _tasks: Tasks,
}

impl Drop for PodIpsSection {
    fn drop(&mut self) {
        *self.active.lock().expect("pod_ips lock") = false;
    }
}

struct ApiserverSection {
    config: ApiserverConfig,
    /// The `dns` path resolves through the pod's resolver: a new resolv.conf path restarts it.
    resolv_conf: PathBuf,
    targets: Vec<(TaskId, &'static str)>,
}

/// What a volume's probe runs with, beside the volume itself.
#[derive(Debug, Clone, PartialEq)]
struct StorageSettings {
    volume: StorageVolume,
    interval: HumanDuration,
    timeout: HumanDuration,
    reserve: ByteSize,
    sync_writes: u32,
}

/// Everything that runs for one config, section by section, so that a reload can replace what
/// changed and leave the rest alone. A target that a reload keeps (the same series, whether its
/// settings changed or not) keeps its series and their counters; a target that goes takes its
/// series with it.
pub struct Probes {
    scheduler: Arc<Scheduler>,
    metrics: Arc<Metrics>,
    node_name: String,
    system: Arc<SystemResolver>,
    resolv_conf: PathBuf,
    dns: HashMap<DnsLabels, (TaskId, Arc<DnsTarget>, DnsSettings)>,
    coredns: Option<CorednsSection>,
    peers: Option<PeersSection>,
    csi: Option<CsiSection>,
    pod_ips: Option<PodIpsSection>,
    apiserver: Option<ApiserverSection>,
    storage: HashMap<String, (TaskId, Arc<StorageTarget>, StorageSettings)>,
}

impl Probes {
    /// Starts every probe `config` asks for. Must be called inside the tokio runtime.
    pub fn start(config: &Config, scheduler: Arc<Scheduler>, metrics: Arc<Metrics>) -> Self {
        let mut probes = Self {
            scheduler,
            metrics,
            node_name: config.node_name.clone(),
            system: Arc::new(SystemResolver::new(&config.dns.resolv_conf)),
            resolv_conf: config.dns.resolv_conf.clone(),
            dns: HashMap::new(),
            coredns: None,
            peers: None,
            csi: None,
            pod_ips: None,
            apiserver: None,
            storage: HashMap::new(),
        };
        probes.apply(config);
        probes
    }

    /// Brings the running probes in line with `config`. `node_name` is fixed at start.
    pub fn apply(&mut self, config: &Config) {
        if config.dns.resolv_conf != self.resolv_conf {
            self.system = Arc::new(SystemResolver::new(&config.dns.resolv_conf));
            self.resolv_conf = config.dns.resolv_conf.clone();
        }
        self.apply_dns(&config.dns);
        if config.dns.servers.is_empty() && config.dns.discover_coredns.is_none() {
            tracing::info!("dns.servers is empty: DNS probing is off");
        }
        self.apply_coredns(&config.dns);
        self.apply_peers(&config.peers);
        self.apply_csi(&config.csi);
        self.apply_pod_ips(&config.pod_ips);
        self.apply_apiserver(&config.apiserver);
        self.apply_storage(&config.storage);
        tracing::info!(targets = self.scheduler.len(), "probes scheduled");
    }

    fn apply_dns(&mut self, dns: &DnsConfig) {
        let mut old = std::mem::take(&mut self.dns);
        for via in dns_servers(&dns.servers, &self.system) {
            for query in &dns.queries {
                let settings = DnsSettings::new(via, query, dns);
                let target = DnsTarget::new(
                    via,
                    query.clone(),
                    dns,
                    self.system.clone(),
                    self.metrics.dns.clone(),
                );
                let labels = target.labels().clone();
                match old.remove(&labels) {
                    Some(running) if running.2 == settings => {
                        self.dns.insert(labels, running);
                    }
                    previous => {
                        if let Some((id, _, _)) = previous {
                            self.scheduler.remove(id);
                        }
                        let target = Arc::new(target);
                        let id = self.scheduler.spawn(target.clone());
                        self.dns.insert(labels, (id, target, settings));
                    }
                }
            }
        }
        for (id, target, _) in old.into_values() {
            self.scheduler.remove(id);
            target.forget();
        }
    }

    /// Probes every CoreDNS pod directly (`dns.discover_coredns`), following a watch on them: a
    /// new replica gets its targets, a replica that goes away takes its targets and series with
    /// it. A reload that changes the `dns` section starts from the pods the previous watch knew.
    fn apply_coredns(&mut self, dns: &DnsConfig) {
        if self.coredns.as_ref().is_some_and(|c| c.config == *dns) {
            return;
        }
        let previous = self.coredns.take();
        let previous_discovery = previous
            .as_ref()
            .and_then(|p| p.config.discover_coredns.clone());
        let old: CorednsTargets = previous
            .as_ref()
            .map(|p| std::mem::take(&mut *p.running.lock().expect("coredns lock")))
            .unwrap_or_default();
        drop(previous);
        if let Some(coredns) = dns.discover_coredns.clone() {
            let running = Arc::new(Mutex::new(CorednsTargets::new()));
            let follow = CorednsFollower {
                scheduler: self.scheduler.clone(),
                dns: dns.clone(),
                system: self.system.clone(),
                metrics: self.metrics.dns.clone(),
                running: running.clone(),
            };
            if previous_discovery.as_ref() == Some(&coredns) {
                follow.apply(old.keys().cloned().collect());
            }
            let mut tasks = Tasks::default();
            let (tx, mut rx) = watch::channel(Vec::new());
            let peers = self.metrics.peers.clone();
            peers.add_discovery_source(coredns::SOURCE);
            tasks.spawn(async move {
                let client = crate::discovery::kube::connect(|| {
                    peers.discovery_error(coredns::SOURCE, "error")
                })
                .await;
                coredns::run(coredns, client, tx, peers).await;
            });
            tasks.spawn(async move {
                while rx.changed().await.is_ok() {
                    let pods: HashSet<CorednsPod> =
                        rx.borrow_and_update().iter().cloned().collect();
                    follow.apply(pods);
                }
            });
            self.coredns = Some(CorednsSection {
                config: dns.clone(),
                running,
                _tasks: tasks,
            });
        }
        let kept: HashSet<DnsLabels> = self.coredns.as_ref().map_or_else(HashSet::new, |c| {
            c.running
                .lock()
                .expect("coredns lock")
                .values()
                .flatten()
                .map(|(_, t)| t.labels().clone())
                .collect()
        });
        for (id, target) in old.into_values().flatten() {
            self.scheduler.remove(id);
            if !kept.contains(target.labels()) {
                target.forget();
            }
        }
    }

    fn apply_peers(&mut self, peers: &PeersConfig) {
        if self.peers.as_ref().is_some_and(|p| p.config == *peers) {
            return;
        }
        let previous = self.peers.take();
        let next = start_peers(
            peers,
            &self.node_name,
            &self.scheduler,
            &self.metrics,
            previous
                .as_ref()
                .filter(|p| p.config.discovery == peers.discovery && p.config.port == peers.port)
                .map(|p| p.mesh.lock().expect("mesh lock").last_peers().to_vec()),
        );
        if let Some(previous) = previous {
            let next_mesh = next.as_ref().map(|n| n.mesh.lock().expect("mesh lock"));
            previous
                .mesh
                .lock()
                .expect("mesh lock")
                .hand_over(next_mesh.as_deref());
        }
        self.peers = next;
    }

    fn apply_csi(&mut self, csi: &CsiConfig) {
        if self.csi.as_ref().is_some_and(|c| c.config == *csi) {
            return;
        }
        let was_running = self.csi.take().is_some();
        if !csi.is_enabled() {
            if was_running {
                self.metrics.csi.set(&Default::default());
            }
            return;
        }
        let (metrics, node, ignore) = (
            self.metrics.csi.clone(),
            self.node_name.clone(),
            csi.ignore_drivers.clone(),
        );
        let mut tasks = Tasks::default();
        tasks.spawn(async move {
            let client = crate::discovery::kube::connect(|| {
                metrics.watch_error(crate::metrics::WatchErrorReason::error)
            })
            .await;
            let errors = metrics.clone();
            crate::discovery::csi::run(
                client,
                node,
                ignore,
                |s| metrics.set(s),
                |reason| errors.watch_error(reason),
            )
            .await;
        });
        self.csi = Some(CsiSection {
            config: csi.clone(),
            _tasks: tasks,
        });
    }

    fn apply_pod_ips(&mut self, pod_ips: &PodIpsConfig) {
        let enabled = pod_ips.is_enabled();
        if enabled == self.pod_ips.is_some() {
            return;
        }
        self.pod_ips = None;
        if !enabled {
            self.metrics.node_pod_ips.set(&[]);
            return;
        }
        let (metrics, peers, node) = (
            self.metrics.node_pod_ips.clone(),
            self.metrics.peers.clone(),
            self.node_name.clone(),
        );
        // A failed call counts with the discovery's, whose alert names the missing RBAC rule.
        peers.add_discovery_source("pod_ips");
        let active = Arc::new(Mutex::new(true));
        let publishing = active.clone();
        let mut tasks = Tasks::default();
        tasks.spawn(async move {
            let client =
                crate::discovery::kube::connect(|| peers.discovery_error("pod_ips", "error")).await;
            crate::discovery::node_pods::run(
                client,
                node,
                |status| {
                    if *publishing.lock().expect("pod_ips lock") {
                        metrics.set(status);
                    }
                },
                |reason| peers.discovery_error("pod_ips", reason),
            )
            .await;
        });
        self.pod_ips = Some(PodIpsSection {
            active,
            _tasks: tasks,
        });
    }

    fn apply_apiserver(&mut self, apiserver: &ApiserverConfig) {
        if self
            .apiserver
            .as_ref()
            .is_some_and(|a| a.config == *apiserver && a.resolv_conf == self.resolv_conf)
        {
            return;
        }
        let mut next = Vec::new();
        if apiserver.is_enabled() {
            for (path, endpoint) in endpoints(apiserver) {
                let target = Arc::new(ApiserverTarget::new(
                    path,
                    endpoint,
                    apiserver,
                    self.system.clone(),
                    self.metrics.apiserver.clone(),
                ));
                next.push((self.scheduler.spawn(target), path));
            }
        } else {
            tracing::info!(
                "not running in a cluster (KUBERNETES_SERVICE_HOST is unset) or apiserver.enabled is false: API-server probes are off"
            );
        }
        if let Some(previous) = self.apiserver.take() {
            for (id, path) in previous.targets {
                self.scheduler.remove(id);
                if !next.iter().any(|(_, p)| *p == path) {
                    self.metrics.apiserver.remove_path(path);
                }
            }
        }
        self.apiserver = Some(ApiserverSection {
            config: apiserver.clone(),
            resolv_conf: self.resolv_conf.clone(),
            targets: next,
        });
    }

    fn apply_storage(&mut self, storage: &StorageConfig) {
        let mut old = std::mem::take(&mut self.storage);
        for volume in &storage.volumes {
            let settings = StorageSettings {
                volume: volume.clone(),
                interval: storage.interval,
                timeout: storage.timeout,
                reserve: storage.reserve,
                sync_writes: storage.sync_writes,
            };
            let previous = old.remove(&volume.name);
            if let Some(running) = previous.as_ref().filter(|p| p.2 == settings) {
                self.storage.insert(volume.name.clone(), running.clone());
                continue;
            }
            let mut target = StorageTarget::new(volume, storage, self.metrics.storage.clone());
            if let Some((id, previous, _)) = &previous {
                self.scheduler.remove(*id);
                target = target.succeed(previous);
            }
            let target = Arc::new(target);
            target.remove_leftovers();
            let id = self.scheduler.spawn(target.clone());
            self.storage
                .insert(volume.name.clone(), (id, target, settings));
        }
        for (name, (id, _, _)) in old {
            self.scheduler.remove(id);
            self.metrics.storage.remove_volume(&name);
        }
    }
}

/// Keeps the targets of the CoreDNS pods in line with what the watch reports.
struct CorednsFollower {
    scheduler: Arc<Scheduler>,
    dns: DnsConfig,
    system: Arc<SystemResolver>,
    metrics: DnsMetrics,
    running: Arc<Mutex<CorednsTargets>>,
}

impl CorednsFollower {
    fn apply(&self, pods: HashSet<CorednsPod>) {
        let mut running = self.running.lock().expect("coredns lock");
        running.retain(|pod, targets| {
            let keep = pods.contains(pod);
            if !keep {
                for (id, target) in targets.drain(..) {
                    self.scheduler.remove(id);
                    target.forget();
                }
            }
            keep
        });
        for pod in pods {
            running.entry(pod).or_insert_with_key(|pod| {
                self.dns
                    .queries
                    .iter()
                    .map(|query| {
                        let target = Arc::new(DnsTarget::coredns_pod(
                            &pod.name,
                            pod.addr,
                            query.clone(),
                            &self.dns,
                            self.system.clone(),
                            self.metrics.clone(),
                        ));
                        (self.scheduler.spawn(target.clone()), target)
                    })
                    .collect()
            });
        }
        tracing::info!(pods = running.len(), "probing CoreDNS pods directly");
    }
}

/// Starts the pod-to-pod probes: checks ICMP once, then follows the configured discovery,
/// starting from `seed` (the peers a replaced mesh knew) when given.
fn start_peers(
    peers: &PeersConfig,
    node_name: &str,
    scheduler: &Arc<Scheduler>,
    metrics: &Arc<Metrics>,
    seed: Option<Vec<Peer>>,
) -> Option<PeersSection> {
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
        node_name,
        peers.neighbours,
        protocols,
        settings,
        scheduler.clone(),
        metrics.peers.clone(),
    )));
    let mut tasks = Tasks::default();
    match &peers.discovery {
        PeerDiscovery::None => {}
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
            if let Some(seed) = seed {
                mesh.lock().expect("mesh lock").apply(&seed);
            }
            let (tx, mut rx) = watch::channel(Vec::new());
            tasks.spawn(crate::discovery::kube::run(
                kubernetes.clone(),
                peers.port,
                None,
                tx,
                metrics.peers.clone(),
            ));
            let follower = mesh.clone();
            tasks.spawn(async move {
                while rx.changed().await.is_ok() {
                    let peers = rx.borrow_and_update().clone();
                    follower.lock().expect("mesh lock").apply(&peers);
                }
            });
        }
    }
    Some(PeersSection {
        config: peers.clone(),
        mesh,
        _tasks: tasks,
    })
}

/// The signals the daemon answers, installed before anything else so that none of them finds
/// the default action (which ends the process with 128 + the signal number).
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    /// Must be called inside the tokio runtime.
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Waits for SIGTERM or SIGINT; returns its name.
    pub async fn stop(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// Where the running config came from, to reload it.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub path: PathBuf,
    /// The file's text as loaded at start.
    pub text: String,
    /// `--listen`, which overrides the file's `listen` on every load.
    pub listen: Option<SocketAddr>,
    /// How often the file is read to see whether its content changed; zero: only on SIGHUP.
    pub check_every: Duration,
}

/// Why a reload was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Signal,
    Changed,
}

/// One read of the config file: what it said, and whether it parsed.
struct Reading {
    trigger: Trigger,
    result: Result<Config, ConfigError>,
}

/// Reads the config file on SIGHUP (`force`) and every `check_every`, on a blocking thread, and
/// reports a reading when forced or when the content differs from the last one seen (valid or
/// not, so a broken file is reported once, not at every check). A file on a hung volume blocks
/// this task only: the daemon goes on with its current config and still stops on SIGTERM.
async fn watch_config(
    source: ConfigSource,
    force: Arc<tokio::sync::Notify>,
    out: tokio::sync::mpsc::Sender<Reading>,
) {
    let mut last = source.text;
    let check_every = (!source.check_every.is_zero()).then_some(source.check_every);
    loop {
        let trigger = tokio::select! {
            () = force.notified() => Trigger::Signal,
            () = async {
                match check_every {
                    Some(every) => tokio::time::sleep(every).await,
                    None => std::future::pending().await,
                }
            } => Trigger::Changed,
        };
        let path = source.path.clone();
        let Ok(read) = tokio::task::spawn_blocking(move || Config::read(&path)).await else {
            continue;
        };
        let (text, result) = match read {
            Ok(text) => {
                let result = Config::parse(&text, &source.path.display().to_string());
                (Some(text), result)
            }
            Err(e) => (None, Err(e)),
        };
        if trigger == Trigger::Changed {
            // An unreadable file (mid-swap, or gone) is reported once, like a broken one.
            let seen = text.unwrap_or_default();
            if seen == last {
                continue;
            }
            last = seen;
        } else if let Some(text) = text {
            last = text;
        }
        let result = result.map(|mut config| {
            if let Some(listen) = source.listen {
                config.listen = listen;
            }
            config
        });
        if out.send(Reading { trigger, result }).await.is_err() {
            return;
        }
    }
}

/// Every second, how long the runtime's workers have been busy: what the targets take of what
/// one interval can run (the alert KubeNetprobeOverCapacity reads it).
async fn publish_runtime_load(metrics: crate::metrics::RuntimeMetrics) {
    let runtime = tokio::runtime::Handle::current().metrics();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        let workers = runtime.num_workers();
        let busy: f64 = (0..workers)
            .map(|w| runtime.worker_total_busy_duration(w).as_secs_f64())
            .sum();
        metrics.set(workers, busy);
    }
}

/// Runs until SIGTERM or SIGINT, reloading the config on SIGHUP and when its file changes.
pub async fn run(
    config: Config,
    mut signals: Signals,
    source: Option<ConfigSource>,
) -> Result<(), RunError> {
    let listener = crate::http::bind(config.listen).map_err(|source| RunError::Listen {
        addr: config.listen,
        source,
    })?;
    let addr = listener.local_addr().map_err(RunError::Serve)?;

    let metrics = Arc::new(Metrics::with_detail(config.metrics.detail));
    let ready = Arc::new(AtomicBool::new(false));
    let state = AppState {
        metrics: metrics.clone(),
        node_name: config.node_name.as_str().into(),
        ready: ready.clone(),
    };
    tracing::info!(%addr, node = %config.node_name, version = crate::metrics::VERSION, "listening");

    // kube and the API-server probe both use rustls; one provider for the whole process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime_load = tokio::spawn(publish_runtime_load(metrics.runtime.clone()));
    let scheduler = Arc::new(Scheduler::new(metrics.probes.clone()));
    let mut probes = Probes::start(&config, scheduler.clone(), metrics.clone());
    metrics
        .config
        .loaded(config.memory_estimate().total(), false);
    let mut running = config;
    ready.store(true, Ordering::Release);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut server_stop = stop_rx.clone();
    let server = tokio::spawn(crate::http::serve(listener, state, async move {
        let _ = server_stop.wait_for(|stop| *stop).await;
    }));

    let force = Arc::new(tokio::sync::Notify::new());
    let (readings_tx, mut readings) = tokio::sync::mpsc::channel(1);
    let mut watcher = Tasks::default();
    if let Some(source) = source.clone() {
        watcher.spawn(watch_config(source, force.clone(), readings_tx));
    }
    loop {
        tokio::select! {
            _ = signals.term.recv() => {
                tracing::info!("SIGTERM received, stopping");
                break;
            }
            _ = signals.int.recv() => {
                tracing::info!("SIGINT received, stopping");
                break;
            }
            _ = signals.hup.recv() => {
                if source.is_some() {
                    tracing::info!("SIGHUP received, reloading the config file");
                    force.notify_one();
                } else {
                    tracing::info!("SIGHUP received; no config file to reload (running on the built-in defaults)");
                }
            }
            Some(reading) = readings.recv() => {
                reload(reading, &mut running, &mut probes, &metrics);
            }
        }
    }
    drop(watcher);
    ready.store(false, Ordering::Release);
    let _ = stop_tx.send(true);
    scheduler.shutdown();
    runtime_load.abort();
    match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
        Ok(Ok(())) => {}
        Ok(Err(join)) => tracing::warn!(error = %join, "HTTP server task ended abnormally"),
        Err(_) => tracing::warn!("HTTP connections still open after the grace period; exiting"),
    }
    drop(probes);
    tracing::info!("stopped");
    Ok(())
}

/// Applies a reading of the config file, or keeps the running config when it is invalid.
fn reload(reading: Reading, running: &mut Config, probes: &mut Probes, metrics: &Metrics) {
    let why = match reading.trigger {
        Trigger::Signal => "SIGHUP",
        Trigger::Changed => "the file changed",
    };
    let mut config = match reading.result {
        Ok(config) => config,
        Err(e) => {
            metrics.config.reload_failed();
            tracing::error!(
                reason = why,
                "config reload failed, the previous config keeps running: {e}"
            );
            return;
        }
    };
    for (key, was, now) in [
        (
            "listen",
            running.listen.to_string(),
            config.listen.to_string(),
        ),
        (
            "node_name",
            running.node_name.clone(),
            config.node_name.clone(),
        ),
        (
            "metrics.detail",
            running.metrics.detail.label().to_owned(),
            config.metrics.detail.label().to_owned(),
        ),
    ] {
        if was != now {
            tracing::warn!(
                key,
                running = %was,
                file = %now,
                "this key takes effect at the next start only; the rest of the config is applied"
            );
        }
    }
    config.listen = running.listen;
    config.node_name = running.node_name.clone();
    // The families are registered with their label sets at start.
    config.metrics = running.metrics.clone();
    if config == *running {
        tracing::info!(reason = why, "config reloaded, unchanged");
    } else {
        probes.apply(&config);
        tracing::info!(reason = why, "config reloaded and applied");
    }
    metrics
        .config
        .loaded(config.memory_estimate().total(), true);
    *running = config;
}

#[cfg(test)]
mod config_fuzz;

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
