//! The API-server prober: `GET /readyz` from this pod, over two paths.
//!
//! `direct` connects to the Service IP the in-cluster environment gives
//! (`KUBERNETES_SERVICE_HOST`); `dns` first resolves `kubernetes.default.svc` through the pod's
//! resolver, libc-style, then connects to what it got. "direct works, dns fails" then reads as a
//! DNS problem, not an API-server one. TLS is verified against the in-cluster CA; phases are
//! `dns` (on the dns path), `connect`, `tls`, `first_byte` and `total`, all from the start.
//!
//! This is deliberately not kube's client: its default layers retry 429/503/504 by themselves,
//! which is right for discovery and wrong for a probe.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::Name;
use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::config::ApiserverConfig;
use crate::metrics::ApiserverMetrics;
pub use crate::observation::apiserver::RESULTS;
use crate::probe::dns::{Outcome, SystemResolver, resolve_system};
use crate::probe::http_client::{self, io_result};
use crate::probe::{Health, Transition};
use crate::scheduler::{RunFuture, Target};

/// What one probe saw.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiserverObservation {
    pub result: &'static str,
    /// Seconds from the start, for a successful probe.
    pub phases: Vec<(&'static str, f64)>,
    pub detail: Option<String>,
}

impl ApiserverObservation {
    fn failed(result: &'static str, detail: impl ToString) -> Self {
        Self {
            result,
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
    path: &'static str,
    endpoint: Endpoint,
    url_path: String,
    interval: Duration,
    timeout: Duration,
    ca_file: PathBuf,
    token_file: PathBuf,
    system: Arc<SystemResolver>,
    metrics: ApiserverMetrics,
    health: Health,
}

impl ApiserverTarget {
    pub fn new(
        path: &'static str,
        endpoint: Endpoint,
        config: &ApiserverConfig,
        system: Arc<SystemResolver>,
        metrics: ApiserverMetrics,
    ) -> Self {
        metrics.add_path(path);
        Self {
            path,
            endpoint,
            url_path: config.url_path.clone(),
            interval: config.interval.get(),
            timeout: config.timeout.get(),
            ca_file: config.ca_file.clone(),
            token_file: config.token_file.clone(),
            system,
            metrics,
            health: Health::default(),
        }
    }

    /// Probes once, by `deadline`.
    pub async fn observe(&self, deadline: Instant) -> ApiserverObservation {
        let start = Instant::now();
        let mut phases = Vec::with_capacity(5);
        // The CA and token are read each time: both are rotated on disk by the kubelet.
        let tls = match tls_config(&self.ca_file) {
            Ok(tls) => tls,
            Err(e) => return ApiserverObservation::failed("tls_error", e),
        };
        let token = std::fs::read_to_string(&self.token_file)
            .ok()
            .map(|t| t.trim().to_owned());
        let (addr, server_name, host) = match &self.endpoint {
            Endpoint::Addr(addr) => (
                *addr,
                ServerName::IpAddress(addr.ip().into()),
                addr.to_string(),
            ),
            Endpoint::Name { name, port } => {
                let parsed = match Name::from_ascii(name) {
                    Ok(parsed) => parsed,
                    Err(e) => return ApiserverObservation::failed("dns_error", e),
                };
                let conf = self.system.current();
                let (lookup, addresses) = resolve_system(&conf, &parsed, deadline).await;
                let Some(ip) = addresses.first().copied() else {
                    let why = match lookup.outcome {
                        Outcome::Timeout => {
                            return ApiserverObservation::failed("timeout", "DNS lookup timed out");
                        }
                        outcome => outcome.describe(),
                    };
                    return ApiserverObservation::failed("dns_error", format!("{name}: {why}"));
                };
                phases.push(("dns", start.elapsed().as_secs_f64()));
                let server_name = match ServerName::try_from(name.clone()) {
                    Ok(server_name) => server_name,
                    Err(e) => return ApiserverObservation::failed("tls_error", e),
                };
                let host = if *port == 443 {
                    name.clone()
                } else {
                    format!("{name}:{port}")
                };
                (SocketAddr::new(ip, *port), server_name, host)
            }
        };
        let tcp = match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Err(_) => return ApiserverObservation::failed("timeout", format!("connect to {addr}")),
            Ok(Err(e)) => {
                return ApiserverObservation::failed(io_result(&e), format!("{addr}: {e}"));
            }
            Ok(Ok(tcp)) => tcp,
        };
        let _ = tcp.set_nodelay(true);
        phases.push(("connect", start.elapsed().as_secs_f64()));
        let connector = tokio_rustls::TlsConnector::from(tls);
        let stream =
            match tokio::time::timeout_at(deadline, connector.connect(server_name, tcp)).await {
                Err(_) => return ApiserverObservation::failed("timeout", "TLS handshake"),
                Ok(Err(e)) => {
                    // A certificate the CA does not sign, or the wrong name, is a TLS failure; a
                    // connection that breaks during the handshake is a network one.
                    let result = if e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) {
                        "tls_error"
                    } else {
                        io_result(&e)
                    };
                    return ApiserverObservation::failed(result, format!("{addr}: {e}"));
                }
                Ok(Ok(stream)) => stream,
            };
        phases.push(("tls", start.elapsed().as_secs_f64()));
        let response = match tokio::time::timeout_at(
            deadline,
            http_client::get(stream, &host, &self.url_path, token.as_deref()),
        )
        .await
        {
            Err(_) => return ApiserverObservation::failed("timeout", "waiting for the response"),
            Ok(Err(failure)) => return ApiserverObservation::failed(failure.result(), failure),
            Ok(Ok(response)) => response,
        };
        if !response.status.is_success() {
            return ApiserverObservation::failed(
                "http_error",
                format!("{} answered HTTP {}", self.url_path, response.status),
            );
        }
        phases.push(("first_byte", (response.first_byte - start).as_secs_f64()));
        phases.push(("total", (response.done - start).as_secs_f64()));
        ApiserverObservation {
            result: "success",
            phases,
            detail: None,
        }
    }

