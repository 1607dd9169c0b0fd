"""Fixtures that run every client-level test against Apache ZooKeeper and Wazoo.

Servers:
  * Apache ZooKeeper 3.8 from Debian (packages zookeeper, zookeeper-bin), started directly
    as `java -cp <classpath> org.apache.zookeeper.server.ZooKeeperServerMain <cfg>` on
    127.0.0.1 with a free port and a temporary dataDir; ready once `ruok` answers `imok`.
  * Wazoo: `$WAZOO_BIN serve --client-port-address 127.0.0.1 --client-port 0 --data-dir D
    --set 4lw.commands.whitelist=* --set extendedTypesEnabled=true`, ready once it prints `wazoo: serving ZooKeeper clients on 127.0.0.1:<PORT>` on stdout.
    If WAZOO_BIN is unset or missing, every Wazoo test fails (never skips).

One server of each kind is shared by the whole session (starting a JVM per test would
dominate the run time); every test works under its own fresh znode (the `ns` fixture),
so tests do not see each other. A server that died is restarted for the next test.

Environment: WAZOO_BIN (required for the Wazoo half), ZK_HOME (default
/usr/share/zookeeper), ZK_CLASSPATH (default: CLASSPATH from $ZK_HOME/bin/zkEnv.sh),
WAZOO_TEST_SEED (seed for the random parts of the tests; printed at start).

  * wazoo_ensemble: three Wazoo servers with server.N lines and myid files; tests talk
    to a follower (writes forwarded to the leader, reads served by the replica).

Run only the ZooKeeper part with `pytest -k zookeeper`, only standalone Wazoo with
`-k "wazoo and not ensemble"`, only the ensemble with `-k ensemble`.
"""

import atexit
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from kazoo.client import KazooClient

ZK_HOME = Path(os.environ.get("ZK_HOME", "/usr/share/zookeeper"))
ZK_MAIN = "org.apache.zookeeper.server.ZooKeeperServerMain"
WAZOO_READY_RE = re.compile(r"wazoo: serving ZooKeeper clients on (\S+):(\d+)\s*$")
START_TIMEOUT = float(os.environ.get("WAZOO_TEST_START_TIMEOUT", "60"))
SERVER_KINDS = ["zookeeper", "wazoo", "wazoo_ensemble"]
# Wazoo flags matching the reference ZooKeeper's zoo.cfg below (tickTime=2000 is the
# default of both).
WAZOO_REFERENCE_ARGS = ["--set", "4lw.commands.whitelist=*", "--set", "extendedTypesEnabled=true"]

SEED = int(os.environ.get("WAZOO_TEST_SEED", str(random.SystemRandom().randrange(2**32))))


def pytest_report_header(config):
    return [
        f"wazoo tests: seed WAZOO_TEST_SEED={SEED}",
        f"wazoo tests: WAZOO_BIN={os.environ.get('WAZOO_BIN', '<unset>')} ZK_HOME={ZK_HOME}",
    ]


@pytest.fixture
def rng(request):
    """A random.Random seeded from WAZOO_TEST_SEED and the test id (seed is printed)."""
    seed = f"{SEED}:{request.node.nodeid}"
    print(f"rng seed: WAZOO_TEST_SEED={SEED} (test {request.node.nodeid})")
    return random.Random(seed)


# ---------------------------------------------------------------------------- helpers

# Every child process the tests start, so that none outlives the run even when pytest is
# stopped by a signal (scripts/test.sh's time limit sends SIGTERM) instead of finishing.
_CHILDREN = []


def track(proc):
    _CHILDREN.append(proc)
    return proc


def _kill_children():
    for p in _CHILDREN:
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGCONT)  # a frozen process must be able to die
                p.kill()
            except OSError:
                pass


def _on_sigterm(signum, frame):
    _kill_children()
    os._exit(128 + signum)


atexit.register(_kill_children)
signal.signal(signal.SIGTERM, _on_sigterm)


@pytest.fixture(scope="session")
def track_process():
    """Register a subprocess.Popen to be killed if the run is interrupted."""
    return track


def free_port():
    """A port that was free a moment ago (ZooKeeper cannot bind port 0 itself)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def four_letter(host, port, cmd, timeout=5.0):
    """Send a ZooKeeper four-letter command and return the whole reply."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(cmd.encode())
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    return b"".join(chunks).decode(errors="replace")


