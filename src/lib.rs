//! kube-netprobe: a Prometheus exporter that measures, continuously and with numbers, whether a
//! Kubernetes node's DNS works the way its pods experience it.
//!
//! `config` loads and validates the YAML file; `scheduler` runs every (prober, target) pair on
//! its own interval; `probe` holds the probers; `metrics` registers every family; `http` serves
//! them; `daemon` wires it together and `cli` is the command line.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod diagnose;
pub mod discovery;
pub mod exit;
pub mod html;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod observation;
pub mod probe;
pub mod process;
pub mod repair;
pub mod resolv_conf;
pub mod scheduler;
pub mod slo;
