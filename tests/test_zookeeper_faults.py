"""The ZooKeeper backend under faults and hostile input (issue 9): the session
timeout the server actually grants, deadlines kept against a server that is
frozen or never answers, values no server could store refused before any
I/O, listings of big directories with long names, and a forked child that
leaves its parent's session alone.

A dedicated server is started here, with ``maxSessionTimeout`` capped at
3 s (through ``tests/servers.py``); it is frozen with SIGSTOP (by its PID)
to play a server that accepts connections and never answers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient
from kazoo.protocol.connection import _CONNECTION_DROP

from moot import deadline
from moot.backends.base import MAX_VALUE_BYTES
from moot.backends.zookeeper import ZooKeeperBackend
from moot.errors import ConnectionLost, InvalidArgument, SessionExpired
from moot.url import parse_url
from tests import servers
from tests.conftest import MakeBackend
from tests.waiting import wait_until

CAP_MS = 3000  # the dedicated server's maxSessionTimeout
SLACK = 0.5  # how late a call may return past its deadline


class CappedZooKeeper(servers.ZooKeeper):
    """The test suite's ZooKeeper with a small maxSessionTimeout."""

    name = "zookeeper-capped"

    def argv(self, member: servers.Member, peers: Sequence[servers.Member]) -> list[str]:
        argv = super().argv(member, peers)
        config = member.directory / "zoo.cfg"
        text = config.read_text()
        assert "maxSessionTimeout=60000" in text
        config.write_text(text.replace("maxSessionTimeout=60000", f"maxSessionTimeout={CAP_MS}"))
        return argv


@pytest.fixture(scope="module")
def capped() -> Iterator[servers.Cluster]:
    with servers.own_cluster(CappedZooKeeper()) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def zk_url(server: Callable[[str], str]) -> str:
    """The run's shared zookeeper server (``MOOT_TEST_ZOOKEEPER_URL`` if set)."""
    return server("zookeeper")


@pytest.fixture
def make(open_backend: MakeBackend) -> Callable[..., ZooKeeperBackend]:
    """``make(url, ttl=1.5, timeout=5)``: a backend with an open session, closed after the test."""
    return lambda url, ttl=1.5, timeout=5.0: open_backend(url, ttl=ttl, timeout=timeout)


@pytest.fixture
def ns() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@contextlib.contextmanager
def frozen(cluster: servers.Cluster) -> Iterator[None]:
    """The server stopped with SIGSTOP: connections are still accepted by the
    kernel, nothing is ever answered. Resumed on exit."""
    (member,) = cluster.members
    member.freeze()
    try:
        yield
    finally:
        member.send(signal.SIGCONT)


def reported(error: BaseException) -> float:
    """The elapsed time an error message states."""
    match = re.search(r"after (\d+\.\d+)s", str(error))
    assert match, f"no elapsed time in {error}"
    return float(match.group(1))


# -- granted session timeout ----------------------------------------------------


def test_granted_ttl_reflects_the_server_cap(capped: servers.Cluster, make: Callable[..., ZooKeeperBackend],
                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="moot.backends.zookeeper")
    backend = make(capped.url, ttl=5.0)  # asked for the TTL less its 250 ms tick: 4.75 s
    assert backend.granted_ttl == CAP_MS / 1000
    warnings = [r for r in caplog.records
                if "granted a session timeout of 3s instead of the 4.75s asked for a TTL of 5s" in r.message]
    assert len(warnings) == 1
    backend.close_session()
    backend.open_session(5.0)  # the same answer is not logged again
    assert backend.granted_ttl == CAP_MS / 1000
    assert len([r for r in caplog.records if "granted a session timeout" in r.message]) == 1

    within = make(capped.url, ttl=1.0)
    assert within.granted_ttl == 0.75  # less one tick
    raised = make(capped.url, ttl=0.2)  # below minSessionTimeout (500 ms): raised
    assert raised.granted_ttl == 0.5
    assert any("granted a session timeout of 0.5s instead of the 0.2s asked for a TTL of 0.2s" in r.message
               for r in caplog.records)


