"""Renders the monitoring mixin (mixin/mixin.libsonnet) with two real jsonnet implementations, the
C++ one (PyPI jsonnet) and go-jsonnet (PyPI gojsonnet), and checks it against its sources. Run by
scripts/check-mixin, which picks the Python they are installed in.

1. Both implementations render every config below to the same JSON, importing the mixin as a
   consumer does (by a path, with no library path set: its own imports are relative); the
   README's commands, with the mixin vendored as kube-netprobe-mixin, give the same.
2. Default config: prometheusAlerts + prometheusRules hold exactly the groups of alerts/*.yaml
   (group by group, rules in order, every field), and grafanaDashboards exactly
   dashboards/*.json (keyed `<uid>.json`), compared parsed.
3. Another jobSelector: it stands in every rule expression and dashboard query that selects the
   job (those holding the default selector), nowhere holds the default any more, every selector
   of up and scrape_* holds it, and nothing else changes; with job=~"<regex>" the dashboards are
   what `dashboards/generate.py --job-regex <regex>` renders.
4. Every parameter changed at once: the rules equal what the Helm chart renders with the same
   prometheusRule.parameters (the chart templates the same texts of alerts/parameters.yaml),
   each new value stands where its `uses` say, and promtool check rules accepts them.
5. A value that would make a broken or never-matching rule fails the render with the key named.

Prints one line per check and `N passed, N failed`.
"""
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import _gojsonnet
import _jsonnet
import yaml

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("KUBE_NETPROBE_CACHE", "/var/cache/kube-netprobe"))
HELM = os.environ.get("HELM", str(CACHE / "helm-layer-2.2.2" / "helm"))
IMPLEMENTATIONS = {"jsonnet (C++)": _jsonnet, "go-jsonnet": _gojsonnet}
RENDER = """
local mixin = (import 'mixin/mixin.libsonnet') + { _config+:: config };
local parts = {
  groups: mixin.prometheusAlerts.groups + mixin.prometheusRules.groups,
  alertGroups: [g.name for g in mixin.prometheusAlerts.groups],
  dashboards: mixin.grafanaDashboards,
};
{ [k]: parts[k] for k in what }
"""
ALL = ("groups", "alertGroups", "dashboards")
RULES = ("groups",)
# The C++ implementation takes seconds where go-jsonnet takes a fraction: both render the
# default, another selector and every parameter changed (so both have rendered every line and
# every kind of value); go-jsonnet alone the rest.
GO = ("go-jsonnet",)
# Series Prometheus makes for every target it scrapes: they select the job.
SHARED = re.compile(r"(?<![A-Za-z0-9_:])(up|scrape_duration_seconds|scrape_samples_scraped)\{([^}]*)\}")

passed, failed = 0, 0


def check(name):
    def wrap(fn):
        global passed, failed
        try:
            fn()
        except Exception as e:  # a failed check says why and the others still run
            failed += 1
            print(f"FAIL {name}: {e}")
        else:
            passed += 1
            print(f"ok   {name}")
        return fn

    return wrap


def render(config, impls=tuple(IMPLEMENTATIONS), what=ALL):
    """The mixin rendered with `_config+:: config` by each of impls, which must agree."""
    outs = {}
    for name in impls:
        text = IMPLEMENTATIONS[name].evaluate_snippet(
            str(ROOT / "render.jsonnet"),
            f"local config = {json.dumps(config)};\nlocal what = {json.dumps(list(what))};\n{RENDER}",
        )
        outs[name] = json.loads(text)
    first = next(iter(outs.values()))
    for name, out in outs.items():
        assert out == first, f"{name} renders differently from {impls[0]} with config {config}"
    return first


def shipped_groups():
    groups = []
    for f in sorted((ROOT / "alerts").glob("*.yaml")):
        if f.name != "parameters.yaml":
            groups += yaml.safe_load(f.read_text())["groups"]
    return groups


def shipped_dashboards():
    boards = {}
    for f in sorted((ROOT / "dashboards").glob("*.json")):
        board = json.loads(f.read_text())
        boards[board["uid"] + ".json"] = board
    return boards


def by_name(groups):
    names = [g["name"] for g in groups]
    dup = {n for n in names if names.count(n) > 1}
    assert not dup, f"group names twice (Prometheus refuses the file): {sorted(dup)}"
    return {g["name"]: g for g in groups}


