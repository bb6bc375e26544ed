"""Writers of one directory in one process take turns (moot/backends/memcached/turns.py,
``line_up``): they never race one another for its CAS value, so a herd of
joiners in a few processes loses CAS races only to the other processes, and
a writer whose deadline passes in line gives up saying so; the writer whose
turn comes carries the changes queued behind it (``lead``). Each test runs
a memcached of its own, so the server's CAS counters count only its writes."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from moot import deadline
from moot.backends.memcached import MemcachedBackend, turns
from moot.backends.memcached.dirs import Directory
from moot.backends.memcached.store import Plan
from moot.errors import ConnectionLost
from moot.url import parse_url
from tests import servers
from tests.conftest import MakeBackend
from tests.forking import in_forked_child
from tests.waiting import BOUND, wait_until

WRITERS = 16
KEYS_EACH = 8


@pytest.fixture
def own() -> Iterator[servers.Cluster]:
    with servers.own_cluster("memcached") as cluster:
        yield cluster


def _stats(member: servers.Member) -> dict[str, int]:
    with socket.create_connection(("127.0.0.1", member.port), timeout=BOUND) as sock:
        sock.sendall(b"stats\r\n")
        raw = b""
        while not raw.endswith(b"END\r\n"):
            raw += sock.recv(65536)
    return {line.split()[1].decode(): int(line.split()[2]) for line in raw.split(b"\r\n")
            if line.startswith(b"STAT ") and line.split()[2].isdigit()}


def _backend(open_backend: MakeBackend, url: str, **options: object) -> MemcachedBackend:
    made = open_backend(url, ttl=30.0, timeout=BOUND, **options)
    assert isinstance(made, MemcachedBackend)
    return made


def test_writers_of_one_directory_in_one_process_never_race(own: servers.Cluster,
                                                             open_backend: MakeBackend) -> None:
    """16 threads, each with a backend of its own (as 16 coordinators),
    create keys in one directory at once: every write is committed at its
    first CAS try (memcached counts no CAS mismatch; changes queued at once
    share writes), and all are listed."""
    backends = [_backend(open_backend, own.url) for _ in range(WRITERS)]
    before = _stats(own.members[0])
    start = threading.Barrier(WRITERS)
    failed: list[BaseException] = []

    def write(index: int) -> None:
        try:
            start.wait(BOUND)
            for n in range(KEYS_EACH):
                assert backends[index].create(f"herd/w{index}-{n}", b"x" * 40, ephemeral=True) is not None
        except BaseException as exc:
            failed.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BOUND)
    assert not failed, failed
    after = _stats(own.members[0])
    assert after["cas_badval"] - before["cas_badval"] == 0
    assert 0 < after["cas_hits"] - before["cas_hits"] <= WRITERS * KEYS_EACH - 1  # the first write is an add
    assert len(backends[0].list("herd/")) == WRITERS * KEYS_EACH


def test_a_writer_whose_deadline_passes_in_line_gives_up_saying_so(own: servers.Cluster,
                                                                     open_backend: MakeBackend) -> None:
    """A writer holds the directory's turn on a frozen server; another
    writer of the same directory in this process, with 0.2 s left, gives up
    at its deadline without sending anything, and says why."""
    first, second = _backend(open_backend, own.url), _backend(open_backend, own.url)
    member = own.members[0]
    member.freeze()
    outcome: list[object] = []
    holder = threading.Thread(target=lambda: outcome.append(first.create("line/a", b"a")))
    holder.start()
    key = (f"127.0.0.1:{member.port}", "line/")
    wait_until(lambda: key in turns._gates and turns._gates[key].busy, what="the holder has the turn")
    began = time.monotonic()
    with deadline.bounded(began + 0.2), pytest.raises(ConnectionLost) as lost:
        second.create("line/b", b"b")
    message = str(lost.value)
    assert "was not written in time" in message and "other writers of directory 'line/'" in message, message
    assert "when the caller's deadline passed" in message, message
    member.send(signal.SIGCONT)
    holder.join(BOUND)
    assert len(outcome) == 1 and outcome[0] is not None  # the holder's write went through once the server ran
    assert [e.key for e in second.list("line/")] == ["line/a"]


def test_a_forked_child_does_not_wait_for_the_parents_writers(own: servers.Cluster,
                                                               open_backend: MakeBackend) -> None:
    """A child forked while a parent thread holds a directory's turn writes
    that directory at once: the parent's writers, and their turn, stayed
    in the parent."""
    first = _backend(open_backend, own.url)
    entered, go_on = threading.Event(), threading.Event()

    def slow_plan(state: Directory) -> Plan:
        entered.set()
        go_on.wait(BOUND)
        return Plan(None)

    holder = threading.Thread(target=lambda: first._store.transact("fork/", slow_plan, time.monotonic() + BOUND))
    holder.start()
    try:
        assert entered.wait(BOUND)  # the holder has the turn, and keeps it until go_on

        def child() -> None:
            backend = MemcachedBackend(parse_url(own.url), {})
            backend.connect(BOUND)
            backend.open_session(30.0)
            try:
                with deadline.bounded(time.monotonic() + BOUND / 2):
                    assert backend.create("fork/b", b"b", ephemeral=True) is not None
            finally:
                backend.close()

        assert in_forked_child(child) == "ok"
    finally:
        go_on.set()
        holder.join(BOUND)


def _hold_the_turn(backend: MemcachedBackend, directory: str) -> tuple[threading.Thread, threading.Event]:
    """A thread that holds ``directory``'s turn (a plan that waits) until the event returned is set."""
    entered, go_on = threading.Event(), threading.Event()

    def slow_plan(state: Directory) -> Plan:
        entered.set()
        go_on.wait(BOUND)
        return Plan(None)

    holder = threading.Thread(target=lambda: backend._store.transact(directory, slow_plan,
                                                                      time.monotonic() + BOUND))
    holder.start()
    assert entered.wait(BOUND)
    return holder, go_on