def test_granted_ttl_is_read_again_after_a_reconnection(capped: servers.Cluster,
                                                        make: Callable[..., ZooKeeperBackend]) -> None:
    backend = make(capped.url, ttl=5.0)
    conn = backend._conn
    assert conn is not None
    backend.granted_ttl = None  # what only a new negotiation sets again
    conn.zk._call(_CONNECTION_DROP, conn.zk.handler.async_result())  # kazoo reconnects to the same session
    wait_until(lambda: backend.granted_ttl is not None, what="the reconnection's granted timeout")
    assert backend.granted_ttl == CAP_MS / 1000
    backend.refresh_session()


# -- deadlines ----------------------------------------------------------------


def test_connect_to_a_server_that_never_answers_gives_up_in_time() -> None:
    with socket.socket() as silent:  # accepts (the kernel's backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        backend = ZooKeeperBackend(parse_url(f"zookeeper://127.0.0.1:{silent.getsockname()[1]}"), {})
        started = time.monotonic()
        with pytest.raises(ConnectionLost, match="did not answer") as caught:
            backend.connect(2.0)
        took = time.monotonic() - started
        backend.close()
        closed = time.monotonic() - started
    assert took < 2.0 + SLACK and closed < 2.0 + 2 * SLACK
    assert abs(reported(caught.value) - took) < 0.2


def test_every_primitive_keeps_the_callers_deadline_on_a_frozen_server(
        capped: servers.Cluster, make: Callable[..., ZooKeeperBackend], ns: str) -> None:
    backend = make(capped.url, ttl=3.0, timeout=5.0)
    entry = backend.create(f"{ns}/k", b"v")
    assert entry is not None
    session = backend._session
    assert session is not None
    calls: dict[str, Callable[[], Any]] = {
        "refresh_session": backend.refresh_session,
        "get": lambda: backend.get(f"{ns}/k"),
        "list": lambda: backend.list(f"{ns}/"),
        "create": lambda: backend.create(f"{ns}/new", b"v", ephemeral=True),
        "compare_and_set": lambda: backend.compare_and_set(f"{ns}/k", b"w", entry.version),
        "delete": lambda: backend.delete(f"{ns}/k"),
        "enqueue": lambda: backend.enqueue(f"{ns}/q/", b"w"),
        "session_last_seen": lambda: backend.session_last_seen(session.id),
        "expire_session": lambda: backend.expire_session(session.id),
        "ping": backend.ping,
    }
    with frozen(capped):
        for name, call in calls.items():
            started = time.monotonic()
            try:
                with deadline.bounded(started + 0.5):
                    answer = call()
            except ConnectionLost as exc:
                error = exc
            else:
                pytest.fail(f"{name} returned {answer!r} from a frozen server")
            took = time.monotonic() - started
            assert took < 0.5 + SLACK, f"{name} took {took:.2f}s with a 0.5s deadline"
            assert abs(reported(error) - took) < 0.2, f"{name}: {error}"
            assert "when the caller's deadline passed" in str(error), f"{name}: {error}"
        with pytest.raises(ConnectionLost) as spent, deadline.bounded(time.monotonic()):
            backend.get(f"{ns}/k")  # the caller's time was gone before this call started
        assert "started with 0.00s of it left: the time had gone to the steps before it" in str(spent.value)
        started = time.monotonic()
        with deadline.bounded(started + 0.5):
            backend.watch(f"{ns}/k", lambda: None)  # armed later, on the reconnection
        assert time.monotonic() - started < 0.5 + SLACK


def test_own_timeout_bounds_a_call_and_close_on_a_frozen_server(
        capped: servers.Cluster, make: Callable[..., ZooKeeperBackend], ns: str) -> None:
    backend = make(capped.url, ttl=3.0, timeout=0.5)
    backend.create(f"{ns}/k", b"v")
    with frozen(capped):
        started = time.monotonic()
        with pytest.raises(ConnectionLost):
            backend.get(f"{ns}/k")
        assert time.monotonic() - started < 0.5 + SLACK
        started = time.monotonic()
        backend.close()  # the close request is never answered
        assert time.monotonic() - started < 0.5 + SLACK


# -- values and listings that no server could serve -----------------------------


