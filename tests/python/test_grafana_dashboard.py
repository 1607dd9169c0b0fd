"""Checks of the Grafana dashboard deploy/grafana/wazoo-dashboard.json.

The dashboard is loaded as JSON and checked for the shape Grafana 10 imports (a
`${DS_PROMETHEUS}` datasource input used by every panel and query, unique panel ids,
grid positions inside the 24 columns). Then every metric name used in a PromQL
expression (panel targets and template variable queries) is compared with what a real
server exports: `$WAZOO_BIN serve ... --admin-port 0` is started, its two start-up
lines give the admin address, and `/metrics` is scraped. A `_bucket`, `_sum` or `_count`
suffix counts as its histogram family; families are taken from the `# TYPE` lines, so a
histogram with no samples yet (e.g. a request opcode never seen) still counts.

Environment: WAZOO_BIN (the server binary, as for the other suites).
"""

import json
import os
import queue
import re
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "wazoo-dashboard.json"
START_TIMEOUT = float(os.environ.get("WAZOO_TEST_START_TIMEOUT", "60"))
CLIENT_RE = re.compile(r"wazoo: serving ZooKeeper clients on (\S+)\s*$")
ADMIN_RE = re.compile(r"wazoo: admin HTTP on (\S+)\s*$")

# What the dashboard must chart (the metrics the server exports that matter to an
# operator); each must appear in at least one expression.
REQUIRED = {
    "wazoo_requests_total",
    "wazoo_request_duration_seconds",
    "wazoo_write_commit_duration_seconds",
    "wazoo_raft_log_fsync_duration_seconds",
    "wazoo_znodes",
    "wazoo_znode_data_bytes",
    "wazoo_sessions",
    "wazoo_session_expirations_total",
    "wazoo_ephemeral_znodes",
    "wazoo_watches",
    "wazoo_connections",
    "wazoo_outstanding_requests",
    "wazoo_raft_term",
    "wazoo_raft_leader_id",
    "wazoo_raft_applied_index",
    "wazoo_snapshot_age_seconds",
    "wazoo_data_dir_bytes",
    "wazoo_recipe_calls_total",
    "wazoo_recipe_errors_total",
    "wazoo_recipe_fuel_used_total",
    "wazoo_recipe_parked_calls",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

# PromQL words that are not metric names when they are not followed by "(".
PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
    "unless", "offset", "bool", "inf", "nan",
}
IDENT_RE = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr):
    """The metric names a PromQL expression selects (functions, aggregations, label
    names, keywords, durations and Grafana variables left out)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    s = re.sub(r"\{[^{}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\[\]]*\]", " ", s)  # range / subquery durations
    # Grouping label lists: by (...), without (...), on (...), ignoring (...), group_x (...).
    s = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", s
    )
    s = re.sub(r"\$\{?\w+\}?", " ", s)  # Grafana variables ($__rate_interval, ...)
    s = re.sub(r"\boffset\s+-?\w+", " ", s)
    s = re.sub(r"(?<![\w:])\d+(?:\.\d*)?(?:[eE][+-]?\d+)?", " ", s)  # numbers (1e3)
    names = set()
    for m in IDENT_RE.finditer(s):
        word = m.group(0)
        rest = s[m.end():].lstrip()
        if rest.startswith("("):
            continue  # a function or aggregation
        if word.lower() in PROMQL_KEYWORDS:
            continue
        names.add(word)
    return names


def test_metric_names_parser():
    assert metric_names(
        'histogram_quantile(0.99, sum by (op, le) (rate(wazoo_x_bucket{instance=~"$instance"}'
        "[$__rate_interval])))"
    ) == {"wazoo_x_bucket"}
    assert metric_names("sum(rate(a_total[5m])) / on (job) group_left (x) b > bool 1") == {
        "a_total",
        "b",
    }
    assert metric_names('up{job="by"} offset 5m unless foo') == {"up", "foo"}
    assert metric_names("x2_total * 1e3 + 0.5") == {"x2_total"}


def all_panels(dashboard):
    for p in dashboard.get("panels", []):
        yield p
        yield from p.get("panels", [])  # panels inside collapsed rows


def expressions(dashboard):
    """(where, expr) for every PromQL expression: panel targets and query variables."""
    out = []
    for p in all_panels(dashboard):
        for t in p.get("targets", []):
            if "expr" in t:
                out.append((f"panel {p.get('title')!r} target {t.get('refId')}", t["expr"]))
    for v in dashboard.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        query = v.get("query")
        if isinstance(query, dict):
            query = query.get("query", "")
        m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", query or "")
        if m:
            query = m.group(1)
        elif re.fullmatch(r"\s*(label_names|metrics)\(.*\)\s*", query or ""):
            continue
        else:
            m = re.fullmatch(r"\s*query_result\((.*)\)\s*", query or "")
            query = m.group(1) if m else query
        out.append((f"variable {v.get('name')!r}", query))
    return out


@pytest.fixture(scope="module")
def dashboard():
    with open(DASHBOARD) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{family: type} from a real server's /metrics (the server is killed after)."""
    wazoo_bin = os.environ.get("WAZOO_BIN")
    if not wazoo_bin or not Path(wazoo_bin).exists():
        pytest.fail(f"WAZOO_BIN is unset or missing: {wazoo_bin!r}")
    data_dir = tmp_path_factory.mktemp("wazoo-grafana")
    proc = subprocess.Popen(
        [
            wazoo_bin, "serve",
            "--client-port-address", "127.0.0.1",
            "--client-port", "0",
            "--data-dir", str(data_dir),
            "--admin-port", "0",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = queue.Queue()

    def pump():
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)  # EOF: the server exited

    threading.Thread(target=pump, daemon=True).start()
    try:
        deadline = time.monotonic() + START_TIMEOUT
        seen, client, admin = [], None, None
        while admin is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"server printed no admin address in {START_TIMEOUT}s: {seen}")
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                pytest.fail(f"server exited ({proc.wait()}) before its admin line: {seen}")
            seen.append(line.rstrip())
            if m := CLIENT_RE.search(line):
                client = m.group(1)
            elif m := ADMIN_RE.search(line):
                admin = m.group(1)
        assert client is not None, f"admin line before the client line: {seen}"
        with urllib.request.urlopen(f"http://{admin}/metrics", timeout=30) as resp:
            assert resp.status == 200
            text = resp.read().decode()
    finally:
        proc.kill()
        proc.wait()
    families = {}
    for line in text.splitlines():
        if m := re.match(r"#\s*TYPE\s+(\S+)\s+(\S+)", line):
            families[m.group(1)] = m.group(2)
    samples = {
        m.group(1)
        for line in text.splitlines()
        if not line.startswith("#") and (m := re.match(r"([A-Za-z_:][A-Za-z0-9_:]*)", line))
    }
    assert families, f"no # TYPE lines in /metrics:\n{text}"
    # Every sample belongs to a declared family (itself or a histogram's series).
    for s in samples:
        assert resolve(s, families), f"sample {s} has no # TYPE family"
    return families


