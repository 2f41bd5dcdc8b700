//! The `peers` section: pod-to-pod probes and where the peers come from.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{ByteSize, HumanDuration, expanded_string};

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

/// One `node=ip:port` entry of a static peer list; a dual-stack node has one entry per family.
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
                "`{s}` is not a peer: write it as `node-name=ip:port`, like `node-a=10.0.0.5:9753`, or with an IPv6 address in brackets, like `node-a=[fd00::5]:9753`"
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
        let v6: StaticPeer = "node-a=[fd00::1]:9753".parse().unwrap();
        assert_eq!(v6.to_string(), "node-a=[fd00::1]:9753");
        assert!("node-a=fd00::1:9753".parse::<StaticPeer>().is_err());
    }
}
