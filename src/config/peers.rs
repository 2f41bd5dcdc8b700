//! The `peers`, `apiserver` and `csi` sections: what needs the network or the Kubernetes API.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{ByteSize, HumanDuration, expanded_path, expanded_string};

/// The `peers` section: pod-to-pod probes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PeersConfig {
    pub interval: HumanDuration,
    pub timeout: HumanDuration,
    /// How many peers each node probes, chosen on a hash ring; 0 means every other node.
    pub neighbours: usize,
    pub protocols: Vec<PeerProtocol>,
    /// The port peers serve `/ping` on (their `listen` port).
    pub port: u16,
    /// Size of the bulk transfer (`/ping?bytes=N`); the server caps it at 1MiB.
    pub bulk_bytes: ByteSize,
    pub discovery: PeerDiscovery,
}

impl Default for PeersConfig {
    fn default() -> Self {
        Self {
            interval: HumanDuration::from_secs(10),
            timeout: HumanDuration::from_secs(2),
            neighbours: 10,
            protocols: PeerProtocol::ALL.to_vec(),
            port: 9753,
            bulk_bytes: ByteSize(64 * 1024),
            discovery: PeerDiscovery::default(),
        }
    }
}

/// The largest body `/ping?bytes=N` serves.
pub const MAX_PING_BYTES: u64 = 1 << 20;

/// One way of probing a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerProtocol {
    /// `GET /ping` on a fresh connection.
    Http,
    /// A TCP connect.
    Tcp,
    /// `GET /ping?bytes=N`: a transfer large enough to need full-size packets.
    Bulk,
    /// ICMP echo through an unprivileged datagram socket.
    Icmp,
}

impl PeerProtocol {
    pub const ALL: [PeerProtocol; 4] = [Self::Http, Self::Tcp, Self::Bulk, Self::Icmp];

    /// The `protocol` label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Tcp => "tcp",
            Self::Bulk => "bulk",
            Self::Icmp => "icmp",
        }
    }
}

/// Where the peers come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum PeerDiscovery {
    /// Watch the DaemonSet's pods through the API server.
    Kubernetes(KubernetesDiscovery),
    /// A fixed list of `node=ip:port`.
    Static(Vec<StaticPeer>),
    /// No peers: pod-to-pod probing is off.
    None,
}

impl Default for PeerDiscovery {
    fn default() -> Self {
        Self::Kubernetes(KubernetesDiscovery::default())
    }
}

/// `peers.discovery.kubernetes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesDiscovery {
    /// The DaemonSet's namespace (the Downward API gives `POD_NAMESPACE`).
    #[serde(deserialize_with = "expanded_string")]
    pub namespace: String,
    /// Label selector of the DaemonSet's pods.
    #[serde(deserialize_with = "expanded_string")]
    pub selector: String,
}

impl Default for KubernetesDiscovery {
    fn default() -> Self {
        Self {
            namespace: std::env::var("POD_NAMESPACE")
                .ok()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "kube-netprobe".to_owned()),
            selector: "app.kubernetes.io/name=kube-netprobe".to_owned(),
        }
    }
}

/// One `node=ip:port` entry of a static peer list.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StaticPeer {
    pub node: String,
    pub addr: SocketAddr,
}

impl fmt::Display for StaticPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.node, self.addr)
    }
}

impl FromStr for StaticPeer {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "`{s}` is not a peer: write it as `node-name=ip:port`, like `node-a=10.0.0.5:9753`"
            )
        };
        let (node, addr) = s.split_once('=').ok_or_else(bad)?;
        if node.is_empty() {
            return Err(bad());
        }
        let addr = addr.parse().map_err(|_| bad())?;
        Ok(Self {
            node: node.to_owned(),
            addr,
        })
    }
}

impl Serialize for StaticPeer {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for StaticPeer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        expanded_string(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

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
    fn static_peers_parse_and_print() {
        let p: StaticPeer = "node-a=198.18.0.1:9753".parse().unwrap();
        assert_eq!(p.node, "node-a");
        assert_eq!(p.to_string(), "node-a=198.18.0.1:9753");
        assert!("198.18.0.1:9753".parse::<StaticPeer>().is_err());
        assert!("=198.18.0.1:9753".parse::<StaticPeer>().is_err());
        assert_eq!(format_host_port("fd00::1", "443"), "[fd00::1]:443");
    }
}
