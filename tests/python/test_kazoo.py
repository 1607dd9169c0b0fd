"""ZooKeeper API behaviour through a real client (kazoo), against Apache ZooKeeper and Wazoo.

Every test taking `server`/`zk` runs once per server kind (ids [zookeeper] and [wazoo]);
expectations were checked against Debian's Apache ZooKeeper 3.8. Tests taking
`both_servers` run one scenario on each and compare the results (modulo zxids, times
and session ids).

Waiting is always on an event (a watch firing, a state change, a line printed) with a
timeout, never a fixed sleep.
"""

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import (
    BadVersionError,
    NoAuthError,
    NoChildrenForEphemeralsError,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
    RolledBackError,
    RuntimeInconsistency,
)
from kazoo.protocol.states import EventType, ZnodeStat
from kazoo.security import ACL, OPEN_ACL_UNSAFE, READ_ACL_UNSAFE, Id, Permissions, make_digest_acl

EVENT_TIMEOUT = 20.0


def next_event(q, what):
    try:
        return q.get(timeout=EVENT_TIMEOUT)
    except queue.Empty:
        pytest.fail(f"no watch event within {EVENT_TIMEOUT}s: expected {what}")


def barrier(zk, q, name):
    """Make sure every event the server sent before now has been delivered to `q`.

    ZooKeeper delivers watch events in order; an exists-watch on a new node, then its
    creation, yields an event that arrives after any earlier one. Returns nothing; fails
    if an unexpected event shows up first."""
    path = f"/barrier-{name}"
    assert zk.exists(path, watch=q.put) is None
    zk.create(path)
    ev = next_event(q, f"barrier {path}")
    assert (ev.type, ev.path) == (EventType.CREATED, path), f"unexpected event before barrier: {ev}"


# ---------------------------------------------------------------------------- basics


def test_ruok_and_srvr(server):
    assert server.four_letter("ruok") == "imok"
    assert "Mode:" in server.four_letter("srvr")


def test_create_get_set_delete(zk):
    assert zk.create("/a", b"hello") == "/a"
    data, stat = zk.get("/a")
    assert data == b"hello"
    assert (stat.version, stat.dataLength, stat.numChildren) == (0, 5, 0)

    stat2 = zk.set("/a", b"world!")
    assert stat2.version == 1
    assert stat2.dataLength == 6
    assert stat2.mzxid > stat.mzxid
    assert stat2.czxid == stat.czxid
    assert zk.get("/a")[0] == b"world!"

    zk.set("/a", b"")  # empty data is allowed
    data, stat3 = zk.get("/a")
    assert (data, stat3.version, stat3.dataLength) == (b"", 2, 0)

    zk.delete("/a")
    assert zk.exists("/a") is None
    with pytest.raises(NoNodeError):
        zk.get("/a")


def test_large_data_roundtrip(zk, rng):
    blob = bytes(rng.getrandbits(8) for _ in range(512 * 1024))
    zk.create("/big", blob)
    data, stat = zk.get("/big")
    assert data == blob
    assert stat.dataLength == len(blob)


def test_exists_on_missing_node(zk):
    assert zk.exists("/missing") is None
    assert zk.exists("/missing/deeper") is None
    with pytest.raises(NoNodeError):
        zk.get("/missing")
    with pytest.raises(NoNodeError):
        zk.set("/missing", b"x")
    with pytest.raises(NoNodeError):
        zk.delete("/missing")
    with pytest.raises(NoNodeError):
        zk.get_children("/missing")
    with pytest.raises(NoNodeError):  # parent does not exist
        zk.create("/missing/child")
    assert zk.create("/made/by/makepath", b"v", makepath=True) == "/made/by/makepath"
    assert zk.get("/made/by/makepath")[0] == b"v"
    assert zk.exists("/made/by").dataLength == 0


def test_error_codes(zk):
    zk.create("/e", b"1")
    with pytest.raises(NodeExistsError):
        zk.create("/e")
    with pytest.raises(BadVersionError):
        zk.set("/e", b"2", version=5)
    assert zk.set("/e", b"2", version=0).version == 1
    assert zk.set("/e", b"3", version=-1).version == 2  # -1 matches any version
    with pytest.raises(BadVersionError):
        zk.delete("/e", version=0)

    zk.create("/e/child")
    with pytest.raises(NotEmptyError):
        zk.delete("/e")
    assert zk.exists("/e") is not None
    zk.delete("/e", recursive=True)
    assert zk.exists("/e") is None

    zk.create("/eph", ephemeral=True)
    with pytest.raises(NoChildrenForEphemeralsError):
        zk.create("/eph/child")


