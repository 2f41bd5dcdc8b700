//! The pod's resolver settings (`/etc/resolv.conf`) and the libc search-list walk.
//!
//! `system` lookups must cost and fail the way an application's `getaddrinfo` does, so this
//! follows glibc: at most three nameservers on port 53, `search`/`domain` (the last one wins),
//! `ndots` (capped at 15), `timeout` (capped at 30 s), `attempts` (capped at 5), `rotate`,
//! `use-vc`, `edns0`, `single-request` and `single-request-reopen`. Lines glibc would ignore are
//! ignored here too, and reported as warnings.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use hickory_proto::rr::Name;

/// glibc's MAXNS.
const MAX_NAMESERVERS: usize = 3;

/// Parsed resolver settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvConf {
    pub nameservers: Vec<SocketAddr>,
    pub search: Vec<Name>,
    pub ndots: u8,
    pub timeout: Duration,
    pub attempts: u32,
    pub rotate: bool,
    pub use_vc: bool,
    pub edns0: bool,
    pub no_tld_query: bool,
    /// `options single-request`: the AAAA query of a getaddrinfo call waits for the A answer.
    pub single_request: bool,
    /// `options single-request-reopen`: as `single-request`, and the AAAA query goes out from a
    /// new socket.
    pub single_request_reopen: bool,
    /// Lines that glibc would skip, as `line N: why`.
    pub warnings: Vec<String>,
}

impl ResolvConf {
    /// Reads and parses a resolv.conf file.
    pub fn load(path: &Path) -> std::io::Result<Self> {
        std::fs::read(path).map(|bytes| Self::parse(&bytes))
    }

    /// Parses resolv.conf text, leniently, as libc does.
    pub fn parse(bytes: &[u8]) -> Self {
        let (raw, errors) = resolv_conf::Config::parse_with_errors(bytes);
        let mut warnings: Vec<String> = errors.iter().map(describe).collect();
        let mut nameservers: Vec<SocketAddr> = raw
            .nameservers
            .iter()
            .map(|ip| SocketAddr::new(IpAddr::from(ip), 53))
            .collect();
        if nameservers.len() > MAX_NAMESERVERS {
            warnings.push(format!(
                "{} nameservers listed; libc uses only the first {MAX_NAMESERVERS}",
                nameservers.len()
            ));
            nameservers.truncate(MAX_NAMESERVERS);
        }
        if nameservers.is_empty() {
            // glibc's fallback when no nameserver line is present.
            nameservers.push(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 53));
        }
        let mut search = Vec::new();
        for domain in raw.get_last_search_or_domain() {
            match Name::from_ascii(domain) {
                Ok(mut name) => {
                    name.set_fqdn(true);
                    search.push(name);
                }
                Err(e) => warnings.push(format!("search domain `{domain}` skipped: {e}")),
            }
        }
        Self {
            nameservers,
            search,
            ndots: raw.ndots.min(15) as u8,
            timeout: Duration::from_secs(u64::from(raw.timeout.clamp(1, 30))),
            attempts: raw.attempts.clamp(1, 5),
            rotate: raw.rotate,
            use_vc: raw.use_vc,
            edns0: raw.edns0,
            no_tld_query: raw.no_tld_query,
            single_request: raw.single_request,
            single_request_reopen: raw.single_request_reopen,
            warnings,
        }
    }

    /// The absolute names a libc lookup of `name` asks for, in order (glibc's `res_search`):
    /// a name with a trailing dot is asked as is; a name with at least `ndots` dots is asked as
    /// is first, then with each search domain; a shorter one goes through the search list first
    /// and is asked as is last.
    pub fn candidates(&self, name: &Name) -> Vec<Name> {
        if name.is_fqdn() {
            return vec![name.clone()];
        }
        let dots = usize::from(name.num_labels()).saturating_sub(1);
        let mut as_is = name.clone();
        as_is.set_fqdn(true);
        let mut out = Vec::with_capacity(self.search.len() + 1);
        let as_is_first = dots >= usize::from(self.ndots);
        if as_is_first {
            out.push(as_is.clone());
        }
        for domain in &self.search {
            // A name too long for a domain is skipped, as libc does.
            if let Ok(full) = name.clone().append_domain(domain) {
                out.push(full);
            }
        }
        let skip_as_is = dots == 0 && self.no_tld_query;
        if !as_is_first && !skip_as_is {
            out.push(as_is);
        }
        out
    }

    /// How a getaddrinfo call sends its A and AAAA queries with these options.
    pub fn pair_mode(&self) -> PairMode {
        if self.single_request_reopen {
            PairMode::Reopen
        } else if self.single_request {
            PairMode::Sequential
        } else {
            PairMode::Parallel
        }
    }

    /// The longest a libc lookup with these settings can take for `candidates` names: each
    /// name may be sent `attempts` times to every nameserver, each try waiting `timeout` up to
    /// `waits_per_try` times (more than once only for an A and AAAA pair: [`PairMode::waits`]).
    pub fn worst_case(&self, candidates: usize, waits_per_try: u32) -> Duration {
        // Saturating: the file is the pod's, and its lists are not ours to bound.
        let tries = u32::try_from(candidates)
            .unwrap_or(u32::MAX)
            .saturating_mul(self.attempts)
            .saturating_mul(u32::try_from(self.nameservers.len()).unwrap_or(u32::MAX))
            .saturating_mul(waits_per_try);
        self.timeout.saturating_mul(tries)
    }
}

/// How glibc's `send_dg` sends the two queries of a getaddrinfo call (A and AAAA) to one
/// nameserver. Two queries sent at once from one socket are what the Linux conntrack insert race
/// loses one of, which `single-request` and `single-request-reopen` work around.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairMode {
    /// Both at once from one socket: glibc's default.
    Parallel,
    /// The second once the first is answered, on the same socket (`single-request`).
    Sequential,
    /// The second once the first is answered, from a new socket (`single-request-reopen`).
    Reopen,
}

