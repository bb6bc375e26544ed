"""Exclusive locks: the same behaviour on every backend."""

from __future__ import annotations

import threading

import pytest

import moot
from tests.conftest import Connect
from tests.waiting import wait_event, wait_until


def test_acquire_release_and_token(connect: Connect) -> None:
    coord = connect()
    lock = coord.lock("volume-42")
    assert not lock.is_held and lock.token is None
    assert lock.acquire()
    assert lock.is_held
    assert isinstance(lock.token, int) and lock.token > 0
    assert lock.release() is True
    assert not lock.is_held and lock.token is None


def test_second_holder_is_excluded(connect: Connect) -> None:
    a, b = connect("a"), connect("b")
    held = a.lock("x")
    assert held.acquire()
    other = b.lock("x")
    assert other.acquire(blocking=False) is False
    assert other.acquire(timeout=0.2) is False
    assert b.lock_info("x") is not None and b.lock_info("x").waiters == ()  # type: ignore[union-attr]
    held.release()
    assert other.acquire(blocking=False) is True


def test_two_lock_objects_in_one_coordinator_exclude_each_other(connect: Connect) -> None:
    coord = connect()
    first, second = coord.lock("x"), coord.lock("x")
    assert first.acquire()
    assert second.acquire(blocking=False) is False
    first.release()
    assert second.acquire(blocking=False) is True


def test_tokens_strictly_increase_across_holders_and_restarts(connect: Connect) -> None:
    tokens = []
    for round_ in range(3):
        coord = connect(f"c{round_}")
        for _ in range(2):
            lock = coord.lock("fenced")
            assert lock.acquire()
            tokens.append(lock.token)
            lock.release()
        coord.close()
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)


def test_context_manager_and_lock_timeout(connect: Connect) -> None:
    a, b = connect("a"), connect("b")
    with a.lock("x", timeout=5) as held:
        first_token = held.token
        assert held.is_held and first_token is not None
        with pytest.raises(moot.LockTimeout), b.lock("x", timeout=0.1):
            pass
    assert not held.is_held
    with b.lock("x", timeout=5) as again:
        assert again.token is not None and again.token > first_token


def test_release_wakes_a_blocked_waiter(connect: Connect) -> None:
    a, b = connect("a"), connect("b")
    holder = a.lock("x")
    assert holder.acquire()
    got = threading.Event()
    waiter = b.lock("x")

    def wait() -> None:
        if waiter.acquire(timeout=30):
            got.set()

    thread = threading.Thread(target=wait)
    thread.start()
    wait_until(lambda: len(a.lock_info("x").waiters) == 1, what="waiter queued")  # type: ignore[union-attr]
    assert not got.is_set()
    holder.release()
    wait_event(got, what="waiter acquired after release")
    thread.join(5)
    assert waiter.token is not None and holder.token is None


def test_waiters_are_served_in_arrival_order(connect: Connect) -> None:
    holder_coord = connect("holder")
    holder = holder_coord.lock("fifo")
    assert holder.acquire()
    order: list[str] = []
    order_lock = threading.Lock()
    threads = []
    for i in range(4):
        coord = connect(f"w{i}")
        lock = coord.lock("fifo")

        def run(lock: moot.Lock = lock, who: str = f"w{i}") -> None:
            assert lock.acquire(timeout=30)
            with order_lock:
                order.append(who)
            lock.release()

        thread = threading.Thread(target=run)
        thread.start()
        threads.append(thread)
        wait_until(lambda n=i + 1: len(holder_coord.lock_info("fifo").waiters) == n,  # type: ignore[union-attr]
                   what=f"{i + 1} waiters queued")
    holder.release()
    for thread in threads:
        thread.join(30)
    assert order == ["w0", "w1", "w2", "w3"]


def test_timed_out_waiter_leaves_the_queue(connect: Connect) -> None:
    a, b, c = connect("a"), connect("b"), connect("c")
    held = a.lock("x")
    assert held.acquire()
    assert b.lock("x").acquire(timeout=0.1) is False
    info = a.lock_info("x")
    assert info is not None and info.waiters == ()
    late = c.lock("x")
    got = threading.Event()
    thread = threading.Thread(target=lambda: late.acquire(timeout=30) and got.set())
    thread.start()
    wait_until(lambda: len(a.lock_info("x").waiters) == 1, what="c queued")  # type: ignore[union-attr]
    held.release()
    wait_event(got, what="c served after the timed-out waiter left")
    thread.join(5)


