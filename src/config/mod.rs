//! The daemon's configuration: one YAML file, validated up front.
//!
//! Every section starts from documented defaults (see README.md, "Configuration"), unknown keys
//! are rejected, and every error names the file, the key path and, where the YAML parser knows
//! it, the line and column. Values that the Downward API supplies can be written as `${NODE_NAME}`
//! (or `${NODE_NAME:-fallback}`); expansion happens inside string values, never in the YAML
//! structure, so an odd variable value cannot change the shape of the document.

mod apiserver;
mod duration;
mod expand;
mod load;
mod memory;
mod peers;
mod size;
mod storage;

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RecordType};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use duration::HumanDuration;
pub use expand::expand_env;
pub use load::{LOAD_WARNING_RATIO, ProbeLoad, RUNTIME_WORKERS};
pub use memory::{MEMORY_CEILING, MemoryEstimate};

pub use crate::metrics::Detail;
pub use crate::observation::dns::{RCODES, rcode_name};
pub use crate::scheduler::{MAX_INTERVAL, MIN_INTERVAL};
pub use apiserver::{ApiserverConfig, CsiConfig, PodIpsConfig};
pub use peers::{
    KubernetesDiscovery, MAX_PING_BYTES, PeerDiscovery, PeerProtocol, PeersConfig, StaticPeer,
};
pub use size::ByteSize;
pub use storage::{StorageConfig, StorageVolume};

/// The largest config file read: parsing costs memory in proportion to the text, and every
/// config the limits allow fits in a small fraction of this.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Address the daemon listens on when the config does not say.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9753";
/// Where `system` lookups read the pod's resolver settings.
pub const DEFAULT_RESOLV_CONF: &str = "/etc/resolv.conf";

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `host:port` for `/metrics`, `/healthz`, `/readyz` and `/ping`.
    #[serde(deserialize_with = "expanded_parse")]
    pub listen: SocketAddr,
    /// This node's name, reported by `/ping` and in logs.
    #[serde(deserialize_with = "expanded_string")]
    pub node_name: String,
    pub dns: DnsConfig,
    pub peers: PeersConfig,
    pub apiserver: ApiserverConfig,
    pub csi: CsiConfig,
    pub pod_ips: PodIpsConfig,
    pub storage: StorageConfig,
    pub metrics: MetricsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN
                .parse()
                .expect("the default listen address parses"),
            node_name: default_node_name(),
            dns: DnsConfig::default(),
            peers: PeersConfig::default(),
            apiserver: ApiserverConfig::default(),
            csi: CsiConfig::default(),
            pod_ips: PodIpsConfig::default(),
            storage: StorageConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

/// The `metrics` section: how much latency detail `/metrics` carries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub detail: Detail,
}

/// The `dns` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Time between two lookups of one (server, query) pair.
    pub interval: HumanDuration,
    /// Deadline of one query to an explicit server. `system` lookups follow resolv.conf's own
    /// `timeout` and `attempts`, as the pod's libc does (bounded by `interval`).
    pub timeout: HumanDuration,
    /// `system` (the pod's resolv.conf, search list and ndots included) or `ip:port`.
    pub servers: Vec<DnsServer>,
    /// The resolv.conf that `system` lookups read.
    #[serde(deserialize_with = "expanded_path")]
    pub resolv_conf: PathBuf,
    /// Probe each CoreDNS pod directly, found through the Kubernetes API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discover_coredns: Option<CorednsDiscovery>,
    /// The names to look up, against every server.
    pub queries: Vec<DnsQuery>,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            interval: HumanDuration::from_secs(15),
            timeout: HumanDuration::from_secs(2),
            servers: vec![DnsServer::System],
            resolv_conf: PathBuf::from(DEFAULT_RESOLV_CONF),
            discover_coredns: None,
            queries: vec![
                DnsQuery {
                    name: QueryName::parse("kubernetes.default.svc.cluster.local")
                        .expect("the default query name is valid"),
                    qtype: QueryType(RecordType::A),
                    expect: None,
                },
                DnsQuery {
                    name: QueryName::parse("does-not-exist.invalid")
                        .expect("the default negative name is valid"),
                    qtype: QueryType(RecordType::A),
                    expect: Some(ExpectedRcode(ResponseCode::NXDomain)),
                },
            ],
        }
    }
}

