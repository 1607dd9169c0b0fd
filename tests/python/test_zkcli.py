"""Apache ZooKeeper's own command-line client (zkCli.sh, one-shot mode) against both servers.

`zkCli.sh -server 127.0.0.1:PORT <command>` connects, runs one command and exits: its
exit code is 0 on success and 1 on a ZooKeeper error; results go to stdout after the
`WatchedEvent state:SyncConnected ...` line, and messages such as `Created /x` or
`Node does not exist: /x` go to stderr. Expectations checked against ZooKeeper 3.8.
"""

import os
import re
import subprocess
import uuid

import pytest

CONNECTED_LINE = "WatchedEvent state:SyncConnected type:None path:null"


class Cli:
    def __init__(self, zkcli_path, server):
        self.zkcli = str(zkcli_path)
        self.server = server
        # a faster-starting JVM for a one-shot client
        self.env = dict(os.environ, CLIENT_JVMFLAGS="-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")

    def run(self, *args):
        """Returns (exit code, command output on stdout, stderr without SLF4J noise)."""
        cmd = [self.zkcli, "-server", self.server.hosts, *args]
        try:
            r = subprocess.run(
                cmd, capture_output=True, text=True, timeout=90, env=self.env, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"{' '.join(cmd)} did not finish in 90s; stdout so far: {e.stdout!r}")
        if CONNECTED_LINE not in r.stdout:
            pytest.fail(f"zkCli never connected: {' '.join(cmd)}\nstdout: {r.stdout}\nstderr: {r.stderr}")
        out = r.stdout.split(CONNECTED_LINE + "\n", 1)[1]
        err = "\n".join(l for l in r.stderr.splitlines() if not l.startswith("SLF4J:"))
        print(f"$ zkCli {' '.join(args)} -> {r.returncode}\n{out}{err}")
        return r.returncode, out, err

    def ok(self, *args):
        rc, out, err = self.run(*args)
        assert rc == 0, f"zkCli {' '.join(args)} failed ({rc}): {err}"
        return out, err

    def fails(self, *args):
        rc, out, err = self.run(*args)
        assert rc == 1, f"zkCli {' '.join(args)} should have failed: rc={rc} out={out!r}"
        return err


def parse_stat(text):
    """The `name = value` lines zkCli prints for a Stat."""
    stat = dict(re.findall(r"^(\w+) = (.*)$", text, re.M))
    assert set(stat) >= {
        "cZxid",
        "ctime",
        "mZxid",
        "mtime",
        "pZxid",
        "cversion",
        "dataVersion",
        "aclVersion",
        "ephemeralOwner",
        "dataLength",
        "numChildren",
    }, f"not a stat: {text!r}"
    return stat


@pytest.fixture
def cli(zkcli_path, server):
    return Cli(zkcli_path, server)


@pytest.fixture
def base(cli):
    path = f"/zkcli-{uuid.uuid4().hex[:10]}"
    cli.ok("create", path)
    return path


def test_create_get_set_stat_delete(cli, base):
    p = f"{base}/node"
    _, err = cli.ok("create", p, "hello")
    assert err.strip() == f"Created {p}"

    out, _ = cli.ok("get", p)
    assert out == "hello\n"

    st = parse_stat(cli.ok("stat", p)[0])
    assert st["dataVersion"] == "0" and st["dataLength"] == "5"
    assert st["ephemeralOwner"] == "0x0" and st["numChildren"] == "0"
    assert st["cZxid"] == st["mZxid"] == st["pZxid"]
    assert re.fullmatch(r"0x[0-9a-f]+", st["cZxid"])

    cli.ok("set", p, "world!")
    out, _ = cli.ok("get", "-s", p)
    data, stat_text = out.split("\n", 1)
    assert data == "world!"
    st2 = parse_stat(stat_text)
    assert st2["dataVersion"] == "1" and st2["dataLength"] == "6"
    assert st2["cZxid"] == st["cZxid"]
    assert int(st2["mZxid"], 16) > int(st["mZxid"], 16)

    cli.ok("delete", p)
    assert cli.fails("stat", p).strip() == f"Node does not exist: {p}"
    assert cli.fails("get", p).strip() == f"Node does not exist: {p}"


