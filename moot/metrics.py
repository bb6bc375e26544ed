"""Prometheus metrics of coordinators (the ``moot[metrics]`` extra).

::

    coord = moot.connect(url)
    moot.metrics.enable(coord)      # into prometheus_client's default registry
    moot.metrics.serve(9464)        # optional: http://host:9464/metrics

Every observation a coordinator records in its :class:`moot.stats.Stats`
(what ``coord.stats()`` returns) made after :func:`enable` is added to the
Prometheus counters and histograms of :data:`METRICS`, labelled only with
``kind`` (the recipe: ``lock``, ``election``..., or ``coordinator`` for
session-level figures) and ``backend`` (the engine: ``file``, ``redis``,
``zookeeper``...). Both take a handful of values, so the number of time
series is bounded whatever the application does: lock, group and member
names are never labels. Several coordinators enabled on one registry add up
into the same series. Histograms use the buckets of :data:`moot.stats.BUCKETS`.

Without ``prometheus_client`` installed, :func:`enable` and :func:`serve`
raise :class:`moot.DriverNotInstalled` saying how to install moot's ``metrics`` extra;
importing this module never needs it.
"""

from __future__ import annotations

import importlib
import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from moot.errors import missing_driver
from moot.stats import BUCKETS, HISTOGRAMS, Observer, Stats
from moot.url import BACKENDS

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from prometheus_client import CollectorRegistry, Counter, Histogram

    from moot.coordinator import Coordinator

LABELS = ("kind", "backend")


@dataclass(frozen=True)
class Metric:
    """How one figure of :class:`moot.stats.Stats` is exported."""

    name: str  # the Prometheus name (counters get ``_total`` appended on exposition)
    help: str
    kind: str  # the ``kind`` it is recorded with today; its series exists from enable() on


#: Stats name -> Prometheus metric.
METRICS: dict[str, Metric] = {
    "acquisitions": Metric("moot_lock_acquisitions", "Locks acquired (by recipe kind)", "lock"),
    "timeouts": Metric("moot_lock_timeouts", "Lock acquisitions that gave up when their timeout ran out", "lock"),
    "lost": Metric("moot_locks_lost", "Held locks lost because their session ended (expired, evicted, or "
                                      "backend unreachable for a whole TTL)", "lock"),
    "releases": Metric("moot_lock_releases", "Held locks released", "lock"),
    "wait_seconds": Metric("moot_lock_wait_seconds", "Seconds from asking for a lock to holding it "
                                                     "(acquisitions that succeeded)", "lock"),
    "hold_seconds": Metric("moot_lock_hold_seconds", "Seconds a lock was held, up to its release", "lock"),
    "heartbeats": Metric("moot_heartbeats", "Heartbeats that kept the session alive", "coordinator"),
    "heartbeat_failures": Metric("moot_heartbeat_failures", "Heartbeats that could not reach the backend",
                                 "coordinator"),
    "heartbeat_seconds": Metric("moot_heartbeat_seconds", "Round-trip time of a successful heartbeat",
                                "coordinator"),
    "heartbeat_lateness_seconds": Metric(
        "moot_heartbeat_lateness_seconds", "How much later than its interval a successful heartbeat started "
                                           "(a warning is logged past ttl/3)", "coordinator"),
    "reconnects": Metric("moot_reconnects", "New sessions opened after a session was lost", "coordinator"),
    "sessions_lost": Metric("moot_sessions_lost", "Sessions lost: expired, evicted, or backend unreachable "
                                                  "for a whole TTL", "coordinator"),
}

def _client() -> Any:
    try:
        return importlib.import_module("prometheus_client")
    except ImportError:
        raise missing_driver("moot.metrics", "prometheus_client", "metrics") from None


def backend_label(coord: Coordinator) -> str:
    """The engine behind ``coord``: ``redis`` for redis://, rediss:// and
    redis+sentinel://, ``zookeeper`` for kazoo://, ``etcd`` for etcd3+http://..."""
    module = BACKENDS[coord.backend.url.scheme][0]
    return module.rsplit(".", 1)[-1]


class _Exporter:
    """The metrics of :data:`METRICS` in one registry, fed by any number of Stats."""

    def __init__(self, client: Any, registry: CollectorRegistry):
        self.counters: dict[str, Counter] = {}
        self.histograms: dict[str, Histogram] = {}
        for name, metric in METRICS.items():
            if name in HISTOGRAMS:
                self.histograms[name] = client.Histogram(metric.name, metric.help, LABELS, buckets=BUCKETS,
                                                         registry=registry)
            else:
                self.counters[name] = client.Counter(metric.name, metric.help, LABELS, registry=registry)
        self.fed: weakref.WeakSet[Stats] = weakref.WeakSet()

    def feed(self, stats: Stats, backend: str) -> None:
        """Export every later observation of ``stats`` (once, however often asked)."""
        if stats in self.fed:
            return
        self.fed.add(stats)
        for name, metric in METRICS.items():  # the usual series exist (at zero) from now on
            if name in self.histograms:
                self.histograms[name].labels(metric.kind, backend)
            else:
                self.counters[name].labels(metric.kind, backend)
        stats.subscribe(self._observer(backend))

    def _observer(self, backend: str) -> Observer:
        counters, histograms = self.counters, self.histograms

        def observe(name: str, kind: str, value: float) -> None:
            if name in counters:
                counters[name].labels(kind, backend).inc(value)
            elif name in histograms:
                histograms[name].labels(kind, backend).observe(value)

        return observe


_exporters: weakref.WeakKeyDictionary[Any, _Exporter] = weakref.WeakKeyDictionary()
_exporters_lock = threading.Lock()


def enable(coord: Coordinator, registry: CollectorRegistry | None = None) -> None:
    """Export ``coord``'s figures to ``registry`` (default: prometheus_client's
    global ``REGISTRY``) from now on; call it right after ``moot.connect()``.

    Idempotent per (coordinator, registry). Raises DriverNotInstalled without
    the ``moot[metrics]`` extra."""
    client = _client()
    target = client.REGISTRY if registry is None else registry
    with _exporters_lock:
        exporter = _exporters.get(target)
        if exporter is None:
            exporter = _exporters[target] = _Exporter(client, target)
        exporter.feed(coord.metrics, backend_label(coord))


def serve(port: int, addr: str = "0.0.0.0", registry: CollectorRegistry | None = None) -> WSGIServer:
    """Serve ``registry`` (default: the global one) at ``http://addr:port/metrics``
    from a daemon thread; ``port=0`` picks a free port (``server.server_port``).
    Stop it with ``server.shutdown(); server.server_close()``."""
    client = _client()
    server, _thread = client.start_http_server(port, addr, client.REGISTRY if registry is None else registry)
    return server  # type: ignore[no-any-return]

