//! The API-server prober: `GET /readyz` from this pod, over two paths.
//!
//! `direct` connects to the Service IP the in-cluster environment gives
//! (`KUBERNETES_SERVICE_HOST`); `dns` first resolves `kubernetes.default.svc` through the pod's
//! resolver, libc-style, then connects to what it got. "direct works, dns fails" then reads as a
//! DNS problem, not an API-server one. TLS is verified against the in-cluster CA; phases are
//! `dns` (on the dns path), `connect`, `tls`, `first_byte` and `total`, all from the start.
//!
//! Each path is probed over every IP family it has, labelled `family`: `direct` over the family
//! of its address; `dns` over each family the name has resolved to, at the first address of
//! that family, so a dual-stack Service that fails over IPv6 only shows as such. A family the
//! name stops resolving to counts as a `dns_error` of that family.
//!
//! This is deliberately not kube's client: its default layers retry 429/503/504 by themselves,
//! which is right for discovery and wrong for a probe.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::rr::Name;
use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::config::ApiserverConfig;
use crate::metrics::{
    ApiserverKey, ApiserverMetrics, ApiserverPath, ApiserverResult, IpFamily, NetFailure, Phase,
};
use crate::probe::dns::{Outcome, SystemResolver, resolve_system};
use crate::probe::http_client::{self, io_result};
use crate::probe::{Health, Transition};
use crate::scheduler::{RunFuture, Target};

/// What one probe saw.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiserverObservation {
    pub result: ApiserverResult,
    /// Seconds from the start, for a successful probe.
    pub phases: Vec<(Phase, f64)>,
    pub detail: Option<String>,
}

impl ApiserverObservation {
    fn failed(result: impl Into<ApiserverResult>, detail: impl ToString) -> Self {
        Self {
            result: result.into(),
            phases: Vec::new(),
            detail: Some(detail.to_string()),
        }
    }
}

/// Where a path connects.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// An address, verified against the certificate as that IP.
    Addr(SocketAddr),
    /// A name resolved through the pod's resolver, verified against the certificate as that name.
    Name { name: String, port: u16 },
}

/// Builds the TLS client settings from a PEM CA bundle.
pub fn tls_config(ca_file: &Path) -> Result<Arc<ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_file)
        .map_err(|e| format!("{}: {e}", ca_file.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", ca_file.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", ca_file.display()));
    }
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", ca_file.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// One path (`direct` or `dns`) to the API server.
#[derive(Debug)]
pub struct ApiserverTarget {
    path: ApiserverPath,
    endpoint: Endpoint,
    /// The families this path has been probed over (their series exist): the direct address's;
    /// for dns, every family the name has resolved to so far.
    families: Mutex<BTreeSet<IpFamily>>,
    url_path: String,
    interval: Duration,
    timeout: Duration,
    ca_file: PathBuf,
    token_file: PathBuf,
    system: Arc<SystemResolver>,
    metrics: ApiserverMetrics,
    /// Per family, indexed by `IpFamily as usize`.
    health: [Health; 2],
}

impl ApiserverTarget {
    /// A target probing `path`; `families` are the ones the same path was probed over before
    /// (a config reload), so their series go on.
    pub fn new(
        path: ApiserverPath,
        endpoint: Endpoint,
        config: &ApiserverConfig,
        system: Arc<SystemResolver>,
        metrics: ApiserverMetrics,
        families: BTreeSet<IpFamily>,
    ) -> Self {
        let mut families = families;
        if let Endpoint::Addr(addr) = &endpoint {
            families = BTreeSet::from([IpFamily::of(addr.ip())]);
        }
        for family in &families {
            metrics.add_target(ApiserverKey {
                path,
                family: *family,
            });
        }
        Self {
            path,
            endpoint,
            families: Mutex::new(families),
            url_path: config.url_path.clone(),
            interval: config.interval.get(),
            timeout: config.timeout.get(),
            ca_file: config.ca_file.clone(),
            token_file: config.token_file.clone(),
            system,
            metrics,
            health: Default::default(),
        }
    }

    /// The families this path has series for; before its first probe, the one a failure is
    /// told under (the direct address's, or IPv4 for a name not resolved yet).
    fn known_families(&self) -> BTreeSet<IpFamily> {
        let families = self.families.lock().expect("apiserver families lock");
        if families.is_empty() {
            BTreeSet::from([IpFamily::ipv4])
        } else {
            families.clone()
        }
    }

