"""What only the async API has to promise, on every backend: cancelling a
task inside ``acquire()`` (directly or through ``asyncio.timeout``)
withdraws its place, serves the next waiter and never leaves a lock
half-acquired; waiting tasks hold no thread; a lost hold is reported on
the loop; no moot call does I/O or waits on the loop's thread (every test
here runs under a :class:`tests.loop_guard.LoopGuard`).

(The behaviours both APIs share run through moot.aio in the conformance
modules listed in ``tests/conftest.py``'s BOTH_APIS.)
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

import moot
import moot.aio
from moot.backends.mysql.hints import WORKERS
from tests import aio_bridge
from tests.conftest import TEST_TTL
from tests.loop_guard import LoopGuard
from tests.waiting import BOUND

Connect = Callable[..., Awaitable[moot.aio.AsyncCoordinator]]


@pytest.fixture
def aconnect(url: str, namespace: str) -> Iterator[Connect]:
    """``await aconnect(member_id)``: an async coordinator in this test's
    namespace (on the running loop); left open ones are closed by the test body."""

    async def make(member_id: str | None = None, **options: Any) -> moot.aio.AsyncCoordinator:
        options.setdefault("ttl", TEST_TTL)
        options.setdefault("namespace", namespace)
        return await moot.aio.connect(url, member_id, **options)

    yield make


def run(body: Callable[[], Awaitable[None]], debug: bool = False) -> None:
    """``asyncio.run(body())`` with the loop's thread guarded: fails if moot
    did I/O or waited on it."""
    guard = LoopGuard()

    async def guarded() -> None:
        guard.install(asyncio.get_running_loop())
        try:
            await body()
        finally:
            guard.uninstall()

    asyncio.run(guarded(), debug=debug)
    violations = guard.take()
    assert not violations, "moot blocked the event loop:\n" + "\n".join(violations)


async def until(predicate: Callable[[], Awaitable[object]], what: str, timeout: float = BOUND) -> None:
    """Return once ``await predicate()`` is true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    pause = 0.005
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.1)


async def waiters(coord: moot.aio.AsyncCoordinator, name: str) -> list[str]:
    info = await coord.lock_info(name)
    return [] if info is None else [w.member for w in info.waiters]


def test_cancelling_a_waiting_acquire_withdraws_it_and_serves_the_next(aconnect: Connect) -> None:
    async def body() -> None:
        a, b, c = await aconnect("a"), await aconnect("b"), await aconnect("c")
        held = a.lock("x")
        assert await held.acquire()
        cancelled = asyncio.create_task(b.lock("x").acquire())
        await until(lambda: _eq(waiters(a, "x"), ["b"]), "b queued")
        nxt = c.lock("x")
        served = asyncio.create_task(nxt.acquire(timeout=BOUND))
        await until(lambda: _eq(waiters(a, "x"), ["b", "c"]), "c queued behind b")
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert await waiters(a, "x") == ["c"]  # withdrawn before CancelledError reached the caller
        await held.release()
        assert await asyncio.wait_for(served, BOUND)
        assert nxt.is_held and (await a.lock_info("x")).holder == "c"  # type: ignore[union-attr]
        await nxt.release()
        assert await a.lock_info("x") is None
        for coord in (a, b, c):
            await coord.close()

    run(body)


def test_asyncio_timeout_around_acquire_leaves_nothing_behind(aconnect: Connect) -> None:
    async def body() -> None:
        a, b = await aconnect("a"), await aconnect("b")
        assert await a.lock("x").acquire()
        waiting = b.lock("x")
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await waiting.acquire()
        assert not waiting.is_held
        assert await waiters(a, "x") == []
        election = b.election("e")
        assert await a.election("e").campaign()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await election.campaign()
        assert await b.election("e").candidates() == ["a"]
        await a.close()
        await b.close()

    run(body)


def test_a_cancel_racing_the_handoff_never_half_acquires(aconnect: Connect) -> None:
    """Cancel the waiter at random instants around the release that serves
    it: either its acquire returned True (it holds, and releases), or it was
    cancelled and nothing of it is left: never a hold nobody knows of."""

    async def body() -> None:
        a, b = await aconnect("a"), await aconnect("b")
        rng = random.Random(1234)
        outcomes = {"held": 0, "cancelled": 0}
        for _ in range(12):
            holder = a.lock("x")
            assert await holder.acquire(timeout=BOUND)
            waiter = b.lock("x")
            task = asyncio.create_task(waiter.acquire(timeout=BOUND))
            await until(lambda: _eq(waiters(a, "x"), ["b"]), "b queued")
            await holder.release()
            await asyncio.sleep(rng.uniform(0, 0.01))
            task.cancel()
            try:
                got = await task
            except asyncio.CancelledError:
                assert not waiter.is_held
                outcomes["cancelled"] += 1
            else:
                assert got is True and waiter.is_held
                await waiter.release()
                outcomes["held"] += 1
            assert await a.lock_info("x") is None, outcomes
        await a.close()
        await b.close()

    run(body)


def test_a_watch_left_with_break_stops_once_dropped(aconnect: Connect) -> None:
    """``async for`` cannot tell an iterator it was left: dropping the last
    reference to the watch stops it (nothing keeps queueing events)."""

    async def body() -> None:
        a, b = await aconnect("a"), await aconnect("b")
        await b.group("g").join()
        watch = a.group("g").watch(existing=True)
        async for event in watch:
            assert event.member_id == "b"
            break
        else:
            raise AssertionError("no event")
        sync = watch._sync
        assert sync is not None and not sync._cancelled
        dropped = weakref.ref(watch)
        del watch
        gc.collect()
        assert dropped() is None
        await until(lambda: _true(sync._cancelled), "the dropped watch to be cancelled (on a worker thread)")
        await a.close()
        await b.close()

    run(body)