def tail(path, n=60):
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError as e:
        return f"<cannot read {path}: {e}>"
    return "\n".join(lines[-n:])


def zk_classpath():
    """ZooKeeper's classpath: $ZK_CLASSPATH, else CLASSPATH from zkEnv.sh."""
    cp = os.environ.get("ZK_CLASSPATH")
    if not cp:
        env_sh = ZK_HOME / "bin" / "zkEnv.sh"
        if env_sh.exists():
            out = subprocess.run(
                ["bash", "-c", '. "$1" >/dev/null 2>&1; printf %s "$CLASSPATH"', "_", str(env_sh)],
                capture_output=True,
                text=True,
                timeout=30,
            )
            cp = out.stdout.strip()
    if not cp:
        cp = "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar"
    # Debian's zookeeper.jar has no slf4j binding (it logs nothing); slf4j-simple (from
    # libslf4j-java, a dependency of libzookeeper-java) makes the server log to stderr,
    # which goes to the server's log file.
    simple = "/usr/share/java/slf4j-simple.jar"
    if os.path.exists(simple) and "slf4j-simple" not in cp:
        cp = f"{cp}:{simple}"
    return cp


class ServerProcess:
    kind = "?"

    def __init__(self, workdir):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = None
        self.host = "127.0.0.1"
        self.port = None
        self.log_path = self.workdir / "server.log"
        self.starts = 0

    @property
    def hosts(self):
        return f"{self.host}:{self.port}"

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def four_letter(self, cmd):
        return four_letter(self.host, self.port, cmd)

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self.proc = None

    def log_tail(self, n=60):
        return tail(self.log_path, n)

    def __repr__(self):
        return f"<{self.kind} at {self.hosts}>"


class ZooKeeperServer(ServerProcess):
    kind = "zookeeper"

    def start(self):
        java = shutil.which("java") or "/usr/bin/java"
        cp = zk_classpath()
        last_error = None
        for attempt in range(3):  # the free port can be taken between probe and bind
            self.starts += 1
            port = free_port()
            data = self.workdir / f"data-{self.starts}"
            data.mkdir()
            cfg = self.workdir / f"zoo-{self.starts}.cfg"
            cfg.write_text(
                "\n".join(
                    [
                        "tickTime=2000",
                        f"dataDir={data}",
                        f"clientPort={port}",
                        "clientPortAddress=127.0.0.1",
                        "maxClientCnxns=0",
                        "4lw.commands.whitelist=*",
                        "extendedTypesEnabled=true",
                        "admin.enableServer=false",
                        "",
                    ]
                )
            )
            cmd = [
                java,
                "-Xms64m",
                "-Xmx512m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                "-Djava.awt.headless=true",
                "-Dzookeeper.extendedTypesEnabled=true",
                "-Dzookeeper.admin.enableServer=false",
                "-cp",
                cp,
                ZK_MAIN,
                str(cfg),
            ]
            log = open(self.log_path, "ab")
            log.write(f"\n=== start {self.starts}: {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = track(
                subprocess.Popen(
                    cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir
                )
            )
            log.close()
            self.port = port
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    last_error = f"exited with {self.proc.returncode}"
                    break
                try:
                    if self.four_letter("ruok") == "imok" and "Mode:" in self.four_letter("srvr"):
                        return self
                except OSError as e:
                    last_error = repr(e)
                time.sleep(0.05)  # poll interval while waiting for the port to answer
            else:
                last_error = f"no imok within {START_TIMEOUT}s"
            self.stop()
        raise RuntimeError(f"ZooKeeper did not start: {last_error}\n{self.log_tail()}")


def wazoo_bin():
    b = os.environ.get("WAZOO_BIN")
    if not b:
        pytest.fail(
            "WAZOO_BIN is not set: build Wazoo and set WAZOO_BIN to the `wazoo` binary "
            "(scripts/test.sh does this), or run only the ZooKeeper half with -k zookeeper"
        )
    if not (os.path.isfile(b) and os.access(b, os.X_OK)):
        pytest.fail(f"WAZOO_BIN={b} is not an executable file")
    return b