    /// The same failure for every family the path is known by.
    fn all_failed(
        &self,
        result: impl Into<ApiserverResult>,
        detail: impl ToString,
    ) -> Vec<(IpFamily, ApiserverObservation)> {
        let failed = ApiserverObservation::failed(result, detail);
        self.known_families()
            .into_iter()
            .map(|family| (family, failed.clone()))
            .collect()
    }

    /// Probes once, by `deadline`: one observation per IP family of the path.
    pub async fn observe(&self, deadline: Instant) -> Vec<(IpFamily, ApiserverObservation)> {
        let start = Instant::now();
        // The CA and token are read each time: both are rotated on disk by the kubelet.
        let tls = match tls_config(&self.ca_file) {
            Ok(tls) => tls,
            Err(e) => return self.all_failed(ApiserverResult::tls_error, e),
        };
        let token = std::fs::read_to_string(&self.token_file)
            .ok()
            .map(|t| t.trim().to_owned());
        let token = token.as_deref();
        let (name, port) = match &self.endpoint {
            Endpoint::Addr(addr) => {
                let server_name = ServerName::IpAddress(addr.ip().into());
                let host = addr.to_string();
                let observation = self
                    .exchange(
                        *addr,
                        server_name,
                        &host,
                        tls,
                        token,
                        start,
                        Vec::new(),
                        deadline,
                    )
                    .await;
                return vec![(IpFamily::of(addr.ip()), observation)];
            }
            Endpoint::Name { name, port } => (name, *port),
        };
        let parsed = match Name::from_ascii(name) {
            Ok(parsed) => parsed,
            Err(e) => return self.all_failed(ApiserverResult::dns_error, e),
        };
        let conf = self.system.current();
        let (lookup, addresses) = resolve_system(&conf, &parsed, deadline).await;
        if addresses.is_empty() {
            return match lookup.outcome {
                Outcome::Timeout => self.all_failed(NetFailure::timeout, "DNS lookup timed out"),
                outcome => self.all_failed(
                    ApiserverResult::dns_error,
                    format!("{name}: {}", outcome.describe()),
                ),
            };
        }
        let phases = vec![(Phase::dns, start.elapsed().as_secs_f64())];
        let server_name = match ServerName::try_from(name.clone()) {
            Ok(server_name) => server_name,
            Err(e) => return self.all_failed(ApiserverResult::tls_error, e),
        };
        let host = if port == 443 {
            name.clone()
        } else {
            format!("{name}:{port}")
        };
        // The first address of each family, as a client preferring that family would connect.
        let mut first: Vec<(IpFamily, IpAddr)> = Vec::new();
        for ip in addresses {
            if !first.iter().any(|(f, _)| *f == IpFamily::of(ip)) {
                first.push((IpFamily::of(ip), ip));
            }
        }
        let mut families = self
            .families
            .lock()
            .expect("apiserver families lock")
            .clone();
        families.extend(first.iter().map(|(f, _)| *f));
        let exchanges = families.into_iter().map(|family| {
            let ip = first.iter().find(|(f, _)| *f == family).map(|(_, ip)| *ip);
            let (tls, server_name, host, phases) =
                (tls.clone(), server_name.clone(), &host, phases.clone());
            async move {
                let observation = match ip {
                    Some(ip) => {
                        let addr = SocketAddr::new(ip, port);
                        self.exchange(addr, server_name, host, tls, token, start, phases, deadline)
                            .await
                    }
                    None => ApiserverObservation::failed(
                        ApiserverResult::dns_error,
                        format!("{name} no longer resolves to an {family} address"),
                    ),
                };
                (family, observation)
            }
        });
        futures_util::future::join_all(exchanges).await
    }

