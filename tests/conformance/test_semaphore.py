"""Counting semaphores: the same behaviour on every backend."""

from __future__ import annotations

import threading

import pytest

import moot
from moot.recipes.semaphore import Semaphore, SemaphoreInfo, SemaphoreLimitMismatch, reset_limit, semaphores
from tests.conftest import Connect
from tests.waiting import BOUND, wait_event, wait_until


def members(found: tuple[moot.Waiter, ...]) -> list[str]:
    return [w.member for w in found]


def test_limit_holders_at_once_then_the_next_waits(connect: Connect) -> None:
    a, b, c = connect("a"), connect("b"), connect("c")
    sa, sb, sc = a.semaphore("pool", 2), b.semaphore("pool", 2), c.semaphore("pool", 2)
    assert sa.acquire() and sb.acquire(blocking=False)
    assert sa.is_held and sb.is_held
    assert sc.acquire(blocking=False) is False
    assert sc.acquire(timeout=0.1) is False
    got = threading.Event()
    thread = threading.Thread(target=lambda: sc.acquire(timeout=BOUND) and got.set())
    thread.start()
    wait_until(lambda: members(sa.info().waiters) == ["c"], what="c queued")
    assert not got.is_set()
    sb.release()  # any holder leaving admits the first waiter
    wait_event(got, what="c admitted")
    thread.join(BOUND)
    assert members(sa.info().holders) == ["a", "c"]


def test_no_more_than_limit_holders_among_many_contenders(connect: Connect) -> None:
    limit, contenders, rounds = 2, 5, 4
    current, most, finished = [0], [0], [0]
    counter = threading.Lock()
    failures: list[BaseException] = []

    def work(sem: Semaphore) -> None:
        try:
            for _ in range(rounds):
                with sem:
                    with counter:
                        current[0] += 1
                        most[0] = max(most[0], current[0])
                    # Hold until the semaphore is full (while enough contenders are
                    # left to fill it), so that holds really overlap.
                    wait_until(lambda: current[0] >= limit or contenders - finished[0] < limit,
                               what="a full semaphore")
                    with counter:
                        current[0] -= 1
        except BaseException as exc:
            failures.append(exc)
        with counter:
            finished[0] += 1

    sems = [connect(f"m{i}").semaphore("pool", limit, timeout=BOUND) for i in range(contenders)]
    threads = [threading.Thread(target=work, args=(sem,)) for sem in sems]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BOUND * 3)
    assert failures == []
    assert most[0] == limit


def test_waiters_are_served_in_arrival_order(connect: Connect) -> None:
    first, second = connect("h1").semaphore("fifo", 2), connect("h2").semaphore("fifo", 2)
    assert first.acquire() and second.acquire()
    waiters = [connect(f"w{i}").semaphore("fifo", 2) for i in range(4)]
    admitted = [threading.Event() for _ in waiters]
    for i, sem in enumerate(waiters):
        threading.Thread(target=lambda sem=sem, got=admitted[i]: sem.acquire(timeout=BOUND) and got.set()).start()
        wait_until(lambda n=i + 1: len(first.info().waiters) == n, what=f"{i + 1} waiters queued")
    assert members(first.info().waiters) == ["w0", "w1", "w2", "w3"]
    # Free one place at a time: each time exactly the longest waiter gets in.
    for place, leaving in enumerate([first, second, waiters[0], waiters[1]]):
        leaving.release()
        wait_event(admitted[place], what=f"w{place} admitted")
        assert members(first.info().holders)[-1] == f"w{place}"
        assert not any(event.is_set() for event in admitted[place + 1:])
    for sem in waiters[2:]:
        sem.release()


def test_a_waiter_behind_the_first_is_admitted_by_any_later_departure(connect: Connect) -> None:
    a, b, c, d = connect("a"), connect("b"), connect("c"), connect("d")
    sa, sb = a.semaphore("pool", 2), b.semaphore("pool", 2)
    assert sa.acquire() and sb.acquire()
    sc, sd = c.semaphore("pool", 2), d.semaphore("pool", 2)
    got_c, got_d = threading.Event(), threading.Event()
    threading.Thread(target=lambda: sc.acquire(timeout=BOUND) and got_c.set()).start()
    wait_until(lambda: members(sa.info().waiters) == ["c"], what="c queued")
    threading.Thread(target=lambda: sd.acquire(timeout=BOUND) and got_d.set()).start()
    wait_until(lambda: members(sa.info().waiters) == ["c", "d"], what="d queued")
    sb.release()  # the second holder, not the one c is queued right behind
    wait_event(got_c, what="c admitted")
    assert not got_d.is_set()
    sa.release()  # d, now the first waiter, must hear of this departure
    wait_event(got_d, what="d admitted")
    assert members(sc.info().holders) == ["c", "d"]