class WazooServer(ServerProcess):
    kind = "wazoo"

    def __init__(self, workdir, binary):
        super().__init__(workdir)
        self.binary = binary
        self.data_dir = None
        self._reader = None
        self.extra_args = []

    def start(self, data_dir=None):
        self.starts += 1
        self.data_dir = Path(data_dir) if data_dir else self.workdir / f"data-{self.starts}"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            self.binary,
            "serve",
            "--client-port-address",
            "127.0.0.1",
            "--client-port",
            "0",
            "--data-dir",
            str(self.data_dir),
            # the same settings as the reference ZooKeeper's zoo.cfg
            *WAZOO_REFERENCE_ARGS,
            *self.extra_args,
        ]
        log = open(self.log_path, "ab", buffering=0)
        log.write(f"\n=== start {self.starts}: {' '.join(cmd)}\n".encode())
        env = dict(os.environ)
        env.setdefault("RUST_BACKTRACE", "1")
        self.proc = track(
            subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, cwd=self.workdir, env=env
            )
        )
        ready = threading.Event()
        found = {}

        def pump(proc=self.proc):
            # Keep draining stdout for the server's whole life so it never blocks on a
            # full pipe; copy everything into the log.
            for raw in proc.stdout:
                log.write(raw)
                if not ready.is_set():
                    m = WAZOO_READY_RE.search(raw.decode(errors="replace"))
                    if m:
                        found["addr"] = (m.group(1), int(m.group(2)))
                        ready.set()
            log.close()
            ready.set()  # EOF: the process is gone; start() notices

        self._reader = threading.Thread(target=pump, name="wazoo-stdout", daemon=True)
        self._reader.start()
        ready.wait(timeout=START_TIMEOUT)
        if "addr" not in found:
            try:  # stdout closed: give the exit status a moment to be collectable
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            why = (
                f"exited with {self.proc.poll()}"
                if self.proc.poll() is not None
                else f"no ready line within {START_TIMEOUT}s"
            )
            self.stop()
            raise RuntimeError(
                f"Wazoo did not start ({why}); expected a stdout line like "
                f"'wazoo: serving ZooKeeper clients on 127.0.0.1:PORT'. Command: {cmd}\n"
                f"{self.log_tail()}"
            )
        self.host, self.port = found["addr"]
        return self

    def kill9(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=15)

    def restart(self):
        """SIGKILL and start again on the same data dir (the port may change)."""
        self.kill9()
        return self.start(self.data_dir)


class WazooEnsemble(ServerProcess):
    """Three Wazoo servers forming an ensemble (server.N lines + myid, as ZooKeeper's);
    clients talk to one of the followers, so every write is forwarded to the leader
    and every read is served by a replica."""

    kind = "wazoo_ensemble"

    def __init__(self, workdir, binary):
        super().__init__(workdir)
        self.binary = binary
        self.members = []

    def start(self):
        self.starts += 1
        base = self.workdir / f"run-{self.starts}"
        base.mkdir()
        lines = ["tickTime=2000", "admin.enableServer=false", "4lw.commands.whitelist=*", "extendedTypesEnabled=true"]
        for i in (1, 2, 3):
            lines.append(f"server.{i}=127.0.0.1:{free_port()}:{free_port()}")
        cfg = base / "zoo.cfg"
        cfg.write_text("\n".join(lines) + "\n")
        self.members = []
        for i in (1, 2, 3):
            data = base / f"s{i}"
            data.mkdir()
            (data / "myid").write_text(f"{i}\n")
            m = WazooServer(base / f"m{i}", self.binary)
            m.extra_args = ["--config", str(cfg)]
            m.start(data)
            self.members.append(m)
        self.log_path = self.members[0].log_path
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            modes, zxids = [], []
            for m in self.members:
                try:
                    srvr = m.four_letter("srvr")
                except OSError:
                    srvr = ""
                mode = re.search(r"Mode: (\w+)", srvr)
                modes.append(mode.group(1) if mode else None)
                zxid = re.search(r"Zxid: 0x([0-9a-f]+)", srvr)
                zxids.append(int(zxid.group(1), 16) if zxid else 0)
            # Ready once the leader's first entry is applied on every member: a member
            # that campaigned in the same term as the winner (every member of a new
            # ensemble initializes and campaigns at once) can still make the leader
            # step down until it has accepted the leader's entries, and a write in
            # that window fails with ConnectionLoss.
            settled = len(set(zxids)) == 1 and zxids[0] > 0
            if modes.count("leader") == 1 and modes.count("follower") == 2 and settled:
                follower = self.members[modes.index("follower")]
                self.host, self.port = follower.host, follower.port
                self.proc = follower.proc
                return self
            time.sleep(0.05)  # poll interval while the ensemble elects its leader
        self.stop()
        raise RuntimeError(f"the Wazoo ensemble elected no leader within {START_TIMEOUT}s: {modes}")

    def alive(self):
        return bool(self.members) and all(m.alive() for m in self.members)

    def stop(self):
        for m in self.members:
            m.stop()
        self.proc = None

    def log_tail(self, n=60):
        return "\n".join(f"--- member {i + 1} ---\n{m.log_tail(n)}" for i, m in enumerate(self.members))


