"""The uncontended acquire+release path: what it asks of the engine (one
enqueue, one delete: no listing, read or watch), and the pieces made
cheaper for it keeping their meaning (deadline nesting, metrics timers,
the ``Held`` of the latest acquisition)."""

from __future__ import annotations

import collections
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import moot
from moot import deadline
from moot.stats import Stats

PRIMITIVES = ("enqueue", "create_sequential", "list", "get", "watch", "delete", "compare_and_set", "names")


@pytest.fixture(params=["memory", "file"])
def coord(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[moot.Coordinator]:
    url = f"memory://uncontended-{time.monotonic_ns()}" if request.param == "memory" else f"file://{tmp_path}/c"
    with moot.connect(url, member_id="solo") as opened:
        yield opened


def _count_calls(coord: moot.Coordinator) -> collections.Counter[str]:
    """Count the primitives the coordinator's backend is asked for by the
    recipes (each call still goes to the real backend; a primitive a
    backend builds on its others, as the base's ``enqueue``, counts once)."""
    calls: collections.Counter[str] = collections.Counter()
    backend = coord.backend
    depth = [0]
    for name in PRIMITIVES:
        real = getattr(backend, name)

        def counted(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            if depth[0] == 0:
                calls[_name] += 1
            depth[0] += 1
            try:
                return _real(*args, **kwargs)
            finally:
                depth[0] -= 1

        setattr(backend, name, counted)
    return calls


def test_an_uncontended_cycle_is_one_enqueue_and_one_delete(coord: moot.Coordinator) -> None:
    lock = coord.lock("solo")
    assert lock.acquire(timeout=5.0)
    lock.release()
    calls = _count_calls(coord)
    tokens = []
    for _ in range(20):
        assert lock.acquire(timeout=5.0)
        tokens.append(lock.token)
        assert lock.is_held and coord.lock_info("solo") is not None
        assert lock.release()
    calls["list"] -= 20  # the lock_info() calls of this test
    assert +calls == {"enqueue": 20, "delete": 20}
    assert tokens == sorted(tokens) and len(set(tokens)) == 20
    assert coord.lock_info("solo") is None
    counters = coord.stats()["counters"]
    assert counters["acquisitions"]["lock"] == 21 and counters["releases"]["lock"] == 21


def test_held_is_the_latest_acquisition(coord: moot.Coordinator) -> None:
    lock = coord.lock("solo")
    with pytest.raises(moot.LockError):
        lock.held()
    with lock as first:
        assert first == lock.held() and first.is_held and first.token == lock.token
    assert not first.is_held and lock.held() == first  # kept after it ends
    with lock as second:
        assert second.token > first.token and second.is_held and not first.is_held
        assert lock.held() == second
        assert first.release() is False and second.is_held  # an earlier acquisition releases nothing
    assert not second.is_held


def test_deadlines_nest_to_the_earlier_and_replaced_overrides() -> None:
    assert deadline.current() is None
    with deadline.bounded(None):
        assert deadline.current() is None
    with deadline.bounded(100.0):
        assert deadline.current() == 100.0
        with deadline.bounded(200.0):
            assert deadline.current() == 100.0
        with deadline.bounded(50.0):
            assert deadline.current() == 50.0
            with deadline.replaced(300.0):
                assert deadline.current() == 300.0
            assert deadline.current() == 50.0
        assert deadline.current() == 100.0
        with pytest.raises(KeyError), deadline.bounded(10.0):
            raise KeyError
        assert deadline.current() == 100.0
    assert deadline.current() is None


def test_a_timer_records_what_timed_records() -> None:
    seen: list[tuple[str, str, float]] = []
    by_timer, by_timed = Stats(), Stats()
    by_timer.subscribe(lambda *observation: seen.append(observation))
    timer = by_timer.timer("acquisitions", "wait_seconds", "lock")
    assert by_timer.timer("acquisitions", "wait_seconds", "lock") is timer
    assert by_timer.snapshot() == {"counters": {}, "histograms": {}}  # nothing shows before use
    for seconds in (0.0001, 0.003, 0.3, 42.0):
        timer(seconds)
        by_timed.timed("acquisitions", "wait_seconds", "lock", seconds)
    by_timer.timed("acquisitions", "wait_seconds", "lock", 0.5)  # both ways into one figure
    by_timed.timed("acquisitions", "wait_seconds", "lock", 0.5)
    by_timer.count("timeouts", "lock")
    by_timed.count("timeouts", "lock")
    assert by_timer.snapshot() == by_timed.snapshot()
    assert seen[:2] == [("acquisitions", "lock", 1.0), ("wait_seconds", "lock", 0.0001)] and len(seen) == 11


def test_a_timer_counts_every_value_once_across_threads_and_snapshots() -> None:
    """A timer call takes no lock; the values it leaves pending are folded
    in by snapshots and every ``_FOLD_EVERY`` calls: none lost, none
    counted twice, however the calls and snapshots of threads interleave."""
    stats = Stats()
    timer = stats.timer("acquisitions", "wait_seconds", "lock")
    threads, calls = 4, 5000  # several folds per thread, by calls and by snapshots
    start = threading.Barrier(threads + 1)

    def record() -> None:
        start.wait(5)
        for _ in range(calls):
            timer(0.001)

    workers = [threading.Thread(target=record) for _ in range(threads)]
    switching = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch between almost any two bytecodes
    try:
        for worker in workers:
            worker.start()
        start.wait(5)
        counts = []
        while any(worker.is_alive() for worker in workers):
            counts.append(stats.snapshot()["counters"].get("acquisitions", {}).get("lock", 0))
        for worker in workers:
            worker.join(10)
    finally:
        sys.setswitchinterval(switching)
    final = stats.snapshot()
    assert counts == sorted(counts) and counts[-1] <= threads * calls, "a snapshot counted a value twice"
    assert final["counters"]["acquisitions"]["lock"] == threads * calls
    assert final["histograms"]["wait_seconds"]["lock"]["count"] == threads * calls