def resolve(name, families):
    """The exported family `name` refers to, or None."""
    if name in families:
        return name
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix):
            base = name[: -len(suffix)]
            if families.get(base) == "histogram":
                return base
    return None


def test_dashboard_shape(dashboard):
    inputs = {i["name"]: i for i in dashboard["__inputs"]}
    assert inputs["DS_PROMETHEUS"]["type"] == "datasource"
    assert inputs["DS_PROMETHEUS"]["pluginId"] == "prometheus"
    assert dashboard["schemaVersion"] >= 36  # Grafana 10 writes 37 to 39
    grafana = [r for r in dashboard["__requires"] if r["id"] == "grafana"]
    assert grafana and grafana[0]["version"].startswith("10.")
    assert dashboard["uid"] and dashboard["title"]

    ids = [p["id"] for p in all_panels(dashboard)]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
    ds = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    charts = [p for p in all_panels(dashboard) if p["type"] != "row"]
    assert charts
    for p in all_panels(dashboard):
        g = p["gridPos"]
        assert 0 <= g["x"] and g["w"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        assert g["h"] > 0 and g["y"] >= 0, p["title"]
    for p in charts:
        assert p["datasource"] == ds, p["title"]
        assert p["targets"], f"panel {p['title']!r} has no query"
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["datasource"] == ds, p["title"]
            assert t["expr"].strip(), p["title"]
    for v in dashboard["templating"]["list"]:
        if v["type"] == "query":
            assert v["datasource"] == ds, v["name"]
    # No two panels overlap on the grid.
    cells = {}
    for p in all_panels(dashboard):
        g = p["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                other = cells.setdefault((x, y), p["title"])
                assert other == p["title"], f"{p['title']!r} overlaps {other!r}"


def test_every_metric_in_the_dashboard_is_exported(dashboard, exported):
    exprs = expressions(dashboard)
    assert exprs
    used = set()
    unknown = []
    for where, expr in exprs:
        names = metric_names(expr)
        assert names, f"{where}: no metric name in {expr!r}"
        for name in names:
            family = resolve(name, exported)
            if family is None:
                unknown.append(f"{where}: {name} (in {expr!r})")
            else:
                used.add(family)
    assert not unknown, "metrics the server does not export:\n" + "\n".join(unknown)
    missing = REQUIRED - used
    assert not missing, f"dashboard charts none of {sorted(missing)}"
    # The required list itself matches the server.
    assert REQUIRED <= set(exported), sorted(REQUIRED - set(exported))
    # Quantiles are only taken over histogram buckets.
    for where, expr in exprs:
        for m in re.finditer(r"histogram_quantile\(", expr):
            assert "_bucket" in expr[m.end():], f"{where}: {expr!r}"