def test_children_and_include_data(zk):
    zk.create("/p", b"parent")
    names = ["c", "a", "b"]
    for n in names:
        zk.create(f"/p/{n}", n.encode())
    assert sorted(zk.get_children("/p")) == ["a", "b", "c"]

    children, stat = zk.get_children("/p", include_data=True)
    assert sorted(children) == ["a", "b", "c"]
    assert stat == zk.exists("/p")
    assert stat.numChildren == 3
    assert stat.cversion == 3
    assert stat.version == 0
    assert zk.get_children("/p/a") == []


def test_root_has_system_znode(server, make_client):
    zk = make_client(server)
    assert "zookeeper" in zk.get_children("/")
    assert zk.exists("/zookeeper") is not None


# ---------------------------------------------------------------------------- sequential / ephemeral


def test_sequential_nodes(zk):
    zk.create("/q")
    made = [zk.create("/q/n-", b"x", sequence=True) for _ in range(3)]
    assert made == ["/q/n-0000000000", "/q/n-0000000001", "/q/n-0000000002"]
    for p in made:
        assert re.fullmatch(r"/q/n-\d{10}", p)
    # the counter belongs to the parent, shared by all prefixes
    assert zk.create("/q/other-", sequence=True) == "/q/other-0000000003"
    # an empty prefix is fine
    assert zk.create("/q/", sequence=True) == "/q/0000000004"
    # another parent has its own counter
    zk.create("/r")
    assert zk.create("/r/n-", sequence=True) == "/r/n-0000000000"

    eph = zk.create("/q/e-", ephemeral=True, sequence=True)
    assert eph == "/q/e-0000000005"
    assert zk.exists(eph).ephemeralOwner == zk.client_id[0]


def test_sequence_counts_creates_not_deletes(zk):
    """ZooKeeper 3.8: the suffix is the number of children created under the parent so far
    (deletes do not advance it, though they do bump cversion)."""
    zk.create("/p")
    cv = lambda: zk.exists("/p").cversion  # noqa: E731
    assert zk.create("/p/s-", sequence=True) == "/p/s-0000000000"
    zk.create("/p/x")
    assert cv() == 2
    assert zk.create("/p/s-", sequence=True) == "/p/s-0000000002"
    zk.delete("/p/x")
    assert cv() == 4
    assert zk.create("/p/s-", sequence=True) == "/p/s-0000000003"
    assert cv() == 5
    t = zk.transaction()
    t.create("/p/y")
    t.delete("/p/y")
    t.create("/p/s-", sequence=True)
    assert t.commit() == ["/p/y", True, "/p/s-0000000005"]
    assert cv() == 8
    t = zk.transaction()
    t.create("/p/q-", sequence=True)
    t.create("/p/q-", sequence=True)
    assert t.commit() == ["/p/q-0000000006", "/p/q-0000000007"]
    assert cv() == 10


def test_ephemeral_owner_and_removal_on_close(server, ns, make_client):
    owner = make_client(server, chroot=ns)
    watcher = make_client(server, chroot=ns)
    owner.create("/eph", b"mine", ephemeral=True)
    stat = watcher.exists("/eph")
    assert stat.ephemeralOwner == owner.client_id[0]
    assert stat.ephemeralOwner != watcher.client_id[0]

    q = queue.Queue()
    assert watcher.exists("/eph", watch=q.put) is not None
    owner.stop()  # closes the session
    ev = next_event(q, "DELETED /eph after the owner closed its session")
    assert (ev.type, ev.path) == (EventType.DELETED, "/eph")
    assert watcher.exists("/eph") is None


HOLDER = r"""
import sys, threading
from kazoo.client import KazooClient
hosts, path, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
zk = KazooClient(hosts=hosts, timeout=timeout)
zk.add_listener(lambda state: print("STATE", state, flush=True))
zk.start(timeout=20)
zk.create(path, b"held", ephemeral=True)
print("READY", zk.client_id[0], zk.client_id[1].hex(), flush=True)
threading.Event().wait()
"""


