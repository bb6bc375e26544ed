"""In-process figures of one coordinator: what ``coord.stats()`` returns and
what the optional Prometheus exporter (``moot[metrics]``) publishes.

Recording is cheap (a lock, an add) and label cardinality is bounded: lock
names are never labels; the only label is the recipe kind ("lock",
"election", ...). Observers registered with :meth:`Stats.subscribe` see every
observation as it is made (the Prometheus exporter is one).
"""

from __future__ import annotations

import bisect
import collections
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

    def copy(self) -> Histogram:
        copy = Histogram()
        copy.add(self)
        return copy

    def add(self, other: Histogram) -> None:
        """Add ``other``'s observations to this one."""
        self.count += other.count
        self.total += other.total
        self.buckets = [mine + theirs for mine, theirs in zip(self.buckets, other.buckets, strict=True)]

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
        self._timers: dict[tuple[str, str, str], Timer] = {}

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

    def timer(self, counter: str, histogram: str, kind: str) -> Timer:
        """A recorder of :meth:`timed` for these names, for a hot path that
        records them again and again (no key built or looked up per call)."""
        with self._lock:
            timer = self._timers.get((counter, histogram, kind))
            if timer is None:
                timer = self._timers[(counter, histogram, kind)] = Timer(self, counter, histogram, kind)
            return timer

    def _locked_observe(self, name: str, kind: str, seconds: float) -> None:
        histogram = self._histograms.get((name, kind))
        if histogram is None:
            histogram = self._histograms[(name, kind)] = Histogram()
        histogram.observe(seconds)

    def snapshot(self) -> dict[str, Any]:
        """``{"counters": {"acquisitions": {"lock": 3}}, "histograms": {...}}``."""
        with self._lock:
            counted = dict(self._counters)
            observed = {key: histogram.copy() for key, histogram in self._histograms.items()}
            for timer in self._timers.values():
                timer.fold()
                if timer.histogram.count:
                    counter, name, kind = timer._names
                    counted[(counter, kind)] = counted.get((counter, kind), 0) + timer.histogram.count
                    observed.setdefault((name, kind), Histogram()).add(timer.histogram)
        counters: dict[str, dict[str, int]] = {}
        for (name, kind), value in sorted(counted.items()):
            counters.setdefault(name, {})[kind] = value
        histograms: dict[str, dict[str, Any]] = {}
        for (name, kind), histogram in sorted(observed.items()):
            histograms.setdefault(name, {})[kind] = histogram.snapshot()
        return {"counters": counters, "histograms": histograms}


class Timer:
    """``timer(seconds)`` is ``stats.timed(counter, histogram, kind, seconds)``
    (see :meth:`Stats.timer`): the same figures in ``snapshot()``, the same
    observers; it keeps its own histogram (whose count is the counter),
    merged into the snapshot, so a call builds no key and looks nothing up.

    A call takes no lock: it appends to a deque (atomic), and the values
    are folded into the histogram under the lock by :meth:`fold` (at each
    snapshot, and every :data:`_FOLD_EVERY` calls). ``popleft`` takes each
    value exactly once, so a value appended during a fold is folded then or
    at the next one, never lost or counted twice."""

    __slots__ = ("_lock", "_names", "_pending", "_stats", "histogram")

    def __init__(self, stats: Stats, counter: str, histogram: str, kind: str):
        self._stats, self._lock = stats, stats._lock
        self._names = (counter, histogram, kind)
        self._pending: collections.deque[float] = collections.deque()
        self.histogram = Histogram()

    def __call__(self, seconds: float) -> None:
        pending = self._pending
        pending.append(seconds)
        if len(pending) >= _FOLD_EVERY:
            with self._lock:
                self.fold()
        observers = self._stats._observers
        if observers:
            counter, name, kind = self._names
            for observer in observers:
                observer(counter, kind, 1.0)
                observer(name, kind, seconds)

    def fold(self) -> None:
        """Under the stats lock: move the pending values into the histogram."""
        pending, observe = self._pending, self.histogram.observe
        while pending:
            observe(pending.popleft())


#: Pending values a :class:`Timer` folds at once (bounds its memory between snapshots).
_FOLD_EVERY = 1024
