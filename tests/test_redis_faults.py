"""The Redis backend under faults: fencing tokens that keep growing after the
server lost its data, deadlines kept against a server that is down, refuses,
or accepts and never answers, a forked child that leaves its parent's session
alone, eventlet's monkey-patching, and session TTLs the server always expires.

Every test runs against real redis-server processes that it owns (started by
``tests/servers.py`` without persistence, so a restart loses the data), never
the run's shared server, since they stop, restart or freeze it.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

import moot
from moot.deadline import bounded
from moot.errors import ConnectionLost, CoordinatorClosed, InvalidArgument
from tests import servers
from tests.conftest import MakeBackend
from tests.forking import in_forked_child
from tests.waiting import wait_event, wait_until

#: What a deadline may be overrun by (scheduling, a loaded 2-core CI machine).
SLACK = 0.75


@pytest.fixture
def own() -> Iterator[servers.Cluster]:
    """A redis-server of this test alone, without persistence."""
    with servers.own_cluster("redis") as cluster:
        yield cluster


@pytest.fixture
def make(open_backend: MakeBackend) -> Any:
    """``make(url, **options)``: a connected backend, closed after the test."""
    return lambda url, **options: open_backend(url, timeout=5.0, **options)


@contextlib.contextmanager
def frozen(cluster: servers.Cluster) -> Iterator[None]:
    """The server stopped (SIGSTOP): it keeps its connections and answers nothing."""
    server = cluster.members[0]
    server.freeze()
    try:
        yield
    finally:
        server.send(signal.SIGCONT)


def stated_elapsed(error: BaseException) -> float:
    """The time an error message says was spent."""
    found = re.findall(r"after (\d+(?:\.\d+)?)\s?s", str(error))
    assert found, f"the message does not state the time spent: {error}"
    return float(found[-1])


# -- fencing tokens across a loss of the server's data ------------------------------
def test_tokens_grow_after_a_restart_that_lost_the_data(own: servers.Cluster, make: Any) -> None:
    url, member = own.url, own.members[0]
    prefix = "ns/lock/volume-1/q/"
    issued: list[int] = []
    versions: list[int] = []
    with moot.connect(url, ttl=5, namespace="ns") as coord:
        for _ in range(3):
            with coord.lock("volume-1") as held:
                assert held.token is not None
                issued.append(held.token)
    backend = make(url)
    backend.open_session(30)
    entry, _ = backend.enqueue(prefix, b"")
    assert entry.seq is not None
    issued.append(entry.seq)
    meta = backend.create("ns/lock/volume-1/meta", b"1")
    assert meta is not None
    versions.append(meta.version)
    assert issued == sorted(issued) and len(set(issued)) == len(issued)

    own.kill(member)
    own.restart(member)  # no persistence: every counter is gone
    assert redis.Redis(port=member.port).dbsize() == 0

    with moot.connect(url, ttl=5, namespace="ns") as coord, coord.lock("volume-1") as held:
        assert held.token is not None and held.token > max(issued)
        issued.append(held.token)
    after = make(url)
    after.open_session(30)
    again, _ = after.enqueue(prefix, b"")
    assert again.seq is not None and again.seq > max(issued)
    recreated = after.create("ns/lock/volume-1/meta", b"1")
    assert recreated is not None and recreated.version > max(versions)  # no ABA across the loss
    assert again.seq < 2**53


def test_tokens_grow_when_the_counter_went_back(own: servers.Cluster, make: Any) -> None:
    """What a failover to a replica that missed the last writes leaves: a counter
    that exists but is behind the tokens already issued."""
    prefix = "ns/lock/volume-2/q/"
    backend = make(own.url)
    backend.open_session(30)
    first, _ = backend.enqueue(prefix, b"")
    second, _ = backend.enqueue(prefix, b"")
    assert first.seq is not None and second.seq is not None and second.seq > first.seq
    raw = redis.Redis(port=own.members[0].port)
    stale = next(k for k in raw.scan_iter(match="moot:*volume-2*") if raw.hexists(k, "#n"))
    raw.hset(stale, "#n", max(first.seq - 1000, 0))  # the replica had seen fewer increments
    third, _ = backend.enqueue(prefix, b"")
    assert third.seq is not None and third.seq > second.seq


# -- deadlines ------------------------------------------------------------------------
@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener.getsockname()[1]


def test_connect_to_a_server_that_never_answers_keeps_its_timeout(silent_port: int) -> None:
    started = time.monotonic()
    with pytest.raises(ConnectionLost) as caught:
        moot.connect(f"redis://127.0.0.1:{silent_port}", timeout=2)
    elapsed = time.monotonic() - started
    assert 2.0 - 0.05 <= elapsed < 2.0 + SLACK, caught.value
    assert abs(stated_elapsed(caught.value) - elapsed) < SLACK


def test_a_refused_connection_fails_at_once_and_says_so() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    started = time.monotonic()
    with pytest.raises(ConnectionLost) as caught:
        moot.connect(f"redis://127.0.0.1:{port}", timeout=5)
    assert time.monotonic() - started < 1.0
    assert "refused" in str(caught.value)


def test_calls_keep_the_callers_deadline_when_the_server_freezes(own: servers.Cluster, make: Any) -> None:
    backend = make(own.url)  # socket_timeout: the default 5 s
    backend.open_session(30)
    backend.get("ns/lock/x/meta")
    with frozen(own):
        for call in (lambda: backend.enqueue("ns/lock/x/q/", b""), backend.refresh_session,
                     lambda: backend.watch("ns/group/g/members/", lambda: None)):
            started = time.monotonic()
            with pytest.raises(ConnectionLost) as caught, bounded(started + 1.0):
                call()
            elapsed = time.monotonic() - started
            assert elapsed < 1.0 + SLACK, caught.value
            assert abs(stated_elapsed(caught.value) - elapsed) < SLACK


def test_socket_timeout_bounds_a_call_without_a_deadline(own: servers.Cluster, make: Any) -> None:
    backend = make(own.url, socket_timeout=1)
    backend.open_session(30)
    with frozen(own):
        started = time.monotonic()
        with pytest.raises(ConnectionLost):
            backend.get("ns/lock/x/meta")
        assert time.monotonic() - started < 1.0 + SLACK


def test_waiting_for_a_pooled_connection_keeps_the_deadline(own: servers.Cluster, make: Any) -> None:
    backend = make(own.url, max_connections=1)
    backend.get("ns/lock/x/meta")
    with frozen(own):
        busy = threading.Event()

        def hold_the_only_connection() -> None:
            busy.set()
            with contextlib.suppress(ConnectionLost), bounded(time.monotonic() + 4.0):
                backend.get("ns/lock/x/meta")

        holder = threading.Thread(target=hold_the_only_connection)
        holder.start()
        wait_event(busy, what="the first call to start")
        wait_until(lambda: backend._pool is not None and not backend._pool._idle, what="the connection in use")
        started = time.monotonic()
        with pytest.raises(ConnectionLost) as caught, bounded(started + 0.5):
            backend.get("ns/lock/y/meta")
        assert time.monotonic() - started < 0.5 + SLACK
        assert "busy" in str(caught.value)
    holder.join(10)


# -- fork ------------------------------------------------------------------------------
def test_a_forked_child_leaves_the_parents_session_alone(own: servers.Cluster, make: Any) -> None:
    owner, other = make(own.url), make(own.url)
    owner.open_session(2.0)
    entry, _ = owner.enqueue("ns/lock/x/q/", b"")
    fired = threading.Event()
    owner.watch("ns/group/g/members/", fired.set)
    raw = redis.Redis(port=own.members[0].port)
    before = {c["id"] for c in raw.client_list()}

    def child() -> None:
        owner.close()  # raises nothing, and ends nothing of the parent's
        owner.forget_after_fork()
        owner.close()
        with pytest.raises(CoordinatorClosed, match="fork"):
            owner.get(entry.key)  # forgotten at the fork: nothing of the parent's is used

    assert in_forked_child(child) == "ok"
    after = {c["id"] for c in raw.client_list()}
    assert before <= after  # not one of the parent's connections was closed by the child
    owner.refresh_session()
    assert other.get(entry.key) == entry
    assert other.create("ns/group/g/members/m", b"") is not None
    wait_event(fired, what="the parent's watch, over its own pub/sub connection")


def test_a_forked_child_closing_its_coordinator_keeps_the_parents_lock(own: servers.Cluster) -> None:
    with moot.connect(own.url, ttl=2, namespace="ns") as parent:
        lock = parent.lock("volume-9")
        assert lock.acquire(timeout=5)

        def child() -> None:
            parent.close()

        assert in_forked_child(child) == "ok"
        with moot.connect(own.url, ttl=2, namespace="ns") as third:
            assert not third.lock("volume-9").acquire(blocking=False)
            assert lock.is_held
            parent.backend.refresh_session()  # the parent's session is alive and still its own
            assert third.lock_info("volume-9").holder == parent.member_id
        lock.release()


# -- eventlet ---------------------------------------------------------------------------
def test_works_under_eventlet_monkey_patching(own: servers.Cluster) -> None:
    script = textwrap.dedent(f"""
        import faulthandler
        faulthandler.dump_traceback_later(40, exit=True)
        import eventlet
        eventlet.monkey_patch()
        import select
        assert not hasattr(select, "poll")
        import time
        import moot
        url = {own.url!r}
        with moot.connect(url, ttl=5, namespace="green", member_id="a") as a, \\
                moot.connect(url, ttl=5, namespace="green", member_id="b") as b:
            lock = a.lock("v")
            assert lock.acquire(timeout=5)
            assert b.lock_info("v").holder == "a"
            assert not b.lock("v").acquire(blocking=False)
            lock.release()
            a.group("g").join(capabilities={{"x": 1}})
            assert "a" in b.group("g").members()
            fired = []  # the callback runs on a real OS thread: polled from this green one
            a.backend.watch("green/group/g/members/", lambda: fired.append(1))
            b.backend.create("green/group/g/members/c", b"")
            deadline = time.monotonic() + 10
            while not fired and time.monotonic() < deadline:
                eventlet.sleep(0.005)
            assert fired, "no watch notification"
            entry = a.backend.create_sequential("green/lock/w/q/", b"")
            b.backend.expire_session(a.session_id)
            assert b.backend.get(entry.key) is None
        print("green ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0 and "green ok" in done.stdout, done.stderr[-3000:]


# -- session TTLs -------------------------------------------------------------------------
def test_every_session_key_expires_whatever_the_ttl(own: servers.Cluster, make: Any) -> None:
    backend = make(own.url)
    raw = redis.Redis(port=own.members[0].port)
    for ttl in (1e17, 1e12, 3600.0):
        with contextlib.suppress(moot.MootError):
            backend.open_session(ttl)
        keys = list(raw.scan_iter(match="moot:s:*"))
        assert keys and all(raw.pttl(key) >= 0 for key in keys), ttl
        assert backend.granted_ttl is not None and backend.granted_ttl <= min(ttl, 2**31 / 1000)
        assert all(raw.pttl(key) <= backend.granted_ttl * 1000 for key in keys)
        backend.close_session()
    backend.open_session(0.0001)  # below a millisecond: PEXPIRE's 1 ms, and granted_ttl says so
    assert backend.granted_ttl == 0.001
    backend.close_session()
    for bad in (math.nan, math.inf, -1.0, 0.0):
        with pytest.raises(InvalidArgument):
            backend.open_session(bad)
    assert list(raw.scan_iter(match="moot:s:*")) == []


def test_a_refresh_counts_from_when_the_call_started(own: servers.Cluster, make: Any) -> None:
    backend = make(own.url)
    raw = redis.Redis(port=own.members[0].port)
    session = backend.open_session(3.0)
    assert backend.granted_ttl == 3.0
    started = time.monotonic()
    backend.refresh_session()
    left = raw.pttl(f"moot:s:{session}") / 1000
    # the server's expiry is at least the call's start plus the granted TTL
    assert time.monotonic() + left >= started + backend.granted_ttl - 0.002
