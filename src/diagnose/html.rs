//! report.html: the report as one self-contained page (inline style, no script, nothing fetched:
//! its Content-Security-Policy forbids it), for the person who is paged and wants to *see* which
//! nodes cannot reach which. The findings come first, with their severity, cause and next step;
//! then the live matrix as an inline SVG per protocol, row probes column, cells coloured by
//! result, and the rows and columns of the nodes a finding blames marked in amber. A whole red
//! row is a node whose egress is broken, a whole red column one nobody reaches, both a node cut
//! off, scattered cells single paths, red in `bulk` only an MTU black hole.
//!
//! Up to [`FULL_MATRIX_MAX`] nodes every node has its own named row and column (at 50 nodes a
//! matrix is 1,000 px wide and its names 12 px text). Beyond, rows and columns stand for blocks
//! of consecutive nodes (at 500 nodes, 63 blocks of 8): a block is as bad as the worst pair in it,
//! so one failing path still shows, and its tooltip counts the pairs; a blamed node's block is
//! marked and labelled with its name. The page stays a few hundred KiB at any cluster size.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::analyse::{Cell, Severity};
use super::report::Report;
use crate::html::{CSP, DOWN, PENDING, UP, escape};

/// Up to this many nodes, one named row and column per node; beyond, blocks of nodes.
pub const FULL_MATRIX_MAX: usize = 64;
/// Side of one row or column of a matrix, in CSS pixels.
pub const PITCH: u32 = 20;
/// Margin between a cell and the edge of its row and column: the gap where the amber mark of a
/// blamed node shows through.
pub const INSET: u32 = 2;
/// A pair that is not probed (not among the source's neighbours on the ring).
pub const NOT_PROBED: &str = "#eeeeee";
/// A node and itself.
pub const SELF: &str = "#c8c8c8";
/// The rows and columns of a node a finding blames.
pub const BLAMED: &str = "#ffbf00";
/// Longest node name drawn whole; longer ones lose their middle (the ends tell nodes apart:
/// `ip-10-0-1-17.eu…compute.internal`, `gke-prod-pool-a…lt-3f2a1b4c-x7k2`), the whole name
/// in the tooltip.
const LABEL_CHARS: usize = 32;
/// Width of one character of the labels' 12 px font (bold, for a blamed node), rounded up, for
/// the label column.
const CHAR_PX: u32 = 8;

const STYLE: &str = "\
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;\
margin:16px 20px;color:#1b1b1b;background:#fff}\
h1{font-size:22px;margin:0 0 6px}h2{font-size:18px;margin:22px 0 8px}\
.meta{color:#555;margin:0 0 12px;padding:0;list-style:none}.meta li{display:inline;margin-right:18px}\
.status{display:inline-block;padding:1px 10px;border-radius:10px;color:#fff;font-weight:600}\
.s-critical{background:#c62828}.s-warning{background:#e08600}.s-healthy{background:#2e7d32}\
.s-collected,.s-info{background:#546e7a}\
.finding{border-left:6px solid #999;background:#fafafa;margin:10px 0;padding:8px 12px;max-width:72em}\
.finding.critical{border-color:#c62828}.finding.warning{border-color:#e08600}\
.finding.info{border-color:#546e7a}\
.finding h3{font-size:15px;margin:0 0 4px}.finding p{margin:3px 0}\
.sev{font-size:12px;font-weight:700;color:#fff;padding:1px 6px;border-radius:3px;margin-right:6px}\
.id{color:#666;font-weight:400;font-family:monospace;font-size:12px}\
details pre{background:#f0f0f0;padding:6px 8px;overflow:auto;margin:4px 0;font-size:12px}\
.legend span{display:inline-block;margin-right:16px}\
.sw{display:inline-block;width:12px;height:12px;vertical-align:-1px;margin-right:4px;border:1px solid #999}\
.scroll{overflow:auto;max-width:100%;border:1px solid #ddd;padding:4px;margin:6px 0 4px}\
figure{margin:0 0 18px}figcaption{font-weight:600}\
svg text{font:12px system-ui,'DejaVu Sans',sans-serif;fill:#1b1b1b}\
svg text.blamed{font-weight:700}\
ul.plain{margin:4px 0;padding-left:20px}\
";