def test_a_lost_hold_is_reported_on_the_loop(aconnect: Connect) -> None:
    async def body() -> None:
        a, b = await aconnect("a"), await aconnect("b")
        loop_thread = threading.get_ident()
        called_on: list[int] = []
        lock = a.lock("x", on_lost=lambda _lock: called_on.append(threading.get_ident()))
        assert await lock.acquire()
        election = a.election("e", on_lost=lambda _e: called_on.append(threading.get_ident()))
        assert await election.campaign()
        assert await asyncio.to_thread(b.sync.backend.expire_session, a.session_id)
        await asyncio.wait_for(lock.wait_lost(), BOUND)
        await asyncio.wait_for(election.wait_lost(), BOUND)
        assert not lock.is_held and not election.is_leader
        await until(lambda: _true(len(called_on) == 2), "both on_lost callbacks")
        assert called_on == [loop_thread, loop_thread]
        await a.close()
        await b.close()

    run(body)


#: Threads a backend may start for its watches beyond the one watch thread:
#: MySQL's wake-up hint workers (moot/backends/mysql/hints.py), a fixed few.
EXTRA_WATCH_THREADS = {"mysql": WORKERS}


def test_waiting_tasks_hold_no_threads(aconnect: Connect, backend: str) -> None:
    """A thousand tasks queued on fifty held locks (twenty per lock): the
    process gains no thread beyond the coordinator's worker threads and the
    backend's watch thread (and MySQL's few hint workers), however many
    wait; cancelling them all leaves no waiter behind."""
    tasks, locks = 1000, 50
    bound = 1 + EXTRA_WATCH_THREADS.get(backend, 0)

    async def body() -> None:
        holder = await aconnect("holder")
        for n in range(locks):
            assert await holder.lock(f"x{n}").acquire()
        coord = await aconnect("waiters")
        before = threading.active_count()
        queued = [asyncio.create_task(coord.lock(f"x{i % locks}").acquire()) for i in range(tasks)]
        await until(lambda: _waiting_at_least(holder, tasks), f"{tasks} waiters queued", timeout=BOUND * 3)
        grown = threading.active_count() - before
        assert grown <= coord.threads + bound, (grown, sorted(t.name for t in threading.enumerate()))
        for task in queued:
            task.cancel()
        results = await asyncio.gather(*queued, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError) for r in results)
        assert not await _waiting_at_least(holder, 1)
        await coord.close()
        await holder.close()

    run(body)


def test_the_loop_guard_catches_a_blocking_call(aconnect: Connect) -> None:
    """The guard can fail: the blocking API called from a coroutine is caught."""

    async def body() -> None:
        coord = await aconnect("a")
        guard = LoopGuard()
        guard.install(asyncio.get_running_loop())
        try:
            coord.sync.lock_info("x")  # what an async program must never do
        finally:
            guard.uninstall()
        await coord.close()
        assert any("backends" in v for v in guard.take())

    asyncio.run(body())


def test_no_moot_io_or_wait_runs_on_the_loop(aconnect: Connect, backend: str) -> None:
    """A workload of contended locks, group joins and watches and an
    election, in asyncio's debug mode (slow callbacks: over 5 ms): moot's
    I/O and waits never run on the loop's thread (the guard), and the slow
    callbacks debug mode reports (which also counts a loop thread waiting for
    the CPU or the GIL on a busy machine) are counted for the run's summary."""
    slow = aio_bridge.SlowCallbacks()
    logging.getLogger("asyncio").addHandler(slow)

    async def body() -> None:
        asyncio.get_running_loop().slow_callback_duration = 0.005
        coords = [await aconnect(f"m{i}") for i in range(3)]
        served = 0

        async def worker(coord: moot.aio.AsyncCoordinator) -> None:
            nonlocal served
            for _ in range(10):
                async with coord.lock("hot", timeout=BOUND):
                    served += 1

        watch = coords[0].group("g").watch()
        joined: list[str] = []

        async def follow() -> None:
            async for event in watch:
                joined.append(event.member_id)
                if len(joined) == 3:
                    return

        follower = asyncio.create_task(follow())
        await watch
        for coord in coords:
            await coord.group("g").join({"n": 1})
        await asyncio.gather(*(worker(c) for c in coords))
        await asyncio.wait_for(follower, BOUND)
        assert served == 30 and sorted(joined) == ["m0", "m1", "m2"]
        assert await coords[1].election("e").campaign()
        assert await coords[2].election("e").leader() == "m1"
        for coord in coords:
            await coord.close()

    try:
        run(body, debug=True)
    finally:
        logging.getLogger("asyncio").removeHandler(slow)
    aio_bridge.STALLS.append((f"debug-mode workload on {backend}", len(slow.seen), max(slow.seen, default=0.0)))


async def _eq(value: Awaitable[object], expected: object) -> bool:
    return await value == expected


async def _true(value: bool) -> bool:
    return value


async def _waiting_at_least(coord: moot.aio.AsyncCoordinator, count: int) -> bool:
    return sum(len(info.waiters) for info in await coord.locks()) >= count
