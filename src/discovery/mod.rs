//! Turns the world into peers to probe: the DaemonSet's pods through the Kubernetes API, or a
//! static list; `mesh` picks this node's neighbours among them and keeps the probes in step.

pub mod coredns;
pub mod csi;
pub mod kube;
pub mod mesh;
pub mod ring;
pub mod store;

use std::net::SocketAddr;

/// A node that runs a kube-netprobe pod that can be probed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    pub node: String,
    /// One address per IP family the pod has, with the port peers serve `/ping` on.
    pub addrs: Vec<SocketAddr>,
}