impl PairMode {
    /// What glibc switches to when a wait ends with one answer in and the other missing, before
    /// it asks the pair again; `None` once there is nothing left to switch to (it then returns
    /// the one answer it has).
    pub fn fallback(self) -> Option<Self> {
        match self {
            PairMode::Parallel => Some(PairMode::Sequential),
            PairMode::Sequential => Some(PairMode::Reopen),
            PairMode::Reopen => None,
        }
    }

    /// The most waits of `timeout` one try of a pair can take: this mode and each fallback.
    pub fn waits(self) -> u32 {
        1 + self.fallback().map_or(0, Self::waits)
    }
}

fn describe(e: &resolv_conf::ParseError) -> String {
    use resolv_conf::ParseError as E;
    // resolv-conf counts lines from 0.
    let (line, why) = match e {
        E::InvalidUtf8(l, _) => (l, "is not valid UTF-8"),
        E::InvalidValue(l) => (l, "has an invalid value"),
        E::InvalidOptionValue(l) => (l, "has an option with an invalid value"),
        E::InvalidOption(l) => (l, "has an unknown option"),
        E::InvalidDirective(l) => (l, "is not a resolv.conf directive"),
        E::InvalidIp(l, _) => (l, "has an invalid IP address"),
        E::ExtraData(l) => (l, "has extra data at the end"),
    };
    format!("line {} {why}; ignored", line + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/resolv");

    fn fixture(name: &str) -> ResolvConf {
        ResolvConf::load(&Path::new(FIXTURES).join(name)).unwrap()
    }

    fn names(conf: &ResolvConf, name: &str) -> Vec<String> {
        conf.candidates(&Name::from_ascii(name).unwrap())
            .iter()
            .map(|n| n.to_string())
            .collect()
    }

    #[test]
    fn kubernetes_pod_resolv_conf() {
        let conf = fixture("pod-clusterfirst.conf");
        assert_eq!(conf.nameservers, vec!["10.96.0.10:53".parse().unwrap()]);
        assert_eq!(conf.ndots, 5);
        assert_eq!(conf.search.len(), 3);
        assert_eq!(conf.timeout, Duration::from_secs(5));
        assert_eq!(conf.attempts, 2);
        assert!(conf.warnings.is_empty(), "{:?}", conf.warnings);
    }

    #[test]
    fn ndots5_sends_short_names_through_the_search_list_first() {
        let conf = fixture("pod-clusterfirst.conf");
        assert_eq!(
            names(&conf, "kubernetes.default"),
            [
                "kubernetes.default.default.svc.cluster.local.",
                "kubernetes.default.svc.cluster.local.",
                "kubernetes.default.cluster.local.",
                "kubernetes.default.",
            ]
        );
        // Four dots are still fewer than five: the full service name is searched first too.
        assert_eq!(
            names(&conf, "kubernetes.default.svc.cluster.local")[0],
            "kubernetes.default.svc.cluster.local.default.svc.cluster.local."
        );
    }

    #[test]
    fn absolute_and_long_names() {
        let conf = fixture("pod-clusterfirst.conf");
        assert_eq!(names(&conf, "example.com."), ["example.com."]);
        let long = "a.b.c.d.e.example.com";
        let got = names(&conf, long);
        assert_eq!(got[0], "a.b.c.d.e.example.com.");
        assert_eq!(got.len(), 4);
    }

    #[test]
    fn glibc_limits_and_fallbacks() {
        let conf = fixture("odd.conf");
        // Four nameservers: libc uses three. The later `domain` line replaces `search`.
        assert_eq!(conf.nameservers.len(), 3);
        assert_eq!(
            conf.search
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>(),
            ["corp.example."]
        );
        assert_eq!(conf.ndots, 15);
        assert_eq!(conf.timeout, Duration::from_secs(30));
        assert_eq!(conf.attempts, 5);
        assert!(conf.rotate);
        assert!(conf.use_vc);
        assert_eq!(
            conf.warnings,
            [
                "line 9 is not a resolv.conf directive; ignored",
                "4 nameservers listed; libc uses only the first 3"
            ]
        );
        assert_eq!(names(&conf, "host"), ["host.corp.example.", "host."]);
    }

    #[test]
    fn no_nameserver_means_localhost() {
        let conf = ResolvConf::parse(b"search example.com\n");
        assert_eq!(conf.nameservers, vec!["127.0.0.1:53".parse().unwrap()]);
        assert_eq!(conf.worst_case(2, 1), Duration::from_secs(20));
        assert_eq!(conf.pair_mode(), PairMode::Parallel);
        assert_eq!(
            conf.worst_case(2, conf.pair_mode().waits()),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn single_request_options_choose_how_the_pair_is_sent() {
        let mode = |text: &str| ResolvConf::parse(text.as_bytes()).pair_mode();
        assert_eq!(mode("options single-request\n"), PairMode::Sequential);
        assert_eq!(mode("options single-request-reopen\n"), PairMode::Reopen);
        assert_eq!(
            mode("options single-request single-request-reopen\n"),
            PairMode::Reopen
        );
        // glibc's fallbacks after a wait that lost one of the two answers.
        assert_eq!(PairMode::Parallel.fallback(), Some(PairMode::Sequential));
        assert_eq!(PairMode::Reopen.fallback(), None);
        assert_eq!(
            [PairMode::Parallel, PairMode::Sequential, PairMode::Reopen].map(PairMode::waits),
            [3, 2, 1]
        );
    }
}
