#!/usr/bin/env python3
"""Generates the Grafana dashboards in dashboards/*.json. This file is their source.

    python3 dashboards/generate.py          # rewrite dashboards/*.json
    python3 dashboards/generate.py --check  # exit 1 if any JSON file is stale (CI)
    python3 dashboards/generate.py --job-regex REGEX --out DIR   # with another job selector

The kube-netprobe targets are selected as the alerts select them: `job=~"<netprobeJobRegex>"`,
the parameter of alerts/parameters.yaml (its default makes dashboards/*.json; the chart puts its
prometheusRule.parameters.netprobeJobRegex value in, so one value moves alerts and dashboards).
The regex goes inside a PromQL "..." string as written, as in the alerts.

Every query selects `cluster=~"$cluster"` and, where the series come from a node,
`node=~"$node"`: the `node` label is the one the chart's ServiceMonitor adds (the scraped pod's
node), as in alerts/. Both variables have "All" = `.*`, which also matches series without the
label (a single cluster usually has no `cluster` label).

Standard library only, so CI needs nothing but python3.
"""

import json
import re
import sys
from pathlib import Path

SCHEMA_VERSION = 42  # Grafana 12/13 (defaultDashboard.schemaVersion of @grafana/schema 13.2)
DS = {"type": "prometheus", "uid": "${datasource}"}
HERE = Path(__file__).resolve().parent
PARAMETERS = HERE.parent / "alerts" / "parameters.yaml"


def default_job_regex():
    """netprobeJobRegex's default in alerts/parameters.yaml (read without a YAML library, so CI
    needs nothing but python3: the file writes it as `- name: ...` then `default: ...`)."""
    m = re.search(r"^\s*- name: netprobeJobRegex\n\s*default: (.+)$", PARAMETERS.read_text(), re.M)
    if not m:
        sys.exit(f"dashboards/generate.py: no netprobeJobRegex default in {PARAMETERS}")
    value = m.group(1).strip()
    if value[:1] in "'\"":
        value = json.loads(value) if value[0] == '"' else value[1:-1].replace("''", "'")
    return value


# The job matcher of every query on series that do not come from kube-netprobe alone (up,
# scrape_*); set by set_job_regex before the dashboards are built.
JOB = ""


def set_job_regex(regex):
    global JOB
    if '"' in regex:
        sys.exit(f"dashboards/generate.py: job regex {regex!r}: a \" would end the PromQL string")
    JOB = f'job=~"{regex}"'
C = 'cluster=~"$cluster"'
CN = 'cluster=~"$cluster", node=~"$node"'
DNS_ERR = 'rcode=~"SERVFAIL|REFUSED|TIMEOUT|NETWORK_ERROR"'
RI = "$__rate_interval"


# ---------------------------------------------------------------------------------------------
# Building blocks


def target(expr, legend="", ref="A", instant=False, table=False):
    t = {"datasource": DS, "expr": expr, "refId": ref}
    if legend:
        t["legendFormat"] = legend
    if instant:
        t["instant"] = True
        t["range"] = False
    if table:
        t["format"] = "table"
    return t


def thresholds(*steps):
    """steps: (value or None, colour) pairs, first value None (-Infinity)."""
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for v, c in steps]}


GREEN = thresholds((None, "green"))
BAD_IF_ANY = thresholds((None, "green"), (1, "red"))
GOOD_IF_ONE = thresholds((None, "red"), (1, "green"))


def panel(kind, title, targets, w, h, unit=None, desc="", th=None, custom=None, options=None,
          mappings=None, transformations=None, minv=None, maxv=None, decimals=None):
    defaults = {}
    if unit:
        defaults["unit"] = unit
    if th:
        defaults["thresholds"] = th
    if custom:
        defaults["custom"] = custom
    if mappings:
        defaults["mappings"] = mappings
    if minv is not None:
        defaults["min"] = minv
    if maxv is not None:
        defaults["max"] = maxv
    if decimals is not None:
        defaults["decimals"] = decimals
    p = {
        "type": kind,
        "title": title,
        "datasource": DS,
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "gridPos": {"w": w, "h": h, "x": 0, "y": 0},
    }
    if desc:
        p["description"] = desc
    if options:
        p["options"] = options
    if transformations:
        p["transformations"] = transformations
    return p


def refs(targets):
    for i, t in enumerate(targets):
        t["refId"] = chr(ord("A") + i)
    return targets


def timeseries(title, targets, unit, desc="", w=12, h=8, th=None, bars=False, stack=False,
               minv=None, maxv=None):
    custom = {"drawStyle": "bars" if bars else "line", "fillOpacity": 60 if bars else 10,
              "showPoints": "never", "spanNulls": False}
    if stack:
        custom["stacking"] = {"mode": "normal", "group": "A"}
    if th:
        custom["thresholdsStyle"] = {"mode": "dashed"}
    return panel("timeseries", title, refs(targets), w, h, unit=unit, desc=desc,
                 th=th or GREEN, custom=custom, minv=minv, maxv=maxv,
                 options={"legend": {"displayMode": "table", "placement": "right",
                                     "calcs": ["lastNotNull", "max"]},
                          "tooltip": {"mode": "multi", "sort": "desc"}})


# The prober's own CPU throttling, drawn on latency panels: a throttled prober waits for CPU in
# the middle of what it times, so latency that rises with this series is the prober's own.
def throttled_ratio(by=""):
    agg = f"max by ({by})" if by else "max"
    return (f"{agg} (rate(netprobe_cgroup_cpu_throttled_periods_total{{{CN}}}[{RI}]) / "
            f"rate(netprobe_cgroup_cpu_periods_total{{{CN}}}[{RI}]))")