/// `dns.discover_coredns`: where the CoreDNS pods are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorednsDiscovery {
    /// The namespace the CoreDNS pods run in.
    pub namespace: String,
    /// Their label selector (`k8s-app=kube-dns` on most clusters).
    pub selector: String,
    /// The port they answer DNS on.
    #[serde(default = "default_coredns_port")]
    pub port: u16,
}

fn default_coredns_port() -> u16 {
    53
}

/// One entry of `dns.servers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DnsServer {
    /// The pod's own resolver configuration (resolv.conf).
    System,
    /// Each `nameserver` of resolv.conf, asked directly (one query, no search list): in a pod
    /// with `dnsPolicy: ClusterFirst`, the kube-dns Service IP. Expanded into `Addr` entries
    /// when the daemon starts.
    Nameservers,
    /// One server, asked directly.
    Addr(SocketAddr),
}

impl DnsServer {
    /// The value of the `server` label.
    pub fn label(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for DnsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsServer::System => f.write_str("system"),
            DnsServer::Nameservers => f.write_str("nameservers"),
            DnsServer::Addr(addr) => write!(f, "{addr}"),
        }
    }
}

impl FromStr for DnsServer {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "system" => return Ok(DnsServer::System),
            "nameservers" => return Ok(DnsServer::Nameservers),
            _ => {}
        }
        s.parse::<SocketAddr>().map(DnsServer::Addr).map_err(|_| {
            format!(
                "`{s}` is not a DNS server: expected `system`, `nameservers` or an IP address \
                 with a port, like `10.96.0.10:53` or `[fd00::a]:53`"
            )
        })
    }
}

impl Serialize for DnsServer {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DnsServer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = expanded_string(d)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

/// One entry of `dns.queries`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsQuery {
    pub name: QueryName,
    #[serde(rename = "type", default)]
    pub qtype: QueryType,
    /// The response code that counts as success, whatever the answer holds. Unset: NOERROR with
    /// a record of the queried type for the name, directly or through a CNAME chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<ExpectedRcode>,
}

/// A DNS name as the user wrote it (the `name` label), validated.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QueryName {
    text: String,
    name: Name,
}

impl QueryName {
    /// Checks the name the way a resolver would before sending it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("`{text}` is not a valid DNS name: {why}");
        let body = text.strip_suffix('.').unwrap_or(text);
        if body.is_empty() {
            return Err(bad("it is empty"));
        }
        if body.len() > 253 {
            return Err(bad("it is longer than 253 characters"));
        }
        for label in body.split('.') {
            if label.is_empty() {
                return Err(bad("it has an empty label"));
            }
            if label.len() > 63 {
                return Err(bad("a label is longer than 63 characters"));
            }
            if let Some(c) = label
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
            {
                return Err(bad(&format!("it contains `{c}`")));
            }
        }
        let name = Name::from_ascii(text).map_err(|e| bad(&e.to_string()))?;
        Ok(Self {
            text: text.to_owned(),
            name,
        })
    }

    /// The name as written in the config: the `name` label.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parsed name; absolute when written with a trailing dot.
    pub fn name(&self) -> &Name {
        &self.name
    }
}

impl Serialize for QueryName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for QueryName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = expanded_string(d)?;
        QueryName::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// The record types a query may ask for.
pub const QUERY_TYPES: &[RecordType] = &[
    RecordType::A,
    RecordType::AAAA,
    RecordType::CNAME,
    RecordType::MX,
    RecordType::NS,
    RecordType::PTR,
    RecordType::SOA,
    RecordType::SRV,
    RecordType::TXT,
    RecordType::CAA,
];

/// A query's record type (`type`), A unless said otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QueryType(pub RecordType);

impl Default for QueryType {
    fn default() -> Self {
        QueryType(RecordType::A)
    }
}

impl Serialize for QueryType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for QueryType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        let upper = raw.to_ascii_uppercase();
        QUERY_TYPES
            .iter()
            .find(|t| t.to_string() == upper)
            .map(|t| QueryType(*t))
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "unknown record type `{raw}`, expected one of {}",
                    join(QUERY_TYPES.iter().map(|t| t.to_string()))
                ))
            })
    }
}

/// `expect`: the response code that makes a lookup a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpectedRcode(pub ResponseCode);

impl Serialize for ExpectedRcode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(rcode_name(self.0))
    }
}

impl<'de> Deserialize<'de> for ExpectedRcode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        RCODES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(&raw))
            .map(|(_, code)| ExpectedRcode(*code))
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "unknown response code `{raw}`, expected one of {}",
                    join(RCODES.iter().map(|(name, _)| name.to_string()))
                ))
            })
    }
}