def _queued(own: servers.Cluster, directory: str) -> int:
    gate = turns._gates.get((f"127.0.0.1:{own.members[0].port}", directory))
    return 0 if gate is None else len(gate.waiting)


def test_writers_queued_behind_one_are_written_with_one_compare_and_set(own: servers.Cluster,
                                                                        open_backend: MakeBackend) -> None:
    """Changes queued behind the writer whose turn it is are carried by one
    write, and each gets the outcome it would get written alone in that
    order: creates of new keys succeed with growing versions, a create of a
    key that exists and a compare-and-set of a wrong version change nothing,
    a value spilled by one change and deleted by a later one is never stored."""
    backend = _backend(open_backend, own.url)
    existing = backend.create("batch/there", b"0")
    assert existing is not None
    holder, go_on = _hold_the_turn(backend, "batch/")
    calls = [lambda n=n: backend.create(f"batch/k{n}", b"v", ephemeral=True) for n in range(8)]
    calls += [lambda: backend.create("batch/there", b"again"),
              lambda: backend.compare_and_set("batch/there", b"x", existing.version + 1),
              lambda: backend.create("batch/big", b"s" * 5000),
              lambda: backend.delete("batch/big")]
    results: list[object] = [None] * len(calls)
    before = _stats(own.members[0])
    threads = []
    for index, call in enumerate(calls):  # queued in this order
        threads.append(threading.Thread(target=lambda i=index, c=call: results.__setitem__(i, c())))
        threads[-1].start()
        wait_until(lambda i=index: _queued(own, "batch/") == i + 1, what=f"change {index} is queued")
    go_on.set()
    for thread in [holder, *threads]:
        thread.join(BOUND)
    after = _stats(own.members[0])
    assert after["cas_hits"] - before["cas_hits"] == 1 and after["cas_badval"] == before["cas_badval"]
    assert after["curr_items"] == before["curr_items"]  # the spilled value was never stored
    versions = [r.version for r in results[:8]]  # type: ignore[union-attr]
    assert versions == sorted(versions) and len(set(versions)) == 8
    assert results[8:] == [None, None, results[10], True] and results[10] is not None
    assert [e.key for e in backend.list("batch/")] == [f"batch/k{n}" for n in range(8)] + ["batch/there"]


def test_writers_carried_by_a_write_that_fails_all_learn_it(own: servers.Cluster,
                                                            open_backend: MakeBackend) -> None:
    """The server freezes under a write that carries queued changes: every
    one of their callers gets ConnectionLost by its own deadline (not a
    hang, not a silent success), and the write, one compare-and-set, is
    applied whole or not at all once the server runs again."""
    backend = _backend(open_backend, own.url)
    holder, go_on = _hold_the_turn(backend, "carried/")
    outcomes: list[BaseException | object] = []
    lock = threading.Lock()

    def create(n: int) -> None:
        try:
            with deadline.bounded(time.monotonic() + 1.0):
                got: object = backend.create(f"carried/k{n}", b"v")
        except BaseException as exc:
            got = exc
        with lock:
            outcomes.append(got)

    threads = [threading.Thread(target=create, args=(n,)) for n in range(4)]
    for n, thread in enumerate(threads):
        thread.start()
        wait_until(lambda n=n: _queued(own, "carried/") == n + 1, what=f"writer {n} is queued")
    own.members[0].freeze()
    began = time.monotonic()
    go_on.set()
    for thread in [holder, *threads]:
        thread.join(BOUND)
    waited = time.monotonic() - began
    own.members[0].send(signal.SIGCONT)
    assert len(outcomes) == 4 and all(isinstance(o, ConnectionLost) for o in outcomes), outcomes
    assert waited < 1.0 + 0.5, waited  # each by its deadline (1 s), plus the backend's slack
    assert len(backend.list("carried/")) in (0, 4)  # one write: all of the changes or none


def test_a_backend_whose_change_another_write_carried_is_told_of_it(own: servers.Cluster,
                                                                     open_backend: MakeBackend) -> None:
    """Backend ``late``'s create is carried by ``early``'s write: ``late``
    learns of that write as of one of its own (its view of the directory is
    the item written, which its watches are told of), not at its next poll."""
    early = _backend(open_backend, own.url)
    late = _backend(open_backend, own.url, poll_interval=5.0)
    fired = threading.Event()
    late.watch("told/", fired.set)  # reads the directory: late's view is the item before the write
    holder, go_on = _hold_the_turn(early, "told/")
    outcomes: list[object] = []
    threads = [threading.Thread(target=lambda b=b, n=n: outcomes.append(b.create(f"told/{n}", b"v")))
               for n, b in (("a", early), ("b", late))]
    for index, thread in enumerate(threads):
        thread.start()
        wait_until(lambda i=index: _queued(own, "told/") == i + 1, what=f"writer {index} is queued")
    go_on.set()
    for thread in [holder, *threads]:
        thread.join(BOUND)
    assert len(outcomes) == 2 and None not in outcomes
    seen = late._store.cached("told/")
    assert seen is not None and sorted(seen.entries) == ["a", "b"]
    assert fired.wait(BOUND)