THROTTLED_NOTE = (" Red bars (right axis): the share of kube-netprobe's CPU periods throttled by "
                  "its CPU limit, on the worst selected node; latency that rises with them is "
                  "the prober waiting for CPU (KubeNetprobeCPUThrottled).")


def with_throttling(p):
    """Adds the throttled share to a latency graph, as red bars on a 0-100 % right axis."""
    t = target(throttled_ratio(), "kube-netprobe CPU throttled (worst node)")
    t["refId"] = chr(ord("A") + len(p["targets"]))
    p["targets"].append(t)
    p["fieldConfig"]["overrides"].append({
        "matcher": {"id": "byFrameRefID", "options": t["refId"]},
        "properties": [
            {"id": "unit", "value": "percentunit"},
            {"id": "min", "value": 0},
            {"id": "max", "value": 1},
            {"id": "custom.axisPlacement", "value": "right"},
            {"id": "custom.drawStyle", "value": "bars"},
            {"id": "custom.fillOpacity", "value": 40},
            {"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}},
        ]})
    p["description"] = p.get("description", "") + THROTTLED_NOTE
    return p


def stat(title, expr, unit, desc="", th=GREEN, w=4, h=4, legend="", mappings=None,
         decimals=None, color_mode="background"):
    return panel("stat", title, [target(expr, legend, instant=True)], w, h, unit=unit,
                 desc=desc, th=th, mappings=mappings, decimals=decimals,
                 options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "",
                                            "values": False},
                          "colorMode": color_mode, "graphMode": "none",
                          "textMode": "value_and_name" if legend else "value"})


def table(title, expr, desc="", w=12, h=8, unit=None, th=None, hide=(), rename=None,
          mappings=None, cell="auto", show=()):
    """An instant query as a table, one row per series, labels as columns."""
    exclude = {k: True for k in ("Time", "__name__", "job", "instance", "pod", "namespace",
                                 "endpoint", "service", "prometheus") + tuple(hide)
               if k not in show}
    org = {"excludeByName": exclude, "renameByName": rename or {}}
    return panel("table", title, [target(expr, instant=True, table=True)], w, h, unit=unit,
                 desc=desc, th=th or GREEN, mappings=mappings,
                 custom={"cellOptions": {"type": cell}} if cell != "auto" else None,
                 options={"showHeader": True, "cellHeight": "sm"},
                 transformations=[{"id": "organize", "options": org}])


def matrix(title, expr, rows, cols, unit, desc="", th=None, w=12, h=10, mappings=None):
    """An instant query turned into a rows x cols grid (Grafana's groupingToMatrix)."""
    return panel("table", title, [target(expr, instant=True, table=True)], w, h, unit=unit,
                 desc=desc, th=th or GREEN, mappings=mappings,
                 custom={"cellOptions": {"type": "color-background"}, "align": "center"},
                 options={"showHeader": True, "cellHeight": "sm"},
                 transformations=[{"id": "groupingToMatrix",
                                   "options": {"rowField": rows, "columnField": cols,
                                               "valueField": "Value",
                                               "emptyValue": "null"}}])


def row(title):
    return {"type": "row", "title": title, "collapsed": False, "panels": [],
            "gridPos": {"w": 24, "h": 1, "x": 0, "y": 0}, "id": 0}


UP_DOWN = [{"type": "value", "options": {"0": {"text": "DOWN", "color": "red"},
                                         "1": {"text": "UP", "color": "green"}}}]
OK_FAIL = [{"type": "value", "options": {"0": {"text": "FAIL", "color": "red"},
                                         "1": {"text": "OK", "color": "green"}}}]


def layout(panels):
    """Places panels left to right in rows of 24 columns, assigns ids 1, 2, ..."""
    x = y = rowh = 0
    for i, p in enumerate(panels, start=1):
        p["id"] = i
        g = p["gridPos"]
        if p["type"] == "row" or x + g["w"] > 24:
            y += rowh
            x = rowh = 0
        g["x"], g["y"] = x, y
        if p["type"] == "row":
            y += 1
            continue
        x += g["w"]
        rowh = max(rowh, g["h"])
    return panels


# ---------------------------------------------------------------------------------------------
# Variables


def datasource_var():
    return {"name": "datasource", "label": "Data source", "type": "datasource",
            "query": "prometheus", "current": {"text": "default", "value": "default"},
            "hide": 0, "refresh": 1, "regex": "", "skipUrlSync": False}


def query_var(name, label, query, multi=True, current=None):
    return {"name": name, "label": label, "type": "query", "datasource": DS,
            "query": {"query": query, "refId": f"{name}-var"},
            "refresh": 2, "sort": 1, "includeAll": True,
            "allValue": ".*", "multi": multi, "regex": "", "hide": 0,
            "current": ({"text": current, "value": current} if current
                        else {"text": "All", "value": "$__all"}),
            "options": []}


def cluster_var():
    return query_var("cluster", "Cluster", f"label_values(up{{{JOB}}}, cluster)", multi=False)


def node_var():
    return query_var("node", "Node", f"label_values(up{{{JOB}, {C}}}, node)")


