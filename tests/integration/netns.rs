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
//! ```
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
//! Faults are `iptables` rules in the node's own namespace (in a chain `NETPROBE-FAULT`, after
//! rules that keep loopback and the harness address working, so a faulted node can still be
//! scraped) and MTU changes on the node's bridge port. Everything is undone on drop, also when
//! a test panics; namespaces left by a crashed earlier run (whose pid is gone) are removed by
//! the next [`Cluster::new`].
//!
//! Needs root, `ip` (iproute2), `iptables` (nft-based is fine) for faults, and for the
//! self-tests `curl`, `python3` and `ping` (iputils-ping).

// A fixture: not every suite uses every helper.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
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
        run(&format!("ip -n {h} link add br0 type bridge"));
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
        run(&format!("ip -n {ns} link set eth0 up"));
        self.nodes.push(Node {
            index: i,
            name: format!("node-{i}"),
            netns,
            hub,
            port,
            ip,
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

    /// Undoes every fault on node `i`: flushes its fault rules, restores its port's MTU.
    pub fn heal(&self, i: usize) {
        let node = &self.nodes[i];
        if node.has_fault_chain() {
            node.iptables(&format!("-F {FAULT_CHAIN}"));
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

// ---------------------------------------------------------------------------------------------
// Self-tests

/// Runs the whitespace-separated command line `line` in `node`, at most 10 s.
fn exec_line(node: &Node, line: &str) -> Output {
    let argv: Vec<&str> = line.split_whitespace().collect();
    node.exec(&argv, Duration::from_secs(10))
}

const SMALL: usize = 100;
const BIG: usize = 64 * 1024;

/// What one GET through curl should end in.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    /// Exit 0 with a body of this many bytes.
    Body(usize),
    /// curl's exit 28: no connection within 1 s or no complete answer within 3 s.
    Timeout,
    /// curl's exit 7 (connection refused or reset), within 500 ms.
    Refused,
}

/// GETs `file` from the web server on `to` with curl inside `from`: what it ended in, and a
/// description of that for messages.
fn get(from: &Node, to: &Node, file: &str) -> (Option<Want>, String) {
    let started = Instant::now();
    let url = format!("http://{}:8000/{file}", to.ip());
    let out = exec_line(
        from,
        &format!("curl -sS --noproxy * --connect-timeout 1 --max-time 3 -o - {url}"),
    );
    let took = started.elapsed();
    let got = match out.status.code() {
        Some(0) => Some(Want::Body(out.stdout.len())),
        Some(28) => Some(Want::Timeout),
        Some(7) if took <= Duration::from_millis(500) => Some(Want::Refused),
        _ => None,
    };
    let seen = format!(
        "{} -> {} /{file}: curl {} after {took:?} with {} bytes: {}",
        from.name(),
        to.name(),
        out.status,
        out.stdout.len(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    (got, seen)
}

/// As [`get`], recording a failure in `checks` unless the outcome is `want`.
fn expect(checks: &mut util::Checks, what: &str, from: &Node, to: &Node, file: &str, want: Want) {
    let (got, seen) = get(from, to, file);
    checks.that(got == Some(want), format!("{what}: want {want:?}; {seen}"));
}

/// Whether a `ping -M do` (don't fragment) with `size` payload bytes from `node` to `ip` is
/// answered within 1 s.
fn ping_df(node: &Node, ip: Ipv4Addr, size: u32) -> bool {
    exec_line(node, &format!("ping -n -c 1 -W 1 -M do -s {size} {ip}"))
        .status
        .success()
}

/// A web root with `small` (100 B) and `big` (64 KiB).
fn web_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("small"), vec![b's'; SMALL]).expect("write small");
    std::fs::write(dir.path().join("big"), vec![b'b'; BIG]).expect("write big");
    dir
}

/// `python3 -m http.server` on `node`'s IP, port 8000, serving `root`; waits (bounded) until
/// `client` gets an answer from it.
fn web_server<'a>(node: &'a Node, root: &std::path::Path, client: &Node) -> NetnsProcess<'a> {
    let python = if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3" // Debian's, not a user's shim
    } else {
        "python3"
    };
    let ip = node.ip().to_string();
    let root = root.to_str().expect("utf-8 temp path");
    let line = format!("{python} -m http.server 8000 --bind {ip} --directory {root}");
    let argv: Vec<&str> = line.split_whitespace().collect();
    let mut server = node.spawn(&argv);
    let what = format!("a web server in {}", node.name());
    util::poll(&what, Duration::from_secs(10), || {
        if let Some(status) = server.try_wait() {
            panic!("web server exited ({status}): {}", server.stderr_text());
        }
        match get(client, node, "small") {
            (Some(Want::Body(SMALL)), _) => Ok(()),
            (_, seen) => Err(seen),
        }
    });
    server
}

