//! Simulated nodes: one Linux network namespace per node, all on one bridge, each able to run
//! the real binary; plus faults on one node's network (black hole, reset, MTU black hole).
//!
//! Layout of a [`Cluster`] with id `np<pid>-<k>` (`k` counts clusters within this process, so
//! tests running in parallel threads do not clash):
//!
//! ```text
//!  root ns (the test process)              np<pid>-<k>-hub                np<pid>-<k>-<i>
//!  nph<X>  198.A.B.254/24  ── veth ──  host ─┐
//!                                            br0 ─ p<i> ── veth ──  eth0  198.A.B.(i+1)/24
//!                                                                         fd00:6e70:0:X::(i+1)/64
//! ```
//!
//! Every node is dual-stack: besides its IPv4 address, `eth0` has an IPv6 address from the
//! unique-local fd00::/8 (`fd00:6e70:0:X::/64`, the same X as its IPv4 subnet). IPv6 lives only
//! inside the nodes' namespaces: the harness link stays IPv4-only, so no IPv6 route or address
//! is added to the machine's own namespace. Where a node's namespace starts with IPv6 disabled
//! (`net.ipv6.conf.*.disable_ipv6`), it is enabled in that namespace only, and goes back with
//! the namespace on drop; the machine's own setting is never touched.
//!
//! The bridge lives in a namespace of its own, so node-to-node traffic never passes through
//! the host's netfilter (`net.bridge.bridge-nf-call-iptables` and a `FORWARD` policy of DROP
//! on the host would otherwise apply to it) and cleanup never touches the host's interfaces
//! beyond the one veth `nph<X>` this fixture creates. That veth gives the test process (the
//! "harness") a direct path to every node, so it scrapes `/metrics` over plain TCP. `X` picks
//! the /24 out of 198.18.0.0/15 (`A.B` = `18|19.x`); creating `nph<X>` is the claim, so
//! parallel test processes never pick the same subnet. No routes, NAT or forwarding lead
//! anywhere else: the nodes have no default route.
//!
//! Faults are `iptables` rules (`ip6tables` for the IPv6-only fault) in the node's own namespace (in a chain `NETPROBE-FAULT`, after
//! rules that keep loopback and the harness address working, so a faulted node can still be
//! scraped) and MTU changes on the node's bridge port. Everything is undone on drop, also when
//! a test panics; namespaces left by a crashed earlier run (whose pid is gone) are removed by
//! the next [`Cluster::new`].
//!
//! Needs root, `ip` (iproute2), `iptables` (nft-based is fine) for faults, and for the
//! self-tests `curl`, `python3` and `ping` (iputils-ping).

// A fixture: not every suite uses every helper.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::util::{self, http_get_accept};

/// Subnets of 198.18.0.0/15 available to clusters: 512 /24s.
const SUBNETS: u32 = 512;
/// Name of the iptables chain holding a node's current fault.
const FAULT_CHAIN: &str = "NETPROBE-FAULT";
/// Name of the ip6tables chain holding a node's IPv6-only fault.
const FAULT_CHAIN6: &str = "NETPROBE-FAULT6";
/// MTU of every link in the cluster while healthy.
const DEFAULT_MTU: u32 = 1500;
/// Bound on any one `ip`/`iptables` command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// How long links may take to come up, and processes in a namespace to die.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);
const POLL_EVERY: Duration = Duration::from_millis(20);

static NEXT_CLUSTER: AtomicUsize = AtomicUsize::new(0);

// ---------------------------------------------------------------------------------------------
// Commands

/// Runs `cmd` to completion, at most `timeout` (then kills it and reports a timeout).
fn run_bounded(cmd: &mut Command, timeout: Duration) -> Result<Output, String> {
    let shown = format!("{cmd:?}");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {shown}: {e}"))?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) => Err(format!("{shown}: {e}")),
        Err(_) => {
            kill_pid(pid);
            Err(format!("{shown} did not finish within {timeout:?}"))
        }
    }
}