def test_oversized_values_are_refused_before_any_io(zk_url: str, make: Callable[..., ZooKeeperBackend],
                                                    ns: str) -> None:
    backend = make(zk_url)
    conn = backend._conn
    assert conn is not None
    sent: list[str] = []
    real = conn.zk._call
    conn.zk._call = lambda request, result: (sent.append(type(request).__name__), real(request, result))[1]
    entry = backend.create(f"{ns}/k", b"v")
    assert entry is not None
    sent.clear()
    for size in (MAX_VALUE_BYTES + 1, 2 * 1024 * 1024):
        value = b"x" * size
        with pytest.raises(InvalidArgument, match="limit"):
            backend.create(f"{ns}/big", value)
        with pytest.raises(InvalidArgument):
            backend.create(f"{ns}/big", value, ephemeral=True)
        with pytest.raises(InvalidArgument):
            backend.compare_and_set(f"{ns}/k", value, entry.version)
        with pytest.raises(InvalidArgument):
            backend.enqueue(f"{ns}/q/", value)
        with pytest.raises(InvalidArgument):
            backend.create_sequential(f"{ns}/q/", value, ephemeral=False)
    assert sent == []
    backend.refresh_session()  # the session never noticed
    largest = b"y" * MAX_VALUE_BYTES
    assert backend.create(f"{ns}/largest", largest) is not None
    stored = backend.get(f"{ns}/largest")
    assert stored is not None and stored.value == largest


def test_listing_a_big_directory_of_long_names(zk_url: str, make: Callable[..., ZooKeeperBackend], ns: str) -> None:
    """Reading them all in one request would be over the server's 1 MiB frame
    limit: it drops the connection, for ever at each try."""
    backend = make(zk_url)
    raw = KazooClient(hosts=zk_url.split("://", 1)[1].split("/", 1)[0])
    raw.start(timeout=10)
    try:
        raw.ensure_path(f"/moot/{ns}/d")
        names = [f"{i:05d}-" + "n" * 1100 for i in range(1000)]  # 1.1 MB of paths
        pending = [raw.create_async(f"/moot/{ns}/d/{name}", b"\x01v") for name in names]
        for result in pending:
            result.get(timeout=20)
    finally:
        raw.stop()
        raw.close()
    entries = backend.list(f"{ns}/d/")
    assert [e.key for e in entries] == [f"{ns}/d/{name}" for name in names]
    backend.refresh_session()


# -- fork -----------------------------------------------------------------------


def _open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_forked_child_leaves_the_parents_session_alone(zk_url: str, make: Callable[..., ZooKeeperBackend],
                                                       ns: str) -> None:
    parent, other = make(zk_url, ttl=5.0), make(zk_url)
    session = parent._session
    conn = parent._conn
    assert session is not None and conn is not None
    assert parent.create(f"{ns}/lock", b"mine", ephemeral=True) is not None
    handler = conn.zk._connection
    fds = [s.fileno() for s in (handler._socket, handler._read_sock, handler._write_sock) if s is not None]
    assert len(fds) == 3
    pid = os.fork()
    if pid == 0:  # the child: report through the exit status only
        status = 1
        try:
            parent.forget_after_fork()
            status = 2 if any(_open(fd) for fd in fds) else 3
            started = time.monotonic()
            try:
                parent.get(f"{ns}/lock")
            except ConnectionLost:
                if time.monotonic() - started < 0.5:
                    status = 4
            parent.close()  # what a child's cleanup would do: must not touch the parent's session
            if status == 4:
                status = 0
        finally:
            os._exit(status)
    _, waited = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(waited) == 0, "child: 2 = fds left open, 3 = use not refused at once"
    parent.refresh_session()
    assert not session.expired
    held = other.get(f"{ns}/lock")
    assert held is not None and held.owner == session.id
    assert parent.get(f"{ns}/lock") == held


