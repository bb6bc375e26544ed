"""Regression tests for the two-holder windows and liveness faults found by
fault injection (issue 9), on every backend: a hold bound the moment it is
served, a holder that stops trusting its session before the engine can
expire it, groups restored after an outage, calls that keep their deadline
while the session is being re-established, coordinators dropped without
close(), and coordinators inherited through fork()."""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import threading
import time
import warnings
import weakref
from collections.abc import Iterator

import pytest

import moot
from moot.errors import ConnectionLost, CoordinatorClosed
from moot.recipes import queue
from moot.session import SAFETY_MARGIN
from tests.conftest import TEST_TTL, Connect
from tests.waiting import BOUND, wait_event, wait_until


def _lost_sessions(coord: moot.Coordinator) -> int:
    return int(coord.stats()["counters"].get("sessions_lost", {}).get("coordinator", 0))


@pytest.fixture
def evict_at_bind() -> Iterator[list[moot.Coordinator]]:
    """While set, the first hold about to be bound first sees its session
    evicted and declared lost (what a thread descheduled there for a TTL
    would live through)."""
    targets: list[moot.Coordinator] = []

    def hook() -> None:
        if not targets:
            return
        coord = targets.pop()
        before = _lost_sessions(coord)
        assert coord.session_id is not None
        coord.backend.expire_session(coord.session_id)
        wait_until(lambda: _lost_sessions(coord) > before, what="the session declared lost")

    queue._before_bind = hook
    try:
        yield targets
    finally:
        queue._before_bind = None


def test_a_hold_served_as_its_session_is_lost_is_never_believed_held(
        connect: Connect, evict_at_bind: list[moot.Coordinator]) -> None:
    coord = connect("holder")
    observer = connect("observer")
    lock = coord.lock("volume")
    evict_at_bind.append(coord)
    assert lock.acquire(timeout=BOUND)
    # Served again on the new session: what the holder believes is what the engine says.
    assert lock.is_held
    info = observer.lock_info("volume")
    assert info is not None and info.holder == "holder" and info.token == lock.token
    assert not observer.lock("volume").acquire(blocking=False)


def test_an_election_won_as_its_session_is_lost_is_never_believed_won(
        connect: Connect, evict_at_bind: list[moot.Coordinator]) -> None:
    coord = connect("candidate")
    observer = connect("observer")
    election = coord.election("scheduler")
    evict_at_bind.append(coord)
    assert election.campaign(timeout=BOUND)
    assert election.is_leader
    assert observer.election("scheduler").leader() == "candidate"
    assert observer.election("scheduler").candidates() == ["candidate"]


