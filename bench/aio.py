"""moot.aio against the blocking API, per backend: ``python -m bench.aio``.

For each backend (servers started by tests/servers.py on loopback):

* uncontended acquire+release per second, blocking API and moot.aio (one
  task), same process, same lock;
* 1,000 tasks waiting on 50 held locks (20 per lock): the threads the process
  gained, the Python memory allocated per waiting task (tracemalloc), and the
  event loop's longest stall meanwhile (a 1 ms ticker's worst lateness).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
KINDS = ("memory", "file", "redis", "zookeeper", "etcd", "postgresql", "mysql", "memcached")
SERVER_KINDS = {"redis", "zookeeper", "etcd", "postgresql", "mysql", "memcached"}
WAITERS, LOCKS = 1000, 50


def sync_rate(url: str, seconds: float) -> float:
    import moot

    with moot.connect(url, member_id="sync", namespace=f"b-{uuid.uuid4().hex[:8]}") as coord:
        lock = coord.lock("uncontended")
        for _ in range(20):
            lock.acquire()
            lock.release()
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            lock.acquire()
            lock.release()
            done += 1
        return done / (time.perf_counter() - started)


async def async_rate(url: str, seconds: float) -> float:
    import moot.aio

    async with moot.aio.connect(url, member_id="async", namespace=f"b-{uuid.uuid4().hex[:8]}") as coord:
        lock = coord.lock("uncontended")
        for _ in range(20):
            await lock.acquire()
            await lock.release()
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            await lock.acquire()
            await lock.release()
            done += 1
        return done / (time.perf_counter() - started)


async def waiting(url: str, trace_memory: bool) -> dict[str, float]:
    """Queue the waiting tasks; with ``trace_memory`` measure their memory
    (tracemalloc slows every allocation: the other figures come from a run without it)."""
    import moot.aio

    namespace = f"b-{uuid.uuid4().hex[:8]}"
    worst = 0.0
    ticking = True

    async def ticker() -> None:
        nonlocal worst
        while ticking:
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            worst = max(worst, time.perf_counter() - before - 0.001)

    async with moot.aio.connect(url, member_id="holder", namespace=namespace) as holder, \
            moot.aio.connect(url, member_id="waiters", namespace=namespace) as coord:
        for n in range(LOCKS):
            assert await holder.lock(f"x{n}").acquire()
        await coord.lock_info("x0")  # the coordinator's connections are open before counting
        tick = asyncio.create_task(ticker())
        threads_before = threading.active_count()
        if trace_memory:
            tracemalloc.start()
        memory_before = tracemalloc.get_traced_memory()[0]
        started = time.perf_counter()
        tasks = [asyncio.create_task(coord.lock(f"x{i % LOCKS}").acquire()) for i in range(WAITERS)]
        while sum(len(info.waiters) for info in await holder.locks()) < WAITERS:
            await asyncio.sleep(0.05)
        queued_in = time.perf_counter() - started
        memory = tracemalloc.get_traced_memory()[0] - memory_before
        if trace_memory:
            tracemalloc.stop()
        threads = threading.active_count() - threads_before
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        ticking = False
        await tick
    return {"threads": threads, "bytes_per_waiter": memory / WAITERS, "queued_in_s": queued_in,
            "worst_stall_ms": worst * 1000}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.aio", description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default=",".join(KINDS))
    parser.add_argument("--seconds", type=float, default=3.0, help="per rate measurement")
    args = parser.parse_args(argv)
    kinds = [k for k in args.backends.split(",") if k]
    sys.path.insert(0, str(REPO))
    from tests import servers

    urls: dict[str, str] = {"memory": "memory://bench", "file": f"file://{tempfile.mkdtemp(prefix='moot-bench-')}"}
    rows: list[dict[str, Any]] = []
    try:
        wanted = [k for k in kinds if k in SERVER_KINDS]
        if wanted:
            urls.update(servers.start_production(wanted))
        for kind in kinds:
            sync = sync_rate(urls[kind], args.seconds)
            aio = asyncio.run(async_rate(urls[kind], args.seconds))
            scale = asyncio.run(waiting(urls[kind], trace_memory=False))
            scale["bytes_per_waiter"] = asyncio.run(waiting(urls[kind], trace_memory=True))["bytes_per_waiter"]
            rows.append({"backend": kind, "sync": sync, "async": aio, **scale})
            print(f"{kind}: {rows[-1]}", file=sys.stderr)
    finally:
        servers.stop()
    print(f"| backend | acquire+release/s, blocking | acquire+release/s, moot.aio | threads added, {WAITERS} "
          f"waiting tasks | memory per waiting task | time to queue {WAITERS} | longest loop stall meanwhile |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['backend']} | {r['sync']:,.0f} | {r['async']:,.0f} | {r['threads']:.0f} | "
              f"{r['bytes_per_waiter'] / 1024:.1f} KiB | {r['queued_in_s']:.1f} s | {r['worst_stall_ms']:.1f} ms |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