/// The whole page.
pub fn html(report: &Report) -> String {
    let mut t = String::with_capacity(64 * 1024);
    let status = report.status;
    let _ = write!(
        t,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Network diagnostics: {status}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
    );
    let _ = writeln!(
        t,
        "<h1>Network diagnostics <span class=\"status s-{status}\">{status}</span></h1>"
    );
    let _ = writeln!(
        t,
        "<ul class=\"meta\"><li>generated {}</li><li>API server {}</li><li>namespace {}</li>\
         <li>{} critical, {} warning, {} info</li><li>kube-netprobe {}</li></ul>",
        escape(&report.generated_at),
        escape(&report.server),
        escape(&report.namespace),
        report.summary.critical,
        report.summary.warning,
        report.summary.info,
        escape(report.tool_version),
    );
    findings(&mut t, report);
    matrices(&mut t, report);
    if let Some(st) = &report.storage_test {
        let _ = writeln!(
            t,
            "<h2>Storage test</h2>\n<p>{}</p>",
            escape(&super::report::storage_test_line(st))
        );
    }
    if !report.collection.errors.is_empty() {
        t.push_str("<h2>Could not read</h2>\n<ul class=\"plain\">\n");
        for e in &report.collection.errors {
            let _ = writeln!(
                t,
                "<li><code>{}</code>: {} ({}){}</li>",
                escape(&e.call),
                escape(e.reason),
                escape(&e.message),
                e.missing_rbac
                    .as_ref()
                    .map(|r| format!("; needs RBAC <code>{}</code>", escape(r)))
                    .unwrap_or_default()
            );
        }
        t.push_str("</ul>\n");
    }
    t.push_str("</body>\n</html>\n");
    t
}

fn severity_colour(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "#c62828",
        Severity::Warning => "#e08600",
        Severity::Info => "#546e7a",
    }
}

fn findings(t: &mut String, report: &Report) {
    t.push_str("<h2>Findings</h2>\n");
    if report.status == "collected" {
        t.push_str("<p>Collected only (--collect-only): no analysis.</p>\n");
        return;
    }
    if report.findings.is_empty() {
        t.push_str("<p>No problems found.</p>\n");
        return;
    }
    for f in &report.findings {
        let sev = f.severity.as_str();
        let _ = writeln!(
            t,
            "<section class=\"finding {sev}\">\n<h3><span class=\"sev\" style=\"background:{}\">{}</span>{} \
             <span class=\"id\">{}</span></h3>",
            severity_colour(f.severity),
            sev.to_uppercase(),
            escape(&f.title),
            escape(f.id),
        );
        if !f.cause.is_empty() {
            let _ = writeln!(t, "<p><b>Likely cause:</b> {}</p>", escape(&f.cause));
        }
        if !f.next_step.is_empty() {
            let _ = writeln!(t, "<p><b>Next step:</b> {}</p>", escape(&f.next_step));
        }
        if !f.evidence.is_empty() {
            let _ = write!(
                t,
                "<details><summary>Evidence ({} {})</summary><pre>",
                f.evidence.len(),
                if f.evidence.len() == 1 {
                    "line"
                } else {
                    "lines"
                }
            );
            for e in &f.evidence {
                t.push_str(&escape(e));
                t.push('\n');
            }
            t.push_str("</pre></details>\n");
        }
        t.push_str("</section>\n");
    }
}

fn swatch(colour: &str, what: &str) -> String {
    format!("<span><i class=\"sw\" style=\"background:{colour}\"></i>{what}</span>")
}

