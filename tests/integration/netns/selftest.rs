//! The fixture's self-tests: nodes reach each other over both families, every fault does what it
//! says and heals, the real daemon runs inside a node, and a panicking test leaves nothing.

use super::*;

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

/// Whether an ICMPv6 echo from `node` to `ip` is answered within 1 s.
fn ping6(node: &Node, ip: Ipv6Addr) -> bool {
    exec_line(node, &format!("ping -6 -n -c 1 -W 1 {ip}"))
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

    // IPv6 between nodes, inside the cluster only.
    c.that(ping6(n0, n1.ip6()), "healthy: IPv6 ping 0->1 must pass");
    c.that(ping6(n2, n1.ip6()), "healthy: IPv6 ping 2->1 must pass");
    // IPv6 to node-1 vanishes; its IPv4 and everyone else's IPv6 are untouched.
    cluster.drop_ipv6(1);
    c.that(
        !ping6(n0, n1.ip6()),
        "ipv6 dropped: IPv6 ping 0->1 must vanish",
    );
    c.that(
        ping6(n0, n2.ip6()),
        "ipv6 dropped elsewhere: IPv6 ping 0->2 must pass",
    );
    expect(c, "ipv6 dropped: IPv4", n0, n1, "big", Body(BIG));
    c.that(
        ping_df(n0, n1.ip(), 1400),
        "ipv6 dropped: IPv4 ping 0->1 must pass",
    );
    cluster.heal(1);
    c.that(ping6(n0, n1.ip6()), "healed: IPv6 ping 0->1 must pass");
    // The machine's own namespace has no route into the clusters' IPv6 prefix.
    let routes = run("ip -6 route show table all");
    c.that(
        !routes.contains("fd00:6e70:"),
        format!("no cluster IPv6 route in the root namespace:\n{routes}"),
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