    fn record(&self, observation: &ApiserverObservation) {
        self.metrics
            .record(self.path, observation.result, &observation.phases);
        match self.health.update(observation.result == "success") {
            Transition::StartedFailing { suppressed } => tracing::warn!(
                path = self.path, endpoint = ?self.endpoint, result = observation.result,
                detail = observation.detail.as_deref().unwrap_or(""), suppressed,
                "API-server probe failing"
            ),
            Transition::Recovered { suppressed } => {
                tracing::info!(path = self.path, suppressed, "API-server probe recovered")
            }
            Transition::Unchanged => {}
        }
    }
}

impl Target for ApiserverTarget {
    fn probe(&self) -> &'static str {
        "apiserver"
    }

    fn describe(&self) -> String {
        format!("apiserver {} {:?}", self.path, self.endpoint)
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    fn deadline(&self) -> Duration {
        self.timeout
    }

    fn run(self: Arc<Self>, deadline: Instant) -> RunFuture {
        Box::pin(async move {
            let observation = self.observe(deadline).await;
            self.record(&observation);
        })
    }

    fn cut_off(&self) {
        self.record(&ApiserverObservation::failed(
            "timeout",
            "cut off at the deadline",
        ));
    }
}

/// The targets the config asks for: `direct` when an address is known, `dns` always (when
/// enabled at all).
pub fn endpoints(config: &ApiserverConfig) -> Vec<(&'static str, Endpoint)> {
    let mut out = Vec::new();
    if let Some(addr) = config.direct {
        out.push(("direct", Endpoint::Addr(addr)));
    }
    out.push((
        "dns",
        Endpoint::Name {
            name: config.dns_name.clone(),
            port: config.dns_port,
        },
    ));
    out
}