def dashboard(uid, title, desc, panels, extra_vars=(), tags=()):
    return {
        "uid": uid,
        "title": title,
        "description": desc,
        "tags": ["kube-netprobe", *tags],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "utc",
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "annotations": {"list": [{
            "builtIn": 1, "name": "Annotations & Alerts", "enable": True, "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)", "type": "dashboard",
            "datasource": {"type": "grafana", "uid": "-- Grafana --"}}]},
        "links": [{"title": "kube-netprobe", "type": "dashboards", "tags": ["kube-netprobe"],
                   "asDropdown": True, "icon": "external link", "includeVars": True,
                   "keepTime": True, "targetBlank": False, "tooltip": ""}],
        "templating": {"list": [datasource_var(), cluster_var(), node_var(), *extra_vars]},
        "panels": layout(panels),
    }


# ---------------------------------------------------------------------------------------------
# Overview

SLOS = ["dns-availability", "dns-latency", "pod-network", "storage-availability"]
OBJ = "(1 - max by (slo) (netprobe_slo:objective))"


def burn(window):
    return f"netprobe_slo:error_ratio:rate{window}{{{C}}} / on (slo) group_left () {OBJ}"


def overview():
    failing = [
        ("DNS lookups failing", f"count(netprobe_dns_probe_success{{{CN}}} == 0) or vector(0)"),
        ("Peers unreachable", f"count(netprobe_peer_probe_success{{{CN}}} == 0) or vector(0)"),
        ("API-server paths failing", f"count(netprobe_apiserver_probe_success{{{CN}}} == 0) or vector(0)"),
        ("Volumes failing", f"count(netprobe_storage_probe_success{{{CN}}} == 0) or vector(0)"),
        ("CSI drivers unregistered",
         f"count(netprobe_csi_node_driver_registered{{{CN}}} == 0) or vector(0)"),
        ("kube-netprobe targets down", f"count(up{{{JOB}, {CN}}} == 0) or vector(0)"),
    ]
    return dashboard(
        "kube-netprobe-overview", "kube-netprobe / Overview",
        "SLO status and error budgets (recording rules of alerts/slo.yaml, see docs/slo.md) "
        "and what is failing right now.",
        [
            row("Service level objectives (docs/slo.md)"),
            table("SLO attainment (30d)",
                  f"1 - netprobe_slo:error_ratio:rate30d{{{C}}}",
                  "Per SLO: attainment over the last 30 days (1 - error ratio). An empty table "
                  "means the SLO recording rules (alerts/slo.yaml) are not loaded.",
                  w=8, h=7, unit="percentunit", rename={"Value": "attainment 30d"},
                  th=thresholds((None, "red"), (0.99, "orange"), (0.999, "green")),
                  cell="color-text"),
            table("Error budget remaining (30d)",
                  f"1 - {burn('30d')}",
                  "1 - (error ratio over 30d) / (1 - objective): 100 % untouched, 0 % spent, "
                  "negative overspent.",
                  w=8, h=7, unit="percentunit", rename={"Value": "budget remaining"},
                  th=thresholds((None, "red"), (0, "orange"), (0.25, "green")),
                  cell="color-background"),
            table("Burn rate now (1h)", burn("1h"),
                  "Error ratio over 1h divided by the error budget. 1 spends the budget exactly "
                  "over the SLO period; the page threshold is 14.4 (with the 5m window).",
                  w=8, h=7, unit="none", rename={"Value": "burn rate 1h"},
                  th=thresholds((None, "green"), (1, "orange"), (6, "red")),
                  cell="color-background"),
            timeseries("Burn rate by SLO (1h window)", [target(burn("1h"), "{{slo}}")], "none",
                       "Multi-window burn-rate scheme: page above 14.4 (1h and 5m) or 6 (6h and "
                       "30m); ticket above 3 (1d and 2h) or 1 (3d and 6h).",
                       th=thresholds((None, "green"), (1, "orange"), (6, "red"), (14.4, "dark-red"))),
            timeseries("Error ratio by SLO (5m window)",
                       [target(f"netprobe_slo:error_ratio:rate5m{{{C}}}", "{{slo}}")],
                       "percentunit", "Bad events / all events over the last 5 minutes."),
            row("Failing now"),
            *[stat(title, expr, "none", th=BAD_IF_ANY, w=4) for title, expr in failing],
            table("Firing kube-netprobe alerts",
                  f'ALERTS{{alertstate="firing", {C}, alertname=~"(DNS|CoreDNS|HighDNS|Network|'
                  f'APIServer|Storage|CSI|KubeNetprobe).*"}} or ALERTS{{alertstate="firing", '
                  f'{C}, slo!=""}}',
                  "Alerts of alerts/*.yaml firing now (the SLO burn-rate alerts by their slo "
                  "label), as Prometheus evaluates them.",
                  w=24, h=7, hide=("alertstate", "Value")),
            table("Failing DNS lookups", f"netprobe_dns_probe_success{{{CN}}} == 0",
                  "(node, server, name) pairs whose last lookup did not meet its expectation.",
                  hide=("Value",)),
            table("Unreachable peers", f"netprobe_peer_probe_success{{{CN}}} == 0",
                  "node = the checker, target_node = the node it cannot reach.", hide=("Value",)),
            table("Failing volumes", f"netprobe_storage_probe_success{{{CN}}} == 0",
                  "Volumes whose last storage probe failed.", hide=("Value",)),
            table("Failing API-server paths", f"netprobe_apiserver_probe_success{{{CN}}} == 0",
                  "Nodes that cannot reach the API server over a path (direct or dns).",
                  hide=("Value",)),
        ],
        tags=("slo",),
    )


# ---------------------------------------------------------------------------------------------
# DNS

SERVER_VAR = query_var("server", "Server",
                       f"label_values(netprobe_dns_lookups_total{{{CN}}}, server)")
