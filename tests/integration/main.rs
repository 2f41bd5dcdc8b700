//! Integration tests against the real `kube-netprobe` binary, as one test binary. The module
//! list below is the index of what is covered; shared fixtures live in `util` and `dns_server`.

// Fixtures.
mod alertmanager;
mod apiserver;
mod dns_server;
mod netns;
mod util;
mod volume;

// Suites.
mod blame;
mod budget;
mod capacity;
mod chart;
mod cli;
mod cluster;
mod config;
mod diagnose;
mod diagnose_capacity;
mod dns;
mod http_limits;
mod image;
mod kube;
mod logging;
mod mesh;
mod prometheus;
mod reload;
mod slo_report;
mod storage;