class Holder:
    """A kazoo client in a child process holding an ephemeral node; it can be frozen with
    SIGSTOP (no more heartbeats) and resumed."""

    def __init__(self, track, hosts, path, timeout):
        self.proc = track(
            subprocess.Popen(
                [sys.executable, "-c", HOLDER, hosts, path, str(timeout)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
        self.lines = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        line = self.wait_for("READY")
        _, sid, passwd = line.split()
        self.session_id, self.password = int(sid), bytes.fromhex(passwd)

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def wait_for(self, prefix, timeout=60.0):
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                pytest.fail(f"holder process: no line starting {prefix!r} (saw {seen})")
            seen.append(line)
            if line.startswith(prefix):
                return line

    def freeze(self):
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self):
        self.proc.send_signal(signal.SIGCONT)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def holders(track_process):
    made = []

    def make(*args):
        h = Holder(track_process, *args)
        made.append(h)
        return h

    yield make
    for h in made:
        h.kill()


def test_session_expires_without_heartbeats(server, ns, make_client, holders):
    watcher = make_client(server, chroot=ns)
    # 4 s is the smallest session timeout with tickTime=2000 (2 ticks).
    holder = holders(server.hosts + ns, "/held", 4.0)
    stat = watcher.exists("/held")
    assert stat is not None and stat.ephemeralOwner == holder.session_id

    q = queue.Queue()
    assert watcher.exists("/held", watch=q.put) is not None
    frozen_at = time.monotonic()
    holder.freeze()
    ev = next_event(q, "DELETED /held once the frozen client's session expired")
    waited = time.monotonic() - frozen_at
    assert (ev.type, ev.path) == (EventType.DELETED, "/held")
    # Not expired early: the client's last ping was at most ~timeout/3 before freezing.
    assert waited >= 1.0, f"session expired after only {waited:.2f}s"
    assert watcher.exists("/held") is None

    # The frozen client wakes up, reconnects with its old session and learns it is gone.
    holder.thaw()
    holder.wait_for("STATE LOST")


def test_session_reattach_with_id_and_password(server, ns, make_client, holders):
    holder = holders(server.hosts + ns, "/held", 30.0)
    holder.freeze()  # it no longer uses its connection; the session lives for 30 s

    # A wrong password does not get the session: the client gets a new one.
    other = make_client(server, chroot=ns, client_id=(holder.session_id, b"\0" * 16))
    assert other.client_id[0] != holder.session_id
    assert other.exists("/held").ephemeralOwner == holder.session_id

    # The right password re-attaches to the same session: it owns the ephemeral node.
    same = make_client(server, chroot=ns, client_id=(holder.session_id, holder.password))
    assert same.client_id[0] == holder.session_id
    assert same.exists("/held").ephemeralOwner == same.client_id[0]

    # Closing the session from the new connection removes the ephemeral node at once
    # (long before the 30 s timeout).
    q = queue.Queue()
    assert other.exists("/held", watch=q.put) is not None
    started = time.monotonic()
    same.stop()
    ev = next_event(q, "DELETED /held after closing the re-attached session")
    assert (ev.type, ev.path) == (EventType.DELETED, "/held")
    assert time.monotonic() - started < 15.0
    holder.thaw()
    holder.wait_for("STATE LOST")


# ---------------------------------------------------------------------------- watches


def test_data_watch_fires_once(zk):
    zk.create("/w", b"1")
    q = queue.Queue()
    data, _ = zk.get("/w", watch=q.put)
    assert data == b"1"
    zk.set("/w", b"2")
    ev = next_event(q, "CHANGED /w")
    assert (ev.type, ev.path, ev.state) == (EventType.CHANGED, "/w", KazooState.CONNECTED)

    zk.set("/w", b"3")  # the watch was one-shot: no second event
    barrier(zk, q, "after-second-set")

    zk.get("/w", watch=q.put)
    zk.delete("/w")
    ev = next_event(q, "DELETED /w")
    assert (ev.type, ev.path) == (EventType.DELETED, "/w")


def test_exists_watch_on_missing_node(zk):
    q = queue.Queue()
    assert zk.exists("/later", watch=q.put) is None
    zk.create("/later", b"now")
    ev = next_event(q, "CREATED /later")
    assert (ev.type, ev.path) == (EventType.CREATED, "/later")

    assert zk.exists("/later", watch=q.put) is not None
    zk.set("/later", b"changed")
    ev = next_event(q, "CHANGED /later via exists watch")
    assert (ev.type, ev.path) == (EventType.CHANGED, "/later")


def test_child_watch(zk):
    zk.create("/p")
    q = queue.Queue()
    assert zk.get_children("/p", watch=q.put) == []
    zk.create("/p/c1")
    ev = next_event(q, "CHILD /p after create")
    assert (ev.type, ev.path) == (EventType.CHILD, "/p")

    # setting data on a child or the parent does not fire a child watch
    zk.get_children("/p", watch=q.put)
    zk.set("/p/c1", b"data")
    zk.set("/p", b"data")
    barrier(zk, q, "after-sets")

    zk.delete("/p/c1")
    ev = next_event(q, "CHILD /p after delete")
    assert (ev.type, ev.path) == (EventType.CHILD, "/p")


def test_delete_fires_data_and_child_watches(zk):
    zk.create("/p")
    zk.create("/p/c", b"x")
    data_q, child_q = queue.Queue(), queue.Queue()
    zk.get("/p/c", watch=data_q.put)
    zk.get_children("/p", watch=child_q.put)
    zk.delete("/p/c")
    ev = next_event(data_q, "DELETED /p/c")
    assert (ev.type, ev.path) == (EventType.DELETED, "/p/c")
    ev = next_event(child_q, "CHILD /p")
    assert (ev.type, ev.path) == (EventType.CHILD, "/p")


def test_watch_sees_other_clients_changes(server, ns, make_client):
    a = make_client(server, chroot=ns)
    b = make_client(server, chroot=ns)
    a.create("/shared", b"0")
    got = threading.Event()
    events = []

    def cb(ev):
        events.append(ev)
        got.set()

    a.get("/shared", watch=cb)
    b.set("/shared", b"1")
    assert got.wait(EVENT_TIMEOUT), "watch did not fire for another client's write"
    assert [(e.type, e.path) for e in events] == [(EventType.CHANGED, "/shared")]
    assert a.get("/shared")[0] == b"1"  # the new value is visible once the event arrived


# ---------------------------------------------------------------------------- transactions


def test_transaction_commit(zk):
    zk.create("/tx")
    t = zk.transaction()
    t.create("/tx/a", b"a")
    t.create("/tx/b", b"b")
    t.set_data("/tx/a", b"a2")
    t.check("/tx/a", 1)
    t.delete("/tx/b")
    results = t.commit()
    assert results[:2] == ["/tx/a", "/tx/b"]
    assert isinstance(results[2], ZnodeStat) and results[2].version == 1
    assert results[3:] == [True, True]

    assert zk.get("/tx/a")[0] == b"a2"
    assert zk.exists("/tx/b") is None
    st = zk.exists("/tx")
    assert (st.numChildren, st.cversion) == (1, 3)
    # all ops of one transaction share one zxid
    assert st.pzxid == zk.exists("/tx/a").czxid == zk.exists("/tx/a").mzxid


def test_failed_transaction_applies_nothing(zk):
    zk.create("/tx")
    zk.create("/tx/a", b"a")
    before = zk.exists("/tx")
    t = zk.transaction()
    t.create("/tx/c", b"c")
    t.set_data("/tx/a", b"changed")
    t.check("/tx/a", 99)  # fails: version is 1 after the set_data above
    t.create("/tx/d")
    t.delete("/tx/nonexistent")
    results = t.commit()
    assert [type(r) for r in results] == [
        RolledBackError,
        RolledBackError,
        BadVersionError,
        RuntimeInconsistency,
        RuntimeInconsistency,
    ]
    assert zk.exists("/tx/c") is None
    assert zk.exists("/tx/d") is None
    assert zk.get("/tx/a")[0] == b"a"
    after = zk.exists("/tx")
    assert after == before  # not even cversion/pzxid moved

    # first failing op decides the error
    t = zk.transaction()
    t.create("/tx/a")  # exists
    t.delete("/tx/a", version=7)
    assert [type(r) for r in t.commit()] == [NodeExistsError, RuntimeInconsistency]


# ---------------------------------------------------------------------------- ACLs


def test_digest_acl(server, ns, make_client):
    owner = make_client(server, chroot=ns)
    owner.add_auth("digest", "alice:secret")
    acl = make_digest_acl("alice", "secret", all=True)
    owner.create("/private", b"top secret", acl=[acl])
    acls, stat = owner.get_acls("/private")
    assert acls == [acl]
    assert acls[0].id.id == "alice:" + acl.id.id.split(":", 1)[1]
    assert stat.aversion == 0

    stranger = make_client(server, chroot=ns)
    with pytest.raises(NoAuthError):
        stranger.get("/private")
    with pytest.raises(NoAuthError):
        stranger.set("/private", b"x")
    with pytest.raises(NoAuthError):
        stranger.create("/private/child")
    # exists needs no permission
    assert stranger.exists("/private").dataLength == len(b"top secret")

    stranger.add_auth("digest", "alice:wrong")
    with pytest.raises(NoAuthError):
        stranger.get("/private")
    stranger.add_auth("digest", "alice:secret")
    assert stranger.get("/private")[0] == b"top secret"
    stranger.set("/private", b"shared")
    assert owner.get("/private")[0] == b"shared"


def test_auth_scheme_acl_and_set_acls(server, ns, make_client):
    owner = make_client(server, chroot=ns)
    owner.add_auth("digest", "bob:pw")
    # the "auth" scheme means: every identity this session has authenticated as
    owner.create("/mine", b"x", acl=[ACL(Permissions.ALL, Id("auth", ""))])
    acls, _ = owner.get_acls("/mine")
    assert acls == [make_digest_acl("bob", "pw", all=True)]

    owner.set_acls("/mine", READ_ACL_UNSAFE + [make_digest_acl("bob", "pw", all=True)])
    acls, stat = owner.get_acls("/mine")
    assert stat.aversion == 1
    assert sorted(acls, key=str) == sorted(
        READ_ACL_UNSAFE + [make_digest_acl("bob", "pw", all=True)], key=str
    )
    with pytest.raises(BadVersionError):
        owner.set_acls("/mine", OPEN_ACL_UNSAFE, version=0)

    reader = make_client(server, chroot=ns)
    assert reader.get("/mine")[0] == b"x"
    with pytest.raises(NoAuthError):
        reader.set("/mine", b"y")
    with pytest.raises(NoAuthError):
        reader.delete("/mine/nothing")  # delete needs DELETE on the parent (read-only here)


def test_read_only_world_acl(zk):
    zk.create("/ro", b"v", acl=READ_ACL_UNSAFE)
    assert zk.get("/ro")[0] == b"v"
    with pytest.raises(NoAuthError):
        zk.set("/ro", b"w")
    with pytest.raises(NoAuthError):
        zk.create("/ro/child")
    # deleting /ro needs DELETE on its parent, which is open
    zk.delete("/ro")


# ---------------------------------------------------------------------------- stat fields


def test_stat_fields(zk):
    before_ms = int(time.time() * 1000)
    zk.create("/s", b"abc")
    st = zk.exists("/s")
    assert (st.version, st.cversion, st.aversion) == (0, 0, 0)
    assert (st.dataLength, st.numChildren, st.ephemeralOwner) == (3, 0, 0)
    assert st.czxid == st.mzxid == st.pzxid
    assert st.ctime == st.mtime
    assert abs(st.ctime - before_ms) < 60_000, "ctime is not milliseconds since the epoch"

    st2 = zk.set("/s", b"abcd")
    assert st2.version == 1 and st2.dataLength == 4
    assert st2.mzxid > st.mzxid and st2.czxid == st.czxid and st2.pzxid == st.pzxid
    assert st2.mtime >= st.mtime and st2.ctime == st.ctime

    zk.create("/s/c")
    child = zk.exists("/s/c")
    st3 = zk.exists("/s")
    assert (st3.cversion, st3.numChildren, st3.version) == (1, 1, 1)
    assert st3.pzxid == child.czxid > st2.mzxid
    assert st3.mzxid == st2.mzxid  # children do not change the parent's data

    zk.delete("/s/c")
    st4 = zk.exists("/s")
    assert (st4.cversion, st4.numChildren) == (2, 0)
    assert st4.pzxid > st3.pzxid

    zk.set_acls("/s", OPEN_ACL_UNSAFE)
    st5 = zk.exists("/s")
    assert st5.aversion == 1 and st5.version == 1 and st5.mzxid == st4.mzxid

    zk.create("/s/e", ephemeral=True)
    assert zk.exists("/s/e").ephemeralOwner == zk.client_id[0]

    # create with include_data (Create2) returns the new node's stat
    path, cst = zk.create("/s/d", b"12345", include_data=True)
    assert path == "/s/d"
    assert cst == zk.exists("/s/d")
    assert (cst.version, cst.dataLength) == (0, 5)


# ---------------------------------------------------------------------------- differential


def _norm(value, client, base):
    """Make a result comparable between servers: drop zxids/times, name sessions."""
    if isinstance(value, ZnodeStat):
        eo = value.ephemeralOwner
        return {
            "version": value.version,
            "cversion": value.cversion,
            "aversion": value.aversion,
            "dataLength": value.dataLength,
            "numChildren": value.numChildren,
            "ephemeralOwner": "self" if eo and eo == client.client_id[0] else eo,
            "mzxid==czxid": value.mzxid == value.czxid,
            "pzxid==czxid": value.pzxid == value.czxid,
        }
    if isinstance(value, BaseException):
        return ("error", type(value).__name__)
    if isinstance(value, str):
        return value[len(base):] if value.startswith(base + "/") else value
    if isinstance(value, (list, tuple)):
        return [_norm(v, client, base) for v in value]
    return value


def _scenario(client, base, blob):
    """Same operations on any server; returns a transcript of normalized results."""
    out = []

    def step(label, fn):
        try:
            res = fn()
        except Exception as e:  # the error class is part of the transcript
            res = e
        out.append((label, _norm(res, client, base)))

    p = lambda s: base + s  # noqa: E731
    step("create /a", lambda: client.create(p("/a"), b"alpha"))
    step("create /a again", lambda: client.create(p("/a"), b"again"))
    step("create /a/b", lambda: client.create(p("/a/b"), blob))
    step("get /a/b", lambda: client.get(p("/a/b")))
    step("set /a bad version", lambda: client.set(p("/a"), b"x", version=3))
    step("set /a", lambda: client.set(p("/a"), b"beta", version=0))
    step("exists /a", lambda: client.exists(p("/a")))
    step("exists /nope", lambda: client.exists(p("/nope")))
    step("create /nope/x", lambda: client.create(p("/nope/x")))
    step("seq 1", lambda: client.create(p("/a/s-"), sequence=True))
    step("seq 2", lambda: client.create(p("/a/s-"), b"2", sequence=True))
    step("delete /a/b", lambda: client.delete(p("/a/b")))
    step("seq 3", lambda: client.create(p("/a/s-"), sequence=True))
    step("eph", lambda: client.create(p("/a/eph"), b"e", ephemeral=True))
    step("eph stat", lambda: client.exists(p("/a/eph")))
    step("child of eph", lambda: client.create(p("/a/eph/c")))
    step("eph seq", lambda: client.create(p("/a/es-"), ephemeral=True, sequence=True))
    step("children", lambda: sorted(client.get_children(p("/a"))))
    step(
        "children+stat",
        lambda: (lambda r: (sorted(r[0]), r[1]))(client.get_children(p("/a"), include_data=True)),
    )
    step("delete non-empty", lambda: client.delete(p("/a")))
    step("delete bad version", lambda: client.delete(p("/a/s-0000000001"), version=4))

    def txn_ok():
        t = client.transaction()
        t.create(p("/t"), b"t")
        t.create(p("/t/x"))
        t.set_data(p("/t"), b"t2")
        t.check(p("/t"), 1)
        t.delete(p("/t/x"))
        return t.commit()

    def txn_fail():
        t = client.transaction()
        t.create(p("/u"))
        t.check(p("/t"), 0)
        t.create(p("/v"))
        return t.commit()

    step("txn ok", txn_ok)
    step("txn fail", txn_fail)
    step("after txn /t", lambda: client.get(p("/t")))
    step("after txn /u", lambda: client.exists(p("/u")))
    step("acl default", lambda: client.get_acls(p("/t")))
    step("set acl", lambda: client.set_acls(p("/t"), READ_ACL_UNSAFE))
    step("acl after", lambda: client.get_acls(p("/t")))
    step("set on read-only", lambda: client.set(p("/t"), b"no"))
    step("create2", lambda: client.create(p("/c2"), b"12", include_data=True))
    step("base stat", lambda: client.exists(base))
    return out


def test_same_results_on_both_servers(both_servers, make_client, rng):
    blob = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 4096)))
    transcripts = {}
    for srv in both_servers:
        client = make_client(srv)
        base = f"/diff-{os.getpid()}-{time.monotonic_ns()}"
        client.create(base)
        transcripts[srv.kind] = _scenario(client, base, blob)
    ref, got = transcripts["zookeeper"], transcripts["wazoo"]
    mismatches = [
        f"{label}:\n    zookeeper: {r!r}\n    wazoo:     {g!r}"
        for (label, r), (_, g) in zip(ref, got)
        if r != g
    ]
    if mismatches:
        pytest.fail("Wazoo differs from ZooKeeper:\n" + "\n".join(mismatches), pytrace=False)
