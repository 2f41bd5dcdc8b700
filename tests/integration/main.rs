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
mod cgroup;
mod chart;
mod cli;
mod cluster;
mod config;
mod diagnose;
mod dns;
mod http_limits;
mod image;
mod kube;
mod logging;
mod mesh;
mod prometheus;
mod reload;
mod repair;
mod report_html;
mod slo_report;
mod storage;