DS_SEL = f'{CN}, server=~"$server"'


def dns_rate(by, sel=DS_SEL, extra=""):
    agg = f"sum by ({by})" if by else "sum"
    return f"{agg} (rate(netprobe_dns_lookups_total{{{sel}{extra}}}[{RI}]))"


def dns_error_ratio(by, sel=DS_SEL):
    errors = dns_rate(by, sel, f", {DNS_ERR}")
    return f"({errors} or {dns_rate(by, sel)} * 0) / {dns_rate(by, sel)}"


def dns_quantile(q, by, sel=DS_SEL):
    labels = ", ".join(x for x in (by, "le") if x)
    return (f"histogram_quantile({q}, sum by ({labels}) "
            f"(rate(netprobe_dns_lookup_duration_seconds_bucket{{{sel}}}[{RI}])))")


def dns():
    core = f'{CN}, server=~"coredns/.+"'
    return dashboard(
        "kube-netprobe-dns", "kube-netprobe / DNS",
        "Lookups from every node: latency percentiles and response codes per server, and each "
        "CoreDNS pod (server coredns/<pod>) against the others.",
        [
            row("Lookups"),
            stat("Probes failing now",
                 f"count(netprobe_dns_probe_success{{{DS_SEL}}} == 0) or vector(0)", "none",
                 th=BAD_IF_ANY),
            stat("Error ratio", dns_error_ratio(""),
                 "percentunit", "SERVFAIL, REFUSED, TIMEOUT and NETWORK_ERROR over all lookups "
                 "(the dns-availability SLI; NXDOMAIN is an answer).",
                 th=thresholds((None, "green"), (0.001, "orange"), (0.01, "red"))),
            stat("p99 latency", dns_quantile(0.99, ""),
                 "s", "Over the selected servers and nodes; lookups that got no answer are not "
                 "in the histogram (see TIMEOUT in the rcode panel).",
                 th=thresholds((None, "green"), (0.1, "orange"), (1, "red"))),
            stat("Lookups per second", dns_rate(""), "reqps"),
            stat("Servers", f"count(count by (server) (netprobe_dns_lookups_total{{{DS_SEL}}}))",
                 "none"),
            stat("Nodes probing", f"count(count by (node) (netprobe_dns_lookups_total{{{DS_SEL}}}))",
                 "none"),
            with_throttling(timeseries("Latency p50 / p90 / p99 by server",
                       [target(dns_quantile(q, "server"), f"{{{{server}}}} p{int(q * 100)}")
                        for q in (0.5, 0.9, 0.99)], "s",
                       "From netprobe_dns_lookup_duration_seconds: lookups that got a response "
                       "(any rcode). A p99 near 5 s is the conntrack-race retry signature.",
                       th=thresholds((None, "green"), (1, "red")))),
            timeseries("Lookups by rcode per server", [target(dns_rate("server, rcode"),
                                                              "{{server}} {{rcode}}")],
                       "reqps", "TIMEOUT / NETWORK_ERROR: no response came.", stack=True),
            timeseries("Error ratio by server", [target(dns_error_ratio("server"), "{{server}}")],
                       "percentunit", "(SERVFAIL + REFUSED + TIMEOUT + NETWORK_ERROR) / all.",
                       th=thresholds((None, "green"), (0.05, "red"))),
            timeseries("Error ratio by node", [target(dns_error_ratio("node"), "{{node}}")],
                       "percentunit", "One node failing while others pass points at that node "
                       "(its conntrack, its path to CoreDNS), not at CoreDNS.",
                       th=thresholds((None, "green"), (0.05, "red"))),
            table("Failing lookups now", f"netprobe_dns_probe_success{{{DS_SEL}}} == 0",
                  "The last lookup of each of these did not meet its expectation.",
                  hide=("Value",)),
            timeseries("Lookups answered after 4.5-5.5 s",
                       [target(
                           f"(sum by (server) (rate(netprobe_dns_lookup_duration_seconds_bucket"
                           f"{{{DS_SEL}, le=\"5.5\"}}[{RI}])) - sum by (server) (rate("
                           f"netprobe_dns_lookup_duration_seconds_bucket{{{DS_SEL}, le=\"4.5\"}}"
                           f"[{RI}]))) / sum by (server) (rate("
                           f"netprobe_dns_lookup_duration_seconds_count{{{DS_SEL}}}[{RI}]))",
                           "{{server}}")],
                       "percentunit", "Share of lookups that needed the resolver's 5 s retry "
                       "(first packet lost).", th=thresholds((None, "green"), (0.02, "red"))),
            timeseries("Messages per lookup (search-list amplification)",
                       [target(f"sum by (server) (rate(netprobe_dns_queries_total{{{DS_SEL}}}"
                               f"[{RI}])) / sum by (server) (rate(netprobe_dns_lookups_total"
                               f"{{{DS_SEL}}}[{RI}]))", "{{server}}")], "none",
                       "DNS messages sent per lookup: 1 for a direct query; for system, what "
                       "ndots and the search list cost."),
            timeseries("p99 latency, now and a day before", [
                target(f"histogram_quantile(0.99, sum by (server, le) (rate("
                       f"netprobe_dns_lookup_duration_seconds_bucket{{{DS_SEL}}}[1h])))",
                       "{{server}} last hour"),
                target(f"histogram_quantile(0.99, sum by (server, le) (rate("
                       f"netprobe_dns_lookup_duration_seconds_bucket{{{DS_SEL}}}[1h] offset 1d)))",
                       "{{server}} a day before", ref="B")],
                "s", "Every node's lookups through each server over an hour, against the same "
                "hour a day before: CoreDNS running out of room shows as a trend before it "
                "pages. DNSLatencyRising fires at twice the day before and above 100 ms.",
                w=24),
            row("CoreDNS pods compared (server coredns/<pod>)"),
            timeseries("Success ratio per CoreDNS pod",
                       [target(f"avg by (server) (netprobe_dns_probe_success{{{core}}})",
                               "{{server}}")], "percentunit",
                       "Share of (node, name) probes each pod answers as expected. One pod low "
                       "while the others are at 100 % is DNSReplicaFailing.",
                       minv=0, maxv=1),
            with_throttling(timeseries("p99 latency per CoreDNS pod",
                       [target(dns_quantile(0.99, "server", core), "{{server}}")], "s")),
            timeseries("Error ratio per CoreDNS pod",
                       [target(dns_error_ratio("server", core), "{{server}}")], "percentunit"),
            timeseries("Lookups per second per CoreDNS pod",
                       [target(dns_rate("server", core), "{{server}}")], "reqps"),
        ],
        extra_vars=(SERVER_VAR,), tags=("dns",),
    )


