"""What one process pays to wait on many locks, on every backend: its file
descriptors and its TCP connections to the server stay flat whether it
waits on 1, 100 or 1,000 locks held by someone else, and once those locks
are released every waiter is served (no wake-up lost at scale).

The waiter is one :mod:`moot.aio` coordinator (a waiting task holds no
thread, so a thousand waits cost no thousand threads); the holder is another
coordinator in the same process that takes every lock before the first
count, so that only the waiter's share changes between the counts.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import moot.aio
from moot.backends.base import Entry, Watch
from moot.url import parse_url
from tests.conformance.test_aio import run, until
from tests.waiting import BOUND

#: The numbers of locks waited on, in turn, by the one waiting coordinator.
STEPS = (1, 100, 1000)
#: What the counts may grow by from the first step to the last, whatever the
#: number of locks: a pooled connection per worker thread of the waiter
#: (its round trips run on ``threads`` of them at once) and a few more
#: (the heartbeat's, a watch stream being replaced), each with its socket.
SLACK = moot.aio.DEFAULT_THREADS + 4
#: The holder's worker threads: its thousand acquires and releases go faster
#: with more round trips in flight (the waiter keeps the default, as counted).
HOLDER_THREADS = 16
#: Session TTL: the holder keeps a thousand locks through the test.
TTL = 10.0


def _sockets() -> set[int]:
    """Inodes of the sockets this process has open."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:  # closed meanwhile (or the listing's own)
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _connections(ports: set[int]) -> int:
    """This process's established TCP connections to one of ``ports``."""
    mine = _sockets()
    count = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with open(table) as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                established = fields[3] == "01"
                if established and remote_port in ports and int(fields[9]) in mine:
                    count += 1
    return count


def _descriptors() -> int:
    return len(os.listdir("/proc/self/fd")) - 1  # the listing's own


def _server_ports(url: str) -> set[int]:
    parsed = parse_url(url)
    return {parsed.host_port(0, i)[1] for i in range(len(parsed.hosts))}


class _ArmedWatches:
    """Counts the watches the waiter's backend has armed: a lock waiter arms
    the one on the entry ahead of it with ``watch_unchanged``, and once that
    returns (unchanged) it waits."""

    def __init__(self, coord: moot.aio.AsyncCoordinator):
        backend = coord.sync.backend
        self.count = 0
        self._lock = threading.Lock()
        armed = backend.watch_unchanged

        def watch_unchanged(entry: Entry, callback: Callable[[], None]) -> tuple[Watch, bool]:
            made = armed(entry, callback)
            with self._lock:
                self.count += 1
            return made

        backend.watch_unchanged = watch_unchanged  # type: ignore[method-assign]


async def _at_least(armed: _ArmedWatches, count: int) -> bool:
    return armed.count >= count


def test_waiting_on_many_locks_costs_no_descriptor_or_connection_per_lock(url: str, namespace: str,
                                                                         backend: str) -> None:
    """One coordinator waits on 1, then 100, then 1,000 locks held by another:
    its descriptors and connections grow by at most SLACK from the first
    count to the last; releasing the thousand serves all of them within BOUND."""
    ports = _server_ports(url) if backend not in ("memory", "file") else set()
    counts: dict[int, tuple[int, int]] = {}
    timings: dict[str, float] = {}

    async def body() -> None:
        options: dict[str, Any] = {"ttl": TTL, "namespace": namespace}
        holder = await moot.aio.connect(url, "holder", threads=HOLDER_THREADS, **options)
        names = [f"scale-{n}" for n in range(STEPS[-1])]
        started = time.monotonic()
        held = [holder.lock(name) for name in names]
        taken = await asyncio.gather(*(lock.acquire(blocking=False) for lock in held))
        assert all(taken)
        timings["hold"] = time.monotonic() - started

        waiter = await moot.aio.connect(url, "waiter", **options)
        armed = _ArmedWatches(waiter)
        served: list[int] = []

        async def wait_for(name: str) -> None:
            async with waiter.lock(name, timeout=BOUND * 3) as hold:
                served.append(hold.token)

        tasks: list[asyncio.Task[None]] = []
        for step in STEPS:
            started = time.monotonic()
            tasks += [asyncio.create_task(wait_for(name)) for name in names[len(tasks):step]]
            await until(functools.partial(_at_least, armed, step), f"{step} waits armed", timeout=BOUND)
            assert not any(task.done() for task in tasks), [task for task in tasks if task.done()]
            timings[f"arm {step}"] = time.monotonic() - started
            counts[step] = (_descriptors(), _connections(ports))

        started = time.monotonic()
        await asyncio.gather(*(lock.release() for lock in held))
        timings["release"] = time.monotonic() - started
        done, pending = await asyncio.wait(tasks, timeout=BOUND)
        timings["all served"] = time.monotonic() - started
        for task in pending:
            task.cancel()
        assert not pending, f"{len(pending)} of {len(tasks)} waiters not served within {BOUND} s"
        for task in done:
            task.result()
        assert len(served) == len(names)
        await waiter.close()
        await holder.close()

    run(body)
    print(f"\n{backend}: (descriptors, connections) per locks waited on {counts}; "
          + ", ".join(f"{what} {seconds:.2f} s" for what, seconds in timings.items()))
    first = counts[STEPS[0]]
    assert max(fds for fds, _ in counts.values()) - first[0] <= SLACK, f"descriptors grew with the locks: {counts}"
    assert max(conns for _, conns in counts.values()) - first[1] <= SLACK, f"connections grew with the locks: {counts}"
    if backend not in ("memory", "file"):
        assert first[1] >= 1, f"no connection to the server counted: {counts}"