def test_refresh_fails_on_a_server_that_cannot_reach_the_leader(make: Callable[..., ZooKeeperBackend]) -> None:
    """A follower cut off from its leader still answers reads from its copy
    for ``syncLimit`` ticks, while the leader may expire the session: a
    refresh must not be one of those reads."""
    cluster = servers.start_cluster("zookeeper", size=3)
    try:
        leader = cluster.leader()
        follower = next(m for m in cluster.members if m is not leader)
        backend = make(cluster.kind.url([follower]), ttl=3.0, timeout=5.0)
        backend.refresh_session()
        leader.freeze()  # a sync sent before its last thread stopped could still be answered
        try:
            started = time.monotonic()
            with deadline.bounded(started + 1.0), pytest.raises(ConnectionLost):
                backend.refresh_session()
            assert time.monotonic() - started < 1.0 + SLACK
        finally:
            leader.send(signal.SIGCONT)
    finally:
        cluster.stop()


def test_a_refresh_right_after_an_eviction_on_another_server_reports_it(
        make: Callable[..., ZooKeeperBackend]) -> None:
    """A refresh is one sync, and the session's end reaches the owner's
    server before the sync's answer (that server then closes the
    connection): a session evicted through another member of the ensemble
    is never reported renewed, even before its owner has heard of the end."""
    cluster = servers.start_cluster("zookeeper", size=3)
    try:
        owner_at, evictor_at = cluster.members[0], cluster.members[1]
        for _ in range(5):
            owner = make(cluster.kind.url([owner_at]), ttl=3.0)
            evictor = make(cluster.kind.url([evictor_at]), ttl=3.0)
            owner.refresh_session()
            session = owner._session
            assert session is not None
            assert evictor.expire_session(session.id) is True
            with pytest.raises(SessionExpired):
                owner.refresh_session()
    finally:
        cluster.stop()


# -- eventlet --------------------------------------------------------------

EVENTLET_SCRIPT = """
import eventlet
eventlet.monkey_patch()

import sys
import time
import uuid

import moot

url, ttl = sys.argv[1], 2.0
namespace = "ev-" + uuid.uuid4().hex[:12]
first = moot.connect(url, member_id="first", ttl=ttl, namespace=namespace, timeout=5.0)
second = moot.connect(url, member_id="second", ttl=ttl, namespace=namespace, timeout=5.0)

held = first.lock("volume")
assert held.acquire(timeout=5.0)
assert held.release()

# a green thread of a second coordinator waits for the lock; the release wakes it
assert held.acquire(timeout=5.0)
token = held.token
waiter = second.lock("volume")
outcome = []

def wait_for_the_lock():
    outcome.append(waiter.acquire(timeout=15.0))
    outcome.append(time.monotonic())

green = eventlet.spawn(wait_for_the_lock)
until = time.monotonic() + 10.0
while not first.lock_info("volume").waiters:
    assert time.monotonic() < until, "the waiter never queued"
    eventlet.sleep(0.01)
released = time.monotonic()
assert held.release()
green.wait()
assert outcome[0] is True, "the waiter did not get the lock"
assert outcome[1] - released < 2.0, f"woken {outcome[1] - released:.2f}s after the release"
assert waiter.token > token
assert waiter.release()

# group membership, seen from the other coordinator
group = first.group("workers")
group.join(capabilities={"drivers": ["ipmi"]})
members = second.group("workers").members()
assert set(members) == {"first"} and members["first"].capabilities == {"drivers": ["ipmi"]}, members

# the heartbeat is a real thread: a green thread keeping the CPU for twice the TTL costs nothing
assert held.acquire(timeout=5.0)
busy_until = time.monotonic() + 2 * ttl
while time.monotonic() < busy_until:  # never yields to eventlet's hub
    pass
assert held.is_held
assert first.stats()["counters"].get("sessions_lost", {}).get("coordinator", 0) == 0
assert second.lock_info("volume").holder == "first"
assert held.release()
second.close()
first.close()
print("eventlet ok")
"""


def test_works_under_eventlet_monkey_patching(zk_url: str, tmp_path: Path) -> None:
    """Before: kazoo, imported after monkey-patching, ran its connection
    thread, locks and results green; the coordinator's real heartbeat thread
    calling into it raised "Cannot switch to a different thread", and every
    call then timed out."""
    script = tmp_path / "eventlet_zookeeper.py"
    script.write_text(EVENTLET_SCRIPT)
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-W", "ignore", str(script), zk_url],
        capture_output=True, text=True, timeout=60, cwd=root, check=False,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "eventlet ok" in result.stdout, output[-4000:]
    assert "Cannot switch" not in output, output[-4000:]
