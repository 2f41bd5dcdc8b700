//! Turns the world into peers and pods to probe: the DaemonSet's pods through the Kubernetes API,
//! or a static list; `ring` picks this node's neighbours among them; `coredns` the CoreDNS pods;
//! `csi` the drivers. Starting and stopping the probes for them is the daemon's (`daemon::peers`,
//! `daemon::coredns`).

pub mod coredns;
pub mod csi;
pub mod kube;
pub mod node_pods;
pub mod objects;
pub mod ring;
pub mod store;

use std::net::SocketAddr;

use ::kube::runtime::watcher;

use crate::metrics::WatchErrorReason;

/// A node that runs a kube-netprobe pod that can be probed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    pub node: String,
    /// One address per IP family the pod has, with the port peers serve `/ping` on.
    pub addrs: Vec<SocketAddr>,
}

/// Why a list or watch call failed, as the `reason` label of the error counters says it:
/// `forbidden` when the API server refused it (HTTP 403: the service account lacks an RBAC rule),
/// `error` for anything else (unreachable, timeouts, 5xx), which retrying may cure.
pub fn watch_error_reason(error: &watcher::Error) -> WatchErrorReason {
    if forbidden(error) {
        WatchErrorReason::forbidden
    } else {
        WatchErrorReason::error
    }
}

/// [`watch_error_reason`] as the label value, for the counters that take a string.
pub fn error_reason(error: &watcher::Error) -> &'static str {
    watch_error_reason(error).as_str()
}

fn forbidden(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => {
            matches!(e, ::kube::Error::Api(status) if status.is_forbidden())
        }
        watcher::Error::WatchError(status) => status.is_forbidden(),
        watcher::Error::NoResourceVersion => false,
    }
}

/// Logs that the calls on `resource` started failing, naming the missing RBAC rule when the API
/// server refused them; `keeping` says what the daemon goes on with.
pub fn log_failing(resource: &str, error: &watcher::Error, keeping: &str) {
    if forbidden(error) {
        let verb = match error {
            watcher::Error::InitialListFailed(_) => "list",
            _ => "watch",
        };
        tracing::warn!(
            resource, error = %error,
            "forbidden: {verb} {resource}: needs an RBAC rule granting get, list and watch on \
             {resource} to this pod's service account (the Helm chart's Role/ClusterRole); {keeping}"
        );
    } else {
        tracing::warn!(resource, error = %error, "list or watch of {resource} failing; {keeping}");
    }
}

#[cfg(test)]
mod tests {
    use ::kube::core::Status;

    use super::*;

    fn api_error(code: u16, reason: &str) -> ::kube::Error {
        ::kube::Error::Api(Status::failure("refused", reason).with_code(code).boxed())
    }

    #[test]
    fn a_403_is_forbidden_whatever_call_got_it_and_anything_else_is_an_error() {
        let forbidden = [
            watcher::Error::InitialListFailed(api_error(403, "Forbidden")),
            watcher::Error::WatchStartFailed(api_error(403, "Forbidden")),
            watcher::Error::WatchFailed(api_error(403, "Forbidden")),
            watcher::Error::WatchError(Status::failure("no", "Forbidden").with_code(403).boxed()),
        ];
        for e in &forbidden {
            assert_eq!(error_reason(e), "forbidden", "{e}");
        }
        let others = [
            watcher::Error::InitialListFailed(api_error(500, "InternalError")),
            watcher::Error::WatchStartFailed(api_error(401, "Unauthorized")),
            watcher::Error::WatchError(Status::failure("gone", "Expired").with_code(410).boxed()),
            watcher::Error::NoResourceVersion,
        ];
        for e in &others {
            assert_eq!(error_reason(e), "error", "{e}");
        }
    }
}
