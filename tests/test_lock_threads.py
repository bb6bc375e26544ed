"""One lock object shared by several threads, as a module-level
``threading.Lock`` is (issue 15, item 3): another thread's ``acquire()``
waits for the object's ``release()`` (honouring ``blocking`` and
``timeout``), the holding thread's second ``acquire()`` is LockError (not
reentrant), a hold lost with the session keeps the others waiting until
its thread lets go, and asyncio tasks get a clear LockError instead of
waiting. Real threads on memory://, file:// and redis."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import moot
import moot.aio
from tests.waiting import BOUND, wait_event, wait_until

KINDS = ["memory", "file", "redis"]

Connect = Callable[..., moot.Coordinator]


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def base_url(kind: str, tmp_path: Path, server: Callable[[str], str]) -> str:
    if kind == "memory":
        return f"memory://threads-{uuid.uuid4().hex[:8]}"
    if kind == "file":
        return f"file://{tmp_path}"
    return server(kind)


@pytest.fixture
def connect(base_url: str) -> Iterator[Connect]:
    opened: list[moot.Coordinator] = []
    namespace = f"t-{uuid.uuid4().hex[:12]}"

    def make(member_id: str | None = None, **options: Any) -> moot.Coordinator:
        options.setdefault("ttl", 2.0)
        coord = moot.connect(base_url, member_id=member_id, namespace=namespace, **options)
        opened.append(coord)
        return coord

    yield make
    for coord in opened:
        coord.close()


def _start(target: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def _waiting_on_engine(observer: moot.Coordinator, name: str, count: int) -> Callable[[], bool]:
    def check() -> bool:
        info = observer.lock_info(name)
        return info is not None and len(info.waiters) >= count
    return check


def test_a_second_thread_waits_for_release_then_holds(connect: Connect) -> None:
    lock = connect("shared").lock("module-level")
    assert lock.acquire()
    first_token = lock.token
    entered = threading.Event()
    results: list[object] = []

    def second() -> None:
        entered.set()
        results.append(lock.acquire(timeout=BOUND))
        results.append(lock.token)
        lock.release()

    thread = _start(second)
    wait_event(entered, what="second thread started")
    thread.join(0.3)  # it must still be waiting: the object is the first thread's
    assert thread.is_alive() and results == [] and lock.is_held and lock.token == first_token
    assert lock.release() is True
    thread.join(BOUND)
    assert not thread.is_alive()
    assert results[0] is True and isinstance(results[1], int) and results[1] > (first_token or 0)


def test_blocking_false_and_timeout_while_another_thread_holds(connect: Connect) -> None:
    lock = connect().lock("x")
    assert lock.acquire()
    results: list[object] = []

    def other() -> None:
        results.append(lock.acquire(blocking=False))
        started = time.monotonic()
        results.append(lock.acquire(timeout=0.2))
        results.append(time.monotonic() - started)

    thread = _start(other)
    thread.join(BOUND)
    assert results[0] is False and results[1] is False
    assert isinstance(results[2], float) and results[2] >= 0.2
    assert lock.is_held
    lock.release()
    # The object is free again for anyone, and a thread that timed out left nothing behind.
    thread = _start(lambda: results.append(lock.acquire(blocking=False) and lock.release()))
    thread.join(BOUND)
    assert results[-1] is True


def test_the_holding_thread_acquiring_again_is_an_error(connect: Connect) -> None:
    lock = connect().lock("x")
    assert lock.acquire()
    with pytest.raises(moot.LockError, match="not reentrant"):
        lock.acquire(timeout=0.1)
    with pytest.raises(moot.LockError, match="this thread"):
        lock.acquire(blocking=False)
    assert lock.is_held
    assert lock.release() is True


def test_a_module_level_lock_excludes_every_thread(connect: Connect) -> None:
    lock = connect().lock("counter")
    inside = 0
    most = 0
    done = 0
    guard = threading.Lock()
    tokens: list[int] = []

    def worker() -> None:
        nonlocal inside, most, done
        for _ in range(5):
            with lock:
                with guard:
                    inside += 1
                    most = max(most, inside)
                    tokens.append(lock.token or 0)
                time.sleep(0.001)
                with guard:
                    inside -= 1
        with guard:
            done += 1

    threads = [_start(worker) for _ in range(4)]
    for thread in threads:
        thread.join(BOUND * 2)
    assert done == 4 and most == 1
    assert tokens == sorted(tokens) and len(set(tokens)) == 20


def test_waiting_threads_go_in_arrival_order(connect: Connect) -> None:
    lock = connect().lock("fifo")
    assert lock.acquire()
    order: list[int] = []
    threads = []
    for i in range(3):
        threads.append(_start(lambda i=i: (lock.acquire(timeout=BOUND), order.append(i), lock.release())))
        wait_until(lambda n=i + 1: len(lock._waiting) == n, what=f"thread {i} waiting")  # type: ignore[attr-defined]
    lock.release()
    for thread in threads:
        thread.join(BOUND)
    assert order == [0, 1, 2]


def test_release_from_another_thread_lets_the_next_one_in(connect: Connect) -> None:
    lock = connect().lock("handoff")
    assert lock.acquire()
    thread = _start(lambda: lock.release())
    thread.join(BOUND)
    assert not lock.is_held
    assert lock.acquire(blocking=False)
    lock.release()


def test_rwlock_and_semaphore_objects_shared_by_threads(connect: Connect) -> None:
    coord = connect()
    rw = coord.rwlock("doc")
    sem = coord.semaphore("pool", 2)
    assert rw.acquire_read() and sem.acquire()
    results: list[object] = []

    def other() -> None:
        results.append(rw.acquire_write(timeout=BOUND))
        results.append(rw.mode)
        rw.release()
        results.append(sem.acquire(timeout=BOUND))
        sem.release()

    thread = _start(other)
    thread.join(0.3)
    assert thread.is_alive() and results == []
    with pytest.raises(moot.LockError, match="upgrade"):
        rw.acquire_write(timeout=0.1)
    rw.release()
    wait_until(lambda: len(results) == 2, what="the writer thread")
    assert results == [True, "exclusive"]
    sem.release()
    thread.join(BOUND)
    assert results == [True, "exclusive", True]


def test_election_shared_by_threads_leads_for_all(connect: Connect) -> None:
    coord, rival = connect("me"), connect("rival")
    blocker = rival.election("e")
    assert blocker.campaign()
    election = coord.election("e")
    results: list[object] = []
    first = _start(lambda: results.append(("first", bool(election.campaign(timeout=BOUND)))))
    wait_until(lambda: election.candidates() == ["rival", "me"], what="first campaign queued")
    second = _start(lambda: results.append(("second", bool(election.campaign(timeout=BOUND)))))
    second.join(0.3)
    assert second.is_alive()  # waits for the campaign in progress, not a second candidacy
    assert election.candidates() == ["rival", "me"]
    blocker.resign()
    first.join(BOUND)
    second.join(BOUND)
    assert sorted(results) == [("first", True), ("second", True)]
    assert election.is_leader and election.candidates() == ["me"]
    # Leading, any thread's campaign() gives the leadership at once.
    late: list[bool] = []
    thread = _start(lambda: late.append(bool(election.campaign(blocking=False))))
    thread.join(BOUND)
    assert late == [True]


def test_a_lost_hold_keeps_other_threads_waiting_until_its_thread_releases(connect: Connect) -> None:
    holder, other = connect("holder"), connect("other")
    lost = threading.Event()
    lock = holder.lock("x", on_lost=lambda _lock: lost.set())
    assert lock.acquire()
    got: list[object] = []
    waiter = _start(lambda: got.append((lock.acquire(timeout=BOUND), lock.token)))
    wait_until(lambda: len(lock._waiting) == 1, what="second thread waiting")  # type: ignore[attr-defined]
    old_session = holder.session_id
    assert other.backend.expire_session(old_session)  # type: ignore[arg-type]
    wait_event(lost, what="on_lost")
    assert not lock.is_held
    # Someone else may take the name now; the second thread still waits for this object.
    rival = other.lock("x")
    assert rival.acquire(timeout=BOUND)
    waiter.join(0.3)
    assert waiter.is_alive() and got == []
    rival.release()
    waiter.join(0.3)
    assert waiter.is_alive() and got == []  # the first thread has not let go yet
    assert lock.release() is False  # the thread that held it lets go (the hold was lost)
    waiter.join(BOUND)
    assert len(got) == 1 and got[0][0] is True and lock.is_held  # type: ignore[index]
    assert lock.release() is True


def test_close_ends_a_thread_waiting_for_the_object(connect: Connect) -> None:
    coord = connect()
    lock = coord.lock("x")
    assert lock.acquire()
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            lock.acquire()
        except BaseException as exc:
            errors.append(exc)

    thread = _start(waiter)
    wait_until(lambda: len(lock._waiting) == 1, what="thread waiting")  # type: ignore[attr-defined]
    coord.close()
    thread.join(BOUND)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], moot.CoordinatorClosed)


def test_asyncio_tasks_sharing_one_object_get_a_clear_error(base_url: str) -> None:
    async def body() -> None:
        async with await moot.aio.connect(base_url, namespace=f"t-{uuid.uuid4().hex[:12]}", ttl=2.0) as coord:
            lock = coord.lock("x")
            assert await lock.acquire()

            async def other_task() -> bool:
                return await lock.acquire(timeout=0.1)

            with pytest.raises(moot.LockError, match="another asyncio task"):
                await asyncio.create_task(other_task())
            with pytest.raises(moot.LockError, match="not reentrant"):
                await lock.acquire(timeout=0.1)
            assert await lock.release()
            # Free, another task takes it; a task acquiring meanwhile is told.
            rival = coord.lock("x")
            assert await rival.acquire()
            waiting = asyncio.create_task(lock.acquire(timeout=BOUND))
            await asyncio.sleep(0)
            wait_for_queue = time.monotonic() + BOUND
            while (info := await coord.lock_info("x")) is None or not info.waiters:
                assert time.monotonic() < wait_for_queue
                await asyncio.sleep(0.01)
            with pytest.raises(moot.LockError, match="being acquired"):
                await asyncio.create_task(other_task())
            await rival.release()
            assert await asyncio.wait_for(waiting, BOUND)
            assert await lock.release()

    asyncio.run(body())
