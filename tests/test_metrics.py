"""Observability: the Prometheus export of ``coord.stats()`` and the warnings
moot logs when a session is in trouble, never with a password in them.

The trouble is real: a Redis server that requires a password (set here with
``CONFIG SET requirepass``) is frozen with SIGSTOP so that a heartbeat runs
late, and sessions are evicted with ``expire_session`` so that a held lock is
lost. Nothing of the engine is mocked.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry

import moot
import moot.metrics
from moot.stats import COUNTERS, HISTOGRAMS
from tests import servers
from tests.waiting import BOUND, wait_until

PASSWORD = "s3cret-pw"
#: How long the Redis server is frozen: longer than ttl/3 (the lateness that
#: is warned about) plus two heartbeat intervals, shorter than the TTL.
FREEZE = 2.0
FROZEN_TTL = 4.0
FROZEN_HEARTBEAT = 0.2


def sample(registry: CollectorRegistry, name: str, kind: str, backend: str, **labels: str) -> float:
    value = registry.get_sample_value(name, {"kind": kind, "backend": backend, **labels})
    return 0.0 if value is None else value


@pytest.fixture(scope="module")
def redis_with_password() -> Iterator[tuple[servers.Cluster, str]]:
    """A Redis server of this module's own (it gets frozen), requiring PASSWORD."""
    cluster = servers.start_cluster("redis", size=1)
    try:
        member = cluster.members[0]
        with socket.create_connection(("127.0.0.1", member.port), timeout=BOUND) as sock:
            sock.sendall(f"CONFIG SET requirepass {PASSWORD}\r\n".encode())
            assert sock.recv(100).startswith(b"+OK")
        yield cluster, f"redis://:{PASSWORD}@127.0.0.1:{member.port}/0"
    finally:
        cluster.stop()


@pytest.fixture
def registry() -> CollectorRegistry:
    return prometheus_client.CollectorRegistry()


def assert_no_password(caplog: pytest.LogCaptureFixture) -> None:
    assert caplog.records, "nothing was logged"
    assert PASSWORD not in caplog.text
    for record in caplog.records:
        assert PASSWORD not in record.getMessage()


def test_every_figure_of_stats_has_a_metric() -> None:
    assert set(moot.metrics.METRICS) == set(COUNTERS) | set(HISTOGRAMS)
    names = [metric.name for metric in moot.metrics.METRICS.values()]
    assert len(set(names)) == len(names) and all(name.startswith("moot_") for name in names)


def test_lock_metrics_have_bounded_labels(registry: CollectorRegistry, namespace: str) -> None:
    url = f"memory://metrics-{uuid.uuid4().hex[:8]}"
    with moot.connect(url, member_id="m-1", namespace=namespace) as first, \
            moot.connect(url, member_id="m-2", namespace=namespace) as second:
        moot.metrics.enable(first, registry)
        moot.metrics.enable(first, registry)  # idempotent: not counted twice
        moot.metrics.enable(second, registry)
        assert sample(registry, "moot_lock_acquisitions_total", "lock", "memory") == 0  # exists at once
        for name in ("volume-1", "volume-2", "volume-3"):
            with first.lock(name, timeout=BOUND):
                pass
        held = second.lock("volume-1")
        assert held.acquire(timeout=BOUND)
        assert not first.lock("volume-1").acquire(timeout=0.05)
        held.release()

    assert sample(registry, "moot_lock_acquisitions_total", "lock", "memory") == 4
    assert sample(registry, "moot_lock_releases_total", "lock", "memory") == 4
    assert sample(registry, "moot_lock_timeouts_total", "lock", "memory") == 1
    assert sample(registry, "moot_lock_wait_seconds_count", "lock", "memory") == 4
    assert sample(registry, "moot_lock_hold_seconds_count", "lock", "memory") == 4
    assert sample(registry, "moot_lock_hold_seconds_bucket", "lock", "memory", le="+Inf") == 4
    exposed = prometheus_client.generate_latest(registry).decode()
    assert "volume" not in exposed and "m-1" not in exposed  # names are never labels
    labels = {sample.labels.get("kind") for family in registry.collect() for sample in family.samples}
    assert labels == {"lock", "coordinator"}


