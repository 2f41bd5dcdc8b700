//! The `apiserver` and `csi` sections: what this pod reads of the Kubernetes API server.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

use super::{HumanDuration, expanded_path, expanded_string};

/// The `apiserver` section: probes of the Kubernetes API server from this pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiserverConfig {
    /// Off: no API-server probes. Unset: on when running in a cluster
    /// (`KUBERNETES_SERVICE_HOST` is set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    pub interval: HumanDuration,
    pub timeout: HumanDuration,
    /// The endpoint requested on both paths.
    pub url_path: String,
    /// `path="direct"`: the Service's ClusterIP and port, as the in-cluster environment gives
    /// them (`${KUBERNETES_SERVICE_HOST}:${KUBERNETES_SERVICE_PORT}`).
    #[serde(
        deserialize_with = "expanded_opt_addr",
        skip_serializing_if = "Option::is_none"
    )]
    pub direct: Option<SocketAddr>,
    /// `path="dns"`: this name, resolved through the pod's resolver (server `system`).
    #[serde(deserialize_with = "expanded_string")]
    pub dns_name: String,
    pub dns_port: u16,
    /// CA bundle that signs the API server's certificate.
    #[serde(deserialize_with = "expanded_path")]
    pub ca_file: PathBuf,
    /// Bearer token sent with each request, when the file exists.
    #[serde(deserialize_with = "expanded_path")]
    pub token_file: PathBuf,
}

const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

impl Default for ApiserverConfig {
    fn default() -> Self {
        let env = |var| std::env::var(var).ok().filter(|v: &String| !v.is_empty());
        let direct = match (
            env("KUBERNETES_SERVICE_HOST"),
            env("KUBERNETES_SERVICE_PORT"),
        ) {
            (Some(host), Some(port)) => format_host_port(&host, &port).parse().ok(),
            _ => None,
        };
        Self {
            enabled: None,
            interval: HumanDuration::from_secs(15),
            timeout: HumanDuration::from_secs(2),
            url_path: "/readyz".to_owned(),
            direct,
            dns_name: "kubernetes.default.svc".to_owned(),
            dns_port: 443,
            ca_file: PathBuf::from(format!("{SERVICE_ACCOUNT_DIR}/ca.crt")),
            token_file: PathBuf::from(format!("{SERVICE_ACCOUNT_DIR}/token")),
        }
    }
}

impl ApiserverConfig {
    /// Whether the probes run: as configured, else when in a cluster.
    pub fn is_enabled(&self) -> bool {
        self.enabled.unwrap_or(self.direct.is_some())
    }
}

/// The `csi` section: CSI node registration, from the Kubernetes API.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CsiConfig {
    /// Unset: on when running in a cluster (`KUBERNETES_SERVICE_HOST` is set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Drivers not expected on every node (for example ones whose node plugin runs on a subset
    /// of nodes by design): no series for them.
    pub ignore_drivers: Vec<String>,
}

impl CsiConfig {
    pub fn is_enabled(&self) -> bool {
        self.enabled.unwrap_or_else(|| {
            std::env::var("KUBERNETES_SERVICE_HOST").is_ok_and(|h| !h.is_empty())
        })
    }
}

/// The `pod_ips` section: this node's pod IPs against its podCIDR, from the Kubernetes API.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PodIpsConfig {
    /// Off unless set: it needs list and watch on pods in every namespace (the field selector
    /// narrows what is sent, not what may be read), which is whole pod specs, environment
    /// variables included, on every node. Turn it on where that read may be granted and the CNI
    /// plugin allocates from the node's podCIDR; `diagnose` counts the same with the caller's
    /// own credentials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

impl PodIpsConfig {
    pub fn is_enabled(&self) -> bool {
        self.enabled.unwrap_or(false)
    }
}

/// `host:port`, with brackets around an IPv6 host.
fn format_host_port(host: &str, port: &str) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn expanded_opt_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let raw = expanded_string(d)?;
    raw.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "`{raw}` is not an address: expected ip:port, like `10.96.0.1:443`"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_hosts_are_bracketed() {
        assert_eq!(format_host_port("fd00::1", "443"), "[fd00::1]:443");
        assert_eq!(format_host_port("10.96.0.1", "443"), "10.96.0.1:443");
    }
}
