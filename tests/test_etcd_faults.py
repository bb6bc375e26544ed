"""The etcd backend under faults: deadlines against a server that never
answers or refuses, a raft leader killed under in-flight requests, the lease
TTL etcd actually grants, fork() and eventlet's monkey-patching.

Servers: the run's shared etcd (``server("etcd")``) where nothing is done to
it; tests that stop, pause or kill a server start their own.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from moot import deadline
from moot.backends.etcd import EtcdBackend
from moot.errors import ConnectionLost, CoordinatorClosed
from moot.url import parse_url
from tests import servers
from tests.conftest import MakeBackend
from tests.waiting import BOUND, wait_event, wait_until

#: What a bounded call may take beyond its bound (thread switches, a loaded CI machine).
SLACK = 0.6


@pytest.fixture(scope="module")
def etcd_url(server: Callable[[str], str]) -> str:
    return server("etcd")


@pytest.fixture
def make(open_backend: MakeBackend) -> Callable[..., EtcdBackend]:
    """``make(url, timeout=5.0)``: a connected backend, closed after the test."""
    return lambda url, timeout=5.0, **options: open_backend(url, timeout=timeout, **options)


@pytest.fixture
def prefix() -> str:
    return f"f-{uuid.uuid4().hex[:12]}/"


def timed(fn: Callable[[], object]) -> tuple[float, BaseException | None]:
    """(seconds ``fn()`` took, what it raised or None)."""
    start = time.monotonic()
    try:
        fn()
    except Exception as exc:
        return time.monotonic() - start, exc
    return time.monotonic() - start, None


# -- deadlines -------------------------------------------------------------


def test_connect_to_a_server_that_never_answers_gives_up_on_time() -> None:
    """Before: a 2 s connect took 4 s (the idempotent version read was sent twice, 2 s each)."""
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(64)  # the kernel accepts; nobody ever reads or answers
        port = mute.getsockname()[1]
        backend = EtcdBackend(parse_url(f"etcd://127.0.0.1:{port}"), {})
        took, error = timed(lambda: backend.connect(2.0))
    assert isinstance(error, ConnectionLost), error
    assert 1.9 <= took <= 2.0 + SLACK, f"took {took:.2f} s"
    assert "within 2." in str(error), str(error)  # the real elapsed time


def test_connect_to_a_refused_port_fails_at_once_and_says_refused() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, not listening: refused
        backend = EtcdBackend(parse_url(f"etcd://127.0.0.1:{port},127.0.0.1:{port}"), {})
        took, error = timed(lambda: backend.connect(5.0))
    assert isinstance(error, ConnectionLost), error
    assert took < 0.5, f"took {took:.2f} s"
    assert "refused" in str(error)


def test_every_primitive_keeps_the_callers_deadline_while_etcd_is_frozen(
    make: Callable[..., EtcdBackend], prefix: str
) -> None:
    """A SIGSTOPped etcd accepts connections and answers nothing. Before: a
    read under a 1 s deadline took 10 s (two 5 s attempts), a watch 5 s."""
    cluster = servers.start_cluster("etcd", size=1)
    member = cluster.members[0]
    try:
        backend = make(cluster.url, timeout=5.0)
        backend.open_session(30.0)  # outlives the freeze
        entry = backend.create(f"{prefix}k", b"v", ephemeral=True)
        assert entry is not None
        assert member.pid is not None
        member.freeze()
        try:
            calls: dict[str, Callable[[], object]] = {
                "get": lambda: backend.get(f"{prefix}k"),
                "list": lambda: backend.list(prefix),
                "refresh": backend.refresh_session,
                "delete": lambda: backend.delete(entry.key),
                "create": lambda: backend.create(f"{prefix}n", b""),
                "enqueue": lambda: backend.enqueue(f"{prefix}q/", b""),
                "watch": lambda: backend.watch(f"{prefix}k", lambda: None),
                "watch entry": lambda: backend.watch(f"{prefix}q/{uuid.uuid4().hex}", lambda: None),
            }
            for name, call in calls.items():
                bound = 1.0

                def bounded(call: Callable[[], object] = call, bound: float = bound) -> object:
                    with deadline.bounded(time.monotonic() + bound):
                        return call()

                took, error = timed(bounded)
                assert isinstance(error, ConnectionLost), f"{name}: {error!r}"
                assert took <= bound + SLACK, f"{name} took {took:.2f} s under a {bound} s deadline"
                stated = re.search(r"(\d+\.\d) s", str(error))  # the real elapsed time
                assert stated and abs(float(stated[1]) - took) < 0.2, f"{name}: {error}"
            # no caller deadline: the backend's own bound (the connect timeout)
            took, error = timed(lambda: backend.get(f"{prefix}k"))
            assert isinstance(error, ConnectionLost) and 4.9 <= took <= 5.0 + SLACK, (took, error)
        finally:
            os.kill(member.pid, signal.SIGCONT)
        backend.refresh_session()  # the same backend works again
        assert backend.create(f"{prefix}after", b"") is not None
    finally:
        cluster.stop()


def test_a_delete_in_flight_when_the_leader_dies_ends_well_before_etcds_request_timeout(
    make: Callable[..., EtcdBackend], prefix: str
) -> None:
    """Clients talk to followers, which forward their writes to the leader;
    the leader is killed under them. Before: a forwarded delete was held by
    etcd for its request timeout (about 6 s) although a new leader was
    elected in under a second."""
    cluster = servers.start_cluster("etcd", size=3)
    try:
        leader = cluster.leader(timeout=BOUND)
        first, second = [m for m in cluster.members if m is not leader]
        urls = [cluster.kind.url([first, second, leader]), cluster.kind.url([second, first, leader])]
        backends = [make(urls[i % 2], timeout=10.0) for i in range(6)]
        stop = threading.Event()
        ops: list[tuple[float, float, str]] = []  # (start, end, outcome)
        lock = threading.Lock()

        def loop(index: int, backend: EtcdBackend) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                start = time.monotonic()
                try:
                    backend.delete(f"{prefix}{index}-{n}")
                    outcome = "ok"
                except ConnectionLost as exc:
                    outcome = str(exc)
                with lock:
                    ops.append((start, time.monotonic(), outcome))

        threads = [threading.Thread(target=loop, args=item, daemon=True) for item in enumerate(backends)]
        for thread in threads:
            thread.start()
        wait_until(lambda: len(ops) > 50, what="deletes to flow")
        killed_at = time.monotonic()
        cluster.kill(leader)
        wait_until(
            lambda: sum(1 for start, _, outcome in ops if start > killed_at + 1 and outcome == "ok") > 20,
            what="deletes to flow again after the new leader's election",
        )
        stop.set()
        for thread in threads:
            thread.join(BOUND)
        in_flight = [(start, end, outcome) for start, end, outcome in ops if start <= killed_at <= end]
        assert in_flight, "no delete was in flight when the leader died"
        longest = max(end - start for start, end, _ in ops)
        print(f"longest delete {longest:.2f} s; {len(in_flight)} in flight at the kill, outcomes {in_flight}")
        assert longest < 3.5, f"a delete took {longest:.2f} s: {sorted(ops, key=lambda o: o[0] - o[1])[0]}"
    finally:
        cluster.stop()


# -- the TTL etcd grants ---------------------------------------------------


def test_granted_ttl_is_what_etcd_granted_and_the_lease_lives_that_long(
    make: Callable[..., EtcdBackend], etcd_url: str, prefix: str
) -> None:
    """The test servers run with --election-timeout 500: etcd's minimum TTL is 1 s."""
    backend, watcher = make(etcd_url), make(etcd_url)
    session = backend.open_session(1.2)
    assert backend.granted_ttl == 2.0  # ceil(1.2)
    backend.close_session()
    session = backend.open_session(0.3)
    assert backend.granted_ttl == 1.0  # at least 1 s
    entry = backend.create(f"{prefix}k", b"", ephemeral=True)
    assert entry is not None
    started = time.monotonic()
    backend.refresh_session()
    assert backend.granted_ttl == 1.0
    gone = threading.Event()
    watcher.watch(entry.key, gone.set)
    wait_event(gone, what="the unrefreshed lease's key to go")
    # etcd kept the lease at least from the refresh's start plus the granted TTL
    assert time.monotonic() - started >= 1.0
    assert watcher.session_last_seen(session) is None