fn join(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

fn expanded_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let raw = String::deserialize(d)?;
    expand_env(&raw, |var| std::env::var(var).ok()).map_err(serde::de::Error::custom)
}

fn expanded_path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    expanded_string(d).map(PathBuf::from)
}

fn expanded_parse<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    let raw = expanded_string(d)?;
    raw.parse()
        .map_err(|e| serde::de::Error::custom(format!("`{raw}`: {e}")))
}

/// `NODE_NAME` from the Downward API, else the kernel's host name.
fn default_node_name() -> String {
    std::env::var("NODE_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// A configuration that could not be loaded. The text is what the user reads, on stderr and
/// from `check-config`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read the config file: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}{}: {key}{message}", location.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default(), key = if key.is_empty() { String::new() } else { format!("{key}: ") })]
    Invalid {
        file: String,
        /// Dotted key path (`dns.queries[1].type`); empty for the document itself.
        key: String,
        /// Line and column, 1-based.
        location: Option<(usize, usize)>,
        message: String,
    },
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = Self::read(path)?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Reads a config file's text, refusing one over [`MAX_CONFIG_BYTES`] before parsing it.
    pub fn read(path: &Path) -> Result<String, ConfigError> {
        use std::io::Read;
        let file = path.display().to_string();
        let read_error = |source| ConfigError::Read {
            file: file.clone(),
            source,
        };
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut text))
            .map_err(read_error)?;
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(ConfigError::Invalid {
                file,
                key: String::new(),
                location: None,
                message: format!(
                    "the file is larger than {}; a config this size is a mistake",
                    ByteSize(MAX_CONFIG_BYTES)
                ),
            });
        }
        Ok(text)
    }

    /// Parses and validates config text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let mut key = String::new();
        let parsed = if text.trim().is_empty() {
            // An empty file means "all defaults", not an error.
            Ok(Config::default())
        } else {
            serde_saphyr::with_deserializer_from_str(text, |de| {
                serde_path_to_error::deserialize(de).map_err(|e| {
                    key = e.path().to_string();
                    e.into_inner()
                })
            })
        };
        let config = parsed.map_err(|e| {
            let location = e
                .location()
                .map(|l| (l.line() as usize, l.column() as usize));
            ConfigError::Invalid {
                file: file.to_owned(),
                key: tidy_key_path(&key),
                location,
                message: strip_location(&e.without_snippet().to_string()),
            }
        })?;
        config
            .validate()
            .map_err(|(key, message)| ConfigError::Invalid {
                file: file.to_owned(),
                key,
                location: None,
                message,
            })?;
        Ok(config)
    }

    /// Checks what no single value can: relations between keys, and the bounds of every list
    /// (each entry costs memory: see `memory`).
    fn validate(&self) -> Result<(), (String, String)> {
        let dns = &self.dns;
        check_timing("dns", dns.interval, dns.timeout)?;
        check_count("dns.servers", dns.servers.len(), MAX_DNS_SERVERS)?;
        check_count("dns.queries", dns.queries.len(), MAX_DNS_QUERIES)?;
        check_count(
            "csi.ignore_drivers",
            self.csi.ignore_drivers.len(),
            MAX_IGNORED_DRIVERS,
        )?;
        check_timing("peers", self.peers.interval, self.peers.timeout)?;
        check_timing("apiserver", self.apiserver.interval, self.apiserver.timeout)?;
        self.validate_peers()?;
        self.storage.validate()?;
        if !self.apiserver.url_path.starts_with('/') {
            return Err((
                "apiserver.url_path".into(),
                format!("`{}` must start with `/`", self.apiserver.url_path),
            ));
        }
        if let Some(coredns) = &dns.discover_coredns {
            for (key, value) in [
                ("namespace", &coredns.namespace),
                ("selector", &coredns.selector),
            ] {
                if value.trim().is_empty() {
                    return Err((
                        format!("dns.discover_coredns.{key}"),
                        "must not be empty".into(),
                    ));
                }
            }
            if coredns.port == 0 {
                return Err((
                    "dns.discover_coredns.port".into(),
                    "must be a port number from 1 to 65535".into(),
                ));
            }
        }
        let mut seen = HashSet::new();
        for (i, server) in dns.servers.iter().enumerate() {
            if !seen.insert(server) {
                return Err((
                    format!("dns.servers[{i}]"),
                    format!("`{server}` is listed twice"),
                ));
            }
        }
        let mut seen = HashSet::new();
        for (i, query) in dns.queries.iter().enumerate() {
            if !seen.insert((query.name.as_str(), query.qtype)) {
                return Err((
                    format!("dns.queries[{i}]"),
                    format!(
                        "`{} {}` is listed twice",
                        query.name.as_str(),
                        query.qtype.0
                    ),
                ));
            }
        }
        if !dns.servers.is_empty() && dns.queries.is_empty() {
            return Err((
                "dns.queries".into(),
                "is empty: give at least one name to look up, or set `servers: []` to turn DNS probing off".into(),
            ));
        }
        self.check_memory()
    }

    fn validate_peers(&self) -> Result<(), (String, String)> {
        let peers = &self.peers;
        if peers.neighbours > MAX_NEIGHBOURS {
            return Err((
                "peers.neighbours".into(),
                format!(
                    "{} is more than {MAX_NEIGHBOURS}; 0 probes every other node",
                    peers.neighbours
                ),
            ));
        }
        if let PeerDiscovery::Static(list) = &peers.discovery {
            check_count("peers.discovery.static", list.len(), MAX_STATIC_PEERS)?;
        }
        if peers.bulk_bytes.0 == 0 || peers.bulk_bytes.0 > MAX_PING_BYTES {
            return Err((
                "peers.bulk_bytes".into(),
                format!(
                    "{} is out of range: from 1B to {}",
                    peers.bulk_bytes,
                    ByteSize(MAX_PING_BYTES)
                ),
            ));
        }
        let mut seen = HashSet::new();
        for (i, protocol) in peers.protocols.iter().enumerate() {
            if !seen.insert(protocol) {
                return Err((
                    format!("peers.protocols[{i}]"),
                    format!("`{}` is listed twice", protocol.label()),
                ));
            }
        }
        if let PeerDiscovery::Static(list) = &peers.discovery {
            let mut seen = HashSet::new();
            for (i, peer) in list.iter().enumerate() {
                if !seen.insert(&peer.node) {
                    return Err((
                        format!("peers.discovery.static[{i}]"),
                        format!("node `{}` is listed twice", peer.node),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The effective configuration, defaults filled in, as YAML.
    pub fn to_yaml(&self) -> String {
        let mut yaml = serde_saphyr::to_string(self).expect("the config always serializes");
        if !yaml.ends_with('\n') {
            yaml.push('\n');
        }
        yaml
    }
}

/// Most entries of `dns.servers`.
pub const MAX_DNS_SERVERS: usize = 16;
/// Most entries of `dns.queries`: every one is asked of every server.
pub const MAX_DNS_QUERIES: usize = 64;
/// Most `peers.neighbours` (0, every other node, is allowed too).
pub const MAX_NEIGHBOURS: usize = 1000;
/// Most entries of `peers.discovery.static`.
pub const MAX_STATIC_PEERS: usize = 5000;
/// Most entries of `csi.ignore_drivers`.
pub const MAX_IGNORED_DRIVERS: usize = 256;

fn check_count(key: &str, len: usize, max: usize) -> Result<(), (String, String)> {
    if len > max {
        return Err((
            key.into(),
            format!("has {len} entries, at most {max} are allowed"),
        ));
    }
    Ok(())
}

/// A section's interval and timeout: an interval from [`MIN_INTERVAL`] to [`MAX_INTERVAL`], and
/// a timeout that ends a run before the next one starts (so it is bounded too).
fn check_timing(
    section: &str,
    interval: HumanDuration,
    timeout: HumanDuration,
) -> Result<(), (String, String)> {
    if interval.get() < MIN_INTERVAL {
        return Err((
            format!("{section}.interval"),
            format!("{interval} is too short, the minimum is 100ms"),
        ));
    }
    if interval.get() > MAX_INTERVAL {
        return Err((
            format!("{section}.interval"),
            format!("{interval} is too long, the maximum is 1day"),
        ));
    }
    if timeout.get().is_zero() {
        return Err((format!("{section}.timeout"), "must be more than 0s".into()));
    }
    if timeout >= interval {
        return Err((
            format!("{section}.timeout"),
            format!(
                "{timeout} must be shorter than {section}.interval ({interval}), so that a probe ends before the next one starts"
            ),
        ));
    }
    Ok(())
}

/// serde_path_to_error writes `.` for the document and `?` for a position it could not name
/// (inside a syntax error); neither helps a reader.
fn tidy_key_path(path: &str) -> String {
    let mut path = path;
    while let Some(stripped) = path.strip_suffix(".?") {
        path = stripped;
    }
    if path == "." || path == "?" {
        String::new()
    } else {
        path.to_owned()
    }
}

/// serde-saphyr appends " at line L, column C" to its messages; the location is reported
/// separately, in front.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) if message[i..].contains(", column ") => message[..i].to_owned(),
        _ => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::parse(text, "c.yaml").unwrap_err().to_string()
    }

    #[test]
    fn defaults_fill_an_empty_file() {
        let c = Config::parse("", "c.yaml").unwrap();
        assert_eq!(c.dns.servers, vec![DnsServer::System]);
        assert_eq!(c.dns.interval.get().as_secs(), 15);
        assert_eq!(c.dns.queries.len(), 2);
        assert_eq!(
            c.dns.queries[1].expect,
            Some(ExpectedRcode(ResponseCode::NXDomain))
        );
    }

    #[test]
    fn unknown_key_names_path_and_position() {
        assert_eq!(
            err("dns:\n  intervl: 3s\n"),
            "c.yaml:2:3: dns.intervl: unknown field `intervl`, expected one of interval, timeout, servers, resolv_conf, discover_coredns, queries"
        );
    }

    #[test]
    fn relations_are_checked() {
        assert_eq!(
            err("dns:\n  interval: 2s\n  timeout: 2s\n"),
            "c.yaml: dns.timeout: 2s must be shorter than dns.interval (2s), so that a probe ends before the next one starts"
        );
    }

    #[test]
    fn durations_sizes_and_counts_are_bounded() {
        // The longest interval is accepted, and so is a timeout just under it.
        assert!(Config::parse("dns:\n  interval: 1day\n  timeout: 23h\n", "c.yaml").is_ok());
        for section in ["dns", "peers", "apiserver", "storage"] {
            assert_eq!(
                err(&format!("{section}:\n  interval: 584000000000y\n")),
                format!(
                    "c.yaml: {section}.interval: 584000000000years is too long, the maximum is 1day"
                )
            );
        }
        assert_eq!(
            err("dns:\n  interval: 25h\n"),
            "c.yaml: dns.interval: 1day 1h is too long, the maximum is 1day"
        );
        let queries: String = (0..65)
            .map(|i| format!("    - {{ name: q{i}.example }}\n"))
            .collect();
        assert_eq!(
            err(&format!("dns:\n  queries:\n{queries}")),
            "c.yaml: dns.queries: has 65 entries, at most 64 are allowed"
        );
        assert_eq!(
            err("peers:\n  neighbours: 1001\n"),
            "c.yaml: peers.neighbours: 1001 is more than 1000; 0 probes every other node"
        );
        assert_eq!(
            err("storage:\n  reserve: 2TiB\n"),
            "c.yaml: storage.reserve: 2TiB is more than 1TiB"
        );
        assert_eq!(
            err("storage:\n  volumes:\n    - { name: v, path: /v, size: 2GiB }\n"),
            "c.yaml: storage.volumes[0].size: 2GiB is more than 1GiB"
        );
    }

    #[test]
    fn a_config_file_over_the_size_limit_is_refused_unparsed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.yaml");
        // Valid YAML (a comment) that no parser needs to see.
        let mut text = "#".repeat(MAX_CONFIG_BYTES as usize);
        text.push('\n');
        std::fs::write(&path, text).unwrap();
        assert_eq!(
            Config::load(&path).unwrap_err().to_string(),
            format!(
                "{}: the file is larger than 1MiB; a config this size is a mistake",
                path.display()
            )
        );
    }

    #[test]
    fn effective_config_round_trips() {
        let c = Config::parse("dns:\n  servers: [system, \"10.0.0.10:53\"]\n", "c.yaml").unwrap();
        let again = Config::parse(&c.to_yaml(), "again.yaml").unwrap();
        assert_eq!(c, again);
    }

    #[test]
    fn rcode_names_match_coredns() {
        assert_eq!(rcode_name(ResponseCode::NoError), "NOERROR");
        assert_eq!(rcode_name(ResponseCode::NXDomain), "NXDOMAIN");
        assert_eq!(rcode_name(ResponseCode::Unknown(3000)), "OTHER");
    }
}