def _cut_renewals(coord: moot.Coordinator, monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Make every renewal fail as if the engine were unreachable, until the
    returned event is set (the engine itself keeps running)."""
    healed = threading.Event()
    refresh = coord.backend.refresh_session

    def failing_refresh() -> None:
        if not healed.is_set():
            raise ConnectionLost("renewal cut by the test")
        refresh()

    monkeypatch.setattr(coord.backend, "refresh_session", failing_refresh)
    return healed


#: Engines whose session lives only as long as moot's own renewals reach them
#: (ZooKeeper's client pings by itself and a file:// session is a flock, so
#: there a cut-off holder is exercised by the fault suite's network partition).
RENEWAL_EXPIRY_KINDS = ["memory", "redis", "etcd"]


@pytest.mark.parametrize("kind", RENEWAL_EXPIRY_KINDS)
def test_a_cut_off_holder_gives_up_before_the_engine_frees_the_lock(
        kind: str, server: object, namespace: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    url = "memory://cut-off" if kind == "memory" else server(kind)  # type: ignore[operator]
    with moot.connect(url, member_id="holder", namespace=namespace, ttl=TEST_TTL) as holder, \
            moot.connect(url, member_id="waiter", namespace=namespace, ttl=TEST_TTL) as waiter:
        lock = holder.lock("volume")
        assert lock.acquire(timeout=BOUND)
        told = threading.Event()
        told_at: list[float] = []

        def watch_is_held() -> None:
            while lock.is_held:
                time.sleep(0.001)
            told_at.append(time.monotonic())
            told.set()

        threading.Thread(target=watch_is_held, daemon=True).start()
        _cut_renewals(holder, monkeypatch)
        monkeypatch.setattr(holder.backend, "expire_session", _raise_connection_lost)  # fully cut off
        monkeypatch.setattr(holder.backend, "close_session", _raise_connection_lost)
        assert waiter.lock("volume").acquire(timeout=BOUND)
        acquired_at = time.monotonic()
        wait_event(told, what="is_held turning False")
        # Told before the engine let anyone else in, by a margin that does not
        # rest on the scheduler: at least half the stated safety margin (ttl/5).
        assert acquired_at - told_at[0] > TEST_TTL * SAFETY_MARGIN / 2


def test_is_held_reads_the_clock_even_if_no_thread_reports_the_loss(
        connect: Connect, monkeypatch: pytest.MonkeyPatch) -> None:
    coord = connect("holder")
    lock = coord.lock("volume")
    assert lock.acquire(timeout=BOUND)
    monkeypatch.setattr(coord.session, "_watchdog_step", lambda: 3600.0)  # the watchdog is never scheduled
    _cut_renewals(coord, monkeypatch)
    started = time.monotonic()
    wait_until(lambda: not lock.is_held, what="is_held turning False")
    assert time.monotonic() - started <= TEST_TTL * (1 - SAFETY_MARGIN) + 0.2


@pytest.mark.multiprocess
def test_memberships_come_back_after_the_session_is_given_up(
        connect: Connect, monkeypatch: pytest.MonkeyPatch) -> None:
    member = connect("member")
    observer = connect("observer")
    group = member.group("conductors")
    group.join(capabilities={"drivers": ["ipmi"]})
    before = _lost_sessions(member)
    healed = _cut_renewals(member, monkeypatch)
    wait_until(lambda: _lost_sessions(member) > before, what="the session given up")
    healed.set()  # the engine may still keep the old session (and its record) for a while
    wait_until(lambda: "member" in observer.group("conductors").members()
               and observer.group("conductors").member("member").capabilities == {"drivers": ["ipmi"]}
               and member.session_id is not None
               and observer.backend.get(group._my_key) is not None
               and observer.backend.get(group._my_key).owner == member.session_id,  # type: ignore[union-attr]
               what="the member back on its new session")
    # The old session's expiry cannot take the member away again.
    deadline = time.monotonic() + TEST_TTL * 1.5
    while time.monotonic() < deadline:
        assert observer.group("conductors").is_up("member")
        time.sleep(0.05)
    assert group.joined


@pytest.mark.multiprocess
def test_the_given_up_session_is_revoked_so_its_locks_free_at_once(
        connect: Connect, monkeypatch: pytest.MonkeyPatch) -> None:
    holder = connect("holder", ttl=6.0)
    waiter = connect("waiter")
    lock = holder.lock("volume")
    assert lock.acquire(timeout=BOUND)
    before = _lost_sessions(holder)
    healed = _cut_renewals(holder, monkeypatch)
    wait_until(lambda: _lost_sessions(holder) > before, what="the session given up")
    healed.set()
    started = time.monotonic()
    assert waiter.lock("volume").acquire(timeout=BOUND)
    # Freed by the revocation, not by the engine's expiry a TTL later.
    assert time.monotonic() - started < 3.0


def test_non_blocking_acquire_without_a_session_returns_at_once(
        connect: Connect, monkeypatch: pytest.MonkeyPatch) -> None:
    coord = connect("holder")
    before = _lost_sessions(coord)
    _cut_renewals(coord, monkeypatch)
    monkeypatch.setattr(coord.backend, "expire_session", _raise_connection_lost)  # no reconnection either
    wait_until(lambda: _lost_sessions(coord) > before, what="the session given up")
    started = time.monotonic()
    with pytest.raises(ConnectionLost, match="no live session"):
        coord.lock("volume").acquire(blocking=False)
    assert time.monotonic() - started < 0.5
    started = time.monotonic()
    assert not coord.lock("volume").acquire(timeout=0.5)
    assert time.monotonic() - started < 1.0


def _raise_connection_lost(*_args: object) -> bool:
    raise ConnectionLost("engine unreachable (test)")


@pytest.mark.multiprocess  # memory:// lives and dies with its process
def test_a_coordinator_dropped_without_close_warns_and_frees_its_locks(url: str, namespace: str) -> None:
    observer = moot.connect(url, member_id="observer", namespace=namespace, ttl=TEST_TTL)
    try:
        coord = moot.connect(url, member_id="dropped", namespace=namespace, ttl=60)
        lock = coord.lock("volume")
        assert lock.acquire(timeout=BOUND)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            del coord, lock

            def warned() -> bool:
                # Collected by the pass after its heartbeat thread, if mid-renewal, lets go of it.
                gc.collect()
                return any(issubclass(w.category, ResourceWarning) and "never closed" in str(w.message)
                           for w in caught)

            wait_until(warned, timeout=2, what="the never-closed warning")
        # Freed at once (its session ended), not after the 60 s TTL.
        assert observer.lock("volume").acquire(timeout=5)
    finally:
        observer.close()


def test_a_coordinator_dropped_holding_nothing_ends_its_session_without_a_garbage_collection(
        url: str, namespace: str) -> None:
    """Nothing refers back to a session that holds nothing: dropping the
    last reference ends it (the README), with the cyclic collector off."""
    coord = moot.connect(url, member_id="dropped", namespace=namespace, ttl=60)
    lock = coord.lock("volume")
    assert lock.acquire(timeout=BOUND)
    lock.release()
    ended = threading.Event()
    weakref.finalize(coord.session, ended.set)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            del coord, lock
            # At once, or when a renewal in flight on the heartbeat thread lets go of it.
            assert ended.wait(BOUND), "the dropped coordinator's session outlived its last reference"
    finally:
        if was_enabled:
            gc.enable()


def test_a_coordinator_collected_in_a_thread_holding_a_backend_lock_does_not_deadlock() -> None:
    """Garbage collection runs a dropped coordinator's finalizer in whatever
    thread allocates, possibly one inside a backend's critical section: the
    finalizer must not take that backend's locks in that thread."""
    # Again if its heartbeat thread, mid-renewal, held it and so freed it last.
    assert any(_finalized_under_the_store_lock() for _attempt in range(3)), \
        "never finalized in the thread holding the lock: nothing was tested"


def _finalized_under_the_store_lock() -> bool:
    """Drop a memory:// coordinator in a thread holding its store's lock;
    True if its finalizer ran in that thread (it must not deadlock there)."""
    dropped = [moot.connect("memory://collected-under-lock", member_id="dropped", ttl=TEST_TTL)]
    store_lock = dropped[0].backend._store.lock  # type: ignore[attr-defined]
    finalized_in: list[int] = []
    weakref.finalize(dropped[0].session, lambda: finalized_in.append(threading.get_ident()))
    collector: list[int] = []
    collected = threading.Event()

    def collect_under_the_store_lock() -> None:
        collector.append(threading.get_ident())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            with store_lock:
                dropped.pop()
                gc.collect()
        collected.set()

    threading.Thread(target=collect_under_the_store_lock, daemon=True).start()
    assert collected.wait(BOUND), "the collecting thread deadlocked"
    wait_until(lambda: bool(finalized_in), what="the dropped coordinator's finalizer")
    return finalized_in == collector


@pytest.mark.multiprocess
def test_a_forked_child_never_touches_the_parents_session(connect: Connect) -> None:
    parent = connect("parent")
    observer = connect("observer")
    lock = parent.lock("volume")
    assert lock.acquire(timeout=BOUND)
    token = lock.token
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what it sees, close the inherited coordinator, exit
        code = 0
        try:
            os.close(read)
            try:
                parent.lock("other").acquire(timeout=1)
                code = 1
            except CoordinatorClosed as exc:
                code = 0 if "fork" in str(exc) else 2
            if lock.is_held:
                code = 3
            parent.close()
        except BaseException:
            code = 4
        finally:
            os.write(write, bytes([code]))
            os._exit(code)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read, "rb") as answer:
        assert answer.read() == b"\x00", "the child saw the inherited coordinator as usable"
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    # The parent still holds its lock through its own, untouched session.
    assert lock.is_held and not parent.closed
    info = observer.lock_info("volume")
    assert info is not None and info.holder == "parent" and info.token == token
    assert not observer.lock("volume").acquire(blocking=False)
    assert parent.lock("other").acquire(timeout=BOUND)


@pytest.mark.multiprocess
def test_a_killed_child_leaves_nothing_held(connect: Connect) -> None:
    parent = connect("parent")
    observer = connect("observer")
    pid = os.fork()
    if pid == 0:
        try:
            child = moot.connect(parent.backend.url.raw, member_id="child", namespace=parent.namespace,
                                 ttl=TEST_TTL)
            child.lock("volume").acquire(timeout=BOUND)
            os.kill(os.getpid(), signal.SIGSTOP)
        finally:
            os._exit(0)
    try:
        wait_until(lambda: getattr(observer.lock_info("volume"), "holder", None) == "child",
                   what="the child holding the lock")
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        assert observer.lock("volume").acquire(timeout=TEST_TTL * 3)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
