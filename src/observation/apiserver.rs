//! The results an API-server probe can have.

/// Every `result` an API-server probe can have.
pub const RESULTS: &[&str] = &[
    "success",
    "timeout",
    "refused",
    "reset",
    "unreachable",
    "dns_error",
    "tls_error",
    "http_error",
    "permission_denied",
    "error",
];