#[test]
#[ignore = "needs root: network namespaces"]
fn namespaces_connect_and_faults_apply() {
    use Want::*;
    let cluster = Cluster::new(3);
    let (n0, n1, n2) = (cluster.node(0), cluster.node(1), cluster.node(2));
    let root = web_root();
    let _web1 = web_server(n1, root.path(), n0);
    let _web2 = web_server(n2, root.path(), n0);
    let harness_get = |node: &Node, file: &str| {
        let addr = SocketAddr::from((node.ip(), 8000));
        http_get_accept(addr, &format!("/{file}"), "*/*")
            .map(|r| (r.status, r.body.len()))
            .map_err(|e| e.to_string())
    };
    let mut checks = util::Checks::default();
    let c = &mut checks;

    expect(c, "healthy", n0, n1, "small", Body(SMALL));
    expect(c, "healthy", n0, n1, "big", Body(BIG));
    expect(c, "healthy", n1, n2, "big", Body(BIG));
    c.eq(
        "healthy: harness GET big from node-1",
        harness_get(n1, "big"),
        Ok((200, BIG)),
    );
    c.that(
        ping_df(n0, n1.ip(), 1400),
        "healthy: 1400-byte DF ping 0->1 must pass",
    );

    // Every packet to node-1 vanishes; the rest of the cluster and the harness are unaffected.
    cluster.black_hole(1);
    expect(c, "black hole", n0, n1, "small", Timeout);
    expect(c, "black hole", n2, n1, "small", Timeout);
    expect(c, "black hole elsewhere", n0, n2, "big", Body(BIG));
    c.eq(
        "black hole: harness GET small",
        harness_get(n1, "small"),
        Ok((200, SMALL)),
    );

    // Refused at once (replaces the black hole).
    cluster.reset(1);
    expect(c, "reset", n0, n1, "small", Refused);
    c.that(
        !ping_df(n0, n1.ip(), 56),
        "reset: ping 0->1 must be rejected",
    );

    cluster.heal(1);
    expect(c, "healed from reset", n0, n1, "big", Body(BIG));

    // Large frames to and from node-1 vanish, small ones pass.
    cluster.shrink_mtu(1, 1000);
    c.that(
        !ping_df(n0, n1.ip(), 1400),
        "mtu: 1400-byte DF ping 0->1 must vanish",
    );
    c.that(
        !ping_df(n1, n0.ip(), 1400),
        "mtu: 1400-byte DF ping 1->0 must vanish",
    );
    c.that(
        ping_df(n0, n1.ip(), 500),
        "mtu: 500-byte DF ping 0->1 must pass",
    );
    expect(c, "mtu", n0, n1, "small", Body(SMALL));
    expect(c, "mtu", n0, n1, "big", Timeout);
    expect(c, "mtu elsewhere", n0, n2, "big", Body(BIG));
    c.eq(
        "mtu: harness GET big from node-1",
        harness_get(n1, "big"),
        Ok((200, BIG)),
    );

    cluster.heal(1);
    expect(c, "healed from mtu", n0, n1, "big", Body(BIG));
    expect(c, "healed from mtu", n2, n1, "big", Body(BIG));
    c.that(
        ping_df(n0, n1.ip(), 1400),
        "healed: 1400-byte DF ping 0->1 must pass",
    );
    checks.finish(&format!(
        "cluster {} (harness {})",
        cluster.id, cluster.host_ip
    ));
}

