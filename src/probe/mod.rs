//! Probers, one module per kind. A prober takes a target and a deadline and returns an
//! observation; its target type records that observation into the metrics.

pub mod apiserver;
pub mod dns;
pub mod http_client;
pub mod peer;
pub mod storage;

// Log damping is the logging layer's; the probers use it through here.
pub use crate::logging::{Health, LOG_BURST, LOG_REFILL, Transition};
