"""Lock workloads, measured on any backend URL.

* ``uncontended``: one coordinator acquires and releases one lock in a loop.
* ``contended``: N processes loop on one lock, each holding it ``hold`` seconds;
  reports each process's share of the acquisitions, the handoff latency
  (a release to the next process's acquire, CLOCK_MONOTONIC is system-wide)
  and the longest single wait.

Every loop is bounded in count and in time.
"""

from __future__ import annotations

import json
import multiprocessing
import statistics
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import moot


@dataclass
class Uncontended:
    url: str
    ops: int
    seconds: float
    per_second: float
    median_us: float


def uncontended(url: str, max_ops: int = 20000, max_seconds: float = 5.0) -> Uncontended:
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    with moot.connect(url, namespace=namespace) as coord:
        lock = coord.lock("uncontended")
        samples: list[float] = []
        started = time.perf_counter()
        deadline = started + max_seconds
        while len(samples) < max_ops and time.perf_counter() < deadline:
            t0 = time.perf_counter()
            lock.acquire()
            lock.release()
            samples.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - started
    return Uncontended(moot.url.redact(url), len(samples), elapsed, len(samples) / elapsed,
                       statistics.median(samples) * 1e6)


def _contender(url: str, namespace: str, index: int, hold: float, seconds: float,
               start_at: float, out: Any) -> None:
    records = []
    with moot.connect(url, namespace=namespace, member_id=f"p{index}") as coord:
        lock = coord.lock("contended")
        while time.monotonic() < start_at:
            time.sleep(0.001)
        end = start_at + seconds
        while time.monotonic() < end:
            asked = time.monotonic()
            if not lock.acquire(timeout=max(0.0, end - asked) + 5):
                break
            got = time.monotonic()
            token = lock.token
            spin_until = got + hold
            while time.monotonic() < spin_until:
                pass
            released = time.monotonic()
            lock.release()
            records.append((token, index, asked, got, released))
    out.put(records)


@dataclass
class Contended:
    url: str
    processes: int
    hold_ms: float
    acquisitions: int
    share: list[float]
    handoff_p50_ms: float
    handoff_p99_ms: float
    handoffs: list[float]
    longest_wait_ms: float


def contended(url: str, processes: int = 4, hold: float = 0.001, seconds: float = 5.0) -> Contended:
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    start_at = time.monotonic() + 2.0 + 0.3 * processes
    procs = [ctx.Process(target=_contender, args=(url, namespace, i, hold, seconds, start_at, out))
             for i in range(processes)]
    for proc in procs:
        proc.start()
    records = []
    for _ in procs:
        records.extend(out.get(timeout=seconds + 60))
    for proc in procs:
        proc.join(30)
    records.sort()
    counts = [sum(1 for r in records if r[1] == i) for i in range(processes)]
    handoffs = [(b[3] - a[4]) * 1000 for a, b in zip(records, records[1:], strict=False) if a[1] != b[1]]
    waits = [(r[3] - r[2]) * 1000 for r in records]
    total = max(1, len(records))
    quantiles = statistics.quantiles(handoffs, n=100) if len(handoffs) > 1 else [0.0] * 99
    return Contended(moot.url.redact(url), processes, hold * 1000, len(records),
                     [c / total for c in counts], statistics.median(handoffs) if handoffs else 0.0,
                     quantiles[98], handoffs, max(waits) if waits else 0.0)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    result = uncontended(args.url, max_seconds=args.seconds)
    print(json.dumps(asdict(result)))
    cont = contended(args.url, seconds=args.seconds)
    summary = asdict(cont)
    summary.pop("handoffs")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