# -- fork ------------------------------------------------------------------


def test_a_forked_child_forgets_the_backend_without_touching_the_parents_lease(
    make: Callable[..., EtcdBackend], etcd_url: str, prefix: str
) -> None:
    """Before: forget_after_fork() did nothing and the child's close()
    revoked the parent's lease (two holders)."""
    parent, other = make(etcd_url), make(etcd_url)
    session = parent.open_session(5.0)
    entry = parent.create(f"{prefix}lock", b"held", ephemeral=True)
    assert entry is not None
    woken = threading.Event()
    parent.watch(f"{prefix}lock", woken.set)
    parent.watch(f"{prefix}q/{uuid.uuid4().hex}", lambda: None)  # a shared queue stream too
    assert parent.get(entry.key) is not None  # a pooled connection
    pid = os.fork()
    if pid == 0:  # the child: forget, try to use and close, exit at once
        code = 10
        try:
            parent.forget_after_fork()
            try:
                parent.get(entry.key)
                code = 11
            except CoordinatorClosed as exc:
                code = 0 if "fork" in str(exc) else 12
            parent.close()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    parent.refresh_session()
    assert other.session_last_seen(session) is not None
    assert other.get(entry.key) == entry
    assert other.compare_and_set(entry.key, b"changed", entry.version) is not None
    wait_event(woken, what="the parent's watch to still fire")