# ---------------------------------------------------------------------------------------------
# Network

PROTO_VAR = query_var("protocol", "Protocol",
                      f"label_values(netprobe_peer_probe_success{{{CN}}}, protocol)", multi=False,
                      current="http")
PEER = f'{CN}, protocol=~"$protocol"'


PEER_ALL = (f"sum by (node, target_node) (increase(netprobe_peer_requests_total{{{PEER}}}"
            f"[$__range]))")


def peer_quantile(q, by, sel):
    return (f"histogram_quantile({q}, sum by ({by}, le) "
            f"(rate(netprobe_peer_request_duration_seconds_bucket{{{sel}}}[{RI}])))")


def network():
    return dashboard(
        "kube-netprobe-network", "kube-netprobe / Network",
        "Pod-to-pod probes between the kube-netprobe pods (node = the checker, target_node = "
        "the node probed), MTU black holes, and the API server from every node.",
        [
            row("Reachability (rows: checker node, columns: target node)"),
            matrix("Reachability now", f"min by (node, target_node) (netprobe_peer_probe_success{{{PEER}}})",
                   "node", "target_node", "none",
                   "1 if the last probe over the selected protocol (All: every protocol) succeeded on "
                   "every IP family. "
                   "A red column: that node is isolated; a red row: that node's own egress.",
                   th=GOOD_IF_ONE, mappings=UP_DOWN),
            matrix("Success ratio over the time range",
                   f'(sum by (node, target_node) (increase(netprobe_peer_requests_total{{{PEER}, '
                   f'result="success"}}[$__range])) or {PEER_ALL} * 0) / {PEER_ALL}',
                   "node", "target_node", "percentunit",
                   "Share of successful probes over the dashboard's time range.",
                   th=thresholds((None, "red"), (0.99, "orange"), (0.999, "green"))),
            matrix("Latency matrix (p99 total)",
                   peer_quantile(0.99, "node, target_node", f'{PEER}, phase="total"')
                   .replace(f"[{RI}]", "[$__range]"),
                   "node", "target_node", "s",
                   "p99 of the whole probe over the time range, successful probes only. Needs "
                   "the per-peer histograms of metrics.detail: per_target; empty at the default "
                   "(per_node), where the reachability matrices and the per-protocol latency "
                   "below remain.",
                   th=thresholds((None, "green"), (0.1, "orange"), (0.5, "red"))),
            table("Unreachable peers now", f"netprobe_peer_probe_success{{{CN}}} == 0",
                  "Every (checker, target, protocol, family) whose last probe failed.",
                  hide=("Value",)),
            timeseries("Ingress blame per target node (http)", [target(
                f"netprobe_network:ingress_blame:http{{{C}}}", "{{target_node}}")], "percentunit",
                "Share of each node's voting checkers (those reaching most of their other peers) "
                "that fail to reach it, from every checker (the node variable does not apply). "
                "NetworkNodeUnreachable fires above 50 %: the node is isolated or drops incoming "
                "traffic, not its checkers.",
                th=thresholds((None, "green"), (0.5, "red")), minv=0, maxv=1),
            timeseries("Egress blame per checker node (http)", [target(
                f"netprobe_network:egress_blame:http{{{CN}}}", "{{node}}")], "percentunit",
                "Share of each node's voting neighbours (those its other checkers reach) that it "
                "fails to reach. NetworkNodeEgressFailing fires above 50 %: the node's own egress "
                "is broken.",
                th=thresholds((None, "green"), (0.5, "red")), minv=0, maxv=1),
            table("Blocked pairs now (http)",
                  f"netprobe_network:path_failed:http{{{CN}}} == 1 "
                  f"and netprobe_network:checker_reaches_others:http == 1 "
                  f"and netprobe_network:target_reached_by_others:http == 1",
                  "Failed paths that neither end explains: the checker reaches its other peers "
                  "and the target's other checkers reach it (NetworkPairBlocked, unless a node "
                  "is blamed as a whole).", hide=("Value",)),
            timeseries("Failed probes by result", [target(
                f'sum by (protocol, result) (rate(netprobe_peer_requests_total{{{PEER}, '
                f'result!="success"}}[{RI}]))', "{{protocol}} {{result}}")], "reqps",
                "timeout: packets vanish (black hole, NetworkPolicy drop); refused / reset: "
                "the node answers but nothing listens or something rejects.", stack=True),
            with_throttling(timeseries("Probe latency p99 by phase", [target(
                peer_quantile(0.99, "protocol, phase", PEER), "{{protocol}} {{phase}}")], "s",
                "Measured from the start of each probe: the whole probe (total; connect for "
                "tcp), and with metrics.detail: per_target also connect and first_byte of http "
                "and bulk.")),
            with_throttling(timeseries("Probe latency p99 by target node", [target(
                peer_quantile(0.99, "target_node", f'{PEER}, phase="total"'),
                "{{target_node}}")], "s",
                "Needs the per-peer histograms of metrics.detail: per_target; empty at the "
                "default (per_node).")),
            timeseries("Probes per second by protocol", [target(
                f"sum by (protocol) (rate(netprobe_peer_requests_total{{{CN}}}[{RI}]))",
                "{{protocol}}")], "reqps"),
            row("Bulk transfers and MTU"),
            matrix("Bulk transfers now", f'min by (node, target_node) (netprobe_peer_probe_success{{{CN}, '
                   f'protocol="bulk"}})', "node", "target_node", "none",
                   "GET /ping?bytes=bulk_bytes: full-size packets. Red here while the http "
                   "matrix is green is an MTU black hole.", th=GOOD_IF_ONE, mappings=UP_DOWN),
            table("MTU black hole suspects (bulk fails, http passes)",
                  f'netprobe_peer_probe_success{{{CN}, protocol="bulk"}} == 0 and ignoring (protocol) '
                  f'netprobe_peer_probe_success{{{CN}, protocol="http"}} == 1',
                  "Pairs where small requests pass and bulk transfers fail (NetworkMTUBlackHole).",
                  hide=("Value", "protocol")),
            row("Pod IPs"),
            timeseries("Pod IPs in use per node", [target(
                f"max by (node, family) (netprobe_node_pod_ips_in_use{{{CN}}} / "
                f"netprobe_node_pod_ip_capacity{{{CN}}})", "{{node}} {{family}}")],
                "percentunit",
                "Pods on the node that hold or wait for an address, over the addresses host-local "
                "hands out of its podCIDR. NetworkPodIPsExhausted warns above 90 %, pages at 100 %: new "
                "pods there stay in ContainerCreating.",
                w=24, th=thresholds((None, "green"), (0.9, "orange"), (1, "red"))),
            row("API server"),
            matrix("API server reachable now", f"min by (node, path) (netprobe_apiserver_probe_success{{{CN}}})",
                   "node", "path", "none",
                   "GET /readyz directly (Service IP) and through DNS (kubernetes.default.svc).",
                   th=GOOD_IF_ONE, mappings=UP_DOWN),
            with_throttling(timeseries("API server latency p99 by phase", [target(
                f"histogram_quantile(0.99, sum by (path, phase, le) (rate("
                f"netprobe_apiserver_request_duration_seconds_bucket{{{CN}}}[{RI}])))",
                "{{path}} {{phase}}")], "s",
                "total; with metrics.detail: per_target also dns, connect, tls and first_byte, "
                "each from the start of the request.")),
            timeseries("API server failed probes by result", [target(
                f'sum by (path, result) (rate(netprobe_apiserver_requests_total{{{CN}, '
                f'result!="success"}}[{RI}]))', "{{path}} {{result}}")], "reqps", stack=True),
        ],
        extra_vars=(PROTO_VAR,), tags=("network",),
    )