def test_ls(cli, base):
    for name in ["zz", "aa", "mm"]:
        cli.ok("create", f"{base}/{name}")
    cli.ok("create", f"{base}/mm/deep", "x")

    out, _ = cli.ok("ls", base)
    assert out == "[aa, mm, zz]\n"

    out, _ = cli.ok("ls", "-s", base)
    listing, stat_text = out.split("\n", 1)
    assert listing == "[aa, mm, zz]"
    st = parse_stat(stat_text)
    assert st["numChildren"] == "3" and st["cversion"] == "3"

    out, _ = cli.ok("ls", "-R", base)
    assert out.splitlines() == [base, f"{base}/aa", f"{base}/mm", f"{base}/zz", f"{base}/mm/deep"]

    out, _ = cli.ok("ls", f"{base}/aa")
    assert out == "[]\n"


def test_errors(cli, base):
    p = f"{base}/n"
    cli.ok("create", p, "v")
    assert cli.fails("create", p).strip() == f"Node already exists: {p}"
    assert cli.fails("create", f"{p}/x/y").strip() == f"Node does not exist: {p}/x/y"
    assert cli.fails("set", p, "w", "-v", "7").strip() == f"version No is not valid : {p}"
    cli.ok("create", f"{p}/child")
    assert cli.fails("delete", p).strip() == f"Node not empty: {p}"
    cli.ok("deleteall", p)
    assert cli.fails("ls", p).strip() == f"Node does not exist: {p}"


def test_sequential_ephemeral_ttl_container(cli, base):
    _, err = cli.ok("create", "-s", f"{base}/seq-", "d")
    assert err.strip() == f"Created {base}/seq-0000000000"
    _, err = cli.ok("create", "-s", f"{base}/seq-")
    assert err.strip() == f"Created {base}/seq-0000000001"

    # The one-shot client exits without closing its session, so the ephemeral node
    # outlives the process until the session times out (30 s): still there for `stat`.
    cli.ok("create", "-e", f"{base}/eph")
    st = parse_stat(cli.ok("stat", f"{base}/eph")[0])
    assert st["ephemeralOwner"] != "0x0"

    # TTL and container nodes (extendedTypesEnabled=true on the reference server); their
    # stat shows ephemeralOwner 0x0 to clients.
    _, err = cli.ok("create", "-t", "600000", f"{base}/ttl", "t")
    assert err.strip() == f"Created {base}/ttl"
    _, err = cli.ok("create", "-c", f"{base}/cont")
    assert err.strip() == f"Created {base}/cont"
    for name in ("ttl", "cont"):
        st = parse_stat(cli.ok("stat", f"{base}/{name}")[0])
        assert st["ephemeralOwner"] == "0x0"
    assert cli.ok("get", f"{base}/ttl")[0] == "t\n"


def test_acls(cli, base):
    p = f"{base}/acl"
    cli.ok("create", p, "x")
    out, _ = cli.ok("getAcl", p)
    assert out == "'world,'anyone\n: cdrwa\n"

    cli.ok("setAcl", p, "world:anyone:r")
    out, _ = cli.ok("getAcl", p)
    assert out == "'world,'anyone\n: r\n"
    assert cli.ok("get", p)[0] == "x\n"
    assert cli.fails("set", p, "y").strip() == f"Insufficient permission : {p}"
    st = parse_stat(cli.ok("stat", p)[0])
    assert st["aclVersion"] == "1" and st["dataVersion"] == "0"


def test_sync(cli, base):
    out, _ = cli.ok("sync", base)
    assert out == "Sync is OK\n"
