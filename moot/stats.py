"""In-process figures of one coordinator: what ``coord.stats()`` returns and
what the optional Prometheus exporter (``moot[metrics]``) publishes.

Recording is cheap (a lock, an add) and label cardinality is bounded: lock
names are never labels; the only label is the recipe kind ("lock",
"election", ...). Observers registered with :meth:`Stats.subscribe` see every
observation as it is made (the Prometheus exporter is one).
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable
from typing import Any

#: Histogram bucket upper bounds, in seconds (Prometheus-style, cumulative).
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

COUNTERS = ("acquisitions", "timeouts", "lost", "releases", "reconnects", "sessions_lost", "heartbeats",
            "heartbeat_failures")
HISTOGRAMS = ("wait_seconds", "hold_seconds", "heartbeat_seconds", "heartbeat_lateness_seconds")

Observer = Callable[[str, str, float], None]


class Histogram:
    """Count, sum and cumulative bucket counts of observed durations."""

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.buckets = [0] * (len(BUCKETS) + 1)

    def observe(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.buckets[bisect.bisect_left(BUCKETS, value)] += 1

    def snapshot(self) -> dict[str, Any]:
        cumulative, running = {}, 0
        for bound, count in zip((*BUCKETS, float("inf")), self.buckets, strict=True):
            running += count
            cumulative[str(bound)] = running
        return {"count": self.count, "sum": self.total, "buckets": cumulative}


class Stats:
    """Counters and histograms keyed by (name, kind)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, str], int] = {}
        self._histograms: dict[tuple[str, str], Histogram] = {}
        self._observers: list[Observer] = []

    def subscribe(self, observer: Observer) -> None:
        """Call ``observer(name, kind, value)`` for every later observation."""
        with self._lock:
            self._observers.append(observer)

    def count(self, name: str, kind: str = "coordinator", amount: int = 1) -> None:
        with self._lock:
            self._counters[(name, kind)] = self._counters.get((name, kind), 0) + amount
            observers = self._observers
        for observer in observers:
            observer(name, kind, float(amount))

    def observe(self, name: str, kind: str, seconds: float) -> None:
        with self._lock:
            self._locked_observe(name, kind, seconds)
            observers = self._observers
        for observer in observers:
            observer(name, kind, seconds)

    def timed(self, counter: str, histogram: str, kind: str, seconds: float) -> None:
        """``count(counter, kind)`` and ``observe(histogram, kind, seconds)`` at
        the cost of one (the hot path of every acquire and release)."""
        with self._lock:
            self._counters[(counter, kind)] = self._counters.get((counter, kind), 0) + 1
            self._locked_observe(histogram, kind, seconds)
            observers = self._observers
        for observer in observers:
            observer(counter, kind, 1.0)
            observer(histogram, kind, seconds)

    def _locked_observe(self, name: str, kind: str, seconds: float) -> None:
        histogram = self._histograms.get((name, kind))
        if histogram is None:
            histogram = self._histograms[(name, kind)] = Histogram()
        histogram.observe(seconds)

    def snapshot(self) -> dict[str, Any]:
        """``{"counters": {"acquisitions": {"lock": 3}}, "histograms": {...}}``."""
        with self._lock:
            counters: dict[str, dict[str, int]] = {}
            for (name, kind), value in sorted(self._counters.items()):
                counters.setdefault(name, {})[kind] = value
            histograms: dict[str, dict[str, Any]] = {}
            for (name, kind), histogram in sorted(self._histograms.items()):
                histograms.setdefault(name, {})[kind] = histogram.snapshot()
        return {"counters": counters, "histograms": histograms}