# -- eventlet --------------------------------------------------------------

EVENTLET_SCRIPT = """
import eventlet
eventlet.monkey_patch()

import sys
import uuid

from eventlet import patcher

from moot.backends.etcd import EtcdBackend
from moot.url import parse_url

prefix = "ev-" + uuid.uuid4().hex[:12] + "/"
backend = EtcdBackend(parse_url(sys.argv[1]), {})
backend.connect(5.0)
backend.open_session(5.0)
entry = backend.create(prefix + "k", b"v", ephemeral=True)
assert entry is not None
# callbacks run on a real OS thread (as moot's recipes expect), so a real Event
real_threading = patcher.original("threading")
fired = real_threading.Event()
backend.watch(prefix + "k", fired.set)
mine, queue = backend.enqueue(prefix + "q/", b"")
backend.watch(mine.key, lambda: None)

# the coordinator's heartbeat is a real OS thread, also under eventlet
errors = []

def heartbeat():
    try:
        for _ in range(5):
            backend.refresh_session()
            backend.get(prefix + "k")
    except BaseException as exc:
        errors.append(exc)

beat = real_threading.Thread(target=heartbeat)
beat.start()
greens = [eventlet.spawn(backend.list, prefix) for _ in range(5)]
assert all(len(g.wait()) == 2 for g in greens)
beat.join(20)
assert not errors, errors
assert backend.delete(prefix + "k")
assert fired.wait(10), "the watch did not fire"
backend.close()
print("eventlet ok")
"""


def test_works_under_eventlet_monkey_patching(etcd_url: str, tmp_path: Path) -> None:
    """Before: the pooled connection check used select.poll, which eventlet removes."""
    script = tmp_path / "eventlet_etcd.py"
    script.write_text(textwrap.dedent(EVENTLET_SCRIPT))
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-W", "ignore", str(script), etcd_url],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert result.returncode == 0 and "eventlet ok" in result.stdout, result.stderr[-3000:]