# ---------------------------------------------------------------------------------------------
# Storage

VOLUME_VAR = query_var("volume", "Volume",
                       f"label_values(netprobe_storage_probes_total{{{CN}}}, volume)")
VOL = f'{CN}, volume=~"$volume"'


def storage():
    return dashboard(
        "kube-netprobe-storage", "kube-netprobe / Storage",
        "Volume probes (write, fsync, read back and verify, delete; then 4 KiB write + fdatasync "
        "passes) and CSI node-plugin registration.",
        [
            row("Volumes"),
            table("Probe status now", f"netprobe_storage_probe_success{{{VOL}}}",
                  "1 = the last probe wrote, synced, read back, verified and deleted its data.",
                  w=8, mappings=OK_FAIL, th=GOOD_IF_ONE, cell="color-background",
                  rename={"Value": "last probe"}),
            timeseries("Failed probes per minute by result", [target(
                f'60 * sum by (node, volume, result) (rate(netprobe_storage_probes_total{{{VOL}, '
                f'result!="success"}}[{RI}]))', "{{node}} {{volume}} {{result}}")], "opm",
                "erofs: remounted read-only; eio: the device fails; checksum_mismatch: data "
                "came back different; timeout: a hung volume; insufficient_space: skipped.",
                w=16, bars=True, stack=True),
            timeseries("Write / read throughput (last run)", [target(
                f"netprobe_storage_throughput_bytes_per_second{{{VOL}}}",
                "{{node}} {{volume}} {{operation}}")], "Bps",
                "Bytes over the time spent in write or read calls, per completed run."),
            with_throttling(timeseries("fsync / sync_write latency p99", [target(
                f'histogram_quantile(0.99, sum by (node, volume, operation, le) (rate('
                f'netprobe_storage_operation_duration_seconds_bucket{{{VOL}, '
                f'operation=~"fsync|sync_write"}}[{RI}])))', "{{node}} {{volume}} {{operation}}")],
                "s", "What etcd and databases wait for. StorageFsyncLatencyHigh pages above 500 ms.",
                th=thresholds((None, "green"), (0.5, "red")))),
            with_throttling(timeseries("Operation latency p50 by operation", [target(
                f"histogram_quantile(0.5, sum by (volume, operation, le) (rate("
                f"netprobe_storage_operation_duration_seconds_bucket{{{VOL}}}[{RI}])))",
                "{{volume}} {{operation}}")], "s",
                "fsync and sync_write; with metrics.detail: per_target also write, read and "
                "delete (their throughput is above either way).")),
            timeseries("Stuck I/O (operation in flight)", [target(
                f"max by (node, volume) (netprobe_storage_stuck_seconds{{{VOL}}})",
                "{{node}} {{volume}}")], "s",
                "How long the operation in flight has been running; grows without bound on a "
                "hung volume. StorageIOStuck fires above 60 s.",
                th=thresholds((None, "green"), (60, "red"))),
            timeseries("Bytes probed per second", [target(
                f"sum by (volume, operation) (rate(netprobe_storage_bytes_total{{{VOL}}}[{RI}]))",
                "{{volume}} {{operation}}")], "Bps"),
            table("Page cache bypass (O_DIRECT)", f"netprobe_storage_direct_io{{{VOL}}}",
                  "1: reads bypassed the page cache with O_DIRECT; 0: posix_fadvise(DONTNEED).",
                  mappings=[{"type": "value", "options": {
                      "0": {"text": "fadvise", "color": "orange"},
                      "1": {"text": "O_DIRECT", "color": "green"}}}],
                  rename={"Value": "read mode"}),
            row("Capacity"),
            timeseries("Volume space free", [target(
                f"min by (node, volume) (netprobe_storage_volume_free_bytes{{{VOL}}} / "
                f"netprobe_storage_volume_size_bytes{{{VOL}}})", "{{node}} {{volume}}")],
                "percentunit",
                "Share of the volume an unprivileged writer may still use, from the probe's own "
                "statfs. StorageVolumeFillingUp warns below 40 % when the last 6 h predict full "
                "within 24 h, pages below 20 % within 4 h.",
                w=8, th=thresholds((None, "red"), (0.2, "orange"), (0.4, "green"))),
            timeseries("Volume inodes free", [target(
                f"min by (node, volume) (netprobe_storage_volume_free_inodes{{{VOL}}} / "
                f"(netprobe_storage_volume_inodes{{{VOL}}} > 0))", "{{node}} {{volume}}")],
                "percentunit",
                "Share of the inodes still free; filesystems without an inode table (btrfs) "
                "are left out. StorageVolumeInodesFillingUp as for space.",
                w=8, th=thresholds((None, "red"), (0.2, "orange"), (0.4, "green"))),
            timeseries("Free space predicted in 24 h", [target(
                f"min by (node, volume) (predict_linear(netprobe_storage_volume_free_bytes"
                f"{{{VOL}}}[6h], 24 * 3600))", "{{node}} {{volume}}")], "bytes",
                "A straight line through the last 6 hours of free space, 24 hours on: below 0, "
                "the volume fills within a day at the current rate.",
                w=8, th=thresholds((None, "red"), (0, "green"))),
            row("CSI node plugins"),
            matrix("CSI driver registered (rows: node, columns: driver)",
                   f"max by (node, driver) (netprobe_csi_node_driver_registered{{{CN}}})",
                   "node", "driver", "none",
                   "1 if this node's CSINode lists the driver (its node plugin registered with "
                   "the kubelet).", th=GOOD_IF_ONE,
                   mappings=[{"type": "value", "options": {
                       "0": {"text": "MISSING", "color": "red"},
                       "1": {"text": "registered", "color": "green"}}}], w=24),
        ],
        extra_vars=(VOLUME_VAR,), tags=("storage",),
    )