# ---------------------------------------------------------------------------- fixtures


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failure, add the tail of the involved servers' logs to the report."""
    rep = yield
    if rep.failed and rep.when in ("setup", "call"):
        funcargs = getattr(item, "funcargs", {})
        servers = [funcargs.get("server")] + list(funcargs.get("both_servers") or ())
        for srv in servers:
            if isinstance(srv, ServerProcess):
                rep.sections.append((f"{srv.kind} log tail ({srv.log_path})", srv.log_tail()))
    return rep


@pytest.fixture(scope="session")
def zookeeper_server(tmp_path_factory):
    srv = ZooKeeperServer(tmp_path_factory.mktemp("zookeeper"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def wazoo_server(tmp_path_factory):
    srv = WazooServer(tmp_path_factory.mktemp("wazoo"), wazoo_bin())
    try:
        srv.start()
    except RuntimeError as e:
        pytest.fail(str(e))
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def wazoo_ensemble_server(tmp_path_factory):
    srv = WazooEnsemble(tmp_path_factory.mktemp("wazoo-ensemble"), wazoo_bin())
    try:
        srv.start()
    except RuntimeError as e:
        pytest.fail(str(e))
    yield srv
    srv.stop()


def _running(request, kind):
    srv = request.getfixturevalue(f"{kind}_server")
    if not srv.alive():
        # It died during an earlier test (which failed for it): give later tests a server.
        log = srv.log_tail()
        if srv.starts >= 5:
            pytest.fail(f"{kind} keeps dying; log tail:\n{log}")
        print(f"{kind} server had died; restarting. Log tail:\n{log}")
        srv.start()
    return srv


@pytest.fixture(params=SERVER_KINDS)
def server(request):
    """The server under test: each test using it runs once per kind (ids zookeeper, wazoo)."""
    return _running(request, request.param)


@pytest.fixture
def both_servers(request):
    """(zookeeper, wazoo) for differential tests that compare the two directly."""
    return _running(request, "zookeeper"), _running(request, "wazoo")


def _namespace_for(request):
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", request.node.name)[:60]
    return f"/pytest-{name}-{uuid.uuid4().hex[:8]}"


class Clients:
    """Creates started KazooClients (optionally chrooted) and stops them all at teardown."""

    def __init__(self):
        self.clients = []

    def __call__(self, srv, chroot="", timeout=10.0, **kw):
        c = KazooClient(hosts=srv.hosts + chroot, timeout=timeout, **kw)
        self.clients.append(c)
        c.start(timeout=20)
        return c

    def close_all(self):
        for c in self.clients:
            try:
                c.stop()
                c.close()
            except Exception as e:  # a test may have stopped it already
                print(f"closing client: {e!r}")


@pytest.fixture
def make_client():
    clients = Clients()
    yield clients
    clients.close_all()


@pytest.fixture
def ns(request, server, make_client):
    """A fresh znode path (e.g. /pytest-test_x_zookeeper-1a2b3c4d) created on `server`."""
    path = _namespace_for(request)
    make_client(server).create(path, b"")
    return path


@pytest.fixture
def zk(server, ns, make_client):
    """A started KazooClient on `server`, chrooted to this test's own fresh znode."""
    return make_client(server, chroot=ns)


@pytest.fixture
def zkcli_path():
    p = ZK_HOME / "bin" / "zkCli.sh"
    if not p.exists():
        pytest.fail(f"{p} not found: install Debian's zookeeper package (scripts/setup.sh)")
    return p