def test_tokens_strictly_increase(connect: Connect) -> None:
    tokens = []
    for round_ in range(3):
        coord = connect(f"c{round_}")
        for _ in range(2):
            sem = coord.semaphore("fenced", 3)
            assert sem.acquire()
            tokens.append(sem.token)
            sem.release()
        coord.close()
    assert all(isinstance(t, int) for t in tokens)
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)


def test_context_manager_and_lock_timeout(connect: Connect) -> None:
    a, b = connect("a"), connect("b")
    with a.semaphore("one", 1, timeout=5) as held:
        assert held.is_held and held.token is not None
        with pytest.raises(moot.LockTimeout), b.semaphore("one", 1, timeout=0.1):
            pass
    assert not held.is_held and held.token is None
    with b.semaphore("one", 1, timeout=5) as again:
        assert again.is_held


def test_release_never_raises_when_not_held(connect: Connect) -> None:
    sem = connect().semaphore("pool", 2)
    assert sem.release() is False
    assert sem.acquire()
    with pytest.raises(moot.LockError):
        sem.acquire(timeout=0.1)
    assert sem.release() is True
    assert sem.release() is False


def test_introspection(connect: Connect) -> None:
    a, b, c, observer = connect("a"), connect("b"), connect("c"), connect("observer")
    view = observer.semaphore("pool", 2)
    assert view.info() == SemaphoreInfo("pool", None, (), ())
    sa, sb = a.semaphore("pool", 2), b.semaphore("pool", 2)
    assert sa.acquire() and sb.acquire()
    sc = c.semaphore("pool", 2)
    thread = threading.Thread(target=lambda: sc.acquire(timeout=BOUND))
    thread.start()
    wait_until(lambda: len(view.info().waiters) == 1, what="c queued")
    found = view.info()
    assert found.limit == 2 and members(found.holders) == ["a", "b"] and members(found.waiters) == ["c"]
    assert [h.token for h in found.holders] == [sa.token, sb.token]
    assert all(h.mode == "semaphore" and h.since > 0 for h in found.holders + found.waiters)
    assert members(tuple(view.holders())) == ["a", "b"]
    assert [(i.name, i.limit) for i in semaphores(observer)] == [("pool", 2)]
    sa.release()
    thread.join(BOUND)
    sb.release()
    sc.release()
    assert semaphores(observer) == []
    assert view.info().holders == () and view.info().limit == 2
    assert observer.locks() == []  # semaphores have their own names


def test_a_different_limit_is_a_typed_error(connect: Connect) -> None:
    a, b = connect("a"), connect("b")
    sem = a.semaphore("pool", 2)
    assert sem.acquire()
    other = b.semaphore("pool", 3)
    with pytest.raises(SemaphoreLimitMismatch, match="limit 2"):
        other.acquire(timeout=BOUND)
    assert isinstance(SemaphoreLimitMismatch("x"), moot.LockError)
    assert not other.is_held and sem.info().waiters == ()
    with pytest.raises(moot.LockError):
        reset_limit(b, "pool")  # in use
    sem.release()
    with pytest.raises(SemaphoreLimitMismatch):
        other.acquire(blocking=False)  # stored, even when nobody holds it
    assert reset_limit(b, "pool") is True
    assert other.acquire(blocking=False) and other.info().limit == 3
    assert reset_limit(b, "never used") is False


def test_bad_arguments_are_rejected(connect: Connect) -> None:
    coord = connect()
    for limit in (0, -1, 1.5, True, None, "2"):
        with pytest.raises(moot.InvalidArgument):
            coord.semaphore("pool", limit)  # type: ignore[arg-type]
    with pytest.raises(moot.InvalidName):
        coord.semaphore("", 1)
    with pytest.raises(moot.InvalidArgument):
        coord.semaphore("pool", 1).acquire(timeout=-1)


def test_lost_session_drops_the_hold(connect: Connect) -> None:
    a, b = connect("a"), connect("b")
    lost: list[Semaphore] = []
    sem = Semaphore(a.session, "one", 1, on_lost=lost.append)
    assert sem.acquire()
    assert b.backend.expire_session(a.session_id)  # type: ignore[arg-type]
    wait_until(lambda: lost == [sem], what="on_lost callback")
    assert not sem.is_held and sem.token is None
    assert b.semaphore("one", 1).acquire(timeout=10)
    assert sem.release() is False


def test_close_releases_semaphores(connect: Connect) -> None:
    a, b = connect("a"), connect("b")
    assert a.semaphore("one", 1).acquire()
    a.close()
    assert b.semaphore("one", 1).acquire(blocking=False)
