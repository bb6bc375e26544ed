"""A holder cut off from its engine learns it lost its locks within the TTL,
even while a renewal call hangs, and carries on with a new session when the
engine answers again. The engine is a real Redis server that the test freezes
with SIGSTOP (a hung server, the worst case: the call neither fails nor
returns)."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

import moot
from tests import servers
from tests.waiting import wait_event, wait_until

#: Beyond the TTL, how late ``on_lost`` may come: the coordinator gives up
#: 0.8 x ttl after the last renewal it sent (sent before the freeze), so this
#: is scheduling slack only; a regression to seconds fails.
SLACK = 0.5


@pytest.fixture
def redis_cluster() -> Iterator[servers.Cluster]:
    with servers.own_cluster("redis") as cluster:
        yield cluster


def test_holder_of_a_hung_engine_is_told_within_the_ttl(redis_cluster: servers.Cluster) -> None:
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    ttl = 1.0
    with moot.connect(redis_cluster.url, member_id="holder", ttl=ttl, namespace=namespace,
                      socket_timeout=30) as coord:
        lost = threading.Event()
        lock = coord.lock("x", on_lost=lambda _lock: lost.set())
        assert lock.acquire(timeout=5)
        server = redis_cluster.members[0]
        server.freeze()
        frozen_at = time.monotonic()
        try:
            wait_event(lost, timeout=ttl + SLACK, what="on_lost within the TTL while the server is frozen")
            # Told although the renewal call (socket_timeout 30 s) still hangs.
            assert time.monotonic() - frozen_at < ttl + SLACK
            assert not lock.is_held
        finally:
            server.send(signal.SIGCONT)
        # The engine answers again: the coordinator opens a new session and works.
        again = coord.lock("x")
        assert again.acquire(timeout=20)
        assert again.token is not None and lock.token is None
        assert coord.stats()["counters"]["sessions_lost"]["coordinator"] >= 1
        wait_until(lambda: coord.stats()["counters"].get("reconnects", {}).get("coordinator", 0) >= 1,
                   what="reconnect counted")