def diff(a, b, path="$"):
    """The first place two parsed documents differ, as text."""
    if type(a) is not type(b):
        return f"{path}: {a!r} != {b!r}"
    if isinstance(a, dict):
        for k in list(a) + [k for k in b if k not in a]:
            if k not in a or k not in b:
                return f"{path}.{k}: only in {'the mixin' if k in a else 'the shipped file'}"
            d = diff(a[k], b[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} items != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            d = diff(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    return None if a == b else f"{path}: {a!r} != {b!r}"


def strings(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from strings(v)
    elif isinstance(node, str):
        yield node


def queries(node):
    """Every rule expression and dashboard query: expr of rules and targets, query of variables."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("expr", "query") and isinstance(v, str):
                yield v
            else:
                yield from queries(v)
    elif isinstance(node, list):
        for v in node:
            yield from queries(v)


def replaced(node, old, new):
    if isinstance(node, dict):
        return {k: replaced(v, old, new) for k, v in node.items()}
    if isinstance(node, list):
        return [replaced(v, old, new) for v in node]
    return node.replace(old, new) if isinstance(node, str) else node


PARAMETERS = yaml.safe_load((ROOT / "alerts" / "parameters.yaml").read_text())["parameters"]
DEFAULT_REGEX = next(p["default"] for p in PARAMETERS if p["name"] == "netprobeJobRegex")
DEFAULT_SELECTOR = f'job=~"{DEFAULT_REGEX}"'
DEFAULT = render({})


@check("both jsonnet implementations render the default mixin alike, imported by a path")
def _():
    assert DEFAULT["groups"] and DEFAULT["dashboards"], "nothing rendered"


@check("default config: the rules are exactly the groups of alerts/*.yaml")
def _():
    mine, shipped = by_name(DEFAULT["groups"]), by_name(shipped_groups())
    assert set(mine) == set(shipped), f"groups: mixin {sorted(mine)}, alerts/ {sorted(shipped)}"
    for name in shipped:
        d = diff(mine[name], shipped[name], name)
        assert d is None, d
    for g in DEFAULT["groups"]:
        alerts = any("alert" in r for r in g["rules"])
        assert alerts == (g["name"] in DEFAULT["alertGroups"]), (
            f"{g['name']}: a group with alerts belongs in prometheusAlerts, one of recording rules only in prometheusRules"
        )


@check("default config: the dashboards are exactly dashboards/*.json")
def _():
    mine, shipped = DEFAULT["dashboards"], shipped_dashboards()
    assert set(mine) == set(shipped), f"dashboards: mixin {sorted(mine)}, dashboards/ {sorted(shipped)}"
    for name in shipped:
        d = diff(mine[name], shipped[name], name)
        assert d is None, d


@check("the README's commands: vendored as kube-netprobe-mixin, YAML and dashboards as the default render")
def _():
    with tempfile.TemporaryDirectory() as vendor:
        os.symlink(ROOT / "mixin", Path(vendor) / "kube-netprobe-mixin")
        evaluate = lambda src: json.loads(_gojsonnet.evaluate_snippet("main.jsonnet", src, jpathdir=vendor))
        mixin = 'import "kube-netprobe-mixin/mixin.libsonnet"'
        alerts = yaml.safe_load(evaluate(f"std.manifestYamlDoc(({mixin}).prometheusAlerts)"))
        rules = yaml.safe_load(evaluate(f"std.manifestYamlDoc(({mixin}).prometheusRules)"))
        boards = evaluate(f"({mixin}).grafanaDashboards")
    assert alerts["groups"] + rules["groups"] == DEFAULT["groups"], "the YAML differs from the render"
    assert boards == DEFAULT["dashboards"], "the dashboards differ from the render"


OTHER_SELECTOR = 'job="netprobe-prod", namespace=~"monitoring|netprobe"'
OTHER = render({"jobSelector": OTHER_SELECTOR})


@check(f"jobSelector {OTHER_SELECTOR}: in every query that selects the job, and nothing else changes")
def _():
    for what in ("groups", "dashboards"):
        base, other = DEFAULT[what], OTHER[what]
        selecting = [q for q in queries(base) if DEFAULT_SELECTOR in q]
        assert selecting, f"{what}: no query selects the job with {DEFAULT_SELECTOR}"
        for q in strings(other):
            assert DEFAULT_SELECTOR not in q, f"{what}: the default selector is still in {q!r}"
        for q in queries(other):
            for name, sel in SHARED.findall(q):
                assert OTHER_SELECTOR in sel, f"{what}: {name}{{{sel}}} lacks the jobSelector"
        n_base = sum(q.count(DEFAULT_SELECTOR) for q in queries(base))
        n_other = sum(q.count(OTHER_SELECTOR) for q in queries(other))
        assert n_base == n_other, f"{what}: {n_base} job selectors by default, {n_other} with jobSelector set"
        d = diff(replaced(other, OTHER_SELECTOR, DEFAULT_SELECTOR), base, what)
        assert d is None, f"more than the selector changed: {d}"


@check("jobSelector job=~\"<regex>\": the dashboards are generate.py --job-regex's")
def _():
    regex = r"netprobe\\.prod|kube-np-.*"
    other = render({"jobSelector": f'job=~"{regex}"'}, GO, ("dashboards",))["dashboards"]
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, str(ROOT / "dashboards" / "generate.py"), "--job-regex", regex, "--out", tmp], check=True)
        expected = {}
        for f in sorted(Path(tmp).glob("*.json")):
            board = json.loads(f.read_text())
            expected[board["uid"] + ".json"] = board
    assert set(other) == set(expected), f"{sorted(other)} != {sorted(expected)}"
    for name in expected:
        d = diff(other[name], expected[name], name)
        assert d is None, d


def changed_value(p):
    """A value unlike the default, of the same kind, that the chart's schema accepts."""
    d = p["default"]
    if "allowed" in p:
        return next(a for a in p["allowed"] if a != str(d) and a != "1.0")
    if isinstance(d, str):
        if re.fullmatch(r"([0-9]+(ms|s|m|h|d|w|y))+", d):
            return "1h7m"
        return "example-(a|b)" if p["name"] != "netprobeJobRegex" else "netprobe-prod.*"
    if isinstance(d, int) and not isinstance(d, bool):
        return d + 7
    return round(d * 0.37 + 0.0041, 6)


CHANGED = {p["name"]: changed_value(p) for p in PARAMETERS}


def mixin_config(values):
    config = {k: v for k, v in values.items() if k != "netprobeJobRegex"}
    config["jobSelector"] = f'job=~"{values["netprobeJobRegex"]}"'
    return config


def text_of(v):
    """A value as Helm prints it into the rules and the mixin writes it."""
    return v if isinstance(v, str) else repr(v) if isinstance(v, float) else str(v)


@check("every parameter changed: the rules equal the Helm chart's with the same values")
def _():
    assert os.access(HELM, os.X_OK), f"{HELM} missing: run `make deps`"
    mine = render(mixin_config(CHANGED), what=RULES)["groups"]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as values:
        yaml.safe_dump({"prometheusRule": {"parameters": CHANGED}}, values)
        values.flush()
        out = subprocess.run(
            [HELM, "template", "kube-netprobe", str(ROOT / "helm" / "kube-netprobe"), "-f", values.name,
             "--api-versions", "monitoring.coreos.com/v1", "--show-only", "templates/prometheusrule.yaml"],
            capture_output=True, text=True, timeout=120,
        )
    assert out.returncode == 0, f"helm template: {out.stderr}"
    chart_groups = yaml.safe_load(out.stdout)["spec"]["groups"]
    mine_by, chart_by = by_name(mine), by_name(chart_groups)
    assert set(mine_by) == set(chart_by), f"{sorted(mine_by)} != {sorted(chart_by)}"
    for name in chart_by:
        d = diff(mine_by[name], chart_by[name], name)
        assert d is None, d


@check("every parameter changed: each new value stands where alerts/parameters.yaml uses it")
def _():
    rules = {}
    for g in render(mixin_config(CHANGED), GO, RULES)["groups"]:
        for r in g["rules"]:
            flat = "\n".join(strings({k: v for k, v in r.items() if k != "for"}))
            rules.setdefault(r.get("alert") or r["record"], []).append(flat + ("\nfor: " + r["for"] if "for" in r else ""))
    for p in PARAMETERS:
        old, new = text_of(p["default"]), text_of(CHANGED[p["name"]])
        for use in p["uses"]:
            text = use["text"]
            want = text.replace('""', f'"{new}"') if old == "" else text.replace(old, new)
            assert any(want in r for r in rules.get(use["rule"], [])), (
                f"{p['name']}: {want!r} not in rule {use['rule']} with {p['name']}={new!r}"
            )


@check("every parameter changed and another jobSelector: promtool check rules accepts the rules")
def _():
    config = mixin_config(CHANGED)
    config["jobSelector"] = OTHER_SELECTOR
    groups = render(config, GO, RULES)["groups"]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump({"groups": groups}, f)
        f.flush()
        p = subprocess.run(["promtool", "check", "rules", f.name], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr


@check("numbers are written in their shortest exact form, as numbers or as strings")
def _():
    for given, text in ((0.1, "0.1"), (0.9995, "0.9995"), (1e-05, "0.00001"), (2.0, "2"), (120, "120"), ("0.10", "0.10")):
        out = render({"dnsErrorRatio": given}, GO, RULES)
        rule = next(r for g in out["groups"] for r in g["rules"] if r.get("alert") == "HighDNSErrorRate")
        assert f"> {text}\n" in rule["expr"] or f"> {text} " in rule["expr"], f"{given!r}: {rule['expr']!r}"
        assert "{{ " + text + " | humanizePercentage }}" in rule["annotations"]["description"], rule["annotations"]


BAD = [
    ({"dnsErrorRatio": "five percent"}, "dnsErrorRatio"),
    ({"dnsErrorRatio": True}, "dnsErrorRatio"),
    ({"dnsErrorFor": "10 minutes"}, "dnsErrorFor"),
    ({"dnsErrorFor": 600}, "dnsErrorFor"),
    ({"dnsErrorRcodes": 'SERVFAIL"'}, "dnsErrorRcodes"),
    ({"sloDNSLatencySeconds": 1.0}, "sloDNSLatencySeconds"),
    ({"sloDNSLatencySeconds": "0.2"}, "sloDNSLatencySeconds"),
    ({"jobSelector": '{job="x"}'}, "jobSelector"),
]


@check("a value that would break a rule fails the render and names its key")
def _():
    for i, (config, key) in enumerate(BAD):
        for impl in IMPLEMENTATIONS if i == 0 else GO:
            try:
                render(config, (impl,), RULES if key != "jobSelector" else ("dashboards",))
            except RuntimeError as e:
                assert f"_config.{key}:" in str(e), f"{impl}, {config}: error does not name {key}: {e}"
            else:
                raise AssertionError(f"{impl}: {config} rendered")


print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