def test_serve_exposes_the_registry(registry: CollectorRegistry) -> None:
    with moot.connect("memory://serve", member_id="s-1") as coord:
        moot.metrics.enable(coord, registry)
        with coord.lock("x", timeout=BOUND):
            pass
    server = moot.metrics.serve(0, "127.0.0.1", registry)
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://127.0.0.1:{server.server_port}/metrics", timeout=BOUND) as response:
            body = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert 'moot_lock_acquisitions_total{backend="memory",kind="lock"} 1.0' in body


def test_without_the_extra_the_error_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
    with moot.connect("memory://no-extra") as coord, \
            pytest.raises(moot.DriverNotInstalled, match=r"install the 'metrics' extra of moot: .* -m pip install"):
        moot.metrics.enable(coord)
    with pytest.raises(moot.DriverNotInstalled, match=r"'metrics' extra of moot"):
        moot.metrics.serve(0)


def test_late_heartbeat_is_warned_and_measured(redis_with_password: tuple[servers.Cluster, str],
                                               caplog: pytest.LogCaptureFixture, registry: CollectorRegistry,
                                               namespace: str) -> None:
    cluster, url = redis_with_password
    caplog.set_level(logging.WARNING, logger="moot")
    with moot.connect(url, member_id="late-1", namespace=namespace, ttl=FROZEN_TTL,
                      heartbeat=FROZEN_HEARTBEAT) as coord:
        moot.metrics.enable(coord, registry)
        assert PASSWORD not in coord.url and PASSWORD not in repr(coord)
        lock = coord.lock("frozen")
        assert lock.acquire(timeout=BOUND)
        wait_until(lambda: sample(registry, "moot_heartbeats_total", "coordinator", "redis") >= 2,
                   what="two heartbeats")
        server = cluster.members[0]
        server.freeze()
        try:
            time.sleep(FREEZE)  # the fault itself: the server answers nothing for FREEZE seconds
        finally:
            server.send(signal.SIGCONT)
        wait_until(lambda: any("heartbeat ran" in r.getMessage() for r in caplog.records),
                   what="the late-heartbeat warning")
        assert lock.is_held  # late, not lost: the TTL was not reached
        late = next(r for r in caplog.records if "heartbeat ran" in r.getMessage())
        assert late.name == "moot.session" and late.levelno == logging.WARNING
        assert f"(ttl {FROZEN_TTL:.1f}s)" in late.getMessage() and "redis://:***@127.0.0.1" in late.getMessage()
        count = sample(registry, "moot_heartbeat_lateness_seconds_count", "coordinator", "redis")
        on_time = sample(registry, "moot_heartbeat_lateness_seconds_bucket", "coordinator", "redis", le="1.0")
        assert on_time < count  # one heartbeat started more than a second late
    assert_no_password(caplog)


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_lost_lock_is_warned_counted_and_renewed(kind: str, redis_with_password: tuple[servers.Cluster, str],
                                                 caplog: pytest.LogCaptureFixture, registry: CollectorRegistry,
                                                 namespace: str) -> None:
    url = f"memory://user:{PASSWORD}@lost" if kind == "memory" else redis_with_password[1]
    caplog.set_level(logging.WARNING, logger="moot")
    with moot.connect(url, member_id="holder-1", namespace=namespace, ttl=2) as holder, \
            moot.connect(url, member_id="evictor-1", namespace=namespace, ttl=2) as evictor:
        moot.metrics.enable(holder, registry)
        lock = holder.lock("volume-9")
        assert lock.acquire(timeout=BOUND)
        token = lock.token
        assert evictor.backend.expire_session(holder.session_id or "")
        wait_until(lambda: sample(registry, "moot_reconnects_total", "coordinator", kind) == 1,
                   what="a new session")
        assert not lock.is_held
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"moot: lock 'volume-9' (token {token}) lost with the session of holder-1" in messages
    assert any(m.startswith("moot: session of holder-1 on ") and "its locks are lost" in m for m in messages)
    assert any(m.startswith("moot: new session opened on ") for m in messages)
    assert sample(registry, "moot_locks_lost_total", "lock", kind) == 1
    assert sample(registry, "moot_sessions_lost_total", "coordinator", kind) == 1
    assert_no_password(caplog)