# ---------------------------------------------------------------------------------------------
# kube-netprobe itself


def self_dashboard():
    up = f"up{{{JOB}, {CN}}}"
    return dashboard(
        "kube-netprobe-self", "kube-netprobe / kube-netprobe",
        "The exporter itself: targets up, builds running, skipped runs, discovery and CSI watch "
        "errors, its CPU (throttling), memory and file descriptors, scrape cost.",
        [
            row("Targets"),
            stat("Targets up", f"sum({up})", "none", th=GREEN),
            stat("Targets down", f"count({up} == 0) or vector(0)", "none", th=BAD_IF_ANY),
            stat("Builds running", f"count(count by (version, revision) "
                 f"(netprobe_build_info{{{CN}}}))", "none",
                 "More than one during a rollout is normal; for long, a stuck rollout.",
                 th=thresholds((None, "green"), (2, "orange"))),
            stat("Probe overruns (range)", f"sum(increase(netprobe_probe_overruns_total{{{CN}}}"
                 f"[$__range])) or vector(0)", "none", th=BAD_IF_ANY),
            stat("Discovery errors (range)", f"sum(increase(netprobe_discovery_errors_total"
                 f"{{{CN}}}[$__range])) or vector(0)", "none", th=BAD_IF_ANY),
            stat("CSI watch errors (range)", f"sum(increase(netprobe_csi_watch_errors_total"
                 f"{{{CN}}}[$__range])) or vector(0)", "none", th=BAD_IF_ANY),
            table("Targets", up, "Prometheus's scrape state of every kube-netprobe pod.",
                  mappings=UP_DOWN, th=GOOD_IF_ONE, cell="color-background",
                  show=("pod", "instance"), rename={"Value": "up"}),
            table("Build info", f"netprobe_build_info{{{CN}}}", "Which build runs on each node.",
                  hide=("Value",)),
            row("Health"),
            timeseries("Probe overruns per minute", [target(
                f"60 * sum by (node, probe) (rate(netprobe_probe_overruns_total{{{CN}}}[{RI}]))",
                "{{node}} {{probe}}")], "opm",
                "Runs skipped because the previous run of the same target was still going: "
                "timeouts close to the interval, or an overloaded node.", bars=True),
            timeseries("Runtime load (share of what the daemon can run)", [target(
                f"rate(netprobe_runtime_busy_seconds_total{{{CN}}}[{RI}]) / "
                f"netprobe_runtime_workers{{{CN}}}", "{{node}}")], "percentunit",
                "Time the runtime's worker threads spend working, over the workers. "
                "KubeNetprobeOverCapacity warns above 80 %: runs then queue and overrun.",
                th=thresholds((None, "green"), (0.8, "red"))),
            timeseries("Discovery errors per minute", [target(
                f"60 * sum by (node, source) (rate(netprobe_discovery_errors_total{{{CN}}}[{RI}]))",
                "{{node}} {{source}}")], "opm",
                "Failed list or watch calls of the peer discovery; the last known peers are kept.",
                bars=True),
            timeseries("CSI watch errors per minute", [target(
                f"60 * sum by (node) (rate(netprobe_csi_watch_errors_total{{{CN}}}[{RI}]))",
                "{{node}}")], "opm", bars=True),
            timeseries("Peers known and probed", [
                target(f"netprobe_discovery_peers{{{CN}}}", "{{node}} known"),
                target(f"netprobe_peer_targets{{{CN}}}", "{{node}} probed")], "none"),
            table("ICMP available", f"netprobe_icmp_available{{{CN}}}",
                  "0: unprivileged ICMP echo sockets are not allowed (net.ipv4.ping_group_range); "
                  "icmp peer probes are skipped there.", mappings=UP_DOWN, th=GOOD_IF_ONE,
                  cell="color-background", rename={"Value": "icmp"}),
            row("Process"),
            timeseries("CPU throttled (share of CPU periods)", [target(
                throttled_ratio("node"), "{{node}}")], "percentunit",
                "Periods in which kube-netprobe used up its CPU limit and waited for the next "
                "one; its latencies then include that wait. KubeNetprobeCPUThrottled fires above "
                "25 % over 10 minutes. Empty ratio (no data): no CPU limit, or no cgroup CPU "
                "controller visible (netprobe_cgroup_cpu_available 0).",
                th=thresholds((None, "green"), (0.25, "red")), minv=0, maxv=1),
            timeseries("CPU used and limit (cores)", [
                target(f"rate(process_cpu_seconds_total{{{JOB}, {CN}}}[{RI}])", "{{node}} used"),
                target(f"netprobe_cgroup_cpu_quota_seconds{{{CN}}} / "
                       f"netprobe_cgroup_cpu_period_seconds{{{CN}}}", "{{node}} limit")], "none",
                "The limit is absent without one (resources.limits.cpu)."),
            timeseries("Resident memory", [target(
                f"process_resident_memory_bytes{{{JOB}, {CN}}}", "{{node}}")], "bytes",
                "Compare with the container's memory limit and netprobe_memory_estimate_bytes."),
            timeseries("Open file descriptors", [
                target(f"process_open_fds{{{JOB}, {CN}}}", "{{node}} open"),
                target(f"process_max_fds{{{JOB}, {CN}}}", "{{node}} max")], "none"),
            row("Scrapes"),
            timeseries("Scrape duration", [target(
                f"scrape_duration_seconds{{{JOB}, {CN}}}", "{{node}}")], "s"),
            timeseries("Samples per scrape", [target(
                f"scrape_samples_scraped{{{JOB}, {CN}}}", "{{node}}")], "none",
                "Series each pod exposes; grows with servers x names, peers and volumes."),
        ],
        tags=("self",),
    )


