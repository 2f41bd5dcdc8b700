//! report.html and the daemon's status page in a real browser: Debian's headless Chromium.
//!
//! `diagnose` runs against a real kube-apiserver with captured `/metrics` text for its live
//! matrix (`--probe-metrics NODE=FILE`, as tests/integration/diagnose.rs does), one run per
//! picture a fault makes: a healthy 4-node mesh, an isolated node, a node whose egress alone is
//! broken, an MTU black hole (bulk fails, http and tcp pass), and a node named to inject markup.
//! Chromium screenshots each report.html, and the test samples the pixels of every matrix cell
//! for its colour and of the gaps around it for the amber mark of a blamed node; it also dumps
//! the DOM to see that nothing from the cluster became an element. The status page is read
//! from a running daemon that probes one peer that answers and one that refuses.
//!
//! Every page is parsed with html5ever (through `scraper`), which must report no parse error.
//! Chromium sends whatever is not loopback to a proxy the test owns, which records it and answers
//! 403, so nothing leaves the machine; the test fails on any request a page made there (its own,
//! or one injected markup made). Chromium's own calls home (its updater, its sign-in service:
//! no switch turns them off) are told apart as the hosts it asks for on an empty page.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube_netprobe::diagnose::html::{BLAMED, INSET, NOT_PROBED, PITCH, SELF};
use kube_netprobe::html::{DOWN, PENDING, UP};

use crate::apiserver::Apiserver;
use crate::diagnose::seed;
use crate::dns_server::{Behaviour, DnsServer};
use crate::util::{Checks, Daemon, bin, closed_udp_port};

// ---------------------------------------------------------------------------------------------
// The browser and the proxy that catches its requests