def test_release_never_raises_when_not_held(connect: Connect) -> None:
    coord = connect()
    lock = coord.lock("x")
    assert lock.release() is False
    assert lock.acquire()
    assert lock.release() is True
    assert lock.release() is False


def test_acquire_twice_is_an_error_not_a_deadlock(connect: Connect) -> None:
    lock = connect().lock("x")
    assert lock.acquire()
    with pytest.raises(moot.LockError):
        lock.acquire(timeout=0.1)
    assert lock.is_held


def test_introspection_shows_holder_token_since_and_waiters(connect: Connect) -> None:
    a, b, observer = connect("holder-a"), connect("waiter-b"), connect("observer")
    lock = a.lock("inspect me")
    assert lock.acquire()
    assert observer.lock_info("nothing here") is None
    waiter = b.lock("inspect me")
    thread = threading.Thread(target=lambda: waiter.acquire(timeout=30))
    thread.start()
    wait_until(lambda: len(observer.lock_info("inspect me").waiters) == 1,  # type: ignore[union-attr]
               what="waiter visible")
    info = observer.lock_info("inspect me")
    assert info is not None
    assert info.name == "inspect me"
    assert info.holder == "holder-a" and info.token == lock.token
    assert info.since is not None and info.since > 0
    assert [w.member for w in info.waiters] == ["waiter-b"]
    assert info.waiters[0].since >= info.since
    listed = {i.name: i for i in observer.locks()}
    assert listed["inspect me"].holder == "holder-a"
    lock.release()
    thread.join(30)
    info = observer.lock_info("inspect me")
    assert info is not None and info.holder == "waiter-b" and info.waiters == ()
    waiter.release()
    assert observer.lock_info("inspect me") is None
    assert "inspect me" not in {i.name for i in observer.locks()}


@pytest.mark.parametrize("name", ["../../etc/passwd", "a/b/c", "ünïcødé ✓", "%2F..%2F", ".", "x" * 256,
                                  "é" * 128, " spaced ", "null\x00byte"])
def test_any_name_is_stored_safely(connect: Connect, name: str) -> None:
    coord = connect()
    lock = coord.lock(name)
    assert lock.acquire(timeout=10)
    assert [i.name for i in coord.locks()] == [name]
    info = coord.lock_info(name)
    assert info is not None and info.name == name
    lock.release()


@pytest.mark.parametrize("name", ["", "x" * 257, "é" * 129, None, 42])
def test_bad_names_are_rejected(connect: Connect, name: object) -> None:
    coord = connect()
    with pytest.raises(moot.InvalidName):
        coord.lock(name)  # type: ignore[arg-type]
    assert coord.locks() == []


def test_negative_timeout_is_rejected(connect: Connect) -> None:
    lock = connect().lock("x")
    with pytest.raises(moot.InvalidArgument):
        lock.acquire(timeout=-1)
    assert not lock.is_held


def test_close_releases_held_locks(connect: Connect) -> None:
    a, b = connect("a"), connect("b")
    assert a.lock("x").acquire()
    a.close()
    assert b.lock("x").acquire(blocking=False)
    with pytest.raises(moot.CoordinatorClosed):
        a.lock("y").acquire()


def test_holder_learns_when_its_session_is_lost(connect: Connect) -> None:
    a, b = connect("a"), connect("b")
    lost = threading.Event()
    lock = a.lock("x", on_lost=lambda _lock: lost.set())
    assert lock.acquire()
    old_session = a.session_id
    assert b.backend.expire_session(old_session)  # type: ignore[arg-type]
    wait_event(lost, what="on_lost callback")
    assert not lock.is_held
    assert b.lock("x").acquire(timeout=10)
    # The coordinator carries on with a new session.
    wait_until(lambda: a.session_id != old_session and a.lock("y").acquire(timeout=5), what="new session")
    assert lock.release() is False