DASHBOARDS = {
    "overview.json": overview,
    "dns.json": dns,
    "network.json": network,
    "storage.json": storage,
    "kube-netprobe.json": self_dashboard,
}


def render(build, job_regex=None):
    set_job_regex(default_job_regex() if job_regex is None else job_regex)
    return json.dumps(build(), indent=2, sort_keys=False) + "\n"


USAGE = "usage: dashboards/generate.py [--check] [--job-regex REGEX --out DIR]"


def main(argv):
    here = HERE
    args = list(argv)
    check = "--check" in args
    job_regex, out = None, None
    while args:
        a = args.pop(0)
        if a == "--job-regex" and args:
            job_regex = args.pop(0)
        elif a == "--out" and args:
            out = Path(args.pop(0))
        elif a != "--check":
            print(USAGE, file=sys.stderr)
            return 2
    if (job_regex is None) != (out is None) or (out and check):
        # dashboards/*.json always hold the default selector; another one goes elsewhere.
        print(USAGE, file=sys.stderr)
        return 2
    if out:
        out.mkdir(parents=True, exist_ok=True)
        for name, build in DASHBOARDS.items():
            (out / name).write_text(render(build, job_regex))
        return 0
    stale = []
    for name, build in DASHBOARDS.items():
        path = here / name
        text = render(build)
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if check:
        stray = sorted(p.name for p in here.glob("*.json") if p.name not in DASHBOARDS)
        if stray:
            print(f"dashboards/generate.py: {', '.join(stray)} not generated by this script: "
                  "add them to DASHBOARDS", file=sys.stderr)
            return 1
    if stale:
        print(f"dashboards/generate.py: stale: {', '.join(stale)}; run "
              "`python3 dashboards/generate.py` (make generate) and commit", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