#[test]
#[ignore = "needs root: network namespaces"]
fn daemons_run_in_namespaces_and_answer_the_harness() {
    let cluster = Cluster::new(2);
    let config = |node: &Node| {
        format!(
            "listen: 0.0.0.0:9753\nnode_name: {}\ndns:\n  servers: []\n",
            node.name()
        )
    };
    let daemons: Vec<NetnsDaemon> = cluster
        .nodes()
        .iter()
        .map(|n| n.run_daemon(&config(n)))
        .collect();
    for (daemon, node) in daemons.iter().zip(cluster.nodes()) {
        assert_eq!(daemon.addr(), SocketAddr::new(IpAddr::V4(node.ip()), 9753));
        let metrics = daemon.scrape();
        assert!(
            !metrics.series("netprobe_build_info", &[]).is_empty(),
            "{}: no netprobe_build_info in\n{}",
            node.name(),
            metrics.text
        );
    }
    let ping = daemons[1].get("/ping");
    assert_eq!((ping.status, ping.body.as_str()), (200, "node-1\n"));
    // Same port in every namespace, a different daemon behind each.
    assert_eq!(daemons[0].get("/ping").body, "node-0\n");
}

#[test]
#[ignore = "needs root: network namespaces"]
fn a_panicking_test_leaves_nothing_behind() {
    /// What the cluster made, to look for after it is gone.
    struct Made {
        namespaces: Vec<String>,
        link: String,
        ifindex: u32,
        pid: u32,
    }
    let mut made = None;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let cluster = Cluster::new(2);
        let _daemon = cluster
            .node(1)
            .run_daemon("listen: 0.0.0.0:9753\nnode_name: node-1\ndns:\n  servers: []\n");
        cluster.black_hole(0);
        cluster.shrink_mtu(1, 1000);
        // A process the fixture does not track, reparented away from the test process.
        let out = cluster.node(0).exec(
            &["sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!"],
            Duration::from_secs(5),
        );
        let pid = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("pid of sleep");
        assert!(pid_alive(pid));
        let link = cluster.host_link.clone().expect("harness link");
        let shown = run(&format!("ip -o link show {link}"));
        let ifindex: u32 = shown.split(':').next().unwrap().parse().expect("ifindex");
        made = Some(Made {
            namespaces: cluster.namespaces.clone(),
            link,
            ifindex,
            pid,
        });
        panic!("on purpose, with a cluster, a daemon and faults in place");
    }));
    assert!(outcome.is_err());
    let Made {
        namespaces,
        link,
        ifindex,
        pid,
    } = made.expect("cluster was made");
    util::poll("the untracked sleep to be gone", SETTLE_TIMEOUT, || {
        if pid_alive(pid) {
            Err(format!("{pid} still in /proc"))
        } else {
            Ok(())
        }
    });
    let list = run("ip netns list");
    for ns in &namespaces {
        let listed = list
            .lines()
            .any(|l| l.split_whitespace().next() == Some(ns));
        assert!(!listed, "{ns} still listed:\n{list}");
    }
    // Another cluster of this process may have claimed the same name since: then it is a new
    // interface (interface indexes are not reused).
    let now = try_run(&format!("ip -o link show {link}")).ok();
    assert!(
        now.as_deref()
            .is_none_or(|l| !l.starts_with(&format!("{ifindex}:"))),
        "{link} (index {ifindex}) still exists: {now:?}"
    );
}
