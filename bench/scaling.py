"""``scaling``: how moot's cost grows with the work, on one backend.

Five series, each a handful of sizes, all bounded in count and time:

* requests the engine handles for one handoff with 1, 10 and 100 waiters
  queued on the lock (a herd would grow with the waiters: each waiter must
  watch only what blocks it);
* the time of one heartbeat with 1, 100 and 10,000 locks held;
* ``members()`` and ``member_ids()`` of a group of 10, 100, 1,000 and
  10,000 members (joined by a few coordinators, each under many ids);
* acquire+release per second with 1, 10 and 100 threads of one process,
  each thread on its own lock;
* the file descriptors and TCP connections of one process waiting on 1,
  100 and 1,000 locks (moot.aio tasks: no thread per waiter).

Sizes shrink with ``Params.quick()``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import moot
import moot.aio
from bench.engines import RequestCounter

Note = Callable[[str], None]

#: A bound on any one step (a join, an acquire, a release).
STEP_TIMEOUT = 60.0
#: Threads that join members and take locks for a series: enough requests in
#: flight for the engines' group commit (fsync-bound joins are most of the series' time).
POOL = 64


def _ns() -> str:
    return f"scaling-{uuid.uuid4().hex[:10]}"


@contextmanager
def _coordinators(url: str, ns: str, count: int) -> Iterator[list[moot.Coordinator]]:
    made: list[moot.Coordinator] = []
    try:
        with concurrent.futures.ThreadPoolExecutor(POOL) as pool:
            made += pool.map(lambda i: moot.connect(url, member_id=f"c{i}", namespace=ns), range(count))
        yield made
    finally:
        with concurrent.futures.ThreadPoolExecutor(POOL) as pool:
            list(pool.map(lambda c: c.close(), made))


def handoff_requests(kind: str, url: str, waiters: int) -> dict[str, int] | None:
    """Requests counted from the holder's release to the first waiter's
    acquire returning, with ``waiters`` queued (each its own coordinator),
    less the same window with nothing released (``requests``), and what
    that idle window counted (``idle``: where waiters poll, the first figure
    is within its noise)."""
    counter = RequestCounter(kind, url)
    if not counter.available:
        return None
    ns = _ns()
    with _coordinators(url, ns, waiters + 1) as (holder, *others):
        lock = holder.lock("herd")
        lock.acquire(timeout=STEP_TIMEOUT)
        served, counted_all = threading.Event(), threading.Event()

        def wait(coord: moot.Coordinator) -> None:
            mine = coord.lock("herd")
            if mine.acquire(timeout=STEP_TIMEOUT * 2):
                served.set()
                counted_all.wait(STEP_TIMEOUT)  # no second handoff inside the counted window
                mine.release()

        threads = [threading.Thread(target=wait, args=(c,), daemon=True) for c in others]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + STEP_TIMEOUT
        while time.monotonic() < deadline:
            info = holder.lock_info("herd")
            if info is not None and len(info.waiters) >= waiters:
                break
            time.sleep(0.01)
        time.sleep(0.2)  # every waiter's watch is in place (and its polls, if any, have started)
        t0 = time.monotonic()
        counter.start()
        lock.release()
        served.wait(STEP_TIMEOUT)
        time.sleep(0.2)  # the other waiters' reactions to the release, if any, are counted too
        counted = counter.stop() or 0
        window = time.monotonic() - t0
        idle = []
        for _ in range(2):  # the same window with nothing released: heartbeats, polls
            counter.start()
            time.sleep(window)
            idle.append(counter.stop() or 0)
        counted_all.set()
        for thread in threads:
            thread.join(STEP_TIMEOUT)
    return {"requests": max(0, counted - min(idle)), "idle": max(idle)}


def heartbeat_series(url: str, sizes: list[int], note: Note) -> dict[int, float]:
    """The wall time (ms, median of 5) of one forced heartbeat with each of
    ``sizes`` locks held by one coordinator: the locks are taken once, the
    smaller sizes first (holding 100 locks is the same whether 1 was held
    before or not)."""
    found: dict[int, float] = {}
    with moot.connect(url, member_id="beater", namespace=_ns()) as coord, \
            concurrent.futures.ThreadPoolExecutor(POOL) as pool:
        held: list[moot.Lock] = []
        try:
            for n in sorted(sizes):
                more = [coord.lock(f"hb-{i}") for i in range(len(held), n)]
                if not all(pool.map(lambda lock: lock.acquire(timeout=STEP_TIMEOUT), more)):
                    raise RuntimeError(f"a free lock was not acquired within {STEP_TIMEOUT:g} s")
                held += more
                times = []
                for _ in range(5):
                    t0 = time.perf_counter()
                    coord.backend.refresh_session()  # what the heartbeat thread sends
                    times.append(time.perf_counter() - t0)
                found[n] = statistics.median(times) * 1000
                note(f"heartbeat, {n:,} locks held: {found[n]:.3f} ms")
        finally:
            list(pool.map(lambda lock: lock.release(), held))
    return found


def members_series(url: str, sizes: list[int], note: Note, joiners: int = 4) -> dict[int, dict[str, float]]:
    """``members()`` and ``member_ids()`` (p50, ms) of a group of each of
    ``sizes`` members, joined by ``joiners`` coordinators under many ids.
    One group grows from size to size (a group of 1,000 is the same whether
    its first 100 joined earlier or not); every member leaves at the end."""
    ns = _ns()
    found: dict[int, dict[str, float]] = {}
    with _coordinators(url, ns, joiners + 1) as (observer, *hosts), \
            concurrent.futures.ThreadPoolExecutor(POOL) as pool:
        joined: list[moot.Group] = []

        def join(index: int) -> moot.Group:
            group = hosts[index % joiners].group("big", member_id=f"m{index:05d}")
            group.join()
            return group

        try:
            for n in sorted(sizes):
                joined += pool.map(join, range(len(joined), n))
                group = observer.group("big")
                found[n] = {}
                for name, call in (("members_ms", group.members), ("member_ids_ms", group.member_ids)):
                    times: list[float] = []
                    started = time.monotonic()
                    while len(times) < 50 and (len(times) < 3 or time.monotonic() - started < 1.0):
                        t0 = time.perf_counter()
                        listed = call()
                        times.append(time.perf_counter() - t0)
                    if len(listed) != n:
                        raise RuntimeError(f"{name[:-3]}() listed {len(listed)} of {n} members")
                    found[n][name] = statistics.median(times) * 1000
                note(f"members() / member_ids() of {n:,}: {found[n]['members_ms']:.2f} / "
                     f"{found[n]['member_ids_ms']:.2f} ms")
        finally:
            list(pool.map(lambda group: group.leave(), joined))  # at once, not one by one in close()
    return found


def threads_rate(url: str, threads: int, seconds: float) -> float:
    """acquire+release per second of ``threads`` threads of one coordinator,
    each on its own lock."""
    with moot.connect(url, member_id="threads", namespace=_ns()) as coord:
        stop = time.monotonic() + seconds
        counts = [0] * threads

        def loop(index: int) -> None:
            lock = coord.lock(f"t-{index}")
            while time.monotonic() < stop:
                lock.acquire(timeout=STEP_TIMEOUT)
                lock.release()
                counts[index] += 1

        t0 = time.monotonic()
        workers = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(seconds + STEP_TIMEOUT)
        return sum(counts) / (time.monotonic() - t0)


def _descriptors() -> tuple[int, int]:
    """(open file descriptors, TCP sockets) of this process."""
    fds = os.listdir("/proc/self/fd")
    sockets = 0
    for fd in fds:
        with suppress(OSError):
            sockets += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return len(fds), sockets


def waiting_descriptors(url: str, locks: int) -> dict[str, int]:
    """Descriptors and sockets of a process before and while one coordinator
    waits (moot.aio tasks) on ``locks`` locks that another one holds."""
    ns = _ns()

    async def run() -> dict[str, int]:
        async with moot.aio.connect(url, member_id="holder", namespace=ns) as holder, \
                moot.aio.connect(url, member_id="waiter", namespace=ns) as waiter:
            held = [holder.lock(f"w-{i}") for i in range(locks)]
            sem = asyncio.Semaphore(32)

            async def take(lock: Any) -> None:
                async with sem:
                    await lock.acquire(timeout=STEP_TIMEOUT)

            await asyncio.gather(*(take(lock) for lock in held))
            fds_before, sockets_before = _descriptors()
            tasks = [asyncio.create_task(waiter.lock(f"w-{i}").acquire(timeout=STEP_TIMEOUT * 3))
                     for i in range(locks)]
            deadline = time.monotonic() + STEP_TIMEOUT
            while time.monotonic() < deadline:
                info = await holder.lock_info(f"w-{locks - 1}")
                if info is not None and info.waiters:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # the last waiters' watches are in place
            fds, sockets = _descriptors()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.gather(*(lock.release() for lock in held))
            return {"fds": fds, "sockets": sockets, "fds_idle": fds_before, "sockets_idle": sockets_before}

    return asyncio.run(run())


def scaling(system: str, kind: str, url: str, params: Any, note: Note) -> dict[str, Any]:
    quick = params.members < 1000
    sizes = {
        "handoff": [1, 10] if quick else [1, 10, 100],
        "heartbeat": [1, 100] if quick else [1, 100, 10000],
        "members": [10, 100] if quick else [10, 100, 1000, 10000],
        "threads": [1, 10] if quick else [1, 10, 100],
        "waiting": [1, 100] if quick else [1, 100, 1000],
    }
    found: dict[str, Any] = {"sizes": sizes}
    if kind == "memory":  # one process: no engine to count, no connections
        sizes = {**sizes, "handoff": [], "waiting": []}
    found["handoff_requests"] = {n: handoff_requests(kind, url, n) for n in sizes["handoff"]}
    note(f"handoff requests {found['handoff_requests']}")
    found["heartbeat_ms"] = {n: round(ms, 3) for n, ms in heartbeat_series(url, sizes["heartbeat"], note).items()}
    found["members"] = members_series(url, sizes["members"], note)
    found["threads_per_second"] = {n: round(threads_rate(url, n, 1.0)) for n in sizes["threads"]}
    note(f"threads {found['threads_per_second']}")
    found["waiting"] = {n: waiting_descriptors(url, n) for n in sizes["waiting"]}
    note(f"waiting {found['waiting']}")
    return found