    /// Connect, TLS handshake and `GET` at `addr`; `phases` holds what came before (dns).
    #[allow(clippy::too_many_arguments)]
    async fn exchange(
        &self,
        addr: SocketAddr,
        server_name: ServerName<'static>,
        host: &str,
        tls: Arc<ClientConfig>,
        token: Option<&str>,
        start: Instant,
        mut phases: Vec<(Phase, f64)>,
        deadline: Instant,
    ) -> ApiserverObservation {
        let tcp = match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Err(_) => {
                return ApiserverObservation::failed(
                    NetFailure::timeout,
                    format!("connect to {addr}"),
                );
            }
            Ok(Err(e)) => {
                return ApiserverObservation::failed(io_result(&e), format!("{addr}: {e}"));
            }
            Ok(Ok(tcp)) => tcp,
        };
        let _ = tcp.set_nodelay(true);
        phases.push((Phase::connect, start.elapsed().as_secs_f64()));
        let connector = tokio_rustls::TlsConnector::from(tls);
        let stream = match tokio::time::timeout_at(deadline, connector.connect(server_name, tcp))
            .await
        {
            Err(_) => return ApiserverObservation::failed(NetFailure::timeout, "TLS handshake"),
            Ok(Err(e)) => {
                // A certificate the CA does not sign, or the wrong name, is a TLS failure; a
                // connection that breaks during the handshake is a network one.
                let result = if e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) {
                    ApiserverResult::tls_error
                } else {
                    io_result(&e).into()
                };
                return ApiserverObservation::failed(result, format!("{addr}: {e}"));
            }
            Ok(Ok(stream)) => stream,
        };
        phases.push((Phase::tls, start.elapsed().as_secs_f64()));
        let response = match tokio::time::timeout_at(
            deadline,
            http_client::get(stream, host, &self.url_path, token),
        )
        .await
        {
            Err(_) => {
                return ApiserverObservation::failed(
                    NetFailure::timeout,
                    "waiting for the response",
                );
            }
            Ok(Err(failure)) => return ApiserverObservation::failed(failure.result(), failure),
            Ok(Ok(response)) => response,
        };
        if !response.status.is_success() {
            return ApiserverObservation::failed(
                ApiserverResult::http_error,
                format!("{} answered HTTP {}", self.url_path, response.status),
            );
        }
        phases.push((
            Phase::first_byte,
            (response.first_byte - start).as_secs_f64(),
        ));
        phases.push((Phase::total, (response.done - start).as_secs_f64()));
        ApiserverObservation {
            result: ApiserverResult::success,
            phases,
            detail: None,
        }
    }

    fn record(&self, observations: &[(IpFamily, ApiserverObservation)]) {
        let mut families = self.families.lock().expect("apiserver families lock");
        for (family, observation) in observations {
            families.insert(*family);
            let key = ApiserverKey {
                path: self.path,
                family: *family,
            };
            self.metrics
                .record(key, observation.result, &observation.phases);
            let health = &self.health[*family as usize];
            let (path, result) = (self.path.as_str(), observation.result.as_str());
            match health.update(observation.result == ApiserverResult::success) {
                Transition::StartedFailing { suppressed } => tracing::warn!(
                    path, family = family.as_str(), endpoint = ?self.endpoint, result,
                    detail = observation.detail.as_deref().unwrap_or(""), suppressed,
                    "API-server probe failing"
                ),
                Transition::Recovered { suppressed } => tracing::info!(
                    path,
                    family = family.as_str(),
                    suppressed,
                    "API-server probe recovered"
                ),
                Transition::Unchanged => {}
            }
        }
    }

    /// The path's label.
    pub fn path(&self) -> ApiserverPath {
        self.path
    }

    /// The families this path has series for.
    pub fn families(&self) -> BTreeSet<IpFamily> {
        self.families
            .lock()
            .expect("apiserver families lock")
            .clone()
    }

    /// Removes every series of this path (it is no longer probed).
    pub fn retire(&self) {
        for family in self.families() {
            self.metrics.remove_target(ApiserverKey {
                path: self.path,
                family,
            });
        }
    }
}

impl Target for ApiserverTarget {
    fn probe(&self) -> &'static str {
        "apiserver"
    }

    fn describe(&self) -> String {
        format!("apiserver {} {:?}", self.path.as_str(), self.endpoint)
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    fn deadline(&self) -> Duration {
        self.timeout
    }

    fn run(self: Arc<Self>, deadline: Instant) -> RunFuture {
        Box::pin(async move {
            let observations = self.observe(deadline).await;
            self.record(&observations);
        })
    }

    fn cut_off(&self) {
        self.record(&self.all_failed(NetFailure::timeout, "cut off at the deadline"));
    }
}

/// The targets the config asks for: `direct` when an address is known, `dns` always (when
/// enabled at all).
pub fn endpoints(config: &ApiserverConfig) -> Vec<(ApiserverPath, Endpoint)> {
    let mut out = Vec::new();
    if let Some(addr) = config.direct {
        out.push((ApiserverPath::direct, Endpoint::Addr(addr)));
    }
    out.push((
        ApiserverPath::dns,
        Endpoint::Name {
            name: config.dns_name.clone(),
            port: config.dns_port,
        },
    ));
    out
}