/// Runs the command line `line` (words split on whitespace: no quoting, none is needed for
/// these names), returning stdout on success and a message with stderr otherwise.
fn try_run(line: &str) -> Result<String, String> {
    let argv: Vec<&str> = line.split_whitespace().collect();
    let out = run_bounded(Command::new(argv[0]).args(&argv[1..]), COMMAND_TIMEOUT)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{line}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// As [`try_run`], panicking on failure (setup steps that must work).
fn run(line: &str) -> String {
    try_run(line).unwrap_or_else(|e| panic!("{e}"))
}

/// SIGKILL to one process, by id; errors (already gone) are ignored.
fn kill_pid(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Processes whose network namespace is `netns`.
fn netns_pids(netns: &str) -> Vec<u32> {
    try_run(&format!("ip netns pids {netns}"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Kills every process in `netns` and waits (bounded) until they are gone. Never panics.
fn kill_all_in(netns: &str) {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let pids = netns_pids(netns);
        if pids.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            eprintln!("netns fixture: processes {pids:?} in {netns} survived SIGKILL");
            return;
        }
        for pid in pids {
            kill_pid(pid);
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// Removes namespaces `np<pid>-...` whose creating process `pid` no longer runs (a crashed or
/// killed earlier test run): kills what still runs in them, then deletes them. Their veths go
/// with them.
fn remove_stale_namespaces() {
    let Ok(list) = try_run("ip netns list") else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix("np") else {
            continue;
        };
        let Some((pid, _)) = rest.split_once('-') else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if pid_alive(pid) {
            continue;
        }
        eprintln!("netns fixture: removing {name}, left by exited process {pid}");
        kill_all_in(name);
        if let Err(e) = try_run(&format!("ip netns del {name}")) {
            eprintln!("netns fixture: {e}");
        }
    }
}

/// Whether some IPv4 route of the root namespace overlaps `net`/24 (then that subnet is in use
/// by something other than this fixture, or by a cluster of another process).
fn subnet_in_use(net: Ipv4Addr) -> bool {
    let routes = try_run("ip -4 route show table all").unwrap_or_default();
    let ours = u32::from(net) >> 8;
    routes
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|dst| {
            let (addr, len) = dst.split_once('/').unwrap_or((dst, "32"));
            Some((addr.parse::<Ipv4Addr>().ok()?, len.parse::<u32>().ok()?))
        })
        .filter(|&(_, len)| len > 0)
        .any(|(addr, len)| {
            // Overlap of two prefixes: equal on the shorter one's length.
            let common = len.min(24);
            (u32::from(addr) >> (32 - common)) == (ours >> (24 - common))
        })
}

/// The /24 number `x` as the network address 198.(18 + x/256).(x%256).0.
fn subnet(x: u32) -> Ipv4Addr {
    Ipv4Addr::new(198, 18 + (x / 256) as u8, (x % 256) as u8, 0)
}

fn host_in(net: Ipv4Addr, last: u8) -> Ipv4Addr {
    let [a, b, c, _] = net.octets();
    Ipv4Addr::new(a, b, c, last)
}

/// Node `last`'s IPv6 address in the cluster whose IPv4 subnet is `net`: fd00:6e70:0:X::last,
/// X the subnet's number, so parallel clusters never share a prefix either.
fn host6_in(net: Ipv4Addr, last: u8) -> Ipv6Addr {
    let [_, b, c, _] = net.octets();
    let x = (u16::from(b) - 18) * 256 + u16::from(c);
    Ipv6Addr::new(0xfd00, 0x6e70, 0, x, 0, 0, 0, u16::from(last))
}

/// Enables IPv6 in namespace `ns` where it starts disabled (the namespace's own sysctls, gone
/// with it); panics with the reason when the kernel has no IPv6 at all.
fn enable_ipv6_in(ns: &str) {
    for key in ["all", "default", "eth0"] {
        let key = format!("net.ipv6.conf.{key}.disable_ipv6");
        let now = try_run(&format!("ip netns exec {ns} sysctl -n {key}")).unwrap_or_else(|e| {
            panic!("the netns fixture gives nodes IPv6 addresses, but {key} cannot be read: {e} (a kernel booted with ipv6.disable=1?)")
        });
        if now.trim() != "0" {
            run(&format!("ip netns exec {ns} sysctl -q -w {key}=0"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Cluster

/// A set of simulated nodes. See the module docs for the layout.
pub struct Cluster {
    id: String,
    hub: String,
    /// The root-namespace end of the harness link, once created.
    host_link: Option<String>,
    host_ip: Ipv4Addr,
    nodes: Vec<Node>,
    /// Namespaces created so far, deleted on drop (hub first in creation order).
    namespaces: Vec<String>,
}

/// One simulated node: a namespace with `eth0` on the cluster's bridge.
pub struct Node {
    index: usize,
    name: String,
    netns: String,
    hub: String,
    /// The node's port on the bridge (in the hub namespace).
    port: String,
    ip: Ipv4Addr,
    ip6: Ipv6Addr,
    host_ip: Ipv4Addr,
}

impl Cluster {
    /// Creates `n` nodes (1..=253). Needs root: the tests using it are `#[ignore]`d, and run
    /// as root with `--ignored`. Panics when a setup step fails (what was made so far is
    /// removed).
    pub fn new(n: usize) -> Self {
        assert!(util::is_root(), "network namespaces need root");
        assert!(
            (1..=253).contains(&n),
            "a cluster has 1..=253 nodes, not {n}"
        );
        if let Err(e) = try_run("ip -V") {
            panic!("the netns fixture needs `ip` (Debian package iproute2): {e}");
        }
        remove_stale_namespaces();

        let id = format!(
            "np{}-{}",
            std::process::id(),
            NEXT_CLUSTER.fetch_add(1, Ordering::Relaxed)
        );
        let hub = format!("{id}-hub");
        let mut cluster = Self {
            id,
            hub: hub.clone(),
            host_link: None,
            host_ip: Ipv4Addr::UNSPECIFIED,
            nodes: Vec::new(),
            namespaces: Vec::new(),
        };
        cluster.add_netns(&hub);
        let h = hub.as_str();
        run(&format!("ip -n {h} link set lo up"));
        // No multicast snooping: with no querier on the bridge it could hold back the IPv6
        // neighbour discovery the nodes need.
        run(&format!(
            "ip -n {h} link add br0 type bridge mcast_snooping 0"
        ));
        run(&format!("ip -n {h} link set br0 up"));

        let net = cluster.claim_host_link();
        for i in 0..n {
            cluster.add_node(i, net);
        }
        cluster.wait_links_up();
        cluster
    }

    fn add_netns(&mut self, name: &str) {
        run(&format!("ip netns add {name}"));
        self.namespaces.push(name.to_string());
    }

    /// Creates the harness veth `nph<X>` for the first free X (the name is the claim), gives
    /// it 198.A.B.254/24 and plugs its peer into the bridge. Returns the subnet.
    fn claim_host_link(&mut self) -> Ipv4Addr {
        let start = std::process::id() % SUBNETS;
        for step in 0..SUBNETS {
            let x = (start + step) % SUBNETS;
            let net = subnet(x);
            if subnet_in_use(net) {
                continue;
            }
            let name = format!("nph{x}");
            let created = try_run(&format!(
                "ip link add {name} type veth peer name host netns {}",
                self.hub
            ));
            match created {
                Ok(_) => {}
                Err(e) if e.contains("File exists") => continue,
                Err(e) => panic!("{e}"),
            }
            self.host_link = Some(name.clone());
            self.host_ip = host_in(net, 254);
            let addr = format!("{}/24", self.host_ip);
            run(&format!("ip addr add {addr} dev {name}"));
            run(&format!("ip link set {name} gso_max_segs 1"));
            run(&format!("ip link set {name} up"));
            run(&format!("ip -n {} link set host master br0 up", self.hub));
            return net;
        }
        panic!("no free /24 in 198.18.0.0/15 for a test cluster (every nph<X> exists)");
    }

    fn add_node(&mut self, i: usize, net: Ipv4Addr) {
        let netns = format!("{}-{i}", self.id);
        self.add_netns(&netns);
        let port = format!("p{i}");
        let hub = self.hub.clone();
        let ns = netns.as_str();
        run(&format!(
            "ip -n {hub} link add {port} type veth peer name eth0 netns {ns}"
        ));
        run(&format!("ip -n {hub} link set {port} master br0 up"));
        let ip = host_in(net, (i + 1) as u8);
        run(&format!("ip -n {ns} link set lo up"));
        run(&format!("ip -n {ns} addr add {ip}/24 dev eth0"));
        // One TCP segment per skb: with TSO/GSO a veth hands multi-segment skbs across the
        // bridge and the MTU checks on the way never see a full-size frame, so an MTU black
        // hole would not bite TCP.
        run(&format!("ip -n {ns} link set eth0 gso_max_segs 1"));
        enable_ipv6_in(ns);
        let ip6 = host6_in(net, (i + 1) as u8);
        // nodad: usable at once, no duplicate-address wait (the prefix is the cluster's own).
        run(&format!("ip -n {ns} addr add {ip6}/64 dev eth0 nodad"));
        run(&format!("ip -n {ns} link set eth0 up"));
        self.nodes.push(Node {
            index: i,
            name: format!("node-{i}"),
            netns,
            hub,
            port,
            ip,
            ip6,
            host_ip: self.host_ip,
        });
    }

    /// Waits (bounded) until every node's eth0 and the harness link report carrier.
    fn wait_links_up(&self) {
        let mut links: Vec<(Option<&str>, &str)> = self
            .nodes
            .iter()
            .map(|n| (Some(n.netns.as_str()), "eth0"))
            .collect();
        if let Some(host) = &self.host_link {
            links.push((None, host.as_str()));
        }
        util::poll("cluster links to come up", SETTLE_TIMEOUT, || {
            for &(ns, dev) in &links {
                let line = match ns {
                    Some(ns) => try_run(&format!("ip -n {ns} -o link show {dev}"))?,
                    None => try_run(&format!("ip -o link show {dev}"))?,
                };
                if !line.contains("LOWER_UP") {
                    return Err(format!("{}/{dev}: {}", ns.unwrap_or("root"), line.trim()));
                }
            }
            Ok(())
        });
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Every node as a `peers.discovery.static` list (YAML flow items, `"name=ip:9753"`):
    /// the daemons listen on 9753 in the tests that use it.
    pub fn static_peers(&self) -> String {
        let peers: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("\"{}={}:9753\"", n.name, n.ip))
            .collect();
        peers.join(", ")
    }

    /// As [`Cluster::static_peers`], each node listed twice: at its IPv4 and its IPv6 address,
    /// as a dual-stack node is.
    pub fn static_peers_dual_stack(&self) -> String {
        let peers: Vec<String> = self
            .nodes
            .iter()
            .flat_map(|n| {
                [
                    format!("\"{}={}:9753\"", n.name, n.ip),
                    format!("\"{}=[{}]:9753\"", n.name, n.ip6),
                ]
            })
            .collect();
        peers.join(", ")
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The harness's own address on the cluster's link (198.A.B.254); always exempt from
    /// faults.
    pub fn host_ip(&self) -> Ipv4Addr {
        self.host_ip
    }

    /// Every packet sent to node `i` by another node vanishes (`iptables -j DROP` on its
    /// INPUT): connections to it time out, and so do its own probes (their replies vanish).
    /// Replaces any earlier iptables fault on that node.
    pub fn black_hole(&self, i: usize) {
        self.nodes[i].set_fault(&["-j DROP"]);
    }

    /// Node `i` rejects everything fast: TCP with a reset, UDP with ICMP port unreachable, the
    /// rest (ICMP echo included) with ICMP admin-prohibited. Replaces any earlier iptables
    /// fault on that node.
    pub fn reset(&self, i: usize) {
        self.nodes[i].set_fault(&[
            "-p tcp -j REJECT --reject-with tcp-reset",
            "-p udp -j REJECT --reject-with icmp-port-unreachable",
            "-j REJECT --reject-with icmp-admin-prohibited",
        ]);
    }

    /// Node `i` drops new incoming connections from other nodes (conntrack state NEW), while
    /// its own connections out and their replies pass: its ingress is broken, its egress works.
    /// Replaces any earlier iptables fault on that node.
    pub fn drop_ingress(&self, i: usize) {
        self.nodes[i].set_fault(&["-m conntrack --ctstate NEW -j DROP"]);
    }

    /// Node `i` drops the replies to the connections it opens (conntrack direction REPLY),
    /// while connections to it work: its egress is broken, its ingress works. Replaces any
    /// earlier iptables fault on that node.
    pub fn drop_egress(&self, i: usize) {
        self.nodes[i].set_fault(&["-m conntrack --ctdir REPLY -j DROP"]);
    }

    /// Nodes `i` and `j` cannot reach each other (node `i` drops every packet from `j`), while
    /// each reaches everyone else. Replaces any earlier iptables fault on node `i`.
    pub fn block_pair(&self, i: usize, j: usize) {
        let from = self.nodes[j].ip;
        self.nodes[i].set_fault(&[&format!("-s {from} -j DROP")]);
    }

    /// An overlay-style MTU black hole on node `i`: frames larger than `mtu` (IP bytes) to or
    /// from node `i` are dropped silently at its bridge port, without ICMP, while node `i`'s
    /// own eth0 keeps MTU 1500 (so both ends still advertise MSS 1460 and TCP does not adapt).
    /// Small packets pass, bulk TCP transfers stall. The harness keeps a working path: node
    /// `i` gets a route to the harness address with this MTU (and a matching advertised MSS).
    pub fn shrink_mtu(&self, i: usize, mtu: u32) {
        assert!(
            (576..DEFAULT_MTU).contains(&mtu),
            "shrink_mtu: {mtu} is not in 576..{DEFAULT_MTU}"
        );
        let node = &self.nodes[i];
        let (hub, port, ns, host) = (&node.hub, &node.port, &node.netns, node.host_ip);
        run(&format!("ip -n {hub} link set {port} mtu {mtu}"));
        let advmss = mtu - 40;
        run(&format!(
            "ip -n {ns} route replace {host}/32 dev eth0 mtu lock {mtu} advmss {advmss}"
        ));
    }

    /// Every IPv6 packet sent to node `i` by another node vanishes (`ip6tables -j DROP` on its
    /// INPUT, neighbour discovery included), while IPv4 is untouched: IPv6 connections to it
    /// time out, and so do its own IPv6 probes (their replies vanish). Replaces any earlier
    /// IPv6 fault on that node.
    pub fn drop_ipv6(&self, i: usize) {
        self.nodes[i].set_fault6(&["-j DROP"]);
    }

    /// Undoes every fault on node `i`: flushes its fault rules (both families), restores its
    /// port's MTU.
    pub fn heal(&self, i: usize) {
        let node = &self.nodes[i];
        if node.has_fault_chain() {
            node.iptables(&format!("-F {FAULT_CHAIN}"));
        }
        if node.has_fault_chain6() {
            node.ip6tables(&format!("-F {FAULT_CHAIN6}"));
        }
        let (hub, port, ns, host) = (&node.hub, &node.port, &node.netns, node.host_ip);
        run(&format!("ip -n {hub} link set {port} mtu {DEFAULT_MTU}"));
        // Absent unless the MTU was shrunk.
        let _ = try_run(&format!("ip -n {ns} route del {host}/32"));
    }
}

impl Drop for Cluster {
    /// Kills what runs in the namespaces, deletes the harness veth (its peer goes with it),
    /// then the namespaces (the bridge and the node veths go with the hub). Never panics.
    fn drop(&mut self) {
        for ns in &self.namespaces {
            kill_all_in(ns);
        }
        if let Some(link) = &self.host_link {
            // Namespace teardown is asynchronous; deleting the veth now frees `nph<X>` (the
            // subnet claim) at once.
            if let Err(e) = try_run(&format!("ip link del {link}")) {
                eprintln!("netns fixture: {e}");
            }
        }
        for ns in self.namespaces.iter().rev() {
            if let Err(e) = try_run(&format!("ip netns del {ns}")) {
                eprintln!("netns fixture: {e}");
            }
        }
    }
}

impl Node {
    pub fn index(&self) -> usize {
        self.index
    }

    /// The node's name (`node-<i>`), as a config's `node_name` would say.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The node's IPv6 address (fd00::/8, inside the cluster only).
    pub fn ip6(&self) -> Ipv6Addr {
        self.ip6
    }

    /// The network namespace's name, for `ip netns exec`.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// A `Command` running `program` inside this node's namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns, program]);
        cmd
    }

    /// Runs `argv` inside the node to completion (killed after `timeout`); its exit status
    /// and output are the caller's to judge.
    pub fn exec(&self, argv: &[&str], timeout: Duration) -> Output {
        run_bounded(self.command(argv[0]).args(&argv[1..]), timeout)
            .unwrap_or_else(|e| panic!("in {}: {e}", self.name))
    }

    /// Starts `argv` inside the node in the background; killed when the handle drops.
    pub fn spawn(&self, argv: &[&str]) -> NetnsProcess<'_> {
        let child = self
            .command(argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {argv:?} in {}: {e}", self.name));
        NetnsProcess::new(child, self)
    }

    /// Starts the real binary in this node with `config_yaml` and waits for its listener.
    /// An unspecified listen address (`0.0.0.0:PORT`) is reached at the node's IP.
    pub fn run_daemon(&self, config_yaml: &str) -> NetnsDaemon {
        self.run_daemon_with(config_yaml, &[])
    }

    /// As [`Node::run_daemon`], with extra arguments after `run --config <file>`.
    pub fn run_daemon_with(&self, config_yaml: &str, extra_args: &[&str]) -> NetnsDaemon {
        util::Daemon::start_in(
            self.command(util::bin()),
            config_yaml,
            extra_args,
            self.ip.into(),
        )
    }

    /// `iptables -w 5 <args>` inside the node; panics on failure.
    fn iptables(&self, args: &str) -> String {
        try_run(&format!(
            "ip netns exec {} iptables -w 5 {args}",
            self.netns
        ))
        .unwrap_or_else(|e| panic!("{e}\n(faults need `iptables`: apt-get install iptables)"))
    }

    /// `ip6tables -w 5 <args>` inside the node; panics on failure.
    fn ip6tables(&self, args: &str) -> String {
        try_run(&format!(
            "ip netns exec {} ip6tables -w 5 {args}",
            self.netns
        ))
        .unwrap_or_else(|e| panic!("{e}\n(IPv6 faults need `ip6tables`: apt-get install iptables)"))
    }

    fn has_fault_chain6(&self) -> bool {
        try_run(&format!(
            "ip netns exec {} ip6tables -w 5 -S {FAULT_CHAIN6}",
            self.netns
        ))
        .is_ok()
    }

    /// As [`Node::set_fault`] for IPv6: the harness reaches nodes over IPv4, so only loopback
    /// is exempt.
    fn set_fault6(&self, rules: &[&str]) {
        if !self.has_fault_chain6() {
            self.ip6tables(&format!("-N {FAULT_CHAIN6}"));
            self.ip6tables("-A INPUT -i lo -j ACCEPT");
            self.ip6tables(&format!("-A INPUT -j {FAULT_CHAIN6}"));
        }
        self.ip6tables(&format!("-F {FAULT_CHAIN6}"));
        for rule in rules {
            self.ip6tables(&format!("-A {FAULT_CHAIN6} {rule}"));
        }
    }

    fn has_fault_chain(&self) -> bool {
        try_run(&format!(
            "ip netns exec {} iptables -w 5 -S {FAULT_CHAIN}",
            self.netns
        ))
        .is_ok()
    }

    /// Replaces the rules of the fault chain with `rules`, creating the chain (behind
    /// exemptions for loopback and the harness) on first use.
    fn set_fault(&self, rules: &[&str]) {
        if !self.has_fault_chain() {
            self.iptables(&format!("-N {FAULT_CHAIN}"));
            self.iptables("-A INPUT -i lo -j ACCEPT");
            self.iptables(&format!("-A INPUT -s {} -j ACCEPT", self.host_ip));
            self.iptables(&format!("-A INPUT -j {FAULT_CHAIN}"));
        }
        self.iptables(&format!("-F {FAULT_CHAIN}"));
        for rule in rules {
            self.iptables(&format!("-A {FAULT_CHAIN} {rule}"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Processes in a node

/// A background process in a node (`ip netns exec` execs it, so the child is the process
/// itself), killed on drop. Borrows the node, so it cannot outlive the cluster.
pub struct NetnsProcess<'a> {
    child: Child,
    node: &'a Node,
    stderr: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

impl<'a> NetnsProcess<'a> {
    fn new(mut child: Child, node: &'a Node) -> Self {
        let stderr = Arc::new(Mutex::new(String::new()));
        let reader = child
            .stderr
            .take()
            .map(|s| util::capture(s, stderr.clone()));
        Self {
            child,
            node,
            stderr,
            reader,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr_text(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The exit status if the process has exited (reaps it).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for NetnsProcess<'_> {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// The real daemon inside a node, reached from the harness at `node_ip:port`.
pub type NetnsDaemon = util::Daemon;

// The fixture's own tests: connectivity, every fault, daemons inside, cleanup after a panic.
mod selftest;