/// A proxy that answers every request 403 and records its first line (`CONNECT host:443`,
/// `GET http://host/...`). Chromium sends it everything but loopback.
struct Proxy {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    let Ok(mut stream) = stream else { continue };
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut line = String::new();
                    let _ = BufReader::new(&stream).read_line(&mut line);
                    seen.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(line.trim_end().to_owned());
                    let _ = stream.write_all(
                        b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    );
                }
            })
        };
        Self {
            addr,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The host a proxied request line names: `CONNECT host:443 ...` or `GET http://host/... ...`.
fn host(line: &str) -> String {
    let target = line.split(' ').nth(1).unwrap_or_default();
    let rest = target.split_once("://").map_or(target, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or_default();
    authority
        .rsplit_once(':')
        .map_or(authority, |(h, _)| h)
        .to_owned()
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Headless Chromium with a profile of its own and the proxy above.
struct Browser {
    exe: PathBuf,
    profile: tempfile::TempDir,
    proxy: Proxy,
    /// Hosts Chromium asks for by itself, whatever the page (its updater and sign-in service,
    /// which no switch turns off in this version): those seen while it loads an empty page.
    own_hosts: std::collections::BTreeSet<String>,
}

/// A decoded screenshot.
struct Picture {
    width: u32,
    height: u32,
    channels: usize,
    data: Vec<u8>,
}

impl Picture {
    fn at(&self, x: u32, y: u32) -> [u8; 3] {
        if x >= self.width || y >= self.height {
            return [0, 0, 0];
        }
        let i = (y as usize * self.width as usize + x as usize) * self.channels;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }

    fn count(&self, colour: [u8; 3]) -> usize {
        (0..self.height)
            .flat_map(|y| (0..self.width).map(move |x| (x, y)))
            .filter(|(x, y)| self.at(*x, *y) == colour)
            .count()
    }
}

fn rgb(hex: &str) -> [u8; 3] {
    let v = u32::from_str_radix(hex.trim_start_matches('#'), 16).expect("hex colour");
    [(v >> 16) as u8, (v >> 8) as u8, v as u8]
}

fn colour_name(c: [u8; 3]) -> String {
    for (name, hex) in [
        ("up", UP),
        ("down", DOWN),
        ("too fresh", PENDING),
        ("not probed", NOT_PROBED),
        ("itself", SELF),
        ("blamed", BLAMED),
        ("white", "#ffffff"),
    ] {
        if rgb(hex) == c {
            return name.to_owned();
        }
    }
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

impl Browser {
    fn start() -> Self {
        let exe = ["chromium", "chromium-browser"]
            .iter()
            .find_map(|name| {
                std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                    .map(|dir| dir.join(name))
                    .find(|p| p.is_file())
            })
            .expect("chromium not found: run scripts/install-test-deps (as root)");
        let mut browser = Self {
            exe,
            profile: tempfile::tempdir().expect("tempdir"),
            proxy: Proxy::start(),
            own_hosts: Default::default(),
        };
        let empty = browser.profile.path().join("empty.html");
        std::fs::write(&empty, "<!DOCTYPE html><title>empty</title>").unwrap();
        browser.dom(&format!("file://{}", empty.display()));
        browser.own_hosts = browser.proxy.seen().iter().map(|l| host(l)).collect();
        browser
    }

    /// Requests since the `since`-th that Chromium does not make by itself: the pages' own.
    fn page_requests(&self, since: usize) -> Vec<String> {
        self.proxy.seen()[since..]
            .iter()
            .filter(|l| !self.own_hosts.contains(&host(l)))
            .cloned()
            .collect()
    }

    /// Runs Chromium on `url` with `args`; its stdout. Killed if it has not finished in 90 s.
    fn run(&self, url: &str, args: &[String]) -> String {
        let mut command = Command::new(&self.exe);
        command
            .args([
                "--headless",
                "--disable-gpu",
                "--hide-scrollbars",
                "--force-device-scale-factor=1",
                "--force-color-profile=srgb",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-default-apps",
                "--disable-extensions",
                "--no-pings",
                "--disable-domain-reliability",
                "--disable-client-side-phishing-detection",
                "--disable-breakpad",
                "--disable-features=NetworkTimeServiceQuerying,OptimizationHints,MediaRouter,Translate",
            ])
            .arg(format!("--proxy-server=http://{}", self.proxy.addr))
            .arg(format!("--user-data-dir={}", self.profile.path().display()))
            .args(args)
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Chromium refuses to start as root with its sandbox on; the tests run as root, and it
        // only renders pages this test made.
        if crate::util::is_root() {
            command.arg("--no-sandbox");
        }
        let child = command.spawn().expect("start chromium");
        let pid = child.id();
        let done = Arc::new(AtomicBool::new(false));
        let watchdog = {
            let done = done.clone();
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(90);
                while !done.load(Ordering::Acquire) {
                    if Instant::now() >= deadline {
                        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        let out = child.wait_with_output().expect("wait for chromium");
        done.store(true, Ordering::Release);
        let _ = watchdog.join();
        assert!(
            out.status.success(),
            "chromium {url} {args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The DOM after the page loaded.
    fn dom(&self, url: &str) -> String {
        self.run(url, &["--dump-dom".to_owned()])
    }

    fn screenshot(&self, url: &str, png: &Path, (w, h): (u32, u32)) -> Picture {
        self.run(
            url,
            &[
                format!("--window-size={w},{h}"),
                format!("--screenshot={}", png.display()),
            ],
        );
        let decoder = png::Decoder::new(BufReader::new(
            std::fs::File::open(png).expect("open the screenshot"),
        ));
        let mut reader = decoder.read_info().expect("a PNG");
        let mut data = vec![0; reader.output_buffer_size().expect("size")];
        let info = reader.next_frame(&mut data).expect("decode the PNG");
        assert_eq!(info.bit_depth, png::BitDepth::Eight);
        data.truncate(info.buffer_size());
        Picture {
            width: info.width,
            height: info.height,
            channels: info.color_type.samples(),
            data,
        }
    }
}

/// Parse errors html5ever reports for `html` (unclosed or stray tags, bad attributes, ...).
fn parse_errors(html: &str) -> Vec<String> {
    scraper::Html::parse_document(html)
        .errors
        .iter()
        .map(|e| e.to_string())
        .collect()
}

/// URLs in the page that would leave it: attributes naming another document and CSS `url()`
/// that is not a fragment of the page itself.
fn external_references(html: &str) -> Vec<String> {
    let doc = scraper::Html::parse_document(html);
    let mut out = Vec::new();
    for el in doc
        .root_element()
        .descendants()
        .filter_map(scraper::ElementRef::wrap)
    {
        for (name, value) in el.value().attrs() {
            let url_like = matches!(name, "src" | "href" | "xlink:href" | "action" | "srcset");
            if (url_like && !value.starts_with('#') && value != "metrics")
                || (value.contains("url(") && !value.contains("url(#"))
            {
                out.push(format!("<{} {name}=\"{value}\">", el.value().name()));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The matrix in a screenshot

/// One matrix of a report as the page lays it out (from its SVG's data attributes) and where
/// the screenshot shows its grid.
struct Grid {
    protocol: String,
    rows: u32,
    x: u32,
    y: u32,
}

/// The matrices of `html`, located in `picture`: the grid of each starts at the top-left of its
/// first diagonal cell (the only place where two "itself" cells sit one pitch apart on a
/// diagonal), less the inset, found in page order.
fn grids(html: &str, picture: &Picture) -> Vec<Grid> {
    let doc = scraper::Html::parse_document(html);
    let sel = scraper::Selector::parse("svg.matrix").unwrap();
    let svgs: Vec<(String, u32)> = doc
        .select(&sel)
        .map(|e| {
            let attr = |a: &str| e.value().attr(a).unwrap_or_default().to_owned();
            assert_eq!(attr("data-pitch"), PITCH.to_string());
            assert_eq!(attr("data-inset"), INSET.to_string());
            (attr("data-protocol"), attr("data-rows").parse().unwrap())
        })
        .collect();
    let own = rgb(SELF);
    let mut found: Vec<Grid> = Vec::new();
    for y in 1..picture.height {
        for x in 1..picture.width {
            if found.len() == svgs.len() {
                break;
            }
            let inside = found.iter().any(|g| {
                x + INSET >= g.x
                    && x < g.x + g.rows * PITCH
                    && y + INSET >= g.y
                    && y < g.y + g.rows * PITCH
            });
            if !inside
                && picture.at(x, y) == own
                && picture.at(x - 1, y) != own
                && picture.at(x, y - 1) != own
                && picture.at(x + PITCH, y + PITCH) == own
                && picture.at(x + PITCH, y) != own
            {
                let (protocol, rows) = svgs[found.len()].clone();
                found.push(Grid {
                    protocol,
                    rows,
                    x: x - INSET,
                    y: y - INSET,
                });
            }
        }
    }
    found
}

/// Compares every cell's colour in the matrices of [`NODES`] over [`PROTOCOLS`], and the amber of
/// blamed rows and columns, with what the fault should draw. `want(protocol, source, target)` is
/// the colour of a cell.
fn check_matrix(
    checks: &mut Checks,
    what: &str,
    html: &str,
    picture: &Picture,
    blamed: &[&str],
    want: &dyn Fn(&str, &str, &str) -> &'static str,
) {
    let grids = grids(html, picture);
    checks.eq(
        &format!("{what}: matrices found in the screenshot"),
        grids
            .iter()
            .map(|g| g.protocol.as_str())
            .collect::<Vec<_>>(),
        PROTOCOLS.to_vec(),
    );
    let nodes = NODES;
    let white = rgb("#ffffff");
    for g in &grids {
        checks.eq(
            &format!("{what}: rows of {}", g.protocol),
            g.rows as usize,
            nodes.len(),
        );
        let mut wrong = Vec::new();
        for (r, src) in nodes.iter().enumerate() {
            for (c, dst) in nodes.iter().enumerate() {
                let (r, c) = (r as u32, c as u32);
                let expected = rgb(want(&g.protocol, src, dst));
                let got = picture.at(g.x + c * PITCH + PITCH / 2, g.y + r * PITCH + PITCH / 2);
                if got != expected {
                    wrong.push(format!(
                        "cell {src} -> {dst}: {} (want {})",
                        colour_name(got),
                        colour_name(expected)
                    ));
                }
                // The gap left of the cell is amber along a blamed row (except in a blamed
                // column, whose own mark fills it); the gap above it along a blamed column.
                let row_gap = picture.at(g.x + c * PITCH + 1, g.y + r * PITCH + PITCH / 2);
                let col_gap = picture.at(g.x + c * PITCH + PITCH / 2, g.y + r * PITCH + 1);
                let amber = rgb(BLAMED);
                if !blamed.contains(dst) {
                    let want = if blamed.contains(src) { amber } else { white };
                    if row_gap != want {
                        wrong.push(format!(
                            "gap of row {src} at {dst}: {} (want {})",
                            colour_name(row_gap),
                            colour_name(want)
                        ));
                    }
                }
                if !blamed.contains(src) {
                    let want = if blamed.contains(dst) { amber } else { white };
                    if col_gap != want {
                        wrong.push(format!(
                            "gap of column {dst} at {src}: {} (want {})",
                            colour_name(col_gap),
                            colour_name(want)
                        ));
                    }
                }
            }
        }
        checks.that(
            wrong.is_empty(),
            format!("{what}, {}:\n  {}", g.protocol, wrong.join("\n  ")),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// diagnose's inputs

const NODES: [&str; 4] = ["node-a", "node-b", "node-c", "node-d"];
const PROTOCOLS: [&str; 3] = ["bulk", "http", "tcp"];

/// The cluster diagnose reads: `NODES` Ready, CoreDNS healthy behind kube-dns, a default
/// StorageClass whose CSI driver every node has (the diagnose suite's healthy cluster), so
/// that the only findings are the live matrix's.
fn healthy_cluster(api: &Apiserver) {
    api.apply(&seed::base(&NODES));
    for n in NODES {
        seed::ready_node(api, n, false);
    }
    seed::healthy_coredns(api);
}

/// Writes each node's `/metrics` (every node probes every other over `PROTOCOLS`, 30 probes,
/// `up(protocol, source, target)`) and runs diagnose on them; the report's directory.
fn diagnose(
    api: &Apiserver,
    root: &Path,
    what: &str,
    nodes: &[&str],
    up: &dyn Fn(&str, &str, &str) -> bool,
) -> (Option<i32>, PathBuf, serde_json::Value) {
    let dir = root.join(what);
    std::fs::create_dir_all(&dir).unwrap();
    let mut args: Vec<String> = Vec::new();
    for src in nodes {
        let mut text = String::new();
        for dst in nodes.iter().filter(|d| *d != src) {
            for p in PROTOCOLS {
                let ok = up(p, src, dst);
                // Label values escape `\` and `"` in the exposition format.
                let target = dst.replace('\\', "\\\\").replace('"', "\\\"");
                text.push_str(&format!(
                    "netprobe_peer_probe_success{{target_node=\"{target}\",protocol=\"{p}\",family=\"ipv4\"}} {}\n\
                     netprobe_peer_requests_total{{target_node=\"{target}\",protocol=\"{p}\",result=\"{}\"}} 30\n",
                    u8::from(ok),
                    if ok { "success" } else { "timeout" }
                ));
            }
        }
        text.push_str("# EOF\n");
        let file = dir.join(format!("metrics-{}.txt", args.len() / 2));
        std::fs::write(&file, text).unwrap();
        args.push("--probe-metrics".into());
        args.push(format!("{src}={}", file.display()));
    }
    let logs =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/diagnose/coredns-healthy.log");
    let out_dir = dir.join("report");
    let output = Command::new(bin())
        .arg("diagnose")
        .arg("--kubeconfig")
        .arg(api.kubeconfig_admin())
        .arg("--out")
        .arg(&out_dir)
        .arg("--coredns-logs")
        .arg(&logs)
        .args(&args)
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("run kube-netprobe diagnose");
    let report = std::fs::read_to_string(out_dir.join("report.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| {
            panic!(
                "{what}: no report.json; stdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        });
    (output.status.code(), out_dir, report)
}

fn finding_ids(report: &serde_json::Value) -> Vec<(String, Vec<String>)> {
    report["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            (
                f["id"].as_str().unwrap_or_default().to_owned(),
                f["nodes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|n| n.as_str().map(str::to_owned))
                    .collect(),
            )
        })
        .collect()
}

#[test]
#[ignore = "needs root: a kube-apiserver of its own, and chromium (scripts/install-test-deps)"]
fn report_html_draws_each_fault_where_it_is_in_a_real_browser() {
    let browser = Browser::start();
    let api = Apiserver::start();
    healthy_cluster(&api);
    let root = tempfile::tempdir().expect("tempdir");
    let mut checks = Checks::default();

    // The checks themselves: html5ever reports a broken tag, and a page asking for another
    // host is caught, so that their silence below means something.
    checks.that(
        !parse_errors(
            "<!DOCTYPE html><html><head><title>x</title></head><body><p></div></body></html>",
        )
        .is_empty(),
        "html5ever reported no error on a stray </div>",
    );
    let control = root.path().join("control.html");
    std::fs::write(
        &control,
        "<!DOCTYPE html><html><head><title>x</title></head><body>\
         <img src=\"http://198.18.0.9/pixel.png\"></body></html>",
    )
    .unwrap();
    let before = browser.proxy.seen().len();
    browser.dom(&format!("file://{}", control.display()));
    checks.eq(
        "the control page's requests",
        browser.page_requests(before),
        vec!["GET http://198.18.0.9/pixel.png HTTP/1.1".to_owned()],
    );
    let before = browser.proxy.seen().len();

    type Fault = (
        &'static str,
        i32,
        &'static [&'static str],
        &'static [&'static str],
        fn(&str, &str, &str) -> bool,
    );
    // (name, exit code, finding ids, blamed nodes, up(protocol, source, target))
    let faults: [Fault; 4] = [
        ("healthy", 0, &[], &[], |_, _, _| true),
        (
            "isolated",
            2,
            &["network.node-isolated"],
            &["node-c"],
            |_, s, t| s != "node-c" && t != "node-c",
        ),
        (
            "egress-only",
            2,
            &["network.node-egress-broken"],
            &["node-b"],
            |_, s, _| s != "node-b",
        ),
        (
            "mtu",
            2,
            &["network.mtu-blackhole"],
            &["node-d"],
            |p, s, t| p != "bulk" || (s != "node-d" && t != "node-d"),
        ),
    ];
    for (what, code, ids, blamed, up) in faults {
        let (exit, dir, report) = diagnose(&api, root.path(), what, &NODES, &up);
        let found = finding_ids(&report);
        checks.eq(&format!("{what}: exit code"), exit, Some(code));
        checks.eq(
            &format!("{what}: findings and the nodes they blame"),
            found.clone(),
            ids.iter()
                .map(|id| {
                    (
                        id.to_string(),
                        blamed.iter().map(|n| n.to_string()).collect(),
                    )
                })
                .collect(),
        );
        let html = std::fs::read_to_string(dir.join("report.html")).expect("report.html written");
        checks.eq(
            &format!("{what}: parse errors"),
            parse_errors(&html),
            vec![],
        );
        checks.eq(
            &format!("{what}: references outside the page"),
            external_references(&html),
            vec![],
        );
        let url = format!("file://{}", dir.join("report.html").display());
        let dom = browser.dom(&url);
        checks.that(
            dom.contains("<svg") && !dom.contains("<script"),
            format!("{what}: the DOM Chromium built has no matrix, or a script"),
        );
        let picture = browser.screenshot(&url, &dir.join("report.png"), (1200, 2200));
        check_matrix(&mut checks, what, &html, &picture, blamed, &|p, s, t| {
            if s == t {
                SELF
            } else if up(p, s, t) {
                UP
            } else {
                DOWN
            }
        });
    }

    // A node whose name is markup (a node name comes from whoever registers the node; a label
    // value from whatever the pod serves). `=` cannot be in a --probe-metrics NODE, so the
    // attributes go without one: it would still be an element if it got through.
    let evil =
        "<script>document.write('injected')</script><link rel stylesheet href //198.18.0.9/x><b>";
    let nodes = ["node-a", "node-b", evil, "node-d"];
    let (exit, dir, report) = diagnose(&api, root.path(), "hostile", &nodes, &|_, s, t| {
        s != evil && t != evil
    });
    checks.eq("hostile: exit code", exit, Some(2));
    checks.eq(
        "hostile: findings",
        finding_ids(&report),
        vec![("network.node-isolated".to_owned(), vec![evil.to_owned()])],
    );
    let html = std::fs::read_to_string(dir.join("report.html")).expect("report.html written");
    checks.eq("hostile: parse errors", parse_errors(&html), vec![]);
    let dom = browser.dom(&format!("file://{}", dir.join("report.html").display()));
    let parsed = scraper::Html::parse_document(&dom);
    let count = |css: &str| {
        parsed
            .select(&scraper::Selector::parse(css).unwrap())
            .count()
    };
    checks.eq("hostile: script elements", count("script"), 0);
    checks.eq("hostile: link elements", count("link"), 0);
    // The page's own: "Likely cause" and "Next step" of the one finding.
    checks.eq("hostile: b elements", count("b"), 2);
    checks.that(
        count("title") > 0
            && parsed
                .select(&scraper::Selector::parse("head > title").unwrap())
                .next()
                .is_some_and(|t| t.text().collect::<String>() == "Network diagnostics: critical"),
        "hostile: the document's title changed",
    );
    checks.that(
        parsed
            .root_element()
            .text()
            .any(|t| t.contains("<script>document.write('injected')</script>")),
        "hostile: the node's name is not shown as text",
    );
    checks.eq(
        "requests the reports made",
        browser.page_requests(before),
        Vec::<String>::new(),
    );
    checks.finish(&format!("reports in {}", root.path().display()));
}

// ---------------------------------------------------------------------------------------------
// The status page

#[test]
#[ignore = "needs chromium (scripts/install-test-deps, as root)"]
fn the_status_page_shows_the_daemons_view_in_a_real_browser() {
    let browser = Browser::start();
    let mut checks = Checks::default();
    // node-b answers; node-c's address refuses (nothing listens there).
    let peer_b = Daemon::start(
        "listen: 127.0.0.2:0\nnode_name: node-b\ndns: { servers: [] }\n\
         peers: { discovery: none }\napiserver: { enabled: false }\ncsi: { enabled: false }\n",
    );
    let closed = TcpListener::bind((Ipv4Addr::new(127, 0, 0, 3), 0)).unwrap();
    let refused = closed.local_addr().unwrap();
    drop(closed);
    let dns = DnsServer::start();
    dns.set(
        "kubernetes.default.svc.cluster.local",
        Behaviour::Answer(Ipv4Addr::new(198, 18, 0, 1)),
    );
    dns.set("example.com", Behaviour::ServFail);
    let volume = tempfile::tempdir().expect("tempdir");
    let yaml = format!(
        "listen: 127.0.0.1:0\nnode_name: node-a\n\
         dns:\n  interval: 500ms\n  timeout: 400ms\n  servers: ['{dns}', '127.0.0.1:{silent}']\n  \
         queries:\n    - {{ name: kubernetes.default.svc.cluster.local, type: A }}\n    \
         - {{ name: example.com, type: A }}\n\
         peers:\n  interval: 500ms\n  timeout: 400ms\n  protocols: [http, tcp]\n  \
         discovery:\n    static: ['node-b={b}', 'node-c={refused}']\n\
         apiserver: {{ enabled: false }}\ncsi: {{ enabled: false }}\n\
         storage:\n  interval: 2s\n  timeout: 1s\n  volumes:\n    - {{ name: scratch, path: '{vol}', size: 1MiB, block_size: 64KiB, direct_io: false }}\n",
        dns = dns.addr(),
        silent = closed_udp_port(),
        b = peer_b.addr(),
        vol = volume.path().display(),
    );
    let mut daemon = Daemon::start(&yaml);
    daemon.wait_until(
        "every target's first result",
        Duration::from_secs(30),
        |m| {
            let peer = |node: &str, p: &str| {
                m.get(
                    "netprobe_peer_probe_success",
                    &[("target_node", node), ("protocol", p)],
                )
            };
            let seen = [
                peer("node-b", "http") == Some(1.0),
                peer("node-b", "tcp") == Some(1.0),
                peer("node-c", "http") == Some(0.0),
                peer("node-c", "tcp") == Some(0.0),
                m.series("netprobe_dns_probe_success", &[]).len() == 4,
                m.get("netprobe_storage_probe_success", &[("volume", "scratch")]) == Some(1.0),
            ];
            if seen.iter().all(|s| *s) {
                Ok(())
            } else {
                Err(format!("not yet: {seen:?}"))
            }
        },
    );

    let response = daemon.get("/");
    checks.eq("status code", response.status, 200);
    checks.eq(
        "Cache-Control",
        response.header("cache-control"),
        Some("no-store"),
    );
    checks.eq(
        "Content-Type",
        response.content_type(),
        Some("text/html; charset=utf-8"),
    );
    let html = response.body.clone();
    checks.eq("parse errors", parse_errors(&html), vec![]);
    checks.eq(
        "references outside the page",
        external_references(&html),
        vec![],
    );
    checks.that(
        html.len() < 16 << 10,
        format!("the page is {} bytes", html.len()),
    );
    checks.that(
        !html.contains(&volume.path().display().to_string()),
        "the page shows the volume's path",
    );

    let url = format!("http://{}/", daemon.addr());
    let dom = scraper::Html::parse_document(&browser.dom(&url));
    // Each row as its cells' text.
    let rows: Vec<Vec<String>> = dom
        .select(&scraper::Selector::parse("tr").unwrap())
        .map(|tr| {
            tr.select(&scraper::Selector::parse("td").unwrap())
                .map(|td| td.text().collect::<String>())
                .collect()
        })
        .filter(|cells: &Vec<String>| !cells.is_empty())
        .collect();
    let row = |first: &[&str]| {
        rows.iter()
            .filter(|r| r.iter().zip(first).all(|(a, b)| a == b))
            .map(|r| r[first.len()].clone())
            .collect::<Vec<_>>()
    };
    checks.eq(
        "node-b's results",
        row(&["node-b", "ipv4"]),
        vec!["success".to_owned(); 2],
    );
    checks.eq(
        "node-c's results",
        row(&["node-c", "ipv4"]),
        vec!["refused".to_owned(); 2],
    );
    let dns_addr = dns.addr().to_string();
    checks.eq(
        "the DNS server's results",
        [
            row(&[&dns_addr, "example.com", "A", "ipv4"]),
            row(&[
                &dns_addr,
                "kubernetes.default.svc.cluster.local",
                "A",
                "ipv4",
            ]),
        ]
        .concat(),
        vec!["SERVFAIL".to_owned(), "NOERROR".to_owned()],
    );
    checks.eq(
        "the volume's result",
        row(&["scratch"]),
        vec!["success".to_owned()],
    );
    let metrics = daemon.scrape();
    checks.eq(
        "peers on the page and in /metrics",
        rows.iter()
            .filter(|r| r.get(1).is_some_and(|f| f == "ipv4"))
            .count(),
        metrics.series("netprobe_peer_probe_success", &[]).len(),
    );

    let shot = tempfile::tempdir().expect("tempdir");
    let picture = browser.screenshot(&url, &shot.path().join("status.png"), (1000, 900));
    // The result badges are the only things drawn in these colours: up for node-b, the
    // answered lookup and the volume; down for node-c and the failing lookups.
    for (name, colour) in [("up", UP), ("down", DOWN)] {
        checks.that(
            picture.count(rgb(colour)) > 500,
            format!("the screenshot has no {name} badge ({colour})"),
        );
    }
    checks.eq(
        "requests the status page made",
        browser.page_requests(0),
        Vec::<String>::new(),
    );
    checks.finish(&format!(
        "status page of {}\n{}",
        daemon.addr(),
        daemon.output_tail(20)
    ));
}