fn matrices(t: &mut String, report: &Report) {
    let m = &report.matrix;
    if m.nodes.is_empty() {
        return;
    }
    let blamed: BTreeSet<&str> = report
        .findings
        .iter()
        .flat_map(|f| f.nodes.iter().map(String::as_str))
        .collect();
    let _ = writeln!(
        t,
        "<h2>Live matrix</h2>\n<p>From every kube-netprobe pod's peer probes: the row's node \
         probes the column's. {} nodes{}.</p>",
        m.nodes.len(),
        if m.nodes.len() > FULL_MATRIX_MAX {
            format!(
                "; each row and column is a block of {} consecutive nodes, coloured as its worst \
                 pair (hover a cell for its counts)",
                block_size(m.nodes.len())
            )
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        t,
        "<p class=\"legend\">{}{}{}{}{}{}</p>",
        swatch(UP, "up"),
        swatch(DOWN, "down"),
        swatch(PENDING, "down, too fresh to judge"),
        swatch(NOT_PROBED, "not probed"),
        swatch(SELF, "itself"),
        swatch(BLAMED, "node named by a finding"),
    );
    for (id, protocol) in m.protocols.iter().enumerate() {
        let cells: Vec<&Cell> = m.cells.iter().filter(|c| &c.protocol == protocol).collect();
        let down = cells.iter().filter(|c| !c.up && c.judged()).count();
        let _ = writeln!(
            t,
            "<figure>\n<figcaption>Protocol {}: {} of {} probed pairs down</figcaption>\n\
             <div class=\"scroll\">",
            escape(protocol),
            down,
            cells.len()
        );
        t.push_str(&svg(id, protocol, &m.nodes, &cells, &blamed));
        t.push_str("</div>\n</figure>\n");
    }
    if !m.unread.is_empty() {
        t.push_str("<p>Not read (pod /metrics unreachable):</p>\n<ul class=\"plain\">\n");
        for node in &m.unread {
            let _ = writeln!(
                t,
                "<li>{}{}</li>",
                escape(node),
                m.unread_reasons
                    .get(node)
                    .map(|r| format!(": {}", escape(r)))
                    .unwrap_or_default()
            );
        }
        t.push_str("</ul>\n");
    }
}

/// Nodes per row and column: 1 up to [`FULL_MATRIX_MAX`] nodes, then as few as keep the rows
/// within it.
pub fn block_size(nodes: usize) -> usize {
    nodes.div_ceil(FULL_MATRIX_MAX).max(1)
}

/// What a cell (one pair, or a block of pairs) shows.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    up: usize,
    down: usize,
    fresh: usize,
    /// Probes behind the single pair of a full matrix.
    probes: u64,
}

impl Tally {
    fn add(&mut self, c: &Cell) {
        if c.up {
            self.up += 1;
        } else if c.judged() {
            self.down += 1;
        } else {
            self.fresh += 1;
        }
        self.probes = c.probes;
    }

    fn colour(&self, diagonal: bool) -> &'static str {
        if self.down > 0 {
            DOWN
        } else if self.fresh > 0 {
            PENDING
        } else if self.up > 0 {
            UP
        } else if diagonal {
            SELF
        } else {
            NOT_PROBED
        }
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `name` cut to [`LABEL_CHARS`] characters by leaving out its middle.
fn short(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    if chars.len() <= LABEL_CHARS {
        return name.to_owned();
    }
    let head = (LABEL_CHARS - 1) / 2;
    let tail = LABEL_CHARS - 1 - head;
    let mut s: String = chars[..head].iter().collect();
    s.push('…');
    s.extend(&chars[chars.len() - tail..]);
    s
}

/// One matrix. The grid starts at (`data-grid-x`, `data-grid-y`) in the SVG; row `r`, column
/// `c` is the square of side [`PITCH`] there, its cell inset by [`INSET`].
fn svg(
    id: usize,
    protocol: &str,
    nodes: &[String],
    cells: &[&Cell],
    blamed: &BTreeSet<&str>,
) -> String {
    let block = block_size(nodes.len());
    let groups: Vec<&[String]> = nodes.chunks(block).collect();
    let index = |name: &str| nodes.binary_search_by(|n| n.as_str().cmp(name)).ok();
    let n = groups.len();
    let mut tally = vec![Tally::default(); n * n];
    for c in cells {
        if let (Some(s), Some(d)) = (index(&c.source), index(&c.target)) {
            tally[(s / block) * n + d / block].add(c);
        }
    }
    // The label of a row: the node, or a block's first node and how many follow (a blamed node
    // in it is named instead, first in the block or not).
    let labels: Vec<(String, String, bool)> = groups
        .iter()
        .map(|g| {
            let named = g.iter().find(|x| blamed.contains(x.as_str()));
            let lead = named.unwrap_or(&g[0]);
            let label = if g.len() == 1 {
                short(lead)
            } else {
                format!("{} +{}", short(lead), g.len() - 1)
            };
            let full = if g.len() == 1 {
                lead.clone()
            } else {
                format!("{} … {} ({} nodes)", g[0], g[g.len() - 1], g.len())
            };
            (label, full, named.is_some())
        })
        .collect();
    let widest = labels
        .iter()
        .map(|(l, _, _)| l.chars().count())
        .max()
        .unwrap_or(1) as u32;
    let label_px = widest * CHAR_PX + 14;
    let (gx, gy) = (label_px, label_px);
    let side = n as u32 * PITCH;
    let (w, h) = (gx + side + 2, gy + side + 2);
    let mut s = String::with_capacity(256 + n * n * 120);
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         viewBox=\"0 0 {w} {h}\" shape-rendering=\"crispEdges\" role=\"img\" class=\"matrix\" \
         data-protocol=\"{p}\" data-rows=\"{n}\" data-block=\"{block}\" data-grid-x=\"{gx}\" \
         data-grid-y=\"{gy}\" data-pitch=\"{PITCH}\" data-inset=\"{INSET}\">\n\
         <title>{p}: row probes column</title>",
        p = escape(protocol),
    );
    // The amber marks of blamed nodes, under the cells: they show in the gaps around them.
    for (i, (_, _, is_blamed)) in labels.iter().enumerate() {
        if !is_blamed {
            continue;
        }
        let at = i as u32 * PITCH;
        let _ = writeln!(
            s,
            "<rect x=\"0\" y=\"{y}\" width=\"{rw}\" height=\"{PITCH}\" fill=\"{BLAMED}\"/>\
             <rect x=\"{x}\" y=\"0\" width=\"{PITCH}\" height=\"{ch}\" fill=\"{BLAMED}\"/>",
            y = gy + at,
            rw = gx + side,
            x = gx + at,
            ch = gy + side,
        );
    }
    for (i, (label, full, is_blamed)) in labels.iter().enumerate() {
        let mid = i as u32 * PITCH + PITCH / 2;
        let class = if *is_blamed { " class=\"blamed\"" } else { "" };
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" dominant-baseline=\"central\"{class}>\
             <title>{f}</title>{l}</text>\
             <text transform=\"translate({},{}) rotate(-90)\" dominant-baseline=\"central\"{class}>\
             <title>{f}</title>{l}</text>",
            gx - 6,
            gy + mid,
            gx + mid,
            gy - 6,
            f = escape(full),
            l = escape(label),
        );
    }
    let cell = PITCH - 2 * INSET;
    // Pairs not probed (most of them: a node probes only its neighbours on the ring) are one
    // patterned rectangle, not a rectangle each: a 500-node page stays small.
    let _ = writeln!(
        s,
        "<pattern id=\"np{id}\" x=\"{gx}\" y=\"{gy}\" width=\"{PITCH}\" height=\"{PITCH}\" \
         patternUnits=\"userSpaceOnUse\"><rect x=\"{INSET}\" y=\"{INSET}\" width=\"{cell}\" \
         height=\"{cell}\" fill=\"{NOT_PROBED}\"/></pattern>\
         <rect x=\"{gx}\" y=\"{gy}\" width=\"{side}\" height=\"{side}\" fill=\"url(#np{id})\"/>"
    );
    for r in 0..n {
        for c in 0..n {
            let tl = tally[r * n + c];
            let diagonal = r == c;
            if !diagonal && tl.up + tl.down + tl.fresh == 0 {
                continue;
            }
            let title = if block == 1 {
                let (src, dst) = (&groups[r][0], &groups[c][0]);
                let what = if diagonal {
                    "itself".to_owned()
                } else if tl.up > 0 {
                    format!("up ({})", plural(tl.probes, "probe", "probes"))
                } else if tl.down > 0 {
                    format!("down after {}", plural(tl.probes, "probe", "probes"))
                } else {
                    format!(
                        "down after {}: too fresh to judge",
                        plural(tl.probes, "probe", "probes")
                    )
                };
                format!("{src} → {dst} over {protocol}: {what}")
            } else {
                format!(
                    "{} → {} over {protocol}: {} up, {} down, {} too fresh",
                    labels[r].1, labels[c].1, tl.up, tl.down, tl.fresh
                )
            };
            let _ = writeln!(
                s,
                "<rect x=\"{}\" y=\"{}\" width=\"{cell}\" height=\"{cell}\" fill=\"{}\"><title>{}</title></rect>",
                gx + c as u32 * PITCH + INSET,
                gy + r as u32 * PITCH + INSET,
                tl.colour(diagonal),
                escape(&title),
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::analyse::{self, Finding};
    use crate::diagnose::collect::{ProbeScrape, Snapshot};

    /// A mesh of `nodes` where each probes its `k` successors over `protocols`; `down(src, dst,
    /// protocol)` says which fail (30 probes each).
    fn snapshot(
        nodes: &[String],
        k: usize,
        protocols: &[&str],
        down: impl Fn(&str, &str, &str) -> bool,
    ) -> Snapshot {
        let probe_scrapes = nodes
            .iter()
            .enumerate()
            .map(|(i, src)| {
                let mut text = String::new();
                for j in 1..=k.min(nodes.len() - 1) {
                    let dst = &nodes[(i + j) % nodes.len()];
                    for p in protocols {
                        let up = !down(src, dst, p);
                        let _ = writeln!(
                            text,
                            "netprobe_peer_probe_success{{target_node=\"{dst}\",protocol=\"{p}\",family=\"ipv4\"}} {}\n\
                             netprobe_peer_requests_total{{target_node=\"{dst}\",protocol=\"{p}\",result=\"success\"}} 30",
                            u8::from(up)
                        );
                    }
                }
                text.push_str("# EOF\n");
                ProbeScrape {
                    pod: format!("netprobe-{i}"),
                    node: src.clone(),
                    text: Some(text),
                    error: None,
                }
            })
            .collect();
        Snapshot {
            namespace: "default".into(),
            server: "https://198.18.0.1:6443/".into(),
            probe_scrapes,
            ..Snapshot::default()
        }
    }

    fn report(s: &Snapshot) -> Report {
        Report::new(
            s,
            analyse::analyse(s),
            analyse::Matrix::from_snapshot(s),
            "2026-12-07T08:00:00Z".into(),
            false,
        )
    }

    #[test]
    fn a_hostile_node_name_is_text_not_markup() {
        let evil = "x\"><script>alert(1)</script><img src=//198.18.0.9/a onerror=alert(2)>";
        let nodes: Vec<String> = ["node-a", "node-b", evil, "node-d"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let s = snapshot(&nodes, 3, &["http"], |src, dst, _| {
            src == evil || dst == evil
        });
        let mut r = report(&s);
        r.findings.push(Finding {
            id: "test.hostile",
            severity: Severity::Warning,
            title: format!("</h3><b>{evil}"),
            evidence: vec![format!("</pre>{evil}")],
            cause: "<style>body{display:none}</style>".into(),
            next_step: "&amp; stays literal".into(),
            nodes: vec![evil.into()],
            repairs: Vec::new(),
        });
        let page = html(&r);
        assert!(r.findings.iter().any(|f| f.nodes == [evil]));
        for bad in [
            "<script",
            "<img",
            "onerror=alert(2)>",
            "</h3><b>",
            "<style>body{display",
        ] {
            assert!(!page.contains(bad), "{bad} made it into the page unescaped");
        }
        assert!(page.contains("x&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("&amp;amp; stays literal"));
        // The page's own markup: one style element, no script, the CSP first in <head>.
        assert_eq!(page.matches("<style>").count(), 1);
        assert!(!page.contains("<script"));
        assert!(page.contains(&format!("content=\"{CSP}\"")));
    }

    fn names(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                format!(
                    "ip-10-0-{}-{:03}.eu-west-1.compute.internal",
                    i / 250,
                    i % 250
                )
            })
            .collect()
    }

    #[test]
    fn fifty_nodes_are_each_named_and_the_isolated_one_marked() {
        let nodes = names(50);
        let cut = nodes[17].clone();
        let s = snapshot(&nodes, 10, &["http", "tcp"], |a, b, _| a == cut || b == cut);
        let r = report(&s);
        assert_eq!(r.findings[0].id, "network.node-isolated");
        assert_eq!(r.findings[0].nodes, std::slice::from_ref(&cut));
        let page = html(&r);
        // Every name whole, as a row and as a column label, in both matrices.
        for node in &nodes {
            assert_eq!(page.matches(&format!("<title>{node}</title>")).count(), 4);
        }
        assert_eq!(page.matches("class=\"blamed\"").count(), 4);
        assert!(page.contains(&format!(
            "{cut} → {} over http: down after 30 probes",
            nodes[18]
        )));
        assert!(page.contains(&format!(
            "{} → {} over http: up (30 probes)",
            nodes[0], nodes[1]
        )));
        assert!(!page.contains(&format!("{} → {} over tcp", nodes[0], nodes[30])));
    }

    #[test]
    fn five_hundred_nodes_are_drawn_in_blocks_that_keep_a_failing_pair() {
        let nodes = names(500);
        let (a, b) = (nodes[123].clone(), nodes[124].clone());
        let s = snapshot(&nodes, 10, &["http", "tcp", "bulk"], |x, y, _| {
            x == a && y == b
        });
        let r = report(&s);
        let page = html(&r);
        assert_eq!(block_size(500), 8);
        assert!(page.contains("data-rows=\"63\" data-block=\"8\""));
        // Rows 120..127 are block 15: the failing pair's block is red and counts it among the
        // 28 pairs of successors within the block.
        assert!(page.contains(&format!(
            "{} … {} (8 nodes) → {} … {} (8 nodes) over http: 27 up, 1 down, 0 too fresh",
            nodes[120], nodes[127], nodes[120], nodes[127]
        )));
        assert!(page.len() < 512 << 10, "{} bytes", page.len());
        let red_cells = page.matches(&format!("fill=\"{DOWN}\"")).count();
        assert_eq!(red_cells, 3, "one red block per protocol");
    }

    #[test]
    fn a_failure_too_fresh_to_judge_is_drawn_apart_from_one_that_counts() {
        let nodes: Vec<String> = ["node-a", "node-b", "node-c"].map(String::from).to_vec();
        let mut s = snapshot(&nodes, 2, &["tcp"], |a, b, _| {
            a == "node-a" && b == "node-c"
        });
        // node-a has probed node-c's new address once only.
        let scrape = &mut s.probe_scrapes[0];
        let text = scrape.text.take().unwrap().replace(
            "target_node=\"node-c\",protocol=\"tcp\",result=\"success\"} 30",
            "target_node=\"node-c\",protocol=\"tcp\",result=\"timeout\"} 1",
        );
        scrape.text = Some(text);
        let r = report(&s);
        assert_eq!(r.findings.len(), 1, "{:?}", r.findings);
        assert_eq!(r.findings[0].id, "network.peers-too-fresh");
        let page = html(&r);
        assert!(page.contains(&format!(
            "fill=\"{PENDING}\"><title>node-a → node-c over tcp: down after 1 probe: too fresh to judge</title>"
        )));
        assert!(!page.contains(&format!("fill=\"{DOWN}\"")));
        assert!(page.contains("Protocol tcp: 0 of 6 probed pairs down"));
    }

    #[test]
    fn long_names_keep_both_ends() {
        assert_eq!(short("node-a"), "node-a");
        let eks = "ip-10-0-1-17.eu-west-1.compute.internal";
        assert_eq!(short(eks), "ip-10-0-1-17.eu…compute.internal");
        assert_eq!(short(eks).chars().count(), LABEL_CHARS);
        let gke = "gke-prod-default-pool-3f2a1b4c-x7k2-extra-long";
        assert_eq!(short(gke), "gke-prod-defaul…-x7k2-extra-long");
    }

    #[test]
    fn an_empty_matrix_draws_nothing_and_a_healthy_report_says_so() {
        let s = Snapshot {
            namespace: "shop".into(),
            ..Snapshot::default()
        };
        let page = html(&report(&s));
        assert!(page.contains("<p>No problems found.</p>"));
        assert!(!page.contains("<svg"));
    }

    /// The README's example report: six nodes, each probing its next four over http, tcp and
    /// bulk; node-c is cut off, and bulk transfers to and from node-e are black-holed (MTU).
    pub(crate) fn example() -> Report {
        let nodes: Vec<String> = ["a", "b", "c", "d", "e", "f"]
            .iter()
            .map(|n| format!("node-{n}"))
            .collect();
        let s = snapshot(&nodes, 4, &["http", "tcp", "bulk"], |a, b, p| {
            a == "node-c" || b == "node-c" || (p == "bulk" && (a == "node-e" || b == "node-e"))
        });
        let mut r = report(&s);
        // Fixed, so that the picture changes only when the page does.
        r.tool_version = "0.1.0";
        r
    }

    /// docs/img/*.png: the README's pictures of report.html and the status page. Each is the
    /// screenshot of the HTML kept beside it (docs/img/*.html); this test renders that HTML again
    /// from the examples and fails when it differs, since the picture is then stale. Pixels are
    /// not compared: how Chromium draws text depends on the fonts of the machine.
    /// `NETPROBE_REGENERATE=1` writes the HTML; `make screenshots` does that and takes the
    /// pictures.
    #[test]
    fn readme_screenshots_are_current() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/img");
        let pages = [
            ("report", html(&example())),
            (
                "status",
                crate::http::status::render(&crate::http::status::tests::example()),
            ),
        ];
        let regenerate = std::env::var_os("NETPROBE_REGENERATE").is_some();
        let mut stale = Vec::new();
        for (name, page) in pages {
            let path = dir.join(format!("{name}.html"));
            if regenerate {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &page).unwrap();
            } else if std::fs::read_to_string(&path).ok().as_deref() != Some(page.as_str()) {
                stale.push(path.display().to_string());
            }
        }
        assert!(
            stale.is_empty(),
            "{} differ from the pages rendered now: run `make screenshots` and commit docs/img",
            stale.join(", ")
        );
    }
}
